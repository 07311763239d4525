/* virtq.c: the device side of a split virtqueue (virtio 1.x 2.7).
 *
 * The driver owns the available ring and writes the descriptor table; we
 * own the used ring. Everything read from the driver's parts is read once
 * into a local (so a guest that rewrites a descriptor while we look at it
 * gets a consistent, if useless, view) and checked before use:
 *   - the available index may run at most `size` entries ahead of us;
 *   - head and next indices are below the size of the table they index;
 *   - a chain visits at most as many descriptors as its table holds, which
 *     is the only loop check needed: a longer walk must revisit one;
 *   - an indirect table (INDIRECT_DESC) is a whole number of descriptors,
 *     at most VQ_MAX_SEGS, lies inside guest memory, is not itself marked
 *     NEXT and contains no further indirect descriptor (2.7.5.3.1).
 * Any of these failing breaks the queue: the chain's extent is unknown, so
 * there is no status byte we could answer in. The buffers themselves are
 * not translated here; virtio-blk.c checks each one when it uses it, and a
 * bad buffer there only fails its own request.
 *
 * Ordering: the available index is loaded with acquire semantics before
 * the ring entries it covers; used entries are written before the used
 * index is stored with release semantics; a full barrier separates
 * publishing the used index (or avail_event) from reading the driver's
 * suppression fields, as 2.7.7 and 2.7.10 require. Nothing stronger is
 * used: on x86 the acquire loads and release stores are plain moves, and
 * the two full barriers are paid once per batch, not per request.
 *
 * Batching: the available index is read once for all the entries it
 * covers (a shadow copy, as QEMU and Linux vhost keep), which is also
 * where the "at most size ahead" check happens; used entries may be
 * filled one by one and published with one store of the used index
 * (vq_fill/vq_flush), at the latest when the next pop has to read the
 * available index again. Notification decisions always look at the
 * published index, so EVENT_IDX sees exactly what the driver can see.
 */
#include "vmm.h"

#include "checked.h"
#include "endian.h"

#include <errno.h>
#include <stdio.h>
#include <string.h>

static inline uint16_t load16_acquire(const uint8_t *p)
{
	return le16toh(__atomic_load_n((const uint16_t *)(const void *)p,
				       __ATOMIC_ACQUIRE));
}

static inline void store16_release(uint8_t *p, uint16_t v)
{
	__atomic_store_n((uint16_t *)(void *)p, htole16(v), __ATOMIC_RELEASE);
}

static inline uint16_t avail_idx(const struct vq *vq)
{
	return load16_acquire(vq->avail + 2);
}

int vq_init(struct vq *vq, const struct vmm_mem *mem, unsigned size,
	    void *desc, void *avail, void *used, uint16_t last_avail_idx,
	    uint64_t features)
{
	memset(vq, 0, offsetof(struct vq, chain));
	if (size == 0 || size > VQ_MAX_SIZE || !desc || !avail || !used)
		return -EINVAL;
	if (((uintptr_t)desc & (VQ_DESC_ALIGN - 1)) ||
	    ((uintptr_t)avail & (VQ_AVAIL_ALIGN - 1)) ||
	    ((uintptr_t)used & (VQ_USED_ALIGN - 1)))
		return -EINVAL;
	vq->mem = mem;
	vq->size = size;
	vq->desc = desc;
	vq->avail = avail;
	vq->used = used;
	vq->last_avail_idx = last_avail_idx;
	vq->shadow_avail_idx = last_avail_idx;
	/* Resuming (vhost-user reconnect): the used index the driver has
	 * already seen lives in guest memory. */
	vq->used_idx = load16_acquire(vq->used + 2);
	vq->published_used = vq->used_idx;
	vq->event_idx = features & (1ull << VIRTIO_RING_F_EVENT_IDX);
	vq->indirect = features & (1ull << VIRTIO_RING_F_INDIRECT_DESC);
	return 0;
}

void vq_set_broken(struct vq *vq, const char *why)
{
	if (!vq->broken)
		snprintf(vq->broken_why, sizeof(vq->broken_why), "%s", why);
	vq->broken = true;
}

static int broken(struct vq *vq, const char *why)
{
	vq_set_broken(vq, why);
	return -EIO;
}

struct desc {
	uint64_t addr;
	uint32_t len;
	uint16_t flags;
	uint16_t next;
};

static void read_desc(const uint8_t *table, unsigned i, struct desc *d)
{
	const uint8_t *p = table + 16ull * i;

	d->addr = get_le64(p);
	d->len = get_le32(p + 8);
	d->flags = get_le16(p + 12);
	d->next = get_le16(p + 14);
}

static int walk_chain(struct vq *vq, uint16_t head)
{
	struct vq_chain *c = &vq->chain;
	const uint8_t *table = vq->desc;
	unsigned table_size = vq->size;
	unsigned budget = vq->size;
	bool in_indirect = false;
	unsigned i = head;
	struct desc d;

	c->head = head;
	c->nb_segs = 0;
	for (;;) {
		if (budget-- == 0)
			return broken(vq, "descriptor chain loops or is longer "
					  "than its table");
		read_desc(table, i, &d);
		if (d.flags & VRING_DESC_F_INDIRECT) {
			if (!vq->indirect)
				return broken(vq, "indirect descriptor without "
						  "VIRTIO_RING_F_INDIRECT_DESC");
			if (in_indirect)
				return broken(vq, "indirect descriptor inside "
						  "an indirect table");
			if (d.flags & VRING_DESC_F_NEXT)
				return broken(vq, "indirect descriptor with NEXT");
			if (d.len == 0 || d.len % 16 ||
			    d.len / 16 > VQ_MAX_SEGS)
				return broken(vq, "indirect table size is not a "
						  "whole number of descriptors "
						  "or too large");
			table = vmm_mem_gpa(vq->mem, d.addr, d.len);
			if (!table)
				return broken(vq, "indirect table outside guest "
						  "memory");
			table_size = d.len / 16;
			budget = table_size;
			in_indirect = true;
			i = 0;
			continue;
		}
		if (c->nb_segs == VQ_MAX_SEGS)
			return broken(vq, "more than VQ_MAX_SEGS descriptors "
					  "in one chain");
		c->segs[c->nb_segs++] = (struct vq_seg){
			.gpa = d.addr,
			.len_bytes = d.len,
			.device_writable = d.flags & VRING_DESC_F_WRITE,
		};
		if (!(d.flags & VRING_DESC_F_NEXT))
			return 0;
		i = d.next;
		if (i >= table_size)
			return broken(vq, "next index past the descriptor table");
	}
}

int vq_pop(struct vq *vq)
{
	uint16_t nb_avail, head;
	int ret;

	if (vq->broken)
		return -EIO;
	if (vq->last_avail_idx == vq->shadow_avail_idx) {
		/* Everything we knew of is popped: look again. The shadow
		 * never runs more than size ahead of last_avail_idx, so
		 * this is the one place to check that. What was answered
		 * from the old snapshot is published first, so a driver
		 * that keeps the ring busy still sees completions once per
		 * batch. */
		uint16_t idx;

		vq_flush(vq);
		idx = avail_idx(vq);

		nb_avail = (uint16_t)(idx - vq->last_avail_idx);
		if (nb_avail == 0)
			return 0;
		if (nb_avail > vq->size)
			return broken(vq, "available index moved more than "
					  "the queue size ahead");
		vq->shadow_avail_idx = idx;
	}
	head = get_le16(vq->avail + 4 + 2 * (vq->last_avail_idx % vq->size));
	if (head >= vq->size)
		return broken(vq, "available ring names a head past the "
				  "descriptor table");
	ret = walk_chain(vq, head);
	if (ret < 0)
		return ret;
	vq->last_avail_idx++;
	return 1;
}

void vq_fill(struct vq *vq, uint16_t head, uint32_t len_bytes)
{
	uint8_t *e = vq->used + 4 + 8 * (vq->used_idx % vq->size);

	put_le32(e, head);
	put_le32(e + 4, len_bytes);
	vq->used_idx++;
	vq->stats.nb_requests++;
}

void vq_flush(struct vq *vq)
{
	if (vq->published_used == vq->used_idx)
		return;
	/* The entries must be visible before the index that covers them. */
	store16_release(vq->used + 2, vq->used_idx);
	vq->published_used = vq->used_idx;
}

void vq_push(struct vq *vq, uint16_t head, uint32_t len_bytes)
{
	vq_fill(vq, head, len_bytes);
	vq_flush(vq);
}

bool vq_need_notify(struct vq *vq)
{
	uint16_t old = vq->signalled_used, now, event;
	bool valid = vq->signalled_used_valid;

	vq_flush(vq);
	now = vq->published_used;
	/* Our used index store must be ordered before reading what the
	 * driver asked for, or both sides can decide not to notify. */
	__atomic_thread_fence(__ATOMIC_SEQ_CST);
	vq->signalled_used = now;
	vq->signalled_used_valid = true;
	if (!vq->event_idx) {
		if (valid && old == now)
			return false;
		if (load16_acquire(vq->avail) & VRING_AVAIL_F_NO_INTERRUPT)
			return false;
		vq->stats.nb_notifies++;
		return true;
	}
	if (valid && old == now)
		return false;
	event = load16_acquire(vq->avail + 4 + 2 * vq->size);
	/* vring_need_event() of 2.7.10: did we pass used_event? */
	if (valid && (uint16_t)(now - event - 1) >= (uint16_t)(now - old))
		return false;
	vq->stats.nb_notifies++;
	return true;
}

bool vq_enable_notify(struct vq *vq)
{
	if (vq->broken)
		return false;
	if (vq->event_idx)
		store16_release(vq->used + 4 + 8 * vq->size,
				vq->last_avail_idx);
	/* Publish avail_event before looking at the index again, so that a
	 * driver that added entries meanwhile either sees our new
	 * avail_event and kicks, or we see its entries here. */
	__atomic_thread_fence(__ATOMIC_SEQ_CST);
	return avail_idx(vq) != vq->last_avail_idx;
}
