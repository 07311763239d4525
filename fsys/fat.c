/* fat.c: the FAT12/16/32 driver (read-only, VFAT long names).
 *
 * Written from Microsoft's FAT specification ("FAT32 File System
 * Specification", 1.03): the BPB in the boot sector, the FAT type decided
 * by the cluster count (< 4085 FAT12, < 65525 FAT16, else FAT32) unless
 * the BPB has no 16-bit FAT size (then FAT32, as Linux and mtools read it),
 * the fixed root directory region of FAT12/16 and the root cluster of
 * FAT32, 32-byte directory entries, VFAT long-name entries (sequence
 * numbers, 0x40 last-entry flag, checksum of the short name), and the
 * Windows NT case bits of 8.3 names (0x08 lowercase base, 0x10 lowercase
 * extension, which mtools and Windows write).
 *
 * Inode numbers. FAT has no inodes; an object is named by where its short
 * directory entry lies: ino = (byte offset of the entry in the filesystem)
 * / 32 + FAT_INO_BASE, and the root (which has no entry) is FAT_ROOT_INO.
 * getattr decodes the number back to that offset and re-reads the entry,
 * so nothing is remembered per inode. Numbers are stable while the image
 * does not change. Hard links do not exist: nlink is 1 for files and, as
 * the kernel's vfat counts it, 2 + the number of subdirectories for a
 * directory (one scan of that directory, bounded like every scan, and
 * remembered for the last FAT_NB_NLINKS directories).
 *
 * Metadata conventions (those of the kernel's vfat with default options
 * and umask 022, except that files are not executable): directories
 * 0755, files 0644, or 0444 when the read-only attribute is set (on
 * directories the attribute is ignored, as the kernel does); uid and gid
 * 0, left for the FUSE layer to map to the mounting user. FAT stores
 * local time without a zone: it is read as UTC (the kernel's default
 * without tz=/time_offset=). mtime is the write time (2 s resolution),
 * ctime equals mtime (as current kernels do), atime is the access date
 * (midnight), btime is the creation time with its 10 ms field. A
 * directory's size is its cluster chain's length in bytes (the fixed root
 * of FAT12/16: its entry count * 32); st_blocks counts whole clusters.
 *
 * Extended attributes (every object but the root):
 *   user.fat.attrs      the attribute bits set, as words separated by
 *                       commas in this order: readonly, hidden, system,
 *                       archive (e.g. "hidden,archive"; "" when none)
 *   user.fat.shortname  the 8.3 name as stored (0x05 read as 0xE5, case
 *                       bits not applied), e.g. "README~1.TXT"
 *
 * Names: the long name when its entries are complete (every sequence
 * number from the last down to 1, each with the short entry's checksum),
 * converted from UTF-16 to UTF-8 (surrogate pairs joined, a lone
 * surrogate becomes U+FFFD); otherwise the short name, its high bytes
 * read as code page 437 (the kernel's default codepage), with the NT case
 * bits applied. A long name holding '/' or being "." or ".." is ignored.
 * Lookups are case-insensitive, as FAT is (ASCII, Latin-1, Latin
 * Extended-A, Greek and Cyrillic simple folding), on the long and the
 * short name; a byte-exact match wins over a case-insensitive one.
 *
 * Damage. Every cluster chain is checked before it is used: each cluster
 * in [2, max], each FAT entry on the way a valid next cluster or
 * end-of-chain (free, bad and reserved values, and out-of-range numbers,
 * end the usable part), and a loop ends it where the first cluster
 * repeats (Brent's cycle detection: constant memory). A walk never goes
 * past what the object needs: the file's size in clusters, or 2 MiB for a
 * directory (the format's limit of 65536 entries). Reading past the
 * usable part of a file gives -EIO; a directory lists what it has, then
 * -EIO. A directory cycle of any depth (a subdirectory entry leading
 * back to the root or to any ancestor) is caught by the rule that a
 * directory's ".." names the directory whose entry leads to it (see
 * dir_is_cycle): the looping entry is listed, and lookup, getattr,
 * readdir and lookup in it by inode number give -EIO for it alone.
 *
 * Concurrency and memory. One mutex guards the FAT cache (FAT_NB_CHUNKS
 * chunks of FAT_CHUNK_BYTES, read on demand, direct-mapped: 2 MiB at
 * most) and the chain cache (FAT_NB_SLOTS checked chains with the
 * last position reached, so sequential reads do not re-walk from the
 * start). File data is read with img_pread outside the lock, one call
 * per run of contiguous clusters. readdir streams: its cookie is the
 * index of the next 32-byte entry, and only one block of entries is held
 * at a time. A lookup scans from where the last match in that directory
 * was (FAT_NB_HINTS directories remembered), then wraps, so looking every
 * name up in readdir order is linear, not quadratic. The free cluster
 * count for statfs is counted from the FAT once, on first use (FSInfo's
 * hint may be stale, so it is not trusted).
 *
 * Probe: a jump instruction, the 0x55AA signature at 510, not NTFS or
 * exFAT, no ext superblock magic, and a FAT type string or a plausible
 * BPB; open then checks every BPB field and refuses with one line naming
 * the bad one.
 *
 * Not done: writing; code pages other than 437 for short names; the
 * FAT32 backup boot sector is not consulted when the first is damaged.
 */
#include "fsys-int.h"

#include "checked.h"
#include "cleanup.h"
#include "endian.h"

#include <errno.h>
#include <inttypes.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#define FAT_ROOT_INO 1
#define FAT_INO_BASE 16

#define FAT_CHUNK_BYTES 4096u
#define FAT_NB_CHUNKS 512
#define FAT_NB_SLOTS 64
#define FAT_NB_HINTS 16
#define FAT_NB_NLINKS 64
/* The format's limit: 65536 entries of 32 bytes. */
#define FAT_MAX_DIR_BYTES (2u << 20)
#define FAT_DIR_BLOCK 8192
#define FAT_LFN_MAX 20
#define FAT_NAME_MAX 1024

#define ATTR_RO 0x01
#define ATTR_HIDDEN 0x02
#define ATTR_SYSTEM 0x04
#define ATTR_VOLUME 0x08
#define ATTR_DIR 0x10
#define ATTR_ARCHIVE 0x20
#define ATTR_LFN 0x0f

/* Fields of a 32-byte directory entry. */
#define DE_NTRES 12
#define DE_CRT_CS 13
#define DE_CRT_TIME 14
#define DE_CRT_DATE 16
#define DE_ACC_DATE 18
#define DE_CLUS_HI 20
#define DE_WRT_TIME 22
#define DE_WRT_DATE 24
#define DE_CLUS_LO 26
#define DE_SIZE 28

struct fat_chunk {
	uint8_t *data;
	uint64_t index; /* chunk number in the FAT */
	bool valid;
};

/* A checked chain: its first `valid` clusters are usable; `complete`
 * says the chain covers what the object needs (files) or ends with an
 * end-of-chain mark within the limit (directories). */
struct fat_chain {
	uint64_t ino;
	uint32_t start;
	uint32_t need;  /* clusters the object needs (the walk's bound) */
	uint32_t valid;
	bool complete;
	/* The last position reached: cluster number of chain index. */
	uint32_t hint_idx, hint_cluster;
	uint64_t stamp; /* 0: empty */
};

/* Locking: everything above `lock` is set by fat_open and only read
 * afterwards, by any thread, with no lock. Everything below it (the
 * caches of FAT chunks and checked chains, the free count, the lookup
 * and nlink hints) is guarded by lock; functions ending in _locked expect
 * it held. */
struct fat {
	struct img *img;
	unsigned bits; /* 12, 16 or 32 */
	uint32_t bytes_per_sector;
	uint32_t cluster_bytes;
	uint64_t fat_off;     /* the FAT in use */
	uint64_t fat_bytes;   /* the part of it that maps clusters 0..max */
	uint64_t root_off;    /* FAT12/16: the fixed root region */
	uint32_t root_entries;
	uint64_t data_off;    /* cluster 2 */
	uint32_t nb_clusters;
	uint32_t max_cluster; /* nb_clusters + 1 */
	uint32_t root_cluster; /* FAT32 */
	char label[12];
	char uuid[10];
	char warning[160];

	pthread_mutex_t lock;
	uint64_t tick;
	struct fat_chunk chunks[FAT_NB_CHUNKS];
	struct fat_chain chains[FAT_NB_SLOTS];
	bool free_known;
	uint64_t free_clusters;
	/* Where the last lookup in a directory matched. */
	struct {
		uint64_t dir, index;
	} hints[FAT_NB_HINTS];
	unsigned next_hint;
	/* nlink of recently stat'ed directories (0: empty slot). */
	struct {
		uint64_t dir;
		uint32_t nlink;
	} nlinks[FAT_NB_NLINKS];
	unsigned next_nlink;
};

/* A directory to list: the fixed root region, or a cluster chain. */
struct fat_dir {
	uint64_t ino;
	bool fixed;
	uint32_t start;  /* first cluster (chain) */
};

/* ------------------------------------------------------------------ */
/* The FAT */

static int fat_chunk_locked(struct fat *fs, uint64_t index,
			    struct fat_chunk **c_r)
{
	/* Direct-mapped: a chain that jumps all over the FAT costs one
	 * small read per step, never a scan of the cache. */
	struct fat_chunk *c = &fs->chunks[index % FAT_NB_CHUNKS];
	uint64_t off;
	size_t len;

	if (c->valid && c->index == index) {
		*c_r = c;
		return 0;
	}
	off = index * FAT_CHUNK_BYTES;
	len = MIN((uint64_t)FAT_CHUNK_BYTES, fs->fat_bytes - off);
	if (!c->data) {
		c->data = malloc(FAT_CHUNK_BYTES);
		if (!c->data)
			return -ENOMEM;
	}
	c->valid = false;
	if (img_pread(fs->img, c->data, len, fs->fat_off + off) < 0)
		return -EIO;
	c->index = index;
	c->valid = true;
	*c_r = c;
	return 0;
}

static int fat_byte_locked(struct fat *fs, uint64_t off, uint8_t *b_r)
{
	struct fat_chunk *c;
	int ret;

	if (off >= fs->fat_bytes)
		return -EIO;
	ret = fat_chunk_locked(fs, off / FAT_CHUNK_BYTES, &c);
	if (ret < 0)
		return ret;
	*b_r = c->data[off % FAT_CHUNK_BYTES];
	return 0;
}

/* The FAT entry of cluster nr (0 <= nr <= max_cluster), masked. */
static int fat_get_locked(struct fat *fs, uint32_t nr, uint32_t *v_r)
{
	struct fat_chunk *c;
	uint64_t off;
	uint8_t lo, hi;
	int ret;

	if (fs->bits == 12) {
		off = (uint64_t)nr + nr / 2;
		ret = fat_byte_locked(fs, off, &lo);
		if (ret == 0)
			ret = fat_byte_locked(fs, off + 1, &hi);
		if (ret < 0)
			return ret;
		*v_r = nr & 1 ? (uint32_t)(lo >> 4) | (uint32_t)hi << 4
			      : lo | (uint32_t)(hi & 0x0f) << 8;
		return 0;
	}
	off = (uint64_t)nr * (fs->bits / 8);
	if (off + fs->bits / 8 > fs->fat_bytes)
		return -EIO;
	/* Entries are aligned and chunks a multiple of 4: never split. */
	ret = fat_chunk_locked(fs, off / FAT_CHUNK_BYTES, &c);
	if (ret < 0)
		return ret;
	if (fs->bits == 16)
		*v_r = get_le16(c->data + off % FAT_CHUNK_BYTES);
	else
		*v_r = get_le32(c->data + off % FAT_CHUNK_BYTES) & 0x0fffffff;
	return 0;
}

static bool fat_is_eoc(const struct fat *fs, uint32_t v)
{
	switch (fs->bits) {
	case 12: return v >= 0xff8;
	case 16: return v >= 0xfff8;
	default: return v >= 0x0ffffff8;
	}
}

static bool fat_is_cluster(const struct fat *fs, uint32_t v)
{
	return v >= 2 && v <= fs->max_cluster;
}

/* ------------------------------------------------------------------ */
/* Chains */

/* Checks the chain from start over at most need clusters (see the top
 * comment) and fills ch->valid and ch->complete. dir: the chain must end
 * with an end-of-chain mark within need clusters. */
static int chain_check_locked(struct fat *fs, struct fat_chain *ch, bool dir)
{
	uint32_t c = ch->start, tortoise, power = 1, lam = 0, v;
	uint32_t valid = 0;
	bool complete = false, loop = false;
	int ret;

	tortoise = c;
	for (uint32_t i = 0; i < ch->need; i++) {
		if (!fat_is_cluster(fs, c))
			break;
		if (i > 0) {
			/* Brent: c is chain index i; compare with the
			 * tortoise, moved to the hare at powers of two. */
			if (c == tortoise) {
				loop = true;
				break;
			}
			if (power == lam) {
				tortoise = c;
				power *= 2;
				lam = 0;
			}
		}
		lam++;
		ret = fat_get_locked(fs, c, &v);
		if (ret < 0)
			return ret;
		if (fat_is_eoc(fs, v)) {
			valid = i + 1;
			complete = dir || valid == ch->need;
			break;
		}
		if (!fat_is_cluster(fs, v))
			break;
		valid = i + 1;
		if (!dir && valid == ch->need) {
			complete = true;
			break;
		}
		c = v;
	}
	if (loop) {
		/* The cycle's length is lam; the first repeated index is
		 * mu + lam where mu is found by walking two cursors lam
		 * apart from the start. */
		uint32_t p = ch->start, q = ch->start, mu = 0;

		for (uint32_t i = 0; i < lam; i++) {
			ret = fat_get_locked(fs, q, &q);
			if (ret < 0)
				return ret;
		}
		while (p != q && mu < valid) {
			ret = fat_get_locked(fs, p, &p);
			if (ret == 0)
				ret = fat_get_locked(fs, q, &q);
			if (ret < 0)
				return ret;
			mu++;
		}
		valid = MIN(valid, mu + lam);
		complete = false;
	}
	ch->valid = valid;
	ch->complete = complete;
	ch->hint_idx = 0;
	ch->hint_cluster = ch->start;
	return 0;
}

/* The checked chain of object ino starting at start, from the cache or
 * checked now. */
static int chain_get_locked(struct fat *fs, uint64_t ino, uint32_t start,
			    uint32_t need, bool dir, struct fat_chain **ch_r)
{
	struct fat_chain *victim = NULL, *ch;
	int ret;

	for (unsigned i = 0; i < FAT_NB_SLOTS; i++) {
		ch = &fs->chains[i];
		if (ch->stamp && ch->ino == ino && ch->start == start &&
		    ch->need == need) {
			ch->stamp = ++fs->tick;
			*ch_r = ch;
			return 0;
		}
		if (!victim || ch->stamp < victim->stamp)
			victim = ch;
	}
	victim->stamp = 0;
	victim->ino = ino;
	victim->start = start;
	victim->need = need;
	ret = chain_check_locked(fs, victim, dir);
	if (ret < 0)
		return ret;
	victim->stamp = ++fs->tick;
	*ch_r = victim;
	return 0;
}

/* The cluster at index idx (< ch->valid) of a checked chain, and how
 * many clusters from it on are contiguous (at most max_run, staying
 * within the valid part). */
static int chain_map_locked(struct fat *fs, struct fat_chain *ch,
			    uint32_t idx, uint32_t max_run, uint32_t *c_r,
			    uint32_t *run_r)
{
	uint32_t i = 0, c = ch->start, v, run = 1;
	int ret;

	if (ch->hint_idx <= idx) {
		i = ch->hint_idx;
		c = ch->hint_cluster;
	}
	for (; i < idx; i++) {
		ret = fat_get_locked(fs, c, &c);
		if (ret < 0)
			return ret;
	}
	while (run < max_run && idx + run < ch->valid) {
		ret = fat_get_locked(fs, c + run - 1, &v);
		if (ret < 0)
			return ret;
		if (v != c + run)
			break;
		run++;
	}
	ch->hint_idx = idx + run - 1;
	ch->hint_cluster = c + run - 1;
	*c_r = c;
	*run_r = run;
	return 0;
}

static uint64_t cluster_off(const struct fat *fs, uint32_t c)
{
	return fs->data_off + (uint64_t)(c - 2) * fs->cluster_bytes;
}

/* ------------------------------------------------------------------ */
/* Names */

static const uint16_t cp437_high[128] = {
	0x00c7, 0x00fc, 0x00e9, 0x00e2, 0x00e4, 0x00e0, 0x00e5, 0x00e7,
	0x00ea, 0x00eb, 0x00e8, 0x00ef, 0x00ee, 0x00ec, 0x00c4, 0x00c5,
	0x00c9, 0x00e6, 0x00c6, 0x00f4, 0x00f6, 0x00f2, 0x00fb, 0x00f9,
	0x00ff, 0x00d6, 0x00dc, 0x00a2, 0x00a3, 0x00a5, 0x20a7, 0x0192,
	0x00e1, 0x00ed, 0x00f3, 0x00fa, 0x00f1, 0x00d1, 0x00aa, 0x00ba,
	0x00bf, 0x2310, 0x00ac, 0x00bd, 0x00bc, 0x00a1, 0x00ab, 0x00bb,
	0x2591, 0x2592, 0x2593, 0x2502, 0x2524, 0x2561, 0x2562, 0x2556,
	0x2555, 0x2563, 0x2551, 0x2557, 0x255d, 0x255c, 0x255b, 0x2510,
	0x2514, 0x2534, 0x252c, 0x251c, 0x2500, 0x253c, 0x255e, 0x255f,
	0x255a, 0x2554, 0x2569, 0x2566, 0x2560, 0x2550, 0x256c, 0x2567,
	0x2568, 0x2564, 0x2565, 0x2559, 0x2558, 0x2552, 0x2553, 0x256b,
	0x256a, 0x2518, 0x250c, 0x2588, 0x2584, 0x258c, 0x2590, 0x2580,
	0x03b1, 0x00df, 0x0393, 0x03c0, 0x03a3, 0x03c3, 0x00b5, 0x03c4,
	0x03a6, 0x0398, 0x03a9, 0x03b4, 0x221e, 0x03c6, 0x03b5, 0x2229,
	0x2261, 0x00b1, 0x2265, 0x2264, 0x2320, 0x2321, 0x00f7, 0x2248,
	0x00b0, 0x2219, 0x00b7, 0x221a, 0x207f, 0x00b2, 0x25a0, 0x00a0,
};

/* Appends code point u as UTF-8; returns the new length (cap bytes,
 * room for a NUL kept). */
static size_t utf8_put(char *out, size_t len, size_t cap, uint32_t u)
{
	char b[4];
	size_t n;

	if (u < 0x80) {
		b[0] = (char)u;
		n = 1;
	} else if (u < 0x800) {
		b[0] = (char)(0xc0 | u >> 6);
		b[1] = (char)(0x80 | (u & 0x3f));
		n = 2;
	} else if (u < 0x10000) {
		b[0] = (char)(0xe0 | u >> 12);
		b[1] = (char)(0x80 | ((u >> 6) & 0x3f));
		b[2] = (char)(0x80 | (u & 0x3f));
		n = 3;
	} else {
		b[0] = (char)(0xf0 | u >> 18);
		b[1] = (char)(0x80 | ((u >> 12) & 0x3f));
		b[2] = (char)(0x80 | ((u >> 6) & 0x3f));
		b[3] = (char)(0x80 | (u & 0x3f));
		n = 4;
	}
	if (len + n >= cap)
		return len;
	memcpy(out + len, b, n);
	out[len + n] = '\0';
	return len + n;
}

/* Decodes one code point of s (invalid bytes stand for themselves, as
 * 0xDC00 + byte, so they compare only with the same byte). */
static uint32_t utf8_get(const char **s)
{
	const uint8_t *p = (const uint8_t *)*s;
	uint32_t u;
	int n;

	if (p[0] < 0x80) {
		*s += 1;
		return p[0];
	}
	if ((p[0] & 0xe0) == 0xc0) {
		u = p[0] & 0x1f;
		n = 1;
	} else if ((p[0] & 0xf0) == 0xe0) {
		u = p[0] & 0x0f;
		n = 2;
	} else if ((p[0] & 0xf8) == 0xf0) {
		u = p[0] & 0x07;
		n = 3;
	} else {
		*s += 1;
		return 0xdc00 + p[0];
	}
	for (int i = 1; i <= n; i++) {
		if ((p[i] & 0xc0) != 0x80) {
			*s += 1;
			return 0xdc00 + p[0];
		}
		u = u << 6 | (p[i] & 0x3f);
	}
	*s += n + 1;
	return u;
}

/* Simple case folding (to lowercase) of the scripts FAT names commonly
 * use. */
static uint32_t fold(uint32_t u)
{
	if (u >= 'A' && u <= 'Z')
		return u + 32;
	if (u < 0xc0)
		return u;
	if ((u >= 0xc0 && u <= 0xde && u != 0xd7))
		return u + 32;
	if (u >= 0x100 && u <= 0x137 && !(u & 1))
		return u + 1;
	if (u >= 0x139 && u <= 0x148 && (u & 1))
		return u + 1;
	if (u >= 0x14a && u <= 0x177 && !(u & 1))
		return u + 1;
	if (u == 0x178)
		return 0xff;
	if (u >= 0x179 && u <= 0x17e && (u & 1))
		return u + 1;
	if (u >= 0x391 && u <= 0x3ab && u != 0x3a2)
		return u + 32;
	if (u >= 0x410 && u <= 0x42f)
		return u + 32;
	if (u >= 0x400 && u <= 0x40f)
		return u + 80;
	return u;
}

static bool name_equal_fold(const char *a, const char *b)
{
	while (*a && *b)
		if (fold(utf8_get(&a)) != fold(utf8_get(&b)))
			return false;
	return !*a && !*b;
}

static uint8_t lfn_checksum(const uint8_t *name11)
{
	uint8_t sum = 0;

	for (int i = 0; i < 11; i++)
		sum = (uint8_t)(((sum & 1) << 7) + (sum >> 1) + name11[i]);
	return sum;
}

/* The short name of entry de; lower: apply the NT case bits; utf8: high
 * bytes as code page 437 (else kept as bytes, for user.fat.shortname,
 * which shows them as code page 437 too). */
static void short_name(const uint8_t *de, bool lower, char *out, size_t cap)
{
	size_t len = 0;
	int base_end = 8, ext_end = 11;

	out[0] = '\0';
	while (base_end > 0 && de[base_end - 1] == ' ')
		base_end--;
	while (ext_end > 8 && de[ext_end - 1] == ' ')
		ext_end--;
	for (int i = 0; i < ext_end; i++) {
		uint8_t b = de[i];
		bool low = lower && (de[DE_NTRES] & (i < 8 ? 0x08 : 0x10));

		if (i >= base_end && i < 8)
			continue;
		if (i == 8)
			len = utf8_put(out, len, cap, '.');
		if (i == 0 && b == 0x05)
			b = 0xe5;
		if (b < 0x20 || b == '/')
			b = '_';
		if (low && b >= 'A' && b <= 'Z')
			b += 32;
		len = utf8_put(out, len, cap, b < 0x80 ? b : cp437_high[b - 0x80]);
	}
	if (len == 0)
		utf8_put(out, 0, cap, '_');
}

static bool is_dot_entry(const uint8_t *de)
{
	if (de[0] != '.')
		return false;
	for (int i = de[1] == '.' ? 2 : 1; i < 11; i++)
		if (de[i] != ' ')
			return false;
	return true;
}

/* ------------------------------------------------------------------ */
/* Directory walks */

struct fat_dirent {
	const uint8_t *de;     /* the short entry */
	uint64_t pos;          /* its byte offset in the filesystem */
	uint64_t next_index;   /* the entry index after it */
	const char *name;      /* long name if valid, else short_name */
	const char *short_name; /* case bits applied */
};

/* Returns 0 to go on, non-zero to stop. */
typedef int (*fat_dir_fn)(void *ctx, const struct fat_dirent *d);

struct lfn_state {
	uint16_t units[FAT_LFN_MAX * 13];
	int total;  /* 0: no sequence in progress */
	int expect; /* the sequence number wanted next */
	uint8_t csum;
};

static void lfn_add(struct lfn_state *l, const uint8_t *de)
{
	static const uint8_t at[13] = { 1, 3, 5, 7, 9, 14, 16, 18, 20, 22, 24,
					28, 30 };
	int seq = de[0] & 0x1f;

	if (de[0] & 0x40) {
		l->total = 0;
		if (seq == 0 || seq > FAT_LFN_MAX)
			return;
		l->total = seq;
		l->expect = seq;
		l->csum = de[13];
	}
	if (!l->total || seq != l->expect || de[13] != l->csum ||
	    de[12] != 0 || get_le16(de + DE_CLUS_LO) != 0) {
		l->total = 0;
		return;
	}
	for (int i = 0; i < 13; i++)
		l->units[(seq - 1) * 13 + i] = get_le16(de + at[i]);
	l->expect--;
}

/* The long name of the sequence ending at short entry de, in out;
 * false when there is none or it is unusable. */
static bool lfn_name(const struct lfn_state *l, const uint8_t *de, char *out,
		     size_t cap)
{
	size_t len = 0, n;

	if (!l->total || l->expect != 0 || l->csum != lfn_checksum(de))
		return false;
	n = (size_t)l->total * 13;
	out[0] = '\0';
	for (size_t i = 0; i < n && l->units[i]; i++) {
		uint32_t u = l->units[i];

		if (u >= 0xd800 && u < 0xdc00 && i + 1 < n &&
		    l->units[i + 1] >= 0xdc00 && l->units[i + 1] < 0xe000) {
			u = 0x10000 + ((u - 0xd800) << 10) +
			    (l->units[i + 1] - 0xdc00);
			i++;
		} else if (u >= 0xd800 && u < 0xe000) {
			u = 0xfffd;
		}
		if (u == '/')
			return false;
		len = utf8_put(out, len, cap, u);
	}
	return len > 0 && strcmp(out, ".") != 0 && strcmp(out, "..") != 0;
}

/* Calls fn for each entry of dir from entry index on, up to entry
 * index end (exclusive). names: fill the names (else d->name and
 * d->short_name are ""). Returns 1 when fn stopped, 0 at the end, -EIO
 * when the directory is damaged (after the entries before the damage
 * were given). */
static int dir_walk(struct fat *fs, const struct fat_dir *dir, uint64_t index,
		    uint64_t end, bool names, fat_dir_fn fn, void *ctx)
{
	CLEANUP_FREE struct lfn_state *lfn = NULL;
	CLEANUP_FREE uint8_t *blk = NULL;
	char long_buf[FAT_NAME_MAX], short_buf[64];
	uint64_t nb_entries, per_cluster = fs->cluster_bytes / 32;
	uint32_t need = MAX(1u, FAT_MAX_DIR_BYTES / fs->cluster_bytes);
	struct fat_chain *ch = NULL;
	bool complete = true;
	int ret;

	if (dir->fixed) {
		nb_entries = fs->root_entries;
	} else {
		LOCK_FOR_SCOPE(&fs->lock);

		ret = chain_get_locked(fs, dir->ino, dir->start, need, true,
				       &ch);
		if (ret < 0)
			return ret;
		nb_entries = (uint64_t)ch->valid * per_cluster;
		complete = ch->complete;
	}
	if (end < nb_entries) {
		nb_entries = end;
		complete = true;
	}
	lfn = calloc(1, sizeof(*lfn));
	blk = malloc(FAT_DIR_BLOCK);
	if (!lfn || !blk)
		return -ENOMEM;
	while (index < nb_entries) {
		uint64_t off, n;

		if (dir->fixed) {
			off = fs->root_off + index * 32;
			n = MIN(nb_entries - index, FAT_DIR_BLOCK / 32);
		} else {
			uint32_t c, run, in = (uint32_t)(index % per_cluster);
			LOCK_FOR_SCOPE(&fs->lock);

			/* The slot may have been reused by another thread:
			 * take it again (same key, so the same answer). */
			ret = chain_get_locked(fs, dir->ino, dir->start, need,
					       true, &ch);
			if (ret == 0)
				ret = chain_map_locked(
					fs, ch, (uint32_t)(index / per_cluster),
					1, &c, &run);
			if (ret < 0)
				return ret;
			off = cluster_off(fs, c) + (uint64_t)in * 32;
			n = MIN(per_cluster - in, FAT_DIR_BLOCK / 32);
		}
		if (img_pread(fs->img, blk, n * 32, off) < 0)
			return -EIO;
		for (uint64_t i = 0; i < n; i++, index++) {
			const uint8_t *de = blk + i * 32;
			struct fat_dirent d;

			if (de[0] == 0)
				return 0; /* no entries after this one */
			if (de[0] == 0xe5) {
				lfn->total = 0;
				continue;
			}
			if ((de[11] & 0x3f) == ATTR_LFN) {
				lfn_add(lfn, de);
				continue;
			}
			if ((de[11] & ATTR_VOLUME) || is_dot_entry(de)) {
				lfn->total = 0;
				continue;
			}
			short_buf[0] = '\0';
			if (names)
				short_name(de, true, short_buf,
					   sizeof(short_buf));
			d.de = de;
			d.pos = off + i * 32;
			d.next_index = index + 1;
			d.short_name = short_buf;
			d.name = names && lfn_name(lfn, de, long_buf,
						   sizeof(long_buf))
					 ? long_buf
					 : short_buf;
			lfn->total = 0;
			if (fn(ctx, &d))
				return 1;
		}
	}
	return complete ? 0 : -EIO;
}

/* ------------------------------------------------------------------ */
/* Objects */

static uint32_t de_cluster(const struct fat *fs, const uint8_t *de)
{
	uint32_t c = get_le16(de + DE_CLUS_LO);

	if (fs->bits == 32)
		c |= (uint32_t)get_le16(de + DE_CLUS_HI) << 16;
	return c;
}

static uint64_t pos_to_ino(uint64_t pos)
{
	return pos / 32 + FAT_INO_BASE;
}

/* Days since 1970-01-01 of a proleptic Gregorian date. */
static int64_t days_from_civil(int64_t y, unsigned m, unsigned d)
{
	int64_t era, yoe, doy, doe;

	y -= m <= 2;
	era = (y >= 0 ? y : y - 399) / 400;
	yoe = y - era * 400;
	doy = (153 * (m + (m > 2 ? -3 : 9)) + 2) / 5 + d - 1;
	doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
	return era * 146097 + doe - 719468;
}

/* A FAT date and time (read as UTC) with a 10 ms count (0..199). */
static struct timespec fat_time(uint16_t date, uint16_t time, uint8_t cs)
{
	unsigned month = (date >> 5) & 0x0f, day = date & 0x1f;
	struct timespec ts = { 0 };
	int64_t days;

	if (date == 0)
		return ts;
	month = MIN(MAX(month, 1u), 12u);
	day = MAX(day, 1u);
	days = days_from_civil(1980 + (date >> 9), month, day);
	ts.tv_sec = days * 86400 + (time >> 11) * 3600 +
		    ((time >> 5) & 0x3f) * 60 + (time & 0x1f) * 2;
	if (cs < 200) {
		ts.tv_sec += cs / 100;
		ts.tv_nsec = (long)(cs % 100) * 10000000L;
	}
	return ts;
}

struct count_ctx {
	uint32_t subdirs;
};

static int count_subdirs(void *ctx, const struct fat_dirent *d)
{
	struct count_ctx *cc = ctx;

	if (d->de[11] & ATTR_DIR)
		cc->subdirs++;
	return 0;
}

/* Size (bytes) and nlink of a directory; damage only shortens them. */
static void dir_stats(struct fat *fs, const struct fat_dir *dir,
		      uint64_t *size_r, uint32_t *nlink_r)
{
	struct count_ctx cc = { 0 };

	if (dir->fixed) {
		*size_r = (uint64_t)fs->root_entries * 32;
	} else {
		uint32_t need = MAX(1u, FAT_MAX_DIR_BYTES / fs->cluster_bytes);
		struct fat_chain *ch;
		LOCK_FOR_SCOPE(&fs->lock);

		*size_r = 0;
		if (chain_get_locked(fs, dir->ino, dir->start, need, true,
				     &ch) == 0)
			*size_r = (uint64_t)ch->valid * fs->cluster_bytes;
	}
	{
		LOCK_FOR_SCOPE(&fs->lock);

		for (unsigned i = 0; i < FAT_NB_NLINKS; i++) {
			if (fs->nlinks[i].dir == dir->ino &&
			    fs->nlinks[i].nlink) {
				*nlink_r = fs->nlinks[i].nlink;
				return;
			}
		}
	}
	/* Counted once per directory while it stays in the small cache:
	 * stat of a large directory does not rescan it. */
	(void)dir_walk(fs, dir, 0, UINT64_MAX, false, count_subdirs, &cc);
	*nlink_r = 2 + cc.subdirs;
	{
		LOCK_FOR_SCOPE(&fs->lock);

		fs->nlinks[fs->next_nlink].dir = dir->ino;
		fs->nlinks[fs->next_nlink].nlink = *nlink_r;
		fs->next_nlink = (fs->next_nlink + 1) % FAT_NB_NLINKS;
	}
}

static void root_dir(const struct fat *fs, struct fat_dir *dir)
{
	*dir = (struct fat_dir){
		.ino = FAT_ROOT_INO,
		.fixed = fs->bits != 32,
		.start = fs->bits == 32 ? fs->root_cluster : 0,
	};
}

static void root_stat(struct fat *fs, struct fsys_stat *st)
{
	struct fat_dir dir;

	root_dir(fs, &dir);
	*st = (struct fsys_stat){
		.ino = FAT_ROOT_INO,
		.mode = S_IFDIR | 0755,
	};
	dir_stats(fs, &dir, &st->size, &st->nlink);
	st->blocks = st->size / 512;
}

/* The cluster the byte at pos lies in, or 0 outside the data area. */
static uint32_t pos_cluster(const struct fat *fs, uint64_t pos)
{
	if (pos < fs->data_off)
		return 0;
	return (uint32_t)((pos - fs->data_off) / fs->cluster_bytes) + 2;
}

/* The cluster named by the ".." entry of the directory starting at c
 * (0: the root), or -EIO when its second entry is not a "..". */
static int dir_dotdot(struct fat *fs, uint32_t c, uint32_t *parent_r)
{
	uint8_t de[32];

	if (img_pread(fs->img, de, 32, cluster_off(fs, c) + 32) < 0)
		return -EIO;
	if (de[0] != '.' || de[1] != '.' || !is_dot_entry(de) ||
	    !(de[11] & ATTR_DIR))
		return -EIO;
	*parent_r = de_cluster(fs, de);
	return 0;
}

/* Does the chain from start reach cluster c within a directory's
 * length limit? */
static bool chain_holds(struct fat *fs, uint32_t start, uint32_t c)
{
	uint32_t max = FAT_MAX_DIR_BYTES / fs->cluster_bytes + 1;

	LOCK_FOR_SCOPE(&fs->lock);
	for (uint32_t i = 0; i < max && fat_is_cluster(fs, start); i++) {
		if (start == c)
			return true;
		if (fat_get_locked(fs, start, &start) < 0)
			return false;
	}
	return false;
}

/* Is the subdirectory entry de (lying at pos) a way back into an
 * ancestor? The root is never a subdirectory, and each directory's ".."
 * must name the directory whose entry leads to it. With that rule every
 * directory reached from the root has a chain of ".." entries leading
 * back to it, one step shorter at each level, so no walk from the root
 * can go round a cycle of any length: a cycle would need a directory
 * whose ".." names two different parents. holder is the directory the
 * entry was found in, or NULL when only the entry's position is known
 * (getattr or readdir by inode number): then the ".." directory must be
 * the one holding that position. A directory without a ".." entry
 * cannot be placed and counts as a cycle too (-EIO on it alone). */
static bool dir_is_cycle(struct fat *fs, const uint8_t *de, uint64_t pos,
			 const struct fat_dir *holder)
{
	uint32_t c = de_cluster(fs, de);
	uint32_t root = fs->bits == 32 ? fs->root_cluster : 0;
	uint32_t parent;

	if (c == 0 || c == root)
		return true;
	if (!fat_is_cluster(fs, c))
		return false; /* a bad chain: the chain check answers -EIO */
	if (c == pos_cluster(fs, pos) || dir_dotdot(fs, c, &parent) < 0)
		return true;
	if (parent == root)
		parent = 0; /* FAT32 writers may name the root by its cluster */
	if (holder)
		return holder->ino == FAT_ROOT_INO ? parent != 0 :
						     parent != holder->start;
	if (fs->bits != 32 && pos < fs->data_off)
		return parent != 0; /* an entry in the fixed root region */
	return !chain_holds(fs, parent ? parent : root, pos_cluster(fs, pos));
}

/* st of the object whose short entry de lies at pos (holder: see
 * dir_is_cycle). -EIO for a directory cycle. */
static int entry_stat(struct fat *fs, const uint8_t *de, uint64_t pos,
		      const struct fat_dir *holder, struct fsys_stat *st)
{
	uint8_t attr = de[11];

	*st = (struct fsys_stat){ .ino = pos_to_ino(pos) };
	st->mtime = fat_time(get_le16(de + DE_WRT_DATE),
			     get_le16(de + DE_WRT_TIME), 0);
	st->ctime = st->mtime;
	st->atime = fat_time(get_le16(de + DE_ACC_DATE), 0, 0);
	st->btime = fat_time(get_le16(de + DE_CRT_DATE),
			     get_le16(de + DE_CRT_TIME), de[DE_CRT_CS]);
	if (attr & ATTR_DIR) {
		struct fat_dir dir;

		if (dir_is_cycle(fs, de, pos, holder))
			return -EIO;
		dir = (struct fat_dir){ .ino = st->ino,
					.start = de_cluster(fs, de) };
		st->mode = S_IFDIR | 0755;
		dir_stats(fs, &dir, &st->size, &st->nlink);
		st->blocks = st->size / 512;
		return 0;
	}
	st->mode = S_IFREG | (attr & ATTR_RO ? 0444 : 0644);
	st->nlink = 1;
	st->size = get_le32(de + DE_SIZE);
	st->blocks = div_round_up(st->size, fs->cluster_bytes) *
		     (fs->cluster_bytes / 512);
	return 0;
}

/* Re-reads the short entry of ino. -ESTALE when no such entry lies
 * there (any longer). */
static int ino_entry(struct fat *fs, uint64_t ino, uint8_t de[32],
		     uint64_t *pos_r)
{
	uint64_t pos, rel;

	if (ino < FAT_INO_BASE || ino - FAT_INO_BASE > UINT64_MAX / 32)
		return -ESTALE;
	pos = (ino - FAT_INO_BASE) * 32;
	if (fs->bits != 32 && pos >= fs->root_off &&
	    pos < fs->root_off + (uint64_t)fs->root_entries * 32) {
		/* in the fixed root region */
	} else if (pos >= fs->data_off) {
		rel = pos - fs->data_off;
		if (rel / fs->cluster_bytes >= fs->nb_clusters)
			return -ESTALE;
	} else {
		return -ESTALE;
	}
	if (img_pread(fs->img, de, 32, pos) < 0)
		return -EIO;
	if (de[0] == 0 || de[0] == 0xe5 || (de[11] & 0x3f) == ATTR_LFN ||
	    (de[11] & ATTR_VOLUME) || is_dot_entry(de))
		return -ESTALE;
	*pos_r = pos;
	return 0;
}

/* The directory ino names: -ENOTDIR for a file, -EIO for a cycle. */
static int ino_dir(struct fat *fs, uint64_t ino, struct fat_dir *dir)
{
	uint8_t de[32];
	uint64_t pos;
	int ret;

	if (ino == FAT_ROOT_INO) {
		root_dir(fs, dir);
		return 0;
	}
	ret = ino_entry(fs, ino, de, &pos);
	if (ret < 0)
		return ret;
	if (!(de[11] & ATTR_DIR))
		return -ENOTDIR;
	if (dir_is_cycle(fs, de, pos, NULL))
		return -EIO;
	*dir = (struct fat_dir){ .ino = ino, .start = de_cluster(fs, de) };
	return 0;
}

/* ------------------------------------------------------------------ */
/* Operations */

static int fat_getattr(void *priv, uint64_t ino, struct fsys_stat *st_r)
{
	struct fat *fs = priv;
	uint8_t de[32];
	uint64_t pos;
	int ret;

	if (ino == FAT_ROOT_INO) {
		root_stat(fs, st_r);
		return 0;
	}
	ret = ino_entry(fs, ino, de, &pos);
	if (ret < 0)
		return ret;
	return entry_stat(fs, de, pos, NULL, st_r);
}

struct lookup_ctx {
	const char *name;
	bool found, exact;
	uint8_t de[32];
	uint64_t pos, next_index;
};

/* The entry index to start a lookup in dir at (set: remember index). */
static uint64_t lookup_hint(struct fat *fs, uint64_t dir, uint64_t index,
			    bool set)
{
	LOCK_FOR_SCOPE(&fs->lock);

	for (unsigned i = 0; i < FAT_NB_HINTS; i++) {
		if (fs->hints[i].dir != dir)
			continue;
		if (set)
			fs->hints[i].index = index;
		return fs->hints[i].index;
	}
	if (set) {
		fs->hints[fs->next_hint].dir = dir;
		fs->hints[fs->next_hint].index = index;
		fs->next_hint = (fs->next_hint + 1) % FAT_NB_HINTS;
	}
	return 0;
}

static int lookup_fn(void *ctx, const struct fat_dirent *d)
{
	struct lookup_ctx *lc = ctx;

	if (strcmp(d->name, lc->name) == 0 ||
	    strcmp(d->short_name, lc->name) == 0) {
		lc->exact = lc->found = true;
	} else if (!lc->found && (name_equal_fold(d->name, lc->name) ||
				  name_equal_fold(d->short_name, lc->name))) {
		lc->found = true;
	} else {
		return 0;
	}
	memcpy(lc->de, d->de, 32);
	lc->pos = d->pos;
	lc->next_index = d->next_index;
	return lc->exact;
}

static int fat_lookup(void *priv, uint64_t dir_ino, const char *name,
		      struct fsys_stat *st_r)
{
	struct lookup_ctx lc = { .name = name };
	struct fat *fs = priv;
	struct fat_dir dir;
	uint64_t start;
	int ret;

	ret = ino_dir(fs, dir_ino, &dir);
	if (ret < 0)
		return ret;
	if (!*name || strlen(name) >= FAT_NAME_MAX)
		return -ENOENT;
	/* From where the last lookup in this directory matched (ls -l
	 * looks every name up in readdir order), then the part before. */
	start = lookup_hint(fs, dir_ino, 0, false);
	ret = dir_walk(fs, &dir, start, UINT64_MAX, true, lookup_fn, &lc);
	if (!lc.exact && start > 0) {
		int ret2 = dir_walk(fs, &dir, 0, start, true, lookup_fn, &lc);

		ret = ret < 0 ? ret : ret2;
	}
	if (!lc.found)
		return ret < 0 ? ret : -ENOENT;
	lookup_hint(fs, dir_ino, lc.next_index, true);
	return entry_stat(fs, lc.de, lc.pos, &dir, st_r);
}

struct readdir_ctx {
	fsys_dirent_fn fn;
	void *ctx;
	bool emitted;
};

static int readdir_fn(void *ctx, const struct fat_dirent *d)
{
	struct readdir_ctx *rc = ctx;
	uint32_t type = d->de[11] & ATTR_DIR ? S_IFDIR : S_IFREG;

	if (rc->fn(rc->ctx, d->name, pos_to_ino(d->pos), type, d->next_index))
		return 1;
	rc->emitted = true;
	return 0;
}

static int fat_readdir(void *priv, uint64_t dir_ino, uint64_t cookie,
		       fsys_dirent_fn fn, void *ctx)
{
	struct readdir_ctx rc = { .fn = fn, .ctx = ctx };
	struct fat *fs = priv;
	struct fat_dir dir;
	int ret;

	ret = ino_dir(fs, dir_ino, &dir);
	if (ret < 0)
		return ret;
	ret = dir_walk(fs, &dir, cookie, UINT64_MAX, true, readdir_fn, &rc);
	/* Damage after some entries: give those now; the next call, which
	 * starts after them, reports it. */
	if (ret < 0 && !rc.emitted)
		return ret;
	return 0;
}

static ssize_t fat_read(void *priv, uint64_t ino, void *buf, size_t len,
			uint64_t off)
{
	struct fat *fs = priv;
	uint32_t start, need, cb;
	uint64_t size, pos, end;
	uint8_t de[32];
	size_t done = 0;
	int ret;

	if (ino == FAT_ROOT_INO)
		return -EISDIR;
	ret = ino_entry(fs, ino, de, &pos);
	if (ret < 0)
		return ret;
	if (de[11] & ATTR_DIR)
		return -EISDIR;
	size = get_le32(de + DE_SIZE);
	if (off >= size || len == 0)
		return 0;
	len = (size_t)MIN((uint64_t)len, size - off);
	cb = fs->cluster_bytes;
	need = (uint32_t)div_round_up(size, cb);
	start = de_cluster(fs, de);
	end = off + len;
	while (off < end) {
		uint32_t idx = (uint32_t)(off / cb), c, run;
		uint64_t in = off % cb, n;

		{
			struct fat_chain *ch;
			LOCK_FOR_SCOPE(&fs->lock);

			ret = chain_get_locked(fs, ino, start, need, false,
					       &ch);
			if (ret < 0)
				return ret;
			if (idx >= ch->valid)
				return -EIO;
			ret = chain_map_locked(
				fs, ch, idx,
				(uint32_t)div_round_up(end - off + in, cb), &c,
				&run);
			if (ret < 0)
				return ret;
		}
		n = MIN((uint64_t)run * cb - in, end - off);
		if (img_pread(fs->img, (uint8_t *)buf + done, n,
			      cluster_off(fs, c) + in) < 0)
			return -EIO;
		done += n;
		off += n;
	}
	return (ssize_t)done;
}

static ssize_t fat_readlink(void *priv, uint64_t ino, char *buf, size_t size)
{
	(void)priv;
	(void)ino;
	(void)buf;
	(void)size;
	return -EINVAL;
}

static const char *const xattr_names[] = { "user.fat.attrs",
					   "user.fat.shortname" };

static ssize_t xattr_copy(const char *val, size_t val_len, void *buf,
			  size_t size)
{
	if (size == 0)
		return (ssize_t)val_len;
	if (size < val_len)
		return -ERANGE;
	memcpy(buf, val, val_len);
	return (ssize_t)val_len;
}

static ssize_t fat_listxattr(void *priv, uint64_t ino, char *buf, size_t size)
{
	char names[64];
	size_t len = 0;
	uint8_t de[32];
	uint64_t pos;
	int ret;

	if (ino == FAT_ROOT_INO)
		return 0;
	ret = ino_entry(priv, ino, de, &pos);
	if (ret < 0)
		return ret;
	for (size_t i = 0; i < 2; i++) {
		size_t n = strlen(xattr_names[i]) + 1;

		memcpy(names + len, xattr_names[i], n);
		len += n;
	}
	return xattr_copy(names, len, buf, size);
}

static ssize_t fat_getxattr(void *priv, uint64_t ino, const char *name,
			    void *buf, size_t size)
{
	static const char *const words[] = { "readonly", "hidden", "system",
					     "archive" };
	static const uint8_t bits[] = { ATTR_RO, ATTR_HIDDEN, ATTR_SYSTEM,
					ATTR_ARCHIVE };
	char val[64];
	size_t len = 0;
	uint8_t de[32];
	uint64_t pos;
	int ret;

	if (ino == FAT_ROOT_INO)
		return -ENODATA;
	ret = ino_entry(priv, ino, de, &pos);
	if (ret < 0)
		return ret;
	if (strcmp(name, xattr_names[0]) == 0) {
		val[0] = '\0';
		for (size_t i = 0; i < 4; i++)
			if (de[11] & bits[i])
				len += (size_t)snprintf(val + len,
							sizeof(val) - len,
							"%s%s", len ? "," : "",
							words[i]);
	} else if (strcmp(name, xattr_names[1]) == 0) {
		short_name(de, false, val, sizeof(val));
		len = strlen(val);
	} else {
		return -ENODATA;
	}
	return xattr_copy(val, len, buf, size);
}

static int fat_statfs(void *priv, struct statvfs *st)
{
	struct fat *fs = priv;
	LOCK_FOR_SCOPE(&fs->lock);

	if (!fs->free_known) {
		uint64_t nb_free = 0;
		uint32_t v;

		for (uint32_t c = 2; c <= fs->max_cluster; c++) {
			if (fat_get_locked(fs, c, &v) < 0)
				return -EIO;
			nb_free += v == 0;
		}
		fs->free_clusters = nb_free;
		fs->free_known = true;
	}
	*st = (struct statvfs){
		.f_bsize = fs->cluster_bytes,
		.f_frsize = fs->cluster_bytes,
		.f_blocks = fs->nb_clusters,
		.f_bfree = fs->free_clusters,
		.f_bavail = fs->free_clusters,
		.f_namemax = 255,
		.f_flag = ST_RDONLY,
	};
	return 0;
}

static void fat_get_info(void *priv, struct fsys_info *info)
{
	struct fat *fs = priv;

	snprintf(info->type, sizeof(info->type), "vfat");
	snprintf(info->label, sizeof(info->label), "%s", fs->label);
	snprintf(info->uuid, sizeof(info->uuid), "%s", fs->uuid);
	info->block_size = fs->cluster_bytes;
	snprintf(info->warning, sizeof(info->warning), "%s", fs->warning);
}

static uint64_t fat_root_ino(void *priv)
{
	(void)priv;
	return FAT_ROOT_INO;
}

/* ------------------------------------------------------------------ */
/* Probe and open */

static bool is_pow2(uint32_t x)
{
	return x && !(x & (x - 1));
}

static bool fat_probe(struct img *img)
{
	uint8_t bs[512], magic[2];

	if (img_size(img) < 512 || img_pread(img, bs, 512, 0) < 0)
		return false;
	if (!(bs[0] == 0xeb || bs[0] == 0xe9) || get_le16(bs + 510) != 0xaa55)
		return false;
	if (memcmp(bs + 3, "NTFS    ", 8) == 0 ||
	    memcmp(bs + 3, "EXFAT   ", 8) == 0)
		return false;
	/* An ext superblock (magic at 1024 + 56) wins. */
	if (img_size(img) >= 1082 && img_pread(img, magic, 2, 1080) == 0 &&
	    get_le16(magic) == 0xef53)
		return false;
	if (memcmp(bs + 54, "FAT", 3) == 0 || memcmp(bs + 82, "FAT32", 5) == 0)
		return true;
	return is_pow2(get_le16(bs + 11)) && get_le16(bs + 11) >= 512 &&
	       is_pow2(bs[13]) && get_le16(bs + 14) > 0 && bs[16] > 0;
}

static void trim_copy(char *out, const uint8_t *in, size_t n)
{
	while (n > 0 && (in[n - 1] == ' ' || in[n - 1] == 0))
		n--;
	for (size_t i = 0; i < n; i++)
		out[i] = in[i] >= 0x20 && in[i] < 0x7f ? (char)in[i] : '_';
	out[n] = '\0';
}

/* The label: the volume entry of the root directory's first block, else
 * the BPB's (unless "NO NAME"). */
static void read_label(struct fat *fs, const uint8_t *bs, unsigned ext_at)
{
	uint8_t blk[512];
	uint64_t off = fs->bits == 32 ? cluster_off(fs, fs->root_cluster)
				      : fs->root_off;

	if (bs[ext_at] == 0x29 && memcmp(bs + ext_at + 5, "NO NAME    ", 11))
		trim_copy(fs->label, bs + ext_at + 5, 11);
	if (img_pread(fs->img, blk, sizeof(blk), off) < 0)
		return;
	for (unsigned i = 0; i < sizeof(blk) / 32; i++) {
		const uint8_t *de = blk + i * 32;

		if (fs->bits != 32 && i >= fs->root_entries)
			break;
		if (de[0] == 0)
			break;
		if (de[0] != 0xe5 && (de[11] & 0x3f) != ATTR_LFN &&
		    (de[11] & (ATTR_VOLUME | ATTR_DIR)) == ATTR_VOLUME) {
			trim_copy(fs->label, de, 11);
			return;
		}
	}
}

static void fat_close(void *priv)
{
	struct fat *fs = priv;

	if (!fs)
		return;
	for (unsigned i = 0; i < FAT_NB_CHUNKS; i++)
		free(fs->chunks[i].data);
	pthread_mutex_destroy(&fs->lock);
	free(fs);
}

static int fat_open(struct img *img, void **priv_r, struct img_err *err)
{
	CLEANUP_FREE struct fat *fs = NULL;
	uint32_t bps, spc, reserved, nfats, root_entries, total, fatsz;
	uint64_t root_sectors, first_data, nb_clusters, fat_entries;
	uint64_t img_bytes = img_size(img), end;
	unsigned ext_at;
	uint8_t bs[512];

	if (!fat_probe(img))
		return -EMEDIUMTYPE;
	if (img_pread(img, bs, sizeof(bs), 0) < 0)
		return img_err(err, -EIO, "FAT: cannot read the boot sector");
	bps = get_le16(bs + 11);
	spc = bs[13];
	reserved = get_le16(bs + 14);
	nfats = bs[16];
	root_entries = get_le16(bs + 17);
	total = get_le16(bs + 19) ? get_le16(bs + 19) : get_le32(bs + 32);
	fatsz = get_le16(bs + 22) ? get_le16(bs + 22) : get_le32(bs + 36);

	if (!is_pow2(bps) || bps < 512 || bps > 4096)
		return img_err(err, -EINVAL,
			       "FAT: %" PRIu32 " bytes per sector (not 512, "
			       "1024, 2048 or 4096)", bps);
	if (!is_pow2(spc))
		return img_err(err, -EINVAL,
			       "FAT: %" PRIu32 " sectors per cluster (not a "
			       "power of two)", spc);
	if (reserved == 0)
		return img_err(err, -EINVAL, "FAT: no reserved sectors");
	if (nfats == 0)
		return img_err(err, -EINVAL, "FAT: FAT count is 0");
	if (bs[21] != 0xf0 && bs[21] < 0xf8)
		return img_err(err, -EINVAL, "FAT: invalid media byte 0x%02x",
			       bs[21]);
	if (total == 0)
		return img_err(err, -EINVAL, "FAT: total sector count is 0");
	if (fatsz == 0)
		return img_err(err, -EINVAL, "FAT: FAT size is 0 sectors");
	root_sectors = div_round_up((uint64_t)root_entries * 32, bps);
	first_data = reserved + (uint64_t)nfats * fatsz + root_sectors;
	if (first_data >= total)
		return img_err(err, -EINVAL,
			       "FAT: %" PRIu32 " sectors in all, fewer than "
			       "the %" PRIu64 " before the data area",
			       total, first_data);
	nb_clusters = (total - first_data) / spc;
	if (nb_clusters == 0)
		return img_err(err, -EINVAL, "FAT: no data clusters");
	if (nb_clusters > 0x0ffffff5 - 2)
		return img_err(err, -EINVAL,
			       "FAT: %" PRIu64 " clusters (FAT32 holds at "
			       "most 268435443)", nb_clusters);

	fs = calloc(1, sizeof(*fs));
	if (!fs)
		return img_err(err, -ENOMEM, "out of memory");
	fs->img = img;
	/* A BPB without a 16-bit FAT size is FAT32's whatever the cluster
	 * count: mkfs.fat -F 32 makes such volumes below 65525 clusters
	 * (small EFI partitions), and Linux and mtools read them so. */
	if (get_le16(bs + 22) == 0)
		fs->bits = 32;
	else
		fs->bits = nb_clusters < 4085 ? 12 : nb_clusters < 65525 ? 16
									 : 32;
	fs->bytes_per_sector = bps;
	fs->cluster_bytes = bps * spc;
	fs->nb_clusters = (uint32_t)nb_clusters;
	fs->max_cluster = (uint32_t)nb_clusters + 1;
	fs->root_entries = fs->bits == 32 ? 0 : root_entries;
	fs->root_off = ((uint64_t)reserved + (uint64_t)nfats * fatsz) * bps;
	fs->data_off = first_data * bps;
	fs->fat_off = (uint64_t)reserved * bps;

	if (fs->bits != 32 && root_entries == 0)
		return img_err(err, -EINVAL, "FAT%u: no root directory entries",
			       fs->bits);
	fat_entries = (uint64_t)fatsz * bps * 8 / fs->bits;
	if (fat_entries < nb_clusters + 2)
		return img_err(err, -EINVAL,
			       "FAT: %" PRIu64 " clusters, but the FAT of %"
			       PRIu32 " sectors maps only %" PRIu64,
			       nb_clusters, fatsz, fat_entries - 2);
	fs->fat_bytes = fs->bits == 12 ? ((uint64_t)fs->max_cluster + 1) * 3 / 2 + 1
				       : ((uint64_t)fs->max_cluster + 1) * (fs->bits / 8);
	fs->fat_bytes = MIN(fs->fat_bytes, (uint64_t)fatsz * bps);
	if (fs->bits == 32) {
		uint16_t ext_flags = get_le16(bs + 40);

		if (ext_flags & 0x80) {
			if ((ext_flags & 0x0f) >= nfats)
				return img_err(err, -EINVAL,
					       "FAT: active FAT %u of %" PRIu32,
					       ext_flags & 0x0f, nfats);
			fs->fat_off += (uint64_t)(ext_flags & 0x0f) * fatsz * bps;
		}
		fs->root_cluster = get_le32(bs + 44);
		if (!fat_is_cluster(fs, fs->root_cluster))
			return img_err(err, -EINVAL,
				       "FAT: root cluster %" PRIu32
				       " out of range [2, %" PRIu32 "]",
				       fs->root_cluster, fs->max_cluster);
		ext_at = 66;
	} else {
		ext_at = 38;
	}
	if (fs->data_off >= img_bytes)
		return img_err(err, -EINVAL,
			       "FAT: data area at %" PRIu64 " lies past the "
			       "end of the %" PRIu64 "-byte image",
			       fs->data_off, img_bytes);
	end = (uint64_t)total * bps;
	if (end > img_bytes)
		snprintf(fs->warning, sizeof(fs->warning),
			 "the filesystem's %" PRIu64 " bytes exceed the "
			 "%" PRIu64 "-byte image: files past its end give EIO",
			 end, img_bytes);
	if (bs[ext_at] == 0x29) {
		uint32_t serial = get_le32(bs + ext_at + 1);

		snprintf(fs->uuid, sizeof(fs->uuid), "%04X-%04X",
			 serial >> 16, serial & 0xffff);
	}
	read_label(fs, bs, ext_at);
	pthread_mutex_init(&fs->lock, NULL);
	*priv_r = TAKE_PTR(fs);
	return 0;
}

const struct fsys_ops fsys_fat_ops = {
	.name      = "fat",
	.probe     = fat_probe,
	.open      = fat_open,
	.close     = fat_close,
	.get_info  = fat_get_info,
	.root_ino  = fat_root_ino,
	.lookup    = fat_lookup,
	.getattr   = fat_getattr,
	.readdir   = fat_readdir,
	.read      = fat_read,
	.readlink  = fat_readlink,
	.seek      = NULL, /* no holes: fsys.c answers */
	.listxattr = fat_listxattr,
	.getxattr  = fat_getxattr,
	.statfs    = fat_statfs,
};
