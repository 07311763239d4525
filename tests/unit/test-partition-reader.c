/* test-partition-reader.c: part_scan_reader gives the table part_scan
 * gives on the real file.
 *
 * Each disk is built by the real tools (sfdisk, fdisk, mkfs) or, where no
 * tool writes the layout (a BSD label on the whole disk, a GPT whose
 * entry array lies far from its header, an EBR far before its logical
 * partition), by a few lines of python writing the on-disk structures.
 * The oracle is part_scan on a descriptor of the file: both tables are
 * encoded (wire.c) and compared byte for byte, so every field counts.
 * The reader is scanned with and without its hole callback, and counts
 * the bytes it was asked for (the scan must not read the whole disk).
 * Exits 77 when a tool is missing.
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
#include <sys/stat.h>
#include <unistd.h>

#define MiB (1024ULL * 1024)

static char tmpdir[] = "/tmp/test-partition-reader-XXXXXX";

static void sh(const char *fmt, ...) __attribute__((format(printf, 1, 2)));

static void sh(const char *fmt, ...)
{
	char cmd[8192], full[8400];
	va_list ap;
	int st;

	va_start(ap, fmt);
	vsnprintf(cmd, sizeof(cmd), fmt, ap);
	va_end(ap);
	snprintf(full, sizeof(full), "cd '%s' && { %s\n}", tmpdir, cmd);
	st = system(full);
	if (st != 0) {
		fprintf(stderr, "command failed (%d): %s\n", st, cmd);
		exit(1);
	}
}

static bool have(const char *tool)
{
	char cmd[256];

	snprintf(cmd, sizeof(cmd), "command -v %s >/dev/null", tool);
	return system(cmd) == 0;
}

struct file_reader {
	int fd;
	uint64_t bytes_read;
};

static int fr_read(void *ctx, void *buf, size_t len, uint64_t off)
{
	struct file_reader *fr = ctx;
	ssize_t n = pread(fr->fd, buf, len, (off_t)off);

	if (n < 0)
		return -errno;
	/* Past the end of a short file: zeroes, as a raw image reads. */
	memset((char *)buf + n, 0, len - (size_t)n);
	fr->bytes_read += len;
	return 0;
}

static int fr_hole(void *ctx, uint64_t off, uint64_t len, uint64_t *run_r)
{
	struct file_reader *fr = ctx;
	off_t data = lseek(fr->fd, (off_t)off, SEEK_DATA);
	off_t hole;

	if (data < 0 || (uint64_t)data >= off + len) {
		*run_r = len;
		return 1;
	}
	if ((uint64_t)data > off) {
		*run_r = (uint64_t)data - off;
		return 1;
	}
	hole = lseek(fr->fd, (off_t)off, SEEK_HOLE);
	*run_r = hole < 0 || (uint64_t)hole >= off + len ? len :
							   (uint64_t)hole - off;
	return 0;
}

/* Scans name both ways and asserts the encodings are equal. Returns the
 * table (from the reader) for further checks. */
static struct part_table *check(const char *name)
{
	char path[512];
	struct part_table *want = NULL, *got = NULL, *got2 = NULL;
	uint8_t *wb, *gb, *gb2;
	size_t wl, gl, gl2;
	struct stat st;
	int fd;

	snprintf(path, sizeof(path), "%s/%s", tmpdir, name);
	fd = open(path, O_RDONLY);
	assert(fd >= 0);
	assert(fstat(fd, &st) == 0);
	assert(part_scan(fd, (uint64_t)st.st_size, &want) == 0);

	struct file_reader fr = { fd, 0 };
	struct part_reader rd = { &fr, fr_read, fr_hole, NULL };
	assert(part_scan_reader(&rd, (uint64_t)st.st_size, &got) == 0);
	struct part_reader rd2 = { &fr, fr_read, NULL, NULL };
	uint64_t with_holes = fr.bytes_read;
	assert(part_scan_reader(&rd2, (uint64_t)st.st_size, &got2) == 0);

	assert(part_table_encode(want, &wb, &wl) == 0);
	assert(part_table_encode(got, &gb, &gl) == 0);
	assert(part_table_encode(got2, &gb2, &gl2) == 0);
	if (wl != gl || memcmp(wb, gb, wl) != 0 || wl != gl2 ||
	    memcmp(wb, gb2, wl) != 0) {
		fprintf(stderr, "%s: tables differ: label %s/%s parts %zu/%zu "
			"warning %s / %s\n", name, want->label, got->label,
			want->nb_parts, got->nb_parts, want->warning,
			got->warning);
		for (size_t i = 0; i < want->nb_parts || i < got->nb_parts;
		     i++)
			fprintf(stderr, "  %s / %s\n",
				i < want->nb_parts ? want->parts[i].fs_type :
						     "-",
				i < got->nb_parts ? got->parts[i].fs_type :
						    "-");
		abort();
	}
	printf("%s: %s, %zu partitions, asked for %llu of %llu bytes\n",
	       name, want->label ? want->label : "no table", want->nb_parts,
	       (unsigned long long)with_holes,
	       (unsigned long long)st.st_size);
	free(wb);
	free(gb);
	free(gb2);
	part_table_free(want);
	part_table_free(got2);
	close(fd);
	return got;
}

static void make_fs_images(void)
{
	sh("truncate -s 8M ext4.fs && mkfs.ext4 -q -F -L rootfs "
	   "-U 6f1c3d2e-0a4b-4c5d-8e9f-112233445566 ext4.fs");
	sh("truncate -s 8M vfat.fs && mkfs.vfat -n FATLABEL -i 1234ABCD "
	   "vfat.fs >/dev/null");
	sh("truncate -s 8M swap.fs && mkswap -q -L swp swap.fs");
}

static void put_fs(const char *fs, const char *disk, uint64_t sector)
{
	sh("dd if=%s of=%s bs=512 seek=%llu conv=notrunc status=none", fs,
	   disk, (unsigned long long)sector);
}

/* An MBR with three primaries and eight logical partitions spread over a
 * 600 MiB disk, filesystems in some of them. */
static void test_mbr_logicals(void)
{
	struct part_table *t;
	char script[2048];
	size_t n;

	n = (size_t)snprintf(script, sizeof(script),
			     "label: dos\nlabel-id: 0x0badcafe\n"
			     "start=2048, size=16384, type=83\n"
			     "start=20480, size=16384, type=c\n"
			     "start=40960, size=1179648, type=5\n");
	for (unsigned i = 0; i < 8; i++)
		n += (size_t)snprintf(script + n, sizeof(script) - n,
				      "start=%u, size=%u, type=%s\n",
				      43008 + i * 143360, 20480,
				      i % 3 == 0 ? "83" : i % 3 == 1 ? "82" :
								      "7");
	sh("truncate -s 600M mbr.img && printf '%%s' '%s' | sfdisk -q mbr.img",
	   script);
	put_fs("ext4.fs", "mbr.img", 2048);
	put_fs("vfat.fs", "mbr.img", 20480);
	for (unsigned i = 0; i < 8; i++)
		put_fs(i % 3 == 0 ? "ext4.fs" : i % 3 == 1 ? "swap.fs" :
							     "vfat.fs",
		       "mbr.img", 43008 + i * 143360);
	t = check("mbr.img");
	assert(t->nb_parts == 11);
	assert(t->parts[10].number == 12);
	assert(t->parts[10].fs_type && !strcmp(t->parts[10].fs_type, "swap"));
	part_table_free(t);
}

/* GPT with 128 entries used (table-length 128): the array is 16 KiB. */
static void test_gpt_128(void)
{
	struct part_table *t;

	sh("{ printf 'label: gpt\\ntable-length: 128\\nfirst-lba: 2048\\n'; "
	   "i=0; while [ $i -lt 128 ]; do "
	   "printf 'start=%%d, size=2048\\n' $((2048 + i * 4096)); "
	   "i=$((i+1)); done; } > g128.sfdisk && truncate -s 300M g128.img "
	   "&& sfdisk -q g128.img < g128.sfdisk");
	put_fs("ext4.fs", "g128.img", 2048 + 127 * 4096);
	put_fs("vfat.fs", "g128.img", 2048 + 64 * 4096);
	t = check("g128.img");
	assert(t->nb_parts == 128);
	assert(!strcmp(t->parts[127].fs_type, "ext4"));
	part_table_free(t);
}

/* A reader whose cancelled callback answers true after n questions. */
struct cancel_reader {
	struct file_reader fr;
	unsigned asked, cancel_after;
};

static int cr_read(void *ctx, void *buf, size_t len, uint64_t off)
{
	return fr_read(&((struct cancel_reader *)ctx)->fr, buf, len, off);
}

static bool cr_cancelled(void *ctx)
{
	struct cancel_reader *cr = ctx;

	return cr->asked++ >= cr->cancel_after;
}

/* A scan told to stop stops with -ECANCELED and no table, whether before
 * its first chunk or between rounds (the 128-partition GPT takes two);
 * one never told to stop finds every partition. */
static void test_cancel(void)
{
	char path[512];
	struct cancel_reader cr = { .fr = { -1, 0 } };
	struct part_reader rd = { &cr, cr_read, NULL, cr_cancelled };
	struct part_table *t = NULL;
	struct stat st;
	unsigned total;

	snprintf(path, sizeof(path), "%s/g128.img", tmpdir);
	cr.fr.fd = open(path, O_RDONLY);
	assert(cr.fr.fd >= 0 && fstat(cr.fr.fd, &st) == 0);
	cr.cancel_after = UINT32_MAX;
	assert(part_scan_reader(&rd, (uint64_t)st.st_size, &t) == 0);
	assert(t && t->nb_parts == 128);
	part_table_free(t);
	total = cr.asked;
	for (unsigned n = 0; n < total; n += total / 4 ? total / 4 : 1) {
		cr.asked = 0;
		cr.cancel_after = n;
		t = (struct part_table *)1;
		assert(part_scan_reader(&rd, (uint64_t)st.st_size, &t) ==
		       -ECANCELED);
		assert(t == NULL);
		assert(cr.asked == n + 1);
	}
	close(cr.fr.fd);
}

/* A GPT for 4096-byte sectors: header at byte 4096. */
static void test_gpt_4k(void)
{
	struct part_table *t;

	if (!have("fdisk")) {
		printf("SKIP 4K GPT: fdisk not installed\n");
		return;
	}
	sh("truncate -s 64M g4k.img && printf 'g\\nn\\n\\n256\\n+8M\\nw\\n' "
	   "| fdisk -b 4096 g4k.img >/dev/null");
	put_fs("ext4.fs", "g4k.img", 2048);
	t = check("g4k.img");
	assert(t->label && !strcmp(t->label, "gpt") && t->nb_parts == 1);
	part_table_free(t);
}

/* A GPT whose primary entry array was moved to 40 MiB (PartitionEntryLBA
 * rewritten, CRCs fixed): far beyond the first 2 MiB. */
static void test_gpt_far_array(void)
{
	struct part_table *t;

	sh("truncate -s 128M far.img && printf 'label: gpt\\n"
	   "start=2048, size=16384\\nstart=100000, size=16384\\n' "
	   "| sfdisk -q far.img");
	put_fs("vfat.fs", "far.img", 100000);
	/* Move the primary array to LBA 81920 and zero it at LBA 2. */
	sh("python3 - far.img <<'EOF'\n"
	   "import struct, sys, zlib\n"
	   "f = open(sys.argv[1], 'r+b')\n"
	   "f.seek(512); h = bytearray(f.read(512))\n"
	   "hs = struct.unpack_from('<I', h, 12)[0]\n"
	   "lba = struct.unpack_from('<Q', h, 72)[0]\n"
	   "n, es = struct.unpack_from('<II', h, 80)\n"
	   "f.seek(lba * 512); arr = f.read(n * es)\n"
	   "f.seek(lba * 512); f.write(bytes(n * es))\n"
	   "f.seek(81920 * 512); f.write(arr)\n"
	   "struct.pack_into('<Q', h, 72, 81920)\n"
	   "struct.pack_into('<I', h, 16, 0)\n"
	   "struct.pack_into('<I', h, 16, zlib.crc32(bytes(h[:hs])))\n"
	   "f.seek(512); f.write(h)\n"
	   "EOF");
	t = check("far.img");
	assert(t->label && !strcmp(t->label, "gpt") && t->nb_parts == 2);
	assert(t->parts[1].fs_type && !strcmp(t->parts[1].fs_type, "vfat"));
	part_table_free(t);
}

/* An MBR whose second EBR lies 61 MiB into the disk and whose logical
 * partitions lie 31 MiB after their EBRs: nothing but the chain itself
 * says where the second EBR is. */
static void test_ebr_far(void)
{
	struct part_table *t;

	sh("truncate -s 128M ebr.img && printf 'label: dos\\n"
	   "start=2048, size=200000, type=5\\n' | sfdisk -q ebr.img");
	sh("python3 - ebr.img <<'EOF'\n"
	   "import struct, sys\n"
	   "f = open(sys.argv[1], 'r+b')\n"
	   "def ebr(at, start, size, link, lsize):\n"
	   "    b = bytearray(512)\n"
	   "    struct.pack_into('<B3xBxxxII', b, 446, 0, 0x83, start, size)\n"
	   "    if link:\n"
	   "        struct.pack_into('<B3xBxxxII', b, 462, 0, 5, link, lsize)\n"
	   "    b[510:512] = b'\\x55\\xaa'\n"
	   "    f.seek(at * 512); f.write(b)\n"
	   "ebr(2048, 63488, 16384, 122880, 72000)\n"
	   "ebr(124928, 63488, 8192, 0, 0)\n"
	   "EOF");
	put_fs("ext4.fs", "ebr.img", 65536);
	put_fs("vfat.fs", "ebr.img", 188416);
	t = check("ebr.img");
	assert(t->nb_parts == 3);
	assert(t->parts[2].number == 6);
	assert(t->parts[2].start_bytes == 188416 * 512ULL);
	assert(t->parts[2].fs_type && !strcmp(t->parts[2].fs_type, "vfat"));
	part_table_free(t);
}

/* A BSD disklabel on the whole disk (sector 1), written by hand. */
static void test_bsd(void)
{
	struct part_table *t;

	sh("truncate -s 64M bsd.img && python3 - bsd.img <<'EOF'\n"
	   "import struct, sys\n"
	   "l = bytearray(148 + 16 * 3)\n"
	   "struct.pack_into('<IHH', l, 0, 0x82564557, 5, 0)\n"
	   "struct.pack_into('<IIIIII', l, 40, 512, 63, 16, 130, 1008, 131072)\n"
	   "struct.pack_into('<HH', l, 72, 3600, 1)\n"
	   "struct.pack_into('<I', l, 132, 0x82564557)\n"
	   "struct.pack_into('<HII', l, 138, 3, 8192, 8192)\n"
	   "struct.pack_into('<IIIBBH', l, 148, 16384, 2048, 0, 7, 0, 0)\n"
	   "struct.pack_into('<IIIBBH', l, 164, 131072, 0, 0, 0, 0, 0)\n"
	   "struct.pack_into('<IIIBBH', l, 180, 16384, 40960, 0, 7, 0, 0)\n"
	   "c = 0\n"
	   "for i in range(0, len(l), 2): c ^= struct.unpack_from('<H', l, i)[0]\n"
	   "struct.pack_into('<H', l, 136, c)\n"
	   "f = open(sys.argv[1], 'r+b'); f.seek(512); f.write(l)\n"
	   "EOF");
	put_fs("ext4.fs", "bsd.img", 40960);
	t = check("bsd.img");
	part_table_free(t);
}

/* Tables libfdisk does not read and libblkid does (partition/nested.c),
 * with their partitions past the first and last 2 MiB: the fixpoint must
 * bring in the nested BSD label (sector 1 of MBR partition 2) and the
 * filesystems inside, as a scan of the whole file sees them. */
static void test_nested_bsd(void)
{
	struct part_table *t;

	sh("truncate -s 64M nbsd.img && printf 'label: dos\\nstart=2048, "
	   "size=2048, type=83\\nstart=32768, size=65536, type=a5\\n' | "
	   "sfdisk -q nbsd.img && python3 - nbsd.img <<'EOF'\n"
	   "import struct, sys\n"
	   "l = bytearray(148 + 16 * 2)\n"
	   "struct.pack_into('<I', l, 0, 0x82564557)\n"
	   "struct.pack_into('<I', l, 132, 0x82564557)\n"
	   "struct.pack_into('<H', l, 138, 2)\n"
	   "struct.pack_into('<IIIBBH', l, 148, 8192, 32768, 0, 7, 0, 0)\n"
	   "struct.pack_into('<IIIBBH', l, 164, 16384, 49152, 0, 7, 0, 0)\n"
	   "c = 0\n"
	   "for i in range(0, len(l), 2): c ^= struct.unpack_from('<H', l, i)[0]\n"
	   "struct.pack_into('<H', l, 136, c)\n"
	   "f = open(sys.argv[1], 'r+b'); f.seek(32769 * 512); f.write(l)\n"
	   "EOF");
	put_fs("ext4.fs", "nbsd.img", 49152);
	t = check("nbsd.img");
	assert(t->nb_parts == 4 && t->parts[3].number == 6);
	assert(t->parts[3].fs_type && !strcmp(t->parts[3].fs_type, "ext4"));
	part_table_free(t);
}

static void test_atari(void)
{
	struct part_table *t;

	sh("truncate -s 64M atari.img && python3 - atari.img <<'EOF'\n"
	   "import struct, sys\n"
	   "r = bytearray(4 + 12 * 4)\n"
	   "struct.pack_into('>I', r, 0, 131072)\n"
	   "struct.pack_into('>B3sII', r, 4, 1, b'BGM', 64, 32704)\n"
	   "struct.pack_into('>B3sII', r, 16, 1, b'LNX', 32768, 32768)\n"
	   "f = open(sys.argv[1], 'r+b'); f.seek(0x1C2); f.write(r)\n"
	   "EOF");
	put_fs("ext4.fs", "atari.img", 32768);
	t = check("atari.img");
	assert(t->label && !strcmp(t->label, "atari") && t->nb_parts == 2);
	assert(t->parts[1].fs_type && !strcmp(t->parts[1].fs_type, "ext4"));
	part_table_free(t);
}

static void test_sun_sgi(void)
{
	struct part_table *t;

	if (!have("fdisk"))
		return;
	sh("truncate -s 64M sun.img && printf 's\\nw\\n' | fdisk sun.img "
	   ">/dev/null 2>&1");
	t = check("sun.img");
	assert(t->label && !strcmp(t->label, "sun"));
	part_table_free(t);
	sh("truncate -s 64M sgi.img && printf 'G\\nw\\n' | fdisk sgi.img "
	   ">/dev/null 2>&1");
	t = check("sgi.img");
	assert(t->label && !strcmp(t->label, "sgi"));
	part_table_free(t);
}

/* No table: filesystems on the whole disk, a blank disk, tiny files. */
static void test_whole_disk(void)
{
	struct part_table *t;

	t = check("ext4.fs");
	assert(!t->label && t->disk_fs_type &&
	       !strcmp(t->disk_fs_type, "ext4"));
	part_table_free(t);
	t = check("vfat.fs");
	assert(!t->label && !strcmp(t->disk_fs_type, "vfat"));
	part_table_free(t);
	sh("truncate -s 16M blank.img && : > zero.img && "
	   "head -c 300 /dev/urandom > tiny.img && truncate -s 70000 odd.img");
	part_table_free(check("blank.img"));
	part_table_free(check("zero.img"));
	part_table_free(check("tiny.img"));
	part_table_free(check("odd.img"));
}

int main(void)
{
	static const char *const tools[] = { "sfdisk", "mkfs.ext4",
					     "mkfs.vfat", "mkswap", "python3",
					     "truncate", "dd" };
	struct part_table *t = (struct part_table *)1;

	setenv("PATH", "/usr/local/sbin:/usr/sbin:/sbin:/usr/local/bin:"
		       "/usr/bin:/bin", 1);
	for (size_t i = 0; i < sizeof(tools) / sizeof(tools[0]); i++) {
		if (!have(tools[i])) {
			printf("SKIP: %s not installed\n", tools[i]);
			return 77;
		}
	}
	assert(mkdtemp(tmpdir));
	assert(part_scan_reader(NULL, 0, &t) == -EINVAL && t == NULL);

	make_fs_images();
	test_whole_disk();
	test_mbr_logicals();
	test_gpt_128();
	test_cancel();
	test_gpt_4k();
	test_gpt_far_array();
	test_ebr_far();
	test_bsd();
	test_nested_bsd();
	test_atari();
	test_sun_sgi();

	sh("cd / && rm -rf '%s'", tmpdir);
	printf("ok\n");
	return 0;
}
