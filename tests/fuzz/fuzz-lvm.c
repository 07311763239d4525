/* fuzz-lvm.c: libFuzzer target for lvm_scan and lvm_lv_open (lvm/).
 *
 * The input describes up to four small sparse disks (the PVs of one or
 * more VGs), so that a PV of many MiB fits in a few KiB and mutations
 * land on the label, the PV header, the metadata area headers and text:
 *
 *   u8  flags: bit 0 recomputes, after the disks are laid out, the CRC
 *       of each label found in sectors 0-3, and of each metadata area
 *       header it lists and the text the header's first raw location
 *       points to (circular buffer included), so that mutated fields and
 *       text get past the checksums to the parser and the volume builder;
 *       without it the CRCs stay as the input has them
 *   then per disk, to the end of the input: u32 size in KiB (LE; at most
 *   64 MiB), u32 head length (LE), the disk's first bytes, u32 tail
 *   length (LE), the disk's last bytes (where a second metadata area
 *   lives); lengths are cut to what the input holds and to the disk,
 *   and everything else reads as zeroes
 *
 * The disks lie one after the other in one scratch file (scratch-file.h),
 * opened raw and read-only, each a window (p1 .. p4). After the scan,
 * every VG, PV and LV is looked at, and every readable LV is opened and
 * read (its start, middle and end, and block status over a bounded
 * number of extents). make-corpus.sh (kind lvm) packs PVs made by lvm2
 * (lvm-seeds.sh). FUZZ_LVM_VERBOSE=1 in the environment prints what each
 * input was found to hold.
 *
 * FUZZ_NO_MAIN_ENTRY lets a unit test include this file and call
 * fuzz_lvm_one() itself (tests/unit/test-lvm.c replays
 * tests/fuzz/regress/fuzz-lvm through it).
 */
#include "imgfmt.h"
#include "lvm.h"
#include "lvm-int.h"

#include "scratch-file.h"

#include <errno.h>
#include <inttypes.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#define FUZZ_LVM_MAX_DISKS 4
#define FUZZ_LVM_MAX_KIB (64u * 1024)

static uint32_t fz_rd32(const uint8_t *p)
{
	return (uint32_t)p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16 |
	       (uint32_t)p[3] << 24;
}

static uint64_t fz_rd64(const uint8_t *p)
{
	return (uint64_t)fz_rd32(p) | (uint64_t)fz_rd32(p + 4) << 32;
}

static void fz_wr32(uint8_t *p, uint32_t v)
{
	for (int i = 0; i < 4; i++)
		p[i] = (uint8_t)(v >> (8 * i));
}

/* Recomputes the checksums of the disk at [start, start + size) of the
 * scratch file fd, in place. */
static void fix_crcs(int fd, uint64_t start, uint64_t size)
{
	uint8_t lab[512], m[512];

	for (unsigned s = 0; s < 4 && (s + 1) * 512 <= size; s++) {
		uint32_t hoff;
		int list = 0;

		if (pread(fd, lab, 512, (off_t)(start + s * 512)) != 512)
			abort();
		if (memcmp(lab, "LABELONE", 8) != 0)
			continue;
		hoff = fz_rd32(lab + 20);
		for (size_t pos = hoff + 40;
		     hoff >= 32 && hoff <= 512 - 40 && pos + 16 <= 512;
		     pos += 16) {
			uint64_t off = fz_rd64(lab + pos);
			uint64_t msize = fz_rd64(lab + pos + 8);
			uint64_t roff, rsize;
			uint8_t *text;

			if (off == 0) {
				if (++list == 2)
					break;
				continue;
			}
			if (list != 1 || off > size || msize < 1024 ||
			    msize > size - off)
				continue;
			if (pread(fd, m, 512, (off_t)(start + off)) != 512)
				abort();
			roff = fz_rd64(m + 40);
			rsize = fz_rd64(m + 48);
			if (roff >= 512 && roff < msize && rsize <= msize - 512 &&
			    rsize <= (1u << 20) && (text = malloc(rsize + 1))) {
				uint64_t first = rsize < msize - roff
							 ? rsize
							 : msize - roff;
				if (pread(fd, text, first,
					  (off_t)(start + off + roff)) !=
					    (ssize_t)first ||
				    pread(fd, text + first, rsize - first,
					  (off_t)(start + off + 512)) !=
					    (ssize_t)(rsize - first))
					abort();
				fz_wr32(m + 56, lvm_crc(LVM_CRC_INITIAL, text,
							rsize));
				free(text);
			}
			fz_wr32(m, lvm_crc(LVM_CRC_INITIAL, m + 4, 508));
			if (pwrite(fd, m, 512, (off_t)(start + off)) != 512)
				abort();
		}
		fz_wr32(lab + 16, lvm_crc(LVM_CRC_INITIAL, lab + 20, 492));
		if (pwrite(fd, lab, 512, (off_t)(start + s * 512)) != 512)
			abort();
		break;
	}
}

static void read_lv(struct img *lv)
{
	static uint8_t buf[65536];
	uint64_t size = img_size(lv), offs[3], off;
	struct img_extent ext;

	offs[0] = 0;
	offs[1] = size / 2;
	offs[2] = size > sizeof(buf) ? size - sizeof(buf) : 0;
	for (int i = 0; i < 3; i++) {
		uint64_t n = size - offs[i] < sizeof(buf) ? size - offs[i]
							    : sizeof(buf);
		if (img_pread(lv, buf, (size_t)n, offs[i]) < 0)
			abort(); /* the sources are readable everywhere */
	}
	off = 0;
	for (int i = 0; i < 256 && off < size; i++) {
		if (img_block_status(lv, off, size - off, &ext) < 0)
			abort();
		off += ext.len;
	}
}

/* A unit test's checks of what one input was found to hold, run after
 * the scan (NULL in the fuzzer). */
static void (*fuzz_lvm_check)(struct lvm_set *set);

static void fuzz_lvm_one(const uint8_t *data, size_t size)
{
	struct img_open_opts o = { .format = IMG_FORMAT_RAW,
				   .read_only = true };
	static const char *names[FUZZ_LVM_MAX_DISKS] = { "p1", "p2", "p3",
							 "p4" };
	struct lvm_source srcs[FUZZ_LVM_MAX_DISKS];
	struct img *wins[FUZZ_LVM_MAX_DISKS] = { NULL };
	uint64_t starts[FUZZ_LVM_MAX_DISKS], sizes[FUZZ_LVM_MAX_DISKS];
	uint64_t total = 0;
	struct lvm_set *set;
	struct img_err err;
	struct img *img;
	size_t nb = 0, pos = 1;
	bool verbose = getenv("FUZZ_LVM_VERBOSE") != NULL;
	uint8_t flags;
	int fd;

	if (size < 1)
		return;
	flags = data[0];
	fd = scratch_open("fuzz-lvm");
	if (ftruncate(fd, 0) < 0)
		abort();
	while (nb < FUZZ_LVM_MAX_DISKS && size - pos >= 8) {
		uint32_t kib = fz_rd32(data + pos) % (FUZZ_LVM_MAX_KIB + 1);
		size_t head = fz_rd32(data + pos + 4), tail = 0;

		pos += 8;
		sizes[nb] = (uint64_t)kib * 1024;
		starts[nb] = total;
		total += sizes[nb];
		if (ftruncate(fd, (off_t)total) < 0)
			abort();
		if (head > size - pos)
			head = size - pos;
		if (head > sizes[nb])
			head = (size_t)sizes[nb];
		if (head && pwrite(fd, data + pos, head, (off_t)starts[nb]) !=
				    (ssize_t)head)
			abort();
		pos += head;
		if (size - pos >= 4) {
			tail = fz_rd32(data + pos);
			pos += 4;
			if (tail > size - pos)
				tail = size - pos;
			if (tail > sizes[nb])
				tail = (size_t)sizes[nb];
			if (tail && pwrite(fd, data + pos, tail,
					   (off_t)(total - tail)) !=
					    (ssize_t)tail)
				abort();
			pos += tail;
		}
		if (flags & 1)
			fix_crcs(fd, starts[nb], sizes[nb]);
		nb++;
	}
	if (nb == 0 || total == 0)
		return;
	if (img_open(scratch_path, &o, &img, &err) < 0)
		return;
	for (size_t i = 0; i < nb; i++) {
		if (img_window_open(img, starts[i], sizes[i], true,
				    &wins[i]) < 0)
			abort();
		srcs[i].name = names[i];
		srcs[i].img = wins[i];
	}
	if (lvm_scan(srcs, nb, &set) == 0) {
		if (fuzz_lvm_check)
			fuzz_lvm_check(set);
		for (size_t i = 0; i < lvm_nb_vgs(set); i++) {
			const struct lvm_vg *vg = lvm_vg_at(set, i);
			if (!vg->name || !vg->uuid)
				abort();
			if (verbose)
				fprintf(stderr, "fuzz-lvm: VG %s seqno %" PRIu64
					": %s\n", vg->name, vg->seqno,
					vg->error ? vg->error : "ok");
		}
		for (size_t i = 0; i < lvm_nb_pvs(set); i++)
			if (!lvm_pv_at(set, i)->uuid)
				abort();
		for (size_t i = 0; i < nb; i++)
			(void)lvm_source_is_pv(set, names[i]);
		for (size_t i = 0; i < lvm_nb_lvs(set); i++) {
			const struct lvm_lv *l = lvm_lv_at(set, i);
			struct img *lv;
			int ret = lvm_lv_open(set, i, true, &lv, &err);

			if (!l->name || !l->vg_name || !l->segment_types)
				abort();
			if (verbose)
				fprintf(stderr, "fuzz-lvm: %s/%s %" PRIu64
					" %s: %s\n", l->vg_name, l->name,
					l->size_bytes, l->segment_types,
					l->unreadable ? l->unreadable
						      : "readable");
			/* Readable volumes open; the others do not. */
			if ((ret == 0) != (l->unreadable == NULL))
				abort();
			if (ret < 0)
				continue;
			if (img_size(lv) != l->size_bytes)
				abort();
			read_lv(lv);
			img_close(lv);
		}
		lvm_set_free(set);
	}
	for (size_t i = 0; i < nb; i++)
		img_close(wins[i]);
	img_close(img);
}

#ifndef FUZZ_NO_MAIN_ENTRY
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	fuzz_lvm_one(data, size);
	return 0;
}
#endif
