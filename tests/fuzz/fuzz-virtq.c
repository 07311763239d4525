/* fuzz-virtq.c: libFuzzer target for the virtqueue and virtio-blk request
 * parsing (vmm/virtq.c, vmm/virtio-blk.c).
 *
 * The input becomes guest memory as it is: the first bytes choose the
 * queue size, the negotiated features and where the rings lie; the rest is
 * copied into a 64 KiB guest buffer (split in two regions, adjacent in
 * guest-physical space but apart on the host, so the split path runs), so
 * descriptor tables, indirect tables, available ring and request headers
 * are all arbitrary. The device runs every available request against a
 * small raw image in /dev/shm. The guest buffers are heap allocations of
 * exactly their size, so any access outside them is an ASan report.
 *
 * Checked after each run: a failed run has broken the queue, a broken
 * queue stays broken and answers nothing more, and the used index moved
 * by exactly the number of requests answered.
 */
#include "vmm.h"
#include "imgfmt.h"

#include "endian.h"

#include <errno.h>
#include <fcntl.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#define GUEST_BYTES (64u << 10)
#define HALF (GUEST_BYTES / 2)
#define GPA_BASE 0x10000ull
#define DISK_BYTES (256u << 10)

static struct img *img;

static void init_image(void)
{
	char path[] = "/dev/shm/fuzz-virtq-XXXXXX";
	struct img_open_opts o = { .format = IMG_FORMAT_RAW };
	struct img_err err;
	int fd = mkstemp(path);

	if (fd < 0 || ftruncate(fd, DISK_BYTES) < 0)
		abort();
	close(fd);
	if (img_open(path, &o, &img, &err) < 0) {
		fprintf(stderr, "fuzz-virtq: %s\n", err.msg);
		abort();
	}
	/* The open handle keeps the file; nothing is left behind. */
	unlink(path);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	struct vblk_opts vo = { .serial = "fuzz", .queue_size = 256 };
	struct vmm_mem mem = { 0 };
	uint8_t *a, *b;
	struct vblk *vblk;
	struct vq vq;
	unsigned qsize;
	uint64_t features;
	size_t off;
	bool notify;
	int ret;

	if (!img)
		init_image();
	if (size < 8)
		return 0;
	/* 1..256 entries: small sizes make loops and wraps likely. */
	qsize = 1 + data[0];
	if (vblk_new(img, &vo, &vblk) < 0)
		abort();
	features = vblk_features(vblk) &
		   ~(((uint64_t)data[1] << 26) & (0x3full << 26));
	features |= 1ull << VIRTIO_F_VERSION_1;
	features &= ~((data[2] & 1) ? 1ull << VIRTIO_BLK_F_DISCARD : 0);
	vblk_set_features(vblk, features);

	a = malloc(HALF);
	b = malloc(HALF);
	memset(a, 0, HALF);
	memset(b, 0, HALF);
	off = 8;
	for (size_t i = 0; i < GUEST_BYTES && off < size; i++, off++)
		(i < HALF ? a : b)[i % HALF] = data[off];
	vmm_mem_add(&mem, GPA_BASE, HALF, a, 0);
	vmm_mem_add(&mem, GPA_BASE + HALF, HALF, b, 0);

	/* Rings at fixed, aligned places in the first half; everything
	 * they point to is up to the input. */
	uint8_t *desc = a, *avail = a + (get_le16(data + 3) % 8) * 2048;
	uint8_t *used = a + 0x4000;
	if (vq_init(&vq, &mem, qsize, desc, avail, used, data[5],
		    features) == 0) {
		uint16_t used_before = vq.used_idx;
		for (int round = 0; round < 2; round++) {
			bool was_broken = vq.broken;
			uint64_t before = vq.stats.nb_requests;

			ret = vblk_process(vblk, &vq, &notify);
			if (ret < 0 && !vq.broken)
				abort();
			/* Broken stays broken and answers nothing. */
			if (was_broken &&
			    (ret != -EIO || vq.stats.nb_requests != before))
				abort();
			if (ret >= 0 &&
			    vq.stats.nb_requests - before != (uint64_t)ret)
				abort();
			/* Each answer is one used entry, counted once (the
			 * memory copy of the index may be overwritten by the
			 * guest's own buffers: compare ours). */
			if ((uint16_t)(vq.used_idx - used_before) !=
			    (uint16_t)vq.stats.nb_requests)
				abort();
		}
	}
	vblk_free(vblk);
	free(a);
	free(b);
	return 0;
}
