/* zahead.h: a small cache of decompressed units (qcow2 compressed
 * clusters, VMDK streamOptimized grains) that a worker thread fills
 * ahead of a sequential reader (zahead.c). imgfmt drivers only.
 *
 * A unit is named by its source (an extent, or NULL) and the host offset
 * where its compressed bytes start. The driver guarantees that a name
 * always stands for the same decompressed bytes while a reader can map
 * it (compressed data is never rewritten in place; a freed range is
 * forgotten with zahead_forget before it can be reused).
 */
#ifndef IMGFS_ZAHEAD_H
#define IMGFS_ZAHEAD_H

#include "imgfmt-int.h"

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

struct zahead;
struct zahead_slot;

/* One unit the worker is to decompress. */
struct zahead_unit {
	uint64_t guest_off; /* where the reader will want it */
	const void *src;   /* with host_off, the unit's name */
	uint64_t host_off; /* first compressed byte */
	uint64_t max_in;   /* compressed bytes from host_off, at most */
};

/* Most units one plan call describes, and most host bytes they span:
 * the worker reads them with one pread. */
#define ZAHEAD_MAX_BATCH 8u
#define ZAHEAD_MAX_IN_BYTES (1u << 20)

struct zahead_ops {
	/* Describes the compressed units that start at guest offsets off
	 * of view (the handle whose reads make the stream; its mapping),
	 * off + unit_bytes, ... (guest order, host_off ascending, the span
	 * from the first host_off to the last host_off + max_in at most
	 * ZAHEAD_MAX_IN_BYTES), at most max of them and none at or past
	 * limit. Returns how many; 0 when the unit at off is not compressed.
	 * *next_r gets the guest offset after what it looked at (> off).
	 * What must stay valid until the units are read (a read pin) goes
	 * in *pin_r; the worker releases it once the batch is done. */
	int (*plan)(void *ctx, void *view, uint64_t off, uint64_t limit,
		    struct zahead_unit *u, size_t max, uint64_t *next_r,
		    struct img_pin *pin_r);
	/* Reads len bytes at host_off of src; zeroes past its end. */
	int (*read)(void *ctx, const void *src, void *buf, size_t len,
		    uint64_t host_off);
	/* Decompresses the unit whose bytes start at in (in_bytes of them
	 * available) into out (unit_bytes of room); *made_r: bytes made. */
	int (*decompress)(void *ctx, const struct zahead_unit *u,
			  const uint8_t *in, size_t in_bytes, uint8_t *out,
			  size_t *made_r);
};

/* A cache of units of unit_bytes, at most max_bytes of them (at least
 * one unit); with enough room for a window (8 units or more, of at most
 * 256 KiB), sequential reads start the worker. NULL on ENOMEM. */
struct zahead *zahead_new(size_t unit_bytes, size_t max_bytes,
			  const struct zahead_ops *ops, void *ctx);
/* Stops and joins the worker (waiting for the batch it is on), then
 * frees everything. The driver calls it before it frees anything the
 * ops use. NULL is fine. */
void zahead_free(struct zahead *z);

/* A reader is about to read guest [off, end) (end: of its whole
 * request) of view, which holds compressed units: reads of one view near
 * the end of the previous ones make the worker decompress the next
 * window of that view. */
void zahead_note_read(struct zahead *z, void *view, uint64_t off,
		      uint64_t end);
/* view is going away: the worker drops its stream, and this returns
 * once no batch of it runs. */
void zahead_detach(struct zahead *z, void *view);

/* A slot reserved for a unit a reader decompresses itself, so that the
 * worker does not do it too and other readers wait for it. */
struct zahead_claim {
	struct zahead_slot *slot;
};

/* Copies [off, off + len) of unit (src, host_off) into buf when the
 * cache has it: returns 1 (-EIO when the unit made fewer bytes).
 * Otherwise returns 0 and claims a slot (claim->slot NULL when none is
 * free, or someone else is on that unit): the caller decompresses and
 * calls zahead_publish whatever happens. */
int zahead_get(struct zahead *z, const void *src, uint64_t host_off,
	       void *buf, size_t off, size_t len, struct zahead_claim *claim);
/* The claimed slot's buffer (unit_bytes), NULL without a slot or on
 * ENOMEM. */
uint8_t *zahead_claim_buf(struct zahead *z, struct zahead_claim *claim);
/* Ends a claim: with keep, the buffer holds the unit (made bytes of it,
 * whose compressed bytes spanned span) and stays cached; otherwise the
 * slot is freed. */
void zahead_publish(struct zahead *z, struct zahead_claim *claim, bool keep,
		    size_t made, uint64_t span);

/* Forgets the units of src whose compressed bytes touch [host_off,
 * host_off + bytes): that range was freed and may be reused. */
void zahead_forget(struct zahead *z, const void *src, uint64_t host_off,
		   uint64_t bytes);

#endif
