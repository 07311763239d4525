/* probe-fs.c: identify the filesystem in a byte range with libblkid.
 *
 * One low-level probe per range: blkid_probe_set_device(fd, off, len)
 * makes libblkid see only that window, so a partition is probed exactly as
 * the kernel's /dev/sdaN would be, and nothing outside the window is read.
 * blkid_do_safeprobe (not do_probe) is used on purpose: when two
 * filesystem signatures contradict each other it reports "ambivalent"
 * instead of guessing, and we then report no filesystem rather than a
 * wrong one (a user would mount the wrong driver on a guess).
 *
 * Deliberately not done: no blkid cache (/run/blkid), no topology ioctls,
 * no nested probing (a filesystem inside a LUKS or LVM volume is not
 * looked at). libblkid reads with its own buffers, bounded by the probers.
 *
 * libblkid moves the descriptor's file offset (it seeks and reads); the
 * caller owns the descriptor and must not share its offset with another
 * thread during a scan.
 */
#include "partition-int.h"

#include <blkid/blkid.h>
#include <errno.h>
#include <stdlib.h>
#include <string.h>

void part_fs_info_clear(struct part_fs_info *fs)
{
	free(fs->type);
	free(fs->label);
	free(fs->uuid);
	memset(fs, 0, sizeof(*fs));
}

/* Copies a blkid value (if present) into *dst. 0 or -ENOMEM. */
static int probe_fs_take(blkid_probe pr, const char *name, char **dst)
{
	const char *v = NULL;

	if (blkid_probe_lookup_value(pr, name, &v, NULL) != 0 || !v || !*v)
		return 0;
	*dst = strdup(v);
	return *dst ? 0 : -ENOMEM;
}

int part_probe_fs(int fd, uint64_t off, uint64_t len, bool want_pt,
		  struct part_fs_info *fs_r)
{
	blkid_probe pr;
	int rc, ret = 0;

	memset(fs_r, 0, sizeof(*fs_r));
	/* libblkid takes len 0 as "to the end of the file": never ask. */
	if (len == 0)
		return 0;
	if (off > INT64_MAX || len > INT64_MAX)
		return -EINVAL;
	/* libblkid reads files with 512-byte sectors, and may look for a
	 * GPT here even when not asked to (gpt-guard.c): keep it away from
	 * one that would have it allocate gigabytes. Nothing is reported
	 * for such a range, as for one libblkid does not recognise. */
	if (part_gpt_guard(fd, off, len, 512, NULL, 0))
		return 0;

	pr = blkid_new_probe();
	if (!pr)
		return -ENOMEM;
	if (blkid_probe_set_device(pr, fd, (blkid_loff_t)off,
				   (blkid_loff_t)len) != 0) {
		ret = errno == ENOMEM ? -ENOMEM : -EIO;
		goto out;
	}
	blkid_probe_enable_superblocks(pr, 1);
	blkid_probe_set_superblocks_flags(pr, BLKID_SUBLKS_TYPE |
						      BLKID_SUBLKS_LABEL |
						      BLKID_SUBLKS_UUID);
	blkid_probe_enable_partitions(pr, want_pt);
	blkid_probe_enable_topology(pr, 0);

	rc = blkid_do_safeprobe(pr);
	if (rc == 1 || rc == -2)
		goto out; /* nothing found, or ambivalent: report nothing */
	if (rc < 0) {
		ret = -EIO;
		goto out;
	}

	fs_r->has_pt = want_pt &&
		       blkid_probe_lookup_value(pr, "PTTYPE", NULL, NULL) == 0;
	ret = probe_fs_take(pr, "TYPE", &fs_r->type);
	if (!ret)
		ret = probe_fs_take(pr, "LABEL", &fs_r->label);
	if (!ret)
		ret = probe_fs_take(pr, "UUID", &fs_r->uuid);
	if (ret)
		part_fs_info_clear(fs_r);
out:
	blkid_free_probe(pr);
	return ret;
}
