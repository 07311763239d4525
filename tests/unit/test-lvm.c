/* test-lvm.c: LVM2 volumes read through lvm/ from images lvm2 made.
 *
 * The kernel here has no device-mapper, so nothing is activated: the
 * real lvm2 tools (pvcreate, vgcreate, lvcreate --driverloaded n -an -Zn)
 * write their metadata onto loop devices over the test's image files
 * (one loop device per partition, at the offset sfdisk -J reports), with
 * a private LVM_SYSTEM_DIR whose lvm.conf accepts only those devices, so
 * the host's LVM state is untouched. Each volume is then filled by
 * writing at the physical extents lvm2 itself reports (lvs --segments
 * -o seg_pe_ranges,stripes,stripe_size and pvs -o pe_start), and the
 * expected bytes of every volume follow from the same report. The
 * children run the tests; the parent detaches every loop device of the
 * test's files (losetup -j) whatever happened.
 *
 * Covered: a GPT disk whose p2 holds vg0 (root linear, home in two
 * segments, a volume striped over p2 and p3), a VG on a whole disk with
 * hyphenated names (vg-data/lv-1), a VG whose metadata was rewritten
 * until the circular buffer wrapped; raw and the same after qemu-img
 * convert -O qcow2; a missing PV; damaged metadata (garbage text, a
 * checksum off by one, a segment past the end, overlapping extents, a
 * label checksum off) giving the reason; a write through an LV landing
 * at its extents and nowhere else; hand-made metadata for mirror, raid1,
 * thin and snapshot volumes; the fuzz target's saved reproducers.
 * Needs root, losetup and lvm2 (else exit 77).
 */
#undef NDEBUG
#include "imgfmt.h"
#include "lvm.h"
#include "lvm-int.h"

#include "regress.h"

#define FUZZ_NO_MAIN_ENTRY
#include "../fuzz/fuzz-lvm.c"

#include <assert.h>
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

static char work[256];

__attribute__((format(printf, 1, 2))) static int sh(const char *fmt, ...)
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

/* The output of a command, as a malloc'd string. */
__attribute__((format(printf, 1, 2))) static char *sh_out(const char *fmt,
							   ...)
{
	char cmd[8192];
	va_list ap;
	size_t len = 0, cap = 4096;
	char *out = malloc(cap);
	FILE *f;
	size_t n;

	va_start(ap, fmt);
	vsnprintf(cmd, sizeof(cmd), fmt, ap);
	va_end(ap);
	f = popen(cmd, "r");
	assert(f && out);
	while ((n = fread(out + len, 1, cap - len - 1, f)) > 0) {
		len += n;
		if (cap - len < 2) {
			cap *= 2;
			out = realloc(out, cap);
			assert(out);
		}
	}
	out[len] = '\0';
	assert(pclose(f) == 0);
	return out;
}

/* lvm2 commands with the private configuration. */
#define LVM "LVM_SYSTEM_DIR=%s/etc LVM_SUPPRESS_FD_WARNINGS=1 "
#define NOACT "--driverloaded n -an -Zn -y"

static void write_lvm_conf(const char *filter)
{
	char path[300];
	FILE *f;

	snprintf(path, sizeof(path), "%s/etc/lvm.conf", work);
	f = fopen(path, "w");
	assert(f);
	fprintf(f, "devices { obtain_device_list_from_udev = 0 scan_lvs = 0 "
		   "use_devicesfile = 0 global_filter = [ %s \"r|.*|\" ] }\n"
		   "activation { udev_sync = 0 udev_rules = 0 monitoring = 0 }\n"
		   "global { use_lvmlockd = 0 }\n"
		   "backup { backup = 0 archive = 0 }\n", filter);
	fclose(f);
}

/* A loop device over [off, off + len) of file (len 0: to the end). */
static char *loop_attach(const char *file, uint64_t off, uint64_t len)
{
	char *dev;

	if (len)
		dev = sh_out("losetup -f --show -o %" PRIu64 " --sizelimit %"
			     PRIu64 " %s", off, len, file);
	else
		dev = sh_out("losetup -f --show %s", file);
	dev[strcspn(dev, "\n")] = '\0';
	assert(strncmp(dev, "/dev/loop", 9) == 0);
	return dev;
}

static void loop_detach_all(const char *file)
{
	sh("for d in $(losetup -j '%s' -O NAME -n); do losetup -d $d; done",
	   file);
}

/* The bytes a volume holds at off: a pattern unique to (seed, off). */
static uint8_t pattern(uint32_t seed, uint64_t off)
{
	uint64_t x = (off / 8) * 0x9e3779b97f4a7c15ull + seed * 0x632be5ab;
	x ^= x >> 29;
	return (uint8_t)(x >> (8 * (off % 8)));
}

/* One stretch of an LV on a PV, as lvm2 reports it. */
struct piece {
	char lv[64];
	uint64_t lv_off;   /* where the segment starts in the LV */
	uint64_t seg_len;  /* bytes of the segment */
	unsigned stripes;
	uint64_t stripe_bytes;
	char dev[8][64];   /* per stripe: PV device */
	uint64_t pe[8];    /* per stripe: first extent */
};

struct report {
	struct piece p[64];
	size_t n;
	uint64_t extent_bytes;
	char pv_dev[8][64];
	uint64_t pe_start[8];
	size_t nb_pvs;
};

static uint64_t pe_start_of(const struct report *r, const char *dev)
{
	for (size_t i = 0; i < r->nb_pvs; i++)
		if (strcmp(r->pv_dev[i], dev) == 0)
			return r->pe_start[i];
	assert(!"PV not in the report");
	return 0;
}

/* Reads what lvm2 says of vg: PVs with pe_start, LV segments with their
 * PE ranges, stripes and stripe size. */
static void read_report(const char *vg, struct report *r)
{
	char *out, *line, *save = NULL;

	memset(r, 0, sizeof(*r));
	out = sh_out(LVM "vgs --noheadings --nosuffix --units b -o "
		     "vg_extent_size %s", work, vg);
	r->extent_bytes = strtoull(out, NULL, 10);
	assert(r->extent_bytes > 0);
	free(out);
	out = sh_out(LVM "pvs --noheadings --nosuffix --units b "
		     "--separator , -o pv_name,pe_start,vg_name", work);
	for (line = strtok_r(out, "\n", &save); line;
	     line = strtok_r(NULL, "\n", &save)) {
		char name[64], vgn[64];
		unsigned long long ps;
		while (*line == ' ')
			line++;
		if (sscanf(line, "%63[^,],%llu,%63s", name, &ps, vgn) != 3 ||
		    strcmp(vgn, vg) != 0)
			continue;
		snprintf(r->pv_dev[r->nb_pvs], 64, "%s", name);
		r->pe_start[r->nb_pvs++] = ps;
	}
	free(out);
	out = sh_out(LVM "lvs -a --noheadings --nosuffix --units b "
		     "--segments --separator , -o lv_name,seg_start,seg_size,"
		     "stripes,stripe_size,seg_pe_ranges %s", work, vg);
	save = NULL;
	for (line = strtok_r(out, "\n", &save); line;
	     line = strtok_r(NULL, "\n", &save)) {
		struct piece *p = &r->p[r->n];
		unsigned long long st, sz, ss;
		char ranges[512], *rg, *rsave = NULL;
		unsigned k = 0;

		while (*line == ' ')
			line++;
		assert(sscanf(line, "%63[^,],%llu,%llu,%u,%llu,%511[^\n]",
			      p->lv, &st, &sz, &p->stripes, &ss, ranges) == 6);
		p->lv_off = st;
		p->seg_len = sz;
		p->stripe_bytes = ss;
		for (rg = strtok_r(ranges, " ", &rsave); rg;
		     rg = strtok_r(NULL, " ", &rsave)) {
			char *colon = strrchr(rg, ':');
			assert(colon && k < 8);
			*colon = '\0';
			snprintf(p->dev[k], 64, "%s", rg);
			p->pe[k++] = strtoull(colon + 1, NULL, 10);
		}
		assert(k == p->stripes);
		r->n++;
	}
	free(out);
}

/* Where byte off of piece p lives: device index (stripe) and offset on
 * that device, by dm-stripe's rule (chunks dealt round-robin). */
static void piece_map(const struct report *r, const struct piece *p,
		      uint64_t off, unsigned *k_r, uint64_t *dev_off_r)
{
	uint64_t in = off, chunk, within;
	unsigned k = 0;

	if (p->stripes > 1) {
		chunk = in / p->stripe_bytes;
		within = in % p->stripe_bytes;
		k = (unsigned)(chunk % p->stripes);
		in = (chunk / p->stripes) * p->stripe_bytes + within;
	}
	*k_r = k;
	*dev_off_r = pe_start_of(r, p->dev[k]) + p->pe[k] * r->extent_bytes +
		     in;
}

/* Writes seed's pattern into every piece of lv through the PV devices. */
static void fill_lv(const struct report *r, const char *lv, uint32_t seed)
{
	static uint8_t buf[4096];

	for (size_t i = 0; i < r->n; i++) {
		const struct piece *p = &r->p[i];
		if (strcmp(p->lv, lv) != 0)
			continue;
		for (uint64_t o = 0; o < p->seg_len; o += 4096) {
			unsigned k;
			uint64_t dev_off;
			int fd;
			for (unsigned b = 0; b < 4096; b++)
				buf[b] = pattern(seed, p->lv_off + o + b);
			piece_map(r, p, o, &k, &dev_off);
			fd = open(p->dev[k], O_WRONLY | O_CLOEXEC);
			assert(fd >= 0);
			assert(pwrite(fd, buf, 4096, (off_t)dev_off) == 4096);
			assert(fsync(fd) == 0);
			close(fd);
		}
	}
}

static uint64_t lv_size(const struct report *r, const char *lv)
{
	uint64_t end = 0;

	for (size_t i = 0; i < r->n; i++)
		if (strcmp(r->p[i].lv, lv) == 0 &&
		    r->p[i].lv_off + r->p[i].seg_len > end)
			end = r->p[i].lv_off + r->p[i].seg_len;
	return end;
}

static size_t nb_pieces(const struct report *r, const char *lv)
{
	size_t n = 0;

	for (size_t i = 0; i < r->n; i++)
		n += strcmp(r->p[i].lv, lv) == 0;
	return n;
}

/* Partition starts and sizes in bytes from sfdisk -J. */
static size_t read_partitions(const char *disk, uint64_t *start,
			      uint64_t *size, size_t max)
{
	char *out = sh_out("sfdisk -J %s", disk), *p = out;
	size_t n = 0;

	while (n < max && (p = strstr(p, "\"start\":"))) {
		start[n] = strtoull(p + 8, NULL, 10) * 512;
		p = strstr(p, "\"size\":");
		assert(p);
		size[n++] = strtoull(p + 7, NULL, 10) * 512;
	}
	free(out);
	return n;
}

/* The LV vg/lv in set, or SIZE_MAX. */
static size_t find_lv(struct lvm_set *set, const char *vg, const char *lv)
{
	for (size_t i = 0; i < lvm_nb_lvs(set); i++) {
		const struct lvm_lv *l = lvm_lv_at(set, i);
		if (strcmp(l->vg_name, vg) == 0 && strcmp(l->name, lv) == 0)
			return i;
	}
	return SIZE_MAX;
}

static const struct lvm_vg *find_vg(struct lvm_set *set, const char *vg)
{
	for (size_t i = 0; i < lvm_nb_vgs(set); i++)
		if (strcmp(lvm_vg_at(set, i)->name, vg) == 0)
			return lvm_vg_at(set, i);
	return NULL;
}

/* LV vg/lv reads as seed's pattern over size bytes, whole and in odd
 * pieces, and block status covers it. */
static void check_lv(struct lvm_set *set, const char *vg, const char *lv,
		     uint64_t size, uint32_t seed)
{
	size_t i = find_lv(set, vg, lv);
	struct img_err err;
	struct img *img;
	uint8_t *buf;
	uint64_t off;

	assert(i != SIZE_MAX);
	if (lvm_lv_at(set, i)->unreadable)
		fprintf(stderr, "%s/%s: %s\n", vg, lv,
			lvm_lv_at(set, i)->unreadable);
	assert(!lvm_lv_at(set, i)->unreadable);
	assert(lvm_lv_at(set, i)->size_bytes == size);
	assert(lvm_lv_open(set, i, true, &img, &err) == 0);
	assert(img_size(img) == size);
	buf = malloc(size);
	assert(buf);
	assert(img_pread(img, buf, size, 0) == 0);
	for (off = 0; off < size; off++) {
		if (buf[off] != pattern(seed, off)) {
			fprintf(stderr, "%s/%s: byte %" PRIu64 " differs\n",
				vg, lv, off);
			abort();
		}
	}
	/* Reads across stripe and segment edges. */
	for (off = 1; off + 70001 < size; off += 1048573) {
		uint8_t small[70001];
		assert(img_pread(img, small, sizeof(small), off) == 0);
		assert(memcmp(small, buf + off, sizeof(small)) == 0);
	}
	for (off = 0; off < size;) {
		struct img_extent ext;
		assert(img_block_status(img, off, size - off, &ext) == 0);
		assert(ext.len > 0 && ext.len <= size - off);
		off += ext.len;
	}
	assert(img_pwrite(img, buf, 1, 0) == -EROFS);
	free(buf);
	img_close(img);
}

/* ------------------------------------------------------------------ */
/* The images: disk.raw (GPT; vg0 on p2 and p3), whole.raw (vg-data on
 * the whole disk), wrap.raw (vgw, metadata wrapped). */

static struct report rep_vg0, rep_data, rep_wrap;
static uint64_t part_start[3], part_size[3];
static char path_disk[300], path_whole[300], path_wrap[300];
static char dev_p2[64], dev_p3[64];

/* The first metadata area's header of a PV device, and whether its text
 * wraps around the end of the area. */
static bool mda_wrapped(const char *dev)
{
	uint8_t h[512];
	int fd = open(dev, O_RDONLY | O_CLOEXEC);
	uint64_t size, roff, rsize;

	assert(fd >= 0);
	assert(pread(fd, h, 512, 4096) == 512);
	close(fd);
	assert(memcmp(h + 4, " LVM2 x[5A%r0N*>", 16) == 0);
	size = *(uint64_t *)(h + 32);
	roff = *(uint64_t *)(h + 40);
	rsize = *(uint64_t *)(h + 48);
	return roff + rsize > size;
}

static void build_images(void)
{
	char *p2, *p3, *whole, *wrap, filter[1024];
	size_t np;
	unsigned cycles;

	snprintf(path_disk, sizeof(path_disk), "%s/disk.raw", work);
	snprintf(path_whole, sizeof(path_whole), "%s/whole.raw", work);
	snprintf(path_wrap, sizeof(path_wrap), "%s/wrap.raw", work);
	/* whole.raw: 5 extents of 4 MiB after the first MiB. */
	assert(sh("truncate -s 72M %s && truncate -s 24M %s %s", path_disk,
		  path_whole, path_wrap) == 0);
	assert(sh("printf 'label: gpt\\nsize=4M\\nsize=32M,type=lvm\\n"
		  "size=32M,type=lvm\\n' | sfdisk -q %s >/dev/null",
		  path_disk) == 0);
	np = read_partitions(path_disk, part_start, part_size, 3);
	assert(np == 3);
	p2 = loop_attach(path_disk, part_start[1], part_size[1]);
	p3 = loop_attach(path_disk, part_start[2], part_size[2]);
	snprintf(dev_p2, sizeof(dev_p2), "%s", p2);
	snprintf(dev_p3, sizeof(dev_p3), "%s", p3);
	whole = loop_attach(path_whole, 0, 0);
	wrap = loop_attach(path_wrap, 0, 0);
	snprintf(filter, sizeof(filter), "\"a|^%s$|\", \"a|^%s$|\", "
		 "\"a|^%s$|\", \"a|^%s$|\",", p2, p3, whole, wrap);
	write_lvm_conf(filter);

#define Q " >/dev/null 2>&1"
	assert(sh(LVM "pvcreate -q -y %s %s %s" Q, work, p2, p3, whole) == 0);
	assert(sh(LVM "pvcreate -q -y --metadatasize 40k --dataalignment 64k"
		  " %s" Q, work, wrap) == 0);
	/* vg0: root, then home, then tmp, then home grows past tmp (two
	 * segments); p3 joins and "data" is striped over p2 and p3. */
	assert(sh(LVM "vgcreate -q -s 1m vg0 %s" Q, work, p2) == 0);
	assert(sh(LVM "lvcreate " NOACT " -q -n root -L 6m vg0" Q, work) == 0);
	assert(sh(LVM "lvcreate " NOACT " -q -n home -L 3m vg0" Q, work) == 0);
	assert(sh(LVM "lvcreate " NOACT " -q -n tmp -L 2m vg0" Q, work) == 0);
	assert(sh(LVM "lvextend --driverloaded n -q -L +4m vg0/home" Q,
		  work) == 0);
	assert(sh(LVM "vgextend -q vg0 %s" Q, work, p3) == 0);
	assert(sh(LVM "lvcreate " NOACT " -q -n data --type striped -i2 "
		  "-I64k -L 12m vg0" Q, work) == 0);
	assert(sh(LVM "vgcreate -q -s 4m vg-data %s" Q, work, whole) == 0);
	assert(sh(LVM "lvcreate " NOACT " -q -n lv-1 -L 8m vg-data" Q,
		  work) == 0);
	assert(sh(LVM "lvcreate " NOACT " -q -n lv-2 -L 4m vg-data" Q,
		  work) == 0);
	/* vgw: rewritten until the text wraps the circular buffer. */
	assert(sh(LVM "vgcreate -q -s 1m vgw %s" Q, work, wrap) == 0);
	assert(sh(LVM "lvcreate " NOACT " -q -n keep -L 3m vgw" Q, work) == 0);
	for (cycles = 0; cycles < 400; cycles++) {
		if (cycles >= 100 && mda_wrapped(wrap))
			break;
		assert(sh(LVM "lvcreate " NOACT " -q -n t%u -L 1m vgw" Q,
			  work, cycles) == 0);
		assert(sh(LVM "lvremove --driverloaded n -q -y vgw/t%u" Q,
			  work, cycles) == 0);
	}
	assert(mda_wrapped(wrap));
	fprintf(stderr, "test-lvm: vgw metadata wrapped after %u cycles\n",
		cycles);

	read_report("vg0", &rep_vg0);
	read_report("vg-data", &rep_data);
	read_report("vgw", &rep_wrap);
	assert(nb_pieces(&rep_vg0, "home") == 2);
	assert(nb_pieces(&rep_vg0, "data") == 1);
	fill_lv(&rep_vg0, "root", 1);
	fill_lv(&rep_vg0, "home", 2);
	fill_lv(&rep_vg0, "tmp", 3);
	fill_lv(&rep_vg0, "data", 4);
	fill_lv(&rep_data, "lv-1", 5);
	fill_lv(&rep_data, "lv-2", 6);
	fill_lv(&rep_wrap, "keep", 7);
	free(p2);
	free(p3);
	free(whole);
	free(wrap);
	loop_detach_all(path_disk);
	loop_detach_all(path_whole);
	loop_detach_all(path_wrap);
}

/* Opens disk (raw or qcow2) with windows for its partitions, and the
 * other two images whole, as lvm sources. */
struct sources {
	struct img *disk, *whole, *wrap, *parts[3];
	struct lvm_source src[6];
	size_t n;
};

static void open_sources(struct sources *s, const char *disk, bool rw)
{
	struct img_open_opts o = { .format = IMG_FORMAT_PROBE,
				   .read_only = !rw };
	static const char *names[3] = { "p1", "p2", "p3" };
	struct img_err err;

	memset(s, 0, sizeof(*s));
	assert(img_open(disk, &o, &s->disk, &err) == 0);
	for (int i = 0; i < 3; i++) {
		assert(img_window_open(s->disk, part_start[i], part_size[i],
				       !rw, &s->parts[i]) == 0);
		s->src[s->n].name = names[i];
		s->src[s->n++].img = s->parts[i];
	}
	assert(img_open(path_whole, &o, &s->whole, &err) == 0);
	s->src[s->n].name = "whole";
	s->src[s->n++].img = s->whole;
	assert(img_open(path_wrap, &o, &s->wrap, &err) == 0);
	s->src[s->n].name = "wrap";
	s->src[s->n++].img = s->wrap;
}

static void close_sources(struct sources *s)
{
	for (int i = 0; i < 3; i++)
		img_close(s->parts[i]);
	img_close(s->disk);
	img_close(s->whole);
	img_close(s->wrap);
}

static void check_all(const char *disk)
{
	struct sources s;
	struct lvm_set *set;

	open_sources(&s, disk, false);
	assert(lvm_scan(s.src, s.n, &set) == 0);
	assert(lvm_nb_vgs(set) == 3);
	for (size_t i = 0; i < lvm_nb_vgs(set); i++)
		assert(!lvm_vg_at(set, i)->error);
	assert(find_vg(set, "vg0")->extent_bytes == 1 << 20);
	assert(lvm_nb_lvs(set) == 7);
	/* Sorted by VG then LV. */
	assert(strcmp(lvm_lv_at(set, 0)->vg_name, "vg-data") == 0);
	assert(strcmp(lvm_lv_at(set, 0)->name, "lv-1") == 0);
	assert(find_lv(set, "vg0", "data") < find_lv(set, "vg0", "home"));
	check_lv(set, "vg0", "root", lv_size(&rep_vg0, "root"), 1);
	check_lv(set, "vg0", "home", lv_size(&rep_vg0, "home"), 2);
	check_lv(set, "vg0", "tmp", lv_size(&rep_vg0, "tmp"), 3);
	check_lv(set, "vg0", "data", lv_size(&rep_vg0, "data"), 4);
	check_lv(set, "vg-data", "lv-1", lv_size(&rep_data, "lv-1"), 5);
	check_lv(set, "vg-data", "lv-2", lv_size(&rep_data, "lv-2"), 6);
	check_lv(set, "vgw", "keep", lv_size(&rep_wrap, "keep"), 7);
	assert(lvm_lv_at(set, find_lv(set, "vg0", "home"))->nb_segments == 2);
	assert(strcmp(lvm_lv_at(set, find_lv(set, "vg0", "home"))
			      ->segment_types, "linear") == 0);
	assert(strcmp(lvm_lv_at(set, find_lv(set, "vg0", "data"))
			      ->segment_types, "striped") == 0);
	assert(lvm_source_is_pv(set, "p2") && lvm_source_is_pv(set, "p3"));
	assert(!lvm_source_is_pv(set, "p1"));
	assert(lvm_source_is_pv(set, "whole"));
	assert(lvm_nb_pvs(set) == 4);
	for (size_t i = 0; i < lvm_nb_pvs(set); i++)
		assert(lvm_pv_at(set, i)->source);
	lvm_set_free(set);
	close_sources(&s);
}

/* Only p2 of vg0 present: root, home and tmp read, data does not. */
static void check_missing_pv(void)
{
	struct sources s;
	struct lvm_set *set;
	const struct lvm_lv *data;
	struct img *img;
	struct img_err err;
	char want[128];
	size_t i;

	open_sources(&s, path_disk, false);
	assert(lvm_scan(&s.src[1], 1, &set) == 0);
	assert(lvm_nb_vgs(set) == 1 && !lvm_vg_at(set, 0)->error);
	check_lv(set, "vg0", "root", lv_size(&rep_vg0, "root"), 1);
	check_lv(set, "vg0", "home", lv_size(&rep_vg0, "home"), 2);
	data = lvm_lv_at(set, find_lv(set, "vg0", "data"));
	assert(data->unreadable);
	for (i = 0; i < lvm_nb_pvs(set); i++)
		if (!lvm_pv_at(set, i)->source)
			break;
	assert(i < lvm_nb_pvs(set));
	snprintf(want, sizeof(want), "physical volume %s is missing",
		 lvm_pv_at(set, i)->uuid);
	assert(strcmp(data->unreadable, want) == 0);
	assert(lvm_lv_open(set, find_lv(set, "vg0", "data"), true, &img,
			   &err) == -ENOTSUP);
	assert(strstr(err.msg, "is missing"));
	lvm_set_free(set);
	close_sources(&s);
}

/* ------------------------------------------------------------------ */
/* Damage: a copy of whole.raw (vg-data) with its metadata edited. */

struct mda {
	uint64_t off, size, roff, rsize;
};

static void read_mda(int fd, struct mda *m)
{
	uint8_t h[512];

	assert(pread(fd, h, 512, 4096) == 512);
	m->off = 4096;
	m->size = *(uint64_t *)(h + 32);
	m->roff = *(uint64_t *)(h + 40);
	m->rsize = *(uint64_t *)(h + 48);
	assert(m->roff + m->rsize <= m->size);
}

/* Replaces the metadata text by text (same place), fixing the text and
 * header checksums unless crc_delta says to be off by that much. */
static void put_text(const char *path, const char *text, int crc_delta)
{
	int fd = open(path, O_RDWR | O_CLOEXEC);
	uint8_t h[512];
	struct mda m;
	uint32_t crc;
	size_t len = strlen(text) + 1;

	assert(fd >= 0);
	read_mda(fd, &m);
	assert(pwrite(fd, text, len, (off_t)(m.off + m.roff)) == (ssize_t)len);
	assert(pread(fd, h, 512, 4096) == 512);
	*(uint64_t *)(h + 48) = len;
	crc = lvm_crc(LVM_CRC_INITIAL, text, len) + (uint32_t)crc_delta;
	memcpy(h + 56, &crc, 4);
	crc = lvm_crc(LVM_CRC_INITIAL, h + 4, 508);
	memcpy(h, &crc, 4);
	assert(pwrite(fd, h, 512, 4096) == 512);
	close(fd);
}

static char *get_text(const char *path)
{
	int fd = open(path, O_RDONLY | O_CLOEXEC);
	struct mda m;
	char *t;

	assert(fd >= 0);
	read_mda(fd, &m);
	t = calloc(1, m.rsize + 1);
	assert(t);
	assert(pread(fd, t, m.rsize, (off_t)(m.off + m.roff)) ==
	       (ssize_t)m.rsize);
	close(fd);
	return t;
}

/* text with the first from (after the first after, if given) replaced. */
static char *edit(const char *text, const char *after, const char *from,
		  const char *to)
{
	const char *base = after ? strstr(text, after) : text;
	const char *at;
	char *out;

	assert(base);
	at = strstr(base, from);
	assert(at);
	out = malloc(strlen(text) + strlen(to) + 1);
	assert(out);
	memcpy(out, text, (size_t)(at - text));
	strcpy(out + (at - text), to);
	strcat(out, at + strlen(from));
	return out;
}

/* Scans the damaged copy alone; returns the set. */
static struct lvm_set *scan_file(const char *path, struct img **img_r)
{
	struct img_open_opts o = { .format = IMG_FORMAT_RAW,
				   .read_only = true };
	struct lvm_source src = { .name = "disk" };
	struct lvm_set *set;
	struct img_err err;

	assert(img_open(path, &o, img_r, &err) == 0);
	src.img = *img_r;
	assert(lvm_scan(&src, 1, &set) == 0);
	return set;
}

static void expect_vg_error(const char *path, const char *needle)
{
	struct img *img;
	struct lvm_set *set = scan_file(path, &img);

	assert(lvm_nb_vgs(set) == 1);
	assert(lvm_vg_at(set, 0)->error);
	if (!strstr(lvm_vg_at(set, 0)->error, needle)) {
		fprintf(stderr, "error '%s' lacks '%s'\n",
			lvm_vg_at(set, 0)->error, needle);
		abort();
	}
	assert(lvm_nb_lvs(set) == 0);
	lvm_set_free(set);
	img_close(img);
}

static void check_damage(void)
{
	char bad[300], *text, *t2;
	struct lvm_set *set;
	struct img *img;
	size_t i1, i2;
	const char *why;

	snprintf(bad, sizeof(bad), "%s/bad.raw", work);
	assert(sh("cp --sparse=always %s %s", path_whole, bad) == 0);
	text = get_text(bad);
	assert(strstr(text, "vg-data {"));

	/* Garbage text with right checksums: the parser's reason. */
	put_text(bad, "vg-data {\n id = \"x\"\n seqno = ]\n", 0);
	expect_vg_error(bad, "line 3: expected a value");
	put_text(bad, "\x01\x02garbage", 0);
	expect_vg_error(bad, "line 1:");

	/* The text's checksum off by one. */
	put_text(bad, text, 1);
	expect_vg_error(bad, "vg-data has a bad checksum");
	put_text(bad, text, 0);
	set = scan_file(bad, &img);
	assert(!lvm_vg_at(set, 0)->error && lvm_nb_lvs(set) == 2);
	lvm_set_free(set);
	img_close(img);

	/* lv-2 moved past the end of the PV (pe_count 5 of 4 MiB). */
	t2 = edit(text, "lv-2 {", "\"pv0\", 2", "\"pv0\", 5");
	put_text(bad, t2, 0);
	free(t2);
	set = scan_file(bad, &img);
	i1 = find_lv(set, "vg-data", "lv-1");
	i2 = find_lv(set, "vg-data", "lv-2");
	assert(!lvm_lv_at(set, i1)->unreadable);
	why = lvm_lv_at(set, i2)->unreadable;
	assert(why && strstr(why, "segment 1 lies past the end of physical "
				  "volume"));
	lvm_set_free(set);
	img_close(img);

	/* lv-2 moved onto lv-1's extents: both refused. */
	t2 = edit(text, "lv-2 {", "\"pv0\", 2", "\"pv0\", 1");
	put_text(bad, t2, 0);
	free(t2);
	set = scan_file(bad, &img);
	i1 = find_lv(set, "vg-data", "lv-1");
	i2 = find_lv(set, "vg-data", "lv-2");
	assert(lvm_lv_at(set, i1)->unreadable && lvm_lv_at(set, i2)->unreadable);
	assert(strstr(lvm_lv_at(set, i1)->unreadable, "extents 1-1 of "
		      "physical volume"));
	assert(strstr(lvm_lv_at(set, i1)->unreadable, "belong to both lv-1 "
		      "and lv-2"));
	lvm_set_free(set);
	img_close(img);

	/* The label's checksum off by one. */
	put_text(bad, text, 0);
	{
		int fd = open(bad, O_RDWR | O_CLOEXEC);
		uint8_t sec[512];
		assert(fd >= 0);
		assert(pread(fd, sec, 512, 512) == 512);
		assert(memcmp(sec, "LABELONE", 8) == 0);
		sec[16]++;
		assert(pwrite(fd, sec, 512, 512) == 512);
		close(fd);
	}
	expect_vg_error(bad, "PV label in sector 1 has a bad checksum");
	set = scan_file(bad, &img);
	assert(lvm_source_is_pv(set, "disk"));
	assert(strcmp(lvm_vg_at(set, 0)->name, "vg-data") == 0);
	lvm_set_free(set);
	img_close(img);
	free(text);
	unlink(bad);
}

/* ------------------------------------------------------------------ */
/* A write through vg0/home lands at its extents and nowhere else. */

static uint8_t *read_file(const char *path, size_t *len_r)
{
	struct stat st;
	uint8_t *b;
	int fd = open(path, O_RDONLY | O_CLOEXEC);

	assert(fd >= 0 && fstat(fd, &st) == 0);
	b = malloc((size_t)st.st_size);
	assert(b);
	assert(pread(fd, b, (size_t)st.st_size, 0) == st.st_size);
	close(fd);
	*len_r = (size_t)st.st_size;
	return b;
}

static void check_write(void)
{
	struct sources s;
	struct lvm_set *set;
	struct img *img;
	struct img_err err;
	uint8_t *before, *after, *buf;
	size_t len, len2;
	uint64_t size = lv_size(&rep_vg0, "home");

	before = read_file(path_disk, &len);
	open_sources(&s, path_disk, true);
	assert(lvm_scan(s.src, s.n, &set) == 0);
	assert(lvm_lv_open(set, find_lv(set, "vg0", "home"), false, &img,
			   &err) == 0);
	assert(!img_is_read_only(img));
	buf = malloc(size);
	assert(buf);
	for (uint64_t o = 0; o < size; o++)
		buf[o] = pattern(9, o);
	/* In odd pieces, one across the segment edge. */
	assert(img_pwrite(img, buf, 12345, 0) == 0);
	assert(img_pwrite(img, buf + 12345, size - 12345, 12345) == 0);
	assert(img_pwrite(img, buf, 1, size) == -ENOSPC);
	assert(img_flush(img) == 0);
	img_close(img);
	lvm_set_free(set);
	close_sources(&s);

	/* The expected image: before, with home's pieces (as lvm2 reported
	 * them) holding the new pattern. */
	for (size_t i = 0; i < rep_vg0.n; i++) {
		const struct piece *p = &rep_vg0.p[i];
		if (strcmp(p->lv, "home") != 0)
			continue;
		for (uint64_t o = 0; o < p->seg_len; o++) {
			unsigned k;
			uint64_t dev_off;
			piece_map(&rep_vg0, p, o, &k, &dev_off);
			/* vg0's PVs are p2 and p3. */
			uint64_t at = dev_off;
			if (strcmp(p->dev[k], dev_p2) == 0)
				at += part_start[1];
			else if (strcmp(p->dev[k], dev_p3) == 0)
				at += part_start[2];
			else
				assert(!"home outside p2 and p3");
			assert(at < len);
			before[at] = pattern(9, p->lv_off + o);
		}
	}
	after = read_file(path_disk, &len2);
	assert(len == len2);
	assert(memcmp(before, after, len) == 0);
	free(before);
	free(after);
	free(buf);
	/* Put home's first pattern back for the checks that follow. */
	open_sources(&s, path_disk, true);
	assert(lvm_scan(s.src, s.n, &set) == 0);
	assert(lvm_lv_open(set, find_lv(set, "vg0", "home"), false, &img,
			   &err) == 0);
	buf = malloc(size);
	for (uint64_t o = 0; o < size; o++)
		buf[o] = pattern(2, o);
	assert(img_pwrite(img, buf, size, 0) == 0);
	free(buf);
	img_close(img);
	lvm_set_free(set);
	close_sources(&s);
}

/* ------------------------------------------------------------------ */
/* Hand-made metadata: types lvm2 cannot make here without device-mapper
 * (mirror, raid1, thin, snapshot), through the image of vg-data. */

static void check_handmade(void)
{
	char bad[300], *text, *t2;
	struct lvm_set *set;
	struct img *img, *lvimg;
	struct img_err err;
	size_t i;
	const char *lvs_mirror =
		"logical_volumes {\n"
		"m { id = \"m\" status = [\"READ\", \"WRITE\", \"VISIBLE\"]\n"
		"  segment_count = 1\n"
		"  segment1 { start_extent = 0 extent_count = 1 type = "
		"\"mirror\" mirror_count = 2\n"
		"   mirrors = [ \"m_mimage_0\", 0, \"m_mimage_1\", 0 ] } }\n"
		"m_mimage_0 { id = \"a\" status = [\"READ\"] segment_count = 1\n"
		"  segment1 { start_extent = 0 extent_count = 1 type = "
		"\"striped\" stripe_count = 1 stripes = [ \"pv9\", 0 ] } }\n"
		"m_mimage_1 { id = \"b\" status = [\"READ\"] segment_count = 1\n"
		"  segment1 { start_extent = 0 extent_count = 1 type = "
		"\"striped\" stripe_count = 1 stripes = [ \"pv0\", 1 ] } }\n"
		"r { id = \"r\" status = [\"READ\", \"WRITE\", \"VISIBLE\"]\n"
		"  segment_count = 1\n"
		"  segment1 { start_extent = 0 extent_count = 1 type = "
		"\"raid1\" device_count = 2\n"
		"   raids = [ \"r_rmeta_0\", \"r_rimage_0\", \"r_rmeta_1\", "
		"\"r_rimage_1\" ] } }\n"
		"r_rimage_0 { id = \"c\" status = [\"READ\"] segment_count = 1\n"
		"  segment1 { start_extent = 0 extent_count = 1 type = "
		"\"striped\" stripe_count = 1 stripes = [ \"pv0\", 0 ] } }\n"
		"r_rimage_1 { id = \"d\" status = [\"READ\"] segment_count = 1\n"
		"  segment1 { start_extent = 0 extent_count = 1 type = "
		"\"striped\" stripe_count = 1 stripes = [ \"pv0\", 2 ] } }\n"
		"t { id = \"t\" status = [\"READ\", \"VISIBLE\"] segment_count = 1\n"
		"  segment1 { start_extent = 0 extent_count = 1 type = \"thin\""
		" thin_pool = \"pool\" device_id = 1 } }\n"
		"s { id = \"s\" status = [\"READ\", \"VISIBLE\"] segment_count = 1\n"
		"  segment1 { start_extent = 0 extent_count = 1 type = "
		"\"striped\" stripe_count = 1 stripes = [ \"pv0\", 3 ] } }\n"
		"snapshot0 { id = \"z\" status = [\"READ\"] segment_count = 1\n"
		"  segment1 { start_extent = 0 extent_count = 1 type = "
		"\"snapshot\" chunk_size = 8 origin = \"m\" cow_store = \"s\" } }\n"
		"}\n}\n";
	char *cut;

	snprintf(bad, sizeof(bad), "%s/hand.raw", work);
	assert(sh("cp --sparse=always %s %s", path_whole, bad) == 0);
	text = get_text(bad);
	/* Keep the VG header and PV list, replace the volumes; pv9 is a
	 * PV the VG does not have (an unknown name). */
	cut = strstr(text, "logical_volumes {");
	assert(cut);
	*cut = '\0';
	t2 = malloc(strlen(text) + strlen(lvs_mirror) + 1);
	strcpy(t2, text);
	strcat(t2, lvs_mirror);
	put_text(bad, t2, 0);
	set = scan_file(bad, &img);
	assert(lvm_nb_lvs(set) == 4); /* m, r, s, t */
	/* m: leg 0 names an unknown PV; leg 1 holds lv-1's second extent. */
	i = find_lv(set, "vg-data", "m");
	assert(!lvm_lv_at(set, i)->unreadable);
	assert(strcmp(lvm_lv_at(set, i)->segment_types, "mirror") == 0);
	assert(lvm_lv_open(set, i, false, &lvimg, &err) == 0);
	assert(img_is_read_only(lvimg));
	{
		uint8_t *b = malloc(4 << 20);
		assert(img_pread(lvimg, b, 4 << 20, 0) == 0);
		for (uint64_t o = 0; o < (4 << 20); o += 4093)
			assert(b[o] == pattern(5, (4 << 20) + o));
		img_close(lvimg);
		/* r: raid1 from its first image (lv-1's first extent). */
		i = find_lv(set, "vg-data", "r");
		assert(!lvm_lv_at(set, i)->unreadable);
		assert(lvm_lv_open(set, i, true, &lvimg, &err) == 0);
		assert(img_pread(lvimg, b, 4 << 20, 0) == 0);
		for (uint64_t o = 0; o < (4 << 20); o += 4093)
			assert(b[o] == pattern(5, o));
		img_close(lvimg);
		free(b);
	}
	i = find_lv(set, "vg-data", "t");
	assert(strcmp(lvm_lv_at(set, i)->unreadable,
		      "thin volumes are not supported") == 0);
	i = find_lv(set, "vg-data", "s");
	assert(strcmp(lvm_lv_at(set, i)->unreadable,
		      "snapshot volumes are not supported") == 0);
	assert(lvm_lv_open(set, i, true, &lvimg, &err) == -ENOTSUP);
	lvm_set_free(set);
	img_close(img);
	free(t2);
	free(text);
	unlink(bad);
}

/* ------------------------------------------------------------------ */
/* The fuzz target's reproducers, run through the target itself, with
 * the outcome of each hand-made one checked. */
static const char *regress_name;

static const char *reason_of(struct lvm_set *set, const char *lv)
{
	for (size_t i = 0; i < lvm_nb_lvs(set); i++)
		if (strcmp(lvm_lv_at(set, i)->name, lv) == 0)
			return lvm_lv_at(set, i)->unreadable;
	assert(!"no such LV");
	return NULL;
}

static void check_regress(struct lvm_set *set)
{
	const char *n = regress_name;

	if (strcmp(n, "leg-loop") == 0) {
		assert(lvm_nb_lvs(set) == 1);
		assert(strcmp(reason_of(set, "m"), "no leg of segment 1 can be "
			      "read (its legs nest too deep or loop)") == 0);
	} else if (strcmp(n, "leg-chain-deep") == 0) {
		assert(lvm_nb_lvs(set) == 1);
		assert(strcmp(reason_of(set, "l0"), "no leg of segment 1 can "
			      "be read (its legs nest too deep or loop)") == 0);
	} else if (strcmp(n, "nesting-deep") == 0) {
		assert(lvm_nb_vgs(set) == 1 && lvm_nb_lvs(set) == 0);
		assert(strcmp(lvm_vg_at(set, 0)->error, "p1: metadata text: "
			      "line 27: sections nested too deep") == 0);
	} else if (strcmp(n, "segment-count-huge") == 0) {
		/* ".." is not listed. */
		assert(lvm_nb_lvs(set) == 3);
		assert(strcmp(reason_of(set, "v"), "its segment_count is "
			      "missing or wrong") == 0);
		assert(strcmp(reason_of(set, "w"), "its segments do not "
			      "follow each other from extent 0") == 0);
		assert(strcmp(reason_of(set, "x"), "segment1: stripe size of "
			      "3 sectors does not divide its stripes") == 0);
	}
}

static void replay(const char *path)
{
	static uint8_t buf[1 << 20];
	size_t n = regress_read(path, buf, sizeof(buf));

	regress_name = strrchr(path, '/') + 1;
	fuzz_lvm_check = check_regress;
	fuzz_lvm_one(buf, n);
	fuzz_lvm_check = NULL;
}

/* ------------------------------------------------------------------ */
/* The text parser and the compose driver on their own. */

static void expect_parse_error(const char *text, const char *needle)
{
	struct lvm_node *root = NULL;
	char why[256];

	assert(lvm_text_parse(text, strlen(text), NULL, &root, why, sizeof(why)) ==
	       -EINVAL);
	if (!strstr(why, needle)) {
		fprintf(stderr, "parse error '%s' lacks '%s'\n", why, needle);
		abort();
	}
}

static void check_parser(void)
{
	const char *ok = "# comment\nvg-1 {\n id = \"a\\\"b\\\\c\" # tail\n"
			 " n = -5 f = 2.5\n arr = [ 1, \"x\", ]\n"
			 " empty = [] sub { k = 9223372036854775807 }\n}\n"
			 "\0after = garbage {";
	struct lvm_node *root;
	const struct lvm_node *vg, *arr;
	char why[256], deep[200];
	int64_t v;

	assert(lvm_text_parse(ok, 200, NULL, &root, why, sizeof(why)) == 0);
	vg = lvm_node_get(root, "vg-1");
	assert(vg && vg->kind == LVM_NODE_SECTION);
	assert(strcmp(lvm_node_str(vg, "id"), "a\"b\\c") == 0);
	assert(lvm_node_int(vg, "n", &v) && v == -5);
	assert(lvm_node_get(vg, "f")->kind == LVM_NODE_FLOAT);
	arr = lvm_node_get(vg, "arr");
	assert(arr->kind == LVM_NODE_ARRAY && arr->nb_children == 2);
	assert(lvm_node_get(vg, "empty")->nb_children == 0);
	assert(lvm_node_int(lvm_node_get(vg, "sub"), "k", &v) &&
	       v == INT64_MAX);
	assert(!lvm_node_get(root, "after"));
	lvm_text_free(root);

	expect_parse_error("a = 9223372036854775808\n", "out of range");
	expect_parse_error("a = \"open\n", "unterminated string");
	expect_parse_error("a {\n b = 1\n", "missing '}'");
	expect_parse_error("}\n", "unexpected '}'");
	expect_parse_error("a = [ 1 2 ]", "expected ',' or ']'");
	expect_parse_error("\"quoted\" { }", "expected a name");
	expect_parse_error("a b", "expected '=' or '{'");
	expect_parse_error("a = x1", "expected a number");
	memset(deep, 0, sizeof(deep));
	for (int k = 0; k < 40; k++)
		strcat(deep, "s{");
	expect_parse_error(deep, "nested too deep");
	/* lvm2's checksum of nothing is its initial value. */
	assert(lvm_crc(LVM_CRC_INITIAL, "", 0) == LVM_CRC_INITIAL);
}

static void check_compose(void)
{
	struct img_open_opts o = { .format = IMG_FORMAT_RAW };
	char path[300];
	struct img *a, *c;
	struct img_err err;
	struct img_stripe st[2];
	struct img_segment seg[2];
	uint8_t buf[8192];

	snprintf(path, sizeof(path), "%s/compose.raw", work);
	assert(sh("truncate -s 64K %s", path) == 0);
	assert(img_open(path, &o, &a, &err) == 0);
	st[0] = (struct img_stripe){ .src = a, .src_off = 0 };
	st[1] = (struct img_stripe){ .src = a, .src_off = 32768 };
	/* Two 4 KiB stripes of 8 KiB each: 16 KiB. */
	seg[0] = (struct img_segment){ .start = 0, .len = 16384,
				       .nb_stripes = 2, .stripe_bytes = 4096,
				       .stripes = st };
	assert(img_compose_open("t", seg, 1, false, &c) == 0);
	assert(img_size(c) == 16384);
	for (int k = 0; k < 8192; k++)
		buf[k] = (uint8_t)(k / 4096 + 1);
	assert(img_pwrite(c, buf, 8192, 0) == 0);
	assert(img_pread(a, buf, 4096, 32768) == 0 && buf[0] == 2);
	assert(img_pread(a, buf, 4096, 0) == 0 && buf[4095] == 1);
	img_close(c);
	/* Bad tables. */
	seg[0].len = 12288; /* not a multiple of 2 x 4 KiB */
	assert(img_compose_open("t", seg, 1, false, &c) == -EINVAL);
	seg[0].len = 16384;
	seg[1] = (struct img_segment){ .start = 20000, .len = 4096,
				       .nb_stripes = 1, .stripes = st };
	assert(img_compose_open("t", seg, 2, false, &c) == -EINVAL); /* gap */
	seg[1].start = 16384;
	st[1].src_off = 65536 - 4096; /* stripe 1 runs past the source */
	assert(img_compose_open("t", seg, 1, false, &c) == -EINVAL);
	assert(img_compose_open("t", seg, 0, false, &c) == -EINVAL);
	st[1].src_off = 32768;
	assert(img_compose_open("t", seg, 2, true, &c) == 0);
	assert(img_size(c) == 20480);
	assert(img_pwrite(c, buf, 1, 0) == -EROFS);
	assert(img_pread(c, buf, 4096, 16384) == 0 && buf[0] == 1);
	img_close(c);
	img_close(a);
	unlink(path);
}

static int run_tests(void)
{
	char qcow[300];
	size_t n;

	n = for_each_regress_file("fuzz-lvm", replay);
	fprintf(stderr, "test-lvm: %zu fuzz reproducers replayed\n", n);
	assert(n >= 4);
	check_parser();
	check_compose();
	build_images();
	check_all(path_disk);
	check_missing_pv();
	check_damage();
	check_handmade();
	check_write();
	snprintf(qcow, sizeof(qcow), "%s/disk.qcow2", work);
	assert(sh("qemu-img convert -O qcow2 %s %s", path_disk, qcow) == 0);
	check_all(qcow);
	fprintf(stderr, "test-lvm: ok\n");
	return 0;
}

int main(void)
{
	pid_t pid;
	int st;

	if (getuid() != 0 || sh("command -v pvcreate lvcreate losetup sfdisk "
				"qemu-img >/dev/null 2>&1 && test -e "
				"/dev/loop-control") != 0) {
		fprintf(stderr, "test-lvm: needs root, lvm2, losetup, sfdisk "
				"and qemu-img; skipped\n");
		return 77;
	}
	snprintf(work, sizeof(work), "/tmp/test-lvm-XXXXXX");
	assert(mkdtemp(work));
	assert(sh("mkdir -p %s/etc", work) == 0);
	/* The tests run in a child so that the loop devices are detached
	 * and the files removed whatever happens to it. */
	pid = fork();
	assert(pid >= 0);
	if (pid == 0)
		exit(run_tests());
	assert(waitpid(pid, &st, 0) == pid);
	{
		char p[300];
		snprintf(p, sizeof(p), "%s/disk.raw", work);
		loop_detach_all(p);
		snprintf(p, sizeof(p), "%s/whole.raw", work);
		loop_detach_all(p);
		snprintf(p, sizeof(p), "%s/wrap.raw", work);
		loop_detach_all(p);
	}
	sh("rm -rf %s", work);
	if (!WIFEXITED(st) || WEXITSTATUS(st) != 0) {
		fprintf(stderr, "test-lvm: failed (status 0x%x)\n", st);
		return 1;
	}
	return 0;
}
