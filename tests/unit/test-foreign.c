/* test-foreign.c: images of formats imgfs does not read are refused by
 * name when probed, whether their signature is at the start (cloop's
 * shell preamble) or in the last sector (DMG's "koly" trailer); a fixed
 * VHD, which only has a footer, probes as VHD; and a probed raw image is
 * never written so that it starts or ends like one of these.
 */
#undef NDEBUG
#include "imgfmt.h"

#include <assert.h>
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

static char dir[] = "/tmp/test-foreign-XXXXXX";

/* A file of size bytes (zeroes) with head at 0 and tail at the end. */
static char *make_file(const char *name, const void *head, size_t head_len,
		       const void *tail, size_t tail_len, size_t size)
{
	char *p;
	int fd;

	assert(asprintf(&p, "%s/%s", dir, name) > 0);
	fd = open(p, O_RDWR | O_CREAT | O_TRUNC, 0644);
	assert(fd >= 0);
	assert(ftruncate(fd, (off_t)size) == 0);
	if (head_len)
		assert(pwrite(fd, head, head_len, 0) == (ssize_t)head_len);
	if (tail_len)
		assert(pwrite(fd, tail, tail_len, (off_t)(size - 512)) ==
		       (ssize_t)tail_len);
	close(fd);
	return p;
}

static void expect_refused_by_name(const char *path, const char *fmt)
{
	struct img_open_opts raw = { .format = IMG_FORMAT_RAW,
				     .read_only = true };
	char want[1024];
	struct img_err err;
	struct img *img;

	snprintf(want, sizeof(want), "%s: %s images are not supported; imgfs "
		 "reads %s (convert it with 'qemu-img convert -O qcow2', or "
		 "give --format=raw to see the file's bytes)", path, fmt,
		 img_format_names());
	assert(img_open(path, NULL, &img, &err) == -EMEDIUMTYPE);
	if (strcmp(err.msg, want) != 0) {
		fprintf(stderr, "got  %s\nwant %s\n", err.msg, want);
		abort();
	}
	/* --format=raw shows the bytes. */
	assert(img_open(path, &raw, &img, &err) == 0);
	img_close(img);
}

static void test_dmg(void)
{
	uint8_t koly[512] = { 'k', 'o', 'l', 'y', 0, 0, 0, 4, 0, 0, 2, 0 };
	char *p = make_file("disk.dmg", NULL, 0, koly, sizeof(koly), 1 << 20);

	expect_refused_by_name(p, "DMG");
	free(p);
	/* "koly" with another version or size is not a trailer. */
	koly[7] = 3;
	p = make_file("not.dmg", NULL, 0, koly, sizeof(koly), 1 << 20);
	{
		struct img *img;
		struct img_err err;
		struct img_open_opts ro = { .read_only = true };
		assert(img_open(p, &ro, &img, &err) == 0);
		img_close(img);
	}
	free(p);
}

static void test_cloop(void)
{
	static const char v2[] = "#!/bin/sh\n#V2.0 Format\nmodprobe cloop "
				 "file=$0 && mount -r -t iso9660 /dev/cloop "
				 "$1\n";
	static const char v4[] = "#!/bin/sh\n#V4.0 Format\n";
	char *p = make_file("disk.cloop", v2, sizeof(v2) - 1, NULL, 0, 65536);

	expect_refused_by_name(p, "cloop");
	free(p);
	p = make_file("disk4.cloop", v4, sizeof(v4) - 1, NULL, 0, 65536);
	expect_refused_by_name(p, "cloop");
	free(p);
}

/* qemu-img makes a fixed VHD; without --format it opens as vpc and
 * read-only, so its footer cannot be overwritten. */
static void test_fixed_vhd_probe(void)
{
	char *p, *cmd;
	struct img *img;
	struct img_err err;
	struct img_info info;
	uint8_t sec[512] = { 0 };

	if (system("qemu-img --version >/dev/null 2>&1") != 0)
		return;
	assert(asprintf(&p, "%s/fixed.vhd", dir) > 0);
	assert(asprintf(&cmd, "qemu-img create -q -f vpc -o subformat=fixed "
			"%s 4M", p) > 0);
	assert(system(cmd) == 0);
	assert(img_open(p, NULL, &img, &err) == 0);
	assert(img_get_info(img, &info) == 0);
	assert(strcmp(info.format, "vpc") == 0);
	assert(img_pwrite(img, sec, 512, img_size(img) - 512) == -EROFS);
	img_close(img);
	free(cmd);
	free(p);
}

/* A VDI whose last sector (guest data) holds a VHD footer is still a VDI:
 * a signature at the start outranks one at the end. */
static void test_head_beats_tail(void)
{
	char *cmd;
	struct img *img;
	struct img_err err;
	struct img_info info;
	struct img_open_opts ro = { .read_only = true };
	uint8_t sec[512] = { 'c', 'o', 'n', 'e', 'c', 't', 'i', 'x' };
	char *p = make_file("sec.bin", sec, sizeof(sec), NULL, 0, 512);

	free(p);
	if (system("qemu-io --version >/dev/null 2>&1") != 0)
		return;
	assert(asprintf(&cmd, "cd %s && qemu-img create -q -f vdi x.vdi 4M && "
			"qemu-io -f vdi -c 'write -s sec.bin 4193792 512' x.vdi "
			">/dev/null && tail -c 512 x.vdi | head -c 8 | "
			"grep -q conectix", dir) > 0);
	assert(system(cmd) == 0);
	free(cmd);
	assert(asprintf(&p, "%s/x.vdi", dir) > 0);
	assert(img_open(p, &ro, &img, &err) == 0);
	assert(img_get_info(img, &info) == 0);
	assert(strcmp(info.format, "vdi") == 0);
	img_close(img);
	free(p);
}

/* A probed raw image refuses writes that would make it probe as VHD (its
 * last sector), DMG (its last sector) or cloop (its first). */
static void test_raw_write_rule(void)
{
	uint8_t koly[512] = { 'k', 'o', 'l', 'y', 0, 0, 0, 4, 0, 0, 2, 0 };
	uint8_t foot[512] = { 'c', 'o', 'n', 'e', 'c', 't', 'i', 'x' };
	static const char cloop[] = "#!/bin/sh\n#V2.0 Format\n";
	char *p = make_file("plain.raw", NULL, 0, NULL, 0, 1 << 20);
	struct img *img;
	struct img_err err;

	assert(img_open(p, NULL, &img, &err) == 0);
	assert(!img_is_read_only(img));
	assert(img_pwrite(img, foot, 512, (1 << 20) - 512) == -EPERM);
	assert(img_pwrite(img, foot, 8, (1 << 20) - 512) == -EPERM);
	assert(img_pwrite(img, koly, 512, (1 << 20) - 512) == -EPERM);
	assert(img_pwrite(img, cloop, sizeof(cloop) - 1, 0) == -EPERM);
	/* the same bytes elsewhere are plain data */
	assert(img_pwrite(img, foot, 512, 4096) == 0);
	assert(img_pwrite(img, koly, 512, 8192) == 0);
	assert(img_pwrite(img, cloop, sizeof(cloop) - 1, 65536) == 0);
	img_close(img);
	free(p);
}

int main(void)
{
	assert(mkdtemp(dir));
	test_dmg();
	test_cloop();
	test_fixed_vhd_probe();
	test_head_beats_tail();
	test_raw_write_rule();
	{
		char *cmd;
		assert(asprintf(&cmd, "rm -rf %s", dir) > 0);
		assert(system(cmd) == 0);
		free(cmd);
	}
	return 0;
}
