/* ext.c: the ext2/3/4 driver: open, the I/O manager, the operations.
 *
 * libext2fs (e2fsprogs 1.47) reads the superblock, group descriptors,
 * inodes (with their metadata_csum checksums), directory blocks and
 * xattrs, through an I/O manager of our own ("imgfs"): ext2fs_open2 gets
 * the name "imgfs:<pointer to struct ext_fs>", and every block it reads
 * goes through ext_pread, which reads the image handle (offset 0 = start
 * of the filesystem) and lays the replayed journal blocks over it. The
 * filesystem is opened read-only; writes through the manager fail with
 * EROFS.
 *
 * Threads: one mutex guards the ext2_filsys (libext2fs is not
 * thread-safe). File data never goes through libext2fs: a read copies
 * what it needs of the inode under the lock, then maps blocks with our
 * own walker (ext-map.c) and reads them with img_pread outside it, so
 * parallel readers overlap their I/O.
 *
 * Directories are streamed block by block (read outside the lock, the
 * checksum verified by libext2fs under it); the readdir cookie is the position of
 * the next entry, logical block << 32 | offset in the block (inline
 * directories: the offset in the inline data). htree internal nodes look
 * like empty entries and are skipped. Lookups scan the directory
 * linearly, starting where the previous lookup in that directory found
 * its name (ls, tar and find look names up in readdir order).
 *
 * Validated here before libext2fs sees it: the superblock geometry (block
 * size, group sizes, inode size, a filesystem no larger than the image).
 * Refused: compression, an external journal needing recovery, journal
 * devices, fast-commit replay. Encrypted directories are listed with
 * the kernel's no-key names (those of ciphertext past 149 bytes, named
 * by a SHA-256 there, are left out), and reading an encrypted file or
 * link gives -ENOKEY. Casefolded directories
 * are listed as stored and looked up by exact name.
 */
#include "ext-int.h"

#include "checked.h"
#include "cleanup.h"
#include "endian.h"

#include <errno.h>
#include <inttypes.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/sysmacros.h>
#include <unistd.h>

#define EXT_SB_OFFSET 1024
#define EXT_MAX_INLINE_BYTES (64 * 1024 + 64)
#define EXT_MAX_DESC_BYTES (32u << 20)
/* Entries a file's lookups scan through, and seek's steps: bounds. */
#define EXT_SEEK_MAX_STEPS (1u << 20)
/* What prefetch_inode reads: the smallest inode, enough to bring its
 * cluster into the image's cache. */
#define EXT_PREFETCH_BYTES 128

/* ---- errors ---------------------------------------------------------- */

int ext_errno(errcode_t code)
{
	if (code == 0)
		return 0;
	if (code > 0 && code < 4096)
		return -(int)code;
	switch (code) {
	case EXT2_ET_NO_MEMORY:
		return -ENOMEM;
	case EXT2_ET_RO_FILSYS:
		return -EROFS;
	case EXT2_ET_UNSUPP_FEATURE:
	case EXT2_ET_RO_UNSUPP_FEATURE:
		return -ENOTSUP;
	case EXT2_ET_EA_KEY_NOT_FOUND:
		return -ENODATA;
	case EXT2_ET_BAD_MAGIC:
		return -EMEDIUMTYPE;
	default:
		return -EIO;
	}
}

/* ---- reads ----------------------------------------------------------- */

int ext_pread(struct ext_fs *ext, void *buf, size_t len, uint64_t off)
{
	uint64_t bs = ext->block_size, end;
	size_t lo = 0, hi = ext->nb_overlay;
	int ret;

	if (len == 0)
		return 0;
	if (ADD_OVERFLOW(off, (uint64_t)len, &end) ||
	    end > img_size(ext->img))
		return -EIO;
	ret = img_pread(ext->img, buf, len, off);
	if (ret < 0)
		return ret == -EINVAL ? -EIO : ret;
	if (!ext->nb_overlay)
		return 0;
	/* The first replayed block that ends after off. */
	while (lo < hi) {
		size_t mid = lo + (hi - lo) / 2;

		if ((ext->overlay[mid].fs_blk + 1) * bs <= off)
			lo = mid + 1;
		else
			hi = mid;
	}
	for (; lo < ext->nb_overlay && ext->overlay[lo].fs_blk * bs < end;
	     lo++) {
		const struct ext_overlay_ent *o = &ext->overlay[lo];
		uint64_t bstart = o->fs_blk * bs;
		uint64_t from = MAX(bstart, off), to = MIN(bstart + bs, end);
		CLEANUP_FREE uint8_t *copy = malloc(bs);

		if (!copy)
			return -ENOMEM;
		ret = img_pread(ext->img, copy, bs, o->log_blk * bs);
		if (ret < 0)
			return ret == -EINVAL ? -EIO : ret;
		if (o->escaped)
			put_be32(copy, 0xC03B3998u);
		memcpy((uint8_t *)buf + (from - off), copy + (from - bstart),
		       to - from);
	}
	return 0;
}

/* ---- the I/O manager ------------------------------------------------- */

static struct struct_io_manager imgio_manager;

static errcode_t imgio_open(const char *name, int flags, io_channel *chan_r)
{
	struct ext_fs *ext = NULL;
	io_channel chan;

	if (flags & IO_FLAG_RW)
		return EXT2_ET_RO_FILSYS;
	if (!name || sscanf(name, "imgfs:%p", (void **)&ext) != 1 || !ext)
		return EXT2_ET_BAD_DEVICE_NAME;
	chan = calloc(1, sizeof(*chan));
	if (!chan)
		return EXT2_ET_NO_MEMORY;
	chan->name = strdup(name);
	if (!chan->name) {
		free(chan);
		return EXT2_ET_NO_MEMORY;
	}
	chan->magic = EXT2_ET_MAGIC_IO_CHANNEL;
	chan->manager = &imgio_manager;
	chan->block_size = 1024;
	chan->refcount = 1;
	chan->private_data = ext;
	*chan_r = chan;
	return 0;
}

static errcode_t imgio_close(io_channel chan)
{
	if (--chan->refcount > 0)
		return 0;
	free(chan->name);
	free(chan);
	return 0;
}

static errcode_t imgio_set_blksize(io_channel chan, int blksize)
{
	if (blksize <= 0 || blksize > EXT2_MAX_BLOCK_SIZE * 2)
		return EXT2_ET_INVALID_ARGUMENT;
	chan->block_size = blksize;
	return 0;
}

static errcode_t imgio_read_blk64(io_channel chan, unsigned long long block,
				  int count, void *data)
{
	struct ext_fs *ext = chan->private_data;
	uint64_t off, len;

	/* A negative count is a byte count (libext2fs's convention). */
	len = count < 0 ? (uint64_t)-(int64_t)count
			: (uint64_t)count * (uint64_t)chan->block_size;
	if (MUL_OVERFLOW((uint64_t)block, (uint64_t)chan->block_size, &off) ||
	    len > SIZE_MAX)
		return EXT2_ET_SHORT_READ;
	if (ext_pread(ext, data, (size_t)len, off) < 0)
		return EXT2_ET_SHORT_READ;
	return 0;
}

static errcode_t imgio_read_blk(io_channel chan, unsigned long block,
				int count, void *data)
{
	return imgio_read_blk64(chan, block, count, data);
}

static errcode_t imgio_write_blk(io_channel chan, unsigned long block,
				 int count, const void *data)
{
	(void)chan, (void)block, (void)count, (void)data;
	return EXT2_ET_RO_FILSYS;
}

static errcode_t imgio_write_blk64(io_channel chan, unsigned long long block,
				   int count, const void *data)
{
	(void)chan, (void)block, (void)count, (void)data;
	return EXT2_ET_RO_FILSYS;
}

static errcode_t imgio_write_byte(io_channel chan, unsigned long offset,
				  int count, const void *data)
{
	(void)chan, (void)offset, (void)count, (void)data;
	return EXT2_ET_RO_FILSYS;
}

static errcode_t imgio_flush(io_channel chan)
{
	(void)chan;
	return 0;
}

static errcode_t imgio_set_option(io_channel chan, const char *option,
				  const char *arg)
{
	(void)chan, (void)option, (void)arg;
	return EXT2_ET_INVALID_ARGUMENT;
}

static struct struct_io_manager imgio_manager = {
	.magic       = EXT2_ET_MAGIC_IO_MANAGER,
	.name        = "imgfs I/O manager",
	.open        = imgio_open,
	.close       = imgio_close,
	.set_blksize = imgio_set_blksize,
	.read_blk    = imgio_read_blk,
	.write_blk   = imgio_write_blk,
	.flush       = imgio_flush,
	.write_byte  = imgio_write_byte,
	.set_option  = imgio_set_option,
	.read_blk64  = imgio_read_blk64,
	.write_blk64 = imgio_write_blk64,
};

/* ---- open ------------------------------------------------------------ */

static bool ext_probe(struct img *img)
{
	uint8_t magic[2];

	if (img_size(img) < EXT_SB_OFFSET + 1024)
		return false;
	if (img_pread(img, magic, 2, EXT_SB_OFFSET + 56) < 0)
		return false;
	return get_le16(magic) == EXT2_SUPER_MAGIC;
}

/* Checks the geometry libext2fs trusts before it allocates by it. */
static int check_super(struct img *img, const struct ext2_super_block *sb,
		       struct img_err *err)
{
	uint64_t bs, nb_blocks, bytes, groups;
	uint32_t incompat = sb->s_feature_incompat;

	if (sb->s_magic != EXT2_SUPER_MAGIC)
		return -EMEDIUMTYPE;
	if (incompat & EXT3_FEATURE_INCOMPAT_JOURNAL_DEV)
		return img_err(err, -ENOTSUP,
			       "ext: an external journal device, it holds no "
			       "files");
	if (incompat & EXT2_FEATURE_INCOMPAT_COMPRESSION)
		return img_err(err, -ENOTSUP,
			       "ext: compression is not supported");
	if (sb->s_log_block_size > 6)
		return img_err(err, -EIO, "ext: block size 2^%" PRIu32
			       " KiB out of range",
			       sb->s_log_block_size);
	bs = 1024u << sb->s_log_block_size;
	nb_blocks = sb->s_blocks_count;
	if (incompat & EXT4_FEATURE_INCOMPAT_64BIT)
		nb_blocks |= (uint64_t)sb->s_blocks_count_hi << 32;
	/* A group's block bitmap has a bit per cluster (a block unless
	 * bigalloc), so clusters per group is bounded by a bitmap block's
	 * bits, and a bigalloc group spans that many clusters of blocks, as
	 * libext2fs's ext2fs_open requires. */
	uint64_t per_group_limit = 8 * bs;

	if (sb->s_feature_ro_compat & EXT4_FEATURE_RO_COMPAT_BIGALLOC) {
		uint32_t ratio_bits;

		if (sb->s_log_cluster_size < sb->s_log_block_size ||
		    sb->s_log_cluster_size > 19)
			return img_err(err, -EIO, "ext: cluster size 2^%" PRIu32
				       " KiB out of range",
				       sb->s_log_cluster_size);
		ratio_bits = sb->s_log_cluster_size - sb->s_log_block_size;
		if (sb->s_clusters_per_group == 0 ||
		    sb->s_clusters_per_group > 8 * bs ||
		    (uint64_t)sb->s_clusters_per_group << ratio_bits !=
			    sb->s_blocks_per_group)
			return img_err(err, -EIO,
				       "ext: bad geometry (%" PRIu32
				       " blocks and %" PRIu32
				       " clusters of 2^%" PRIu32
				       " blocks per group)",
				       sb->s_blocks_per_group,
				       sb->s_clusters_per_group, ratio_bits);
		per_group_limit <<= ratio_bits;
	}
	if (sb->s_blocks_per_group == 0 ||
	    sb->s_blocks_per_group > per_group_limit ||
	    sb->s_inodes_per_group == 0 || sb->s_inodes_per_group > 8 * bs ||
	    sb->s_first_data_block >= nb_blocks || nb_blocks < 2)
		return img_err(err, -EIO,
			       "ext: bad geometry (%" PRIu64 " blocks, %" PRIu32
			       " blocks and %" PRIu32 " inodes per group)",
			       nb_blocks, sb->s_blocks_per_group,
			       sb->s_inodes_per_group);
	if (sb->s_rev_level > 0 &&
	    (sb->s_inode_size < 128 || sb->s_inode_size > bs ||
	     (sb->s_inode_size & (sb->s_inode_size - 1))))
		return img_err(err, -EIO, "ext: inode size %u out of range",
			       sb->s_inode_size);
	if (MUL_OVERFLOW(nb_blocks, bs, &bytes) || bytes > img_size(img))
		return img_err(err, -EIO,
			       "ext: the filesystem claims %" PRIu64
			       " blocks of %" PRIu64 " bytes, the image holds %" PRIu64
			       " bytes",
			       nb_blocks, bs, img_size(img));
	groups = div_round_up(nb_blocks - sb->s_first_data_block,
			      sb->s_blocks_per_group);
	/* libext2fs keeps every group descriptor in memory: 32 MiB of
	 * them is a 64 TiB filesystem of 4 KiB blocks. */
	if (groups * (sb->s_desc_size > 32 ? sb->s_desc_size : 32) >
	    EXT_MAX_DESC_BYTES)
		return img_err(err, -ENOTSUP,
			       "ext: %" PRIu64 " block groups, more than imgfs "
			       "keeps in memory",
			       groups);
	if ((uint64_t)sb->s_inodes_count !=
	    groups * (uint64_t)sb->s_inodes_per_group)
		return img_err(err, -EIO,
			       "ext: %" PRIu32 " inodes is not %" PRIu64
			       " groups of %" PRIu32,
			       sb->s_inodes_count, groups,
			       sb->s_inodes_per_group);
	if ((incompat & EXT3_FEATURE_INCOMPAT_RECOVER) &&
	    sb->s_journal_inum == 0)
		return img_err(err, -ENOTSUP,
			       "ext: needs recovery from an external journal, "
			       "which imgfs does not replay");
	return 0;
}

static void ext_init_error_table(void)
{
	initialize_ext2_error_table();
}

static int open_fs(struct ext_fs *ext, ext2_filsys *fs_r, struct img_err *err)
{
	static pthread_once_t once = PTHREAD_ONCE_INIT;
	char name[64];
	errcode_t code;

	/* error_message() names libext2fs's codes once this is done. */
	pthread_once(&once, ext_init_error_table);
	snprintf(name, sizeof(name), "imgfs:%p", (void *)ext);
	code = ext2fs_open2(name, NULL, EXT2_FLAG_64BITS, 0, 0, &imgio_manager,
			    fs_r);
	if (code) {
		*fs_r = NULL;
		return img_err(err, ext_errno(code) == -EMEDIUMTYPE ? -EIO
								   : ext_errno(code),
			       "ext: libext2fs cannot open it: %s",
			       error_message(code));
	}
	return 0;
}

static void ext_close(void *priv)
{
	struct ext_fs *ext = priv;

	if (!ext)
		return;
	if (ext->fs)
		ext2fs_close_free(&ext->fs);
	pthread_mutex_destroy(&ext->lock);
	pthread_mutex_destroy(&ext->map_lock);
	free(ext->overlay);
	free(ext);
}

static int check_root(struct ext_fs *ext, struct img_err *err);

static int ext_open(struct img *img, void **priv_r, struct img_err *err)
{
	struct ext2_super_block sb;
	struct ext_fs *ext;
	int ret;

	if (img_size(img) < EXT_SB_OFFSET + sizeof(sb))
		return -EMEDIUMTYPE;
	ret = img_pread(img, &sb, sizeof(sb), EXT_SB_OFFSET);
	if (ret < 0)
		return img_err(err, ret, "ext: superblock unreadable");
	ret = check_super(img, &sb, err);
	if (ret < 0)
		return ret;
	ext = calloc(1, sizeof(*ext));
	if (!ext)
		return img_err(err, -ENOMEM, "out of memory");
	ext->img = img;
	pthread_mutex_init(&ext->lock, NULL);
	pthread_mutex_init(&ext->map_lock, NULL);
	ext->block_size = 1024u << sb.s_log_block_size;
	ext->nb_blocks = sb.s_blocks_count;
	if (sb.s_feature_incompat & EXT4_FEATURE_INCOMPAT_64BIT)
		ext->nb_blocks |= (uint64_t)sb.s_blocks_count_hi << 32;
	ext->nb_inodes = sb.s_inodes_count;
	ret = open_fs(ext, &ext->fs, err);
	if (ret < 0)
		goto err_close;
	ext->csum = ext2fs_has_feature_metadata_csum(ext->fs->super);
	ext->csum_seed = ext->fs->csum_seed;
	if (ext2fs_has_feature_journal_needs_recovery(ext->fs->super)) {
		ret = ext_journal_replay(ext, err);
		if (ret < 0)
			goto err_close;
		/* Reopen through the overlay: the replayed superblock and
		 * group descriptors are the ones that count. */
		ext2fs_close_free(&ext->fs);
		memset(ext->map_cache, 0, sizeof(ext->map_cache));
		/* The journal may carry a superblock of its own: it gets the
		 * same checks before libext2fs trusts it. */
		ret = ext_pread(ext, &sb, sizeof(sb), EXT_SB_OFFSET);
		if (ret < 0) {
			img_err(err, ret, "ext: replayed superblock unreadable");
			goto err_close;
		}
		ret = check_super(img, &sb, err);
		if (ret < 0) {
			if (ret == -EMEDIUMTYPE)
				ret = img_err(err, -EIO, "ext: the journal replaces "
					      "the superblock with garbage");
			goto err_close;
		}
		ret = open_fs(ext, &ext->fs, err);
		if (ret < 0)
			goto err_close;
		/* In memory only: the image is never written. */
		ext2fs_clear_feature_journal_needs_recovery(ext->fs->super);
		ext->nb_blocks = ext2fs_blocks_count(ext->fs->super);
		if (ext->nb_blocks * ext->block_size > img_size(img)) {
			ret = img_err(err, -EIO, "ext: the replayed superblock "
				      "claims more blocks than the image holds");
			goto err_close;
		}
		ext->nb_inodes = ext->fs->super->s_inodes_count;
		ext->csum = ext2fs_has_feature_metadata_csum(ext->fs->super);
		ext->csum_seed = ext->fs->csum_seed;
	}
	ext->inode_size = EXT2_INODE_SIZE(ext->fs->super);
	ext->has_filetype = ext2fs_has_feature_filetype(ext->fs->super);
	ext2fs_create_inode_cache(ext->fs, 64);
	ret = check_root(ext, err);
	if (ret < 0)
		goto err_close;
	*priv_r = ext;
	return 0;

err_close:
	ext_close(ext);
	return ret;
}

static void ext_get_info(void *priv, struct fsys_info *info)
{
	struct ext_fs *ext = priv;
	LOCK_FOR_SCOPE(&ext->lock);
	struct ext2_super_block *sb = ext->fs->super;
	const uint8_t *u = sb->s_uuid;
	const char *type = "ext2";

	if (ext2fs_has_feature_extents(sb) || ext2fs_has_feature_flex_bg(sb) ||
	    ext2fs_has_feature_64bit(sb) || ext2fs_has_feature_huge_file(sb) ||
	    ext2fs_has_feature_metadata_csum(sb) ||
	    ext2fs_has_feature_inline_data(sb) ||
	    ext2fs_has_feature_extra_isize(sb))
		type = "ext4";
	else if (ext2fs_has_feature_journal(sb))
		type = "ext3";
	snprintf(info->type, sizeof(info->type), "%s", type);
	snprintf(info->label, sizeof(info->label), "%.*s",
		 (int)sizeof(sb->s_volume_name), (const char *)sb->s_volume_name);
	snprintf(info->uuid, sizeof(info->uuid),
		 "%02x%02x%02x%02x-%02x%02x-%02x%02x-%02x%02x-"
		 "%02x%02x%02x%02x%02x%02x",
		 u[0], u[1], u[2], u[3], u[4], u[5], u[6], u[7], u[8], u[9],
		 u[10], u[11], u[12], u[13], u[14], u[15]);
	info->block_size = ext->block_size;
	info->journal_transactions_replayed = ext->nb_replayed;
	snprintf(info->warning, sizeof(info->warning), "%s", ext->warning);
}

static uint64_t ext_root_ino(void *priv)
{
	(void)priv;
	return EXT2_ROOT_INO;
}

/* ---- inodes ---------------------------------------------------------- */

static int read_inode_locked(struct ext_fs *ext, uint64_t ino,
			     struct ext2_inode_large *in)
{
	errcode_t code;

	if (ino == 0 || ino > ext->nb_inodes)
		return -ENOENT;
	memset(in, 0, sizeof(*in));
	code = ext2fs_read_inode_full(ext->fs, (ext2_ino_t)ino,
				      (struct ext2_inode *)in, sizeof(*in));
	if (code)
		return ext_errno(code);
	switch (in->i_mode & S_IFMT) {
	case S_IFREG: case S_IFDIR: case S_IFLNK: case S_IFCHR:
	case S_IFBLK: case S_IFIFO: case S_IFSOCK:
		return 0;
	default:
		return -EIO; /* free or damaged */
	}
}

/* Read once at open: without its root folder a filesystem shows nothing
 * (the kernel refuses to mount it), so the open fails saying why rather
 * than every path giving a bare EIO. */
static int check_root(struct ext_fs *ext, struct img_err *err)
{
	struct ext2_inode_large in;
	errcode_t code;

	memset(&in, 0, sizeof(in));
	code = ext2fs_read_inode_full(ext->fs, EXT2_ROOT_INO,
				      (struct ext2_inode *)&in, sizeof(in));
	if (code)
		return img_err(err, ext_errno(code) == -ENOMEM ? -ENOMEM : -EIO,
			       "ext: the root folder (inode 2) cannot be read: "
			       "%s", error_message(code));
	if (!LINUX_S_ISDIR(in.i_mode))
		return img_err(err, -EIO, "ext: the root folder (inode 2) is "
			       "not a folder (mode 0%o)", in.i_mode);
	return 0;
}

static void inode_info(uint64_t ino, const struct ext2_inode_large *in,
		       struct ext_inode_info *ii)
{
	ii->ino = (uint32_t)ino;
	ii->mode = in->i_mode;
	ii->flags = in->i_flags;
	ii->generation = in->i_generation;
	ii->size = EXT2_I_SIZE(in);
	memcpy(ii->block, in->i_block, sizeof(ii->block));
}

/* Reads the bytes of inode ino through the image handle without the
 * lock, so that the image's own caches (the decompressed clusters of a
 * compressed qcow2) hold them before libext2fs reads them under the
 * lock: readers of different inodes then decompress in parallel, and the
 * lock is held for a copy. Only the inode table's place is looked up
 * under the lock (no I/O: the group descriptors are in memory). */
static void prefetch_inode(struct ext_fs *ext, uint64_t ino)
{
	uint8_t buf[EXT_PREFETCH_BYTES];
	uint64_t table, off;
	uint32_t per_group;

	if (ino == 0 || ino > ext->nb_inodes)
		return;
	pthread_mutex_lock(&ext->lock);
	per_group = ext->fs->super->s_inodes_per_group;
	table = ext2fs_inode_table_loc(ext->fs,
				       (dgrp_t)((ino - 1) / per_group));
	pthread_mutex_unlock(&ext->lock);
	if (table == 0 || table >= ext->nb_blocks)
		return;
	off = table * ext->block_size +
	      (ino - 1) % per_group * (uint64_t)ext->inode_size;
	/* Damage is reported by the real read; this one only warms. */
	if (off + sizeof(buf) <= img_size(ext->img))
		(void)img_pread(ext->img, buf, sizeof(buf), off);
}

static int get_inode(struct ext_fs *ext, uint64_t ino,
		     struct ext2_inode_large *in, struct ext_inode_info *ii)
{
	int ret;

	prefetch_inode(ext, ino);
	pthread_mutex_lock(&ext->lock);
	ret = read_inode_locked(ext, ino, in);
	pthread_mutex_unlock(&ext->lock);
	if (ret == 0 && ii)
		inode_info(ino, in, ii);
	return ret;
}

/* The kernel's time decoding: 32 signed bits of seconds, and in the
 * extra field two epoch bits and 30 bits of nanoseconds. */
static struct timespec decode_time(uint32_t base, uint32_t extra,
				   bool has_extra)
{
	struct timespec ts = { .tv_sec = (int32_t)base };

	if (has_extra) {
		ts.tv_sec += (int64_t)(extra & 3) << 32;
		ts.tv_nsec = extra >> 2;
		if (ts.tv_nsec > 999999999)
			ts.tv_nsec = 0;
	}
	return ts;
}

static void fill_stat(const struct ext_fs *ext, uint64_t ino,
		      const struct ext2_inode_large *in, struct fsys_stat *st)
{
	unsigned extra = 0;
	uint64_t blocks;

	if (ext->inode_size > EXT2_GOOD_OLD_INODE_SIZE &&
	    in->i_extra_isize % 4 == 0 &&
	    EXT2_GOOD_OLD_INODE_SIZE + (uint32_t)in->i_extra_isize <= ext->inode_size)
		extra = in->i_extra_isize;
#define FITS(field)                                                            \
	(EXT2_GOOD_OLD_INODE_SIZE + extra >=                                   \
	 offsetof(struct ext2_inode_large, field) + sizeof(in->field))

	memset(st, 0, sizeof(*st));
	st->ino = ino;
	st->mode = in->i_mode;
	st->nlink = in->i_links_count;
	st->uid = in->i_uid | (uint32_t)in->osd2.linux2.l_i_uid_high << 16;
	st->gid = in->i_gid | (uint32_t)in->osd2.linux2.l_i_gid_high << 16;
	st->size = EXT2_I_SIZE(in);
	blocks = in->i_blocks;
	if (ext2fs_has_feature_huge_file(ext->fs->super)) {
		blocks |= (uint64_t)in->osd2.linux2.l_i_blocks_hi << 32;
		if (in->i_flags & EXT4_HUGE_FILE_FL)
			blocks *= ext->block_size / 512;
	}
	/* As the kernel: inline data of a regular file counts as the
	 * sectors it would fill, so tar and rsync do not take the file for
	 * all holes. */
	if ((in->i_flags & EXT4_INLINE_DATA_FL) && S_ISREG(in->i_mode))
		blocks += (st->size + 511) >> 9;
	st->blocks = blocks;
	if (S_ISCHR(in->i_mode) || S_ISBLK(in->i_mode)) {
		uint32_t b0 = in->i_block[0], b1 = in->i_block[1];

		if (b0)
			st->rdev = makedev((b0 >> 8) & 0xff, b0 & 0xff);
		else
			st->rdev = makedev((b1 >> 8) & 0xfff,
					   (b1 & 0xff) | ((b1 >> 12) & 0xfff00));
	}
	st->atime = decode_time(in->i_atime, in->i_atime_extra,
				FITS(i_atime_extra));
	st->mtime = decode_time(in->i_mtime, in->i_mtime_extra,
				FITS(i_mtime_extra));
	st->ctime = decode_time(in->i_ctime, in->i_ctime_extra,
				FITS(i_ctime_extra));
	if (FITS(i_crtime))
		st->btime = decode_time(in->i_crtime, in->i_crtime_extra,
					FITS(i_crtime_extra));
#undef FITS
}

static int ext_getattr(void *priv, uint64_t ino, struct fsys_stat *st_r)
{
	struct ext_fs *ext = priv;
	struct ext2_inode_large in;
	int ret = get_inode(ext, ino, &in, NULL);

	if (ret < 0)
		return ret;
	fill_stat(ext, ino, &in, st_r);
	return 0;
}

/* Inline data (i_block and the system.data xattr) into a new buffer. */
static int get_inline(struct ext_fs *ext, uint64_t ino,
		      struct ext2_inode_large *in, uint8_t **buf_r,
		      size_t *len_r)
{
	size_t size = 0;
	errcode_t code;
	uint8_t *buf;
	LOCK_FOR_SCOPE(&ext->lock);

	code = ext2fs_inline_data_size(ext->fs, (ext2_ino_t)ino, &size);
	if (code)
		return ext_errno(code);
	if (size > EXT_MAX_INLINE_BYTES)
		return -EIO;
	buf = malloc(size + 1);
	if (!buf)
		return -ENOMEM;
	code = ext2fs_inline_data_get(ext->fs, (ext2_ino_t)ino,
				      (struct ext2_inode *)in, buf, &size);
	if (code || size > EXT_MAX_INLINE_BYTES) {
		free(buf);
		return code ? ext_errno(code) : -EIO;
	}
	*buf_r = buf;
	*len_r = size;
	return 0;
}

/* ---- directories ----------------------------------------------------- */

/* Called per live entry; >0 stops the walk (returned as is). */
typedef int (*dir_cb)(void *ctx, const char *name, unsigned name_len,
		      uint32_t ino, unsigned ftype, uint64_t cookie,
		      uint64_t next_cookie);

static unsigned rec_len_of(const struct ext_fs *ext, const uint8_t *p)
{
	unsigned raw = get_le16(p + 4);

	if (ext->block_size < 65536)
		return raw;
	if (raw == 65535 || raw == 0)
		return 65536;
	return (raw & 65532) | ((raw & 3) << 16);
}

/* How the names of an encrypted directory are shown without its key:
 * as the kernel's "no-key" names (fscrypt_fname_disk_to_usr), the
 * unpadded base64url of the name's two 32-bit htree hashes (zero when
 * the kernel lists the directory linearly) and its ciphertext. */
struct nokey {
	bool on;
	bool hashed;
	int hash_version;
	const uint32_t *seed;
};

/* The no-key name of ciphertext name[0, len) in out (256 bytes); 0, or
 * -ENAMETOOLONG past 149 bytes, which the kernel shows by a SHA-256 this
 * reader does not compute (such names are left out). */
static int nokey_name(const struct nokey *nk, const char *name, unsigned len,
		      char *out)
{
	static const char b64[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
	ext2_dirhash_t hash = 0, minor = 0;
	uint8_t raw[8 + 149];
	size_t n = 8 + len, o = 0;
	unsigned acc = 0, bits = 0;

	if (len > 149)
		return -ENAMETOOLONG;
	if (nk->hashed &&
	    ext2fs_dirhash2(nk->hash_version, name, (int)len, NULL, 0,
			    nk->seed, &hash, &minor) != 0)
		hash = minor = 0;
	put_le32(raw, hash);
	put_le32(raw + 4, minor);
	memcpy(raw + 8, name, len);
	for (size_t i = 0; i < n; i++) {
		acc = acc << 8 | raw[i];
		bits += 8;
		while (bits >= 6) {
			bits -= 6;
			out[o++] = b64[(acc >> bits) & 63];
		}
	}
	if (bits)
		out[o++] = b64[(acc << (6 - bits)) & 63];
	out[o] = 0;
	return 0;
}

/* Walks the entries of region [start, end) of buf, from those at or
 * after resume. cookie_base | offset is an entry's cookie; next_end is
 * the cookie after the region's last entry. */
static int walk_region(struct ext_fs *ext, const uint8_t *buf, size_t start,
		       size_t end, size_t resume, uint64_t cookie_base,
		       uint64_t next_end, const struct nokey *nk, dir_cb cb,
		       void *ctx)
{
	size_t off = start;

	while (off < end) {
		const uint8_t *p = buf + off;
		unsigned rec_len, name_len, ftype;
		int ret;
		uint32_t ino;

		if (end - off < 8)
			return -EIO;
		ino = get_le32(p);
		rec_len = rec_len_of(ext, p);
		name_len = p[6];
		ftype = ext->has_filetype ? p[7] : 0;
		if (rec_len < 8 || rec_len % 4 || rec_len > end - off ||
		    8 + name_len > rec_len)
			return -EIO;
		if (ino != 0 && off >= resume && name_len > 0) {
			const char *name = (const char *)p + 8;
			bool dot = (name_len == 1 && name[0] == '.') ||
				   (name_len == 2 && name[0] == '.' &&
				    name[1] == '.');
			char shown[256];
			uint64_t next = off + rec_len >= end
						? next_end
						: cookie_base | (off + rec_len);

			if (ino > ext->nb_inodes)
				return -EIO;
			if (dot)
				goto skip;
			/* Without the key, the kernel's no-key name; one
			 * too long for it is left out. */
			if (nk->on) {
				if (nokey_name(nk, name, name_len, shown) != 0)
					goto skip;
				name = shown;
				name_len = strlen(shown);
			}
			ret = cb(ctx, name, name_len, ino, ftype,
				 cookie_base | off, next);
			if (ret != 0)
				return ret;
		}
skip:
		off += rec_len;
	}
	return 0;
}

static const uint32_t ftype_to_mode[8] = {
	0, S_IFREG, S_IFDIR, S_IFCHR, S_IFBLK, S_IFIFO, S_IFSOCK, S_IFLNK,
};

/* Walks directory dir from cookie. */
static int dir_walk(struct ext_fs *ext, uint64_t dir, uint64_t cookie,
		    dir_cb cb, void *ctx)
{
	struct ext2_inode_large in;
	struct ext_inode_info ii;
	CLEANUP_FREE uint8_t *buf = NULL;
	uint64_t nb_lblks, lblk;
	struct nokey nk = { 0 };
	int ret;

	ret = get_inode(ext, dir, &in, &ii);
	if (ret < 0)
		return ret;
	if (!S_ISDIR(ii.mode))
		return -ENOTDIR;
	if (ii.flags & EXT4_ENCRYPT_FL) {
		struct ext2_super_block *sb = ext->fs->super;

		/* The kernel lists a directory by htree (hashes in the
		 * names) when it is indexed, one block or inline; the
		 * superblock's hash version stands for the dx root's (the
		 * kernel sets one from the other). */
		nk.on = true;
		nk.hashed = ext2fs_has_feature_dir_index(sb) &&
			    ((ii.flags & (EXT2_INDEX_FL | EXT4_INLINE_DATA_FL)) ||
			     ii.size == ext->block_size);
		nk.hash_version = sb->s_def_hash_version;
		if (nk.hash_version <= EXT2_HASH_TEA &&
		    (sb->s_flags & EXT2_FLAGS_UNSIGNED_HASH))
			nk.hash_version += 3;
		nk.seed = sb->s_hash_seed;
	}
	if (ii.flags & EXT4_INLINE_DATA_FL) {
		size_t len;

		ret = get_inline(ext, dir, &in, &buf, &len);
		if (ret < 0)
			return ret;
		if (len < EXT4_MIN_INLINE_DATA_SIZE)
			return len < 4 ? -EIO : walk_region(ext, buf, 4, len,
						     cookie, 0, UINT64_MAX,
						     &nk, cb, ctx);
		ret = walk_region(ext, buf, 4, EXT4_MIN_INLINE_DATA_SIZE,
				  cookie, 0, EXT4_MIN_INLINE_DATA_SIZE,
				  &nk, cb, ctx);
		if (ret != 0)
			return ret;
		return walk_region(ext, buf, EXT4_MIN_INLINE_DATA_SIZE, len,
				   cookie, 0, UINT64_MAX, &nk, cb, ctx);
	}
	if (cookie == UINT64_MAX)
		return 0;
	buf = malloc(ext->block_size);
	if (!buf)
		return -ENOMEM;
	nb_lblks = div_round_up(ii.size, ext->block_size);
	lblk = cookie >> 32;
	while (lblk < nb_lblks) {
		struct ext_run run;

		ret = ext_map(ext, &ii, lblk, &run);
		if (ret < 0)
			return ret;
		if (run.pblk == 0 || run.unwritten) {
			lblk += run.nb_blks; /* a hole in a directory: skip */
			continue;
		}
		/* The I/O outside the lock; the checksum check needs
		 * libext2fs (it reads the inode's generation). */
		ret = ext_pread(ext, buf, ext->block_size,
				run.pblk * ext->block_size);
		if (ret < 0)
			return ret;
		if (ext->csum) {
			int ok;

			pthread_mutex_lock(&ext->lock);
			ok = ext2fs_dir_block_csum_verify(
				ext->fs, (ext2_ino_t)dir,
				(struct ext2_dir_entry *)buf);
			pthread_mutex_unlock(&ext->lock);
			if (!ok)
				return -EIO;
		}
		ret = walk_region(ext, buf, 0, ext->block_size,
				  lblk == cookie >> 32 ? (cookie & 0xffffffff) : 0,
				  lblk << 32, (lblk + 1) << 32, &nk, cb,
				  ctx);
		if (ret != 0)
			return ret;
		lblk++;
	}
	return 0;
}

struct readdir_ctx {
	fsys_dirent_fn fn;
	void *ctx;
};

static int readdir_cb(void *ctx, const char *name, unsigned name_len,
		      uint32_t ino, unsigned ftype, uint64_t cookie,
		      uint64_t next_cookie)
{
	struct readdir_ctx *r = ctx;
	char nm[256];

	(void)cookie;
	memcpy(nm, name, name_len);
	nm[name_len] = 0;
	return r->fn(r->ctx, nm, ino, ftype < 8 ? ftype_to_mode[ftype] : 0,
		     next_cookie) ? 1 : 0;
}

static int ext_readdir(void *priv, uint64_t dir, uint64_t cookie,
		       fsys_dirent_fn fn, void *ctx)
{
	struct readdir_ctx r = { .fn = fn, .ctx = ctx };
	int ret = dir_walk(priv, dir, cookie, readdir_cb, &r);

	return ret > 0 ? 0 : ret;
}

struct lookup_ctx {
	const char *name;
	size_t name_len;
	uint64_t stop_at; /* cookie where the second half of a scan ends */
	uint32_t ino;
	uint64_t cookie;
};

static int lookup_cb(void *ctx, const char *name, unsigned name_len,
		     uint32_t ino, unsigned ftype, uint64_t cookie,
		     uint64_t next_cookie)
{
	struct lookup_ctx *l = ctx;

	(void)ftype, (void)next_cookie;
	if (cookie >= l->stop_at)
		return 2;
	if (name_len == l->name_len && memcmp(name, l->name, name_len) == 0) {
		l->ino = ino;
		l->cookie = cookie;
		return 1;
	}
	return 0;
}

static int ext_lookup(void *priv, uint64_t dir, const char *name,
		      struct fsys_stat *st_r)
{
	struct ext_fs *ext = priv;
	struct lookup_ctx l = { .name = name, .stop_at = UINT64_MAX };
	unsigned slot = (unsigned)(dir % 64);
	uint64_t hint = 0;
	int ret;

	l.name_len = strlen(name);
	if (l.name_len == 0 || l.name_len > 255)
		return l.name_len ? -ENAMETOOLONG : -ENOENT;
	if (strcmp(name, ".") == 0)
		return ext_getattr(priv, dir, st_r);
	pthread_mutex_lock(&ext->map_lock);
	if (ext->hint[slot].dir == dir)
		hint = ext->hint[slot].cookie;
	pthread_mutex_unlock(&ext->map_lock);
	ret = dir_walk(ext, dir, hint, lookup_cb, &l);
	if (ret == 0 && hint != 0) {
		l.stop_at = hint;
		ret = dir_walk(ext, dir, 0, lookup_cb, &l);
	}
	if (ret < 0)
		return ret;
	if (ret != 1) {
		if (strcmp(name, "..") == 0)
			return -ENOENT; /* the caller knows the parent */
		return -ENOENT;
	}
	pthread_mutex_lock(&ext->map_lock);
	ext->hint[slot].dir = (uint32_t)dir;
	ext->hint[slot].cookie = l.cookie;
	pthread_mutex_unlock(&ext->map_lock);
	return ext_getattr(priv, l.ino, st_r);
}

/* ---- file data ------------------------------------------------------- */

static ssize_t ext_read(void *priv, uint64_t ino, void *buf, size_t len,
			uint64_t off)
{
	struct ext_fs *ext = priv;
	struct ext2_inode_large in;
	struct ext_inode_info ii;
	uint64_t bs = ext->block_size;
	size_t done = 0;
	int ret;

	ret = get_inode(ext, ino, &in, &ii);
	if (ret < 0)
		return ret;
	if (S_ISDIR(ii.mode))
		return -EISDIR;
	if (!S_ISREG(ii.mode))
		return -EINVAL;
	if (off >= ii.size)
		return 0;
	if (ii.flags & EXT4_ENCRYPT_FL)
		return -ENOKEY;
	len = (size_t)MIN((uint64_t)len, ii.size - off);
	if (len > SSIZE_MAX)
		len = SSIZE_MAX;
	if (ii.flags & EXT4_INLINE_DATA_FL) {
		CLEANUP_FREE uint8_t *data = NULL;
		size_t dlen;

		ret = get_inline(ext, ino, &in, &data, &dlen);
		if (ret < 0)
			return ret;
		memset(buf, 0, len);
		if (off < dlen)
			memcpy(buf, data + off, MIN(len, dlen - off));
		return (ssize_t)len;
	}
	while (done < len) {
		uint64_t pos = off + done, in_blk = pos % bs, run_bytes;
		struct ext_run run;
		size_t n;

		ret = ext_map(ext, &ii, pos / bs, &run);
		if (ret < 0)
			return ret;
		run_bytes = run.nb_blks * bs - in_blk;
		n = (size_t)MIN((uint64_t)(len - done), run_bytes);
		if (run.pblk == 0 || run.unwritten) {
			memset((uint8_t *)buf + done, 0, n);
		} else {
			ret = ext_pread(ext, (uint8_t *)buf + done, n,
					run.pblk * bs + in_blk);
			if (ret < 0)
				return ret;
		}
		done += n;
	}
	return (ssize_t)done;
}

/* The kernel's test: no data blocks beyond an xattr block. */
static bool is_fast_symlink(const struct ext_fs *ext,
			    const struct ext2_inode_large *in)
{
	uint64_t ea_blocks = in->i_file_acl ? ext->block_size / 512 : 0;

	if (in->i_flags & EXT4_EA_INODE_FL)
		return EXT2_I_SIZE(in) < sizeof(in->i_block);
	return (uint64_t)in->i_blocks <= ea_blocks;
}

static ssize_t ext_readlink(void *priv, uint64_t ino, char *buf, size_t size)
{
	struct ext_fs *ext = priv;
	struct ext2_inode_large in;
	struct ext_inode_info ii;
	int ret;

	ret = get_inode(ext, ino, &in, &ii);
	if (ret < 0)
		return ret;
	if (!S_ISLNK(ii.mode))
		return -EINVAL;
	if (ii.flags & EXT4_ENCRYPT_FL)
		return -ENOKEY;
	if (ii.size == 0 || ii.size >= ext->block_size || ii.size >= 65536)
		return -EIO;
	if (ii.size + 1 > size)
		return -ERANGE;
	if (ii.flags & EXT4_INLINE_DATA_FL) {
		CLEANUP_FREE uint8_t *data = NULL;
		size_t dlen;

		ret = get_inline(ext, ino, &in, &data, &dlen);
		if (ret < 0)
			return ret;
		if (dlen < ii.size)
			return -EIO;
		memcpy(buf, data, ii.size);
	} else if (is_fast_symlink(ext, &in)) {
		if (ii.size >= sizeof(ii.block))
			return -EIO;
		memcpy(buf, ii.block, ii.size);
	} else {
		struct ext_run run;

		ret = ext_map(ext, &ii, 0, &run);
		if (ret < 0)
			return ret;
		if (run.pblk == 0 || run.unwritten)
			return -EIO;
		ret = ext_pread(ext, buf, ii.size, run.pblk * ext->block_size);
		if (ret < 0)
			return ret;
	}
	buf[ii.size] = 0;
	return (ssize_t)ii.size;
}

static int ext_seek(void *priv, uint64_t ino, uint64_t off, int whence,
		    uint64_t *off_r)
{
	struct ext_fs *ext = priv;
	struct ext2_inode_large in;
	struct ext_inode_info ii;
	uint64_t bs = ext->block_size, pos = off;
	int ret;

	if (whence != SEEK_DATA && whence != SEEK_HOLE)
		return -EINVAL;
	ret = get_inode(ext, ino, &in, &ii);
	if (ret < 0)
		return ret;
	if (S_ISDIR(ii.mode))
		return -EISDIR;
	if (!S_ISREG(ii.mode))
		return -EINVAL;
	if (off >= ii.size)
		return -ENXIO;
	if (ii.flags & EXT4_INLINE_DATA_FL) {
		*off_r = whence == SEEK_DATA ? off : ii.size;
		return 0;
	}
	for (unsigned step = 0; pos < ii.size; step++) {
		struct ext_run run;
		bool data;

		if (step >= EXT_SEEK_MAX_STEPS) {
			/* Too fragmented to look further: calling the rest
			 * data is always safe (it reads right). */
			*off_r = whence == SEEK_DATA ? pos : ii.size;
			return 0;
		}
		ret = ext_map(ext, &ii, pos / bs, &run);
		if (ret < 0)
			return ret;
		data = run.pblk != 0 && !run.unwritten;
		if (data == (whence == SEEK_DATA)) {
			*off_r = pos;
			return 0;
		}
		pos = (pos / bs + run.nb_blks) * bs;
	}
	if (whence == SEEK_DATA)
		return -ENXIO;
	*off_r = ii.size;
	return 0;
}

/* ---- xattrs ---------------------------------------------------------- */

struct list_ctx {
	char *buf;
	size_t size, len;
	bool too_small;
};

/* The inline data's xattr is not shown by the kernel. */
static bool hidden_xattr(const char *name)
{
	return strcmp(name, "system.data") == 0;
}

static int list_cb(char *name, char *value, size_t value_len, void *data)
{
	struct list_ctx *l = data;
	size_t n = strlen(name) + 1;

	(void)value, (void)value_len;
	if (hidden_xattr(name))
		return 0;
	if (l->size) {
		if (l->len + n > l->size) {
			l->too_small = true;
			return XATTR_ABORT;
		}
		memcpy(l->buf + l->len, name, n);
	}
	l->len += n;
	return 0;
}

/* libext2fs converts ACLs to the xattr format with id 0 in the entries
 * that name no one (owner, group, mask, other); the kernel gives
 * ACL_UNDEFINED_ID there. Header: 4 bytes of version, then entries of
 * tag (16 bits), permissions (16), id (32). */
static void fix_acl_ids(uint8_t *v, size_t len)
{
	if (len < 4 || get_le32(v) != 2)
		return;
	for (size_t p = 4; p + 8 <= len; p += 8) {
		unsigned tag = get_le16(v + p);

		if (tag != 2 && tag != 8) /* ACL_USER, ACL_GROUP */
			put_le32(v + p + 4, 0xffffffffu);
	}
}

static int open_xattrs_locked(struct ext_fs *ext, uint64_t ino,
			      struct ext2_xattr_handle **h_r)
{
	struct ext2_inode_large in;
	errcode_t code;
	int ret = read_inode_locked(ext, ino, &in);

	if (ret < 0)
		return ret;
	code = ext2fs_xattrs_open(ext->fs, (ext2_ino_t)ino, h_r);
	if (code)
		return ext_errno(code);
	code = ext2fs_xattrs_read(*h_r);
	if (code) {
		ext2fs_xattrs_close(h_r);
		return ext_errno(code);
	}
	return 0;
}

static ssize_t ext_listxattr(void *priv, uint64_t ino, char *buf, size_t size)
{
	struct ext_fs *ext = priv;
	struct ext2_xattr_handle *h = NULL;
	struct list_ctx l = { .buf = buf, .size = size };
	errcode_t code;
	int ret;
	LOCK_FOR_SCOPE(&ext->lock);

	ret = open_xattrs_locked(ext, ino, &h);
	if (ret < 0)
		return ret;
	code = ext2fs_xattrs_iterate(h, list_cb, &l);
	ext2fs_xattrs_close(&h);
	if (l.too_small)
		return -ERANGE;
	if (code)
		return ext_errno(code);
	return (ssize_t)l.len;
}

static ssize_t ext_getxattr(void *priv, uint64_t ino, const char *name,
			    void *buf, size_t size)
{
	struct ext_fs *ext = priv;
	struct ext2_xattr_handle *h = NULL;
	void *value = NULL;
	size_t len = 0;
	errcode_t code;
	int ret;
	LOCK_FOR_SCOPE(&ext->lock);

	ret = open_xattrs_locked(ext, ino, &h);
	if (ret < 0)
		return ret;
	if (hidden_xattr(name)) {
		ext2fs_xattrs_close(&h);
		return -ENODATA;
	}
	code = ext2fs_xattr_get(h, name, &value, &len);
	ext2fs_xattrs_close(&h);
	if (code)
		return ext_errno(code);
	if (strncmp(name, "system.posix_acl_", 17) == 0)
		fix_acl_ids(value, len);
	if (size && len > size)
		ret = -ERANGE;
	else if (size)
		memcpy(buf, value, len);
	ext2fs_free_mem(&value);
	return ret < 0 ? ret : (ssize_t)len;
}

/* ---- statfs ---------------------------------------------------------- */

static int ext_statfs(void *priv, struct statvfs *st)
{
	struct ext_fs *ext = priv;
	LOCK_FOR_SCOPE(&ext->lock);
	struct ext2_super_block *sb = ext->fs->super;
	uint64_t free_blocks = ext2fs_free_blocks_count(sb);
	uint64_t reserved = ext2fs_r_blocks_count(sb);

	memset(st, 0, sizeof(*st));
	st->f_bsize = ext->block_size;
	st->f_frsize = ext->block_size;
	st->f_blocks = ext2fs_blocks_count(sb);
	st->f_bfree = MIN(free_blocks, (uint64_t)st->f_blocks);
	st->f_bavail = st->f_bfree > reserved ? st->f_bfree - reserved : 0;
	st->f_files = sb->s_inodes_count;
	st->f_ffree = MIN(sb->s_free_inodes_count, sb->s_inodes_count);
	st->f_favail = st->f_ffree;
	st->f_fsid = get_le32(sb->s_uuid) ^ get_le32(sb->s_uuid + 4);
	st->f_flag = ST_RDONLY | ST_NOSUID | ST_NODEV;
	st->f_namemax = EXT2_NAME_LEN;
	return 0;
}

const struct fsys_ops fsys_ext_ops = {
	.name      = "ext",
	.probe     = ext_probe,
	.open      = ext_open,
	.close     = ext_close,
	.get_info  = ext_get_info,
	.root_ino  = ext_root_ino,
	.lookup    = ext_lookup,
	.getattr   = ext_getattr,
	.readdir   = ext_readdir,
	.read      = ext_read,
	.readlink  = ext_readlink,
	.seek      = ext_seek,
	.listxattr = ext_listxattr,
	.getxattr  = ext_getxattr,
	.statfs    = ext_statfs,
};
