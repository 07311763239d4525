/* vhdx.c: the VHDX driver (read-only): probe, open, reads, block status,
 * info. The log lives in vhdx-log.c.
 *
 * Open checks every structure before anything uses it (MS-VHDX; QEMU's
 * block/vhdx.c for what real readers accept), in QEMU's order:
 *   1. the file identifier ("vhdxfile");
 *   2. both headers (CRC-32C over 4 KiB, "head", version 1): the valid
 *      one with the higher sequence number is active; two valid headers
 *      with one sequence number must be identical (QEMU; Disk2VHD writes
 *      such pairs);
 *   3. the log the active header names (version 0, offset a non-zero
 *      multiple of 1 MiB): a non-zero log GUID means replay, done in
 *      memory (vhdx-log.c); every later read of the file sees it;
 *   4. the region table at 192 KiB (CRC, "regi", at most 2047 entries),
 *      or its copy at 256 KiB when the first is damaged (QEMU reads only
 *      the first): regions past the first 1 MiB, inside the file, not
 *      overlapping each other or the log; BAT and metadata exactly once;
 *      an unknown region marked required is refused;
 *   5. the metadata table ("metadata", at most 2047 entries) and its
 *      items, each inside the metadata region: file parameters (block
 *      size a power of two in 1..256 MiB, leave-blocks-allocated,
 *      has-parent), virtual disk size (at most 64 TiB; a size that is
 *      not a multiple of the logical sector is rounded down, as QEMU
 *      does), logical and physical sector sizes (512 or 4096), page 83
 *      data, and for a differencing image the parent locator; an unknown
 *      item marked required is refused;
 *   6. the BAT: only the entries the virtual size needs are read (the
 *      region must hold them; at most VHDX_MAX_BAT_BYTES), payload block
 *      i at index i + i / chunk_ratio and the sector bitmap of chunk c at
 *      c * (chunk_ratio + 1) + chunk_ratio. An entry whose data would lie
 *      in the first 1 MiB, in a region or past the end of the file is
 *      kept as VHDX_PAYLOAD_BAD: reading that block gives -EIO, the rest
 *      of the disk reads normally (QEMU refuses the whole image);
 *   7. for a differencing image, the parent (below).
 * Every refusal is -EINVAL (or the backing errors imgfmt.h lists) with
 * one line naming the image and the field.
 *
 * Block states (spec 2.5.1.1): FULLY_PRESENT reads the file; ZERO,
 * UNMAPPED (and 5, its pre-1.0 code), and in a non-differencing image
 * NOT_PRESENT and UNDEFINED read as zeroes, as QEMU reads them. In a
 * differencing image NOT_PRESENT and UNDEFINED read the parent, and
 * PARTIALLY_PRESENT reads each sector from this file or the parent as
 * the chunk's sector bitmap says (bit n of the bitmap, least significant
 * bit first, is sector n of the chunk). PARTIALLY_PRESENT in an image
 * without a parent, and the reserved state 4, give -EIO.
 *
 * Differencing: QEMU cannot open these at all (it refuses has_parent),
 * so the behaviour follows the spec. The parent locator (type VHDX) is a
 * list of UTF-16 key/value pairs; we try relative_path and then
 * absolute_win32_path (a drive letter dropped, '\' read as '/'), each
 * through img_open_backing (the backing= policy), opened as VHDX. As
 * Hyper-V does, the parent's data write GUID must be the image's
 * parent_linkage (or parent_linkage2): a parent changed since the child
 * was made is refused. volume_path is not used.
 *
 * Threads: the state never changes after open, so reads take no lock;
 * each contiguous run of data is one pread into the caller's buffer, and
 * runs go on across block boundaries (partially present blocks too)
 * while the next block reads the same way. A request reads the sector
 * bitmap bytes it needs once (struct vhdx_bits, on its stack, 4 KiB);
 * nothing is cached between requests.
 * Block status reports host_fd only for data the log overlay does not
 * touch (the file holds those bytes as they read). qemu-img map of a
 * VHDX says "data" for the whole disk (QEMU has no VHDX block status);
 * ours follows the BAT.
 */
#include "vhdx-int.h"

#include "checked.h"
#include "cleanup.h"
#include "endian.h"
#include "io.h"

#include <ctype.h>
#include <errno.h>
#include <inttypes.h>
#include <linux/fs.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/ioctl.h>
#include <sys/stat.h>

/* GUIDs as the file stores them: data1..3 little-endian, data4 as is. */
#define VHDX_GUID(d1, d2, d3, a, b, c, d, e, f, g, h)                       \
	{ (d1) & 0xff, ((d1) >> 8) & 0xff, ((d1) >> 16) & 0xff,             \
	  ((d1) >> 24) & 0xff, (d2) & 0xff, ((d2) >> 8) & 0xff, (d3) & 0xff, \
	  ((d3) >> 8) & 0xff, a, b, c, d, e, f, g, h }

static const uint8_t guid_bat[16] = VHDX_GUID(0x2dc27766, 0xf623, 0x4200,
	0x9d, 0x64, 0x11, 0x5e, 0x9b, 0xfd, 0x4a, 0x08);
static const uint8_t guid_metadata[16] = VHDX_GUID(0x8b7ca206, 0x4790,
	0x4b9a, 0xb8, 0xfe, 0x57, 0x5f, 0x05, 0x0f, 0x88, 0x6e);
static const uint8_t guid_file_params[16] = VHDX_GUID(0xcaa16737, 0xfa36,
	0x4d43, 0xb3, 0xb6, 0x33, 0xf0, 0xaa, 0x44, 0xe7, 0x6b);
static const uint8_t guid_disk_size[16] = VHDX_GUID(0x2fa54224, 0xcd1b,
	0x4876, 0xb2, 0x11, 0x5d, 0xbe, 0xd8, 0x3b, 0xf4, 0xb8);
static const uint8_t guid_page83[16] = VHDX_GUID(0xbeca12ab, 0xb2e6,
	0x4523, 0x93, 0xef, 0xc3, 0x09, 0xe0, 0x00, 0xc7, 0x46);
static const uint8_t guid_logical_sector[16] = VHDX_GUID(0x8141bf1d,
	0xa96f, 0x4709, 0xba, 0x47, 0xf2, 0x33, 0xa8, 0xfa, 0xab, 0x5f);
static const uint8_t guid_physical_sector[16] = VHDX_GUID(0xcda348c7,
	0x445d, 0x4471, 0x9c, 0xc9, 0xe9, 0x88, 0x52, 0x51, 0xc5, 0x56);
static const uint8_t guid_parent_locator[16] = VHDX_GUID(0xa8d35f2d,
	0xb30b, 0x454d, 0xab, 0xf7, 0xd3, 0xd8, 0x48, 0x34, 0xab, 0x0c);
static const uint8_t guid_locator_vhdx[16] = VHDX_GUID(0xb04aefb7, 0xd19e,
	0x4a81, 0xb7, 0x89, 0x25, 0xb8, 0xe9, 0x44, 0x59, 0x13);

#define REGION_REQUIRED 1u
#define META_REQUIRED 4u
#define PARAM_LEAVE_ALLOCATED 1u
#define PARAM_HAS_PARENT 2u

static int vhdx_probe(const uint8_t *head, size_t len)
{
	if (len >= 8 && memcmp(head, "vhdxfile", 8) == 0)
		return 100;
	return 0;
}

/* "{xxxxxxxx-xxxx-xxxx-xxxx-xxxxxxxxxxxx}" for a GUID as stored. */
static void guid_format(const uint8_t g[16], char out[39])
{
	snprintf(out, 39, "{%08X-%04X-%04X-%02X%02X-%02X%02X%02X%02X%02X%02X}",
		 get_le32(g), get_le16(g + 4), get_le16(g + 6), g[8], g[9],
		 g[10], g[11], g[12], g[13], g[14], g[15]);
}

int vhdx_read_file(struct img *img, void *buf, size_t len, uint64_t off)
{
	struct vhdx_state *s = vhdx_state(img);
	int ret;

	if (!range_within(off, len, s->eff_file_bytes))
		return -EIO;
	if (range_within(off, len, s->file_bytes))
		ret = full_pread(img->fd, buf, len, off);
	else
		ret = full_pread_zero_eof(img->fd, buf, len, off);
	if (ret < 0)
		return ret;
	vhdx_overlay_apply(&s->overlay, buf, len, off);
	return 0;
}

static int file_size(struct img *img, uint64_t *bytes_r, struct img_err *err)
{
	struct stat st;

	if (fstat(img->fd, &st) < 0)
		return img_err(err, -errno, "%s: %s", img->path,
			       strerror(errno));
	if (S_ISBLK(st.st_mode)) {
		if (ioctl(img->fd, BLKGETSIZE64, bytes_r) < 0)
			return img_err(err, -errno, "%s: cannot get the size "
				       "of the device: %s", img->path,
				       strerror(errno));
		return 0;
	}
	*bytes_r = (uint64_t)st.st_size;
	return 0;
}

/* ---- headers ---- */

struct vhdx_header {
	bool valid;
	uint64_t seq;
	uint8_t file_write_guid[16];
	uint8_t data_write_guid[16];
	uint8_t log_guid[16];
	uint16_t log_version;
	uint32_t log_bytes;
	uint64_t log_off;
	uint8_t raw[80]; /* the fields, for the identical-pair rule */
};

static int read_header(struct img *img, uint64_t off, struct vhdx_header *h)
{
	uint8_t buf[VHDX_HEADER_BYTES];
	int ret;

	memset(h, 0, sizeof(*h));
	ret = full_pread_zero_eof(img->fd, buf, sizeof(buf), off);
	if (ret < 0)
		return ret;
	if (memcmp(buf, "head", 4) != 0 || get_le16(buf + 66) != 1 ||
	    vhdx_checksum(buf, sizeof(buf), 4) != get_le32(buf + 4))
		return 0;
	h->valid = true;
	h->seq = get_le64(buf + 8);
	memcpy(h->file_write_guid, buf + 16, 16);
	memcpy(h->data_write_guid, buf + 32, 16);
	memcpy(h->log_guid, buf + 48, 16);
	h->log_version = get_le16(buf + 64);
	h->log_bytes = get_le32(buf + 68);
	h->log_off = get_le64(buf + 72);
	memcpy(h->raw, buf, sizeof(h->raw));
	return 0;
}

static int open_headers(struct img *img, struct vhdx_state *s,
			struct img_err *err)
{
	struct vhdx_header h1, h2;
	const struct vhdx_header *h;
	int ret;

	ret = read_header(img, VHDX_HEADER1_OFF, &h1);
	if (ret == 0)
		ret = read_header(img, VHDX_HEADER2_OFF, &h2);
	if (ret < 0)
		return img_err(err, ret, "%s: cannot read the headers: %s",
			       img->path, strerror(-ret));
	if (!h1.valid && !h2.valid)
		return img_err(err, -EINVAL, "%s: no valid VHDX header (both "
			       "copies have a bad signature, version or "
			       "CRC-32C)", img->path);
	if (h1.valid && h2.valid && h1.seq == h2.seq &&
	    memcmp(h1.raw + 8, h2.raw + 8, sizeof(h1.raw) - 8) != 0)
		return img_err(err, -EINVAL, "%s: both headers have sequence "
			       "number %" PRIu64 " but differ", img->path,
			       h1.seq);
	if (h1.valid && (!h2.valid || h1.seq >= h2.seq)) {
		h = &h1;
		s->active_header = 1;
	} else {
		h = &h2;
		s->active_header = 2;
	}
	s->header_seq = h->seq;
	memcpy(s->data_write_guid, h->data_write_guid, 16);
	memcpy(s->log_guid, h->log_guid, 16);
	if (h->log_version != 0)
		return img_err(err, -EINVAL, "%s: log version %u is not "
			       "supported (only 0)", img->path,
			       h->log_version);
	if (h->log_off < VHDX_MiB || h->log_off % VHDX_MiB)
		return img_err(err, -EINVAL, "%s: log offset 0x%" PRIx64
			       " is not a non-zero multiple of 1 MiB",
			       img->path, h->log_off);
	if (!range_within(h->log_off, h->log_bytes, VHDX_MAX_FILE_BYTES))
		return img_err(err, -EINVAL, "%s: log at 0x%" PRIx64 " (0x%"
			       PRIx32 " bytes) lies beyond any file", img->path,
			       h->log_off, h->log_bytes);
	s->log_off = h->log_off;
	s->log_bytes = h->log_bytes;
	return 0;
}

/* ---- regions ---- */

static int region_cmp(const void *a, const void *b)
{
	const struct vhdx_region *x = a, *y = b;

	return x->start < y->start ? -1 : x->start > y->start;
}

/* True when [start, end) meets a registered region (sorted, disjoint). */
static bool region_overlaps(const struct vhdx_state *s, uint64_t start,
			    uint64_t end)
{
	size_t lo = 0, hi = s->nb_regions;

	/* The first region whose end lies past start. */
	while (lo < hi) {
		size_t mid = lo + (hi - lo) / 2;

		if (s->regions[mid].end <= start)
			lo = mid + 1;
		else
			hi = mid;
	}
	return lo < s->nb_regions && s->regions[lo].start < end;
}

/* Checks a table copy; returns a reason, or NULL when it is sound. */
static const char *region_table_problem(const uint8_t *rt)
{
	if (memcmp(rt, "regi", 4) != 0)
		return "bad signature";
	if (vhdx_checksum(rt, VHDX_RT_BYTES, 4) != get_le32(rt + 4))
		return "bad CRC-32C";
	if (get_le32(rt + 8) > VHDX_RT_MAX_ENTRIES)
		return "more than 2047 entries";
	return NULL;
}

static int open_regions(struct img *img, struct vhdx_state *s,
			struct img_err *err)
{
	CLEANUP_FREE uint8_t *rt = malloc(VHDX_RT_BYTES);
	const char *why, *why2;
	uint32_t nb;
	bool have_bat = false, have_meta = false;
	int ret;

	if (!rt)
		return img_err(err, -ENOMEM, "%s: out of memory", img->path);
	ret = vhdx_read_file(img, rt, VHDX_RT_BYTES, VHDX_RT1_OFF);
	if (ret < 0)
		return img_err(err, -EINVAL, "%s: the region table lies past "
			       "the end of the file", img->path);
	why = region_table_problem(rt);
	if (why) {
		ret = vhdx_read_file(img, rt, VHDX_RT_BYTES, VHDX_RT2_OFF);
		why2 = ret < 0 ? "past the end of the file"
			       : region_table_problem(rt);
		if (why2)
			return img_err(err, -EINVAL, "%s: region table: %s "
				       "(and its copy: %s)", img->path, why,
				       why2);
	}
	nb = get_le32(rt + 8);
	s->regions = calloc((size_t)nb + 2, sizeof(*s->regions));
	if (!s->regions)
		return img_err(err, -ENOMEM, "%s: out of memory", img->path);
	s->regions[s->nb_regions++] = (struct vhdx_region){
		0, VHDX_HEADER_SECTION_BYTES };
	if (s->log_bytes)
		s->regions[s->nb_regions++] = (struct vhdx_region){
			s->log_off, s->log_off + s->log_bytes };
	for (uint32_t i = 0; i < nb; i++) {
		const uint8_t *e = rt + 16 + 32 * (size_t)i;
		uint64_t off = get_le64(e + 16);
		uint32_t len = get_le32(e + 24);
		uint32_t bits = get_le32(e + 28);
		const char *what = memcmp(e, guid_bat, 16) == 0 ? "BAT"
				 : memcmp(e, guid_metadata, 16) == 0
					 ? "metadata"
					 : NULL;

		if (!what && (bits & REGION_REQUIRED)) {
			char g[39];

			guid_format(e, g);
			return img_err(err, -EINVAL, "%s: region %s is "
				       "required but unknown", img->path, g);
		}
		if (!what)
			what = "unknown";
		if (len == 0 || off < VHDX_HEADER_SECTION_BYTES ||
		    !range_within(off, len, s->eff_file_bytes))
			return img_err(err, -EINVAL, "%s: %s region at 0x%"
				       PRIx64 " (0x%" PRIx32 " bytes) lies "
				       "outside the file or in its header "
				       "section", img->path, what, off, len);
		if (region_overlaps(s, off, off + len))
			return img_err(err, -EINVAL, "%s: %s region at 0x%"
				       PRIx64 " (0x%" PRIx32 " bytes) "
				       "overlaps another region or the log",
				       img->path, what, off, len);
		if (strcmp(what, "BAT") == 0) {
			if (have_bat)
				return img_err(err, -EINVAL, "%s: two BAT "
					       "regions", img->path);
			have_bat = true;
			s->bat_off = off;
			s->bat_region_bytes = len;
		} else if (strcmp(what, "metadata") == 0) {
			if (have_meta)
				return img_err(err, -EINVAL, "%s: two metadata "
					       "regions", img->path);
			have_meta = true;
			s->meta_off = off;
			s->meta_region_bytes = len;
		}
		s->regions[s->nb_regions++] = (struct vhdx_region){
			off, off + len };
		qsort(s->regions, s->nb_regions, sizeof(*s->regions),
		      region_cmp);
	}
	if (!have_bat || !have_meta)
		return img_err(err, -EINVAL, "%s: the region table has no %s "
			       "region", img->path, have_bat ? "metadata"
							      : "BAT");
	return 0;
}

/* ---- metadata ---- */

struct meta_item {
	bool present;
	uint32_t off;
	uint32_t len;
};

/* Reads len bytes of a metadata item that must hold at least need. */
static int read_item(struct img *img, struct vhdx_state *s,
		     const struct meta_item *it, const char *what,
		     uint32_t need, void *buf, struct img_err *err)
{
	int ret;

	if (it->len < need)
		return img_err(err, -EINVAL, "%s: metadata item %s is %" PRIu32
			       " bytes, needs %" PRIu32, img->path, what,
			       it->len, need);
	ret = vhdx_read_file(img, buf, need, s->meta_off + it->off);
	if (ret < 0)
		return img_err(err, ret, "%s: cannot read metadata item %s: "
			       "%s", img->path, what, strerror(-ret));
	return 0;
}

/* UTF-16LE to UTF-8, stopping at a NUL; NULL on ENOMEM. */
static char *utf16_to_utf8(const uint8_t *p, size_t nb_units)
{
	char *out = malloc(nb_units * 3 + 1), *o = out;

	if (!out)
		return NULL;
	for (size_t i = 0; i < nb_units; i++) {
		uint32_t c = get_le16(p + 2 * i);

		if (c == 0)
			break;
		if (c >= 0xd800 && c < 0xdc00 && i + 1 < nb_units) {
			uint32_t lo = get_le16(p + 2 * (i + 1));

			if (lo >= 0xdc00 && lo < 0xe000) {
				c = 0x10000 + ((c - 0xd800) << 10) +
				    (lo - 0xdc00);
				i++;
			}
		}
		if (c >= 0xd800 && c < 0xe000)
			c = 0xfffd; /* a lone surrogate */
		if (c < 0x80) {
			*o++ = (char)c;
		} else if (c < 0x800) {
			*o++ = (char)(0xc0 | c >> 6);
			*o++ = (char)(0x80 | (c & 0x3f));
		} else if (c < 0x10000) {
			*o++ = (char)(0xe0 | c >> 12);
			*o++ = (char)(0x80 | ((c >> 6) & 0x3f));
			*o++ = (char)(0x80 | (c & 0x3f));
		} else {
			/* 4 bytes for 2 units: within nb_units * 3. */
			*o++ = (char)(0xf0 | c >> 18);
			*o++ = (char)(0x80 | ((c >> 12) & 0x3f));
			*o++ = (char)(0x80 | ((c >> 6) & 0x3f));
			*o++ = (char)(0x80 | (c & 0x3f));
		}
	}
	*o = '\0';
	return out;
}

struct parent_keys {
	char *linkage;
	char *linkage2;
	char *relative;
	char *absolute;
};

static void parent_keys_free(struct parent_keys *k)
{
	free(k->linkage);
	free(k->linkage2);
	free(k->relative);
	free(k->absolute);
}

/* Parses the parent locator item (spec 2.6.2.6). */
static int parse_locator(struct img *img, struct vhdx_state *s,
			 const struct meta_item *it, struct parent_keys *k,
			 struct img_err *err)
{
	CLEANUP_FREE uint8_t *buf = NULL;
	uint32_t nb;
	int ret;

	if (it->len < 20)
		return img_err(err, -EINVAL, "%s: parent locator is %" PRIu32
			       " bytes, too short for its header", img->path,
			       it->len);
	buf = malloc(it->len);
	if (!buf)
		return img_err(err, -ENOMEM, "%s: out of memory", img->path);
	ret = read_item(img, s, it, "parent locator", it->len, buf, err);
	if (ret < 0)
		return ret;
	if (memcmp(buf, guid_locator_vhdx, 16) != 0) {
		char g[39];

		guid_format(buf, g);
		return img_err(err, -EINVAL, "%s: parent locator type %s is "
			       "not VHDX", img->path, g);
	}
	nb = get_le16(buf + 18);
	if (20 + 12 * (uint64_t)nb > it->len)
		return img_err(err, -EINVAL, "%s: parent locator claims %"
			       PRIu32 " entries, more than its %" PRIu32
			       " bytes hold", img->path, nb, it->len);
	for (uint32_t i = 0; i < nb; i++) {
		const uint8_t *e = buf + 20 + 12 * (size_t)i;
		uint32_t koff = get_le32(e), voff = get_le32(e + 4);
		uint16_t klen = get_le16(e + 8), vlen = get_le16(e + 10);
		CLEANUP_FREE char *key = NULL;
		char *value, **slot = NULL;

		if (!range_within(koff, klen, it->len) ||
		    !range_within(voff, vlen, it->len) || klen % 2 ||
		    vlen % 2 || klen == 0 || vlen == 0)
			return img_err(err, -EINVAL, "%s: parent locator "
				       "entry %" PRIu32 " (key 0x%" PRIx32
				       "+%u, value 0x%" PRIx32 "+%u) lies "
				       "outside the locator", img->path, i,
				       koff, klen, voff, vlen);
		key = utf16_to_utf8(buf + koff, klen / 2);
		if (!key)
			return img_err(err, -ENOMEM, "%s: out of memory",
				       img->path);
		if (strcmp(key, "parent_linkage") == 0)
			slot = &k->linkage;
		else if (strcmp(key, "parent_linkage2") == 0)
			slot = &k->linkage2;
		else if (strcmp(key, "relative_path") == 0)
			slot = &k->relative;
		else if (strcmp(key, "absolute_win32_path") == 0)
			slot = &k->absolute;
		if (!slot)
			continue;
		if (*slot)
			return img_err(err, -EINVAL, "%s: parent locator has "
				       "key %s twice", img->path, key);
		value = utf16_to_utf8(buf + voff, vlen / 2);
		if (!value)
			return img_err(err, -ENOMEM, "%s: out of memory",
				       img->path);
		*slot = value;
	}
	if (!k->linkage)
		return img_err(err, -EINVAL, "%s: parent locator has no "
			       "parent_linkage", img->path);
	if (!k->relative && !k->absolute)
		return img_err(err, -EINVAL, "%s: parent locator has neither "
			       "relative_path nor absolute_win32_path",
			       img->path);
	return 0;
}

/* A Windows path as a local one: '\' to '/', a drive letter dropped. */
static void windows_to_local(char *p, bool absolute)
{
	if (absolute && isalpha((unsigned char)p[0]) && p[1] == ':')
		memmove(p, p + 2, strlen(p + 2) + 1);
	for (; *p; p++)
		if (*p == '\\')
			*p = '/';
}

static bool linkage_matches(const char *linkage, const char *guid)
{
	size_t n;

	if (!linkage)
		return false;
	/* Compare without braces, ignoring case. */
	if (*linkage == '{')
		linkage++;
	n = strlen(linkage);
	if (n && linkage[n - 1] == '}')
		n--;
	return n == 36 && strncasecmp(linkage, guid + 1, 36) == 0;
}

static int open_parent(struct img *img, struct vhdx_state *s,
		       const struct meta_item *it, struct img_err *err)
{
	struct parent_keys k = { 0 };
	struct img *parent = NULL;
	const char *tried;
	char guid[39];
	int ret = -ENOENT;

	ret = parse_locator(img, s, it, &k, err);
	if (ret < 0)
		goto out;
	ret = -ENOENT;
	if (k.relative) {
		windows_to_local(k.relative, false);
		tried = k.relative;
		ret = img_open_backing(img, k.relative, IMG_FORMAT_VHDX,
				       &parent, err);
	}
	if (ret == -ENOENT && k.absolute) {
		windows_to_local(k.absolute, true);
		tried = k.absolute;
		ret = img_open_backing(img, k.absolute, IMG_FORMAT_VHDX,
				       &parent, err);
	}
	if (ret < 0)
		goto out;
	guid_format(vhdx_state(parent)->data_write_guid, guid);
	if (!linkage_matches(k.linkage, guid) &&
	    !linkage_matches(k.linkage2, guid)) {
		ret = img_err(err, -EINVAL, "%s: parent %s has data write "
			      "GUID %s, not the parent_linkage %s this image "
			      "was made from", img->path, parent->path, guid,
			      k.linkage);
		img_close(parent);
		goto out;
	}
	img->backing = parent;
	s->parent_name = strdup(tried);
	s->parent_linkage = TAKE_PTR(k.linkage);
	if (!s->parent_name)
		ret = img_err(err, -ENOMEM, "%s: out of memory", img->path);
out:
	parent_keys_free(&k);
	return ret;
}

static int open_metadata(struct img *img, struct vhdx_state *s,
			 struct meta_item *locator_r, struct img_err *err)
{
	static const struct {
		const uint8_t *guid;
		const char *name;
	} known[] = {
		{ guid_file_params, "file parameters" },
		{ guid_disk_size, "virtual disk size" },
		{ guid_page83, "page 83 data" },
		{ guid_logical_sector, "logical sector size" },
		{ guid_physical_sector, "physical sector size" },
		{ guid_parent_locator, "parent locator" },
	};
	struct meta_item items[6] = { { 0 } };
	CLEANUP_FREE uint8_t *tab = NULL;
	uint8_t b8[8];
	uint64_t vsize;
	uint32_t nb, bits;
	int ret;

	if (s->meta_region_bytes < VHDX_META_TABLE_BYTES)
		return img_err(err, -EINVAL, "%s: metadata region of 0x%"
			       PRIx64 " bytes cannot hold its 64 KiB table",
			       img->path, s->meta_region_bytes);
	tab = malloc(VHDX_META_TABLE_BYTES);
	if (!tab)
		return img_err(err, -ENOMEM, "%s: out of memory", img->path);
	ret = vhdx_read_file(img, tab, VHDX_META_TABLE_BYTES, s->meta_off);
	if (ret < 0)
		return img_err(err, ret, "%s: cannot read the metadata table: "
			       "%s", img->path, strerror(-ret));
	if (memcmp(tab, "metadata", 8) != 0)
		return img_err(err, -EINVAL, "%s: metadata table has a bad "
			       "signature", img->path);
	nb = get_le16(tab + 10);
	if (nb > VHDX_META_MAX_ENTRIES)
		return img_err(err, -EINVAL, "%s: metadata table claims %"
			       PRIu32 " entries (at most 2047)", img->path,
			       nb);
	for (uint32_t i = 0; i < nb; i++) {
		const uint8_t *e = tab + 32 + 32 * (size_t)i;
		uint32_t off = get_le32(e + 16), len = get_le32(e + 20);
		uint32_t flags = get_le32(e + 24);
		size_t j;

		for (j = 0; j < 6; j++)
			if (memcmp(e, known[j].guid, 16) == 0)
				break;
		if (j == 6) {
			if (flags & META_REQUIRED) {
				char g[39];

				guid_format(e, g);
				return img_err(err, -EINVAL, "%s: metadata "
					       "item %s is required but "
					       "unknown", img->path, g);
			}
			continue;
		}
		if (items[j].present)
			return img_err(err, -EINVAL, "%s: metadata item %s "
				       "appears twice", img->path,
				       known[j].name);
		if (len > VHDX_META_ITEM_MAX_BYTES ||
		    off < VHDX_META_TABLE_BYTES ||
		    !range_within(off, len, s->meta_region_bytes))
			return img_err(err, -EINVAL, "%s: metadata item %s at "
				       "0x%" PRIx32 " (%" PRIu32 " bytes) lies "
				       "outside the metadata region",
				       img->path, known[j].name, off, len);
		items[j] = (struct meta_item){ true, off, len };
	}
	for (size_t j = 0; j < 5; j++)
		if (!items[j].present)
			return img_err(err, -EINVAL, "%s: metadata item %s is "
				       "missing", img->path, known[j].name);

	ret = read_item(img, s, &items[0], known[0].name, 8, b8, err);
	if (ret < 0)
		return ret;
	s->block_bytes = get_le32(b8);
	bits = get_le32(b8 + 4);
	s->leave_allocated = bits & PARAM_LEAVE_ALLOCATED;
	s->has_parent = bits & PARAM_HAS_PARENT;
	ret = read_item(img, s, &items[1], known[1].name, 8, b8, err);
	if (ret < 0)
		return ret;
	vsize = get_le64(b8);
	ret = read_item(img, s, &items[2], known[2].name, 16, s->page83,
			err);
	if (ret < 0)
		return ret;
	ret = read_item(img, s, &items[3], known[3].name, 4, b8, err);
	if (ret < 0)
		return ret;
	s->logical_sector_bytes = get_le32(b8);
	ret = read_item(img, s, &items[4], known[4].name, 4, b8, err);
	if (ret < 0)
		return ret;
	s->physical_sector_bytes = get_le32(b8);

	if (s->block_bytes < VHDX_BLOCK_MIN_BYTES ||
	    s->block_bytes > VHDX_BLOCK_MAX_BYTES ||
	    (s->block_bytes & (s->block_bytes - 1)))
		return img_err(err, -EINVAL, "%s: block size %" PRIu32 " is "
			       "not a power of two from 1 MiB to 256 MiB",
			       img->path, s->block_bytes);
	if (s->logical_sector_bytes != 512 && s->logical_sector_bytes != 4096)
		return img_err(err, -EINVAL, "%s: logical sector size %" PRIu32
			       " is not 512 or 4096", img->path,
			       s->logical_sector_bytes);
	if (s->physical_sector_bytes != 512 &&
	    s->physical_sector_bytes != 4096)
		return img_err(err, -EINVAL, "%s: physical sector size %"
			       PRIu32 " is not 512 or 4096", img->path,
			       s->physical_sector_bytes);
	if (vsize > VHDX_MAX_VIRTUAL_BYTES)
		return img_err(err, -EINVAL, "%s: virtual disk size %" PRIu64
			       " is larger than 64 TiB", img->path, vsize);
	s->block_bits = (unsigned)__builtin_ctz(s->block_bytes);
	s->sector_bits = (unsigned)__builtin_ctz(s->logical_sector_bytes);
	img->size = vsize & ~((uint64_t)s->logical_sector_bytes - 1);
	if (s->has_parent && !items[5].present)
		return img_err(err, -EINVAL, "%s: a differencing image (has "
			       "parent) without a parent locator", img->path);
	*locator_r = items[5];
	return 0;
}

/* ---- BAT ---- */

/* Where payload entry i's needed bytes lie, or false when they may not
 * be read (first 1 MiB, a region, past the end of the file). */
static bool data_range_ok(const struct vhdx_state *s, uint64_t host,
			  uint64_t len)
{
	return host >= VHDX_HEADER_SECTION_BYTES &&
	       range_within(host, len, s->eff_file_bytes) &&
	       !region_overlaps(s, host, host + len);
}

static int open_bat(struct img *img, struct vhdx_state *s,
		    struct img_err *err)
{
	uint64_t bat_bytes, cr = s->chunk_ratio;
	int ret;

	s->nb_data_blocks = div_round_up(img->size, s->block_bytes);
	s->nb_bitmap_blocks = div_round_up(s->nb_data_blocks, cr);
	if (s->has_parent)
		s->nb_bat_entries = s->nb_bitmap_blocks * (cr + 1);
	else
		s->nb_bat_entries = s->nb_data_blocks +
				    (s->nb_data_blocks ? (s->nb_data_blocks - 1) / cr
						       : 0);
	bat_bytes = s->nb_bat_entries * 8;
	if (bat_bytes > s->bat_region_bytes)
		return img_err(err, -EINVAL, "%s: BAT region of 0x%" PRIx64
			       " bytes cannot hold the %" PRIu64 " entries a "
			       "%" PRIu64 "-byte disk needs", img->path,
			       s->bat_region_bytes, s->nb_bat_entries,
			       img->size);
	if (bat_bytes > VHDX_MAX_BAT_BYTES)
		return img_err(err, -EINVAL, "%s: BAT of %" PRIu64 " MiB is "
			       "larger than imgfs loads (%" PRIu64 " MiB)", img->path,
			       bat_bytes / VHDX_MiB, VHDX_MAX_BAT_BYTES / VHDX_MiB);
	s->bat = malloc(bat_bytes ? bat_bytes : 8);
	if (!s->bat)
		return img_err(err, -ENOMEM, "%s: out of memory for a %" PRIu64
			       "-byte BAT", img->path, bat_bytes);
	ret = vhdx_read_file(img, s->bat, bat_bytes, s->bat_off);
	if (ret < 0)
		return img_err(err, ret, "%s: cannot read the BAT: %s",
			       img->path, strerror(-ret));
	for (uint64_t i = 0; i < s->nb_bat_entries; i++) {
		uint64_t e = le64toh(s->bat[i]);
		uint64_t state = e & VHDX_BAT_STATE_MASK;
		uint64_t host = e & VHDX_BAT_OFF_MASK;
		bool bitmap = i % (cr + 1) == cr;

		if (bitmap) {
			if (state == VHDX_SB_PRESENT &&
			    !data_range_ok(s, host, VHDX_BITMAP_BLOCK_BYTES))
				e = VHDX_PAYLOAD_BAD;
		} else if (state == VHDX_PAYLOAD_FULLY_PRESENT ||
			   state == VHDX_PAYLOAD_PARTIALLY_PRESENT) {
			uint64_t blk = i - i / (cr + 1);
			uint64_t need = MIN((uint64_t)s->block_bytes,
					    img->size - MIN(img->size,
						blk << s->block_bits));

			if (!data_range_ok(s, host, need))
				e = VHDX_PAYLOAD_BAD;
		}
		s->bat[i] = e;
	}
	return 0;
}

/* ---- open / close ---- */

static void vhdx_close(struct img *img)
{
	struct vhdx_state *s = vhdx_state(img);

	if (!s)
		return;
	free(s->bat);
	free(s->regions);
	vhdx_overlay_free(&s->overlay);
	free(s->parent_name);
	free(s->parent_linkage);
	free(s);
	img->priv = NULL;
}

static int vhdx_open(struct img *img, struct img_err *err)
{
	struct vhdx_state *s;
	struct meta_item locator;
	uint8_t sig[8];
	int ret;

	s = calloc(1, sizeof(*s));
	if (!s)
		return img_err(err, -ENOMEM, "%s: out of memory", img->path);
	img->priv = s;
	ret = file_size(img, &s->file_bytes, err);
	if (ret < 0)
		return ret;
	s->eff_file_bytes = s->file_bytes;
	ret = full_pread_zero_eof(img->fd, sig, sizeof(sig), 0);
	if (ret < 0)
		return img_err(err, ret, "%s: cannot read: %s", img->path,
			       strerror(-ret));
	if (memcmp(sig, "vhdxfile", 8) != 0)
		return img_err(err, -EINVAL, "%s: not a VHDX image (no "
			       "\"vhdxfile\" signature)", img->path);
	ret = open_headers(img, s, err);
	if (ret < 0)
		return ret;
	ret = vhdx_log_replay(img, s, err);
	if (ret < 0)
		return ret;
	/* The replayed log may have extended the file (QEMU truncates it
	 * up to the entries' last file offset): those bytes read as zero. */
	if (s->overlay.nb_log_entries) {
		s->eff_file_bytes = MAX(s->file_bytes, s->overlay.hi);
		s->eff_file_bytes = MAX(s->eff_file_bytes,
					align_up(s->overlay.last_file_off,
						 VHDX_MiB));
	}
	ret = open_regions(img, s, err);
	if (ret < 0)
		return ret;
	ret = open_metadata(img, s, &locator, err);
	if (ret < 0)
		return ret;
	s->chunk_ratio = (VHDX_SECTORS_PER_BITMAP * s->logical_sector_bytes) /
			 s->block_bytes;
	ret = open_bat(img, s, err);
	if (ret < 0)
		return ret;
	snprintf(s->subformat, sizeof(s->subformat), "%s",
		 s->has_parent ? "differencing"
		 : s->leave_allocated ? "fixed" : "dynamic");
	if (s->has_parent) {
		ret = open_parent(img, s, &locator, err);
		if (ret < 0)
			return ret;
	}
	return 0;
}

/* ---- reads ---- */

enum vhdx_run_kind {
	VHDX_RUN_DATA,
	VHDX_RUN_ZERO,
	VHDX_RUN_PARENT,
};

struct vhdx_run {
	enum vhdx_run_kind kind;
	uint64_t len;
	uint64_t host_off; /* DATA */
};

/* How one payload entry reads, for states that need no file offset;
 * -EIO for bad ones, 1 for FULLY_PRESENT, 2 for PARTIALLY_PRESENT. */
static int classify(const struct vhdx_state *s, uint64_t e,
		    enum vhdx_run_kind *kind_r)
{
	switch (e & VHDX_BAT_STATE_MASK) {
	case VHDX_PAYLOAD_NOT_PRESENT:
	case VHDX_PAYLOAD_UNDEFINED:
		*kind_r = s->has_parent ? VHDX_RUN_PARENT : VHDX_RUN_ZERO;
		return 0;
	case VHDX_PAYLOAD_ZERO:
	case VHDX_PAYLOAD_UNMAPPED:
	case VHDX_PAYLOAD_UNMAPPED_V095:
		*kind_r = VHDX_RUN_ZERO;
		return 0;
	case VHDX_PAYLOAD_FULLY_PRESENT:
		*kind_r = VHDX_RUN_DATA;
		return 1;
	case VHDX_PAYLOAD_PARTIALLY_PRESENT:
		if (!s->has_parent)
			return -EIO;
		return 2;
	default:
		return -EIO;
	}
}

static uint64_t bat_payload(const struct vhdx_state *s, uint64_t blk)
{
	return s->bat[blk + blk / s->chunk_ratio];
}

/* Bytes of one chunk's sector bitmap held for the length of one request
 * (one vhdx_pread or block status call, on its stack): a request over a
 * partially present block reads the bitmap once, not once per run of
 * sectors. At most VHDX_BITS_WINDOW bytes (32768 sectors: 16 MiB of disk
 * with 512-byte sectors, 128 MiB with 4 KiB ones); a longer request
 * reads it again past that. Nothing is kept between requests. */
#define VHDX_BITS_WINDOW 4096u

struct vhdx_bits {
	uint64_t chunk;
	uint64_t byte0; /* first bitmap byte held, from the chunk's start */
	size_t nbytes;  /* 0: nothing held */
	uint8_t b[VHDX_BITS_WINDOW];
};

/* Makes bits hold bitmap bytes first / 8 .. last / 8 of chunk (sector
 * indexes within the chunk), reading from first / 8 up to the sector
 * want_last (the request's last one in this chunk) as far as the window
 * goes. */
static int load_bits(struct img *img, const struct vhdx_state *s,
		     uint64_t chunk, uint64_t first, uint64_t last,
		     uint64_t want_last, struct vhdx_bits *bits)
{
	uint64_t sb = s->bat[chunk * (s->chunk_ratio + 1) + s->chunk_ratio];
	uint64_t byte0 = first / 8;
	/* want_last < 2^23: inside the 1 MiB bitmap block open checked. */
	size_t n = (size_t)MIN(want_last / 8 - byte0 + 1,
			       (uint64_t)VHDX_BITS_WINDOW);
	int ret;

	if (bits->nbytes && bits->chunk == chunk && byte0 >= bits->byte0 &&
	    last / 8 < bits->byte0 + bits->nbytes)
		return 0;
	if ((sb & VHDX_BAT_STATE_MASK) != VHDX_SB_PRESENT)
		return -EIO;
	bits->nbytes = 0;
	ret = vhdx_read_file(img, bits->b, n, (sb & VHDX_BAT_OFF_MASK) + byte0);
	if (ret < 0)
		return ret;
	bits->chunk = chunk;
	bits->byte0 = byte0;
	bits->nbytes = n;
	return 0;
}

/* The run of a PARTIALLY_PRESENT block from in_blk, at most avail bytes
 * (inside the block): sectors whose bitmap bit equals the first one's.
 * want is what is left of the request from there, to size the bitmap
 * read for the blocks after this one. */
static int map_partial(struct img *img, const struct vhdx_state *s,
		       uint64_t blk, uint64_t in_blk, uint64_t avail,
		       uint64_t want, uint64_t e, struct vhdx_bits *bits,
		       struct vhdx_run *run)
{
	uint64_t cr = s->chunk_ratio;
	uint64_t chunk = blk / cr;
	unsigned spb_bits = s->block_bits - s->sector_bits;
	uint64_t in_sec = in_blk >> s->sector_bits;
	/* Sector indexes within the chunk (2^23 sectors each): the first
	 * and last of this block's part, the request's last in the chunk. */
	uint64_t first = ((blk % cr) << spb_bits) + in_sec;
	uint64_t last = first + ((in_blk + avail - 1) >> s->sector_bits) -
			in_sec;
	uint64_t want_last = MIN(first + ((in_blk + want - 1) >>
					  s->sector_bits) - in_sec,
				 (cr << spb_bits) - 1);
	uint64_t n, k;
	bool set;
	int ret;

	ret = load_bits(img, s, chunk, first, last, want_last, bits);
	if (ret < 0)
		return ret;
	last = MIN(last, (bits->byte0 + bits->nbytes) * 8 - 1);
#define BYTE(sec) (bits->b[(sec) / 8 - bits->byte0])
	set = (BYTE(first) >> (first % 8)) & 1;
	for (k = first + 1; k <= last; k++) {
		/* Whole bytes of the same bit at once. */
		if (k % 8 == 0 && k + 7 <= last &&
		    BYTE(k) == (set ? 0xff : 0)) {
			k += 7;
			continue;
		}
		if (((BYTE(k) >> (k % 8)) & 1) != set)
			break;
	}
#undef BYTE
	/* Bytes from in_blk to the end of sector k - 1. */
	n = ((k - first + in_sec) << s->sector_bits) - in_blk;
	run->len = MIN(n, avail);
	if (set) {
		run->kind = VHDX_RUN_DATA;
		run->host_off = (e & VHDX_BAT_OFF_MASK) + in_blk;
	} else {
		run->kind = VHDX_RUN_PARENT;
	}
	return 0;
}

/* The run at in_blk of block blk, at most want bytes, inside the block. */
static int block_run(struct img *img, const struct vhdx_state *s,
		     uint64_t blk, uint64_t in_blk, uint64_t want,
		     struct vhdx_bits *bits, struct vhdx_run *run)
{
	uint64_t avail = MIN(want, s->block_bytes - in_blk);
	uint64_t e = bat_payload(s, blk);
	enum vhdx_run_kind kind;
	int c = classify(s, e, &kind);

	if (c < 0)
		return c;
	if (c == 2)
		return map_partial(img, s, blk, in_blk, avail, want, e, bits,
				   run);
	run->kind = kind;
	run->len = avail;
	if (kind == VHDX_RUN_DATA)
		run->host_off = (e & VHDX_BAT_OFF_MASK) + in_blk;
	return 0;
}

/* Describes the run at off, at most len bytes: while a run reaches the
 * end of its block, it goes on with the next block's first run when that
 * reads the same way (and, for data, lies right after it in the file),
 * partially present blocks included, so a read is one pread per run and
 * block status answers as much as one splice can take. A block that
 * cannot be mapped ends the run before it; the next call reports it. */
static int vhdx_map(struct img *img, uint64_t off, uint64_t len,
		    struct vhdx_bits *bits, struct vhdx_run *run)
{
	const struct vhdx_state *s = vhdx_state(img);
	int ret = block_run(img, s, off >> s->block_bits,
			    off & (s->block_bytes - 1), len, bits, run);

	if (ret < 0)
		return ret;
	while (run->len < len &&
	       ((off + run->len) & (s->block_bytes - 1)) == 0) {
		struct vhdx_run next;

		if (block_run(img, s, (off + run->len) >> s->block_bits, 0,
			      len - run->len, bits, &next) < 0 ||
		    next.kind != run->kind)
			break;
		if (run->kind == VHDX_RUN_DATA &&
		    next.host_off != run->host_off + run->len)
			break;
		run->len += next.len;
	}
	return 0;
}

static int vhdx_pread(struct img *img, void *buf, size_t len, uint64_t off)
{
	struct vhdx_bits bits;
	uint8_t *p = buf;

	bits.nbytes = 0;
	while (len > 0) {
		struct vhdx_run run;
		size_t n;
		int ret = vhdx_map(img, off, len, &bits, &run);

		if (ret < 0)
			return ret;
		n = (size_t)run.len;
		switch (run.kind) {
		case VHDX_RUN_DATA:
			ret = vhdx_read_file(img, p, n, run.host_off);
			break;
		case VHDX_RUN_ZERO:
			memset(p, 0, n);
			break;
		case VHDX_RUN_PARENT:
			ret = img_read_backing(img, p, n, off);
			break;
		}
		if (ret < 0)
			return ret;
		p += n;
		off += n;
		len -= n;
	}
	return 0;
}

static int vhdx_block_status(struct img *img, uint64_t off, uint64_t len,
			     struct img_extent *ext_r)
{
	const struct vhdx_state *s = vhdx_state(img);
	struct vhdx_bits bits;
	struct vhdx_run run;
	int ret;

	bits.nbytes = 0;
	ret = vhdx_map(img, off, len, &bits, &run);

	if (ret < 0)
		return ret;
	ext_r->len = run.len;
	ext_r->host_fd = -1;
	switch (run.kind) {
	case VHDX_RUN_DATA:
		ext_r->kind = IMG_EXTENT_DATA;
		/* Bytes the log replaced, or past the real end of the file,
		 * are not in the file as they read. */
		if (!vhdx_overlay_touches(&s->overlay, run.host_off, run.len) &&
		    range_within(run.host_off, run.len, s->file_bytes)) {
			ext_r->host_fd = img->fd;
			ext_r->host_off = run.host_off;
		}
		break;
	case VHDX_RUN_ZERO:
		ext_r->kind = IMG_EXTENT_ZERO;
		break;
	case VHDX_RUN_PARENT:
		ext_r->kind = IMG_EXTENT_UNALLOCATED;
		break;
	}
	return 0;
}

static int vhdx_get_info(struct img *img, struct img_info *info)
{
	const struct vhdx_state *s = vhdx_state(img);
	char g[39];

	info->format = "vhdx";
	info->cluster_size = s->block_bytes;
	info->backing_file = s->parent_name;
	info->backing_format = s->parent_name ? "vhdx" : NULL;
	img_info_add(info, "subformat", "%s", s->subformat);
	img_info_add(info, "block-size", "%" PRIu32, s->block_bytes);
	img_info_add(info, "logical-sector-size", "%" PRIu32,
		     s->logical_sector_bytes);
	img_info_add(info, "physical-sector-size", "%" PRIu32,
		     s->physical_sector_bytes);
	if (s->overlay.nb_log_entries)
		img_info_add(info, "log", "%zu entries replayed in memory "
			     "(last sequence number %" PRIu64 "); the file "
			     "is unchanged", s->overlay.nb_log_entries,
			     s->overlay.last_seq);
	else
		img_info_add(info, "log", "empty");
	guid_format(s->data_write_guid, g);
	img_info_add(info, "data-write-guid", "%s", g);
	if (s->parent_linkage)
		img_info_add(info, "parent-linkage", "%s", s->parent_linkage);
	return 0;
}

const struct img_ops img_vhdx_ops = {
	.name         = "vhdx",
	.probe        = vhdx_probe,
	.open         = vhdx_open,
	.close        = vhdx_close,
	.pread        = vhdx_pread,
	.block_status = vhdx_block_status,
	.get_info     = vhdx_get_info,
};
