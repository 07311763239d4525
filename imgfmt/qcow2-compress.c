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
 */
#include "qcow2-int.h"

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

/* The decompressed-cluster cache. Only read-only handles use it: their
 * compressed clusters cannot be freed and reused under them (a read-only
 * top image is locked against writers; a snapshot holds a reference to
 * every cluster it maps), so a host offset always names the same bytes.
 * A handle that writes would have to drop entries on every free. */
#define ZCACHE_MAX_BYTES (4u << 20)
#define ZCACHE_MAX_ENTRIES 64u

struct qcow2_zcache {
	pthread_mutex_t lock;
	size_t nb, next;
	struct {
		uint64_t host_off;  /* 0: empty */
		uint8_t *data;      /* one cluster */
	} ent[ZCACHE_MAX_ENTRIES];
};

void qcow2_zcache_free(struct qcow2_zcache *zc)
{
	if (!zc)
		return;
	for (size_t i = 0; i < zc->nb; i++)
		free(zc->ent[i].data);
	pthread_mutex_destroy(&zc->lock);
	free(zc);
}

static struct qcow2_zcache *zcache_of(struct img *img, struct qcow2_state *s)
{
	struct qcow2_zcache *zc;

	/* The image's cache, shared by its read-only handles only. */
	if (!img->read_only)
		return NULL;
	zc = __atomic_load_n(&s->zcache, __ATOMIC_ACQUIRE);
	if (zc)
		return zc;
	zc = calloc(1, sizeof(*zc));
	if (!zc)
		return NULL;
	pthread_mutex_init(&zc->lock, NULL);
	zc->nb = MIN((size_t)ZCACHE_MAX_ENTRIES,
		     MAX((size_t)1, ZCACHE_MAX_BYTES / s->cluster_bytes));
	for (size_t i = 0; i < zc->nb; i++) {
		zc->ent[i].data = malloc(s->cluster_bytes);
		if (!zc->ent[i].data) {
			zc->nb = i;
			break;
		}
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

static bool zcache_get(struct qcow2_zcache *zc, uint64_t host_off,
		       size_t cluster_bytes, void *buf, size_t off, size_t len)
{
	bool hit = false;

	pthread_mutex_lock(&zc->lock);
	for (size_t i = 0; i < zc->nb; i++) {
		if (zc->ent[i].host_off == host_off) {
			memcpy(buf, zc->ent[i].data + off, len);
			hit = true;
			break;
		}
	}
	pthread_mutex_unlock(&zc->lock);
	(void)cluster_bytes;
	return hit;
}

static void zcache_put(struct qcow2_zcache *zc, uint64_t host_off,
		       const uint8_t *cluster, size_t cluster_bytes)
{
	pthread_mutex_lock(&zc->lock);
	if (zc->nb) {
		size_t i = zc->next++ % zc->nb;
		memcpy(zc->ent[i].data, cluster, cluster_bytes);
		zc->ent[i].host_off = host_off;
	}
	pthread_mutex_unlock(&zc->lock);
}

int qcow2_read_compressed(struct img *img, uint64_t l2_entry, void *buf,
			  size_t off_in_cluster, size_t len)
{
	struct qcow2_state *s = qcow2_state(img);
	CLEANUP_FREE uint8_t *in = NULL;
	CLEANUP_FREE uint8_t *cluster = NULL;
	uint64_t host_off, bytes;
	uint8_t *out;
	int ret;

	qcow2_compressed_desc(s, l2_entry, &host_off, &bytes);
	if (host_off >= qcow2_file_bytes_now(s) ||
	    off_in_cluster >= s->cluster_bytes ||
	    len > s->cluster_bytes - off_in_cluster)
		return -EIO;
	struct qcow2_zcache *zc = zcache_of(img, s);
	/* Host offset 0 is the header, never compressed data: it marks an
	 * empty cache slot. */
	if (zc && host_off && zcache_get(zc, host_off, s->cluster_bytes, buf,
					 off_in_cluster, len))
		return 0;
	/* bytes <= 2 * cluster size by construction of the descriptor. */
	in = malloc(bytes);
	if (!in)
		return -ENOMEM;
	ret = full_pread_zero_eof(img->fd, in, bytes, host_off);
	if (ret < 0)
		return ret;

	/* A whole-cluster read decompresses straight into the caller's
	 * buffer; a partial one goes through a bounce cluster (and is the
	 * one worth caching: the rest of the cluster is likely next). */
	if (off_in_cluster == 0 && len == s->cluster_bytes) {
		out = buf;
	} else {
		cluster = malloc(s->cluster_bytes);
		if (!cluster)
			return -ENOMEM;
		out = cluster;
	}
	switch (s->compression_type) {
	case QCOW2_COMPRESSION_ZLIB:
		ret = inflate_raw(in, bytes, out, s->cluster_bytes);
		break;
	case QCOW2_COMPRESSION_ZSTD:
		ret = zstd_decompress(in, bytes, out, s->cluster_bytes);
		break;
	default:
		ret = -EIO; /* refused at open; never reached */
		break;
	}
	if (ret < 0)
		return ret;
	if (out == cluster) {
		memcpy(buf, cluster + off_in_cluster, len);
		if (zc && host_off)
			zcache_put(zc, host_off, cluster, s->cluster_bytes);
	}
	return 0;
}
