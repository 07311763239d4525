/* partition.c: read the partition table of a disk with libfdisk.
 *
 * part_scan hands the caller's descriptor to libfdisk (read-only, list-only
 * mode, never written, never closed), copies every used partition into a
 * plain struct part_table, and asks probe-fs.c (libblkid) what filesystem
 * each partition and the whole disk hold. libfdisk decides which label
 * wins: a valid GPT beats its protective or hybrid MBR, and a GPT whose
 * primary header is corrupt is read from its backup (we pass on libfdisk's
 * message as a warning).
 *
 * What a user sees, and why:
 * - Numbers are the table's own (libfdisk partno + 1): MBR primaries 1-4,
 *   logicals from 5, GPT entries by slot. They match /dev/sdaN.
 * - The MBR extended partition is listed under its own number with its
 *   full range and container = true. The kernel shows it as a 1 KiB stub;
 *   we keep the range the table declares and let the daemon decide how to
 *   show it. Its filesystem is not probed: its first sector is an EBR.
 * - A partition that runs past the end of the disk is clipped to the disk
 *   (size 0 when it starts beyond it) and flagged past_end, as the kernel
 *   clips and logs. The `size` argument is the authority, not fstat.
 * - Overlapping partitions are listed as the table says (the kernel does
 *   the same); they are not an error.
 * - A protective MBR whose GPT is unreadable (both headers corrupt, or the
 *   image truncated so the backup is gone and the primary does not fit) is
 *   an error, not an MBR with one 0xEE partition: the kernel ignores such
 *   an MBR too, and showing the 0xEE "partition" would mislead.
 * - A FAT filesystem on the whole disk carries the 0x55AA signature of an
 *   MBR; libfdisk then reports an empty "dos" label. When libblkid sees a
 *   filesystem and no partition table there, we report no table (the rule
 *   of the kernel's msdos.c and of libblkid).
 * - Identifiers are spelled as blkid and /dev/disk/by-* spell them:
 *   lowercase GUIDs, MBR disk id without "0x", MBR PARTUUID "diskid-NN".
 *
 * Bounds: libfdisk bounds the EBR walk (60 partitions; a logical
 * partition that comes round again is a link back into the chain, and is
 * dropped with a warning) but not the GPT
 * entry array, which gpt-guard.c bounds before libfdisk sees it; we
 * accept partitions numbered 1..PART_MAX_NUMBER only (the kernel's
 * DISK_MAX_PARTS is 256 too) and say how many were dropped. Collected
 * libfdisk messages are capped at PART_MSG_MAX bytes.
 *
 * Never printed: libfdisk reports through its "ask" callbacks, which we
 * capture into the warning or error string; libblkid prints nothing
 * unless its debug variable is set.
 *
 * - Sector size: a regular file has none, so libfdisk reads 512-byte
 *   sectors; when that finds no label or a lone protective MBR we look
 *   again with 4096 (a GPT made for a 4Kn disk). A 4Kn MBR cannot be told
 *   apart from a 512 one and is read as 512.
 *
 * - Tables libfdisk does not read, read by libblkid (nested.c) with the
 *   kernel's numbers: an Atari root table on a disk where libfdisk finds
 *   no label (label "atari"), and the slices of a BSD, Solaris, UnixWare
 *   or Minix label nested in an MBR partition (p5.. after the logicals).
 *   A nested slice whose number libfdisk already gave to a partition is
 *   dropped with a warning: the MBR's entry is the one /dev/sdaN means
 *   to whoever reads the table with fdisk.
 *
 * Not done: any write.
 */
#include "partition.h"
#include "partition-int.h"

#include "checked.h"
#include "cleanup.h"

#include <ctype.h>
#include <errno.h>
#include <libfdisk/libfdisk.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define PART_MAX_NUMBER 256
#define PART_MSG_MAX 1024

/* Messages libfdisk sent through the ask API during one scan. */
struct part_msgs {
	char buf[PART_MSG_MAX];
	size_t len;
	bool truncated;
};

static void part_msgs_add(struct part_msgs *m, const char *fmt, ...)
	__attribute__((format(printf, 2, 3)));

static void part_msgs_add(struct part_msgs *m, const char *fmt, ...)
{
	char one[512], *tail;
	size_t need;
	va_list ap;

	va_start(ap, fmt);
	vsnprintf(one, sizeof(one), fmt, ap);
	va_end(ap);
	/* Written for fdisk(8)'s user; imgfs never writes the table. */
	tail = strstr(one, " will be corrected by write.");
	if (tail)
		*tail = '\0';
	/* libfdisk may repeat itself (one warning per label probe). */
	if (m->len && strstr(m->buf, one))
		return;
	need = strlen(one) + (m->len ? 2 : 0);
	if (m->len + need >= sizeof(m->buf)) {
		m->truncated = true;
		return;
	}
	m->len += (size_t)snprintf(m->buf + m->len, sizeof(m->buf) - m->len,
				   "%s%s", m->len ? "; " : "", one);
}

/* libfdisk's ask callback: keep warnings, answer no question. In list-only
 * mode nothing should ask; if something does, the refusal fails that one
 * operation instead of blocking on a terminal the daemon does not have. */
static int part_ask(struct fdisk_context *cxt, struct fdisk_ask *ask,
		    void *data)
{
	struct part_msgs *m = data;
	const char *msg;
	int err;

	switch (fdisk_ask_get_type(ask)) {
	case FDISK_ASKTYPE_WARN:
	case FDISK_ASKTYPE_WARNX:
		msg = fdisk_ask_print_get_mesg(ask);
		if (!msg)
			return 0;
		err = fdisk_ask_print_get_errno(ask);
		if (fdisk_ask_get_type(ask) == FDISK_ASKTYPE_WARN && err)
			part_msgs_add(m, "%s: %s", msg, strerror(err));
		else
			part_msgs_add(m, "%s", msg);
		return 0;
	case FDISK_ASKTYPE_INFO:
		return 0; /* chatter ("Syncing disks."), not a problem */
	default:
		return -EINVAL;
	}
}

static void part_entry_clear(struct part_entry *pe)
{
	free(pe->type);
	free(pe->type_name);
	free(pe->part_uuid);
	free(pe->part_name);
	free(pe->fs_type);
	free(pe->fs_label);
	free(pe->fs_uuid);
}

void part_table_free(struct part_table *table)
{
	size_t i;

	if (!table)
		return;
	for (i = 0; i < table->nb_parts; i++)
		part_entry_clear(&table->parts[i]);
	free(table->parts);
	free(table->label);
	free(table->disk_id);
	free(table->error);
	free(table->warning);
	free(table->disk_fs_type);
	free(table->disk_fs_label);
	free(table->disk_fs_uuid);
	free(table);
}

/* strdup of a possibly NULL string; false only when out of memory. */
static bool dup_opt(const char *s, char **dst)
{
	*dst = s ? strdup(s) : NULL;
	return !s || *dst;
}

struct part_table *part_table_dup(const struct part_table *t)
{
	struct part_table *c;
	bool ok;

	if (!t)
		return NULL;
	c = calloc(1, sizeof(*c));
	if (!c)
		return NULL;
	ok = dup_opt(t->label, &c->label) && dup_opt(t->disk_id, &c->disk_id) &&
	     dup_opt(t->error, &c->error) && dup_opt(t->warning, &c->warning) &&
	     dup_opt(t->disk_fs_type, &c->disk_fs_type) &&
	     dup_opt(t->disk_fs_label, &c->disk_fs_label) &&
	     dup_opt(t->disk_fs_uuid, &c->disk_fs_uuid);
	if (ok && t->nb_parts) {
		c->parts = calloc(t->nb_parts, sizeof(*c->parts));
		ok = c->parts != NULL;
	}
	for (size_t i = 0; ok && i < t->nb_parts; i++) {
		const struct part_entry *e = &t->parts[i];
		struct part_entry *d = &c->parts[i];

		*d = (struct part_entry){
			.number = e->number,
			.start_bytes = e->start_bytes,
			.size_bytes = e->size_bytes,
			.past_end = e->past_end,
			.container = e->container,
		};
		c->nb_parts = i + 1;
		ok = dup_opt(e->type, &d->type) &&
		     dup_opt(e->type_name, &d->type_name) &&
		     dup_opt(e->part_uuid, &d->part_uuid) &&
		     dup_opt(e->part_name, &d->part_name) &&
		     dup_opt(e->fs_type, &d->fs_type) &&
		     dup_opt(e->fs_label, &d->fs_label) &&
		     dup_opt(e->fs_uuid, &d->fs_uuid);
	}
	if (!ok) {
		part_table_free(c);
		return NULL;
	}
	return c;
}

/* strdup that lowercases, and turns NULL or "" into NULL. 0 or -ENOMEM. */
static int dup_lower(const char *s, char **dst)
{
	char *p;

	*dst = NULL;
	if (!s || !*s)
		return 0;
	*dst = strdup(s);
	if (!*dst)
		return -ENOMEM;
	for (p = *dst; *p; p++)
		*p = (char)tolower((unsigned char)*p);
	return 0;
}

static int dup_str(const char *s, char **dst)
{
	*dst = NULL;
	if (!s || !*s)
		return 0;
	*dst = strdup(s);
	return *dst ? 0 : -ENOMEM;
}

/* Sets *dst to a formatted string. 0 or -ENOMEM. */
static int set_str(char **dst, const char *fmt, ...)
	__attribute__((format(printf, 2, 3)));

static int set_str(char **dst, const char *fmt, ...)
{
	va_list ap;
	int n;

	free(*dst);
	*dst = NULL;
	va_start(ap, fmt);
	n = vasprintf(dst, fmt, ap);
	va_end(ap);
	if (n < 0) {
		*dst = NULL;
		return -ENOMEM;
	}
	return 0;
}

static int part_cmp_number(const void *a, const void *b)
{
	const struct part_entry *x = a, *y = b;

	return (x->number > y->number) - (x->number < y->number);
}

/* The MBR disk id as blkid spells it: "0x82cd0ce4" -> "82cd0ce4". */
static int part_disk_id(struct fdisk_context *cxt, char **dst)
{
	CLEANUP_FREE char *id = NULL;
	const char *s;

	*dst = NULL;
	if (fdisk_get_disklabel_id(cxt, &id) != 0 || !id)
		return 0;
	s = id;
	if (s[0] == '0' && (s[1] == 'x' || s[1] == 'X'))
		s += 2;
	return dup_lower(s, dst);
}

/* The MBR types of an extended partition (linux.git
 * block/partitions/msdos.c is_extended_partition). */
static bool mbr_type_is_extended(const struct fdisk_parttype *t)
{
	unsigned int code = fdisk_parttype_get_code(t);

	return code == 0x05 || code == 0x0f || code == 0x85;
}

/* Fills pe from one libfdisk partition; the range is clipped to size.
 * Returns 1 when pe was filled, 0 when the entry was skipped (its start
 * does not fit in 64 bits of bytes), -ENOMEM. */
static int part_fill_entry(struct part_entry *pe, struct fdisk_partition *pa,
			   uint64_t sector_bytes, uint64_t size,
			   const char *disk_id, bool is_dos)
{
	struct fdisk_parttype *t;
	uint64_t start, len;
	int ret;

	pe->number = (unsigned)fdisk_partition_get_partno(pa) + 1;
	if (MUL_OVERFLOW(fdisk_partition_get_start(pa), sector_bytes, &start))
		return 0;
	if (MUL_OVERFLOW(fdisk_partition_get_size(pa), sector_bytes, &len))
		len = UINT64_MAX;
	pe->start_bytes = start;
	if (start >= size) {
		pe->size_bytes = 0;
		pe->past_end = true;
	} else if (len > size - start) {
		pe->size_bytes = size - start;
		pe->past_end = true;
	} else {
		pe->size_bytes = len;
	}
	t = fdisk_partition_get_type(pa);
	/* libfdisk marks the extended partition a container only when it
	 * could read its first EBR; the type code says it regardless. */
	pe->container = fdisk_partition_is_container(pa) ||
			(is_dos && t && mbr_type_is_extended(t));
	if (t && fdisk_parttype_get_string(t))
		ret = dup_lower(fdisk_parttype_get_string(t), &pe->type);
	else if (t)
		ret = set_str(&pe->type, "0x%x", fdisk_parttype_get_code(t));
	else
		ret = 0;
	if (!ret && t)
		ret = dup_str(fdisk_parttype_get_name(t), &pe->type_name);
	if (!ret && fdisk_partition_get_uuid(pa))
		ret = dup_lower(fdisk_partition_get_uuid(pa), &pe->part_uuid);
	else if (!ret && is_dos && disk_id)
		/* The kernel's and blkid's MBR PARTUUID: %08x-%02x. */
		ret = set_str(&pe->part_uuid, "%s-%02x", disk_id, pe->number);
	if (!ret)
		ret = dup_str(fdisk_partition_get_name(pa), &pe->part_name);
	return ret ? ret : 1;
}

/* Probes one partition's filesystem; a partition that cannot be read
 * (EIO from a damaged image) just has no filesystem. 0 or -ENOMEM. */
static int part_probe_entry(int fd, struct part_entry *pe)
{
	struct part_fs_info fs;
	int ret;

	if (pe->container || pe->size_bytes == 0)
		return 0;
	ret = part_probe_fs(fd, pe->start_bytes, pe->size_bytes, false, &fs);
	if (ret == -ENOMEM)
		return ret;
	if (ret < 0)
		return 0;
	pe->fs_type = fs.type;
	pe->fs_label = fs.label;
	pe->fs_uuid = fs.uuid;
	return 0;
}

/* True when pe, a logical partition, is one tb already holds (same
 * start and size): the EBR chain came back to an EBR it had read. */
static bool part_repeats(const struct part_table *tb,
			 const struct part_entry *pe)
{
	for (size_t i = 0; i < tb->nb_parts; i++)
		if (tb->parts[i].number > 4 &&
		    tb->parts[i].start_bytes == pe->start_bytes &&
		    tb->parts[i].size_bytes == pe->size_bytes)
			return true;
	return false;
}

/* Copies libfdisk's partitions into tb. 0, -ENOMEM, or another -errno
 * from libfdisk when the table cannot be listed. */
static int part_read_entries(struct fdisk_context *cxt, int fd, uint64_t size,
			     struct part_table *tb, size_t *nb_dropped_r,
			     size_t *nb_looped_r)
{
	struct fdisk_table *ftb = NULL;
	uint64_t sector_bytes = fdisk_get_sector_size(cxt);
	bool is_dos = fdisk_is_label(cxt, DOS);
	size_t i, n, cap;
	int ret;

	*nb_dropped_r = 0;
	*nb_looped_r = 0;
	ret = fdisk_get_partitions(cxt, &ftb);
	if (ret < 0)
		return ret;
	n = ftb ? fdisk_table_get_nents(ftb) : 0;
	cap = MIN(n, (size_t)PART_MAX_NUMBER);
	if (cap) {
		tb->parts = calloc(cap, sizeof(*tb->parts));
		if (!tb->parts) {
			ret = -ENOMEM;
			goto out;
		}
	}
	for (i = 0; i < n; i++) {
		struct fdisk_partition *pa = fdisk_table_get_partition(ftb, i);
		struct part_entry *pe;

		if (!pa || !fdisk_partition_has_partno(pa) ||
		    !fdisk_partition_has_start(pa) ||
		    !fdisk_partition_has_size(pa))
			continue;
		if (fdisk_partition_get_partno(pa) >= PART_MAX_NUMBER ||
		    tb->nb_parts == cap) {
			(*nb_dropped_r)++;
			continue;
		}
		pe = &tb->parts[tb->nb_parts];
		ret = part_fill_entry(pe, pa, sector_bytes, size, tb->disk_id,
				      is_dos);
		if (ret < 0) {
			part_entry_clear(pe);
			goto out;
		}
		if (ret == 0) {
			part_entry_clear(pe);
			memset(pe, 0, sizeof(*pe));
			(*nb_dropped_r)++;
			continue;
		}
		if (is_dos && pe->number > 4 && part_repeats(tb, pe)) {
			/* An EBR link that points back into the chain:
			 * libfdisk walks the loop up to its limit, giving
			 * the same logical partitions again and again. */
			part_entry_clear(pe);
			memset(pe, 0, sizeof(*pe));
			(*nb_looped_r)++;
			continue;
		}
		tb->nb_parts++;
		ret = part_probe_entry(fd, pe);
		if (ret < 0)
			goto out;
	}
	/* An empty label (a fresh SGI or Sun one) leaves parts NULL, and
	 * qsort's pointer may not be NULL even for no elements. */
	if (tb->nb_parts > 1)
		qsort(tb->parts, tb->nb_parts, sizeof(*tb->parts),
		      part_cmp_number);
	ret = 0;
out:
	fdisk_unref_table(ftb);
	return ret;
}

/* True when tb already has a partition numbered number. */
static bool part_has_number(const struct part_table *tb, unsigned number)
{
	for (size_t i = 0; i < tb->nb_parts; i++)
		if (tb->parts[i].number == number)
			return true;
	return false;
}

/* Adds to tb the partitions libblkid reads and libfdisk does not
 * (nested.c): an Atari table (want_atari, tb has no label yet) or the
 * slices of labels nested in MBR partitions. Their numbers are the
 * kernel's; one that libfdisk already gave to another partition keeps
 * libfdisk's entry (its table is the one the disk is read by) and the
 * nested one is dropped with a warning in msgs. 0 or -ENOMEM. */
static int part_add_extras(int fd, uint64_t size, bool want_atari,
			   struct part_table *tb, struct part_msgs *msgs)
{
	struct part_extras x;
	struct part_entry *grown;
	size_t nb_clash = 0, nb_bad;
	int ret;

	ret = part_scan_extras(fd, size, want_atari, PART_MAX_NUMBER, &x);
	if (ret < 0 || (x.nb == 0 && x.nb_bad == 0))
		goto out;
	nb_bad = x.nb_bad;
	if (x.nb) {
		grown = realloc(tb->parts, (tb->nb_parts + x.nb) *
						   sizeof(*tb->parts));
		if (!grown) {
			ret = -ENOMEM;
			goto out;
		}
		tb->parts = grown;
	}
	if (want_atari && x.nb) {
		ret = set_str(&tb->label, "atari");
		if (ret)
			goto out;
	}
	for (size_t i = 0; i < x.nb; i++) {
		const struct part_extra *e = &x.ents[i];
		struct part_entry *pe = &tb->parts[tb->nb_parts];

		if (part_has_number(tb, e->number)) {
			nb_clash++;
			continue;
		}
		if (tb->nb_parts >= PART_MAX_NUMBER) {
			nb_bad++;
			continue;
		}
		*pe = (struct part_entry){ .number = e->number,
					   .start_bytes = e->start_bytes };
		if (e->start_bytes >= size) {
			pe->past_end = true;
		} else if (e->size_bytes > size - e->start_bytes) {
			pe->size_bytes = size - e->start_bytes;
			pe->past_end = true;
		} else {
			pe->size_bytes = e->size_bytes;
		}
		ret = dup_str(e->type, &pe->type);
		if (ret)
			goto out;
		tb->nb_parts++;
		ret = part_probe_entry(fd, pe);
		if (ret < 0)
			goto out;
	}
	if (tb->nb_parts > 1)
		qsort(tb->parts, tb->nb_parts, sizeof(*tb->parts),
		      part_cmp_number);
	if (nb_clash)
		part_msgs_add(msgs, "%zu nested partition%s ignored: libblkid "
			      "numbers %s as the %s table already does",
			      nb_clash, nb_clash == 1 ? "" : "s",
			      nb_clash == 1 ? "it" : "them", tb->label);
	if (nb_bad)
		part_msgs_add(msgs, "%zu %s partition%s ignored (numbered above "
			      "%d, empty, or beyond 2^64 bytes)", nb_bad,
			      want_atari ? "Atari" : "nested",
			      nb_bad == 1 ? "" : "s", PART_MAX_NUMBER);
out:
	part_extras_free(&x);
	return ret;
}

/* True when a "dos" label is really a protective MBR (type 0xEE) whose
 * GPT libfdisk could not use. */
static bool part_is_orphan_pmbr(struct fdisk_context *cxt)
{
	struct fdisk_table *ftb = NULL;
	bool found = false;
	size_t i;

	if (!fdisk_is_label(cxt, DOS) || fdisk_get_partitions(cxt, &ftb) < 0)
		return false;
	for (i = 0; ftb && i < fdisk_table_get_nents(ftb); i++) {
		struct fdisk_partition *pa = fdisk_table_get_partition(ftb, i);
		struct fdisk_parttype *t = pa ? fdisk_partition_get_type(pa) :
						NULL;

		if (t && fdisk_parttype_get_code(t) == 0xee)
			found = true;
	}
	fdisk_unref_table(ftb);
	return found;
}

/* Opens a libfdisk context on fd that reads with the given logical
 * sector size, its messages going to msgs. 0 or -errno. */
static int part_open_fdisk(int fd, unsigned sector_bytes,
			   struct part_msgs *msgs,
			   struct fdisk_context **cxt_r)
{
	struct fdisk_context *cxt;
	int ret;

	*cxt_r = NULL;
	cxt = fdisk_new_context();
	if (!cxt)
		return -ENOMEM;
	/* Capture messages before assigning: label probing already warns. */
	fdisk_set_ask(cxt, part_ask, msgs);
	/* List-only skips the "wipe old signatures" check and its warning. */
	fdisk_enable_listonly(cxt, 1);
	/* A regular file has no BLKSSZGET: libfdisk would assume 512. */
	ret = fdisk_save_user_sector_size(cxt, sector_bytes, sector_bytes);
	if (!ret)
		ret = fdisk_assign_device_by_fd(cxt, fd, "disk", 1);
	if (ret < 0) {
		fdisk_unref_context(cxt);
		return ret;
	}
	*cxt_r = cxt;
	return 0;
}

/* Looks for a GPT written for 4096-byte logical sectors (its header at
 * byte 4096). An MBR does not say its sector size, so only a GPT can be
 * recognised this way; at 512 bytes such a disk shows just a protective
 * MBR. Swaps *cxt and *msgs for the 4K ones when found. A 4K GPT that
 * part_gpt_guard refuses is not looked at; its reason goes to *msgs.
 * 0 or -ENOMEM. */
static int part_try_4k(int fd, uint64_t size, struct fdisk_context **cxt,
		       struct part_msgs **msgs)
{
	struct fdisk_context *cxt4 = NULL;
	struct part_msgs *msgs4;
	char why[256];
	int ret;

	if (part_gpt_guard(fd, 0, size, 4096, why, sizeof(why))) {
		part_msgs_add(*msgs, "%s", why);
		return 0;
	}
	msgs4 = calloc(1, sizeof(*msgs4));
	if (!msgs4)
		return -ENOMEM;
	ret = part_open_fdisk(fd, 4096, msgs4, &cxt4);
	if (ret == 0 && fdisk_is_label(cxt4, GPT)) {
		fdisk_unref_context(*cxt);
		free(*msgs);
		*cxt = cxt4;
		*msgs = msgs4;
		return 0;
	}
	fdisk_unref_context(cxt4);
	free(msgs4);
	return ret == -ENOMEM ? ret : 0;
}

/* The libfdisk half of part_scan. disk_has_fs_only: libblkid saw a
 * filesystem and no partition table on the whole disk. gpt_refused: why
 * part_gpt_guard refused the 512-byte-sector GPT, or NULL. */
static int part_scan_table(int fd, uint64_t size, bool disk_has_fs_only,
			   const char *gpt_refused, struct part_table *tb)
{
	struct fdisk_context *cxt = NULL;
	struct part_msgs *msgs;
	size_t nb_dropped = 0, nb_looped = 0;
	const char *name;
	int ret;

	/* No label fits in less than one sector; libfdisk would say EINVAL. */
	if (size < 512)
		return 0;
	/* libfdisk would allocate what the header claims: the disk is meant
	 * to be GPT, and its table is unusable (the kernel's efi.c refuses
	 * such a header too, and its msdos.c ignores the protective MBR). */
	if (gpt_refused) {
		ret = set_str(&tb->label, "gpt");
		if (!ret)
			ret = set_str(&tb->error, "%s", gpt_refused);
		return ret;
	}
	msgs = calloc(1, sizeof(*msgs));
	if (!msgs)
		return -ENOMEM;
	ret = part_open_fdisk(fd, 512, msgs, &cxt);
	if (ret < 0)
		goto out;
	if (size >= 3 * 4096 &&
	    (!fdisk_has_label(cxt) || part_is_orphan_pmbr(cxt))) {
		ret = part_try_4k(fd, size, &cxt, &msgs);
		if (ret < 0)
			goto out;
	}
	if (!fdisk_has_label(cxt)) {
		/* libfdisk knows no Atari root sector; libblkid does. The
		 * messages of the failed label probes are not about it. */
		msgs->len = 0;
		msgs->buf[0] = '\0';
		if (!disk_has_fs_only)
			ret = part_add_extras(fd, size, true, tb, msgs);
		if (!ret && msgs->len)
			ret = set_str(&tb->warning, "%s", msgs->buf);
		goto out;
	}
	if (fdisk_is_label(cxt, DOS) && disk_has_fs_only)
		goto out; /* a FAT boot sector, not an MBR (see top) */

	name = fdisk_label_get_name(fdisk_get_label(cxt, NULL));
	ret = dup_str(name ? name : "unknown", &tb->label);
	if (!ret && fdisk_is_label(cxt, DOS))
		ret = part_disk_id(cxt, &tb->disk_id);
	else if (!ret) {
		CLEANUP_FREE char *id = NULL;

		if (fdisk_get_disklabel_id(cxt, &id) == 0)
			ret = dup_lower(id, &tb->disk_id);
	}
	if (ret)
		goto out;

	if (part_is_orphan_pmbr(cxt)) {
		/* The disk is meant to be GPT: say so, not "dos". */
		free(tb->disk_id);
		tb->disk_id = NULL;
		ret = set_str(&tb->label, "gpt");
		if (!ret)
			ret = set_str(&tb->error,
				      "protective MBR of a GPT disk, but no "
				      "valid GPT header: the primary (LBA 1) "
				      "and the backup (last LBA) are corrupt, "
				      "or the image was truncated%s%s", msgs->len ? ": " : "",
				      msgs->buf);
		goto out;
	}

	ret = part_read_entries(cxt, fd, size, tb, &nb_dropped, &nb_looped);
	if (ret == -ENOMEM)
		goto out;
	if (ret < 0) {
		int err = -ret;

		ret = set_str(&tb->error, "%s partition table cannot be read: "
			      "%s%s%s", tb->label, strerror(err),
			      msgs->len ? ": " : "", msgs->buf);
		goto out;
	}
	if (fdisk_is_label(cxt, DOS)) {
		ret = part_add_extras(fd, size, false, tb, msgs);
		if (ret < 0)
			goto out;
	}
	if (nb_dropped)
		part_msgs_add(msgs, "%zu partition%s ignored (numbered above "
			      "%d, or starting beyond 2^64 bytes)", nb_dropped,
			      nb_dropped == 1 ? "" : "s", PART_MAX_NUMBER);
	if (nb_looped)
		part_msgs_add(msgs, "the EBR chain loops: %zu repeated logical "
			      "partition%s ignored", nb_looped,
			      nb_looped == 1 ? "" : "s");
	if (msgs->len)
		ret = set_str(&tb->warning, "%s%s", msgs->buf,
			      msgs->truncated ? "; ..." : "");
out:
	fdisk_unref_context(cxt);
	free(msgs);
	return ret;
}

int part_scan(int fd, uint64_t size, struct part_table **table_r)
{
	struct part_table *tb;
	struct part_fs_info fs;
	char why[256];
	bool gpt_refused;
	int ret;

	*table_r = NULL;
	if (fd < 0)
		return -EBADF;
	tb = calloc(1, sizeof(*tb));
	if (!tb)
		return -ENOMEM;

	/* Before libfdisk reads a header that claims a huge entry array
	 * (gpt-guard.c; part_probe_fs asks for itself). */
	gpt_refused = part_gpt_guard(fd, 0, size, 512, why, sizeof(why));
	/* The whole disk first: its verdict (filesystem, no table) decides
	 * whether an empty "dos" label from libfdisk is a FAT boot sector. */
	ret = part_probe_fs(fd, 0, size, true, &fs);
	if (ret == -ENOMEM)
		goto err;
	if (ret == 0) {
		tb->disk_fs_type = fs.type;
		tb->disk_fs_label = fs.label;
		tb->disk_fs_uuid = fs.uuid;
	}
	/* A disk with a table keeps what blkid saw on it as a whole too (an
	 * ISO hybrid image is both a filesystem and an MBR). */
	ret = part_scan_table(fd, size, ret == 0 && fs.type && !fs.has_pt,
			      gpt_refused ? why : NULL, tb);
	if (ret < 0)
		goto err;
	*table_r = tb;
	return 0;
err:
	part_table_free(tb);
	return ret;
}
