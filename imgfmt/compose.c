/* compose.c: an image handle made of byte ranges of other handles.
 *
 * A composed image (an LVM2 logical volume) is a list of segments that
 * tile [0, size) in order. A segment maps its bytes onto k sources
 * (stripes): with k = 1 the segment is a straight run of the one source
 * (linear); with k > 1 the segment is cut into chunks of stripe_bytes
 * dealt round-robin over the sources, chunk c going to stripe c % k at
 * chunk (c / k) of that stripe (dm-stripe's layout). Every request is cut
 * at segment and chunk edges and each piece is forwarded with img_pread /
 * img_pwrite / img_block_status / ... to its source, so the sources' own
 * checks apply too.
 *
 * Invariants, checked at open: segments are contiguous from 0, each has
 * len > 0, at least one stripe, a striped segment's len is a multiple of
 * k * stripe_bytes, and every stripe's range [src_off, src_off + len / k)
 * lies inside its source. So no request can reach outside the ranges the
 * caller mapped: a write lands in those ranges and nowhere else.
 *
 * The sources are borrowed (they must outlive the handle), except those
 * handed over with img_compose_own, which are closed with it (the legs
 * of a mirror are composed images themselves). The segment table is
 * immutable after open, so the handle is as thread-safe as its sources.
 *
 * What it does not do: snapshots, or write to several copies (a mirror
 * is composed over one leg; the caller opens it read-only).
 */
#include "imgfmt-int.h"

#include "checked.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>

struct compose_seg {
	uint64_t start, len;
	unsigned nb_stripes;
	uint64_t stripe_bytes; /* chunk size; unused when nb_stripes == 1 */
	struct img_stripe *stripes;
};

struct compose_state {
	struct compose_seg *segs;
	size_t nb_segs;
	struct img **owned;
	size_t nb_owned;
	struct img **srcs;  /* each distinct source once, for flush */
	size_t nb_srcs;
};

/* Bounds what a hostile table can make us allocate. */
#define COMPOSE_MAX_SEGS (1u << 20)
#define COMPOSE_MAX_STRIPES 1024u

static struct compose_state *state(struct img *img)
{
	return img->priv;
}

static void compose_free_state(struct compose_state *cs)
{
	if (!cs)
		return;
	for (size_t i = 0; i < cs->nb_segs; i++)
		free(cs->segs[i].stripes);
	for (size_t i = 0; i < cs->nb_owned; i++)
		img_close(cs->owned[i]);
	free(cs->owned);
	free(cs->srcs);
	free(cs->segs);
	free(cs);
}

static int cmp_ptr(const void *a, const void *b)
{
	uintptr_t x = (uintptr_t)*(struct img *const *)a;
	uintptr_t y = (uintptr_t)*(struct img *const *)b;

	return x < y ? -1 : x > y;
}

/* Lists every source once: sorted, then duplicates dropped. */
static int collect_sources(struct compose_state *cs)
{
	size_t n = 0, u = 0;

	for (size_t i = 0; i < cs->nb_segs; i++)
		n += cs->segs[i].nb_stripes;
	cs->srcs = calloc(n, sizeof(*cs->srcs));
	if (!cs->srcs)
		return -ENOMEM;
	for (size_t i = 0; i < cs->nb_segs; i++)
		for (unsigned k = 0; k < cs->segs[i].nb_stripes; k++)
			cs->srcs[u++] = cs->segs[i].stripes[k].src;
	qsort(cs->srcs, n, sizeof(*cs->srcs), cmp_ptr);
	u = 0;
	for (size_t i = 0; i < n; i++)
		if (u == 0 || cs->srcs[u - 1] != cs->srcs[i])
			cs->srcs[u++] = cs->srcs[i];
	cs->nb_srcs = u;
	return 0;
}

static int check_segment(const struct img_segment *s, uint64_t expect_start)
{
	uint64_t per_stripe;

	if (s->start != expect_start || s->len == 0 || s->nb_stripes == 0 ||
	    s->nb_stripes > COMPOSE_MAX_STRIPES || !s->stripes)
		return -EINVAL;
	if (s->nb_stripes > 1) {
		uint64_t row;
		if (s->stripe_bytes == 0 ||
		    MUL_OVERFLOW(s->stripe_bytes, (uint64_t)s->nb_stripes,
				 &row) ||
		    s->len % row != 0)
			return -EINVAL;
	}
	per_stripe = s->len / s->nb_stripes;
	for (unsigned k = 0; k < s->nb_stripes; k++) {
		if (!s->stripes[k].src ||
		    !range_within(s->stripes[k].src_off, per_stripe,
				  s->stripes[k].src->size))
			return -EINVAL;
	}
	return 0;
}

int img_compose_open(const char *name, const struct img_segment *segs,
		     size_t nb, bool read_only, struct img **img_r)
{
	struct compose_state *cs;
	struct img *img;
	uint64_t end = 0;
	bool ro = read_only;

	if (nb == 0 || nb > COMPOSE_MAX_SEGS)
		return -EINVAL;
	for (size_t i = 0; i < nb; i++) {
		int ret = check_segment(&segs[i], end);
		if (ret < 0)
			return ret;
		if (ADD_OVERFLOW(end, segs[i].len, &end))
			return -EINVAL;
		for (unsigned k = 0; k < segs[i].nb_stripes; k++)
			ro = ro || segs[i].stripes[k].src->read_only;
	}
	cs = calloc(1, sizeof(*cs));
	if (!cs)
		return -ENOMEM;
	cs->segs = calloc(nb, sizeof(*cs->segs));
	if (!cs->segs) {
		compose_free_state(cs);
		return -ENOMEM;
	}
	for (size_t i = 0; i < nb; i++) {
		struct compose_seg *d = &cs->segs[i];
		d->start = segs[i].start;
		d->len = segs[i].len;
		d->nb_stripes = segs[i].nb_stripes;
		d->stripe_bytes = segs[i].nb_stripes > 1 ? segs[i].stripe_bytes
							 : segs[i].len;
		d->stripes = calloc(d->nb_stripes, sizeof(*d->stripes));
		cs->nb_segs = i + 1;
		if (!d->stripes) {
			compose_free_state(cs);
			return -ENOMEM;
		}
		memcpy(d->stripes, segs[i].stripes,
		       d->nb_stripes * sizeof(*d->stripes));
	}
	if (collect_sources(cs) < 0) {
		compose_free_state(cs);
		return -ENOMEM;
	}
	/* The handle takes the options of the first source: a composed
	 * image is as cached and as trusted as what it is made of. */
	img = img_alloc(&segs[0].stripes[0].src->opts);
	if (!img) {
		compose_free_state(cs);
		return -ENOMEM;
	}
	img->path = strdup(name ? name : "composed volume");
	if (!img->path) {
		compose_free_state(cs);
		img_free_handle(img);
		return -ENOMEM;
	}
	img->ops = &img_compose_ops;
	img->priv = cs;
	img->read_only = ro;
	img->size = end;
	*img_r = img;
	return 0;
}

int img_compose_own(struct img *img, struct img *src)
{
	struct compose_state *cs;
	struct img **n;

	if (img->ops != &img_compose_ops)
		return -EINVAL;
	cs = state(img);
	n = realloc(cs->owned, (cs->nb_owned + 1) * sizeof(*n));
	if (!n)
		return -ENOMEM;
	n[cs->nb_owned++] = src;
	cs->owned = n;
	return 0;
}

static void compose_close(struct img *img)
{
	compose_free_state(img->priv);
	img->priv = NULL;
}

/* The segment holding off (which img.c has checked is < size). */
static const struct compose_seg *find_seg(struct compose_state *cs,
					  uint64_t off)
{
	size_t lo = 0, hi = cs->nb_segs;

	while (hi - lo > 1) {
		size_t mid = lo + (hi - lo) / 2;
		if (cs->segs[mid].start <= off)
			lo = mid;
		else
			hi = mid;
	}
	return &cs->segs[lo];
}

/* Maps off to a source and an offset there, and says how many bytes from
 * off stay contiguous on that source (at most len). */
static void map(struct img *img, uint64_t off, uint64_t len,
		struct img **src_r, uint64_t *src_off_r, uint64_t *run_r)
{
	const struct compose_seg *s = find_seg(state(img), off);
	uint64_t in = off - s->start;
	uint64_t chunk = in / s->stripe_bytes;
	uint64_t within = in % s->stripe_bytes;
	const struct img_stripe *st = &s->stripes[chunk % s->nb_stripes];

	*src_r = st->src;
	*src_off_r = st->src_off + (chunk / s->nb_stripes) * s->stripe_bytes +
		     within;
	*run_r = MIN(len, s->stripe_bytes - within);
}

static int compose_pread(struct img *img, void *buf, size_t len, uint64_t off)
{
	char *p = buf;

	while (len > 0) {
		struct img *src;
		uint64_t src_off, run;
		int ret;

		map(img, off, len, &src, &src_off, &run);
		ret = img_pread(src, p, (size_t)run, src_off);
		if (ret < 0)
			return ret;
		p += run;
		off += run;
		len -= (size_t)run;
	}
	return 0;
}

static int compose_pwrite(struct img *img, const void *buf, size_t len,
			  uint64_t off)
{
	const char *p = buf;

	while (len > 0) {
		struct img *src;
		uint64_t src_off, run;
		int ret;

		map(img, off, len, &src, &src_off, &run);
		ret = img_pwrite(src, p, (size_t)run, src_off);
		if (ret < 0)
			return ret;
		p += run;
		off += run;
		len -= (size_t)run;
	}
	return 0;
}

static int compose_range_op(struct img *img, uint64_t off, uint64_t len,
			    int (*op)(struct img *, uint64_t, uint64_t))
{
	while (len > 0) {
		struct img *src;
		uint64_t src_off, run;
		int ret;

		map(img, off, len, &src, &src_off, &run);
		ret = op(src, src_off, run);
		if (ret < 0)
			return ret;
		off += run;
		len -= run;
	}
	return 0;
}

static int compose_discard(struct img *img, uint64_t off, uint64_t len)
{
	return compose_range_op(img, off, len, img_discard);
}

static int compose_write_zeroes(struct img *img, uint64_t off, uint64_t len)
{
	return compose_range_op(img, off, len, img_write_zeroes);
}

/* Flushes each distinct source once (a volume of many segments on one
 * PV must not flush the image once per segment). */
static int compose_flush(struct img *img)
{
	struct compose_state *cs = state(img);

	for (size_t i = 0; i < cs->nb_srcs; i++) {
		int ret = img_flush(cs->srcs[i]);
		if (ret < 0)
			return ret;
	}
	return 0;
}

/* The source resolves its own chain (and pins, when asked); the extent
 * is clipped to the piece that is contiguous there and keeps the depth
 * the source found. */
static int compose_block_status_pinned(struct img *img, uint64_t off,
				       uint64_t len, struct img_extent *ext_r,
				       struct img_pin *pin_r)
{
	struct img *src;
	uint64_t src_off, run;
	int ret;

	map(img, off, len, &src, &src_off, &run);
	ret = pin_r ? img_block_status_pinned(src, src_off, run, ext_r, pin_r)
		    : img_block_status(src, src_off, run, ext_r);
	if (ret < 0)
		return ret;
	ext_r->off = off;
	return 0;
}

static int compose_block_status(struct img *img, uint64_t off, uint64_t len,
				struct img_extent *ext_r)
{
	return compose_block_status_pinned(img, off, len, ext_r, NULL);
}

static int compose_get_info(struct img *img, struct img_info *info)
{
	struct compose_state *cs = state(img);

	info->format = "composed";
	info->virtual_size = img->size;
	img_info_add(info, "segments", "%zu", cs->nb_segs);
	return 0;
}

const struct img_ops img_compose_ops = {
	.name         = "compose",
	.close        = compose_close,
	.pread        = compose_pread,
	.pwrite       = compose_pwrite,
	.discard      = compose_discard,
	.write_zeroes = compose_write_zeroes,
	.flush        = compose_flush,
	.block_status = compose_block_status,
	.block_status_pinned = compose_block_status_pinned,
	.get_info     = compose_get_info,
};
