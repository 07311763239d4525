/* imgvmm.c: the test VMM, its benchmark, and the vhost-user-blk server.
 *
 *   imgvmm [OPTIONS] IMAGE                    verified workload
 *   imgvmm --bench [--quick] IMAGE            device model vs direct imgfmt
 *   imgvmm --vhost-user SOCKET [OPTIONS] IMAGE
 *
 * The workload plays a guest: it owns guest memory (a memfd mapped as two
 * regions that are adjacent in guest-physical space but not on the host,
 * so buffers that straddle them take the split path), lays out one split
 * virtqueue per queue, and drives the device model through it exactly as a
 * driver would, with eventfd kicks and interrupts between a driver thread
 * and a device thread per queue. Each queue owns one stripe of the disk,
 * so the queues run in parallel without ordering between them; within a
 * queue the device runs requests in ring order, so the model is updated
 * when a request is submitted and a read is checked against the model as
 * it was at its submission.
 *
 * The model is a full copy of the disk, read at start with img_pread (or
 * taken from --expect FILE, to check bytes written by someone else). A
 * discard leaves each sector reading as zeroes or as the backing file
 * (imgfmt.h allows both), so discarded sectors accept either until the
 * final pass, which reads every byte of the disk through the device and
 * settles them. --dump FILE then writes the model, which is what the image
 * must hold (tests compare it with an imgfs mount and qemu-img).
 */
#include "vmm.h"
#include "guest-driver.h"
#include "imgfmt.h"

#include "checked.h"
#include "cleanup.h"
#include "endian.h"
#include "log.h"

#include <errno.h>
#include <fcntl.h>
#include <getopt.h>
#include <inttypes.h>
#include <libgen.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/eventfd.h>
#include <sys/mman.h>
#include <time.h>
#include <unistd.h>

#define SECTOR 512u
#define GUEST_BASE_GPA 0x40000000ull
#define MAX_INDIRECT 8
#define MAX_DATA_PIECES 4

struct options {
	const char *image;
	const char *vhost_socket;
	const char *expect;
	const char *dump;
	const char *serial;
	enum img_format format;
	enum img_backing_policy backing;
	bool read_only;
	bool read_mix;
	bool bench;
	bool quick;
	unsigned nb_queues;
	unsigned depth;
	unsigned queue_size;
	uint64_t nb_ops;
	uint64_t seed;
	uint32_t max_req_bytes;
};

/* ------------------------------------------------------------------------
 * Guest memory
 */
struct guest {
	int memfd;
	uint8_t *halves[2];
	uint64_t half_bytes;
	uint64_t next_gpa;
	struct vmm_mem mem;
};

static int guest_new(struct guest *g, uint64_t bytes)
{
	long page = sysconf(_SC_PAGESIZE);

	memset(g, 0, sizeof(*g));
	g->half_bytes = align_up(div_round_up(bytes, 2), (uint64_t)page);
	g->memfd = memfd_create("imgvmm-guest", MFD_CLOEXEC);
	if (g->memfd < 0 || ftruncate(g->memfd, (off_t)(2 * g->half_bytes)) < 0)
		return -errno;
	for (int i = 0; i < 2; i++) {
		g->halves[i] = mmap(NULL, g->half_bytes, PROT_READ | PROT_WRITE,
				    MAP_SHARED, g->memfd,
				    (off_t)(i * g->half_bytes));
		if (g->halves[i] == MAP_FAILED)
			return -errno;
		if (vmm_mem_add(&g->mem, GUEST_BASE_GPA + i * g->half_bytes,
				g->half_bytes, g->halves[i], 0) < 0)
			return -EINVAL;
	}
	g->next_gpa = GUEST_BASE_GPA;
	return 0;
}

static void guest_free(struct guest *g)
{
	for (int i = 0; i < 2; i++)
		if (g->halves[i] && g->halves[i] != MAP_FAILED)
			munmap(g->halves[i], g->half_bytes);
	if (g->memfd >= 0)
		close(g->memfd);
}

static uint64_t guest_alloc(struct guest *g, uint64_t bytes, uint64_t align)
{
	uint64_t gpa = align_up(g->next_gpa, align);

	g->next_gpa = gpa + bytes;
	return gpa;
}

/* Copies between guest memory and a host buffer, across regions. */
static void guest_copy(const struct guest *g, uint64_t gpa, void *buf,
		       uint64_t len, bool to_guest)
{
	uint8_t *p = buf;

	while (len > 0) {
		uint64_t n;
		uint8_t *h = vmm_mem_gpa_prefix(&g->mem, gpa, len, &n);

		if (to_guest)
			memcpy(h, p, n);
		else
			memcpy(p, h, n);
		gpa += n;
		p += n;
		len -= n;
	}
}

/* ------------------------------------------------------------------------
 * The workload
 */
enum op { OP_READ, OP_WRITE, OP_DISCARD, OP_ZEROES, OP_FLUSH, OP_GET_ID,
	  NB_OPS };
static const char *const op_names[NB_OPS] = { "reads", "writes", "discards",
					      "write-zeroes", "flushes",
					      "get-id" };

struct slot {
	enum op op;
	bool verify_pass;
	uint64_t off_bytes, len_bytes;
	uint64_t hdr_gpa, data_gpa, status_gpa;
	uint8_t *expect;   /* reads: the model at submission */
	uint8_t *disc;     /* reads: per sector, discarded at submission */
	uint8_t *scratch;  /* reads: what came back */
};

struct run;

struct qctx {
	struct run *run;
	unsigned idx;
	struct vdrv_queue drv;
	struct vq vq;
	int kick_fd, call_fd;
	pthread_t dev_thread, drv_thread;
	struct slot *slots;
	uint64_t stripe_off, stripe_bytes;
	uint64_t rng;
	uint64_t counts[NB_OPS];
	uint64_t verified_bytes;
	bool stop;
	char err[256];
};

struct run {
	struct options *o;
	struct img *img;
	struct vblk *vblk;
	struct guest g;
	uint64_t disk_bytes;
	uint8_t *model;
	uint8_t *discarded; /* per sector */
	uint8_t serial[VIRTIO_BLK_ID_BYTES];
	struct qctx *q;
};

static uint64_t rnd(uint64_t *s)
{
	/* xorshift64*: fast and good enough for picking offsets. */
	*s ^= *s >> 12;
	*s ^= *s << 25;
	*s ^= *s >> 27;
	return *s * 2685821657736338717ull;
}

static void fail(struct qctx *q, const char *fmt, ...)
	__attribute__((format(printf, 2, 3)));

static void fail(struct qctx *q, const char *fmt, ...)
{
	va_list ap;

	if (q->err[0])
		return;
	va_start(ap, fmt);
	vsnprintf(q->err, sizeof(q->err), fmt, ap);
	va_end(ap);
}

/* What a discarded range may read as besides zeroes: the backing file. */
static void backing_bytes(struct run *r, uint8_t *buf, uint64_t off,
			  uint64_t len)
{
	struct img *b = img_backing(r->img);
	uint64_t n = 0;

	if (b && off < img_size(b)) {
		n = MIN(len, img_size(b) - off);
		if (img_pread(b, buf, n, off) < 0)
			n = 0;
	}
	memset(buf + n, 0, len - n);
}

static void *device_thread(void *opaque)
{
	struct qctx *q = opaque;
	uint64_t v;
	bool notify;

	for (;;) {
		if (read(q->kick_fd, &v, sizeof(v)) < 0 && errno != EINTR)
			break;
		if (__atomic_load_n(&q->stop, __ATOMIC_ACQUIRE))
			break;
		if (vblk_process(q->run->vblk, &q->vq, &notify) < 0) {
			/* Wake the driver so it sees the broken queue. */
			(void)!write(q->call_fd, &(uint64_t){ 1 }, 8);
			break;
		}
		if (notify)
			(void)!write(q->call_fd, &(uint64_t){ 1 }, 8);
	}
	return NULL;
}

static bool pick_op(struct qctx *q, enum op *op_r)
{
	unsigned x = rnd(&q->rng) % 100;

	if (q->run->o->read_mix || q->run->o->read_only)
		*op_r = x < 97 ? OP_READ : OP_GET_ID;
	else if (x < 40)
		*op_r = OP_READ;
	else if (x < 80)
		*op_r = OP_WRITE;
	else if (x < 86)
		*op_r = OP_DISCARD;
	else if (x < 92)
		*op_r = OP_ZEROES;
	else if (x < 96)
		*op_r = OP_FLUSH;
	else
		*op_r = OP_GET_ID;
	return true;
}

/* Fills slot s for its op and puts it on the ring. */
static int submit(struct qctx *q, struct slot *s)
{
	struct run *r = q->run;
	struct guest *g = &r->g;
	struct vdrv_buf bufs[MAX_DATA_PIECES + 3];
	uint8_t hdr[16];
	unsigned nb = 0;
	uint32_t type = 0;

	if (s->op == OP_READ || s->op == OP_WRITE || s->op == OP_DISCARD ||
	    s->op == OP_ZEROES) {
		if (!s->verify_pass) {
			uint64_t max = MIN((uint64_t)r->o->max_req_bytes,
					   q->stripe_bytes);
			uint64_t sectors = max / SECTOR;

			/* Half the requests are 4 KiB or less. */
			if (rnd(&q->rng) % 2)
				sectors = MIN(sectors, 8);
			s->len_bytes = (1 + rnd(&q->rng) % sectors) * SECTOR;
			s->off_bytes = q->stripe_off +
				       rnd(&q->rng) %
					       ((q->stripe_bytes - s->len_bytes) /
							SECTOR +
						1) *
					       SECTOR;
		}
	}
	put_le32(hdr + 4, 0);
	put_le64(hdr + 8, s->off_bytes / SECTOR);
	bufs[nb++] = (struct vdrv_buf){ s->hdr_gpa, 16, false };

	switch (s->op) {
	case OP_READ:
	case OP_WRITE: {
		uint64_t first = s->off_bytes / SECTOR;
		uint64_t nb_sectors = s->len_bytes / SECTOR;
		unsigned pieces = 1 + rnd(&q->rng) % MAX_DATA_PIECES;
		uint64_t pos = 0;

		type = s->op == OP_READ ? VIRTIO_BLK_T_IN : VIRTIO_BLK_T_OUT;
		if (s->op == OP_READ) {
			memcpy(s->expect, r->model + s->off_bytes, s->len_bytes);
			memcpy(s->disc, r->discarded + first, nb_sectors);
		} else {
			for (uint64_t i = 0; i < s->len_bytes; i += 8) {
				uint64_t v = rnd(&q->rng);

				memcpy(r->model + s->off_bytes + i, &v, 8);
			}
			memset(r->discarded + first, 0, nb_sectors);
			guest_copy(g, s->data_gpa, r->model + s->off_bytes,
				   s->len_bytes, true);
		}
		/* Cut the buffer at arbitrary bytes: the device must not
		 * care where the descriptors split the sectors. */
		for (unsigned i = 0; i < pieces && pos < s->len_bytes; i++) {
			uint64_t left = s->len_bytes - pos;
			uint64_t n = i + 1 == pieces ? left :
						       1 + rnd(&q->rng) % left;

			bufs[nb++] = (struct vdrv_buf){ s->data_gpa + pos,
							(uint32_t)n,
							s->op == OP_READ };
			pos += n;
		}
		break;
	}
	case OP_DISCARD:
	case OP_ZEROES: {
		uint8_t seg[16];
		uint64_t first = s->off_bytes / SECTOR;
		uint64_t nb_sectors = s->len_bytes / SECTOR;

		type = s->op == OP_DISCARD ? VIRTIO_BLK_T_DISCARD :
					     VIRTIO_BLK_T_WRITE_ZEROES;
		put_le64(seg, first);
		put_le32(seg + 8, (uint32_t)nb_sectors);
		put_le32(seg + 12, s->op == OP_ZEROES && rnd(&q->rng) % 2 ?
					   VIRTIO_BLK_WRITE_ZEROES_FLAG_UNMAP :
					   0);
		guest_copy(g, s->data_gpa, seg, 16, true);
		bufs[nb++] = (struct vdrv_buf){ s->data_gpa, 16, false };
		if (s->op == OP_ZEROES) {
			memset(r->model + s->off_bytes, 0, s->len_bytes);
			memset(r->discarded + first, 0, nb_sectors);
		} else {
			backing_bytes(r, r->model + s->off_bytes, s->off_bytes,
				      s->len_bytes);
			memset(r->discarded + first, 1, nb_sectors);
		}
		break;
	}
	case OP_FLUSH:
		type = VIRTIO_BLK_T_FLUSH;
		break;
	case OP_GET_ID:
		type = VIRTIO_BLK_T_GET_ID;
		bufs[nb++] = (struct vdrv_buf){ s->data_gpa,
						VIRTIO_BLK_ID_BYTES, true };
		break;
	case NB_OPS:
		break;
	}
	put_le32(hdr, type);
	guest_copy(g, s->hdr_gpa, hdr, 16, true);
	guest_copy(g, s->status_gpa, &(uint8_t){ 0xff }, 1, true);
	bufs[nb++] = (struct vdrv_buf){ s->status_gpa, 1, true };
	return vdrv_add(&q->drv, bufs, nb, rnd(&q->rng) % 2, s);
}

static bool sector_ok(const uint8_t *got, const uint8_t *want, bool disc)
{
	static const uint8_t zero[SECTOR];

	if (memcmp(got, want, SECTOR) == 0)
		return true;
	return disc && memcmp(got, zero, SECTOR) == 0;
}

static void complete(struct qctx *q, struct slot *s, uint32_t used_len)
{
	struct run *r = q->run;
	uint8_t status;
	uint32_t want_len = 1;

	guest_copy(&r->g, s->status_gpa, &status, 1, false);
	if (status != VIRTIO_BLK_S_OK) {
		fail(q, "%s at offset %" PRIu64 " (%" PRIu64 " bytes): status %u",
		     op_names[s->op], s->off_bytes, s->len_bytes, status);
		return;
	}
	if (s->op == OP_READ)
		want_len += (uint32_t)s->len_bytes;
	if (s->op == OP_GET_ID)
		want_len += VIRTIO_BLK_ID_BYTES;
	if (used_len != want_len) {
		fail(q, "%s: used length %u, want %u", op_names[s->op],
		     used_len, want_len);
		return;
	}
	q->counts[s->op]++;
	if (s->op == OP_GET_ID) {
		uint8_t id[VIRTIO_BLK_ID_BYTES];

		guest_copy(&r->g, s->data_gpa, id, sizeof(id), false);
		if (memcmp(id, r->serial, sizeof(id)) != 0)
			fail(q, "GET_ID returned another serial");
		return;
	}
	if (s->op != OP_READ)
		return;
	guest_copy(&r->g, s->data_gpa, s->scratch, s->len_bytes, false);
	for (uint64_t i = 0; i < s->len_bytes / SECTOR; i++) {
		const uint8_t *got = s->scratch + i * SECTOR;

		if (!sector_ok(got, s->expect + i * SECTOR, s->disc[i])) {
			uint64_t b = 0;

			while (got[b] == s->expect[i * SECTOR + b])
				b++;
			fail(q, "read at offset %" PRIu64 ": byte %" PRIu64
				" is 0x%02x, want 0x%02x%s",
			     s->off_bytes, s->off_bytes + i * SECTOR + b, got[b],
			     s->expect[i * SECTOR + b],
			     s->disc[i] ? " (or zero: discarded)" : "");
			return;
		}
		/* The final pass settles what a discard left (nothing else
		 * runs on this stripe by then). */
		if (s->verify_pass) {
			uint64_t sec = s->off_bytes / SECTOR + i;

			memcpy(r->model + sec * SECTOR, got, SECTOR);
			r->discarded[sec] = 0;
		}
	}
	q->verified_bytes += s->len_bytes;
}

static void wait_call(struct qctx *q)
{
	uint64_t v;

	/* Ask for an interrupt, and sleep only if nothing came meanwhile. */
	if (vdrv_enable_cb(&q->drv))
		return;
	(void)!read(q->call_fd, &v, sizeof(v));
}

static void *driver_thread(void *opaque)
{
	struct qctx *q = opaque;
	struct run *r = q->run;
	unsigned depth = r->o->depth;
	uint64_t submitted = 0, verify_off = q->stripe_off;
	uint64_t verify_end = q->stripe_off + q->stripe_bytes;
	unsigned free_slots = depth;
	struct slot **free_list = calloc(depth, sizeof(*free_list));
	bool verifying = false;

	for (unsigned i = 0; i < depth; i++)
		free_list[i] = &q->slots[i];
	while (!q->err[0]) {
		uint16_t old = q->drv.avail_idx;
		bool more;

		/* The final pass starts when the random phase has drained:
		 * the model then holds every write. */
		if (!verifying && submitted == r->o->nb_ops &&
		    free_slots == depth)
			verifying = true;
		while (free_slots > 0 && !q->err[0]) {
			struct slot *s;

			if (!verifying && submitted == r->o->nb_ops)
				break;
			if (verifying && verify_off >= verify_end)
				break;
			s = free_list[--free_slots];
			s->verify_pass = verifying;
			if (verifying) {
				s->op = OP_READ;
				s->off_bytes = verify_off;
				s->len_bytes = MIN((uint64_t)r->o->max_req_bytes,
						   verify_end - verify_off);
				verify_off += s->len_bytes;
			} else {
				pick_op(q, &s->op);
				submitted++;
			}
			if (submit(q, s) < 0) {
				fail(q, "cannot add to the ring");
				break;
			}
		}
		if (vdrv_kick_needed(&q->drv, old))
			(void)!write(q->kick_fd, &(uint64_t){ 1 }, 8);
		if (verifying && verify_off >= verify_end && free_slots == depth)
			break;
		more = false;
		for (;;) {
			void *cookie;
			uint32_t len;
			int ret = vdrv_get_used(&q->drv, &cookie, &len);

			if (ret < 0) {
				fail(q, "device returned a head not in flight");
				break;
			}
			if (ret == 0)
				break;
			complete(q, cookie, len);
			free_list[free_slots++] = cookie;
			more = true;
		}
		if (q->vq.broken) {
			fail(q, "queue broken: %s", q->vq.broken_why);
			break;
		}
		if (!more && free_slots < depth)
			wait_call(q);
	}
	free(free_list);
	return NULL;
}

static int load_model(struct run *r)
{
	const char *path = r->o->expect;
	CLEANUP_CLOSE int fd = -1;

	if (!path)
		return img_pread(r->img, r->model, r->disk_bytes, 0);
	fd = open(path, O_RDONLY | O_CLOEXEC);
	if (fd < 0)
		return -errno;
	/* A shorter file means zeroes after its end, like a sparse tail. */
	for (uint64_t got = 0; got < r->disk_bytes;) {
		ssize_t n = pread(fd, r->model + got, r->disk_bytes - got,
				  (off_t)got);
		if (n < 0)
			return -errno;
		if (n == 0)
			break;
		got += (uint64_t)n;
	}
	return 0;
}

static int dump_model(struct run *r)
{
	CLEANUP_CLOSE int fd = -1;

	fd = open(r->o->dump, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
	if (fd < 0)
		return -errno;
	for (uint64_t put = 0; put < r->disk_bytes;) {
		ssize_t n = pwrite(fd, r->model + put, r->disk_bytes - put,
				   (off_t)put);
		if (n < 0)
			return -errno;
		put += (uint64_t)n;
	}
	return fsync(fd) < 0 ? -errno : 0;
}

/* Lays out queue i: its rings, its request slots, its eventfds. 0, or 1
 * after a message. */
static int setup_queue(struct run *r, unsigned i, uint64_t ring_bytes)
{
	const struct options *o = r->o;
	struct qctx *q = &r->q[i];
	uint64_t stripe = r->disk_bytes / SECTOR / o->nb_queues * SECTOR;
	uint64_t ring_gpa = guest_alloc(&r->g, ring_bytes, 4096);
	uint8_t *ring = vmm_mem_gpa(&r->g.mem, ring_gpa, ring_bytes);

	q->run = r;
	q->idx = i;
	q->rng = o->seed * 0x9e3779b97f4a7c15ull + i + 1;
	q->stripe_off = stripe * i;
	q->stripe_bytes = i + 1 == o->nb_queues ? r->disk_bytes - q->stripe_off
						 : stripe;
	q->kick_fd = q->call_fd = -1;
	/* The ring area must not straddle the two halves: the device maps
	 * each ring part in one piece. */
	if (!ring) {
		ring_gpa = guest_alloc(&r->g, ring_bytes, 4096);
		ring = vmm_mem_gpa(&r->g.mem, ring_gpa, ring_bytes);
	}
	if (!ring ||
	    vdrv_init(&q->drv, &r->g.mem, o->queue_size, ring_gpa,
		      MAX_INDIRECT, true) < 0 ||
	    vq_init(&q->vq, &r->g.mem, o->queue_size, q->drv.desc,
		    q->drv.avail, q->drv.used, 0,
		    vblk_driver_features(r->vblk)) < 0) {
		fprintf(stderr, "imgvmm: cannot lay out queue %u\n", i);
		return 1;
	}
	q->slots = calloc(o->depth, sizeof(*q->slots));
	if (!q->slots)
		goto nomem;
	for (unsigned k = 0; k < o->depth; k++) {
		struct slot *s = &q->slots[k];

		/* Slots are packed so that some straddle the two regions of
		 * guest memory. */
		s->hdr_gpa = guest_alloc(&r->g, 16, 16);
		s->status_gpa = guest_alloc(&r->g, 1, 1);
		s->data_gpa = guest_alloc(&r->g, o->max_req_bytes, 512);
		s->expect = malloc(o->max_req_bytes);
		s->scratch = malloc(o->max_req_bytes);
		s->disc = malloc(o->max_req_bytes / SECTOR);
		if (!s->expect || !s->scratch || !s->disc)
			goto nomem;
	}
	q->kick_fd = eventfd(0, EFD_CLOEXEC);
	q->call_fd = eventfd(0, EFD_CLOEXEC);
	if (r->g.next_gpa > GUEST_BASE_GPA + 2 * r->g.half_bytes ||
	    q->kick_fd < 0 || q->call_fd < 0) {
		fprintf(stderr, "imgvmm: guest memory layout\n");
		return 1;
	}
	return 0;
nomem:
	fprintf(stderr, "imgvmm: queue %u: no memory for its slots\n", i);
	return 1;
}

/* Stops queue i's device thread once its driver is done, adds up what it
 * did and frees it. 0, or 1 when the queue saw an error. */
static int finish_queue(struct run *r, unsigned i, uint64_t *counts,
			uint64_t *verified)
{
	struct qctx *q = &r->q[i];
	int status = 0;

	pthread_join(q->drv_thread, NULL);
	__atomic_store_n(&q->stop, true, __ATOMIC_RELEASE);
	(void)!write(q->kick_fd, &(uint64_t){ 1 }, 8);
	pthread_join(q->dev_thread, NULL);
	if (q->err[0]) {
		fprintf(stderr, "imgvmm: queue %u: %s\n", i, q->err);
		status = 1;
	}
	for (int k = 0; k < NB_OPS; k++)
		counts[k] += q->counts[k];
	*verified += q->verified_bytes;
	return status;
}

static void free_queues(struct run *r)
{
	for (unsigned i = 0; r->q && i < r->o->nb_queues; i++) {
		struct qctx *q = &r->q[i];

		for (unsigned k = 0; q->slots && k < r->o->depth; k++) {
			free(q->slots[k].expect);
			free(q->slots[k].scratch);
			free(q->slots[k].disc);
		}
		free(q->slots);
		if (q->kick_fd >= 0)
			close(q->kick_fd);
		if (q->call_fd >= 0)
			close(q->call_fd);
	}
	free(r->q);
}

static int run_workload(struct options *o, struct img *img, struct vblk *vblk,
			const uint8_t *serial)
{
	struct run r = { .o = o, .img = img, .vblk = vblk };
	uint64_t ring_bytes, slot_bytes, total, verified = 0;
	uint64_t counts[NB_OPS] = { 0 };
	int ret, status = 0;

	memcpy(r.serial, serial, sizeof(r.serial));
	r.disk_bytes = img_size(img) / SECTOR * SECTOR;
	if (r.disk_bytes < (uint64_t)o->nb_queues * SECTOR) {
		fprintf(stderr, "imgvmm: %s: too small for %u queues\n",
			o->image, o->nb_queues);
		return 1;
	}
	r.model = malloc(r.disk_bytes);
	r.discarded = calloc(r.disk_bytes / SECTOR, 1);
	r.q = calloc(o->nb_queues, sizeof(*r.q));
	if (!r.model || !r.discarded || !r.q) {
		fprintf(stderr, "imgvmm: %s: no memory for a model of the disk\n",
			o->image);
		return 1;
	}
	ret = load_model(&r);
	if (ret < 0) {
		fprintf(stderr, "imgvmm: reading the expected bytes: %s\n",
			strerror(-ret));
		return 1;
	}

	ring_bytes = vdrv_ring_area_bytes(o->queue_size, MAX_INDIRECT);
	slot_bytes = align_up(o->max_req_bytes + 4096, 4096);
	total = (uint64_t)o->nb_queues *
		(ring_bytes + (uint64_t)o->depth * slot_bytes + 4096);
	ret = guest_new(&r.g, total);
	if (ret < 0) {
		fprintf(stderr, "imgvmm: guest memory: %s\n", strerror(-ret));
		return 1;
	}

	for (unsigned i = 0; i < o->nb_queues; i++)
		if (setup_queue(&r, i, ring_bytes))
			return 1;
	for (unsigned i = 0; i < o->nb_queues; i++) {
		pthread_create(&r.q[i].dev_thread, NULL, device_thread, &r.q[i]);
		pthread_create(&r.q[i].drv_thread, NULL, driver_thread, &r.q[i]);
	}
	for (unsigned i = 0; i < o->nb_queues; i++)
		status |= finish_queue(&r, i, counts, &verified);
	free_queues(&r);
	if (status == 0 && !o->read_only && img_flush(img) < 0)
		status = 1;
	if (status == 0 && o->dump && (ret = dump_model(&r)) < 0) {
		fprintf(stderr, "imgvmm: %s: %s\n", o->dump, strerror(-ret));
		status = 1;
	}
	printf("imgvmm: %s: %u queues, depth %u:", o->image, o->nb_queues,
	       o->depth);
	for (int k = 0; k < NB_OPS; k++)
		printf(" %" PRIu64 " %s%s", counts[k], op_names[k],
		       k + 1 < NB_OPS ? "," : ";");
	printf(" %" PRIu64 " MiB read and verified%s\n", verified >> 20,
	       status ? "; FAILED" : "");
	guest_free(&r.g);
	free(r.model);
	free(r.discarded);
	return status;
}

/* ------------------------------------------------------------------------
 * Benchmark: the same reads through the device model (one queue, the
 * driver and the device in one thread, so what is measured is the device
 * model and not thread hand-offs) and as direct img_pread calls into the
 * same guest buffers, at the same offsets in the same order.
 *
 * The driver side is what a guest driver does per request and no more:
 * it writes the header, adds the chain, and takes the completion back,
 * checking its id, length and status. Like Linux's virtio_blk, which
 * keeps headers in per-tag request data, it knows the host address of
 * its own headers and status bytes (no lookup per request), and the
 * headers lie together rather than one per data buffer. The device gets
 * no such help: it translates and checks every address it is given.
 */
static double now_sec(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (double)ts.tv_sec + ts.tv_nsec / 1e9;
}

struct bench {
	struct img *img;
	struct vblk *vblk;
	struct guest g;
	struct vdrv_queue drv;
	struct vq vq;
	unsigned depth;
	uint64_t hdr_gpa[64], data_gpa[64], status_gpa;
	uint8_t *hdr_host[64], *data_host[64], *status_host;
};

static int bench_device(struct bench *b, const uint64_t *offs, size_t nb,
			uint32_t len)
{
	for (size_t i = 0; i < nb;) {
		size_t batch = MIN((size_t)b->depth, nb - i);
		bool notify;

		for (size_t k = 0; k < batch; k++) {
			struct vdrv_buf bufs[3] = {
				{ b->hdr_gpa[k], 16, false },
				{ b->data_gpa[k], len, true },
				{ b->status_gpa + k, 1, true },
			};
			uint8_t *h = b->hdr_host[k];

			put_le32(h, VIRTIO_BLK_T_IN);
			put_le64(h + 8, offs[i + k] / SECTOR);
			/* A stale OK from the last round must not pass. */
			b->status_host[k] = 0xff;
			if (vdrv_add(&b->drv, bufs, 3, false, NULL) < 0)
				return -ENOSPC;
		}
		if (vblk_process(b->vblk, &b->vq, &notify) != (int)batch)
			return -EIO;
		for (size_t k = 0; k < batch; k++) {
			void *c;
			uint32_t l;

			if (vdrv_get_used(&b->drv, &c, &l) != 1 || l != len + 1 ||
			    b->status_host[k] != VIRTIO_BLK_S_OK)
				return -EIO;
		}
		i += batch;
	}
	return 0;
}

static int bench_direct(struct bench *b, const uint64_t *offs, size_t nb,
			uint32_t len)
{
	for (size_t i = 0; i < nb; i++) {
		int ret = img_pread(b->img, b->data_host[i % b->depth], len,
				    offs[i]);

		if (ret < 0)
			return ret;
	}
	return 0;
}

static int cmp_double(const void *a, const void *b)
{
	double x = *(const double *)a, y = *(const double *)b;

	return x < y ? -1 : x > y;
}

static int bench_one(struct bench *b, const char *name, const uint64_t *offs,
		     size_t nb, uint32_t len, unsigned reps)
{
	double dev[16], dir[16], med_dev, med_dir, overhead;
	size_t block = MAX((size_t)b->depth,
			   (size_t)(8u << 20) / len / b->depth * b->depth);

	/* One untimed round of each first: guest memory pages are faulted
	 * in and the image is in the page cache for both. */
	if (bench_device(b, offs, MIN(nb, (size_t)4096), len) < 0 ||
	    bench_direct(b, offs, MIN(nb, (size_t)4096), len) < 0)
		return -EIO;
	/* Each repetition runs the offsets in blocks of about 8 MiB (a few
	 * milliseconds), each block through both sides, the order
	 * alternating, and adds up each side's time: a noisy neighbour
	 * that takes the CPU for a while then costs both sides alike,
	 * where one whole run per side would charge it to one of them. A
	 * block is whole batches (a multiple of the queue depth), so the
	 * device sees the same batches as in one long run. */
	for (unsigned r = 0; r < reps; r++) {
		dev[r] = dir[r] = 0;
		for (size_t i = 0; i < nb; i += block) {
			size_t n = MIN(block, nb - i);

			for (int which = 0; which < 2; which++) {
				bool device = (which + r + i / block) % 2;
				double t0 = now_sec();
				int ret;

				if (device)
					ret = bench_device(b, offs + i, n, len);
				else
					ret = bench_direct(b, offs + i, n, len);

				if (ret < 0)
					return ret;
				(device ? dev : dir)[r] += now_sec() - t0;
			}
		}
	}
	qsort(dev, reps, sizeof(double), cmp_double);
	qsort(dir, reps, sizeof(double), cmp_double);
	med_dev = dev[reps / 2];
	med_dir = dir[reps / 2];
	overhead = (med_dev / med_dir - 1) * 100;
	if (len < 65536)
		printf("%-22s direct %8.0f IOPS   device model %8.0f IOPS   ",
		       name, nb / med_dir, nb / med_dev);
	else
		printf("%-22s direct %8.0f MiB/s  device model %8.0f MiB/s  ",
		       name, nb * (double)len / med_dir / 1048576,
		       nb * (double)len / med_dev / 1048576);
	printf("device/direct time %.3f (%+.1f%%; target < +10%%: %s)\n",
	       med_dev / med_dir, overhead, overhead < 10 ? "met" : "MISSED");
	return 0;
}

static int run_bench(struct options *o, struct img *img, struct vblk *vblk)
{
	struct bench b = { .img = img, .vblk = vblk, .depth = 32 };
	uint64_t disk = img_size(img) / SECTOR * SECTOR, seed = 42;
	size_t nb4k = o->quick ? 20000 : 200000;
	size_t nb1m = o->quick ? 64 : 1024;
	unsigned reps = o->quick ? 3 : 7;
	uint32_t big = 1u << 20;
	uint64_t *offs;
	int ret;

	if (disk < 2 * (uint64_t)big) {
		fprintf(stderr, "imgvmm: --bench needs an image of 2 MiB or more\n");
		return 1;
	}
	/* One more buffer than needed: one may be skipped (see below). */
	ret = guest_new(&b.g, vdrv_ring_area_bytes(128, 1) +
				     (b.depth + 1) * (uint64_t)(big + 8192) +
				     65536);
	if (ret < 0)
		return 1;
	uint64_t ring = guest_alloc(&b.g, vdrv_ring_area_bytes(128, 1), 4096);
	if (vdrv_init(&b.drv, &b.g.mem, 128, ring, 1, true) < 0 ||
	    vq_init(&b.vq, &b.g.mem, 128, b.drv.desc, b.drv.avail, b.drv.used,
		    0, vblk_driver_features(vblk)) < 0)
		return 1;
	b.status_gpa = guest_alloc(&b.g, 64, 64);
	b.status_host = vmm_mem_gpa(&b.g.mem, b.status_gpa, 64);
	for (unsigned k = 0; k < b.depth; k++) {
		b.hdr_gpa[k] = guest_alloc(&b.g, 16, 16);
		b.hdr_host[k] = vmm_mem_gpa(&b.g.mem, b.hdr_gpa[k], 16);
	}
	for (unsigned k = 0; k < b.depth; k++) {
		b.data_gpa[k] = guest_alloc(&b.g, big, 4096);
		b.data_host[k] = vmm_mem_gpa(&b.g.mem, b.data_gpa[k], big);
		/* A buffer must be one piece of host memory, so that both
		 * sides read into exactly the same bytes: skip to the
		 * second region when it would straddle the two. */
		if (!b.data_host[k]) {
			b.data_gpa[k] = guest_alloc(&b.g, big, 4096);
			b.data_host[k] = vmm_mem_gpa(&b.g.mem, b.data_gpa[k],
						     big);
		}
	}
	if (!b.status_host || !b.hdr_host[b.depth - 1] ||
	    !b.data_host[b.depth - 1]) {
		fprintf(stderr, "imgvmm: bench: guest memory layout\n");
		return 1;
	}
	offs = malloc(MAX(nb4k, nb1m) * sizeof(*offs));
	/* Warm the page cache so neither side pays for the first touch. */
	for (uint64_t off = 0; off + big <= disk; off += big)
		img_pread(img, b.data_host[0], big, off);

	printf("imgvmm bench: %s, %" PRIu64 " MiB, %u repetitions (medians), "
	       "queue depth %u\n", o->image, disk >> 20, reps, b.depth);
	for (size_t i = 0; i < nb4k; i++)
		offs[i] = rnd(&seed) % (disk / 4096) * 4096;
	ret = bench_one(&b, "4 KiB random reads", offs, nb4k, 4096, reps);
	for (size_t i = 0; i < nb1m && ret == 0; i++)
		offs[i] = i % (disk / big) * big;
	if (ret == 0)
		ret = bench_one(&b, "1 MiB sequential reads", offs, nb1m, big,
				reps);
	free(offs);
	guest_free(&b.g);
	if (ret < 0)
		fprintf(stderr, "imgvmm: bench: %s\n", strerror(-ret));
	return ret < 0;
}

/* ------------------------------------------------------------------------
 * Main
 */
static void usage(FILE *f)
{
	fprintf(f,
		"usage: imgvmm [OPTIONS] IMAGE                 verified workload\n"
		"       imgvmm --bench [--quick] IMAGE         device model vs imgfmt\n"
		"       imgvmm --vhost-user SOCKET [OPTIONS] IMAGE\n"
		"options:\n"
		"  -f, --format raw|qcow2     image format (default: probe)\n"
		"  -o backing=local|follow|deny\n"
		"  -r, --read-only            open the image read-only\n"
		"  -q, --queues N             queues (default 2; vhost-user 1)\n"
		"  -d, --depth N              requests in flight per queue (16)\n"
		"  -n, --ops N                random requests per queue (2000)\n"
		"  -s, --seed N               workload seed (1)\n"
		"  -m, --max-kib N            largest request in KiB (256)\n"
		"      --read                 reads only (for --expect)\n"
		"      --expect FILE          the disk must hold FILE's bytes\n"
		"      --dump FILE            write the final disk contents\n"
		"      --serial STRING        GET_ID answer (default: file name)\n"
		"      --queue-size N         virtqueue size (128)\n"
		"      --ready-fd FD          vhost-user: write \"ready\" there\n");
}

/* Fills o from the command line. -1: go on; else the exit status. */
static int parse_args(int argc, char **argv, struct options *o,
		      int *ready_fd_r)
{
	static const struct option longopts[] = {
		{ "format", required_argument, NULL, 'f' },
		{ "read-only", no_argument, NULL, 'r' },
		{ "queues", required_argument, NULL, 'q' },
		{ "depth", required_argument, NULL, 'd' },
		{ "ops", required_argument, NULL, 'n' },
		{ "seed", required_argument, NULL, 's' },
		{ "max-kib", required_argument, NULL, 'm' },
		{ "read", no_argument, NULL, 'R' },
		{ "expect", required_argument, NULL, 'E' },
		{ "dump", required_argument, NULL, 'D' },
		{ "serial", required_argument, NULL, 'S' },
		{ "queue-size", required_argument, NULL, 'Q' },
		{ "vhost-user", required_argument, NULL, 'V' },
		{ "ready-fd", required_argument, NULL, 'F' },
		{ "bench", no_argument, NULL, 'B' },
		{ "quick", no_argument, NULL, 'K' },
		{ "help", no_argument, NULL, 'h' },
		{ NULL, 0, NULL, 0 },
	};
	int c;

	while ((c = getopt_long(argc, argv, "f:o:rq:d:n:s:m:h", longopts,
				NULL)) != -1) {
		switch (c) {
		case 'f':
			if (img_format_from_name(optarg, &o->format) < 0) {
				fprintf(stderr, "imgvmm: unknown format %s\n",
					optarg);
				return 2;
			}
			break;
		case 'o':
			if (!strcmp(optarg, "backing=local"))
				o->backing = IMG_BACKING_LOCAL;
			else if (!strcmp(optarg, "backing=follow"))
				o->backing = IMG_BACKING_FOLLOW;
			else if (!strcmp(optarg, "backing=deny"))
				o->backing = IMG_BACKING_DENY;
			else {
				fprintf(stderr, "imgvmm: unknown option -o %s\n",
					optarg);
				return 2;
			}
			break;
		case 'r': o->read_only = true; break;
		case 'q': o->nb_queues = (unsigned)strtoul(optarg, NULL, 0); break;
		case 'd': o->depth = (unsigned)strtoul(optarg, NULL, 0); break;
		case 'n': o->nb_ops = strtoull(optarg, NULL, 0); break;
		case 's': o->seed = strtoull(optarg, NULL, 0); break;
		case 'm':
			o->max_req_bytes = (uint32_t)strtoul(optarg, NULL, 0) * 1024;
			break;
		case 'R': o->read_mix = true; break;
		case 'E': o->expect = optarg; break;
		case 'D': o->dump = optarg; break;
		case 'S': o->serial = optarg; break;
		case 'Q': o->queue_size = (unsigned)strtoul(optarg, NULL, 0); break;
		case 'V': o->vhost_socket = optarg; break;
		case 'F': *ready_fd_r = (int)strtol(optarg, NULL, 0); break;
		case 'B': o->bench = true; break;
		case 'K': o->quick = true; break;
		case 'h': usage(stdout); return 0;
		default: usage(stderr); return 2;
		}
	}
	if (optind + 1 != argc) {
		usage(stderr);
		return 2;
	}
	o->image = argv[optind];
	if (getenv("IMGVMM_DEBUG"))
		log_set_level(LOG_DEBUG);
	if (o->nb_queues == 0)
		o->nb_queues = o->vhost_socket ? 1 : 2;
	if (o->nb_queues > 64 || o->depth == 0 || o->depth > 64 ||
	    o->queue_size < 8 || o->queue_size > VQ_MAX_SIZE ||
	    o->depth * (MAX_DATA_PIECES + 2) > o->queue_size ||
	    o->max_req_bytes < SECTOR || o->max_req_bytes > (64u << 20)) {
		fprintf(stderr, "imgvmm: --queues 1..64, --depth 1..64 with "
				"depth * 6 <= --queue-size (8..1024), "
				"--max-kib 1..65536\n");
		return 2;
	}
	if (o->serial && strlen(o->serial) > VIRTIO_BLK_ID_BYTES) {
		fprintf(stderr, "imgvmm: --serial: at most 20 bytes\n");
		return 2;
	}
	if (!o->serial) {
		static char serial_buf[VIRTIO_BLK_ID_BYTES + 1];
		CLEANUP_FREE char *copy = strdup(o->image);

		snprintf(serial_buf, sizeof(serial_buf), "%s",
			 copy ? basename(copy) : "imgvmm");
		o->serial = serial_buf;
	}
	return -1;
}

/* Opens the image and the device on it. 0, or the exit status. */
static int open_device(const struct options *o, struct img **img_r,
		       struct vblk **vblk_r)
{
	struct img_open_opts io = { 0 };
	struct vblk_opts vo = { 0 };
	struct img_err err = { 0 };
	int ret;

	io.format = o->format;
	io.read_only = o->read_only;
	io.backing = o->backing;
	ret = img_open(o->image, &io, img_r, &err);
	if (ret < 0) {
		fprintf(stderr, "imgvmm: %s\n", err.msg);
		return 1;
	}
	if (!o->read_only && !img_writable(*img_r) && !o->vhost_socket &&
	    !o->bench && !o->read_mix) {
		fprintf(stderr, "imgvmm: %s: this image cannot be written "
				"(format driver); use --read or -r\n",
			o->image);
		img_close(*img_r);
		return 1;
	}
	vo.read_only = o->read_only;
	vo.serial = o->serial;
	vo.nb_queues = o->nb_queues;
	vo.queue_size = o->vhost_socket ? VQ_MAX_SIZE : o->queue_size;
	ret = vblk_new(*img_r, &vo, vblk_r);
	if (ret == 0)
		ret = vblk_set_features(*vblk_r, vblk_features(*vblk_r));
	if (ret < 0) {
		fprintf(stderr, "imgvmm: device: %s\n", strerror(-ret));
		img_close(*img_r);
		return 1;
	}
	return 0;
}

int main(int argc, char **argv)
{
	struct options o = { .nb_queues = 0, .depth = 16, .nb_ops = 2000,
			     .seed = 1, .max_req_bytes = 256 * 1024,
			     .queue_size = 128 };
	uint8_t serial[VIRTIO_BLK_ID_BYTES] = { 0 };
	struct img *img = NULL;
	struct vblk *vblk = NULL;
	int ret, ready_fd = -1;

	ret = parse_args(argc, argv, &o, &ready_fd);
	if (ret >= 0)
		return ret;
	memcpy(serial, o.serial, strlen(o.serial));
	ret = open_device(&o, &img, &vblk);
	if (ret)
		return ret;

	if (o.vhost_socket) {
		ret = vu_serve(vblk, o.vhost_socket, ready_fd);
		fprintf(stderr, "imgvmm: %s: %s\n", o.vhost_socket,
			strerror(-ret));
		ret = 1;
	} else if (o.bench) {
		ret = run_bench(&o, img, vblk);
	} else {
		ret = run_workload(&o, img, vblk, serial);
	}
	vblk_free(vblk);
	img_close(img);
	return ret;
}
