/* partition-int.h: shared inside partition/ only (no other layer includes
 * it).
 *
 * probe-fs.c wraps libblkid: it identifies the filesystem in one byte
 * range of the disk. partition.c wraps libfdisk and builds the public
 * table. Both read the caller's descriptor and never close it.
 */
#ifndef IMGFS_PARTITION_INT_H
#define IMGFS_PARTITION_INT_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

/* What libblkid found in a byte range. Strings are owned (free them with
 * part_fs_info_clear); NULL when absent. */
struct part_fs_info {
	char *type;     /* "ext4", "vfat", ... */
	char *label;
	char *uuid;
	bool has_pt;    /* a partition table signature (PTTYPE) was seen */
};

/* Probes [off, off + len) of fd for a filesystem, and with want_pt also
 * for a partition table signature. Returns 0 (fs_r filled; all NULL when
 * nothing was recognised, or when two signatures contradict each other),
 * -ENOMEM, or -EIO / -EINVAL when libblkid could not read the range.
 * A range holding a GPT header that part_gpt_guard refuses is not shown
 * to libblkid at all: nothing is recognised there. */
int part_probe_fs(int fd, uint64_t off, uint64_t len, bool want_pt,
		  struct part_fs_info *fs_r);
void part_fs_info_clear(struct part_fs_info *fs);

/* Looks at the GPT headers libfdisk or libblkid would read in [base,
 * base + size) of fd with sector_bytes-byte sectors (gpt-guard.c).
 * Returns 1, with the reason in why (may be NULL), when one of them
 * claims an entry array the libraries must not be given; else 0. */
int part_gpt_guard(int fd, uint64_t base, uint64_t size,
		   unsigned sector_bytes, char *why, size_t why_len);

/* Partitions libblkid reads and libfdisk does not (nested.c). */
struct part_extra {
	unsigned number;       /* the kernel's (and libblkid's) number */
	uint64_t start_bytes;  /* not yet clipped to the disk */
	uint64_t size_bytes;
	char type[24];         /* "BGM" (Atari id), "0x7" (BSD fstype) */
};

struct part_extras {
	struct part_extra *ents;
	size_t nb;
	size_t nb_bad;         /* entries refused: out of range, too many */
};

/* Asks libblkid for the partitions of the whole disk [0, size) of fd.
 * want_atari: keep the entries of an "atari" root table (and nothing
 * when the root table is another); else keep only the entries of nested
 * tables (a BSD, Solaris, UnixWare or Minix label inside an MBR
 * partition). 0 (x filled, possibly empty) or -ENOMEM; a disk libblkid
 * cannot read gives no entries. Free with part_extras_free. */
int part_scan_extras(int fd, uint64_t size, bool want_atari,
		     unsigned max_number, struct part_extras *x);
void part_extras_free(struct part_extras *x);

#endif
