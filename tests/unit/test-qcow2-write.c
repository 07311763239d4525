/* test-qcow2-write.c: the qcow2 write path against qemu-img.
 *
 * Differential: for images of many kinds (cluster sizes, refcount
 * widths, extended L2, compat 0.10, compressed, with a backing file, with
 * snapshots, external data file, lazy refcounts) one deterministic
 * workload (unaligned writes, overwrites, discards, write-zeroes,
 * flushes) goes through imgfmt and, as pwrite/fallocate, to a raw
 * reference file; after close `qemu-img compare` must call them
 * identical and `qemu-img check` must find no errors and no leaks. Also:
 * bounded file growth under rewrite/discard, snapshots create/delete,
 * four concurrent writers, a corruption case, and crash safety (SIGKILL
 * of a writing child, 20 times). Skips (77) without qemu-img.
 */
#undef NDEBUG
#include "imgfmt.h"

#include <assert.h>
#include <endian.h>
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <pthread.h>
#include <signal.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

static char dir[] = "/tmp/test-qcow2-write-XXXXXX";

#include "workdir.h"

static uint64_t rng_state;
static uint64_t rnd(void)
{
	rng_state ^= rng_state << 13;
	rng_state ^= rng_state >> 7;
	rng_state ^= rng_state << 17;
	return rng_state;
}

static struct img *open_rw(const char *name)
{
	struct img_open_opts o = { .format = IMG_FORMAT_QCOW2,
				   .backing = IMG_BACKING_FOLLOW };
	struct img_err err;
	struct img *img;
	char *p = path_of(name);
	int ret = img_open(p, &o, &img, &err);

	if (ret < 0) {
		fprintf(stderr, "open %s: %s\n", p, err.msg);
		abort();
	}
	free(p);
	return img;
}

static void fill(uint8_t *buf, size_t n, uint64_t seed)
{
	for (size_t i = 0; i < n; i++)
		buf[i] = (uint8_t)((seed * 131 + i * 7 + (i >> 9)) ^ (seed >> 3));
}

/* One workload, applied to img and the reference fd alike. */
static void workload(struct img *img, int ref, uint64_t seed, unsigned nb_ops,
		     uint64_t max_len)
{
	uint64_t size = img_size(img);
	uint8_t *buf = malloc(max_len);

	assert(buf);
	rng_state = seed;
	for (unsigned i = 0; i < nb_ops; i++) {
		unsigned op = (unsigned)(rnd() % 100);
		uint64_t len = 1 + rnd() % max_len;
		uint64_t off = rnd() % size;

		if (rnd() % 3 == 0)
			off &= ~511ull; /* some aligned ones too */
		if (off + len > size)
			len = size - off;
		if (op < 70) {
			fill(buf, len, rnd());
			assert(img_pwrite(img, buf, len, off) == 0);
			assert(pwrite(ref, buf, len, (off_t)off) == (ssize_t)len);
		} else if (op < 80) {
			assert(img_discard(img, off, len) == 0);
			assert(fallocate(ref, FALLOC_FL_PUNCH_HOLE |
					 FALLOC_FL_KEEP_SIZE, (off_t)off,
					 (off_t)len) == 0);
		} else if (op < 92) {
			assert(img_write_zeroes(img, off, len) == 0);
			assert(fallocate(ref, FALLOC_FL_PUNCH_HOLE |
					 FALLOC_FL_KEEP_SIZE, (off_t)off,
					 (off_t)len) == 0);
		} else {
			assert(img_flush(img) == 0);
		}
		if (i % 50 == 0) {
			/* Read back a stretch through both. */
			uint8_t *a = malloc(len), *b = malloc(len);
			assert(a && b);
			assert(img_pread(img, a, len, off) == 0);
			assert(pread(ref, b, len, (off_t)off) == (ssize_t)len);
			assert(memcmp(a, b, len) == 0);
			free(a);
			free(b);
		}
	}
	free(buf);
}

static void check_clean(const char *name)
{
	int st = sh_status("qemu-img check %s", name);

	if (st != 0) {
		sh_status("qemu-img check %s >&2", name);
		system("true");
		fprintf(stderr, "qemu-img check %s: exit %d\n", name, st);
		char *cmd;
		assert(asprintf(&cmd, "qemu-img check %s/%s", dir, name) > 0);
		system(cmd);
		free(cmd);
		abort();
	}
}

static void compare(const char *name, const char *ref)
{
	int st = sh_status("qemu-img compare -f qcow2 %s -F raw %s", name, ref);

	if (st != 0) {
		fprintf(stderr, "qemu-img compare %s %s: exit %d\n", name, ref,
			st);
		abort();
	}
}

static void save_disk(struct img *img, const char *name)
{
	uint64_t size = img_size(img);
	uint8_t *buf = malloc(size);
	char *p = path_of(name);
	int fd = open(p, O_CREAT | O_TRUNC | O_WRONLY, 0644);

	assert(buf && fd >= 0);
	assert(img_pread(img, buf, size, 0) == 0);
	assert(write(fd, buf, size) == (ssize_t)size);
	close(fd);
	free(buf);
	free(p);
}

static char *id_of(struct img *img, const char *name)
{
	struct img_snapshot *list;
	size_t nb;
	char *id = NULL;

	assert(img_snapshot_list(img, &list, &nb) == 0);
	for (size_t i = 0; i < nb; i++)
		if (strcmp(list[i].name, name) == 0)
			id = strdup(list[i].id);
	img_snapshot_list_free(list, nb);
	assert(id);
	return id;
}

struct kind {
	const char *name;
	const char *setup; /* shell: makes k.qcow2 and ref.raw */
	uint64_t max_len;
};

static const struct kind kinds[] = {
	{ "64k", "qemu-img create -f qcow2 k.qcow2 16M", 200000 },
	{ "512", "qemu-img create -f qcow2 -o cluster_size=512 k.qcow2 4M",
	  5000 },
	{ "rc1", "qemu-img create -f qcow2 -o refcount_bits=1 k.qcow2 16M",
	  200000 },
	{ "rc1-512", "qemu-img create -f qcow2 -o refcount_bits=1,"
		     "cluster_size=512 k.qcow2 4M", 5000 },
	{ "rc64-512", "qemu-img create -f qcow2 -o refcount_bits=64,"
		      "cluster_size=512 k.qcow2 8M", 20000 },
	{ "rc16-4k", "qemu-img create -f qcow2 -o cluster_size=4096 k.qcow2 "
		     "16M", 50000 },
	{ "extl2", "qemu-img create -f qcow2 -o extended_l2=on,"
		   "cluster_size=64k k.qcow2 16M", 200000 },
	{ "extl2-backing", "truncate -s 16M b.raw && qemu-io -f raw -c "
			   "'write -P 0x5a 0 16M' b.raw && qemu-img create -f "
			   "qcow2 -o extended_l2=on,cluster_size=32k -b b.raw "
			   "-F raw k.qcow2 16M", 100000 },
	{ "v2", "qemu-img create -f qcow2 -o compat=0.10 k.qcow2 16M",
	  200000 },
	{ "lazy", "qemu-img create -f qcow2 -o lazy_refcounts=on k.qcow2 16M",
	  200000 },
	{ "compressed", "truncate -s 8M r.raw && qemu-io -f raw -c "
			"'write -P 0x33 0 3M' -c 'write -P 0x44 5M 2M' r.raw && "
			"qemu-img convert -c -f raw -O qcow2 r.raw k.qcow2",
	  200000 },
	{ "backing", "qemu-img create -f qcow2 b.qcow2 16M && qemu-io -f "
		     "qcow2 -c 'write -P 0x11 0 5M' -c 'write -P 0x22 9M 3M' "
		     "b.qcow2 && qemu-img create -f qcow2 -b b.qcow2 -F qcow2 "
		     "k.qcow2 16M", 200000 },
	{ "snapshots", "qemu-img create -f qcow2 k.qcow2 16M && qemu-io -f "
		       "qcow2 -c 'write -P 0x11 0 6M' k.qcow2 && qemu-img "
		       "snapshot -c s1 k.qcow2 && qemu-io -f qcow2 -c 'write "
		       "-P 0x22 2M 6M' k.qcow2 && qemu-img snapshot -c s2 "
		       "k.qcow2", 200000 },
	{ "datafile", "qemu-img create -f qcow2 -o data_file=k.data "
		      "k.qcow2 16M", 200000 },
};

static void test_kind(const struct kind *k)
{
	char *ref = path_of("ref.raw");
	struct img *img;
	int fd;

	sh("rm -f k.qcow2 k.data b.raw b.qcow2 r.raw ref.raw && %s", k->setup);
	sh("qemu-img convert -O raw k.qcow2 ref.raw");
	img = open_rw("k.qcow2");
	assert(img_writable(img));
	fd = open(ref, O_RDWR);
	assert(fd >= 0);
	workload(img, fd, 0x1234567 + strlen(k->name), 400, k->max_len);
	/* A second round after a flush, overwriting what the first did. */
	assert(img_flush(img) == 0);
	workload(img, fd, 0x7654321, 200, k->max_len);
	img_close(img);
	close(fd);
	compare("k.qcow2", "ref.raw");
	check_clean("k.qcow2");
	if (strcmp(k->name, "snapshots") == 0) {
		struct img_err err;
		char *id;

		/* The snapshots kept their content. */
		sh("qemu-img convert -l snapshot.name=s1 -O raw k.qcow2 s1.raw "
		   "&& truncate -s 16M want.raw && qemu-io -f raw -c 'write -P "
		   "0x11 0 6M' want.raw && cmp s1.raw want.raw && rm want.raw");
		/* A snapshot of our own, one of qemu-img's deleted. */
		img = open_rw("k.qcow2");
		workload(img, fd = open(ref, O_RDWR), 0x99, 100, k->max_len);
		close(fd);
		assert(img_snapshot_create(img, "mid", &err) == 0);
		sh("cp ref.raw mid.want");
		id = id_of(img, "s1");
		assert(img_snapshot_delete(img, id, &err) == 0);
		free(id);
		workload(img, fd = open(ref, O_RDWR), 0x98, 200, k->max_len);
		close(fd);
		img_close(img);
		compare("k.qcow2", "ref.raw");
		check_clean("k.qcow2");
		sh("qemu-img convert -l snapshot.name=mid -O raw k.qcow2 m.raw "
		   "&& cmp m.raw mid.want");
		sh("qemu-img convert -l snapshot.name=s2 -O raw k.qcow2 m.raw "
		   "&& truncate -s 16M want.raw && qemu-io -f raw -c 'write -P "
		   "0x11 0 6M' -c 'write -P 0x22 2M 6M' want.raw && "
		   "cmp m.raw want.raw");
	}
	printf("ok %s: compare identical, check clean\n", k->name);
	free(ref);
}

/* Allocations longer than one refcount block covers: whole-cluster runs
 * of 1 and 4 MiB over 512-byte clusters (64 and 256 clusters per block)
 * and snapshots whose L1 copy spans several blocks' ranges. Refcount
 * blocks for the new space must go somewhere other than inside the run
 * (the allocator used to loop for ever here). */
static void test_long_allocations(const char *opts)
{
	struct img_err err;
	struct img *img;
	size_t big = 4 << 20;
	uint8_t *buf = malloc(big);
	char *ref = path_of("ref.raw");
	int fd;

	assert(buf);
	sh("rm -f l.qcow2 ref.raw && qemu-img create -f qcow2 %s l.qcow2 256M"
	   " && truncate -s 256M ref.raw", opts);
	img = open_rw("l.qcow2");
	fd = open(ref, O_RDWR);
	assert(fd >= 0);
	for (unsigned i = 0; i < 6; i++) {
		size_t len = i % 2 ? big : 1 << 20;
		uint64_t off = (uint64_t)i * (9 << 20) + (i == 3 ? 512 : 0);

		memset(buf, 0x40 + i, len);
		assert(img_pwrite(img, buf, len, off) == 0);
		assert(pwrite(fd, buf, len, (off_t)off) == (ssize_t)len);
		if (i == 2)
			assert(img_snapshot_create(img, "long", &err) == 0);
	}
	assert(img_snapshot_create(img, "long2", &err) == 0);
	/* Overwrite shared clusters: copy-on-write runs. */
	memset(buf, 0x7e, big);
	assert(img_pwrite(img, buf, big, 1 << 20) == 0);
	assert(pwrite(fd, buf, big, 1 << 20) == (ssize_t)big);
	img_close(img);
	close(fd);
	compare("l.qcow2", "ref.raw");
	check_clean("l.qcow2");
	free(buf);
	free(ref);
	printf("ok long allocations (%s)\n", opts);
}

/* Rewriting and discarding the same range must reuse freed clusters. */
static void test_bounded_growth(void)
{
	uint8_t *buf = malloc(1 << 20);
	struct img *img;
	struct stat st;

	sh("rm -f g.qcow2 && qemu-img create -f qcow2 -o cluster_size=4096 "
	   "g.qcow2 64M");
	img = open_rw("g.qcow2");
	for (unsigned round = 0; round < 40; round++) {
		for (unsigned i = 0; i < 4; i++) {
			fill(buf, 1 << 20, round * 4 + i);
			assert(img_pwrite(img, buf, 1 << 20,
					  ((uint64_t)(round % 5) << 22) +
						  ((uint64_t)i << 20)) == 0);
		}
		assert(img_flush(img) == 0);
		assert(img_discard(img, (uint64_t)(round % 5) << 22,
				   4 << 20) == 0);
		assert(img_flush(img) == 0);
	}
	img_close(img);
	char *p = path_of("g.qcow2");
	assert(stat(p, &st) == 0);
	printf("growth: file %lld bytes after 40 rounds of 4 MiB\n",
	       (long long)st.st_size);
	assert(st.st_size < 12 << 20);
	check_clean("g.qcow2");
	free(p);
	free(buf);
	printf("ok rewrite/discard keeps the file bounded\n");
}

struct thr {
	struct img *img;
	uint8_t *mirror;
	unsigned t;
};

#define MT_BYTES (8u << 20)
#define MT_BLOCK 4096u

static void *writer(void *arg)
{
	struct thr *th = arg;
	uint64_t st = 0x9e3779b97f4a7c15ull * (th->t + 1);
	uint8_t buf[MT_BLOCK];

	for (unsigned i = 0; i < 1500; i++) {
		st ^= st << 13;
		st ^= st >> 7;
		st ^= st << 17;
		/* Thread t owns blocks k with k % 4 == t: disjoint bytes,
		 * shared clusters (64 KiB holds 16 blocks). */
		uint64_t k = (st % (MT_BYTES / MT_BLOCK / 4)) * 4 + th->t;
		fill(buf, MT_BLOCK, st);
		memcpy(th->mirror + k * MT_BLOCK, buf, MT_BLOCK);
		assert(img_pwrite(th->img, buf, MT_BLOCK, k * MT_BLOCK) == 0);
		if (i % 300 == 0)
			assert(img_flush(th->img) == 0);
	}
	return NULL;
}

static bool writers_done; /* __atomic */

/* Reads while the writers allocate: every read must succeed (a half
 * updated L2 would show up as -EIO). */
static void *reader(void *arg)
{
	struct img *img = arg;
	uint8_t buf[65536];
	uint64_t st = 42, nb = 0;

	while (!__atomic_load_n(&writers_done, __ATOMIC_ACQUIRE)) {
		st ^= st << 13;
		st ^= st >> 7;
		st ^= st << 17;
		assert(img_pread(img, buf, sizeof(buf),
				 st % (MT_BYTES - sizeof(buf))) == 0);
		nb++;
	}
	assert(nb > 0);
	return NULL;
}

static void test_threads(void)
{
	uint8_t *mirror = calloc(1, MT_BYTES), *back = malloc(MT_BYTES);
	pthread_t tid[4], rtid;
	struct thr th[4];
	struct img *img;

	sh("rm -f t.qcow2 && qemu-img create -f qcow2 t.qcow2 8M");
	img = open_rw("t.qcow2");
	__atomic_store_n(&writers_done, false, __ATOMIC_RELEASE);
	assert(pthread_create(&rtid, NULL, reader, img) == 0);
	for (unsigned t = 0; t < 4; t++) {
		th[t] = (struct thr){ img, mirror, t };
		assert(pthread_create(&tid[t], NULL, writer, &th[t]) == 0);
	}
	for (unsigned t = 0; t < 4; t++)
		pthread_join(tid[t], NULL);
	__atomic_store_n(&writers_done, true, __ATOMIC_RELEASE);
	pthread_join(rtid, NULL);
	assert(img_pread(img, back, MT_BYTES, 0) == 0);
	assert(memcmp(back, mirror, MT_BYTES) == 0);
	img_close(img);
	char *p = path_of("t.ref");
	int fd = open(p, O_CREAT | O_TRUNC | O_WRONLY, 0644);
	assert(fd >= 0 && write(fd, mirror, MT_BYTES) == MT_BYTES);
	close(fd);
	compare("t.qcow2", "t.ref");
	check_clean("t.qcow2");
	free(p);
	free(mirror);
	free(back);
	printf("ok 4 threads on shared clusters\n");
}

static void test_snapshots(const char *opts)
{
	struct img_err err;
	struct img *img;
	uint8_t buf[65536];
	char *id;

	sh("rm -f s.qcow2 && qemu-img create -f qcow2 %s s.qcow2 8M && "
	   "qemu-io -f qcow2 -c 'write -P 0x11 0 3M' s.qcow2", opts);
	img = open_rw("s.qcow2");
	assert(img_snapshot_create(img, "first", &err) == 0);
	assert(img_snapshot_create(img, "first", &err) == -EEXIST);
	memset(buf, 0x22, sizeof(buf));
	for (unsigned i = 0; i < 20; i++)
		assert(img_pwrite(img, buf, sizeof(buf) - i, i * 100000 + i) ==
		       0);
	assert(img_discard(img, 2 << 20, 1 << 20) == 0);
	assert(img_write_zeroes(img, 1 << 20, 300000) == 0);
	assert(img_snapshot_create(img, "second", &err) == 0);
	save_disk(img, "second.want");
	memset(buf, 0x33, sizeof(buf));
	assert(img_pwrite(img, buf, sizeof(buf), 12345) == 0);
	assert(img_snapshot_create(img, "third", &err) == 0);
	assert(img_pwrite(img, buf, sizeof(buf), 5 << 20) == 0);
	save_disk(img, "active.want");
	img_close(img);
	check_clean("s.qcow2");
	sh("qemu-img snapshot -l s.qcow2 | grep -q first && "
	   "qemu-img snapshot -l s.qcow2 | grep -q second");
	sh("qemu-img convert -l snapshot.name=first -O raw s.qcow2 f.raw && "
	   "truncate -s 8M fw.raw && qemu-io -f raw -c 'write -P 0x11 0 3M' "
	   "fw.raw && cmp f.raw fw.raw && rm fw.raw");
	sh("qemu-img convert -l snapshot.name=second -O raw s.qcow2 f.raw && "
	   "cmp f.raw second.want");
	img = open_rw("s.qcow2");
	id = id_of(img, "first");
	assert(img_snapshot_delete(img, id, &err) == 0);
	assert(img_snapshot_delete(img, id, &err) == -ENOENT);
	free(id);
	id = id_of(img, "third");
	{
		/* A handle of a snapshot that is then deleted: its L1 copy
		 * names clusters the delete gives back, so it stops reading;
		 * a handle of another snapshot reads on. */
		struct img *third, *second;
		char *id2 = id_of(img, "second");
		uint8_t got[512];

		assert(img_snapshot_open(img, id, &third, &err) == 0);
		assert(img_snapshot_open(img, id2, &second, &err) == 0);
		assert(img_pread(third, got, sizeof(got), 12345) == 0);
		assert(got[0] == 0x33);
		assert(img_snapshot_delete(img, id, &err) == 0);
		assert(img_pread(third, got, sizeof(got), 12345) == -ENOENT);
		assert(img_pread(second, got, sizeof(got), 0) == 0);
		assert(got[0] == 0x22);
		img_close(third);
		img_close(second);
		free(id2);
	}
	free(id);
	img_close(img);
	check_clean("s.qcow2");
	compare("s.qcow2", "active.want");
	sh("! qemu-img snapshot -l s.qcow2 | grep -q first && "
	   "qemu-img snapshot -l s.qcow2 | grep -q second");
	sh("qemu-img convert -l snapshot.name=second -O raw s.qcow2 f.raw && "
	   "cmp f.raw second.want");
	img = open_rw("s.qcow2");
	memset(buf, 0x44, sizeof(buf));
	assert(img_pwrite(img, buf, sizeof(buf), 3 << 20) == 0);
	id = id_of(img, "second");
	assert(img_snapshot_delete(img, id, &err) == 0);
	free(id);
	assert(img_pwrite(img, buf, sizeof(buf), 7 << 20) == 0);
	img_close(img);
	check_clean("s.qcow2");
	/* QEMU takes it from here. */
	sh("qemu-img snapshot -c byqemu s.qcow2 && qemu-img check s.qcow2");
	printf("ok snapshots create/delete (%s)\n", opts);
}

static void test_corruption(void)
{
	struct img *img;
	uint8_t buf[512] = { 1 };
	char *p = path_of("c.qcow2");
	int fd;
	uint8_t be[8];

	/* One data cluster at a known place: header, L1, reftable, one
	 * refblock, L2, data (qemu-img's layout for a fresh image). */
	sh("rm -f c.qcow2 && qemu-img create -f qcow2 -o cluster_size=4096 "
	   "c.qcow2 1M && qemu-io -f qcow2 -c 'write -P 7 0 4k' c.qcow2");
	sh("qemu-img map --output=json c.qcow2 | grep -q '\"offset\": 20480'");
	/* L2 at 0x4000: clear COPIED of entry 0; refcount of data cluster
	 * 5 (refblock at 0x3000, 16-bit) to 0. */
	fd = open(p, O_RDWR);
	assert(fd >= 0);
	uint64_t l1_off, rt_off, l2_off, rb_off;
	assert(pread(fd, be, 8, 40) == 8);
	l1_off = be64toh(*(uint64_t *)be);
	assert(pread(fd, be, 8, 48) == 8);
	rt_off = be64toh(*(uint64_t *)be);
	assert(pread(fd, be, 8, (off_t)l1_off) == 8);
	l2_off = be64toh(*(uint64_t *)be) & 0x00fffffffffffe00ull;
	assert(pread(fd, be, 8, (off_t)rt_off) == 8);
	rb_off = be64toh(*(uint64_t *)be);
	assert(pread(fd, be, 8, (off_t)l2_off) == 8);
	be[0] &= 0x7f;
	assert(pwrite(fd, be, 8, (off_t)l2_off) == 8);
	memset(be, 0, 2);
	assert(pwrite(fd, be, 2, (off_t)rb_off + 5 * 2) == 2);
	close(fd);
	img = open_rw("c.qcow2");
	assert(img_corrupt_reason(img) == NULL);
	assert(img_pwrite(img, buf, sizeof(buf), 0) == -EIO);
	assert(img_corrupt_reason(img) != NULL);
	printf("corrupt reason: %s\n", img_corrupt_reason(img));
	assert(img_pwrite(img, buf, sizeof(buf), 0) == -EROFS);
	img_close(img);
	struct img_err err;
	struct img_open_opts o = { .format = IMG_FORMAT_QCOW2 };
	assert(img_open(p, &o, &img, &err) == -EROFS);
	free(p);
	printf("ok corruption marks the image and turns read-only\n");
}

static uint64_t read_be64_at(int fd, off_t off)
{
	uint8_t be[8];

	assert(pread(fd, be, 8, off) == 8);
	return be64toh(*(uint64_t *)be);
}

static void write_be64_at(int fd, off_t off, uint64_t v)
{
	uint64_t be = htobe64(v);

	assert(pwrite(fd, &be, 8, off) == 8);
}

/* Damaged images whose L2 entries or refcounts lead a data write onto
 * metadata: the write fails with EIO, the image is marked corrupt, and
 * the metadata is left as it was (QEMU's overlap check). */
static void test_overlap(void)
{
	static const char *cases[] = { "l1", "l2", "reftable", "refblock",
				       "free-l2" };
	uint8_t buf[4096], before[4096], after[4096];
	char *p = path_of("o.qcow2");

	memset(buf, 0xee, sizeof(buf));
	for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
		struct img *img;
		uint64_t l1_off, rt_off, l2_off, rb_off, target;
		int fd;

		/* Guest clusters 0 and 1 allocated (host 0x5000, 0x6000). */
		sh("rm -f o.qcow2 && qemu-img create -f qcow2 -o "
		   "cluster_size=4096 o.qcow2 1M && qemu-io -f qcow2 -c "
		   "'write -P 7 0 8k' o.qcow2");
		fd = open(p, O_RDWR);
		assert(fd >= 0);
		l1_off = read_be64_at(fd, 40);
		rt_off = read_be64_at(fd, 48);
		l2_off = read_be64_at(fd, (off_t)l1_off) & 0x00fffffffffffe00ull;
		rb_off = read_be64_at(fd, (off_t)rt_off);
		if (strcmp(cases[i], "free-l2") == 0) {
			/* The L2 table's refcount (16-bit entries) says
			 * free: a new allocation must not land on it. */
			uint16_t zero = 0;

			target = l2_off;
			assert(pwrite(fd, &zero, 2,
				      (off_t)(rb_off + (l2_off >> 12) * 2)) == 2);
		} else {
			target = strcmp(cases[i], "l1") == 0	     ? l1_off
				 : strcmp(cases[i], "l2") == 0	     ? l2_off
				 : strcmp(cases[i], "reftable") == 0 ? rt_off
								     : rb_off;
			/* Guest cluster 1 now claims that cluster. */
			write_be64_at(fd, (off_t)l2_off + 8,
				      target | (1ull << 63));
		}
		assert(pread(fd, before, sizeof(before), (off_t)target) ==
		       sizeof(before));
		close(fd);
		img = open_rw("o.qcow2");
		if (strcmp(cases[i], "free-l2") == 0) {
			/* Fill clusters until an allocation reaches it. */
			int ret = 0;

			for (uint64_t off = 8192; ret == 0 && off < (1 << 20);
			     off += 4096)
				ret = img_pwrite(img, buf, sizeof(buf), off);
			assert(ret == -EIO);
		} else {
			assert(img_pwrite(img, buf, sizeof(buf), 4096) == -EIO);
		}
		assert(img_corrupt_reason(img) != NULL);
		printf("%s: %s\n", cases[i], img_corrupt_reason(img));
		assert(img_pwrite(img, buf, sizeof(buf), 0) == -EROFS);
		img_close(img);
		fd = open(p, O_RDONLY);
		assert(pread(fd, after, sizeof(after), (off_t)target) ==
		       sizeof(after));
		close(fd);
		assert(memcmp(before, after, sizeof(before)) == 0);
	}
	free(p);
	printf("ok data writes never land on metadata\n");
}

static void patch_byte_or(const char *name, off_t off, uint8_t bits)
{
	char *p = path_of(name);
	int fd = open(p, O_RDWR);
	uint8_t b;

	assert(fd >= 0 && pread(fd, &b, 1, off) == 1);
	b |= bits;
	assert(pwrite(fd, &b, 1, off) == 1);
	close(fd);
	free(p);
}

static uint8_t read_byte(const char *name, off_t off)
{
	char *p = path_of(name);
	int fd = open(p, O_RDONLY);
	uint8_t b;

	assert(fd >= 0 && pread(fd, &b, 1, off) == 1);
	close(fd);
	free(p);
	return b;
}

/* Dirty bit: read-write refused with a message naming the repair;
 * unknown autoclear bits cleared on the first write; lazy refcounts set
 * the dirty bit while writing and clear it at close. */
static void test_header_rules(void)
{
	struct img_open_opts o = { .format = IMG_FORMAT_QCOW2 };
	struct img_err err;
	struct img *img;
	uint8_t buf[4096] = { 9 };
	char *p = path_of("h.qcow2");

	sh("rm -f h.qcow2 && qemu-img create -f qcow2 -o lazy_refcounts=on "
	   "h.qcow2 1M");
	patch_byte_or("h.qcow2", 95, 0x20); /* autoclear bit 5: unknown */
	img = open_rw("h.qcow2");
	assert(read_byte("h.qcow2", 95) == 0x20);
	assert(img_pwrite(img, buf, sizeof(buf), 0) == 0);
	assert(read_byte("h.qcow2", 95) == 0);
	assert(read_byte("h.qcow2", 79) & 1); /* dirty while writing */
	img_close(img);
	assert(!(read_byte("h.qcow2", 79) & 1));
	check_clean("h.qcow2");
	patch_byte_or("h.qcow2", 79, 1);
	assert(img_open(p, &o, &img, &err) == -EROFS);
	assert(strstr(err.msg, "qemu-img check -r all"));
	o.read_only = true;
	assert(img_open(p, &o, &img, &err) == 0);
	img_close(img);
	free(p);
	printf("ok dirty bit refused, autoclear cleared, lazy dirty bit\n");
}

/* Crash safety: a child writes and flushes; the parent kills it. */
#define CR_SIZE (4u << 20)
#define CR_OPS 100000u

struct cr_op {
	uint64_t off, len, seed;
	int kind; /* 0 write, 1 discard, 2 flush */
};

static struct cr_op cr_gen(uint64_t *st)
{
	struct cr_op op;
	uint64_t r;

	*st ^= *st << 13;
	*st ^= *st >> 7;
	*st ^= *st << 17;
	r = *st;
	op.kind = r % 20 == 0 ? 2 : (r % 20 <= 2 ? 1 : 0);
	op.off = (r >> 8) % CR_SIZE;
	op.len = 1 + (r >> 40) % 70000;
	if (op.off + op.len > CR_SIZE)
		op.len = CR_SIZE - op.off;
	op.seed = r;
	return op;
}

static void test_crash(const char *opts)
{
	uint8_t *ref = malloc(CR_SIZE), *back = malloc(CR_SIZE);
	uint8_t *touched = malloc(CR_SIZE), *buf = malloc(70000);

	for (unsigned iter = 0; iter < 20; iter++) {
		int pfd[2];
		pid_t pid;

		sh("rm -f x.qcow2 && qemu-img create -f qcow2 %s x.qcow2 4M",
		   opts);
		assert(pipe(pfd) == 0);
		pid = fork();
		assert(pid >= 0);
		if (pid == 0) {
			struct img *img = open_rw("x.qcow2");
			uint64_t st = 0xabcdef + iter;

			close(pfd[0]);
			for (uint32_t i = 0; i < CR_OPS; i++) {
				struct cr_op op = cr_gen(&st);
				uint32_t rec = i;

				/* "started i" before, "flushed i" after. */
				assert(write(pfd[1], &rec, 4) == 4);
				if (op.kind == 0) {
					fill(buf, op.len, op.seed);
					assert(img_pwrite(img, buf, op.len,
							  op.off) == 0);
				} else if (op.kind == 1) {
					assert(img_discard(img, op.off,
							   op.len) == 0);
				} else {
					assert(img_flush(img) == 0);
					rec = i | 0x80000000u;
					assert(write(pfd[1], &rec, 4) == 4);
				}
			}
			_exit(0);
		}
		close(pfd[1]);
		struct timespec ts = { 0, (long)(20 + (rand() % 300)) * 1000000L };
		nanosleep(&ts, NULL);
		kill(pid, SIGKILL);
		uint32_t rec, last_started = 0, last_flushed = UINT32_MAX;
		while (read(pfd[0], &rec, 4) == 4) {
			if (rec & 0x80000000u)
				last_flushed = rec & 0x7fffffffu;
			else
				last_started = rec;
		}
		close(pfd[0]);
		waitpid(pid, NULL, 0);
		int stc = sh_status("qemu-img check x.qcow2");
		if (stc != 0 && stc != 3) {
			sh_status("cp x.qcow2 /tmp/crash-fail.qcow2");
			fprintf(stderr, "crash %u: qemu-img check exit %d\n",
				iter, stc);
			abort();
		}
		/* Expected: ops up to last_flushed; bytes touched later
		 * are unknown. */
		memset(ref, 0, CR_SIZE);
		memset(touched, 0, CR_SIZE);
		uint64_t st = 0xabcdef + iter;
		for (uint32_t i = 0; i <= last_started; i++) {
			struct cr_op op = cr_gen(&st);
			bool after = last_flushed == UINT32_MAX ||
				     i > last_flushed;

			if (op.kind == 2)
				continue;
			if (after) {
				memset(touched + op.off, 1, op.len);
				continue;
			}
			if (op.kind == 0)
				fill(ref + op.off, op.len, op.seed);
			else
				memset(ref + op.off, 0, op.len);
		}
		struct img *img;
		struct img_err err;
		struct img_open_opts o = { .format = IMG_FORMAT_QCOW2,
					   .read_only = true };
		char *p = path_of("x.qcow2");
		assert(img_open(p, &o, &img, &err) == 0);
		assert(img_pread(img, back, CR_SIZE, 0) == 0);
		img_close(img);
		free(p);
		for (uint64_t b = 0; b < CR_SIZE; b++) {
			if (!touched[b] && back[b] != ref[b]) {
				fprintf(stderr, "crash %u: byte %" PRIu64
					" differs (flushed %u started %u)\n",
					iter, b, last_flushed, last_started);
				abort();
			}
		}
	}
	free(ref);
	free(back);
	free(touched);
	free(buf);
	printf("ok 20 kills with %s: check found no corruption, flushed "
	       "data intact\n", opts);
}

int main(void)
{
	if (system("qemu-img --version >/dev/null 2>&1") != 0 ||
	    system("qemu-io --version >/dev/null 2>&1") != 0) {
		printf("skip: qemu-img or qemu-io is missing\n");
		return 77;
	}
	setvbuf(stdout, NULL, _IOLBF, 0);
	assert(mkdtemp(dir));
	srand((unsigned)time(NULL));
	for (size_t i = 0; i < sizeof(kinds) / sizeof(kinds[0]); i++)
		test_kind(&kinds[i]);
	test_bounded_growth();
	test_long_allocations("-o cluster_size=512,refcount_bits=64");
	test_long_allocations("-o cluster_size=512");
	test_long_allocations("-o cluster_size=16384,extended_l2=on,refcount_bits=64");
	test_threads();
	test_corruption();
	test_overlap();
	test_crash("-o cluster_size=65536");
	test_crash("-o cluster_size=512");
	test_crash("-o cluster_size=512,refcount_bits=64");
	test_header_rules();
	test_snapshots("-o cluster_size=4096");
	test_snapshots("-o compat=0.10");
	test_snapshots("-o extended_l2=on");
	test_snapshots("-o cluster_size=512,refcount_bits=64");
	test_snapshots("-o refcount_bits=4");
	sh_status("rm -rf %s", dir);
	return 0;
}
