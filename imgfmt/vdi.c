/* vdi.c: the VirtualBox VDI driver, read-only.
 *
 * Layout (VirtualBox's VDICore.h, little-endian): a free-text banner in
 * the first 64 bytes, the signature 0xbeda107f at 64, the version (1.1)
 * and a header naming the image type (1 dynamic, 2 fixed), the offsets
 * of the block map and of the data, the disk size, the block size and
 * the number of blocks. The block map has one 32-bit entry per block:
 * the index of the block in the data area, 0xFFFFFFFF for a block never
 * written and 0xFFFFFFFE for a block discarded (both read as zeroes:
 * QEMU's VDI has no backing file, and neither does this driver).
 *
 * What this file matches QEMU on (block/vdi.c): version 1.1 only, sector
 * size 512, offsets of map and data sector-aligned, the disk size rounded
 * up to a sector, no link or parent UUID (differencing and undo images
 * are refused), block status DATA for stored blocks and ZERO for the
 * others (qemu-img map says "zero": true, "data": false there). QEMU
 * accepts only 1 MiB blocks; this driver accepts any power of two from
 * 512 B to VDI_MAX_BLOCK_BYTES, with no extra per-block data.
 *
 * Hostile input: the map must fit in the file and in VDI_MAX_MAP_BYTES,
 * cover the disk size, and every size is overflow-checked at open. A map
 * entry whose block lies past the end of the file fails reads and block
 * status of that block alone with -EIO.
 *
 * Threads: the block map is read once at open and never changes; reads
 * take no lock. Consecutive blocks stored one after the other are read
 * with one pread.
 *
 * Not done: writing, and VDI 1.0 headers (QEMU refuses them too).
 */
#include "imgfmt-int.h"

#include "checked.h"
#include "endian.h"
#include "io.h"

#include <errno.h>
#include <inttypes.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#define VDI_SIGNATURE 0xbeda107fu
#define VDI_VERSION_1_1 0x00010001u
#define VDI_HEADER_BYTES 512u
#define VDI_SECTOR 512u
#define VDI_UNALLOCATED 0xFFFFFFFFu
#define VDI_DISCARDED 0xFFFFFFFEu
#define VDI_MAX_BLOCK_BYTES (64u << 20)
#define VDI_MAX_MAP_BYTES (256ull << 20)

enum vdi_type {
	VDI_TYPE_DYNAMIC = 1,
	VDI_TYPE_STATIC = 2,
};

/* Header fields, offsets in the file. */
#define H_SIGNATURE 0x40
#define H_VERSION 0x44
#define H_TYPE 0x4c
#define H_OFFSET_BMAP 0x154
#define H_OFFSET_DATA 0x158
#define H_SECTOR_SIZE 0x168
#define H_DISK_SIZE 0x170
#define H_BLOCK_SIZE 0x178
#define H_BLOCK_EXTRA 0x17c
#define H_BLOCKS 0x180
#define H_UUID_LINK 0x1a8
#define H_UUID_PARENT 0x1b8

/* Set by vdi_open, then only read (by any thread, with no lock): the
 * driver keeps no cache. */
struct vdi_state {
	enum vdi_type type;
	uint64_t file_size;
	uint64_t data_off;
	uint32_t block_size;
	unsigned block_shift;
	uint32_t nb_blocks;
	uint32_t *map; /* host order */
};

/* The signature and the version this driver reads: a VDI of another
 * version is left to foreign.c, which refuses it by name. */
static int vdi_probe(const uint8_t *head, size_t len)
{
	if (len < H_VERSION + 4 || get_le32(head + H_SIGNATURE) != VDI_SIGNATURE)
		return 0;
	return get_le32(head + H_VERSION) == VDI_VERSION_1_1 ? 100 : 0;
}

static bool is_null_uuid(const uint8_t *u)
{
	for (int i = 0; i < 16; i++)
		if (u[i])
			return false;
	return true;
}

static void vdi_close(struct img *img)
{
	struct vdi_state *s = img->priv;

	if (!s)
		return;
	free(s->map);
	free(s);
	img->priv = NULL;
}

static int vdi_open(struct img *img, struct img_err *err)
{
	uint8_t h[VDI_HEADER_BYTES];
	uint32_t version, type, bmap_off, sector_size, extra;
	uint64_t disk_size, room, map_bytes;
	struct vdi_state *s;
	struct stat st;
	int ret;

	if (fstat(img->fd, &st) < 0)
		return img_err(err, -errno, "%s: %s", img->path,
			       strerror(errno));
	if (st.st_size < (off_t)sizeof(h))
		return img_err(err, -EINVAL, "%s: too small for a VDI header "
			       "(%lld bytes)", img->path,
			       (long long)st.st_size);
	s = calloc(1, sizeof(*s));
	if (!s)
		return img_err(err, -ENOMEM, "%s: out of memory", img->path);
	img->priv = s;
	s->file_size = (uint64_t)st.st_size;
	ret = full_pread(img->fd, h, sizeof(h), 0);
	if (ret < 0)
		return img_err(err, ret, "%s: cannot read: %s", img->path,
			       strerror(-ret));
	if (get_le32(h + H_SIGNATURE) != VDI_SIGNATURE)
		return img_err(err, -EINVAL, "%s: not a VDI image (signature "
			       "0x%08" PRIx32 ")", img->path,
			       get_le32(h + H_SIGNATURE));
	version = get_le32(h + H_VERSION);
	if (version != VDI_VERSION_1_1)
		return img_err(err, -EINVAL, "%s: VDI version %u.%u is not "
			       "supported (only 1.1)", img->path,
			       version >> 16, version & 0xffff);
	type = get_le32(h + H_TYPE);
	if (type != VDI_TYPE_DYNAMIC && type != VDI_TYPE_STATIC)
		return img_err(err, -EINVAL, "%s: VDI image type %" PRIu32
			       " is not supported (only dynamic and fixed)",
			       img->path, type);
	s->type = (enum vdi_type)type;
	if (!is_null_uuid(h + H_UUID_LINK) || !is_null_uuid(h + H_UUID_PARENT))
		return img_err(err, -EINVAL, "%s: differencing VDI images "
			       "(with a parent UUID) are not supported",
			       img->path);
	sector_size = get_le32(h + H_SECTOR_SIZE);
	if (sector_size != VDI_SECTOR)
		return img_err(err, -EINVAL, "%s: VDI sector size %" PRIu32
			       " is not 512", img->path, sector_size);
	s->block_size = get_le32(h + H_BLOCK_SIZE);
	if (s->block_size < VDI_SECTOR || s->block_size > VDI_MAX_BLOCK_BYTES ||
	    (s->block_size & (s->block_size - 1)))
		return img_err(err, -EINVAL, "%s: VDI block size %" PRIu32
			       " is not a power of two between 512 and %u",
			       img->path, s->block_size, VDI_MAX_BLOCK_BYTES);
	s->block_shift = (unsigned)__builtin_ctz(s->block_size);
	extra = get_le32(h + H_BLOCK_EXTRA);
	if (extra != 0)
		return img_err(err, -EINVAL, "%s: VDI blocks with %" PRIu32
			       " bytes of extra data are not supported",
			       img->path, extra);
	bmap_off = get_le32(h + H_OFFSET_BMAP);
	s->data_off = get_le32(h + H_OFFSET_DATA);
	if (bmap_off % VDI_SECTOR || s->data_off % VDI_SECTOR)
		return img_err(err, -EINVAL, "%s: VDI block map offset 0x%"
			       PRIx32 " or data offset 0x%" PRIx64 " is not "
			       "sector-aligned", img->path, bmap_off,
			       s->data_off);
	s->nb_blocks = get_le32(h + H_BLOCKS);
	map_bytes = (uint64_t)s->nb_blocks * 4;
	if (map_bytes > VDI_MAX_MAP_BYTES)
		return img_err(err, -EINVAL, "%s: VDI block map of %" PRIu64
			       " bytes is larger than the %llu imgfs reads",
			       img->path, map_bytes, VDI_MAX_MAP_BYTES);
	if (bmap_off < sizeof(h) ||
	    !range_within(bmap_off, map_bytes, s->file_size))
		return img_err(err, -EINVAL, "%s: VDI block map at 0x%" PRIx32
			       " (%" PRIu64 " bytes) lies past the end of the "
			       "file", img->path, bmap_off, map_bytes);
	if (s->data_off < sizeof(h) || s->data_off > s->file_size)
		return img_err(err, -EINVAL, "%s: VDI data offset 0x%" PRIx64
			       " lies inside the header or past the end of "
			       "the file", img->path,
			       s->data_off);
	disk_size = get_le64(h + H_DISK_SIZE);
	room = (uint64_t)s->nb_blocks << s->block_shift;
	/* QEMU rounds a size VBoxManage left odd up to a sector. */
	if (disk_size > room || align_up(disk_size, VDI_SECTOR) > room)
		return img_err(err, -EINVAL, "%s: VDI disk size %" PRIu64
			       " does not fit its %" PRIu32 " blocks of %"
			       PRIu32 " bytes", img->path, disk_size,
			       s->nb_blocks, s->block_size);
	img->size = align_up(disk_size, VDI_SECTOR);

	s->map = malloc(map_bytes ? (size_t)map_bytes : 1);
	if (!s->map)
		return img_err(err, -ENOMEM, "%s: out of memory for the block "
			       "map", img->path);
	ret = full_pread(img->fd, s->map, (size_t)map_bytes, bmap_off);
	if (ret < 0)
		return img_err(err, ret, "%s: cannot read the block map: %s",
			       img->path, strerror(-ret));
	for (uint32_t i = 0; i < s->nb_blocks; i++)
		s->map[i] = le32toh(s->map[i]);
	return 0;
}

/* Where block b lies in the file (0: not stored); -EIO when its entry
 * points past the end of the file. */
static int vdi_block_host(struct vdi_state *s, uint64_t b, uint64_t *host_r)
{
	uint32_t e = s->map[b];
	uint64_t off;

	*host_r = 0;
	if (e >= VDI_DISCARDED)
		return 0;
	/* e < 2^32 and block_size <= 2^26: no overflow in u64. */
	off = s->data_off + ((uint64_t)e << s->block_shift);
	if (!range_within(off, s->block_size, s->file_size) || off == 0)
		return -EIO;
	*host_r = off;
	return 0;
}

static int vdi_pread(struct img *img, void *buf, size_t len, uint64_t off)
{
	struct vdi_state *s = img->priv;
	uint8_t *p = buf;

	while (len > 0) {
		uint64_t b = off >> s->block_shift;
		uint64_t in = off & (s->block_size - 1), host, next;
		size_t n = (size_t)MIN((uint64_t)len, s->block_size - in);
		int ret = vdi_block_host(s, b, &host);

		if (ret < 0)
			return ret;
		if (!host) {
			memset(p, 0, n);
		} else {
			/* Extend over blocks stored right after this one. */
			while (n < len && b + 1 < s->nb_blocks &&
			       vdi_block_host(s, b + 1, &next) == 0 &&
			       next == host + ((b + 1 - (off >> s->block_shift))
					       << s->block_shift)) {
				b++;
				n = (size_t)MIN((uint64_t)len,
						(uint64_t)n + s->block_size);
			}
			ret = full_pread(img->fd, p, n, host + in);
			if (ret < 0)
				return ret;
		}
		p += n;
		len -= n;
		off += n;
	}
	return 0;
}

static int vdi_block_status(struct img *img, uint64_t off, uint64_t len,
			    struct img_extent *ext_r)
{
	struct vdi_state *s = img->priv;
	uint64_t b = off >> s->block_shift, b0 = b;
	uint64_t in = off & (s->block_size - 1), host, next;
	uint64_t run = MIN(len, s->block_size - in);
	int ret = vdi_block_host(s, b, &host);

	if (ret < 0)
		return ret;
	while (run < len && b + 1 < s->nb_blocks &&
	       vdi_block_host(s, b + 1, &next) == 0 &&
	       (host ? next == host + ((b + 1 - b0) << s->block_shift)
		     : next == 0)) {
		b++;
		run = MIN(len, run + s->block_size);
	}
	ext_r->len = run;
	if (!host) {
		ext_r->kind = IMG_EXTENT_ZERO;
		return 0;
	}
	ext_r->kind = IMG_EXTENT_DATA;
	ext_r->host_fd = img->fd;
	ext_r->host_off = host + in;
	return 0;
}

static int vdi_get_info(struct img *img, struct img_info *info)
{
	struct vdi_state *s = img->priv;

	info->cluster_size = s->block_size;
	img_info_add(info, "subformat", "%s",
		     s->type == VDI_TYPE_STATIC ? "fixed" : "dynamic");
	return 0;
}

const struct img_ops img_vdi_ops = {
	.name         = "vdi",
	.probe        = vdi_probe,
	.open         = vdi_open,
	.close        = vdi_close,
	.pread        = vdi_pread,
	.block_status = vdi_block_status,
	.get_info     = vdi_get_info,
};
