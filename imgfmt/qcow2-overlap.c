/* qcow2-overlap.c: refuses guest data writes onto the image's metadata.
 *
 * An L2 entry of a damaged or hostile image can point a guest cluster at
 * the header, an L1 or L2 table, the refcount table or a refcount block,
 * or the snapshot table, and a refcount can call such a cluster free so
 * that the allocator hands it out. Writing guest data there would
 * destroy the image; instead the image is marked corrupt (QEMU does the
 * same check, its "cached" mode: inactive L2 tables are not covered).
 *
 * The set of metadata clusters is a hash set of cluster indices, built
 * from the in-memory tables at the first check and kept current: tables
 * the write path creates are added, clusters it frees are removed, and
 * the rare operations that move whole tables (reftable growth, snapshot
 * create/delete) just drop the set to be rebuilt.
 */
#include "qcow2-int.h"

#include <errno.h>
#include <inttypes.h>
#include <stdlib.h>

struct qcow2_meta_set {
	uint64_t *slots; /* cluster index + 1; 0 empty, TOMBSTONE removed */
	size_t cap;      /* power of two */
	size_t used;     /* live entries and tombstones */
};

#define TOMBSTONE UINT64_MAX

static size_t slot_of(uint64_t key, size_t cap)
{
	/* Fibonacci hashing: cluster indices are dense and sequential. */
	return (size_t)((key * 0x9e3779b97f4a7c15ull) >> 17) & (cap - 1);
}

static int set_grow(struct qcow2_meta_set *m);

static int set_add(struct qcow2_meta_set *m, uint64_t cluster)
{
	uint64_t key = cluster + 1;
	size_t i;

	if ((m->used + 1) * 2 > m->cap) {
		int ret = set_grow(m);
		if (ret < 0)
			return ret;
	}
	for (i = slot_of(key, m->cap);; i = (i + 1) & (m->cap - 1)) {
		if (m->slots[i] == key)
			return 0;
		if (m->slots[i] == 0) {
			m->slots[i] = key;
			m->used++;
			return 0;
		}
	}
}

static int set_grow(struct qcow2_meta_set *m)
{
	struct qcow2_meta_set bigger = { .cap = m->cap ? m->cap * 2 : 1024 };

	bigger.slots = calloc(bigger.cap, sizeof(*bigger.slots));
	if (!bigger.slots)
		return -ENOMEM;
	for (size_t i = 0; i < m->cap; i++)
		if (m->slots[i] != 0 && m->slots[i] != TOMBSTONE)
			(void)set_add(&bigger, m->slots[i] - 1);
	free(m->slots);
	*m = bigger;
	return 0;
}

static uint64_t *set_find(const struct qcow2_meta_set *m, uint64_t cluster)
{
	uint64_t key = cluster + 1;

	if (!m->cap)
		return NULL;
	for (size_t i = slot_of(key, m->cap);; i = (i + 1) & (m->cap - 1)) {
		if (m->slots[i] == key)
			return &m->slots[i];
		if (m->slots[i] == 0)
			return NULL;
	}
}

static int set_add_range(struct qcow2_meta_set *m, unsigned cluster_bits,
			 uint64_t off, uint64_t bytes)
{
	if (bytes == 0)
		return 0;
	for (uint64_t c = off >> cluster_bits;
	     c <= (off + bytes - 1) >> cluster_bits; c++) {
		int ret = set_add(m, c);
		if (ret < 0)
			return ret;
	}
	return 0;
}

/* Adds the part of a table range that lies in the file. The tables the
 * set is built from are as the image claims: a hostile snapshot entry
 * may claim an L1 table of 2^32 entries far past the end, and adding
 * every cluster of that costs seconds and gigabytes at the first write.
 * Past the end there is no table to protect (opening that snapshot
 * fails); tables the write path creates there are added as they are
 * made (qcow2_meta_add_locked). */
static int set_add_in_file(struct qcow2_meta_set *m,
			   const struct qcow2_state *s,
			   uint64_t off, uint64_t bytes)
{
	if (off >= s->file_bytes)
		return 0;
	if (bytes > s->file_bytes - off)
		bytes = s->file_bytes - off;
	return set_add_range(m, s->cluster_bits, off, bytes);
}

void qcow2_meta_free(struct qcow2_state *s)
{
	if (s->meta) {
		free(s->meta->slots);
		free(s->meta);
		s->meta = NULL;
	}
}

/* The set of a top handle's image: its active L1 table (v) and every
 * table the image names. */
static int build(const struct qcow2_view *v)
{
	struct qcow2_state *s = v->s;
	struct qcow2_meta_set *m = calloc(1, sizeof(*m));
	unsigned cb = s->cluster_bits;
	int ret;

	if (!m)
		return -ENOMEM;
	ret = set_add(m, 0); /* the header */
	if (ret == 0)
		ret = set_add_in_file(m, s, v->l1_table_offset,
				      (uint64_t)v->l1_size * 8);
	if (ret == 0)
		ret = set_add_in_file(m, s, s->refcount_table_offset,
				      (uint64_t)s->refcount_table_clusters
					      << cb);
	if (ret == 0 && s->nb_snapshots)
		ret = set_add_in_file(m, s, s->snapshots_offset,
				      s->snapshots_bytes);
	for (uint32_t i = 0; ret == 0 && i < s->nb_snapshots; i++)
		ret = set_add_in_file(m, s, s->snapshots[i].l1_table_offset,
				      (uint64_t)s->snapshots[i].l1_size * 8);
	for (uint32_t i = 0; ret == 0 && i < v->l1_size; i++) {
		uint64_t l2 = v->l1_table[i] & QCOW2_L1E_OFFSET_MASK;

		if (l2)
			ret = set_add(m, l2 >> cb);
	}
	for (uint64_t i = 0; ret == 0 && i < s->reftable_entries; i++) {
		uint64_t rb = s->reftable[i] & REFTABLE_OFFSET_MASK;

		if (rb)
			ret = set_add(m, rb >> cb);
	}
	if (ret < 0) {
		free(m->slots);
		free(m);
		return ret;
	}
	s->meta = m;
	return 0;
}

int qcow2_meta_add_locked(struct img *img, uint64_t off, uint64_t bytes)
{
	struct qcow2_state *s = qcow2_state(img);
	int ret;

	/* Not built yet: the build will find it through the tables. */
	if (!s->meta)
		return 0;
	ret = set_add_range(s->meta, s->cluster_bits, off, bytes);
	if (ret < 0)
		qcow2_meta_free(s); /* rebuilt at the next check */
	return 0;
}

void qcow2_meta_remove_locked(struct img *img, uint64_t off)
{
	struct qcow2_state *s = qcow2_state(img);
	uint64_t *slot;

	if (s->meta && (slot = set_find(s->meta, off >> s->cluster_bits)))
		*slot = TOMBSTONE;
}

void qcow2_meta_forget_locked(struct img *img)
{
	qcow2_meta_free(qcow2_state(img));
}

int qcow2_check_overlap_locked(struct img *img, uint64_t off, uint64_t bytes)
{
	struct qcow2_state *s = qcow2_state(img);
	int ret;

	if (bytes == 0)
		return 0;
	if (!s->meta) {
		ret = build(qcow2_view(img));
		if (ret < 0)
			return ret;
	}
	for (uint64_t c = off >> s->cluster_bits;
	     c <= (off + bytes - 1) >> s->cluster_bits; c++)
		if (set_find(s->meta, c))
			return qcow2_signal_corruption(
				img, "a data write to 0x%" PRIx64 " would "
				"overwrite metadata (cluster 0x%" PRIx64 ")",
				off, c << s->cluster_bits);
	return 0;
}
