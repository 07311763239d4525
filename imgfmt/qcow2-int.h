/* qcow2-int.h: what the qcow2 driver's files share (qcow2*.c only).
 *
 * Two kinds of types live here and never mix:
 *   - on-disk structs (struct qcow2_*_disk): packed, big-endian, sizes
 *     fixed by _Static_assert. Each is converted to host form in exactly
 *     one function (qcow2_header_decode, qcow2_snapshot_decode).
 *   - decoded state (struct qcow2_state and friends): host byte order,
 *     every offset and count already validated.
 *
 * Spec: docs/interop/qcow2.txt in qemu.git. Limits below mirror QEMU's
 * block/qcow2.h so that anything QEMU opens, we open, and a hostile header
 * cannot make us allocate more than QEMU would.
 */
#ifndef IMGFS_QCOW2_INT_H
#define IMGFS_QCOW2_INT_H

#include "imgfmt-int.h"

#include <errno.h>

#include <pthread.h>
#include <stdbool.h>
#include <stdint.h>

#define QCOW2_MAGIC 0x514649fbu /* "QFI\xfb" */

/* Cluster sizes QEMU can open: 512 B .. 2 MiB. */
#define QCOW2_MIN_CLUSTER_BITS 9
#define QCOW2_MAX_CLUSTER_BITS 21
/* Extended L2 entries need 32 subclusters of at least 512 bytes. */
#define QCOW2_EXTL2_MIN_CLUSTER_BITS 14
#define QCOW2_EXTL2_SUBCLUSTERS 32

/* QEMU refuses an L1 table above 32 MiB and a refcount table above
 * 8 MiB; these bound what a header can make us allocate at open. */
#define QCOW2_MAX_L1_BYTES (32u << 20)
#define QCOW2_MAX_REFTABLE_BYTES (8u << 20)
/* QEMU's snapshot limits: 65536 entries, 64 MiB of table, 1 KiB of
 * extra data per entry. */
#define QCOW2_MAX_SNAPSHOTS 65536u
#define QCOW2_MAX_SNAPSHOT_TABLE_BYTES (64u << 20)
#define QCOW2_MAX_SNAPSHOT_EXTRA_BYTES 1024u
/* "Must not be longer than 1023 bytes" (header, backing_file_size). */
#define QCOW2_MAX_BACKING_NAME_BYTES 1023u

/* Incompatible feature bits (header bytes 72-79). */
#define QCOW2_INCOMPAT_DIRTY (1ull << 0)
#define QCOW2_INCOMPAT_CORRUPT (1ull << 1)
#define QCOW2_INCOMPAT_DATA_FILE (1ull << 2)
#define QCOW2_INCOMPAT_COMPRESSION (1ull << 3)
#define QCOW2_INCOMPAT_EXTL2 (1ull << 4)
#define QCOW2_INCOMPAT_KNOWN 0x1full

/* Compatible feature bits. */
#define QCOW2_COMPAT_LAZY_REFCOUNTS (1ull << 0)

/* Autoclear feature bits. */
#define QCOW2_AUTOCLEAR_BITMAPS (1ull << 0)
#define QCOW2_AUTOCLEAR_DATA_FILE_RAW (1ull << 1)

/* Header extension types. */
#define QCOW2_EXT_END 0x00000000u
#define QCOW2_EXT_BACKING_FORMAT 0xe2792acau
#define QCOW2_EXT_FEATURE_TABLE 0x6803f857u
#define QCOW2_EXT_BITMAPS 0x23852875u
#define QCOW2_EXT_CRYPTO 0x0537be77u
#define QCOW2_EXT_DATA_FILE 0x44415441u

/* compression_type (header byte 104). */
#define QCOW2_COMPRESSION_ZLIB 0
#define QCOW2_COMPRESSION_ZSTD 1

/* L1 entry: bits 9-55 are the L2 table offset, bit 63 "copied". */
#define QCOW2_L1E_OFFSET_MASK 0x00fffffffffffe00ull
#define QCOW2_L1E_COPIED (1ull << 63)
/* L2 entry (standard descriptor): bits 9-55 host offset, bit 0 reads as
 * zeroes (v3, not with extended L2), bit 62 compressed, bit 63 copied. */
#define QCOW2_L2E_OFFSET_MASK 0x00fffffffffffe00ull
#define QCOW2_L2E_ZERO (1ull << 0)
#define QCOW2_L2E_COMPRESSED (1ull << 62)
#define QCOW2_L2E_COPIED (1ull << 63)
/* Compressed descriptors count 512-byte sectors. */
#define QCOW2_COMPRESSED_SECTOR_BYTES 512u

/* The header as stored: 104 bytes for v3 plus the optional
 * compression_type byte and its padding (header_length 112, what QEMU
 * writes since 5.0). v2 uses only the first 72 bytes. */
struct qcow2_header_disk {
	uint32_t magic;
	uint32_t version;
	uint64_t backing_file_offset;
	uint32_t backing_file_size;
	uint32_t cluster_bits;
	uint64_t size;
	uint32_t crypt_method;
	uint32_t l1_size;
	uint64_t l1_table_offset;
	uint64_t refcount_table_offset;
	uint32_t refcount_table_clusters;
	uint32_t nb_snapshots;
	uint64_t snapshots_offset;
	/* v3 from here */
	uint64_t incompatible_features;
	uint64_t compatible_features;
	uint64_t autoclear_features;
	uint32_t refcount_order;
	uint32_t header_length;
	/* present when header_length > 104 */
	uint8_t compression_type;
	uint8_t padding[7];
} __attribute__((packed));
_Static_assert(sizeof(struct qcow2_header_disk) == 112, "qcow2 header");

#define QCOW2_V2_HEADER_BYTES 72u
#define QCOW2_V3_HEADER_MIN_BYTES 104u

struct qcow2_ext_header_disk {
	uint32_t type;
	uint32_t len;
} __attribute__((packed));
_Static_assert(sizeof(struct qcow2_ext_header_disk) == 8, "ext header");

struct qcow2_feature_disk {
	uint8_t type; /* 0 incompatible, 1 compatible, 2 autoclear */
	uint8_t bit;
	char name[46];
} __attribute__((packed));
_Static_assert(sizeof(struct qcow2_feature_disk) == 48, "feature entry");

/* Fixed part of a snapshot table entry; extra data, ID and name follow,
 * the whole entry padded to a multiple of 8. */
struct qcow2_snapshot_disk {
	uint64_t l1_table_offset;
	uint32_t l1_size;
	uint16_t id_str_size;
	uint16_t name_size;
	uint32_t date_sec;
	uint32_t date_nsec;
	uint64_t vm_clock_nsec;
	uint32_t vm_state_size;
	uint32_t extra_data_size;
} __attribute__((packed));
_Static_assert(sizeof(struct qcow2_snapshot_disk) == 40, "snapshot entry");

/* The extra data QEMU writes (fields are optional, by length). */
struct qcow2_snapshot_extra_disk {
	uint64_t vm_state_size_large;
	uint64_t disk_size;
	uint64_t icount;
} __attribute__((packed));
_Static_assert(sizeof(struct qcow2_snapshot_extra_disk) == 24, "extra");

/* A decoded snapshot table entry. l1_table_offset and l1_size are
 * validated only when the snapshot is opened (QEMU does the same), so a
 * bad entry does not make the whole image unreadable. */
struct qcow2_snapshot {
	char *id;
	char *name;
	/* This entry's number among all the entries the image state ever
	 * held (qcow2_state.snapshot_serials), for snapshot handles to know
	 * their snapshot by: ID and L1 table place are not enough, since a
	 * create after a delete may take both again. */
	uint64_t serial;
	uint64_t l1_table_offset;
	uint32_t l1_size;
	uint32_t date_sec;
	uint32_t date_nsec;
	uint64_t vm_clock_nsec;
	uint64_t vm_state_size;
	uint64_t disk_size;
};

struct qcow2_cache;

/* A reference drop waiting for its metadata change to be durable and for
 * the reads that may have mapped the cluster (qcow2-refcount.c). */
struct qcow2_deferred {
	uint64_t host_off;  /* the cluster */
	uint64_t pin_epoch; /* img_pin_epoch_locked at the drop */
};

/* What an image has once, whatever handles are open on it: made by the
 * top handle's open, shared by the snapshot handles opened from it
 * (struct qcow2_view), freed when the top handle closes (its snapshot
 * handles must be closed first, as for the fd they borrow).
 *
 * Locking: the geometry, compat, autoclear, the header's strings,
 * data_fd and the refcount table's place are set at open and then read
 * with no lock. Of a read-write image, incompat, file_bytes (grown by
 * allocating writes), the snapshot table (replaced by create and
 * delete), nb_snapshot_deletes, snapshot_serials, corrupt_reason, meta
 * and the write-path fields below change under *lock, so whoever reads
 * them takes *lock too (the snapshot list and open do; file_bytes is
 * also read atomically without it, see qcow2_file_bytes_now). The L2
 * cache is used under *lock; pins are taken under *lock and dropped
 * without it (pin.c). zcache is set once, atomically, and has its own
 * lock. */
struct qcow2_state {
	/* Decompressed clusters (qcow2-compress.c), lazily made; used by
	 * all the image's handles, one cache for all of them: nothing here
	 * writes compressed clusters, a cluster that a live descriptor
	 * names cannot be freed, and a freed one is forgotten, so a cached
	 * host offset holds the same bytes for every handle that finds it.
	 * Its worker decompresses ahead of one handle's sequential reads. */
	struct qcow2_zcache *zcache;
	/* Geometry. */
	unsigned cluster_bits;
	uint64_t cluster_bytes;
	unsigned l2_bits;            /* log2 of L2 entries per table */
	unsigned l2_entry_bytes;     /* 8, or 16 with extended L2 */
	unsigned subcluster_bits;    /* == cluster_bits without ext. L2 */
	unsigned version;            /* 2 or 3 */
	unsigned refcount_order;
	unsigned header_bytes;       /* header_length */
	unsigned compression_type;   /* QCOW2_COMPRESSION_* */
	bool extended_l2;

	uint64_t incompat;
	uint64_t compat;
	uint64_t autoclear;

	/* Size of the image file at open. Metadata and data offsets are
	 * checked against it; the write path must grow it as it appends. */
	uint64_t file_bytes;

	uint64_t refcount_table_offset;
	uint32_t refcount_table_clusters;

	/* Snapshot table, in table order. */
	struct qcow2_snapshot *snapshots;
	uint32_t nb_snapshots;
	uint64_t snapshots_offset;
	uint64_t snapshots_bytes; /* the table's size on disk */
	/* Snapshot deletes so far (even failed ones): a snapshot handle
	 * compares it with the count it last saw (qcow2_view). */
	uint64_t nb_snapshot_deletes;
	uint64_t snapshot_serials; /* handed out so far */

	/* Strings from the header and its extensions; NULL when absent. */
	char *backing_name;
	char *backing_format;
	char *data_file_name;
	bool data_file_raw;

	/* Where guest data lives: img->fd, or the external data file. */
	int data_fd;
	bool owns_data_fd;

	/* Metadata lock: guards the L2 slice cache, every handle's L1
	 * table and (for writers) refcounts. Data preads never hold it.
	 * Allocated on a cache line of its own so that taking it from
	 * several threads does not also bounce the read-mostly fields
	 * above. */
	pthread_mutex_t *lock;
	/* Read pins (pin.c), taken under *lock by every read of host
	 * bytes, on a cache line of its own like the lock. */
	struct img_pin_domain *pins;
	/* L2 slices, keyed by host offset: one cache serves the active
	 * table and every snapshot's. */
	struct qcow2_cache *l2_cache;
	size_t l2_slice_bytes; /* == qcow2_cache_slice_bytes(l2_cache) */

	/* Write path (qcow2-refcount.c, qcow2-write.c); set up by a
	 * read-write top handle only (rc_cache NULL otherwise). All
	 * guarded by *lock except write_gate itself. */
	/* In-place data writes hold write_gate shared across their pwrite
	 * (no metadata lock); anything that drops or shares a mapping
	 * (discard, write-zeroes, snapshot create/delete) holds it
	 * exclusive, so no in-place write is in flight into a cluster whose
	 * mapping changes under it. Taken before *lock. */
	pthread_rwlock_t write_gate;
	bool write_gate_ready;
	/* Guest clusters whose allocating write runs unlocked
	 * (qcow2-write.c); waiters sleep on inflight_cond. */
	struct inflight *inflight;
	pthread_cond_t inflight_cond;
	struct qcow2_cache *rc_cache;   /* refcount block slices */
	uint64_t *reftable;             /* host order */
	uint64_t reftable_entries;
	unsigned rb_entry_bits;         /* log2 refcounts per block */
	uint64_t free_hint_cluster;     /* lowest cluster index maybe free */
	bool writing_started;           /* header prepared for writes */
	/* References to drop once the L2/L1 change that dropped them is
	 * durable and no read pinned before the drop still runs: one entry
	 * per reference, in the order (and so the pin epochs) of the drops. */
	struct qcow2_deferred *deferred;
	size_t nb_deferred, cap_deferred;
	/* Set once an inconsistency was found; the image's handles are
	 * read-only from then on. */
	char *corrupt_reason;
	/* Clusters holding metadata, for the overlap check
	 * (qcow2-overlap.c); NULL until the first check. */
	struct qcow2_meta_set *meta;
};

/* One handle's view of an image, behind img->priv: which L1 table it
 * maps through. The top handle's is the active table, which the write
 * path changes; a snapshot handle's is a copy of its snapshot's, read
 * once at open and never written. Whether the handle writes is
 * img->read_only (a snapshot handle never does).
 *
 * Locking: s, parent, l1_size, l1_table_offset and snapshot_serial are
 * set at open and never change; the entries of l1_table, l1_dirty and
 * the gone bookkeeping are read and changed under *s->lock. */
struct qcow2_view {
	struct qcow2_state *s; /* the image; owned by the top handle */
	/* Snapshot handle: the top handle it was opened from (for backing
	 * reads and the shared state), which outlives it; NULL for the top
	 * handle itself. */
	struct img *parent;

	/* Host byte order, l1_size entries (0 entries: nothing
	 * allocated). */
	uint64_t *l1_table;
	uint32_t l1_size;
	uint64_t l1_table_offset;
	bool l1_dirty; /* top: l1_table differs from the file */

	/* Snapshot handle: its snapshot's serial and the
	 * s->nb_snapshot_deletes it last saw. When the count moved it looks
	 * its snapshot up again (by serial), and once the snapshot is gone
	 * every map fails -ENOENT: its L1 copy names clusters the delete
	 * gave back, which a later write may reuse. */
	uint64_t snapshot_serial;
	uint64_t seen_snapshot_deletes;
	bool snapshot_gone;
};

/* Where the L2 entry of a guest offset lives (spec, "Cluster mapping"):
 * the L1 entry naming its L2 table, and the entry inside that table.
 * The one place this arithmetic is written. */
static inline uint64_t qcow2_l2_range_bytes(const struct qcow2_state *s)
{
	/* Guest bytes one L2 table maps. */
	return 1ull << (s->cluster_bits + s->l2_bits);
}

static inline uint64_t qcow2_l1_index(const struct qcow2_state *s,
				      uint64_t guest_off)
{
	return guest_off >> (s->cluster_bits + s->l2_bits);
}

static inline uint64_t qcow2_l2_index(const struct qcow2_state *s,
				      uint64_t guest_off)
{
	return (guest_off >> s->cluster_bits) & ((1ull << s->l2_bits) - 1);
}

/* Host offset of the L2 cache slice holding entry l2_idx of the L2 table
 * at l2_off; the entry's byte offset inside that slice in *pos_r. */
static inline uint64_t qcow2_l2_slice_off(const struct qcow2_state *s,
					  uint64_t l2_off, uint64_t l2_idx,
					  size_t *pos_r)
{
	uint64_t entry_off = l2_off + l2_idx * s->l2_entry_bytes;

	*pos_r = (size_t)(entry_off % s->l2_slice_bytes);
	return entry_off - *pos_r;
}

/* Refcount table entries: offset bits (the rest is reserved). */
#define REFTABLE_OFFSET_MASK 0xfffffffffffffe00ull

static inline struct qcow2_view *qcow2_view(const struct img *img)
{
	return img->priv;
}

/* The image state behind a handle, top or snapshot. */
static inline struct qcow2_state *qcow2_state(const struct img *img)
{
	return qcow2_view(img)->s;
}

/* file_bytes only grows, under *lock, while the compressed read path
 * checks offsets against it without that lock: store and load it
 * atomically (a stale value only refuses a cluster written since, and
 * compressed clusters are never written here). */
static inline void qcow2_file_end_grow_locked(struct qcow2_state *s,
					      uint64_t end)
{
	if (end > s->file_bytes)
		__atomic_store_n(&s->file_bytes, end, __ATOMIC_RELAXED);
}

static inline uint64_t qcow2_file_bytes_now(const struct qcow2_state *s)
{
	return __atomic_load_n(&s->file_bytes, __ATOMIC_RELAXED);
}

/* qcow2-cache.c: a bounded LRU cache of fixed-size slices of metadata
 * tables, keyed by their host offset in one file. All calls expect the
 * owner's metadata lock held. */
struct qcow2_cache *qcow2_cache_new(int fd, size_t total_bytes,
				    size_t slice_bytes, uint64_t *file_bytes);
void qcow2_cache_free(struct qcow2_cache *c);
size_t qcow2_cache_slice_bytes(const struct qcow2_cache *c);
/* Gets the slice at host_off (slice-aligned), reading it on a miss, and
 * pins it until qcow2_cache_put_locked. -EIO when it lies past the end of
 * the file, -EBUSY when every slot is pinned. */
int qcow2_cache_get_locked(struct qcow2_cache *c, uint64_t host_off,
			   const uint8_t **slice_r);
void qcow2_cache_put_locked(struct qcow2_cache *c, const uint8_t *slice);
/* Like get, for a caller that modifies the slice: it becomes dirty and
 * is written back by flush or before eviction. */
int qcow2_cache_get_rw_locked(struct qcow2_cache *c, uint64_t host_off,
			      uint8_t **slice_r);
/* Records that c's dirty slices may be written only after dep has been
 * flushed (written and made durable): the next write-back of c flushes
 * dep first. */
void qcow2_cache_set_dependency_locked(struct qcow2_cache *c,
				       struct qcow2_cache *dep);
/* An extra descriptor made durable with c's own (the external data
 * file, whose data must be durable before L2 entries point at it). */
void qcow2_cache_set_extra_sync_fd(struct qcow2_cache *c, int fd);
/* Writes every dirty slice (after c's dependency), without fdatasync. */
int qcow2_cache_writeback_locked(struct qcow2_cache *c);
/* writeback, then fdatasync of the file (and the extra fd). */
int qcow2_cache_flush_locked(struct qcow2_cache *c);
/* Forgets the slices of [host_off, host_off + bytes) even if dirty: the
 * cluster was freed and its old content must never be written back. */
void qcow2_cache_drop_range_locked(struct qcow2_cache *c, uint64_t host_off,
				   uint64_t bytes);

/* qcow2-map.c: guest offset -> runs of one kind. */
enum qcow2_run_kind {
	QCOW2_RUN_UNALLOCATED, /* read from the backing file */
	QCOW2_RUN_ZERO,        /* reads as zeroes */
	QCOW2_RUN_DATA,        /* plain data at host_off in data_fd */
	QCOW2_RUN_COMPRESSED,  /* compressed cluster(s), l2_entry = first */
};

struct qcow2_run {
	enum qcow2_run_kind kind;
	uint64_t len_bytes;
	uint64_t host_off; /* DATA: host offset of the first guest byte */
	uint64_t l2_entry; /* COMPRESSED: the descriptor of the first one */
};

/* Describes the longest run starting at guest_off (at most max_bytes)
 * whose clusters/subclusters have one kind and, for data, contiguous host
 * offsets. Compressed clusters merge into one run only when
 * merge_compressed (block status); for reads each is its own run.
 * Expects *s->lock held. -EIO for corrupt metadata. */
int qcow2_map_locked(struct img *img, uint64_t guest_off, uint64_t max_bytes,
		     bool merge_compressed, struct qcow2_run *run_r);
/* Checks that a table of nb_entries * entry_bytes at off is cluster
 * aligned, does not overlap the header cluster, and lies inside the file.
 * Fills err naming what (e.g. "L1 table") and returns -EINVAL. */
int qcow2_validate_table(struct img *img, const char *what, uint64_t off,
			 uint64_t nb_entries, size_t entry_bytes,
			 uint64_t max_bytes, struct img_err *err);
/* Reads an L1 table (validated by the caller) into host byte order. */
int qcow2_read_l1(struct img *img, uint64_t off, uint32_t nb_entries,
		  uint64_t **l1_r, struct img_err *err);
/* Number of L1 entries that a virtual size of size_bytes needs. */
uint64_t qcow2_l1_entries_for(const struct qcow2_state *s,
			      uint64_t size_bytes);

/* qcow2-compress.c: reads compressed cluster described by l2_entry and
 * copies [off_in_cluster, off_in_cluster + len) of it into buf. -EIO for
 * a bad descriptor or data that does not decompress to a full cluster.
 * Decompressed clusters go through a small cache, one per image (struct
 * qcow2_state), shared by its handles, so that reads that end inside a
 * compressed cluster, or many small reads of one, inflate it once; a
 * worker fills it ahead of sequential reads (zahead.c). The top handle's
 * close frees it (joining the worker) before anything else; a snapshot
 * handle's close first detaches the worker from its view. */
struct qcow2_zcache;
void qcow2_zcache_free(struct qcow2_zcache *zc);
/* A snapshot handle closing: the worker stops reading ahead through it. */
void qcow2_zcache_detach(struct qcow2_state *s, struct img *img);
/* A freed host range: cached clusters read from it are forgotten. */
void qcow2_zcache_forget_locked(struct qcow2_state *s, uint64_t host_off,
				uint64_t bytes);

int qcow2_read_compressed(struct img *img, uint64_t l2_entry, void *buf,
			  size_t off_in_cluster, size_t len);
/* The same for guest [guest_off, guest_off + len) of a read whose whole
 * request ends at req_end: tells the read-ahead where the reader is. */
int qcow2_read_compressed_seq(struct img *img, uint64_t l2_entry, void *buf,
			      uint64_t guest_off, size_t len, uint64_t req_end);
/* Splits a compressed descriptor into host offset and byte count. */
void qcow2_compressed_desc(const struct qcow2_state *s, uint64_t l2_entry,
			   uint64_t *host_off_r, uint64_t *bytes_r);

/* qcow2-refcount.c: refcounts and cluster allocation. All calls expect
 * *s->lock held and a top-level read-write handle. */
int qcow2_refcount_init(struct img *img, struct img_err *err);
void qcow2_refcount_free(struct qcow2_state *s);
int qcow2_get_refcount_locked(struct img *img, uint64_t cluster_idx,
			      uint64_t *rc_r);
/* Adds delta (+1 or -1) to the refcount of every cluster that
 * [host_off, host_off + bytes) touches. -EIO (image marked corrupt) on
 * overflow or a drop below zero. Drops go through qcow2_defer_unref. */
int qcow2_update_refcount_locked(struct img *img, uint64_t host_off,
				 uint64_t bytes, int delta);
/* Allocates nb contiguous clusters with refcount 1. */
int qcow2_alloc_clusters_locked(struct img *img, uint64_t nb_clusters,
				uint64_t *host_off_r);
/* Allocates between 1 and max contiguous clusters starting at the first
 * free one, so that large writes never skip freed space (which would
 * grow the file on every rewrite); *nb_r gets how many. */
int qcow2_alloc_clusters_upto_locked(struct img *img, uint64_t max,
				     uint64_t *host_off_r, uint64_t *nb_r);
/* Queues a reference drop of each cluster [host_off, host_off + bytes)
 * touches, applied by qcow2_apply_deferred_locked after the metadata
 * change that dropped the reference is durable. Call it in the same lock
 * section as the L2/L1 change: the reads it waits for are those pinned
 * until now. */
int qcow2_defer_unref_locked(struct img *img, uint64_t host_off,
			     uint64_t bytes);
/* Applies the queued drops whose pins are all released (the others stay
 * queued for a later flush): refcount 0 frees the cluster (hole punched,
 * cached slices forgotten, reusable). Caller flushes rc_cache after. */
int qcow2_apply_deferred_locked(struct img *img);
/* Marks the image corrupt (header bit, as QEMU), turns the handle
 * read-only and returns -EIO. */
/* The one verdict on a plain (not compressed) L2 entry and, with extended
 * L2, its subcluster bitmap, shared by the read and write paths so that a
 * damaged entry is damaged on both: -EIO when a subcluster is both
 * allocated and zero (spec: "the allocation status bit must be unset"),
 * allocated without a host cluster, or when a v2 image uses the zero
 * flag. Reads answer -EIO; writes also mark the image corrupt. */
static inline int qcow2_entry_verdict(const struct qcow2_state *s,
				      uint64_t entry, uint64_t bitmap,
				      bool has_host)
{
	if (!s->extended_l2)
		return (entry & QCOW2_L2E_ZERO) && s->version < 3 ? -EIO : 0;
	uint32_t alloc = (uint32_t)bitmap, zero = (uint32_t)(bitmap >> 32);
	if ((alloc & zero) || (alloc && !has_host))
		return -EIO;
	return 0;
}

int qcow2_signal_corruption(struct img *img, const char *fmt, ...)
	__attribute__((format(printf, 2, 3)));

/* qcow2-write.c */
int qcow2_pwrite(struct img *img, const void *buf, size_t len, uint64_t off);
int qcow2_discard(struct img *img, uint64_t off, uint64_t len);
int qcow2_write_zeroes(struct img *img, uint64_t off, uint64_t len);
int qcow2_flush(struct img *img);
int qcow2_flush_locked(struct img *img);
/* First-write header work (autoclear bits, lazy dirty bit). */
int qcow2_begin_write_locked(struct img *img);
/* At close of a read-write handle: flush, clear the dirty bit. */
int qcow2_close_write(struct img *img);
/* Pointer to the L2 entry of guest_off in a writable (COPIED) L2 table,
 * allocated or copied on demand; the slice is pinned dirty until
 * qcow2_cache_put_locked(s->l2_cache, *slice_r). */
int qcow2_l2_entry_rw_locked(struct img *img, uint64_t guest_off,
			     uint8_t **slice_r, uint8_t **entry_r);

/* qcow2-header.c: the header fields the driver rewrites, by name. */
enum qcow2_hdr_field {
	QCOW2_HDR_REFCOUNT_TABLE_OFFSET,
	QCOW2_HDR_REFCOUNT_TABLE_CLUSTERS,
	QCOW2_HDR_NB_SNAPSHOTS,
	QCOW2_HDR_SNAPSHOTS_OFFSET,
	QCOW2_HDR_INCOMPAT,
	QCOW2_HDR_COMPAT,
	QCOW2_HDR_AUTOCLEAR,
	QCOW2_HDR_NB_FIELDS,
};

struct qcow2_hdr_value {
	enum qcow2_hdr_field field;
	uint64_t value;
};

/* Writes nb fields, adjacent in the header and given in header order, in
 * one pwrite, makes them durable, and only then stores the values in the
 * decoded state (incompat, nb_snapshots, ...). On failure (-errno) the
 * state is unchanged. Top-level handle; expects *s->lock held. */
int qcow2_header_write_locked(struct img *img,
			      const struct qcow2_hdr_value *vals, size_t nb);

static inline int qcow2_header_write_field_locked(struct img *img,
						  enum qcow2_hdr_field field,
						  uint64_t value)
{
	struct qcow2_hdr_value v = { field, value };

	return qcow2_header_write_locked(img, &v, 1);
}

/* qcow2-snapshot.c */
int qcow2_snapshot_create(struct img *img, const char *name,
			  struct img_err *err);
int qcow2_snapshot_delete(struct img *img, const char *id,
			  struct img_err *err);
int qcow2_read_snapshots(struct img *img, struct img_err *err);
void qcow2_free_snapshots(struct qcow2_snapshot *sn, uint32_t nb);
int qcow2_snapshot_list(struct img *img, struct img_snapshot **list_r,
			size_t *nb_r);
/* A snapshot handle whose snapshot was deleted since it was opened (see
 * struct qcow2_view); false for a top handle. Under *lock. */
bool qcow2_snapshot_gone_locked(struct qcow2_view *v);
int qcow2_snapshot_open(struct img *img, const char *id, struct img **snap_r,
			struct img_err *err);

/* The overlap check (qcow2-overlap.c): -EIO, with the image marked
 * corrupt, when [off, off + bytes) of the image file holds metadata. */
int qcow2_check_overlap_locked(struct img *img, uint64_t off, uint64_t bytes);
/* Keep the set of metadata clusters current: a new table in [off, off +
 * bytes); a freed cluster; tables moved wholesale (rebuild later). */
int qcow2_meta_add_locked(struct img *img, uint64_t off, uint64_t bytes);
void qcow2_meta_remove_locked(struct img *img, uint64_t off);
void qcow2_meta_forget_locked(struct img *img);
void qcow2_meta_free(struct qcow2_state *s);

#endif
