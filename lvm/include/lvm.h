/* lvm.h: the public interface of the LVM2 layer.
 *
 * Finds LVM2 physical volumes among a set of block files (image handles:
 * partitions or whole disks), reads their metadata (our own parser of the
 * on-disk label, the metadata area and its text format), and shows every
 * logical volume whose extents lie on present physical volumes as an
 * image handle of its own (linear, striped, mirror/raid1 from one leg).
 * Nothing is activated and nothing is written to the metadata.
 */
#ifndef IMGFS_LVM_H
#define IMGFS_LVM_H

#include "imgfmt.h"

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

struct lvm_set;

/* A block file that may hold a physical volume. */
struct lvm_source {
	const char *name;   /* as the tree shows it: "p2", "disk"; copied */
	struct img *img;    /* borrowed; open until lvm_set_free */
};

struct lvm_lv {
	const char *vg_name;
	const char *name;
	const char *vg_uuid, *uuid;
	uint64_t size_bytes;
	const char *segment_types; /* "linear", "striped", "linear,striped" */
	/* NULL when the volume can be read; else why not, in one line
	 * ("thin volumes are not supported", "physical volume UUID is
	 * missing", "segment 1 lies past the end of physical volume ..."). */
	const char *unreadable;
	size_t nb_segments;        /* as the metadata lists them */
};

struct lvm_pv {
	const char *vg_name;
	const char *uuid;
	const char *source;  /* lvm_source.name, NULL when missing */
	uint64_t size_bytes;
};

struct lvm_vg {
	const char *name, *uuid;
	uint64_t seqno;
	uint64_t extent_bytes;
	/* NULL when the metadata was usable; else why not (checksum, parse
	 * error, ...): the VG then has no LVs. name and uuid are "" when no
	 * copy of the metadata could be parsed at all. */
	const char *error;
};

/* Scans every source for PV labels and reads the newest valid metadata of
 * each VG. Returns 0 with a set that may hold no VG; -ENOMEM and other
 * -errno only when nothing could be done. */
int lvm_scan(const struct lvm_source *srcs, size_t nb_srcs,
	     struct lvm_set **set_r);
void lvm_set_free(struct lvm_set *set);

/* The VGs, PVs and LVs found; pointers stay valid until lvm_set_free.
 * LVs are sorted by VG name then LV name; hidden sub-volumes (raid legs,
 * thin pools' data) are not listed. */
size_t lvm_nb_vgs(const struct lvm_set *set);
const struct lvm_vg *lvm_vg_at(const struct lvm_set *set, size_t i);
size_t lvm_nb_pvs(const struct lvm_set *set);
const struct lvm_pv *lvm_pv_at(const struct lvm_set *set, size_t i);
size_t lvm_nb_lvs(const struct lvm_set *set);
const struct lvm_lv *lvm_lv_at(const struct lvm_set *set, size_t i);
/* True when the source holds a PV label (its bytes belong to LVM). */
bool lvm_source_is_pv(const struct lvm_set *set, const char *source);

/* Opens LV i as an image handle (reads, block status, writes unless
 * read_only, flush), mapped onto the sources' handles. Close it with
 * img_close before lvm_set_free. -ENOTSUP (with err) when unreadable.
 * A volume read through a mirror/raid1 leg is always read-only (a write
 * to one leg would leave the others stale). Safe from several threads. */
int lvm_lv_open(struct lvm_set *set, size_t i, bool read_only,
		struct img **img_r, struct img_err *err);

#endif
