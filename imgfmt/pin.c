/* pin.c: read pins, so that host bytes a read mapped are not given to
 * another range of the disk before the read has used them.
 *
 * A driver whose host mapping changes while it is open (qcow2: a discard
 * or a copy-on-write frees a cluster, a later write allocates it for
 * another guest range) maps a range under its metadata lock and then
 * reads it, or hands the host offset out to be spliced, with no lock
 * held. The read takes a pin in the same lock section as the map; a
 * cluster whose last reference is dropped is not freed while a pin taken
 * before the drop may still cover it.
 *
 * The pins are counted per epoch, not per cluster: a domain has an epoch
 * number and two counters, one for the pins of even epochs and one for
 * the odd. A pin counts in the counter of the epoch current when it was
 * taken. Whatever drops a reference notes the epoch at the drop (the
 * "tag"); the drop may be applied once the epoch has advanced to tag + 2.
 * The epoch advances from e to e + 1 only when the counter it is about to
 * reuse, that of epoch e - 1, is zero. So at epoch tag + 2 every pin of
 * epoch tag + 1 - 1 = tag, and by the same rule every earlier one, has
 * been released: none of the readers that could have mapped the dropped
 * cluster still uses it.
 *
 * Invariants:
 *   - the epoch only changes, and pins are only taken, under the owner's
 *     metadata lock; releases happen anywhere (an atomic decrement), so
 *     a reader never waits for a writer, nor a writer for a reader: a
 *     drop whose pins are still held simply stays queued until a later
 *     attempt (the owner's next flush) finds them gone;
 *   - a pin is held for the time of one read or one splice reply, so an
 *     epoch's pins drain within one request's duration once no new pins
 *     join it (new pins go to the new epoch's counter).
 *
 * Not here: what a drop does (the driver's refcounts), or waiting for a
 * drain: nobody ever blocks on pins.
 */
#include "imgfmt-int.h"

void img_pin_take_locked(struct img_pin_domain *d, struct img_pin *pin_r)
{
	unsigned slot = (unsigned)(d->epoch & 1);

	/* Relaxed: the owner's lock orders this against the epoch flips
	 * that read the counter. */
	__atomic_add_fetch(&d->nb_pins[slot], 1, __ATOMIC_RELAXED);
	pin_r->domain = d;
	pin_r->slot = slot;
}

void img_unpin(struct img_pin *pin)
{
	if (!pin || !pin->domain)
		return;
	/* Release: the read of the pinned bytes happens before a flip that
	 * sees this counter drop, and so before any reuse of the bytes. */
	__atomic_sub_fetch(&pin->domain->nb_pins[pin->slot], 1,
			   __ATOMIC_RELEASE);
	pin->domain = NULL;
}

uint64_t img_pin_epoch_locked(const struct img_pin_domain *d)
{
	return d->epoch;
}

bool img_pin_released_locked(struct img_pin_domain *d, uint64_t tag)
{
	while (d->epoch < tag + 2) {
		unsigned reused = (unsigned)((d->epoch + 1) & 1);

		if (__atomic_load_n(&d->nb_pins[reused], __ATOMIC_ACQUIRE))
			return false;
		d->epoch++;
	}
	return true;
}
