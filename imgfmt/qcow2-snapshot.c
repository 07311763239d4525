/* qcow2-snapshot.c: the internal snapshot table, and snapshots opened as
 * read-only images.
 *
 * docs/interop/qcow2.txt, "Snapshots": a contiguous table of
 * variable-length entries (40 fixed bytes, extra data, ID, name, padding
 * to 8). It is parsed once at open under QEMU's bounds: at most 65536
 * entries, 64 MiB of table and 1 KiB of extra data per entry, all inside
 * the file. So a header claiming 2^20 snapshots is refused, and memory is
 * bounded by the table size whatever the entries say.
 *
 * A snapshot handle is a struct img of its own: read-only, sized by the
 * snapshot's disk size (extra data, else the image's size). Its driver
 * state is only a view (struct qcow2_view) holding its own copy of the
 * snapshot's L1 table; everything else is the parent's, which must stay
 * open until the snapshot is closed: the image state (struct qcow2_state:
 * the metadata lock, the L2 cache, whose slices are keyed by host offset
 * so one cache serves every table, the decompression cache, the snapshot
 * table, the data file), the image fd (img->shares_fd) and the backing
 * image (img->backing; img_close does not close a borrowed chain).
 *
 * Create and delete (top read-write handle, write_gate exclusive and the
 * metadata lock held throughout). Ordering, each step at its line:
 *   create (create_locked, a function a step): flush, allocate the L1
 *   copy; raise the refcount of every L2 table and data cluster the
 *   active L1 reaches (one at maximum for the width: take the raises
 *   back and refuse with -EMLINK), then clear COPIED in the active
 *   L1/L2 entries; write the L1 copy; flush (refcounts durable before
 *   the L1/L2 changes, both before the header names the snapshot);
 *   write the new snapshot table, make it and its refcount durable;
 *   switch nb_snapshots and snapshots_offset in one 12-byte header
 *   write; drop the old table.
 *   delete: write the table without the entry and switch the header
 *   first; only then drop the references of the snapshot's L1, L2 tables
 *   and data (deferred, applied by the flush), and finally set COPIED
 *   again where the active refcount came back to 1 (qemu-img check
 *   calls a missing COPIED flag an error).
 * A crash at any point leaks clusters at worst.
 *
 * Limits: no VM state (vm_state_size 0); snapshots of an image with an
 * external data file are refused (the spec forbids them); a re-encoded
 * table keeps each entry's fields but writes QEMU's 24-byte extra data
 * with icount unknown (-1). refcount_bits 1 cannot count two owners.
 */
#include "qcow2-int.h"

#include "checked.h"
#include "cleanup.h"
#include "endian.h"
#include "io.h"

#include <errno.h>
#include <inttypes.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

void qcow2_free_snapshots(struct qcow2_snapshot *sn, uint32_t nb)
{
	if (!sn)
		return;
	for (uint32_t i = 0; i < nb; i++) {
		free(sn[i].id);
		free(sn[i].name);
	}
	free(sn);
}

/* The one place a snapshot entry is converted from disk form. var holds
 * extra data, ID and name as read. */
static int qcow2_snapshot_decode(const struct qcow2_snapshot_disk *d,
				 const uint8_t *var, uint64_t image_size,
				 struct qcow2_snapshot *sn)
{
	uint32_t extra = be32toh(d->extra_data_size);
	uint16_t id_bytes = be16toh(d->id_str_size);
	uint16_t name_bytes = be16toh(d->name_size);

	sn->l1_table_offset = be64toh(d->l1_table_offset);
	sn->l1_size = be32toh(d->l1_size);
	sn->date_sec = be32toh(d->date_sec);
	sn->date_nsec = be32toh(d->date_nsec);
	sn->vm_clock_nsec = be64toh(d->vm_clock_nsec);
	sn->vm_state_size = be32toh(d->vm_state_size);
	sn->disk_size = image_size;
	/* Extra data fields are optional by length (spec: "Unknown fields
	 * must be ignored"). */
	if (extra >= offsetof(struct qcow2_snapshot_extra_disk, disk_size))
		sn->vm_state_size = get_be64(var);
	if (extra >= offsetof(struct qcow2_snapshot_extra_disk, icount))
		sn->disk_size = get_be64(var + 8);
	sn->id = strndup((const char *)var + extra, id_bytes);
	sn->name = strndup((const char *)var + extra + id_bytes, name_bytes);
	if (!sn->id || !sn->name)
		return -ENOMEM;
	return 0;
}

/* The table is read through a window of this many bytes, so that 20,000
 * entries cost a few dozen preads rather than two each. */
#define TABLE_WINDOW_BYTES (256u << 10)

struct table_window {
	uint8_t *buf;
	uint64_t off;  /* file offset of buf[0] */
	size_t len;    /* valid bytes in buf */
};

/* Copies [pos, pos + len) of the file, which the caller checked lies
 * inside it (file_bytes), from the window, refilling it from pos when
 * needed; a piece larger than the window is read directly. */
static int table_window_read(struct table_window *w, int fd,
			     uint64_t file_bytes, void *dst, size_t len,
			     uint64_t pos)
{
	int ret;

	if (pos >= w->off && len <= w->len && pos - w->off <= w->len - len) {
		memcpy(dst, w->buf + (pos - w->off), len);
		return 0;
	}
	if (len > TABLE_WINDOW_BYTES)
		return full_pread(fd, dst, len, pos);
	w->len = (size_t)MIN((uint64_t)TABLE_WINDOW_BYTES, file_bytes - pos);
	w->off = pos;
	ret = full_pread(fd, w->buf, w->len, pos);
	if (ret < 0) {
		w->len = 0;
		return ret;
	}
	memcpy(dst, w->buf, len);
	return 0;
}

int qcow2_read_snapshots(struct img *img, struct img_err *err)
{
	struct qcow2_state *s = qcow2_state(img);
	uint64_t pos = s->snapshots_offset, table_bytes = 0;
	uint32_t nb = s->nb_snapshots;

	if (nb == 0)
		return 0;
	if (nb > QCOW2_MAX_SNAPSHOTS)
		return img_err(err, -EINVAL, "%s: %" PRIu32 " snapshots "
			       "exceed the limit of %u", img->path, nb,
			       QCOW2_MAX_SNAPSHOTS);
	/* Each entry is at least 40 bytes: validate the minimal table
	 * first, then every entry as it is read. */
	int ret = qcow2_validate_table(img, "snapshot table", pos, nb,
				       sizeof(struct qcow2_snapshot_disk),
				       QCOW2_MAX_SNAPSHOT_TABLE_BYTES, err);
	if (ret < 0)
		return ret;
	s->snapshots = calloc(nb, sizeof(*s->snapshots));
	CLEANUP_FREE uint8_t *window_buf = malloc(TABLE_WINDOW_BYTES);
	struct table_window window = { .buf = window_buf };
	/* One buffer for every entry's variable part: extra data, then ID
	 * and name of at most 64 KiB each (+1 so an entry with no variable
	 * part still gets a valid pointer). */
	CLEANUP_FREE uint8_t *var = malloc(QCOW2_MAX_SNAPSHOT_EXTRA_BYTES +
					   2 * (size_t)UINT16_MAX + 1);
	if (!s->snapshots || !window_buf || !var)
		return img_err(err, -ENOMEM, "%s: out of memory", img->path);

	for (uint32_t i = 0; i < nb; i++) {
		struct qcow2_snapshot_disk d;
		uint64_t var_bytes, entry_bytes;
		uint32_t extra;

		if (!range_within(pos, sizeof(d), s->file_bytes))
			goto past_eof;
		ret = table_window_read(&window, img->fd, s->file_bytes, &d,
					sizeof(d), pos);
		if (ret < 0)
			return img_err(err, ret, "%s: cannot read snapshot "
				       "%" PRIu32 " at 0x%" PRIx64, img->path,
				       i, pos);
		extra = be32toh(d.extra_data_size);
		if (extra > QCOW2_MAX_SNAPSHOT_EXTRA_BYTES)
			return img_err(err, -EINVAL, "%s: snapshot %" PRIu32
				       " has %" PRIu32 " bytes of extra data "
				       "(limit %u)", img->path, i, extra,
				       QCOW2_MAX_SNAPSHOT_EXTRA_BYTES);
		var_bytes = (uint64_t)extra + be16toh(d.id_str_size) +
			    be16toh(d.name_size);
		entry_bytes = align_up(sizeof(d) + var_bytes, 8);
		table_bytes += entry_bytes;
		if (table_bytes > QCOW2_MAX_SNAPSHOT_TABLE_BYTES)
			return img_err(err, -EINVAL, "%s: snapshot table is "
				       "larger than %u bytes", img->path,
				       QCOW2_MAX_SNAPSHOT_TABLE_BYTES);
		if (!range_within(pos, sizeof(d) + var_bytes, s->file_bytes))
			goto past_eof;
		ret = table_window_read(&window, img->fd, s->file_bytes, var,
					(size_t)var_bytes, pos + sizeof(d));
		if (ret < 0)
			return img_err(err, ret, "%s: cannot read snapshot "
				       "%" PRIu32 " at 0x%" PRIx64, img->path,
				       i, pos);
		ret = qcow2_snapshot_decode(&d, var, img->size,
					    &s->snapshots[i]);
		if (ret < 0)
			return img_err(err, ret, "%s: out of memory",
				       img->path);
		s->snapshots[i].serial = ++s->snapshot_serials;
		pos += entry_bytes;
	}
	s->snapshots_bytes = table_bytes;
	return 0;

past_eof:
	return img_err(err, -EINVAL, "%s: snapshot table at 0x%" PRIx64
		       " (%" PRIu32 " entries) runs past the end of the file",
		       img->path, s->snapshots_offset, nb);
}

/* What can be checked of a snapshot from its table entry alone, without
 * reading its L1 table: cheap enough for every entry of a listing. */
static int snapshot_check(struct img *img, const struct qcow2_snapshot *sn,
			  struct img_err *err)
{
	/* Same bound as the active table; any snapshot's disk size must
	 * fit the same guest offset arithmetic as the image's. */
	if (sn->disk_size > INT64_MAX)
		return img_err(err, -EINVAL, "%s: snapshot '%s' has a disk "
			       "size of %" PRIu64 " bytes, too large",
			       img->path, sn->id, sn->disk_size);
	return qcow2_validate_table(img, "snapshot L1 table",
				    sn->l1_table_offset, sn->l1_size,
				    sizeof(uint64_t), QCOW2_MAX_L1_BYTES, err);
}

/* snapshot_check's verdict for a listing: NULL when it passes, else its
 * message. 0 or -ENOMEM. */
static int snapshot_unreadable(struct img *img, const struct qcow2_snapshot *sn,
			       char **why_r)
{
	struct img_err err = { 0 };

	*why_r = NULL;
	if (snapshot_check(img, sn, &err) == 0)
		return 0;
	*why_r = strdup(img_err_reason(&err, img));
	return *why_r ? 0 : -ENOMEM;
}

int qcow2_snapshot_list(struct img *img, struct img_snapshot **list_r,
			size_t *nb_r)
{
	struct qcow2_state *s = qcow2_state(img);
	struct img_snapshot *list;

	*list_r = NULL;
	*nb_r = 0;
	if (qcow2_view(img)->parent)
		return 0;
	/* Create and delete replace the table under the metadata lock. */
	LOCK_FOR_SCOPE(s->lock);
	if (s->nb_snapshots == 0)
		return 0;
	list = calloc(s->nb_snapshots, sizeof(*list));
	if (!list)
		return -ENOMEM;
	for (uint32_t i = 0; i < s->nb_snapshots; i++) {
		const struct qcow2_snapshot *sn = &s->snapshots[i];

		list[i].id = strdup(sn->id);
		list[i].name = strdup(sn->name);
		if (!list[i].id || !list[i].name) {
			img_snapshot_list_free(list, i + 1);
			return -ENOMEM;
		}
		list[i].date_sec = sn->date_sec;
		list[i].date_nsec = sn->date_nsec;
		list[i].vm_clock_nsec = sn->vm_clock_nsec;
		list[i].disk_size = sn->disk_size;
		list[i].vm_state_size = sn->vm_state_size;
		if (snapshot_unreadable(img, sn, &list[i].unreadable) < 0) {
			img_snapshot_list_free(list, i + 1);
			return -ENOMEM;
		}
	}
	*list_r = list;
	*nb_r = s->nb_snapshots;
	return 0;
}

bool qcow2_snapshot_gone_locked(struct qcow2_view *v)
{
	const struct qcow2_state *s = v->s;
	bool found = false;

	if (!v->parent || v->snapshot_gone)
		return v->snapshot_gone;
	if (s->nb_snapshot_deletes == v->seen_snapshot_deletes)
		return false;
	for (uint32_t i = 0; i < s->nb_snapshots && !found; i++)
		found = s->snapshots[i].serial == v->snapshot_serial;
	v->seen_snapshot_deletes = s->nb_snapshot_deletes;
	v->snapshot_gone = !found;
	return v->snapshot_gone;
}

int qcow2_snapshot_open(struct img *img, const char *id, struct img **snap_r,
			struct img_err *err)
{
	const struct qcow2_view *v = qcow2_view(img);
	struct qcow2_state *s = v->s;
	const struct qcow2_snapshot *sn = NULL;
	struct qcow2_view *sv;
	struct img *snap;
	int ret;

	if (v->parent)
		return img_err(err, -ENOENT, "%s: a snapshot has no "
			       "snapshots of its own", img->path);
	/* The table and the file size change under the metadata lock
	 * (writes, create, delete); the L1 read stays inside it so a
	 * delete cannot free the table while we read it. */
	LOCK_FOR_SCOPE(s->lock);
	for (uint32_t i = 0; i < s->nb_snapshots && !sn; i++)
		if (strcmp(s->snapshots[i].id, id) == 0)
			sn = &s->snapshots[i];
	if (!sn)
		return img_err(err, -ENOENT, "%s: no snapshot with ID '%s'",
			       img->path, id);
	ret = snapshot_check(img, sn, err);
	if (ret < 0)
		return ret;

	snap = img_alloc(&img->opts);
	sv = calloc(1, sizeof(*sv));
	if (!snap || !sv) {
		free(sv);
		img_free_handle(snap);
		return img_err(err, -ENOMEM, "%s: out of memory", img->path);
	}
	/* The image state is the parent's, shared; this handle owns only
	 * its view: the snapshot's L1 copy, and which snapshot it is. */
	sv->s = s;
	sv->parent = img;
	sv->l1_size = sn->l1_size;
	sv->l1_table_offset = sn->l1_table_offset;
	sv->seen_snapshot_deletes = s->nb_snapshot_deletes;
	sv->snapshot_serial = sn->serial;

	snap->ops = img->ops;
	snap->priv = sv;
	snap->fd = img->fd;
	snap->shares_fd = true;
	snap->read_only = true;
	snap->size = sn->disk_size;
	snap->backing = img->backing;
	snap->path = strdup(img->path);
	snap->real_path = img->real_path ? strdup(img->real_path) : NULL;
	if (!snap->path) {
		img_close(snap);
		return img_err(err, -ENOMEM, "%s: out of memory", img->path);
	}
	ret = qcow2_read_l1(snap, sn->l1_table_offset, sn->l1_size,
			    &sv->l1_table, err);
	if (ret < 0) {
		img_close(snap);
		return ret;
	}
	*snap_r = snap;
	return 0;
}

static uint64_t entry_bytes_of(const struct qcow2_snapshot *sn)
{
	return align_up(sizeof(struct qcow2_snapshot_disk) +
				sizeof(struct qcow2_snapshot_extra_disk) +
				strlen(sn->id) + strlen(sn->name),
			8);
}

/* Encodes nb entries (skipping index skip) into a new buffer. */
static int encode_table(const struct qcow2_snapshot *sn, uint32_t nb,
			uint32_t skip, uint8_t **buf_r, uint64_t *bytes_r)
{
	uint64_t bytes = 0, pos = 0;
	uint8_t *buf;

	for (uint32_t i = 0; i < nb; i++)
		if (i != skip)
			bytes += entry_bytes_of(&sn[i]);
	if (bytes > QCOW2_MAX_SNAPSHOT_TABLE_BYTES)
		return -EFBIG;
	buf = calloc(1, bytes + 1);
	if (!buf)
		return -ENOMEM;
	for (uint32_t i = 0; i < nb; i++) {
		struct qcow2_snapshot_disk d;
		struct qcow2_snapshot_extra_disk x;
		size_t id_len = strlen(sn[i].id), name_len = strlen(sn[i].name);

		if (i == skip)
			continue;
		d = (struct qcow2_snapshot_disk){
			.l1_table_offset = htobe64(sn[i].l1_table_offset),
			.l1_size = htobe32(sn[i].l1_size),
			.id_str_size = htobe16((uint16_t)id_len),
			.name_size = htobe16((uint16_t)name_len),
			.date_sec = htobe32(sn[i].date_sec),
			.date_nsec = htobe32(sn[i].date_nsec),
			.vm_clock_nsec = htobe64(sn[i].vm_clock_nsec),
			.vm_state_size = htobe32((uint32_t)MIN(
				sn[i].vm_state_size, UINT32_MAX)),
			.extra_data_size = htobe32(sizeof(x)),
		};
		x = (struct qcow2_snapshot_extra_disk){
			.vm_state_size_large = htobe64(sn[i].vm_state_size),
			.disk_size = htobe64(sn[i].disk_size),
			.icount = htobe64(UINT64_MAX),
		};
		memcpy(buf + pos, &d, sizeof(d));
		memcpy(buf + pos + sizeof(d), &x, sizeof(x));
		memcpy(buf + pos + sizeof(d) + sizeof(x), sn[i].id, id_len);
		memcpy(buf + pos + sizeof(d) + sizeof(x) + id_len, sn[i].name,
		       name_len);
		pos += entry_bytes_of(&sn[i]);
	}
	*buf_r = buf;
	*bytes_r = bytes;
	return 0;
}

/* Writes a new table: the nb_snapshots entries but skip, and, when
 * append, the entry placed past them at s->snapshots[nb_snapshots] (the
 * caller made room). Makes it and its refcount durable, switches the
 * header, and drops the old table. The table in memory follows only once
 * the header names the new one. */
static int switch_table_locked(struct img *img, uint32_t skip, bool append)
{
	struct qcow2_state *s = qcow2_state(img);
	uint32_t nb = s->nb_snapshots + append;
	uint32_t new_nb = nb - (skip < nb);
	CLEANUP_FREE uint8_t *buf = NULL;
	uint64_t bytes, off = 0, old_off = s->snapshots_offset;
	uint64_t old_bytes = s->snapshots_bytes;
	int ret;

	ret = encode_table(s->snapshots, nb, skip, &buf, &bytes);
	if (ret < 0)
		return ret;
	if (bytes) {
		ret = qcow2_alloc_clusters_locked(
			img, div_round_up(bytes, s->cluster_bytes), &off);
		if (ret < 0)
			return ret;
		ret = full_pwrite(img->fd, buf, bytes, off);
		if (ret < 0)
			return ret;
	}
	/* The table and its clusters' refcounts are durable before the
	 * header names it. */
	ret = qcow2_cache_flush_locked(s->rc_cache);
	if (ret < 0)
		return ret;
	ret = qcow2_header_write_locked(
		img,
		(struct qcow2_hdr_value[]){
			{ QCOW2_HDR_NB_SNAPSHOTS, new_nb },
			{ QCOW2_HDR_SNAPSHOTS_OFFSET, off },
		},
		2);
	if (ret < 0)
		return ret;
	s->snapshots_bytes = bytes;
	if (skip < nb) {
		free(s->snapshots[skip].id);
		free(s->snapshots[skip].name);
		memmove(&s->snapshots[skip], &s->snapshots[skip + 1],
			(nb - skip - 1) * sizeof(*s->snapshots));
	}
	/* The header no longer names the old table. */
	if (old_bytes)
		return qcow2_defer_unref_locked(img, old_off, old_bytes);
	return 0;
}

/* Calls fn(img, entry, dirty, opaque) on every entry of the L2 table at
 * l2_off, slice by slice; rw gets writable (dirty) slices. */
static int walk_l2_locked(struct img *img, uint64_t l2_off, bool rw,
			  int (*fn)(struct img *img, uint8_t *e, bool *dirty,
				    void *opaque),
			  void *opaque)
{
	struct qcow2_state *s = qcow2_state(img);

	if (!is_aligned(l2_off, s->cluster_bytes) ||
	    !range_within(l2_off, s->cluster_bytes, s->file_bytes))
		return qcow2_signal_corruption(img, "L2 table at 0x%" PRIx64
					       " is invalid", l2_off);
	for (uint64_t o = 0; o < s->cluster_bytes; o += s->l2_slice_bytes) {
		const uint8_t *ro;
		uint8_t *slice;
		bool dirty = false;
		int ret;

		ret = qcow2_cache_get_locked(s->l2_cache, l2_off + o, &ro);
		if (ret < 0)
			return ret;
		slice = (uint8_t *)ro;
		for (size_t i = 0; i < s->l2_slice_bytes;
		     i += s->l2_entry_bytes) {
			ret = fn(img, slice + i, rw ? &dirty : NULL, opaque);
			if (ret < 0)
				break;
		}
		qcow2_cache_put_locked(s->l2_cache, ro);
		if (ret < 0)
			return ret;
		if (dirty) {
			/* Mark the slice dirty (it is cached: no read). */
			uint8_t *w;
			ret = qcow2_cache_get_rw_locked(s->l2_cache,
							l2_off + o, &w);
			if (ret < 0)
				return ret;
			qcow2_cache_put_locked(s->l2_cache, w);
		}
	}
	return 0;
}

/* Host span of an entry's reference(s); false when it holds none. */
static bool entry_span(struct img *img, uint64_t entry, uint64_t *off_r,
		       uint64_t *bytes_r)
{
	struct qcow2_state *s = qcow2_state(img);

	if (entry & QCOW2_L2E_COMPRESSED) {
		qcow2_compressed_desc(s, entry, off_r, bytes_r);
		return true;
	}
	*off_r = entry & QCOW2_L2E_OFFSET_MASK;
	*bytes_r = s->cluster_bytes;
	return *off_r != 0;
}

/* Raising (delta +1) or undoing raises (-1), one cluster at a time so
 * that an undo stops exactly where the raising stopped: the first
 * `limit` clusters of the walk are changed, `done` counts them. */
struct raise_ctx {
	int delta;
	uint64_t limit;
	uint64_t done;
};

static int raise_span(struct img *img, uint64_t off, uint64_t bytes,
		      struct raise_ctx *rc)
{
	struct qcow2_state *s = qcow2_state(img);
	uint64_t last = (off + bytes - 1) >> s->cluster_bits;

	for (uint64_t c = off >> s->cluster_bits; c <= last; c++) {
		int ret;

		if (rc->done == rc->limit)
			return 0;
		ret = qcow2_update_refcount_locked(img, c << s->cluster_bits,
						   1, rc->delta);
		if (ret < 0)
			return ret;
		rc->done++;
	}
	return 0;
}

static int raise_entry(struct img *img, uint8_t *e, bool *dirty,
		       void *opaque)
{
	uint64_t off, bytes;

	(void)dirty;
	if (!entry_span(img, get_be64(e), &off, &bytes))
		return 0;
	return raise_span(img, off, bytes, opaque);
}

/* Gives every L2 table and data cluster the active L1 reaches one more
 * owner (rc->delta +1), or takes back the first rc->limit of those
 * raises (-1), in the same order. */
static int raise_all_locked(struct img *img, struct raise_ctx *rc)
{
	struct qcow2_view *v = qcow2_view(img);
	struct qcow2_state *s = v->s;

	for (uint32_t i = 0; i < v->l1_size; i++) {
		uint64_t l2_off = v->l1_table[i] & QCOW2_L1E_OFFSET_MASK;
		int ret;

		if (!l2_off)
			continue;
		ret = raise_span(img, l2_off, s->cluster_bytes, rc);
		if (ret == 0)
			ret = walk_l2_locked(img, l2_off, false, raise_entry,
					     rc);
		if (ret < 0)
			return ret;
	}
	return 0;
}

static int clear_copied_entry(struct img *img, uint8_t *e, bool *dirty,
			      void *opaque)
{
	uint64_t entry = get_be64(e);

	(void)opaque;
	if (entry & QCOW2_L2E_COPIED) {
		/* Now shared with the snapshot: writes must copy. */
		put_be64(e, entry & ~QCOW2_L2E_COPIED);
		*dirty = true;
	}
	return 0;
}

static int drop_entry(struct img *img, uint8_t *e, bool *dirty, void *opaque)
{
	uint64_t off, bytes;

	(void)dirty;
	(void)opaque;
	if (!entry_span(img, get_be64(e), &off, &bytes))
		return 0;
	return qcow2_defer_unref_locked(img, off, bytes);
}

static int fix_copied_entry(struct img *img, uint8_t *e, bool *dirty,
			    void *opaque)
{
	struct qcow2_state *s = qcow2_state(img);
	uint64_t entry = get_be64(e), off, bytes, rc;
	int ret;

	(void)opaque;
	if ((entry & QCOW2_L2E_COMPRESSED) || (entry & QCOW2_L2E_COPIED) ||
	    !entry_span(img, entry, &off, &bytes))
		return 0;
	ret = qcow2_get_refcount_locked(img, off >> s->cluster_bits, &rc);
	if (ret < 0)
		return ret;
	if (rc == 1) {
		put_be64(e, entry | QCOW2_L2E_COPIED);
		*dirty = true;
	}
	return 0;
}

static int find_by_name(const struct qcow2_state *s, const char *name)
{
	for (uint32_t i = 0; i < s->nb_snapshots; i++)
		if (strcmp(s->snapshots[i].name, name) == 0)
			return (int)i;
	return -1;
}

/* What create decides before it changes any count: the new snapshot's
 * ID and where its L1 copy goes. */
struct create_plan {
	uint64_t id;
	uint64_t l1_off;    /* 0 when the active L1 table is empty */
	uint64_t l1_bytes;
	uint64_t *l1_copy;  /* big-endian, filled by share_active_locked */
};

/* Step 1: the image ready for writes with nothing pending (flushed), the
 * next free numeric ID, the L1 copy's clusters and its buffer. Fails
 * with err filled and nothing shared yet. */
static int plan_create_locked(struct img *img, struct create_plan *p,
			      struct img_err *err)
{
	struct qcow2_view *v = qcow2_view(img);
	struct qcow2_state *s = v->s;
	uint64_t max_id = 0;
	int ret;

	p->l1_bytes = (uint64_t)v->l1_size * 8;
	ret = qcow2_begin_write_locked(img);
	if (ret < 0)
		return img_err(err, ret, "%s: cannot write: %s", img->path,
			       strerror(-ret));
	ret = qcow2_flush_locked(img);
	if (ret < 0)
		return img_err(err, ret, "%s: flush before the snapshot "
			       "failed: %s", img->path, strerror(-ret));
	for (uint32_t i = 0; i < s->nb_snapshots; i++) {
		char *end;
		unsigned long long id = strtoull(s->snapshots[i].id, &end, 10);
		if (*end == '\0' && id > max_id)
			max_id = id;
	}
	p->id = max_id + 1;
	if (p->l1_bytes) {
		ret = qcow2_alloc_clusters_locked(
			img, div_round_up(p->l1_bytes, s->cluster_bytes),
			&p->l1_off);
		if (ret < 0)
			return img_err(err, ret, "%s: cannot allocate the "
				       "snapshot's L1 table: %s", img->path,
				       strerror(-ret));
	}
	p->l1_copy = malloc(p->l1_bytes + 8);
	if (!p->l1_copy)
		return img_err(err, -ENOMEM, "%s: out of memory", img->path);
	return 0;
}

/* Step 2: every L2 table and data cluster the active L1 reaches gets one
 * more owner. A refcount already at its width's maximum (-EMLINK: too
 * many snapshots for refcount_bits) is not corruption: the raises made
 * so far are taken back and 1 is returned, the image unchanged but for
 * the L1 copy's clusters (freed by the next flush). Any other failure
 * (-errno) leaves counts half raised. */
static int raise_owners_locked(struct img *img, const struct create_plan *p)
{
	struct raise_ctx raise = { .delta = +1, .limit = UINT64_MAX };
	struct raise_ctx undo = { .delta = -1 };
	int ret;

	ret = raise_all_locked(img, &raise);
	if (ret != -EMLINK)
		return ret;
	undo.limit = raise.done;
	ret = raise_all_locked(img, &undo);
	if (ret == 0 && p->l1_bytes)
		ret = qcow2_defer_unref_locked(img, p->l1_off, p->l1_bytes);
	return ret < 0 ? ret : 1;
}

/* Step 3, once every raise worked: the active L1/L2 entries lose COPIED
 * (shared with the snapshot now, writes must copy), and the L1 copy
 * takes the active table as it is then. */
static int share_active_locked(struct img *img, struct create_plan *p)
{
	struct qcow2_view *v = qcow2_view(img);

	for (uint32_t i = 0; i < v->l1_size; i++) {
		uint64_t l2_off = v->l1_table[i] & QCOW2_L1E_OFFSET_MASK;

		if (l2_off) {
			int ret = walk_l2_locked(img, l2_off, true,
						 clear_copied_entry, NULL);
			if (ret < 0)
				return ret;
			v->l1_table[i] &= ~QCOW2_L1E_COPIED;
			v->l1_dirty = true;
		}
		put_be64(&p->l1_copy[i], v->l1_table[i]);
	}
	return 0;
}

/* Step 4: the L1 copy written, and everything so far durable in order:
 * raised refcounts before the cleared COPIED flags and the L1 copy, all
 * of it before the header names the snapshot (flush: refcounts,
 * fdatasync, L2 + L1, fdatasync). */
static int write_l1_copy_locked(struct img *img, const struct create_plan *p)
{
	struct qcow2_state *s = qcow2_state(img);
	int ret;

	if (p->l1_bytes) {
		ret = full_pwrite(img->fd, p->l1_copy, p->l1_bytes, p->l1_off);
		if (ret < 0)
			return ret;
	}
	qcow2_cache_set_dependency_locked(s->l2_cache, s->rc_cache);
	return qcow2_flush_locked(img);
}

/* Step 5: the new entry appended to the table in memory, then the new
 * table written and the header switched to it (switch_table_locked).
 * On failure the entry is not counted (nb_snapshots unchanged). */
static int publish_locked(struct img *img, const char *name,
			  const struct create_plan *p)
{
	struct qcow2_view *v = qcow2_view(img);
	struct qcow2_state *s = v->s;
	struct qcow2_snapshot sn = { 0 }, *grown;
	struct timespec now;
	int ret;

	clock_gettime(CLOCK_REALTIME, &now);
	sn.l1_table_offset = p->l1_off;
	sn.l1_size = v->l1_size;
	sn.date_sec = (uint32_t)now.tv_sec;
	sn.date_nsec = (uint32_t)now.tv_nsec;
	sn.disk_size = img->size;
	sn.serial = ++s->snapshot_serials;
	sn.name = strdup(name);
	if (asprintf(&sn.id, "%llu", (unsigned long long)p->id) < 0)
		sn.id = NULL;
	grown = realloc(s->snapshots, (s->nb_snapshots + 1) * sizeof(*grown));
	if (!sn.name || !sn.id || !grown) {
		free(sn.name);
		free(sn.id);
		if (grown)
			s->snapshots = grown;
		return -ENOMEM;
	}
	s->snapshots = grown;
	s->snapshots[s->nb_snapshots] = sn;
	/* skip = UINT32_MAX: keep every entry, the new one included. */
	ret = switch_table_locked(img, UINT32_MAX, true);
	if (ret < 0) {
		free(sn.name);
		free(sn.id);
	}
	return ret;
}

/* A failure after the first raise: the counts no longer match the
 * tables, so the image is marked corrupt rather than left silently
 * wrong (an -EIO already did). */
static int create_halfway(struct img *img, const char *name, int ret,
			  struct img_err *err)
{
	struct qcow2_state *s = qcow2_state(img);

	if (ret != -EIO)
		qcow2_signal_corruption(img, "snapshot '%s' creation failed "
					"halfway (%s); refcounts are "
					"inconsistent", name, strerror(-ret));
	return img_err(err, -EIO, "%s: snapshot '%s' failed halfway: %s",
		       img->path, name, s->corrupt_reason ?
		       s->corrupt_reason : strerror(-ret));
}

/* The steps in their crash-safe order (see the top of the file). */
static int create_locked(struct img *img, const char *name,
			 struct img_err *err)
{
	struct qcow2_state *s = qcow2_state(img);
	struct create_plan plan = { 0 };
	int ret;

	ret = plan_create_locked(img, &plan, err);
	if (ret < 0)
		goto out; /* err says why; nothing shared yet */
	ret = raise_owners_locked(img, &plan);
	if (ret == 1) {
		ret = img_err(err, -EMLINK, "%s: refcount_bits=%u cannot "
			      "count the owners of another snapshot",
			      img->path, 1u << s->refcount_order);
		goto out;
	}
	if (ret == 0)
		ret = share_active_locked(img, &plan);
	if (ret == 0)
		ret = write_l1_copy_locked(img, &plan);
	if (ret == 0)
		ret = publish_locked(img, name, &plan);
	if (ret < 0) {
		ret = create_halfway(img, name, ret, err);
		goto out;
	}
	ret = qcow2_flush_locked(img);
	if (ret < 0)
		ret = img_err(err, ret, "%s: flush after the snapshot failed: "
			      "%s", img->path, strerror(-ret));
out:
	free(plan.l1_copy);
	return ret;
}

int qcow2_snapshot_create(struct img *img, const char *name,
			  struct img_err *err)
{
	struct qcow2_state *s = qcow2_state(img);
	int ret;

	if (qcow2_view(img)->parent || !s->rc_cache)
		return img_err(err, -EROFS, "%s: image is read-only",
			       img->path);
	if (s->data_fd != img->fd)
		return img_err(err, -ENOTSUP, "%s: images with an external "
			       "data file cannot hold internal snapshots",
			       img->path);
	if (s->refcount_order == 0)
		return img_err(err, -ENOTSUP, "%s: refcount_bits=1 cannot "
			       "count clusters shared with a snapshot",
			       img->path);
	if (strlen(name) > UINT16_MAX)
		return img_err(err, -ENAMETOOLONG, "%s: snapshot name is too "
			       "long", img->path);
	pthread_rwlock_wrlock(&s->write_gate);
	pthread_mutex_lock(s->lock);
	if (img->read_only)
		ret = img_err(err, -EROFS, "%s: image is read-only",
			      img->path);
	else if (find_by_name(s, name) >= 0)
		ret = img_err(err, -EEXIST, "%s: a snapshot named '%s' "
			      "exists", img->path, name);
	else
		ret = create_locked(img, name, err);
	/* Tables moved: the overlap check rebuilds its set. */
	qcow2_meta_forget_locked(img);
	pthread_mutex_unlock(s->lock);
	pthread_rwlock_unlock(&s->write_gate);
	return ret;
}

static int delete_locked(struct img *img, uint32_t idx, struct img_err *err)
{
	struct qcow2_view *v = qcow2_view(img);
	struct qcow2_state *s = v->s;
	struct qcow2_snapshot sn = s->snapshots[idx];
	CLEANUP_FREE uint64_t *l1 = NULL;
	int ret;

	ret = qcow2_validate_table(img, "snapshot L1 table",
				   sn.l1_table_offset, sn.l1_size,
				   sizeof(uint64_t), QCOW2_MAX_L1_BYTES, err);
	if (ret < 0)
		return ret;
	ret = qcow2_read_l1(img, sn.l1_table_offset, sn.l1_size, &l1, err);
	if (ret < 0)
		return ret;
	ret = qcow2_begin_write_locked(img);
	if (ret == 0)
		ret = qcow2_flush_locked(img);
	/* The header stops naming the snapshot before any of its
	 * clusters loses a reference. */
	if (ret == 0)
		ret = switch_table_locked(img, idx, false);
	if (ret < 0)
		return img_err(err, ret, "%s: cannot delete snapshot: %s",
			       img->path, strerror(-ret));
	/* One owner fewer for each L2 table and data cluster the
	 * snapshot reaches (the same counting as create). */
	for (uint32_t i = 0; i < sn.l1_size; i++) {
		uint64_t l2_off = l1[i] & QCOW2_L1E_OFFSET_MASK;

		if (!l2_off)
			continue;
		ret = walk_l2_locked(img, l2_off, false, drop_entry, NULL);
		if (ret == 0)
			ret = qcow2_defer_unref_locked(img, l2_off,
						       s->cluster_bytes);
		if (ret < 0)
			goto fail;
	}
	if (sn.l1_size) {
		ret = qcow2_defer_unref_locked(img, sn.l1_table_offset,
					       (uint64_t)sn.l1_size * 8);
		if (ret < 0)
			goto fail;
	}
	ret = qcow2_flush_locked(img);
	if (ret < 0)
		goto fail;
	/* Sole owners again get COPIED back (QEMU's invariant). */
	for (uint32_t i = 0; i < v->l1_size; i++) {
		uint64_t l2_off = v->l1_table[i] & QCOW2_L1E_OFFSET_MASK;
		uint64_t rc;

		if (!l2_off)
			continue;
		ret = walk_l2_locked(img, l2_off, true, fix_copied_entry,
				     NULL);
		if (ret < 0)
			goto fail;
		if (v->l1_table[i] & QCOW2_L1E_COPIED)
			continue;
		ret = qcow2_get_refcount_locked(img, l2_off >> s->cluster_bits,
						&rc);
		if (ret < 0)
			goto fail;
		if (rc == 1) {
			v->l1_table[i] |= QCOW2_L1E_COPIED;
			v->l1_dirty = true;
		}
	}
	ret = qcow2_flush_locked(img);
	if (ret < 0)
		goto fail;
	return 0;
fail:
	return img_err(err, ret, "%s: snapshot deleted, but dropping its "
		       "clusters failed (they leak): %s", img->path,
		       strerror(-ret));
}

int qcow2_snapshot_delete(struct img *img, const char *id,
			  struct img_err *err)
{
	struct qcow2_state *s = qcow2_state(img);
	int ret = -ENOENT;
	uint32_t idx;

	if (qcow2_view(img)->parent || !s->rc_cache)
		return img_err(err, -EROFS, "%s: image is read-only",
			       img->path);
	pthread_rwlock_wrlock(&s->write_gate);
	pthread_mutex_lock(s->lock);
	for (idx = 0; idx < s->nb_snapshots; idx++)
		if (strcmp(s->snapshots[idx].id, id) == 0)
			break;
	if (img->read_only)
		ret = img_err(err, -EROFS, "%s: image is read-only",
			      img->path);
	else if (idx == s->nb_snapshots)
		ret = img_err(err, -ENOENT, "%s: no snapshot with ID '%s'",
			      img->path, id);
	else {
		ret = delete_locked(img, idx, err);
		/* Even a delete that failed half way may have given clusters
		 * back: open handles of the snapshot look again. */
		s->nb_snapshot_deletes++;
	}
	qcow2_meta_forget_locked(img);
	pthread_mutex_unlock(s->lock);
	pthread_rwlock_unlock(&s->write_gate);
	return ret;
}
