/* test-fsys-ext.c: the ext2/3/4 driver of fsys against mkfs.ext* -d, the
 * source tree it was built from and (as root) the kernel's own read-only
 * loop mount of the same image.
 *
 * 1. Trees: a source tree with every kind of object (small, empty, large,
 *    sparse and fragmented files, hard links, fast and long symlinks,
 *    device nodes old and new, a FIFO, a socket, user xattrs small and
 *    large, ACLs, owners with high bits, nanosecond and far times, a
 *    5000-entry directory) goes into images of several flavours (ext4 1K
 *    and 4K blocks, no journal, ext2, ext3 with 128-byte inodes,
 *    inline_data, 64bit+metadata_csum, no csum, htree directories made
 *    by e2fsck -D). Every object's metadata, bytes, link target, xattrs,
 *    SEEK_DATA/SEEK_HOLE and st_blocks is compared with the kernel mount
 *    (root) and the source tree; readdir resumes from cookies.
 * 2. A journal that needs recovery, made by the kernel (root): the image
 *    copied while mounted after sync; our replay against the kernel's
 *    recovery of another copy, and the image left unchanged.
 * 3. Hand-made journal transactions (descriptor, data, revoke, commit)
 *    written into a fresh image: replayed, revoked, uncommitted, looping
 *    sequences, tags past the end.
 * 4. Hand-made corruptions of the superblock, inodes, extent trees,
 *    directories and checksums, each with its exact outcome.
 * 5. Saved fuzz reproducers (tests/fuzz/regress/fuzz-fsys-ext/).
 */
#undef NDEBUG
#include "fsys.h"
#include "regress.h"

#define FUZZ_NO_MAIN_ENTRY
#include "../fuzz/fuzz-fsys-ext.c"

#include <assert.h>
#include <dirent.h>
#include <errno.h>
#include <ext2fs/ext2_fs.h>
#include <ext2fs/ext2fs.h>
#include <fcntl.h>
#include <inttypes.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <signal.h>
#include <sys/ioctl.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/sysmacros.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <sys/xattr.h>
#include <time.h>
#include <unistd.h>

static char tmp[256];
static bool is_root;
static bool have_acl;

/* What an assertion failure must undo: a mount, a loop device. */
static char cleanup_mnt[512];
static char cleanup_loop[128];

static void undo_mounts(void)
{
	char cmd[800];

	if (cleanup_mnt[0]) {
		snprintf(cmd, sizeof(cmd), "umount %s 2>/dev/null", cleanup_mnt);
		if (system(cmd) != 0) {
			snprintf(cmd, sizeof(cmd), "umount -l %s 2>/dev/null",
				 cleanup_mnt);
			(void)!system(cmd);
		}
		cleanup_mnt[0] = 0;
	}
	if (cleanup_loop[0]) {
		snprintf(cmd, sizeof(cmd), "losetup -d %s 2>/dev/null",
			 cleanup_loop);
		(void)!system(cmd);
		cleanup_loop[0] = 0;
	}
}

static void on_abort(int sig)
{
	char cmd[300];

	undo_mounts();
	snprintf(cmd, sizeof(cmd), "rm -rf %s", tmp);
	if (tmp[0])
		(void)!system(cmd);
	signal(sig, SIG_DFL);
	raise(sig);
}

static int sh(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
static int sh(const char *fmt, ...)
{
	char cmd[8192];
	va_list ap;
	int st;

	va_start(ap, fmt);
	vsnprintf(cmd, sizeof(cmd), fmt, ap);
	va_end(ap);
	st = system(cmd);
	return WIFEXITED(st) ? WEXITSTATUS(st) : 128;
}

static bool have(const char *tool)
{
	return sh("command -v %s >/dev/null 2>&1", tool) == 0;
}

static struct img *open_img(const char *path)
{
	struct img_open_opts o = { .format = IMG_FORMAT_RAW, .read_only = true };
	struct img_err err = { 0 };
	struct img *img = NULL;
	int ret = img_open(path, &o, &img, &err);

	if (ret < 0)
		fprintf(stderr, "img_open %s: %s\n", path, err.msg);
	assert(ret == 0);
	return img;
}

/* Opens path as a filesystem; returns fsys_open's result. */
static int try_open(const char *path, struct img **img_r, struct fsys **fs_r,
		    struct img_err *err)
{
	*img_r = open_img(path);
	*fs_r = NULL;
	memset(err, 0, sizeof(*err));
	int ret = fsys_open(*img_r, fs_r, err);

	if (ret < 0) {
		fprintf(stderr, "  (fsys_open %s: %d %s)\n", path, ret, err->msg);
		img_close(*img_r);
		*img_r = NULL;
	}
	return ret;
}

static void write_file(const char *path, const void *data, size_t len)
{
	int fd = open(path, O_WRONLY | O_CREAT | O_TRUNC, 0644);

	assert(fd >= 0);
	assert(write(fd, data, len) == (ssize_t)len);
	close(fd);
}

/* ---- the source tree ------------------------------------------------- */

static void build_src(const char *src, bool bigdir)
{
	char p[1200], big[1000];
	int fd;

	assert(sh("mkdir -p %s/d/a/b/c %s/bigdir %s/sticky", src, src, src) == 0);
	snprintf(p, sizeof(p), "%s/small.txt", src);
	write_file(p, "hello, world\n", 13);
	snprintf(p, sizeof(p), "%s/empty", src);
	write_file(p, "", 0);
	snprintf(p, sizeof(p), "%s/d/a/b/c/deep", src);
	write_file(p, "deep\n", 5);
	assert(sh("head -c 1000000 /dev/urandom > %s/rand1m && "
		  "head -c 8388608 /dev/urandom > %s/big && "
		  "ln %s/rand1m %s/hardlink && "
		  "truncate -s 50M %s/sparse && "
		  "dd if=/dev/urandom of=%s/sparse bs=4096 count=3 seek=2560 "
		  "conv=notrunc status=none && "
		  "dd if=/dev/urandom of=%s/sparse bs=4096 count=1 seek=7680 "
		  "conv=notrunc status=none && "
		  "truncate -s 1M %s/hole-first && "
		  "dd if=/dev/urandom of=%s/hole-first bs=1000 count=3 seek=700 "
		  "conv=notrunc status=none",
		  src, src, src, src, src, src, src, src, src) == 0);
	/* Many extents: a tree of depth 1 at least. */
	snprintf(p, sizeof(p), "%s/frag", src);
	fd = open(p, O_WRONLY | O_CREAT | O_TRUNC, 0644);
	assert(fd >= 0);
	for (int i = 0; i < 40; i++) {
		char blk[4096];

		memset(blk, 'a' + i % 26, sizeof(blk));
		assert(pwrite(fd, blk, sizeof(blk), (off_t)i * 16384) ==
		       (ssize_t)sizeof(blk));
	}
	close(fd);
	assert(sh("cd %s && ln -s small.txt fastlink && "
		  "ln -s %0200d longlink && ln -s d/a/b/c/deep deeplink",
		  src, 7) == 0);
	memset(big, 'x', sizeof(big) - 1);
	big[sizeof(big) - 1] = 0;
	snprintf(p, sizeof(p), "%s/verylonglink", src);
	assert(symlink(big, p) == 0);
	if (is_root) {
		assert(sh("cd %s && mknod cdev c 1 3 && mknod bdev b 8 1 && "
			  "mknod bigdev c 300 70000 && mkfifo fifo && "
			  "chown 1234:5678 small.txt && "
			  "chown 100000:200000 rand1m",
			  src) == 0);
	} else {
		assert(sh("cd %s && mkfifo fifo", src) == 0);
	}
	{
		struct sockaddr_un sa = { .sun_family = AF_UNIX };
		int s = socket(AF_UNIX, SOCK_STREAM, 0);

		snprintf(sa.sun_path, sizeof(sa.sun_path), "%.90s/sock", src);
		if (s >= 0 && strlen(src) + 6 < sizeof(sa.sun_path))
			assert(bind(s, (struct sockaddr *)&sa, sizeof(sa)) == 0);
		if (s >= 0)
			close(s);
	}
	assert(sh("cd %s && chmod 4755 small.txt && chmod 1777 sticky && "
		  "chmod 600 empty && "
		  "touch -h -d '2021-02-03 04:05:06.123456789' small.txt && "
		  "touch -d '1960-06-01 00:00:00.5' empty && "
		  "touch -d '2037-12-31 23:59:59' d/a/b/c/deep",
		  src) == 0);
	if (sh("setfattr -n user.a -v hello %s/small.txt 2>/dev/null", src) == 0) {
		char val[2100];

		/* Too big for the inode, small enough for a 1 KiB block. */
		memset(val, 'v', 800);
		val[800] = 0;
		assert(sh("setfattr -n user.big -v %s %s/rand1m", val, src) == 0);
		assert(sh("setfattr -n user.empty %s/d", src) == 0);
	}
	have_acl = have("setfacl") &&
		   sh("setfacl -m u:1234:rw %s/small.txt 2>/dev/null && "
		      "setfacl -d -m u:1000:rx %s/d", src, src) == 0;
	for (int i = 0; bigdir && i < 5000; i++) {
		char name[600];

		snprintf(name, sizeof(name), "%s/bigdir/entry-with-a-long-name-%05d",
			 src, i);
		write_file(name, name, (size_t)(i % 5));
	}
}

/* ---- comparing a tree ------------------------------------------------ */

struct ent {
	char name[256];
	uint64_t ino;
	uint32_t type;
	uint64_t cookie;
};

struct ent_list {
	struct ent *v;
	size_t n, cap;
};

static int collect(void *ctx, const char *name, uint64_t ino, uint32_t type,
		   uint64_t next_cookie)
{
	struct ent_list *l = ctx;

	if (l->n == l->cap) {
		l->cap = l->cap ? 2 * l->cap : 64;
		l->v = realloc(l->v, l->cap * sizeof(*l->v));
		assert(l->v);
	}
	snprintf(l->v[l->n].name, sizeof(l->v[l->n].name), "%s", name);
	l->v[l->n].ino = ino;
	l->v[l->n].type = type;
	l->v[l->n].cookie = next_cookie;
	l->n++;
	return 0;
}

static int list_dir(struct fsys *fs, uint64_t dir, struct ent_list *l)
{
	memset(l, 0, sizeof(*l));
	return fsys_readdir(fs, dir, 0, collect, l);
}

static int cmp_str(const void *a, const void *b)
{
	return strcmp(a, b);
}

/* The xattr names of a list, sorted, as one string ("a\nb\n"). */
static void sorted_names(const char *list, ssize_t len, char *out, size_t cap)
{
	char names[64][256];
	int n = 0;

	for (ssize_t i = 0; i < len && n < 64; i += (ssize_t)strlen(list + i) + 1)
		snprintf(names[n++], 256, "%s", list + i);
	qsort(names, (size_t)n, 256, cmp_str);
	out[0] = 0;
	for (int i = 0; i < n; i++) {
		strncat(out, names[i], cap - strlen(out) - 2);
		strcat(out, "\n");
	}
}

static void compare_xattrs(struct fsys *fs, uint64_t ino, const char *ref)
{
	char a[4096], b[4096], sa[8192], sb[8192];
	ssize_t la = fsys_listxattr(fs, ino, a, sizeof(a));
	ssize_t lb = llistxattr(ref, b, sizeof(b));

	assert(la >= 0);
	assert(fsys_listxattr(fs, ino, NULL, 0) == la);
	if (lb < 0)
		lb = 0; /* a source tree on a filesystem without xattrs */
	/* security.* labels of the host are not in the image. */
	sorted_names(a, la, sa, sizeof(sa));
	sorted_names(b, lb, sb, sizeof(sb));
	if (strcmp(sa, sb) != 0) {
		fprintf(stderr, "%s: xattrs [%s] vs [%s]\n", ref, sa, sb);
		assert(0);
	}
	for (ssize_t i = 0; i < la; i += (ssize_t)strlen(a + i) + 1) {
		char va[4096], vb[4096];
		ssize_t na = fsys_getxattr(fs, ino, a + i, va, sizeof(va));
		ssize_t nb = lgetxattr(ref, a + i, vb, sizeof(vb));

		if (na < 0 || na != nb || memcmp(va, vb, (size_t)na) != 0) {
			fprintf(stderr, "%s: xattr %s: %zd vs %zd bytes\n", ref,
				a + i, na, nb);
			for (ssize_t k = 0; k < na && k < 64; k++)
				fprintf(stderr, "%02x%s", (uint8_t)va[k],
					k + 1 < nb && va[k] != vb[k] ? "*" : "");
			fprintf(stderr, "\n");
			for (ssize_t k = 0; k < nb && k < 64; k++)
				fprintf(stderr, "%02x", (uint8_t)vb[k]);
			fprintf(stderr, "\n");
			assert(0);
		}
		assert(fsys_getxattr(fs, ino, a + i, NULL, 0) == na);
		if (na > 1)
			assert(fsys_getxattr(fs, ino, a + i, va, (size_t)na - 1) ==
			       -ERANGE);
	}
	assert(fsys_getxattr(fs, ino, "user.no-such-name", a, sizeof(a)) ==
	       -ENODATA);
}

static void compare_data(struct fsys *fs, uint64_t ino, const char *ref,
			 const struct stat *rs, bool kernel)
{
	static uint8_t a[200000], b[200000];
	int fd = open(ref, O_RDONLY);
	uint64_t off = 0;

	assert(fd >= 0);
	/* Odd-sized chunks so reads straddle blocks and extents. */
	while (off < (uint64_t)rs->st_size) {
		size_t want = 131072 + 4097;
		ssize_t na = fsys_read(fs, ino, a, want, off);
		ssize_t nb = pread(fd, b, want, (off_t)off);

		assert(na > 0 && na == nb);
		assert(memcmp(a, b, (size_t)na) == 0);
		off += (uint64_t)na;
		/* Skip big holes the quick way, compare the seek answers. */
		if (kernel && off < (uint64_t)rs->st_size) {
			uint64_t d = 0;
			off_t kd = lseek(fd, (off_t)off, SEEK_DATA);
			int r = fsys_seek(fs, ino, off, SEEK_DATA, &d);

			if (kd < 0) {
				assert(r == -ENXIO);
				break;
			}
			assert(r == 0 && d == (uint64_t)kd);
			uint64_t h = 0;
			off_t kh = lseek(fd, (off_t)off, SEEK_HOLE);

			assert(fsys_seek(fs, ino, off, SEEK_HOLE, &h) == 0);
			assert(h == (uint64_t)kh);
			off = d;
		}
	}
	assert(fsys_read(fs, ino, a, 10, (uint64_t)rs->st_size) == 0);
	assert(fsys_read(fs, ino, a, 10, UINT64_MAX - 5) == 0);
	close(fd);
}

static void compare_tree(struct fsys *fs, uint64_t dir, const char *ref,
			 bool kernel, int depth, size_t *nb_objects)
{
	struct ent_list l;
	DIR *d;
	struct dirent *de;
	size_t nb_ref = 0;

	assert(depth < 20);
	assert(list_dir(fs, dir, &l) == 0);
	d = opendir(ref);
	assert(d);
	while ((de = readdir(d)))
		if (strcmp(de->d_name, ".") && strcmp(de->d_name, ".."))
			nb_ref++;
	closedir(d);
	for (size_t i = 0; i < l.n; i++) {
		char path[4096];
		struct fsys_stat st;
		struct stat rs;
		const struct ent *e = &l.v[i];

		if (!kernel && depth == 0 && strcmp(e->name, "lost+found") == 0) {
			nb_ref++;
			continue;
		}
		snprintf(path, sizeof(path), "%s/%s", ref, e->name);
		if (lstat(path, &rs) != 0) {
			fprintf(stderr, "%s: not in the reference\n", path);
			assert(0);
		}
		assert(fsys_lookup(fs, dir, e->name, &st) == 0);
		assert(st.ino == e->ino);
		assert(e->type == 0 || e->type == (st.mode & S_IFMT));
		if (st.mode != rs.st_mode || st.uid != rs.st_uid ||
		    st.gid != rs.st_gid) {
			fprintf(stderr, "%s: mode %o uid %u gid %u vs %o %u %u\n",
				path, st.mode, st.uid, st.gid, rs.st_mode,
				rs.st_uid, rs.st_gid);
			assert(0);
		}
		if ((!S_ISDIR(st.mode) || kernel) &&
		    st.size != (uint64_t)rs.st_size) {
			fprintf(stderr, "%s: size %" PRIu64 " vs %lld\n", path,
				st.size, (long long)rs.st_size);
			assert(0);
		}
		/* mkfs -d stores seconds only (and none for links and
		 * special files); the kernel mount is the oracle for the
		 * nanoseconds (files the kernel wrote: the journal test). */
		if ((kernel || S_ISREG(st.mode) || S_ISDIR(st.mode)) &&
		    (st.mtime.tv_sec != rs.st_mtim.tv_sec ||
		     (kernel && st.mtime.tv_nsec != rs.st_mtim.tv_nsec))) {
			fprintf(stderr, "%s: mtime %lld.%09ld vs %lld.%09ld\n",
				path, (long long)st.mtime.tv_sec,
				st.mtime.tv_nsec, (long long)rs.st_mtim.tv_sec,
				rs.st_mtim.tv_nsec);
			assert(0);
		}
		if (S_ISCHR(st.mode) || S_ISBLK(st.mode))
			assert(st.rdev == rs.st_rdev);
		if (kernel) {
			assert(st.ino == rs.st_ino);
			assert(st.nlink == rs.st_nlink);
			if (st.blocks != (uint64_t)rs.st_blocks) {
				fprintf(stderr, "%s: blocks %" PRIu64 " vs %lld\n",
					path, st.blocks, (long long)rs.st_blocks);
				assert(0);
			}
			assert(st.ctime.tv_sec == rs.st_ctim.tv_sec &&
			       st.ctime.tv_nsec == rs.st_ctim.tv_nsec);
			assert(st.atime.tv_sec == rs.st_atim.tv_sec &&
			       st.atime.tv_nsec == rs.st_atim.tv_nsec);
		} else if (!S_ISDIR(st.mode)) {
			assert(st.nlink == rs.st_nlink);
		}
		if (S_ISREG(st.mode)) {
			compare_data(fs, st.ino, path, &rs, kernel);
		} else if (S_ISLNK(st.mode)) {
			char a[5000], b[5000];
			ssize_t na = fsys_readlink(fs, st.ino, a, sizeof(a));
			ssize_t nb = readlink(path, b, sizeof(b));

			assert(na > 0 && na == nb);
			assert(memcmp(a, b, (size_t)na) == 0 && a[na] == 0);
			assert(fsys_readlink(fs, st.ino, a, (size_t)na) == -ERANGE);
			assert(fsys_read(fs, st.ino, a, 10, 0) == -EINVAL);
		} else if (S_ISDIR(st.mode)) {
			char a[8];

			assert(fsys_read(fs, st.ino, a, 8, 0) == -EISDIR);
			compare_tree(fs, st.ino, path, kernel, depth + 1,
				     nb_objects);
		} else {
			char a[8];

			assert(fsys_readlink(fs, st.ino, a, 8) == -EINVAL);
		}
		if (!S_ISLNK(st.mode) && !S_ISSOCK(st.mode) && !S_ISFIFO(st.mode))
			compare_xattrs(fs, st.ino, path);
		(*nb_objects)++;
	}
	if (l.n != nb_ref) {
		fprintf(stderr, "%s: %zu entries, the reference has %zu\n", ref,
			l.n, nb_ref);
		assert(0);
	}
	free(l.v);
}

/* Readdir of bigdir in slices, resuming from cookies. */
struct slice {
	struct ent_list *l;
	int left;
};

static int slice_cb(void *ctx, const char *name, uint64_t ino, uint32_t type,
		    uint64_t next_cookie)
{
	struct slice *s = ctx;

	if (s->left-- == 0)
		return 1;
	return collect(s->l, name, ino, type, next_cookie);
}

static void check_resume(struct fsys *fs, uint64_t dir, size_t expect)
{
	struct ent_list l = { 0 };
	uint64_t cookie = 0;

	for (int rounds = 0; rounds < 100000; rounds++) {
		struct slice s = { .l = &l, .left = 7 };
		size_t before = l.n;

		assert(fsys_readdir(fs, dir, cookie, slice_cb, &s) == 0);
		if (l.n == before)
			break;
		cookie = l.v[l.n - 1].cookie;
	}
	assert(l.n == expect);
	for (size_t i = 0; i < l.n; i++)
		for (size_t j = i + 1; j < l.n && j < i + 20; j++)
			assert(strcmp(l.v[i].name, l.v[j].name) != 0);
	free(l.v);
}

/* src_ok: the image holds what the source tree holds (mkfs.ext4 1.47.0
 * -O inline_data cuts files that end in a hole at their last data: there
 * the kernel mount is the only oracle). */
static void check_image(const char *img_path, const char *src, bool src_ok,
			bool bigdir)
{
	struct img *img;
	struct fsys *fs;
	struct img_err err;
	struct fsys_info info;
	struct fsys_stat st;
	struct statvfs sv;
	size_t nb = 0;
	char mnt[512];
	int ret = try_open(img_path, &img, &fs, &err);

	if (ret < 0)
		fprintf(stderr, "%s: %s\n", img_path, err.msg);
	assert(ret == 0);
	fsys_get_info(fs, &info);
	assert(info.journal_transactions_replayed == 0);
	assert(fsys_root_ino(fs) == 2);
	assert(fsys_getattr(fs, 2, &st) == 0 && S_ISDIR(st.mode));
	assert(fsys_getattr(fs, 0, &st) == -ENOENT);
	assert(fsys_getattr(fs, UINT64_MAX, &st) == -ENOENT);
	assert(fsys_lookup(fs, 2, "no-such-file", &st) == -ENOENT);
	assert(fsys_statfs(fs, &sv) == 0 && sv.f_blocks > 0 &&
	       sv.f_bfree <= sv.f_blocks && sv.f_files > 0);
	if (src_ok) {
		compare_tree(fs, 2, src, false, 0, &nb);
		assert(nb > (bigdir ? 5000 : 20));
	}
	assert(fsys_lookup(fs, 2, "bigdir", &st) == 0);
	check_resume(fs, st.ino, bigdir ? 5000 : 0);
	assert(fsys_lookup(fs, 2, "small.txt", &st) == 0);
	assert(fsys_readdir(fs, st.ino, 0, collect, NULL) == -ENOTDIR);
	if (is_root) {
		snprintf(mnt, sizeof(mnt), "%s/mnt", tmp);
		assert(sh("mkdir -p %s && mount -o ro,loop %s %s", mnt, img_path,
			  mnt) == 0);
		snprintf(cleanup_mnt, sizeof(cleanup_mnt), "%s", mnt);
		nb = 0;
		compare_tree(fs, 2, mnt, true, 0, &nb);
		if (statvfs(mnt, &sv) == 0) {
			struct statvfs ours;

			assert(fsys_statfs(fs, &ours) == 0);
			assert(ours.f_files == sv.f_files &&
			       ours.f_ffree == sv.f_ffree &&
			       ours.f_bsize == sv.f_bsize);
		}
		undo_mounts();
	}
	fsys_close(fs);
	img_close(img);
}

/* ---- a journal the kernel left needing recovery ----------------------- */

static void test_kernel_journal(void)
{
	char img[512], copy[512], oracle[512], mnt[512], loopdev[128] = "";
	struct img *im;
	struct fsys *fs;
	struct img_err err;
	struct fsys_info info;
	size_t nb = 0;
	FILE *p;

	snprintf(img, sizeof(img), "%s/j.img", tmp);
	snprintf(copy, sizeof(copy), "%s/j-copy.img", tmp);
	snprintf(oracle, sizeof(oracle), "%s/j-oracle.img", tmp);
	snprintf(mnt, sizeof(mnt), "%s/jmnt", tmp);
	assert(sh("mkfs.ext4 -q -F %s 64M && mkdir -p %s", img, mnt) == 0);
	assert(sh("mount -o loop,commit=1 %s %s", img, mnt) == 0);
	snprintf(cleanup_mnt, sizeof(cleanup_mnt), "%s", mnt);
	/* Files, a kernel-made htree directory, renames, deletes. */
	int rc = sh("cd %s && mkdir -p kdir && "
		    "for i in $(seq 1 600); do echo file $i > kdir/f$i; done && "
		    "head -c 3000000 /dev/urandom > blob && "
		    "ln -s blob blob-link && setfattr -n user.j -v v blob && "
		    "sync -f . && rm kdir/f7 && mv kdir/f8 kdir/renamed && "
		    "sync -f . && mkdir kdir2 && echo late > kdir2/late && "
		    "touch -d '2022-05-06 07:08:09.987654321' kdir2/late && "
		    "sync -f . && "
		    "cp --sparse=always %s %s", mnt, img, copy);
	undo_mounts();
	assert(rc == 0);
	assert(sh("cmp -s %s %s", img, copy) != 0 ||
	       sh("dumpe2fs -h %s 2>/dev/null | grep -q needs_recovery", copy) == 0);
	assert(sh("cp --sparse=always %s %s && md5sum < %s > %s.md5", copy,
		  oracle, copy, copy) == 0);
	assert(sh("dumpe2fs -h %s 2>/dev/null | grep -q needs_recovery", copy) ==
	       0);
	assert(try_open(copy, &im, &fs, &err) == 0);
	fsys_get_info(fs, &info);
	printf("kernel journal: %u transactions replayed\n",
	       info.journal_transactions_replayed);
	assert(info.journal_transactions_replayed > 0);
	/* The oracle: the kernel's recovery (a writable loop device, the
	 * filesystem mounted read-only replays onto it). */
	{
		char cmd[700];

		snprintf(cmd, sizeof(cmd), "losetup -f --show %s", oracle);
		p = popen(cmd, "r");
		assert(p && fgets(loopdev, sizeof(loopdev), p));
		pclose(p);
		loopdev[strcspn(loopdev, "\n")] = 0;
		snprintf(cleanup_loop, sizeof(cleanup_loop), "%s", loopdev);
	}
	rc = sh("mount -o ro %s %s", loopdev, mnt);
	if (rc == 0) {
		snprintf(cleanup_mnt, sizeof(cleanup_mnt), "%s", mnt);
		compare_tree(fs, 2, mnt, true, 0, &nb);
	}
	undo_mounts();
	assert(rc == 0);
	assert(nb > 600);
	fsys_close(fs);
	img_close(im);
	assert(sh("md5sum < %s | cmp -s - %s.md5", copy, copy) == 0);
}

/* ---- raw editing helpers --------------------------------------------- */

static void patch(const char *path, uint64_t off, const void *data, size_t len)
{
	int fd = open(path, O_WRONLY);

	assert(fd >= 0);
	assert(pwrite(fd, data, len, (off_t)off) == (ssize_t)len);
	close(fd);
}

static void peek(const char *path, uint64_t off, void *data, size_t len)
{
	int fd = open(path, O_RDONLY);

	assert(fd >= 0);
	assert(pread(fd, data, len, (off_t)off) == (ssize_t)len);
	close(fd);
}

static void patch32(const char *path, uint64_t off, uint32_t v)
{
	uint8_t b[4] = { v, v >> 8, v >> 16, v >> 24 };

	patch(path, off, b, 4);
}

static void patch16(const char *path, uint64_t off, uint16_t v)
{
	uint8_t b[2] = { v, v >> 8 };

	patch(path, off, b, 2);
}

/* Runs debugfs -R cmd on img and returns its first output line matching
 * fmt's parse (one or two numbers). */
static int dbg(const char *img, const char *cmd, const char *fmt,
	       unsigned long long *a, unsigned long long *b)
{
	char line[1024], full[2048];
	FILE *p;
	int got = 0;

	snprintf(full, sizeof(full), "debugfs -R '%s' %s 2>/dev/null", cmd, img);
	p = popen(full, "r");
	assert(p);
	while (fgets(line, sizeof(line), p)) {
		const char *s = line;

		while (*s == ' ' || *s == '\t')
			s++;
		got = b ? sscanf(s, fmt, a, b) : sscanf(s, fmt, a);
		if (got == (b ? 2 : 1))
			break;
		got = 0;
	}
	pclose(p);
	return got;
}

/* Offset in the image of the inode of path. */
static uint64_t inode_off(const char *img, const char *path, unsigned bs)
{
	unsigned long long blk = 0, off = 0;
	char cmd[600];

	snprintf(cmd, sizeof(cmd), "imap %s", path);
	assert(dbg(img, cmd, "located at block %llu, offset 0x%llx", &blk,
		   &off) == 2);
	return blk * bs + off;
}

static uint64_t bmap(const char *img, const char *path, unsigned lblk)
{
	unsigned long long pblk = 0;
	char cmd[600];

	snprintf(cmd, sizeof(cmd), "bmap %s %u", path, lblk);
	assert(dbg(img, cmd, "%llu", &pblk, NULL) == 1);
	return pblk;
}

/* Reads all of file path of the opened fs; returns fsys_read's result
 * of the first failing call or the length. */
static ssize_t read_all(struct fsys *fs, const char *name, uint8_t *buf,
			size_t cap)
{
	struct fsys_stat st;
	int ret = fsys_lookup(fs, 2, name, &st);
	size_t done = 0;

	if (ret < 0)
		return ret;
	while (done < cap) {
		ssize_t n = fsys_read(fs, st.ino, buf + done, cap - done, done);

		if (n < 0)
			return n;
		if (n == 0)
			break;
		done += (size_t)n;
	}
	return (ssize_t)done;
}

/* ---- hand-made journal transactions ---------------------------------- */

struct jinfo {
	unsigned bs;
	uint64_t jblk0; /* fs block of log block 0 */
	uint64_t map[4096]; /* fs block of each log block */
	uint32_t first, maxlen, seq;
	bool v3, is64;
	uint32_t seed;
};

static uint32_t be32(const uint8_t *p)
{
	return (uint32_t)p[0] << 24 | p[1] << 16 | p[2] << 8 | p[3];
}

static void put32be(uint8_t *p, uint32_t v)
{
	p[0] = v >> 24;
	p[1] = v >> 16;
	p[2] = v >> 8;
	p[3] = v;
}

static void jload(const char *img, struct jinfo *j)
{
	uint8_t sb[1024];

	char cmd[700], line[4096];
	FILE *p;
	int nb = 0;

	j->bs = 4096;
	memset(j->map, 0, sizeof(j->map));
	/* "(0-9):11-20, (10-24):22-36, ..." from debugfs stat */
	snprintf(cmd, sizeof(cmd), "debugfs -R 'stat <8>' %s 2>/dev/null", img);
	p = popen(cmd, "r");
	assert(p);
	while (fgets(line, sizeof(line), p)) {
		const char *c = line;
		unsigned long long l0, l1, p0, p1;
		int used;

		while (sscanf(c, " (%llu-%llu):%llu-%llu%n", &l0, &l1, &p0, &p1,
			      &used) == 4) {
			for (unsigned long long k = l0; k <= l1 && k < 4096; k++)
				j->map[k] = p0 + (k - l0), nb++;
			c += used;
			if (*c == ',')
				c++;
		}
	}
	pclose(p);
	assert(nb >= 1024);
	j->jblk0 = j->map[0];
	peek(img, j->jblk0 * j->bs, sb, sizeof(sb));
	assert(be32(sb) == 0xC03B3998);
	j->maxlen = be32(sb + 16);
	j->first = be32(sb + 20);
	j->seq = be32(sb + 24);
	j->v3 = be32(sb + 40) & 0x10;
	j->is64 = be32(sb + 40) & 0x2;
	j->seed = ext2fs_crc32c_le(~0u, sb + 0x30, 16);
}

static void jset_start(const char *img, const struct jinfo *j, uint32_t start,
		       uint32_t seq)
{
	uint8_t sb[1024];

	peek(img, j->jblk0 * j->bs, sb, sizeof(sb));
	put32be(sb + 24, seq);
	put32be(sb + 28, start);
	if (j->v3) {
		memset(sb + 0xFC, 0, 4);
		put32be(sb + 0xFC, ext2fs_crc32c_le(~0u, sb, sizeof(sb)));
	}
	patch(img, j->jblk0 * j->bs, sb, sizeof(sb));
	/* needs_recovery in the fs superblock */
	uint8_t f[4];

	peek(img, 1024 + offsetof(struct ext2_super_block, s_feature_incompat),
	     f, 4);
	f[0] |= EXT3_FEATURE_INCOMPAT_RECOVER;
	patch(img, 1024 + offsetof(struct ext2_super_block, s_feature_incompat),
	      f, 4);
	/* metadata_csum covers the superblock: fix its checksum. */
	uint8_t s[1024];

	peek(img, 1024, s, sizeof(s));
	if (((struct ext2_super_block *)s)->s_feature_ro_compat &
	    EXT4_FEATURE_RO_COMPAT_METADATA_CSUM) {
		uint32_t c = ext2fs_crc32c_le(~0u, s,
					      offsetof(struct ext2_super_block,
						       s_checksum));

		patch32(img, 1024 + offsetof(struct ext2_super_block, s_checksum),
			c);
	}
}

static void jwrite_block(const char *img, const struct jinfo *j, uint32_t jblk,
			 const uint8_t *b)
{
	assert(jblk < 4096 && j->map[jblk]);
	patch(img, j->map[jblk] * j->bs, b, j->bs);
}

static void jhdr(uint8_t *b, unsigned type, uint32_t seq)
{
	put32be(b, 0xC03B3998);
	put32be(b + 4, type);
	put32be(b + 8, seq);
}

static void jtail_csum(const struct jinfo *j, uint8_t *b)
{
	if (!j->v3)
		return;
	memset(b + j->bs - 4, 0, 4);
	put32be(b + j->bs - 4, ext2fs_crc32c_le(j->seed, b, j->bs));
}

/* A descriptor at jblk with one tag per fs block of blks, the data blocks
 * after it (data[i]), then a commit block (unless !commit). Returns the
 * next log block. */
static uint32_t jtxn(const char *img, const struct jinfo *j, uint32_t jblk,
		     uint32_t seq, const uint64_t *blks, uint8_t **data,
		     int nb, bool commit)
{
	uint8_t b[4096];
	size_t p = 12;

	memset(b, 0, sizeof(b));
	jhdr(b, 1, seq);
	for (int i = 0; i < nb; i++) {
		unsigned flags = (i ? 2 : 0) | (i == nb - 1 ? 8 : 0);

		put32be(b + p, (uint32_t)blks[i]);
		if (j->v3) {
			uint8_t s[4];
			uint32_t c;

			put32be(s, seq);
			c = ext2fs_crc32c_le(j->seed, s, 4);
			c = ext2fs_crc32c_le(c, data[i], j->bs);
			put32be(b + p + 4, flags);
			put32be(b + p + 8, (uint32_t)(blks[i] >> 32));
			put32be(b + p + 12, c);
			p += 16;
		} else {
			b[p + 6] = 0;
			b[p + 7] = (uint8_t)flags;
			if (j->is64)
				put32be(b + p + 8, (uint32_t)(blks[i] >> 32));
			p += j->is64 ? 12 : 8;
		}
		if (i == 0)
			p += 16; /* the uuid */
	}
	jtail_csum(j, b);
	jwrite_block(img, j, jblk++, b);
	for (int i = 0; i < nb; i++)
		jwrite_block(img, j, jblk++, data[i]);
	if (commit) {
		memset(b, 0, sizeof(b));
		jhdr(b, 2, seq);
		if (j->v3) {
			b[12] = 4;
			b[13] = 4;
			put32be(b + 16, ext2fs_crc32c_le(j->seed, b, j->bs));
		}
		jwrite_block(img, j, jblk++, b);
	}
	return jblk;
}

static uint32_t jrevoke(const char *img, const struct jinfo *j, uint32_t jblk,
			uint32_t seq, uint64_t blk)
{
	uint8_t b[4096];

	memset(b, 0, sizeof(b));
	jhdr(b, 5, seq);
	if (j->is64) {
		put32be(b + 12, 24);
		put32be(b + 16, (uint32_t)(blk >> 32));
		put32be(b + 20, (uint32_t)blk);
	} else {
		put32be(b + 12, 20);
		put32be(b + 16, (uint32_t)blk);
	}
	jtail_csum(j, b);
	jwrite_block(img, j, jblk, b);
	return jblk + 1;
}

/* v3: turn on checksums v3 and 64-bit block numbers in the journal
 * superblock first (the kernel does so when it mounts a metadata_csum
 * filesystem; mke2fs leaves them off). */
static void test_crafted_journal(const char *base_opts, bool v3)
{
	char base[512], img[512];
	uint8_t d1[4096], d2[4096], buf[8192], orig[8192];
	uint8_t *data[2] = { d1, d2 };
	struct jinfo j;
	struct img *im;
	struct fsys *fs;
	struct img_err err;
	struct fsys_info info;
	uint64_t fblk, blks[2];
	uint32_t next;
	ssize_t n;

	snprintf(base, sizeof(base), "%s/jbase.img", tmp);
	snprintf(img, sizeof(img), "%s/jcase.img", tmp);
	assert(sh("rm -rf %s/jsrc && mkdir -p %s/jsrc && "
		  "head -c 8192 /dev/urandom > %s/jsrc/f && "
		  "echo other > %s/jsrc/g && "
		  "mkfs.ext4 -q -F -b 4096 %s -d %s/jsrc %s 32M",
		  tmp, tmp, tmp, tmp, base_opts, tmp, base) == 0);
	jload(base, &j);
	if (v3) {
		uint8_t jsb[1024];

		peek(base, j.jblk0 * 4096, jsb, sizeof(jsb));
		put32be(jsb + 40, be32(jsb + 40) | 0x10 | 0x2);
		jsb[0x50] = 4;
		memset(jsb + 0xFC, 0, 4);
		put32be(jsb + 0xFC, ext2fs_crc32c_le(~0u, jsb, sizeof(jsb)));
		patch(base, j.jblk0 * 4096, jsb, sizeof(jsb));
		jload(base, &j);
		assert(j.v3 && j.is64);
	}
	fblk = bmap(base, "/f", 0);
	peek(base, fblk * 4096, orig, sizeof(orig));
	memset(d1, 0x11, sizeof(d1));
	memset(d2, 0x22, sizeof(d2));

	/* One committed transaction rewriting f's first block. */
	assert(sh("cp %s %s", base, img) == 0);
	blks[0] = fblk;
	jtxn(img, &j, j.first, j.seq, blks, data, 1, true);
	jset_start(img, &j, j.first, j.seq);
	assert(try_open(img, &im, &fs, &err) == 0);
	fsys_get_info(fs, &info);
	assert(info.journal_transactions_replayed == 1);
	assert(read_all(fs, "f", buf, sizeof(buf)) == 8192);
	assert(memcmp(buf, d1, 4096) == 0 && memcmp(buf + 4096, orig + 4096, 4096) == 0);
	assert(read_all(fs, "g", buf, sizeof(buf)) == 6);
	fsys_close(fs);
	img_close(im);

	/* Two transactions on the same block: the later copy wins; a data
	 * block starting with the jbd2 magic is escaped. */
	assert(sh("cp %s %s", base, img) == 0);
	next = jtxn(img, &j, j.first, j.seq, blks, data, 1, true);
	jtxn(img, &j, next, j.seq + 1, blks, data + 1, 1, true);
	jset_start(img, &j, j.first, j.seq);
	assert(try_open(img, &im, &fs, &err) == 0);
	fsys_get_info(fs, &info);
	assert(info.journal_transactions_replayed == 2);
	assert(read_all(fs, "f", buf, sizeof(buf)) == 8192);
	assert(memcmp(buf, d2, 4096) == 0);
	fsys_close(fs);
	img_close(im);

	/* Transaction 2 revokes the block transaction 1 wrote: not replayed. */
	assert(sh("cp %s %s", base, img) == 0);
	next = jtxn(img, &j, j.first, j.seq, blks, data, 1, true);
	next = jrevoke(img, &j, next, j.seq + 1, fblk);
	{
		uint8_t b[4096] = { 0 };

		jhdr(b, 2, j.seq + 1);
		if (j.v3) {
			b[12] = 4;
			b[13] = 4;
			put32be(b + 16, ext2fs_crc32c_le(j.seed, b, 4096));
		}
		jwrite_block(img, &j, next, b);
	}
	jset_start(img, &j, j.first, j.seq);
	assert(try_open(img, &im, &fs, &err) == 0);
	fsys_get_info(fs, &info);
	assert(info.journal_transactions_replayed == 2);
	assert(read_all(fs, "f", buf, sizeof(buf)) == 8192);
	assert(memcmp(buf, orig, 8192) == 0);
	fsys_close(fs);
	img_close(im);

	/* No commit block: nothing replayed, the flag still cleared. */
	assert(sh("cp %s %s", base, img) == 0);
	jtxn(img, &j, j.first, j.seq, blks, data, 1, false);
	jset_start(img, &j, j.first, j.seq);
	assert(try_open(img, &im, &fs, &err) == 0);
	fsys_get_info(fs, &info);
	assert(info.journal_transactions_replayed == 0);
	assert(read_all(fs, "f", buf, sizeof(buf)) == 8192);
	assert(memcmp(buf, orig, 8192) == 0);
	fsys_close(fs);
	img_close(im);

	/* A second transaction repeating the first's sequence: the log
	 * ends after the first. */
	assert(sh("cp %s %s", base, img) == 0);
	next = jtxn(img, &j, j.first, j.seq, blks, data, 1, true);
	jtxn(img, &j, next, j.seq, blks, data + 1, 1, true);
	jset_start(img, &j, j.first, j.seq);
	assert(try_open(img, &im, &fs, &err) == 0);
	fsys_get_info(fs, &info);
	assert(info.journal_transactions_replayed == 1);
	assert(read_all(fs, "f", buf, sizeof(buf)) == 8192);
	assert(memcmp(buf, d1, 4096) == 0);
	fsys_close(fs);
	img_close(im);

	/* A log that wraps to its start with the right sequences all the
	 * way round (every block a one-tag transaction): bounded scan. */
	assert(sh("cp %s %s", base, img) == 0);
	{
		uint32_t b = j.first, seq = j.seq;

		while (b + 3 <= j.maxlen)
			b = jtxn(img, &j, b, seq++, blks, data, 1, true);
		jset_start(img, &j, j.first, j.seq);
		assert(try_open(img, &im, &fs, &err) == 0);
		fsys_get_info(fs, &info);
		assert(info.journal_transactions_replayed == seq - j.seq);
		fsys_close(fs);
		img_close(im);
	}

	/* A tag naming a block past the end of the filesystem: -EIO. */
	assert(sh("cp %s %s", base, img) == 0);
	blks[0] = 1ull << 31;
	jtxn(img, &j, j.first, j.seq, blks, data, 1, true);
	jset_start(img, &j, j.first, j.seq);
	assert(try_open(img, &im, &fs, &err) == -EIO);
	assert(strstr(err.msg, "past the end"));

	/* A transaction replacing the superblock (block 0) with garbage:
	 * the replayed superblock is checked as the image's is. */
	assert(sh("cp %s %s", base, img) == 0);
	blks[0] = 0;
	jtxn(img, &j, j.first, j.seq, blks, data, 1, true);
	jset_start(img, &j, j.first, j.seq);
	assert(try_open(img, &im, &fs, &err) == -EIO);
	assert(strstr(err.msg, "garbage"));
	blks[0] = fblk;

	/* A journal superblock start outside the log: -EIO. */
	assert(sh("cp %s %s", base, img) == 0);
	jset_start(img, &j, j.maxlen + 5, j.seq);
	assert(try_open(img, &im, &fs, &err) == -EIO);

	/* A bad journal superblock magic: -EIO. */
	assert(sh("cp %s %s", base, img) == 0);
	jset_start(img, &j, j.first, j.seq);
	patch32(img, j.jblk0 * 4096, 0);
	assert(try_open(img, &im, &fs, &err) == -EIO);
	assert(strstr(err.msg, "journal"));
	(void)n;
	if (v3) {
		/* A data block whose tag checksum does not match: left out,
		 * with a warning. */
		assert(sh("cp %s %s", base, img) == 0);
		blks[0] = fblk;
		jtxn(img, &j, j.first, j.seq, blks, data, 1, true);
		patch(img, j.map[j.first + 1] * 4096 + 100, "x", 1);
		jset_start(img, &j, j.first, j.seq);
		assert(try_open(img, &im, &fs, &err) == 0);
		fsys_get_info(fs, &info);
		assert(info.journal_transactions_replayed == 1);
		assert(strstr(info.warning, "bad checksums"));
		assert(read_all(fs, "f", buf, sizeof(buf)) == 8192);
		assert(memcmp(buf, orig, 8192) == 0);
		fsys_close(fs);
		img_close(im);
		/* A commit block with a bad checksum: the transaction did not
		 * commit. */
		assert(sh("cp %s %s", base, img) == 0);
		next = jtxn(img, &j, j.first, j.seq, blks, data, 1, true);
		patch(img, j.map[next - 1] * 4096 + 100, "x", 1);
		jset_start(img, &j, j.first, j.seq);
		assert(try_open(img, &im, &fs, &err) == 0);
		fsys_get_info(fs, &info);
		assert(info.journal_transactions_replayed == 0);
		fsys_close(fs);
		img_close(im);
		/* A bad journal superblock checksum: -EIO. */
		assert(sh("cp %s %s", base, img) == 0);
		jset_start(img, &j, j.first, j.seq);
		patch(img, j.jblk0 * 4096 + 0xFC, "xxxx", 4);
		assert(try_open(img, &im, &fs, &err) == -EIO);
		assert(strstr(err.msg, "checksum"));
	}
	printf("crafted journal (%s%s): ok\n", base_opts,
	       v3 ? ", csum v3, 64bit" : "");
}

/* ---- corruptions ----------------------------------------------------- */

struct corrupt_base {
	char path[512];
	unsigned bs;
};

static void fresh(const struct corrupt_base *b, char *img)
{
	sprintf(img, "%s/case.img", tmp);
	assert(sh("cp %s %s", b->path, img) == 0);
}

/* Opens img; asserts open succeeds and "good" still reads right. */
static struct fsys *open_ok(const char *img, struct img **im)
{
	struct img_err err;
	struct fsys *fs;
	uint8_t buf[64];

	int ret = try_open(img, im, &fs, &err);

	if (ret)
		fprintf(stderr, "%s: %s\n", img, err.msg);
	assert(ret == 0);
	assert(read_all(fs, "good", buf, sizeof(buf)) == 5 &&
	       memcmp(buf, "good\n", 5) == 0);
	return fs;
}

static void close_fs(struct fsys *fs, struct img *im)
{
	fsys_close(fs);
	img_close(im);
}

/* ---- an encrypted directory, made by the kernel (root) --------------- */

/* Names of folder path, as the kernel lists them, sorted; returns the
 * count. */
static size_t kernel_names(const char *path, char (**v_r)[256])
{
	char (*v)[256] = NULL;
	size_t n = 0;
	DIR *d = opendir(path);
	struct dirent *de;

	assert(d);
	while ((de = readdir(d))) {
		if (strcmp(de->d_name, ".") == 0 || strcmp(de->d_name, "..") == 0)
			continue;
		v = realloc(v, (n + 1) * sizeof(*v));
		assert(v);
		snprintf(v[n++], 256, "%s", de->d_name);
	}
	closedir(d);
	qsort(v, n, sizeof(*v), cmp_str);
	*v_r = v;
	return n;
}

/* Adds a v2 key to the filesystem at mnt and sets it on folder dir
 * (fscrypt ioctls, by number: no fscrypt header needed). Returns false
 * when the kernel cannot. */
static bool fscrypt_protect(const char *mnt, const char *dir)
{
	uint8_t arg[80 + 64] = { 0 };
	uint8_t pol[24] = { 0 };
	int fd, dfd;
	bool ok;

	arg[0] = 2; /* FSCRYPT_KEY_SPEC_TYPE_IDENTIFIER */
	arg[40] = 64; /* raw_size */
	for (int i = 0; i < 64; i++)
		arg[80 + i] = (uint8_t)(i * 7 + 1);
	fd = open(mnt, O_RDONLY);
	assert(fd >= 0);
	/* FS_IOC_ADD_ENCRYPTION_KEY, _IOWR('f', 23, 80 bytes) */
	ok = ioctl(fd, (3ul << 30) | (80ul << 16) | ('f' << 8) | 23, arg) == 0;
	close(fd);
	if (!ok)
		return false;
	pol[0] = 2; /* v2, AES-256-XTS contents, AES-256-CTS names */
	pol[1] = 1;
	pol[2] = 4;
	memcpy(pol + 8, arg + 8, 16);
	dfd = open(dir, O_RDONLY);
	assert(dfd >= 0);
	/* FS_IOC_SET_ENCRYPTION_POLICY, _IOR('f', 19, 12 bytes) */
	ok = ioctl(dfd, (2ul << 30) | (12ul << 16) | ('f' << 8) | 19, pol) == 0;
	close(dfd);
	return ok;
}

/* Without the key, the kernel lists an encrypted folder by "no-key"
 * names (base64url of the htree hashes and the ciphertext); files/ must
 * show the same names, each found again by lookup with the kernel's
 * inode number, and none left out but those whose ciphertext is longer
 * than 149 bytes (which the kernel names by a SHA-256). Before, the
 * ciphertext itself was shown and names holding '/' or NUL (about one
 * in eight) were left out. */
static void test_kernel_encrypt(void)
{
	char img[512], mnt[512], sec[600];
	char (*kv)[256], (*ksub)[256];
	size_t kn, nsub, nlong = 0;
	struct ent_list l, ls;
	struct fsys_stat st, st2;
	struct img *im;
	struct fsys *fs;
	uint8_t b;

	snprintf(img, sizeof(img), "%s/enc.img", tmp);
	snprintf(mnt, sizeof(mnt), "%s/encmnt", tmp);
	snprintf(sec, sizeof(sec), "%s/sec", mnt);
	assert(sh("mkfs.ext4 -q -F -O encrypt %s 32M && mkdir -p %s", img,
		  mnt) == 0);
	assert(sh("mount -o loop %s %s", img, mnt) == 0);
	snprintf(cleanup_mnt, sizeof(cleanup_mnt), "%s", mnt);
	assert(mkdir(sec, 0755) == 0);
	if (!fscrypt_protect(mnt, sec)) {
		undo_mounts();
		printf("encrypted folder: kernel without fscrypt, skipped\n");
		return;
	}
	/* 300 names of 10 to 70 bytes (one block is not enough: an htree),
	 * a folder with a file, and one name of 200 bytes. */
	assert(sh("cd %s && for i in $(seq 1 300); do "
		  "echo $i > \"n$i$(printf %%$((i %% 60))s | tr ' ' x)\"; "
		  "done && mkdir sub && echo in > sub/inner && "
		  "echo long > %0200d", sec, 0) == 0);
	undo_mounts();
	/* The loop device of the first mount is released asynchronously:
	 * the second may need a retry on a busy machine. */
	assert(sh("for i in 1 2 3 4 5; do mount -o ro,loop %s %s 2>/dev/null "
		  "&& exit 0; sleep 1; done; exit 1", img, mnt) == 0);
	snprintf(cleanup_mnt, sizeof(cleanup_mnt), "%s", mnt);
	kn = kernel_names(sec, &kv);
	for (size_t i = 0; i < kn; i++)
		nlong += strlen(kv[i]) > 210;
	assert(kn == 302 && nlong == 1);
	{
		char p[900];
		size_t i;

		/* The one folder among the names. */
		for (i = 0; i < kn; i++) {
			struct stat s2;

			snprintf(p, sizeof(p), "%s/%s", sec, kv[i]);
			assert(lstat(p, &s2) == 0);
			if (S_ISDIR(s2.st_mode))
				break;
		}
		assert(i < kn);
		nsub = kernel_names(p, &ksub);
		assert(nsub == 1);
	}
	undo_mounts();

	{
		struct img_err err;

		assert(try_open(img, &im, &fs, &err) == 0);
	}
	assert(fsys_lookup(fs, fsys_root_ino(fs), "sec", &st) == 0);
	assert(list_dir(fs, st.ino, &l) == 0);
	assert(l.n == kn - nlong);
	for (size_t i = 0; i < l.n; i++) {
		assert(bsearch(l.v[i].name, kv, kn, sizeof(*kv), cmp_str));
		assert(fsys_lookup(fs, st.ino, l.v[i].name, &st2) == 0);
		assert(st2.ino == l.v[i].ino);
		if (S_ISREG(st2.mode))
			assert(fsys_read(fs, st2.ino, &b, 1, 0) == -ENOKEY);
		if (S_ISDIR(st2.mode)) {
			assert(list_dir(fs, st2.ino, &ls) == 0);
			assert(ls.n == 1 && strcmp(ls.v[0].name, ksub[0]) == 0);
			free(ls.v);
		}
	}
	printf("encrypted folder: %zu no-key names as the kernel's\n", l.n);
	free(l.v);
	free(kv);
	free(ksub);
	close_fs(fs, im);
	unlink(img);
}

static void expect_open(const char *img, int errnum, const char *msg_part)
{
	struct img *im;
	struct fsys *fs;
	struct img_err err;
	int ret = try_open(img, &im, &fs, &err);

	if (ret != errnum)
		fprintf(stderr, "expected %d got %d (%s)\n", errnum, ret, err.msg);
	assert(ret == errnum);
	if (msg_part)
		assert(strstr(err.msg, msg_part));
}

static void test_corruptions(void)
{
	struct corrupt_base b = { .bs = 4096 }, c = { .bs = 4096 };
	char src[512], img[600];
	struct img *im;
	struct fsys *fs;
	struct fsys_stat st;
	uint8_t buf[70000];
	uint64_t off, sb = 1024;
	int n = 0;

	snprintf(src, sizeof(src), "%s/csrc", tmp);
	assert(sh("rm -rf %s && mkdir -p %s/dir %s/dir2 && echo good > %s/good && "
		  "head -c 20000 /dev/urandom > %s/data && "
		  "ln -s %0100d %s/slowlink && "
		  "for i in 1 2 3 4 5; do echo $i > %s/dir/e$i; done",
		  src, src, src, src, src, 1, src, src) == 0);
	{
		char p[600];
		int fd;

		snprintf(p, sizeof(p), "%s/frag", src);
		fd = open(p, O_WRONLY | O_CREAT | O_TRUNC, 0644);
		for (int i = 0; i < 12; i++)
			assert(pwrite(fd, "x", 1, (off_t)i * 8192) == 1);
		close(fd);
	}
	snprintf(b.path, sizeof(b.path), "%s/cbase.img", tmp);
	snprintf(c.path, sizeof(c.path), "%s/ccsum.img", tmp);
	assert(sh("mkfs.ext4 -q -F -b 4096 -O ^metadata_csum -d %s %s 16M", src,
		  b.path) == 0);
	assert(sh("mkfs.ext4 -q -F -b 4096 -O metadata_csum -d %s %s 16M", src,
		  c.path) == 0);

	/* 1. bad superblock magic: not ext */
	fresh(&b, img);
	patch16(img, sb + 56, 0x1234);
	expect_open(img, -EMEDIUMTYPE, NULL), n++;
	/* 2. block size 2^40 */
	fresh(&b, img);
	patch32(img, sb + offsetof(struct ext2_super_block, s_log_block_size), 30);
	expect_open(img, -EIO, "block size"), n++;
	/* 3. more blocks than the image holds */
	fresh(&b, img);
	patch32(img, sb + offsetof(struct ext2_super_block, s_blocks_count),
		1u << 30);
	expect_open(img, -EIO, "claims"), n++;
	/* 4. zero inodes per group */
	fresh(&b, img);
	patch32(img, sb + offsetof(struct ext2_super_block, s_inodes_per_group), 0);
	expect_open(img, -EIO, "geometry"), n++;
	/* 5. inode count not groups * per group */
	fresh(&b, img);
	patch32(img, sb + offsetof(struct ext2_super_block, s_inodes_count), 77);
	expect_open(img, -EIO, "inodes"), n++;
	/* 6. inode size 100 */
	fresh(&b, img);
	patch16(img, sb + offsetof(struct ext2_super_block, s_inode_size), 100);
	expect_open(img, -EIO, "inode size"), n++;
	/* 7. an incompat feature nobody knows: libext2fs refuses */
	fresh(&b, img);
	{
		uint32_t f;

		peek(img, sb + offsetof(struct ext2_super_block, s_feature_incompat),
		     &f, 4);
		patch32(img, sb + offsetof(struct ext2_super_block,
					  s_feature_incompat),
			f | 0x80000000u);
	}
	expect_open(img, -ENOTSUP, NULL), n++;
	/* 8. an external journal needing recovery */
	fresh(&b, img);
	{
		uint32_t f;

		peek(img, sb + offsetof(struct ext2_super_block, s_feature_incompat),
		     &f, 4);
		patch32(img, sb + offsetof(struct ext2_super_block,
					  s_feature_incompat),
			f | EXT3_FEATURE_INCOMPAT_RECOVER);
		patch32(img, sb + offsetof(struct ext2_super_block, s_journal_inum),
			0);
	}
	expect_open(img, -ENOTSUP, "external journal"), n++;
	/* 9. inode table of group 0 past the end: the root folder is
	 * unreadable, so the open fails saying so (it used to open, and
	 * every path gave a bare EIO) */
	fresh(&b, img);
	/* The group descriptor table follows the superblock's block
	 * (block 1 with 4 KiB blocks); bg_inode_table at 8. */
	patch32(img, 4096 + 8, 0x7fffffff);
	expect_open(img, -EIO, "root folder (inode 2) cannot be read"), n++;
	/* 9b. the whole group descriptor table zeroed (inode table at
	 * block 0) */
	fresh(&b, img);
	{
		uint8_t zero[4096] = { 0 };
		int fd = open(img, O_WRONLY);

		assert(fd >= 0 && pwrite(fd, zero, sizeof(zero), 4096) == 4096);
		close(fd);
	}
	expect_open(img, -EIO, "root folder (inode 2) cannot be read"), n++;
	/* 9c. the root inode a regular file */
	fresh(&b, img);
	off = inode_off(img, "/", b.bs);
	patch16(img, off + offsetof(struct ext2_inode, i_mode), 0100644);
	expect_open(img, -EIO, "root folder (inode 2) is not a folder"), n++;
	/* 10. extent header magic of "data" */
	fresh(&b, img);
	off = inode_off(img, "/data", b.bs);
	patch16(img, off + offsetof(struct ext2_inode, i_block), 0xdead);
	fs = open_ok(img, &im);
	assert(read_all(fs, "data", buf, sizeof(buf)) == -EIO);
	close_fs(fs, im), n++;
	/* 11. extent depth 6 */
	fresh(&b, img);
	patch16(img, off + offsetof(struct ext2_inode, i_block) + 6, 6);
	fs = open_ok(img, &im);
	assert(read_all(fs, "data", buf, sizeof(buf)) == -EIO);
	close_fs(fs, im), n++;
	/* 12. more entries than max */
	fresh(&b, img);
	patch16(img, off + offsetof(struct ext2_inode, i_block) + 2, 9);
	fs = open_ok(img, &im);
	assert(read_all(fs, "data", buf, sizeof(buf)) == -EIO);
	close_fs(fs, im), n++;
	/* 13. an extent pointing past the end of the filesystem */
	fresh(&b, img);
	patch32(img, off + offsetof(struct ext2_inode, i_block) + 12 + 8,
		0x7ffffff0);
	fs = open_ok(img, &im);
	assert(read_all(fs, "data", buf, sizeof(buf)) == -EIO);
	close_fs(fs, im), n++;
	/* 14. an extent tree whose index points at its own leaf with the
	 * leaf claiming depth 1 again: a loop, cut by the depth check */
	fresh(&b, img);
	{
		uint64_t foff = inode_off(img, "/frag", b.bs);
		uint8_t ib[60];
		uint64_t leaf;

		peek(img, foff + offsetof(struct ext2_inode, i_block), ib, 60);
		assert(ib[6] == 1); /* depth 1: 12 extents do not fit in 4 */
		leaf = ib[16] | ib[17] << 8 | ib[18] << 16 | (uint64_t)ib[19] << 24;
		patch16(img, leaf * b.bs + 6, 1);
		patch32(img, leaf * b.bs + 12 + 4, (uint32_t)leaf);
		fs = open_ok(img, &im);
		assert(read_all(fs, "frag", buf, sizeof(buf)) == -EIO);
		close_fs(fs, im), n++;
	}
	/* 15. directory entry rec_len 0 */
	fresh(&b, img);
	{
		uint64_t dblk = bmap(img, "/dir", 0);
		struct ent_list l;

		patch16(img, dblk * b.bs + 12 + 12 + 4, 0); /* after . and .. */
		fs = open_ok(img, &im);
		assert(fsys_lookup(fs, 2, "dir", &st) == 0);
		assert(list_dir(fs, st.ino, &l) == -EIO);
		free(l.v);
		struct fsys_stat st2;

		assert(fsys_lookup(fs, st.ino, "e1", &st2) == -EIO);
		assert(fsys_lookup(fs, 2, "dir2", &st2) == 0);
		close_fs(fs, im), n++;
	}
	/* 16. rec_len running past the block */
	fresh(&b, img);
	{
		uint64_t dblk = bmap(img, "/dir", 0);
		struct ent_list l;

		patch16(img, dblk * b.bs + 12 + 12 + 4, 8192);
		fs = open_ok(img, &im);
		assert(fsys_lookup(fs, 2, "dir", &st) == 0);
		assert(list_dir(fs, st.ino, &l) == -EIO);
		free(l.v);
		close_fs(fs, im), n++;
	}
	/* 17. an entry with an inode number past the inode count */
	fresh(&b, img);
	{
		uint64_t dblk = bmap(img, "/dir", 0);
		struct ent_list l;

		patch32(img, dblk * b.bs + 24, 0x7fffffff);
		fs = open_ok(img, &im);
		assert(fsys_lookup(fs, 2, "dir", &st) == 0);
		assert(list_dir(fs, st.ino, &l) == -EIO);
		free(l.v);
		close_fs(fs, im), n++;
	}
	/* 18. an entry with inode 0 is a deleted entry: not listed */
	fresh(&b, img);
	{
		uint64_t dblk = bmap(img, "/dir", 0);
		struct ent_list l;
		char name[16];

		peek(img, dblk * b.bs + 24 + 8, name, 2);
		patch32(img, dblk * b.bs + 24, 0);
		fs = open_ok(img, &im);
		assert(fsys_lookup(fs, 2, "dir", &st) == 0);
		assert(list_dir(fs, st.ino, &l) == 0 && l.n == 4);
		free(l.v);
		close_fs(fs, im), n++;
	}
	/* 19. a symlink claiming 2^40 bytes */
	fresh(&b, img);
	{
		uint64_t loff = inode_off(img, "/slowlink", b.bs);
		char t[200];

		patch32(img, loff + offsetof(struct ext2_inode, i_size_high), 256);
		fs = open_ok(img, &im);
		assert(fsys_lookup(fs, 2, "slowlink", &st) == 0);
		assert(fsys_readlink(fs, st.ino, t, sizeof(t)) == -EIO);
		close_fs(fs, im), n++;
	}
	/* 20. a file of 2^63 bytes: its data reads, the rest is a hole,
	 * nothing proportional to the size happens */
	fresh(&b, img);
	{
		uint64_t doff = inode_off(img, "/data", b.bs);
		uint64_t o = 0;

		patch32(img, doff + offsetof(struct ext2_inode, i_size_high),
			0x80000000u);
		fs = open_ok(img, &im);
		assert(fsys_lookup(fs, 2, "data", &st) == 0);
		assert(st.size == (1ull << 63) + 20000);
		assert(fsys_read(fs, st.ino, buf, 4096, 0) == 4096);
		memset(buf, 1, 4096);
		assert(fsys_read(fs, st.ino, buf, 4096, 1ull << 62) == 4096);
		for (int i = 0; i < 4096; i++)
			assert(buf[i] == 0);
		assert(fsys_seek(fs, st.ino, 0, SEEK_HOLE, &o) == 0 &&
		       o == 20480);
		assert(fsys_seek(fs, st.ino, 1ull << 40, SEEK_DATA, &o) ==
		       -ENXIO);
		close_fs(fs, im), n++;
	}
	/* 21. metadata_csum: a bad checksum on one inode: EIO for it */
	fresh(&c, img);
	{
		uint64_t doff = inode_off(img, "/data", c.bs);
		uint8_t x;

		peek(img, doff + offsetof(struct ext2_inode, i_mtime), &x, 1);
		x ^= 0x40;
		patch(img, doff + offsetof(struct ext2_inode, i_mtime), &x, 1);
		fs = open_ok(img, &im);
		assert(fsys_lookup(fs, 2, "data", &st) == -EIO);
		assert(read_all(fs, "data", buf, sizeof(buf)) == -EIO);
		close_fs(fs, im), n++;
	}
	/* 22. metadata_csum: a bad directory block checksum */
	fresh(&c, img);
	{
		uint64_t dblk = bmap(img, "/dir", 0);
		struct ent_list l;
		uint8_t x;

		peek(img, dblk * c.bs + 24 + 8, &x, 1);
		x ^= 1;
		patch(img, dblk * c.bs + 24 + 8, &x, 1);
		fs = open_ok(img, &im);
		assert(fsys_lookup(fs, 2, "dir", &st) == 0);
		assert(list_dir(fs, st.ino, &l) == -EIO);
		free(l.v);
		close_fs(fs, im), n++;
	}
	/* 23. metadata_csum: a bad extent block checksum (frag's leaf) */
	fresh(&c, img);
	{
		uint64_t foff = inode_off(img, "/frag", c.bs);
		uint8_t ib[60], x;
		uint64_t leaf;

		peek(img, foff + offsetof(struct ext2_inode, i_block), ib, 60);
		assert(ib[6] == 1);
		leaf = ib[16] | ib[17] << 8 | ib[18] << 16 | (uint64_t)ib[19] << 24;
		peek(img, leaf * c.bs + 20, &x, 1);
		x ^= 1; /* the second extent's length */
		patch(img, leaf * c.bs + 20, &x, 1);
		fs = open_ok(img, &im);
		assert(read_all(fs, "frag", buf, sizeof(buf)) == -EIO);
		close_fs(fs, im), n++;
	}
	/* 24. metadata_csum: a bad superblock checksum */
	fresh(&c, img);
	patch32(img, sb + offsetof(struct ext2_super_block, s_checksum), 0);
	expect_open(img, -EIO, NULL), n++;
	/* 25. an inode of an unknown type */
	fresh(&b, img);
	{
		uint64_t doff = inode_off(img, "/data", b.bs);

		patch16(img, doff + offsetof(struct ext2_inode, i_mode), 0xf1a4);
		fs = open_ok(img, &im);
		assert(fsys_lookup(fs, 2, "data", &st) == -EIO);
		close_fs(fs, im), n++;
	}
	/* 26. an image cut short of its filesystem */
	fresh(&b, img);
	assert(sh("truncate -s 8M %s", img) == 0);
	expect_open(img, -EIO, "claims"), n++;
	/* 27. a zero-length extent */
	fresh(&b, img);
	off = inode_off(img, "/data", b.bs);
	patch16(img, off + offsetof(struct ext2_inode, i_block) + 12 + 4, 0);
	fs = open_ok(img, &im);
	assert(read_all(fs, "data", buf, sizeof(buf)) == -EIO);
	close_fs(fs, im), n++;
	printf("corruptions: %d cases ok\n", n);
}

/* ---- fuzz reproducers ------------------------------------------------ */

static void replay_one(const char *path)
{
	static uint8_t data[1 << 20];
	size_t n = regress_read(path, data, sizeof(data));

	fuzz_fsys_ext_one(data, n);
}

int main(void)
{
	char src[512], img[600];
	struct timespec t0, t1;
	static const struct {
		const char *mkfs;
		bool src_ok;
		bool htree;  /* e2fsck -D: indexed directories */
		bool bigdir; /* the 5000-entry directory (slow to build) */
	} variants[] = {
		{ "mkfs.ext4 -b 4096", true, false, true },
		{ "mkfs.ext4 -b 1024 -O ^has_journal", true, false, false },
		{ "mkfs.ext2", true, false, false },
		{ "mkfs.ext3 -I 128", true, true, true },
		{ "mkfs.ext4 -O inline_data", false, false, false },
		{ "mkfs.ext4 -b 1024 -O 64bit,metadata_csum", true, true, true },
		{ "mkfs.ext4 -O ^metadata_csum,^64bit", true, false, false },
		/* bigalloc: a group's blocks are 2^2 times its bitmap's bits */
		{ "mkfs.ext4 -O bigalloc -C 16384", true, false, false },
	};
	char small[600];

	if (!have("mkfs.ext4") || !have("debugfs")) {
		printf("SKIP: mkfs.ext4/debugfs missing\n");
		return 77;
	}
	is_root = geteuid() == 0;
	setvbuf(stdout, NULL, _IONBF, 0);
	signal(SIGABRT, on_abort);
	atexit(undo_mounts);
	/* tmpfs when there is one: the images are sparse and the disk of a
	 * loaded machine is slow to sync them. */
	snprintf(tmp, sizeof(tmp), "%s/test-fsys-ext.XXXXXX",
		 access("/dev/shm", W_OK) == 0 ? "/dev/shm" : "/var/tmp");
	assert(mkdtemp(tmp));
	clock_gettime(CLOCK_MONOTONIC, &t0);

	size_t nb_regress = for_each_regress_file("fuzz-fsys-ext", replay_one);
	printf("fuzz reproducers: %zu\n", nb_regress);

	/* FSYS_EXT_ONLY=N runs only tree variant N (for debugging). */
	const char *only = getenv("FSYS_EXT_ONLY");

	if (!only) {
		test_corruptions();
		test_crafted_journal("-O ^metadata_csum", false);
		test_crafted_journal("-O metadata_csum", true);
	}

	snprintf(src, sizeof(src), "%s/src", tmp);
	build_src(src, true);
	snprintf(small, sizeof(small), "%s/small", tmp);
	build_src(small, false);
	for (size_t i = 0; i < sizeof(variants) / sizeof(variants[0]); i++) {
		if ((only && (size_t)atoi(only) != i) ||
		    (!variants[i].src_ok && !is_root))
			continue;
		snprintf(img, sizeof(img), "%s/v%zu.img", tmp, i);
		const char *tree = variants[i].bigdir ? src : small;

		assert(sh("%s -q -F -d %s %s 128M", variants[i].mkfs, tree,
			  img) == 0);
		if (variants[i].htree)
			assert(sh("e2fsck -fyD %s >/dev/null 2>&1; test $? -le 1",
				  img) == 0);
		check_image(img, tree, variants[i].src_ok, variants[i].bigdir);
		clock_gettime(CLOCK_MONOTONIC, &t1);
		printf("%s%s: ok (%.1f s)\n", variants[i].mkfs,
		       variants[i].htree ? " + e2fsck -D" : "",
		       (double)(t1.tv_sec - t0.tv_sec) +
			       (double)(t1.tv_nsec - t0.tv_nsec) / 1e9);
		unlink(img);
	}
	if (is_root && have("losetup")) {
		test_kernel_journal();
		test_kernel_encrypt();
	}
	else
		printf("not root: kernel mount comparisons skipped\n");
	clock_gettime(CLOCK_MONOTONIC, &t1);
	printf("test-fsys-ext: %.1f s\n",
	       (double)(t1.tv_sec - t0.tv_sec) +
		       (double)(t1.tv_nsec - t0.tv_nsec) / 1e9);
	assert(sh("rm -rf %s", tmp) == 0);
	return 0;
}
