/* qcow2-cache.c: a bounded cache of metadata table slices.
 *
 * L2 tables are one cluster each, up to 2 MiB; caching whole tables would
 * make one lookup cost 2 MiB of memory. The cache instead holds fixed-size
 * slices (4 KiB, or the cluster size when smaller) keyed by their host
 * offset, as QEMU's l2-cache-entry-size does. Total memory is
 * nb_slots * slice_bytes <= the configured bound, with a floor of a few
 * slots so that a tiny bound stays correct (just slow).
 *
 * Invariants:
 *   - every call runs with the owner's metadata lock held; the cache has
 *     no lock of its own, so a lookup plus the decode of its entries is
 *     one critical section;
 *   - a slot is either free (host_off == SLOT_FREE) or holds the bytes
 *     of the file at host_off as last read or written, or, when dirty,
 *     newer bytes that write-back will store;
 *   - a pinned slot (pins > 0) is never evicted, so a caller may hold a
 *     slice pointer between get and put.
 * Lookup goes through a hash of host offsets. Every slot sits on one of
 * three lists by state, most recently used first: free, clean, dirty.
 * Eviction takes a free slot, else the least recently used unpinned clean
 * one, else dirty one, walking from the tail past the few pinned slots:
 * a scan of every L2 table of a 16 TiB image misses on each slice, and a
 * linear search of all slots per miss made that quadratic.
 *
 * Writes: a slice taken with get_rw is dirty until written back, by
 * flush or when it is evicted. Ordering lives here as data, as in QEMU's
 * qcow2-cache.c: a cache may depend on another ("flush the refcount
 * blocks before these L2 slices"); before writing any dirty slice of the
 * dependent cache, the dependency is written and made durable
 * (fdatasync), so a crash never leaves an L2 entry on disk pointing at a
 * cluster whose refcount is not. Eviction prefers clean slots; a dirty
 * victim is written back (after its dependency) before reuse. Freed
 * clusters' slices are dropped, dirty or not, so stale metadata is never
 * written over a cluster that was reused for something else.
 */
#include "qcow2-int.h"

#include "checked.h"
#include "io.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#define QCOW2_CACHE_MIN_SLOTS 4
#define SLOT_FREE UINT64_MAX
#define NO_SLOT UINT32_MAX

struct qcow2_cache_slot {
	uint64_t host_off; /* SLOT_FREE when empty */
	uint32_t pins;
	uint32_t hash_next; /* next slot in the same bucket, or NO_SLOT */
	uint32_t lru_prev, lru_next; /* neighbours on its list, or NO_SLOT */
	bool dirty;
};

/* A list of slots, head the most recently used. */
struct slot_list {
	uint32_t head, tail;
};

struct qcow2_cache {
	int fd;
	size_t slice_bytes;
	uint32_t nb_slots;
	uint32_t nb_buckets; /* power of two */
	/* Slices must lie inside the file; points at the owner's size so
	 * that a writer growing the file moves the bound too. */
	const uint64_t *file_bytes;
	struct qcow2_cache_slot *slots;
	uint32_t *buckets;
	uint8_t *data; /* nb_slots * slice_bytes */
	/* Flushed before any of our dirty slices is written, when
	 * dep_pending (set by qcow2_cache_set_dependency_locked). */
	struct qcow2_cache *depends_on;
	bool dep_pending;
	int extra_sync_fd; /* -1 when none */
	uint32_t nb_dirty;
	/* Written on every lookup: kept off the read-only fields' cache
	 * line so readers on other CPUs do not keep missing on those. */
	struct slot_list free_list __attribute__((aligned(64)));
	struct slot_list clean_list, dirty_list;
};

static void list_remove(struct qcow2_cache *c, struct slot_list *l,
			uint32_t idx)
{
	struct qcow2_cache_slot *sl = &c->slots[idx];

	if (sl->lru_prev != NO_SLOT)
		c->slots[sl->lru_prev].lru_next = sl->lru_next;
	else
		l->head = sl->lru_next;
	if (sl->lru_next != NO_SLOT)
		c->slots[sl->lru_next].lru_prev = sl->lru_prev;
	else
		l->tail = sl->lru_prev;
	sl->lru_prev = sl->lru_next = NO_SLOT;
}

static void list_push_head(struct qcow2_cache *c, struct slot_list *l,
			   uint32_t idx)
{
	struct qcow2_cache_slot *sl = &c->slots[idx];

	sl->lru_prev = NO_SLOT;
	sl->lru_next = l->head;
	if (l->head != NO_SLOT)
		c->slots[l->head].lru_prev = idx;
	else
		l->tail = idx;
	l->head = idx;
}

/* The list a slot is on, by its state. */
static struct slot_list *list_of(struct qcow2_cache *c, uint32_t idx)
{
	const struct qcow2_cache_slot *sl = &c->slots[idx];

	if (sl->host_off == SLOT_FREE)
		return &c->free_list;
	return sl->dirty ? &c->dirty_list : &c->clean_list;
}

/* Moves a slot to the head of another list (or of its own). */
static void list_move(struct qcow2_cache *c, struct slot_list *from,
		      struct slot_list *to, uint32_t idx)
{
	list_remove(c, from, idx);
	list_push_head(c, to, idx);
}

struct qcow2_cache *qcow2_cache_new(int fd, size_t total_bytes,
				    size_t slice_bytes, uint64_t *file_bytes)
{
	struct qcow2_cache *c;
	size_t nb = total_bytes / slice_bytes;

	if (nb < QCOW2_CACHE_MIN_SLOTS)
		nb = QCOW2_CACHE_MIN_SLOTS;
	/* A huge bound must not make us allocate a huge hash or overflow
	 * the 32-bit slot indices. */
	if (nb > (1u << 24))
		nb = 1u << 24;
	c = aligned_alloc(64, sizeof(*c)); /* sizeof is a multiple of 64 */
	if (!c)
		return NULL;
	memset(c, 0, sizeof(*c));
	c->fd = fd;
	c->slice_bytes = slice_bytes;
	c->nb_slots = (uint32_t)nb;
	c->file_bytes = file_bytes;
	c->extra_sync_fd = -1;
	c->nb_buckets = 1;
	while (c->nb_buckets < c->nb_slots)
		c->nb_buckets <<= 1;
	c->slots = calloc(nb, sizeof(*c->slots));
	c->buckets = malloc(c->nb_buckets * sizeof(*c->buckets));
	c->data = malloc(nb * slice_bytes);
	if (!c->slots || !c->buckets || !c->data) {
		qcow2_cache_free(c);
		return NULL;
	}
	for (uint32_t i = 0; i < c->nb_buckets; i++)
		c->buckets[i] = NO_SLOT;
	c->free_list = c->clean_list = c->dirty_list =
		(struct slot_list){ NO_SLOT, NO_SLOT };
	for (uint32_t i = 0; i < c->nb_slots; i++) {
		c->slots[i].host_off = SLOT_FREE;
		c->slots[i].hash_next = NO_SLOT;
		list_push_head(c, &c->free_list, i);
	}
	return c;
}

void qcow2_cache_free(struct qcow2_cache *c)
{
	if (!c)
		return;
	free(c->slots);
	free(c->buckets);
	free(c->data);
	free(c);
}

size_t qcow2_cache_slice_bytes(const struct qcow2_cache *c)
{
	return c->slice_bytes;
}

static uint32_t bucket_of(const struct qcow2_cache *c, uint64_t host_off)
{
	uint64_t h = (host_off / c->slice_bytes) * 0x9e3779b97f4a7c15ull;

	return (uint32_t)(h >> 32) & (c->nb_buckets - 1);
}

static void unhash(struct qcow2_cache *c, uint32_t idx)
{
	uint32_t *p = &c->buckets[bucket_of(c, c->slots[idx].host_off)];

	list_move(c, list_of(c, idx), &c->free_list, idx);
	while (*p != NO_SLOT) {
		if (*p == idx) {
			*p = c->slots[idx].hash_next;
			break;
		}
		p = &c->slots[*p].hash_next;
	}
	c->slots[idx].hash_next = NO_SLOT;
	c->slots[idx].host_off = SLOT_FREE;
	if (c->slots[idx].dirty) {
		c->slots[idx].dirty = false;
		c->nb_dirty--;
	}
}

static uint32_t find(const struct qcow2_cache *c, uint64_t host_off)
{
	uint32_t i = c->buckets[bucket_of(c, host_off)];

	while (i != NO_SLOT && c->slots[i].host_off != host_off)
		i = c->slots[i].hash_next;
	return i;
}

/* The least recently used unpinned slot of a list, or NO_SLOT. */
static uint32_t lru_unpinned(const struct qcow2_cache *c,
			     const struct slot_list *l)
{
	uint32_t i = l->tail;

	while (i != NO_SLOT && c->slots[i].pins)
		i = c->slots[i].lru_prev;
	return i;
}

/* The free slot, or else the least recently used unpinned clean one,
 * or else the least recently used unpinned dirty one. */
static uint32_t pick_victim(const struct qcow2_cache *c)
{
	uint32_t i = lru_unpinned(c, &c->free_list);

	if (i == NO_SLOT)
		i = lru_unpinned(c, &c->clean_list);
	if (i == NO_SLOT)
		i = lru_unpinned(c, &c->dirty_list);
	return i;
}

static int satisfy_dependency(struct qcow2_cache *c)
{
	int ret;

	if (!c->dep_pending || !c->depends_on)
		return 0;
	/* The dependency's blocks (refcounts) must be durable before any
	 * of our slices (L2 entries pointing at those clusters) reach the
	 * disk. */
	ret = qcow2_cache_flush_locked(c->depends_on);
	if (ret < 0)
		return ret;
	c->dep_pending = false;
	return 0;
}

static int write_slot(struct qcow2_cache *c, uint32_t idx)
{
	struct qcow2_cache_slot *sl = &c->slots[idx];
	int ret;

	if (!sl->dirty)
		return 0;
	ret = satisfy_dependency(c);
	if (ret < 0)
		return ret;
	ret = full_pwrite(c->fd, c->data + (size_t)idx * c->slice_bytes,
			  c->slice_bytes, sl->host_off);
	if (ret < 0)
		return ret;
	list_move(c, &c->dirty_list, &c->clean_list, idx);
	sl->dirty = false;
	c->nb_dirty--;
	return 0;
}

void qcow2_cache_set_dependency_locked(struct qcow2_cache *c,
				       struct qcow2_cache *dep)
{
	c->depends_on = dep;
	c->dep_pending = true;
}

void qcow2_cache_set_extra_sync_fd(struct qcow2_cache *c, int fd)
{
	c->extra_sync_fd = fd;
}

int qcow2_cache_writeback_locked(struct qcow2_cache *c)
{
	int ret;

	if (c->nb_dirty == 0)
		return 0;
	for (uint32_t i = 0; i < c->nb_slots; i++) {
		if (c->slots[i].host_off == SLOT_FREE)
			continue;
		ret = write_slot(c, i);
		if (ret < 0)
			return ret;
	}
	return 0;
}

int qcow2_cache_flush_locked(struct qcow2_cache *c)
{
	int ret = qcow2_cache_writeback_locked(c);

	if (ret < 0)
		return ret;
	if (fdatasync(c->fd) < 0)
		return -errno;
	if (c->extra_sync_fd >= 0 && c->extra_sync_fd != c->fd &&
	    fdatasync(c->extra_sync_fd) < 0)
		return -errno;
	return 0;
}

void qcow2_cache_drop_range_locked(struct qcow2_cache *c, uint64_t host_off,
				   uint64_t bytes)
{
	for (uint64_t off = align_down(host_off, c->slice_bytes);
	     off < host_off + bytes; off += c->slice_bytes) {
		uint32_t idx = find(c, off);

		if (idx != NO_SLOT && c->slots[idx].pins == 0)
			unhash(c, idx);
	}
}

int qcow2_cache_get_locked(struct qcow2_cache *c, uint64_t host_off,
			   const uint8_t **slice_r)
{
	uint32_t idx;
	uint8_t *data;
	int ret;

	/* Callers validated the table; this guards the cache's own
	 * invariant (aligned keys inside the file) against a caller bug or
	 * a file that shrank. */
	if (!is_aligned(host_off, c->slice_bytes) ||
	    !range_within(host_off, c->slice_bytes, *c->file_bytes))
		return -EIO;

	idx = find(c, host_off);
	if (idx == NO_SLOT) {
		idx = pick_victim(c);
		if (idx == NO_SLOT)
			return -EBUSY;
		if (c->slots[idx].host_off != SLOT_FREE) {
			/* A dirty victim reaches the file (after its
			 * dependency) before its slot is reused. */
			ret = write_slot(c, idx);
			if (ret < 0)
				return ret;
			unhash(c, idx);
		}
		data = c->data + (size_t)idx * c->slice_bytes;
		ret = full_pread(c->fd, data, c->slice_bytes, host_off);
		if (ret < 0)
			return ret; /* the slot stays free */
		list_move(c, &c->free_list, &c->clean_list, idx);
		c->slots[idx].host_off = host_off;
		uint32_t b = bucket_of(c, host_off);
		c->slots[idx].hash_next = c->buckets[b];
		c->buckets[b] = idx;
	}
	if (c->slots[idx].lru_prev != NO_SLOT) { /* not already the head */
		struct slot_list *l = list_of(c, idx);
		list_move(c, l, l, idx);
	}
	c->slots[idx].pins++;
	*slice_r = c->data + (size_t)idx * c->slice_bytes;
	return 0;
}

void qcow2_cache_put_locked(struct qcow2_cache *c, const uint8_t *slice)
{
	size_t idx = (size_t)(slice - c->data) / c->slice_bytes;

	if (idx < c->nb_slots && c->slots[idx].pins > 0)
		c->slots[idx].pins--;
}

int qcow2_cache_get_rw_locked(struct qcow2_cache *c, uint64_t host_off,
			      uint8_t **slice_r)
{
	const uint8_t *slice;
	size_t idx;
	int ret = qcow2_cache_get_locked(c, host_off, &slice);

	if (ret < 0)
		return ret;
	idx = (size_t)(slice - c->data) / c->slice_bytes;
	if (!c->slots[idx].dirty) {
		list_move(c, &c->clean_list, &c->dirty_list, (uint32_t)idx);
		c->slots[idx].dirty = true;
		c->nb_dirty++;
	}
	*slice_r = c->data + idx * c->slice_bytes;
	return 0;
}
