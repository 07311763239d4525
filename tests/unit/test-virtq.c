/* test-virtq.c: the split virtqueue (vmm/virtq.c) on hand-built rings.
 *
 * Guest memory is one buffer filled with a poison byte; the rings and
 * tables are written by hand, the way a hostile driver would. Every
 * malformed chain must break the queue without a used entry, a valid one
 * must come out exactly as written, and nothing outside the used ring may
 * change.
 */
#undef NDEBUG
#include "vmm.h"

#include "endian.h"

#include <assert.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define MEM_GPA 0x100000ull
#define MEM_BYTES (256 * 1024)
#define QSIZE 16
#define DESC_OFF 0x0
#define AVAIL_OFF 0x1000
#define USED_OFF 0x2000
#define TABLE_OFF 0x4000 /* indirect tables */
#define POISON 0xa5

static uint8_t *guest;
static struct vmm_mem mem;
static struct vq vq;

static uint64_t gpa(uint64_t off)
{
	return MEM_GPA + off;
}

static void reset(uint64_t features)
{
	memset(guest, POISON, MEM_BYTES);
	memset(guest + AVAIL_OFF, 0, vq_avail_bytes(QSIZE));
	memset(guest + USED_OFF, 0, vq_used_bytes(QSIZE));
	assert(vq_init(&vq, &mem, QSIZE, guest + DESC_OFF, guest + AVAIL_OFF,
		       guest + USED_OFF, 0, features) == 0);
}

static void put_desc_at(uint64_t table_off, unsigned i, uint64_t addr,
			uint32_t len, uint16_t flags, uint16_t next)
{
	uint8_t *p = guest + table_off + 16 * i;

	put_le64(p, addr);
	put_le32(p + 8, len);
	put_le16(p + 12, flags);
	put_le16(p + 14, next);
}

static void put_desc(unsigned i, uint64_t addr, uint32_t len, uint16_t flags,
		     uint16_t next)
{
	put_desc_at(DESC_OFF, i, addr, len, flags, next);
}

static void make_avail(uint16_t head)
{
	uint16_t idx = get_le16(guest + AVAIL_OFF + 2);

	put_le16(guest + AVAIL_OFF + 4 + 2 * (idx % QSIZE), head);
	put_le16(guest + AVAIL_OFF + 2, (uint16_t)(idx + 1));
}

static uint16_t used_idx(void)
{
	return get_le16(guest + USED_OFF + 2);
}

static void expect_broken(const char *what)
{
	assert(vq_pop(&vq) == -EIO);
	assert(vq.broken);
	assert(used_idx() == 0);
	/* A broken queue stays broken and serves nothing. */
	assert(vq_pop(&vq) == -EIO);
	printf("ok broken: %s (%s)\n", what, vq.broken_why);
}

static const uint64_t ALL = (1ull << VIRTIO_RING_F_INDIRECT_DESC) |
			    (1ull << VIRTIO_RING_F_EVENT_IDX) |
			    (1ull << VIRTIO_F_VERSION_1);

static void test_valid_chain(void)
{
	reset(ALL);
	put_desc(3, gpa(0x8000), 16, VRING_DESC_F_NEXT, 7);
	put_desc(7, gpa(0x9000), 512, VRING_DESC_F_NEXT | VRING_DESC_F_WRITE, 1);
	put_desc(1, gpa(0xa000), 1, VRING_DESC_F_WRITE, 0);
	make_avail(3);
	assert(vq_pop(&vq) == 1);
	assert(vq.chain.head == 3 && vq.chain.nb_segs == 3);
	assert(vq.chain.segs[0].gpa == gpa(0x8000) &&
	       vq.chain.segs[0].len_bytes == 16 &&
	       !vq.chain.segs[0].device_writable);
	assert(vq.chain.segs[1].device_writable &&
	       vq.chain.segs[1].len_bytes == 512);
	assert(vq.chain.segs[2].gpa == gpa(0xa000));
	assert(vq_pop(&vq) == 0);
	vq_push(&vq, 3, 513);
	assert(used_idx() == 1);
	assert(get_le32(guest + USED_OFF + 4) == 3);
	assert(get_le32(guest + USED_OFF + 8) == 513);
	/* The chain may use every descriptor of the table once. */
	reset(ALL);
	for (unsigned i = 0; i < QSIZE; i++)
		put_desc(i, gpa(0x8000), 1,
			 i + 1 < QSIZE ? VRING_DESC_F_NEXT : 0, (uint16_t)(i + 1));
	make_avail(0);
	assert(vq_pop(&vq) == 1 && vq.chain.nb_segs == QSIZE);
}

static void test_bad_chains(void)
{
	reset(ALL);
	put_desc(0, gpa(0x8000), 16, VRING_DESC_F_NEXT, 1);
	put_desc(1, gpa(0x8000), 16, VRING_DESC_F_NEXT, 0);
	make_avail(0);
	expect_broken("two descriptors naming each other");

	reset(ALL);
	put_desc(5, gpa(0x8000), 16, VRING_DESC_F_NEXT, 5);
	make_avail(5);
	expect_broken("a descriptor naming itself");

	reset(ALL);
	put_desc(0, gpa(0x8000), 16, VRING_DESC_F_NEXT, QSIZE);
	make_avail(0);
	expect_broken("next index equal to the queue size");

	reset(ALL);
	put_desc(0, gpa(0x8000), 16, VRING_DESC_F_NEXT, 0xffff);
	make_avail(0);
	expect_broken("next index 0xffff");

	reset(ALL);
	make_avail(QSIZE);
	expect_broken("head index past the table");

	reset(ALL);
	put_le16(guest + AVAIL_OFF + 2, QSIZE + 1);
	expect_broken("available index more than a ring ahead");

	reset(ALL);
	put_le16(guest + AVAIL_OFF + 2, 0xffff); /* -1: 65535 ahead */
	expect_broken("available index moved backwards");
}

static void test_bad_indirect(void)
{
	reset(ALL & ~(1ull << VIRTIO_RING_F_INDIRECT_DESC));
	put_desc_at(TABLE_OFF, 0, gpa(0x8000), 16, 0, 0);
	put_desc(0, gpa(TABLE_OFF), 16, VRING_DESC_F_INDIRECT, 0);
	make_avail(0);
	expect_broken("indirect descriptor not negotiated");

	reset(ALL);
	put_desc_at(TABLE_OFF, 0, gpa(TABLE_OFF + 0x100), 16,
		    VRING_DESC_F_INDIRECT, 0);
	put_desc(0, gpa(TABLE_OFF), 16, VRING_DESC_F_INDIRECT, 0);
	make_avail(0);
	expect_broken("indirect table inside an indirect table");

	reset(ALL);
	put_desc_at(TABLE_OFF, 0, gpa(0x8000), 16, 0, 0);
	put_desc(0, gpa(TABLE_OFF), 16, VRING_DESC_F_INDIRECT | VRING_DESC_F_NEXT,
		 1);
	put_desc(1, gpa(0x8000), 1, VRING_DESC_F_WRITE, 0);
	make_avail(0);
	expect_broken("indirect descriptor with NEXT");

	reset(ALL);
	put_desc(0, gpa(TABLE_OFF), 0, VRING_DESC_F_INDIRECT, 0);
	make_avail(0);
	expect_broken("empty indirect table");

	reset(ALL);
	put_desc(0, gpa(TABLE_OFF), 24, VRING_DESC_F_INDIRECT, 0);
	make_avail(0);
	expect_broken("indirect table of 1.5 descriptors");

	reset(ALL);
	put_desc(0, gpa(MEM_BYTES - 16), 32, VRING_DESC_F_INDIRECT, 0);
	make_avail(0);
	expect_broken("indirect table running off guest memory");

	reset(ALL);
	put_desc(0, 0xfffffffffffffff0ull, 32, VRING_DESC_F_INDIRECT, 0);
	make_avail(0);
	expect_broken("indirect table address wrapping");

	reset(ALL);
	put_desc(0, gpa(TABLE_OFF), 16 * (VQ_MAX_SEGS + 1),
		 VRING_DESC_F_INDIRECT, 0);
	make_avail(0);
	expect_broken("indirect table longer than VQ_MAX_SEGS");

	reset(ALL);
	put_desc_at(TABLE_OFF, 0, gpa(0x8000), 16, VRING_DESC_F_NEXT, 1);
	put_desc_at(TABLE_OFF, 1, gpa(0x8000), 16, VRING_DESC_F_NEXT, 0);
	put_desc(0, gpa(TABLE_OFF), 32, VRING_DESC_F_INDIRECT, 0);
	make_avail(0);
	expect_broken("loop inside an indirect table");

	reset(ALL);
	put_desc_at(TABLE_OFF, 0, gpa(0x8000), 16, VRING_DESC_F_NEXT, 2);
	put_desc(0, gpa(TABLE_OFF), 32, VRING_DESC_F_INDIRECT, 0);
	make_avail(0);
	expect_broken("next index past the indirect table");

	/* A full-size indirect table is fine, and a direct descriptor may
	 * lead into an indirect one (the spec allows it). */
	reset(ALL);
	for (unsigned i = 0; i < VQ_MAX_SEGS - 1; i++)
		put_desc_at(0x10000, i, gpa(0x8000), 1,
			    i + 2 < VQ_MAX_SEGS ? VRING_DESC_F_NEXT : 0,
			    (uint16_t)(i + 1));
	put_desc(0, gpa(0x8000), 16, VRING_DESC_F_NEXT, 1);
	put_desc(1, gpa(0x10000), 16 * (VQ_MAX_SEGS - 1),
		 VRING_DESC_F_INDIRECT, 0);
	make_avail(0);
	assert(vq_pop(&vq) == 1 && vq.chain.nb_segs == VQ_MAX_SEGS);
	/* ...but not past VQ_MAX_SEGS in total. */
	reset(ALL);
	for (unsigned i = 0; i < VQ_MAX_SEGS; i++)
		put_desc_at(0x10000, i, gpa(0x8000), 1,
			    i + 1 < VQ_MAX_SEGS ? VRING_DESC_F_NEXT : 0,
			    (uint16_t)(i + 1));
	put_desc(0, gpa(0x8000), 16, VRING_DESC_F_NEXT, 1);
	put_desc(1, gpa(0x10000), 16 * VQ_MAX_SEGS, VRING_DESC_F_INDIRECT, 0);
	make_avail(0);
	expect_broken("direct + indirect longer than VQ_MAX_SEGS");
}

/* The 16-bit indices wrap; used entries go round the ring. */
static void test_wrap_and_notify(void)
{
	unsigned nb_notify = 0;

	reset(ALL);
	put_desc(2, gpa(0x8000), 1, VRING_DESC_F_WRITE, 0);
	for (unsigned n = 0; n < 70000; n++) {
		make_avail(2);
		assert(vq_pop(&vq) == 1 && vq.chain.head == 2);
		vq_push(&vq, 2, 1);
		/* The driver wants an interrupt for every 100th. */
		put_le16(guest + AVAIL_OFF + 4 + 2 * QSIZE,
			 (uint16_t)(n - n % 100 + 99));
		nb_notify += vq_need_notify(&vq);
		assert(!vq_enable_notify(&vq));
		assert(get_le16(guest + USED_OFF + 4 + 8 * QSIZE) ==
		       (uint16_t)(n + 1));
	}
	assert(used_idx() == (uint16_t)70000);
	assert(nb_notify >= 700 && nb_notify <= 702);

	/* Without event idx, NO_INTERRUPT suppresses. */
	reset(ALL & ~(1ull << VIRTIO_RING_F_EVENT_IDX));
	put_desc(2, gpa(0x8000), 1, VRING_DESC_F_WRITE, 0);
	make_avail(2);
	assert(vq_pop(&vq) == 1);
	vq_push(&vq, 2, 1);
	put_le16(guest + AVAIL_OFF, VRING_AVAIL_F_NO_INTERRUPT);
	assert(!vq_need_notify(&vq));
	put_le16(guest + AVAIL_OFF, 0);
	make_avail(2);
	assert(vq_enable_notify(&vq));
	assert(vq_pop(&vq) == 1);
	vq_push(&vq, 2, 1);
	assert(vq_need_notify(&vq));
}

/* The available index is read once per batch (a shadow copy) and used
 * entries may be published once per batch: neither may lose, reorder or
 * expose early an entry, and the "more than a ring ahead" check still
 * holds for an index that moves after the shadow was taken. */
static void test_batching(void)
{
	reset(ALL);
	put_desc(2, gpa(0x8000), 1, VRING_DESC_F_WRITE, 0);
	put_desc(4, gpa(0x8000), 1, VRING_DESC_F_WRITE, 0);
	make_avail(2);
	make_avail(4);
	assert(vq_pop(&vq) == 1 && vq.chain.head == 2);
	/* Added after the shadow was taken: seen once the shadow's entries
	 * are popped. */
	make_avail(2);
	assert(vq_pop(&vq) == 1 && vq.chain.head == 4);
	assert(vq_pop(&vq) == 1 && vq.chain.head == 2);

	vq_fill(&vq, 2, 1);
	vq_fill(&vq, 4, 1);
	assert(used_idx() == 0);
	/* The entries are in place before the index covers them. */
	assert(get_le32(guest + USED_OFF + 4) == 2 &&
	       get_le32(guest + USED_OFF + 12) == 4);
	vq_flush(&vq);
	assert(used_idx() == 2);
	vq_flush(&vq);
	assert(used_idx() == 2);
	/* A pop that reads the available index again publishes first. */
	vq_fill(&vq, 2, 1);
	assert(used_idx() == 2);
	assert(vq_pop(&vq) == 0);
	assert(used_idx() == 3);
	/* need_notify publishes first: the driver's used_event is judged
	 * against what it can see. */
	vq_fill(&vq, 4, 1);
	put_le16(guest + AVAIL_OFF + 4 + 2 * QSIZE, 3);
	assert(vq_need_notify(&vq));
	assert(used_idx() == 4);
	assert(!vq_need_notify(&vq));
	vq_push(&vq, 2, 1);
	assert(used_idx() == 5);
	assert(!vq_need_notify(&vq)); /* used_event 3 already passed */

	/* A shadow with entries left, then an index a whole ring ahead. */
	reset(ALL);
	put_desc(2, gpa(0x8000), 1, VRING_DESC_F_WRITE, 0);
	make_avail(2);
	make_avail(2);
	assert(vq_pop(&vq) == 1);
	/* Two popped by the time it is read again: 2 + QSIZE + 1 is one
	 * more than a ring ahead. */
	put_le16(guest + AVAIL_OFF + 2, 2 + QSIZE + 1);
	assert(vq_pop(&vq) == 1);
	expect_broken("available index more than a ring ahead, mid-batch");
	assert(strstr(vq.broken_why, "queue size ahead"));
}

static void test_init_checks(void)
{
	struct vq q;

	assert(vq_init(&q, &mem, 0, guest, guest + AVAIL_OFF, guest + USED_OFF,
		       0, ALL) == -EINVAL);
	assert(vq_init(&q, &mem, VQ_MAX_SIZE + 1, guest, guest + AVAIL_OFF,
		       guest + USED_OFF, 0, ALL) == -EINVAL);
	assert(vq_init(&q, &mem, QSIZE, guest + 8, guest + AVAIL_OFF,
		       guest + USED_OFF, 0, ALL) == -EINVAL);
	assert(vq_init(&q, &mem, QSIZE, guest, guest + AVAIL_OFF + 1,
		       guest + USED_OFF, 0, ALL) == -EINVAL);
	assert(vq_init(&q, &mem, QSIZE, guest, guest + AVAIL_OFF,
		       guest + USED_OFF + 2, 0, ALL) == -EINVAL);
}

static void test_mem(void)
{
	struct vmm_mem m = { 0 };
	uint8_t a[64], b[64];
	uint64_t n;

	assert(vmm_mem_add(&m, 0x1000, 64, a, 0) == 0);
	assert(vmm_mem_add(&m, 0x1040, 64, b, 0) == 0);
	assert(vmm_mem_add(&m, 0x1030, 16, b, 0) == -EINVAL); /* overlap */
	assert(vmm_mem_add(&m, UINT64_MAX - 8, 64, b, 0) == -EINVAL);
	assert(vmm_mem_add(&m, 0x9000, 0, b, 0) == -EINVAL);
	assert(vmm_mem_gpa(&m, 0x1000, 64) == a);
	assert(vmm_mem_gpa(&m, 0x1000, 65) == NULL); /* spans two regions */
	assert(vmm_mem_gpa(&m, 0x1040, 64) == b);
	assert(vmm_mem_gpa(&m, 0x1080, 1) == NULL);
	assert(vmm_mem_gpa(&m, 0xfff, 1) == NULL);
	assert(vmm_mem_gpa(&m, 0x1001, UINT64_MAX) == NULL);
	assert(vmm_mem_gpa_prefix(&m, 0x1020, 100, &n) == a + 0x20 && n == 32);
	assert(vmm_mem_gpa_prefix(&m, 0x1040, 100, &n) == b && n == 64);
	assert(vmm_mem_gpa_prefix(&m, 0x2000, 1, &n) == NULL);
}

int main(void)
{
	guest = aligned_alloc(4096, MEM_BYTES);
	assert(guest);
	assert(vmm_mem_add(&mem, MEM_GPA, MEM_BYTES, guest, 0) == 0);
	test_mem();
	test_init_checks();
	test_valid_chain();
	test_bad_chains();
	test_bad_indirect();
	test_wrap_and_notify();
	test_batching();
	free(guest);
	printf("test-virtq: all passed\n");
	return 0;
}
