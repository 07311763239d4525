/* qcow2-refcount.c: refcounts, cluster allocation and freeing.
 *
 * docs/interop/qcow2.txt, "Host cluster management": a refcount table
 * (kept whole in memory, host order) points at refcount blocks, each one
 * cluster of 2^refcount_order-bit entries (big-endian for 8..64 bits;
 * 1, 2 and 4 bits packed from the least significant bit of each byte, as
 * QEMU reads them). Refcount blocks are read and modified through their
 * own slice cache (s->rc_cache); the L2 cache depends on it.
 *
 * Ordering invariants (DESIGN.md, "Write ordering"):
 *   - increments happen in the cache at once; the L2 cache is made to
 *     depend on the refcount cache whenever an L2 entry gains a
 *     reference, so the refcount is durable before the L2 entry is;
 *   - decrements never happen at once: qcow2_defer_unref_locked queues
 *     them, and the flush applies them only after the L2/L1 change that
 *     dropped the reference is durable. A freed cluster is therefore
 *     reused only when nothing durable still points at it; a crash in
 *     between leaks it (qemu-img check: leak, never corruption);
 *   - nor is a drop applied while a read that may have mapped the
 *     cluster runs: each queued drop carries the pin epoch of its L2/L1
 *     change (pin.c), and the flush applies the queue in order up to the
 *     first drop whose pins are still held; the rest waits for the next
 *     flush. Until then the refcount on disk still counts the reference
 *     (conservative: a crash leaks the cluster, never hands it out
 *     twice), and the final flush at close, with no read left, applies
 *     everything;
 *   - a new refcount block describes itself (it lies inside the range it
 *     covers, with refcount 1 for itself) and is written and made durable
 *     before the refcount table entry that points at it;
 *   - growing the refcount table writes the new blocks and table past
 *     every existing cluster, makes them durable, then switches the
 *     header's table pointer in one 12-byte write; the old table is
 *     dropped afterwards (deferred like any other drop).
 *
 * Allocation is first fit from a hint (the lowest cluster index that may
 * be free), else append at the end of the file. Whatever lands on the
 * header, L1, refcount table or snapshot table means the refcounts lie:
 * the image is marked corrupt.
 *
 * Not here: refcount repair (qemu-img check -r does that), and
 * contiguity beyond what one call asks for.
 */
#include "qcow2-int.h"

#include "checked.h"
#include "cleanup.h"
#include "endian.h"
#include "io.h"

#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

int qcow2_signal_corruption(struct img *img, const char *fmt, ...)
{
	struct qcow2_state *s = qcow2_state(img);
	char *reason = NULL;
	va_list ap;

	if (!s->corrupt_reason) {
		va_start(ap, fmt);
		if (vasprintf(&reason, fmt, ap) < 0)
			reason = NULL;
		va_end(ap);
		s->corrupt_reason = reason ? reason : strdup("corrupt");
	}
	/* As QEMU: set the corrupt bit (v3 only has it) so nobody writes
	 * the image again until it is repaired, then stop writing. */
	if (s->version >= 3 && !(s->incompat & QCOW2_INCOMPAT_CORRUPT) &&
	    !qcow2_view(img)->parent)
		(void)qcow2_header_write_field_locked(
			img, QCOW2_HDR_INCOMPAT,
			s->incompat | QCOW2_INCOMPAT_CORRUPT);
	/* Requests check this without the metadata lock (img.c). */
	__atomic_store_n(&img->read_only, true, __ATOMIC_RELEASE);
	return -EIO;
}

static uint64_t rc_max(const struct qcow2_state *s)
{
	return s->refcount_order == 6 ? UINT64_MAX
				       : (1ull << (1u << s->refcount_order)) - 1;
}

static uint64_t rc_read(const uint8_t *slice, uint64_t i, unsigned order)
{
	unsigned bits = 1u << order;

	switch (order) {
	case 3:
		return slice[i];
	case 4:
		return get_be16(slice + 2 * i);
	case 5:
		return get_be32(slice + 4 * i);
	case 6:
		return get_be64(slice + 8 * i);
	default:
		return (slice[i * bits / 8] >> ((i * bits) % 8)) &
		       ((1u << bits) - 1);
	}
}

static void rc_write(uint8_t *slice, uint64_t i, unsigned order, uint64_t v)
{
	unsigned bits = 1u << order;
	uint8_t *b, mask;

	switch (order) {
	case 3:
		slice[i] = (uint8_t)v;
		return;
	case 4:
		put_be16(slice + 2 * i, (uint16_t)v);
		return;
	case 5:
		put_be32(slice + 4 * i, (uint32_t)v);
		return;
	case 6:
		put_be64(slice + 8 * i, v);
		return;
	default:
		b = &slice[i * bits / 8];
		mask = (uint8_t)(((1u << bits) - 1) << ((i * bits) % 8));
		*b = (uint8_t)((*b & ~mask) |
			       ((v << ((i * bits) % 8)) & mask));
		return;
	}
}

int qcow2_refcount_init(struct img *img, struct img_err *err)
{
	struct qcow2_state *s = qcow2_state(img);
	uint64_t bytes = (uint64_t)s->refcount_table_clusters *
			 s->cluster_bytes;
	int ret;

	s->rb_entry_bits = s->cluster_bits + 3 - s->refcount_order;
	s->reftable_entries = bytes / 8;
	/* bytes <= 8 MiB: validated at open. */
	s->reftable = malloc(bytes);
	if (!s->reftable)
		return img_err(err, -ENOMEM, "%s: out of memory", img->path);
	ret = full_pread(img->fd, s->reftable, bytes,
			 s->refcount_table_offset);
	if (ret < 0)
		return img_err(err, ret, "%s: cannot read the refcount table",
			       img->path);
	for (uint64_t i = 0; i < s->reftable_entries; i++)
		s->reftable[i] = get_be64(&s->reftable[i]);
	s->rc_cache = qcow2_cache_new(img->fd, img->opts.cache_bytes / 4,
				      MIN(4096u, s->cluster_bytes),
				      &s->file_bytes);
	if (!s->rc_cache)
		return img_err(err, -ENOMEM, "%s: out of memory", img->path);
	/* External data: it must be durable before L2 entries that point
	 * at it, and L2 write-back always flushes the refcounts first. */
	if (s->data_fd != img->fd)
		qcow2_cache_set_extra_sync_fd(s->rc_cache, s->data_fd);
	/* "flush refcount blocks before the L2 slices that point at the
	 * clusters they count" (QEMU's rule); set again on every L2
	 * change, which re-arms the flush. */
	qcow2_cache_set_dependency_locked(s->l2_cache, s->rc_cache);
	s->free_hint_cluster = 1;
	return 0;
}

void qcow2_refcount_free(struct qcow2_state *s)
{
	qcow2_cache_free(s->rc_cache);
	free(s->reftable);
	free(s->deferred);
	free(s->corrupt_reason);
	qcow2_meta_free(s);
}

/* Where the refcount of cluster idx lives: *slice_off_r (0 when no
 * block covers it: refcount 0) and the entry index inside the slice. */
static int locate(struct img *img, uint64_t idx, uint64_t *slice_off_r,
		  uint64_t *in_slice_r)
{
	struct qcow2_state *s = qcow2_state(img);
	uint64_t rt = idx >> s->rb_entry_bits;
	uint64_t in_block = idx & ((1ull << s->rb_entry_bits) - 1);
	size_t slice_bytes = qcow2_cache_slice_bytes(s->rc_cache);
	uint64_t per_slice = (uint64_t)slice_bytes * 8 >> s->refcount_order;
	uint64_t rb;

	*slice_off_r = 0;
	if (rt >= s->reftable_entries)
		return 0;
	rb = s->reftable[rt] & REFTABLE_OFFSET_MASK;
	if (rb == 0)
		return 0;
	if (!is_aligned(rb, s->cluster_bytes) || rb < s->cluster_bytes ||
	    !range_within(rb, s->cluster_bytes, s->file_bytes))
		return qcow2_signal_corruption(img, "refcount block at 0x%"
					       PRIx64 " (table entry %" PRIu64
					       ") is invalid", rb, rt);
	*slice_off_r = rb + (in_block / per_slice) * slice_bytes;
	*in_slice_r = in_block % per_slice;
	return 0;
}

int qcow2_get_refcount_locked(struct img *img, uint64_t idx, uint64_t *rc_r)
{
	struct qcow2_state *s = qcow2_state(img);
	uint64_t slice_off, in_slice;
	const uint8_t *slice;
	int ret = locate(img, idx, &slice_off, &in_slice);

	*rc_r = 0;
	if (ret < 0 || slice_off == 0)
		return ret;
	ret = qcow2_cache_get_locked(s->rc_cache, slice_off, &slice);
	if (ret < 0)
		return ret;
	*rc_r = rc_read(slice, in_slice, s->refcount_order);
	qcow2_cache_put_locked(s->rc_cache, slice);
	return 0;
}

/* Adds delta to one cluster's refcount; *new_r gets the result. */
static int update_one(struct img *img, uint64_t idx, int delta,
		      uint64_t *new_r)
{
	struct qcow2_state *s = qcow2_state(img);
	uint64_t slice_off, in_slice, v;
	uint8_t *slice;
	int ret = locate(img, idx, &slice_off, &in_slice);

	if (ret < 0)
		return ret;
	if (slice_off == 0)
		return qcow2_signal_corruption(img, "cluster 0x%" PRIx64
					       " is in use but no refcount "
					       "block covers it",
					       idx << s->cluster_bits);
	ret = qcow2_cache_get_rw_locked(s->rc_cache, slice_off, &slice);
	if (ret < 0)
		return ret;
	v = rc_read(slice, in_slice, s->refcount_order);
	if ((delta < 0 && v == 0) || (delta > 0 && v == rc_max(s))) {
		qcow2_cache_put_locked(s->rc_cache, slice);
		if (v == 0)
			return qcow2_signal_corruption(
				img, "refcount of cluster 0x%" PRIx64
				" would drop below zero (an L2 entry points at "
				"a free cluster)", idx << s->cluster_bits);
		/* Not corruption: too many snapshots for the width. */
		return -EMLINK;
	}
	v = delta < 0 ? v - 1 : v + 1;
	rc_write(slice, in_slice, s->refcount_order, v);
	qcow2_cache_put_locked(s->rc_cache, slice);
	if (new_r)
		*new_r = v;
	return 0;
}

int qcow2_update_refcount_locked(struct img *img, uint64_t host_off,
				 uint64_t bytes, int delta)
{
	struct qcow2_state *s = qcow2_state(img);
	uint64_t first = host_off >> s->cluster_bits;
	uint64_t last = (host_off + bytes - 1) >> s->cluster_bits;

	for (uint64_t i = first; bytes && i <= last; i++) {
		int ret = update_one(img, i, delta, NULL);
		if (ret < 0)
			return ret;
	}
	return 0;
}

static uint64_t file_clusters(const struct qcow2_state *s)
{
	return div_round_up(s->file_bytes, s->cluster_bytes);
}

/* Writes a zeroed refcount block at cluster `at` covering table entry
 * rt, with refcount 1 for itself, durable before the table entry. */
static int new_refblock(struct img *img, uint64_t rt, uint64_t at)
{
	struct qcow2_state *s = qcow2_state(img);
	uint8_t *block = calloc(1, s->cluster_bytes);
	uint64_t off = at << s->cluster_bits;
	uint8_t be[8];
	int ret;

	if (!block)
		return -ENOMEM;
	/* No block counts this range, so it must be empty: a table of a
	 * damaged image there would be overwritten. */
	ret = qcow2_check_overlap_locked(img, off, s->cluster_bytes);
	if (ret < 0) {
		free(block);
		return ret;
	}
	rc_write(block, at - (rt << s->rb_entry_bits), s->refcount_order, 1);
	ret = full_pwrite(img->fd, block, s->cluster_bytes, off);
	free(block);
	if (ret < 0)
		return ret;
	qcow2_file_end_grow_locked(s, off + s->cluster_bytes);
	/* The block must be durable before the table points at it, or a
	 * crash leaves the table pointing at garbage counts. */
	if (fdatasync(img->fd) < 0)
		return -errno;
	put_be64(be, off);
	ret = full_pwrite(img->fd, be, 8, s->refcount_table_offset + rt * 8);
	if (ret < 0)
		return ret;
	/* The table entry itself becomes durable with the next refcount
	 * flush, which precedes any L2 entry using these clusters. */
	s->reftable[rt] = off;
	return qcow2_meta_add_locked(img, off, s->cluster_bytes);
}

/* Moves the refcount table to a larger one that covers clusters up to
 * need_end (exclusive), placed with its new blocks past everything. */
static int grow_reftable(struct img *img, uint64_t need_end)
{
	struct qcow2_state *s = qcow2_state(img);
	uint64_t rb_entries = 1ull << s->rb_entry_bits;
	uint64_t start, nb_blocks = 1, table_clusters, end, entries;
	uint64_t old_off = s->refcount_table_offset;
	uint64_t old_bytes = (uint64_t)s->refcount_table_clusters *
			     s->cluster_bytes;
	uint64_t *table = NULL;
	uint8_t *buf = NULL;
	int ret;

	/* Start on a block boundary past the file and the request, so the
	 * new structures are covered by the new blocks alone. */
	start = align_up(MAX(file_clusters(s), need_end), rb_entries);
	entries = MAX(s->reftable_entries + s->reftable_entries / 2,
		      div_round_up(need_end, rb_entries));
	for (;;) {
		table_clusters = div_round_up(entries * 8, s->cluster_bytes);
		for (;;) {
			uint64_t k = div_round_up(nb_blocks + table_clusters,
						  rb_entries);
			if (k <= nb_blocks)
				break;
			nb_blocks = k;
		}
		end = start + nb_blocks + table_clusters;
		if (div_round_up(end, rb_entries) <= entries)
			break;
		entries = div_round_up(end, rb_entries) + entries / 2;
	}
	if (table_clusters * s->cluster_bytes > QCOW2_MAX_REFTABLE_BYTES)
		return -EFBIG;
	entries = table_clusters * s->cluster_bytes / 8;

	buf = calloc(1, s->cluster_bytes);
	table = calloc(entries, 8);
	if (!buf || !table) {
		ret = -ENOMEM;
		goto out;
	}
	for (uint64_t j = 0; j < nb_blocks; j++) {
		uint64_t first = start + j * rb_entries;

		memset(buf, 0, s->cluster_bytes);
		for (uint64_t c = first; c < MIN(end, first + rb_entries); c++)
			rc_write(buf, c - first, s->refcount_order, 1);
		ret = full_pwrite(img->fd, buf, s->cluster_bytes,
				  (start + j) << s->cluster_bits);
		if (ret < 0)
			goto out;
		/* Blocks [start, start + nb_blocks) each cover one aligned
		 * range of rb_entries clusters from start on. */
		table[(start >> s->rb_entry_bits) + j] =
			(start + j) << s->cluster_bits;
	}
	for (uint64_t i = 0; i < s->reftable_entries; i++)
		table[i] = s->reftable[i];
	for (uint64_t i = 0; i < entries; i++)
		put_be64(&table[i], table[i]);
	ret = full_pwrite(img->fd, table, entries * 8,
			  (start + nb_blocks) << s->cluster_bits);
	if (ret < 0)
		goto out;
	qcow2_file_end_grow_locked(s, end << s->cluster_bits);
	/* Pending increments in the old blocks, the new blocks and the
	 * new table must all be durable before the header points at the
	 * new table. */
	ret = qcow2_cache_flush_locked(s->rc_cache);
	if (ret < 0)
		goto out;
	ret = qcow2_header_write_locked(
		img,
		(struct qcow2_hdr_value[]){
			{ QCOW2_HDR_REFCOUNT_TABLE_OFFSET,
			  (start + nb_blocks) << s->cluster_bits },
			{ QCOW2_HDR_REFCOUNT_TABLE_CLUSTERS, table_clusters },
		},
		2);
	if (ret < 0)
		goto out;
	for (uint64_t i = 0; i < entries; i++)
		table[i] = get_be64(&table[i]);
	free(s->reftable);
	s->reftable = table;
	table = NULL;
	s->reftable_entries = entries;
	qcow2_meta_forget_locked(img);
	/* The header no longer names the old table; its clusters are
	 * dropped like any other (after the next durable metadata). */
	ret = qcow2_defer_unref_locked(img, old_off, old_bytes);
out:
	free(buf);
	free(table);
	return ret;
}

static bool overlaps(uint64_t a, uint64_t a_len, uint64_t b, uint64_t b_len)
{
	return a < b + b_len && b < a + a_len;
}

/* Free by the refcounts yet holding our own metadata: the counts are
 * wrong, and writing there would destroy the image. */
static int check_not_metadata(struct img *img, uint64_t start, uint64_t nb)
{
	struct qcow2_view *v = qcow2_view(img);
	struct qcow2_state *s = v->s;
	uint64_t off = start << s->cluster_bits;
	uint64_t bytes = nb << s->cluster_bits;

	if (start == 0 ||
	    overlaps(off, bytes, v->l1_table_offset,
		     (uint64_t)v->l1_size * 8) ||
	    overlaps(off, bytes, s->refcount_table_offset,
		     (uint64_t)s->refcount_table_clusters * s->cluster_bytes) ||
	    (s->nb_snapshots &&
	     overlaps(off, bytes, s->snapshots_offset, 1)))
		return qcow2_signal_corruption(img, "allocation of cluster "
					       "0x%" PRIx64 " landed on "
					       "metadata (refcount 0)", off);
	return qcow2_check_overlap_locked(img, off, bytes);
}

/* The first run of nb free clusters from the allocation hint (clusters
 * that no refcount block covers count as free). */
static int find_free_run(struct img *img, uint64_t nb, uint64_t *start_r)
{
	struct qcow2_state *s = qcow2_state(img);
	uint64_t start = MAX(s->free_hint_cluster, 1), run = 0, rc;
	int ret;

	for (uint64_t i = start; run < nb; i++) {
		ret = qcow2_get_refcount_locked(img, i, &rc);
		if (ret < 0)
			return ret;
		if (rc) {
			start = i + 1;
			run = 0;
		} else {
			run++;
		}
	}
	*start_r = start;
	return 0;
}

static bool has_refblock(const struct qcow2_state *s, uint64_t rt)
{
	return (s->reftable[rt] & REFTABLE_OFFSET_MASK) != 0;
}

/* A run of at least a whole block's worth of clusters cannot sit beside
 * refcount blocks that each live at the start of their own range (one
 * would always fall inside it): the missing blocks go in front of the
 * run instead, each counting the blocks and run clusters in its range,
 * durable before the table points at them. */
static int alloc_behind_new_blocks(struct img *img, uint64_t nb,
				   uint64_t *host_off_r)
{
	struct qcow2_state *s = qcow2_state(img);
	uint64_t m = 0, start, end, first_rt, last_rt, missing;
	CLEANUP_FREE uint8_t *block = NULL;
	uint8_t be[8];
	int ret;

	for (;;) {
		ret = find_free_run(img, nb + m, &start);
		if (ret < 0)
			return ret;
		end = start + m + nb;
		first_rt = start >> s->rb_entry_bits;
		last_rt = (end - 1) >> s->rb_entry_bits;
		if (last_rt >= s->reftable_entries) {
			ret = grow_reftable(img, end);
			if (ret < 0)
				return ret;
			continue;
		}
		missing = 0;
		for (uint64_t rt = first_rt; rt <= last_rt; rt++)
			missing += !has_refblock(s, rt);
		/* Extra room in front (missing < m) just stays free. */
		if (missing <= m)
			break;
		m = missing;
	}
	ret = check_not_metadata(img, start, end - start);
	if (ret < 0)
		return ret;
	block = malloc(s->cluster_bytes);
	if (!block)
		return -ENOMEM;
	/* Used: blocks [start, start + missing) and the run [start + m,
	 * end). Ranges that have a block count them through the cache
	 * first, so no block the table will name is ever uncounted. */
	for (uint64_t rt = first_rt, j = 0; rt <= last_rt; rt++) {
		uint64_t lo = MAX(start, rt << s->rb_entry_bits);
		uint64_t hi = MIN(end, (rt + 1) << s->rb_entry_bits);

		if (has_refblock(s, rt)) {
			/* The used clusters here: part of the blocks, part
			 * of the run, or both. */
			uint64_t b_hi = MIN(hi, start + missing);
			uint64_t r_lo = MAX(lo, start + m);

			if (lo < b_hi)
				ret = qcow2_update_refcount_locked(
					img, lo << s->cluster_bits,
					(b_hi - lo) << s->cluster_bits, +1);
			if (ret == 0 && r_lo < hi)
				ret = qcow2_update_refcount_locked(
					img, r_lo << s->cluster_bits,
					(hi - r_lo) << s->cluster_bits, +1);
			if (ret < 0)
				return ret;
			continue;
		}
		memset(block, 0, s->cluster_bytes);
		for (uint64_t c = lo; c < hi; c++)
			if (c < start + missing || c >= start + m)
				rc_write(block, c - (rt << s->rb_entry_bits),
					 s->refcount_order, 1);
		ret = full_pwrite(img->fd, block, s->cluster_bytes,
				  (start + j) << s->cluster_bits);
		if (ret < 0)
			return ret;
		j++;
	}
	qcow2_file_end_grow_locked(s, end << s->cluster_bits);
	ret = qcow2_cache_flush_locked(s->rc_cache);
	if (ret < 0)
		return ret;
	if (fdatasync(img->fd) < 0)
		return -errno;
	for (uint64_t rt = first_rt, j = 0; rt <= last_rt; rt++) {
		if (has_refblock(s, rt))
			continue;
		put_be64(be, (start + j) << s->cluster_bits);
		ret = full_pwrite(img->fd, be, 8,
				  s->refcount_table_offset + rt * 8);
		if (ret < 0)
			return ret;
		s->reftable[rt] = (start + j) << s->cluster_bits;
		j++;
	}
	qcow2_meta_forget_locked(img);
	if (start == s->free_hint_cluster)
		s->free_hint_cluster = end;
	*host_off_r = (start + m) << s->cluster_bits;
	return 0;
}

int qcow2_alloc_clusters_locked(struct img *img, uint64_t nb,
				uint64_t *host_off_r)
{
	struct qcow2_state *s = qcow2_state(img);
	uint64_t start, off, bytes;
	int ret;

	if (nb == 0)
		return -EINVAL;
retry:
	ret = find_free_run(img, nb, &start);
	if (ret < 0)
		return ret;
	/* Every cluster of the run needs a refcount block. */
	for (uint64_t rt = start >> s->rb_entry_bits;
	     rt <= (start + nb - 1) >> s->rb_entry_bits; rt++) {
		if (rt >= s->reftable_entries) {
			ret = grow_reftable(img, start + nb);
			if (ret < 0)
				return ret;
			goto retry;
		}
		if (!has_refblock(s, rt)) {
			/* A block placed at the start of its range ends any
			 * run through it; runs that short always fit after
			 * it, longer ones need the blocks elsewhere. */
			if (nb >= (1ull << s->rb_entry_bits))
				return alloc_behind_new_blocks(img, nb,
							       host_off_r);
			ret = new_refblock(img, rt,
					   MAX(start, rt << s->rb_entry_bits));
			if (ret < 0)
				return ret;
			goto retry;
		}
	}
	ret = check_not_metadata(img, start, nb);
	if (ret < 0)
		return ret;
	off = start << s->cluster_bits;
	bytes = nb << s->cluster_bits;
	ret = qcow2_update_refcount_locked(img, off, bytes, +1);
	if (ret < 0)
		return ret;
	/* A multi-cluster run may have skipped single free clusters
	 * after the hint; keep the hint there for later single ones. */
	if (nb == 1 || start == s->free_hint_cluster)
		s->free_hint_cluster = start + nb;
	qcow2_file_end_grow_locked(s, off + bytes);
	*host_off_r = off;
	return 0;
}

int qcow2_alloc_clusters_upto_locked(struct img *img, uint64_t max,
				     uint64_t *host_off_r, uint64_t *nb_r)
{
	struct qcow2_state *s = qcow2_state(img);
	uint64_t i, rc, nb;
	int ret;

	/* The first free cluster from the hint, then how far it runs;
	 * qcow2_alloc_clusters_locked finds the same start for that
	 * length (no shorter free run comes before it). */
	ret = find_free_run(img, 1, &i);
	if (ret < 0)
		return ret;
	s->free_hint_cluster = i; /* everything before it is in use */
	for (nb = 1; nb < max; nb++) {
		ret = qcow2_get_refcount_locked(img, i + nb, &rc);
		if (ret < 0)
			return ret;
		if (rc)
			break;
	}
	*nb_r = nb;
	return qcow2_alloc_clusters_locked(img, nb, host_off_r);
}

int qcow2_defer_unref_locked(struct img *img, uint64_t host_off,
			     uint64_t bytes)
{
	struct qcow2_state *s = qcow2_state(img);
	uint64_t first = host_off >> s->cluster_bits;
	uint64_t last = (host_off + bytes - 1) >> s->cluster_bits;

	for (uint64_t i = first; bytes && i <= last; i++) {
		if (s->nb_deferred == s->cap_deferred) {
			size_t cap = s->cap_deferred ? 2 * s->cap_deferred : 64;
			struct qcow2_deferred *p =
				realloc(s->deferred, cap * sizeof(*p));

			if (!p)
				return -ENOMEM;
			s->deferred = p;
			s->cap_deferred = cap;
		}
		s->deferred[s->nb_deferred++] = (struct qcow2_deferred){
			.host_off = i << s->cluster_bits,
			.pin_epoch = img_pin_epoch_locked(s->pins),
		};
	}
	return 0;
}

/* Keeps the queued drops from k on (a later flush retries them). */
static void keep_deferred_from(struct qcow2_state *s, size_t k)
{
	memmove(s->deferred, s->deferred + k,
		(s->nb_deferred - k) * sizeof(*s->deferred));
	s->nb_deferred -= k;
}

int qcow2_apply_deferred_locked(struct img *img)
{
	struct qcow2_state *s = qcow2_state(img);
	size_t n = s->nb_deferred;

	for (size_t k = 0; k < n; k++) {
		uint64_t off = s->deferred[k].host_off, v;
		uint64_t idx = off >> s->cluster_bits;
		int ret;

		/* A read that mapped this cluster before the drop may not
		 * have read it yet: it is not ours to reuse (nor to punch)
		 * until its pin is released. The queue is in drop order,
		 * so every later entry waits as well. */
		if (!img_pin_released_locked(s->pins,
					     s->deferred[k].pin_epoch)) {
			keep_deferred_from(s, k);
			return 0;
		}
		ret = update_one(img, idx, -1, &v);
		if (ret < 0) {
			keep_deferred_from(s, k);
			return ret;
		}
		if (v != 0)
			continue;
		/* Free: nothing durable points here any more. Forget any
		 * cached metadata of the old use, give the space back to
		 * the host, and let the allocator reuse it. */
		qcow2_cache_drop_range_locked(s->l2_cache, off,
					      s->cluster_bytes);
		qcow2_zcache_forget_locked(s, off, s->cluster_bytes);
		qcow2_meta_remove_locked(img, off);
		(void)fallocate(img->fd, FALLOC_FL_PUNCH_HOLE |
					 FALLOC_FL_KEEP_SIZE,
				(off_t)off, (off_t)s->cluster_bytes);
		if (idx < s->free_hint_cluster)
			s->free_hint_cluster = idx;
	}
	s->nb_deferred = 0;
	return 0;
}
