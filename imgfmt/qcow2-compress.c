/* qcow2-compress.c: reading compressed clusters.
 *
 * docs/interop/qcow2.txt, "Compressed Clusters Descriptor": with
 * x = 62 - (cluster_bits - 8), bits 0..x-1 of the L2 entry are the host
 * byte offset of the compressed data (not aligned) and bits x..61 the
 * number of 512-byte sectors it uses beyond the one holding that offset.
 * So the compressed span is at most 2 clusters long: bounded memory
 * whatever the entry says.
 *
 * The span may run past the end of the file (the last compressed cluster
 * need not fill its final sector); what lies past the end reads as
 * zeroes, and decompression stops once it has produced a whole cluster.
 * Data that does not decompress to exactly one cluster is corrupt: -EIO.
 *
 * Compression types (header byte 104): 0 zlib as raw deflate (window bits
 * -12, no zlib header, as QEMU writes it), 1 zstd (one frame, possibly
 * followed by the next cluster's bytes in the same sector).
 *
 * Each thread has its own decompressors and each call its own buffers,
 * so compressed reads run in parallel like plain ones, with no lock held
 * (the decompressed-cluster cache below takes its lock only to copy).
 * Sequential reads make a worker decompress the clusters ahead of them
 * into that cache (zahead.c), so that both cores decompress.
 */
#include "qcow2-int.h"
#include "zahead.h"

#include "checked.h"
#include "cleanup.h"
#include "io.h"

#include <errno.h>
#include <libdeflate.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>
#include <zlib.h>
#include <zstd.h>

void qcow2_compressed_desc(const struct qcow2_state *s, uint64_t l2_entry,
			   uint64_t *host_off_r, uint64_t *bytes_r)
{
	unsigned x = 62 - (s->cluster_bits - 8);
	uint64_t off_mask = (1ull << x) - 1;
	uint64_t sectors_mask = (1ull << (s->cluster_bits - 8)) - 1;
	uint64_t host = l2_entry & off_mask;
	uint64_t nb_sectors = ((l2_entry >> x) & sectors_mask) + 1;

	*host_off_r = host;
	*bytes_r = nb_sectors * QCOW2_COMPRESSED_SECTOR_BYTES -
		   (host & (QCOW2_COMPRESSED_SECTOR_BYTES - 1));
}

static int inflate_raw_zlib(const uint8_t *in, size_t in_bytes,
			    uint8_t *out, size_t out_bytes)
{
	z_stream zs = { 0 };
	int ret;

	if (inflateInit2(&zs, -12) != Z_OK)
		return -ENOMEM;
	zs.next_in = (Bytef *)in;
	zs.avail_in = (uInt)in_bytes;
	zs.next_out = out;
	zs.avail_out = (uInt)out_bytes;
	ret = inflate(&zs, Z_FINISH);
	inflateEnd(&zs);
	/* Z_BUF_ERROR with a full output means the stream continues past
	 * one cluster (or its end marker lies beyond): we have what we
	 * need either way. */
	if ((ret == Z_STREAM_END || ret == Z_BUF_ERROR) && zs.avail_out == 0)
		return 0;
	return -EIO;
}

/* libdeflate inflates about twice as fast as zlib, which is most of the
 * time a compressed image takes to read; a zstd context costs more to
 * create (tens of KiB, zeroed) than a cluster costs to decompress. Neither
 * is thread safe, so each thread keeps one of each, made on first use and
 * freed when the thread exits. */
struct decompressors {
	struct libdeflate_decompressor *deflate;
	ZSTD_DCtx *zstd;
};

static pthread_key_t decompressors_key;
static pthread_once_t decompressors_once = PTHREAD_ONCE_INIT;
static bool decompressors_key_ok;

static void free_decompressors(void *p)
{
	struct decompressors *d = p;

	if (d->deflate)
		libdeflate_free_decompressor(d->deflate);
	ZSTD_freeDCtx(d->zstd);
	free(d);
}

static void make_decompressors_key(void)
{
	decompressors_key_ok = pthread_key_create(&decompressors_key,
						  free_decompressors) == 0;
}

/* This thread's decompressors, NULL when out of memory. */
static struct decompressors *thread_decompressors(void)
{
	struct decompressors *d;

	pthread_once(&decompressors_once, make_decompressors_key);
	if (!decompressors_key_ok)
		return NULL;
	d = pthread_getspecific(decompressors_key);
	if (!d) {
		d = calloc(1, sizeof(*d));
		if (d && pthread_setspecific(decompressors_key, d) != 0) {
			free(d);
			d = NULL;
		}
	}
	return d;
}

static struct libdeflate_decompressor *thread_inflater(void)
{
	struct decompressors *d = thread_decompressors();

	if (d && !d->deflate)
		d->deflate = libdeflate_alloc_decompressor();
	return d ? d->deflate : NULL;
}

static int inflate_raw(const uint8_t *in, size_t in_bytes, uint8_t *out,
		       size_t out_bytes)
{
	struct libdeflate_decompressor *d = thread_inflater();
	size_t in_used, out_made;

	/* The input may carry the next cluster's bytes after the end of
	 * this stream (it is rounded up to sectors): the _ex call allows
	 * that. Anything libdeflate does not accept (a stream longer than
	 * a cluster, an end marker past what we read) gets zlib's more
	 * lenient reading below, so both paths accept the same images. */
	if (d && libdeflate_deflate_decompress_ex(d, in, in_bytes, out,
						  out_bytes, &in_used,
						  &out_made) ==
			 LIBDEFLATE_SUCCESS &&
	    out_made == out_bytes)
		return 0;
	return inflate_raw_zlib(in, in_bytes, out, out_bytes);
}

/* This thread's zstd context, reset for a new frame; NULL when out of
 * memory. */
static ZSTD_DCtx *thread_zstd(void)
{
	struct decompressors *d = thread_decompressors();

	if (!d)
		return NULL;
	if (!d->zstd) {
		d->zstd = ZSTD_createDCtx();
		if (!d->zstd)
			return NULL;
	} else {
		ZSTD_DCtx_reset(d->zstd, ZSTD_reset_session_and_parameters);
	}
	/* The window a hostile frame may ask for is bounded so a 2-cluster
	 * input cannot make zstd allocate gigabytes. */
	ZSTD_DCtx_setParameter(d->zstd, ZSTD_d_windowLogMax, 23);
	return d->zstd;
}

/* The streaming decoder accepts what the one-shot call below refuses: a
 * frame that goes on past one cluster (we stop once the cluster is full)
 * or whose end lies past what we read. */
static int zstd_decompress_stream(ZSTD_DCtx *dctx, const uint8_t *in,
				  size_t in_bytes, uint8_t *out,
				  size_t out_bytes)
{
	ZSTD_inBuffer input = { in, in_bytes, 0 };
	ZSTD_outBuffer output = { out, out_bytes, 0 };

	while (output.pos < output.size) {
		size_t in_before = input.pos, out_before = output.pos;
		size_t r = ZSTD_decompressStream(dctx, &output, &input);

		if (ZSTD_isError(r))
			return -EIO;
		/* No progress means the input ended before the cluster
		 * did; stop rather than spin. */
		if (input.pos == in_before && output.pos == out_before)
			return -EIO;
	}
	return 0;
}

static int zstd_decompress(const uint8_t *in, size_t in_bytes, uint8_t *out,
			   size_t out_bytes)
{
	ZSTD_DCtx *dctx = thread_zstd();
	size_t frame_bytes, made;

	if (!dctx)
		return -ENOMEM;
	/* One frame, then possibly the next cluster's bytes in the same
	 * sector: decompressing exactly the frame in one call writes
	 * straight into out, with no window buffer to fill and copy. */
	frame_bytes = ZSTD_findFrameCompressedSize(in, in_bytes);
	if (!ZSTD_isError(frame_bytes)) {
		made = ZSTD_decompressDCtx(dctx, out, out_bytes, in,
					   frame_bytes);
		if (!ZSTD_isError(made) && made == out_bytes)
			return 0;
		ZSTD_DCtx_reset(dctx, ZSTD_reset_session_only);
	}
	return zstd_decompress_stream(dctx, in, in_bytes, out, out_bytes);
}

/* Decompresses the cluster whose compressed bytes are in[0..in_bytes)
 * into out (one cluster). */
static int decompress_cluster(const struct qcow2_state *s, const uint8_t *in,
			      size_t in_bytes, uint8_t *out)
{
	switch (s->compression_type) {
	case QCOW2_COMPRESSION_ZLIB:
		return inflate_raw(in, in_bytes, out, s->cluster_bytes);
	case QCOW2_COMPRESSION_ZSTD:
		return zstd_decompress(in, in_bytes, out, s->cluster_bytes);
	default:
		return -EIO; /* refused at open; never reached */
	}
}

/* The decompressed-cluster cache (zahead.c), one per image, shared by
 * its handles (the top one, read-only or read-write, and its snapshot
 * handles): this driver never writes compressed clusters, so a host
 * offset that a compressed descriptor names holds the same bytes for as
 * long as any descriptor names it, and a freed range is forgotten
 * (qcow2_zcache_forget_locked) before it can be reused. The worker maps
 * through the view of the handle whose reads make the stream and reads
 * under a pin, like any reader. At most ZCACHE_MAX_BYTES of clusters
 * (plus the worker's 1 MiB input buffer) per image. */
#define ZCACHE_MAX_BYTES (4u << 20)

struct qcow2_zcache {
	const struct qcow2_state *s;
	int fd; /* the image file, which every handle shares */
	struct zahead *ahead;
};

/* The worker's batch: the compressed clusters from guest off on, in
 * one lock section with one pin, while they stay host-ascending within
 * ZAHEAD_MAX_IN_BYTES (qemu-img writes them back to back). */
static int zc_plan(void *ctx, void *view, uint64_t off, uint64_t limit,
		   struct zahead_unit *u, size_t max, uint64_t *next_r,
		   struct img_pin *pin_r)
{
	struct img *img = view; /* the handle of the reads */
	struct qcow2_state *s = qcow2_state(img);
	uint64_t pos = off, file_bytes = qcow2_file_bytes_now(s);
	size_t n = 0;

	(void)ctx;

	limit = MIN(limit, img->size);
	LOCK_FOR_SCOPE(s->lock);
	while (n < max && pos < limit) {
		struct qcow2_run run;
		uint64_t host, bytes;
		int ret = qcow2_map_locked(img, pos, limit - pos, false, &run);

		if (ret < 0) {
			if (n)
				break;
			return ret;
		}
		if (run.kind != QCOW2_RUN_COMPRESSED) {
			if (!n)
				pos += run.len_bytes;
			break;
		}
		qcow2_compressed_desc(s, run.l2_entry, &host, &bytes);
		/* What the reader would refuse, it refuses itself. */
		if (!host || host >= file_bytes)
			break;
		if (n && (host < u[n - 1].host_off ||
			  host + bytes - u[0].host_off > ZAHEAD_MAX_IN_BYTES))
			break;
		u[n].guest_off = pos;
		u[n].src = NULL;
		u[n].host_off = host;
		u[n].max_in = bytes;
		n++;
		pos += run.len_bytes;
	}
	if (n)
		img_pin_take_locked(s->pins, pin_r);
	*next_r = pos;
	return (int)n;
}

static int zc_read(void *ctx, const void *src, void *buf, size_t len,
		   uint64_t host_off)
{
	struct qcow2_zcache *zc = ctx;

	(void)src;
	return full_pread_zero_eof(zc->fd, buf, len, host_off);
}

static int zc_decompress(void *ctx, const struct zahead_unit *u,
			 const uint8_t *in, size_t in_bytes, uint8_t *out,
			 size_t *made_r)
{
	struct qcow2_zcache *zc = ctx;
	const struct qcow2_state *s = zc->s;
	int ret;

	(void)u;
	ret = decompress_cluster(s, in, in_bytes, out);
	*made_r = ret == 0 ? s->cluster_bytes : 0;
	return ret;
}

static const struct zahead_ops zc_ops = {
	.plan = zc_plan,
	.read = zc_read,
	.decompress = zc_decompress,
};

void qcow2_zcache_free(struct qcow2_zcache *zc)
{
	if (!zc)
		return;
	zahead_free(zc->ahead);
	free(zc);
}

void qcow2_zcache_forget_locked(struct qcow2_state *s, uint64_t host_off,
				uint64_t bytes)
{
	struct qcow2_zcache *zc = __atomic_load_n(&s->zcache, __ATOMIC_ACQUIRE);

	if (zc)
		zahead_forget(zc->ahead, NULL, host_off, bytes);
}

void qcow2_zcache_detach(struct qcow2_state *s, struct img *img)
{
	struct qcow2_zcache *zc = __atomic_load_n(&s->zcache, __ATOMIC_ACQUIRE);

	if (zc)
		zahead_detach(zc->ahead, img);
}

static struct qcow2_zcache *zcache_of(struct img *img, struct qcow2_state *s)
{
	struct qcow2_zcache *zc;

	zc = __atomic_load_n(&s->zcache, __ATOMIC_ACQUIRE);
	if (zc)
		return zc;
	zc = calloc(1, sizeof(*zc));
	if (!zc)
		return NULL;
	zc->s = s;
	zc->fd = img->fd;
	zc->ahead = zahead_new(s->cluster_bytes, ZCACHE_MAX_BYTES, &zc_ops, zc);
	if (!zc->ahead) {
		free(zc);
		return NULL;
	}
	/* Two first readers may race: the loser frees its copy. */
	struct qcow2_zcache *expected = NULL;
	if (!__atomic_compare_exchange_n(&s->zcache, &expected, zc, false,
					 __ATOMIC_ACQ_REL, __ATOMIC_ACQUIRE)) {
		qcow2_zcache_free(zc);
		zc = expected;
	}
	return zc;
}

/* The reader's side: the cache (waiting for the worker when it is on
 * this cluster), else decompress here. A whole-cluster read
 * decompresses straight into the caller's buffer and keeps nothing (a
 * sequential reader does not come back); a partial one decompresses
 * into a cache slot, since the rest of the cluster is likely next. */
static int read_compressed(struct img *img, uint64_t l2_entry, void *buf,
			   size_t off_in_cluster, size_t len, bool note,
			   uint64_t guest_off, uint64_t req_end)
{
	struct qcow2_state *s = qcow2_state(img);
	struct zahead_claim claim = { 0 };
	CLEANUP_FREE uint8_t *in = NULL;
	CLEANUP_FREE uint8_t *bounce = NULL;
	struct qcow2_zcache *zc;
	uint64_t host_off, bytes;
	bool whole = off_in_cluster == 0 && len == s->cluster_bytes;
	uint8_t *out;
	int ret;

	qcow2_compressed_desc(s, l2_entry, &host_off, &bytes);
	if (host_off >= qcow2_file_bytes_now(s) ||
	    off_in_cluster >= s->cluster_bytes ||
	    len > s->cluster_bytes - off_in_cluster)
		return -EIO;
	/* Host offset 0 is the header, never compressed data. */
	zc = host_off ? zcache_of(img, s) : NULL;
	if (zc) {
		if (note)
			zahead_note_read(zc->ahead, img, guest_off, req_end);
		ret = zahead_get(zc->ahead, NULL, host_off, buf,
				 off_in_cluster, len, &claim);
		if (ret != 0)
			return ret < 0 ? ret : 0;
	}
	/* bytes <= 2 * cluster size by construction of the descriptor. */
	in = malloc(bytes);
	ret = in ? full_pread_zero_eof(img->fd, in, bytes, host_off) : -ENOMEM;
	if (ret < 0)
		goto out;
	out = whole ? buf : zc ? zahead_claim_buf(zc->ahead, &claim) : NULL;
	if (!out) {
		out = bounce = malloc(s->cluster_bytes);
		if (!out) {
			ret = -ENOMEM;
			goto out;
		}
	}
	ret = decompress_cluster(s, in, bytes, out);
	if (ret == 0 && !whole)
		memcpy(buf, out + off_in_cluster, len);
out:
	if (zc)
		zahead_publish(zc->ahead, &claim,
			       ret == 0 && !whole && !bounce,
			       s->cluster_bytes, bytes);
	return ret;
}

int qcow2_read_compressed(struct img *img, uint64_t l2_entry, void *buf,
			  size_t off_in_cluster, size_t len)
{
	return read_compressed(img, l2_entry, buf, off_in_cluster, len, false,
			       0, 0);
}

int qcow2_read_compressed_seq(struct img *img, uint64_t l2_entry, void *buf,
			      uint64_t guest_off, size_t len, uint64_t req_end)
{
	const struct qcow2_state *s = qcow2_state(img);

	return read_compressed(img, l2_entry, buf,
			       (size_t)(guest_off & (s->cluster_bytes - 1)),
			       len, true, guest_off, req_end);
}
