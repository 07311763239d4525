/* lvm-disk.h: one source's label, PV header and metadata copies
 * (lvm-disk.c). Only lvm/ includes this.
 */
#ifndef IMGFS_LVM_DISK_H
#define IMGFS_LVM_DISK_H

#include "lvm-int.h"

#include <inttypes.h>

/* Two metadata areas per PV at most in lvm2 (start and end); a few more
 * are read if a header lists them. */
#define LVM_DISK_MAX_COPIES 4

struct lvm_copy {
	bool good;              /* checksums right, parsed, label right */
	struct lvm_node *root;  /* owned; NULL when the text did not parse */
	const struct lvm_node *vg; /* the VG section, inside root */
	const char *vg_name, *vg_uuid; /* inside root; NULL if unknown */
	uint64_t seqno;
	/* The same text as a good copy read before (a VG's PVs hold the
	 * same metadata): not parsed again, neither used nor reported. */
	bool dup;
	uint32_t text_crc;
	uint64_t text_bytes;
	char why[256];          /* why not good */
};

struct lvm_disk {
	bool is_pv;          /* a label was found */
	bool label_ok;       /* its checksum, sector and header are right */
	char why[256];       /* why not label_ok */
	char pv_uuid[33];    /* no dashes */
	uint64_t dev_size_bytes;
	uint64_t data_off[8];
	size_t nb_data_areas;
	struct lvm_copy copies[LVM_DISK_MAX_COPIES];
	size_t nb_copies;
};

static inline bool is_uuid_char(char c)
{
	return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') ||
	       (c >= '0' && c <= '9');
}

/* Reads what src holds. 0 (d filled; d->is_pv false when no label) or
 * -errno when the source cannot be read at all or memory runs out.
 * prev[0..nb_prev) are the sources read before (for duplicate texts);
 * budget is the scan's node budget (lvm_text_parse). */
int lvm_disk_read(struct img *img, const char *src_name,
		  const struct lvm_disk *prev, size_t nb_prev, size_t *budget,
		  struct lvm_disk *d);
void lvm_disk_free(struct lvm_disk *d);

#endif
