/* vpc.c: the VHD driver ("vpc", as QEMU names it), read-only.
 *
 * Layout (Microsoft's "Virtual Hard Disk Image Format Specification"):
 * every VHD ends with a 512-byte big-endian footer ("conectix"). A fixed
 * disk is the raw disk followed by that footer. A dynamic or differencing
 * disk starts with a copy of the footer, whose data_offset points at a
 * 1024-byte dynamic header ("cxsparse") naming the block size and the
 * block allocation table (BAT): one 32-bit sector number per block, or
 * 0xFFFFFFFF for a block not stored. A stored block is a sector bitmap
 * (one bit per sector, most significant bit first) followed by the
 * block's data. A differencing disk also names its parent (UUID, name and
 * up to eight platform-specific locators).
 *
 * What this file matches QEMU on (block/vpc.c, the oracle of the tests):
 * - The footer is read at offset 0; only when that is not a footer is the
 *   last sector used, and then it must say "fixed". Its checksum (ones'
 *   complement of the byte sum) must match: QEMU refuses a bad one and
 *   does not fall back to the other copy, and so do we.
 * - The virtual size is cylinders * heads * sectors of the CHS geometry,
 *   except for creators that size by current_size ("win ", "qem2", "d2v ",
 *   "CTXS", "tap\0"), and except when the geometry is the maximum one;
 *   then it is current_size rounded down to a sector. More than
 *   VPC_MAX_SECTORS is refused, as QEMU does.
 * - In a dynamic disk a stored block reads whole from the file, bitmap
 *   ignored (QEMU writes all-ones bitmaps), and a block not stored reads
 *   as zeroes; block status says DATA and ZERO (qemu-img map's
 *   "zero": true, "data": false for the latter).
 * Beyond QEMU (which has no differencing support): in a differencing
 * disk a sector whose bitmap bit is clear, or in a block not stored,
 * comes from the parent, opened with img_open_backing under the backing=
 * policy; block status says IMG_EXTENT_UNALLOCATED there. Parents are
 * found through the locators Hyper-V, Virtual PC and VirtualBox write:
 * W2ru (relative) then W2ku (absolute) as UTF-16LE, then MacX (a UTF-8
 * file URL), then the parent's Unicode name in the child's folder.
 *
 * Hostile input: every field is checked at open (checksums, offsets and
 * lengths against the file size, block size a power of two between 512 B
 * and VPC_MAX_BLOCK_BYTES, the BAT covering the disk and at most
 * VPC_MAX_BAT_BYTES, locator lengths). A BAT entry whose block lies past
 * the end of the file makes reads and block status of that block alone
 * fail with -EIO. The dynamic header's checksum is checked too (QEMU
 * ignores it); a bad one is refused.
 *
 * Threads: the BAT is read once at open and never changes. Sector bitmaps
 * of a differencing disk are cached per block in a small LRU under
 * s->lock; data reads take no lock.
 *
 * Not done: writing (the dispatcher makes the handle read-only), the Mac
 * alias locator ("Mac "), and batch/split VHD variants nobody writes.
 */
#include "imgfmt-int.h"

#include "checked.h"
#include "cleanup.h"
#include "endian.h"
#include "io.h"

#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#define VPC_SECTOR 512u
#define VPC_FOOTER_BYTES 512u
#define VPC_DYN_HEADER_BYTES 1024u
#define VPC_BAT_UNUSED 0xFFFFFFFFu
/* QEMU's limits: 2040 GiB, and the largest CHS geometry. */
#define VPC_MAX_SECTORS 0xff000000ull
#define VPC_MAX_GEOMETRY (65535ull * 16 * 255)
#define VPC_MAX_BLOCK_BYTES (256u << 20)
#define VPC_MAX_BAT_BYTES (256ull << 20)
#define VPC_MAX_LOCATOR_BYTES (64u << 10)
#define VPC_NB_LOCATORS 8

enum vpc_type {
	VPC_FIXED = 2,
	VPC_DYNAMIC = 3,
	VPC_DIFF = 4,
};

/* Footer fields (big-endian), offsets in the 512-byte footer. */
#define FOOT_COOKIE 0
#define FOOT_DATA_OFFSET 16
#define FOOT_CREATOR_APP 28
#define FOOT_CURRENT_SIZE 48
#define FOOT_CYLS 56
#define FOOT_HEADS 58
#define FOOT_SECS 59
#define FOOT_TYPE 60
#define FOOT_CHECKSUM 64
#define FOOT_UUID 68

/* Dynamic header fields. */
#define DYN_COOKIE 0
#define DYN_TABLE_OFFSET 16
#define DYN_MAX_ENTRIES 28
#define DYN_BLOCK_SIZE 32
#define DYN_CHECKSUM 36
#define DYN_PARENT_UUID 40
#define DYN_PARENT_NAME 64
#define DYN_PARENT_NAME_BYTES 512
#define DYN_LOCATORS 576
#define DYN_LOCATOR_BYTES 24

struct vpc_bitmap_slot {
	uint64_t block;
	uint64_t stamp;
	bool valid;
	uint8_t *bits;
};

/* Locking: the fields above lock are set by vpc_open and only read
 * afterwards, with no lock; the bitmap cache below it is guarded by it. */
struct vpc_state {
	enum vpc_type type;
	uint64_t file_size;
	uint32_t block_size;
	unsigned block_shift;
	uint32_t bitmap_bytes;
	uint64_t nb_blocks;
	uint32_t *bat; /* nb_blocks entries, host order; NULL when fixed */
	uint8_t uuid[16];
	char creator_app[5];
	char *parent_name; /* the locator that was used, or NULL */

	pthread_mutex_t lock; /* guards the bitmap cache below */
	struct vpc_bitmap_slot *slots;
	size_t nb_slots;
	uint64_t clock;
};

/* Ones' complement of the byte sum, the checksum field counted as 0. */
static uint32_t vpc_checksum(const uint8_t *buf, size_t len, size_t ck_off)
{
	uint32_t sum = 0;

	for (size_t i = 0; i < len; i++)
		if (i < ck_off || i >= ck_off + 4)
			sum += buf[i];
	return ~sum;
}

static bool vpc_is_footer(const uint8_t *buf)
{
	return memcmp(buf + FOOT_COOKIE, "conectix", 8) == 0;
}

static int vpc_probe(const uint8_t *head, size_t len)
{
	return len >= VPC_FOOTER_BYTES && vpc_is_footer(head) ? 100 : 0;
}

/* The footer of a fixed disk is only at the end. Any "conectix" there
 * counts, so that a probed raw image is never written to look like one
 * (raw.c's rule), but less than a signature at the start: a qcow2 or VDI
 * whose last sector happens to hold a VHD footer (guest data) stays what
 * its head says. */
static int vpc_probe_tail(const uint8_t *tail, size_t len)
{
	return len >= 8 && memcmp(tail, "conectix", 8) == 0 ? 50 : 0;
}

/* QEMU's rule for the virtual size (see the top of the file). */
static uint64_t vpc_size_sectors(const uint8_t *foot)
{
	static const char *const by_size[] = { "win ", "qem2", "d2v ",
					       "CTXS" };
	uint64_t chs = (uint64_t)get_be16(foot + FOOT_CYLS) *
		       foot[FOOT_HEADS] * foot[FOOT_SECS];
	bool use_chs = memcmp(foot + FOOT_CREATOR_APP, "tap\0", 4) != 0;

	for (size_t i = 0; i < sizeof(by_size) / sizeof(by_size[0]); i++)
		if (memcmp(foot + FOOT_CREATOR_APP, by_size[i], 4) == 0)
			use_chs = false;
	if (!use_chs || chs == VPC_MAX_GEOMETRY)
		return get_be64(foot + FOOT_CURRENT_SIZE) / VPC_SECTOR;
	return chs;
}

/* Appends the UTF-8 encoding of cp to out (which has room for 4). */
static size_t utf8_put(char *out, uint32_t cp)
{
	if (cp < 0x80) {
		out[0] = (char)cp;
		return 1;
	}
	if (cp < 0x800) {
		out[0] = (char)(0xc0 | cp >> 6);
		out[1] = (char)(0x80 | (cp & 0x3f));
		return 2;
	}
	if (cp < 0x10000) {
		out[0] = (char)(0xe0 | cp >> 12);
		out[1] = (char)(0x80 | ((cp >> 6) & 0x3f));
		out[2] = (char)(0x80 | (cp & 0x3f));
		return 3;
	}
	out[0] = (char)(0xf0 | cp >> 18);
	out[1] = (char)(0x80 | ((cp >> 12) & 0x3f));
	out[2] = (char)(0x80 | ((cp >> 6) & 0x3f));
	out[3] = (char)(0x80 | (cp & 0x3f));
	return 4;
}

/* UTF-16 (little- or big-endian) up to the first NUL, as UTF-8. NULL on
 * ENOMEM or a lone surrogate. */
static char *utf16_to_utf8(const uint8_t *in, size_t len, bool big)
{
	char *out = malloc(len / 2 * 3 + 1), *p = out;

	if (!out)
		return NULL;
	for (size_t i = 0; i + 1 < len; i += 2) {
		uint32_t cp = big ? get_be16(in + i) : get_le16(in + i);

		if (cp == 0)
			break;
		if (cp >= 0xdc00 && cp < 0xe000)
			goto bad;
		if (cp >= 0xd800 && cp < 0xdc00) {
			uint32_t lo;
			if (i + 3 >= len)
				goto bad;
			lo = big ? get_be16(in + i + 2) : get_le16(in + i + 2);
			if (lo < 0xdc00 || lo >= 0xe000)
				goto bad;
			cp = 0x10000 + ((cp - 0xd800) << 10) + (lo - 0xdc00);
			i += 2;
		}
		p += utf8_put(p, cp);
	}
	*p = '\0';
	return out;
bad:
	free(out);
	return NULL;
}

static int hex_digit(char c)
{
	if (c >= '0' && c <= '9')
		return c - '0';
	if (c >= 'a' && c <= 'f')
		return c - 'a' + 10;
	if (c >= 'A' && c <= 'F')
		return c - 'A' + 10;
	return -1;
}

/* A MacX locator: "file://" + a percent-encoded UTF-8 path. NULL when it
 * is not one. */
static char *file_url_to_path(const uint8_t *in, size_t len)
{
	static const char prefix[] = "file://";
	size_t n = strnlen((const char *)in, len), j = 0;
	char *out;

	if (n < sizeof(prefix) - 1 || memcmp(in, prefix, sizeof(prefix) - 1))
		return NULL;
	out = malloc(n + 1);
	if (!out)
		return NULL;
	for (size_t i = sizeof(prefix) - 1; i < n; i++) {
		int hi, lo;
		if (in[i] == '%' && i + 2 < n &&
		    (hi = hex_digit((char)in[i + 1])) >= 0 &&
		    (lo = hex_digit((char)in[i + 2])) >= 0) {
			out[j++] = (char)(hi << 4 | lo);
			i += 2;
		} else {
			out[j++] = (char)in[i];
		}
	}
	out[j] = '\0';
	/* "file://localhost/x" names /x as well. */
	if (strncmp(out, "localhost/", 10) == 0)
		memmove(out, out + 9, j - 9 + 1);
	return out;
}

/* A Windows path with backslashes; NULL for one with a drive letter or a
 * UNC prefix, which cannot name a file here. */
static char *windows_path(char *p)
{
	if (!p)
		return NULL;
	if ((p[0] && p[1] == ':') || (p[0] == '\\' && p[1] == '\\')) {
		free(p);
		return NULL;
	}
	for (char *q = p; *q; q++)
		if (*q == '\\')
			*q = '/';
	return p;
}

/* Decodes locator i of the dynamic header into a path, or NULL when it is
 * empty or of a kind we do not use. -errno on a locator that is corrupt
 * (data past the end of the file, too long). */
static int vpc_locator_path(struct img *img, struct vpc_state *s,
			    const uint8_t *dyn, const char *code,
			    char **path_r, struct img_err *err)
{
	*path_r = NULL;
	for (unsigned i = 0; i < VPC_NB_LOCATORS; i++) {
		const uint8_t *loc = dyn + DYN_LOCATORS + i * DYN_LOCATOR_BYTES;
		uint32_t len = get_be32(loc + 8);
		uint64_t off = get_be64(loc + 16);
		CLEANUP_FREE uint8_t *data = NULL;
		char *path;
		int ret;

		if (memcmp(loc, code, 4) != 0 || len == 0)
			continue;
		if (len > VPC_MAX_LOCATOR_BYTES)
			return img_err(err, -EINVAL, "%s: parent locator %u "
				       "is %" PRIu32 " bytes long (at most %u)",
				       img->path, i, len, VPC_MAX_LOCATOR_BYTES);
		if (!range_within(off, len, s->file_size))
			return img_err(err, -EINVAL, "%s: parent locator %u "
				       "at 0x%" PRIx64 " (%" PRIu32 " bytes) "
				       "lies past the end of the file",
				       img->path, i, off, len);
		data = calloc(1, (size_t)len + 1);
		if (!data)
			return img_err(err, -ENOMEM, "%s: out of memory",
				       img->path);
		ret = full_pread(img->fd, data, len, off);
		if (ret < 0)
			return img_err(err, ret, "%s: cannot read parent "
				       "locator %u: %s", img->path, i,
				       strerror(-ret));
		if (code[0] == 'W')
			path = windows_path(utf16_to_utf8(data, len, false));
		else
			path = file_url_to_path(data, len);
		if (path && path[0]) {
			*path_r = path;
			return 0;
		}
		free(path);
	}
	return 0;
}

/* Opens the parent of a differencing disk: the first locator that names
 * a file that exists wins; a policy refusal or a broken parent stops the
 * search with that error. */
static int vpc_open_parent(struct img *img, struct vpc_state *s,
			   const uint8_t *dyn, struct img_err *err)
{
	static const char *const codes[] = { "W2ru", "W2ku", "MacX" };
	char *cands[4] = { NULL };
	size_t nb = 0;
	int ret = 0;

	for (size_t i = 0; i < 3; i++) {
		ret = vpc_locator_path(img, s, dyn, codes[i], &cands[nb], err);
		if (ret < 0)
			goto out;
		if (cands[nb])
			nb++;
	}
	/* Last resort: the parent's name, in the child's folder. */
	cands[nb] = utf16_to_utf8(dyn + DYN_PARENT_NAME,
				  DYN_PARENT_NAME_BYTES, true);
	if (cands[nb] && (!cands[nb][0] || strchr(cands[nb], '/'))) {
		free(cands[nb]);
		cands[nb] = NULL;
	}
	if (cands[nb])
		nb++;
	if (nb == 0) {
		ret = img_err(err, -EINVAL, "%s: differencing VHD names no "
			      "parent this host can open", img->path);
		goto out;
	}
	for (size_t i = 0; i < nb; i++) {
		ret = img_open_backing(img, cands[i], IMG_FORMAT_VPC,
				       &img->backing, err);
		if (ret == 0) {
			s->parent_name = cands[i];
			cands[i] = NULL;
			break;
		}
		if (ret != -ENOENT)
			goto out;
	}
	if (ret == -ENOENT) {
		ret = img_err(err, -ENOENT, "%s: parent %s not found",
			      img->path, cands[0]);
		goto out;
	}
	/* The parent must be the disk this one was made from. */
	if (img->backing->ops == &img_vpc_ops) {
		const struct vpc_state *ps = img->backing->priv;
		if (memcmp(ps->uuid, dyn + DYN_PARENT_UUID, 16) != 0)
			ret = img_err(err, -EINVAL, "%s: parent %s has another "
				      "UUID than the one this differencing "
				      "disk was made from", img->path,
				      s->parent_name);
	}
out:
	for (size_t i = 0; i < 4; i++)
		free(cands[i]);
	return ret;
}

/* Reads and checks the dynamic header and the BAT. */
static int vpc_open_dynamic(struct img *img, struct vpc_state *s,
			    uint64_t dyn_off, struct img_err *err)
{
	uint8_t dyn[VPC_DYN_HEADER_BYTES];
	uint64_t table_off, bat_bytes;
	uint32_t max_entries, ck;
	int ret;

	if (dyn_off < VPC_FOOTER_BYTES ||
	    !range_within(dyn_off, sizeof(dyn), s->file_size))
		return img_err(err, -EINVAL, "%s: dynamic header at 0x%" PRIx64
			       " lies past the end of the file", img->path,
			       dyn_off);
	ret = full_pread(img->fd, dyn, sizeof(dyn), dyn_off);
	if (ret < 0)
		return img_err(err, ret, "%s: cannot read the dynamic header: "
			       "%s", img->path, strerror(-ret));
	if (memcmp(dyn + DYN_COOKIE, "cxsparse", 8) != 0)
		return img_err(err, -EINVAL, "%s: no dynamic header "
			       "(\"cxsparse\") at 0x%" PRIx64, img->path,
			       dyn_off);
	ck = get_be32(dyn + DYN_CHECKSUM);
	if (vpc_checksum(dyn, sizeof(dyn), DYN_CHECKSUM) != ck)
		return img_err(err, -EINVAL, "%s: dynamic header checksum "
			       "0x%08" PRIx32 " is wrong", img->path, ck);

	s->block_size = get_be32(dyn + DYN_BLOCK_SIZE);
	if (s->block_size < VPC_SECTOR || s->block_size > VPC_MAX_BLOCK_BYTES ||
	    (s->block_size & (s->block_size - 1)))
		return img_err(err, -EINVAL, "%s: block size %" PRIu32 " is "
			       "not a power of two between 512 and %u",
			       img->path, s->block_size, VPC_MAX_BLOCK_BYTES);
	s->block_shift = (unsigned)__builtin_ctz(s->block_size);
	s->bitmap_bytes = (uint32_t)align_up(s->block_size / VPC_SECTOR / 8,
					     VPC_SECTOR);
	s->nb_blocks = div_round_up(img->size, s->block_size);
	max_entries = get_be32(dyn + DYN_MAX_ENTRIES);
	if (max_entries < s->nb_blocks)
		return img_err(err, -EINVAL, "%s: BAT has %" PRIu32 " entries "
			       "but the disk needs %" PRIu64, img->path,
			       max_entries, s->nb_blocks);
	bat_bytes = s->nb_blocks * 4;
	if (bat_bytes > VPC_MAX_BAT_BYTES)
		return img_err(err, -EINVAL, "%s: BAT of %" PRIu64 " bytes is "
			       "larger than the %llu imgfs reads", img->path,
			       bat_bytes, VPC_MAX_BAT_BYTES);
	table_off = get_be64(dyn + DYN_TABLE_OFFSET);
	if (!range_within(table_off, bat_bytes, s->file_size))
		return img_err(err, -EINVAL, "%s: BAT at 0x%" PRIx64 " (%"
			       PRIu64 " bytes) lies past the end of the file",
			       img->path, table_off, bat_bytes);
	s->bat = malloc(bat_bytes ? (size_t)bat_bytes : 1);
	if (!s->bat)
		return img_err(err, -ENOMEM, "%s: out of memory for the BAT",
			       img->path);
	ret = full_pread(img->fd, s->bat, (size_t)bat_bytes, table_off);
	if (ret < 0)
		return img_err(err, ret, "%s: cannot read the BAT: %s",
			       img->path, strerror(-ret));
	for (uint64_t i = 0; i < s->nb_blocks; i++)
		s->bat[i] = be32toh(s->bat[i]);

	if (s->type == VPC_DIFF) {
		size_t per = s->bitmap_bytes;
		s->nb_slots = MAX((size_t)4, MIN((size_t)64,
						 img->opts.cache_bytes / per));
		s->slots = calloc(s->nb_slots, sizeof(*s->slots));
		if (!s->slots)
			return img_err(err, -ENOMEM, "%s: out of memory",
				       img->path);
		for (size_t i = 0; i < s->nb_slots; i++) {
			s->slots[i].bits = malloc(per);
			if (!s->slots[i].bits)
				return img_err(err, -ENOMEM, "%s: out of "
					       "memory", img->path);
		}
		return vpc_open_parent(img, s, dyn, err);
	}
	return 0;
}

static void vpc_close(struct img *img)
{
	struct vpc_state *s = img->priv;

	if (!s)
		return;
	for (size_t i = 0; s->slots && i < s->nb_slots; i++)
		free(s->slots[i].bits);
	free(s->slots);
	free(s->bat);
	free(s->parent_name);
	pthread_mutex_destroy(&s->lock);
	free(s);
	img->priv = NULL;
}

static int vpc_open(struct img *img, struct img_err *err)
{
	uint8_t foot[VPC_FOOTER_BYTES];
	struct vpc_state *s;
	uint64_t sectors;
	struct stat st;
	uint32_t type, ck;
	bool at_end = false;
	int ret;

	if (fstat(img->fd, &st) < 0)
		return img_err(err, -errno, "%s: %s", img->path,
			       strerror(errno));
	if (st.st_size < (off_t)VPC_FOOTER_BYTES)
		return img_err(err, -EINVAL, "%s: too small for a VHD footer "
			       "(%lld bytes)", img->path,
			       (long long)st.st_size);
	s = calloc(1, sizeof(*s));
	if (!s)
		return img_err(err, -ENOMEM, "%s: out of memory", img->path);
	pthread_mutex_init(&s->lock, NULL);
	img->priv = s;
	s->file_size = (uint64_t)st.st_size;

	ret = full_pread(img->fd, foot, sizeof(foot), 0);
	if (ret < 0)
		return img_err(err, ret, "%s: cannot read: %s", img->path,
			       strerror(-ret));
	if (!vpc_is_footer(foot)) {
		ret = full_pread(img->fd, foot, sizeof(foot),
				 s->file_size - VPC_FOOTER_BYTES);
		if (ret < 0)
			return img_err(err, ret, "%s: cannot read: %s",
				       img->path, strerror(-ret));
		if (!vpc_is_footer(foot))
			return img_err(err, -EINVAL, "%s: not a VHD image (no "
				       "\"conectix\" footer)", img->path);
		at_end = true;
	}
	ck = get_be32(foot + FOOT_CHECKSUM);
	if (vpc_checksum(foot, sizeof(foot), FOOT_CHECKSUM) != ck)
		return img_err(err, -EINVAL, "%s: VHD footer checksum "
			       "0x%08" PRIx32 " is wrong", img->path, ck);
	type = get_be32(foot + FOOT_TYPE);
	if (at_end && type != VPC_FIXED)
		return img_err(err, -EINVAL, "%s: VHD footer at the end says "
			       "type %" PRIu32 " but the copy at the start is "
			       "missing", img->path, type);
	if (type != VPC_FIXED && type != VPC_DYNAMIC && type != VPC_DIFF)
		return img_err(err, -EINVAL, "%s: unknown VHD disk type %"
			       PRIu32, img->path, type);
	s->type = (enum vpc_type)type;
	memcpy(s->uuid, foot + FOOT_UUID, 16);
	memcpy(s->creator_app, foot + FOOT_CREATOR_APP, 4);
	for (int i = 0; i < 4; i++)
		if ((unsigned char)s->creator_app[i] < 0x20 ||
		    (unsigned char)s->creator_app[i] > 0x7e)
			s->creator_app[i] = '?';

	sectors = vpc_size_sectors(foot);
	if (sectors > VPC_MAX_SECTORS)
		return img_err(err, -EFBIG, "%s: VHD of %" PRIu64 " sectors is "
			       "larger than 2040 GiB", img->path, sectors);
	img->size = sectors * VPC_SECTOR;

	if (s->type == VPC_FIXED) {
		/* A fixed disk found at offset 0 (a footer copy there) reads
		 * from 0 all the same: the data is the whole file before the
		 * last sector. */
		if (img->size > s->file_size - VPC_FOOTER_BYTES)
			return img_err(err, -EINVAL, "%s: fixed VHD of %" PRIu64
				       " bytes is longer than its file",
				       img->path, img->size);
		return 0;
	}
	return vpc_open_dynamic(img, s, get_be64(foot + FOOT_DATA_OFFSET), err);
}

/* Where block b's bitmap starts in the file; -EIO when the block is not
 * inside the file. 0 means not stored. */
static int vpc_block_host(struct img *img, struct vpc_state *s, uint64_t b,
			  uint64_t *bitmap_off_r)
{
	uint32_t e = s->bat[b];
	uint64_t off;

	*bitmap_off_r = 0;
	if (e == VPC_BAT_UNUSED)
		return 0;
	off = (uint64_t)e * VPC_SECTOR;
	if (off < VPC_FOOTER_BYTES ||
	    !range_within(off, (uint64_t)s->bitmap_bytes + s->block_size,
			  s->file_size))
		return -EIO;
	(void)img;
	*bitmap_off_r = off;
	return 0;
}

/* Copies block b's sector bitmap into out (bitmap_bytes), through the
 * LRU cache. */
static int vpc_get_bitmap(struct img *img, struct vpc_state *s, uint64_t b,
			  uint64_t bitmap_off, uint8_t *out)
{
	struct vpc_bitmap_slot *victim = NULL;
	int ret;

	LOCK_FOR_SCOPE(&s->lock);
	s->clock++;
	for (size_t i = 0; i < s->nb_slots; i++) {
		struct vpc_bitmap_slot *sl = &s->slots[i];
		if (sl->valid && sl->block == b) {
			sl->stamp = s->clock;
			memcpy(out, sl->bits, s->bitmap_bytes);
			return 0;
		}
		if (!victim || !sl->valid ||
		    (victim->valid && sl->stamp < victim->stamp))
			victim = sl;
	}
	victim->valid = false;
	ret = full_pread(img->fd, victim->bits, s->bitmap_bytes, bitmap_off);
	if (ret < 0)
		return ret;
	victim->valid = true;
	victim->block = b;
	victim->stamp = s->clock;
	memcpy(out, victim->bits, s->bitmap_bytes);
	return 0;
}

static bool bit_set(const uint8_t *bits, uint64_t i)
{
	return bits[i / 8] & (0x80u >> (i % 8));
}

/* One block's part of a read: [off, off + len) inside block b. */
static int vpc_read_block(struct img *img, struct vpc_state *s, uint8_t *buf,
			  size_t len, uint64_t off, uint8_t *bits)
{
	uint64_t b = off >> s->block_shift, in = off & (s->block_size - 1);
	uint64_t bitmap_off, data_off;
	int ret = vpc_block_host(img, s, b, &bitmap_off);

	if (ret < 0)
		return ret;
	if (!bitmap_off) {
		if (s->type == VPC_DIFF)
			return img_read_backing(img, buf, len, off);
		memset(buf, 0, len);
		return 0;
	}
	data_off = bitmap_off + s->bitmap_bytes;
	if (s->type != VPC_DIFF)
		return full_pread(img->fd, buf, len, data_off + in);
	ret = vpc_get_bitmap(img, s, b, bitmap_off, bits);
	if (ret < 0)
		return ret;
	/* Runs of sectors with the same bit: own data or the parent's. */
	while (len > 0) {
		uint64_t sec = in / VPC_SECTOR, end_sec = sec + 1;
		bool own = bit_set(bits, sec);
		uint64_t last = (in + len - 1) / VPC_SECTOR;
		size_t n;

		while (end_sec <= last && bit_set(bits, end_sec) == own)
			end_sec++;
		n = (size_t)MIN((uint64_t)len, end_sec * VPC_SECTOR - in);
		if (own)
			ret = full_pread(img->fd, buf, n, data_off + in);
		else
			ret = img_read_backing(img, buf, n, off);
		if (ret < 0)
			return ret;
		buf += n;
		len -= n;
		off += n;
		in += n;
	}
	return 0;
}

static int vpc_pread(struct img *img, void *buf, size_t len, uint64_t off)
{
	struct vpc_state *s = img->priv;
	CLEANUP_FREE uint8_t *bits = NULL;
	uint8_t *p = buf;

	if (s->type == VPC_FIXED)
		return full_pread(img->fd, buf, len, off);
	if (s->type == VPC_DIFF) {
		bits = malloc(s->bitmap_bytes);
		if (!bits)
			return -ENOMEM;
	}
	while (len > 0) {
		uint64_t in = off & (s->block_size - 1);
		size_t n = (size_t)MIN((uint64_t)len, s->block_size - in);
		int ret = vpc_read_block(img, s, p, n, off, bits);

		if (ret < 0)
			return ret;
		p += n;
		len -= n;
		off += n;
	}
	return 0;
}

static int vpc_block_status(struct img *img, uint64_t off, uint64_t len,
			    struct img_extent *ext_r)
{
	struct vpc_state *s = img->priv;
	uint64_t b = off >> s->block_shift, in, bitmap_off, run;
	CLEANUP_FREE uint8_t *bits = NULL;
	int ret;

	if (s->type == VPC_FIXED) {
		ext_r->kind = IMG_EXTENT_DATA;
		ext_r->len = len;
		ext_r->host_fd = img->fd;
		ext_r->host_off = off;
		return 0;
	}
	ret = vpc_block_host(img, s, b, &bitmap_off);
	if (ret < 0)
		return ret;
	in = off & (s->block_size - 1);
	run = MIN(len, s->block_size - in);
	if (!bitmap_off) {
		/* Not stored: zero in a dynamic disk, the parent's in a
		 * differencing one; extend over the next blocks alike. */
		ext_r->kind = s->type == VPC_DIFF ? IMG_EXTENT_UNALLOCATED
						  : IMG_EXTENT_ZERO;
		while (run < len && b + 1 < s->nb_blocks &&
		       s->bat[b + 1] == VPC_BAT_UNUSED) {
			b++;
			run = MIN(len, run + s->block_size);
		}
		ext_r->len = run;
		return 0;
	}
	if (s->type == VPC_DIFF) {
		uint64_t sec = in / VPC_SECTOR, end_sec = sec + 1;
		uint64_t last = (in + run - 1) / VPC_SECTOR;
		bool own;

		bits = malloc(s->bitmap_bytes);
		if (!bits)
			return -ENOMEM;
		ret = vpc_get_bitmap(img, s, b, bitmap_off, bits);
		if (ret < 0)
			return ret;
		own = bit_set(bits, sec);
		while (end_sec <= last && bit_set(bits, end_sec) == own)
			end_sec++;
		run = MIN(run, end_sec * VPC_SECTOR - in);
		if (!own) {
			ext_r->kind = IMG_EXTENT_UNALLOCATED;
			ext_r->len = run;
			return 0;
		}
	}
	ext_r->kind = IMG_EXTENT_DATA;
	ext_r->len = run;
	ext_r->host_fd = img->fd;
	ext_r->host_off = bitmap_off + s->bitmap_bytes + in;
	return 0;
}

static int vpc_get_info(struct img *img, struct img_info *info)
{
	struct vpc_state *s = img->priv;
	static const char *const names[] = { [VPC_FIXED] = "fixed",
					     [VPC_DYNAMIC] = "dynamic",
					     [VPC_DIFF] = "differencing" };

	info->cluster_size = s->type == VPC_FIXED ? 0 : s->block_size;
	info->backing_file = s->parent_name;
	img_info_add(info, "subformat", "%s", names[s->type]);
	img_info_add(info, "creator", "%s", s->creator_app);
	return 0;
}

const struct img_ops img_vpc_ops = {
	.name         = "vpc",
	.probe        = vpc_probe,
	.probe_tail   = vpc_probe_tail,
	.open         = vpc_open,
	.close        = vpc_close,
	.pread        = vpc_pread,
	.block_status = vpc_block_status,
	.get_info     = vpc_get_info,
};
