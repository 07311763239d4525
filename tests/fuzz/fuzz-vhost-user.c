/* fuzz-vhost-user.c: libFuzzer target for the vhost-user message handling
 * (vmm/vhost-user.c, through vu_dispatch() in vmm/vhost-user.h).
 *
 * The input is a front end's side of a connection: a sequence of messages
 * with their descriptors, applied to a fresh back end over a small raw
 * image in /dev/shm. Layout:
 *
 *   u8  nb_queues - 1 (mod 4)
 *   u16 template length T (LE, mod 4097), then T bytes: what memfds of a
 *       "filled" kind hold at offset 0 (rings and requests, when the
 *       messages place rings there)
 *   then messages, each
 *     u8  request code (any, so unknown ones too)
 *     u8  flags: bits 0-3 XOR VU_VERSION go in the header (so 0 is a
 *         plain version-1 message, 8 asks for REPLY_ACK); bit 7 makes the
 *         header claim one payload byte more than is sent (truncated)
 *     u8  descriptors: bits 0-2 how many (7 means 9, more than any message
 *         may carry), bits 3-7 their kind (see make_fd)
 *     u16 payload size (LE, mod 8192: beyond VU_MAX_PAYLOAD too), then
 *         that many payload bytes (fewer at the end of the input)
 *
 * The descriptors are the harness's own memfds (sized 4 KiB to 512 KiB,
 * empty or filled with the template, or of size 0), eventfds, and a
 * non-mappable one (/dev/null), so SET_MEM_TABLE meets regions larger
 * than their file, offsets past it, and memory that cannot be mapped;
 * KICK/CALL/ERR meet memfds as well as eventfds. When vu_dispatch ends
 * the connection, the back end is reset as vu_serve does and the next
 * message starts a new connection. Rings that start really run, in their
 * threads, on whatever the template put in memory.
 *
 * Checked per message: a reply only when the connection goes on; a GET
 * request that succeeds always replies; otherwise a reply is an 8-byte
 * acknowledgement of a message that asked for one; every reply header is
 * the request's code, version 1 with the REPLY flag, and its true size.
 * Checked per input: once the back end is freed, every descriptor it was
 * given is closed (no leak), and ASan/LSan see the rest.
 *
 * Bounds: at most FUZZ_MAX_MSGS messages and FUZZ_MAX_FDS descriptors
 * per input, memfds at most 512 KiB.
 *
 * FUZZ_NO_MAIN_ENTRY lets a unit test include this file and call
 * fuzz_vhost_user_one() itself (tests/unit/test-vhost-user.c replays
 * tests/fuzz/regress/fuzz-vhost-user through it).
 */
#include "vhost-user.h"
#include "imgfmt.h"
#include "log.h"

#include <errno.h>
#include <fcntl.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/eventfd.h>
#include <sys/mman.h>
#include <unistd.h>

#define FUZZ_MAX_MSGS 128
#define FUZZ_MAX_FDS 64
#define FUZZ_TEMPLATE_MAX 4096
#define FUZZ_DISK_BYTES (256u << 10)

static struct img *fuzz_img;

static void fuzz_init(void)
{
	char path[] = "/dev/shm/fuzz-vhost-user-XXXXXX";
	struct img_open_opts o = { .format = IMG_FORMAT_RAW };
	struct img_err err;
	int fd = mkstemp(path);

	if (fd < 0 || ftruncate(fd, FUZZ_DISK_BYTES) < 0)
		abort();
	close(fd);
	if (img_open(path, &o, &fuzz_img, &err) < 0) {
		fprintf(stderr, "fuzz-vhost-user: %s\n", err.msg);
		abort();
	}
	/* The open handle keeps the file; nothing is left behind. */
	unlink(path);
	/* Every refused message is logged: too slow, and not the point. */
	log_set_level(LOG_EMERG - 1);
}

/* One descriptor of the given kind (0-31), or -1 if it cannot be made.
 *   0-7   memfd of 4 KiB << kind, the template at its start
 *   8-15  memfd of 4 KiB << (kind - 8), zeroes
 *   16-27 eventfd
 *   28-29 /dev/null (not mappable, not an eventfd)
 *   30-31 memfd of 0 bytes */
static int make_fd(unsigned kind, const uint8_t *tmpl, size_t tmpl_len)
{
	int fd;

	if (kind >= 16 && kind <= 27)
		return eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
	if (kind == 28 || kind == 29)
		return open("/dev/null", O_RDWR | O_CLOEXEC);
	fd = memfd_create("fuzz-vhost-user", MFD_CLOEXEC);
	if (fd < 0 || kind >= 30)
		return fd;
	size_t bytes = 4096u << (kind & 7);
	if (ftruncate(fd, (off_t)bytes) < 0)
		abort();
	if (kind < 8 && tmpl_len &&
	    pwrite(fd, tmpl, tmpl_len < bytes ? tmpl_len : bytes, 0) < 0)
		abort();
	return fd;
}

static bool is_get(uint32_t request)
{
	return request == VU_GET_FEATURES || request == VU_GET_VRING_BASE ||
	       request == VU_GET_PROTOCOL_FEATURES ||
	       request == VU_GET_QUEUE_NUM || request == VU_GET_CONFIG;
}

/* Aborts unless the outcome of one message keeps vhost-user.h's word. */
static void check_reply(uint32_t request, uint32_t flags, int ret,
			const struct vu_reply *reply)
{
	uint32_t hdr[3];

	if (ret < 0) {
		if (reply->len_bytes)
			abort(); /* nothing is sent on a dropped connection */
		return;
	}
	if (reply->len_bytes == 0) {
		if (is_get(request))
			abort(); /* a GET that succeeded answers */
		return;
	}
	if (reply->len_bytes < VU_HDR_BYTES ||
	    reply->len_bytes > VU_HDR_BYTES + VU_MAX_PAYLOAD)
		abort();
	memcpy(hdr, reply->bytes, sizeof(hdr));
	if (hdr[0] != request || hdr[1] != (VU_VERSION | VU_FLAG_REPLY) ||
	    hdr[2] != reply->len_bytes - VU_HDR_BYTES)
		abort();
	/* Anything else is an acknowledgement the front end asked for. */
	if (!is_get(request) &&
	    (hdr[2] != 8 || !(flags & VU_FLAG_NEED_REPLY)))
		abort();
}

int fuzz_vhost_user_one(const uint8_t *data, size_t size);
int fuzz_vhost_user_one(const uint8_t *data, size_t size)
{
	static uint8_t msg[VU_HDR_BYTES + 8192];
	static struct vu_reply reply;
	int given[FUZZ_MAX_FDS];
	unsigned nb_given = 0;
	struct vblk_opts vo = { .serial = "fuzz" };
	struct vu_server *s;
	struct vblk *vblk;
	const uint8_t *tmpl;
	size_t off, tmpl_len;

	if (!fuzz_img)
		fuzz_init();
	if (size < 3)
		return 0;
	vo.nb_queues = 1 + data[0] % 4;
	tmpl_len = (data[1] | (size_t)data[2] << 8) % (FUZZ_TEMPLATE_MAX + 1);
	off = 3;
	if (tmpl_len > size - off)
		tmpl_len = size - off;
	tmpl = data + off;
	off += tmpl_len;
	if (vblk_new(fuzz_img, &vo, &vblk) < 0 || vu_server_new(vblk, &s) < 0)
		abort();

	for (int nb_msgs = 0; nb_msgs < FUZZ_MAX_MSGS && size - off >= 5;
	     nb_msgs++) {
		uint32_t request = data[off], flags = data[off + 1] & 0x0f;
		bool truncated = data[off + 1] & 0x80;
		unsigned spec = data[off + 2], nb_fds = spec & 7;
		size_t len = (data[off + 3] | (size_t)data[off + 4] << 8) % 8192;
		uint32_t hdr_size;
		int fds[9];
		int ret;

		off += 5;
		if (len > size - off)
			len = size - off; /* the input ran out: truncated */
		flags ^= VU_VERSION;
		hdr_size = (uint32_t)len + truncated;
		memcpy(msg, &request, 4);
		memcpy(msg + 4, &flags, 4);
		memcpy(msg + 8, &hdr_size, 4);
		memcpy(msg + VU_HDR_BYTES, data + off, len);
		off += len;

		if (nb_fds == 7)
			nb_fds = 9;
		if (nb_given + nb_fds > FUZZ_MAX_FDS)
			nb_fds = 0;
		for (unsigned i = 0; i < nb_fds; i++) {
			fds[i] = make_fd(spec >> 3, tmpl, tmpl_len);
			if (fds[i] < 0)
				abort();
			given[nb_given++] = fds[i];
		}
		ret = vu_dispatch(s, msg, VU_HDR_BYTES + len, fds, nb_fds,
				  &reply);
		check_reply(request, flags, ret, &reply);
		if (ret < 0)
			vu_server_reset(s); /* a new connection, as vu_serve */
	}
	vu_server_free(s);
	vblk_free(vblk);
	/* Nothing the back end was given may outlive it. The numbers may
	 * have been reused within the input, but by the harness's own
	 * descriptors only, which were all handed over too. */
	for (unsigned i = 0; i < nb_given; i++)
		if (fcntl(given[i], F_GETFD) != -1) {
			fprintf(stderr, "fuzz-vhost-user: descriptor %d "
				"leaked\n", given[i]);
			abort();
		}
	return 0;
}

#ifndef FUZZ_NO_MAIN_ENTRY
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	return fuzz_vhost_user_one(data, size);
}
#endif
