/* vmdk-int.h: what the VMDK driver's files (vmdk.c, vmdk-desc.c) and the
 * OVA driver (ova.c) share.
 *
 * A VMDK disk is a list of extents laid end to end (VMware, "Virtual Disk
 * Format 5.0"): flat extents (a byte range of a file), sparse extents (a
 * hosted sparse file: header, grain directory, grain tables, grains, maybe
 * deflate-compressed with markers: streamOptimized) and zero extents. The
 * decoded state is struct vmdk_state; it is built once at open and then
 * only its caches change, under its lock.
 *
 * The OVA driver serves a VMDK stored inside a tar archive: the sparse
 * extent is then a (fd, base, length) slice of the archive, which is why
 * every extent carries its own fd, base and length rather than assuming a
 * whole file.
 */
#ifndef IMGFS_IMGFMT_VMDK_INT_H
#define IMGFS_IMGFMT_VMDK_INT_H

#include "imgfmt-int.h"

#include <pthread.h>
#include <stdint.h>

#define VMDK_SECTOR 512u

/* Limits on untrusted descriptor text. */
#define VMDK_DESC_MAX_BYTES (1u << 20) /* QEMU reads at most 1 MiB too */
#define VMDK_DESC_MAX_LINE 4096u
#define VMDK_MAX_EXTENTS 1024u

enum vmdk_extent_type {
	VMDK_EXTENT_FLAT,   /* FLAT and VMFS: a byte range of a file */
	VMDK_EXTENT_SPARSE, /* SPARSE (KDMV) and VMFSSPARSE (COWD) */
	VMDK_EXTENT_ZERO,   /* ZERO: reads as zeroes, no file */
};

enum vmdk_access {
	VMDK_ACCESS_RW,
	VMDK_ACCESS_RDONLY,
	VMDK_ACCESS_NOACCESS, /* reads fail with EIO */
};

/* One extent line of a descriptor, as parsed (vmdk-desc.c). */
struct vmdk_desc_extent {
	enum vmdk_access access;
	enum vmdk_extent_type type;
	uint64_t sectors;
	char *file;            /* NULL for ZERO */
	uint64_t flat_sectors; /* FLAT: where the extent starts in file */
};

/* What the descriptor says (embedded in a sparse extent or a file). */
struct vmdk_desc {
	char create_type[64];
	char adapter_type[32];
	char hw_version[16];
	char *parent_hint;     /* parentFileNameHint, or NULL */
	uint32_t cid;
	uint32_t parent_cid;
	bool has_cid, has_parent_cid;
	size_t nb_extents;
	struct vmdk_desc_extent *extents;
};

/* Parses descriptor text (not NUL-terminated; len bytes). Fills desc,
 * which the caller frees with vmdk_desc_free even on failure. -EINVAL
 * with a message naming path and the line for bad text. Without
 * want_extents (the descriptor embedded in a sparse extent, whose extent
 * lines QEMU and VMware ignore) extent lines are skipped unread. */
int vmdk_desc_parse(const char *path, const char *text, size_t len,
		    bool want_extents, struct vmdk_desc *desc,
		    struct img_err *err);
void vmdk_desc_free(struct vmdk_desc *desc);
/* True when text looks like a descriptor: comments and blank lines, then
 * "version=1|2|3" (the probe). */
bool vmdk_desc_looks_like(const uint8_t *text, size_t len);

struct vmdk_state;

/* Opens the VMDK whose bytes are [base, base + len) of fd as the disk of
 * img (OVA: a tar member; in_archive refuses descriptors and parents,
 * which would name files outside the archive). Sets *size_r. The fd stays
 * owned by the caller. */
int vmdk_open_slice(struct img *img, int fd, uint64_t base, uint64_t len,
		    const char *name, struct vmdk_state **s_r,
		    uint64_t *size_r, struct img_err *err);
void vmdk_state_free(struct vmdk_state *s);
/* Reads [off, off + len) of the disk; unallocated grains come from
 * img's backing image. */
int vmdk_state_pread(struct img *img, struct vmdk_state *s, void *buf,
		     size_t len, uint64_t off);
int vmdk_state_block_status(struct vmdk_state *s, uint64_t off,
			    uint64_t len, struct img_extent *ext_r);
/* Adds subformat, grain size, adapter type... to info. */
void vmdk_state_info(struct vmdk_state *s, struct img_info *info);

#endif
