/* guest-driver.c: the driver half of a split virtqueue, for the test VMM.
 *
 * The test VMM plays the guest: it puts requests on the available ring
 * and takes completions from the used ring, exactly as a virtio driver
 * would (virtio 1.x 2.7.13), so the device model sees nothing it would
 * not see from Linux. Direct chains come from a free list of descriptors;
 * indirect chains use a table that belongs to their head descriptor, so
 * no allocation happens per request.
 *
 * The device is not trusted either: a used id that is not in flight is
 * reported (-EIO), not followed.
 */
#include "guest-driver.h"

#include "checked.h"
#include "endian.h"

#include <errno.h>
#include <string.h>

uint64_t vdrv_ring_area_bytes(unsigned size, unsigned max_indirect)
{
	uint64_t n = vq_desc_bytes(size);

	n = align_up(n + vq_avail_bytes(size), 64);
	n = align_up(n + vq_used_bytes(size), 64);
	n += 16ull * size * max_indirect;
	return align_up(n, 4096);
}

int vdrv_init(struct vdrv_queue *q, const struct vmm_mem *mem, unsigned size,
	      uint64_t ring_gpa, unsigned max_indirect, bool event_idx)
{
	uint64_t total = vdrv_ring_area_bytes(size, max_indirect);
	uint8_t *base;

	if (size == 0 || size > VQ_MAX_SIZE || ring_gpa % 16)
		return -EINVAL;
	base = vmm_mem_gpa(mem, ring_gpa, total);
	if (!base)
		return -EFAULT;
	memset(q, 0, sizeof(*q));
	memset(base, 0, total);
	q->mem = mem;
	q->size = size;
	q->desc_gpa = ring_gpa;
	q->avail_gpa = align_up(q->desc_gpa + vq_desc_bytes(size), 64);
	q->used_gpa = align_up(q->avail_gpa + vq_avail_bytes(size), 64);
	q->indirect_gpa = align_up(q->used_gpa + vq_used_bytes(size), 64);
	q->desc = base;
	q->avail = base + (q->avail_gpa - ring_gpa);
	q->used = base + (q->used_gpa - ring_gpa);
	q->indirect = base + (q->indirect_gpa - ring_gpa);
	q->max_indirect = max_indirect;
	q->event_idx = event_idx;
	for (unsigned i = 0; i < size; i++)
		q->next_free[i] = (uint16_t)(i + 1);
	q->nb_free = size;
	return 0;
}

static void write_desc(uint8_t *table, unsigned i, const struct vdrv_buf *b,
		       uint16_t flags, uint16_t next)
{
	uint8_t *p = table + 16ull * i;

	put_le64(p, b->gpa);
	put_le32(p + 8, b->len_bytes);
	put_le16(p + 12, flags | (b->device_writable ? VRING_DESC_F_WRITE : 0));
	put_le16(p + 14, next);
}

int vdrv_add(struct vdrv_queue *q, const struct vdrv_buf *bufs,
	     unsigned nb_bufs, bool indirect, void *cookie)
{
	unsigned need = indirect ? 1 : nb_bufs;
	uint16_t head = q->free_head, i = head, slot;

	if (nb_bufs == 0 || (indirect && nb_bufs > q->max_indirect))
		return -EINVAL;
	if (need > q->nb_free)
		return -ENOSPC;
	if (indirect) {
		uint8_t *table = q->indirect + 16ull * q->max_indirect * head;
		struct vdrv_buf tb = {
			.gpa = q->indirect_gpa + 16ull * q->max_indirect * head,
			.len_bytes = 16 * nb_bufs,
		};

		for (unsigned k = 0; k < nb_bufs; k++)
			write_desc(table, k, &bufs[k],
				   k + 1 < nb_bufs ? VRING_DESC_F_NEXT : 0,
				   (uint16_t)(k + 1));
		write_desc(q->desc, head, &tb, VRING_DESC_F_INDIRECT, 0);
		q->free_head = q->next_free[head];
	} else {
		for (unsigned k = 0; k < nb_bufs; k++) {
			uint16_t nxt = q->next_free[i];

			write_desc(q->desc, i, &bufs[k],
				   k + 1 < nb_bufs ? VRING_DESC_F_NEXT : 0,
				   nxt);
			if (k + 1 < nb_bufs)
				i = nxt;
		}
		q->free_head = q->next_free[i];
	}
	q->nb_free -= need;
	q->nb_descs[head] = (uint16_t)need;
	q->cookie[head] = cookie;
	slot = q->avail_idx % q->size;
	put_le16(q->avail + 4 + 2 * slot, head);
	q->avail_idx++;
	/* The ring entry (and the descriptors) before the index. */
	__atomic_store_n((uint16_t *)(void *)(q->avail + 2),
			 htole16(q->avail_idx), __ATOMIC_RELEASE);
	return 0;
}

bool vdrv_kick_needed(struct vdrv_queue *q, uint16_t old_avail_idx)
{
	uint16_t now = q->avail_idx, event;

	__atomic_thread_fence(__ATOMIC_SEQ_CST);
	if (!q->event_idx)
		return !(get_le16(q->used) & VRING_USED_F_NO_NOTIFY);
	event = le16toh(__atomic_load_n(
		(uint16_t *)(void *)(q->used + 4 + 8 * q->size),
		__ATOMIC_ACQUIRE));
	return (uint16_t)(now - event - 1) < (uint16_t)(now - old_avail_idx);
}

int vdrv_get_used(struct vdrv_queue *q, void **cookie_r, uint32_t *len_r)
{
	uint16_t used_idx = le16toh(__atomic_load_n(
		(uint16_t *)(void *)(q->used + 2), __ATOMIC_ACQUIRE));
	const uint8_t *e;
	uint32_t id;
	unsigned n;

	if (used_idx == q->last_used_idx)
		return 0;
	e = q->used + 4 + 8 * (q->last_used_idx % q->size);
	id = get_le32(e);
	if (id >= q->size || q->nb_descs[id] == 0)
		return -EIO;
	*len_r = get_le32(e + 4);
	*cookie_r = q->cookie[id];
	q->last_used_idx++;
	/* Give the chain's descriptors back to the free list. */
	n = q->nb_descs[id];
	q->nb_descs[id] = 0;
	{
		/* A chain's descriptors were taken in free-list order and
		 * next_free still links them: no need to trust the table. */
		uint16_t last = (uint16_t)id;

		for (unsigned k = 1; k < n; k++)
			last = q->next_free[last];
		q->next_free[last] = q->free_head;
	}
	q->free_head = (uint16_t)id;
	q->nb_free += n;
	return 1;
}

bool vdrv_enable_cb(struct vdrv_queue *q)
{
	uint16_t used_idx;

	if (q->event_idx)
		__atomic_store_n((uint16_t *)(void *)(q->avail + 4 +
						      2 * q->size),
				 htole16(q->last_used_idx), __ATOMIC_RELEASE);
	__atomic_thread_fence(__ATOMIC_SEQ_CST);
	used_idx = le16toh(__atomic_load_n((uint16_t *)(void *)(q->used + 2),
					   __ATOMIC_ACQUIRE));
	return used_idx != q->last_used_idx;
}
