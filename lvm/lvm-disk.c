/* lvm-disk.c: reads one source's LVM2 label, PV header and metadata.
 *
 * On-disk layout (lvm2's lib/label/label.h, lib/format_text/layout.h):
 * - a label in one of sectors 0-3: "LABELONE", the sector number it sits
 *   in (le64), a CRC (le32) of the sector's bytes 20..511, the offset of
 *   the PV header from the sector start (le32), and "LVM2 001";
 * - the PV header: the PV UUID (32 characters, no dashes), the device
 *   size in bytes (le64), then two lists of (offset, size) pairs of le64,
 *   each ending with an all-zero pair: data areas, then metadata areas;
 * - each metadata area (at an absolute byte offset) starts with a
 *   512-byte header: CRC (le32) of bytes 4..511, the magic
 *   " LVM2 x[5A%r0N*>", version 1, its own start and size (le64), and
 *   raw locations (offset from the area's start, size, CRC of the text,
 *   flags; le64 le64 le32 le32) ending with a zero entry. The first is
 *   the committed metadata. Its text lies in the area's circular buffer
 *   [start + 512, start + size): a text reaching the end continues at
 *   start + 512. Flag 1 means the area is to be ignored.
 *
 * Every field is checked against the sector, the area and the source
 * before use; the text is bounded by the area size and
 * LVM_TEXT_MAX_BYTES. Results are plain facts for lvm.c: a good copy of
 * the metadata (parsed tree, VG name, UUID, seqno) or a one-line reason.
 */
#include "lvm-disk.h"

#include "checked.h"
#include "cleanup.h"
#include "endian.h"

#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define SECTOR 512u
#define LABEL_SCAN_SECTORS 4u
#define MDA_HEADER_BYTES 512u
#define RLOCN_IGNORED 1u

static const char mda_magic[16] = " LVM2 x[5A%r0N*>";

__attribute__((format(printf, 3, 4))) static void set_why(char *why, size_t n,
							 const char *fmt, ...)
{
	va_list ap;

	va_start(ap, fmt);
	vsnprintf(why, n, fmt, ap);
	va_end(ap);
}

void lvm_disk_free(struct lvm_disk *d)
{
	for (size_t i = 0; i < d->nb_copies; i++)
		lvm_text_free(d->copies[i].root);
	memset(d, 0, sizeof(*d));
}

/* Finds the VG section of a parsed copy (the one section at top level)
 * and its id and seqno. */
static int vg_identity(struct lvm_copy *c, char *why, size_t why_len)
{
	const struct lvm_node *vg = NULL;
	int64_t seqno;

	for (const struct lvm_node *n = c->root->child; n; n = n->next) {
		if (n->kind != LVM_NODE_SECTION)
			continue;
		if (vg) {
			set_why(why, why_len, "metadata holds two volume "
				"groups (%.64s, %.64s)", vg->key, n->key);
			return -EINVAL;
		}
		vg = n;
	}
	if (!vg) {
		set_why(why, why_len, "metadata holds no volume group");
		return -EINVAL;
	}
	c->vg = vg;
	c->vg_name = vg->key;
	c->vg_uuid = lvm_node_str(vg, "id");
	if (!c->vg_uuid) {
		set_why(why, why_len, "volume group %.64s has no id", vg->key);
		return -EINVAL;
	}
	if (!lvm_node_int(vg, "seqno", &seqno) || seqno < 0) {
		set_why(why, why_len, "volume group %.64s has no seqno",
			vg->key);
		return -EINVAL;
	}
	c->seqno = (uint64_t)seqno;
	return 0;
}

/* Reads the metadata area at [mda_off, mda_off + mda_size) of img into a
 * new copy of d. Returns 0 when there is nothing to read (an empty or
 * ignored area), 1 when a copy (good or bad) was added, -ENOMEM. */
/* A good copy with this text among prev and d's own, or NULL. */
static const struct lvm_copy *find_dup(const struct lvm_disk *prev,
				       size_t nb_prev,
				       const struct lvm_disk *d,
				       uint32_t crc, uint64_t bytes)
{
	for (size_t i = 0; i <= nb_prev; i++) {
		const struct lvm_disk *o = i < nb_prev ? &prev[i] : d;
		for (size_t k = 0; k < o->nb_copies; k++) {
			const struct lvm_copy *c = &o->copies[k];
			if (c->good && c->text_crc == crc &&
			    c->text_bytes == bytes)
				return c;
		}
	}
	return NULL;
}

static int read_mda(struct img *img, const char *src_name, uint64_t mda_off,
		    uint64_t mda_size, bool label_ok, const char *label_why,
		    const struct lvm_disk *prev, size_t nb_prev,
		    size_t *budget, struct lvm_disk *d)
{
	const struct lvm_copy *same;
	uint8_t hdr[MDA_HEADER_BYTES];
	struct lvm_copy *c;
	uint64_t roff, rsize, ring;
	uint32_t rcrc, rflags, crc;
	CLEANUP_FREE char *text = NULL;
	char why[sizeof(c->why)];
	int ret;

	if (d->nb_copies >= LVM_DISK_MAX_COPIES)
		return 0;
	c = &d->copies[d->nb_copies];
	memset(c, 0, sizeof(*c));
	if (mda_size < 2 * MDA_HEADER_BYTES ||
	    !range_within(mda_off, mda_size, img_size(img))) {
		set_why(c->why, sizeof(c->why), "%s: metadata area at 0x%"
			PRIx64 " (%" PRIu64 " bytes) lies outside the device",
			src_name, mda_off, mda_size);
		d->nb_copies++;
		return 1;
	}
	ret = img_pread(img, hdr, sizeof(hdr), mda_off);
	if (ret < 0) {
		set_why(c->why, sizeof(c->why), "%s: cannot read the metadata "
			"area header at 0x%" PRIx64 ": %s", src_name, mda_off,
			strerror(-ret));
		d->nb_copies++;
		return 1;
	}
	crc = lvm_crc(LVM_CRC_INITIAL, hdr + 4, sizeof(hdr) - 4);
	if (memcmp(hdr + 4, mda_magic, 16) != 0) {
		set_why(c->why, sizeof(c->why), "%s: no metadata area header "
			"at 0x%" PRIx64 " (bad magic)", src_name, mda_off);
		d->nb_copies++;
		return 1;
	}
	if (get_le32(hdr) != crc) {
		set_why(c->why, sizeof(c->why), "%s: metadata area header at "
			"0x%" PRIx64 " has a bad checksum (0x%08x, computed "
			"0x%08x)", src_name, mda_off, get_le32(hdr), crc);
		d->nb_copies++;
		return 1;
	}
	if (get_le32(hdr + 20) != 1 || get_le64(hdr + 24) != mda_off ||
	    get_le64(hdr + 32) != mda_size) {
		set_why(c->why, sizeof(c->why), "%s: metadata area header at "
			"0x%" PRIx64 " disagrees with the PV header (version %u,"
			" start 0x%" PRIx64 ", size %" PRIu64 ")", src_name,
			mda_off, get_le32(hdr + 20), get_le64(hdr + 24),
			get_le64(hdr + 32));
		d->nb_copies++;
		return 1;
	}
	roff = get_le64(hdr + 40);
	rsize = get_le64(hdr + 48);
	rcrc = get_le32(hdr + 56);
	rflags = get_le32(hdr + 60);
	if (rsize == 0 || (rflags & RLOCN_IGNORED))
		return 0; /* an orphan PV, or an area lvm2 ignores */
	ring = mda_size - MDA_HEADER_BYTES;
	if (roff < MDA_HEADER_BYTES || roff >= mda_size || rsize > ring ||
	    rsize > LVM_TEXT_MAX_BYTES) {
		set_why(c->why, sizeof(c->why), "%s: metadata text at offset "
			"%" PRIu64 " (%" PRIu64 " bytes) does not fit its %"
			PRIu64 "-byte area", src_name, roff, rsize, mda_size);
		d->nb_copies++;
		return 1;
	}
	text = malloc((size_t)rsize);
	if (!text)
		return -ENOMEM;
	{
		/* The circular buffer: the part up to the area's end, then
		 * the rest from just after the header. */
		uint64_t first = MIN(rsize, mda_size - roff);
		ret = img_pread(img, text, (size_t)first, mda_off + roff);
		if (ret == 0 && first < rsize)
			ret = img_pread(img, text + first,
					(size_t)(rsize - first),
					mda_off + MDA_HEADER_BYTES);
		if (ret < 0) {
			set_why(c->why, sizeof(c->why), "%s: cannot read the "
				"metadata text: %s", src_name, strerror(-ret));
			d->nb_copies++;
			return 1;
		}
	}
	crc = lvm_crc(LVM_CRC_INITIAL, text, (size_t)rsize);
	c->text_crc = crc;
	c->text_bytes = rsize;
	same = label_ok && crc == rcrc
		       ? find_dup(prev, nb_prev, d, crc, rsize)
		       : NULL;
	if (same) {
		/* Names point into the first copy's tree, which lives as
		 * long as this one. */
		c->dup = true;
		c->vg_name = same->vg_name;
		c->vg_uuid = same->vg_uuid;
		c->seqno = same->seqno;
		d->nb_copies++;
		return 1;
	}
	ret = lvm_text_parse(text, (size_t)rsize, budget, &c->root, why,
			     sizeof(why));
	if (ret == -ENOMEM)
		return ret;
	if (ret < 0) {
		set_why(c->why, sizeof(c->why), "%s: metadata text%s: %s",
			src_name, crc != rcrc ? " (bad checksum)" : "", why);
		d->nb_copies++;
		return 1;
	}
	d->nb_copies++;
	/* Even a copy we refuse is parsed for its name, so the reason can
	 * be shown under the VG it belongs to. */
	if (vg_identity(c, why, sizeof(why)) < 0) {
		set_why(c->why, sizeof(c->why), "%s: metadata text%s: %s",
			src_name, crc != rcrc ? " (bad checksum)" : "", why);
		c->vg = NULL;
		c->vg_name = c->vg_uuid = NULL;
		return 1;
	}
	if (crc != rcrc) {
		set_why(c->why, sizeof(c->why), "%s: metadata text of VG %.64s "
			"has a bad checksum (0x%08x, computed 0x%08x)",
			src_name, c->vg_name, rcrc, crc);
		return 1;
	}
	if (!label_ok) {
		set_why(c->why, sizeof(c->why), "%s: %s", src_name, label_why);
		return 1;
	}
	c->good = true;
	return 1;
}

int lvm_disk_read(struct img *img, const char *src_name,
		  const struct lvm_disk *prev, size_t nb_prev, size_t *budget,
		  struct lvm_disk *d)
{
	uint8_t sec[LABEL_SCAN_SECTORS * SECTOR];
	const uint8_t *lab = NULL, *pvh;
	uint64_t size = img_size(img);
	size_t have = (size_t)MIN((uint64_t)sizeof(sec), size);
	uint32_t hoff, crc;
	bool label_ok = true;
	char label_why[160] = "";
	unsigned s;
	size_t pos, end;
	int ret;

	memset(d, 0, sizeof(*d));
	have -= have % SECTOR;
	if (have == 0)
		return 0;
	ret = img_pread(img, sec, have, 0);
	if (ret < 0)
		return ret;
	for (s = 0; s < have / SECTOR; s++) {
		if (memcmp(sec + s * SECTOR, "LABELONE", 8) == 0 &&
		    memcmp(sec + s * SECTOR + 24, "LVM2 001", 8) == 0) {
			lab = sec + s * SECTOR;
			break;
		}
	}
	if (!lab)
		return 0;
	d->is_pv = true;
	crc = lvm_crc(LVM_CRC_INITIAL, lab + 20, SECTOR - 20);
	if (get_le64(lab + 8) != s) {
		label_ok = false;
		set_why(label_why, sizeof(label_why), "PV label in sector %u "
			"says it is in sector %" PRIu64, s, get_le64(lab + 8));
	} else if (get_le32(lab + 16) != crc) {
		label_ok = false;
		set_why(label_why, sizeof(label_why), "PV label in sector %u "
			"has a bad checksum (0x%08x, computed 0x%08x)", s,
			get_le32(lab + 16), crc);
	}
	d->label_ok = label_ok;
	snprintf(d->why, sizeof(d->why), "%s: %s", src_name, label_why);
	/* The PV header and its two lists lie inside the label sector. */
	hoff = get_le32(lab + 20);
	if (hoff < 32 || hoff > SECTOR - 32 - 8 - 2 * 16) {
		d->label_ok = false;
		snprintf(d->why, sizeof(d->why), "%s: PV header offset %u is "
			 "not inside the label sector", src_name, hoff);
		return 0;
	}
	pvh = lab + hoff;
	memcpy(d->pv_uuid, pvh, 32);
	d->pv_uuid[32] = '\0';
	for (unsigned i = 0; i < 32; i++) {
		if (!is_uuid_char(d->pv_uuid[i])) {
			d->label_ok = false;
			snprintf(d->why, sizeof(d->why), "%s: PV header holds "
				 "no valid UUID", src_name);
			return 0;
		}
	}
	d->dev_size_bytes = get_le64(pvh + 32);
	/* Data areas, then metadata areas, each list ending at a zero
	 * offset; both bounded by the sector. */
	pos = hoff + 40;
	end = SECTOR;
	for (int list = 0; list < 2; list++) {
		for (;;) {
			uint64_t off, len;
			if (pos + 16 > end) {
				d->label_ok = false;
				snprintf(d->why, sizeof(d->why), "%s: PV header "
					 "area lists run past the label sector",
					 src_name);
				return 0;
			}
			off = get_le64(lab + pos);
			len = get_le64(lab + pos + 8);
			pos += 16;
			if (off == 0)
				break;
			if (list == 0) {
				if (d->nb_data_areas < 8) {
					d->data_off[d->nb_data_areas] = off;
					d->nb_data_areas++;
				}
				continue;
			}
			ret = read_mda(img, src_name, off, len, label_ok,
				       label_why, prev, nb_prev, budget, d);
			if (ret < 0) {
				lvm_disk_free(d);
				return ret;
			}
		}
	}
	return 0;
}
