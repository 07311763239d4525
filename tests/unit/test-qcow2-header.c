/* test-qcow2-header.c: header fields rewritten by name survive a failed
 * write.
 *
 * Every header rewrite (the dirty bit of lazy refcounts, the autoclear
 * bits, the snapshot table's count and place, the corrupt bit) goes
 * through qcow2_header_write_locked. Here the image file refuses writes
 * into its header (pwrite fails with EIO, as a failing disk would; the
 * rest of the file stays writable), and each case checks that the
 * decoded copy in struct qcow2_state is unchanged, the header bytes on
 * disk are unchanged, and qemu-img check finds no corruption. Skips (77)
 * without qemu-img.
 */
#undef NDEBUG
#include "qcow2-int.h"

#include <assert.h>
#include <errno.h>
#include <fcntl.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

static char dir[] = "/tmp/test-qcow2-header-XXXXXX";

#include "workdir.h"

/* The fault: while armed, a pwrite to fault_fd that touches the header
 * (the first sizeof(struct qcow2_header_disk) bytes) fails with EIO and
 * writes nothing. This definition takes the place of libc's for the
 * whole program (imgfmt is linked in statically); every other write
 * goes to the kernel unchanged. */
static int fault_fd = -1;
static unsigned nb_faults;

ssize_t pwrite(int fd, const void *buf, size_t len, off_t off)
{
	if (fd == fault_fd && off < (off_t)sizeof(struct qcow2_header_disk)) {
		nb_faults++;
		errno = EIO;
		return -1;
	}
	return syscall(SYS_pwrite64, fd, buf, len, off);
}

static struct img *open_rw(const char *name)
{
	struct img_open_opts o = { .format = IMG_FORMAT_QCOW2 };
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

/* The image's header bytes as they are on disk. */
static void read_header(const char *name, uint8_t hdr[112])
{
	size_t len;
	uint8_t *all = slurp(name, &len);

	assert(len >= 112);
	memcpy(hdr, all, 112);
	free(all);
}

/* The decoded fields the header helper may change. */
struct hdr_copy {
	uint64_t incompat, compat, autoclear;
	uint32_t nb_snapshots;
	uint64_t snapshots_offset;
	uint64_t refcount_table_offset;
	uint32_t refcount_table_clusters;
};

static struct hdr_copy copy_of(const struct qcow2_state *s)
{
	return (struct hdr_copy){
		.incompat = s->incompat,
		.compat = s->compat,
		.autoclear = s->autoclear,
		.nb_snapshots = s->nb_snapshots,
		.snapshots_offset = s->snapshots_offset,
		.refcount_table_offset = s->refcount_table_offset,
		.refcount_table_clusters = s->refcount_table_clusters,
	};
}

static void assert_copy_is(const struct qcow2_state *s, struct hdr_copy c)
{
	assert(s->incompat == c.incompat && s->compat == c.compat &&
	       s->autoclear == c.autoclear);
	assert(s->nb_snapshots == c.nb_snapshots &&
	       s->snapshots_offset == c.snapshots_offset);
	assert(s->refcount_table_offset == c.refcount_table_offset &&
	       s->refcount_table_clusters == c.refcount_table_clusters);
}

static void arm(struct img *img)
{
	fault_fd = img->fd;
	nb_faults = 0;
}

static void disarm(void)
{
	fault_fd = -1;
}

/* The first write sets the dirty bit (lazy refcounts) and clears the
 * bitmaps' autoclear bit in one header write; when that write fails,
 * the guest write fails, nothing changed, and the next write tries
 * again. */
static void test_begin_write(void)
{
	uint8_t before[112], after[112], buf[4096];
	struct img *img;
	struct qcow2_state *s;
	struct hdr_copy c;

	assert(sh_status("qemu-img create -q -f qcow2 -o lazy_refcounts=on "
			 "bw.qcow2 4M && qemu-img bitmap --add bw.qcow2 "
			 "b0") == 0);
	read_header("bw.qcow2", before);
	img = open_rw("bw.qcow2");
	s = qcow2_state(img);
	c = copy_of(s);
	assert(c.autoclear & QCOW2_AUTOCLEAR_BITMAPS);
	assert(!(c.incompat & QCOW2_INCOMPAT_DIRTY));
	memset(buf, 0x5a, sizeof(buf));

	arm(img);
	assert(img_pwrite(img, buf, sizeof(buf), 0) == -EIO);
	assert(nb_faults == 1);
	assert_copy_is(s, c);
	assert(!s->writing_started);
	read_header("bw.qcow2", after);
	assert(memcmp(before, after, sizeof(before)) == 0);

	disarm();
	assert(img_pwrite(img, buf, sizeof(buf), 0) == 0);
	assert(s->incompat == (c.incompat | QCOW2_INCOMPAT_DIRTY));
	assert(s->autoclear == 0);
	read_header("bw.qcow2", after);
	assert(get_be64(after + 72) & QCOW2_INCOMPAT_DIRTY);
	assert(get_be64(after + 88) == 0);
	img_close(img);
	read_header("bw.qcow2", after);
	assert(!(get_be64(after + 72) & QCOW2_INCOMPAT_DIRTY));
	/* With the autoclear bit gone QEMU ignores the bitmap directory,
	 * so it counts the bitmap's two clusters as leaks (status 3); no
	 * other finding. */
	assert(sh_status("qemu-img check -q bw.qcow2") == 3);
	assert(sh_status("qemu-img check -q -r leaks bw.qcow2") == 0);
	assert(sh_status("qemu-io -c 'read -P 0x5a 0 4096' bw.qcow2") == 0);
}

/* At close the dirty bit is cleared; a failed clear keeps the bit, in
 * memory and on disk (the refcounts are right, so a dirty image is only
 * checked once more by the next opener), and a retry clears it. */
static void test_close_clear(void)
{
	uint8_t hdr[112], buf[4096];
	struct img *img;
	struct qcow2_state *s;
	struct hdr_copy c;

	assert(sh_status("qemu-img create -q -f qcow2 -o lazy_refcounts=on "
			 "cc.qcow2 4M") == 0);
	img = open_rw("cc.qcow2");
	s = qcow2_state(img);
	memset(buf, 0xa5, sizeof(buf));
	assert(img_pwrite(img, buf, sizeof(buf), 8192) == 0);
	c = copy_of(s);
	assert(c.incompat & QCOW2_INCOMPAT_DIRTY);

	arm(img);
	assert(qcow2_close_write(img) == -EIO);
	assert(nb_faults == 1);
	assert_copy_is(s, c);
	read_header("cc.qcow2", hdr);
	assert(get_be64(hdr + 72) & QCOW2_INCOMPAT_DIRTY);

	disarm();
	img_close(img);
	read_header("cc.qcow2", hdr);
	assert(!(get_be64(hdr + 72) & QCOW2_INCOMPAT_DIRTY));
	assert(sh_status("qemu-img check -q cc.qcow2") == 0);
	assert(sh_status("qemu-io -c 'read -P 0xa5 8192 4096' cc.qcow2") ==
	       0);
}

/* A snapshot whose header switch fails is not there: not in memory, not
 * on disk. The refcounts it raised stay raised, which qemu-img check
 * calls leaks, not corruption; an I/O error is not a sign of damaged
 * metadata, so the handle stays writable and a retry succeeds. */
static void test_snapshot_create(void)
{
	uint8_t before[112], after[112], buf[65536];
	struct img_err err = { 0 };
	struct img_snapshot *list = NULL;
	size_t nb = 1;
	struct img *img;
	struct qcow2_state *s;
	struct hdr_copy c;

	assert(sh_status("qemu-img create -q -f qcow2 sc.qcow2 4M && "
			 "qemu-io -c 'write -P 0x11 0 1M' sc.qcow2") == 0);
	read_header("sc.qcow2", before);
	img = open_rw("sc.qcow2");
	s = qcow2_state(img);
	c = copy_of(s);

	arm(img);
	assert(img_snapshot_create(img, "s1", &err) == -EIO);
	assert(strstr(err.msg, "snapshot 's1' failed halfway"));
	assert(nb_faults == 1);
	assert_copy_is(s, c);
	assert(img_corrupt_reason(img) == NULL);
	assert(img_snapshot_list(img, &list, &nb) == 0 && nb == 0);
	img_snapshot_list_free(list, nb);
	assert(img_pread(img, buf, sizeof(buf), 0) == 0 && buf[0] == 0x11);
	read_header("sc.qcow2", after);
	assert(memcmp(before, after, sizeof(before)) == 0);

	disarm();
	assert(img_snapshot_create(img, "s1", &err) == 0);
	assert(s->nb_snapshots == 1);
	memset(buf, 0x44, sizeof(buf));
	assert(img_pwrite(img, buf, sizeof(buf), 0) == 0);
	img_close(img);
	/* 3: leaked clusters (the first attempt's raises), nothing worse. */
	assert(sh_status("qemu-img check -q sc.qcow2") == 3);
	assert(sh_status("qemu-img check -q -r leaks sc.qcow2") == 0);
	assert(sh_status("qemu-img snapshot -l sc.qcow2 | grep -q s1") == 0);
	assert(sh_status("qemu-io -c 'read -P 0x44 0 64k' "
			 "-c 'read -P 0x11 64k 960k' sc.qcow2") == 0);
	assert(sh_status("qemu-img convert -O raw -l snapshot.name=s1 "
			 "sc.qcow2 s1.raw && qemu-io -f raw -c "
			 "'read -P 0x11 0 1M' s1.raw") == 0);
}

/* A delete whose header switch fails keeps the snapshot, in memory and
 * on disk, and the same handle deletes it once the disk works again. */
static void test_snapshot_delete(void)
{
	uint8_t before[112], after[112];
	struct img_err err = { 0 };
	struct img_snapshot *list = NULL;
	size_t nb = 0;
	struct img *img;
	struct qcow2_state *s;
	struct hdr_copy c;

	assert(sh_status("qemu-img create -q -f qcow2 sd.qcow2 4M && "
			 "qemu-io -c 'write -P 0x22 0 1M' sd.qcow2 && "
			 "qemu-img snapshot -c s1 sd.qcow2 && "
			 "qemu-io -c 'write -P 0x33 0 64k' sd.qcow2") == 0);
	read_header("sd.qcow2", before);
	img = open_rw("sd.qcow2");
	s = qcow2_state(img);
	c = copy_of(s);
	assert(c.nb_snapshots == 1);

	arm(img);
	assert(img_snapshot_delete(img, "1", &err) == -EIO);
	assert(strstr(err.msg, "cannot delete snapshot"));
	assert(nb_faults == 1);
	assert_copy_is(s, c);
	assert(img_snapshot_list(img, &list, &nb) == 0 && nb == 1);
	assert(strcmp(list[0].name, "s1") == 0);
	img_snapshot_list_free(list, nb);
	read_header("sd.qcow2", after);
	assert(memcmp(before, after, sizeof(before)) == 0);

	disarm();
	assert(img_snapshot_delete(img, "1", &err) == 0);
	assert(s->nb_snapshots == 0);
	img_close(img);
	/* The table left empty needs no clusters, so the failed attempt
	 * allocated none: the image is clean. */
	assert(sh_status("qemu-img check -q sd.qcow2") == 0);
	assert(sh_status("qemu-img snapshot -l sd.qcow2 | grep -q s1") == 1);
	assert(sh_status("qemu-io -c 'read -P 0x33 0 64k' sd.qcow2") == 0);
}

/* Marking the image corrupt turns the handle read-only even when the
 * corrupt bit cannot be written; the decoded copy then says what the
 * file says (not corrupt), and the file is unchanged. */
static void test_corrupt_bit(void)
{
	uint8_t before[112], after[112], buf[4096] = { 0 };
	struct img *img;
	struct qcow2_state *s;
	struct hdr_copy c;

	assert(sh_status("qemu-img create -q -f qcow2 cb.qcow2 4M") == 0);
	read_header("cb.qcow2", before);
	img = open_rw("cb.qcow2");
	s = qcow2_state(img);
	c = copy_of(s);

	arm(img);
	pthread_mutex_lock(s->lock);
	assert(qcow2_signal_corruption(img, "test") == -EIO);
	pthread_mutex_unlock(s->lock);
	assert(nb_faults == 1);
	assert_copy_is(s, c);
	assert(strcmp(img_corrupt_reason(img), "test") == 0);
	assert(img_pwrite(img, buf, sizeof(buf), 0) == -EROFS);
	read_header("cb.qcow2", after);
	assert(memcmp(before, after, sizeof(before)) == 0);
	disarm();
	img_close(img);
	assert(sh_status("qemu-img check -q cb.qcow2") == 0);
}

int main(void)
{
	if (system("qemu-img --version >/dev/null 2>&1") != 0)
		return 77;
	assert(mkdtemp(dir));
	test_begin_write();
	test_close_clear();
	test_snapshot_create();
	test_snapshot_delete();
	test_corrupt_bit();
	assert(sh_status("rm -rf '%s'", dir) == 0);
	printf("ok\n");
	return 0;
}
