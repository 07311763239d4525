/* nested.c: the partitions libblkid reads and libfdisk does not.
 *
 * libfdisk knows no Atari (AHDI) root sector, and does not look inside an
 * MBR partition for the BSD, Solaris x86, UnixWare or Minix label that the
 * kernel shows as p5, p6, ... (block/partitions/msdos.c). libblkid's
 * partition prober reads both and numbers them as the kernel does, so we
 * ask it, once, over the whole disk, and keep only:
 * - with want_atari: the entries of a root table of type "atari";
 * - otherwise: the entries whose table has a parent (a nested label).
 * Every value is checked before it is kept: number 1..max_number, start
 * and size positive and within 2^64 bytes. At most max_number entries.
 * Clipping to the disk end is the caller's, as for libfdisk's entries.
 */
#include "partition-int.h"

#include "checked.h"

#include <blkid/blkid.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* libblkid's partition offsets and sizes are in 512-byte sectors. */
#define BLKID_SECTOR 512

void part_extras_free(struct part_extras *x)
{
	free(x->ents);
	memset(x, 0, sizeof(*x));
}

/* Copies one blkid partition into e. true when every value is sane. */
static bool extra_fill(blkid_partition par, unsigned max_number,
		       struct part_extra *e)
{
	int partno = blkid_partition_get_partno(par);
	blkid_loff_t start = blkid_partition_get_start(par);
	blkid_loff_t len = blkid_partition_get_size(par);
	const char *ts = blkid_partition_get_type_string(par);

	if (partno < 1 || (unsigned)partno > max_number || start < 0 ||
	    len <= 0)
		return false;
	if (MUL_OVERFLOW((uint64_t)start, BLKID_SECTOR, &e->start_bytes) ||
	    MUL_OVERFLOW((uint64_t)len, BLKID_SECTOR, &e->size_bytes))
		return false;
	e->number = (unsigned)partno;
	if (ts && *ts)
		snprintf(e->type, sizeof(e->type), "%s", ts);
	else
		snprintf(e->type, sizeof(e->type), "0x%x",
			 (unsigned)blkid_partition_get_type(par));
	return true;
}

int part_scan_extras(int fd, uint64_t size, bool want_atari,
		     unsigned max_number, struct part_extras *x)
{
	blkid_probe pr;
	blkid_partlist ls;
	blkid_parttable root;
	const char *root_type;
	int i, n, ret = 0;

	memset(x, 0, sizeof(*x));
	if (size < BLKID_SECTOR || size > INT64_MAX)
		return 0;
	/* The same guard as for every libblkid probe (probe-fs.c). */
	if (part_gpt_guard(fd, 0, size, 512, NULL, 0))
		return 0;
	pr = blkid_new_probe();
	if (!pr)
		return -ENOMEM;
	if (blkid_probe_set_device(pr, fd, 0, (blkid_loff_t)size) != 0)
		goto out; /* unreadable: libfdisk's view stands alone */
	blkid_probe_enable_superblocks(pr, 0);
	blkid_probe_enable_topology(pr, 0);
	blkid_probe_enable_partitions(pr, 1);
	ls = blkid_probe_get_partitions(pr);
	if (!ls)
		goto out;
	root = blkid_partlist_get_table(ls);
	root_type = root ? blkid_parttable_get_type(root) : NULL;
	if (want_atari && (!root_type || strcmp(root_type, "atari") != 0))
		goto out;
	n = blkid_partlist_numof_partitions(ls);
	if (n <= 0)
		goto out;
	x->ents = calloc(MIN((size_t)n, (size_t)max_number),
			 sizeof(*x->ents));
	if (!x->ents) {
		ret = -ENOMEM;
		goto out;
	}
	for (i = 0; i < n; i++) {
		blkid_partition par = blkid_partlist_get_partition(ls, i);
		blkid_parttable tab = par ? blkid_partition_get_table(par) :
					    NULL;

		if (!tab)
			continue;
		if (!want_atari && !blkid_parttable_get_parent(tab))
			continue; /* libfdisk's own entry */
		if (x->nb == max_number ||
		    !extra_fill(par, max_number, &x->ents[x->nb])) {
			x->nb_bad++;
			continue;
		}
		x->nb++;
	}
out:
	blkid_free_probe(pr);
	return ret;
}
