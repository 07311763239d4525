/* zahead.c: decompressed units, cached, and decompressed ahead of a
 * sequential reader by a worker thread.
 *
 * Why: a reader through the mount (the kernel's readahead, 128 KiB FUSE
 * requests) sends its requests one after another, so one thread
 * inflates every cluster while the other core idles; compressed images
 * read at the speed of one decompressor plus the request round trips.
 * With the worker decompressing the next window while the reader's
 * thread replies, the next request finds its units ready and is a copy.
 * When the reader catches up with the worker, it decompresses the units
 * of its request itself (claiming them, so nobody does one twice) while
 * the worker skips past them to the next ones: both cores decompress,
 * and at most the one unit the worker was on is done twice.
 *
 * Memory: the cache holds at most max_bytes of units (4 MiB per image
 * handle, as the drivers create it), allocated as used, plus the
 * worker's input buffer of ZAHEAD_MAX_IN_BYTES (1 MiB), made when it
 * starts. The window the worker fills is half the slots, so that what
 * it decompressed is not evicted before the reader gets there: slots a
 * reader consumed whole go first.
 *
 * Slots: EMPTY, PENDING (claimed by the worker or a reader, which alone
 * touches its data, with no lock) or READY. State changes, lookups and
 * copies out of READY slots happen under z->lock; a PENDING slot is
 * never evicted. Nobody waits for a PENDING unit (see zahead_get).
 *
 * The stream is one view's (a qcow2 handle: the top one or a snapshot's,
 * which share the cache but not the mapping); reads of another view
 * start a new stream, and zahead_detach waits until no batch of a
 * closing view runs. The worker is started by the first sequential
 * read, never outlives zahead_free (which the driver calls at close
 * before freeing what the ops use), and never reports errors: a unit it could not decompress is
 * left EMPTY, and the reader that needs it decompresses it itself and
 * reports what went wrong.
 */
#include "zahead.h"

#include "checked.h"
#include "cleanup.h"

#include <errno.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>

#define ZAHEAD_MAX_SLOTS 64u
#define ZAHEAD_MIN_WINDOW_SLOTS 8u
#define ZAHEAD_MAX_AHEAD_UNIT (256u << 10)
/* Requests in a row, each near the previous end, that make a stream. */
#define ZAHEAD_STREAK 2u

enum slot_state { SLOT_EMPTY, SLOT_PENDING, SLOT_READY };

struct zahead_slot {
	enum slot_state state;
	bool stale;        /* PENDING, forgotten meanwhile: drop when done */
	const void *src;
	uint64_t host_off;
	uint64_t span;     /* compressed bytes from host_off (at most) */
	uint64_t last_use; /* 0: consumed, evict first */
	uint8_t *data;     /* unit_bytes, allocated on first use */
	size_t made;
};

struct zahead {
	pthread_mutex_t lock;
	pthread_cond_t work;  /* the worker waits for a window */
	pthread_cond_t idle;  /* zahead_detach waits for a batch to end */
	const struct zahead_ops *ops;
	void *ctx;
	size_t unit_bytes;
	size_t nb_slots;
	uint64_t clock;
	/* The reader's stream: where its last read ended; the worker
	 * decompresses [cursor, limit). */
	void *view;      /* whose reads make the stream (NULL: none) */
	void *busy_view; /* the view of the batch in progress */
	uint64_t req_end;
	uint64_t last_end; /* end of the request the last note was for */
	unsigned streak;   /* requests in a row near the previous end */
	uint64_t cursor, limit;
	uint64_t window_bytes; /* 0: no worker for this cache */
	bool started, stop;
	pthread_t thread;
	struct zahead_slot slots[ZAHEAD_MAX_SLOTS];
};

struct zahead *zahead_new(size_t unit_bytes, size_t max_bytes,
			  const struct zahead_ops *ops, void *ctx)
{
	struct zahead *z;
	size_t nb;

	if (!unit_bytes)
		return NULL;
	nb = MIN((size_t)ZAHEAD_MAX_SLOTS,
		 MAX((size_t)1, max_bytes / unit_bytes));
	z = calloc(1, sizeof(*z));
	if (!z)
		return NULL;
	pthread_mutex_init(&z->lock, NULL);
	pthread_cond_init(&z->work, NULL);
	pthread_cond_init(&z->idle, NULL);
	z->ops = ops;
	z->ctx = ctx;
	z->unit_bytes = unit_bytes;
	z->nb_slots = nb;
	z->req_end = UINT64_MAX; /* no read yet: the first is not "next" */
	if (nb / 2 >= ZAHEAD_MIN_WINDOW_SLOTS &&
	    unit_bytes <= ZAHEAD_MAX_AHEAD_UNIT && ops && ops->plan)
		z->window_bytes = (uint64_t)(nb / 2) * unit_bytes;
	return z;
}

void zahead_free(struct zahead *z)
{
	if (!z)
		return;
	pthread_mutex_lock(&z->lock);
	z->stop = true;
	pthread_cond_broadcast(&z->work);
	pthread_mutex_unlock(&z->lock);
	if (z->started)
		pthread_join(z->thread, NULL);
	for (size_t i = 0; i < z->nb_slots; i++)
		free(z->slots[i].data);
	pthread_cond_destroy(&z->idle);
	pthread_cond_destroy(&z->work);
	pthread_mutex_destroy(&z->lock);
	free(z);
}

static struct zahead_slot *find_locked(struct zahead *z, const void *src,
				       uint64_t host_off)
{
	for (size_t i = 0; i < z->nb_slots; i++) {
		struct zahead_slot *sl = &z->slots[i];

		if (sl->state != SLOT_EMPTY && sl->src == src &&
		    sl->host_off == host_off)
			return sl;
	}
	return NULL;
}

/* An EMPTY slot, else the least recently used READY one (consumed ones
 * have last_use 0); NULL when all are PENDING. Its buffer is allocated
 * here so that the claimer owns a usable slot. */
static struct zahead_slot *claim_locked(struct zahead *z, const void *src,
					uint64_t host_off, uint64_t span)
{
	struct zahead_slot *victim = NULL;

	for (size_t i = 0; i < z->nb_slots; i++) {
		struct zahead_slot *sl = &z->slots[i];

		if (sl->state == SLOT_EMPTY) {
			victim = sl;
			break;
		}
		if (sl->state == SLOT_READY &&
		    (!victim || sl->last_use < victim->last_use))
			victim = sl;
	}
	if (!victim)
		return NULL;
	if (!victim->data) {
		victim->data = malloc(z->unit_bytes);
		if (!victim->data)
			return NULL;
	}
	victim->state = SLOT_PENDING;
	victim->stale = false;
	victim->src = src;
	victim->host_off = host_off;
	victim->span = span;
	victim->made = 0;
	return victim;
}

static void publish_locked(struct zahead *z, struct zahead_slot *sl,
			   bool keep, size_t made, uint64_t span)
{
	if (keep && !sl->stale) {
		sl->state = SLOT_READY;
		sl->made = made;
		sl->span = span;
		sl->last_use = ++z->clock;
	} else {
		sl->state = SLOT_EMPTY;
	}
}

/* One batch: plan, one pread of what is not cached yet, then claim,
 * decompress and publish one unit at a time, so that a reader that
 * catches up takes the next unclaimed unit itself and both decompress.
 * Called and returns with z->lock held. */
static void run_batch_locked(struct zahead *z, uint8_t *in)
{
	struct zahead_unit u[ZAHEAD_MAX_BATCH];
	struct img_pin pin = { 0 };
	uint64_t off = z->cursor, limit = z->limit, next = 0, base, end;
	size_t first = ZAHEAD_MAX_BATCH, last = 0;
	void *view = z->view;
	int n, ret;

	if (!view) {
		z->limit = z->cursor;
		return;
	}
	z->busy_view = view;
	pthread_mutex_unlock(&z->lock);
	n = z->ops->plan(z->ctx, view, off, limit, u, ZAHEAD_MAX_BATCH,
			 &next, &pin);
	pthread_mutex_lock(&z->lock);
	if (z->view != view) {
		/* Detached, or another view's stream began meanwhile. */
		img_unpin(&pin);
		return;
	}
	if (n < 0 || next <= off) {
		/* Nothing more to do until the next sequential read. */
		img_unpin(&pin);
		z->limit = z->cursor;
		return;
	}
	if (next > z->cursor)
		z->cursor = next;
	for (int i = 0; i < n; i++) {
		if (find_locked(z, u[i].src, u[i].host_off))
			continue; /* cached, or someone is on it */
		first = MIN(first, (size_t)i);
		last = (size_t)i;
	}
	if (first == ZAHEAD_MAX_BATCH) {
		img_unpin(&pin);
		return;
	}
	pthread_mutex_unlock(&z->lock);

	base = u[first].host_off;
	end = u[last].host_off + u[last].max_in;
	ret = end - base <= ZAHEAD_MAX_IN_BYTES ?
		      z->ops->read(z->ctx, u[first].src, in,
				   (size_t)(end - base), base) :
		      -EIO; /* a plan that broke its promise */
	for (size_t i = first; i <= last && ret == 0; i++) {
		struct zahead_slot *sl;
		size_t made = 0;
		int r;

		pthread_mutex_lock(&z->lock);
		/* A unit of the reader's current request is the reader's:
		 * the worker goes on past it rather than have the reader
		 * wait for it. */
		sl = z->stop || u[i].guest_off < z->req_end ||
				     find_locked(z, u[i].src, u[i].host_off) ?
			     NULL :
			     claim_locked(z, u[i].src, u[i].host_off,
					  u[i].max_in);
		pthread_mutex_unlock(&z->lock);
		if (!sl)
			continue;
		r = z->ops->decompress(z->ctx, &u[i],
				       in + (u[i].host_off - base),
				       (size_t)MIN(u[i].max_in,
						   end - u[i].host_off),
				       sl->data, &made);
		pthread_mutex_lock(&z->lock);
		publish_locked(z, sl, r == 0, made, u[i].max_in);
		pthread_mutex_unlock(&z->lock);
	}
	img_unpin(&pin);
	pthread_mutex_lock(&z->lock);
}

static void *worker(void *arg)
{
	struct zahead *z = arg;
	uint8_t *in = malloc(ZAHEAD_MAX_IN_BYTES);

	pthread_mutex_lock(&z->lock);
	if (!in)
		z->window_bytes = 0;
	while (!z->stop && in) {
		if (z->cursor >= z->limit) {
			pthread_cond_wait(&z->work, &z->lock);
			continue;
		}
		run_batch_locked(z, in);
		z->busy_view = NULL;
		pthread_cond_broadcast(&z->idle);
	}
	pthread_mutex_unlock(&z->lock);
	free(in);
	return NULL;
}

void zahead_note_read(struct zahead *z, void *view, uint64_t off,
		      uint64_t end)
{
	if (!z)
		return;
	LOCK_FOR_SCOPE(&z->lock);
	/* The units of one request each say the same: the first said it. */
	if (!z->window_bytes || (view == z->view && end == z->last_end))
		return;
	z->last_end = end;
	if (view != z->view) {
		/* Another handle's reads: a stream of its own begins. */
		z->view = view;
		z->req_end = UINT64_MAX;
	}
	/* Near the previous reads' end (two requests of the stream may
	 * arrive out of order): the stream goes on. Anything else starts a
	 * new one, and the worker stops after its batch. */
	bool near = z->req_end != UINT64_MAX &&
		    off + z->window_bytes >= z->req_end &&
		    off <= z->req_end + z->window_bytes;

	if (!near) {
		z->streak = 0;
		z->req_end = end;
		z->limit = z->cursor;
		return;
	}
	if (end > z->req_end) {
		z->req_end = end;
		z->streak += z->streak < ZAHEAD_STREAK;
	}
	/* Random reads land near the last one now and then: only a few
	 * requests in a row make a stream worth decompressing ahead. */
	if (z->streak < ZAHEAD_STREAK)
		return;
	/* This request's units are the reader's own: the worker starts
	 * after them. */
	if (z->cursor < z->req_end || z->cursor > z->req_end + z->window_bytes)
		z->cursor = z->req_end;
	z->limit = z->req_end + z->window_bytes;
	if (z->stop)
		return;
	if (!z->started) {
		if (pthread_create(&z->thread, NULL, worker, z) != 0) {
			z->window_bytes = 0; /* read on without it */
			return;
		}
		z->started = true;
	}
	pthread_cond_signal(&z->work);
}

void zahead_detach(struct zahead *z, void *view)
{
	if (!z)
		return;
	LOCK_FOR_SCOPE(&z->lock);
	if (z->view == view) {
		z->view = NULL;
		z->req_end = UINT64_MAX;
		z->streak = 0;
		z->limit = z->cursor;
	}
	while (z->busy_view == view)
		pthread_cond_wait(&z->idle, &z->lock);
}

int zahead_get(struct zahead *z, const void *src, uint64_t host_off,
	       void *buf, size_t off, size_t len, struct zahead_claim *claim)
{
	struct zahead_slot *sl;

	claim->slot = NULL;
	LOCK_FOR_SCOPE(&z->lock);
	sl = find_locked(z, src, host_off);
	/* Someone is on it: decompress it here too rather than wait. A
	 * wait is a hand-off between threads, which on a busy machine costs
	 * a scheduler slice (milliseconds: 1 MiB img_pread of zlib clusters
	 * went from 0.6 s to 8 s when readers waited), more than one unit
	 * takes to decompress; it happens at most once per request. */
	if (sl && sl->state == SLOT_PENDING)
		return 0;
	if (sl) {
		if (off > sl->made || len > sl->made - off)
			return -EIO;
		memcpy(buf, sl->data + off, len);
		/* A unit read whole is done with (sequential reads): let it
		 * go first. A part may be followed by the rest. */
		sl->last_use = off == 0 && len == sl->made ? 0 : ++z->clock;
		return 1;
	}
	claim->slot = claim_locked(z, src, host_off, 0);
	return 0;
}

uint8_t *zahead_claim_buf(struct zahead *z, struct zahead_claim *claim)
{
	(void)z;
	return claim->slot ? claim->slot->data : NULL;
}

void zahead_publish(struct zahead *z, struct zahead_claim *claim, bool keep,
		    size_t made, uint64_t span)
{
	if (!claim->slot)
		return;
	LOCK_FOR_SCOPE(&z->lock);
	publish_locked(z, claim->slot, keep, made, span);
	claim->slot = NULL;
}

void zahead_forget(struct zahead *z, const void *src, uint64_t host_off,
		   uint64_t bytes)
{
	if (!z)
		return;
	LOCK_FOR_SCOPE(&z->lock);
	for (size_t i = 0; i < z->nb_slots; i++) {
		struct zahead_slot *sl = &z->slots[i];

		if (sl->state == SLOT_EMPTY || sl->src != src ||
		    sl->host_off >= host_off + bytes ||
		    sl->host_off + MAX(sl->span, (uint64_t)1) <= host_off)
			continue;
		if (sl->state == SLOT_PENDING)
			sl->stale = true;
		else
			sl->state = SLOT_EMPTY;
	}
}
