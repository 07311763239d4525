/* readahead.c: a disk's pieces, in order, read ahead by a few threads.
 *
 * `imgfs cat IMAGE disk` of a compressed image spends its time
 * decompressing, one cluster after another, in one thread. Here worker
 * threads walk the disk in pieces of at most CLI_IO_BYTES, each piece
 * either data (read with img_pread into the piece's buffer) or a hole
 * (nothing read, when the caller wants holes skipped), and the caller
 * takes the pieces back strictly in order, so its output is what a
 * single-threaded loop would write.
 *
 * Invariants (all under lock): pieces are numbered in disk order; piece n
 * lives in slot n % nb_slots; a worker claims the next piece only when
 * its slot is free, so at most nb_slots pieces (and buffers) exist at
 * once. The plan of the next piece (its kind and length, from block
 * status) is made under the lock, in order; only the read runs unlocked.
 * A failed read is handed to the caller with its piece, and workers stop
 * claiming after it.
 */
#include "cli-int.h"

#include "checked.h"

#include <errno.h>
#include <pthread.h>
#include <stdlib.h>

enum slot_state { SLOT_FREE, SLOT_READING, SLOT_READY };

struct ra_slot {
	enum slot_state state;
	struct cli_piece piece;
	uint8_t *buf; /* CLI_IO_BYTES */
};

struct cli_readahead {
	struct img *img;
	uint64_t size;
	bool skip_holes;
	pthread_mutex_t lock;
	pthread_cond_t changed;
	uint64_t cursor;      /* disk offset of the next piece to plan */
	uint64_t next_plan;   /* number of the next piece to plan */
	uint64_t next_take;   /* number of the next piece the caller takes */
	bool stop;            /* caller is done, or a read failed */
	unsigned nb_slots, nb_threads;
	struct ra_slot *slots;
	pthread_t *threads;
};

/* The next piece from cursor: the rest of a hole in one step, data in at
 * most CLI_IO_BYTES. */
static void plan_locked(struct cli_readahead *ra, struct cli_piece *p)
{
	uint64_t len = MIN(ra->size - ra->cursor, CLI_IO_BYTES);
	struct img_extent ext = { .kind = IMG_EXTENT_DATA };

	p->off = ra->cursor;
	p->hole = false;
	p->ret = 0;
	if (ra->skip_holes &&
	    img_block_status(ra->img, ra->cursor, ra->size - ra->cursor,
			     &ext) == 0) {
		p->hole = ext.kind != IMG_EXTENT_DATA;
		len = p->hole ? MIN(ra->size - ra->cursor, ext.len)
			      : MIN(len, ext.len);
	}
	p->len = len;
	ra->cursor += len;
}

static void *worker(void *arg)
{
	struct cli_readahead *ra = arg;

	pthread_mutex_lock(&ra->lock);
	for (;;) {
		struct ra_slot *sl;

		while (!ra->stop && ra->cursor < ra->size &&
		       ra->slots[ra->next_plan % ra->nb_slots].state !=
			       SLOT_FREE)
			pthread_cond_wait(&ra->changed, &ra->lock);
		if (ra->stop || ra->cursor >= ra->size)
			break;
		sl = &ra->slots[ra->next_plan++ % ra->nb_slots];
		plan_locked(ra, &sl->piece);
		sl->state = SLOT_READING;
		if (!sl->piece.hole) {
			pthread_mutex_unlock(&ra->lock);
			sl->piece.ret = img_pread(ra->img, sl->buf,
						  (size_t)sl->piece.len,
						  sl->piece.off);
			pthread_mutex_lock(&ra->lock);
			if (sl->piece.ret < 0)
				ra->stop = true;
		}
		sl->piece.data = sl->buf;
		sl->state = SLOT_READY;
		pthread_cond_broadcast(&ra->changed);
	}
	pthread_cond_broadcast(&ra->changed);
	pthread_mutex_unlock(&ra->lock);
	return NULL;
}

void cli_readahead_free(struct cli_readahead *ra)
{
	if (!ra)
		return;
	pthread_mutex_lock(&ra->lock);
	ra->stop = true;
	pthread_cond_broadcast(&ra->changed);
	pthread_mutex_unlock(&ra->lock);
	for (unsigned i = 0; i < ra->nb_threads; i++)
		pthread_join(ra->threads[i], NULL);
	for (unsigned i = 0; ra->slots && i < ra->nb_slots; i++)
		free(ra->slots[i].buf);
	free(ra->slots);
	free(ra->threads);
	pthread_cond_destroy(&ra->changed);
	pthread_mutex_destroy(&ra->lock);
	free(ra);
}

int cli_readahead_start(struct img *img, bool skip_holes,
			unsigned nb_threads, struct cli_readahead **ra_r)
{
	struct cli_readahead *ra = calloc(1, sizeof(*ra));

	*ra_r = NULL;
	if (!ra)
		return -ENOMEM;
	ra->img = img;
	ra->size = img_size(img);
	ra->skip_holes = skip_holes;
	/* Two pieces a thread: one being read, one waiting for the
	 * caller, so no thread idles while the caller writes. */
	ra->nb_slots = 2 * nb_threads;
	pthread_mutex_init(&ra->lock, NULL);
	pthread_cond_init(&ra->changed, NULL);
	ra->slots = calloc(ra->nb_slots, sizeof(*ra->slots));
	ra->threads = calloc(nb_threads, sizeof(*ra->threads));
	if (!ra->slots || !ra->threads) {
		cli_readahead_free(ra);
		return -ENOMEM;
	}
	for (unsigned i = 0; i < ra->nb_slots; i++) {
		ra->slots[i].buf = malloc(CLI_IO_BYTES);
		if (!ra->slots[i].buf) {
			cli_readahead_free(ra);
			return -ENOMEM;
		}
	}
	for (unsigned i = 0; i < nb_threads; i++) {
		if (pthread_create(&ra->threads[i], NULL, worker, ra) != 0)
			break;
		ra->nb_threads++;
	}
	if (ra->nb_threads == 0) {
		cli_readahead_free(ra);
		return -EAGAIN;
	}
	*ra_r = ra;
	return 0;
}

int cli_readahead_next(struct cli_readahead *ra, struct cli_piece *p)
{
	struct ra_slot *sl;

	pthread_mutex_lock(&ra->lock);
	if (ra->next_take > 0) {
		/* The piece handed out last time is done with. */
		sl = &ra->slots[(ra->next_take - 1) % ra->nb_slots];
		sl->state = SLOT_FREE;
		pthread_cond_broadcast(&ra->changed);
	}
	sl = &ra->slots[ra->next_take % ra->nb_slots];
	/* The piece is planned (numbers below next_plan) and read, or it
	 * never will be: the end, or a failure before it. */
	while (!(ra->next_take < ra->next_plan && sl->state == SLOT_READY) &&
	       !((ra->cursor >= ra->size || ra->stop) &&
		 ra->next_take >= ra->next_plan))
		pthread_cond_wait(&ra->changed, &ra->lock);
	if (ra->next_take >= ra->next_plan) {
		pthread_mutex_unlock(&ra->lock);
		return 0;
	}
	*p = sl->piece;
	ra->next_take++;
	pthread_mutex_unlock(&ra->lock);
	return 1;
}
