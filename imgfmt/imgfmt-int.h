/* imgfmt-int.h: what the format drivers share with the dispatcher (img.c).
 * Only files in imgfmt/ include this.
 *
 * A driver is a table of operations (struct img_ops). img.c does the
 * generic work once: bounds, read-only, overflow of off + len, and the
 * walk down a backing chain for block status. Drivers never see a request
 * outside [0, img->size). A NULL op means "unsupported" (-ENOTSUP).
 */
#ifndef IMGFS_IMGFMT_INT_H
#define IMGFS_IMGFMT_INT_H

#include "imgfmt.h"

#include <pthread.h>

/* Kinds a driver reports for its own layer; img.c resolves UNALLOCATED
 * through the backing chain into DATA / ZERO / HOLE. */
#define IMG_EXTENT_UNALLOCATED ((enum img_extent_kind)100)

struct img_ops {
	const char *name;
	/* Score 0..100 for the first bytes of the file (IMG_PROBE_BYTES,
	 * or fewer when the file is shorter). */
	int (*probe)(const uint8_t *head, size_t len);
	/* Optional: score 0..100 for the last 512 bytes of the file, for
	 * formats whose signature is a footer (a fixed VHD). */
	int (*probe_tail)(const uint8_t *tail, size_t len);
	/* img->fd, path, read_only and opts are set; sets img->size. */
	int (*open)(struct img *img, struct img_err *err);
	void (*close)(struct img *img);
	int (*pread)(struct img *img, void *buf, size_t len, uint64_t off);
	int (*pwrite)(struct img *img, const void *buf, size_t len,
		      uint64_t off);
	int (*discard)(struct img *img, uint64_t off, uint64_t len);
	int (*write_zeroes)(struct img *img, uint64_t off, uint64_t len);
	int (*flush)(struct img *img);
	/* Kind DATA / ZERO / IMG_EXTENT_UNALLOCATED for this layer only;
	 * depth is ignored. */
	int (*block_status)(struct img *img, uint64_t off, uint64_t len,
			    struct img_extent *ext_r);
	/* Optional: block_status that also pins the host bytes of a DATA
	 * extent with a host_fd (pin_r->domain stays NULL otherwise). A
	 * driver whose host offsets never move while it is open (raw, the
	 * read-only formats) leaves it NULL. */
	int (*block_status_pinned)(struct img *img, uint64_t off,
				   uint64_t len, struct img_extent *ext_r,
				   struct img_pin *pin_r);
	int (*get_info)(struct img *img, struct img_info *info);
	int (*snapshot_list)(struct img *img, struct img_snapshot **list_r,
			     size_t *nb_r);
	int (*snapshot_open)(struct img *img, const char *id,
			     struct img **snap_r, struct img_err *err);
	int (*snapshot_create)(struct img *img, const char *name,
			       struct img_err *err);
	int (*snapshot_delete)(struct img *img, const char *id,
			       struct img_err *err);
};

/* A handle. Every field is set while it is opened, by one thread, and
 * only read afterwards, by any thread and with no lock, except read_only
 * (below). What a driver changes later lives behind priv, under the
 * driver's own locks (qcow2-int.h says which). */
struct img {
	const struct img_ops *ops;
	char *path;       /* as opened (backing: resolved, not realpath'd) */
	char *real_path;  /* realpath(path), for loop checks */
	int fd;           /* the image file; owned unless shares_fd */
	bool shares_fd;   /* snapshot handles borrow their parent's fd */
	/* Set at open; afterwards only ever turned on, by a qcow2 driver
	 * that found corruption (under its metadata lock) while requests
	 * of other threads check it unlocked: read it with
	 * img_read_only_now, write it with __atomic_store_n. */
	bool read_only;
	bool probed;      /* format was probed, not given (raw write rule) */
	uint64_t size;    /* virtual size in bytes */
	struct img_open_opts opts;
	/* realpath of the top image's folder: the root for backing=local. */
	char *trusted_dir;
	/* The image whose open is opening this one (backing chain), for
	 * loop detection; NULL for the top image. Valid during open only. */
	const struct img *opener;
	unsigned chain_depth;
	struct img *backing;
	void *priv;       /* driver state */
};

/* img->read_only as of now (see struct img). */
static inline bool img_read_only_now(const struct img *img)
{
	return __atomic_load_n(&img->read_only, __ATOMIC_ACQUIRE);
}

/* Longest backing chain we open: deep enough for any real image, short
 * enough that a hostile chain cannot exhaust descriptors. */
#define IMG_MAX_CHAIN_DEPTH 64

/* How many leading bytes probe() sees. */
#define IMG_PROBE_BYTES 4096

extern const struct img_ops img_raw_ops;
extern const struct img_ops img_qcow2_ops;
extern const struct img_ops img_vmdk_ops;
extern const struct img_ops img_vpc_ops;
extern const struct img_ops img_vhdx_ops;
extern const struct img_ops img_vdi_ops;
extern const struct img_ops img_ova_ops;
extern const struct img_ops img_window_ops;
extern const struct img_ops img_compose_ops;

/* The driver of a format (raw for IMG_FORMAT_PROBE). */
const struct img_ops *img_driver(enum img_format fmt);

/* Allocates a handle with fd = -1 and copies opts; NULL on ENOMEM. */
struct img *img_alloc(const struct img_open_opts *opts);
/* Frees a handle's generic fields (not priv, not backing). */
void img_free_handle(struct img *img);

/* Opens a backing file named in parent's header (relative names are
 * relative to parent's folder), applying the backing policy and the loop
 * and depth checks. fmt is IMG_FORMAT_PROBE when the header names none.
 * The result is read-only. Fills err naming the file and the option that
 * would allow it when the policy refuses (-EPERM). */
int img_open_backing(struct img *parent, const char *name,
		     enum img_format fmt, struct img **backing_r,
		     struct img_err *err);

/* Opens a file an image's bytes are read from (the image itself, a data
 * file, an extent): read-only or read-write, close-on-exec, without
 * blocking on a FIFO, and only a regular file or a block device (-EISDIR
 * for a folder, -EINVAL for anything else). On failure *why_r is what to
 * say after the file's name ("not a regular file or block device", or
 * strerror), a static string. */
int img_open_disk_file(const char *path, bool read_only, int *fd_r,
		       const char **why_r);

/* Opens an external data file named in parent's header under the same
 * path policy, read-only or read-write like parent, with
 * img_open_disk_file. Returns the fd. */
int img_open_data_file(struct img *parent, const char *name, int *fd_r,
		       struct img_err *err);

/* Takes QEMU's image locks on fd (lock.c) for reading, or reading and
 * writing. -EBUSY with a message when another process holds the image in
 * a way that conflicts. */
int img_lock_file(int fd, const char *path, bool write, struct img_err *err);

/* Read pins (pin.c): the host bytes a read mapped stay that range's
 * until the read is done. One domain per set of handles that share a
 * mapping (a qcow2 image and its snapshots). epoch is guarded by the
 * owner's metadata lock; nb_pins is atomic. */
struct img_pin_domain {
	uint64_t epoch;
	unsigned long nb_pins[2]; /* pins taken in even / odd epochs */
};

/* Pins what the caller just mapped under the owner's lock; released with
 * img_unpin (imgfmt.h) from any thread. */
void img_pin_take_locked(struct img_pin_domain *d, struct img_pin *pin_r);
/* The tag of a reference dropped now. */
uint64_t img_pin_epoch_locked(const struct img_pin_domain *d);
/* True when every pin taken at or before epoch tag has been released
 * (advancing the epoch as far as released pins allow); never waits. */
bool img_pin_released_locked(struct img_pin_domain *d, uint64_t tag);

/* Reads [off, off+len) of img's backing image: zeroes where there is no
 * backing image or past its end. */
int img_read_backing(struct img *img, void *buf, size_t len, uint64_t off);

/* Picks the format of a file opened without one (probe.c); refuses a
 * file that carries a foreign format's signature. */
int img_probe_format(int fd, const char *path, enum img_format *fmt_r,
		     struct img_err *err);
/* True when head (the first bytes of a file) or tail (its last sector)
 * would probe as a format other than raw, or as a foreign format. Either
 * may be NULL. */
bool img_probes_as_other(const uint8_t *head, size_t head_len,
			 const uint8_t *tail, size_t tail_len);
/* The name of the format other than qcow2 and raw whose signature starts
 * head, or NULL (foreign.c). */
const char *img_foreign_format(const uint8_t *head, size_t len);
/* The same for a signature in the last sector of a file (DMG's trailer),
 * or NULL. */
const char *img_foreign_format_tail(const uint8_t *tail, size_t len);

#endif
