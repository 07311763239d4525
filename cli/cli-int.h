/* cli-int.h: what the files of cli/ share (no other layer includes it).
 *
 * A command opens one session (session.c): the image, read-only, with the
 * mount's --format and -o backing= rules. Everything else is looked at
 * only when a place needs it: the partition table of a disk is scanned at
 * its first use, snapshots are listed only for snapshots/..., LVM only for
 * lvm/..., and a filesystem is opened only for a BLOCKFILE:PATH place, so
 * `imgfs cat IMAGE p2:/etc/os-release` reads one table and one
 * filesystem.
 *
 * Exit statuses (the man page lists them): CLI_EXIT_OK, CLI_EXIT_FAIL (a
 * runtime error: the image, the place, a file that could not be read or
 * written; a cp or tar that went on past a damaged file ends with it
 * too), CLI_EXIT_USAGE (bad command line). A closed stdout ends the
 * program quietly by SIGPIPE (141 in a shell).
 */
#ifndef IMGFS_CLI_INT_H
#define IMGFS_CLI_INT_H

#include "cli.h"
#include "fsys.h"
#include "imgfmt.h"
#include "lvm.h"
#include "partition.h"

#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <sys/types.h>

#define CLI_EXIT_OK 0
#define CLI_EXIT_FAIL 1
#define CLI_EXIT_USAGE 2

/* Reads of file contents and block files go in pieces this large. */
#define CLI_IO_BYTES (1u << 20)

/* readahead.c: a disk's pieces in order, read ahead by worker threads
 * (decompressing a qcow2 in parallel). A piece is data (len bytes at
 * data, or the read's error in ret) or, when holes are skipped, a hole
 * (block status says nothing is stored there). */
struct cli_piece {
	uint64_t off, len;
	bool hole;
	int ret;
	const uint8_t *data; /* valid until the next cli_readahead_next */
};
struct cli_readahead;
int cli_readahead_start(struct img *img, bool skip_holes,
			unsigned nb_threads, struct cli_readahead **ra_r);
/* 1 with the next piece, 0 at the end of the disk. */
int cli_readahead_next(struct cli_readahead *ra, struct cli_piece *p);
void cli_readahead_free(struct cli_readahead *ra);

struct cli_opts {
	enum img_format format;
	enum img_backing_policy backing;
	unsigned disk;
	bool json;      /* info --json */
	bool longfmt;   /* ls -l */
	bool recursive; /* ls -R */
};

/* One disk: the active image (snapshot NULL) or a snapshot's. */
struct cli_disk {
	struct img *img;          /* owned for snapshots */
	const char *prefix;       /* "" or "snapshots/NAME/" */
	bool scanned;
	struct part_table *table; /* after cli_disk_table */
	bool lvm_scanned;
	struct lvm_set *lvm;
	struct img **lvm_srcs;    /* windows lvm_scan reads */
	size_t nb_lvm_srcs;
};

struct cli_snap {
	char *dirname;
	enum cli_dirname_kind kind;
	struct img_snapshot *snap; /* points into sess->snaps */
	struct cli_disk *disk;     /* opened on first use */
};

struct cli_session {
	const char *image;        /* as given, for messages */
	char *image_abs;
	struct img *img;
	struct cli_disk active;
	bool snaps_listed;
	struct img_snapshot *snaps;
	size_t nb_snaps;
	struct cli_snap *snap_dirs;
};

/* A block file: a window of a disk (or an LV handle), with what the
 * table says it holds. */
struct cli_blockfile {
	char name[512];           /* as the mount shows it: "p2",
	                           * "snapshots/x/lvm/vg/lv" */
	struct cli_disk *disk;
	struct img *img;          /* owned: close with cli_blockfile_close */
	const char *fs_type;      /* blkid's, or NULL (borrowed) */
	bool container;           /* an extended partition */
	bool is_table;            /* "disk" of a disk with partitions */
	const struct lvm_lv *lv;  /* an LVM logical volume, or NULL */
	struct part_table *lv_table; /* its cli_scan_img, by cli_blockfile_fs */
	struct fsys *fs;          /* after cli_blockfile_fs */
};

/* session.c */
int cli_session_open(struct cli_session *s, const char *image,
		     const struct cli_opts *o);
void cli_session_close(struct cli_session *s);
/* Scans the disk's table once; prints and returns -errno on failure. */
int cli_disk_table(struct cli_session *s, struct cli_disk *d);
int cli_disk_lvm(struct cli_session *s, struct cli_disk *d);
int cli_session_snapshots(struct cli_session *s);
/* The disk of snapshot folder i (opened on first use). */
int cli_snap_disk(struct cli_session *s, size_t i, struct cli_disk **d_r);
/* Resolves a block file name ("p2", "disk", "lvm/vg/lv",
 * "snapshots/NAME/p2"). Prints the message naming image and place. */
int cli_blockfile_open(struct cli_session *s, const char *name,
		       struct cli_blockfile *bf);
void cli_blockfile_close(struct cli_blockfile *bf);
/* Opens the filesystem; prints "IMAGE: NAME: no filesystem ..." and
 * returns -errno when there is none imgfs reads. */
int cli_blockfile_fs(struct cli_session *s, struct cli_blockfile *bf);

/* A parsed place: BLOCKFILE[:PATH]. path is NULL for the raw bytes. */
struct cli_place {
	char *blockfile;
	char *path;   /* normalised: "/" or "/a/b"; NULL when none */
};
/* The ':' that ends BLOCKFILE in a place, or NULL (none, or the place
 * is a snapshot folder or goes below files/). */
const char *cli_place_colon(const char *arg);
int cli_place_parse(struct cli_session *s, const char *arg,
		    struct cli_place *p);
void cli_place_free(struct cli_place *p);
/* "files/X/rest" (or "snapshots/N/files/X/rest") as "X:/rest"
 * (malloc'ed), the mount's files/ folders as places; NULL otherwise. */
char *cli_files_alias(const char *name);
/* Looks a normalised path up from the root; fills ino and st. */
int cli_lookup_path(struct fsys *fs, const char *path, bool follow_last,
		    uint64_t *ino_r, struct fsys_stat *st_r);

/* Messages: "imgfs: IMAGE: PLACE: what". */
void cli_err(struct cli_session *s, const char *place, const char *fmt, ...)
	__attribute__((format(printf, 3, 4)));

/* Output to stdout in large writes; a write error other than EPIPE is
 * reported once. */
struct cli_out {
	int fd;
	uint8_t *buf;
	size_t len, cap;
	uint64_t total;
	int error;   /* first -errno */
};
int cli_out_init(struct cli_out *o, int fd);
int cli_out_write(struct cli_out *o, const void *p, size_t len);
int cli_out_flush(struct cli_out *o);
void cli_out_free(struct cli_out *o);

/* A progress line on stderr when it is a terminal. total 0: unknown. */
struct cli_progress {
	bool on;
	uint64_t total, done;
	double start, last;
	const char *what;
};
void cli_progress_start(struct cli_progress *p, const char *what,
			uint64_t total);
void cli_progress_add(struct cli_progress *p, uint64_t bytes);
void cli_progress_end(struct cli_progress *p);

/* The commands. argv[0] is the command name. */
int cli_cmd_info(int argc, char **argv);
int cli_cmd_ls(int argc, char **argv);
int cli_cmd_cat(int argc, char **argv);
int cli_cmd_cp(int argc, char **argv);
int cli_cmd_tar(int argc, char **argv);

/* Parses the common options (--format, -o backing=...) and the
 * command's own short flags; positional arguments end in pos. Returns 0,
 * 1 for --help (printed), or CLI_EXIT_USAGE after a message. */
int cli_parse(int argc, char **argv, const char *flags, const char *usage,
	      struct cli_opts *o, char **pos, int min_pos, int max_pos,
	      int *nb_pos_r);

/* info.c: the session's data for cli_info_write. */
int cli_info_print(struct cli_session *s, FILE *f, bool json);

double cli_now(void);

/* walk.c: walking a filesystem for cp and tar. */
#define CLI_WALK_PATH_MAX 65536
struct cli_walk_entry {
	const char *rel;      /* "" for the walk's root, else "/a/b" */
	uint64_t ino;
	struct fsys_stat st;
};
struct cli_walk {
	struct cli_session *s;
	struct fsys *fs;
	/* Prepended to rel in messages: "p1:" (root) or "p1:/etc". */
	const char *place_prefix;
	bool post;            /* call fn again after a folder's children */
	bool stop;            /* set by fn: end the walk */
	bool failed;          /* something was reported and skipped */
	/* Returns <0 to end the walk, 1 to skip a folder's children. */
	int (*fn)(struct cli_walk *w, const struct cli_walk_entry *e,
		  bool post);
	void *ctx;
};
int cli_walk(struct cli_walk *w, uint64_t ino, const struct fsys_stat *st);
/* Inodes seen with nlink > 1 -> the first name they had (hard links). */
struct cli_links {
	uint64_t *ino;
	char **name;
	size_t nb, cap; /* cap: a power of two */
};
const char *cli_links_find(const struct cli_links *m, uint64_t ino);
int cli_links_add(struct cli_links *m, uint64_t ino, const char *name);
void cli_links_free(struct cli_links *m);

/* Parses arg, opens its block file and filesystem and looks the path up
 * (not following a final symlink). Prints what went wrong. */
int cli_open_place_fs(struct cli_session *s, const char *arg,
		      struct cli_place *p, struct cli_blockfile *bf,
		      uint64_t *ino_r, struct fsys_stat *st_r);

#endif
