/* qcow2-write.c: writes, discard, write-zeroes and flush.
 *
 * Spec: docs/interop/qcow2.txt, "Cluster mapping", "Extended L2 Entries".
 * A write is split at cluster boundaries; each piece takes one of two
 * paths:
 *   - in place: the L2 entry is plain data with the COPIED flag
 *     (refcount 1; with extended L2 every touched subcluster is already
 *     allocated). The lookup holds the metadata lock; the data pwrite
 *     does not (only write_gate, shared).
 *   - allocating: anything else. Under the lock: pick or allocate the
 *     host cluster and mark the guest cluster in flight; unlocked: the
 *     copy-on-write fill (old data, decompression, backing file) and
 *     the data pwrite; locked again: the L2 update. A second writer of
 *     an in-flight cluster waits for the first (inflight_cond), so two
 *     writers never both allocate one cluster, and a reader never sees
 *     an L2 entry before the data it points at was written.
 *   - write_gate (shared for writes, exclusive for discard,
 *     write-zeroes of whole clusters and snapshot operations) keeps the
 *     clusters a write reads or writes from changing owner under it.
 *
 * Ordering invariants, each enforced where noted:
 *   - the refcount of a newly referenced cluster is durable before the
 *     L2 entry pointing at it (L2 cache depends on the refcount cache;
 *     its write-back flushes refcounts, and the data, first);
 *   - a new L2 table's first content is written before the L1 entry
 *     points at it, and the L1 table reaches the disk only in flush
 *     after the refcount flush;
 *   - a dropped reference (COW of a shared cluster, discard, overwrite
 *     of a compressed cluster, L2 table copy) is applied only after the
 *     L2/L1 change is durable (qcow2_defer_unref_locked): flush writes
 *     refcounts + fdatasync, L2 + L1 + fdatasync, then applies drops and
 *     flushes refcounts again.
 * With an external data file, guest offset == host offset and data
 * clusters have no refcounts (spec, incompatible bit 2).
 *
 * Reads take no write_gate: a read racing a discard or a rewrite of its
 * range may see the old bytes, the new ones or zeroes, but never another
 * range's. It pins what it mapped (pin.c), and a dropped reference is
 * applied, so its cluster freed and reused, only once the reads pinned up
 * to the drop are done (qcow2-refcount.c).
 *
 * Not here: compressed writes (overwrites of compressed clusters are
 * decompressed and rewritten plainly), preallocation, resizing.
 */
#include "qcow2-int.h"

#include "checked.h"
#include "cleanup.h"
#include "endian.h"
#include "io.h"

#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

enum sc_kind { SC_UNALLOC, SC_ZERO, SC_DATA, SC_COMPRESSED };

int qcow2_begin_write_locked(struct img *img)
{
	struct qcow2_state *s = qcow2_state(img);
	uint64_t incompat = s->incompat, autoclear = s->autoclear;
	int ret;

	if (s->writing_started)
		return 0;
	/* QEMU's rule: a writer clears the autoclear bits it does not
	 * maintain (bitmaps included: we do not update them), so their data
	 * is known stale. */
	if (s->version >= 3)
		autoclear &= QCOW2_AUTOCLEAR_DATA_FILE_RAW;
	/* As QEMU: with lazy refcounts the dirty bit is set before the
	 * first write and cleared at a clean close. */
	if (s->version >= 3 && (s->compat & QCOW2_COMPAT_LAZY_REFCOUNTS))
		incompat |= QCOW2_INCOMPAT_DIRTY;
	if (incompat != s->incompat || autoclear != s->autoclear) {
		ret = qcow2_header_write_locked(
			img,
			(struct qcow2_hdr_value[]){
				{ QCOW2_HDR_INCOMPAT, incompat },
				{ QCOW2_HDR_COMPAT, s->compat },
				{ QCOW2_HDR_AUTOCLEAR, autoclear },
			},
			3);
		if (ret < 0)
			return ret;
	}
	s->writing_started = true;
	return 0;
}

static bool external(const struct img *img, const struct qcow2_state *s)
{
	return s->data_fd != img->fd;
}

/* An L2 table offset from the L1 table: cluster aligned and inside the
 * file, or the image is corrupt. */
static int check_l2_table(struct img *img, uint64_t l2_off)
{
	struct qcow2_state *s = qcow2_state(img);

	if (!is_aligned(l2_off, s->cluster_bytes) ||
	    !range_within(l2_off, s->cluster_bytes, s->file_bytes))
		return qcow2_signal_corruption(img, "L2 table at 0x%" PRIx64
					       " is invalid", l2_off);
	return 0;
}

/* The L2 entry (and bitmap) of guest_off, read only; 0 when there is no
 * L2 table. */
static int l2_entry_ro_locked(struct img *img, uint64_t guest_off,
			      uint64_t *entry_r, uint64_t *bitmap_r)
{
	struct qcow2_view *v = qcow2_view(img);
	struct qcow2_state *s = v->s;
	uint64_t l1_idx = qcow2_l1_index(s, guest_off);
	uint64_t l2_idx = qcow2_l2_index(s, guest_off);
	uint64_t l2_off;
	size_t pos;
	const uint8_t *slice;
	int ret;

	*entry_r = 0;
	*bitmap_r = 0;
	if (l1_idx >= v->l1_size)
		return -EIO;
	l2_off = v->l1_table[l1_idx] & QCOW2_L1E_OFFSET_MASK;
	if (l2_off == 0)
		return 0;
	ret = check_l2_table(img, l2_off);
	if (ret < 0)
		return ret;
	ret = qcow2_cache_get_locked(
		s->l2_cache, qcow2_l2_slice_off(s, l2_off, l2_idx, &pos), &slice);
	if (ret < 0)
		return ret;
	*entry_r = get_be64(slice + pos);
	if (s->extended_l2)
		*bitmap_r = get_be64(slice + pos + 8);
	qcow2_cache_put_locked(s->l2_cache, slice);
	return 0;
}

int qcow2_l2_entry_rw_locked(struct img *img, uint64_t guest_off,
			     uint8_t **slice_r, uint8_t **entry_r)
{
	struct qcow2_view *v = qcow2_view(img);
	struct qcow2_state *s = v->s;
	uint64_t l1_idx = qcow2_l1_index(s, guest_off);
	uint64_t l2_idx = qcow2_l2_index(s, guest_off);
	uint64_t l1e, l2_off;
	size_t pos;
	uint8_t *slice;
	int ret;

	if (l1_idx >= v->l1_size)
		return -EIO;
	l1e = v->l1_table[l1_idx];
	l2_off = l1e & QCOW2_L1E_OFFSET_MASK;
	if (l2_off == 0 || !(l1e & QCOW2_L1E_COPIED)) {
		CLEANUP_FREE uint8_t *table = calloc(1, s->cluster_bytes);
		uint64_t new_off;

		if (!table)
			return -ENOMEM;
		if (l2_off) {
			ret = check_l2_table(img, l2_off);
			if (ret < 0)
				return ret;
			/* Shared with a snapshot: copy it (through the
			 * cache, which may hold newer slices). */
			for (uint64_t o = 0; o < s->cluster_bytes;
			     o += s->l2_slice_bytes) {
				const uint8_t *sl;

				ret = qcow2_cache_get_locked(s->l2_cache,
							     l2_off + o, &sl);
				if (ret < 0)
					return ret;
				memcpy(table + o, sl, s->l2_slice_bytes);
				qcow2_cache_put_locked(s->l2_cache, sl);
			}
		}
		ret = qcow2_alloc_clusters_locked(img, 1, &new_off);
		if (ret < 0)
			return ret;
		/* The table's content reaches the file before the L1
		 * entry can (L1 is written by flush only, after a
		 * fdatasync that covers this write). */
		ret = full_pwrite(img->fd, table, s->cluster_bytes, new_off);
		if (ret < 0)
			return ret;
		v->l1_table[l1_idx] = new_off | QCOW2_L1E_COPIED;
		v->l1_dirty = true;
		ret = qcow2_meta_add_locked(img, new_off, s->cluster_bytes);
		if (ret < 0)
			return ret;
		/* The new table's refcount must be durable before L2/L1
		 * slices pointing at it. */
		qcow2_cache_set_dependency_locked(s->l2_cache, s->rc_cache);
		if (l2_off) {
			/* The data clusters keep their counts: they are
			 * still reached once through each L1 table. Only the
			 * old table loses the active L1's reference, after
			 * the new L1 entry is durable. */
			ret = qcow2_defer_unref_locked(img, l2_off,
						       s->cluster_bytes);
			if (ret < 0)
				return ret;
		}
		l2_off = new_off;
	}
	ret = qcow2_cache_get_rw_locked(
		s->l2_cache, qcow2_l2_slice_off(s, l2_off, l2_idx, &pos), &slice);
	if (ret < 0)
		return ret;
	*slice_r = slice;
	*entry_r = slice + pos;
	return 0;
}

/* Host cluster of a plain entry; *has_r says whether there is one. */
static int entry_host(struct img *img, uint64_t entry, uint64_t *host_r,
		      bool *has_r)
{
	struct qcow2_state *s = qcow2_state(img);
	uint64_t host = entry & QCOW2_L2E_OFFSET_MASK;

	*host_r = host;
	*has_r = !(entry & QCOW2_L2E_COMPRESSED) &&
		 (host != 0 || (external(img, s) && (entry & QCOW2_L2E_COPIED)));
	if (*has_r && (!is_aligned(host, s->cluster_bytes) ||
		       (!external(img, s) && host >= s->file_bytes)))
		return qcow2_signal_corruption(img, "L2 entry 0x%" PRIx64
					       " points at an invalid host "
					       "offset", entry);
	return 0;
}

static enum sc_kind sc_kind_of(const struct qcow2_state *s, uint64_t entry,
			       uint64_t bitmap, bool has_host, unsigned sc)
{
	if (entry & QCOW2_L2E_COMPRESSED)
		return SC_COMPRESSED;
	if (!s->extended_l2) {
		if (entry & QCOW2_L2E_ZERO)
			return SC_ZERO;
		return has_host ? SC_DATA : SC_UNALLOC;
	}
	if ((bitmap >> sc) & 1)
		return SC_DATA;
	if ((bitmap >> (32 + sc)) & 1)
		return SC_ZERO;
	return SC_UNALLOC;
}

/* Drops the reference an L2 entry holds on its host cluster(s). */
static int unref_entry_locked(struct img *img, uint64_t entry)
{
	struct qcow2_state *s = qcow2_state(img);
	uint64_t host, bytes;
	bool has;
	int ret;

	if (entry & QCOW2_L2E_COMPRESSED) {
		qcow2_compressed_desc(s, entry, &host, &bytes);
		return qcow2_defer_unref_locked(img, host, bytes);
	}
	ret = entry_host(img, entry, &host, &has);
	if (ret < 0 || !has || external(img, s))
		return ret;
	return qcow2_defer_unref_locked(img, host, s->cluster_bytes);
}

/* Guest clusters whose allocating write is between their allocation and
 * their L2 update, with the metadata lock dropped for the data I/O. Other
 * writers of the same clusters wait for it (s->inflight_cond). */
struct inflight {
	uint64_t cluster_idx;
	uint64_t count;
	struct inflight *next;
};

static bool is_inflight(const struct qcow2_state *s, uint64_t cluster_idx)
{
	for (const struct inflight *f = s->inflight; f; f = f->next)
		if (cluster_idx >= f->cluster_idx &&
		    cluster_idx - f->cluster_idx < f->count)
			return true;
	return false;
}

static void end_inflight(struct qcow2_state *s, struct inflight *me)
{
	for (struct inflight **p = &s->inflight; *p; p = &(*p)->next) {
		if (*p == me) {
			*p = me->next;
			break;
		}
	}
	pthread_cond_broadcast(&s->inflight_cond);
}

/* Takes write_gate (shared) and the metadata lock for a write starting
 * at cluster cluster_idx, once no other writer is allocating it (its L2
 * entry is about to change: decide after it). Both are held on return,
 * also on failure. */
static int enter_write(struct img *img, uint64_t cluster_idx)
{
	struct qcow2_state *s = qcow2_state(img);

	pthread_rwlock_rdlock(&s->write_gate);
	pthread_mutex_lock(s->lock);
	while (is_inflight(s, cluster_idx))
		pthread_cond_wait(&s->inflight_cond, s->lock);
	if (img->read_only)
		return -EROFS;
	return qcow2_begin_write_locked(img);
}

/* What an allocating write decided under the lock. */
struct alloc_plan {
	uint64_t cs, entry, bitmap, old_host, new_host;
	uint64_t new_alloc, new_zero;
	bool has_host, moved, allocated;
};

/* A cluster we must copy before writing (no COPIED flag) is shared, so
 * it counts at least 2 (us and a snapshot); 0 means the L2 entry of
 * guest cluster cs points at a free cluster: the image is corrupt. */
static int check_shared_locked(struct img *img, uint64_t cs, uint64_t host)
{
	struct qcow2_state *s = qcow2_state(img);
	uint64_t rc;
	int ret;

	ret = qcow2_get_refcount_locked(img, host >> s->cluster_bits, &rc);
	if (ret < 0)
		return ret;
	if (rc == 0)
		return qcow2_signal_corruption(img, "L2 entry for guest offset "
					       "0x%" PRIx64 " points at cluster "
					       "0x%" PRIx64 " whose refcount is 0",
					       cs, host);
	return 0;
}

/* Under the lock: picks the host cluster (allocating one when the old
 * one is absent or shared) and the new subcluster bitmaps. */
static int plan_locked(struct img *img, size_t n, uint64_t off,
		       struct alloc_plan *p)
{
	struct qcow2_state *s = qcow2_state(img);
	size_t in = (size_t)(off - p->cs);
	size_t sc_bytes = (size_t)1 << s->subcluster_bits;
	unsigned nb_sc = s->extended_l2 ? QCOW2_EXTL2_SUBCLUSTERS : 1;
	unsigned first_sc = (unsigned)(in / sc_bytes);
	unsigned last_sc = (unsigned)((in + n - 1) / sc_bytes);
	int ret;

	ret = entry_host(img, p->entry, &p->old_host, &p->has_host);
	if (ret < 0)
		return ret;
	if (!(p->entry & QCOW2_L2E_COMPRESSED) &&
	    qcow2_entry_verdict(s, p->entry, p->bitmap, p->has_host) < 0)
		return qcow2_signal_corruption(img, "L2 entry 0x%" PRIx64
					       " with subcluster bitmap 0x%"
					       PRIx64 " is inconsistent",
					       p->entry, p->bitmap);
	if (external(img, s)) {
		/* Identity mapping, no refcounts (spec). */
		p->new_host = p->cs;
		p->moved = p->has_host && p->old_host != p->cs;
	} else if (p->has_host && (p->entry & QCOW2_L2E_COPIED)) {
		p->new_host = p->old_host;
		p->moved = false;
	} else {
		if (p->has_host) {
			ret = check_shared_locked(img, p->cs, p->old_host);
			if (ret < 0)
				return ret;
		}
		ret = qcow2_alloc_clusters_locked(img, 1, &p->new_host);
		if (ret < 0)
			return ret;
		p->moved = true;
		p->allocated = true;
	}
	for (unsigned sc = 0; sc < nb_sc; sc++) {
		enum sc_kind k = sc_kind_of(s, p->entry, p->bitmap,
					    p->has_host, sc);
		bool touched = sc >= first_sc && sc <= last_sc;

		if (touched || k == SC_COMPRESSED || k == SC_DATA)
			p->new_alloc |= 1ull << sc;
		else if (k == SC_ZERO)
			p->new_zero |= 1ull << sc;
	}
	return 0;
}

/* Does subcluster sc need its old content (data, decompressed bytes,
 * backing file or zeroes) filled in around the write? */
static bool needs_fill(const struct qcow2_state *s, const struct alloc_plan *p,
		       size_t in, size_t n, unsigned sc, enum sc_kind k)
{
	size_t sc_bytes = (size_t)1 << s->subcluster_bits;
	unsigned first_sc = (unsigned)(in / sc_bytes);
	unsigned last_sc = (unsigned)((in + n - 1) / sc_bytes);
	bool touched = sc >= first_sc && sc <= last_sc;
	size_t lo = sc * sc_bytes;
	bool covered = touched && lo >= in && lo + sc_bytes <= in + n;

	if (!((p->new_alloc >> sc) & 1) || covered)
		return false;
	/* In place, allocated subclusters keep their content untouched. */
	return p->moved || (touched && k != SC_DATA);
}

/* A new cluster whose fill is all zeroes: rather than writing a whole
 * cluster of mostly zeroes, punch the fill ranges (a reused cluster may
 * hold old bytes) and write only the data, so the image stays sparse
 * and a 4 KiB write costs 4 KiB of I/O. The cluster's last byte is
 * written (a zero, or the data's own) so the file never ends inside a
 * cluster the refcounts call used. -EOPNOTSUPP when the file system
 * cannot punch holes: the caller writes the whole cluster. */
static int write_with_zero_fill(struct img *img, const uint8_t *buf, size_t n,
				size_t in, uint64_t host)
{
	struct qcow2_state *s = qcow2_state(img);
	static const uint8_t zero;
	size_t tail = in + n;
	int ret;

	if (in > 0 &&
	    fallocate(s->data_fd, FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE,
		      (off_t)host, (off_t)in) < 0)
		return -errno;
	if (tail < s->cluster_bytes &&
	    fallocate(s->data_fd, FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE,
		      (off_t)(host + tail), (off_t)(s->cluster_bytes - tail)) < 0)
		return -errno;
	ret = full_pwrite(s->data_fd, buf, n, host + in);
	if (ret < 0 || tail == s->cluster_bytes)
		return ret;
	return full_pwrite(s->data_fd, &zero, 1, host + s->cluster_bytes - 1);
}

/* Without the lock: fills what the write does not cover from the old
 * content and writes the data. The old clusters cannot be freed
 * meanwhile: their references drop only after our L2 update, and
 * discard/snapshot operations wait for write_gate, which we hold. */
static int fill_and_write(struct img *img, const uint8_t *buf, size_t n,
			  uint64_t off, const struct alloc_plan *p)
{
	struct qcow2_state *s = qcow2_state(img);
	size_t in = (size_t)(off - p->cs);
	size_t sc_bytes = (size_t)1 << s->subcluster_bits;
	unsigned nb_sc = s->extended_l2 ? QCOW2_EXTL2_SUBCLUSTERS : 1;
	unsigned first_sc = (unsigned)(in / sc_bytes);
	unsigned last_sc = (unsigned)((in + n - 1) / sc_bytes);
	CLEANUP_FREE uint8_t *cbuf = NULL;
	CLEANUP_FREE uint8_t *decomp = NULL;
	bool zero_fill = p->moved && !external(img, s);
	size_t wlo, whi;
	int ret = 0;

	for (unsigned sc = 0; zero_fill && sc < nb_sc; sc++) {
		enum sc_kind k = sc_kind_of(s, p->entry, p->bitmap,
					    p->has_host, sc);

		if (needs_fill(s, p, in, n, sc, k) &&
		    !(k == SC_ZERO || (k == SC_UNALLOC && !img->backing)))
			zero_fill = false;
	}
	if (zero_fill) {
		ret = write_with_zero_fill(img, buf, n, in, p->new_host);
		if (ret != -EOPNOTSUPP && ret != -ENOSYS)
			return ret;
	}
	cbuf = calloc(1, s->cluster_bytes);
	if (!cbuf)
		return -ENOMEM;
	for (unsigned sc = 0; sc < nb_sc; sc++) {
		enum sc_kind k = sc_kind_of(s, p->entry, p->bitmap,
					    p->has_host, sc);
		size_t lo = sc * sc_bytes;

		if (!needs_fill(s, p, in, n, sc, k))
			continue;
		switch (k) {
		case SC_DATA:
			ret = full_pread_zero_eof(s->data_fd, cbuf + lo,
						  sc_bytes, p->old_host + lo);
			break;
		case SC_COMPRESSED:
			if (!decomp) {
				decomp = malloc(s->cluster_bytes);
				if (!decomp)
					return -ENOMEM;
				ret = qcow2_read_compressed(img, p->entry,
							    decomp, 0,
							    s->cluster_bytes);
				if (ret < 0)
					return ret;
			}
			memcpy(cbuf + lo, decomp + lo, sc_bytes);
			ret = 0;
			break;
		case SC_ZERO:
			ret = 0;
			break;
		case SC_UNALLOC:
			ret = img_read_backing(img, cbuf + lo, sc_bytes,
					       p->cs + lo);
			break;
		}
		if (ret < 0)
			return ret;
	}
	memcpy(cbuf + in, buf, n);
	if (p->moved || nb_sc == 1) {
		/* A new cluster is written whole, so the file never ends
		 * inside a cluster the refcounts call used. */
		wlo = 0;
		whi = s->cluster_bytes;
	} else {
		/* Same host, extended L2: an edge subcluster that is
		 * already allocated gets only our bytes, never old content,
		 * which could undo a racing in-place write there. */
		wlo = first_sc * sc_bytes;
		whi = (last_sc + 1) * sc_bytes;
		if (sc_kind_of(s, p->entry, p->bitmap, p->has_host,
			       first_sc) == SC_DATA)
			wlo = in;
		if (sc_kind_of(s, p->entry, p->bitmap, p->has_host,
			       last_sc) == SC_DATA)
			whi = in + n;
	}
	return full_pwrite(s->data_fd, cbuf + wlo, whi - wlo,
			   p->new_host + wlo);
}

/* Under the lock again: points the L2 entry at the written data. */
static int link_l2_locked(struct img *img, const struct alloc_plan *p,
			  bool *linked_r)
{
	struct qcow2_state *s = qcow2_state(img);
	uint8_t *slice, *e;
	int ret;

	ret = qcow2_l2_entry_rw_locked(img, p->cs, &slice, &e);
	if (ret < 0)
		return ret;
	put_be64(e, p->new_host | QCOW2_L2E_COPIED);
	if (s->extended_l2)
		put_be64(e + 8, p->new_alloc | (p->new_zero << 32));
	/* The entry points at a cluster whose refcount was just raised:
	 * refcount blocks (and the data) must be flushed before this L2
	 * slice. */
	qcow2_cache_set_dependency_locked(s->l2_cache, s->rc_cache);
	qcow2_cache_put_locked(s->l2_cache, slice);
	*linked_r = true;
	if (p->moved && !external(img, s))
		return unref_entry_locked(img, p->entry);
	return 0;
}

/* One piece of a write, inside one cluster. */
static int write_piece(struct img *img, const uint8_t *buf, size_t n,
		       uint64_t off)
{
	struct qcow2_state *s = qcow2_state(img);
	uint64_t cs = align_down(off, s->cluster_bytes);
	size_t in = (size_t)(off - cs);
	unsigned first_sc = (unsigned)(in >> s->subcluster_bits);
	unsigned last_sc = (unsigned)((in + n - 1) >> s->subcluster_bits);
	uint64_t touched = ((2ull << last_sc) - 1) & ~((1ull << first_sc) - 1);
	struct alloc_plan plan = { .cs = cs };
	struct inflight me = { .cluster_idx = cs >> s->cluster_bits,
			       .count = 1 };
	uint64_t host;
	bool has_host, linked = false;
	int ret;

	ret = enter_write(img, me.cluster_idx);
	if (ret < 0)
		goto out_unlock;
	ret = l2_entry_ro_locked(img, off, &plan.entry, &plan.bitmap);
	if (ret < 0)
		goto out_unlock;
	ret = entry_host(img, plan.entry, &host, &has_host);
	if (ret < 0)
		goto out_unlock;
	if (!(plan.entry & QCOW2_L2E_COMPRESSED) &&
	    qcow2_entry_verdict(s, plan.entry, plan.bitmap, has_host) < 0) {
		ret = qcow2_signal_corruption(img, "L2 entry 0x%" PRIx64
					      " with subcluster bitmap 0x%"
					      PRIx64 " is inconsistent",
					      plan.entry, plan.bitmap);
		goto out_unlock;
	}
	if (has_host && (plan.entry & QCOW2_L2E_COPIED) &&
	    (s->extended_l2 ? (plan.bitmap & touched) == touched
			    : !(plan.entry & QCOW2_L2E_ZERO))) {
		/* In place: refcount 1 and already allocated, so the
		 * mapping cannot change while write_gate is held shared;
		 * the data pwrite runs without the metadata lock. */
		if (!external(img, s)) {
			ret = qcow2_check_overlap_locked(img, host + in, n);
			if (ret < 0)
				goto out_unlock;
		}
		pthread_mutex_unlock(s->lock);
		ret = full_pwrite(s->data_fd, buf, n, host + in);
		pthread_rwlock_unlock(&s->write_gate);
		return ret;
	}
	ret = plan_locked(img, n, off, &plan);
	if (ret == 0 && !plan.allocated && !external(img, s))
		/* Our own cluster, taken from the L2 entry (a new one was
		 * checked by the allocator). */
		ret = qcow2_check_overlap_locked(img, plan.new_host,
						 s->cluster_bytes);
	if (ret < 0)
		goto out_unlock;
	me.next = s->inflight;
	s->inflight = &me;
	/* The data I/O (copy-on-write reads, backing reads, the write)
	 * runs unlocked; readers keep seeing the old entry until the L2
	 * update below, which happens only after the data is written. */
	pthread_mutex_unlock(s->lock);
	ret = fill_and_write(img, buf, n, off, &plan);
	pthread_mutex_lock(s->lock);
	if (ret == 0 && img->read_only)
		ret = -EROFS; /* marked corrupt meanwhile */
	if (ret == 0)
		ret = link_l2_locked(img, &plan, &linked);
	if (ret < 0 && plan.allocated && !linked)
		/* Nothing points at it: give it back (after the next
		 * durable metadata, like any drop). */
		(void)qcow2_defer_unref_locked(img, plan.new_host,
					       s->cluster_bytes);
	end_inflight(s, &me);
out_unlock:
	pthread_mutex_unlock(s->lock);
	pthread_rwlock_unlock(&s->write_gate);
	return ret;
}

/* Whole-cluster writes take up to this many clusters at once: one
 * allocation, one pwrite and one pass over the L2 entries instead of one
 * of each per cluster (a 1 MiB FUSE write is 16 clusters of 64 KiB), and
 * no copy into a bounce buffer. */
#define RUN_MAX_CLUSTERS 256

enum run_kind {
	RUN_IN_PLACE, /* our own cluster, every subcluster allocated */
	RUN_ALLOCATE, /* needs a new cluster (none, shared, compressed) */
	RUN_NONE,     /* our own cluster flagged zero or partly allocated:
		       * write_piece keeps its host */
};

static int run_kind_locked(struct img *img, uint64_t cs, uint64_t *entry_r,
			   uint64_t *host_r, enum run_kind *kind_r)
{
	struct qcow2_state *s = qcow2_state(img);
	uint64_t bitmap;
	bool has;
	int ret;

	ret = l2_entry_ro_locked(img, cs, entry_r, &bitmap);
	if (ret < 0)
		return ret;
	ret = entry_host(img, *entry_r, host_r, &has);
	if (ret < 0)
		return ret;
	if (has && (*entry_r & QCOW2_L2E_COPIED)) {
		bool whole = s->extended_l2
				     ? (bitmap & 0xffffffffull) == 0xffffffffull
				     : !(*entry_r & QCOW2_L2E_ZERO);

		*kind_r = whole ? RUN_IN_PLACE : RUN_NONE;
		return 0;
	}
	if (has) {
		ret = check_shared_locked(img, cs, *host_r);
		if (ret < 0)
			return ret;
	}
	*kind_r = RUN_ALLOCATE;
	return 0;
}

/* Writes whole clusters from off (cluster-aligned, at most max of them)
 * that all go the same way: in place into contiguous host clusters, or
 * into one freshly allocated contiguous run. *done_r gets the bytes
 * written; 0 when the first cluster needs write_piece. */
static int write_run(struct img *img, const uint8_t *buf, uint64_t max,
		     uint64_t off, size_t *done_r)
{
	struct qcow2_state *s = qcow2_state(img);
	uint64_t cb = s->cluster_bytes;
	uint64_t entries[RUN_MAX_CLUSTERS];
	struct inflight me = { .cluster_idx = off >> s->cluster_bits };
	uint64_t host0, host, nb, new_host, linked = 0, to_link;
	size_t written;
	enum run_kind kind, k;
	int ret;

	*done_r = 0;
	max = MIN(max, RUN_MAX_CLUSTERS);
	ret = enter_write(img, me.cluster_idx);
	if (ret < 0)
		goto out_unlock;
	ret = run_kind_locked(img, off, &entries[0], &host0, &kind);
	if (ret < 0 || kind == RUN_NONE)
		goto out_unlock;
	for (nb = 1; nb < max; nb++) {
		if (is_inflight(s, me.cluster_idx + nb))
			break;
		ret = run_kind_locked(img, off + nb * cb, &entries[nb], &host,
				      &k);
		if (ret < 0)
			goto out_unlock;
		if (k != kind || (kind == RUN_IN_PLACE && host != host0 + nb * cb))
			break;
	}
	if (kind == RUN_IN_PLACE) {
		/* As write_piece's in-place case: the mapping cannot change
		 * while write_gate is held shared. */
		ret = qcow2_check_overlap_locked(img, host0, nb * cb);
		if (ret < 0)
			goto out_unlock;
		pthread_mutex_unlock(s->lock);
		ret = full_pwrite(s->data_fd, buf, nb * cb, host0);
		pthread_rwlock_unlock(&s->write_gate);
		if (ret == 0)
			*done_r = nb * cb;
		return ret;
	}
	ret = qcow2_alloc_clusters_upto_locked(img, nb, &new_host, &nb);
	if (ret < 0)
		goto out_unlock;
	me.count = nb;
	to_link = nb;
	me.next = s->inflight;
	s->inflight = &me;
	pthread_mutex_unlock(s->lock);
	ret = full_pwrite_count(s->data_fd, buf, nb * cb, new_host, &written);
	pthread_mutex_lock(s->lock);
	if (ret < 0 && written >= cb) {
		/* A full disk: keep the clusters that were written whole,
		 * as cluster-by-cluster writes would have. */
		to_link = written / cb;
		ret = 0;
	}
	if (ret == 0 && img->read_only)
		ret = -EROFS; /* marked corrupt meanwhile */
	while (ret == 0 && linked < to_link) {
		struct alloc_plan p = {
			.cs = off + linked * cb,
			.entry = entries[linked],
			.new_host = new_host + linked * cb,
			.new_alloc = 0xffffffffull,
			.moved = true,
		};
		bool l = false;

		ret = link_l2_locked(img, &p, &l);
		if (l)
			linked++;
	}
	if (linked < nb)
		(void)qcow2_defer_unref_locked(img, new_host + linked * cb,
					       (nb - linked) * cb);
	end_inflight(s, &me);
	if (ret == 0)
		*done_r = linked * cb;
out_unlock:
	pthread_mutex_unlock(s->lock);
	pthread_rwlock_unlock(&s->write_gate);
	return ret;
}

int qcow2_pwrite(struct img *img, const void *buf, size_t len, uint64_t off)
{
	struct qcow2_state *s = qcow2_state(img);
	uint64_t cb = s->cluster_bytes;
	const uint8_t *p = buf;

	while (len > 0) {
		size_t n = 0;
		int ret;

		/* External data files map guest == host: write_piece. */
		if (!external(img, s) && is_aligned(off, cb) && len >= cb) {
			ret = write_run(img, p, len >> s->cluster_bits, off,
					&n);
			if (ret < 0)
				return ret;
		}
		if (n == 0) {
			n = (size_t)MIN((uint64_t)len, cb - (off & (cb - 1)));
			ret = write_piece(img, p, n, off);
			if (ret < 0)
				return ret;
		}
		p += n;
		off += n;
		len -= n;
	}
	return 0;
}

/* Does the cluster at cs already read as zeroes (cheap cases only)? */
static bool reads_zero(struct img *img, uint64_t entry)
{
	struct qcow2_state *s = qcow2_state(img);

	if (s->extended_l2)
		return false;
	if (entry & QCOW2_L2E_COMPRESSED)
		return false;
	if (entry & QCOW2_L2E_ZERO)
		return true;
	return !img->backing && (entry & QCOW2_L2E_OFFSET_MASK) == 0 &&
	       !(external(img, s) && (entry & QCOW2_L2E_COPIED));
}

/* Makes a partial cluster range read as zeroes by writing zeroes. */
static int zero_piece(struct img *img, uint64_t off, size_t n)
{
	struct qcow2_state *s = qcow2_state(img);
	CLEANUP_FREE uint8_t *zeroes = NULL;
	uint64_t entry, bitmap;
	int ret;

	{
		LOCK_FOR_SCOPE(s->lock);
		ret = l2_entry_ro_locked(img, off, &entry, &bitmap);
	}
	if (ret < 0)
		return ret;
	if (reads_zero(img, entry))
		return 0;
	zeroes = calloc(1, n);
	if (!zeroes)
		return -ENOMEM;
	return qcow2_pwrite(img, zeroes, n, off);
}

/* Replaces the whole cluster at cs by "zero" (v3 zero flag) or by
 * nothing (unallocated), dropping its old reference. */
static int drop_cluster_locked(struct img *img, uint64_t cs, bool zero_flag)
{
	struct qcow2_state *s = qcow2_state(img);
	uint64_t entry, bitmap, new_entry = 0, new_bitmap = 0;
	uint8_t *slice, *e;
	int ret;

	ret = l2_entry_ro_locked(img, cs, &entry, &bitmap);
	if (ret < 0)
		return ret;
	if (zero_flag) {
		if (s->extended_l2)
			new_bitmap = 0xffffffffull << 32;
		else
			new_entry = QCOW2_L2E_ZERO;
	}
	if (entry == new_entry && bitmap == new_bitmap)
		return 0;
	if (entry == 0 && bitmap == 0 && !zero_flag)
		return 0;
	ret = qcow2_l2_entry_rw_locked(img, cs, &slice, &e);
	if (ret < 0)
		return ret;
	put_be64(e, new_entry);
	if (s->extended_l2)
		put_be64(e + 8, new_bitmap);
	/* A newly allocated or copied L2 table needs its refcount first. */
	qcow2_cache_set_dependency_locked(s->l2_cache, s->rc_cache);
	qcow2_cache_put_locked(s->l2_cache, slice);
	if (external(img, s)) {
		/* No refcounts; give the space back (the range reads as
		 * zeroes through the L2 entry, and stays zero if the data
		 * file is read raw). */
		(void)fallocate(s->data_fd, FALLOC_FL_PUNCH_HOLE |
					    FALLOC_FL_KEEP_SIZE,
				(off_t)cs, (off_t)s->cluster_bytes);
		return 0;
	}
	/* Freed (and hole-punched) only once this entry is durable. */
	return unref_entry_locked(img, entry);
}

enum zero_mode { MODE_DISCARD, MODE_ZEROES };

static int drop_range(struct img *img, uint64_t off, uint64_t len,
		      enum zero_mode mode)
{
	struct qcow2_state *s = qcow2_state(img);
	uint64_t end = off + len;
	uint64_t head_end = MIN(end, align_up(off, s->cluster_bytes));
	uint64_t tail_start = MAX(head_end, align_down(end, s->cluster_bytes));
	int ret;

	if (off < head_end) {
		ret = zero_piece(img, off, (size_t)(head_end - off));
		if (ret < 0)
			return ret;
	}
	if (head_end < tail_start) {
		/* Exclusive: no in-place write may be in flight into a
		 * cluster whose mapping we drop here. */
		pthread_rwlock_wrlock(&s->write_gate);
		pthread_mutex_lock(s->lock);
		ret = img->read_only ? -EROFS : qcow2_begin_write_locked(img);
		for (uint64_t cs = head_end; ret == 0 && cs < tail_start;
		     cs += s->cluster_bytes) {
			if (s->version < 3) {
				/* No zero flag: unallocated reads as zeroes
				 * only without a backing file; a discard may
				 * show the backing file (imgfmt.h). */
				if (mode == MODE_ZEROES && img->backing) {
					pthread_mutex_unlock(s->lock);
					pthread_rwlock_unlock(&s->write_gate);
					ret = zero_piece(img, cs,
							 s->cluster_bytes);
					pthread_rwlock_wrlock(&s->write_gate);
					pthread_mutex_lock(s->lock);
					continue;
				}
				ret = drop_cluster_locked(img, cs, false);
			} else {
				ret = drop_cluster_locked(img, cs,
							  img->backing != NULL ||
							  mode == MODE_ZEROES);
			}
		}
		pthread_mutex_unlock(s->lock);
		pthread_rwlock_unlock(&s->write_gate);
		if (ret < 0)
			return ret;
	}
	if (tail_start < end) {
		ret = zero_piece(img, tail_start, (size_t)(end - tail_start));
		if (ret < 0)
			return ret;
	}
	return 0;
}

int qcow2_discard(struct img *img, uint64_t off, uint64_t len)
{
	return drop_range(img, off, len, MODE_DISCARD);
}

int qcow2_write_zeroes(struct img *img, uint64_t off, uint64_t len)
{
	return drop_range(img, off, len, MODE_ZEROES);
}

static int write_l1_locked(struct img *img)
{
	struct qcow2_view *v = qcow2_view(img);
	CLEANUP_FREE uint64_t *be = NULL;

	if (!v->l1_dirty || v->l1_size == 0)
		return 0;
	be = malloc((size_t)v->l1_size * 8);
	if (!be)
		return -ENOMEM;
	for (uint32_t i = 0; i < v->l1_size; i++)
		put_be64(&be[i], v->l1_table[i]);
	int ret = full_pwrite(img->fd, be, (size_t)v->l1_size * 8,
			      v->l1_table_offset);
	if (ret < 0)
		return ret;
	v->l1_dirty = false;
	return 0;
}

int qcow2_flush_locked(struct img *img)
{
	struct qcow2_state *s = qcow2_state(img);
	int ret;

	if (!s->rc_cache || s->corrupt_reason)
		return s->corrupt_reason ? -EIO : 0;
	/* 1. Refcounts (and the data written so far) durable: every L2
	 * entry about to be written points at counted clusters. */
	ret = qcow2_cache_flush_locked(s->rc_cache);
	if (ret < 0)
		return ret;
	/* 2. L2 slices and the L1 table, then durable. */
	ret = qcow2_cache_writeback_locked(s->l2_cache);
	if (ret < 0)
		return ret;
	ret = write_l1_locked(img);
	if (ret < 0)
		return ret;
	if (fdatasync(img->fd) < 0)
		return -errno;
	/* 3. Only now, with nothing durable pointing at them any more,
	 * drop the references the L2/L1 changes released. */
	if (s->nb_deferred) {
		ret = qcow2_apply_deferred_locked(img);
		if (ret < 0)
			return ret;
		ret = qcow2_cache_flush_locked(s->rc_cache);
		if (ret < 0)
			return ret;
	}
	return 0;
}

int qcow2_flush(struct img *img)
{
	struct qcow2_view *v = qcow2_view(img);
	struct qcow2_state *s = v->s;

	if (v->parent)
		return 0;
	LOCK_FOR_SCOPE(s->lock);
	return qcow2_flush_locked(img);
}

int qcow2_close_write(struct img *img)
{
	struct qcow2_state *s = qcow2_state(img);
	int ret;

	LOCK_FOR_SCOPE(s->lock);
	ret = qcow2_flush_locked(img);
	if (ret < 0)
		return ret;
	/* Everything is durable: the refcounts are right again. */
	if (s->incompat & QCOW2_INCOMPAT_DIRTY)
		return qcow2_header_write_field_locked(
			img, QCOW2_HDR_INCOMPAT,
			s->incompat & ~QCOW2_INCOMPAT_DIRTY);
	return 0;
}
