/* test-qcow2-pins.c: a read's pin keeps the host cluster it mapped from
 * being handed to another guest range (imgfmt/pin.c, qcow2-refcount.c).
 *
 *   - the epoch rules alone: a drop waits for the pins taken up to it,
 *     and not for pins taken after it;
 *   - two threads in lock step: a reader maps and pins guest cluster A;
 *     a writer discards A, flushes and writes fresh clusters; none of them
 *     gets A's old host cluster while the pin is held, the reader still
 *     reads A's bytes there, and once the pin is released the next flush
 *     frees the cluster and the next allocation reuses it;
 *   - img_pread under fire: readers of tagged clusters against writers
 *     that discard, flush and rewrite other clusters; a read never
 *     returns another cluster's tag;
 *   - after close, qemu-img check finds no errors and no leaked cluster.
 * Skips (77) without qemu-img.
 */
#undef NDEBUG
#include "imgfmt-int.h"

#include <assert.h>
#include <errno.h>
#include <inttypes.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

static char dir[] = "/tmp/test-qcow2-pins-XXXXXX";

#include "workdir.h"

#define CLUSTER 4096u
#define NB_CLUSTERS 64u
#define DISK_BYTES ((uint64_t)CLUSTER * NB_CLUSTERS)

/* Every 8-byte word of guest cluster c, generation g, holds c << 32 | g:
 * a word read back names the cluster it was written for. */
static void tag(uint64_t *buf, uint64_t c, uint64_t g)
{
	for (size_t i = 0; i < CLUSTER / 8; i++)
		buf[i] = c << 32 | g;
}

static void assert_cluster_of(const uint64_t *buf, uint64_t c)
{
	for (size_t i = 0; i < CLUSTER / 8; i++) {
		if (buf[i] != 0 && buf[i] >> 32 != c) {
			fprintf(stderr, "read of cluster %" PRIu64 " returned "
				"a word of cluster %" PRIu64 "\n", c,
				buf[i] >> 32);
			abort();
		}
	}
}

static struct img *open_rw(const char *name)
{
	struct img_open_opts o = { .format = IMG_FORMAT_QCOW2 };
	struct img_err err;
	struct img *img;
	char *p = path_of(name);

	if (img_open(p, &o, &img, &err) < 0) {
		fprintf(stderr, "open %s: %s\n", p, err.msg);
		abort();
	}
	free(p);
	return img;
}

/* A fresh image whose clusters 0 .. nb-1 hold their tags (generation 0)
 * and the rest is unallocated. */
static struct img *make_image(const char *name, uint64_t nb)
{
	uint64_t buf[CLUSTER / 8];
	struct img *img;

	assert(sh_status("rm -f %s && qemu-img create -q -f qcow2 -o cluster_size=%u "
		  "%s %" PRIu64, name, CLUSTER, name, DISK_BYTES) == 0);
	img = open_rw(name);
	for (uint64_t c = 0; c < nb; c++) {
		tag(buf, c, 0);
		assert(img_pwrite(img, buf, CLUSTER, c * CLUSTER) == 0);
	}
	assert(img_flush(img) == 0);
	return img;
}

static void assert_image_clean(const char *name)
{
	char *p = path_of(name);
	char *cmd;
	FILE *f;
	char line[256];
	bool no_errors = false;

	assert(asprintf(&cmd, "qemu-img check %s 2>&1", p) > 0);
	f = popen(cmd, "r");
	assert(f);
	while (fgets(line, sizeof(line), f)) {
		if (strstr(line, "leaked") || strstr(line, "ERROR")) {
			fprintf(stderr, "qemu-img check %s: %s", p, line);
			abort();
		}
		no_errors |= strncmp(line, "No errors were found", 20) == 0;
	}
	assert(pclose(f) == 0);
	assert(no_errors);
	free(cmd);
	free(p);
}

static uint64_t host_of(struct img *img, uint64_t c)
{
	struct img_extent ext;

	assert(img_block_status(img, c * CLUSTER, CLUSTER, &ext) == 0);
	assert(ext.kind == IMG_EXTENT_DATA && ext.host_fd >= 0);
	return ext.host_off;
}

/* The epoch rules on a bare domain. */
static void test_epochs(void)
{
	struct img_pin_domain d = { 0 };
	struct img_pin a, b, c, e;
	uint64_t tag0, tag1;

	/* No pins: a drop is free at once. */
	assert(img_pin_released_locked(&d, img_pin_epoch_locked(&d)));

	img_pin_take_locked(&d, &a);
	tag0 = img_pin_epoch_locked(&d);
	assert(!img_pin_released_locked(&d, tag0));
	assert(!img_pin_released_locked(&d, tag0)); /* asking again: same */
	/* A pin taken after the drop does not hold it back... */
	img_pin_take_locked(&d, &b);
	img_unpin(&a);
	assert(img_pin_released_locked(&d, tag0));
	/* ...but it holds back a drop made while it is held. */
	tag1 = img_pin_epoch_locked(&d);
	assert(!img_pin_released_locked(&d, tag1));
	/* A pin taken in the drop's own epoch counts as taken before it
	 * (the counters cannot tell): it holds the drop too. */
	img_pin_take_locked(&d, &c);
	img_unpin(&b);
	assert(!img_pin_released_locked(&d, tag1));
	/* That attempt moved the epoch on: a pin taken now is not in the
	 * way. */
	img_pin_take_locked(&d, &e);
	img_unpin(&c);
	assert(img_pin_released_locked(&d, tag1));
	img_unpin(&e);
	img_unpin(&e); /* a released pin holds nothing */
	assert(img_pin_released_locked(&d, img_pin_epoch_locked(&d)));
	assert(d.nb_pins[0] == 0 && d.nb_pins[1] == 0);
	printf("ok epochs\n");
}

/* Lock step between a reader and a writer thread. */
struct step {
	pthread_mutex_t m;
	pthread_cond_t cv;
	int stage;
	struct img *img;
	uint64_t pinned_host;
};

static void wait_stage(struct step *st, int stage)
{
	pthread_mutex_lock(&st->m);
	while (st->stage < stage)
		pthread_cond_wait(&st->cv, &st->m);
	pthread_mutex_unlock(&st->m);
}

static void set_stage(struct step *st, int stage)
{
	pthread_mutex_lock(&st->m);
	st->stage = stage;
	pthread_cond_broadcast(&st->cv);
	pthread_mutex_unlock(&st->m);
}

/* Guest cluster the reader pins, and the first of the unallocated ones
 * the writer then fills. */
#define PINNED_CLUSTER 3u
#define FRESH_CLUSTER 40u
#define NB_FRESH 8u

static void *pinning_reader(void *opaque)
{
	struct step *st = opaque;
	uint64_t buf[CLUSTER / 8];
	struct img_extent ext;
	struct img_pin pin;

	assert(img_block_status_pinned(st->img, PINNED_CLUSTER * CLUSTER,
				       CLUSTER, &ext, &pin) == 0);
	assert(ext.kind == IMG_EXTENT_DATA && ext.host_fd >= 0 && pin.domain);
	st->pinned_host = ext.host_off;
	set_stage(st, 1); /* mapped and pinned */
	wait_stage(st, 2); /* the writer discarded, flushed, reallocated */
	/* What a splice would read now: still this range's bytes. */
	assert(pread(ext.host_fd, buf, CLUSTER, (off_t)ext.host_off) ==
	       CLUSTER);
	assert_cluster_of(buf, PINNED_CLUSTER);
	assert(buf[0] == (uint64_t)PINNED_CLUSTER << 32);
	img_unpin(&pin);
	set_stage(st, 3);
	return NULL;
}

static void test_pin_holds_reuse(void)
{
	struct step st = { .m = PTHREAD_MUTEX_INITIALIZER,
			   .cv = PTHREAD_COND_INITIALIZER };
	uint64_t buf[CLUSTER / 8];
	pthread_t reader;
	uint64_t freed;

	st.img = make_image("hold.qcow2", FRESH_CLUSTER);
	assert(pthread_create(&reader, NULL, pinning_reader, &st) == 0);
	wait_stage(&st, 1);
	freed = st.pinned_host;
	/* The pinned range goes away and its drop becomes durable... */
	assert(img_discard(st.img, PINNED_CLUSTER * CLUSTER, CLUSTER) == 0);
	assert(img_flush(st.img) == 0);
	assert(img_flush(st.img) == 0);
	/* ...but the allocator, first fit, must not hand out its cluster. */
	for (uint64_t c = FRESH_CLUSTER; c < FRESH_CLUSTER + NB_FRESH; c++) {
		tag(buf, c, 1);
		assert(img_pwrite(st.img, buf, CLUSTER, c * CLUSTER) == 0);
		assert(host_of(st.img, c) != freed);
		assert(img_flush(st.img) == 0);
	}
	set_stage(&st, 2);
	wait_stage(&st, 3);
	assert(pthread_join(reader, NULL) == 0);
	/* Unpinned: the next flush frees it and the next allocation, the
	 * lowest free cluster, is the one the pin kept. */
	assert(img_flush(st.img) == 0);
	tag(buf, FRESH_CLUSTER + NB_FRESH, 1);
	assert(img_pwrite(st.img, buf, CLUSTER,
			  (FRESH_CLUSTER + NB_FRESH) * CLUSTER) == 0);
	assert(host_of(st.img, FRESH_CLUSTER + NB_FRESH) == freed);
	img_close(st.img);
	assert_image_clean("hold.qcow2");
	printf("ok a pinned cluster is not reallocated until unpinned\n");
}

/* The same through img_pread, which pins by itself, against writers:
 * readers read clusters [0, READ_CLUSTERS); writers discard one of them,
 * flush, and rewrite the one they discarded last time, so a freed
 * cluster's next owner is another guest cluster. */
#define READ_CLUSTERS 16u
#define STRESS_SECONDS 2

struct stress {
	struct img *img;
	struct timespec end;
	unsigned seed;
	uint64_t reads;
};

static bool running(const struct stress *s)
{
	struct timespec now;

	clock_gettime(CLOCK_MONOTONIC, &now);
	return now.tv_sec < s->end.tv_sec ||
	       (now.tv_sec == s->end.tv_sec && now.tv_nsec < s->end.tv_nsec);
}

static void *stress_reader(void *opaque)
{
	struct stress *s = opaque;
	uint64_t buf[4 * CLUSTER / 8];

	while (running(s)) {
		uint64_t c = rand_r(&s->seed) % (READ_CLUSTERS - 3);
		uint64_t n = 1 + rand_r(&s->seed) % 4;

		assert(img_pread(s->img, buf, n * CLUSTER, c * CLUSTER) == 0);
		for (uint64_t i = 0; i < n; i++)
			assert_cluster_of(buf + i * CLUSTER / 8, c + i);
		s->reads++;
	}
	return NULL;
}

static void *stress_writer(void *opaque)
{
	struct stress *s = opaque;
	uint64_t buf[CLUSTER / 8], prev = UINT64_MAX, gen = 1;

	while (running(s)) {
		uint64_t c = rand_r(&s->seed) % READ_CLUSTERS;

		assert(img_discard(s->img, c * CLUSTER, CLUSTER) == 0);
		assert(img_flush(s->img) == 0);
		if (prev != UINT64_MAX) {
			tag(buf, prev, gen++);
			assert(img_pwrite(s->img, buf, CLUSTER,
					  prev * CLUSTER) == 0);
			assert(img_flush(s->img) == 0);
		}
		prev = c;
	}
	return NULL;
}

static void test_pread_under_fire(void)
{
	struct stress st[6];
	pthread_t t[6];
	struct img *img = make_image("fire.qcow2", READ_CLUSTERS);
	uint64_t reads = 0;

	for (unsigned i = 0; i < 6; i++) {
		st[i] = (struct stress){ .img = img, .seed = i + 1 };
		clock_gettime(CLOCK_MONOTONIC, &st[i].end);
		st[i].end.tv_sec += STRESS_SECONDS;
		assert(pthread_create(&t[i], NULL,
				      i < 4 ? stress_reader : stress_writer,
				      &st[i]) == 0);
	}
	for (unsigned i = 0; i < 6; i++) {
		assert(pthread_join(t[i], NULL) == 0);
		reads += st[i].reads;
	}
	assert(reads > 0);
	img_close(img);
	assert_image_clean("fire.qcow2");
	printf("ok %" PRIu64 " reads under discards and rewrites\n", reads);
}

int main(void)
{
	if (system("qemu-img --version >/dev/null 2>&1") != 0) {
		printf("skip: no qemu-img\n");
		return 77;
	}
	assert(mkdtemp(dir));
	test_epochs();
	test_pin_holds_reuse();
	test_pread_under_fire();
	assert(sh_status("rm -rf %s", dir) == 0);
	return 0;
}
