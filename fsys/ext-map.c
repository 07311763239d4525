/* ext-map.c: logical to physical block mapping of ext2/3/4 inodes, our
 * own walker over extent trees and block maps.
 *
 * Why not ext2fs_bmap2 / ext2fs_extent_*: they need the filesystem lock
 * (libext2fs is not thread-safe), and libext2fs's extent code has had
 * memory-safety bugs on crafted trees (CVE-2022-1304). This walker reads
 * through ext_pread only, so data reads of several threads map and read
 * in parallel, and it validates everything it uses:
 *  - extent headers: magic, entries <= max, max fits the node (4 in the
 *    inode, (block - 12) / 12 in a block), depth at most 5 and exactly one
 *    less than the parent's, so a tree that points back at itself ends
 *    after five levels;
 *  - extent tree blocks carry a crc32c tail when metadata_csum is on:
 *    verified (as the kernel: seed of uuid, inode number, generation);
 *  - every block pointer (index, extent, indirect) lies inside the
 *    filesystem, runs do not wrap, a zero-length extent is damage.
 * A run is returned whole from where lblk falls (up to 32768 blocks for
 * an extent, a leaf indirect block's contiguous entries, a hole up to
 * the next mapped block), so a read of 128 KiB costs one mapping.
 *
 * The last run found per inode is kept in a small direct-mapped cache
 * (under map_lock): files of deep trees map without re-reading them.
 */
#include "ext-int.h"

#include "checked.h"
#include "endian.h"

#include <errno.h>
#include <string.h>

#define EXT_MAGIC 0xF30A
#define EXT_MAX_DEPTH 5
#define EXT_INIT_LEN_MAX 32768u
#define EXT_HDR_BYTES 12
#define EXT_ENT_BYTES 12
/* Logical blocks are 32-bit: the end of a file's address space. */
#define EXT_LBLK_END ((uint64_t)1 << 32)

static bool blk_range_ok(const struct ext_fs *ext, uint64_t pblk,
			 uint64_t nb)
{
	uint64_t end;

	if (pblk == 0 || ADD_OVERFLOW(pblk, nb, &end))
		return false;
	return end <= ext->nb_blocks;
}

static bool cache_get(struct ext_fs *ext, uint32_t ino, uint64_t lblk,
		      struct ext_run *run_r)
{
	struct ext_map_cache_ent *c = &ext->map_cache[ino % EXT_MAP_CACHE_SLOTS];
	bool hit = false;

	pthread_mutex_lock(&ext->map_lock);
	if (c->ino == ino && lblk >= c->lblk &&
	    lblk < (uint64_t)c->lblk + c->nb_blks) {
		uint64_t skip = lblk - c->lblk;

		run_r->pblk = c->pblk ? c->pblk + skip : 0;
		run_r->nb_blks = c->nb_blks - skip;
		run_r->unwritten = c->unwritten;
		hit = true;
	}
	pthread_mutex_unlock(&ext->map_lock);
	return hit;
}

static void cache_put(struct ext_fs *ext, uint32_t ino, uint64_t lblk,
		      const struct ext_run *run)
{
	struct ext_map_cache_ent *c = &ext->map_cache[ino % EXT_MAP_CACHE_SLOTS];

	if (lblk >= EXT_LBLK_END || run->nb_blks > UINT32_MAX)
		return;
	pthread_mutex_lock(&ext->map_lock);
	c->ino = ino;
	c->lblk = (uint32_t)lblk;
	c->nb_blks = (uint32_t)run->nb_blks;
	c->pblk = run->pblk;
	c->unwritten = run->unwritten;
	pthread_mutex_unlock(&ext->map_lock);
}

/* Checks the crc32c tail of an extent tree block (metadata_csum). */
static bool extent_block_csum_ok(const struct ext_fs *ext,
				 const struct ext_inode_info *ii,
				 const uint8_t *blk, unsigned max)
{
	size_t tail = EXT_HDR_BYTES + (size_t)EXT_ENT_BYTES * max;
	uint8_t le[4];
	uint32_t crc;

	put_le32(le, ii->ino);
	crc = ext2fs_crc32c_le(ext->csum_seed, le, 4);
	put_le32(le, ii->generation);
	crc = ext2fs_crc32c_le(crc, le, 4);
	crc = ext2fs_crc32c_le(crc, blk, tail);
	return crc == get_le32(blk + tail);
}

static int map_extents(struct ext_fs *ext, const struct ext_inode_info *ii,
		       uint64_t lblk, struct ext_run *run_r)
{
	uint8_t blkbuf[EXT2_MAX_BLOCK_SIZE];
	const uint8_t *node = (const uint8_t *)ii->block;
	size_t node_bytes = sizeof(ii->block);
	uint64_t bound = EXT_LBLK_END; /* where the subtree we are in ends */
	int expect_depth = -1;

	if (lblk >= EXT_LBLK_END) {
		run_r->pblk = 0;
		run_r->nb_blks = UINT32_MAX;
		run_r->unwritten = false;
		return 0;
	}
	for (int level = 0; level <= EXT_MAX_DEPTH; level++) {
		unsigned entries = get_le16(node + 2);
		unsigned max = get_le16(node + 4);
		unsigned depth = get_le16(node + 6);
		unsigned cap = (unsigned)((node_bytes - EXT_HDR_BYTES) /
					  EXT_ENT_BYTES);
		unsigned lo, hi;

		if (get_le16(node) != EXT_MAGIC || max == 0 || max > cap ||
		    entries > max || depth > EXT_MAX_DEPTH ||
		    (expect_depth >= 0 && (int)depth != expect_depth))
			return -EIO;
		if (level > 0 && ext->csum &&
		    (EXT_HDR_BYTES + (size_t)EXT_ENT_BYTES * max + 4 >
			     node_bytes ||
		     !extent_block_csum_ok(ext, ii, node, max)))
			return -EIO;
		if (entries == 0) {
			/* An empty leaf (or root): a hole to the bound. */
			if (depth != 0 && level == 0)
				return -EIO;
			run_r->pblk = 0;
			run_r->nb_blks = bound - lblk;
			run_r->unwritten = false;
			return 0;
		}
		/* Last entry whose first block is <= lblk (the first when
		 * none is, as the kernel's binary search). */
		lo = 0;
		hi = entries;
		while (hi - lo > 1) {
			unsigned mid = lo + (hi - lo) / 2;

			if (get_le32(node + EXT_HDR_BYTES + mid * EXT_ENT_BYTES) <=
			    lblk)
				lo = mid;
			else
				hi = mid;
		}
		const uint8_t *e = node + EXT_HDR_BYTES + lo * EXT_ENT_BYTES;
		uint64_t first = get_le32(e);
		uint64_t next = bound;

		if (lo + 1 < entries) {
			next = get_le32(e + EXT_ENT_BYTES);
			if (next <= first || next > bound)
				return -EIO; /* not sorted */
		}
		if (depth == 0) {
			unsigned len = get_le16(e + 4);
			bool unwritten = len > EXT_INIT_LEN_MAX;
			uint64_t start = ((uint64_t)get_le16(e + 6) << 32) |
					 get_le32(e + 8);

			if (unwritten)
				len -= EXT_INIT_LEN_MAX;
			if (len == 0 || first + len > next ||
			    !blk_range_ok(ext, start, len))
				return -EIO;
			if (lblk < first) {
				run_r->pblk = 0;
				run_r->nb_blks = first - lblk;
				run_r->unwritten = false;
			} else if (lblk < first + len) {
				run_r->pblk = start + (lblk - first);
				run_r->nb_blks = first + len - lblk;
				run_r->unwritten = unwritten;
			} else {
				run_r->pblk = 0;
				run_r->nb_blks = next - lblk;
				run_r->unwritten = false;
			}
			return 0;
		}
		uint64_t child = ((uint64_t)get_le16(e + 8) << 32) |
				 get_le32(e + 4);
		int ret;

		if (!blk_range_ok(ext, child, 1))
			return -EIO;
		ret = ext_pread(ext, blkbuf, ext->block_size,
				child * ext->block_size);
		if (ret < 0)
			return ret;
		bound = next;
		expect_depth = (int)depth - 1;
		node = blkbuf;
		node_bytes = ext->block_size;
	}
	return -EIO;
}

/* Reads entries [idx, idx + nb) of the indirect block pblk. */
static int read_ptrs(struct ext_fs *ext, uint64_t pblk, uint64_t idx,
		     unsigned nb, uint32_t *ptrs)
{
	uint8_t raw[64 * 4];
	int ret;

	if (!blk_range_ok(ext, pblk, 1))
		return -EIO;
	ret = ext_pread(ext, raw, (size_t)nb * 4,
			pblk * ext->block_size + idx * 4);
	if (ret < 0)
		return ret;
	for (unsigned i = 0; i < nb; i++)
		ptrs[i] = get_le32(raw + 4 * i);
	return 0;
}

/* Builds a run from consecutive pointers ptrs[0..nb): all zero (a hole)
 * or contiguous blocks. */
static int run_from_ptrs(struct ext_fs *ext, const uint32_t *ptrs,
			 unsigned nb, struct ext_run *run_r)
{
	unsigned n = 1;

	run_r->unwritten = false;
	if (ptrs[0] == 0) {
		while (n < nb && ptrs[n] == 0)
			n++;
		run_r->pblk = 0;
		run_r->nb_blks = n;
		return 0;
	}
	while (n < nb && ptrs[n] == ptrs[0] + n)
		n++;
	if (!blk_range_ok(ext, ptrs[0], n))
		return -EIO;
	run_r->pblk = ptrs[0];
	run_r->nb_blks = n;
	return 0;
}

static int map_blockmap(struct ext_fs *ext, const struct ext_inode_info *ii,
			uint64_t lblk, struct ext_run *run_r)
{
	uint64_t apb = ext->block_size / 4;
	uint64_t span[4] = { 1, apb, apb * apb, apb * apb * apb };
	uint32_t ptrs[64];
	uint64_t rel = lblk, ptr;
	unsigned levels;

	if (lblk < EXT2_NDIR_BLOCKS) {
		unsigned nb = EXT2_NDIR_BLOCKS - (unsigned)lblk;

		for (unsigned i = 0; i < nb; i++)
			ptrs[i] = ii->block[lblk + i];
		return run_from_ptrs(ext, ptrs, nb, run_r);
	}
	rel -= EXT2_NDIR_BLOCKS;
	for (levels = 1; levels <= 3; levels++) {
		if (rel < span[levels])
			break;
		rel -= span[levels];
	}
	if (levels > 3) {
		/* Past what a block map addresses: nothing there. */
		run_r->pblk = 0;
		run_r->nb_blks = UINT32_MAX;
		run_r->unwritten = false;
		return 0;
	}
	ptr = ii->block[EXT2_IND_BLOCK + levels - 1];
	for (unsigned l = levels; l > 0; l--) {
		/* ptr is the block covering span[l] blocks from rel's
		 * subtree start; rel is the offset inside it. */
		if (ptr == 0) {
			run_r->pblk = 0;
			run_r->nb_blks = span[l] - rel;
			run_r->unwritten = false;
			return 0;
		}
		uint64_t idx = rel / span[l - 1];
		int ret;

		if (l > 1) {
			ret = read_ptrs(ext, ptr, idx, 1, ptrs);
			if (ret < 0)
				return ret;
			ptr = ptrs[0];
			rel %= span[l - 1];
			continue;
		}
		unsigned nb = (unsigned)MIN(apb - idx, 64);

		ret = read_ptrs(ext, ptr, idx, nb, ptrs);
		if (ret < 0)
			return ret;
		return run_from_ptrs(ext, ptrs, nb, run_r);
	}
	return -EIO;
}

int ext_map(struct ext_fs *ext, const struct ext_inode_info *ii,
	    uint64_t lblk, struct ext_run *run_r)
{
	int ret;

	if (cache_get(ext, ii->ino, lblk, run_r))
		return 0;
	if (ii->flags & EXT4_EXTENTS_FL)
		ret = map_extents(ext, ii, lblk, run_r);
	else
		ret = map_blockmap(ext, ii, lblk, run_r);
	if (ret < 0)
		return ret;
	if (run_r->nb_blks == 0)
		return -EIO;
	cache_put(ext, ii->ino, lblk, run_r);
	return 0;
}
