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
 * snapshot's disk size (extra data, else the image's size), with its own
 * copy of the snapshot's L1 table. Everything else is borrowed from the
 * parent, which must stay open until the snapshot is closed: the image
 * fd (img->shares_fd), the metadata lock and L2 cache (slices are keyed by
 * host offset, so one cache serves both), the data file and the backing
 * image (img->backing; img_close does not close a borrowed chain).
 *
 * Not here yet: creating and deleting snapshots (the write path).
 */
#include "qcow2-int.h"

#include "checked.h"
#include "cleanup.h"
#include "endian.h"
#include "io.h"

#include <errno.h>
#include <inttypes.h>
#include <stddef.h>
#include <stdlib.h>
#include <string.h>

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
	if (!s->snapshots)
		return img_err(err, -ENOMEM, "%s: out of memory", img->path);

	for (uint32_t i = 0; i < nb; i++) {
		struct qcow2_snapshot_disk d;
		CLEANUP_FREE uint8_t *var = NULL;
		uint64_t var_bytes, entry_bytes;
		uint32_t extra;

		if (!range_within(pos, sizeof(d), s->file_bytes))
			goto past_eof;
		ret = full_pread(img->fd, &d, sizeof(d), pos);
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
		/* +1 so an entry with no variable part still gets a
		 * valid buffer. */
		var = malloc(var_bytes + 1);
		if (!var)
			return img_err(err, -ENOMEM, "%s: out of memory",
				       img->path);
		ret = full_pread(img->fd, var, var_bytes, pos + sizeof(d));
		if (ret < 0)
			return img_err(err, ret, "%s: cannot read snapshot "
				       "%" PRIu32 " at 0x%" PRIx64, img->path,
				       i, pos);
		ret = qcow2_snapshot_decode(&d, var, img->size,
					    &s->snapshots[i]);
		if (ret < 0)
			return img_err(err, ret, "%s: out of memory",
				       img->path);
		pos += entry_bytes;
	}
	return 0;

past_eof:
	return img_err(err, -EINVAL, "%s: snapshot table at 0x%" PRIx64
		       " (%" PRIu32 " entries) runs past the end of the file",
		       img->path, s->snapshots_offset, nb);
}

int qcow2_snapshot_list(struct img *img, struct img_snapshot **list_r,
			size_t *nb_r)
{
	struct qcow2_state *s = qcow2_state(img);
	struct img_snapshot *list;

	*list_r = NULL;
	*nb_r = 0;
	if (s->parent || s->nb_snapshots == 0)
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
	}
	*list_r = list;
	*nb_r = s->nb_snapshots;
	return 0;
}

int qcow2_snapshot_open(struct img *img, const char *id, struct img **snap_r,
			struct img_err *err)
{
	struct qcow2_state *s = qcow2_state(img);
	const struct qcow2_snapshot *sn = NULL;
	struct qcow2_state *ss;
	struct img *snap;
	int ret;

	if (s->parent)
		return img_err(err, -ENOENT, "%s: a snapshot has no "
			       "snapshots of its own", img->path);
	for (uint32_t i = 0; i < s->nb_snapshots && !sn; i++)
		if (strcmp(s->snapshots[i].id, id) == 0)
			sn = &s->snapshots[i];
	if (!sn)
		return img_err(err, -ENOENT, "%s: no snapshot with ID '%s'",
			       img->path, id);
	/* Same bound as the active table; any snapshot's disk size must
	 * fit the same guest offset arithmetic as the image's. */
	if (sn->disk_size > INT64_MAX)
		return img_err(err, -EINVAL, "%s: snapshot '%s' has a disk "
			       "size of %" PRIu64 " bytes, too large",
			       img->path, id, sn->disk_size);
	ret = qcow2_validate_table(img, "snapshot L1 table",
				   sn->l1_table_offset, sn->l1_size,
				   sizeof(uint64_t), QCOW2_MAX_L1_BYTES, err);
	if (ret < 0)
		return ret;

	snap = img_alloc(&img->opts);
	ss = calloc(1, sizeof(*ss));
	if (!snap || !ss) {
		free(ss);
		img_free_handle(snap);
		return img_err(err, -ENOMEM, "%s: out of memory", img->path);
	}
	/* Geometry and shared resources come from the parent; the table
	 * pointers and owned strings are reset so close frees only what
	 * this handle owns (its L1 table). */
	*ss = *s;
	ss->l1_table = NULL;
	ss->l1_size = sn->l1_size;
	ss->l1_table_offset = sn->l1_table_offset;
	ss->snapshots = NULL;
	ss->nb_snapshots = 0;
	ss->backing_name = NULL;
	ss->backing_format = NULL;
	ss->data_file_name = NULL;
	ss->owns_data_fd = false;
	ss->parent = img;

	snap->ops = img->ops;
	snap->priv = ss;
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
			    &ss->l1_table, err);
	if (ret < 0) {
		img_close(snap);
		return ret;
	}
	*snap_r = snap;
	return 0;
}

int qcow2_snapshot_create(struct img *img, const char *name,
			  struct img_err *err)
{
	(void)name;
	return img_err(err, -ENOTSUP, "%s: not yet", img->path);
}

int qcow2_snapshot_delete(struct img *img, const char *id,
			  struct img_err *err)
{
	(void)id;
	return img_err(err, -ENOTSUP, "%s: not yet", img->path);
}
