/* fuzz-vhdx.c: libFuzzer target that opens arbitrary bytes as a VHDX
 * image and reads it every way the public API allows.
 *
 * A VHDX file is at least a few MiB (a 1 MiB header section, then the
 * log, BAT and metadata regions, 1 MiB-aligned), past run.sh's 512 KiB
 * input limit, and mostly zeroes. So the input describes a sparse file
 * in the form fuzz-partition.c reads (and seed-tool.py pack writes):
 *
 *   u8  flags: bit 0 recomputes the CRC-32C of both headers (64 KiB and
 *       128 KiB) and both region tables (192 KiB and 256 KiB) after the
 *       chunks are written, so mutated fields (log, region offsets,
 *       sequence numbers) get past the checksums; log entries keep the
 *       CRC the input gives them
 *   u32 file size in 512-byte units (LE), u16 extra bytes (LE, mod 512)
 *   chunks to the end of the input, each: u32 sector (LE; bit 31 set:
 *       counted back from the end of the file), u16 length (LE), then
 *       that many bytes (fewer at the end of the input), clipped to the
 *       file
 *
 * The file is the one scratch file of scratch-file.h (holes cost
 * nothing in /dev/shm), at most FUZZ_VHDX_MAX_FILE bytes. It is opened
 * read-only as VHDX with backing=deny (a differencing input must not
 * reach other files) and read with fuzz-qcow2.c's bounded reader and
 * block-status walk. Only crashes, sanitizer reports, leaks and timeouts
 * count; errors are expected.
 *
 * FUZZ_NO_MAIN_ENTRY lets a unit test include this file and call
 * fuzz_vhdx_one() itself (tests/unit/test-vhdx.c replays
 * tests/fuzz/regress/fuzz-vhdx through it).
 */
#ifdef FUZZ_NO_MAIN_ENTRY
#define FUZZ_VHDX_NO_MAIN_ENTRY
#else
#define FUZZ_NO_MAIN_ENTRY
#endif
#include "fuzz-qcow2.c"

#define FUZZ_VHDX_MAX_FILE (64ull << 20)
#ifndef MIN
#define MIN(a, b) ((a) < (b) ? (a) : (b))
#endif

static uint32_t fuzz_vhdx_crc32c(const uint8_t *p, size_t len)
{
	uint32_t c = 0xffffffffu;

	while (len--) {
		c ^= *p++;
		for (int k = 0; k < 8; k++)
			c = (c >> 1) ^ (0x82f63b78u & (0u - (c & 1)));
	}
	return ~c;
}

static uint32_t fuzz_vhdx_rd32(const uint8_t *p)
{
	return p[0] | p[1] << 8 | p[2] << 16 | (uint32_t)p[3] << 24;
}

/* Recomputes the CRC of the len-byte structure at off, if it is in the
 * file. */
static void fuzz_vhdx_fix_crc(int fd, uint64_t file_len, uint64_t off,
			      size_t len)
{
	static uint8_t buf[64 << 10];
	uint32_t crc;

	if (off + len > file_len || len > sizeof(buf))
		return;
	if (pread(fd, buf, len, (off_t)off) != (ssize_t)len)
		return;
	memset(buf + 4, 0, 4);
	crc = fuzz_vhdx_crc32c(buf, len);
	for (int i = 0; i < 4; i++)
		buf[4 + i] = (uint8_t)(crc >> (8 * i));
	if (pwrite(fd, buf + 4, 4, (off_t)off + 4) != 4)
		abort();
}

int fuzz_vhdx_one(const uint8_t *data, size_t size);
int fuzz_vhdx_one(const uint8_t *data, size_t size)
{
	struct img_open_opts opts = {
		.format = IMG_FORMAT_VHDX,
		.read_only = true,
		.backing = IMG_BACKING_DENY,
		.cache_bytes = FUZZ_CACHE_BYTES,
	};
	int fd = scratch_open("fuzz-vhdx");
	uint64_t seed = fuzz_seed(data, size), file_len;
	struct img_info info;
	struct img_err err;
	struct img *img = NULL;
	size_t pos = 7;
	uint8_t flags;

	if (size < 7)
		return 0;
	flags = data[0];
	file_len = (uint64_t)fuzz_vhdx_rd32(data + 1) * 512 +
		   (uint64_t)(data[5] | data[6] << 8) % 512;
	if (file_len > FUZZ_VHDX_MAX_FILE)
		file_len = FUZZ_VHDX_MAX_FILE;
	if (ftruncate(fd, 0) < 0 || ftruncate(fd, (off_t)file_len) < 0) {
		perror(scratch_path);
		abort();
	}
	while (pos + 6 <= size) {
		uint32_t where = fuzz_vhdx_rd32(data + pos);
		size_t len = (size_t)(data[pos + 4] | data[pos + 5] << 8);
		uint64_t off;

		pos += 6;
		if (len > size - pos)
			len = size - pos;
		if (where & 0x80000000u)
			off = file_len - MIN(file_len,
					     (uint64_t)(where & 0x7fffffffu) * 512);
		else
			off = (uint64_t)where * 512;
		if (off < file_len) {
			size_t n = (size_t)MIN((uint64_t)len, file_len - off);

			if (pwrite(fd, data + pos, n, (off_t)off) != (ssize_t)n)
				abort();
		}
		pos += len;
	}
	if (flags & 1) {
		fuzz_vhdx_fix_crc(fd, file_len, 64 << 10, 4 << 10);
		fuzz_vhdx_fix_crc(fd, file_len, 128 << 10, 4 << 10);
		fuzz_vhdx_fix_crc(fd, file_len, 192 << 10, 64 << 10);
		fuzz_vhdx_fix_crc(fd, file_len, 256 << 10, 64 << 10);
	}
	if (img_open(scratch_path, &opts, &img, &err) < 0) {
		if (err.errnum >= 0 || !memchr(err.msg, '\0', sizeof(err.msg)))
			abort(); /* a failed open must say why */
		return 0;
	}
	img_get_info(img, &info);
	fuzz_read(img, &seed, FUZZ_READ_BUDGET);
	fuzz_block_status(img);
	img_close(img);
	return 0;
}

#ifndef FUZZ_VHDX_NO_MAIN_ENTRY
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	return fuzz_vhdx_one(data, size);
}
#endif
