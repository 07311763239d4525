/* qcow2-header.c: rewriting header fields of an open image, by name.
 *
 * The driver changes a few header fields after open: the feature bits
 * (dirty, corrupt, autoclear), the refcount table's place and size when
 * the table grows, and the snapshot table's count and place. Each field
 * has one entry in the table below (its offset and width in struct
 * qcow2_header_disk), so no caller writes at a bare offset.
 *
 * Invariant: the decoded copy in struct qcow2_state changes only after
 * the new bytes were written and made durable. A write that fails leaves
 * both the copy and the rest of the handle as they were, so the caller
 * can give up cleanly and the header on disk still names valid tables.
 * Fields written together (a table's offset and its size) go in one
 * pwrite, inside the first sector, so a crash leaves both old or both
 * new.
 *
 * Not here: decoding the header at open (qcow2.c), fields the driver
 * never changes (size, cluster_bits, L1 table: no resizing).
 */
#include "qcow2-int.h"

#include "endian.h"
#include "io.h"

#include <assert.h>
#include <errno.h>
#include <stddef.h>
#include <unistd.h>

#define HDR_FIELD(member)                                                  \
	{                                                                  \
		offsetof(struct qcow2_header_disk, member),                \
			sizeof(((struct qcow2_header_disk *)0)->member)    \
	}

static const struct {
	uint8_t off;
	uint8_t width; /* 4 or 8 bytes */
} hdr_fields[QCOW2_HDR_NB_FIELDS] = {
	[QCOW2_HDR_REFCOUNT_TABLE_OFFSET] = HDR_FIELD(refcount_table_offset),
	[QCOW2_HDR_REFCOUNT_TABLE_CLUSTERS] =
		HDR_FIELD(refcount_table_clusters),
	[QCOW2_HDR_NB_SNAPSHOTS] = HDR_FIELD(nb_snapshots),
	[QCOW2_HDR_SNAPSHOTS_OFFSET] = HDR_FIELD(snapshots_offset),
	[QCOW2_HDR_INCOMPAT] = HDR_FIELD(incompatible_features),
	[QCOW2_HDR_COMPAT] = HDR_FIELD(compatible_features),
	[QCOW2_HDR_AUTOCLEAR] = HDR_FIELD(autoclear_features),
};

/* The decoded copy of field f. */
static void store_field(struct qcow2_state *s, enum qcow2_hdr_field f,
			uint64_t v)
{
	switch (f) {
	case QCOW2_HDR_REFCOUNT_TABLE_OFFSET:
		s->refcount_table_offset = v;
		break;
	case QCOW2_HDR_REFCOUNT_TABLE_CLUSTERS:
		s->refcount_table_clusters = (uint32_t)v;
		break;
	case QCOW2_HDR_NB_SNAPSHOTS:
		s->nb_snapshots = (uint32_t)v;
		break;
	case QCOW2_HDR_SNAPSHOTS_OFFSET:
		s->snapshots_offset = v;
		break;
	case QCOW2_HDR_INCOMPAT:
		s->incompat = v;
		break;
	case QCOW2_HDR_COMPAT:
		s->compat = v;
		break;
	case QCOW2_HDR_AUTOCLEAR:
		s->autoclear = v;
		break;
	case QCOW2_HDR_NB_FIELDS:
		break;
	}
}

int qcow2_header_write_locked(struct img *img,
			      const struct qcow2_hdr_value *vals, size_t nb)
{
	struct qcow2_state *s = qcow2_state(img);
	uint8_t buf[sizeof(struct qcow2_header_disk)];
	size_t first, end;
	int ret;

	assert(nb > 0 && !qcow2_view(img)->parent);
	first = end = hdr_fields[vals[0].field].off;
	for (size_t i = 0; i < nb; i++) {
		enum qcow2_hdr_field f = vals[i].field;

		/* Our own calls: adjacent fields in header order, each
		 * inside this image's header (v2 has no feature fields). */
		assert(f < QCOW2_HDR_NB_FIELDS && hdr_fields[f].off == end);
		if (hdr_fields[f].width == 4) {
			assert(vals[i].value <= UINT32_MAX);
			put_be32(buf + end, (uint32_t)vals[i].value);
		} else {
			put_be64(buf + end, vals[i].value);
		}
		end += hdr_fields[f].width;
	}
	assert(end <= s->header_bytes);
	ret = full_pwrite(img->fd, buf + first, end - first, first);
	if (ret < 0)
		return ret;
	if (fdatasync(img->fd) < 0)
		return -errno;
	for (size_t i = 0; i < nb; i++)
		store_field(s, vals[i].field, vals[i].value);
	return 0;
}
