/* ext-int.h: what the pieces of the ext2/3/4 driver share (ext.c: open,
 * I/O manager, operations; ext-map.c: logical to physical block mapping;
 * journal.c: jbd2 replay in memory).
 *
 * Locking: libext2fs is not thread-safe, so every call into it (inode
 * reads, directory blocks, xattrs) holds ext->lock. Block mapping and
 * data reads do not touch libext2fs: they read the image (plus the
 * journal overlay, immutable after open) with ext_pread and may run in
 * parallel without the lock.
 */
#ifndef IMGFS_FSYS_EXT_INT_H
#define IMGFS_FSYS_EXT_INT_H

#include "fsys-int.h"

#include <ext2fs/ext2_fs.h>
#include <et/com_err.h>
#include <ext2fs/ext2fs.h>
#include <pthread.h>
#include <stdint.h>

/* One replayed block: fs block fs_blk reads as the journal's copy, which
 * lies at fs block log_blk; escaped: its first 4 bytes were the jbd2
 * magic and are stored as zero. */
struct ext_overlay_ent {
	uint64_t fs_blk;
	uint64_t log_blk;
	bool escaped;
};

/* The cached result of the last mapping of an inode (see ext-map.c). */
struct ext_map_cache_ent {
	uint32_t ino;
	uint32_t lblk;
	uint32_t nb_blks;
	uint64_t pblk;     /* 0: hole */
	bool unwritten;
};
#define EXT_MAP_CACHE_SLOTS 256

/* Locking: libext2fs is not thread-safe, so fs and the lookup hints are
 * guarded by lock; map_cache is guarded by map_lock. Everything else is
 * set by ext_open, journal replay included, and only read afterwards, by
 * any thread, with no lock. */
struct ext_fs {
	struct img *img;
	ext2_filsys fs;           /* under lock */
	pthread_mutex_t lock;
	uint32_t block_size;
	uint64_t nb_blocks;       /* blocks_count */
	uint32_t nb_inodes;
	uint32_t inode_size;
	bool csum;                /* metadata_csum: verify extent blocks */
	uint32_t csum_seed;       /* fs->csum_seed, copied at open */
	bool has_filetype;
	/* Journal overlay, sorted by fs_blk, one entry per block. */
	struct ext_overlay_ent *overlay;
	size_t nb_overlay;
	unsigned nb_replayed;
	/* Lookup hints: where the last lookup in a directory found its name
	 * (names are usually looked up in readdir order). Under lock. */
	struct {
		uint32_t dir;
		uint64_t cookie;
	} hint[64];
	pthread_mutex_t map_lock;
	struct ext_map_cache_ent map_cache[EXT_MAP_CACHE_SLOTS]; /* map_lock */
	char warning[160];
};

/* What the lock-free paths need of an inode, copied under the lock. */
struct ext_inode_info {
	uint32_t ino;
	uint32_t mode;
	uint32_t flags;
	uint32_t generation;
	uint64_t size;
	uint32_t block[EXT2_N_BLOCKS]; /* i_block as stored (little-endian) */
};

/* Reads [off, off + len) of the filesystem as replayed: the image, with
 * the journal's copies laid over the blocks it replays. -EIO past the
 * end of the image. Thread-safe. */
int ext_pread(struct ext_fs *ext, void *buf, size_t len, uint64_t off);

/* One run of a file's logical blocks. */
struct ext_run {
	uint64_t pblk;     /* first physical block; 0 for a hole */
	uint64_t nb_blks;  /* blocks in the run, >= 1 */
	bool unwritten;    /* allocated, reads as zeroes */
};

/* Maps logical block lblk of the inode (extents or block map) to the run
 * that starts there (data or hole, nb_blks up to the run's end).
 * Validates every header, index and pointer: -EIO for a damaged tree or
 * a block outside the filesystem, -EIO for a bad extent block checksum.
 * Thread-safe (reads through ext_pread; does not call libext2fs). */
int ext_map(struct ext_fs *ext, const struct ext_inode_info *ii,
	    uint64_t lblk, struct ext_run *run_r);

/* Replays the internal journal (jbd2) of a filesystem that needs
 * recovery into ext->overlay, using the still unreplayed view of fs to
 * find the journal inode. Fills ext->nb_replayed. -EIO (with err) for a
 * journal that cannot be replayed safely, -ENOTSUP for what we do not
 * replay (external journal, fast commits). */
int ext_journal_replay(struct ext_fs *ext, struct img_err *err);

/* Converts a libext2fs error code to a negative errno (-EIO for
 * corruption and checksum errors). */
int ext_errno(errcode_t code);

#endif
