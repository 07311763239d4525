/* vmdk.c: the VMDK driver (read-only): probe, open, read, block status.
 *
 * Spec: VMware "Virtual Disk Format 5.0"; behaviour checked against QEMU
 * (block/vmdk.c) and `qemu-img convert -O raw`. A disk is a list of
 * extents laid end to end (vmdk-int.h). The file given is either
 *   - a hosted sparse extent ("KDMV"): monolithicSparse, one extent of a
 *     twoGbMaxExtentSparse set, or streamOptimized (deflate grains behind
 *     markers; the grain directory may only be in the footer copy of the
 *     header, gd_offset = ~0). Its embedded descriptor gives createType,
 *     CID and the parent; its extent lines are ignored (as QEMU does);
 *   - or a text descriptor naming extent files (FLAT/VMFS with offsets,
 *     SPARSE, ZERO), each opened with img_open_data_file so that the
 *     backing= policy applies to them as to a qcow2 data file.
 * A parent (parentFileNameHint) is opened with img_open_backing; when it
 * is a VMDK its CID must equal our parentCID, else the open is refused
 * (QEMU fails the reads that would reach it; VMware refuses to open).
 *
 * Sparse extents: grain directory (GD) -> grain tables (GT, gt_entries
 * 32-bit sector offsets) -> grains of grain_bytes. GTE 0 is unallocated
 * (read from the parent), GTE 1 with the zeroed-grain flag reads as
 * zeroes. The GD is loaded whole at open, after checking that it lies
 * inside the file (so its size is bounded by the file's, and by QEMU's
 * 32 Mi-entry limit); GTs are loaded on demand into a bounded LRU cache
 * (cache_bytes). Decompressed grains go to a small cache as well
 * (zahead.c), so 4 KiB reads of a 64 KiB grain inflate it once, and a
 * worker inflates the grains ahead of sequential reads.
 *
 * Threads: s->lock guards the GT cache only, and no I/O is done under
 * it. A read describes its run from the cached GT under the lock (a
 * missing GT is read with the lock dropped, then inserted) and does its
 * data I/O (one pread for a run of host-contiguous grains, the parent,
 * inflating a grain) after dropping it, so reads run in parallel.
 *
 * Bad input: every header field, GD/GT entry and marker is checked
 * before use. Problems found at open refuse the open (-EINVAL, or
 * -ENOTSUP for a valid feature we do not read) with one line naming the
 * file; problems met later (a GT or grain past the end of the file, a
 * grain that does not inflate) fail that read with -EIO only.
 *
 * ESX sparse extents (COWD, VMFSSPARSE in a descriptor) are read the
 * same way with their own header: 4096-entry grain tables, a directory
 * of the length the header gives, no markers, no zero grains.
 *
 * Not done: writing (the handle is read-only), seSparse extents, raw
 * device mappings, the COWD parent name, the redundant
 * GD as a repair source (it is used only when the primary one is absent).
 */
#include "vmdk-int.h"
#include "zahead.h"

#include "checked.h"
#include "cleanup.h"
#include "endian.h"
#include "io.h"

#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <libdeflate.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#define VMDK4_MAGIC "KDMV"
#define VMDK3_MAGIC "COWD"

/* Header flags (spec "Hosted Sparse Extent Header"). */
#define VMDK_FLAG_NL_DETECT (1u << 0)
#define VMDK_FLAG_RGD (1u << 1)
#define VMDK_FLAG_ZERO_GRAIN (1u << 2)
#define VMDK_FLAG_COMPRESSED (1u << 16)
#define VMDK_FLAG_MARKERS (1u << 17)

#define VMDK_COMPRESS_NONE 0
#define VMDK_COMPRESS_DEFLATE 1
#define VMDK_GD_AT_END UINT64_MAX
#define VMDK_GTE_ZEROED 1u

/* Stream markers (spec "Stream-Optimized Compressed Sparse Extents"). */
#define VMDK_MARKER_EOS 0
#define VMDK_MARKER_FOOTER 3
#define VMDK_MARKER_BYTES 12 /* lba (8) + size (4) before grain data */

/* Limits, QEMU's where it has one. */
#define VMDK_MAX_GRAIN_SECTORS 0x200000u   /* 1 GiB grains */
#define VMDK_MAX_COMPRESSED_GRAIN_SECTORS 0x8000u /* 16 MiB */
#define VMDK_MAX_GT_ENTRIES 512u  /* hosted sparse (KDMV) */
#define VMDK3_GT_ENTRIES 4096u     /* ESX sparse (COWD): fixed */
#define VMDK_MAX_GD_ENTRIES (32u << 20)
/* Decompressed grains kept per image, at most (see zahead.c). */
#define VMDK_GRAIN_CACHE_BYTES (4u << 20)
#define VMDK_MIN_GT_SLOTS 16u
#define VMDK_MAX_GT_SLOTS 4096u

/* The hosted sparse header, decoded (offsets in sectors). */
struct vmdk_header {
	uint32_t version;
	uint32_t flags;
	uint64_t capacity;
	uint64_t grain_sectors;
	uint64_t desc_offset;
	uint64_t desc_sectors;
	uint32_t gt_entries;
	uint64_t rgd_offset;
	uint64_t gd_offset;
	uint64_t overhead;
	uint8_t check_bytes[4];
	uint16_t compress;
	bool cowd;             /* an ESX sparse (COWD) header */
	uint64_t cowd_gd_entries;
};

struct vmdk_extent {
	enum vmdk_extent_type type;
	enum vmdk_access access;
	uint64_t start; /* first virtual byte */
	uint64_t bytes; /* virtual bytes */
	int fd;
	bool owns_fd;
	uint64_t base;       /* byte 0 of the extent file within fd */
	uint64_t file_bytes; /* length of the extent file (or slice) */
	char *name;          /* for messages */
	uint64_t flat_off;   /* FLAT: bytes into the file */
	/* SPARSE */
	uint64_t grain_bytes;
	uint32_t gt_entries;
	uint64_t gd_entries;
	uint32_t *gd; /* GT offsets in sectors, host order */
	bool compressed, markers, zero_grain;
	uint32_t version;
};

struct vmdk_gt_slot {
	const struct vmdk_extent *ext;
	uint64_t gd_index;
	uint64_t last_use;
	uint32_t *gtes; /* host order; NULL: free slot */
};

/* Locking: the descriptor, the extents and the sizes are set by
 * vmdk_open and only read afterwards, with no lock; the grain-table
 * cache (gt_slots) and clock are guarded by lock. grains is made on the
 * first compressed read, set once atomically, and has its own lock. */
struct vmdk_state {
	pthread_mutex_t lock;
	bool lock_init;
	struct vmdk_desc desc;
	const char *create_type;
	size_t nb_extents;
	struct vmdk_extent *extents;
	uint64_t size;
	uint64_t gt_bytes_max;
	size_t nb_gt_slots;
	struct vmdk_gt_slot *gt_slots;
	uint64_t clock;
	struct zahead *grains;
	bool in_archive;
};

static struct vmdk_state *vmdk_state(struct img *img)
{
	return img->priv;
}

static int vmdk_probe(const uint8_t *head, size_t len)
{
	if (len >= 4 && (memcmp(head, VMDK4_MAGIC, 4) == 0 ||
			 memcmp(head, VMDK3_MAGIC, 4) == 0))
		return 100;
	if (vmdk_desc_looks_like(head, len))
		return 100;
	/* The first line VMware and QEMU write, even where the version
	 * line is damaged: still a VMDK, never raw. */
	if (len >= 21 && memcmp(head, "# Disk DescriptorFile", 21) == 0)
		return 100;
	return 0;
}

/* Reads [off, off + len) of the extent file; bytes past its end read as
 * zeroes, and nothing outside [base, base + file_bytes) of the fd is
 * ever read (an OVA member is a slice of the archive). */
static int ext_pread(const struct vmdk_extent *e, void *buf, size_t len,
		     uint64_t off)
{
	size_t n = 0;

	if (off < e->file_bytes)
		n = (size_t)MIN((uint64_t)len, e->file_bytes - off);
	if (n > 0) {
		int ret = full_pread_zero_eof(e->fd, buf, n, e->base + off);
		if (ret < 0)
			return ret;
	}
	memset((uint8_t *)buf + n, 0, len - n);
	return 0;
}

static void vmdk_header_decode(const uint8_t *b, struct vmdk_header *h)
{
	memset(h, 0, sizeof(*h));
	h->version = get_le32(b + 4);
	h->flags = get_le32(b + 8);
	h->capacity = get_le64(b + 12);
	h->grain_sectors = get_le64(b + 20);
	h->desc_offset = get_le64(b + 28);
	h->desc_sectors = get_le64(b + 36);
	h->gt_entries = get_le32(b + 44);
	h->rgd_offset = get_le64(b + 48);
	h->gd_offset = get_le64(b + 56);
	h->overhead = get_le64(b + 64);
	memcpy(h->check_bytes, b + 73, 4);
	h->compress = get_le16(b + 77);
}

/* streamOptimized with the grain directory at the end: the footer (a
 * marker, a copy of the header with the real gd_offset, the
 * end-of-stream marker) fills the last three sectors. */
static int read_footer(const char *path, const struct vmdk_extent *e,
		       struct vmdk_header *h, struct img_err *err)
{
	uint8_t f[3 * VMDK_SECTOR];
	uint64_t end = align_up(e->file_bytes, VMDK_SECTOR);
	int ret;

	if (end < 4 * VMDK_SECTOR)
		return img_err(err, -EINVAL, "%s: grain directory is in the "
			       "footer but the file is too short to hold one",
			       path);
	ret = ext_pread(e, f, sizeof(f), end - sizeof(f));
	if (ret < 0)
		return img_err(err, ret, "%s: cannot read the footer: %s",
			       path, strerror(-ret));
	if (get_le32(f + 8) != 0 || get_le32(f + 12) != VMDK_MARKER_FOOTER ||
	    memcmp(f + 512, VMDK4_MAGIC, 4) != 0 || get_le64(f + 1024) != 0 ||
	    get_le32(f + 1032) != 0 || get_le32(f + 1036) != VMDK_MARKER_EOS)
		return img_err(err, -EINVAL, "%s: grain directory is in the "
			       "footer but there is no valid footer at the end "
			       "of the file", path);
	vmdk_header_decode(f + 512, h);
	if (h->gd_offset == VMDK_GD_AT_END)
		return img_err(err, -EINVAL, "%s: the footer does not say "
			       "where the grain directory is", path);
	return 0;
}

/* Validates the header of sparse extent e and loads its grain
 * directory. desc_r (if not NULL) gets the embedded descriptor's
 * location (bytes) for the caller to parse. */
static int open_sparse(const char *path, struct vmdk_extent *e,
		       struct vmdk_header *h, struct img_err *err)
{
	uint64_t gd_bytes, gd_off_bytes, span, overhead_bytes;
	uint64_t max_grain;
	int ret;

	if (h->version < 1 || h->version > 3)
		return img_err(err, -ENOTSUP, "%s: VMDK sparse version %" PRIu32
			       " is not supported", path, h->version);
	if ((h->flags & VMDK_FLAG_NL_DETECT) &&
	    memcmp(h->check_bytes, "\n \r\n", 4) != 0)
		return img_err(err, -EINVAL, "%s: newline check bytes are "
			       "damaged (was the file copied in text mode?)",
			       path);
	if (h->compress != VMDK_COMPRESS_NONE &&
	    h->compress != VMDK_COMPRESS_DEFLATE)
		return img_err(err, -ENOTSUP, "%s: compression algorithm %u is "
			       "not supported", path, h->compress);
	e->compressed = h->compress == VMDK_COMPRESS_DEFLATE;
	e->markers = (h->flags & VMDK_FLAG_MARKERS) != 0;
	e->zero_grain = (h->flags & VMDK_FLAG_ZERO_GRAIN) != 0;
	e->version = h->version;

	max_grain = e->compressed ? VMDK_MAX_COMPRESSED_GRAIN_SECTORS
				  : VMDK_MAX_GRAIN_SECTORS;
	if (h->grain_sectors == 0 || h->grain_sectors > max_grain)
		return img_err(err, -EINVAL, "%s: grain size of %" PRIu64
			       " sectors is invalid (1 to %" PRIu64 ")", path,
			       h->grain_sectors, max_grain);
	e->grain_bytes = h->grain_sectors * VMDK_SECTOR;
	if (!h->cowd &&
	    (h->gt_entries == 0 || h->gt_entries > VMDK_MAX_GT_ENTRIES))
		return img_err(err, -EINVAL, "%s: %" PRIu32 " entries per grain "
			       "table is invalid (1 to %u)", path,
			       h->gt_entries, VMDK_MAX_GT_ENTRIES);
	e->gt_entries = h->gt_entries;
	if (h->capacity == 0 ||
	    MUL_OVERFLOW(h->capacity, (uint64_t)VMDK_SECTOR, &e->bytes) ||
	    e->bytes > (UINT64_MAX >> 2))
		return img_err(err, -EINVAL, "%s: capacity of %" PRIu64
			       " sectors is invalid", path, h->capacity);
	span = e->grain_bytes * e->gt_entries; /* <= 2^30 * 2^9: no wrap */
	e->gd_entries = div_round_up(e->bytes, span);
	/* COWD gives its directory's length; grains it does not reach
	 * read -EIO (QEMU's behaviour). */
	if (h->cowd)
		e->gd_entries = MIN(e->gd_entries, h->cowd_gd_entries);
	if (e->gd_entries == 0)
		return img_err(err, -EINVAL, "%s: grain directory has no "
			       "entries", path);
	if (e->gd_entries > VMDK_MAX_GD_ENTRIES)
		return img_err(err, -EINVAL, "%s: grain directory of %" PRIu64
			       " entries is too large (capacity %" PRIu64
			       " sectors)", path, e->gd_entries, h->capacity);
	if (MUL_OVERFLOW(h->overhead, (uint64_t)VMDK_SECTOR,
			 &overhead_bytes) ||
	    overhead_bytes > align_up(e->file_bytes, VMDK_SECTOR))
		return img_err(err, -EINVAL, "%s: file truncated: %" PRIu64
			       " bytes, but the grains start at sector %" PRIu64,
			       path, e->file_bytes, h->overhead);

	if (h->gd_offset == 0 && (h->flags & VMDK_FLAG_RGD))
		h->gd_offset = h->rgd_offset;
	gd_bytes = e->gd_entries * 4;
	if (h->gd_offset == 0 ||
	    MUL_OVERFLOW(h->gd_offset, (uint64_t)VMDK_SECTOR, &gd_off_bytes) ||
	    !range_within(gd_off_bytes, gd_bytes, e->file_bytes)) {
		/* The primary directory is unusable: the redundant one, when
		 * the header has one that fits, serves instead. */
		uint64_t r;
		if ((h->flags & VMDK_FLAG_RGD) && h->rgd_offset &&
		    !MUL_OVERFLOW(h->rgd_offset, (uint64_t)VMDK_SECTOR, &r) &&
		    range_within(r, gd_bytes, e->file_bytes)) {
			gd_off_bytes = r;
		} else {
			return img_err(err, -EINVAL, "%s: grain directory at "
				       "sector %" PRIu64 " (%" PRIu64 " entries) "
				       "lies past the end of the file (%" PRIu64
				       " bytes)", path, h->gd_offset,
				       e->gd_entries, e->file_bytes);
		}
	}
	/* gd_bytes <= 128 MiB and no larger than the file. */
	e->gd = malloc(gd_bytes);
	if (!e->gd)
		return img_err(err, -ENOMEM, "%s: out of memory for a grain "
			       "directory of %" PRIu64 " entries", path,
			       e->gd_entries);
	ret = ext_pread(e, e->gd, gd_bytes, gd_off_bytes);
	if (ret < 0)
		return img_err(err, ret, "%s: cannot read the grain directory: "
			       "%s", path, strerror(-ret));
	for (uint64_t i = 0; i < e->gd_entries; i++)
		e->gd[i] = le32toh(e->gd[i]);
	return 0;
}

/* Reads the sparse header of e (its first sector) and validates it. */
static int read_sparse_header(const char *path, struct vmdk_extent *e,
			      struct vmdk_header *h, struct img_err *err)
{
	uint8_t b[VMDK_SECTOR];
	int ret;

	if (e->file_bytes < VMDK_SECTOR)
		return img_err(err, -EINVAL, "%s: file of %" PRIu64 " bytes is "
			       "too short for a sparse VMDK header", path,
			       e->file_bytes);
	ret = ext_pread(e, b, sizeof(b), 0);
	if (ret < 0)
		return img_err(err, ret, "%s: cannot read the header: %s",
			       path, strerror(-ret));
	if (memcmp(b, VMDK3_MAGIC, 4) == 0) {
		/* ESX sparse (vmfsSparse): a shorter header, 4096-entry
		 * grain tables, no descriptor, compression or zero grains. */
		memset(h, 0, sizeof(*h));
		h->cowd = true;
		h->version = 1;
		h->capacity = get_le32(b + 12);
		h->grain_sectors = get_le32(b + 16);
		h->gd_offset = get_le32(b + 20);
		h->cowd_gd_entries = get_le32(b + 24);
		h->gt_entries = VMDK3_GT_ENTRIES;
		return 0;
	}
	if (memcmp(b, VMDK4_MAGIC, 4) != 0)
		return img_err(err, -EINVAL, "%s: not a sparse VMDK extent (no "
			       "KDMV magic)", path);
	vmdk_header_decode(b, h);
	return 0;
}

static int finish_sparse(const char *path, struct vmdk_extent *e,
			 struct vmdk_header *h, struct img_err *err)
{
	if (h->gd_offset == VMDK_GD_AT_END) {
		int ret = read_footer(path, e, h, err);
		if (ret < 0)
			return ret;
	}
	return open_sparse(path, e, h, err);
}

/* Reads the embedded descriptor of a sparse extent into a fresh buffer
 * (NUL-terminated), or sets *text_r NULL when there is none. */
static int read_embedded_desc(const char *path, const struct vmdk_extent *e,
			      const struct vmdk_header *h, char **text_r,
			      size_t *len_r, struct img_err *err)
{
	uint64_t off, len;
	char *text;
	int ret;

	*text_r = NULL;
	*len_r = 0;
	if (h->desc_offset == 0 || h->desc_sectors == 0)
		return 0;
	if (MUL_OVERFLOW(h->desc_offset, (uint64_t)VMDK_SECTOR, &off) ||
	    off >= e->file_bytes)
		return img_err(err, -EINVAL, "%s: descriptor at sector %" PRIu64
			       " lies past the end of the file", path,
			       h->desc_offset);
	len = MIN(h->desc_sectors, (uint64_t)VMDK_DESC_MAX_BYTES / VMDK_SECTOR) *
	      VMDK_SECTOR;
	len = MIN(len, e->file_bytes - off);
	text = malloc(len + 1);
	if (!text)
		return img_err(err, -ENOMEM, "%s: out of memory", path);
	ret = ext_pread(e, text, len, off);
	if (ret < 0) {
		free(text);
		return img_err(err, ret, "%s: cannot read the descriptor: %s",
			       path, strerror(-ret));
	}
	text[len] = '\0';
	*text_r = text;
	*len_r = len;
	return 0;
}

static int grow_extents(struct vmdk_state *s, size_t cap, const char *path,
			struct img_err *err)
{
	s->extents = calloc(cap, sizeof(*s->extents));
	if (!s->extents)
		return img_err(err, -ENOMEM, "%s: out of memory", path);
	for (size_t i = 0; i < cap; i++)
		s->extents[i].fd = -1;
	return 0;
}

/* Lays the extents end to end and sizes the GT cache. */
static int finish_layout(struct vmdk_state *s, const char *path,
			 size_t cache_bytes, struct img_err *err)
{
	uint64_t at = 0;

	for (size_t i = 0; i < s->nb_extents; i++) {
		struct vmdk_extent *e = &s->extents[i];

		e->start = at;
		if (ADD_OVERFLOW(at, e->bytes, &at) || at > (UINT64_MAX >> 2))
			return img_err(err, -EINVAL, "%s: extent sizes add up "
				       "to more than 2^62 bytes", path);
		if (e->type == VMDK_EXTENT_SPARSE &&
		    e->gt_entries * 4u > s->gt_bytes_max)
			s->gt_bytes_max = e->gt_entries * 4u;
	}
	s->size = at;
	if (s->gt_bytes_max) {
		size_t n = cache_bytes / s->gt_bytes_max;

		n = MAX(n, (size_t)VMDK_MIN_GT_SLOTS);
		n = MIN(n, (size_t)VMDK_MAX_GT_SLOTS);
		s->gt_slots = calloc(n, sizeof(*s->gt_slots));
		if (!s->gt_slots)
			return img_err(err, -ENOMEM, "%s: out of memory", path);
		s->nb_gt_slots = n;
	}
	return 0;
}

static const char *default_create_type(const struct vmdk_state *s)
{
	if (s->desc.create_type[0])
		return s->desc.create_type;
	if (s->nb_extents == 1 && s->extents[0].compressed)
		return "streamOptimized";
	return "monolithicSparse";
}

static int state_new(struct vmdk_state **s_r, const char *path,
		     struct img_err *err)
{
	struct vmdk_state *s = calloc(1, sizeof(*s));

	if (!s)
		return img_err(err, -ENOMEM, "%s: out of memory", path);
	if (pthread_mutex_init(&s->lock, NULL) != 0) {
		free(s);
		return img_err(err, -ENOMEM, "%s: cannot make a lock", path);
	}
	s->lock_init = true;
	*s_r = s;
	return 0;
}

void vmdk_state_free(struct vmdk_state *s)
{
	if (!s)
		return;
	/* First: its worker maps and reads through the extents. */
	zahead_free(s->grains);
	for (size_t i = 0; i < s->nb_extents; i++) {
		struct vmdk_extent *e = &s->extents[i];

		if (e->owns_fd && e->fd >= 0)
			close(e->fd);
		free(e->gd);
		free(e->name);
	}
	free(s->extents);
	for (size_t i = 0; i < s->nb_gt_slots; i++)
		free(s->gt_slots[i].gtes);
	free(s->gt_slots);
	vmdk_desc_free(&s->desc);
	if (s->lock_init)
		pthread_mutex_destroy(&s->lock);
	free(s);
}

/* The file itself is one sparse extent (monolithicSparse,
 * streamOptimized, an OVA member). The embedded descriptor, if any, is
 * parsed into s->desc for its CID, parent and createType. */
static int open_single_sparse(struct vmdk_state *s, const char *path,
			      int fd, uint64_t base, uint64_t len,
			      struct vmdk_header *h, struct img_err *err)
{
	CLEANUP_FREE char *text = NULL;
	struct vmdk_extent *e;
	size_t text_len;
	int ret;

	ret = grow_extents(s, 1, path, err);
	if (ret < 0)
		return ret;
	e = &s->extents[0];
	s->nb_extents = 1;
	e->type = VMDK_EXTENT_SPARSE;
	e->access = VMDK_ACCESS_RW;
	e->fd = fd;
	e->base = base;
	e->file_bytes = len;
	e->name = strdup(path);
	if (!e->name)
		return img_err(err, -ENOMEM, "%s: out of memory", path);
	ret = finish_sparse(path, e, h, err);
	if (ret < 0)
		return ret;
	ret = read_embedded_desc(path, e, h, &text, &text_len, err);
	if (ret < 0)
		return ret;
	if (text) {
		ret = vmdk_desc_parse(path, text, text_len, false, &s->desc,
				      err);
		if (ret < 0)
			return ret;
	}
	return 0;
}

/* Opens every extent a descriptor names (relative to img's folder,
 * under the backing= policy). */
static int open_desc_extents(struct img *img, struct vmdk_state *s,
			     struct img_err *err)
{
	const struct vmdk_desc *d = &s->desc;
	int ret;

	if (d->nb_extents == 0)
		return img_err(err, -EINVAL, "%s: descriptor names no extents",
			       img->path);
	for (const char *const *dev = (const char *const[]){
		     "fullDevice", "partitionedDevice", "vmfsRaw",
		     "vmfsRawDeviceMap", "vmfsPassthroughRawDeviceMap",
		     "seSparse", NULL };
	     *dev; dev++) {
		if (strcasecmp(d->create_type, *dev) == 0)
			return img_err(err, -ENOTSUP, "%s: VMDK createType "
				       "'%s' is not supported", img->path,
				       d->create_type);
	}
	ret = grow_extents(s, d->nb_extents, img->path, err);
	if (ret < 0)
		return ret;
	for (size_t i = 0; i < d->nb_extents; i++) {
		const struct vmdk_desc_extent *de = &d->extents[i];
		struct vmdk_extent *e = &s->extents[i];
		struct stat st;

		s->nb_extents = i + 1;
		e->type = de->type;
		e->access = de->access;
		if (MUL_OVERFLOW(de->sectors, (uint64_t)VMDK_SECTOR, &e->bytes))
			return img_err(err, -EINVAL, "%s: extent %zu of %" PRIu64
				       " sectors is too large", img->path,
				       i + 1, de->sectors);
		if (de->type == VMDK_EXTENT_ZERO)
			continue;
		e->name = strdup(de->file);
		if (!e->name)
			return img_err(err, -ENOMEM, "%s: out of memory",
				       img->path);
		/* A FIFO, a folder or a character device is refused there,
		 * without blocking on the FIFO. */
		ret = img_open_data_file(img, de->file, &e->fd, err);
		if (ret < 0)
			return ret;
		e->owns_fd = true;
		if (fstat(e->fd, &st) < 0)
			return img_err(err, -errno, "%s: extent %s: %s",
				       img->path, de->file, strerror(errno));
		e->file_bytes = (uint64_t)st.st_size;
		if (de->type == VMDK_EXTENT_FLAT) {
			if (MUL_OVERFLOW(de->flat_sectors,
					 (uint64_t)VMDK_SECTOR, &e->flat_off) ||
			    !range_within(e->flat_off, e->bytes, UINT64_MAX >> 2))
				return img_err(err, -EINVAL, "%s: extent %s: "
					       "offset %" PRIu64 " sectors is "
					       "too large", img->path, de->file,
					       de->flat_sectors);
		} else {
			struct vmdk_header h;
			CLEANUP_FREE char *msgpath = NULL;

			if (asprintf(&msgpath, "%s: extent %s", img->path,
				     de->file) < 0)
				return img_err(err, -ENOMEM, "%s: out of memory",
					       img->path);
			ret = read_sparse_header(msgpath, e, &h, err);
			if (ret < 0)
				return ret;
			ret = finish_sparse(msgpath, e, &h, err);
			if (ret < 0)
				return ret;
			/* The descriptor's size is authoritative for the
			 * layout; a sparse extent cannot serve more than
			 * its header's capacity. */
			if (h.capacity < de->sectors)
				return img_err(err, -EINVAL, "%s: the descriptor "
					       "gives it %" PRIu64 " sectors but "
					       "its header holds %" PRIu64,
					       msgpath, de->sectors,
					       h.capacity);
			e->bytes = de->sectors * VMDK_SECTOR;
		}
	}
	return 0;
}

/* Reads a descriptor file (img's whole file, at most 1 MiB). */
static int read_desc_file(struct img *img, uint64_t file_bytes, char **text_r,
			  struct img_err *err)
{
	char *text;
	int ret;

	if (file_bytes > VMDK_DESC_MAX_BYTES)
		return img_err(err, -EINVAL, "%s: not a VMDK: no sparse magic, "
			       "and %" PRIu64 " bytes is too large for a "
			       "descriptor", img->path, file_bytes);
	text = malloc(file_bytes + 1);
	if (!text)
		return img_err(err, -ENOMEM, "%s: out of memory", img->path);
	ret = full_pread(img->fd, text, file_bytes, 0);
	if (ret < 0) {
		free(text);
		return img_err(err, ret, "%s: cannot read: %s", img->path,
			       strerror(-ret));
	}
	text[file_bytes] = '\0';
	*text_r = text;
	return 0;
}

/* The parent named by parentFileNameHint, and the CID check. */
static int open_parent(struct img *img, struct vmdk_state *s,
		       struct img_err *err)
{
	const struct vmdk_desc *d = &s->desc;
	int ret;

	if (!d->parent_hint)
		return 0;
	ret = img_open_backing(img, d->parent_hint, IMG_FORMAT_PROBE,
			       &img->backing, err);
	if (ret < 0)
		return ret;
	if (img->backing->ops == &img_vmdk_ops && d->has_parent_cid) {
		const struct vmdk_state *p = vmdk_state(img->backing);

		if (p->desc.has_cid && p->desc.cid != d->parent_cid)
			return img_err(err, -EINVAL, "%s: parent %s has CID "
				       "%08" PRIx32 " but this image expects "
				       "parentCID %08" PRIx32 " (the parent "
				       "changed after this image was made)",
				       img->path, d->parent_hint, p->desc.cid,
				       d->parent_cid);
	}
	return 0;
}

int vmdk_open_slice(struct img *img, int fd, uint64_t base, uint64_t len,
		    const char *name, struct vmdk_state **s_r,
		    uint64_t *size_r, struct img_err *err)
{
	struct vmdk_state *s = NULL;
	struct vmdk_extent tmp = { .fd = fd, .base = base, .file_bytes = len };
	struct vmdk_header h;
	int ret;

	ret = read_sparse_header(name, &tmp, &h, err);
	if (ret < 0)
		return ret;
	ret = state_new(&s, name, err);
	if (ret < 0)
		return ret;
	s->in_archive = true;
	ret = open_single_sparse(s, name, fd, base, len, &h, err);
	if (ret == 0 && s->desc.parent_hint)
		ret = img_err(err, -ENOTSUP, "%s: differencing disks (parent "
			      "%s) are not supported inside an archive", name,
			      s->desc.parent_hint);
	if (ret == 0)
		ret = finish_layout(s, name, img->opts.cache_bytes, err);
	if (ret < 0) {
		vmdk_state_free(s);
		return ret;
	}
	s->create_type = default_create_type(s);
	*s_r = s;
	*size_r = s->size;
	return 0;
}

static int vmdk_open(struct img *img, struct img_err *err)
{
	struct vmdk_state *s = NULL;
	uint8_t head[VMDK_SECTOR] = { 0 };
	struct stat st;
	uint64_t file_bytes;
	ssize_t n;
	int ret;

	/* Read-only driver: extent files and parents open read-only too
	 * (img_open_data_file follows img->read_only). */
	img->read_only = true;
	if (fstat(img->fd, &st) < 0)
		return img_err(err, -errno, "%s: %s", img->path,
			       strerror(errno));
	file_bytes = (uint64_t)st.st_size;
	if (file_bytes < 4)
		return img_err(err, -EINVAL, "%s: file of %" PRIu64 " bytes is "
			       "too short for a VMDK", img->path, file_bytes);
	n = pread(img->fd, head, sizeof(head), 0);
	if (n < 4)
		return img_err(err, n < 0 ? -errno : -EIO, "%s: cannot read "
			       "the header", img->path);
	ret = state_new(&s, img->path, err);
	if (ret < 0)
		return ret;
	img->priv = s;

	if (memcmp(head, VMDK4_MAGIC, 4) == 0 ||
	    memcmp(head, VMDK3_MAGIC, 4) == 0) {
		struct vmdk_extent tmp = { .fd = img->fd,
					   .file_bytes = file_bytes };
		struct vmdk_header h;

		ret = read_sparse_header(img->path, &tmp, &h, err);
		if (ret < 0)
			return ret;
		if (h.capacity == 0 && h.desc_offset != 0) {
			/* A descriptor stored in a sparse file's header
			 * space names the extents itself. */
			CLEANUP_FREE char *text = NULL;
			size_t len;

			ret = read_embedded_desc(img->path, &tmp, &h, &text,
						 &len, err);
			if (ret < 0)
				return ret;
			ret = vmdk_desc_parse(img->path, text ? text : "",
					      len, true, &s->desc, err);
			if (ret < 0)
				return ret;
			ret = open_desc_extents(img, s, err);
		} else {
			ret = open_single_sparse(s, img->path, img->fd, 0,
						 file_bytes, &h, err);
		}
	} else {
		CLEANUP_FREE char *text = NULL;

		ret = read_desc_file(img, file_bytes, &text, err);
		if (ret < 0)
			return ret;
		if (!vmdk_desc_looks_like((const uint8_t *)text,
					  (size_t)file_bytes))
			return img_err(err, -EINVAL, "%s: not a VMDK: neither "
				       "sparse magic nor a descriptor", img->path);
		ret = vmdk_desc_parse(img->path, text, (size_t)file_bytes,
				      true, &s->desc, err);
		if (ret < 0)
			return ret;
		ret = open_desc_extents(img, s, err);
	}
	if (ret < 0)
		return ret;
	ret = finish_layout(s, img->path, img->opts.cache_bytes, err);
	if (ret < 0)
		return ret;
	s->create_type = default_create_type(s);
	img->size = s->size;
	return open_parent(img, s, err);
}

static void vmdk_close(struct img *img)
{
	vmdk_state_free(vmdk_state(img));
	img->priv = NULL;
}

/* ------------------------------------------------------------------ */
/* Mapping */

static const struct vmdk_extent *find_extent(const struct vmdk_state *s,
					     uint64_t off)
{
	size_t lo = 0, hi = s->nb_extents;

	while (lo + 1 < hi) {
		size_t mid = lo + (hi - lo) / 2;
		if (s->extents[mid].start <= off)
			lo = mid;
		else
			hi = mid;
	}
	return &s->extents[lo];
}

/* What one run of grains is. */
enum run_kind {
	RUN_DATA,       /* host_off valid, host-contiguous */
	RUN_COMPRESSED, /* one compressed grain at host_off */
	RUN_ZERO,
	RUN_UNALLOC,
	RUN_BAD,        /* damaged metadata: -EIO */
};

struct run {
	enum run_kind kind;
	uint64_t len;      /* bytes of the virtual disk, from off */
	uint64_t host_off; /* DATA: of off; COMPRESSED: of the grain */
	uint64_t in_grain; /* COMPRESSED: off's place in its grain */
};

/* The cached GT for gd_index of e, or NULL. The caller holds s->lock. */
static const uint32_t *find_gt_locked(struct vmdk_state *s,
				      const struct vmdk_extent *e,
				      uint64_t gd_index)
{
	for (size_t i = 0; i < s->nb_gt_slots; i++) {
		struct vmdk_gt_slot *sl = &s->gt_slots[i];

		if (sl->gtes && sl->ext == e && sl->gd_index == gd_index) {
			sl->last_use = ++s->clock;
			return sl->gtes;
		}
	}
	return NULL;
}

/* Puts the GT read from the file (raw, little-endian) into the cache,
 * in a free slot or the least recently used one, unless another reader
 * put it there meanwhile. NULL on ENOMEM. The caller holds s->lock. */
static const uint32_t *insert_gt_locked(struct vmdk_state *s,
					const struct vmdk_extent *e,
					uint64_t gd_index, const uint8_t *raw)
{
	struct vmdk_gt_slot *victim = NULL;
	const uint32_t *have = find_gt_locked(s, e, gd_index);

	if (have)
		return have;
	for (size_t i = 0; i < s->nb_gt_slots; i++) {
		struct vmdk_gt_slot *sl = &s->gt_slots[i];

		if (!sl->gtes) {
			victim = sl;
			break;
		}
		if (!victim || sl->last_use < victim->last_use)
			victim = sl;
	}
	if (!victim->gtes) {
		victim->gtes = malloc(s->gt_bytes_max);
		if (!victim->gtes)
			return NULL;
	}
	for (uint32_t i = 0; i < e->gt_entries; i++)
		victim->gtes[i] = get_le32(raw + 4 * i);
	victim->ext = e;
	victim->gd_index = gd_index;
	victim->last_use = ++s->clock;
	return victim->gtes;
}

static enum run_kind gte_kind(const struct vmdk_extent *e, uint32_t gte,
			      uint64_t *host_r)
{
	uint64_t host = (uint64_t)gte * VMDK_SECTOR;

	if (gte == 0)
		return RUN_UNALLOC;
	if (gte == VMDK_GTE_ZEROED && e->zero_grain)
		return RUN_ZERO;
	if (host >= e->file_bytes)
		return RUN_BAD;
	*host_r = host;
	return e->compressed ? RUN_COMPRESSED : RUN_DATA;
}

/* Fills r from the GT entries from idx on (gt is a cached table, read
 * under s->lock): one compressed grain, or a run of grains of one kind,
 * host-contiguous for data. */
static void describe_run_locked(const struct vmdk_extent *e,
				const uint32_t *gt, uint32_t idx,
				uint64_t in_grain, uint64_t max, struct run *r)
{
	uint64_t host = 0, next_host;

	r->kind = gte_kind(e, gt[idx], &host);
	r->len = MIN(max, e->grain_bytes - in_grain);
	if (r->kind == RUN_COMPRESSED) {
		r->host_off = host;
		r->in_grain = in_grain;
		return;
	}
	if (r->kind == RUN_DATA)
		r->host_off = host + in_grain;
	next_host = host + e->grain_bytes;
	while (r->len < max) {
		uint64_t h2 = 0;
		enum run_kind k;

		idx++;
		k = gte_kind(e, gt[idx], &h2);
		if (k != r->kind || (k == RUN_DATA && h2 != next_host))
			break;
		next_host += e->grain_bytes;
		r->len = MIN(max, r->len + e->grain_bytes);
	}
}

/* Describes the run of a sparse extent that starts at rel (bytes into
 * the extent) and is at most max bytes long, staying inside one GT. */
static int map_sparse(struct vmdk_state *s, const struct vmdk_extent *e,
		      uint64_t rel, uint64_t max, struct run *r)
{
	uint64_t grain = rel / e->grain_bytes;
	uint64_t in_grain = rel % e->grain_bytes;
	uint64_t gd_index = grain / e->gt_entries;
	uint32_t idx = (uint32_t)(grain % e->gt_entries);
	uint64_t gt_left = (uint64_t)(e->gt_entries - idx) * e->grain_bytes -
			   in_grain;
	const uint32_t *gt;
	int ret;

	max = MIN(max, gt_left);
	max = MIN(max, e->bytes - rel);
	memset(r, 0, sizeof(*r));
	if (gd_index >= e->gd_entries) {
		r->kind = RUN_BAD;
		r->len = max;
		return 0;
	}
	if (e->gd[gd_index] == 0) {
		r->kind = RUN_UNALLOC;
		r->len = max;
		return 0;
	}
	pthread_mutex_lock(&s->lock);
	gt = find_gt_locked(s, e, gd_index);
	if (!gt) {
		/* A miss: read the table with the lock dropped, so other
		 * readers go on; then insert it (or find that another
		 * reader did). */
		uint8_t raw[VMDK3_GT_ENTRIES * 4];
		size_t gt_bytes = e->gt_entries * 4u;
		uint64_t gt_off = (uint64_t)e->gd[gd_index] * VMDK_SECTOR;

		pthread_mutex_unlock(&s->lock);
		if (!range_within(gt_off, gt_bytes, e->file_bytes)) {
			r->kind = RUN_BAD;
			r->len = max;
			return 0;
		}
		ret = ext_pread(e, raw, gt_bytes, gt_off);
		if (ret < 0)
			return ret;
		pthread_mutex_lock(&s->lock);
		gt = insert_gt_locked(s, e, gd_index, raw);
		if (!gt) {
			pthread_mutex_unlock(&s->lock);
			return -ENOMEM;
		}
	}
	describe_run_locked(e, gt, idx, in_grain, max, r);
	pthread_mutex_unlock(&s->lock);
	return 0;
}

/* Describes the run at virtual off (at most max bytes) in extent e. */
static int map_run(struct vmdk_state *s, const struct vmdk_extent *e,
		   uint64_t off, uint64_t max, struct run *r)
{
	uint64_t rel = off - e->start;

	max = MIN(max, e->bytes - rel);
	memset(r, 0, sizeof(*r));
	if (e->access == VMDK_ACCESS_NOACCESS) {
		r->kind = RUN_BAD;
		r->len = max;
		return 0;
	}
	switch (e->type) {
	case VMDK_EXTENT_ZERO:
		r->kind = RUN_ZERO;
		r->len = max;
		return 0;
	case VMDK_EXTENT_FLAT:
		r->kind = RUN_DATA;
		r->len = max;
		r->host_off = e->flat_off + rel;
		return 0;
	case VMDK_EXTENT_SPARSE:
		return map_sparse(s, e, rel, max, r);
	}
	return -EIO;
}

/* ------------------------------------------------------------------ */
/* Reading */

static struct libdeflate_decompressor *thread_inflater(void);

/* Compressed bytes a grain at host_off of e may take, marker included:
 * a grain never grows past twice its size (QEMU's bound too). */
static uint64_t grain_max_in(const struct vmdk_extent *e)
{
	return (e->markers ? VMDK_MARKER_BYTES : 0) + 2 * e->grain_bytes;
}

/* Inflates the grain at host_off of e whose bytes (marker first, with
 * markers) are raw[0..avail) into out (grain_bytes of room); *made_r is
 * how many bytes it inflated to. */
static int inflate_grain_in(const struct vmdk_extent *e, uint64_t host_off,
			    const uint8_t *raw, size_t avail, uint8_t *out,
			    size_t *made_r)
{
	struct libdeflate_decompressor *d = thread_inflater();
	const uint8_t *in = raw;
	uint64_t in_bytes = avail;
	enum libdeflate_result r;
	size_t in_used;

	if (!d)
		return -ENOMEM;
	if (e->markers) {
		if (avail < VMDK_MARKER_BYTES)
			return -EIO;
		in_bytes = get_le32(raw + 8);
		/* More than twice the grain, or nothing, is damage. */
		if (in_bytes == 0 || in_bytes > 2 * e->grain_bytes ||
		    in_bytes > avail - VMDK_MARKER_BYTES ||
		    !range_within(host_off + VMDK_MARKER_BYTES, in_bytes,
				  align_up(e->file_bytes, VMDK_SECTOR)))
			return -EIO;
		in = raw + VMDK_MARKER_BYTES;
	}
	/* QEMU writes zlib streams (RFC 1950: header, deflate, Adler-32),
	 * as VMware does. */
	r = libdeflate_zlib_decompress_ex(d, in, in_bytes, out, e->grain_bytes,
					  &in_used, made_r);
	return r == LIBDEFLATE_SUCCESS ? 0 : -EIO;
}

/* Reads and inflates the compressed grain at host_off of e into out. */
static int inflate_grain(const struct vmdk_extent *e, uint64_t host_off,
			 uint8_t *out, size_t *made_r)
{
	CLEANUP_FREE uint8_t *raw = NULL;
	uint64_t avail;
	int ret;

	if (e->markers) {
		/* One pread for the marker and, in the usual case, the whole
		 * stream behind it: a grain that deflates at all fits in
		 * grain_bytes. Only a longer stream takes a second pread. */
		size_t first = VMDK_MARKER_BYTES + e->grain_bytes;
		uint64_t in_bytes;

		raw = malloc(grain_max_in(e));
		if (!raw)
			return -ENOMEM;
		ret = ext_pread(e, raw, first, host_off);
		if (ret < 0)
			return ret;
		in_bytes = get_le32(raw + 8);
		avail = first;
		if (in_bytes <= 2 * e->grain_bytes &&
		    VMDK_MARKER_BYTES + in_bytes > first) {
			avail = VMDK_MARKER_BYTES + in_bytes;
			ret = ext_pread(e, raw + first, avail - first,
					host_off + first);
			if (ret < 0)
				return ret;
		}
	} else {
		avail = MIN(2 * e->grain_bytes, e->file_bytes - host_off);
		raw = malloc(avail);
		if (!raw)
			return -ENOMEM;
		ret = ext_pread(e, raw, avail, host_off);
		if (ret < 0)
			return ret;
	}
	return inflate_grain_in(e, host_off, raw, avail, out, made_r);
}

/* The worker's batch (zahead.c): the compressed grains from off on,
 * while they stay in one extent, host-ascending, within
 * ZAHEAD_MAX_IN_BYTES. A VMDK is read-only here: nothing to pin. */
static int grains_plan(void *ctx, void *view, uint64_t off, uint64_t limit,
		       struct zahead_unit *u, size_t max, uint64_t *next_r,
		       struct img_pin *pin_r)
{
	struct vmdk_state *s = ctx;
	uint64_t pos = off;
	size_t n = 0;

	(void)view; /* s itself */
	(void)pin_r;
	limit = MIN(limit, s->size);
	while (n < max && pos < limit) {
		const struct vmdk_extent *e = find_extent(s, pos);
		struct run r;
		int ret = map_run(s, e, pos, limit - pos, &r);

		if (ret < 0) {
			if (n)
				break;
			return ret;
		}
		if (r.kind != RUN_COMPRESSED) {
			if (!n)
				pos += r.len;
			break;
		}
		if (n && (e != u[n - 1].src || r.host_off < u[n - 1].host_off ||
			  r.host_off + grain_max_in(e) - u[0].host_off >
				  ZAHEAD_MAX_IN_BYTES))
			break;
		u[n].guest_off = pos;
		u[n].src = e;
		u[n].host_off = r.host_off;
		u[n].max_in = grain_max_in(e);
		n++;
		pos += r.len;
	}
	*next_r = pos;
	return (int)n;
}

static int grains_read(void *ctx, const void *src, void *buf, size_t len,
		       uint64_t host_off)
{
	(void)ctx;
	return ext_pread(src, buf, len, host_off);
}

static int grains_inflate(void *ctx, const struct zahead_unit *u,
			  const uint8_t *in, size_t in_bytes, uint8_t *out,
			  size_t *made_r)
{
	(void)ctx;
	return inflate_grain_in(u->src, u->host_off, in, in_bytes, out,
				made_r);
}

static const struct zahead_ops grains_ops = {
	.plan = grains_plan,
	.read = grains_read,
	.decompress = grains_inflate,
};

/* The decompressed-grain cache, made on first use; NULL on ENOMEM. */
static struct zahead *grains_of(struct vmdk_state *s)
{
	struct zahead *z = __atomic_load_n(&s->grains, __ATOMIC_ACQUIRE);
	struct zahead *expected = NULL;
	uint64_t unit = 0;

	if (z)
		return z;
	for (size_t i = 0; i < s->nb_extents; i++)
		if (s->extents[i].type == VMDK_EXTENT_SPARSE &&
		    s->extents[i].compressed)
			unit = MAX(unit, s->extents[i].grain_bytes);
	z = zahead_new((size_t)unit, VMDK_GRAIN_CACHE_BYTES, &grains_ops, s);
	if (!z)
		return NULL;
	/* Two first readers may race: the loser frees its copy. */
	if (!__atomic_compare_exchange_n(&s->grains, &expected, z, false,
					 __ATOMIC_ACQ_REL, __ATOMIC_ACQUIRE)) {
		zahead_free(z);
		z = expected;
	}
	return z;
}

/* Copies [in_grain, in_grain + len) of the compressed grain at host_off
 * into buf, through the decompressed-grain cache; guest [off, req_end)
 * is what the whole read asks for. A whole grain (sequential reads)
 * inflates straight into the caller's buffer and is not kept: no later
 * read wants part of it. */
static int read_compressed(struct vmdk_state *s, const struct vmdk_extent *e,
			   uint64_t host_off, uint64_t in_grain, void *buf,
			   size_t len, uint64_t off, uint64_t req_end)
{
	struct zahead *z = grains_of(s);
	struct zahead_claim claim = { 0 };
	CLEANUP_FREE uint8_t *bounce = NULL;
	bool whole = in_grain == 0 && len == e->grain_bytes;
	uint8_t *out;
	size_t made = 0;
	int ret;

	if (z) {
		zahead_note_read(z, s, off, req_end);
		ret = zahead_get(z, e, host_off, buf, (size_t)in_grain, len,
				 &claim);
		if (ret != 0)
			return ret < 0 ? ret : 0;
	}
	out = whole ? buf : z ? zahead_claim_buf(z, &claim) : NULL;
	if (!out)
		out = bounce = malloc(e->grain_bytes);
	ret = out ? inflate_grain(e, host_off, out, &made) : -ENOMEM;
	if (ret == 0 && !range_within(in_grain, len, made))
		ret = -EIO;
	if (ret == 0 && !whole)
		memcpy(buf, out + in_grain, len);
	if (z)
		zahead_publish(z, &claim, ret == 0 && !whole && !bounce, made,
			       grain_max_in(e));
	return ret;
}

int vmdk_state_pread(struct img *img, struct vmdk_state *s, void *buf,
		     size_t len, uint64_t off)
{
	uint8_t *p = buf;

	while (len > 0) {
		const struct vmdk_extent *e = find_extent(s, off);
		struct run r;
		size_t n;
		int ret;

		ret = map_run(s, e, off, len, &r);
		if (ret < 0)
			return ret;
		n = (size_t)r.len;
		switch (r.kind) {
		case RUN_DATA:
			ret = ext_pread(e, p, n, r.host_off);
			break;
		case RUN_COMPRESSED:
			ret = read_compressed(s, e, r.host_off, r.in_grain, p,
					      n, off, off + len);
			break;
		case RUN_ZERO:
			memset(p, 0, n);
			break;
		case RUN_UNALLOC:
			ret = img_read_backing(img, p, n, off);
			break;
		case RUN_BAD:
			ret = -EIO;
			break;
		}
		if (ret < 0)
			return ret;
		p += n;
		off += n;
		len -= n;
	}
	return 0;
}

/* A hole in a flat extent's file reads as zeroes: say so (as the raw
 * driver does), so SEEK_HOLE and st_blocks see it. QEMU reports such
 * ranges as data and zero both. */
static void flat_holes(struct img_extent *ext_r)
{
	off_t at = (off_t)ext_r->host_off;
	off_t data = lseek(ext_r->host_fd, at, SEEK_DATA), hole;

	if (data < 0) {
		if (errno == ENXIO) { /* only a hole up to the end */
			ext_r->kind = IMG_EXTENT_ZERO;
			ext_r->host_fd = -1;
		}
		return; /* no SEEK_DATA here: all data */
	}
	if (data > at) {
		ext_r->kind = IMG_EXTENT_ZERO;
		ext_r->host_fd = -1;
		ext_r->len = MIN(ext_r->len, (uint64_t)(data - at));
		return;
	}
	hole = lseek(ext_r->host_fd, at, SEEK_HOLE);
	if (hole > at)
		ext_r->len = MIN(ext_r->len, (uint64_t)(hole - at));
}

int vmdk_state_block_status(struct vmdk_state *s, uint64_t off,
			    uint64_t len, struct img_extent *ext_r)
{
	const struct vmdk_extent *e = find_extent(s, off);
	struct run r;
	int ret = map_run(s, e, off, len, &r);

	if (ret < 0)
		return ret;
	ext_r->len = r.len;
	ext_r->host_fd = -1;
	switch (r.kind) {
	case RUN_DATA:
		ext_r->kind = IMG_EXTENT_DATA;
		ext_r->host_fd = e->fd;
		ext_r->host_off = e->base + r.host_off;
		/* A flat extent whose file is shorter than the extent: the
		 * missing tail reads as zeroes, not from the fd. */
		if (r.host_off >= e->file_bytes) {
			ext_r->kind = IMG_EXTENT_ZERO;
			ext_r->host_fd = -1;
		} else if (r.host_off + r.len > e->file_bytes) {
			ext_r->len = e->file_bytes - r.host_off;
		}
		if (e->type == VMDK_EXTENT_FLAT && ext_r->host_fd >= 0)
			flat_holes(ext_r);
		break;
	case RUN_COMPRESSED:
	case RUN_BAD: /* reads fail; callers find out there */
		ext_r->kind = IMG_EXTENT_DATA;
		break;
	case RUN_ZERO:
		ext_r->kind = IMG_EXTENT_ZERO;
		break;
	case RUN_UNALLOC:
		ext_r->kind = IMG_EXTENT_UNALLOCATED;
		break;
	}
	return 0;
}

void vmdk_state_info(struct vmdk_state *s, struct img_info *info)
{
	const struct vmdk_extent *first_sparse = NULL;

	for (size_t i = 0; i < s->nb_extents; i++) {
		if (s->extents[i].type == VMDK_EXTENT_SPARSE) {
			first_sparse = &s->extents[i];
			break;
		}
	}
	if (first_sparse)
		info->cluster_size = first_sparse->grain_bytes;
	info->backing_file = s->desc.parent_hint;
	img_info_add(info, "subformat", "%s", s->create_type);
	if (s->desc.adapter_type[0])
		img_info_add(info, "adapter type", "%s", s->desc.adapter_type);
	if (s->desc.hw_version[0])
		img_info_add(info, "hardware version", "%s",
			     s->desc.hw_version);
	if (s->desc.has_cid)
		img_info_add(info, "cid", "%08" PRIx32, s->desc.cid);
	if (s->desc.parent_hint)
		img_info_add(info, "parent cid", "%08" PRIx32,
			     s->desc.parent_cid);
	img_info_add(info, "extents", "%zu", s->nb_extents);
	if (first_sparse) {
		img_info_add(info, "compressed", "%s",
			     first_sparse->compressed ? "deflate" : "no");
		img_info_add(info, "zeroed grains", "%s",
			     first_sparse->zero_grain ? "yes" : "no");
	}
	img_info_add(info, "writable", "no (convert to qcow2 to write)");
}

/* libdeflate's decompressor is not thread safe: each thread keeps one,
 * freed when it exits. */
static pthread_key_t inflater_key;
static pthread_once_t inflater_once = PTHREAD_ONCE_INIT;
static bool inflater_key_ok;

static void free_inflater(void *d)
{
	libdeflate_free_decompressor(d);
}

static void make_inflater_key(void)
{
	inflater_key_ok = pthread_key_create(&inflater_key, free_inflater) == 0;
}

static struct libdeflate_decompressor *thread_inflater(void)
{
	struct libdeflate_decompressor *d;

	pthread_once(&inflater_once, make_inflater_key);
	if (!inflater_key_ok)
		return NULL;
	d = pthread_getspecific(inflater_key);
	if (!d) {
		d = libdeflate_alloc_decompressor();
		if (d && pthread_setspecific(inflater_key, d) != 0) {
			libdeflate_free_decompressor(d);
			d = NULL;
		}
	}
	return d;
}

/* ------------------------------------------------------------------ */
/* Ops */

static int vmdk_pread(struct img *img, void *buf, size_t len, uint64_t off)
{
	return vmdk_state_pread(img, vmdk_state(img), buf, len, off);
}

static int vmdk_block_status(struct img *img, uint64_t off, uint64_t len,
			     struct img_extent *ext_r)
{
	return vmdk_state_block_status(vmdk_state(img), off, len, ext_r);
}

static int vmdk_get_info(struct img *img, struct img_info *info)
{
	vmdk_state_info(vmdk_state(img), info);
	return 0;
}

const struct img_ops img_vmdk_ops = {
	.name         = "vmdk",
	.probe        = vmdk_probe,
	.open         = vmdk_open,
	.close        = vmdk_close,
	.pread        = vmdk_pread,
	.block_status = vmdk_block_status,
	.get_info     = vmdk_get_info,
};
