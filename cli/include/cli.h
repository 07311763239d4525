/* cli.h: the commands that read an image without FUSE
 * (imgfs info|ls|cat|cp|tar IMAGE ...), and the pieces the mount shares
 * with them so both show the same names and the same info text.
 */
#ifndef IMGFS_CLI_H
#define IMGFS_CLI_H

#include "imgfmt.h"
#include "lvm.h"
#include "partition.h"

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

/* True when name is one of the commands cli_main runs. */
bool cli_is_command(const char *name);
/* Runs argv[0] (the command name) with its arguments; returns the exit
 * status. */
int cli_main(int argc, char **argv);

/* How a snapshot folder got its name (snapname.c). */
enum cli_dirname_kind {
	CLI_DIRNAME_BY_NAME,
	CLI_DIRNAME_BY_ID,
	CLI_DIRNAME_BY_POSITION, /* "snapshot-N" */
};

/* The folder names under snapshots/ for a snapshot table, the mount's
 * rules: the name; else (unusable as a folder name, or shared) the ID;
 * else "snapshot-N" (N: position from 1, with '~' appended until it
 * clashes with nothing). Valid and unique whatever the table holds.
 * Fills dirnames[i] (malloc'ed; free each) and kind[i]. 0 or -ENOMEM. */
int cli_snapshot_dirnames(const struct img_snapshot *list, size_t nb,
			  char **dirnames, enum cli_dirname_kind *kind);

/* part_scan_reader over an image handle (scan-img.c): the partition
 * table of a disk, or for a block file with no table entry of its own (a
 * logical volume) a table with no partitions whose disk_fs_* name what
 * it holds, as libblkid names a partition's. 0 or -errno, as part_scan. */
int cli_scan_img(struct img *img, struct part_table **table_r);
/* The same, ended early with -ECANCELED once cancelled(cancel_ctx) says
 * so (asked before each chunk copied and each round). */
int cli_scan_img_cancellable(struct img *img, bool (*cancelled)(void *ctx),
			     void *cancel_ctx, struct part_table **table_r);

/* Parses the number of an OVA's disk as --disk N and -o disk=N take it
 * (from 1) into *disk_r; prints one line naming the value and returns
 * -EINVAL when it is not one. */
int cli_parse_disk(const char *value, unsigned *disk_r);
/* The same for -o backing=local|follow|deny and for a format name
 * (--format, -o format=): one line naming the value, and -EINVAL, when
 * it is not one. The mount and the commands take the same words. */
int cli_parse_backing(const char *value, enum img_backing_policy *policy_r);
int cli_parse_format(const char *value, enum img_format *format_r);

/* True for the filesystem types (libblkid's names) imgfs reads files of. */
bool cli_fs_type_readable(const char *fs_type);

/* What the info text and `imgfs info` show (info.c). Plain data: the
 * mount and the command fill it from what each has. */
struct cli_info_snapshot {
	const char *dirname, *id, *name;
	uint64_t date_sec;
	uint32_t date_nsec;
	uint64_t vm_clock_nsec, disk_size, vm_state_size;
	enum cli_dirname_kind kind;
	/* Why its folder cannot be shown (one line, no image path), or
	 * NULL: such snapshots are listed here and absent from snapshots/. */
	const char *unreadable;
};

/* Whether files/NAME shows the filesystem of a block file. */
struct cli_info_files {
	char name[64];       /* "disk", "p1", "lvm/vg/lv" */
	bool shown;
	char reason[160];    /* when not shown: why, one line */
};

struct cli_info_data {
	struct img *img;
	const char *image_path;   /* as info names it */
	bool read_only;
	uint64_t allocated;       /* bytes stored in the image itself */
	const struct cli_info_snapshot *snaps;
	size_t nb_snaps;
	const struct part_table *table; /* NULL: not scanned (yet) */
	const struct cli_info_files *files;
	size_t nb_files;
	const struct lvm_set *lvm;      /* NULL or none found */
	/* Per LV index of lvm: cli_scan_img of the volume, or NULL when it
	 * cannot be read (or was not scanned). NULL: none scanned. */
	const struct part_table *const *lv_tables;
};

/* Writes the info text (the mount's MOUNTPOINT/info) or, with json, one
 * JSON object with the keys the man page lists. 0 or -errno. */
int cli_info_write(FILE *f, const struct cli_info_data *d, bool json);

/* Fills files[] (cap entries) for the block files of table, the rule
 * both the mount and the commands use: "disk" when there is no table,
 * else each pN that is not an extended partition; shown when blkid's type
 * is one imgfs reads. Returns how many entries were filled. */
size_t cli_info_files_from_table(const struct part_table *table,
				 struct cli_info_files *files, size_t cap);
/* The files/lvm/VG/LV entry of a volume: lv->unreadable, else t (its
 * cli_scan_img) by the partitions' rule; a volume holding a partition
 * table shows none. t NULL: the volume could not be scanned. */
void cli_info_files_of_lv(const struct lvm_lv *lv, const struct part_table *t,
			  struct cli_info_files *f);
/* True when files/lvm/VG/LV shows the volume whose scan is t. */
bool cli_lv_files_shown(const struct part_table *t);
/* Why a block file with this blkid type shows no files, written into
 * buf ("no filesystem imgfs reads (swap)"); false when it shows them. */
bool cli_files_reason(const char *fs_type, bool container, char *buf,
		      size_t len);

#endif
