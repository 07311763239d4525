/* test-fsys-fat.c: the FAT driver of fsys/ against mkfs.fat + mtools.
 *
 * The kernel here has no vfat module, so the oracles are the source tree
 * that mcopy copied in (names, bytes, sizes, modification times) and
 * mtools itself (mtype for the bytes of a large file, mattrib for
 * attributes, mdir for counts). Images are built for FAT12, FAT16 and
 * FAT32 with several cluster and sector sizes; each is walked through
 * the public fsys API (lookup, readdir in small batches, read, getattr,
 * xattrs, statfs) and compared entry by entry.
 *
 * Then hand-made damage on a small FAT16 image (and a FAT32 one for the
 * root cluster): each case patches a pristine copy and asserts its exact
 * outcome: the fsys_open error and message, or -EIO on the damaged
 * object while another file still reads right, or the name shown. The
 * fuzz target's saved reproducers (tests/fuzz/regress/fuzz-fsys-fat/)
 * are replayed through its entry point at the end.
 *
 * Skips (77) without mkfs.fat or mtools. TZ=UTC for mtools, which
 * stores local time (the driver reads it as UTC).
 */
#undef NDEBUG

#include "fsys.h"
#include "regress.h"

#include <assert.h>
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#define FUZZ_NO_MAIN_ENTRY
#include "../fuzz/fuzz-fsys-fat.c"

static char tmp[256];

static void sh(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
static void sh(const char *fmt, ...)
{
	char cmd[8192];
	va_list ap;
	int rc;

	va_start(ap, fmt);
	vsnprintf(cmd, sizeof(cmd), fmt, ap);
	va_end(ap);
	rc = system(cmd);
	if (rc != 0) {
		fprintf(stderr, "command failed (%d): %s\n", rc, cmd);
		abort();
	}
}

static double now(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (double)ts.tv_sec + ts.tv_nsec / 1e9;
}

struct fatimg {
	struct img *img;
	struct fsys *fs;
};

static int open_fat(const char *path, struct fatimg *fi, struct img_err *err)
{
	struct img_open_opts opts = { .format = IMG_FORMAT_RAW,
				      .read_only = true,
				      .backing = IMG_BACKING_DENY };
	int ret;

	*fi = (struct fatimg){ 0 };
	ret = img_open(path, &opts, &fi->img, err);
	assert(ret == 0);
	ret = fsys_open(fi->img, &fi->fs, err);
	if (ret < 0) {
		img_close(fi->img);
		fi->img = NULL;
	}
	return ret;
}

static void close_fat(struct fatimg *fi)
{
	fsys_close(fi->fs);
	img_close(fi->img);
}

/* Looks a slash-separated path up from the root. */
static int lookup_path(struct fsys *fs, const char *path, struct fsys_stat *st)
{
	char buf[4096], *save = NULL, *part;
	uint64_t ino = fsys_root_ino(fs);
	int ret;

	snprintf(buf, sizeof(buf), "%s", path);
	ret = fsys_getattr(fs, ino, st);
	if (ret < 0)
		return ret;
	for (part = strtok_r(buf, "/", &save); part;
	     part = strtok_r(NULL, "/", &save)) {
		ret = fsys_lookup(fs, ino, part, st);
		if (ret < 0)
			return ret;
		ino = st->ino;
	}
	return 0;
}

/* Reads a whole file in odd-sized pieces; returns its bytes (malloc). */
static uint8_t *read_all(struct fsys *fs, uint64_t ino, uint64_t size)
{
	uint8_t *buf = malloc(size + 1);
	uint64_t off = 0;
	ssize_t n;

	assert(buf);
	while (off < size) {
		size_t want = 100000 + (size_t)(off % 7777);

		n = fsys_read(fs, ino, buf + off, want, off);
		assert(n > 0);
		off += (uint64_t)n;
	}
	assert(off == size);
	assert(fsys_read(fs, ino, buf, 10, size) == 0);
	return buf;
}

static uint8_t *slurp(const char *path, size_t *len_r)
{
	int fd = open(path, O_RDONLY);
	struct stat st;
	uint8_t *buf;

	assert(fd >= 0);
	assert(fstat(fd, &st) == 0);
	buf = malloc((size_t)st.st_size + 1);
	assert(buf);
	assert(read(fd, buf, (size_t)st.st_size) == st.st_size);
	close(fd);
	*len_r = (size_t)st.st_size;
	return buf;
}

static uint8_t *slurp_src(const char *src, const char *name, size_t *len_r)
{
	char path[4096];

	snprintf(path, sizeof(path), "%s/%s", src, name);
	return slurp(path, len_r);
}

/* readdir in batches of `batch` entries, resuming at the cookie. */
struct names {
	char **v;
	size_t n, batch_left;
	uint64_t cookie;
	uint32_t *types;
	uint64_t *inos;
};

static int collect(void *ctx, const char *name, uint64_t ino, uint32_t type,
		   uint64_t next)
{
	struct names *nm = ctx;

	if (nm->batch_left == 0)
		return 1;
	nm->batch_left--;
	nm->v = realloc(nm->v, (nm->n + 1) * sizeof(*nm->v));
	nm->types = realloc(nm->types, (nm->n + 1) * sizeof(*nm->types));
	nm->inos = realloc(nm->inos, (nm->n + 1) * sizeof(*nm->inos));
	nm->v[nm->n] = strdup(name);
	nm->types[nm->n] = type;
	nm->inos[nm->n] = ino;
	nm->n++;
	nm->cookie = next;
	return 0;
}

static int list_dir(struct fsys *fs, uint64_t dir, size_t batch,
		    struct names *nm)
{
	size_t before;
	int ret;

	*nm = (struct names){ 0 };
	for (;;) {
		before = nm->n;
		nm->batch_left = batch;
		ret = fsys_readdir(fs, dir, nm->cookie, collect, nm);
		if (ret < 0)
			return ret;
		if (nm->n == before)
			return 0;
	}
}

static void free_names(struct names *nm)
{
	for (size_t i = 0; i < nm->n; i++)
		free(nm->v[i]);
	free(nm->v);
	free(nm->types);
	free(nm->inos);
}

/* Compares the directory ino of fs with the source directory src,
 * recursively; returns the number of objects compared. */
static size_t compare_tree(struct fsys *fs, uint64_t ino, const char *src)
{
	struct names nm;
	size_t count = 0, nb_src = 0;
	struct dirent *de;
	DIR *d;

	assert(list_dir(fs, ino, 7, &nm) == 0);
	d = opendir(src);
	assert(d);
	while ((de = readdir(d))) {
		char path[4096];
		struct fsys_stat st, st2;
		struct stat sst;
		size_t i;

		if (!strcmp(de->d_name, ".") || !strcmp(de->d_name, ".."))
			continue;
		nb_src++;
		snprintf(path, sizeof(path), "%s/%s", src, de->d_name);
		assert(lstat(path, &sst) == 0);
		if (fsys_lookup(fs, ino, de->d_name, &st) != 0) {
			fprintf(stderr, "lookup failed: %s\n", path);
			abort();
		}
		for (i = 0; i < nm.n; i++)
			if (!strcmp(nm.v[i], de->d_name))
				break;
		if (i == nm.n) {
			fprintf(stderr, "readdir misses %s\n", path);
			abort();
		}
		assert(nm.inos[i] == st.ino);
		assert(nm.types[i] == (st.mode & S_IFMT));
		assert(fsys_getattr(fs, st.ino, &st2) == 0);
		assert(st2.ino == st.ino && st2.mode == st.mode &&
		       st2.size == st.size && st2.nlink == st.nlink);
		assert(st.uid == 0 && st.gid == 0);
		assert(st.mtime.tv_sec == sst.st_mtime);
		assert(st.ctime.tv_sec == st.mtime.tv_sec);
		assert(st.btime.tv_sec != 0);
		count++;
		if (S_ISDIR(sst.st_mode)) {
			assert(S_ISDIR(st.mode));
			assert((st.mode & 07777) == 0755);
			assert(st.size > 0 && st.nlink >= 2);
			count += compare_tree(fs, st.ino, path);
		} else {
			size_t len;
			uint8_t *want = slurp(path, &len), *got;

			assert(S_ISREG(st.mode));
			assert(st.nlink == 1);
			assert(st.size == len);
			got = read_all(fs, st.ino, st.size);
			assert(memcmp(got, want, len) == 0);
			free(got);
			free(want);
		}
	}
	closedir(d);
	assert(nm.n == nb_src);
	free_names(&nm);
	return count;
}

/* The source tree: long names, unicode, case, 8.3 lowercase names,
 * deep directories, empty files, a large file; big adds a directory of
 * 3000 entries. All times even (FAT keeps 2 s). */
static void make_src(const char *src, bool big)
{
	sh("mkdir -p '%s/deep/a/b/c/d/e/f/g/h/i/j/k/l' '%s/Sub Dir/inner'",
	   src, src);
	sh("cd '%s' && echo leaf > deep/a/b/c/d/e/f/g/h/i/j/k/l/leaf.txt && "
	   "echo readme > readme.txt && echo mixed > MixedCase.Txt && "
	   "echo upper > UPPER.TXT && : > empty && : > 'Sub Dir/empty too' && "
	   "echo 'long one' > 'A rather long file name, with spaces.text' && "
	   "printf unicode > 'Ünïcødé ÄÖÜ ßé.txt' && "
	   "printf cyr > 'Привет мир.txt' && "
	   "printf lat > 'Ōsaka Łódź Ωmega.txt' && "
	   "head -c 1234567 /dev/urandom > 'Sub Dir/inner/odd size.bin' && "
	   "head -c 5242880 /dev/urandom > big.bin && "
	   "head -c 3000000 /dev/urandom > frag.bin && "
	   "echo hidden > hidden.txt && echo ro > readonly.txt && "
	   "echo sys > system.txt", src);
	if (big)
		sh("mkdir '%s/many' && cd '%s/many' && for i in $(seq 0 2999); "
		   "do echo $i > \"$(printf %%04d $i) entry.txt\"; done", src, src);
	sh("find '%s' -exec touch -h -d '2021-03-04 05:06:08 UTC' {} +", src);
	sh("touch -d '2019-12-31 23:59:58 UTC' '%s/readme.txt'", src);
}

/* frag.bin goes in last, into the hole a deleted file left near the
 * start, so that its chain has two runs. */
static void make_image(const char *img, const char *src, const char *mkfs_opts,
		       unsigned size_kib)
{
	sh("rm -f '%s' && mkfs.fat -C %s '%s' %u >/dev/null", img, mkfs_opts,
	   img, size_kib);
	sh("head -c 300000 /dev/urandom > '%s/gap' && "
	   "MTOOLS_SKIP_CHECK=1 mcopy -i '%s' '%s/gap' ::/ && cd '%s' && "
	   "for f in *; do [ \"$f\" = frag.bin ] || "
	   "MTOOLS_SKIP_CHECK=1 mcopy -s -m -i '%s' \"$f\" ::/ </dev/null; done && "
	   "MTOOLS_SKIP_CHECK=1 mdel -i '%s' ::/gap && "
	   "MTOOLS_SKIP_CHECK=1 mcopy -m -i '%s' frag.bin ::/",
	   tmp, img, tmp, src, img, img, img);
	sh("MTOOLS_SKIP_CHECK=1 mattrib -i '%s' +h ::/hidden.txt && "
	   "MTOOLS_SKIP_CHECK=1 mattrib -i '%s' +r ::/readonly.txt && "
	   "MTOOLS_SKIP_CHECK=1 mattrib -i '%s' +s -a ::/system.txt",
	   img, img, img);
}

static void check_xattr(struct fsys *fs, const char *path, const char *name,
			const char *want)
{
	struct fsys_stat st;
	char buf[256];
	ssize_t n;

	assert(lookup_path(fs, path, &st) == 0);
	n = fsys_getxattr(fs, st.ino, name, NULL, 0);
	assert(n == (ssize_t)strlen(want));
	if (n > 0)
		assert(fsys_getxattr(fs, st.ino, name, buf, 1) == -ERANGE);
	n = fsys_getxattr(fs, st.ino, name, buf, sizeof(buf));
	assert(n == (ssize_t)strlen(want));
	if (memcmp(buf, want, (size_t)n) != 0) {
		fprintf(stderr, "%s %s: '%.*s' want '%s'\n", path, name,
			(int)n, buf, want);
		abort();
	}
}

struct reader_arg {
	struct fsys *fs;
	uint64_t ino, size;
	const uint8_t *want;
};

static void *reader(void *p)
{
	struct reader_arg *a = p;
	uint8_t *got = read_all(a->fs, a->ino, a->size);

	assert(memcmp(got, a->want, a->size) == 0);
	free(got);
	return NULL;
}

static void test_config(const char *src, const char *mkfs_opts,
			unsigned size_kib, const char *type_bits, bool big)
{
	char img[300], out[300], cmd[1024];
	struct fsys_stat st, st2;
	struct fsys_info info;
	struct statvfs sv;
	struct img_err err;
	struct fatimg fi;
	struct names nm;
	size_t n, len;
	double t0, t1, t2;

	snprintf(img, sizeof(img), "%s/fat.img", tmp);
	snprintf(out, sizeof(out), "%s/mtype.out", tmp);
	make_image(img, src, mkfs_opts, size_kib);
	assert(open_fat(img, &fi, &err) == 0);
	fsys_get_info(fi.fs, &info);
	assert(strcmp(info.type, "vfat") == 0);
	assert(strcmp(info.label, "IMGFSTEST") == 0);
	assert(strlen(info.uuid) == 9 && info.uuid[4] == '-');
	assert(info.warning[0] == '\0');

	printf("  FAT%s %s:\n", type_bits, mkfs_opts);

	assert(fsys_getattr(fi.fs, fsys_root_ino(fi.fs), &st) == 0);
	assert(S_ISDIR(st.mode) && st.ino == fsys_root_ino(fi.fs));
	assert(st.nlink == 2 + 2 + (big ? 1 : 0));
	t0 = now();
	n = compare_tree(fi.fs, fsys_root_ino(fi.fs), src);
	t1 = now();
	printf("    %zu objects compared in %.2f s\n", n, t1 - t0);

	/* Names as mtools wrote them: 8.3 lowercase flags, long names. */
	assert(list_dir(fi.fs, fsys_root_ino(fi.fs), 1000, &nm) == 0);
	for (size_t i = 0; i < nm.n; i++)
		assert(strcmp(nm.v[i], "README.TXT") != 0);
	free_names(&nm);
	check_xattr(fi.fs, "readme.txt", "user.fat.shortname", "README.TXT");
	check_xattr(fi.fs, "UPPER.TXT", "user.fat.shortname", "UPPER.TXT");
	check_xattr(fi.fs, "MixedCase.Txt", "user.fat.shortname",
		    "MIXEDC~1.TXT");
	check_xattr(fi.fs, "hidden.txt", "user.fat.attrs", "hidden,archive");
	check_xattr(fi.fs, "readonly.txt", "user.fat.attrs",
		    "readonly,archive");
	check_xattr(fi.fs, "system.txt", "user.fat.attrs", "system");
	check_xattr(fi.fs, "empty", "user.fat.attrs", "archive");
	assert(lookup_path(fi.fs, "readonly.txt", &st) == 0);
	assert((st.mode & 07777) == 0444);
	assert(lookup_path(fi.fs, "hidden.txt", &st) == 0);
	assert((st.mode & 07777) == 0644);
	{
		char names[128];
		ssize_t ln = fsys_listxattr(fi.fs, st.ino, names,
					    sizeof(names));

		assert(ln == (ssize_t)sizeof("user.fat.attrs") +
				     (ssize_t)sizeof("user.fat.shortname"));
		assert(strcmp(names, "user.fat.attrs") == 0);
		assert(fsys_getxattr(fi.fs, st.ino, "user.other", NULL, 0) ==
		       -ENODATA);
		assert(fsys_listxattr(fi.fs, fsys_root_ino(fi.fs), NULL, 0) ==
		       0);
	}
	/* mattrib agrees with the attributes. */
	sh("MTOOLS_SKIP_CHECK=1 mattrib -i '%s' ::/hidden.txt | grep -q '^  A   H'",
	   img);

	/* Case-insensitive lookups, exact names preferred. */
	assert(lookup_path(fi.fs, "README.TXT", &st) == 0);
	assert(lookup_path(fi.fs, "readme.txt", &st2) == 0);
	assert(st.ino == st2.ino);
	assert(st.mtime.tv_sec == 1577836798);
	assert(lookup_path(fi.fs, "mixedc~1.txt", &st2) == 0);
	assert(lookup_path(fi.fs, "sub dir/INNER/ODD SIZE.BIN", &st) == 0);
	assert(st.size == 1234567);
	assert(lookup_path(fi.fs, "ünïcødé äöü SSé.txt", &st) == -ENOENT);
	assert(lookup_path(fi.fs, "ÜNÏCØDÉ äöü ßÉ.TXT", &st) == 0);
	assert(lookup_path(fi.fs, "привет МИР.txt", &st) == 0);
	assert(lookup_path(fi.fs, "ōSAKA łÓDŹ ωMEGA.TXT", &st) == 0);
	assert(lookup_path(fi.fs, "nope", &st) == -ENOENT);
	assert(lookup_path(fi.fs, "readme.txt/x", &st) == -ENOTDIR);
	assert(fsys_read(fi.fs, fsys_root_ino(fi.fs), out, 1, 0) == -EISDIR);
	assert(lookup_path(fi.fs, "Sub Dir", &st) == 0);
	assert(fsys_read(fi.fs, st.ino, out, 1, 0) == -EISDIR);
	assert(st.nlink == 3);
	{
		uint64_t off;

		assert(lookup_path(fi.fs, "big.bin", &st) == 0);
		assert(fsys_seek(fi.fs, st.ino, 100, SEEK_HOLE, &off) == 0 &&
		       off == st.size);
	}

	/* statfs: the free count agrees with mdir's "bytes free". */
	assert(fsys_statfs(fi.fs, &sv) == 0);
	snprintf(cmd, sizeof(cmd),
		 "MTOOLS_SKIP_CHECK=1 mdir -i '%s' ::/ | "
		 "awk '/bytes free/ { gsub(/[^0-9]/, \"\"); print }'",
		 img);
	{
		FILE *p = popen(cmd, "r");
		unsigned long long mfree = 0;

		assert(p && fscanf(p, "%llu", &mfree) == 1);
		pclose(p);
		assert(mfree == (unsigned long long)sv.f_bfree * sv.f_frsize);
	}

	/* The large file against mtype, with timings, then four threads. */
	assert(lookup_path(fi.fs, "big.bin", &st) == 0);
	t0 = now();
	sh("MTOOLS_SKIP_CHECK=1 mtype -i '%s' ::/big.bin > '%s'", img, out);
	t1 = now();
	{
		uint8_t *want = slurp(out, &len), *got;
		pthread_t th[4];
		struct reader_arg ra = { fi.fs, st.ino, st.size, want };
		struct fsys_stat fst;
		size_t flen;
		uint8_t *fwant = slurp_src(src, "frag.bin", &flen);
		struct reader_arg fa;

		assert(len == st.size);
		t2 = now();
		got = read_all(fi.fs, st.ino, st.size);
		printf("    big.bin: fsys %.0f MiB/s, mtype %.0f MiB/s\n",
		       len / 1048576.0 / (now() - t2),
		       len / 1048576.0 / (t1 - t0));
		assert(memcmp(got, want, len) == 0);
		free(got);
		/* Four threads at once, two on the fragmented file. */
		assert(lookup_path(fi.fs, "frag.bin", &fst) == 0);
		assert(fst.size == flen);
		fa = (struct reader_arg){ fi.fs, fst.ino, fst.size, fwant };
		for (int i = 0; i < 4; i++)
			assert(pthread_create(&th[i], NULL, reader,
					      i & 1 ? &fa : &ra) == 0);
		for (int i = 0; i < 4; i++)
			pthread_join(th[i], NULL);
		free(want);
		free(fwant);
	}
	if (big) {
		assert(lookup_path(fi.fs, "many", &st) == 0);
		t0 = now();
		assert(list_dir(fi.fs, st.ino, 100, &nm) == 0);
		t1 = now();
		assert(nm.n == 3000);
		for (size_t i = 0; i < nm.n; i += 97)
			assert(fsys_lookup(fi.fs, st.ino, nm.v[i], &st2) == 0 &&
			       st2.ino == nm.inos[i]);
		printf("    many/: 3000 entries listed in %.3f s (batches of "
		       "100)\n", t1 - t0);
		t0 = now();
		for (size_t i = 0; i < nm.n; i++)
			assert(fsys_lookup(fi.fs, st.ino, nm.v[i], &st2) == 0);
		printf("    many/: 3000 lookups in %.3f s\n", now() - t0);
		free_names(&nm);
	}
	close_fat(&fi);
	unlink(img);
	unlink(out);
}

/* ------------------------------------------------------------------ */
/* Hand-made damage */

static char pristine[300], work[300], pristine32[300];

static void patch(uint64_t off, const void *bytes, size_t len)
{
	int fd = open(work, O_WRONLY);

	assert(fd >= 0);
	assert(pwrite(fd, bytes, len, (off_t)off) == (ssize_t)len);
	close(fd);
}

static void peek(uint64_t off, void *bytes, size_t len)
{
	int fd = open(work, O_RDONLY);

	assert(fd >= 0);
	assert(pread(fd, bytes, len, (off_t)off) == (ssize_t)len);
	close(fd);
}

static void patch16(uint64_t off, uint16_t v)
{
	uint8_t b[2] = { (uint8_t)v, (uint8_t)(v >> 8) };

	patch(off, b, 2);
}

static void patch32(uint64_t off, uint32_t v)
{
	uint8_t b[4] = { (uint8_t)v, (uint8_t)(v >> 8), (uint8_t)(v >> 16),
			 (uint8_t)(v >> 24) };

	patch(off, b, 4);
}

static void fresh(const char *from)
{
	sh("cp '%s' '%s'", from, work);
}

/* The open fails with errnum and a message holding what. */
static void expect_open_error(const char *what_case, int errnum,
			      const char *what)
{
	struct img_err err = { 0 };
	struct fatimg fi;
	int ret = open_fat(work, &fi, &err);

	if (ret != errnum || !strstr(err.msg, what)) {
		fprintf(stderr, "%s: got %d '%s', want %d '%s'\n", what_case,
			ret, err.msg, errnum, what);
		abort();
	}
	printf("  %s: %s\n", what_case, err.msg);
}

/* Layout of the FAT16 test image (512-byte sectors and clusters). */
static uint64_t fat_off, data_off;

static uint64_t ent_pos(struct fsys *fs, const char *path)
{
	struct fsys_stat st;

	assert(lookup_path(fs, path, &st) == 0);
	return (st.ino - 16) * 32;
}

struct layout {
	uint64_t a, b, c, sub, sub_file, sub2, sub2_x, sub3, sub3_y, lng, abc;
	uint16_t a_cl, b_cl, sub_cl, sub2_cl, sub3_cl;
};

static uint16_t cl_at(uint64_t pos)
{
	uint8_t b[2];

	peek(pos + 26, b, 2);
	return (uint16_t)(b[0] | b[1] << 8);
}

static void learn_layout(struct layout *l)
{
	struct img_err err;
	struct fatimg fi;

	fresh(pristine);
	assert(open_fat(work, &fi, &err) == 0);
	l->a = ent_pos(fi.fs, "a.bin");
	l->b = ent_pos(fi.fs, "b.bin");
	l->c = ent_pos(fi.fs, "c.bin");
	l->sub = ent_pos(fi.fs, "SUB");
	l->sub_file = ent_pos(fi.fs, "SUB/FILE.TXT");
	l->sub2 = ent_pos(fi.fs, "SUB/SUB2");
	l->sub2_x = ent_pos(fi.fs, "SUB/SUB2/X.TXT");
	l->sub3 = ent_pos(fi.fs, "SUB/SUB2/SUB3");
	l->sub3_y = ent_pos(fi.fs, "SUB/SUB2/SUB3/Y.TXT");
	l->lng = ent_pos(fi.fs, "Long name file.txt");
	l->abc = ent_pos(fi.fs, "ABC.TXT");
	close_fat(&fi);
	l->a_cl = cl_at(l->a);
	l->b_cl = cl_at(l->b);
	l->sub_cl = cl_at(l->sub);
	l->sub2_cl = cl_at(l->sub2);
	l->sub3_cl = cl_at(l->sub3);
}

/* b.bin still reads right (the rest stays readable). */
static void expect_b_ok(struct fsys *fs)
{
	struct fsys_stat st;
	uint8_t buf[1000];

	assert(lookup_path(fs, "b.bin", &st) == 0 && st.size == 1000);
	assert(fsys_read(fs, st.ino, buf, sizeof(buf), 0) == 1000);
	for (int i = 0; i < 1000; i++)
		assert(buf[i] == 'b');
}

static void open_work(struct fatimg *fi)
{
	struct img_err err;

	assert(open_fat(work, fi, &err) == 0);
}

/* Writes an LFN sequence for name (UTF-16 units) plus a short entry
 * SHORT   TXT into the root directory slots from slot pos on. */
static uint8_t checksum(const uint8_t *n11)
{
	uint8_t s = 0;

	for (int i = 0; i < 11; i++)
		s = (uint8_t)(((s & 1) << 7) + (s >> 1) + n11[i]);
	return s;
}

static void write_lfn(uint64_t pos, const uint16_t *units, size_t nb_units,
		      const char *short11, uint16_t cluster, uint32_t size)
{
	static const uint8_t at[13] = { 1, 3, 5, 7, 9, 14, 16, 18, 20, 22, 24,
					28, 30 };
	size_t nb_ent = (nb_units + 12) / 13;
	uint8_t de[32];
	uint8_t cs = checksum((const uint8_t *)short11);

	for (size_t e = 0; e < nb_ent; e++) {
		size_t seq = nb_ent - e;

		memset(de, 0, sizeof(de));
		de[0] = (uint8_t)(seq | (e == 0 ? 0x40 : 0));
		de[11] = 0x0f;
		de[13] = cs;
		for (int i = 0; i < 13; i++) {
			size_t u = (seq - 1) * 13 + (size_t)i;
			uint16_t v = u < nb_units ? units[u]
				   : u == nb_units ? 0 : 0xffff;

			de[at[i]] = (uint8_t)v;
			de[at[i] + 1] = (uint8_t)(v >> 8);
		}
		patch(pos + e * 32, de, 32);
	}
	memset(de, 0, sizeof(de));
	memcpy(de, short11, 11);
	de[11] = 0x20;
	de[24] = 0x21; /* 1980-01-01 */
	de[26] = (uint8_t)cluster;
	de[27] = (uint8_t)(cluster >> 8);
	for (int i = 0; i < 4; i++)
		de[28 + i] = (uint8_t)(size >> (8 * i));
	patch(pos + nb_ent * 32, de, 32);
}

/* One code point of valid UTF-8. */
static uint32_t test_utf8_get(const char **s)
{
	const uint8_t *p = (const uint8_t *)*s;
	int n = p[0] < 0x80 ? 0 : p[0] < 0xe0 ? 1 : p[0] < 0xf0 ? 2 : 3;
	uint32_t u = n == 0 ? p[0] : p[0] & (0x3f >> n);

	for (int i = 1; i <= n; i++)
		u = u << 6 | (p[i] & 0x3f);
	*s += n + 1;
	return u;
}

static bool dir_has(struct fsys *fs, uint64_t dir, const char *name)
{
	struct names nm;
	bool found = false;

	assert(list_dir(fs, dir, 1000, &nm) == 0);
	for (size_t i = 0; i < nm.n; i++)
		found |= strcmp(nm.v[i], name) == 0;
	free_names(&nm);
	return found;
}

static void test_damage(void)
{
	struct fsys_stat st;
	struct fatimg fi;
	struct layout l;
	struct names nm;
	uint8_t buf[4096];
	uint64_t root_off;
	int cases = 0;

	learn_layout(&l);
	/* mkfs.fat -F 16 -s 1 -S 512 -R 1: 1 reserved sector, 2 FATs. */
	fresh(pristine);
	{
		uint8_t bs[64];

		peek(0, bs, sizeof(bs));
		fat_off = (uint64_t)(bs[14] | bs[15] << 8) * 512;
		root_off = fat_off + 2ull * (bs[22] | bs[23] << 8) * 512;
		data_off = root_off + (uint64_t)(bs[17] | bs[18] << 8) * 32;
	}
#define FAT16(c) (fat_off + 2ull * (c))

	/* --- the boot sector --- */
	fresh(pristine);
	buf[0] = 0;
	patch(13, buf, 1);
	expect_open_error("sectors per cluster 0", -EINVAL,
			  "0 sectors per cluster"), cases++;
	fresh(pristine);
	buf[0] = 3;
	patch(13, buf, 1);
	expect_open_error("sectors per cluster 3", -EINVAL,
			  "3 sectors per cluster"), cases++;
	fresh(pristine);
	patch16(11, 0);
	expect_open_error("bytes per sector 0", -EINVAL,
			  "0 bytes per sector"), cases++;
	fresh(pristine);
	patch16(11, 3);
	expect_open_error("bytes per sector 3", -EINVAL,
			  "3 bytes per sector"), cases++;
	fresh(pristine);
	patch16(11, 8192);
	expect_open_error("bytes per sector 8192", -EINVAL,
			  "8192 bytes per sector"), cases++;
	fresh(pristine);
	buf[0] = 0;
	patch(16, buf, 1);
	expect_open_error("FAT count 0", -EINVAL, "FAT count is 0"), cases++;
	fresh(pristine);
	patch16(14, 0);
	expect_open_error("no reserved sectors", -EINVAL,
			  "no reserved sectors"), cases++;
	fresh(pristine);
	patch16(19, 40);
	patch32(32, 0);
	expect_open_error("total sectors inside the FATs", -EINVAL,
			  "fewer than the"), cases++;
	fresh(pristine);
	patch16(22, 1);
	expect_open_error("FAT smaller than the clusters", -EINVAL,
			  "maps only"), cases++;
	fresh(pristine);
	buf[0] = 0x12;
	patch(21, buf, 1);
	expect_open_error("bad media byte", -EINVAL, "media byte 0x12"),
		cases++;
	fresh(pristine);
	patch16(17, 0);
	expect_open_error("FAT16 without root entries", -EINVAL,
			  "no root directory entries"), cases++;
	fresh(pristine);
	patch16(510, 0);
	expect_open_error("no boot signature", -EMEDIUMTYPE,
			  "no filesystem"), cases++;
	fresh(pristine);
	patch16(19, 0);
	patch32(32, 0);
	expect_open_error("total sectors 0", -EINVAL,
			  "total sector count is 0"), cases++;
	fresh(pristine32);
	patch32(44, 0x0fffff00);
	expect_open_error("FAT32 root cluster out of range", -EINVAL,
			  "root cluster 268435200 out of range"), cases++;
	fresh(pristine32);
	patch32(44, 1);
	expect_open_error("FAT32 root cluster 1", -EINVAL,
			  "root cluster 1 out of range"), cases++;
	/* FAT32 with mirroring off: the active FAT (the second) is read,
	 * whatever the first says. */
	{
		uint8_t bs[64];
		uint32_t res;
		uint64_t pos;

		fresh(pristine32);
		peek(0, bs, sizeof(bs));
		res = bs[14] | bs[15] << 8;
		open_work(&fi);
		pos = ent_pos(fi.fs, "a.bin");
		close_fat(&fi);
		peek(pos + 26, bs, 2);
		patch32(res * 512ull + 4ull * (bs[0] | bs[1] << 8), 0);
		open_work(&fi);
		assert(lookup_path(fi.fs, "a.bin", &st) == 0);
		assert(fsys_read(fi.fs, st.ino, buf, 2048, 0) == -EIO);
		close_fat(&fi);
		patch16(40, 0x81);
		open_work(&fi);
		assert(lookup_path(fi.fs, "a.bin", &st) == 0);
		assert(fsys_read(fi.fs, st.ino, buf, 2048, 0) == 2048);
		assert(buf[2047] == 'a');
		close_fat(&fi);
		patch16(40, 0x85);
		expect_open_error("FAT32 active FAT 5 of 2", -EINVAL,
				  "active FAT 5 of 2");
		cases += 2;
	}
	/* A FAT32 of fewer than 65525 clusters (mkfs.fat -F 32 makes them
	 * with a warning; small EFI partitions): FAT32 by its BPB, which
	 * has no 16-bit FAT size and no fixed root, as Linux reads it.
	 * The total cut to 40000 sectors leaves about 38700 clusters; a.bin
	 * lies in the first ones. */
	fresh(pristine32);
	patch32(32, 40000);
	open_work(&fi);
	assert(lookup_path(fi.fs, "a.bin", &st) == 0);
	assert(st.size == 2048);
	assert(fsys_read(fi.fs, st.ino, buf, 2048, 0) == 2048);
	assert(buf[0] == 'a' && buf[2047] == 'a');
	close_fat(&fi), cases++;
	fresh(pristine);
	patch16(22, 0);
	patch32(36, 0);
	expect_open_error("FAT size 0", -EINVAL, "FAT size is 0 sectors"),
		cases++;
	fresh(pristine);
	assert(truncate(work, (off_t)(data_off - 512)) == 0);
	expect_open_error("data area past the end", -EINVAL,
			  "lies past the end"), cases++;
	/* No "FAT" type string: recognised by its BPB. */
	fresh(pristine);
	patch(54, "        ", 8);
	open_work(&fi);
	expect_b_ok(fi.fs);
	close_fat(&fi), cases++;
	/* A filesystem larger than its image: opens, with a warning, and
	 * the files that lie inside still read. */
	{
		struct fsys_info info;
		struct stat sb;

		fresh(pristine);
		assert(stat(work, &sb) == 0);
		assert(truncate(work, (off_t)(data_off + 64 * 1024)) == 0);
		open_work(&fi);
		fsys_get_info(fi.fs, &info);
		assert(strstr(info.warning, "exceed"));
		expect_b_ok(fi.fs);
		close_fat(&fi);
		cases++;
	}

	/* --- cluster chains --- a.bin has 4 clusters of 'a' */
	/* A loop: the third cluster points back to the first. */
	fresh(pristine);
	patch16(FAT16(l.a_cl + 1), l.a_cl);
	open_work(&fi);
	assert(lookup_path(fi.fs, "a.bin", &st) == 0 && st.size == 2048);
	assert(fsys_read(fi.fs, st.ino, buf, 1024, 0) == 1024);
	assert(buf[0] == 'a' && buf[1023] == 'a');
	assert(fsys_read(fi.fs, st.ino, buf, 512, 1024) == -EIO);
	assert(fsys_read(fi.fs, st.ino, buf, 2048, 0) == -EIO);
	expect_b_ok(fi.fs);
	close_fat(&fi), cases++;
	/* A loop that starts after the first cluster: 0 1 2 1 ... */
	fresh(pristine);
	patch16(FAT16(l.a_cl + 2), l.a_cl + 1);
	open_work(&fi);
	assert(lookup_path(fi.fs, "a.bin", &st) == 0);
	assert(fsys_read(fi.fs, st.ino, buf, 1536, 0) == 1536);
	assert(fsys_read(fi.fs, st.ino, buf, 512, 1536) == -EIO);
	close_fat(&fi), cases++;
	/* A cluster pointing to itself. */
	fresh(pristine);
	patch16(FAT16(l.a_cl), l.a_cl);
	open_work(&fi);
	assert(lookup_path(fi.fs, "a.bin", &st) == 0);
	assert(fsys_read(fi.fs, st.ino, buf, 512, 0) == 512);
	assert(fsys_read(fi.fs, st.ino, buf, 1, 512) == -EIO);
	expect_b_ok(fi.fs);
	close_fat(&fi), cases++;
	/* The chain runs into a free cluster. */
	fresh(pristine);
	patch16(FAT16(l.a_cl + 1), 3000);
	open_work(&fi);
	assert(lookup_path(fi.fs, "a.bin", &st) == 0);
	assert(fsys_read(fi.fs, st.ino, buf, 1024, 0) == 1024);
	assert(fsys_read(fi.fs, st.ino, buf, 512, 1024) == -EIO);
	expect_b_ok(fi.fs);
	close_fat(&fi), cases++;
	/* The chain holds a free entry. */
	fresh(pristine);
	patch16(FAT16(l.a_cl + 1), 0);
	open_work(&fi);
	assert(lookup_path(fi.fs, "a.bin", &st) == 0);
	assert(fsys_read(fi.fs, st.ino, buf, 512, 0) == 512);
	assert(fsys_read(fi.fs, st.ino, buf, 512, 512) == -EIO);
	close_fat(&fi), cases++;
	/* ... a bad-cluster mark, and a number past the last cluster. */
	fresh(pristine);
	patch16(FAT16(l.a_cl), 0xfff7);
	patch16(FAT16(l.b_cl), 0xfff0);
	open_work(&fi);
	assert(lookup_path(fi.fs, "a.bin", &st) == 0);
	assert(fsys_read(fi.fs, st.ino, buf, 1, 0) == -EIO);
	assert(lookup_path(fi.fs, "b.bin", &st) == 0);
	assert(fsys_read(fi.fs, st.ino, buf, 1, 0) == -EIO);
	assert(lookup_path(fi.fs, "c.bin", &st) == 0);
	assert(fsys_read(fi.fs, st.ino, buf, 512, 0) == 512 && buf[0] == 'c');
	close_fat(&fi), cases++;
	/* The start cluster out of range, and 1. */
	fresh(pristine);
	patch16(l.a + 26, 0xfffe);
	patch16(l.b + 26, 1);
	open_work(&fi);
	assert(lookup_path(fi.fs, "a.bin", &st) == 0);
	assert(fsys_read(fi.fs, st.ino, buf, 1, 0) == -EIO);
	assert(lookup_path(fi.fs, "b.bin", &st) == 0);
	assert(fsys_read(fi.fs, st.ino, buf, 1, 0) == -EIO);
	close_fat(&fi), cases++;
	/* A size beyond the chain: c.bin has one cluster, claims 10. */
	fresh(pristine);
	patch32(l.c + 28, 5120);
	open_work(&fi);
	assert(lookup_path(fi.fs, "c.bin", &st) == 0 && st.size == 5120);
	assert(fsys_read(fi.fs, st.ino, buf, 512, 0) == 512 && buf[0] == 'c');
	assert(fsys_read(fi.fs, st.ino, buf, 512, 512) == -EIO);
	expect_b_ok(fi.fs);
	close_fat(&fi), cases++;
	/* 4 GiB - 1 on a short chain: bounded, answered at once. */
	fresh(pristine);
	patch32(l.c + 28, 0xffffffff);
	open_work(&fi);
	assert(lookup_path(fi.fs, "c.bin", &st) == 0 && st.size == 0xffffffff);
	assert(st.blocks == 0x800000);
	assert(fsys_read(fi.fs, st.ino, buf, 512, 0) == 512);
	assert(fsys_read(fi.fs, st.ino, buf, 512, 1ull << 30) == -EIO);
	assert(fsys_read(fi.fs, st.ino, buf, 512, 0xfffffffe) == -EIO);
	assert(fsys_read(fi.fs, st.ino, buf, 512, 0xffffffff) == 0);
	close_fat(&fi), cases++;
	/* Two files sharing clusters (cross-linked): both read. */
	fresh(pristine);
	patch16(l.c + 26, l.a_cl);
	open_work(&fi);
	assert(lookup_path(fi.fs, "c.bin", &st) == 0);
	assert(fsys_read(fi.fs, st.ino, buf, 512, 0) == 512 && buf[0] == 'a');
	close_fat(&fi), cases++;

	/* --- directories --- */
	/* SUB/FILE.TXT made a directory pointing at SUB itself. */
	fresh(pristine);
	buf[0] = 0x10;
	patch(l.sub_file + 11, buf, 1);
	patch16(l.sub_file + 26, l.sub_cl);
	open_work(&fi);
	assert(lookup_path(fi.fs, "SUB", &st) == 0);
	assert(dir_has(fi.fs, st.ino, "FILE.TXT"));
	assert(lookup_path(fi.fs, "SUB/FILE.TXT", &st) == -EIO);
	assert(fsys_getattr(fi.fs, (l.sub_file / 32) + 16, &st) == -EIO);
	assert(fsys_readdir(fi.fs, (l.sub_file / 32) + 16, 0, collect, &nm) ==
	       -EIO);
	assert(lookup_path(fi.fs, "SUB/SUB2/X.TXT", &st) == 0);
	expect_b_ok(fi.fs);
	close_fat(&fi), cases++;
	/* SUB/SUB2/X.TXT made a directory pointing at SUB (its parent's
	 * cluster: the ".." of SUB2). */
	fresh(pristine);
	buf[0] = 0x10;
	patch(l.sub2_x + 11, buf, 1);
	patch16(l.sub2_x + 26, l.sub_cl);
	open_work(&fi);
	assert(lookup_path(fi.fs, "SUB/SUB2/X.TXT", &st) == -EIO);
	assert(lookup_path(fi.fs, "SUB/FILE.TXT", &st) == 0);
	close_fat(&fi), cases++;
	/* SUB/SUB2/SUB3/Y.TXT made a directory pointing at SUB, three
	 * levels up: a walker would see SUB/SUB2/SUB3/Y.TXT/SUB2/... */
	fresh(pristine);
	buf[0] = 0x10;
	patch(l.sub3_y + 11, buf, 1);
	patch16(l.sub3_y + 26, l.sub_cl);
	open_work(&fi);
	assert(lookup_path(fi.fs, "SUB/SUB2/SUB3", &st) == 0);
	assert(dir_has(fi.fs, st.ino, "Y.TXT"));
	assert(lookup_path(fi.fs, "SUB/SUB2/SUB3/Y.TXT", &st) == -EIO);
	assert(fsys_getattr(fi.fs, (l.sub3_y / 32) + 16, &st) == -EIO);
	assert(fsys_readdir(fi.fs, (l.sub3_y / 32) + 16, 0, collect, &nm) ==
	       -EIO);
	assert(fsys_lookup(fi.fs, (l.sub3_y / 32) + 16, "SUB2", &st) == -EIO);
	assert(lookup_path(fi.fs, "SUB/SUB2/X.TXT", &st) == 0);
	assert(lookup_path(fi.fs, "SUB/FILE.TXT", &st) == 0);
	expect_b_ok(fi.fs);
	close_fat(&fi), cases++;
	/* The same loop with SUB's ".." rewritten to name SUB3, so that the
	 * looping entry looks right: now SUB itself does not fit under the
	 * root, and no walk from the root gets into the loop. */
	fresh(pristine);
	buf[0] = 0x10;
	patch(l.sub3_y + 11, buf, 1);
	patch16(l.sub3_y + 26, l.sub_cl);
	patch16(data_off + (l.sub_cl - 2ull) * 512 + 32 + 26, l.sub3_cl);
	open_work(&fi);
	assert(dir_has(fi.fs, fsys_root_ino(fi.fs), "SUB"));
	assert(lookup_path(fi.fs, "SUB", &st) == -EIO);
	assert(fsys_getattr(fi.fs, (l.sub / 32) + 16, &st) == -EIO);
	assert(lookup_path(fi.fs, "ABC.TXT", &st) == 0);
	expect_b_ok(fi.fs);
	close_fat(&fi), cases++;
	/* SUB2 without its ".." entry (deleted): it cannot be placed in the
	 * tree, so it gives -EIO; SUB next to it stays readable. */
	fresh(pristine);
	buf[0] = 0xe5;
	patch(data_off + (l.sub2_cl - 2ull) * 512 + 32, buf, 1);
	open_work(&fi);
	assert(lookup_path(fi.fs, "SUB/SUB2", &st) == -EIO);
	assert(fsys_getattr(fi.fs, (l.sub2 / 32) + 16, &st) == -EIO);
	assert(lookup_path(fi.fs, "SUB/FILE.TXT", &st) == 0);
	close_fat(&fi), cases++;
	/* A subdirectory with cluster 0: the root. */
	fresh(pristine);
	buf[0] = 0x10;
	patch(l.sub_file + 11, buf, 1);
	patch16(l.sub_file + 26, 0);
	open_work(&fi);
	assert(lookup_path(fi.fs, "SUB/FILE.TXT", &st) == -EIO);
	close_fat(&fi), cases++;
	/* A directory whose chain loops: lists its first cluster, then
	 * -EIO; its files read. */
	fresh(pristine);
	patch16(FAT16(l.sub_cl), l.sub_cl);
	/* No end mark (0x00) in its cluster: the walk reaches the loop. */
	for (int i = 0; i < 16; i++) {
		uint64_t at = data_off + (l.sub_cl - 2ull) * 512 + 32ull * i;
		uint8_t b0, e5 = 0xe5;

		peek(at, &b0, 1);
		if (b0 == 0)
			patch(at, &e5, 1);
	}
	open_work(&fi);
	assert(lookup_path(fi.fs, "SUB", &st) == 0);
	assert(list_dir(fi.fs, st.ino, 1000, &nm) == -EIO);
	assert(nm.n == 2); /* FILE.TXT, SUB2 */
	free_names(&nm);
	assert(lookup_path(fi.fs, "SUB/FILE.TXT", &st) == 0);
	assert(lookup_path(fi.fs, "SUB/missing", &st) == -EIO);
	expect_b_ok(fi.fs);
	close_fat(&fi), cases++;

	/* --- names --- */
	/* A bad checksum in the LFN: the short name shows. */
	fresh(pristine);
	peek(l.lng - 32, buf, 32);
	assert(buf[11] == 0x0f);
	buf[13] ^= 0x55;
	patch(l.lng - 32, buf, 32);
	open_work(&fi);
	assert(dir_has(fi.fs, fsys_root_ino(fi.fs), "LONGNA~1.TXT"));
	assert(!dir_has(fi.fs, fsys_root_ino(fi.fs), "Long name file.txt"));
	assert(lookup_path(fi.fs, "Long name file.txt", &st) == -ENOENT);
	assert(lookup_path(fi.fs, "longna~1.txt", &st) == 0);
	close_fat(&fi), cases++;
	/* A broken sequence (the last-entry flag cleared). */
	fresh(pristine);
	peek(l.lng - 64, buf, 32);
	assert(buf[0] == 0x42);
	buf[0] = 0x02;
	patch(l.lng - 64, buf, 1);
	open_work(&fi);
	assert(dir_has(fi.fs, fsys_root_ino(fi.fs), "LONGNA~1.TXT"));
	close_fat(&fi), cases++;
	/* A sequence number skipped. */
	fresh(pristine);
	buf[0] = 0x43;
	patch(l.lng - 64, buf, 1);
	open_work(&fi);
	assert(dir_has(fi.fs, fsys_root_ino(fi.fs), "LONGNA~1.TXT"));
	close_fat(&fi), cases++;
	/* 0x05 first byte: 0xE5 in code page 437 (U+03C3). */
	fresh(pristine);
	buf[0] = 0x05;
	patch(l.abc, buf, 1);
	open_work(&fi);
	assert(dir_has(fi.fs, fsys_root_ino(fi.fs), "\xcf\x83" "BC.TXT"));
	assert(lookup_path(fi.fs, "\xcf\x83" "bc.txt", &st) == 0);
	close_fat(&fi), cases++;
	/* 0xE5: deleted. */
	fresh(pristine);
	buf[0] = 0xe5;
	patch(l.abc, buf, 1);
	open_work(&fi);
	assert(lookup_path(fi.fs, "ABC.TXT", &st) == -ENOENT);
	assert(fsys_getattr(fi.fs, l.abc / 32 + 16, &st) == -ESTALE);
	close_fat(&fi), cases++;
	/* A free entry (0x00) ends the directory. */
	fresh(pristine);
	buf[0] = 0;
	patch(l.b, buf, 1);
	open_work(&fi);
	assert(lookup_path(fi.fs, "a.bin", &st) == 0);
	assert(lookup_path(fi.fs, "c.bin", &st) == -ENOENT);
	close_fat(&fi), cases++;
	/* A long name with a surrogate pair (mtools 4.0.32 drops non-BMP
	 * characters, so written here), a lone surrogate, a slash. */
	{
		static const char *want = "Ünïcødé 😀.txt";
		uint16_t u[32];
		size_t n = 0;
		const char *p = want;

		while (*p) {
			uint32_t cp = test_utf8_get(&p);

			if (cp >= 0x10000) {
				u[n++] = (uint16_t)(0xd800 + ((cp - 0x10000) >> 10));
				u[n++] = (uint16_t)(0xdc00 + ((cp - 0x10000) & 0x3ff));
			} else {
				u[n++] = (uint16_t)cp;
			}
		}
		fresh(pristine);
		/* The end of the directory must lie after these. */
		memset(buf, 0xe5, 1);
		for (int i = 0; i < 440; i++) {
			uint8_t b0;

			peek(root_off + 32 * (uint64_t)i, &b0, 1);
			if (b0 == 0)
				patch(root_off + 32 * (uint64_t)i, buf, 1);
		}
		write_lfn(root_off + 32 * 400, u, n, "UNICOD~1TXT", l.b_cl, 1000);
		u[0] = 0xdc00;
		write_lfn(root_off + 32 * 410, u, 3, "LONE~1  TXT", l.b_cl, 1000);
		u[0] = 'a';
		u[1] = '/';
		write_lfn(root_off + 32 * 420, u, 3, "SLASH~1 TXT", l.b_cl, 1000);
		/* Case-only twins: the exact name wins. */
		u[0] = 'a';
		u[1] = '.';
		u[2] = 'B';
		u[3] = 'I';
		u[4] = 'N';
		write_lfn(root_off + 32 * 430, u, 5, "A~1     BIN", l.b_cl, 1000);
		open_work(&fi);
		assert(dir_has(fi.fs, fsys_root_ino(fi.fs), want));
		assert(lookup_path(fi.fs, "ünïcødé 😀.TXT", &st) == 0);
		expect_b_ok(fi.fs);
		assert(dir_has(fi.fs, fsys_root_ino(fi.fs),
			       "\xef\xbf\xbd" "n\xc3\xaf"));
		assert(dir_has(fi.fs, fsys_root_ino(fi.fs), "SLASH~1.TXT"));
		assert(lookup_path(fi.fs, "a.BIN", &st) == 0);
		assert(st.size == 1000);
		assert(lookup_path(fi.fs, "a.bin", &st) == 0);
		assert(st.size == 2048);
		assert(lookup_path(fi.fs, "A.bin", &st) == 0);
		assert(st.size == 2048 || st.size == 1000);
		close_fat(&fi);
		cases += 4;
	}
	/* Inode numbers nobody handed out. */
	fresh(pristine);
	open_work(&fi);
	assert(fsys_getattr(fi.fs, 2, &st) == -ESTALE);
	assert(fsys_getattr(fi.fs, UINT64_MAX, &st) == -ESTALE);
	assert(fsys_getattr(fi.fs, 16 + data_off / 32 + 100000, &st) ==
	       -ESTALE);
	assert(fsys_read(fi.fs, 16 + data_off / 32 + 100000, buf, 1, 0) ==
	       -ESTALE);
	close_fat(&fi), cases++;
	printf("  %d damage cases\n", cases);
	assert(cases >= 20);
}

static void make_damage_images(void)
{
	char src[300];

	snprintf(src, sizeof(src), "%s/dsrc", tmp);
	snprintf(pristine, sizeof(pristine), "%s/pristine16.img", tmp);
	snprintf(pristine32, sizeof(pristine32), "%s/pristine32.img", tmp);
	snprintf(work, sizeof(work), "%s/work.img", tmp);
	sh("mkdir -p '%s/SUB/SUB2/SUB3' && cd '%s' && "
	   "printf '%%2048s' '' | tr ' ' a > a.bin && "
	   "printf '%%1000s' '' | tr ' ' b > b.bin && "
	   "printf '%%512s' '' | tr ' ' c > c.bin && "
	   "echo f > SUB/FILE.TXT && echo x > SUB/SUB2/X.TXT && "
	   "echo y > SUB/SUB2/SUB3/Y.TXT && "
	   "echo l > 'Long name file.txt' && echo abc > ABC.TXT",
	   src, src);
	/* Files copied one by one, in order, so clusters are consecutive. */
	sh("mkfs.fat -C -F 16 -s 1 -S 512 -R 1 '%s' 20000 >/dev/null && cd '%s' && "
	   "for f in a.bin b.bin c.bin SUB 'Long name file.txt' ABC.TXT; do "
	   "MTOOLS_SKIP_CHECK=1 mcopy -s -m -i '%s' \"$f\" ::/ </dev/null; done",
	   pristine, src, pristine);
	sh("mkfs.fat -C -F 32 -s 1 '%s' 40000 >/dev/null && cd '%s' && "
	   "MTOOLS_SKIP_CHECK=1 mcopy -s -m -i '%s' a.bin ::/ </dev/null",
	   pristine32, src, pristine32);
}

static void replay(const char *path)
{
	static uint8_t data[1 << 20];
	size_t n = regress_read(path, data, sizeof(data));

	fuzz_fsys_fat_one(data, n);
}

int main(void)
{
	char src[300], bigsrc[300];
	size_t nb;

	if (system("command -v mkfs.fat >/dev/null && command -v mcopy "
		   ">/dev/null && command -v mattrib >/dev/null") != 0) {
		fprintf(stderr, "mkfs.fat or mtools missing: skipped\n");
		return 77;
	}
	setenv("TZ", "UTC", 1);
	setvbuf(stdout, NULL, _IOLBF, 0);
	snprintf(tmp, sizeof(tmp), "%s/test-fsys-fat.XXXXXX",
		 getenv("TMPDIR") ? getenv("TMPDIR") : "/tmp");
	assert(mkdtemp(tmp));
	snprintf(src, sizeof(src), "%s/src", tmp);
	snprintf(bigsrc, sizeof(bigsrc), "%s/bigsrc", tmp);
	make_src(src, false);

	printf("source trees through mkfs.fat + mcopy:\n");
	test_config(src, "-F 12 -n IMGFSTEST -s 8", 16000, "12", false);
	test_config(src, "-F 12 -n IMGFSTEST -S 4096 -s 1", 16000, "12", false);
	test_config(src, "-F 16 -n IMGFSTEST -s 1", 20000, "16", false);
	test_config(src, "-F 16 -n IMGFSTEST -s 8", 40000, "16", false);
	test_config(src, "-F 16 -n IMGFSTEST -S 4096 -s 2", 200000, "16", false);
	test_config(src, "-F 32 -n IMGFSTEST -s 1", 80000, "32", false);
	test_config(src, "-F 32 -n IMGFSTEST -S 4096 -s 1", 300000, "32", false);
	make_src(bigsrc, true);
	test_config(bigsrc, "-F 32 -n IMGFSTEST -s 2", 100000, "32", true);

	printf("hand-made damage:\n");
	make_damage_images();
	test_damage();

	nb = for_each_regress_file("fuzz-fsys-fat", replay);
	printf("%zu fuzz reproducers replayed\n", nb);
	sh("rm -rf '%s'", tmp);
	return 0;
}
