/* test-img-raw.c: the raw driver and the generic checks of img.c. */
#undef NDEBUG
#include "imgfmt.h"

#include <assert.h>
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

static char dir[] = "/tmp/test-img-raw-XXXXXX";

static char *make_file(const char *name, const void *data, size_t len,
		       off_t truncate_to)
{
	char *path;
	int fd;

	assert(asprintf(&path, "%s/%s", dir, name) > 0);
	fd = open(path, O_CREAT | O_TRUNC | O_WRONLY, 0644);
	assert(fd >= 0);
	if (len)
		assert(write(fd, data, len) == (ssize_t)len);
	if (truncate_to)
		assert(ftruncate(fd, truncate_to) == 0);
	close(fd);
	return path;
}

/* A 1000-byte file (not a multiple of 512) reads back to the byte, and
 * requests past the end are refused before the driver sees them. */
static void test_odd_size(void)
{
	uint8_t data[1000], buf[1000];
	struct img *img;
	struct img_err err;
	char *path;

	for (size_t i = 0; i < sizeof(data); i++)
		data[i] = (uint8_t)(i * 7 + 3);
	path = make_file("odd.img", data, sizeof(data), 0);
	assert(img_open(path, NULL, &img, &err) == 0);
	assert(img_size(img) == 1000);
	assert(img_pread(img, buf, sizeof(buf), 0) == 0);
	assert(memcmp(buf, data, sizeof(buf)) == 0);
	assert(img_pread(img, buf, 1, 1000) == -EINVAL);
	assert(img_pread(img, buf, 2, 999) == -EINVAL);
	assert(img_pread(img, buf, 1, UINT64_MAX) == -EINVAL);
	assert(img_pwrite(img, buf, 2, 999) == -ENOSPC);
	img_close(img);
	free(path);
}

/* A sparse file reports its hole as a zero extent. */
static void test_sparse_block_status(void)
{
	struct img_open_opts opts = { .format = IMG_FORMAT_RAW };
	struct img_extent ext;
	struct img *img;
	struct img_err err;
	uint8_t one = 1;
	char *path;
	int fd;

	path = make_file("sparse.img", NULL, 0, 16 << 20);
	fd = open(path, O_WRONLY);
	assert(pwrite(fd, &one, 1, 8 << 20) == 1);
	close(fd);
	assert(img_open(path, &opts, &img, &err) == 0);
	assert(img_block_status(img, 0, 16 << 20, &ext) == 0);
	assert(ext.kind == IMG_EXTENT_ZERO && ext.off == 0);
	assert(ext.len > 0 && ext.len <= (8 << 20));
	assert(img_block_status(img, 8 << 20, 8 << 20, &ext) == 0);
	assert(ext.kind == IMG_EXTENT_DATA && ext.host_fd >= 0);
	assert(ext.host_off == (8 << 20));
	img_close(img);
	free(path);
}

/* A probed raw image refuses a write that makes it look like qcow2;
 * the same write with an explicit format goes through. */
static void test_probed_raw_keeps_format(void)
{
	static const uint8_t magic[8] = { 'Q', 'F', 'I', 0xfb, 0, 0, 0, 3 };
	struct img_open_opts raw = { .format = IMG_FORMAT_RAW };
	struct img *img;
	struct img_err err;
	char *path = make_file("probed.img", NULL, 0, 1 << 20);

	assert(img_open(path, NULL, &img, &err) == 0);
	assert(img_pwrite(img, magic, sizeof(magic), 0) == -EPERM);
	assert(img_pwrite(img, magic, sizeof(magic), 4096) == 0);
	/* Nor one that makes it look like a format imgfs refuses. */
	assert(img_pwrite(img, "vhdxfile", 8, 0) == -EPERM);
	assert(img_pwrite(img, "KDMV", 4, 0) == -EPERM);
	/* ... or like a format imgfs reads read-only: a VMDK descriptor,
	 * a VDI header (signature at 0x40, version 1.1 at 0x44). */
	static const char desc[] = "# Disk DescriptorFile\nversion=1\n";
	static const uint8_t vdi[8] = { 0x7f, 0x10, 0xda, 0xbe, 1, 0, 1, 0 };
	assert(img_pwrite(img, desc, sizeof(desc) - 1, 0) == -EPERM);
	assert(img_pwrite(img, vdi, sizeof(vdi), 0x40) == -EPERM);
	img_close(img);
	assert(img_open(path, &raw, &img, &err) == 0);
	assert(img_pwrite(img, magic, sizeof(magic), 0) == 0);
	img_close(img);
	free(path);
}

/* A file carrying another format's signature is refused by name when
 * probed, and opens as raw when the format is given. */
static void test_foreign_format(void)
{
	static const uint8_t vdi_sig[4] = { 0x7f, 0x10, 0xda, 0xbe };
	struct img_open_opts raw = { .format = IMG_FORMAT_RAW };
	struct img *img;
	struct img_err err;
	char *path = make_file("x.vdi", NULL, 0, 1 << 20);
	int fd = open(path, O_WRONLY);

	assert(fd >= 0);
	assert(pwrite(fd, vdi_sig, sizeof(vdi_sig), 64) == 4);
	close(fd);
	assert(img_open(path, NULL, &img, &err) == -EMEDIUMTYPE);
	assert(strstr(err.msg, "VDI images are not supported"));
	assert(img_open(path, &raw, &img, &err) == 0);
	assert(img_size(img) == 1 << 20);
	img_close(img);
	free(path);
}

/* Files that are not images get one clear message each. */
static void test_not_an_image(void)
{
	struct img_open_opts ro = { .read_only = true };
	struct img *img;
	struct img_err err;
	char *fifo;

	assert(img_open(dir, &ro, &img, &err) == -EISDIR);
	assert(strstr(err.msg, "is a directory"));
	assert(asprintf(&fifo, "%s/fifo", dir) > 0);
	assert(mkfifo(fifo, 0644) == 0);
	assert(img_open(fifo, &ro, &img, &err) == -EINVAL);
	assert(strstr(err.msg, "not a regular file"));
	assert(img_open("/nonexistent/x.img", &ro, &img, &err) == -ENOENT);
	assert(strstr(err.msg, "/nonexistent/x.img"));
	free(fifo);
}

int main(void)
{
	assert(mkdtemp(dir));
	test_odd_size();
	test_sparse_block_status();
	test_probed_raw_keeps_format();
	test_foreign_format();
	test_not_an_image();
	char cmd[128];
	snprintf(cmd, sizeof(cmd), "rm -rf %s", dir);
	assert(system(cmd) == 0);
	return 0;
}
