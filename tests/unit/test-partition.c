/* test-partition.c: part_scan on disks built by the real tools.
 *
 * Every image is made in a private temporary directory with sfdisk,
 * mkfs.ext4 and mkfs.vfat, exactly as a user would make one, and the
 * expected numbers are the ones written into the sfdisk script. The
 * filesystems are built in separate files and dd'ed into their
 * partitions, so the test also checks that libblkid probes the right
 * window. Exits 77 when one of the tools is missing.
 */
#undef NDEBUG
#include "partition.h"

#include <assert.h>
#include <errno.h>
#include <fcntl.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#define FUZZ_NO_MAIN_ENTRY
#include "../fuzz/fuzz-partition.c"

#include "regress.h"

#define MiB (1024ULL * 1024)

static char tmpdir[] = "/tmp/test-partition-XXXXXX";

static void sh(const char *fmt, ...) __attribute__((format(printf, 1, 2)));

/* Runs a shell command in tmpdir; any failure fails the test. */
static void sh(const char *fmt, ...)
{
	char cmd[4096], full[4200];
	va_list ap;
	int st;

	va_start(ap, fmt);
	vsnprintf(cmd, sizeof(cmd), fmt, ap);
	va_end(ap);
	snprintf(full, sizeof(full), "cd '%s' && { %s; }", tmpdir, cmd);
	st = system(full);
	if (st != 0) {
		fprintf(stderr, "command failed (%d): %s\n", st, cmd);
		exit(1);
	}
}

static bool have(const char *tool)
{
	char cmd[256];

	snprintf(cmd, sizeof(cmd),
		 "PATH=\"$PATH:/sbin:/usr/sbin\" command -v %s >/dev/null",
		 tool);
	return system(cmd) == 0;
}

static bool str_eq(const char *a, const char *b)
{
	if (!a || !b)
		return a == b;
	return strcmp(a, b) == 0;
}

#define ASSERT_STR(got, want)                                                  \
	do {                                                                   \
		if (!str_eq((got), (want))) {                                  \
			fprintf(stderr, "%s:%d: %s is \"%s\", want \"%s\"\n", \
				__FILE__, __LINE__, #got,                      \
				(got) ? (got) : "(null)",                      \
				(want) ? (want) : "(null)");                   \
			abort();                                               \
		}                                                              \
	} while (0)

/* Scans tmpdir/name. size 0: the file's own size. */
static struct part_table *scan_sized(const char *name, uint64_t size)
{
	struct part_table *tb = NULL;
	char path[512];
	struct stat st;
	int fd, ret;

	snprintf(path, sizeof(path), "%s/%s", tmpdir, name);
	fd = open(path, O_RDONLY | O_CLOEXEC);
	assert(fd >= 0);
	assert(fstat(fd, &st) == 0);
	ret = part_scan(fd, size ? size : (uint64_t)st.st_size, &tb);
	if (ret != 0)
		fprintf(stderr, "part_scan(%s): %s\n", name, strerror(-ret));
	assert(ret == 0);
	assert(tb);
	/* The scan must leave the descriptor open for its owner. */
	assert(fcntl(fd, F_GETFD) >= 0);
	close(fd);
	return tb;
}

static struct part_table *scan(const char *name)
{
	return scan_sized(name, 0);
}

static const struct part_entry *part(const struct part_table *tb,
				     unsigned number)
{
	size_t i;

	for (i = 0; i < tb->nb_parts; i++)
		if (tb->parts[i].number == number)
			return &tb->parts[i];
	fprintf(stderr, "no partition %u\n", number);
	abort();
}

static void check_sorted(const struct part_table *tb)
{
	size_t i;

	for (i = 1; i < tb->nb_parts; i++)
		assert(tb->parts[i - 1].number < tb->parts[i].number);
}

/* Filesystem images, built once and dd'ed into the disks. */
#define EXT4_UUID "6f1c3d2e-0a4b-4c5d-8e9f-112233445566"
#define EXT4_UUID2 "0b9e4f7a-1c2d-4e3f-a5b6-c7d8e9f00112"
static void make_fs_images(void)
{
	sh("truncate -s 8M ext4.fs && mkfs.ext4 -q -F -L rootfs -U %s ext4.fs",
	   EXT4_UUID);
	sh("truncate -s 8M ext4b.fs && mkfs.ext4 -q -F -L logical5 -U %s "
	   "ext4b.fs", EXT4_UUID2);
	sh("truncate -s 8M vfat.fs && mkfs.vfat -n FATLABEL -i 1234ABCD "
	   "vfat.fs >/dev/null");
}

static void put_fs(const char *fs, const char *disk, uint64_t start_sector)
{
	sh("dd if=%s of=%s bs=512 seek=%llu conv=notrunc status=none", fs,
	   disk, (unsigned long long)start_sector);
}

/* MBR: two primaries, an extended partition, two logicals. */
static const char mbr_script[] =
	"label: dos\n"
	"label-id: 0x12345678\n"
	"start=2048, size=16384, type=83\n"
	"start=18432, size=16384, type=c\n"
	"start=34816, size=96256, type=5\n"
	"start=36864, size=16384, type=83\n"
	"start=55296, size=16384, type=7\n";

static void make_mbr(const char *name)
{
	sh("truncate -s 64M %s && printf '%%s' '%s' | sfdisk -q %s", name,
	   mbr_script, name);
	put_fs("ext4.fs", name, 2048);
	put_fs("vfat.fs", name, 18432);
	put_fs("ext4b.fs", name, 36864);
}

static void test_mbr(void)
{
	struct part_table *tb;
	const struct part_entry *p;

	make_mbr("mbr.img");
	tb = scan("mbr.img");
	ASSERT_STR(tb->label, "dos");
	ASSERT_STR(tb->disk_id, "12345678");
	ASSERT_STR(tb->error, NULL);
	ASSERT_STR(tb->warning, NULL);
	ASSERT_STR(tb->disk_fs_type, NULL);
	assert(tb->nb_parts == 5);
	check_sorted(tb);

	p = part(tb, 1);
	assert(p->start_bytes == 1 * MiB && p->size_bytes == 8 * MiB);
	assert(!p->past_end && !p->container);
	ASSERT_STR(p->type, "0x83");
	ASSERT_STR(p->type_name, "Linux");
	ASSERT_STR(p->part_uuid, "12345678-01");
	ASSERT_STR(p->part_name, NULL);
	ASSERT_STR(p->fs_type, "ext4");
	ASSERT_STR(p->fs_label, "rootfs");
	ASSERT_STR(p->fs_uuid, EXT4_UUID);

	p = part(tb, 2);
	assert(p->start_bytes == 9 * MiB && p->size_bytes == 8 * MiB);
	ASSERT_STR(p->type, "0xc");
	ASSERT_STR(p->type_name, "W95 FAT32 (LBA)");
	ASSERT_STR(p->part_uuid, "12345678-02");
	ASSERT_STR(p->fs_type, "vfat");
	ASSERT_STR(p->fs_label, "FATLABEL");
	ASSERT_STR(p->fs_uuid, "1234-ABCD");

	/* The extended partition: listed, marked, never probed. */
	p = part(tb, 3);
	assert(p->start_bytes == 17 * MiB && p->size_bytes == 47 * MiB);
	assert(p->container && !p->past_end);
	ASSERT_STR(p->type, "0x5");
	ASSERT_STR(p->type_name, "Extended");
	ASSERT_STR(p->fs_type, NULL);

	p = part(tb, 5);
	assert(p->start_bytes == 18 * MiB && p->size_bytes == 8 * MiB);
	assert(!p->container);
	ASSERT_STR(p->type, "0x83");
	ASSERT_STR(p->part_uuid, "12345678-05");
	ASSERT_STR(p->fs_type, "ext4");
	ASSERT_STR(p->fs_label, "logical5");
	ASSERT_STR(p->fs_uuid, EXT4_UUID2);

	p = part(tb, 6);
	assert(p->start_bytes == 27 * MiB && p->size_bytes == 8 * MiB);
	ASSERT_STR(p->type, "0x7");
	ASSERT_STR(p->type_name, "HPFS/NTFS/exFAT");
	ASSERT_STR(p->part_uuid, "12345678-06");
	ASSERT_STR(p->fs_type, NULL);
	ASSERT_STR(p->fs_label, NULL);
	ASSERT_STR(p->fs_uuid, NULL);
	part_table_free(tb);
}

/* A table that says more than the disk holds, two ways: the file was
 * truncated after partitioning, and the caller's size is smaller than
 * the file (the size argument wins). */
static void test_past_end(void)
{
	struct part_table *tb;
	const struct part_entry *p;

	make_mbr("short.img");
	sh("truncate -s 12M short.img");
	tb = scan("short.img");
	ASSERT_STR(tb->label, "dos");
	ASSERT_STR(tb->error, NULL);
	/* The logical partitions' EBRs lie past the end: libfdisk says so. */
	assert(tb->warning && strstr(tb->warning, "extended partition"));
	assert(tb->nb_parts == 3);
	p = part(tb, 1);
	assert(p->size_bytes == 8 * MiB && !p->past_end);
	ASSERT_STR(p->fs_type, "ext4");
	p = part(tb, 2);
	assert(p->start_bytes == 9 * MiB && p->size_bytes == 3 * MiB);
	assert(p->past_end);
	p = part(tb, 3);
	assert(p->start_bytes == 17 * MiB && p->size_bytes == 0);
	assert(p->past_end && p->container);
	part_table_free(tb);

	tb = scan_sized("mbr.img", 20 * MiB);
	ASSERT_STR(tb->warning, NULL);
	assert(tb->nb_parts == 5);
	assert(!part(tb, 1)->past_end);
	assert(!part(tb, 2)->past_end);
	p = part(tb, 3);
	assert(p->past_end && p->size_bytes == 3 * MiB);
	p = part(tb, 5);
	assert(p->past_end && p->start_bytes == 18 * MiB);
	assert(p->size_bytes == 2 * MiB);
	/* Probed inside the clipped window only: the ext4 superblock is in
	 * its first KiBs, so it is still found. */
	ASSERT_STR(p->fs_type, "ext4");
	p = part(tb, 6);
	assert(p->past_end && p->start_bytes == 27 * MiB && p->size_bytes == 0);
	part_table_free(tb);
}

#define GPT_DISK_ID "01234567-89ab-cdef-0123-456789abcdef"
#define GPT_P1_UUID "11111111-2222-3333-4444-555555555555"
#define GPT_P2_UUID "aaaaaaaa-bbbb-cccc-dddd-eeeeeeeeeeee"
#define GPT_P4_UUID "99999999-8888-7777-6666-555555555555"
#define GUID_LINUX_FS "0fc63daf-8483-4772-8e79-3d69d8477de4"
#define GUID_ESP "c12a7328-f81f-11d2-ba4b-00a0c93ec93b"
#define GUID_SWAP "0657fd6d-a4ab-43c4-84e5-0933c84b4f4f"

/* GPT with names, and slot 3 left empty: numbering follows the slots. */
static const char gpt_script[] =
	"label: gpt\n"
	"label-id: " GPT_DISK_ID "\n"
	"disk1 : start=2048, size=16384, type=L, uuid=" GPT_P1_UUID
	", name=root\n"
	"disk2 : start=18432, size=16384, type=U, uuid=" GPT_P2_UUID
	", name=\"EFI system\"\n"
	"disk4 : start=34816, size=8192, type=S, uuid=" GPT_P4_UUID
	", name=données\n";

static void make_gpt(const char *name)
{
	sh("truncate -s 64M %s && printf '%%s' '%s' | sfdisk -q %s", name,
	   gpt_script, name);
	put_fs("ext4.fs", name, 2048);
	put_fs("vfat.fs", name, 18432);
}

static void check_gpt(struct part_table *tb)
{
	const struct part_entry *p;

	ASSERT_STR(tb->label, "gpt");
	ASSERT_STR(tb->disk_id, GPT_DISK_ID);
	ASSERT_STR(tb->error, NULL);
	assert(tb->nb_parts == 3);
	check_sorted(tb);

	p = part(tb, 1);
	assert(p->start_bytes == 1 * MiB && p->size_bytes == 8 * MiB);
	assert(!p->past_end && !p->container);
	ASSERT_STR(p->type, GUID_LINUX_FS);
	ASSERT_STR(p->type_name, "Linux filesystem");
	ASSERT_STR(p->part_uuid, GPT_P1_UUID);
	ASSERT_STR(p->part_name, "root");
	ASSERT_STR(p->fs_type, "ext4");
	ASSERT_STR(p->fs_label, "rootfs");
	ASSERT_STR(p->fs_uuid, EXT4_UUID);

	p = part(tb, 2);
	assert(p->start_bytes == 9 * MiB && p->size_bytes == 8 * MiB);
	ASSERT_STR(p->type, GUID_ESP);
	ASSERT_STR(p->type_name, "EFI System");
	ASSERT_STR(p->part_uuid, GPT_P2_UUID);
	ASSERT_STR(p->part_name, "EFI system");
	ASSERT_STR(p->fs_type, "vfat");
	ASSERT_STR(p->fs_label, "FATLABEL");
	ASSERT_STR(p->fs_uuid, "1234-ABCD");

	p = part(tb, 4);
	assert(p->start_bytes == 17 * MiB && p->size_bytes == 4 * MiB);
	ASSERT_STR(p->type, GUID_SWAP);
	ASSERT_STR(p->type_name, "Linux swap");
	ASSERT_STR(p->part_name, "données");
	ASSERT_STR(p->fs_type, NULL);
}

/* The table survives encoding for the trip from the scanning child
 * (fuse/scan.c), and every cut or padded encoding is refused. */
static void test_wire(const struct part_table *tb)
{
	struct part_table *back = NULL;
	uint8_t *buf, *longer;
	size_t len;

	assert(part_table_encode(tb, &buf, &len) == 0);
	assert(part_table_decode(buf, len, &back) == 0);
	check_gpt(back);
	assert(back->nb_parts == tb->nb_parts);
	for (size_t i = 0; i < tb->nb_parts; i++) {
		assert(back->parts[i].number == tb->parts[i].number);
		assert(back->parts[i].start_bytes == tb->parts[i].start_bytes);
		assert(back->parts[i].size_bytes == tb->parts[i].size_bytes);
		ASSERT_STR(back->parts[i].part_name, tb->parts[i].part_name);
		ASSERT_STR(back->parts[i].fs_uuid, tb->parts[i].fs_uuid);
	}
	part_table_free(back);
	for (size_t cut = 0; cut < len; cut++) {
		back = NULL;
		assert(part_table_decode(buf, cut, &back) == -EPROTO);
		assert(back == NULL);
	}
	longer = malloc(len + 1);
	assert(longer);
	memcpy(longer, buf, len);
	longer[len] = 0;
	assert(part_table_decode(longer, len + 1, &back) == -EPROTO);
	free(longer);
	free(buf);
}

static void test_gpt(void)
{
	struct part_table *tb;

	make_gpt("gpt.img");
	tb = scan("gpt.img");
	check_gpt(tb);
	ASSERT_STR(tb->warning, NULL);
	ASSERT_STR(tb->disk_fs_type, NULL);
	test_wire(tb);
	part_table_free(tb);
}

static void patch(const char *name, uint64_t off, const void *buf,
		  size_t len)
{
	char path[512];
	int fd;

	snprintf(path, sizeof(path), "%s/%s", tmpdir, name);
	fd = open(path, O_WRONLY | O_CLOEXEC);
	assert(fd >= 0);
	assert(pwrite(fd, buf, len, (off_t)off) == (ssize_t)len);
	close(fd);
}

static void put_mbr_entry(uint8_t *e, uint8_t type, uint32_t start,
			  uint32_t count)
{
	memset(e, 0, 16);
	e[1] = e[5] = 0xfe; /* CHS "use LBA" markers, as gdisk writes */
	e[2] = e[6] = 0xff;
	e[3] = e[7] = 0xff;
	e[4] = type;
	for (int i = 0; i < 4; i++) {
		e[8 + i] = (uint8_t)(start >> (8 * i));
		e[12 + i] = (uint8_t)(count >> (8 * i));
	}
}

/* A hybrid MBR (as gdisk's "h" command makes): a 0xEE entry guards the
 * GPT, and the FAT partition is mirrored as MBR entry 2. GPT must win. */
static void test_hybrid(void)
{
	uint8_t entries[64];
	struct part_table *tb;

	make_gpt("hybrid.img");
	put_mbr_entry(entries, 0xee, 1, 2047);
	put_mbr_entry(entries + 16, 0x0c, 18432, 16384);
	memset(entries + 32, 0, 32);
	patch("hybrid.img", 446, entries, sizeof(entries));
	tb = scan("hybrid.img");
	check_gpt(tb);
	part_table_free(tb);
}

static void test_corrupt_gpt(void)
{
	struct part_table *tb;
	const char junk[4] = "XXXX";

	/* Primary header CRC broken: the backup is used, with a warning. */
	make_gpt("gpt-bad1.img");
	patch("gpt-bad1.img", 512 + 16, junk, sizeof(junk));
	tb = scan("gpt-bad1.img");
	check_gpt(tb);
	assert(tb->warning && strstr(tb->warning, "primary GPT"));
	part_table_free(tb);

	/* Both headers broken: no partitions, and a reason. */
	sh("cp gpt-bad1.img gpt-bad2.img");
	patch("gpt-bad2.img", 64 * MiB - 512 + 16, junk, sizeof(junk));
	tb = scan("gpt-bad2.img");
	ASSERT_STR(tb->label, "gpt");
	assert(tb->error && strstr(tb->error, "no valid GPT header"));
	assert(tb->nb_parts == 0 && !tb->parts);
	part_table_free(tb);

	/* Truncated: the backup is gone and the primary outgrows the disk. */
	make_gpt("gpt-short.img");
	sh("truncate -s 12M gpt-short.img");
	tb = scan("gpt-short.img");
	ASSERT_STR(tb->label, "gpt");
	assert(tb->error && strstr(tb->error, "no valid GPT header"));
	assert(tb->nb_parts == 0);
	part_table_free(tb);
}

/* Sets a u32 field of the GPT header at byte hoff and fixes its CRC, as
 * a hostile image would. */
static void patch_gpt_u32(const char *name, uint64_t hoff, unsigned field,
			  uint32_t v)
{
	uint8_t h[92];
	char path[512];
	int fd;

	snprintf(path, sizeof(path), "%s/%s", tmpdir, name);
	fd = open(path, O_RDWR | O_CLOEXEC);
	assert(fd >= 0);
	assert(pread(fd, h, sizeof(h), (off_t)hoff) == sizeof(h));
	wr32(h + field, v);
	wr32(h + 16, 0);
	wr32(h + 16, fuzz_crc32(h, sizeof(h)));
	assert(pwrite(fd, h, sizeof(h), (off_t)hoff) == sizeof(h));
	close(fd);
}

/* GPT headers with a valid CRC and an entry array libfdisk would
 * allocate blindly (found by fuzz-partition): refused with the numbers,
 * whichever copy claims it. */
static void test_hostile_gpt(void)
{
	struct part_table *tb;

	make_gpt("gpt-huge.img");
	patch_gpt_u32("gpt-huge.img", 512, 80, 0xffffffffu);
	tb = scan("gpt-huge.img");
	ASSERT_STR(tb->label, "gpt");
	assert(tb->error && strstr(tb->error, "GPT header at LBA 1 "
			   "(512-byte sectors) claims 4294967295 entries of 128 bytes"));
	assert(tb->nb_parts == 0 && !tb->disk_fs_type);
	part_table_free(tb);

	/* Entries smaller than libfdisk's 128-byte struct: it would index
	 * past the array. */
	make_gpt("gpt-small-entries.img");
	patch_gpt_u32("gpt-small-entries.img", 64 * MiB - 512, 84, 64);
	tb = scan("gpt-small-entries.img");
	ASSERT_STR(tb->label, "gpt");
	assert(tb->error && strstr(tb->error, "claims 128 entries of 64 bytes"));
	part_table_free(tb);

	/* The same geometry with a stale CRC is just a corrupt header: the
	 * backup is used, as libfdisk does. */
	make_gpt("gpt-stale.img");
	patch("gpt-stale.img", 512 + 80, "\xff\xff\xff\xff", 4);
	tb = scan("gpt-stale.img");
	check_gpt(tb);
	assert(tb->warning && strstr(tb->warning, "primary GPT"));
	part_table_free(tb);
}

/* Replays one reproducer of fuzz-partition through the fuzz target in a
 * child under alarm() and, outside ASan, an address-space limit of 512
 * MiB more than it has: a scan that allocates what a hostile header
 * claims fails here. */
static void replay_partition(const char *path)
{
	int status;
	pid_t pid;

	fflush(stdout);
	pid = fork();
	assert(pid >= 0);
	if (pid == 0) {
		static uint8_t buf[1 << 20];
		size_t n = regress_read(path, buf, sizeof(buf));

		if (!UNDER_ASAN) {
			struct rlimit rl;
			FILE *f = fopen("/proc/self/statm", "r");
			unsigned long pages = 0;

			assert(f && fscanf(f, "%lu", &pages) == 1);
			fclose(f);
			rl.rlim_cur = rl.rlim_max = pages * 4096 + (512ul << 20);
			assert(setrlimit(RLIMIT_AS, &rl) == 0);
		}
		/* Guards a hang: generous for a loaded machine. */
		alarm(UNDER_ASAN ? 120 : 60);
		fuzz_partition_one(buf, n);
		_exit(0);
	}
	assert(waitpid(pid, &status, 0) == pid);
	if (!WIFEXITED(status) || WEXITSTATUS(status) != 0) {
		fprintf(stderr, "fuzz reproducer %s failed (status 0x%x)\n",
			path, status);
		abort();
	}
}

/* No table at all: a blank disk, a tiny or empty file, and whole-disk
 * filesystems (a FAT boot sector looks like an MBR but is not one). */
static void test_no_table(void)
{
	struct part_table *tb;

	sh("truncate -s 16M blank.img && : > zero.img && "
	   "head -c 300 /dev/urandom > tiny.img");
	tb = scan("blank.img");
	ASSERT_STR(tb->label, NULL);
	ASSERT_STR(tb->error, NULL);
	ASSERT_STR(tb->disk_fs_type, NULL);
	assert(tb->nb_parts == 0 && !tb->parts);
	part_table_free(tb);

	tb = scan("zero.img");
	ASSERT_STR(tb->label, NULL);
	assert(tb->nb_parts == 0);
	part_table_free(tb);

	tb = scan("tiny.img");
	ASSERT_STR(tb->label, NULL);
	assert(tb->nb_parts == 0);
	part_table_free(tb);

	tb = scan("ext4.fs");
	ASSERT_STR(tb->label, NULL);
	ASSERT_STR(tb->error, NULL);
	assert(tb->nb_parts == 0);
	ASSERT_STR(tb->disk_fs_type, "ext4");
	ASSERT_STR(tb->disk_fs_label, "rootfs");
	ASSERT_STR(tb->disk_fs_uuid, EXT4_UUID);
	part_table_free(tb);

	tb = scan("vfat.fs");
	ASSERT_STR(tb->label, NULL);
	ASSERT_STR(tb->error, NULL);
	assert(tb->nb_parts == 0);
	ASSERT_STR(tb->disk_fs_type, "vfat");
	ASSERT_STR(tb->disk_fs_label, "FATLABEL");
	ASSERT_STR(tb->disk_fs_uuid, "1234-ABCD");
	part_table_free(tb);
}

/* A GPT made for 4096-byte logical sectors (a 4Kn disk): its header is at
 * byte 4096, and all LBAs count 4 KiB. sfdisk 2.38 has no --sector-size,
 * so fdisk -b builds it. */
static void test_gpt_4k(void)
{
	struct part_table *tb;
	const struct part_entry *p;

	if (!have("fdisk")) {
		printf("SKIP 4K GPT: fdisk not installed\n");
		return;
	}
	sh("truncate -s 64M g4k.img && printf 'g\\nn\\n\\n256\\n+8M\\nw\\n' | "
	   "fdisk -b 4096 g4k.img >/dev/null");
	put_fs("ext4.fs", "g4k.img", 2048);
	tb = scan("g4k.img");
	ASSERT_STR(tb->label, "gpt");
	ASSERT_STR(tb->error, NULL);
	assert(tb->nb_parts == 1);
	p = part(tb, 1);
	assert(p->start_bytes == 1 * MiB && p->size_bytes == 8 * MiB);
	assert(!p->past_end);
	ASSERT_STR(p->type, GUID_LINUX_FS);
	ASSERT_STR(p->fs_type, "ext4");
	ASSERT_STR(p->fs_uuid, EXT4_UUID);
	part_table_free(tb);
}

/* More partitions than imgfs shows: numbers above 256 are dropped and
 * the warning says how many. */
static void test_many(void)
{
	struct part_table *tb;

	sh("{ printf 'label: gpt\\ntable-length: 300\\nfirst-lba: 2048\\n'; "
	   "i=0; while [ $i -lt 300 ]; do "
	   "printf 'start=%%d, size=8\\n' $((2048 + i * 8)); i=$((i+1)); "
	   "done; } > many.sfdisk && truncate -s 8M many.img && "
	   "sfdisk -q many.img < many.sfdisk");
	tb = scan("many.img");
	ASSERT_STR(tb->label, "gpt");
	ASSERT_STR(tb->error, NULL);
	assert(tb->nb_parts == 256);
	check_sorted(tb);
	assert(tb->parts[0].number == 1 && tb->parts[255].number == 256);
	assert(tb->parts[255].start_bytes == (2048 + 255 * 8) * 512ULL);
	assert(tb->parts[255].size_bytes == 8 * 512);
	assert(tb->warning && strstr(tb->warning, "44 partitions ignored"));
	part_table_free(tb);
}

/* An Atari (AHDI) root sector, which libfdisk does not read and the kernel
 * and libblkid do: hd_siz at 0x1C2, then 4 entries of 12 bytes at 0x1C6
 * (flag, 3-char id, big-endian start and size in sectors). partx on the
 * same bytes lists 1: 64+8192 and 2: 8256+16384. */
static void test_atari(void)
{
	static const struct { const char *id; uint32_t start, count; } e[] = {
		{ "BGM", 64, 8192 }, { "LNX", 8256, 16384 },
	};
	uint8_t root[64] = { 0 };
	struct part_table *tb;
	const struct part_entry *p;

	sh("truncate -s 16M atari.img");
	put_be32(root, 32768); /* hd_siz at 0x1C2 */
	for (size_t i = 0; i < 2; i++) {
		uint8_t *x = root + 4 + 12 * i;

		x[0] = 1;
		memcpy(x + 1, e[i].id, 3);
		put_be32(x + 4, e[i].start);
		put_be32(x + 8, e[i].count);
	}
	patch("atari.img", 0x1C2, root, 4 + 12 * 4);
	put_fs("ext4.fs", "atari.img", 8256);
	tb = scan("atari.img");
	ASSERT_STR(tb->label, "atari");
	ASSERT_STR(tb->error, NULL);
	ASSERT_STR(tb->warning, NULL);
	assert(tb->nb_parts == 2);
	p = part(tb, 1);
	assert(p->start_bytes == 64 * 512 && p->size_bytes == 8192 * 512);
	ASSERT_STR(p->type, "BGM");
	ASSERT_STR(p->fs_type, NULL);
	p = part(tb, 2);
	assert(p->start_bytes == 8256 * 512ULL);
	assert(p->size_bytes == 16384 * 512ULL && !p->past_end);
	ASSERT_STR(p->type, "LNX");
	ASSERT_STR(p->fs_type, "ext4");
	ASSERT_STR(p->fs_uuid, EXT4_UUID);
	part_table_free(tb);

	/* Without the exists flag nothing is an Atari partition. */
	root[4] = root[16] = 0;
	patch("atari.img", 0x1C2, root, 4 + 12 * 4);
	tb = scan("atari.img");
	ASSERT_STR(tb->label, NULL);
	assert(tb->nb_parts == 0);
	part_table_free(tb);
}

/* A BSD disklabel at sector 1 of the MBR partition starting at pstart:
 * magic at 0 and 132, d_npartitions at 138, 16-byte slices from 148
 * (size, absolute offset, fsize, fstype, frag, cpg), and d_checksum at
 * 136, the XOR of the label's 16-bit words with it zeroed. */
static void put_bsd_label(const char *disk, uint32_t pstart,
			  const uint32_t (*slices)[2], uint16_t nb)
{
	uint8_t lab[148 + 16 * 8] = { 0 };
	size_t len = 148 + 16 * (size_t)nb;
	uint16_t sum = 0;

	assert(nb <= 8);
	put_le32(lab, 0x82564557u);
	put_le32(lab + 132, 0x82564557u);
	put_le16(lab + 138, nb);
	for (uint16_t i = 0; i < nb; i++) {
		uint8_t *s = lab + 148 + 16 * i;

		put_le32(s, slices[i][1]);
		put_le32(s + 4, slices[i][0]);
		s[12] = 7; /* FS_BSDFFS */
	}
	for (size_t i = 0; i < len; i += 2)
		sum ^= get_le16(lab + i);
	put_le16(lab + 136, sum);
	patch(disk, (pstart + 1ULL) * 512, lab, len);
}

/* BSD slices nested in an MBR partition of type 0xa5: the kernel and
 * partx number them after the MBR's own (here p5, p6, as partx says). */
static void test_bsd_nested(void)
{
	/* { offset, size } in absolute sectors */
	static const uint32_t slices[][2] = { { 8192, 4096 },
					       { 12288, 16384 } };
	struct part_table *tb;
	const struct part_entry *p;

	sh("truncate -s 32M bsd.img && printf 'label: dos\\n"
	   "start=2048, size=2048, type=83\\nstart=8192, size=24576, "
	   "type=a5\\n' | sfdisk -q bsd.img");
	put_bsd_label("bsd.img", 8192, slices, 2);
	put_fs("vfat.fs", "bsd.img", 12288);
	tb = scan("bsd.img");
	ASSERT_STR(tb->label, "dos");
	ASSERT_STR(tb->error, NULL);
	ASSERT_STR(tb->warning, NULL);
	assert(tb->nb_parts == 4);
	check_sorted(tb);
	p = part(tb, 2);
	assert(p->start_bytes == 8192 * 512ULL && p->size_bytes == 24576 * 512ULL);
	ASSERT_STR(p->type, "0xa5");
	p = part(tb, 5);
	assert(p->start_bytes == 8192 * 512ULL && p->size_bytes == 4096 * 512ULL);
	ASSERT_STR(p->type, "0x7");
	ASSERT_STR(p->fs_type, NULL);
	p = part(tb, 6);
	assert(p->start_bytes == 12288 * 512ULL);
	assert(p->size_bytes == 16384 * 512ULL && !p->past_end);
	ASSERT_STR(p->fs_type, "vfat");
	ASSERT_STR(p->fs_label, "FATLABEL");
	part_table_free(tb);

	/* No magic, no label (partx agrees; libblkid does not check
	 * d_checksum, so a bad one would not do). */
	patch("bsd.img", 8193 * 512ULL, "\0\0", 2);
	tb = scan("bsd.img");
	assert(tb->nb_parts == 2);
	assert(tb->parts[0].number == 1 && tb->parts[1].number == 2);
	part_table_free(tb);
}

static void test_bad_args(void)
{
	struct part_table *tb = (struct part_table *)1;

	assert(part_scan(-1, 0, &tb) == -EBADF);
	assert(tb == NULL);
	part_table_free(NULL);
}

int main(void)
{
	static const char *const tools[] = { "sfdisk", "mkfs.ext4",
					     "mkfs.vfat", "truncate", "dd" };

	for (size_t i = 0; i < sizeof(tools) / sizeof(tools[0]); i++) {
		if (!have(tools[i])) {
			printf("SKIP: %s not installed\n", tools[i]);
			return 77;
		}
	}
	/* mkfs and sfdisk live in /usr/sbin, not always in a user's PATH. */
	setenv("PATH", "/usr/local/sbin:/usr/sbin:/sbin:/usr/local/bin:"
		       "/usr/bin:/bin", 1);
	assert(mkdtemp(tmpdir));

	test_bad_args();
	make_fs_images();
	test_no_table();
	test_mbr();
	test_past_end();
	test_gpt();
	test_hybrid();
	test_corrupt_gpt();
	test_gpt_4k();
	test_many();
	test_hostile_gpt();
	test_atari();
	test_bsd_nested();

	sh("cd / && rm -rf '%s'", tmpdir);
	printf("ok; %zu fuzz reproducers replayed\n", for_each_regress_file("fuzz-partition", replay_partition));
	return 0;
}
