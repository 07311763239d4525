/* imgfmt.h: the public interface of the image-format layer.
 *
 * One opaque handle (struct img) per open image, whatever its format. The
 * handle is safe to use from several threads at once: reads of allocated
 * data run in parallel, metadata is guarded inside the driver.
 *
 * Every fallible call returns 0 (or a non-negative count) on success and
 * -errno on failure. I/O is all-or-nothing: there are no short counts.
 * Calls that a person must act on (open, snapshot operations) also fill a
 * struct img_err with one line that names the image and the problem.
 *
 * imgfmt knows nothing of FUSE, partitions or virtio, and never prints.
 */
#ifndef IMGFS_IMGFMT_H
#define IMGFS_IMGFMT_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

struct img;
struct img_pin_domain;

enum img_format {
	IMG_FORMAT_PROBE = 0, /* by each driver's signature; a file that
	                       * carries a format imgfs does not read is
	                       * refused, anything else is raw */
	IMG_FORMAT_RAW,
	IMG_FORMAT_QCOW2,
	IMG_FORMAT_VMDK,
	IMG_FORMAT_VPC,       /* VHD; "vhd" is accepted as a name too */
	IMG_FORMAT_VHDX,
	IMG_FORMAT_VDI,
	IMG_FORMAT_OVA,       /* a tar archive holding VMDK disks */
	IMG_FORMAT_COUNT,
};

/* The format named name ("raw", "qcow2", "vmdk", "vpc" or "vhd", "vhdx",
 * "vdi", "ova"), or -EINVAL. */
int img_format_from_name(const char *name, enum img_format *fmt_r);
/* The names --format accepts, comma-separated, for messages. */
const char *img_format_names(void);

/* Which backing and external data files an image may pull in. The check
 * applies at every depth of a chain, after resolving symbolic links. */
enum img_backing_policy {
	IMG_BACKING_LOCAL = 0, /* only inside the top image's folder or below */
	IMG_BACKING_FOLLOW,    /* any path, as QEMU does */
	IMG_BACKING_DENY,      /* none at all */
};

struct img_open_opts {
	enum img_format format;
	bool read_only;
	enum img_backing_policy backing;
	/* Upper bound of the metadata cache in bytes; 0 picks the default
	 * (IMG_DEFAULT_CACHE_BYTES). Backing images get the same bound. */
	size_t cache_bytes;
	/* Formats that hold several disks (OVA): which one, from 1; 0 takes
	 * the first without asking. A number given for an image of any
	 * other format fails the open (-EINVAL), so that it is never
	 * silently ignored. Backing images do not inherit it. */
	unsigned disk;
};

#define IMG_DEFAULT_CACHE_BYTES (1024 * 1024)
#define IMG_ERR_MSG_MAX 512

/* A message a person can act on, e.g. "a.qcow2: L1 table at 0x... lies
 * past the end of the file". errnum is the same negative errno that the
 * failing call returned. */
struct img_err {
	int errnum;
	char msg[IMG_ERR_MSG_MAX];
};

/* Fills err (if not NULL) and returns errnum (a negative errno). */
int img_err(struct img_err *err, int errnum, const char *fmt, ...)
	__attribute__((format(printf, 3, 4)));
/* The message of err without the "PATH: " (path as img names itself)
 * that messages about img begin with, for a listing that names the image
 * once; the whole message when it does not begin so. Points into err. */
const char *img_err_reason(const struct img_err *err, const struct img *img);

/* Opens path. opts may be NULL (probe, read-write, backing=local).
 * On failure returns -errno and fills err; *img_r is untouched.
 * -EACCES / -ENOENT / -EISDIR for the file, -EINVAL for corrupt or
 * unsupported images, -EPERM for a backing file the policy refuses,
 * -ELOOP for a backing chain that loops, -EROFS when read-write was asked
 * of an image marked corrupt, -EMEDIUMTYPE for a probed file that carries
 * a format imgfs does not read, -EBUSY when another process holds the
 * image's locks, -ENOTSUP for a feature the driver cannot read. A driver
 * that only reads (VMDK, VHD, VHDX, VDI, OVA) opens read-only whatever
 * was asked. */
int img_open(const char *path, const struct img_open_opts *opts,
	     struct img **img_r, struct img_err *err);

/* Closes the image and its backing chain; accepts NULL. Snapshot handles
 * opened from img must be closed first. */
void img_close(struct img *img);

uint64_t img_size(const struct img *img);
bool img_is_read_only(const struct img *img);
/* True when writes can succeed: opened read-write and the driver writes. */
bool img_writable(const struct img *img);
/* The path the image was opened with (backing files: as resolved). */
const char *img_path(const struct img *img);
/* The backing image, or NULL. Owned by img. */
struct img *img_backing(const struct img *img);
/* The descriptor of the image file itself (for stat and locks). */
int img_fd(const struct img *img);
/* True when the disk's bytes are the image file's own bytes at the same
 * offsets (a raw image), so a reader that needs a descriptor of the disk
 * may open the file itself. */
bool img_is_file_identity(const struct img *img);

/* What only a qcow2 image has (img_info.qcow2). */
struct img_info_qcow2 {
	unsigned version;         /* 2 or 3 */
	unsigned refcount_bits;
	bool extended_l2;
	const char *compression;  /* "zlib" or "zstd" */
	const char *data_file;    /* external data file as stored, or NULL */
	bool data_file_raw;
	bool dirty;
	bool corrupt;
	bool lazy_refcounts;
};

/* Which format-specific part of img_info is filled. */
enum img_info_kind {
	IMG_INFO_GENERIC = 0, /* none: only the shared fields */
	IMG_INFO_QCOW2,       /* qcow2 */
};

struct img_info {
	const char *format;       /* the driver's name: "raw", "qcow2", ... */
	uint64_t virtual_size;
	uint64_t cluster_size;    /* 0 when the format has no clusters */
	const char *backing_file; /* as stored in the image, or NULL */
	const char *backing_format; /* from the image, or NULL */
	size_t nb_snapshots;
	/* Facts with a type of their own, by format: the member kind names.
	 * A format with such facts adds a kind and a member here, never a
	 * field to the shared part above. */
	enum img_info_kind kind;
	union {
		struct img_info_qcow2 qcow2;
	};
	/* Format-specific facts as key/value lines ("subformat",
	 * "monolithicSparse"), in the order info shows them. */
	size_t nb_fields;
	struct {
		char key[32];
		char value[224];
	} fields[16];
};

/* Adds a key/value line to info->fields (dropped when full). */
void img_info_add(struct img_info *info, const char *key, const char *fmt,
		  ...) __attribute__((format(printf, 3, 4)));

/* Fills info; the strings stay valid while img is open. */
int img_get_info(struct img *img, struct img_info *info);

/* Reads/writes [off, off + len) of the virtual disk. A range past the end
 * fails with -EINVAL (read) or -ENOSPC (write); writes to a read-only
 * image fail with -EROFS; corrupt metadata gives -EIO. */
int img_pread(struct img *img, void *buf, size_t len, uint64_t off);
int img_pwrite(struct img *img, const void *buf, size_t len, uint64_t off);
/* Drops the range so it reads as zeroes (or from the backing file, where
 * the format cannot express a zero); frees host space where it can. */
int img_discard(struct img *img, uint64_t off, uint64_t len);
/* Makes the range read as zeroes. */
int img_write_zeroes(struct img *img, uint64_t off, uint64_t len);
/* Makes everything written so far durable in the image file. */
int img_flush(struct img *img);
/* Why the image was marked corrupt while writing (the handle then turned
 * read-only and writes give -EROFS), or NULL when it was not. The string
 * is owned by img and stays valid while it is open. */
const char *img_corrupt_reason(const struct img *img);

enum img_extent_kind {
	IMG_EXTENT_DATA, /* data stored at some depth of the chain */
	IMG_EXTENT_ZERO, /* stored as zeroes (zero flag, hole in raw) */
	IMG_EXTENT_HOLE, /* allocated nowhere in the chain: reads as zeroes */
};

struct img_extent {
	uint64_t off; /* guest offset, the off that was asked */
	uint64_t len; /* > 0 */
	enum img_extent_kind kind;
	unsigned depth; /* 0: this image, 1: its backing file, ... */
	/* For DATA stored plainly (not compressed), the file that holds the
	 * bytes and where: a reader may pread/splice from it directly while
	 * the image is open and unchanged, or, while writes run, under the
	 * pin of img_block_status_pinned. Otherwise host_fd is -1. */
	int host_fd;
	uint64_t host_off;
};

/* Describes the range that starts at off and is at most len bytes long
 * with one kind (the extent may be shorter than len). 0 or -errno. */
int img_block_status(struct img *img, uint64_t off, uint64_t len,
		     struct img_extent *ext_r);

/* A read pin: while it is held, the host bytes of the extent that
 * img_block_status_pinned returned are not reused for another range of
 * the disk (a concurrent discard or rewrite may still change or zero
 * them, as it may change the range itself). Hold it for one read or
 * splice only: freed space is reused only after the pins of its time
 * are released. */
struct img_pin {
	struct img_pin_domain *domain; /* NULL: nothing pinned */
	unsigned slot;
};

/* img_block_status, and for a DATA extent with a host_fd a pin on its
 * host bytes, to release with img_unpin once they have been read.
 * *pin_r is always initialised (domain NULL when nothing needed one). */
int img_block_status_pinned(struct img *img, uint64_t off, uint64_t len,
			    struct img_extent *ext_r, struct img_pin *pin_r);
/* Releases a pin (accepts one that holds nothing); any thread, no lock. */
void img_unpin(struct img_pin *pin);

/* Bytes of the virtual disk stored as data in this image itself (depth
 * 0), for st_blocks. */
int img_allocated_bytes(struct img *img, uint64_t *bytes_r);

struct img_snapshot {
	char *id;   /* unique ID string, e.g. "1" */
	char *name; /* may be empty; not necessarily unique */
	uint64_t date_sec;
	uint32_t date_nsec;
	uint64_t vm_clock_nsec;
	uint64_t disk_size;
	uint64_t vm_state_size;
	/* Why img_snapshot_open will refuse it, as far as the table entry
	 * tells without reading the snapshot's own tables (its L1 table
	 * lies past the end of the file, say), without the image path; or
	 * NULL. An entry that passes may still fail to open on an I/O
	 * error. */
	char *unreadable;
};

/* Lists internal snapshots in table order, every entry of the table,
 * the unreadable ones too. *list_r is freed with
 * img_snapshot_list_free. Formats without snapshots give an empty list. */
int img_snapshot_list(struct img *img, struct img_snapshot **list_r,
		      size_t *nb_r);
void img_snapshot_list_free(struct img_snapshot *list, size_t nb);

/* Opens the snapshot with this ID as a read-only image of its own, whose
 * size is the snapshot's disk size. Close it before img. */
int img_snapshot_open(struct img *img, const char *id, struct img **snap_r,
		      struct img_err *err);
/* Creates a snapshot of the current state with this name (-EEXIST if the
 * name is taken, -EMLINK if a refcount is at the maximum its width can
 * count: too many snapshots for refcount_bits; the image is unchanged). */
int img_snapshot_create(struct img *img, const char *name,
			struct img_err *err);
/* Deletes the snapshot with this ID. */
int img_snapshot_delete(struct img *img, const char *id, struct img_err *err);

/* A window: an image handle that shows [start, start + len) of base as a
 * disk of its own (a partition, a volume segment). Reads, writes, block
 * status, discard, zeroes and flush are clipped and offset here, once.
 * The window borrows base, which must stay open until the window is
 * closed with img_close. read_only makes the window refuse writes even
 * when base takes them. -EINVAL when the range is not inside base. */
int img_window_open(struct img *base, uint64_t start, uint64_t len,
		    bool read_only, struct img **win_r);
/* The image a window shows a part of, and where (NULL/0 otherwise). */
struct img *img_window_base(const struct img *img, uint64_t *start_r);

/* A composed image: segments that tile [0, size) in order, each mapped
 * onto one source (linear) or dealt round-robin in chunks of stripe_bytes
 * over several (striped), as LVM2 lays out a logical volume. */
struct img_stripe {
	struct img *src;  /* borrowed; open until the composed image closes */
	uint64_t src_off; /* where the stripe starts in src */
};

struct img_segment {
	uint64_t start, len;   /* in the composed image's bytes */
	unsigned nb_stripes;   /* >= 1; len is a multiple of nb * stripe_bytes */
	uint64_t stripe_bytes; /* chunk size when nb_stripes > 1 */
	const struct img_stripe *stripes;
};

/* Opens the composition (the tables are copied); read-only when asked or
 * when a source is. -EINVAL when segments do not tile from 0 or a stripe
 * reaches past its source's end. name is the handle's path for messages. */
int img_compose_open(const char *name, const struct img_segment *segs,
		     size_t nb, bool read_only, struct img **img_r);
/* Hands src to a composed image, which closes it when it closes (a
 * source that is itself composed). -EINVAL when img is not composed. */
int img_compose_own(struct img *img, struct img *src);

#endif
