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
 * limits, region sizes and offsets against overflow, ring addresses
 * against the mapped memory; a file descriptor we did not ask for is
 * closed. A malformed message ends the connection, not the process.
 * When the front end goes away every ring stops, memory is unmapped and
 * the next connection starts from scratch; the image stays open (and
 * locked) all along.
 *
 * Not supported: dirty logging (migration), postcopy, inflight tracking,
 * IOTLB, packed rings, backend-initiated requests. We do not offer the
 * features that would make a front end use them.
 */
#include "vmm.h"

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
#include <sys/un.h>
#include <unistd.h>

enum {
	VU_GET_FEATURES = 1,
	VU_SET_FEATURES = 2,
	VU_SET_OWNER = 3,
	VU_RESET_OWNER = 4,
	VU_SET_MEM_TABLE = 5,
	VU_SET_LOG_BASE = 6,
	VU_SET_LOG_FD = 7,
	VU_SET_VRING_NUM = 8,
	VU_SET_VRING_ADDR = 9,
	VU_SET_VRING_BASE = 10,
	VU_GET_VRING_BASE = 11,
	VU_SET_VRING_KICK = 12,
	VU_SET_VRING_CALL = 13,
	VU_SET_VRING_ERR = 14,
	VU_GET_PROTOCOL_FEATURES = 15,
	VU_SET_PROTOCOL_FEATURES = 16,
	VU_GET_QUEUE_NUM = 17,
	VU_SET_VRING_ENABLE = 18,
	VU_GET_CONFIG = 24,
	VU_SET_CONFIG = 25,
};

#define VU_F_PROTOCOL_FEATURES 30
#define VU_PROTOCOL_F_MQ 0
#define VU_PROTOCOL_F_REPLY_ACK 3
#define VU_PROTOCOL_F_CONFIG 9
#define VU_PROTOCOL_FEATURES                                                   \
	((1ull << VU_PROTOCOL_F_MQ) | (1ull << VU_PROTOCOL_F_REPLY_ACK) |      \
	 (1ull << VU_PROTOCOL_F_CONFIG))

#define VU_VERSION 1
#define VU_FLAG_VERSION_MASK 3
#define VU_FLAG_REPLY (1u << 2)
#define VU_FLAG_NEED_REPLY (1u << 3)
#define VU_HDR_BYTES 12
#define VU_MAX_PAYLOAD 4096
#define VU_MAX_FDS 8
#define VU_VRING_IDX_MASK 0xffull
#define VU_VRING_NOFD (1ull << 8)
#define VU_MAX_QUEUES 64

/* Header fields, then the payload at offset 16 (not 12 as on the wire:
 * recv_msg and send_reply move the two parts separately). */
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
	int conn_fd;
	uint64_t features;
	uint64_t protocol_features;
	struct vmm_mem mem;
	struct vu_map maps[VMM_MEM_MAX_REGIONS];
	unsigned nb_queues;
	struct vu_ring rings[VU_MAX_QUEUES];
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
	bool notify;

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

static void reset_connection(struct vu_server *s)
{
	reset_rings(s);
	unmap_all(s);
	s->features = 0;
	s->protocol_features = 0;
	close_fd(&s->conn_fd);
}

/* ------------------------------------------------------------------------
 * Messages
 */

static int recv_msg(int fd, struct vu_msg *m)
{
	char cbuf[CMSG_SPACE(VU_MAX_FDS * sizeof(int))];
	struct iovec iov = { .iov_base = m, .iov_len = VU_HDR_BYTES };
	struct msghdr mh = {
		.msg_iov = &iov,
		.msg_iovlen = 1,
		.msg_control = cbuf,
		.msg_controllen = sizeof(cbuf),
	};
	struct cmsghdr *c;
	ssize_t n;

	m->nb_fds = 0;
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
			if (m->nb_fds < VU_MAX_FDS)
				m->fds[m->nb_fds++] = f;
			else
				close(f);
		}
	}
	if (n != VU_HDR_BYTES || (mh.msg_flags & MSG_CTRUNC))
		return -EPROTO;
	if (m->size > VU_MAX_PAYLOAD)
		return -EPROTO;
	for (size_t got = 0; got < m->size;) {
		n = read(fd, m->p.bytes + got, m->size - got);
		if (n < 0 && errno == EINTR)
			continue;
		if (n <= 0)
			return n == 0 ? -ECONNRESET : -errno;
		got += (size_t)n;
	}
	return 0;
}

static void close_msg_fds(struct vu_msg *m)
{
	for (unsigned i = 0; i < m->nb_fds; i++)
		if (m->fds[i] >= 0)
			close(m->fds[i]);
	m->nb_fds = 0;
}

static int send_reply(int fd, struct vu_msg *m, uint32_t size)
{
	/* The payload follows the 12-byte header on the wire, while in
	 * struct vu_msg it sits at its natural 8-byte alignment. */
	struct iovec iov[2] = {
		{ .iov_base = m, .iov_len = VU_HDR_BYTES },
		{ .iov_base = m->p.bytes, .iov_len = size },
	};
	struct msghdr mh = { .msg_iov = iov, .msg_iovlen = 2 };
	size_t left = VU_HDR_BYTES + size;

	m->flags = VU_VERSION | VU_FLAG_REPLY;
	m->size = size;
	while (left > 0) {
		ssize_t n = sendmsg(fd, &mh, MSG_NOSIGNAL);

		if (n < 0 && errno == EINTR)
			continue;
		if (n < 0)
			return -errno;
		left -= (size_t)n;
		/* Short sends on a stream socket: skip what went out. */
		while (n > 0 && mh.msg_iovlen > 0) {
			size_t k = MIN((size_t)n, mh.msg_iov->iov_len);

			mh.msg_iov->iov_base = (uint8_t *)mh.msg_iov->iov_base + k;
			mh.msg_iov->iov_len -= k;
			n -= (ssize_t)k;
			if (mh.msg_iov->iov_len == 0) {
				mh.msg_iov++;
				mh.msg_iovlen--;
			}
		}
	}
	return 0;
}

static int reply_u64(int fd, struct vu_msg *m, uint64_t v)
{
	m->p.u64 = v;
	return send_reply(fd, m, 8);
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
	for (unsigned i = 0; i < nb; i++) {
		uint64_t size = m->p.mem.regions[i].size_bytes;
		uint64_t moff = m->p.mem.regions[i].mmap_offset, len;
		void *addr;

		if (ADD_OVERFLOW(size, moff, &len) || len > SIZE_MAX) {
			ret = -EINVAL;
			break;
		}
		addr = mmap(NULL, len, PROT_READ | PROT_WRITE, MAP_SHARED,
			    m->fds[i], 0);
		if (addr == MAP_FAILED) {
			ret = -errno;
			break;
		}
		s->maps[i] = (struct vu_map){ addr, len };
		ret = vmm_mem_add(&s->mem, m->p.mem.regions[i].gpa, size,
				  (uint8_t *)addr + moff,
				  m->p.mem.regions[i].uva);
		if (ret < 0)
			break;
	}
	close_msg_fds(m);
	if (ret < 0) {
		unmap_all(s);
		return ret;
	}
	for (unsigned i = 0; i < VU_MAX_QUEUES; i++)
		ring_try_start(s, &s->rings[i]);
	return 0;
}

static struct vu_ring *ring_of(struct vu_server *s, uint64_t index)
{
	return index < s->nb_queues ? &s->rings[index] : NULL;
}

/* Handles one message. Returns 1 when a reply was sent, 0 when the
 * caller may send the REPLY_ACK, -errno to drop the connection. */
static int handle(struct vu_server *s, struct vu_msg *m)
{
	uint32_t need = 0;
	struct vu_ring *r = NULL;
	int fd = -1, ret;

	switch (m->request) {
	case VU_SET_FEATURES:
	case VU_SET_PROTOCOL_FEATURES:
	case VU_SET_VRING_KICK:
	case VU_SET_VRING_CALL:
	case VU_SET_VRING_ERR:
		need = 8;
		break;
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
	/* Only these carry descriptors. */
	if (m->nb_fds && m->request != VU_SET_MEM_TABLE &&
	    m->request != VU_SET_VRING_KICK && m->request != VU_SET_VRING_CALL &&
	    m->request != VU_SET_VRING_ERR)
		close_msg_fds(m);

	switch (m->request) {
	case VU_GET_FEATURES:
		return reply_u64(s->conn_fd, m,
				 vblk_features(s->vblk) |
					 (1ull << VU_F_PROTOCOL_FEATURES)) ?: 1;
	case VU_SET_FEATURES: {
		uint64_t f = m->p.u64 & ~(1ull << VU_F_PROTOCOL_FEATURES);

		ret = vblk_set_features(s->vblk, f);
		if (ret < 0) {
			log_err("vhost-user: front end chose features 0x%llx, "
				"offered 0x%llx", (unsigned long long)f,
				(unsigned long long)vblk_features(s->vblk));
			return ret;
		}
		s->features = m->p.u64;
		return 0;
	}
	case VU_GET_PROTOCOL_FEATURES:
		return reply_u64(s->conn_fd, m, VU_PROTOCOL_FEATURES) ?: 1;
	case VU_SET_PROTOCOL_FEATURES:
		s->protocol_features = m->p.u64 & VU_PROTOCOL_FEATURES;
		return 0;
	case VU_GET_QUEUE_NUM:
		return reply_u64(s->conn_fd, m, s->nb_queues) ?: 1;
	case VU_SET_OWNER:
		return 0;
	case VU_RESET_OWNER:
		reset_rings(s);
		return 0;
	case VU_SET_MEM_TABLE:
		return set_mem_table(s, m);
	case VU_SET_VRING_NUM:
		r = ring_of(s, m->p.state.index);
		if (!r || m->p.state.num == 0 || m->p.state.num > VQ_MAX_SIZE)
			return -EINVAL;
		ring_stop(r);
		r->num = m->p.state.num;
		return 0;
	case VU_SET_VRING_ADDR:
		r = ring_of(s, m->p.addr.index);
		if (!r)
			return -EINVAL;
		ring_stop(r);
		r->desc_uva = m->p.addr.desc_uva;
		r->avail_uva = m->p.addr.avail_uva;
		r->used_uva = m->p.addr.used_uva;
		r->have_addr = true;
		return ring_try_start(s, r) < 0 ? -EINVAL : 0;
	case VU_SET_VRING_BASE:
		r = ring_of(s, m->p.state.index);
		if (!r || m->p.state.num > UINT16_MAX)
			return -EINVAL;
		ring_stop(r);
		r->base = (uint16_t)m->p.state.num;
		return 0;
	case VU_GET_VRING_BASE:
		r = ring_of(s, m->p.state.index);
		if (!r)
			return -EINVAL;
		ring_stop(r);
		/* The ring stays stopped until the next kick descriptor. */
		close_fd(&r->kick_fd);
		m->p.state.num = r->base;
		return send_reply(s->conn_fd, m, 8) ?: 1;
	case VU_SET_VRING_KICK:
	case VU_SET_VRING_CALL:
	case VU_SET_VRING_ERR:
		r = ring_of(s, m->p.u64 & VU_VRING_IDX_MASK);
		if (!r || take_ring_fd(m, &fd) < 0) {
			close_msg_fds(m);
			return -EPROTO;
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
		return ring_try_start(s, r) < 0 ? -EINVAL : 0;
	case VU_SET_VRING_ENABLE:
		r = ring_of(s, m->p.state.index);
		if (!r)
			return -EINVAL;
		r->enabled = m->p.state.num != 0;
		if (!r->enabled)
			ring_stop(r);
		return ring_try_start(s, r) < 0 ? -EINVAL : 0;
	case VU_GET_CONFIG: {
		uint8_t cfg[VBLK_CONFIG_BYTES];
		uint32_t off = m->p.config.offset, len = m->p.config.size;

		if (len > sizeof(m->p.config.data) || m->size != 12 + len)
			return -EPROTO;
		vblk_get_config(s->vblk, cfg);
		memset(m->p.config.data, 0, len);
		/* Bytes past our config space read as zero. */
		if (off < sizeof(cfg))
			memcpy(m->p.config.data, cfg + off,
			       MIN((size_t)len, sizeof(cfg) - off));
		return send_reply(s->conn_fd, m, 12 + len) ?: 1;
	}
	case VU_SET_CONFIG:
		/* Only the writeback field is writable, and we do not offer
		 * CONFIG_WCE: accept and ignore. */
		return 0;
	default:
		log_warn("vhost-user: request %u not supported", m->request);
		close_msg_fds(m);
		return -ENOTSUP;
	}
}

static void serve_connection(struct vu_server *s)
{
	struct vu_msg *m = calloc(1, sizeof(*m));

	if (!m)
		return;
	for (;;) {
		int ret = recv_msg(s->conn_fd, m);

		if (ret < 0) {
			close_msg_fds(m);
			if (ret != -ECONNRESET)
				log_err("vhost-user: bad message: %s",
					strerror(-ret));
			break;
		}
		if ((m->flags & VU_FLAG_VERSION_MASK) != VU_VERSION) {
			close_msg_fds(m);
			log_err("vhost-user: protocol version %u",
				m->flags & VU_FLAG_VERSION_MASK);
			break;
		}
		bool need_ack = (m->flags & VU_FLAG_NEED_REPLY) &&
				(s->protocol_features &
				 (1ull << VU_PROTOCOL_F_REPLY_ACK));
		log_debug("vhost-user: request %u size %u fds %u flags 0x%x",
			  m->request, m->size, m->nb_fds, m->flags);
		ret = handle(s, m);
		close_msg_fds(m);
		if (ret == 1)
			continue;
		if (need_ack) {
			if (reply_u64(s->conn_fd, m, ret < 0 ? 1 : 0) < 0)
				break;
			/* The front end knows it failed; keep serving. */
			continue;
		}
		if (ret < 0 && ret != -ENOTSUP && ret != -EINVAL) {
			log_err("vhost-user: request %u failed: %s; dropping "
				"the connection", m->request, strerror(-ret));
			break;
		}
	}
	free(m);
}

int vu_serve(struct vblk *vblk, const char *socket_path, int ready_fd)
{
	struct sockaddr_un sa = { .sun_family = AF_UNIX };
	struct vu_server *s;
	CLEANUP_CLOSE int lfd = -1;

	if (strlen(socket_path) >= sizeof(sa.sun_path))
		return -ENAMETOOLONG;
	strcpy(sa.sun_path, socket_path);
	s = calloc(1, sizeof(*s));
	if (!s)
		return -ENOMEM;
	s->vblk = vblk;
	s->conn_fd = -1;
	s->nb_queues = MIN(vblk_nb_queues(vblk), (unsigned)VU_MAX_QUEUES);
	for (unsigned i = 0; i < VU_MAX_QUEUES; i++)
		s->rings[i].kick_fd = s->rings[i].call_fd =
			s->rings[i].err_fd = s->rings[i].stop_fd = -1;

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
		s->conn_fd = accept4(lfd, NULL, NULL, SOCK_CLOEXEC);
		if (s->conn_fd < 0) {
			if (errno == EINTR || errno == ECONNABORTED)
				continue;
			goto err;
		}
		log_info("vhost-user: front end connected");
		serve_connection(s);
		reset_connection(s);
		log_info("vhost-user: front end went away; waiting for the "
			 "next one");
	}
err:
	{
		int e = -errno;

		free(s);
		return e;
	}
}
