/* journal.c: replay of an ext3/ext4 internal journal (jbd2) in memory.
 *
 * Format (big-endian, see the kernel's include/linux/jbd2.h and
 * Documentation/filesystems/ext4/journal.rst): block 0 of the journal
 * inode is the journal superblock (v1 or v2: block size, length, first
 * log block, sequence and block of the oldest live transaction,
 * features: revoke, 64-bit block numbers, async commit, checksums v2/v3).
 * The log is a ring of blocks [s_first, s_maxlen); each transaction is
 * descriptor blocks (tags naming the fs block each following log block
 * is a copy of), revoke blocks and a commit block, every header carrying
 * the transaction's sequence number.
 *
 * Three passes as the kernel's recovery.c does: scan (from s_start, while
 * each block's header has the expected sequence and every commit block
 * is sound, to the first transaction that did not commit), revoke
 * (collect revoked fs blocks with the newest sequence revoking each) and
 * replay (every tag not revoked by its own or a later transaction; a
 * later copy of a block replaces an earlier one).
 *
 * Nothing is written: the result is ext->overlay, sorted by fs block,
 * holding for each replayed block where its copy lies in the journal
 * (memory is O(tags), at most one entry per log block), and ext_pread
 * lays those copies over the image.
 *
 * Everything in the journal is untrusted: the scan never visits more
 * blocks than the log holds, sequences must follow one another, tags and
 * revoke records must stay inside their block, and a tag naming a block
 * outside the filesystem makes the whole replay fail with -EIO (the
 * kernel's mount would fail as well). Not done: the v1 crc32 commit
 * checksum (COMPAT_CHECKSUM) is not verified; fast commits (their blocks
 * follow the log) are refused with -ENOTSUP when the journal has any.
 */
#include "ext-int.h"

#include "checked.h"
#include "cleanup.h"
#include "endian.h"

#include <errno.h>
#include <inttypes.h>
#include <stdlib.h>
#include <string.h>

#define JBD2_MAGIC 0xC03B3998u
#define JBD2_DESCRIPTOR 1
#define JBD2_COMMIT 2
#define JBD2_SB_V1 3
#define JBD2_SB_V2 4
#define JBD2_REVOKE 5

#define JBD2_COMPAT_CHECKSUM 0x1
#define JBD2_INCOMPAT_REVOKE 0x1
#define JBD2_INCOMPAT_64BIT 0x2
#define JBD2_INCOMPAT_ASYNC_COMMIT 0x4
#define JBD2_INCOMPAT_CSUM_V2 0x8
#define JBD2_INCOMPAT_CSUM_V3 0x10
#define JBD2_INCOMPAT_FAST_COMMIT 0x20
#define JBD2_INCOMPAT_KNOWN                                                    \
	(JBD2_INCOMPAT_REVOKE | JBD2_INCOMPAT_64BIT |                          \
	 JBD2_INCOMPAT_ASYNC_COMMIT | JBD2_INCOMPAT_CSUM_V2 |                  \
	 JBD2_INCOMPAT_CSUM_V3 | JBD2_INCOMPAT_FAST_COMMIT)

#define JBD2_FLAG_ESCAPE 1
#define JBD2_FLAG_SAME_UUID 2
#define JBD2_FLAG_LAST_TAG 8

#define JBD2_CRC32C 4
/* Journals mke2fs makes are at most 2^20 blocks; refuse absurd ones. */
#define JBD2_MAX_BLOCKS (1u << 24)

enum pass { PASS_SCAN, PASS_REVOKE, PASS_REPLAY };

struct revoke_ent {
	uint64_t blk;
	uint32_t seq;
};

struct jrn {
	struct ext_fs *ext;
	struct ext_inode_info ii;
	uint32_t bs;
	uint32_t first, maxlen; /* the ring is [first, maxlen) */
	uint32_t start, start_seq, end_seq;
	uint32_t incompat;
	bool csum, csum_v3, is64;
	size_t tag_bytes;
	uint32_t seed;
	uint8_t *blk;  /* one block */
	uint8_t *data; /* one block, for tag checksums */
	struct revoke_ent *revokes;
	size_t nb_revokes, cap_revokes;
	struct ext_overlay_ent *tags; /* in replay order */
	size_t nb_tags, cap_tags;
	unsigned nb_bad_tag_csums;
};

static uint32_t crc32c(uint32_t crc, const void *p, size_t len)
{
	return ext2fs_crc32c_le(crc, p, len);
}

/* The fs block holding log block jblk. */
static int jrn_phys(struct jrn *j, uint32_t jblk, uint64_t *pblk_r)
{
	struct ext_run run;
	int ret;

	if (jblk >= j->maxlen)
		return -EIO;
	ret = ext_map(j->ext, &j->ii, jblk, &run);
	if (ret < 0)
		return ret;
	if (run.pblk == 0 || run.unwritten)
		return -EIO; /* a journal has no holes */
	*pblk_r = run.pblk;
	return 0;
}

static int jrn_read(struct jrn *j, uint32_t jblk, uint8_t *buf)
{
	uint64_t pblk;
	int ret = jrn_phys(j, jblk, &pblk);

	if (ret < 0)
		return ret;
	return ext_pread(j->ext, buf, j->bs, pblk * j->bs);
}

static uint32_t jrn_next(const struct jrn *j, uint32_t jblk)
{
	return jblk + 1 >= j->maxlen ? j->first : jblk + 1;
}

/* crc32c of the block with the 4 bytes at csum_off taken as zero. */
static uint32_t block_csum(const struct jrn *j, const uint8_t *b,
			   size_t csum_off)
{
	static const uint8_t zero[4];
	uint32_t crc = crc32c(j->seed, b, csum_off);

	crc = crc32c(crc, zero, 4);
	return crc32c(crc, b + csum_off + 4, j->bs - csum_off - 4);
}

static bool tail_csum_ok(const struct jrn *j, const uint8_t *b)
{
	if (!j->csum)
		return true;
	return block_csum(j, b, j->bs - 4) == get_be32(b + j->bs - 4);
}

static int grow(void **arr, size_t *cap, size_t need, size_t elem)
{
	size_t ncap;
	void *n;

	if (need <= *cap)
		return 0;
	ncap = *cap ? *cap * 2 : 256;
	while (ncap < need)
		ncap *= 2;
	n = realloc(*arr, ncap * elem);
	if (!n)
		return -ENOMEM;
	*arr = n;
	*cap = ncap;
	return 0;
}

static int cmp_revoke(const void *a, const void *b)
{
	const struct revoke_ent *x = a, *y = b;

	if (x->blk != y->blk)
		return x->blk < y->blk ? -1 : 1;
	return 0;
}

/* True when blk is revoked by transaction seq or a later one. */
static bool revoked(const struct jrn *j, uint64_t blk, uint32_t seq)
{
	size_t lo = 0, hi = j->nb_revokes;

	while (lo < hi) {
		size_t mid = lo + (hi - lo) / 2;

		if (j->revokes[mid].blk < blk)
			lo = mid + 1;
		else
			hi = mid;
	}
	/* Sequences wrap as the kernel's tid_geq: compare the difference. */
	for (; lo < j->nb_revokes && j->revokes[lo].blk == blk; lo++)
		if ((int32_t)(j->revokes[lo].seq - seq) >= 0)
			return true;
	return false;
}

static int scan_revoke_block(struct jrn *j, uint32_t seq, struct img_err *err)
{
	size_t used = get_be32(j->blk + 12);
	size_t rec = j->is64 ? 8 : 4;
	size_t limit = j->bs - (j->csum ? 4 : 0);

	if (used < 16 || used > limit)
		return img_err(err, -EIO,
			       "journal: revoke block of transaction %" PRIu32
			       " claims %zu bytes",
			       seq, used);
	for (size_t p = 16; p + rec <= used; p += rec) {
		uint64_t blk = j->is64 ? get_be64(j->blk + p)
				       : get_be32(j->blk + p);
		int ret = grow((void **)&j->revokes, &j->cap_revokes,
			       j->nb_revokes + 1, sizeof(*j->revokes));

		if (ret < 0)
			return img_err(err, ret, "journal: out of memory");
		j->revokes[j->nb_revokes++] =
			(struct revoke_ent){ .blk = blk, .seq = seq };
	}
	return 0;
}

/* Replay pass: records (or, with a bad checksum, skips) one tag whose
 * copy is log block jblk. */
static int replay_tag(struct jrn *j, uint32_t seq, uint64_t fs_blk,
		      uint32_t jblk, const uint8_t *tag, unsigned flags,
		      struct img_err *err)
{
	uint64_t pblk;
	int ret;

	if (revoked(j, fs_blk, seq))
		return 0;
	ret = jrn_phys(j, jblk, &pblk);
	if (ret < 0)
		return img_err(err, ret,
			       "journal: log block %" PRIu32 " unreadable", jblk);
	if (j->csum) {
		uint8_t be[4];
		uint32_t crc;

		ret = ext_pread(j->ext, j->data, j->bs, pblk * j->bs);
		if (ret < 0)
			return img_err(err, ret, "journal: log block %" PRIu32
				       " unreadable", jblk);
		put_be32(be, seq);
		crc = crc32c(j->seed, be, 4);
		crc = crc32c(crc, j->data, j->bs);
		if (j->csum_v3 ? get_be32(tag + 12) != crc
			       : get_be16(tag + 4) != (crc & 0xffff)) {
			/* As the kernel: this block is not replayed. */
			j->nb_bad_tag_csums++;
			return 0;
		}
	}
	ret = grow((void **)&j->tags, &j->cap_tags, j->nb_tags + 1,
		   sizeof(*j->tags));
	if (ret < 0)
		return img_err(err, ret, "journal: out of memory");
	j->tags[j->nb_tags++] = (struct ext_overlay_ent){
		.fs_blk = fs_blk,
		.log_blk = pblk,
		.escaped = flags & JBD2_FLAG_ESCAPE,
	};
	return 0;
}

/* Walks the descriptor block in j->blk (log block jblk, transaction seq);
 * *jblk_r becomes the block after its data blocks. Returns 1 when the
 * scan must end here (damaged descriptor). */
static int do_descriptor(struct jrn *j, enum pass pass, uint32_t seq,
			 uint32_t *jblk_r, uint32_t *visited,
			 struct img_err *err)
{
	size_t end = j->bs - (j->csum ? 4 : 0);
	uint32_t jblk = *jblk_r;
	size_t p = 12;
	CLEANUP_FREE uint8_t *desc = NULL;

	if (!tail_csum_ok(j, j->blk)) {
		if (pass == PASS_SCAN)
			return 1; /* a stale block: the log ends before it */
		return img_err(err, -EIO, "journal: descriptor block %" PRIu32
			       " has a bad checksum", jblk);
	}
	/* replay_tag reads other blocks: keep the descriptor apart. */
	desc = malloc(j->bs);
	if (!desc)
		return img_err(err, -ENOMEM, "journal: out of memory");
	memcpy(desc, j->blk, j->bs);
	while (p + j->tag_bytes <= end) {
		const uint8_t *tag = desc + p;
		uint64_t fs_blk = get_be32(tag);
		unsigned flags = j->csum_v3 ? get_be32(tag + 4)
					    : get_be16(tag + 6);

		if (j->is64)
			fs_blk |= (uint64_t)get_be32(tag + 8) << 32;
		jblk = jrn_next(j, jblk);
		if (++*visited > j->maxlen)
			return pass == PASS_SCAN
				       ? 1
				       : img_err(err, -EIO,
						 "journal: transaction %" PRIu32
						 " longer than the log",
						 seq);
		if (pass == PASS_REPLAY) {
			int ret;

			if (fs_blk >= j->ext->nb_blocks)
				return img_err(err, -EIO,
					       "journal: transaction %" PRIu32
					       " writes block %" PRIu64
					       " past the end of the filesystem",
					       seq, fs_blk);
			ret = replay_tag(j, seq, fs_blk, jblk, tag, flags, err);
			if (ret < 0)
				return ret;
		}
		p += j->tag_bytes;
		if (!(flags & JBD2_FLAG_SAME_UUID))
			p += 16;
		if (flags & JBD2_FLAG_LAST_TAG)
			break;
	}
	*jblk_r = jrn_next(j, jblk);
	return 0;
}

static int do_pass(struct jrn *j, enum pass pass, struct img_err *err)
{
	uint32_t jblk = j->start, seq = j->start_seq, visited = 0;
	int ret;

	for (;;) {
		if (pass != PASS_SCAN && seq == j->end_seq)
			break;
		if (++visited > j->maxlen) {
			if (pass == PASS_SCAN)
				break;
			return img_err(err, -EIO, "journal: log loops");
		}
		ret = jrn_read(j, jblk, j->blk);
		if (ret < 0)
			return img_err(err, ret, "journal: log block %" PRIu32
				       " unreadable", jblk);
		if (get_be32(j->blk) != JBD2_MAGIC ||
		    get_be32(j->blk + 8) != seq) {
			if (pass == PASS_SCAN)
				break;
			return img_err(err, -EIO, "journal: block %" PRIu32
				       " changed between passes", jblk);
		}
		switch (get_be32(j->blk + 4)) {
		case JBD2_DESCRIPTOR:
			ret = do_descriptor(j, pass, seq, &jblk, &visited, err);
			if (ret < 0)
				return ret;
			if (ret > 0)
				goto out;
			continue;
		case JBD2_COMMIT:
			if (j->csum && block_csum(j, j->blk, 16) !=
					       get_be32(j->blk + 16)) {
				if (pass == PASS_SCAN)
					goto out;
				return img_err(err, -EIO,
					       "journal: commit block %" PRIu32
					       " changed between passes",
					       jblk);
			}
			seq++;
			jblk = jrn_next(j, jblk);
			continue;
		case JBD2_REVOKE:
			if (pass == PASS_REVOKE) {
				if (!tail_csum_ok(j, j->blk))
					return img_err(err, -EIO,
						       "journal: revoke block %" PRIu32
						       " has a bad checksum",
						       jblk);
				ret = scan_revoke_block(j, seq, err);
				if (ret < 0)
					return ret;
			}
			jblk = jrn_next(j, jblk);
			continue;
		default:
			if (pass == PASS_SCAN)
				goto out;
			return img_err(err, -EIO, "journal: block %" PRIu32
				       " of unknown type", jblk);
		}
	}
out:
	if (pass == PASS_SCAN)
		j->end_seq = seq;
	return 0;
}

/* Sorts the tags by fs block (a stable merge sort of their indexes),
 * keeping for each block its last copy in replay order. */
static int build_overlay(struct jrn *j, struct img_err *err)
{
	const struct ext_overlay_ent *t = j->tags;
	size_t n = j->nb_tags, out = 0;
	CLEANUP_FREE size_t *pos = malloc((n ? n : 1) * sizeof(*pos));
	CLEANUP_FREE size_t *tmp = malloc((n ? n : 1) * sizeof(*tmp));
	struct ext_overlay_ent *sorted = malloc((n ? n : 1) * sizeof(*sorted));

	if (!pos || !tmp || !sorted) {
		free(sorted);
		return img_err(err, -ENOMEM, "journal: out of memory");
	}
	for (size_t i = 0; i < n; i++)
		pos[i] = i;
	for (size_t width = 1; width < n; width *= 2) {
		for (size_t lo = 0; lo < n; lo += 2 * width) {
			size_t mid = MIN(lo + width, n);
			size_t hi = MIN(lo + 2 * width, n);
			size_t a = lo, b = mid, k = lo;

			while (a < mid && b < hi) {
				if (t[pos[b]].fs_blk < t[pos[a]].fs_blk)
					tmp[k++] = pos[b++];
				else
					tmp[k++] = pos[a++];
			}
			while (a < mid)
				tmp[k++] = pos[a++];
			while (b < hi)
				tmp[k++] = pos[b++];
		}
		memcpy(pos, tmp, n * sizeof(*pos));
	}
	for (size_t i = 0; i < n; i++) {
		const struct ext_overlay_ent *e = &t[pos[i]];

		if (out > 0 && sorted[out - 1].fs_blk == e->fs_blk)
			sorted[out - 1] = *e; /* a newer copy */
		else
			sorted[out++] = *e;
	}
	j->ext->overlay = sorted;
	j->ext->nb_overlay = out;
	return 0;
}

static int load_jsb(struct jrn *j, struct img_err *err)
{
	const uint8_t *sb = j->blk;
	uint32_t type, maxlen, nb_fc = 0;
	int ret;

	/* Until the superblock says more, the log is the inode's size. */
	j->maxlen = (uint32_t)MIN(j->ii.size / j->bs, JBD2_MAX_BLOCKS);
	ret = jrn_read(j, 0, j->blk);
	if (ret < 0)
		return img_err(err, ret, "journal: superblock unreadable");
	type = get_be32(sb + 4);
	if (get_be32(sb) != JBD2_MAGIC ||
	    (type != JBD2_SB_V1 && type != JBD2_SB_V2))
		return img_err(err, -EIO, "journal: no jbd2 superblock");
	if (get_be32(sb + 12) != j->bs)
		return img_err(err, -EIO, "journal: block size %" PRIu32
			       " differs from the filesystem's",
			       get_be32(sb + 12));
	maxlen = get_be32(sb + 16);
	j->first = get_be32(sb + 20);
	j->start_seq = get_be32(sb + 24);
	j->start = get_be32(sb + 28);
	if (type == JBD2_SB_V2) {
		j->incompat = get_be32(sb + 40);
		if (j->incompat & ~JBD2_INCOMPAT_KNOWN)
			return img_err(err, -ENOTSUP,
				       "journal: unknown features 0x%" PRIx32,
				       j->incompat & ~JBD2_INCOMPAT_KNOWN);
		if (j->incompat & JBD2_INCOMPAT_FAST_COMMIT) {
			nb_fc = get_be32(sb + 0x54);
			if (nb_fc == 0)
				nb_fc = 256; /* the kernel's default */
		}
	}
	if (maxlen > j->ii.size / j->bs)
		maxlen = (uint32_t)MIN(j->ii.size / j->bs, UINT32_MAX);
	if (maxlen > JBD2_MAX_BLOCKS || nb_fc >= maxlen)
		return img_err(err, -EIO, "journal: %" PRIu32 " blocks", maxlen);
	maxlen -= nb_fc;
	if (maxlen < 2 || j->first == 0 || j->first >= maxlen ||
	    (j->start != 0 && (j->start < j->first || j->start >= maxlen)))
		return img_err(err, -EIO,
			       "journal: log [%" PRIu32 ", %" PRIu32
			       ") start %" PRIu32 " out of range",
			       j->first, maxlen, j->start);
	j->maxlen = maxlen;
	j->is64 = j->incompat & JBD2_INCOMPAT_64BIT;
	j->csum_v3 = j->incompat & JBD2_INCOMPAT_CSUM_V3;
	j->csum = j->csum_v3 || (j->incompat & JBD2_INCOMPAT_CSUM_V2);
	if (j->csum) {
		uint8_t copy[1024];

		if (sb[0x50] != JBD2_CRC32C)
			return img_err(err, -ENOTSUP,
				       "journal: checksum type %u", sb[0x50]);
		memcpy(copy, sb, sizeof(copy));
		memset(copy + 0xFC, 0, 4);
		if (crc32c(~0u, copy, sizeof(copy)) != get_be32(sb + 0xFC))
			return img_err(err, -EIO,
				       "journal: superblock checksum mismatch");
		j->seed = crc32c(~0u, sb + 0x30, 16);
	}
	if (j->csum_v3)
		j->tag_bytes = 16;
	else
		j->tag_bytes = (j->csum ? 14 : 12) - (j->is64 ? 0 : 4);
	if (nb_fc && j->start)
		return img_err(err, -ENOTSUP,
			       "journal: fast commits are not replayed");
	return 0;
}

int ext_journal_replay(struct ext_fs *ext, struct img_err *err)
{
	ext2_filsys fs = ext->fs;
	uint32_t jino = fs->super->s_journal_inum;
	struct ext2_inode_large in;
	struct jrn j = { .ext = ext, .bs = ext->block_size };
	errcode_t code;
	int ret;

	if (jino == 0 || ext2fs_has_feature_journal_dev(fs->super))
		return img_err(err, -ENOTSUP,
			       "needs recovery from an external journal, "
			       "which imgfs does not replay");
	memset(&in, 0, sizeof(in));
	code = ext2fs_read_inode_full(fs, jino, (struct ext2_inode *)&in,
				      sizeof(in));
	if (code)
		return img_err(err, ext_errno(code),
			       "journal inode %" PRIu32 " unreadable: %s", jino,
			       error_message(code));
	j.ii.ino = jino;
	j.ii.mode = in.i_mode;
	j.ii.flags = in.i_flags;
	j.ii.generation = in.i_generation;
	j.ii.size = EXT2_I_SIZE(&in);
	memcpy(j.ii.block, in.i_block, sizeof(j.ii.block));
	j.blk = malloc(j.bs);
	j.data = malloc(j.bs);
	if (!j.blk || !j.data) {
		ret = img_err(err, -ENOMEM, "journal: out of memory");
		goto out;
	}
	ret = load_jsb(&j, err);
	if (ret < 0 || j.start == 0)
		goto out; /* start 0: a clean journal, nothing to replay */
	ret = do_pass(&j, PASS_SCAN, err);
	if (ret < 0)
		goto out;
	ret = do_pass(&j, PASS_REVOKE, err);
	if (ret < 0)
		goto out;
	if (j.nb_revokes)
		qsort(j.revokes, j.nb_revokes, sizeof(*j.revokes), cmp_revoke);
	ret = do_pass(&j, PASS_REPLAY, err);
	if (ret < 0)
		goto out;
	ret = build_overlay(&j, err);
	if (ret < 0)
		goto out;
	ext->nb_replayed = j.end_seq - j.start_seq;
	if (j.nb_bad_tag_csums)
		snprintf(ext->warning, sizeof(ext->warning),
			 "journal: %u replayed blocks had bad checksums and "
			 "were left out",
			 j.nb_bad_tag_csums);
out:
	free(j.blk);
	free(j.data);
	free(j.revokes);
	free(j.tags);
	return ret;
}
