/* guest-driver.h: the guest side of a split virtqueue, a minimal driver
 * for the test VMM (imgvmm.c: its verified workloads and its benchmark)
 * and the vmm unit tests. It is not part of the layer's public interface
 * (include/vmm.h): nothing outside vmm/ and its tests plays a guest. It
 * trusts the device as little as the device trusts it: used ids and
 * lengths are checked.
 */
#ifndef IMGFS_VMM_GUEST_DRIVER_H
#define IMGFS_VMM_GUEST_DRIVER_H

#include "vmm.h"

struct vdrv_buf {
	uint64_t gpa;
	uint32_t len_bytes;
	bool device_writable;
};

struct vdrv_queue {
	const struct vmm_mem *mem;
	unsigned size;
	uint8_t *desc, *avail, *used;
	uint64_t desc_gpa, avail_gpa, used_gpa;
	/* size indirect tables of max_indirect entries each, one per head */
	uint64_t indirect_gpa;
	uint8_t *indirect;
	unsigned max_indirect;
	bool event_idx;
	uint16_t avail_idx;
	uint16_t last_used_idx;
	uint16_t free_head;
	unsigned nb_free;
	uint16_t next_free[VQ_MAX_SIZE];
	uint16_t nb_descs[VQ_MAX_SIZE]; /* 0: head not in flight */
	void *cookie[VQ_MAX_SIZE];
};

/* Bytes of guest memory vdrv_init needs at ring_gpa (rings and indirect
 * tables), 4 KiB aligned. */
uint64_t vdrv_ring_area_bytes(unsigned size, unsigned max_indirect);
/* Lays the queue out at ring_gpa (16-byte aligned) and zeroes it. */
int vdrv_init(struct vdrv_queue *q, const struct vmm_mem *mem, unsigned size,
	      uint64_t ring_gpa, unsigned max_indirect, bool event_idx);
/* Makes a request available; indirect uses a table of its own. -ENOSPC
 * when the ring is full, -EINVAL for nb_bufs out of range. */
int vdrv_add(struct vdrv_queue *q, const struct vdrv_buf *bufs,
	     unsigned nb_bufs, bool indirect, void *cookie);
/* After adds: true when the device wants a kick. */
bool vdrv_kick_needed(struct vdrv_queue *q, uint16_t old_avail_idx);
/* Takes one completion: 1 with *cookie_r and *len_r, 0 when none, -EIO
 * when the device returned an id that is not in flight. */
int vdrv_get_used(struct vdrv_queue *q, void **cookie_r, uint32_t *len_r);
/* Asks for an interrupt at the next completion (event idx), and returns
 * true if one arrived meanwhile. */
bool vdrv_enable_cb(struct vdrv_queue *q);

#endif
