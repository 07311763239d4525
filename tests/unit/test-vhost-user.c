/* test-vhost-user.c: the outcome of specific vhost-user messages, good and
 * malformed, through vu_dispatch() (vmm/vhost-user.h), without a socket.
 *
 * Each case builds one message as a front end would put it on the wire
 * (12-byte header, payload, descriptors) and asserts what vhost-user.h
 * promises: the exact return value (0 to go on, -EPROTO or the request's
 * -errno to end the connection), the exact reply or acknowledgement, and
 * that every descriptor handed over is kept or closed, never leaked. One
 * case drives a whole ring over memfd-backed memory with the guest driver
 * (vmm.h vdrv_*) to show that a request really runs once the messages are
 * accepted. Finally the saved fuzz reproducers (tests/fuzz/regress/
 * fuzz-vhost-user) go through the fuzz target's own function, so this
 * build's sanitizers see them without clang.
 */
#undef NDEBUG
#include "vhost-user.h"
#include "guest-driver.h"
#include "imgfmt.h"
#include "log.h"

#include "endian.h"

#include <assert.h>
#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/eventfd.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include "regress.h"

#define FUZZ_NO_MAIN_ENTRY
#include "../fuzz/fuzz-vhost-user.c"

#define DISK_BYTES (1024 * 1024)
#define MEM_BYTES (64 * 1024)
#define GPA 0x100000ull
#define UVA 0x7f0000000000ull

static struct img *img;
static struct vblk *vblk;
static struct vu_server *srv;
static struct vu_reply reply;

/* Sends one message; payload_bytes of payload go on the wire while the
 * header claims hdr_size (they differ only in the truncation cases). */
static int send_raw(uint32_t req, uint32_t flags, const void *payload,
		    uint32_t hdr_size, size_t payload_bytes, const int *fds,
		    unsigned nb_fds)
{
	uint8_t buf[VU_HDR_BYTES + VU_MAX_PAYLOAD + 64];
	uint32_t hdr[3] = { req, flags, hdr_size };

	assert(payload_bytes <= sizeof(buf) - VU_HDR_BYTES);
	memcpy(buf, hdr, VU_HDR_BYTES);
	if (payload_bytes)
		memcpy(buf + VU_HDR_BYTES, payload, payload_bytes);
	return vu_dispatch(srv, buf, VU_HDR_BYTES + payload_bytes, fds, nb_fds,
			   &reply);
}

static int send_msg(uint32_t req, const void *payload, uint32_t size,
		    const int *fds, unsigned nb_fds)
{
	return send_raw(req, VU_VERSION, payload, size, size, fds, nb_fds);
}

static int send_u64(uint32_t req, uint64_t v)
{
	return send_msg(req, &v, 8, NULL, 0);
}

static int send_state(uint32_t req, uint32_t index, uint32_t num)
{
	uint32_t st[2] = { index, num };

	return send_msg(req, st, 8, NULL, 0);
}

/* The reply holds request req with a u64 payload; returns it. */
static uint64_t reply_u64_of(uint32_t req)
{
	uint32_t hdr[3];
	uint64_t v;

	assert(reply.len_bytes == VU_HDR_BYTES + 8);
	memcpy(hdr, reply.bytes, VU_HDR_BYTES);
	assert(hdr[0] == req);
	assert(hdr[1] == (VU_VERSION | VU_FLAG_REPLY));
	assert(hdr[2] == 8);
	memcpy(&v, reply.bytes + VU_HDR_BYTES, 8);
	return v;
}

static bool fd_open(int fd)
{
	return fcntl(fd, F_GETFD) != -1;
}

static int new_memfd(size_t bytes)
{
	int fd = memfd_create("test-vhost-user", MFD_CLOEXEC);

	assert(fd >= 0);
	assert(ftruncate(fd, (off_t)bytes) == 0);
	return fd;
}

static int new_eventfd(void)
{
	int fd = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);

	assert(fd >= 0);
	return fd;
}

/* A fresh back end over a fresh device, as after a new connection. */
static void fresh(unsigned nb_queues)
{
	struct vblk_opts vo = { .serial = "vhost-test",
				.nb_queues = nb_queues };

	vu_server_free(srv);
	vblk_free(vblk);
	assert(vblk_new(img, &vo, &vblk) == 0);
	assert(vu_server_new(vblk, &srv) == 0);
	memset(&reply, 0, sizeof(reply));
}

struct mem_msg {
	uint32_t nb_regions, padding;
	struct {
		uint64_t gpa, size_bytes, uva, mmap_offset;
	} r[VMM_MEM_MAX_REGIONS + 1]; /* one too many, for a bad table */
};

static int send_mem_table(uint64_t size, uint64_t moff, const int *fds,
			  unsigned nb_regions, unsigned nb_fds)
{
	struct mem_msg mm = { .nb_regions = nb_regions };

	for (unsigned i = 0; i < nb_regions && i <= VMM_MEM_MAX_REGIONS; i++)
		mm.r[i].gpa = GPA + i * (size + 0x100000),
		mm.r[i].size_bytes = size,
		mm.r[i].uva = UVA + i * (size + 0x100000),
		mm.r[i].mmap_offset = moff;
	return send_msg(VU_SET_MEM_TABLE, &mm, 8 + 32 * nb_regions, fds,
			nb_fds);
}

static void negotiate_ack(void)
{
	assert(send_u64(VU_SET_PROTOCOL_FEATURES,
			1ull << VU_PROTOCOL_F_REPLY_ACK) == 0);
	assert(reply.len_bytes == 0);
}

static void test_framing(void)
{
	uint8_t junk[8] = { 0 };
	uint64_t v = 0;
	int fd;

	fresh(1);
	/* A header cut short: nothing to go on; its descriptor is closed. */
	fd = new_eventfd();
	assert(vu_dispatch(srv, junk, 8, &fd, 1, &reply) == -EPROTO);
	assert(!fd_open(fd) && reply.len_bytes == 0);
	/* Version 2, and version bits 0. */
	assert(send_raw(VU_GET_FEATURES, 2, NULL, 0, 0, NULL, 0) == -EPROTO);
	assert(send_raw(VU_GET_FEATURES, 0, NULL, 0, 0, NULL, 0) == -EPROTO);
	/* The header promises 40 payload bytes, 20 arrive. */
	assert(send_raw(VU_SET_VRING_ADDR, VU_VERSION, junk, 40, 8, NULL,
			0) == -EPROTO);
	/* More bytes than the header says. */
	assert(send_raw(VU_SET_OWNER, VU_VERSION, junk, 0, 8, NULL, 0) ==
	       -EPROTO);
	/* Larger than any payload we accept. */
	assert(send_raw(VU_SET_OWNER, VU_VERSION, NULL, VU_MAX_PAYLOAD + 1, 0,
			NULL, 0) == -EPROTO);
	/* Payloads too short for their request, each consistent with its
	 * header: malformed, whatever REPLY_ACK says. */
	negotiate_ack();
	assert(send_raw(VU_SET_VRING_NUM, VU_VERSION | VU_FLAG_NEED_REPLY, &v,
			4, 4, NULL, 0) == -EPROTO);
	assert(reply.len_bytes == 0);
	assert(send_msg(VU_SET_FEATURES, &v, 0, NULL, 0) == -EPROTO);
	assert(send_msg(VU_SET_VRING_ADDR, junk, 8, NULL, 0) == -EPROTO);
	assert(send_msg(VU_SET_MEM_TABLE, &v, 4, NULL, 0) == -EPROTO);
	/* Nine descriptors: more than any message may carry, all closed. */
	{
		int fds[9];

		for (int i = 0; i < 9; i++)
			fds[i] = new_eventfd();
		assert(send_msg(VU_SET_OWNER, NULL, 0, fds, 9) == -EPROTO);
		for (int i = 0; i < 9; i++)
			assert(!fd_open(fds[i]));
	}
}

static void test_replies_and_acks(void)
{
	uint64_t f;
	int fd;

	fresh(2);
	assert(send_msg(VU_GET_FEATURES, NULL, 0, NULL, 0) == 0);
	f = reply_u64_of(VU_GET_FEATURES);
	assert(f & (1ull << VIRTIO_F_VERSION_1));
	assert(f & (1ull << VU_F_PROTOCOL_FEATURES));
	assert(send_msg(VU_GET_PROTOCOL_FEATURES, NULL, 0, NULL, 0) == 0);
	assert(reply_u64_of(VU_GET_PROTOCOL_FEATURES) &
	       (1ull << VU_PROTOCOL_F_REPLY_ACK));
	assert(send_msg(VU_GET_QUEUE_NUM, NULL, 0, NULL, 0) == 0);
	assert(reply_u64_of(VU_GET_QUEUE_NUM) == 2);

	/* NEED_REPLY before REPLY_ACK is negotiated: no acknowledgement. */
	assert(send_raw(VU_SET_OWNER, VU_VERSION | VU_FLAG_NEED_REPLY, NULL, 0,
			0, NULL, 0) == 0);
	assert(reply.len_bytes == 0);
	/* An unknown request without an acknowledgement to carry the
	 * failure ends the connection; its descriptor is closed. */
	fd = new_eventfd();
	assert(send_msg(99, NULL, 0, &fd, 1) == -ENOTSUP);
	assert(!fd_open(fd));
	/* SET_LOG_FD (migration is not supported) likewise. */
	fd = new_eventfd();
	assert(send_msg(VU_SET_LOG_FD, NULL, 0, &fd, 1) == -ENOTSUP);
	assert(!fd_open(fd));

	negotiate_ack();
	assert(send_raw(VU_SET_OWNER, VU_VERSION | VU_FLAG_NEED_REPLY, NULL, 0,
			0, NULL, 0) == 0);
	assert(reply_u64_of(VU_SET_OWNER) == 0);
	assert(send_raw(99, VU_VERSION | VU_FLAG_NEED_REPLY, NULL, 0, 0, NULL,
			0) == 0);
	assert(reply_u64_of(99) != 0);
	/* A GET request answers once: its reply, no acknowledgement. */
	assert(send_raw(VU_GET_QUEUE_NUM, VU_VERSION | VU_FLAG_NEED_REPLY,
			NULL, 0, 0, NULL, 0) == 0);
	assert(reply_u64_of(VU_GET_QUEUE_NUM) == 2);
	/* Features we did not offer, or legacy (no VERSION_1). */
	assert(send_u64(VU_SET_FEATURES, 1ull << 60) == -EINVAL);
	assert(send_u64(VU_SET_FEATURES, 0) == -EINVAL);
}

static void test_vring_values(void)
{
	static const uint32_t bad_num[] = { 0, 3, 100, 1023, 2048, 65536,
					    UINT32_MAX };
	uint64_t v;
	int fds[2];

	fresh(2);
	for (size_t i = 0; i < sizeof(bad_num) / sizeof(bad_num[0]); i++)
		assert(send_state(VU_SET_VRING_NUM, 0, bad_num[i]) == -EINVAL);
	assert(send_state(VU_SET_VRING_NUM, 0, 256) == 0);
	assert(send_state(VU_SET_VRING_NUM, 1, 1) == 0);
	assert(send_state(VU_SET_VRING_NUM, 1, VQ_MAX_SIZE) == 0);
	/* Ring 2 does not exist (two queues), nor does 2^32 - 1. */
	assert(send_state(VU_SET_VRING_NUM, 2, 8) == -EINVAL);
	assert(send_state(VU_SET_VRING_NUM, UINT32_MAX, 8) == -EINVAL);
	assert(send_state(VU_SET_VRING_BASE, 0, 65536) == -EINVAL);
	assert(send_state(VU_SET_VRING_ENABLE, 9, 1) == -EINVAL);
	assert(send_state(VU_GET_VRING_BASE, 9, 0) == -EINVAL);

	/* Kick descriptors: exactly one, unless NOFD says none. */
	assert(send_u64(VU_SET_VRING_KICK, 0) == -EPROTO);
	fds[0] = new_eventfd();
	fds[1] = new_eventfd();
	v = 0;
	assert(send_msg(VU_SET_VRING_KICK, &v, 8, fds, 2) == -EPROTO);
	assert(!fd_open(fds[0]) && !fd_open(fds[1]));
	fds[0] = new_eventfd();
	v = VU_VRING_NOFD;
	assert(send_msg(VU_SET_VRING_CALL, &v, 8, fds, 1) == -EPROTO);
	assert(!fd_open(fds[0]));
	/* A ring index we do not have: refused, descriptor closed. */
	fds[0] = new_eventfd();
	v = 7;
	assert(send_msg(VU_SET_VRING_CALL, &v, 8, fds, 1) == -EINVAL);
	assert(!fd_open(fds[0]));
	/* With an acknowledgement asked for, the same failures are
	 * answered with a nonzero one and the connection goes on. */
	negotiate_ack();
	assert(send_raw(VU_SET_VRING_NUM, VU_VERSION | VU_FLAG_NEED_REPLY,
			(uint32_t[]){ 0, 3 }, 8, 8, NULL, 0) == 0);
	assert(reply_u64_of(VU_SET_VRING_NUM) == 1);
	assert(send_raw(VU_SET_VRING_NUM, VU_VERSION | VU_FLAG_NEED_REPLY,
			(uint32_t[]){ 0, 64 }, 8, 8, NULL, 0) == 0);
	assert(reply_u64_of(VU_SET_VRING_NUM) == 0);
	/* GET_VRING_BASE of a ring that never ran: the base it was given. */
	assert(send_state(VU_SET_VRING_BASE, 1, 42) == 0);
	assert(send_state(VU_GET_VRING_BASE, 1, 0) == 0);
	assert(reply.len_bytes == VU_HDR_BYTES + 8);
	assert(get_le32(reply.bytes + VU_HDR_BYTES) == 1);
	assert(get_le32(reply.bytes + VU_HDR_BYTES + 4) == 42);
}

static void test_config(void)
{
	struct {
		uint32_t offset, size, flags;
		uint8_t data[VBLK_CONFIG_BYTES];
	} c = { .size = VBLK_CONFIG_BYTES };
	uint32_t big[3] = { 0, VU_MAX_PAYLOAD, 0 };

	fresh(1);
	assert(send_msg(VU_GET_CONFIG, &c, sizeof(c), NULL, 0) == 0);
	assert(reply.len_bytes == VU_HDR_BYTES + sizeof(c));
	/* capacity, in 512-byte sectors, is the first field. */
	assert(get_le64(reply.bytes + VU_HDR_BYTES + 12) == DISK_BYTES / 512);
	/* Past the config space: zeroes, as many as asked. */
	c.offset = 1000;
	c.size = 16;
	assert(send_msg(VU_GET_CONFIG, &c, 12 + 16, NULL, 0) == 0);
	assert(reply.len_bytes == VU_HDR_BYTES + 12 + 16);
	for (int i = 0; i < 16; i++)
		assert(reply.bytes[VU_HDR_BYTES + 12 + i] == 0);
	c.offset = UINT32_MAX;
	assert(send_msg(VU_GET_CONFIG, &c, 12 + 16, NULL, 0) == 0);
	/* A size that does not match the payload, or larger than any. */
	c.offset = 0;
	c.size = 60;
	assert(send_msg(VU_GET_CONFIG, &c, 12 + 8, NULL, 0) == -EPROTO);
	assert(send_msg(VU_GET_CONFIG, big, sizeof(big), NULL, 0) == -EPROTO);
	assert(send_msg(VU_SET_CONFIG, big, sizeof(big), NULL, 0) == -EPROTO);
	c.size = 1;
	assert(send_msg(VU_SET_CONFIG, &c, 13, NULL, 0) == 0);
}

static void test_mem_table(void)
{
	int fds[3];

	fresh(1);
	/* No regions, or more descriptors than regions, or fewer. */
	fds[0] = new_memfd(MEM_BYTES);
	assert(send_mem_table(MEM_BYTES, 0, fds, 0, 1) == -EPROTO);
	assert(!fd_open(fds[0]));
	fds[0] = new_memfd(MEM_BYTES);
	assert(send_mem_table(MEM_BYTES, 0, fds, 2, 1) == -EPROTO);
	assert(!fd_open(fds[0]));
	assert(send_mem_table(MEM_BYTES, 0, fds, 9, 0) == -EPROTO);
	/* A region larger than its file: mapping it would SIGBUS later. */
	fds[0] = new_memfd(MEM_BYTES);
	assert(send_mem_table(2 * MEM_BYTES, 0, fds, 1, 1) == -EINVAL);
	assert(!fd_open(fds[0]));
	fds[0] = new_memfd(MEM_BYTES);
	assert(send_mem_table(MEM_BYTES, 4096, fds, 1, 1) == -EINVAL);
	/* mmap_offset + size wraps. */
	fds[0] = new_memfd(MEM_BYTES);
	assert(send_mem_table(MEM_BYTES, UINT64_MAX - 100, fds, 1, 1) ==
	       -EINVAL);
	/* Empty region, and memory that is not a file. */
	fds[0] = new_memfd(MEM_BYTES);
	assert(send_mem_table(0, 0, fds, 1, 1) == -EINVAL);
	fds[0] = new_eventfd();
	assert(send_mem_table(MEM_BYTES, 0, fds, 1, 1) == -EINVAL);
	assert(!fd_open(fds[0]));
	/* Good tables: one region, then three at an offset each. The
	 * descriptors are not kept (the mappings are). */
	fds[0] = new_memfd(MEM_BYTES);
	assert(send_mem_table(MEM_BYTES, 0, fds, 1, 1) == 0);
	assert(!fd_open(fds[0]));
	for (int i = 0; i < 3; i++)
		fds[i] = new_memfd(MEM_BYTES + 4096);
	assert(send_mem_table(MEM_BYTES, 4096, fds, 3, 3) == 0);
	/* A failed table leaves none: even the second region's failure
	 * unmaps the first. */
	fds[0] = new_memfd(MEM_BYTES);
	fds[1] = new_memfd(4096);
	assert(send_mem_table(MEM_BYTES, 0, fds, 2, 2) == -EINVAL);
	assert(!fd_open(fds[0]) && !fd_open(fds[1]));
}

/* Waits for the call eventfd, at most 60 s: the bound only guards a
 * hang, and a loaded machine (or TSan) is many times slower. */
static void wait_call(int call_fd)
{
	struct pollfd p = { .fd = call_fd, .events = POLLIN };
	uint64_t v;

	assert(poll(&p, 1, 60000) == 1);
	assert(read(call_fd, &v, 8) == 8);
}

/* A whole ring over a memfd: a GET_ID request runs once the messages
 * are in, ring addresses outside memory are refused, and GET_VRING_BASE
 * reports how far the ring got. */
static void test_ring_runs(void)
{
	struct vmm_mem mem = { 0 };
	struct vdrv_queue q;
	uint8_t *host;
	uint64_t f;
	int mfd, kick, call, dup_kick;
	void *cookie;
	uint32_t len;
	struct {
		uint32_t index, flags;
		uint64_t desc, used, avail, log;
	} a = { 0 };

	fresh(1);
	mfd = new_memfd(MEM_BYTES);
	host = mmap(NULL, MEM_BYTES, PROT_READ | PROT_WRITE, MAP_SHARED, mfd,
		    0);
	assert(host != MAP_FAILED);
	assert(vmm_mem_add(&mem, GPA, MEM_BYTES, host, UVA) == 0);
	assert(vdrv_init(&q, &mem, 8, GPA, 0, false) == 0);

	assert(send_msg(VU_GET_FEATURES, NULL, 0, NULL, 0) == 0);
	f = reply_u64_of(VU_GET_FEATURES);
	f &= (1ull << VIRTIO_F_VERSION_1) | (1ull << VU_F_PROTOCOL_FEATURES);
	assert(send_u64(VU_SET_FEATURES, f) == 0);
	assert(send_mem_table(MEM_BYTES, 0, (int[]){ mfd }, 1, 1) == 0);
	assert(!fd_open(mfd));
	assert(send_state(VU_SET_VRING_NUM, 0, 8) == 0);
	assert(send_state(VU_SET_VRING_BASE, 0, 0) == 0);
	kick = new_eventfd();
	call = new_eventfd();
	dup_kick = dup(kick);
	assert(send_msg(VU_SET_VRING_KICK, (uint64_t[]){ 0 }, 8, &kick, 1) ==
	       0);
	assert(fd_open(kick)); /* kept: the ring waits on it */
	assert(send_msg(VU_SET_VRING_CALL, (uint64_t[]){ 0 }, 8, &call, 1) ==
	       0);
	/* Ring addresses outside memory are only looked at when the ring
	 * could start: here, when it is enabled (PROTOCOL_FEATURES was
	 * negotiated), which then fails. */
	a.desc = UVA + MEM_BYTES;
	a.avail = UVA + (q.avail_gpa - GPA);
	a.used = UVA + (q.used_gpa - GPA);
	assert(send_msg(VU_SET_VRING_ADDR, &a, sizeof(a), NULL, 0) == 0);
	assert(send_state(VU_SET_VRING_ENABLE, 0, 1) == -EFAULT);
	/* Enabled now: a used ring straddling the end of memory is refused
	 * at once. */
	a.desc = UVA;
	a.used = UVA + MEM_BYTES - 8;
	assert(send_msg(VU_SET_VRING_ADDR, &a, sizeof(a), NULL, 0) == -EFAULT);

	/* GET_ID: header, 20-byte buffer, status. */
	uint64_t hdr_gpa = GPA + 0x8000, id_gpa = GPA + 0x8100;
	uint64_t st_gpa = GPA + 0x8200;
	uint8_t *hdr = vmm_mem_gpa(&mem, hdr_gpa, 16);
	struct vdrv_buf bufs[3] = {
		{ hdr_gpa, 16, false },
		{ id_gpa, VIRTIO_BLK_ID_BYTES, true },
		{ st_gpa, 1, true },
	};

	put_le32(hdr, VIRTIO_BLK_T_GET_ID);
	*(uint8_t *)vmm_mem_gpa(&mem, st_gpa, 1) = 0xff;
	assert(vdrv_add(&q, bufs, 3, false, (void *)1) == 0);
	/* Good addresses: the ring starts and serves what is already
	 * available, kicked or not. */
	a.used = UVA + (q.used_gpa - GPA);
	assert(send_msg(VU_SET_VRING_ADDR, &a, sizeof(a), NULL, 0) == 0);
	assert(write(dup_kick, &(uint64_t){ 1 }, 8) == 8);
	wait_call(call);
	assert(vdrv_get_used(&q, &cookie, &len) == 1);
	assert(cookie == (void *)1);
	assert(*(uint8_t *)vmm_mem_gpa(&mem, st_gpa, 1) == VIRTIO_BLK_S_OK);
	assert(memcmp(vmm_mem_gpa(&mem, id_gpa, 10), "vhost-test", 10) == 0);

	/* SET_FEATURES again while the ring runs: the ring is stopped for
	 * the change and goes on serving from where it was. */
	assert(send_u64(VU_SET_FEATURES, f) == 0);
	*(uint8_t *)vmm_mem_gpa(&mem, st_gpa, 1) = 0xff;
	memset(vmm_mem_gpa(&mem, id_gpa, 10), 0, 10);
	assert(vdrv_add(&q, bufs, 3, false, (void *)2) == 0);
	assert(write(dup_kick, &(uint64_t){ 1 }, 8) == 8);
	wait_call(call);
	assert(vdrv_get_used(&q, &cookie, &len) == 1);
	assert(cookie == (void *)2);
	assert(*(uint8_t *)vmm_mem_gpa(&mem, st_gpa, 1) == VIRTIO_BLK_S_OK);
	assert(memcmp(vmm_mem_gpa(&mem, id_gpa, 10), "vhost-test", 10) == 0);

	/* GET_VRING_BASE stops the ring and closes its kick descriptor. */
	assert(send_state(VU_GET_VRING_BASE, 0, 0) == 0);
	assert(get_le32(reply.bytes + VU_HDR_BYTES + 4) == 2);
	assert(!fd_open(kick));
	/* The connection ends: the call descriptor goes too. */
	vu_server_reset(srv);
	assert(!fd_open(call));
	close(dup_kick);
	munmap(host, MEM_BYTES);
}

/* Replays one reproducer of fuzz-vhost-user through the fuzz target. */
static void replay_vhost_user(const char *path)
{
	static uint8_t buf[1 << 16];

	fuzz_vhost_user_one(buf, regress_read(path, buf, sizeof(buf)));
}

int main(void)
{
	char path[] = "/tmp/test-vhost-user-XXXXXX";
	struct img_open_opts o = { .format = IMG_FORMAT_RAW };
	struct img_err err;
	size_t nb_replayed;
	int fd;

	/* Every refusal is logged; the assertions say what matters. */
	log_set_level(LOG_EMERG - 1);
	fd = mkstemp(path);
	assert(fd >= 0 && ftruncate(fd, DISK_BYTES) == 0);
	close(fd);
	assert(img_open(path, &o, &img, &err) == 0);
	unlink(path);

	test_framing();
	test_replies_and_acks();
	test_vring_values();
	test_config();
	test_mem_table();
	test_ring_runs();
	vu_server_free(srv);
	vblk_free(vblk);
	img_close(img);

	nb_replayed = for_each_regress_file("fuzz-vhost-user",
					    replay_vhost_user);
	printf("vhost-user: all cases passed; %zu fuzz reproducers replayed\n",
	       nb_replayed);
	return 0;
}
