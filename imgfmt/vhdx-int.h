/* vhdx-int.h: what the VHDX driver's files share (vhdx.c: open, map,
 * reads; vhdx-log.c: CRC-32C, log replay into an in-memory overlay).
 *
 * Layout (MS-VHDX 2.x): the first 1 MiB holds the file identifier
 * ("vhdxfile" at 0), two 4 KiB headers at 64 KiB and 128 KiB, and two
 * copies of the 64 KiB region table at 192 KiB and 256 KiB. The region
 * table locates the BAT and the metadata region; the active header
 * locates the log. All integers are little-endian; GUIDs are compared as
 * the 16 bytes the file stores.
 *
 * The state is immutable once open returns: the BAT is loaded and
 * checked whole, the log (if any) is replayed into an overlay at open.
 * Reads therefore take no lock at all.
 */
#ifndef IMGFS_IMGFMT_VHDX_INT_H
#define IMGFS_IMGFMT_VHDX_INT_H

#include "imgfmt-int.h"

#include <stddef.h>
#include <stdint.h>

#define VHDX_KiB ((uint64_t)1024)
#define VHDX_MiB ((uint64_t)1024 * 1024)

#define VHDX_HEADER1_OFF (64 * VHDX_KiB)
#define VHDX_HEADER2_OFF (128 * VHDX_KiB)
#define VHDX_HEADER_BYTES (4 * VHDX_KiB)
#define VHDX_RT1_OFF (192 * VHDX_KiB)
#define VHDX_RT2_OFF (256 * VHDX_KiB)
#define VHDX_RT_BYTES (64 * VHDX_KiB)
#define VHDX_RT_MAX_ENTRIES 2047
/* The header section: nothing else may live in the first 1 MiB. */
#define VHDX_HEADER_SECTION_BYTES VHDX_MiB

#define VHDX_META_TABLE_BYTES (64 * VHDX_KiB)
#define VHDX_META_MAX_ENTRIES 2047
#define VHDX_META_ITEM_MAX_BYTES VHDX_MiB

#define VHDX_BLOCK_MIN_BYTES VHDX_MiB
#define VHDX_BLOCK_MAX_BYTES (256 * VHDX_MiB)
/* Sectors one 1 MiB sector bitmap block describes (2^20 bytes * 8). */
#define VHDX_SECTORS_PER_BITMAP ((uint64_t)1 << 23)
#define VHDX_BITMAP_BLOCK_BYTES VHDX_MiB
/* The spec's largest virtual disk. */
#define VHDX_MAX_VIRTUAL_BYTES (64ull * VHDX_MiB * VHDX_MiB)
/* No offset in a VHDX file may lie past this (2^62): keeps every sum of
 * an offset and a length far from wrapping. */
#define VHDX_MAX_FILE_BYTES ((uint64_t)1 << 62)
/* Our own bound on the BAT held in memory (a 64 TiB disk with 1 MiB
 * blocks needs 512 MiB of BAT: refused with a message, not allocated). */
#define VHDX_MAX_BAT_BYTES (128 * VHDX_MiB)

/* BAT entry (spec 2.5.1): state in bits 0-2, file offset in MiB in
 * bits 20-63. */
#define VHDX_BAT_STATE_MASK 0x7ull
#define VHDX_BAT_OFF_MASK 0xfffffffffff00000ull
enum {
	VHDX_PAYLOAD_NOT_PRESENT = 0,
	VHDX_PAYLOAD_UNDEFINED = 1,
	VHDX_PAYLOAD_ZERO = 2,
	VHDX_PAYLOAD_UNMAPPED = 3,
	/* 4 is reserved; we also store it for an entry found bad at open
	 * (points past the end, into metadata): reads of it give -EIO. */
	VHDX_PAYLOAD_BAD = 4,
	VHDX_PAYLOAD_UNMAPPED_V095 = 5, /* pre-1.0 spelling, read as 3 */
	VHDX_PAYLOAD_FULLY_PRESENT = 6,
	VHDX_PAYLOAD_PARTIALLY_PRESENT = 7,
};
#define VHDX_SB_NOT_PRESENT 0
#define VHDX_SB_PRESENT 6

/* Log (spec 2.3): 4 KiB sectors; entries of a header sector with up to
 * 126 descriptors, further descriptor sectors of 128, then data
 * sectors. */
#define VHDX_LOG_SECTOR_BYTES 4096u
#define VHDX_LOG_HDR_BYTES 64u
#define VHDX_LOG_DESC_BYTES 32u
/* Our bound on a log that must be replayed (QEMU's default is 1 MiB,
 * Hyper-V's too); a larger one is refused with a message. */
#define VHDX_LOG_MAX_BYTES (256 * VHDX_MiB)

/* A file range the driver reserves (header section, log, BAT, metadata,
 * any other region of the region table): data blocks must not lie in
 * one. Sorted by start, non-overlapping. */
struct vhdx_region {
	uint64_t start;
	uint64_t end;
};

/* One replayed write of the log: len bytes at file_off that read as
 * data (len is a multiple of 4 KiB), or zeroes when data is NULL. */
struct vhdx_overlay_ent {
	uint64_t file_off;
	uint64_t len;
	const uint8_t *data;
};

/* The replayed log: entries in log order (a later one wins where two
 * overlap), and the range they cover as a whole for a quick miss. */
struct vhdx_overlay {
	struct vhdx_overlay_ent *ents;
	size_t nb_ents;
	uint8_t *sectors; /* the data entries point into this */
	uint64_t lo, hi;  /* [lo, hi): union bound of every entry */
	size_t nb_log_entries;
	uint64_t last_seq;
	uint64_t last_file_off; /* largest last_file_offset of an entry */
};

/* Read-only driver: everything here is set by vhdx_open (log replay
 * included, into the overlay) and only read afterwards, by any thread,
 * with no lock. */
struct vhdx_state {
	uint64_t file_bytes;    /* the file's real size */
	uint64_t eff_file_bytes; /* as the replayed log extends it */
	uint8_t data_write_guid[16];
	uint8_t log_guid[16];
	uint64_t header_seq;
	unsigned active_header; /* 1 or 2 */
	uint64_t log_off, log_bytes;

	uint64_t bat_off, bat_region_bytes;
	uint64_t meta_off, meta_region_bytes;

	uint32_t block_bytes;
	unsigned block_bits;
	uint32_t logical_sector_bytes;
	unsigned sector_bits;
	uint32_t physical_sector_bytes;
	uint64_t chunk_ratio; /* payload blocks per sector bitmap block */
	bool leave_allocated; /* fixed */
	bool has_parent;      /* differencing */
	uint8_t page83[16];

	uint64_t nb_data_blocks;
	uint64_t nb_bitmap_blocks;
	uint64_t nb_bat_entries;
	uint64_t *bat; /* decoded; bad entries rewritten to VHDX_PAYLOAD_BAD */

	struct vhdx_region *regions;
	size_t nb_regions;

	struct vhdx_overlay overlay;

	char *parent_name;    /* the locator path we opened, UTF-8 */
	char *parent_linkage; /* as stored, UTF-8 */
	char subformat[16];
};

static inline struct vhdx_state *vhdx_state(const struct img *img)
{
	return img->priv;
}

/* CRC-32C (Castagnoli), as VHDX checksums use it: crc starts at
 * 0xffffffff and the result is inverted by vhdx_crc32c_final. */
uint32_t vhdx_crc32c_update(uint32_t crc, const void *buf, size_t len);
/* The checksum of buf with its 4-byte field at crc_off taken as zero. */
uint32_t vhdx_checksum(const uint8_t *buf, size_t len, size_t crc_off);

/* Finds the active log sequence (the active header's log fields are in
 * s) and replays it into s->overlay. 0 when there is nothing to replay;
 * -EINVAL with a message for a log that cannot be replayed. */
int vhdx_log_replay(struct img *img, struct vhdx_state *s,
		    struct img_err *err);
void vhdx_overlay_free(struct vhdx_overlay *ov);
/* Copies the overlay's bytes over buf, which holds file bytes
 * [off, off + len). */
void vhdx_overlay_apply(const struct vhdx_overlay *ov, uint8_t *buf,
			size_t len, uint64_t off);
/* True when some replayed write touches [off, off + len). */
bool vhdx_overlay_touches(const struct vhdx_overlay *ov, uint64_t off,
			  uint64_t len);

/* Reads file bytes [off, off + len) as the replayed log leaves them:
 * bytes past the real end (inside eff_file_bytes) read as zeroes. -EIO
 * past eff_file_bytes. */
int vhdx_read_file(struct img *img, void *buf, size_t len, uint64_t off);

#endif
