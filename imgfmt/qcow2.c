/* qcow2.c: the qcow2 driver: probe, open, read, block status, info.
 *
 * Open validates every header field before anything uses it (spec:
 * docs/interop/qcow2.txt; limits as QEMU's block/qcow2.c), in this order:
 * header fields, header extensions, feature bits, the refcount table, the
 * L1 table (loaded whole: at most 32 MiB, as QEMU), the snapshot table,
 * then the external data file and the backing image. Any failure returns
 * -EINVAL (or -EROFS / -EPERM / -ELOOP as imgfmt.h says) with one line
 * naming the image and the numbers at fault. qcow2_close copes with a
 * half-built state, since img.c closes a handle whose open failed.
 *
 * Reads: qcow2_map_locked (qcow2-map.c) describes a run under the
 * metadata lock; the data I/O for the run (one pread straight into the
 * caller's buffer for host-contiguous clusters, decompression, or the
 * backing image) happens after the lock is dropped, so reads from many
 * threads proceed in parallel. A run of host bytes is pinned in the same
 * lock section as its map and unpinned after its I/O (block status
 * pins too, when asked, for a caller that splices), so a concurrent
 * discard or copy-on-write cannot get the cluster reused for another
 * range before the read has used it.
 *
 * Writes live in qcow2-write.c, refcounts in qcow2-refcount.c. A
 * read-write open loads the refcount table and refuses an image whose
 * dirty bit is set (its refcounts may be stale: qemu-img check -r all
 * repairs it; we do not). Close of a read-write handle flushes.
 */
#include "qcow2-int.h"

#include "checked.h"
#include "cleanup.h"
#include "endian.h"
#include "io.h"

#include <errno.h>
#include <inttypes.h>
#include <linux/fs.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/stat.h>

/* The L2 slice size of the metadata cache (QEMU's default
 * l2-cache-entry-size), or the cluster size when smaller. */
#define QCOW2_L2_SLICE_BYTES 4096u

/* The header in host byte order, fields absent in v2 (or beyond
 * header_length) set to their "not present" values. */
struct qcow2_header {
	uint32_t magic;
	uint32_t version;
	uint64_t backing_file_offset;
	uint32_t backing_file_size;
	uint32_t cluster_bits;
	uint64_t size;
	uint32_t crypt_method;
	uint32_t l1_size;
	uint64_t l1_table_offset;
	uint64_t refcount_table_offset;
	uint32_t refcount_table_clusters;
	uint32_t nb_snapshots;
	uint64_t snapshots_offset;
	uint64_t incompatible_features;
	uint64_t compatible_features;
	uint64_t autoclear_features;
	uint32_t refcount_order;
	uint32_t header_length;
	uint8_t compression_type;
};

static int qcow2_probe(const uint8_t *head, size_t len)
{
	if (len >= 4 && get_be32(head) == QCOW2_MAGIC)
		return 100;
	return 0;
}

/* The one place the header is converted from disk form. */
static void qcow2_header_decode(const struct qcow2_header_disk *d,
				struct qcow2_header *h)
{
	*h = (struct qcow2_header){
		.magic = be32toh(d->magic),
		.version = be32toh(d->version),
		.backing_file_offset = be64toh(d->backing_file_offset),
		.backing_file_size = be32toh(d->backing_file_size),
		.cluster_bits = be32toh(d->cluster_bits),
		.size = be64toh(d->size),
		.crypt_method = be32toh(d->crypt_method),
		.l1_size = be32toh(d->l1_size),
		.l1_table_offset = be64toh(d->l1_table_offset),
		.refcount_table_offset = be64toh(d->refcount_table_offset),
		.refcount_table_clusters = be32toh(d->refcount_table_clusters),
		.nb_snapshots = be32toh(d->nb_snapshots),
		.snapshots_offset = be64toh(d->snapshots_offset),
	};
	if (h->version < 3) {
		/* v2: "the order is always assumed to be 4", "the length
		 * is always assumed to be 72 bytes", no feature bits. */
		h->refcount_order = 4;
		h->header_length = QCOW2_V2_HEADER_BYTES;
		return;
	}
	h->incompatible_features = be64toh(d->incompatible_features);
	h->compatible_features = be64toh(d->compatible_features);
	h->autoclear_features = be64toh(d->autoclear_features);
	h->refcount_order = be32toh(d->refcount_order);
	h->header_length = be32toh(d->header_length);
	/* Additional fields are present only below header_length. */
	if (h->header_length > offsetof(struct qcow2_header_disk,
					compression_type))
		h->compression_type = d->compression_type;
}

static int file_size(struct img *img, uint64_t *bytes_r, struct img_err *err)
{
	struct stat st;

	if (fstat(img->fd, &st) < 0)
		return img_err(err, -errno, "%s: %s", img->path,
			       strerror(errno));
	if (S_ISBLK(st.st_mode)) {
		if (ioctl(img->fd, BLKGETSIZE64, bytes_r) < 0)
			return img_err(err, -errno, "%s: cannot get the "
				       "device size: %s", img->path,
				       strerror(errno));
		return 0;
	}
	*bytes_r = (uint64_t)st.st_size;
	return 0;
}

/* Checks the fixed header fields and sets the geometry in s. */
static int check_header(struct img *img, const struct qcow2_header *h,
			struct img_err *err)
{
	struct qcow2_state *s = qcow2_state(img);

	if (h->magic != QCOW2_MAGIC)
		return img_err(err, -EINVAL, "%s: not a qcow2 image (bad "
			       "magic 0x%08" PRIx32 ")", img->path, h->magic);
	/* QEMU's older qcow format shares the magic; name it, because
	 * "qcow2 version 1" reads like a damaged qcow2. */
	if (h->version == 1)
		return img_err(err, -EINVAL, "%s: qcow (version 1) images are "
			       "not supported; imgfs reads qcow2 (convert it "
			       "with 'qemu-img convert -O qcow2')", img->path);
	if (h->version != 2 && h->version != 3)
		return img_err(err, -EINVAL, "%s: qcow2 version %" PRIu32
			       " is not supported (only 2 and 3)", img->path,
			       h->version);
	if (h->cluster_bits < QCOW2_MIN_CLUSTER_BITS ||
	    h->cluster_bits > QCOW2_MAX_CLUSTER_BITS)
		return img_err(err, -EINVAL, "%s: cluster_bits %" PRIu32
			       " is out of range (%d..%d)", img->path,
			       h->cluster_bits, QCOW2_MIN_CLUSTER_BITS,
			       QCOW2_MAX_CLUSTER_BITS);
	s->version = h->version;
	s->cluster_bits = h->cluster_bits;
	s->cluster_bytes = 1ull << h->cluster_bits;

	if (h->version >= 3) {
		if (h->header_length < QCOW2_V3_HEADER_MIN_BYTES ||
		    h->header_length % 8 != 0)
			return img_err(err, -EINVAL, "%s: header_length %"
				       PRIu32 " is invalid (at least %u and "
				       "a multiple of 8)", img->path,
				       h->header_length,
				       QCOW2_V3_HEADER_MIN_BYTES);
		if (h->header_length > s->cluster_bytes)
			return img_err(err, -EINVAL, "%s: header_length %"
				       PRIu32 " exceeds the cluster size %"
				       PRIu64, img->path, h->header_length,
				       s->cluster_bytes);
	}
	if (h->header_length > s->file_bytes)
		return img_err(err, -EINVAL, "%s: file of %" PRIu64 " bytes "
			       "is shorter than its %" PRIu32 "-byte header",
			       img->path, s->file_bytes, h->header_length);
	s->header_bytes = h->header_length;

	if (h->refcount_order > 6)
		return img_err(err, -EINVAL, "%s: refcount_order %" PRIu32
			       " is out of range (0..6)", img->path,
			       h->refcount_order);
	s->refcount_order = h->refcount_order;

	if (h->crypt_method != 0)
		return img_err(err, -EINVAL, "%s: image is encrypted (%s); "
			       "encrypted images are not supported",
			       img->path,
			       h->crypt_method == 1 ? "AES" :
			       h->crypt_method == 2 ? "LUKS" :
						      "unknown crypt_method");
	/* A size near 2^64 would wrap guest offset arithmetic; QEMU's
	 * own limit is far lower (the L1 size check below). */
	if (h->size > INT64_MAX - s->cluster_bytes)
		return img_err(err, -EINVAL, "%s: virtual size %" PRIu64
			       " bytes is too large", img->path, h->size);
	return 0;
}

/* Copies a string extension or header field of len bytes; a name with a
 * NUL inside is corrupt (C strings would silently cut it). */
static int copy_name(struct img *img, const char *what, const uint8_t *p,
		     size_t len, char **out_r, struct img_err *err)
{
	if (memchr(p, '\0', len))
		return img_err(err, -EINVAL, "%s: %s contains a NUL byte",
			       img->path, what);
	*out_r = strndup((const char *)p, len);
	if (!*out_r)
		return img_err(err, -ENOMEM, "%s: out of memory", img->path);
	return 0;
}

/* Names the unknown incompatible bits using the feature name table (if
 * the image has one) and refuses the image. */
static int refuse_unknown_features(struct img *img, uint64_t unknown,
				   const uint8_t *table, size_t nb_entries,
				   struct img_err *err)
{
	char list[IMG_ERR_MSG_MAX] = "";
	size_t used = 0;

	for (unsigned bit = 0; bit < 64; bit++) {
		const char *name = NULL;
		int namelen = 0;

		if (!(unknown & (1ull << bit)))
			continue;
		for (size_t i = 0; i < nb_entries; i++) {
			const struct qcow2_feature_disk *f =
				(const void *)(table + i * sizeof(*f));
			if (f->type == 0 && f->bit == bit) {
				name = f->name;
				namelen = (int)strnlen(f->name,
						       sizeof(f->name));
				break;
			}
		}
		if (used < sizeof(list)) {
			int n;
			if (name)
				n = snprintf(list + used, sizeof(list) - used,
					     "%sbit %u (%.*s)",
					     used ? ", " : "", bit, namelen,
					     name);
			else
				n = snprintf(list + used, sizeof(list) - used,
					     "%sbit %u", used ? ", " : "",
					     bit);
			if (n > 0)
				used += (size_t)n;
		}
	}
	return img_err(err, -EINVAL, "%s: unsupported incompatible qcow2 "
		       "features: %s", img->path, list);
}

struct ext_seen {
	const uint8_t *feature_table;
	size_t nb_features;
	uint32_t types_seen; /* bit per known type, to catch duplicates */
};

/* Walks the header extensions in the first cluster (buf) from the end of
 * the header to ext_end. */
static int read_extensions(struct img *img, const uint8_t *buf,
			   uint64_t ext_end, struct ext_seen *seen,
			   struct img_err *err)
{
	struct qcow2_state *s = qcow2_state(img);
	uint64_t off = s->header_bytes;
	int ret;

	while (off < ext_end) {
		uint32_t type, len, bit;

		if (!range_within(off, sizeof(struct qcow2_ext_header_disk),
				  ext_end))
			return img_err(err, -EINVAL, "%s: header extension "
				       "at 0x%" PRIx64 " is truncated",
				       img->path, off);
		type = get_be32(buf + off);
		len = get_be32(buf + off + 4);
		off += sizeof(struct qcow2_ext_header_disk);
		if (type == QCOW2_EXT_END)
			return 0;
		if (len > ext_end - off)
			return img_err(err, -EINVAL, "%s: header extension "
				       "0x%08" PRIx32 " of %" PRIu32 " bytes "
				       "runs past the extension area (%"
				       PRIu64 " bytes)", img->path, type, len,
				       ext_end);
		switch (type) {
		case QCOW2_EXT_BACKING_FORMAT: bit = 1; break;
		case QCOW2_EXT_FEATURE_TABLE: bit = 2; break;
		case QCOW2_EXT_BITMAPS: bit = 4; break;
		case QCOW2_EXT_CRYPTO: bit = 8; break;
		case QCOW2_EXT_DATA_FILE: bit = 16; break;
		default: bit = 0; break;
		}
		if (bit && (seen->types_seen & bit))
			return img_err(err, -EINVAL, "%s: header extension "
				       "0x%08" PRIx32 " appears twice",
				       img->path, type);
		seen->types_seen |= bit;

		const uint8_t *data = buf + off;
		switch (type) {
		case QCOW2_EXT_BACKING_FORMAT:
			/* Format names are short; QEMU refuses >= 16. */
			if (len >= 16)
				return img_err(err, -EINVAL, "%s: backing "
					       "format name of %" PRIu32
					       " bytes is too long",
					       img->path, len);
			ret = copy_name(img, "backing format", data, len,
					&s->backing_format, err);
			if (ret < 0)
				return ret;
			break;
		case QCOW2_EXT_FEATURE_TABLE:
			seen->feature_table = data;
			seen->nb_features = len / sizeof(struct qcow2_feature_disk);
			break;
		case QCOW2_EXT_BITMAPS:
			/* Persistent dirty bitmaps: nothing to do for
			 * reading; left untouched in the file. */
			break;
		case QCOW2_EXT_CRYPTO:
			return img_err(err, -EINVAL, "%s: image has a full "
				       "disk encryption header; encrypted "
				       "images are not supported", img->path);
		case QCOW2_EXT_DATA_FILE:
			ret = copy_name(img, "data file name", data, len,
					&s->data_file_name, err);
			if (ret < 0)
				return ret;
			break;
		default:
			/* "Unknown header extension, can be safely
			 * ignored". */
			break;
		}
		off += align_up(len, 8);
	}
	return 0;
}

/* Checks the feature bits, with the extensions already parsed. */
static int check_features(struct img *img, const struct qcow2_header *h,
			  const struct ext_seen *seen, struct img_err *err)
{
	struct qcow2_state *s = qcow2_state(img);
	uint64_t unknown = h->incompatible_features & ~QCOW2_INCOMPAT_KNOWN;

	s->incompat = h->incompatible_features;
	s->compat = h->compatible_features;
	s->autoclear = h->autoclear_features;
	if (unknown)
		return refuse_unknown_features(img, unknown,
					       seen->feature_table,
					       seen->nb_features, err);
	/* "the image must not be written to": read-only opens only, as
	 * QEMU does. */
	if ((s->incompat & QCOW2_INCOMPAT_CORRUPT) && !img->read_only)
		return img_err(err, -EROFS, "%s: image is marked corrupt; "
			       "it can only be opened read-only (repair it "
			       "with qemu-img check -r all)", img->path);
	/* Stale refcounts (a crash with lazy_refcounts): writing would
	 * allocate clusters still in use. We do not repair. */
	if ((s->incompat & QCOW2_INCOMPAT_DIRTY) && !img->read_only)
		return img_err(err, -EROFS, "%s: image was not closed cleanly "
			       "(dirty bit set) and its refcounts may be "
			       "wrong; run 'qemu-img check -r all' on it, or "
			       "open it read-only", img->path);

	s->extended_l2 = s->incompat & QCOW2_INCOMPAT_EXTL2;
	if (s->extended_l2 && s->cluster_bits < QCOW2_EXTL2_MIN_CLUSTER_BITS)
		return img_err(err, -EINVAL, "%s: extended L2 entries need "
			       "clusters of at least %u bytes, not %" PRIu64,
			       img->path, 1u << QCOW2_EXTL2_MIN_CLUSTER_BITS,
			       s->cluster_bytes);
	s->l2_entry_bytes = s->extended_l2 ? 16 : 8;
	s->l2_bits = s->cluster_bits - (s->extended_l2 ? 4 : 3);
	s->subcluster_bits = s->extended_l2 ? s->cluster_bits - 5
					    : s->cluster_bits;

	if (s->incompat & QCOW2_INCOMPAT_COMPRESSION) {
		if (h->header_length <= offsetof(struct qcow2_header_disk,
						 compression_type) ||
		    h->compression_type == QCOW2_COMPRESSION_ZLIB)
			return img_err(err, -EINVAL, "%s: compression type "
				       "bit is set but the compression_type "
				       "field is absent or zero", img->path);
		if (h->compression_type != QCOW2_COMPRESSION_ZSTD)
			return img_err(err, -EINVAL, "%s: unknown "
				       "compression type %u", img->path,
				       h->compression_type);
	} else if (h->compression_type != QCOW2_COMPRESSION_ZLIB) {
		return img_err(err, -EINVAL, "%s: compression_type %u is set "
			       "but the compression type feature bit is not",
			       img->path, h->compression_type);
	}
	s->compression_type = h->compression_type;

	if (s->incompat & QCOW2_INCOMPAT_DATA_FILE) {
		if (!s->data_file_name)
			return img_err(err, -EINVAL, "%s: image uses an "
				       "external data file but does not name "
				       "it", img->path);
	}
	s->data_file_raw = s->autoclear & QCOW2_AUTOCLEAR_DATA_FILE_RAW;
	if (s->data_file_raw && !(s->incompat & QCOW2_INCOMPAT_DATA_FILE))
		return img_err(err, -EINVAL, "%s: data-file-raw is set "
			       "without an external data file", img->path);
	return 0;
}

/* The backing file name lies in the first cluster after the extensions. */
static int read_backing_name(struct img *img, const struct qcow2_header *h,
			     const uint8_t *buf, struct img_err *err)
{
	struct qcow2_state *s = qcow2_state(img);

	if (h->backing_file_offset == 0 || h->backing_file_size == 0)
		return 0;
	if (h->backing_file_size > QCOW2_MAX_BACKING_NAME_BYTES)
		return img_err(err, -EINVAL, "%s: backing file name of %"
			       PRIu32 " bytes is too long (limit %u)",
			       img->path, h->backing_file_size,
			       QCOW2_MAX_BACKING_NAME_BYTES);
	if (h->backing_file_offset < s->header_bytes ||
	    !range_within(h->backing_file_offset, h->backing_file_size,
			  MIN(s->cluster_bytes, s->file_bytes)))
		return img_err(err, -EINVAL, "%s: backing file name at 0x%"
			       PRIx64 " (%" PRIu32 " bytes) lies outside the "
			       "header cluster", img->path,
			       h->backing_file_offset, h->backing_file_size);
	return copy_name(img, "backing file name",
			 buf + h->backing_file_offset, h->backing_file_size,
			 &s->backing_name, err);
}

static int check_tables(struct img *img, const struct qcow2_header *h,
			struct img_err *err)
{
	struct qcow2_view *v = qcow2_view(img);
	struct qcow2_state *s = v->s;
	uint64_t needed;
	int ret;

	/* Refcounts are not needed for reading, but a table the write
	 * path cannot trust is corrupt now. */
	if (h->refcount_table_clusters == 0)
		return img_err(err, -EINVAL, "%s: image has no refcount "
			       "table", img->path);
	ret = qcow2_validate_table(img, "refcount table",
				   h->refcount_table_offset,
				   (uint64_t)h->refcount_table_clusters *
					   (s->cluster_bytes / 8),
				   sizeof(uint64_t), QCOW2_MAX_REFTABLE_BYTES,
				   err);
	if (ret < 0)
		return ret;
	s->refcount_table_offset = h->refcount_table_offset;
	s->refcount_table_clusters = h->refcount_table_clusters;

	ret = qcow2_validate_table(img, "L1 table", h->l1_table_offset,
				   h->l1_size, sizeof(uint64_t),
				   QCOW2_MAX_L1_BYTES, err);
	if (ret < 0)
		return ret;
	needed = qcow2_l1_entries_for(s, h->size);
	if (needed > h->l1_size)
		return img_err(err, -EINVAL, "%s: L1 table of %" PRIu32
			       " entries is too small for a virtual size of %"
			       PRIu64 " bytes (needs %" PRIu64 ")", img->path,
			       h->l1_size, h->size, needed);
	v->l1_size = h->l1_size;
	v->l1_table_offset = h->l1_table_offset;

	s->nb_snapshots = h->nb_snapshots;
	s->snapshots_offset = h->snapshots_offset;
	return 0;
}

static enum img_format backing_format(const char *name)
{
	enum img_format fmt;

	if (!name)
		return IMG_FORMAT_PROBE;
	if (img_format_from_name(name, &fmt) < 0)
		return (enum img_format)-1;
	return fmt;
}

#define CACHE_LINE_BYTES 64

/* The metadata lock, alone on its cache line. Lookups hold it for well
 * under a microsecond, far less than a futex sleep and wake-up, so it
 * spins a little before sleeping: parallel small reads then do not
 * serialize on system calls. */
static int new_lock(pthread_mutex_t **lock_r)
{
	size_t bytes = align_up(sizeof(pthread_mutex_t), CACHE_LINE_BYTES);
	pthread_mutex_t *m = aligned_alloc(CACHE_LINE_BYTES, bytes);
	pthread_mutexattr_t attr;

	if (!m)
		return -ENOMEM;
	pthread_mutexattr_init(&attr);
	pthread_mutexattr_settype(&attr, PTHREAD_MUTEX_ADAPTIVE_NP);
	pthread_mutex_init(m, &attr);
	pthread_mutexattr_destroy(&attr);
	*lock_r = m;
	return 0;
}

static int qcow2_open(struct img *img, struct img_err *err)
{
	struct qcow2_view *v;
	struct qcow2_state *s;
	struct qcow2_header_disk disk;
	struct qcow2_header h;
	CLEANUP_FREE uint8_t *cluster0 = NULL;
	struct ext_seen seen = { 0 };
	uint64_t ext_end;
	int ret;

	/* The top handle: its view (the active L1 table) and the image
	 * state it owns, which snapshot handles will share. */
	v = calloc(1, sizeof(*v));
	if (!v)
		return img_err(err, -ENOMEM, "%s: out of memory", img->path);
	img->priv = v;
	s = v->s = calloc(1, sizeof(*s));
	if (!s)
		return img_err(err, -ENOMEM, "%s: out of memory", img->path);
	s->data_fd = img->fd;
	ret = new_lock(&s->lock);
	if (ret < 0)
		return img_err(err, ret, "%s: out of memory", img->path);
	/* Every read bumps a pin counter: keep them off the lock's line
	 * and the read-mostly fields. */
	s->pins = aligned_alloc(CACHE_LINE_BYTES,
				align_up(sizeof(*s->pins), CACHE_LINE_BYTES));
	if (!s->pins)
		return img_err(err, -ENOMEM, "%s: out of memory", img->path);
	memset(s->pins, 0, sizeof(*s->pins));

	ret = file_size(img, &s->file_bytes, err);
	if (ret < 0)
		return ret;
	if (s->file_bytes < QCOW2_V2_HEADER_BYTES)
		return img_err(err, -EINVAL, "%s: file of %" PRIu64 " bytes "
			       "is too short for a qcow2 header", img->path,
			       s->file_bytes);
	ret = full_pread_zero_eof(img->fd, &disk, sizeof(disk), 0);
	if (ret < 0)
		return img_err(err, ret, "%s: cannot read the header: %s",
			       img->path, strerror(-ret));
	qcow2_header_decode(&disk, &h);
	ret = check_header(img, &h, err);
	if (ret < 0)
		return ret;

	/* Extensions and the backing name live in the first cluster. */
	cluster0 = malloc(s->cluster_bytes);
	if (!cluster0)
		return img_err(err, -ENOMEM, "%s: out of memory", img->path);
	ret = full_pread_zero_eof(img->fd, cluster0, s->cluster_bytes, 0);
	if (ret < 0)
		return img_err(err, ret, "%s: cannot read the header: %s",
			       img->path, strerror(-ret));
	if (h.backing_file_offset > s->cluster_bytes)
		return img_err(err, -EINVAL, "%s: backing file name offset "
			       "0x%" PRIx64 " lies past the header cluster",
			       img->path, h.backing_file_offset);
	ext_end = h.backing_file_offset ? h.backing_file_offset
					: s->cluster_bytes;
	/* v2 images carry extensions too (after the 72-byte header), e.g.
	 * the backing format that qemu-img create -F writes. */
	ret = read_extensions(img, cluster0, ext_end, &seen, err);
	if (ret < 0)
		return ret;
	ret = check_features(img, &h, &seen, err);
	if (ret < 0)
		return ret;
	ret = read_backing_name(img, &h, cluster0, err);
	if (ret < 0)
		return ret;
	ret = check_tables(img, &h, err);
	if (ret < 0)
		return ret;
	img->size = h.size;
	ret = qcow2_read_l1(img, v->l1_table_offset, v->l1_size,
			    &v->l1_table, err);
	if (ret < 0)
		return ret;
	ret = qcow2_read_snapshots(img, err);
	if (ret < 0)
		return ret;

	s->l2_cache = qcow2_cache_new(img->fd, img->opts.cache_bytes,
				      MIN(QCOW2_L2_SLICE_BYTES,
					  s->cluster_bytes),
				      &s->file_bytes);
	if (!s->l2_cache)
		return img_err(err, -ENOMEM, "%s: out of memory", img->path);
	s->l2_slice_bytes = qcow2_cache_slice_bytes(s->l2_cache);
	{
		pthread_rwlockattr_t attr;

		/* Writer preference: a discard or snapshot must not starve
		 * behind a stream of writes (nobody nests read locks). */
		pthread_rwlockattr_init(&attr);
		pthread_rwlockattr_setkind_np(
			&attr, PTHREAD_RWLOCK_PREFER_WRITER_NONRECURSIVE_NP);
		ret = pthread_rwlock_init(&s->write_gate, &attr);
		pthread_rwlockattr_destroy(&attr);
		if (ret != 0 ||
		    pthread_cond_init(&s->inflight_cond, NULL) != 0)
			return img_err(err, -ENOMEM, "%s: out of memory",
				       img->path);
		s->write_gate_ready = true;
	}

	if (s->incompat & QCOW2_INCOMPAT_DATA_FILE) {
		ret = img_open_data_file(img, s->data_file_name, &s->data_fd,
					 err);
		if (ret < 0)
			return ret;
		s->owns_data_fd = true;
	}
	if (!img->read_only) {
		ret = qcow2_refcount_init(img, err);
		if (ret < 0)
			return ret;
	}
	if (s->backing_name) {
		enum img_format fmt = backing_format(s->backing_format);

		if (fmt == (enum img_format)-1)
			return img_err(err, -EINVAL, "%s: backing file format "
				       "'%s' is not supported (raw or qcow2)",
				       img->path, s->backing_format);
		ret = img_open_backing(img, s->backing_name, fmt,
				       &img->backing, err);
		if (ret < 0)
			return ret;
	}
	return 0;
}

static void qcow2_close(struct img *img)
{
	struct qcow2_view *v = qcow2_view(img);
	struct qcow2_state *s;

	if (!v)
		return;
	s = v->s;
	/* First: the read-ahead worker maps through this handle's view
	 * (and, for the top handle, reads through the image state). */
	if (s && v->parent) {
		qcow2_zcache_detach(s, img);
	} else if (s) {
		qcow2_zcache_free(s->zcache);
		s->zcache = NULL;
	}
	if (s && !v->parent && s->rc_cache && !s->corrupt_reason &&
	    !img->read_only)
		/* Nothing to report to: img_close returns nothing. Data
		 * the caller cared about was flushed by img_flush. */
		(void)qcow2_close_write(img);
	free(v->l1_table);
	/* Only the top handle owns the image state; a snapshot handle
	 * leaves it to the parent, which outlives it. */
	if (s && !v->parent) {
		qcow2_refcount_free(s);
		if (s->write_gate_ready) {
			pthread_rwlock_destroy(&s->write_gate);
			pthread_cond_destroy(&s->inflight_cond);
		}
		qcow2_cache_free(s->l2_cache);
		qcow2_free_snapshots(s->snapshots, s->nb_snapshots);
		if (s->owns_data_fd && s->data_fd >= 0)
			close(s->data_fd);
		if (s->lock) {
			pthread_mutex_destroy(s->lock);
			free(s->lock);
		}
		free(s->pins);
		free(s->backing_name);
		free(s->backing_format);
		free(s->data_file_name);
		free(s);
	}
	free(v);
	img->priv = NULL;
}

/* Runs whose bytes are read from host clusters, which a concurrent
 * discard or copy-on-write may free: they are read under a pin. */
static bool reads_host(const struct qcow2_run *run)
{
	return run->kind == QCOW2_RUN_DATA || run->kind == QCOW2_RUN_COMPRESSED;
}

static int qcow2_pread(struct img *img, void *buf, size_t len, uint64_t off)
{
	struct qcow2_state *s = qcow2_state(img);
	uint8_t *p = buf;

	while (len > 0) {
		struct img_pin pin = { 0 };
		struct qcow2_run run;
		size_t n;
		int ret;

		{
			LOCK_FOR_SCOPE(s->lock);
			ret = qcow2_map_locked(img, off, len, false, &run);
			if (ret == 0 && reads_host(&run))
				img_pin_take_locked(s->pins, &pin);
		}
		if (ret < 0)
			return ret;
		n = (size_t)run.len_bytes;
		switch (run.kind) {
		case QCOW2_RUN_DATA:
			/* No lock held: parallel readers each pread. */
			ret = full_pread_zero_eof(s->data_fd, p, n,
						  run.host_off);
			break;
		case QCOW2_RUN_ZERO:
			memset(p, 0, n);
			break;
		case QCOW2_RUN_UNALLOCATED:
			ret = img_read_backing(img, p, n, off);
			break;
		case QCOW2_RUN_COMPRESSED:
			ret = qcow2_read_compressed_seq(img, run.l2_entry, p,
							off, n, off + len);
			break;
		}
		img_unpin(&pin);
		if (ret < 0)
			return ret;
		p += n;
		off += n;
		len -= n;
	}
	return 0;
}

/* Block status; with pin_r, a DATA run is pinned in the same lock
 * section as its map, for the caller that splices from host_off. */
static int qcow2_block_status_pinned(struct img *img, uint64_t off,
				     uint64_t len, struct img_extent *ext_r,
				     struct img_pin *pin_r)
{
	struct qcow2_state *s = qcow2_state(img);
	struct qcow2_run run;
	int ret;

	{
		LOCK_FOR_SCOPE(s->lock);
		ret = qcow2_map_locked(img, off, len, true, &run);
		if (ret == 0 && pin_r && run.kind == QCOW2_RUN_DATA)
			img_pin_take_locked(s->pins, pin_r);
	}
	if (ret < 0)
		return ret;
	ext_r->len = run.len_bytes;
	ext_r->host_fd = -1;
	switch (run.kind) {
	case QCOW2_RUN_DATA:
		ext_r->kind = IMG_EXTENT_DATA;
		ext_r->host_fd = s->data_fd;
		ext_r->host_off = run.host_off;
		break;
	case QCOW2_RUN_COMPRESSED:
		ext_r->kind = IMG_EXTENT_DATA;
		break;
	case QCOW2_RUN_ZERO:
		ext_r->kind = IMG_EXTENT_ZERO;
		break;
	case QCOW2_RUN_UNALLOCATED:
		ext_r->kind = IMG_EXTENT_UNALLOCATED;
		break;
	}
	return 0;
}

static int qcow2_block_status(struct img *img, uint64_t off, uint64_t len,
			      struct img_extent *ext_r)
{
	return qcow2_block_status_pinned(img, off, len, ext_r, NULL);
}

static int qcow2_get_info(struct img *img, struct img_info *info)
{
	const struct qcow2_view *v = qcow2_view(img);
	const struct qcow2_state *s = v->s;

	info->format = "qcow2";
	info->cluster_size = s->cluster_bytes;
	info->backing_file = s->backing_name;
	info->backing_format = s->backing_format;
	/* The snapshot table is the top handle's to show. */
	info->nb_snapshots = v->parent ? 0 : s->nb_snapshots;
	info->kind = IMG_INFO_QCOW2;
	info->qcow2 = (struct img_info_qcow2){
		.version = s->version,
		.refcount_bits = 1u << s->refcount_order,
		.extended_l2 = s->extended_l2,
		.compression = s->compression_type == QCOW2_COMPRESSION_ZSTD
				       ? "zstd"
				       : "zlib",
		.data_file = s->data_file_name,
		.data_file_raw = s->data_file_raw,
		.dirty = s->incompat & QCOW2_INCOMPAT_DIRTY,
		.corrupt = s->incompat & QCOW2_INCOMPAT_CORRUPT,
		.lazy_refcounts = s->compat & QCOW2_COMPAT_LAZY_REFCOUNTS,
	};
	return 0;
}

const char *img_corrupt_reason(const struct img *img)
{
	const struct qcow2_state *s;

	if (!img || img->ops != &img_qcow2_ops || !img->priv)
		return NULL;
	/* One reason for the image, whichever handle asks. */
	s = qcow2_state(img);
	return s ? s->corrupt_reason : NULL;
}

const struct img_ops img_qcow2_ops = {
	.name            = "qcow2",
	.probe           = qcow2_probe,
	.open            = qcow2_open,
	.close           = qcow2_close,
	.pread           = qcow2_pread,
	.pwrite          = qcow2_pwrite,
	.discard         = qcow2_discard,
	.write_zeroes    = qcow2_write_zeroes,
	.flush           = qcow2_flush,
	.block_status    = qcow2_block_status,
	.block_status_pinned = qcow2_block_status_pinned,
	.get_info        = qcow2_get_info,
	.snapshot_list   = qcow2_snapshot_list,
	.snapshot_open   = qcow2_snapshot_open,
	.snapshot_create = qcow2_snapshot_create,
	.snapshot_delete = qcow2_snapshot_delete,
};
