/* test-qcow2-views.c: snapshot handles are views of one image state.
 *
 * A qcow2 image has its state once (struct qcow2_state: caches, lock,
 * snapshot table, write path) and each handle a small view of it (struct
 * qcow2_view: which L1 table). Checked here:
 *   - one decompression cache for the image: a compressed cluster that
 *     one handle inflated is found by the top handle and by a handle of
 *     another snapshot, even after its bytes on disk were destroyed
 *     (a handle with a state of its own then fails to read it);
 *   - opening a snapshot allocates a view, not a copy of the state;
 *   - snapshot handles closed in every order, some never used, some
 *     used, with the top handle writing, deleting and creating snapshots
 *     in between, leave the top handle reading and writing right, and
 *     qemu-img check finds the image clean;
 *   - a handle of a deleted snapshot stays gone when a new snapshot
 *     takes the same ID and L1 table place;
 *   - readers of two snapshot handles in threads while the top handle
 *     overwrites the clusters they share (the ThreadSanitizer build runs
 *     this too).
 * Skips (77) without qemu-img or qemu-io.
 */
#undef NDEBUG
#include "qcow2-int.h"

#include <assert.h>
#include <errno.h>
#include <fcntl.h>
#include <malloc.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

static char dir[] = "/tmp/test-qcow2-views-XXXXXX";

#include "workdir.h"

#define MIB (1024u * 1024u)
#define CLUSTER (64u * 1024u)

#define sh(...) assert(sh_status(__VA_ARGS__) == 0)

static struct img *open_image(const char *name, bool read_only)
{
	struct img_open_opts o = { .format = IMG_FORMAT_QCOW2,
				   .read_only = read_only };
	struct img_err err = { 0 };
	struct img *img = NULL;
	char *p = path_of(name);

	if (img_open(p, &o, &img, &err) < 0) {
		fprintf(stderr, "open %s: %s\n", p, err.msg);
		abort();
	}
	free(p);
	return img;
}

static struct img *open_snap(struct img *img, const char *id)
{
	struct img_err err = { 0 };
	struct img *snap = NULL;

	if (img_snapshot_open(img, id, &snap, &err) < 0) {
		fprintf(stderr, "snapshot %s: %s\n", id, err.msg);
		abort();
	}
	return snap;
}

/* [off, off + len) of img reads as byte b. */
static bool reads_as(struct img *img, uint64_t off, size_t len, uint8_t b)
{
	uint8_t *buf = malloc(len);
	bool ok;

	assert(buf);
	ok = img_pread(img, buf, len, off) == 0;
	for (size_t i = 0; ok && i < len; i++)
		ok = buf[i] == b;
	free(buf);
	return ok;
}

static void fill(struct img *img, uint64_t off, size_t len, uint8_t b)
{
	uint8_t *buf = malloc(len);

	assert(buf);
	memset(buf, b, len);
	assert(img_pwrite(img, buf, len, off) == 0);
	free(buf);
}

/* Host offset and length of the compressed cluster that guest_off of the
 * top handle img maps to. */
static void compressed_span(struct img *img, uint64_t guest_off,
			    uint64_t *host_r, uint64_t *bytes_r)
{
	struct qcow2_state *s = qcow2_state(img);
	struct qcow2_run run;

	pthread_mutex_lock(s->lock);
	assert(qcow2_map_locked(img, guest_off, 4096, false, &run) == 0);
	pthread_mutex_unlock(s->lock);
	assert(run.kind == QCOW2_RUN_COMPRESSED);
	qcow2_compressed_desc(s, run.l2_entry, host_r, bytes_r);
}

/* z.qcow2: 4 MiB compressed by qemu-img, 0x11 throughout. Snapshot 1
 * is that; snapshot 2 has 0x22 at [1M, 1M + 64K); the active image also
 * 0x33 at [2M, 2M + 64K). Guest cluster 0 is one compressed cluster
 * that all three share. */
static void make_compressed(void)
{
	sh("rm -f z.raw z.qcow2");
	sh("qemu-img create -q -f raw z.raw 4M");
	sh("qemu-io -f raw -c 'write -q -P 0x11 0 4M' z.raw");
	sh("qemu-img convert -c -O qcow2 -o cluster_size=64k z.raw z.qcow2");
	sh("qemu-img snapshot -c s1 z.qcow2");
	sh("qemu-io -f qcow2 -c 'write -q -P 0x22 1M 64k' z.qcow2");
	sh("qemu-img snapshot -c s2 z.qcow2");
	sh("qemu-io -f qcow2 -c 'write -q -P 0x33 2M 64k' z.qcow2");
}

static void test_shared_state(void)
{
	struct img *top, *s1, *s2, *other;
	uint64_t host, bytes;
	uint8_t *junk;
	char *p;
	int fd;

	make_compressed();
	top = open_image("z.qcow2", true);
	s1 = open_snap(top, "1");
	s2 = open_snap(top, "2");
	assert(reads_as(s1, MIB, CLUSTER, 0x11));
	assert(reads_as(s2, MIB, CLUSTER, 0x22));
	assert(reads_as(top, 2 * MIB, CLUSTER, 0x33));

	/* A view, not a copy: the snapshot handles reach the top handle's
	 * state and allocated far less than a state of their own. */
	assert(qcow2_state(s1) == qcow2_state(top));
	assert(qcow2_state(s2) == qcow2_state(top));
	assert(qcow2_view(s1)->parent == top && !qcow2_view(top)->parent);
	assert(malloc_usable_size(s1->priv) < sizeof(struct qcow2_state));

	/* A partial read inflates guest cluster 0 into the cache... */
	assert(reads_as(s1, 0, 4096, 0x11));
	/* ...then its compressed bytes on disk are destroyed. */
	compressed_span(top, 0, &host, &bytes);
	junk = malloc(bytes);
	assert(junk);
	memset(junk, 0xff, bytes);
	p = path_of("z.qcow2");
	fd = open(p, O_WRONLY);
	assert(fd >= 0);
	assert(pwrite(fd, junk, bytes, (off_t)host) == (ssize_t)bytes);
	close(fd);
	free(junk);
	free(p);

	/* A handle with a state of its own cannot read the cluster now... */
	other = open_image("z.qcow2", true);
	assert(!reads_as(other, 4096, 4096, 0x11));
	img_close(other);
	/* ...while the handles of the image that inflated it still find it:
	 * the other snapshot's handle and the top handle share the cache. */
	assert(reads_as(s2, 4096, 4096, 0x11));
	assert(reads_as(top, 8192, 4096, 0x11));
	assert(reads_as(s1, 12288, 4096, 0x11));

	img_close(s2);
	img_close(s1);
	assert(reads_as(top, 16384, 4096, 0x11));
	img_close(top);
}

/* p.qcow2: 4 MiB, 64 KiB clusters, plain (not compressed) data.
 * Snapshot 1: 0x11 at [0, 1M). Snapshot 2: that, and 0x22 at [1M, 2M).
 * Active: also 0x33 at [2M, 3M). */
static void make_plain(void)
{
	sh("rm -f p.qcow2");
	sh("qemu-img create -q -f qcow2 -o cluster_size=64k p.qcow2 4M");
	sh("qemu-io -f qcow2 -c 'write -q -P 0x11 0 1M' p.qcow2");
	sh("qemu-img snapshot -c s1 p.qcow2");
	sh("qemu-io -f qcow2 -c 'write -q -P 0x22 1M 1M' p.qcow2");
	sh("qemu-img snapshot -c s2 p.qcow2");
	sh("qemu-io -f qcow2 -c 'write -q -P 0x33 2M 1M' p.qcow2");
}

/* snap, a handle of snapshot id of p.qcow2, reads what that snapshot
 * holds at [0, 2M). */
static bool snap_is_right(struct img *snap, const char *id)
{
	if (!reads_as(snap, 0, MIB, 0x11))
		return false;
	return reads_as(snap, MIB, MIB, strcmp(id, "1") == 0 ? 0 : 0x22);
}

#define NB_SNAPS 3

static void test_close_orders(void)
{
	/* Handles of snapshot 1 (twice) and 2. */
	static const char *const ids[NB_SNAPS] = { "1", "2", "1" };
	static const int orders[][NB_SNAPS] = {
		{ 0, 1, 2 }, { 0, 2, 1 }, { 1, 0, 2 },
		{ 1, 2, 0 }, { 2, 0, 1 }, { 2, 1, 0 },
	};

	for (size_t o = 0; o < sizeof(orders) / sizeof(orders[0]); o++) {
		for (int unused = -1; unused < NB_SNAPS; unused++) {
			struct img *top, *snap[NB_SNAPS];
			uint8_t b = (uint8_t)(0x40 + o * 8 + (unsigned)unused);

			make_plain();
			top = open_image("p.qcow2", false);
			for (int i = 0; i < NB_SNAPS; i++)
				snap[i] = open_snap(top, ids[i]);
			/* Handle `unused` is closed before any use. */
			for (int i = 0; i < NB_SNAPS; i++)
				if (i != unused)
					assert(snap_is_right(snap[i], ids[i]));
			for (int k = 0; k < NB_SNAPS; k++) {
				int c = orders[o][k];

				/* The top handle overwrites clusters the
				 * snapshots share (copy on write) before
				 * each close; the others read on. */
				fill(top, (uint64_t)k * 512 * 1024, CLUSTER,
				     (uint8_t)(b + k));
				img_close(snap[c]);
				snap[c] = NULL;
				for (int i = 0; i < NB_SNAPS; i++)
					if (snap[i] && i != unused)
						assert(snap_is_right(snap[i],
								     ids[i]));
			}
			for (int k = 0; k < NB_SNAPS; k++)
				assert(reads_as(top, (uint64_t)k * 512 * 1024,
						CLUSTER, (uint8_t)(b + k)));
			assert(reads_as(top, 2 * MIB, MIB, 0x33));
			fill(top, 3 * MIB, MIB, b);
			assert(img_flush(top) == 0);
			img_close(top);
			sh("qemu-img check -q p.qcow2");
			sh("qemu-io -f qcow2 -c 'read -q -P 0x%x 3M 1M' "
			   "p.qcow2", b);
		}
	}
}

/* Deleting a snapshot with handles open: its handles answer -ENOENT, the
 * other snapshot's handle reads on, a new snapshot's handle shares the
 * state; one gone handle closes at once, the other only after the live
 * ones, and the top handle reads right after each close. */
static void test_delete_and_create(void)
{
	struct img_err err = { 0 };
	struct img *top, *a, *b, *c, *n;
	struct img_snapshot *list = NULL;
	size_t nb = 0;
	uint8_t buf[4096];

	make_plain();
	top = open_image("p.qcow2", false);
	a = open_snap(top, "1");
	b = open_snap(top, "2");
	c = open_snap(top, "2");
	assert(snap_is_right(b, "2"));
	assert(img_snapshot_delete(top, "2", &err) == 0);
	assert(img_pread(b, buf, sizeof(buf), 0) == -ENOENT);
	assert(img_pread(c, buf, sizeof(buf), MIB) == -ENOENT);
	assert(snap_is_right(a, "1"));
	img_close(b);
	fill(top, 0, MIB, 0x55);
	assert(img_snapshot_create(top, "s3", &err) == 0);
	assert(img_snapshot_list(top, &list, &nb) == 0 && nb == 2);
	n = open_snap(top, list[1].id);
	img_snapshot_list_free(list, nb);
	assert(qcow2_state(n) == qcow2_state(top));
	fill(top, 0, MIB, 0x66);
	assert(reads_as(n, 0, MIB, 0x55));
	assert(reads_as(n, MIB, MIB, 0x22));
	assert(snap_is_right(a, "1"));
	img_close(a);
	img_close(n);
	assert(reads_as(top, 0, MIB, 0x66));
	img_close(c);
	assert(reads_as(top, 2 * MIB, MIB, 0x33));
	img_close(top);
	sh("qemu-img check -q p.qcow2");
	sh("qemu-io -f qcow2 -c 'read -q -P 0x66 0 1M' p.qcow2");
}

/* A create right after a delete takes the deleted snapshot's ID again
 * and, the L1 copy being the lowest free cluster, its L1 table's place:
 * a handle of the deleted snapshot still answers -ENOENT, and does not
 * read the new snapshot's data (0x22) as its own (0x11). */
static void test_reused_id(void)
{
	struct img_err err = { 0 };
	struct img *top, *old, *new;
	uint64_t old_l1;
	uint8_t buf[4096];

	sh("rm -f r.qcow2");
	sh("qemu-img create -q -f qcow2 -o cluster_size=64k r.qcow2 4M");
	sh("qemu-io -f qcow2 -c 'write -q -P 0x11 0 1M' r.qcow2");
	top = open_image("r.qcow2", false);
	assert(img_snapshot_create(top, "a", &err) == 0);
	old = open_snap(top, "1");
	assert(reads_as(old, 0, MIB, 0x11));
	old_l1 = qcow2_view(old)->l1_table_offset;
	assert(img_snapshot_delete(top, "1", &err) == 0);
	fill(top, 0, CLUSTER, 0x22); /* in place: nothing allocated */
	assert(img_snapshot_create(top, "b", &err) == 0);
	new = open_snap(top, "1");
	/* The case this is about: same ID, same L1 table place. */
	assert(qcow2_view(new)->l1_table_offset == old_l1);
	assert(img_pread(old, buf, sizeof(buf), 0) == -ENOENT);
	assert(reads_as(new, 0, CLUSTER, 0x22));
	img_close(old);
	assert(reads_as(new, CLUSTER, MIB - CLUSTER, 0x11));
	img_close(new);
	img_close(top);
	sh("qemu-img check -q r.qcow2");
}

struct reader {
	struct img *snap;
	const char *id;
	volatile bool *stop;
	unsigned rounds;
	bool ok;
};

static void *reader_main(void *arg)
{
	struct reader *r = arg;

	r->ok = true;
	/* At least a few rounds, however soon the writer is done. */
	while ((!__atomic_load_n(r->stop, __ATOMIC_ACQUIRE) ||
		r->rounds < 32) && r->ok) {
		/* Partial reads of compressed clusters go through the shared
		 * cache; the last one is plain (0x22 in snapshot 2). */
		uint64_t off = (uint64_t)(r->rounds % 16) * CLUSTER + 1000;

		r->ok = reads_as(r->snap, off, 3000, 0x11) &&
			reads_as(r->snap, MIB + 100, 200,
				 strcmp(r->id, "1") == 0 ? 0x11 : 0x22);
		r->rounds++;
	}
	return NULL;
}

static void test_threads(void)
{
	volatile bool stop = false;
	struct reader r[2];
	pthread_t t[2];
	struct img *top;

	make_compressed();
	top = open_image("z.qcow2", false);
	r[0] = (struct reader){ .snap = open_snap(top, "1"), .id = "1",
				.stop = &stop };
	r[1] = (struct reader){ .snap = open_snap(top, "2"), .id = "2",
				.stop = &stop };
	for (int i = 0; i < 2; i++)
		assert(pthread_create(&t[i], NULL, reader_main, &r[i]) == 0);
	/* The top handle copies on write the compressed clusters both
	 * snapshots still read. */
	for (unsigned i = 0; i < 16; i++)
		fill(top, (uint64_t)i * CLUSTER + 512, 1024,
		     (uint8_t)(0x80 + i));
	assert(img_flush(top) == 0);
	__atomic_store_n(&stop, true, __ATOMIC_RELEASE);
	for (int i = 0; i < 2; i++) {
		assert(pthread_join(t[i], NULL) == 0);
		assert(r[i].ok && r[i].rounds > 0);
		img_close(r[i].snap);
	}
	for (unsigned i = 0; i < 16; i++)
		assert(reads_as(top, (uint64_t)i * CLUSTER + 512, 1024,
				(uint8_t)(0x80 + i)));
	img_close(top);
	sh("qemu-img check -q z.qcow2");
}

int main(void)
{
	if (system("qemu-img --version >/dev/null 2>&1") != 0 ||
	    system("qemu-io --version >/dev/null 2>&1") != 0)
		return 77;
	assert(mkdtemp(dir));
	test_shared_state();
	test_close_orders();
	test_delete_and_create();
	test_reused_id();
	test_threads();
	assert(sh_status("rm -rf '%s'", dir) == 0);
	printf("ok\n");
	return 0;
}
