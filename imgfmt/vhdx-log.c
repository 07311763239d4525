/* vhdx-log.c: CRC-32C, and replaying a VHDX log in memory.
 *
 * A VHDX writer puts every metadata update (BAT, metadata, region table)
 * into the log first; a file whose active header has a non-zero log GUID
 * may hold updates that never reached their place, and the spec says a
 * reader must replay them before trusting anything else. QEMU does that
 * on a read-write open by writing the file; we never write it. Instead
 * the replayed 4 KiB sectors (and zeroed ranges) become an overlay that
 * vhdx_read_file() lays over every later read of the file, metadata and
 * guest data alike. The overlay holds at most one 4 KiB copy per data
 * descriptor of the active sequence, so it is bounded by the log size,
 * which itself is bounded (VHDX_LOG_MAX_BYTES) and must lie in the file.
 *
 * Finding the active sequence (MS-VHDX 2.3.3, and the way QEMU's
 * vhdx-log.c reads it): every 4 KiB position of the circular log may
 * start an entry. An entry is valid when its signature is "loge", its
 * length is a non-zero multiple of 4 KiB within the log, its sequence
 * number is not 0, its log GUID is the active header's, its descriptors
 * fit in it, each descriptor is "desc" or "zero" with the entry's
 * sequence number and a 4 KiB-aligned file offset (and length, for
 * "zero"), and the CRC-32C over the whole entry (checksum field as zero)
 * matches. A sequence is a run of valid entries, each starting where the
 * previous ends (wrapping at the log's end) with the next sequence
 * number. The active sequence is the one whose last entry has the
 * highest sequence number (the longest such run on a tie); its entries
 * are applied oldest first, descriptors in order, a later write winning.
 * Per-position validity is computed once and runs are followed with a
 * memo, so the search is linear in the log size.
 *
 * Refused, as QEMU refuses them when it replays: an entry whose flushed
 * file offset lies past the end of the file, and a data sector whose
 * sequence number is not its descriptor's. Also refused (QEMU would
 * write them): a descriptor that writes into the log itself, past
 * 2^62, or past the file size the entry declares (last_file_offset,
 * rounded up to 1 MiB) and the real size; that bounds every zeroed
 * range. Not done: the entry's tail field is not used to find the start
 * of the sequence (the run found is replayed whole), as in QEMU.
 */
#include "vhdx-int.h"

#include "checked.h"
#include "cleanup.h"
#include "endian.h"
#include "io.h"

#include <errno.h>
#include <inttypes.h>
#include <stdlib.h>
#include <string.h>

/* ---- CRC-32C (reflected polynomial 0x82f63b78) ---- */

static uint32_t crc32c_table[256];
static pthread_once_t crc32c_once = PTHREAD_ONCE_INIT;

static void crc32c_init(void)
{
	for (uint32_t i = 0; i < 256; i++) {
		uint32_t c = i;

		for (int k = 0; k < 8; k++)
			c = (c & 1) ? (c >> 1) ^ 0x82f63b78u : c >> 1;
		crc32c_table[i] = c;
	}
}

uint32_t vhdx_crc32c_update(uint32_t crc, const void *buf, size_t len)
{
	const uint8_t *p = buf;

	pthread_once(&crc32c_once, crc32c_init);
	while (len--)
		crc = crc32c_table[(crc ^ *p++) & 0xff] ^ (crc >> 8);
	return crc;
}

uint32_t vhdx_checksum(const uint8_t *buf, size_t len, size_t crc_off)
{
	static const uint8_t zero[4];
	uint32_t crc = 0xffffffffu;

	crc = vhdx_crc32c_update(crc, buf, crc_off);
	crc = vhdx_crc32c_update(crc, zero, 4);
	crc = vhdx_crc32c_update(crc, buf + crc_off + 4, len - crc_off - 4);
	return ~crc;
}

/* ---- the overlay ---- */

void vhdx_overlay_free(struct vhdx_overlay *ov)
{
	free(ov->ents);
	free(ov->sectors);
	memset(ov, 0, sizeof(*ov));
}

bool vhdx_overlay_touches(const struct vhdx_overlay *ov, uint64_t off,
			  uint64_t len)
{
	uint64_t end = off + len;

	if (ov->nb_ents == 0 || end <= ov->lo || off >= ov->hi)
		return false;
	for (size_t i = 0; i < ov->nb_ents; i++) {
		const struct vhdx_overlay_ent *e = &ov->ents[i];

		if (e->file_off < end && off < e->file_off + e->len)
			return true;
	}
	return false;
}

void vhdx_overlay_apply(const struct vhdx_overlay *ov, uint8_t *buf,
			size_t len, uint64_t off)
{
	uint64_t end = off + len;

	if (ov->nb_ents == 0 || end <= ov->lo || off >= ov->hi)
		return;
	/* Log order: a later entry overwrites an earlier one. */
	for (size_t i = 0; i < ov->nb_ents; i++) {
		const struct vhdx_overlay_ent *e = &ov->ents[i];
		uint64_t a = MAX(off, e->file_off);
		uint64_t b = MIN(end, e->file_off + e->len);

		if (a >= b)
			continue;
		if (e->data)
			memcpy(buf + (a - off), e->data + (a - e->file_off),
			       (size_t)(b - a));
		else
			memset(buf + (a - off), 0, (size_t)(b - a));
	}
}

/* ---- parsing the log ---- */

/* What one 4 KiB position of the log starts, decided once. */
struct log_pos {
	bool valid;
	uint32_t nb_sectors;
	uint64_t seq;
	/* Memo for runs: entries from here to the run's end, and the last
	 * sequence number; 0 while not yet computed. */
	uint64_t run_len;
	uint64_t run_last_seq;
};

struct log_buf {
	const uint8_t *bytes;
	uint64_t nb_sectors;
};

/* Byte b of the entry that starts at sector first (the log wraps). */
static const uint8_t *entry_byte(const struct log_buf *lb, uint64_t first,
				 uint64_t b)
{
	uint64_t sec = (first + b / VHDX_LOG_SECTOR_BYTES) % lb->nb_sectors;

	return lb->bytes + sec * VHDX_LOG_SECTOR_BYTES +
	       b % VHDX_LOG_SECTOR_BYTES;
}

static uint32_t desc_sectors_for(uint32_t nb_desc)
{
	/* 64-byte header = two descriptor slots of the first sector. */
	return (uint32_t)div_round_up((uint64_t)nb_desc + 2, 128);
}

/* Decides whether an entry starts at sector first (see the top). */
static void check_entry(const struct vhdx_state *s, const struct log_buf *lb,
			uint64_t first, struct log_pos *pos)
{
	const uint8_t *h = lb->bytes + first * VHDX_LOG_SECTOR_BYTES;
	uint32_t entry_bytes, nb_desc, nb_desc_sectors, nb_sectors, crc;
	uint64_t seq;

	pos->valid = false;
	if (memcmp(h, "loge", 4) != 0)
		return;
	entry_bytes = get_le32(h + 8);
	seq = get_le64(h + 16);
	nb_desc = get_le32(h + 24);
	if (entry_bytes == 0 || entry_bytes % VHDX_LOG_SECTOR_BYTES ||
	    entry_bytes > s->log_bytes || seq == 0 ||
	    memcmp(h + 32, s->log_guid, 16) != 0)
		return;
	nb_sectors = entry_bytes / VHDX_LOG_SECTOR_BYTES;
	nb_desc_sectors = desc_sectors_for(nb_desc);
	if (nb_desc > entry_bytes / VHDX_LOG_DESC_BYTES ||
	    nb_desc_sectors > nb_sectors)
		return;
	for (uint32_t k = 0; k < nb_desc; k++) {
		const uint8_t *d = entry_byte(lb, first, VHDX_LOG_HDR_BYTES +
						(uint64_t)k * VHDX_LOG_DESC_BYTES);

		if (get_le64(d + 24) != seq || get_le64(d + 16) %
						       VHDX_LOG_SECTOR_BYTES)
			return;
		if (memcmp(d, "zero", 4) == 0) {
			if (get_le64(d + 8) % VHDX_LOG_SECTOR_BYTES)
				return;
		} else if (memcmp(d, "desc", 4) != 0) {
			return;
		}
	}
	/* The checksum covers every sector of the entry, in log order. */
	crc = 0xffffffffu;
	crc = vhdx_crc32c_update(crc, h, 4);
	crc = vhdx_crc32c_update(crc, "\0\0\0\0", 4);
	crc = vhdx_crc32c_update(crc, h + 8, VHDX_LOG_SECTOR_BYTES - 8);
	for (uint32_t k = 1; k < nb_sectors; k++)
		crc = vhdx_crc32c_update(crc, entry_byte(lb, first,
					 (uint64_t)k * VHDX_LOG_SECTOR_BYTES),
					 VHDX_LOG_SECTOR_BYTES);
	if (~crc != get_le32(h + 4))
		return;
	pos->valid = true;
	pos->nb_sectors = nb_sectors;
	pos->seq = seq;
}

/* Fills run_len / run_last_seq for the run that starts at i: walks
 * forward to the first position whose run is known or that ends a run,
 * keeping the path in stack (n slots), then fills it back to front.
 * Sequence numbers strictly increase along a run, so a run never comes
 * back to where it started and the path has at most n positions. */
static void compute_run(struct log_pos *pos, uint64_t n, uint64_t i,
			uint64_t *stack)
{
	uint64_t depth = 0, cur = i;

	while (!pos[cur].run_len && depth < n) {
		uint64_t next = (cur + pos[cur].nb_sectors) % n;

		stack[depth++] = cur;
		if (!pos[next].valid || pos[next].seq != pos[cur].seq + 1)
			break;
		cur = next;
	}
	while (depth > 0) {
		uint64_t q = stack[--depth];
		uint64_t next = (q + pos[q].nb_sectors) % n;

		if (pos[q].run_len)
			continue;
		if (pos[next].valid && pos[next].seq == pos[q].seq + 1 &&
		    pos[next].run_len) {
			pos[q].run_len = pos[next].run_len + 1;
			pos[q].run_last_seq = pos[next].run_last_seq;
		} else {
			pos[q].run_len = 1;
			pos[q].run_last_seq = pos[q].seq;
		}
	}
}

static int add_ent(struct img *img, struct vhdx_state *s,
		   struct vhdx_overlay *ov, size_t cap, uint64_t file_off,
		   uint64_t len, const uint8_t *data, uint64_t limit,
		   uint64_t seq, struct img_err *err)
{
	uint64_t end;

	if (len == 0)
		return 0;
	if (ADD_OVERFLOW(file_off, len, &end) || end > ((uint64_t)1 << 62) ||
	    end > limit)
		return img_err(err, -EINVAL, "%s: log entry %" PRIu64
			       " writes 0x%" PRIx64 "+0x%" PRIx64 " past the "
			       "end of the file it declares (0x%" PRIx64 ")",
			       img->path, seq, file_off, len, limit);
	if (s->log_bytes && file_off < s->log_off + s->log_bytes &&
	    s->log_off < end)
		return img_err(err, -EINVAL, "%s: log entry %" PRIu64
			       " writes 0x%" PRIx64 "+0x%" PRIx64 " into the "
			       "log itself", img->path, seq, file_off, len);
	if (ov->nb_ents >= cap)
		return img_err(err, -EINVAL, "%s: log has more descriptors "
			       "than fit in it", img->path);
	ov->ents[ov->nb_ents++] = (struct vhdx_overlay_ent){
		.file_off = file_off, .len = len, .data = data };
	if (ov->nb_ents == 1 || file_off < ov->lo)
		ov->lo = file_off;
	if (end > ov->hi)
		ov->hi = end;
	return 0;
}

/* Applies the run of count entries that starts at sector first. */
static int apply_run(struct img *img, struct vhdx_state *s,
		     const struct log_buf *lb, const struct log_pos *pos,
		     uint64_t first, uint64_t count, struct img_err *err)
{
	struct vhdx_overlay ov = { 0 };
	uint64_t nb_data = 0, nb_desc_total = 0, cur = first;
	size_t used = 0;
	int ret;

	/* Count descriptors first so the arrays are sized once. */
	for (uint64_t e = 0; e < count; e++) {
		const uint8_t *h = lb->bytes + cur * VHDX_LOG_SECTOR_BYTES;
		uint32_t nb_desc = get_le32(h + 24);

		nb_desc_total += nb_desc;
		for (uint32_t k = 0; k < nb_desc; k++) {
			const uint8_t *d = entry_byte(lb, cur,
				VHDX_LOG_HDR_BYTES +
				(uint64_t)k * VHDX_LOG_DESC_BYTES);
			if (memcmp(d, "desc", 4) == 0)
				nb_data++;
		}
		cur = (cur + pos[cur].nb_sectors) % lb->nb_sectors;
	}
	/* Each descriptor takes 32 bytes of the log and each data sector
	 * 4 KiB of it: both counts are bounded by the log size. */
	if (nb_desc_total > s->log_bytes / VHDX_LOG_DESC_BYTES ||
	    nb_data > s->log_bytes / VHDX_LOG_SECTOR_BYTES)
		return img_err(err, -EINVAL, "%s: log sequence claims more "
			       "descriptors than the log holds", img->path);
	ov.ents = calloc(nb_desc_total ? nb_desc_total : 1, sizeof(*ov.ents));
	ov.sectors = malloc(nb_data ? nb_data * VHDX_LOG_SECTOR_BYTES : 1);
	if (!ov.ents || !ov.sectors) {
		vhdx_overlay_free(&ov);
		return img_err(err, -ENOMEM, "%s: out of memory", img->path);
	}

	cur = first;
	for (uint64_t e = 0; e < count; e++) {
		const uint8_t *h = lb->bytes + cur * VHDX_LOG_SECTOR_BYTES;
		uint32_t nb_desc = get_le32(h + 24);
		uint32_t nb_sectors = pos[cur].nb_sectors;
		uint32_t data_sec = desc_sectors_for(nb_desc);
		uint64_t seq = pos[cur].seq;
		uint64_t flushed = get_le64(h + 48);
		uint64_t last = get_le64(h + 56), limit;

		if (flushed > s->file_bytes) {
			ret = img_err(err, -EINVAL, "%s: log entry %" PRIu64
				      " says the file was flushed up to 0x%"
				      PRIx64 ", past its end (0x%" PRIx64
				      "): the file was truncated", img->path,
				      seq, flushed, s->file_bytes);
			goto fail;
		}
		limit = MAX(s->file_bytes, MIN(last, (uint64_t)1 << 62));
		limit = align_up(limit, VHDX_MiB);
		if (last > ov.last_file_off)
			ov.last_file_off = MIN(last, (uint64_t)1 << 62);
		for (uint32_t k = 0; k < nb_desc; k++) {
			const uint8_t *d = entry_byte(lb, cur,
				VHDX_LOG_HDR_BYTES +
				(uint64_t)k * VHDX_LOG_DESC_BYTES);
			uint64_t file_off = get_le64(d + 16);

			if (memcmp(d, "zero", 4) == 0) {
				ret = add_ent(img, s, &ov, nb_desc_total,
					      file_off, get_le64(d + 8), NULL,
					      limit, seq, err);
			} else {
				const uint8_t *ds;
				uint8_t *out;
				uint64_t dseq;

				if (data_sec >= nb_sectors) {
					ret = img_err(err, -EINVAL, "%s: log "
						      "entry %" PRIu64 " has "
						      "more data descriptors "
						      "than data sectors",
						      img->path, seq);
					goto fail;
				}
				ds = entry_byte(lb, cur, (uint64_t)data_sec *
						VHDX_LOG_SECTOR_BYTES);
				dseq = (uint64_t)get_le32(ds + 4) << 32 |
				       get_le32(ds + 4092);
				if (dseq != seq) {
					ret = img_err(err, -EINVAL, "%s: log "
						      "entry %" PRIu64 ": data "
						      "sector %u has sequence "
						      "number %" PRIu64,
						      img->path, seq, data_sec,
						      dseq);
					goto fail;
				}
				/* 8 leading bytes and 4 trailing bytes live
				 * in the descriptor, the rest in the
				 * sector (spec 2.3.1.3). */
				out = ov.sectors + used * VHDX_LOG_SECTOR_BYTES;
				memcpy(out, d + 8, 8);
				memcpy(out + 8, ds + 8, 4084);
				memcpy(out + 4092, d + 4, 4);
				used++;
				data_sec++;
				ret = add_ent(img, s, &ov, nb_desc_total,
					      file_off, VHDX_LOG_SECTOR_BYTES,
					      out, limit, seq, err);
			}
			if (ret < 0)
				goto fail;
		}
		ov.last_seq = seq;
		ov.nb_log_entries++;
		cur = (cur + nb_sectors) % lb->nb_sectors;
	}
	s->overlay = ov;
	return 0;
fail:
	vhdx_overlay_free(&ov);
	return ret;
}

int vhdx_log_replay(struct img *img, struct vhdx_state *s,
		    struct img_err *err)
{
	static const uint8_t zero_guid[16];
	CLEANUP_FREE uint8_t *log = NULL;
	CLEANUP_FREE struct log_pos *pos = NULL;
	CLEANUP_FREE uint64_t *stack = NULL;
	struct log_buf lb;
	uint64_t n, best = 0, best_len = 0, best_seq = 0;
	int ret;

	if (memcmp(s->log_guid, zero_guid, 16) == 0 || s->log_bytes == 0)
		return 0;
	if (s->log_bytes % VHDX_MiB)
		return img_err(err, -EINVAL, "%s: log length 0x%" PRIx64
			       " is not a multiple of 1 MiB", img->path,
			       s->log_bytes);
	if (s->log_bytes > VHDX_LOG_MAX_BYTES)
		return img_err(err, -EINVAL, "%s: log of %" PRIu64 " MiB "
			       "needs replay; imgfs replays logs of up to %"
			       PRIu64 " MiB", img->path, s->log_bytes / VHDX_MiB,
			       VHDX_LOG_MAX_BYTES / VHDX_MiB);
	if (!range_within(s->log_off, s->log_bytes, s->file_bytes))
		return img_err(err, -EINVAL, "%s: log at 0x%" PRIx64 " (0x%"
			       PRIx64 " bytes) lies past the end of the file",
			       img->path, s->log_off, s->log_bytes);
	log = malloc(s->log_bytes);
	n = s->log_bytes / VHDX_LOG_SECTOR_BYTES;
	pos = calloc(n, sizeof(*pos));
	stack = calloc(n, sizeof(*stack));
	if (!log || !pos || !stack)
		return img_err(err, -ENOMEM, "%s: out of memory", img->path);
	ret = full_pread(img->fd, log, s->log_bytes, s->log_off);
	if (ret < 0)
		return img_err(err, ret, "%s: cannot read the log: %s",
			       img->path, strerror(-ret));
	lb = (struct log_buf){ .bytes = log, .nb_sectors = n };
	for (uint64_t i = 0; i < n; i++)
		check_entry(s, &lb, i, &pos[i]);
	for (uint64_t i = 0; i < n; i++) {
		if (!pos[i].valid)
			continue;
		compute_run(pos, n, i, stack);
		if (best_len == 0 || pos[i].run_last_seq > best_seq ||
		    (pos[i].run_last_seq == best_seq &&
		     pos[i].run_len > best_len)) {
			best = i;
			best_len = pos[i].run_len;
			best_seq = pos[i].run_last_seq;
		}
	}
	if (best_len == 0)
		return 0; /* a log GUID but no valid entry: nothing to do */
	return apply_run(img, s, &lb, pos, best, best_len, err);
}
