/* vhost-user.c: a vhost-user-blk back end (QEMU docs/interop/vhost-user.rst).
 *
 * The front end (QEMU, qemu-storage-daemon's peers, anything that speaks
 * the protocol) owns guest memory and the virtio transport; it hands us the
 * memory as file descriptors (SET_MEM_TABLE), the ring addresses in its own
 * virtual address space (SET_VRING_ADDR), an eventfd to wait on for kicks
 * and one to signal completions. We answer feature and config questions
 * from the device model and run each started ring in a thread of its own,
 * each request going straight to imgfmt.
 *
 * Ring life cycle (the "Starting and stopping rings" section): a ring
 * starts when it has a size, addresses and a kick descriptor and, once
 * VHOST_USER_F_PROTOCOL_FEATURES is negotiated, is enabled; it stops on
 * GET_VRING_BASE (whose reply is the next available index to process),
 * on disable, and around anything that changes what its thread uses
 * (memory table, kick or call descriptor). Stopping joins the thread, so
 * no thread ever sees memory being unmapped.
 *
 * The front end is as untrusted as the guest: message sizes are checked
 * against each request's payload, ring indices and counts against our
 * limits (ring sizes are powers of two), region sizes and offsets
 * against overflow and against the file that backs them, ring addresses
 * against the mapped memory; a file descriptor we did not ask for is
 * closed. A malformed message ends the connection, not the process.
 * What we cannot check: a front end that shrinks its memory file after
 * SET_MEM_TABLE makes our next access there raise SIGBUS (QEMU seals its
 * memfds against that; a SIGBUS handler would be the cure).
 * When the front end goes away every ring stops, memory is unmapped and
 * the next connection starts from scratch; the image stays open (and
 * locked) all along.
 *
 * The socket is only the transport: vu_serve() reads each message and
 * its descriptors and hands them to vu_dispatch() (vhost-user.h), which
 * checks and applies them and says what to send back and whether the
 * connection goes on. The outcome of a bad message is defined there.
 *
 * Not supported: dirty logging (migration), postcopy, inflight tracking,
 * IOTLB, packed rings, backend-initiated requests. We do not offer the
 * features that would make a front end use them.
 */
#include "vhost-user.h"

#include "checked.h"
#include "cleanup.h"
#include "log.h"

#include <errno.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/eventfd.h>
#include <sys/mman.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

#define VU_PROTOCOL_FEATURES                                                   \
	((1ull << VU_PROTOCOL_F_MQ) | (1ull << VU_PROTOCOL_F_REPLY_ACK) |      \
	 (1ull << VU_PROTOCOL_F_CONFIG))

/* Header fields, then the payload at offset 16 (not 12 as on the wire:
 * vu_dispatch and reply_msg move the two parts separately). */
struct vu_msg {
	uint32_t request;
	uint32_t flags;
	uint32_t size;
	union {
		uint64_t u64;
		struct {
			uint32_t index, num;
		} state;
		struct {
			uint32_t index, flags;
			uint64_t desc_uva, used_uva, avail_uva, log_uva;
		} addr;
		struct {
			uint32_t nb_regions, padding;
			struct {
				uint64_t gpa, size_bytes, uva, mmap_offset;
			} regions[VMM_MEM_MAX_REGIONS];
		} mem;
		struct {
			uint32_t offset, size, flags;
			uint8_t data[VU_MAX_PAYLOAD - 12];
		} config;
		uint8_t bytes[VU_MAX_PAYLOAD];
	} p;
	int fds[VU_MAX_FDS];
	unsigned nb_fds;
};

/* Threads: one message thread runs vu_dispatch; each running ring has a
 * thread of its own (ring_thread), and no lock is taken. A ring's fields
 * and its vq belong to its thread from pthread_create in ring_try_start
 * to pthread_join in ring_stop, and to the message thread otherwise: the
 * message thread stops a ring before it changes anything that ring's
 * thread reads (its fds, addresses, base, the memory table, the
 * negotiated features), and restarts it after. */
struct vu_ring {
	unsigned num;
	uint64_t desc_uva, avail_uva, used_uva;
	bool have_addr;
	uint16_t base;
	bool enabled;
	int kick_fd, call_fd, err_fd;
	bool running;
	int stop_fd;
	pthread_t thread;
	struct vq vq;
	struct vu_server *srv;
	bool warned_broken;
};

struct vu_map {
	void *addr;
	size_t len;
};

struct vu_server {
	struct vblk *vblk;
	uint64_t features;
	uint64_t protocol_features;
	struct vmm_mem mem;
	struct vu_map maps[VMM_MEM_MAX_REGIONS];
	unsigned nb_queues;
	struct vu_ring rings[VU_MAX_QUEUES];
	struct vu_msg msg; /* the message being handled */
};

static void close_fd(int *fd)
{
	if (*fd >= 0)
		close(*fd);
	*fd = -1;
}

/* ------------------------------------------------------------------------
 * Ring threads
 */

static void *ring_thread(void *opaque)
{
	struct vu_ring *r = opaque;
	struct pollfd pfd[2] = {
		{ .fd = r->kick_fd, .events = POLLIN },
		{ .fd = r->stop_fd, .events = POLLIN },
	};
	uint64_t v;
	bool notify = false;

	for (;;) {
		/* Process first: requests may have been queued before the
		 * ring started, with their kick long gone. */
		if (!r->vq.broken &&
		    vblk_process(r->srv->vblk, &r->vq, &notify) < 0 &&
		    !r->warned_broken) {
			r->warned_broken = true;
			log_err("vhost-user: queue %u broken: %s (waiting for "
				"the front end to reset it)",
				(unsigned)(r - r->srv->rings), r->vq.broken_why);
			if (r->err_fd >= 0)
				(void)!write(r->err_fd, &(uint64_t){ 1 }, 8);
		}
		if (notify && r->call_fd >= 0)
			(void)!write(r->call_fd, &(uint64_t){ 1 }, 8);
		notify = false;
		if (poll(pfd, 2, -1) < 0 && errno != EINTR)
			break;
		if (pfd[1].revents)
			break;
		if (pfd[0].revents & POLLIN)
			(void)!read(r->kick_fd, &v, sizeof(v));
		else if (pfd[0].revents)
			break; /* POLLERR/POLLHUP: nothing more will come */
	}
	return NULL;
}

static void ring_stop(struct vu_ring *r)
{
	if (!r->running)
		return;
	(void)!write(r->stop_fd, &(uint64_t){ 1 }, 8);
	pthread_join(r->thread, NULL);
	close_fd(&r->stop_fd);
	r->base = r->vq.last_avail_idx;
	r->running = false;
}

static bool ring_ready(const struct vu_server *s, const struct vu_ring *r)
{
	bool need_enable = s->features & (1ull << VU_F_PROTOCOL_FEATURES);

	return r->num && r->have_addr && r->kick_fd >= 0 &&
	       s->mem.nb_regions > 0 && (r->enabled || !need_enable);
}

/* Starts r if it has all it needs; -errno when its addresses are bad. */
static int ring_try_start(struct vu_server *s, struct vu_ring *r)
{
	void *desc, *avail, *used;
	int ret;

	if (r->running || !ring_ready(s, r))
		return 0;
	desc = vmm_mem_uva(&s->mem, r->desc_uva, vq_desc_bytes(r->num));
	avail = vmm_mem_uva(&s->mem, r->avail_uva, vq_avail_bytes(r->num));
	used = vmm_mem_uva(&s->mem, r->used_uva, vq_used_bytes(r->num));
	if (!desc || !avail || !used) {
		log_err("vhost-user: queue %u: ring addresses outside the "
			"memory table", (unsigned)(r - s->rings));
		return -EFAULT;
	}
	ret = vq_init(&r->vq, &s->mem, r->num, desc, avail, used, r->base,
		      vblk_driver_features(s->vblk));
	if (ret < 0) {
		log_err("vhost-user: queue %u: size %u or ring alignment "
			"refused", (unsigned)(r - s->rings), r->num);
		return ret;
	}
	r->srv = s;
	r->warned_broken = false;
	r->stop_fd = eventfd(0, EFD_CLOEXEC);
	if (r->stop_fd < 0)
		return -errno;
	ret = pthread_create(&r->thread, NULL, ring_thread, r);
	if (ret) {
		close_fd(&r->stop_fd);
		return -ret;
	}
	r->running = true;
	return 0;
}

static void unmap_all(struct vu_server *s)
{
	for (unsigned i = 0; i < VMM_MEM_MAX_REGIONS; i++) {
		if (s->maps[i].addr)
			munmap(s->maps[i].addr, s->maps[i].len);
		s->maps[i].addr = NULL;
	}
	memset(&s->mem, 0, sizeof(s->mem));
}

static void reset_rings(struct vu_server *s)
{
	for (unsigned i = 0; i < VU_MAX_QUEUES; i++) {
		struct vu_ring *r = &s->rings[i];

		ring_stop(r);
		close_fd(&r->kick_fd);
		close_fd(&r->call_fd);
		close_fd(&r->err_fd);
		memset(r, 0, sizeof(*r));
		r->kick_fd = r->call_fd = r->err_fd = r->stop_fd = -1;
	}
}

void vu_server_reset(struct vu_server *s)
{
	reset_rings(s);
	unmap_all(s);
	s->features = 0;
	s->protocol_features = 0;
}

int vu_server_new(struct vblk *vblk, struct vu_server **s_r)
{
	struct vu_server *s = calloc(1, sizeof(*s));

	*s_r = NULL;
	if (!s)
		return -ENOMEM;
	s->vblk = vblk;
	s->nb_queues = MIN(vblk_nb_queues(vblk), (unsigned)VU_MAX_QUEUES);
	for (unsigned i = 0; i < VU_MAX_QUEUES; i++)
		s->rings[i].kick_fd = s->rings[i].call_fd =
			s->rings[i].err_fd = s->rings[i].stop_fd = -1;
	*s_r = s;
	return 0;
}

void vu_server_free(struct vu_server *s)
{
	if (!s)
		return;
	vu_server_reset(s);
	free(s);
}

/* ------------------------------------------------------------------------
 * Messages
 */

static void close_msg_fds(struct vu_msg *m)
{
	for (unsigned i = 0; i < m->nb_fds; i++)
		if (m->fds[i] >= 0)
			close(m->fds[i]);
	m->nb_fds = 0;
}

/* Puts the header of m's request and size bytes of its payload in reply.
 * Returns 1, handle()'s "replied". */
static int reply_msg(struct vu_reply *reply, const struct vu_msg *m,
		     uint32_t size)
{
	uint32_t hdr[3] = { m->request, VU_VERSION | VU_FLAG_REPLY, size };

	/* The payload follows the 12-byte header on the wire, while in
	 * struct vu_msg it sits at its natural 8-byte alignment. */
	memcpy(reply->bytes, hdr, VU_HDR_BYTES);
	memcpy(reply->bytes + VU_HDR_BYTES, m->p.bytes, size);
	reply->len_bytes = VU_HDR_BYTES + size;
	return 1;
}

static int reply_u64(struct vu_reply *reply, struct vu_msg *m, uint64_t v)
{
	m->p.u64 = v;
	return reply_msg(reply, m, 8);
}

/* Takes the one descriptor a KICK/CALL/ERR message carries, unless the
 * NOFD flag says there is none. */
static int take_ring_fd(struct vu_msg *m, int *fd_r)
{
	if (m->p.u64 & VU_VRING_NOFD) {
		*fd_r = -1;
		return m->nb_fds == 0 ? 0 : -EPROTO;
	}
	if (m->nb_fds != 1)
		return -EPROTO;
	*fd_r = m->fds[0];
	m->fds[0] = -1;
	return 0;
}

/* Maps region i of m (len bytes of fd from its start, len = the region's
 * mmap_offset + size). The file must be at least that long: a mapping
 * past its end would raise SIGBUS at the first touch of those pages, in
 * a ring thread, instead of failing here. */
static int map_region(struct vu_server *s, struct vu_msg *m, unsigned i)
{
	uint64_t size = m->p.mem.regions[i].size_bytes;
	uint64_t moff = m->p.mem.regions[i].mmap_offset, len;
	struct stat st;
	void *addr;

	if (size == 0 || ADD_OVERFLOW(size, moff, &len) || len > SIZE_MAX)
		return -EINVAL;
	if (fstat(m->fds[i], &st) < 0)
		return -errno;
	if (!S_ISREG(st.st_mode) || st.st_size < 0 ||
	    len > (uint64_t)st.st_size) {
		log_err("vhost-user: memory region %u: 0x%llx bytes at offset "
			"0x%llx of a file of 0x%llx bytes", i,
			(unsigned long long)size, (unsigned long long)moff,
			(unsigned long long)st.st_size);
		return -EINVAL;
	}
	addr = mmap(NULL, len, PROT_READ | PROT_WRITE, MAP_SHARED, m->fds[i],
		    0);
	if (addr == MAP_FAILED)
		return -errno;
	s->maps[i] = (struct vu_map){ addr, len };
	return vmm_mem_add(&s->mem, m->p.mem.regions[i].gpa, size,
			   (uint8_t *)addr + moff, m->p.mem.regions[i].uva);
}

static int set_mem_table(struct vu_server *s, struct vu_msg *m)
{
	unsigned nb = m->p.mem.nb_regions;
	int ret = 0;

	if (nb == 0 || nb > VMM_MEM_MAX_REGIONS || m->nb_fds != nb ||
	    m->size < 8 + 32 * nb)
		return -EPROTO;
	for (unsigned i = 0; i < VU_MAX_QUEUES; i++)
		ring_stop(&s->rings[i]);
	unmap_all(s);
	for (unsigned i = 0; i < nb && ret == 0; i++)
		ret = map_region(s, m, i);
	close_msg_fds(m);
	if (ret < 0) {
		unmap_all(s);
		return ret;
	}
	/* A ring whose addresses lie outside the new table stays stopped
	 * until the front end sets them again. */
	for (unsigned i = 0; i < VU_MAX_QUEUES; i++)
		ring_try_start(s, &s->rings[i]);
	return 0;
}

static struct vu_ring *ring_of(struct vu_server *s, uint64_t index)
{
	return index < s->nb_queues ? &s->rings[index] : NULL;
}

/* Handles one message. Returns 1 when reply holds the answer, 0 when
 * the request was applied, -EPROTO when it is malformed, another -errno
 * when it was refused. */
/* The payload size each request needs (0: none). Descriptors that came
 * with a request that carries none are closed, so none leaks. */
static int check_payload(struct vu_msg *m)
{
	uint32_t need = 0;

	switch (m->request) {
	case VU_SET_FEATURES:
	case VU_SET_PROTOCOL_FEATURES:
	case VU_SET_VRING_KICK:
	case VU_SET_VRING_CALL:
	case VU_SET_VRING_ERR:
	case VU_SET_MEM_TABLE:
	case VU_SET_VRING_NUM:
	case VU_SET_VRING_BASE:
	case VU_GET_VRING_BASE:
	case VU_SET_VRING_ENABLE:
		need = 8;
		break;
	case VU_SET_VRING_ADDR:
		need = 40;
		break;
	case VU_GET_CONFIG:
	case VU_SET_CONFIG:
		need = 12;
		break;
	}
	if (m->size < need)
		return -EPROTO;
	if (m->nb_fds && m->request != VU_SET_MEM_TABLE &&
	    m->request != VU_SET_VRING_KICK && m->request != VU_SET_VRING_CALL &&
	    m->request != VU_SET_VRING_ERR)
		close_msg_fds(m);
	return 0;
}

/* SET_VRING_NUM, _ADDR, _BASE, GET_VRING_BASE, SET_VRING_ENABLE: every
 * change stops the ring first; it starts again once it has all it needs. */
static int handle_ring_state(struct vu_server *s, struct vu_msg *m,
			     struct vu_reply *reply)
{
	uint32_t index = m->request == VU_SET_VRING_ADDR ? m->p.addr.index
							 : m->p.state.index;
	struct vu_ring *r = ring_of(s, index);

	if (!r)
		return -EINVAL;
	switch (m->request) {
	case VU_SET_VRING_NUM:
		/* A split ring's size is a power of two (virtio 1.x 2.7):
		 * only then does "16-bit index modulo size" stay consistent
		 * when the index wraps at 65536. */
		if (m->p.state.num == 0 || m->p.state.num > VQ_MAX_SIZE ||
		    (m->p.state.num & (m->p.state.num - 1)))
			return -EINVAL;
		ring_stop(r);
		r->num = m->p.state.num;
		return 0;
	case VU_SET_VRING_ADDR:
		ring_stop(r);
		r->desc_uva = m->p.addr.desc_uva;
		r->avail_uva = m->p.addr.avail_uva;
		r->used_uva = m->p.addr.used_uva;
		r->have_addr = true;
		return ring_try_start(s, r);
	case VU_SET_VRING_BASE:
		if (m->p.state.num > UINT16_MAX)
			return -EINVAL;
		ring_stop(r);
		r->base = (uint16_t)m->p.state.num;
		return 0;
	case VU_GET_VRING_BASE:
		ring_stop(r);
		/* The ring stays stopped until the next kick descriptor. */
		close_fd(&r->kick_fd);
		m->p.state.num = r->base;
		return reply_msg(reply, m, 8);
	default: /* VU_SET_VRING_ENABLE */
		r->enabled = m->p.state.num != 0;
		if (!r->enabled)
			ring_stop(r);
		return ring_try_start(s, r);
	}
}

/* SET_VRING_KICK, _CALL, _ERR: the descriptor replaces the ring's old one. */
static int handle_ring_fd(struct vu_server *s, struct vu_msg *m)
{
	struct vu_ring *r;
	int fd = -1, ret;

	ret = take_ring_fd(m, &fd);
	if (ret < 0)
		return ret;
	r = ring_of(s, m->p.u64 & VU_VRING_IDX_MASK);
	if (!r) {
		if (fd >= 0)
			close(fd);
		return -EINVAL;
	}
	ring_stop(r);
	if (m->request == VU_SET_VRING_KICK) {
		close_fd(&r->kick_fd);
		r->kick_fd = fd;
	} else if (m->request == VU_SET_VRING_CALL) {
		close_fd(&r->call_fd);
		r->call_fd = fd;
	} else {
		close_fd(&r->err_fd);
		r->err_fd = fd;
	}
	return ring_try_start(s, r);
}

static int handle_config(struct vu_server *s, struct vu_msg *m,
			 struct vu_reply *reply)
{
	uint8_t cfg[VBLK_CONFIG_BYTES];
	uint32_t off = m->p.config.offset, len = m->p.config.size;

	if (len > sizeof(m->p.config.data) || m->size != 12 + len)
		return -EPROTO;
	if (m->request == VU_SET_CONFIG)
		/* Only the writeback field is writable, and we do not offer
		 * CONFIG_WCE: accept and ignore. */
		return 0;
	vblk_get_config(s->vblk, cfg);
	memset(m->p.config.data, 0, len);
	/* Bytes past our config space read as zero. */
	if (off < sizeof(cfg))
		memcpy(m->p.config.data, cfg + off,
		       MIN((size_t)len, sizeof(cfg) - off));
	return reply_msg(reply, m, 12 + len);
}

static int handle(struct vu_server *s, struct vu_msg *m,
		  struct vu_reply *reply)
{
	int ret = check_payload(m);

	if (ret < 0)
		return ret;
	switch (m->request) {
	case VU_GET_FEATURES:
		return reply_u64(reply, m,
				 vblk_features(s->vblk) |
					 (1ull << VU_F_PROTOCOL_FEATURES));
	case VU_SET_FEATURES: {
		uint64_t f = m->p.u64 & ~(1ull << VU_F_PROTOCOL_FEATURES);

		/* Ring threads read the negotiated features with no lock,
		 * and nothing stops a front end from sending this again
		 * while they run: stop them first and restart them with
		 * the new set. */
		for (unsigned i = 0; i < VU_MAX_QUEUES; i++)
			ring_stop(&s->rings[i]);
		ret = vblk_set_features(s->vblk, f);
		if (ret < 0)
			log_err("vhost-user: front end chose features 0x%llx, "
				"offered 0x%llx", (unsigned long long)f,
				(unsigned long long)vblk_features(s->vblk));
		else
			s->features = m->p.u64;
		for (unsigned i = 0; i < VU_MAX_QUEUES; i++)
			ring_try_start(s, &s->rings[i]);
		return ret;
	}
	case VU_GET_PROTOCOL_FEATURES:
		return reply_u64(reply, m, VU_PROTOCOL_FEATURES);
	case VU_SET_PROTOCOL_FEATURES:
		s->protocol_features = m->p.u64 & VU_PROTOCOL_FEATURES;
		return 0;
	case VU_GET_QUEUE_NUM:
		return reply_u64(reply, m, s->nb_queues);
	case VU_SET_OWNER:
		return 0;
	case VU_RESET_OWNER:
		reset_rings(s);
		return 0;
	case VU_SET_MEM_TABLE:
		return set_mem_table(s, m);
	case VU_SET_VRING_NUM:
	case VU_SET_VRING_ADDR:
	case VU_SET_VRING_BASE:
	case VU_GET_VRING_BASE:
	case VU_SET_VRING_ENABLE:
		return handle_ring_state(s, m, reply);
	case VU_SET_VRING_KICK:
	case VU_SET_VRING_CALL:
	case VU_SET_VRING_ERR:
		return handle_ring_fd(s, m);
	case VU_GET_CONFIG:
	case VU_SET_CONFIG:
		return handle_config(s, m, reply);
	default:
		log_warn("vhost-user: request %u not supported", m->request);
		return -ENOTSUP;
	}
}

int vu_dispatch(struct vu_server *s, const void *msg, size_t msg_len,
		const int *fds, unsigned nb_fds, struct vu_reply *reply)
{
	const uint8_t *bytes = msg;
	struct vu_msg *m = &s->msg;
	bool need_ack;
	int ret;

	reply->len_bytes = 0;
	/* The descriptors are ours from here on: every exit closes those
	 * the handler did not keep. */
	m->nb_fds = 0;
	for (unsigned i = 0; i < nb_fds; i++) {
		if (m->nb_fds < VU_MAX_FDS)
			m->fds[m->nb_fds++] = fds[i];
		else
			close(fds[i]);
	}
	if (nb_fds > VU_MAX_FDS || msg_len < VU_HDR_BYTES) {
		close_msg_fds(m);
		log_err("vhost-user: message of %zu bytes with %u descriptors",
			msg_len, nb_fds);
		return -EPROTO;
	}
	memcpy(&m->request, bytes, 4);
	memcpy(&m->flags, bytes + 4, 4);
	memcpy(&m->size, bytes + 8, 4);
	if ((m->flags & VU_FLAG_VERSION_MASK) != VU_VERSION ||
	    m->size > VU_MAX_PAYLOAD || msg_len - VU_HDR_BYTES != m->size) {
		close_msg_fds(m);
		log_err("vhost-user: request %u: version %u, %zu payload "
			"bytes where the header says %u", m->request,
			m->flags & VU_FLAG_VERSION_MASK, msg_len - VU_HDR_BYTES,
			m->size);
		return -EPROTO;
	}
	/* Bytes past the payload read as zero, never as an older message. */
	memset(&m->p, 0, sizeof(m->p));
	memcpy(m->p.bytes, bytes + VU_HDR_BYTES, m->size);
	need_ack = (m->flags & VU_FLAG_NEED_REPLY) &&
		   (s->protocol_features & (1ull << VU_PROTOCOL_F_REPLY_ACK));
	log_debug("vhost-user: request %u size %u fds %u flags 0x%x",
		  m->request, m->size, m->nb_fds, m->flags);

	ret = handle(s, m, reply);
	close_msg_fds(m);
	if (ret == 1)
		return 0;
	if (ret == -EPROTO) {
		log_err("vhost-user: malformed request %u (%u payload bytes, "
			"%u descriptors); dropping the connection", m->request,
			m->size, nb_fds);
		return ret;
	}
	if (need_ack) {
		/* The front end learns of the failure and decides. */
		reply_u64(reply, m, ret < 0 ? 1 : 0);
		return 0;
	}
	if (ret < 0)
		log_err("vhost-user: request %u failed: %s; dropping the "
			"connection (no acknowledgement was asked for, so the "
			"front end would not know)", m->request, strerror(-ret));
	return ret;
}

/* ------------------------------------------------------------------------
 * The socket
 */

/* Reads one message into buf (header and payload) and its descriptors
 * into fds (*nb_fds_r of them, the caller's even on error). Returns the
 * message's length, -ECONNRESET at end of stream, -EPROTO when it cannot
 * be framed, or -errno. */
static ssize_t recv_msg(int fd, uint8_t *buf, int *fds, unsigned *nb_fds_r)
{
	char cbuf[CMSG_SPACE(VU_MAX_FDS * sizeof(int))];
	struct iovec iov = { .iov_base = buf, .iov_len = VU_HDR_BYTES };
	struct msghdr mh = {
		.msg_iov = &iov,
		.msg_iovlen = 1,
		.msg_control = cbuf,
		.msg_controllen = sizeof(cbuf),
	};
	struct cmsghdr *c;
	uint32_t size;
	ssize_t n;

	*nb_fds_r = 0;
	do
		n = recvmsg(fd, &mh, MSG_CMSG_CLOEXEC);
	while (n < 0 && errno == EINTR);
	if (n == 0)
		return -ECONNRESET;
	if (n < 0)
		return -errno;
	for (c = CMSG_FIRSTHDR(&mh); c; c = CMSG_NXTHDR(&mh, c)) {
		size_t nb;

		if (c->cmsg_level != SOL_SOCKET || c->cmsg_type != SCM_RIGHTS)
			continue;
		nb = (c->cmsg_len - CMSG_LEN(0)) / sizeof(int);
		for (size_t i = 0; i < nb; i++) {
			int f;

			memcpy(&f, CMSG_DATA(c) + i * sizeof(int), sizeof(f));
			if (*nb_fds_r < VU_MAX_FDS)
				fds[(*nb_fds_r)++] = f;
			else
				close(f);
		}
	}
	if (n != VU_HDR_BYTES || (mh.msg_flags & MSG_CTRUNC))
		return -EPROTO;
	/* Past this size we cannot find where the next message starts. */
	memcpy(&size, buf + 8, 4);
	if (size > VU_MAX_PAYLOAD)
		return -EPROTO;
	for (size_t got = 0; got < size;) {
		n = read(fd, buf + VU_HDR_BYTES + got, size - got);
		if (n < 0 && errno == EINTR)
			continue;
		if (n <= 0)
			return n == 0 ? -ECONNRESET : -errno;
		got += (size_t)n;
	}
	return VU_HDR_BYTES + size;
}

static int send_all(int fd, const uint8_t *buf, size_t len)
{
	while (len > 0) {
		ssize_t n = send(fd, buf, len, MSG_NOSIGNAL);

		if (n < 0 && errno == EINTR)
			continue;
		if (n < 0)
			return -errno;
		/* Short sends on a stream socket: send the rest. */
		buf += n;
		len -= (size_t)n;
	}
	return 0;
}

static void serve_connection(struct vu_server *s, int conn_fd)
{
	uint8_t *buf = malloc(VU_HDR_BYTES + VU_MAX_PAYLOAD);
	struct vu_reply *reply = malloc(sizeof(*reply));

	while (buf && reply) {
		int fds[VU_MAX_FDS];
		unsigned nb_fds;
		ssize_t n = recv_msg(conn_fd, buf, fds, &nb_fds);

		if (n < 0) {
			for (unsigned i = 0; i < nb_fds; i++)
				close(fds[i]);
			if (n != -ECONNRESET)
				log_err("vhost-user: bad message: %s",
					strerror((int)-n));
			break;
		}
		/* vu_dispatch has said why when it gives up. */
		if (vu_dispatch(s, buf, (size_t)n, fds, nb_fds, reply) < 0)
			break;
		if (reply->len_bytes &&
		    send_all(conn_fd, reply->bytes, reply->len_bytes) < 0)
			break;
	}
	free(reply);
	free(buf);
}

int vu_serve(struct vblk *vblk, const char *socket_path, int ready_fd)
{
	struct sockaddr_un sa = { .sun_family = AF_UNIX };
	struct vu_server *s;
	CLEANUP_CLOSE int lfd = -1;
	int ret;

	if (strlen(socket_path) >= sizeof(sa.sun_path))
		return -ENAMETOOLONG;
	strcpy(sa.sun_path, socket_path);
	ret = vu_server_new(vblk, &s);
	if (ret < 0)
		return ret;

	lfd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
	if (lfd < 0)
		goto err;
	unlink(socket_path);
	if (bind(lfd, (struct sockaddr *)&sa, sizeof(sa)) < 0 ||
	    listen(lfd, 1) < 0)
		goto err;
	signal(SIGPIPE, SIG_IGN);
	log_info("vhost-user: listening on %s", socket_path);
	if (ready_fd >= 0) {
		(void)!write(ready_fd, "ready\n", 6);
		close(ready_fd);
	}
	for (;;) {
		int conn_fd = accept4(lfd, NULL, NULL, SOCK_CLOEXEC);

		if (conn_fd < 0) {
			if (errno == EINTR || errno == ECONNABORTED)
				continue;
			goto err;
		}
		log_info("vhost-user: front end connected");
		serve_connection(s, conn_fd);
		vu_server_reset(s);
		close(conn_fd);
		log_info("vhost-user: front end went away; waiting for the "
			 "next one");
	}
err:
	ret = -errno;
	vu_server_free(s);
	return ret;
}
