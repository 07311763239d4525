/* partition.h: the public interface of the partition layer.
 *
 * Reads a partition table (every label libfdisk knows: MBR with extended
 * and logical partitions, GPT, BSD, SGI, Sun) and probes each partition's
 * filesystem with libblkid, from a file descriptor and a size. It knows
 * nothing of image formats: the caller hands a descriptor whose bytes are
 * the disk (a raw image, or the daemon's own mounted `disk` file).
 */
#ifndef IMGFS_PARTITION_H
#define IMGFS_PARTITION_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

struct part_entry {
	unsigned number;      /* as the table numbers it; MBR logical: 5.. */
	uint64_t start_bytes;
	uint64_t size_bytes;  /* clipped to the end of the disk */
	bool past_end;        /* the table says it runs past the disk end */
	bool container;       /* MBR extended partition: its range holds the
	                       * logical partitions (p5...), not a filesystem */
	char *type;           /* "0x83" (MBR), lowercase type GUID (GPT) */
	char *type_name;      /* "Linux filesystem", or NULL */
	char *part_uuid;      /* GPT GUID, MBR "diskid-NN" as blkid; NULL */
	char *part_name;      /* GPT partition name, or NULL */
	char *fs_type;        /* "ext4", "vfat"... from libblkid, or NULL */
	char *fs_label;
	char *fs_uuid;
};

struct part_table {
	char *label;          /* "dos", "gpt", ...; NULL: no table found */
	char *disk_id;        /* disk identifier, or NULL */
	char *error;          /* table present but unusable: why; or NULL */
	char *warning;        /* usable, but something is off (backup GPT
	                       * used, EBR unreadable...): what; or NULL */
	char *disk_fs_type;   /* filesystem on the whole disk, or NULL */
	char *disk_fs_label;
	char *disk_fs_uuid;
	size_t nb_parts;
	struct part_entry *parts; /* sorted by number */
};

/* Scans the disk in fd (size bytes). Returns 0 and a table, which may have
 * no partitions, or an error string; -ENOMEM and other -errno only when
 * nothing could be read at all. Free with part_table_free. The scan moves
 * fd's file offset (libfdisk and libblkid seek and read): give it a
 * descriptor no other thread uses meanwhile. fd stays open. */
int part_scan(int fd, uint64_t size, struct part_table **table_r);
void part_table_free(struct part_table *table);

/* Where a disk's bytes come from when there is no descriptor for them
 * (an image read through imgfmt). read is all-or-nothing: 0 or -errno.
 * is_zero_or_hole (may be NULL) answers 1 when [off, off + *run_len_r)
 * reads as zeroes, 0 when it holds data, with *run_len_r <= len the length
 * of that run, or -errno. */
struct part_reader {
	void *ctx;
	int (*read)(void *ctx, void *buf, size_t len, uint64_t off);
	int (*is_zero_or_hole)(void *ctx, uint64_t off, uint64_t len,
			       uint64_t *run_len_r);
	/* May be NULL. Asked before each copied chunk and each scan round:
	 * true ends the scan with -ECANCELED (a daemon on its way out does
	 * not wait for the 64 rounds a hostile table can take). */
	bool (*cancelled)(void *ctx);
};

/* part_scan of the disk rd reads (size bytes), through a sparse memory
 * file holding only the regions the scan needs (scan-reader.c). The same
 * table as part_scan on a descriptor of the whole disk; -ENOMEM,
 * -ECANCELED (rd->cancelled), or -errno when no memory file can be
 * made. */
int part_scan_reader(const struct part_reader *rd, uint64_t size,
		     struct part_table **table_r);
/* A deep copy of table, or NULL on ENOMEM (or when table is NULL). */
struct part_table *part_table_dup(const struct part_table *table);

/* A table as bytes and back (wire.c), to pass it between processes:
 * encode gives a malloc'd buffer; decode checks every length and gives
 * -EPROTO for anything that is not exactly one encoded table. */
int part_table_encode(const struct part_table *table, uint8_t **buf_r,
		      size_t *len_r);
int part_table_decode(const uint8_t *buf, size_t len,
		      struct part_table **table_r);

#endif
