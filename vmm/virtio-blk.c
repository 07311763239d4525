/* virtio-blk.c: the virtio-blk device model (virtio 1.x 5.2) on imgfmt.
 *
 * A request is a descriptor chain: device-readable segments holding the
 * 16-byte header (type, reserved, sector) and, for OUT/DISCARD/
 * WRITE_ZEROES, the data; then device-writable segments holding the data
 * for IN/GET_ID and, as the very last byte, the status. Each request goes
 * straight to imgfmt (img_pread/pwrite/...); there is no cache or queue of
 * our own, so parallel queues are parallel image calls.
 *
 * What is checked, in order, and what each failure gives:
 *   1. the last segment is device-writable, at least one byte long, and
 *      its last byte lies in guest memory: else there is nowhere to
 *      answer, and the caller breaks the queue (-EIO);
 *   2. readable segments come before writable ones, the readable bytes
 *      hold a whole header, every buffer the request uses lies in guest
 *      memory (all checked before any I/O starts), data lengths are whole
 *      sectors and the range lies inside the disk: else IOERR;
 *   3. unknown types, and DISCARD/WRITE_ZEROES that were not negotiated
 *      or carry unknown flags: UNSUPP;
 *   4. image errors: IOERR (UNSUPP for -ENOTSUP).
 * We never write into a readable segment nor past the data length the
 * request asked for. The used length is the number of bytes the request
 * may have written: data plus the status byte.
 *
 * Cost: a 4 KiB read is a few tens of nanoseconds of our own work around
 * one img_pread, so the common request shape has a short path. A request
 * is parsed (all of the above checks, nothing done) and then executed.
 * The header is read straight from its segment when that holds it whole,
 * and the data buffers are translated once, into a small array of host
 * pieces, which both checks them (before any I/O) and is what the I/O
 * then uses. Only a request with more pieces than that array walks its
 * buffers twice, once to check and once for the I/O. vblk_process parses
 * a batch of requests before it runs their I/O (see "Serving a queue").
 *
 * Deliberately not done: legacy (pre-1.0) devices, SIZE_MAX, GEOMETRY,
 * TOPOLOGY and CONFIG_WCE (the image is always write-back; FLUSH makes it
 * durable), and partial sector I/O of an image whose size is not a
 * multiple of 512 (its tail is not exposed, as QEMU does).
 */
#include "vmm.h"
#include "imgfmt.h"

#include "checked.h"
#include "endian.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>

#define SECTOR_BYTES VIRTIO_BLK_SECTOR_BYTES
#define REQ_HDR_BYTES 16
#define DISCARD_SEG_BYTES 16

/* Set by vblk_new and, for driver_features, by vblk_set_features; read
 * with no lock by every queue's thread, so the caller changes features
 * only while no queue is being processed (vhost-user.c stops its rings
 * first). */
struct vblk {
	struct img *img;
	uint64_t capacity_sectors;
	uint64_t host_features;
	uint64_t driver_features;
	unsigned nb_queues;
	uint32_t seg_max;
	uint32_t discard_align_sectors;
	bool read_only;
	uint8_t serial[VIRTIO_BLK_ID_BYTES];
};

int vblk_new(struct img *img, const struct vblk_opts *opts,
	     struct vblk **vblk_r)
{
	struct vblk_opts o = { 0 };
	struct img_info info;
	struct vblk *v;
	unsigned qsize;

	if (opts)
		o = *opts;
	if (o.nb_queues == 0)
		o.nb_queues = 1;
	qsize = o.queue_size ? o.queue_size : VQ_MAX_SIZE;
	if (o.nb_queues > 64 || qsize < 3 || qsize > VQ_MAX_SIZE)
		return -EINVAL;
	if (o.serial && strlen(o.serial) > VIRTIO_BLK_ID_BYTES)
		return -EINVAL;
	v = calloc(1, sizeof(*v));
	if (!v)
		return -ENOMEM;
	v->img = img;
	v->capacity_sectors = img_size(img) / SECTOR_BYTES;
	v->nb_queues = o.nb_queues;
	v->read_only = o.read_only || !img_writable(img);
	/* Header and status take two descriptors of each chain. */
	v->seg_max = MIN(qsize, VQ_MAX_SEGS) - 2;
	v->discard_align_sectors = 8;
	if (img_get_info(img, &info) == 0 && info.cluster_size >= SECTOR_BYTES)
		v->discard_align_sectors = info.cluster_size / SECTOR_BYTES;
	if (o.serial)
		memcpy(v->serial, o.serial, strlen(o.serial));

	v->host_features = (1ull << VIRTIO_F_VERSION_1) |
			   (1ull << VIRTIO_RING_F_INDIRECT_DESC) |
			   (1ull << VIRTIO_RING_F_EVENT_IDX) |
			   (1ull << VIRTIO_BLK_F_SEG_MAX) |
			   (1ull << VIRTIO_BLK_F_BLK_SIZE) |
			   (1ull << VIRTIO_BLK_F_FLUSH);
	if (v->read_only)
		v->host_features |= 1ull << VIRTIO_BLK_F_RO;
	else
		v->host_features |= (1ull << VIRTIO_BLK_F_DISCARD) |
				    (1ull << VIRTIO_BLK_F_WRITE_ZEROES);
	if (v->nb_queues > 1)
		v->host_features |= 1ull << VIRTIO_BLK_F_MQ;
	*vblk_r = v;
	return 0;
}

void vblk_free(struct vblk *vblk)
{
	free(vblk);
}

uint64_t vblk_features(const struct vblk *vblk)
{
	return vblk->host_features;
}

int vblk_set_features(struct vblk *vblk, uint64_t features)
{
	if (features & ~vblk->host_features)
		return -EINVAL;
	if (!(features & (1ull << VIRTIO_F_VERSION_1)))
		return -EINVAL;
	vblk->driver_features = features;
	return 0;
}

uint64_t vblk_driver_features(const struct vblk *vblk)
{
	return vblk->driver_features;
}

unsigned vblk_nb_queues(const struct vblk *vblk)
{
	return vblk->nb_queues;
}

void vblk_get_config(const struct vblk *vblk, uint8_t *cfg)
{
	memset(cfg, 0, VBLK_CONFIG_BYTES);
	put_le64(cfg + 0, vblk->capacity_sectors);
	put_le32(cfg + 12, vblk->seg_max);
	put_le32(cfg + 20, SECTOR_BYTES); /* blk_size */
	put_le16(cfg + 34, (uint16_t)vblk->nb_queues);
	put_le32(cfg + 36, VBLK_MAX_DISCARD_SECTORS);
	put_le32(cfg + 40, VBLK_MAX_DISCARD_SEGS);
	put_le32(cfg + 44, vblk->discard_align_sectors);
	put_le32(cfg + 48, VBLK_MAX_DISCARD_SECTORS);
	put_le32(cfg + 52, VBLK_MAX_DISCARD_SEGS);
	cfg[56] = 1; /* write_zeroes_may_unmap */
}

/* ------------------------------------------------------------------------
 * Walking the bytes of a run of segments as one stream.
 */
struct stream {
	const struct vmm_mem *mem;
	const struct vq_seg *segs;
	unsigned nb_segs;
};

typedef int (*chunk_fn)(void *host, size_t len, uint64_t pos, void *opaque);

/* Calls fn on each host chunk of stream bytes [skip, skip + len), pos
 * counting from skip. -EFAULT when a byte is outside guest memory or the
 * stream is shorter than skip + len. */
static int stream_for_each(const struct stream *s, uint64_t skip,
			   uint64_t len, chunk_fn fn, void *opaque)
{
	uint64_t pos = 0;

	for (unsigned i = 0; i < s->nb_segs && len > 0; i++) {
		uint64_t gpa = s->segs[i].gpa, n = s->segs[i].len_bytes;

		if (skip >= n) {
			skip -= n;
			continue;
		}
		if (ADD_OVERFLOW(gpa, skip, &gpa))
			return -EFAULT;
		n = MIN(n - skip, len);
		skip = 0;
		while (n > 0) {
			uint64_t chunk;
			void *host = vmm_mem_gpa_prefix(s->mem, gpa, n, &chunk);
			int ret;

			if (!host)
				return -EFAULT;
			if (fn) {
				ret = fn(host, chunk, pos, opaque);
				if (ret < 0)
					return ret;
			}
			/* gpa + chunk ends inside a region: cannot wrap. */
			gpa += chunk;
			n -= chunk;
			len -= chunk;
			pos += chunk;
		}
	}
	return len == 0 ? 0 : -EFAULT;
}

struct copy_ctx {
	uint8_t *buf;
	const uint8_t *cbuf;
};

static int copy_out_chunk(void *host, size_t len, uint64_t pos, void *opaque)
{
	struct copy_ctx *c = opaque;

	memcpy(c->buf + pos, host, len);
	return 0;
}

static int copy_in_chunk(void *host, size_t len, uint64_t pos, void *opaque)
{
	struct copy_ctx *c = opaque;

	memcpy(host, c->cbuf + pos, len);
	return 0;
}

struct io_ctx {
	struct img *img;
	uint64_t off_bytes;
};

static int read_chunk(void *host, size_t len, uint64_t pos, void *opaque)
{
	struct io_ctx *c = opaque;

	return img_pread(c->img, host, len, c->off_bytes + pos);
}

static int write_chunk(void *host, size_t len, uint64_t pos, void *opaque)
{
	struct io_ctx *c = opaque;

	return img_pwrite(c->img, host, len, c->off_bytes + pos);
}

/* A piece of a request's data in host memory. */
struct host_iov {
	uint8_t *host;
	uint64_t len;
};

/* Pieces kept on the stack for one request: enough for the requests
 * Linux sends up to 256 KiB in 4 KiB pages; more take the two-pass path. */
#define NB_HOST_IOV 64

/* Translates stream bytes [skip, skip + len) into host pieces in iov.
 * Returns how many, -EFAULT when a byte is outside guest memory or the
 * stream is short (as stream_for_each), -E2BIG when more than
 * NB_HOST_IOV pieces would be needed. The same walk as stream_for_each,
 * written out: it runs for every request, where an indirect call per
 * piece showed in the 4 KiB figures (tests/bench/README.md, vmm). */
static int stream_map(const struct stream *s, uint64_t skip, uint64_t len,
		      struct host_iov *iov)
{
	int nb = 0;

	for (unsigned i = 0; i < s->nb_segs && len > 0; i++) {
		uint64_t gpa = s->segs[i].gpa, n = s->segs[i].len_bytes;

		if (skip >= n) {
			skip -= n;
			continue;
		}
		if (ADD_OVERFLOW(gpa, skip, &gpa))
			return -EFAULT;
		n = MIN(n - skip, len);
		skip = 0;
		while (n > 0) {
			uint64_t chunk;
			void *host = vmm_mem_gpa_prefix(s->mem, gpa, n, &chunk);

			if (!host)
				return -EFAULT;
			if (nb == NB_HOST_IOV)
				return -E2BIG;
			iov[nb++] = (struct host_iov){ host, chunk };
			/* gpa + chunk ends inside a region: cannot wrap. */
			gpa += chunk;
			n -= chunk;
			len -= chunk;
		}
	}
	return len == 0 ? nb : -EFAULT;
}

/* The data buffers of one request, checked, and translated when they
 * fit in NB_HOST_IOV pieces (nb_iov < 0: they did not, and the I/O walks
 * the stream again). */
struct data_map {
	const struct stream *s;
	uint64_t skip, len;
	int nb_iov;
	struct host_iov iov[NB_HOST_IOV];
};

/* Checks stream bytes [skip, skip + len) before any I/O: 0, or -EFAULT
 * when a byte is outside guest memory or the stream is short. */
static int map_data(struct data_map *m, const struct stream *s, uint64_t skip,
		    uint64_t len)
{
	/* Field by field: a compound literal would clear iov[] too. */
	m->s = s;
	m->skip = skip;
	m->len = len;
	m->nb_iov = stream_map(s, skip, len, m->iov);
	if (m->nb_iov == -E2BIG)
		return stream_for_each(s, skip, len, NULL, NULL);
	return m->nb_iov < 0 ? m->nb_iov : 0;
}

/* Reads (write false) or writes the mapped buffers from/to the image at
 * off_bytes: 0 or the image's -errno. */
static int data_io(struct img *img, const struct data_map *m,
		   uint64_t off_bytes, bool write)
{
	struct io_ctx io = { .img = img, .off_bytes = off_bytes };

	if (m->nb_iov < 0)
		return stream_for_each(m->s, m->skip, m->len,
				       write ? write_chunk : read_chunk, &io);
	for (int i = 0; i < m->nb_iov; i++) {
		const struct host_iov *v = &m->iov[i];
		int ret = write ? img_pwrite(img, v->host, v->len, off_bytes) :
				  img_pread(img, v->host, v->len, off_bytes);

		if (ret < 0)
			return ret;
		off_bytes += v->len;
	}
	return 0;
}

/* Copies the request header into hdr: straight from the first segment
 * when it holds the header in one region (the usual case), else through
 * the stream. Either way the guest's bytes are read once. */
static int read_header(const struct stream *out, uint8_t *hdr)
{
	struct copy_ctx cc = { .buf = hdr };
	const uint8_t *h;

	if (out->nb_segs > 0 && out->segs[0].len_bytes >= REQ_HDR_BYTES) {
		h = vmm_mem_gpa(out->mem, out->segs[0].gpa, REQ_HDR_BYTES);
		if (h) {
			memcpy(hdr, h, REQ_HDR_BYTES);
			return 0;
		}
	}
	return stream_for_each(out, 0, REQ_HDR_BYTES, copy_out_chunk, &cc);
}

static uint8_t status_of(int ret)
{
	if (ret == 0)
		return VIRTIO_BLK_S_OK;
	return ret == -ENOTSUP ? VIRTIO_BLK_S_UNSUPP : VIRTIO_BLK_S_IOERR;
}

/* The byte range of nb_sectors from sector, if it lies inside the disk. */
static bool sectors_to_range(const struct vblk *v, uint64_t sector,
			     uint64_t len_bytes, uint64_t *off_r)
{
	if (sector > v->capacity_sectors)
		return false;
	*off_r = sector * SECTOR_BYTES; /* no overflow: capacity bounds it */
	return range_within(*off_r, len_bytes,
			    v->capacity_sectors * SECTOR_BYTES);
}

static bool negotiated(const struct vblk *v, unsigned bit)
{
	return v->driver_features & (1ull << bit);
}

/* DISCARD and WRITE_ZEROES: an array of {sector, num_sectors, flags}.
 * Every segment is checked before the first one runs, so a bad request
 * changes nothing. */
static uint8_t do_discard_zeroes(struct vblk *v, const struct stream *out,
				 uint64_t data_bytes, bool zeroes)
{
	uint8_t segs[VBLK_MAX_DISCARD_SEGS * DISCARD_SEG_BYTES];
	struct copy_ctx cc = { .buf = segs };
	unsigned nb;

	if (!negotiated(v, zeroes ? VIRTIO_BLK_F_WRITE_ZEROES :
				    VIRTIO_BLK_F_DISCARD))
		return VIRTIO_BLK_S_UNSUPP;
	if (v->read_only)
		return VIRTIO_BLK_S_IOERR;
	if (data_bytes == 0 || data_bytes % DISCARD_SEG_BYTES ||
	    data_bytes > sizeof(segs))
		return VIRTIO_BLK_S_IOERR;
	if (stream_for_each(out, REQ_HDR_BYTES, data_bytes, copy_out_chunk,
			    &cc) < 0)
		return VIRTIO_BLK_S_IOERR;
	nb = data_bytes / DISCARD_SEG_BYTES;
	for (unsigned i = 0; i < nb; i++) {
		const uint8_t *s = segs + i * DISCARD_SEG_BYTES;
		uint32_t nb_sectors = get_le32(s + 8), flags = get_le32(s + 12);
		uint32_t allowed = zeroes ? VIRTIO_BLK_WRITE_ZEROES_FLAG_UNMAP : 0;
		uint64_t off;

		/* 5.2.6.2: unknown flags, and UNMAP on a DISCARD, are
		 * UNSUPP. */
		if (flags & ~allowed)
			return VIRTIO_BLK_S_UNSUPP;
		if (nb_sectors > VBLK_MAX_DISCARD_SECTORS ||
		    !sectors_to_range(v, get_le64(s),
				      (uint64_t)nb_sectors * SECTOR_BYTES, &off))
			return VIRTIO_BLK_S_IOERR;
	}
	for (unsigned i = 0; i < nb; i++) {
		const uint8_t *s = segs + i * DISCARD_SEG_BYTES;
		uint64_t off = get_le64(s) * SECTOR_BYTES;
		uint64_t len = (uint64_t)get_le32(s + 8) * SECTOR_BYTES;
		int ret;

		/* UNMAP only allows freeing space; img_write_zeroes already
		 * frees what it can, so both forms take the same call. */
		ret = zeroes ? img_write_zeroes(v->img, off, len) :
			       img_discard(v->img, off, len);
		if (ret < 0)
			return status_of(ret);
	}
	return VIRTIO_BLK_S_OK;
}

/* ------------------------------------------------------------------------
 * Requests: parse (every check, nothing done), then execute.
 */
struct request {
	uint8_t *status;
	uint32_t type;
	uint32_t written;   /* data bytes the request may have written */
	uint64_t off_bytes; /* IN/OUT: where in the image */
	uint64_t out_bytes; /* readable bytes, header included */
	uint64_t in_bytes;  /* writable bytes, status byte excluded */
	bool st_known;      /* the answer is st, and executing does nothing */
	uint8_t st;
	struct stream out, in;
	struct data_map map; /* IN/OUT: the checked data buffers */
};

/* Checks chain as a request and fills r, writing neither the image nor
 * guest memory. -EIO when there is nowhere to put a status. r's streams
 * point into chain: execute r before chain is reused. */
static int parse_request(const struct vblk *v, const struct vmm_mem *mem,
			 const struct vq_chain *chain, struct request *r)
{
	const struct vq_seg *segs = chain->segs;
	unsigned nb = chain->nb_segs, nb_out = 0;
	uint64_t status_gpa, data_bytes;
	uint8_t hdr[REQ_HDR_BYTES];
	bool misordered = false;

	if (nb == 0 || !segs[nb - 1].device_writable ||
	    segs[nb - 1].len_bytes == 0)
		return -EIO;
	if (ADD_OVERFLOW(segs[nb - 1].gpa, segs[nb - 1].len_bytes - 1,
			 &status_gpa))
		return -EIO;
	r->status = vmm_mem_gpa(mem, status_gpa, 1);
	if (!r->status)
		return -EIO;

	r->out_bytes = r->in_bytes = 0;
	while (nb_out < nb && !segs[nb_out].device_writable)
		r->out_bytes += segs[nb_out++].len_bytes;
	for (unsigned i = nb_out; i < nb; i++) {
		misordered |= !segs[i].device_writable;
		r->in_bytes += segs[i].len_bytes;
	}
	r->in_bytes -= 1; /* the status byte */
	/* Sums of at most VQ_MAX_SEGS 32-bit lengths: no overflow. */
	r->out = (struct stream){ mem, segs, nb_out };
	r->in = (struct stream){ mem, segs + nb_out, nb - nb_out };
	r->written = 0;
	r->st_known = true;
	r->st = VIRTIO_BLK_S_IOERR;

	if (misordered || r->out_bytes < REQ_HDR_BYTES ||
	    read_header(&r->out, hdr) < 0)
		return 0;
	r->type = get_le32(hdr);
	switch (r->type) {
	case VIRTIO_BLK_T_IN:
		if (r->in_bytes % SECTOR_BYTES ||
		    !sectors_to_range(v, get_le64(hdr + 8), r->in_bytes,
				      &r->off_bytes) ||
		    map_data(&r->map, &r->in, 0, r->in_bytes) < 0)
			return 0;
		/* The data may be partly written on failure: count it. */
		r->written = (uint32_t)MIN(r->in_bytes, UINT32_MAX - 1);
		break;
	case VIRTIO_BLK_T_OUT:
		data_bytes = r->out_bytes - REQ_HDR_BYTES;
		if (v->read_only || data_bytes % SECTOR_BYTES ||
		    !sectors_to_range(v, get_le64(hdr + 8), data_bytes,
				      &r->off_bytes) ||
		    map_data(&r->map, &r->out, REQ_HDR_BYTES, data_bytes) < 0)
			return 0;
		break;
	case VIRTIO_BLK_T_FLUSH:
	case VIRTIO_BLK_T_GET_ID:
	case VIRTIO_BLK_T_DISCARD:
	case VIRTIO_BLK_T_WRITE_ZEROES:
		/* Rare: checked as they execute. */
		break;
	default:
		r->st = VIRTIO_BLK_S_UNSUPP;
		return 0;
	}
	r->st_known = false;
	return 0;
}

/* Runs a parsed request and returns its status. */
static uint8_t execute_request(struct vblk *v, struct request *r)
{
	if (r->st_known)
		return r->st;
	switch (r->type) {
	case VIRTIO_BLK_T_IN:
		return status_of(data_io(v->img, &r->map, r->off_bytes, false));
	case VIRTIO_BLK_T_OUT:
		return status_of(data_io(v->img, &r->map, r->off_bytes, true));
	case VIRTIO_BLK_T_FLUSH:
		return status_of(img_flush(v->img));
	case VIRTIO_BLK_T_GET_ID: {
		uint64_t n = MIN(r->in_bytes, (uint64_t)VIRTIO_BLK_ID_BYTES);
		struct copy_ctx idc = { .cbuf = v->serial };

		if (stream_for_each(&r->in, 0, n, copy_in_chunk, &idc) < 0)
			return VIRTIO_BLK_S_IOERR;
		r->written = (uint32_t)n;
		return VIRTIO_BLK_S_OK;
	}
	default: /* DISCARD, WRITE_ZEROES */
		return do_discard_zeroes(v, &r->out,
					 r->out_bytes - REQ_HDR_BYTES,
					 r->type == VIRTIO_BLK_T_WRITE_ZEROES);
	}
}

/* ------------------------------------------------------------------------
 * Serving a queue. Requests are parsed as they are popped, but a read or
 * write whose data is one piece of host memory (nearly every one), and a
 * request already answered by its checks, wait in a short list; the
 * list's I/O then runs back to back, and the answers follow in ring
 * order. The image sees exactly the I/O, in exactly the order, of running
 * each request as it is popped (anything else first runs the list). What
 * moves is only when a later request's header and descriptors are read:
 * before an earlier request's data lands. No driver may rely on either
 * order: a buffer belongs to the device until its request is answered.
 * Our own work is then no longer wedged between system calls: on these
 * machines a pread leaves the caches and the return-stack predictor cold
 * for the code that runs after it (every return to a frame older than
 * the call mispredicts; tests/bench/vmm-bench.sh shows the cost in its
 * 4 KiB figures), and a request parsed between two preads paid that in
 * full. QEMU's virtio-blk also gathers a queue's requests before it
 * submits them.
 */
struct deferred {
	uint8_t *host; /* data; NULL: no I/O, the answer is st */
	uint64_t len_bytes, off_bytes;
	uint8_t *status;
	uint32_t used_len;
	uint16_t head;
	bool write;
	uint8_t st;
};

#define NB_DEFERRED 32

/* Runs the deferred I/O, then answers each request in order. */
static void run_deferred(struct vblk *v, struct vq *vq, struct deferred *d,
			 unsigned *nb_r)
{
	unsigned nb = *nb_r;

	for (unsigned i = 0; i < nb; i++) {
		int ret;

		if (!d[i].host)
			continue;
		if (d[i].write)
			ret = img_pwrite(v->img, d[i].host, d[i].len_bytes,
					 d[i].off_bytes);
		else
			ret = img_pread(v->img, d[i].host, d[i].len_bytes,
					d[i].off_bytes);
		d[i].st = status_of(ret);
	}
	for (unsigned i = 0; i < nb; i++) {
		*d[i].status = d[i].st;
		vq_fill(vq, d[i].head, d[i].used_len);
	}
	*nb_r = 0;
}

/* Defers r when its I/O is at most one host piece or it is answered
 * already; false when it must run now. */
static bool defer(const struct request *r, uint16_t head, struct deferred *d)
{
	*d = (struct deferred){
		.status = r->status,
		.used_len = r->written + 1,
		.head = head,
		.st = r->st,
	};
	if (r->st_known)
		return true;
	if ((r->type != VIRTIO_BLK_T_IN && r->type != VIRTIO_BLK_T_OUT) ||
	    r->map.nb_iov < 0 || r->map.nb_iov > 1)
		return false;
	/* No piece: a read or write of 0 bytes, which succeeds. */
	d->st = VIRTIO_BLK_S_OK;
	if (r->map.nb_iov == 1) {
		d->host = r->map.iov[0].host;
		d->len_bytes = r->map.iov[0].len;
		d->off_bytes = r->off_bytes;
		d->write = r->type == VIRTIO_BLK_T_OUT;
	}
	return true;
}

int vblk_process(struct vblk *vblk, struct vq *vq, bool *notify_r)
{
	struct deferred d[NB_DEFERRED];
	unsigned nb_d = 0;
	int nb_done = 0, ret;

	*notify_r = false;
	for (;;) {
		while ((ret = vq_pop(vq)) == 1) {
			struct request r;

			if (parse_request(vblk, vq->mem, &vq->chain, &r) < 0) {
				vq_set_broken(vq, "request without a "
						  "device-writable status byte");
				ret = -EIO;
				break;
			}
			nb_done++;
			if (defer(&r, vq->chain.head, &d[nb_d])) {
				if (++nb_d == NB_DEFERRED)
					run_deferred(vblk, vq, d, &nb_d);
				continue;
			}
			/* Everything popped before it runs before it. */
			run_deferred(vblk, vq, d, &nb_d);
			*r.status = execute_request(vblk, &r);
			vq_fill(vq, vq->chain.head, r.written + 1);
		}
		/* Requests popped before a broken one keep their answers. */
		run_deferred(vblk, vq, d, &nb_d);
		/* One store of the used index per pass over what the driver
		 * made available, before we may go to sleep. */
		vq_flush(vq);
		if (ret < 0)
			break;
		/* Re-check after asking for kicks, or an entry added
		 * between our last pop and the request would sleep. */
		if (!vq_enable_notify(vq))
			break;
	}
	if (nb_done > 0)
		*notify_r = vq_need_notify(vq);
	return ret < 0 ? -EIO : nb_done;
}
