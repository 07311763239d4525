/* qcow2-map.c: from guest offsets to what stores them (L1 -> L2).
 *
 * docs/interop/qcow2.txt, "Cluster mapping" and "Extended L2 Entries":
 * the L1 table (in memory, loaded at open) points at L2 tables, whose
 * entries describe one cluster each: unallocated, zero, plain data at a
 * host offset, or compressed. With extended L2 a plain cluster is further
 * split into 32 subclusters, each allocated, zero or unallocated.
 *
 * qcow2_map_locked() turns that into runs: the longest stretch from a
 * guest offset whose units (subclusters, or clusters) share one kind and,
 * for data, sit back to back in the host file. Readers issue one pread
 * per run straight into their buffer; block status reports one extent per
 * run. The walk holds the metadata lock and touches one L2 slice at a
 * time through the slice cache; it never does data I/O.
 *
 * Every L1/L2 value is checked before use: tables and data clusters must
 * be cluster aligned and start inside the file, and extended L2 bitmaps
 * must be consistent. A bad entry is corrupt metadata and gives -EIO; it
 * never leads to a read outside the file or a crash.
 */
#include "qcow2-int.h"

#include "checked.h"
#include "endian.h"
#include "io.h"

#include <errno.h>
#include <inttypes.h>
#include <stdlib.h>

uint64_t qcow2_l1_entries_for(const struct qcow2_state *s, uint64_t size_bytes)
{
	uint64_t l2_range_bytes = qcow2_l2_range_bytes(s);

	return div_round_up(size_bytes, l2_range_bytes);
}

int qcow2_validate_table(struct img *img, const char *what, uint64_t off,
			 uint64_t nb_entries, size_t entry_bytes,
			 uint64_t max_bytes, struct img_err *err)
{
	struct qcow2_state *s = qcow2_state(img);
	uint64_t bytes;

	if (MUL_OVERFLOW(nb_entries, (uint64_t)entry_bytes, &bytes) ||
	    bytes > max_bytes)
		return img_err(err, -EINVAL, "%s: %s of %" PRIu64 " entries "
			       "is too large (limit %" PRIu64 " bytes)",
			       img->path, what, nb_entries, max_bytes);
	if (!is_aligned(off, s->cluster_bytes))
		return img_err(err, -EINVAL, "%s: %s at 0x%" PRIx64 " is not "
			       "aligned to the cluster size %" PRIu64,
			       img->path, what, off, s->cluster_bytes);
	if (bytes == 0)
		return 0;
	if (off < s->cluster_bytes)
		return img_err(err, -EINVAL, "%s: %s at 0x%" PRIx64
			       " overlaps the header", img->path, what, off);
	if (!range_within(off, bytes, s->file_bytes))
		return img_err(err, -EINVAL, "%s: %s at 0x%" PRIx64 " (%" PRIu64
			       " bytes) lies past the end of the file (%"
			       PRIu64 " bytes)", img->path, what, off, bytes,
			       s->file_bytes);
	return 0;
}

int qcow2_read_l1(struct img *img, uint64_t off, uint32_t nb_entries,
		  uint64_t **l1_r, struct img_err *err)
{
	uint64_t *l1;
	int ret;

	*l1_r = NULL;
	if (nb_entries == 0)
		return 0;
	/* nb_entries was bounded by qcow2_validate_table (32 MiB). */
	l1 = malloc((size_t)nb_entries * sizeof(*l1));
	if (!l1)
		return img_err(err, -ENOMEM, "%s: out of memory for an L1 "
			       "table of %" PRIu32 " entries", img->path,
			       nb_entries);
	ret = full_pread(img->fd, l1, (size_t)nb_entries * sizeof(*l1), off);
	if (ret < 0) {
		free(l1);
		return img_err(err, ret, "%s: cannot read the L1 table at 0x%"
			       PRIx64, img->path, off);
	}
	for (uint32_t i = 0; i < nb_entries; i++)
		l1[i] = get_be64(&l1[i]);
	*l1_r = l1;
	return 0;
}

/* Adds n bytes of kind to the run; false when they cannot join it. */
static bool run_extend(struct qcow2_run *run, enum qcow2_run_kind kind,
		       uint64_t host_off, uint64_t n)
{
	if (run->len_bytes == 0) {
		run->kind = kind;
		run->host_off = host_off;
		run->len_bytes = n;
		return true;
	}
	if (run->kind != kind)
		return false;
	if (kind == QCOW2_RUN_DATA && run->host_off + run->len_bytes != host_off)
		return false;
	run->len_bytes += n;
	return true;
}

/* A plain (not compressed) L2 entry's host cluster, checked. With an
 * external data file, offset 0 with the copied bit is a real cluster
 * (guest offset 0 maps to host offset 0), so *has_host_r says whether
 * there is one at all. */
static int host_cluster(const struct img *img, const struct qcow2_state *s,
			uint64_t entry, uint64_t *host_r, bool *has_host_r)
{
	uint64_t host = entry & QCOW2_L2E_OFFSET_MASK;
	bool external = s->data_fd != img->fd;

	*host_r = host;
	*has_host_r = host != 0 || (external && (entry & QCOW2_L2E_COPIED));
	if (!*has_host_r)
		return 0;
	/* QEMU, too, calls an unaligned host offset corruption, even for
	 * a preallocated zero cluster. */
	if (!is_aligned(host, s->cluster_bytes))
		return -EIO;
	return 0;
}

/* Kind of unit (subcluster) sc of a plain cluster. */
static int unit_kind(const struct qcow2_state *s, uint64_t entry,
		     uint64_t bitmap, unsigned sc, bool has_host,
		     enum qcow2_run_kind *kind_r)
{
	int ret = qcow2_entry_verdict(s, entry, bitmap, has_host);

	if (ret < 0)
		return ret;
	if (!s->extended_l2) {
		/* The zero flag is v3 only; QEMU calls it corruption in a
		 * v2 image ("Zero cluster entry found in pre-v3 image"). */
		if (entry & QCOW2_L2E_ZERO)
			*kind_r = QCOW2_RUN_ZERO;
		else
			*kind_r = has_host ? QCOW2_RUN_DATA
					   : QCOW2_RUN_UNALLOCATED;
		return 0;
	}
	bool alloc = (bitmap >> sc) & 1;
	bool zero = (bitmap >> (32 + sc)) & 1;

	if (alloc)
		*kind_r = QCOW2_RUN_DATA;
	else if (zero)
		*kind_r = QCOW2_RUN_ZERO;
	else
		*kind_r = QCOW2_RUN_UNALLOCATED;
	return 0;
}

/* Walks the entries of one L2 slice from *off_io. Returns 1 when the run
 * ended (a unit could not join it), 0 when the slice or range ran out. */
static int map_slice(struct img *img, const struct qcow2_state *s,
		     const uint8_t *slice, size_t first, size_t nb_entries,
		     uint64_t *off_io, uint64_t end, bool merge_compressed,
		     struct qcow2_run *run)
{
	uint64_t off = *off_io;
	int ret = 0;

	for (size_t i = first; i < nb_entries && off < end; i++) {
		const uint8_t *e = slice + i * s->l2_entry_bytes;
		uint64_t entry = get_be64(e);

		/* Runs of empty entries (unallocated, no flags) are most of
		 * a huge sparse image's L2 tables: skip them a word at a
		 * time rather than through the per-unit walk below. */
		if (entry == 0 && !s->extended_l2 &&
		    (run->len_bytes == 0 ||
		     run->kind == QCOW2_RUN_UNALLOCATED)) {
			size_t j = i + 1;
			uint64_t n;

			while (j < nb_entries &&
			       ((const uint64_t *)(const void *)slice)[j] == 0)
				j++;
			n = MIN(align_down(off, s->cluster_bytes) +
					((uint64_t)(j - i) << s->cluster_bits),
				end) - off;
			run_extend(run, QCOW2_RUN_UNALLOCATED, 0, n);
			off += n;
			i = j - 1;
			continue;
		}
		uint64_t bitmap = s->extended_l2 ? get_be64(e + 8) : 0;
		uint64_t cluster_start = align_down(off, s->cluster_bytes);
		uint64_t cluster_end = MIN(cluster_start + s->cluster_bytes,
					   end);
		uint64_t host;
		bool has_host;

		if (entry & QCOW2_L2E_COMPRESSED) {
			/* External data files cannot hold compressed
			 * clusters (spec, incompatible bit 2). */
			if (s->data_fd != img->fd) {
				ret = -EIO;
				break;
			}
			if (run->len_bytes &&
			    !(merge_compressed &&
			      run->kind == QCOW2_RUN_COMPRESSED)) {
				ret = 1;
				break;
			}
			if (run->len_bytes == 0) {
				run->kind = QCOW2_RUN_COMPRESSED;
				run->l2_entry = entry;
			}
			run->len_bytes += cluster_end - off;
			off = cluster_end;
			if (!merge_compressed) {
				ret = 1;
				break;
			}
			continue;
		}
		ret = host_cluster(img, s, entry, &host, &has_host);
		if (ret < 0)
			break;
		while (off < cluster_end) {
			unsigned sc = (unsigned)((off - cluster_start) >>
						 s->subcluster_bits);
			uint64_t unit_end = cluster_start +
					    ((uint64_t)(sc + 1)
					     << s->subcluster_bits);
			uint64_t n = MIN(unit_end, cluster_end) - off;
			enum qcow2_run_kind kind;

			ret = unit_kind(s, entry, bitmap, sc, has_host, &kind);
			if (ret < 0)
				goto out;
			/* Data in the image file must start inside it (past
			 * the end of a cluster that does, we read zeroes as
			 * QEMU's file layer does). A preallocated zero
			 * cluster is never read, and an external data file
			 * may be sparse or short. */
			if (kind == QCOW2_RUN_DATA && s->data_fd == img->fd &&
			    host >= s->file_bytes) {
				ret = -EIO;
				goto out;
			}
			if (!run_extend(run, kind,
					host + (off - cluster_start), n)) {
				ret = 1;
				goto out;
			}
			off += n;
		}
	}
out:
	*off_io = off;
	return ret;
}

/* Slices one call may visit. Bounds how long a single lookup (say block
 * status over a whole 1 TiB disk) holds the metadata lock against
 * parallel readers; callers loop over shorter runs. 64 slices of 4 KiB
 * cover 2 GiB of guest data with 64 KiB clusters. */
#define QCOW2_MAP_MAX_SLICES 64

int qcow2_map_locked(struct img *img, uint64_t guest_off, uint64_t max_bytes,
		     bool merge_compressed, struct qcow2_run *run_r)
{
	struct qcow2_view *v = qcow2_view(img);
	struct qcow2_state *s = v->s;
	size_t slice_bytes = s->l2_slice_bytes;
	size_t slice_entries = slice_bytes / s->l2_entry_bytes;
	uint64_t l2_range_bytes = qcow2_l2_range_bytes(s);
	uint64_t off = guest_off, end;
	unsigned nb_slices = 0;
	int ret;

	*run_r = (struct qcow2_run){ 0 };
	/* img.c keeps requests inside the virtual disk (< 2^63). */
	if (max_bytes == 0 || ADD_OVERFLOW(guest_off, max_bytes, &end))
		return -EINVAL;
	if (qcow2_snapshot_gone_locked(v))
		return -ENOENT;

	while (off < end) {
		uint64_t l1_idx = qcow2_l1_index(s, off);
		uint64_t l2_off = 0;
		const uint8_t *slice;

		if (l1_idx >= v->l1_size) {
			/* Past the L1 table (a snapshot whose disk size
			 * outgrew it): all the rest is unallocated, in one
			 * step however large the disk claims to be. */
			if (!run_extend(run_r, QCOW2_RUN_UNALLOCATED, 0,
					end - off))
				break;
			off = end;
			break;
		}
		l2_off = v->l1_table[l1_idx] & QCOW2_L1E_OFFSET_MASK;
		if (l2_off == 0) {
			/* No L2 table: the whole range it would cover is
			 * unallocated. */
			uint64_t n = l2_range_bytes -
				     (off & (l2_range_bytes - 1));
			n = MIN(n, end - off);
			if (!run_extend(run_r, QCOW2_RUN_UNALLOCATED, 0, n))
				break;
			off += n;
			continue;
		}
		if (nb_slices++ == QCOW2_MAP_MAX_SLICES)
			break; /* the run so far is not empty */
		if (!is_aligned(l2_off, s->cluster_bytes) ||
		    !range_within(l2_off, s->cluster_bytes, s->file_bytes))
			return -EIO;

		uint64_t l2_idx = qcow2_l2_index(s, off);
		size_t pos;
		uint64_t slice_off = qcow2_l2_slice_off(s, l2_off, l2_idx, &pos);

		ret = qcow2_cache_get_locked(s->l2_cache, slice_off, &slice);
		if (ret < 0)
			return ret;
		ret = map_slice(img, s, slice, pos / s->l2_entry_bytes,
				slice_entries, &off, end, merge_compressed,
				run_r);
		qcow2_cache_put_locked(s->l2_cache, slice);
		if (ret < 0)
			return ret;
		if (ret == 1)
			break;
	}
	return 0;
}
