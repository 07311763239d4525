/* lvm.c: volume groups and logical volumes from the sources' metadata.
 *
 * lvm_scan reads every source (lvm-disk.c), keeps per VG (by VG UUID)
 * the good copy with the highest seqno across all PVs, and interprets it
 * (lvm2's text format, as vgcfgbackup writes it):
 *   VG { id seqno extent_size (sectors)
 *        physical_volumes { pvN { id dev_size pe_start pe_count } }
 *        logical_volumes { LV { id status [VISIBLE...] segment_count
 *          segmentN { start_extent extent_count type ... } } } }
 * Segment types read: "striped" (stripe_count, stripe_size in sectors,
 * stripes = [ "pvN", first_pe, ... ]; one stripe is linear), "mirror"
 * (mirrors = [ "leg", first_le, ... ]) and "raid1" (raids = [ "meta",
 * "image", ... ]) read from the first leg that is readable. Other types
 * (thin, thin-pool, snapshot, cache, raid5, ...) are listed as not
 * supported, and so is the copy-on-write store of a snapshot.
 *
 * Refused, with a reason in lvm_lv.unreadable and never a crash: an area
 * on a PV that is missing, past the PV's extents or its device's end,
 * overlapping another area (of any LV, on the same PV), segments that do
 * not tile the LV from extent 0, nesting deeper than LVM_MAX_NESTING. A
 * VG whose metadata is unusable everywhere has lvm_vg.error and no LVs.
 *
 * lvm_lv_open turns the resolved segments into an img_compose handle
 * (linear and striped areas map straight onto the PV sources at
 * pe_start + pe * extent_size; a mirror segment maps onto a composed
 * handle of its leg, owned by the volume's handle). Volumes read through
 * a mirror leg are opened read-only: a write to one leg would leave the
 * others stale.
 *
 * The set is immutable after scan; its strings live in the kept parse
 * trees or in the set's string list.
 */
#include "lvm-disk.h"

#include "checked.h"
#include "cleanup.h"

#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define LVM_MAX_NESTING 8
#define LVM_MAX_STRIPES 1024
#define LVM_MAX_SEGMENTS 100000
#define SECTOR 512u

enum seg_kind { SEG_STRIPED, SEG_MIRROR, SEG_UNSUPPORTED };

struct area {
	size_t pv;           /* index in the VG's pvs (striped) */
	uint64_t pe;         /* first extent on that PV */
	const char *lv_name; /* mirror/raid leg */
	uint64_t le;         /* first extent in the leg */
};

struct seg {
	uint64_t start_le, nb_le;
	enum seg_kind kind;
	const char *type;
	unsigned nb_areas;
	uint64_t stripe_bytes;
	struct area *areas;
	int leg;             /* mirror: the area read from, -1 until chosen */
	const struct lvm_node *node; /* its section in the metadata */
};

struct ilv {
	const char *name, *uuid;
	bool visible;
	struct seg *segs;
	size_t nb_segs;
	uint64_t nb_le;
	const char *unreadable;
	bool parsed;         /* its segments parsed (areas are real) */
	unsigned height;     /* levels of legs below it (0: none) */
	bool checked, checking;
};

struct ipv {
	const char *key;       /* "pv0" */
	const char *uuid;      /* as in the metadata, with dashes */
	int src;               /* source index, -1 when missing */
	uint64_t pe_start_bytes, pe_count, size_bytes;
};

struct ivg {
	struct lvm_vg pub;
	struct ipv *pvs;
	size_t nb_pvs;
	struct ilv *lvs;
	size_t nb_lvs;
	/* Indices of pvs by key and of lvs by name, for bsearch: hostile
	 * metadata may hold very many of both. */
	size_t *pv_by_key, *lv_by_name;
};

struct lv_ref {
	size_t vg, lv;
};

struct lvm_set {
	struct lvm_source *srcs;
	struct lvm_disk *disks;
	size_t nb_srcs;
	struct ivg *vgs;
	size_t nb_vgs;
	struct lvm_pv *pvs;
	size_t nb_pvs;
	struct lvm_lv *lvs;
	struct lv_ref *refs;
	size_t nb_lvs;
	char **strs;
	size_t nb_strs;
};

__attribute__((format(printf, 2, 3))) static const char *
set_printf(struct lvm_set *set, const char *fmt, ...)
{
	va_list ap;
	char *s = NULL, **n;
	int len;

	va_start(ap, fmt);
	len = vasprintf(&s, fmt, ap);
	va_end(ap);
	if (len < 0)
		return "out of memory";
	n = realloc(set->strs, (set->nb_strs + 1) * sizeof(*n));
	if (!n) {
		free(s);
		return "out of memory";
	}
	set->strs = n;
	set->strs[set->nb_strs++] = s;
	return s;
}

/* A UUID without its dashes into out (33 bytes); false when it is not
 * 32 UUID characters. */
static bool uuid_plain(const char *s, char *out)
{
	size_t n = 0;

	for (; *s; s++) {
		if (*s == '-')
			continue;
		if (!is_uuid_char(*s) || n >= 32)
			return false;
		out[n++] = *s;
	}
	out[n] = '\0';
	return n == 32;
}

/* qsort_r-free sorting of index arrays: the VG being sorted. */
static __thread const struct ivg *sort_vg;

static int cmp_pv_idx(const void *a, const void *b)
{
	return strcmp(sort_vg->pvs[*(const size_t *)a].key,
		      sort_vg->pvs[*(const size_t *)b].key);
}

static int cmp_lv_idx(const void *a, const void *b)
{
	return strcmp(sort_vg->lvs[*(const size_t *)a].name,
		      sort_vg->lvs[*(const size_t *)b].name);
}

static size_t *sorted_index(const struct ivg *vg, size_t n,
			    int (*cmp)(const void *, const void *))
{
	size_t *idx = calloc(n + 1, sizeof(*idx));

	if (!idx)
		return NULL;
	for (size_t i = 0; i < n; i++)
		idx[i] = i;
	sort_vg = vg;
	qsort(idx, n, sizeof(*idx), cmp);
	sort_vg = NULL;
	return idx;
}

static int find_pv(const struct ivg *vg, const char *key, size_t *i_r)
{
	size_t lo = 0, hi = vg->nb_pvs;

	while (lo < hi) {
		size_t mid = lo + (hi - lo) / 2;
		int c = strcmp(vg->pvs[vg->pv_by_key[mid]].key, key);
		if (c == 0) {
			*i_r = vg->pv_by_key[mid];
			return 0;
		}
		if (c < 0)
			lo = mid + 1;
		else
			hi = mid;
	}
	return -ENOENT;
}

static struct ilv *find_lv(struct ivg *vg, const char *name)
{
	size_t lo = 0, hi = vg->nb_lvs;

	if (!vg->lv_by_name)
		return NULL;
	while (lo < hi) {
		size_t mid = lo + (hi - lo) / 2;
		int c = strcmp(vg->lvs[vg->lv_by_name[mid]].name, name);
		if (c == 0)
			return &vg->lvs[vg->lv_by_name[mid]];
		if (c < 0)
			lo = mid + 1;
		else
			hi = mid;
	}
	return NULL;
}

/* A name lvm2 could have made, and that is safe as a file name. */
static bool valid_name(const char *s)
{
	return s[0] && s[0] != '-' && strlen(s) <= 127 &&
	       strcmp(s, ".") != 0 && strcmp(s, "..") != 0 &&
	       !strchr(s, '/');
}

static bool get_u64(const struct lvm_node *sec, const char *key,
		    uint64_t *v_r)
{
	int64_t v;

	if (!lvm_node_int(sec, key, &v) || v < 0)
		return false;
	*v_r = (uint64_t)v;
	return true;
}

/* Parses the areas of a striped segment. NULL or the reason. */
static const char *parse_striped(struct lvm_set *set, struct ivg *vg,
				 const struct lvm_node *sn, struct seg *sg)
{
	const struct lvm_node *arr = lvm_node_get(sn, "stripes"), *e;
	uint64_t k = 1, ssize = 0, area_bytes;

	if (strcmp(sg->type, "striped") == 0 &&
	    !get_u64(sn, "stripe_count", &k))
		return "it has no stripe_count";
	if (k == 0 || k > LVM_MAX_STRIPES)
		return set_printf(set, "stripe_count %" PRIu64
				  " is out of range", k);
	if (!arr || arr->kind != LVM_NODE_ARRAY || arr->nb_children != 2 * k)
		return set_printf(set, "stripes does not list %" PRIu64
				  " PVs and extents", k);
	if (sg->nb_le % k != 0)
		return set_printf(set, "%" PRIu64 " extents do not divide "
				  "into %" PRIu64 " stripes", sg->nb_le, k);
	if (k > 1) {
		if (!get_u64(sn, "stripe_size", &ssize) || ssize == 0 ||
		    ssize > (UINT64_MAX / SECTOR))
			return "it has no valid stripe_size";
		sg->stripe_bytes = ssize * SECTOR;
		if (MUL_OVERFLOW(sg->nb_le / k, vg->pub.extent_bytes,
				 &area_bytes) ||
		    area_bytes % sg->stripe_bytes != 0)
			return set_printf(set, "stripe size of %" PRIu64
					  " sectors does not divide its "
					  "stripes", ssize);
	}
	sg->areas = calloc((size_t)k, sizeof(*sg->areas));
	if (!sg->areas)
		return "out of memory";
	sg->nb_areas = (unsigned)k;
	e = arr->child;
	for (unsigned i = 0; i < k; i++, e = e->next->next) {
		if (e->kind != LVM_NODE_STRING || e->next->kind != LVM_NODE_INT ||
		    e->next->num < 0)
			return "stripes is not a list of PV names and extents";
		if (find_pv(vg, e->str, &sg->areas[i].pv) < 0)
			return set_printf(set, "it names an unknown PV %.64s",
					  e->str);
		sg->areas[i].pe = (uint64_t)e->next->num;
	}
	return NULL;
}

/* Parses the legs of a mirror or raid1 segment. NULL or the reason. */
static const char *parse_legs(struct lvm_set *set, const struct lvm_node *sn,
			      struct seg *sg)
{
	bool raid = strcmp(sg->type, "raid1") == 0;
	const struct lvm_node *arr =
		lvm_node_get(sn, raid ? "raids" : "mirrors"), *e;
	size_t n;

	if (!arr || arr->kind != LVM_NODE_ARRAY || arr->nb_children == 0 ||
	    arr->nb_children % 2 != 0 ||
	    arr->nb_children / 2 > LVM_MAX_STRIPES)
		return set_printf(set, "%s is not a list of legs",
				  raid ? "raids" : "mirrors");
	n = arr->nb_children / 2;
	sg->areas = calloc(n, sizeof(*sg->areas));
	if (!sg->areas)
		return "out of memory";
	sg->nb_areas = (unsigned)n;
	e = arr->child;
	for (size_t i = 0; i < n; i++, e = e->next->next) {
		if (raid) {
			/* [ meta, image ] pairs; the image holds the data,
			 * extent for extent from its start. */
			if (e->next->kind != LVM_NODE_STRING)
				return "raids is not a list of sub-volumes";
			sg->areas[i].lv_name = e->next->str;
			sg->areas[i].le = sg->start_le;
		} else {
			if (e->kind != LVM_NODE_STRING ||
			    e->next->kind != LVM_NODE_INT || e->next->num < 0)
				return "mirrors is not a list of legs";
			sg->areas[i].lv_name = e->str;
			sg->areas[i].le = (uint64_t)e->next->num;
		}
	}
	return NULL;
}

static int cmp_seg(const void *a, const void *b)
{
	const struct seg *x = a, *y = b;

	return x->start_le < y->start_le ? -1 : x->start_le > y->start_le;
}

static void parse_lv(struct lvm_set *set, struct ivg *vg,
		     const struct lvm_node *ln, struct ilv *lv)
{
	uint64_t count, next = 0;
	char key[32];

	lv->name = ln->key;
	lv->uuid = lvm_node_str(ln, "id");
	if (!lv->uuid)
		lv->uuid = "";
	/* A name that is not valid is not shown (it may be "..");
	 * it can still be a leg. */
	lv->visible = lvm_node_has_flag(ln, "status", "VISIBLE") &&
		      valid_name(lv->name);
	if (!get_u64(ln, "segment_count", &count) || count == 0 ||
	    count > LVM_MAX_SEGMENTS || count > ln->nb_children) {
		lv->unreadable = "its segment_count is missing or wrong";
		return;
	}
	lv->segs = calloc((size_t)count, sizeof(*lv->segs));
	if (!lv->segs) {
		lv->unreadable = "out of memory";
		return;
	}
	for (uint64_t i = 0; i < count; i++) {
		struct seg *sg = &lv->segs[i];
		const struct lvm_node *sn;
		const char *why = NULL;

		lv->nb_segs = (size_t)i + 1;
		sg->leg = -1;
		snprintf(key, sizeof(key), "segment%" PRIu64, i + 1);
		sn = lvm_node_get(ln, key);
		if (!sn || sn->kind != LVM_NODE_SECTION) {
			lv->unreadable = set_printf(set, "%s is missing", key);
			return;
		}
		sg->node = sn;
		sg->type = lvm_node_str(sn, "type");
		if (!get_u64(sn, "start_extent", &sg->start_le) ||
		    !get_u64(sn, "extent_count", &sg->nb_le) ||
		    sg->nb_le == 0 || !sg->type) {
			lv->unreadable = set_printf(set, "%s lacks start_extent,"
						    " extent_count or type",
						    key);
			return;
		}
		if (strcmp(sg->type, "striped") == 0 ||
		    strcmp(sg->type, "linear") == 0) {
			sg->kind = SEG_STRIPED;
			why = parse_striped(set, vg, sn, sg);
		} else if (strcmp(sg->type, "mirror") == 0 ||
			   strcmp(sg->type, "raid1") == 0) {
			sg->kind = SEG_MIRROR;
			why = parse_legs(set, sn, sg);
		} else {
			sg->kind = SEG_UNSUPPORTED;
		}
		if (why) {
			lv->unreadable = set_printf(set, "%s: %s", key, why);
			return;
		}
	}
	qsort(lv->segs, lv->nb_segs, sizeof(*lv->segs), cmp_seg);
	for (size_t i = 0; i < lv->nb_segs; i++) {
		if (lv->segs[i].start_le != next ||
		    ADD_OVERFLOW(next, lv->segs[i].nb_le, &next)) {
			lv->unreadable = "its segments do not follow each "
					 "other from extent 0";
			return;
		}
	}
	lv->nb_le = next;
	if (MUL_OVERFLOW(next, vg->pub.extent_bytes, &count)) {
		lv->unreadable = "it is too large";
		return;
	}
	lv->parsed = true;
}

/* Every striped area lies on a present PV, inside its extents and its
 * device; the first problem of each LV is kept. */
static void check_areas(struct lvm_set *set, struct ivg *vg)
{
	for (size_t l = 0; l < vg->nb_lvs; l++) {
		struct ilv *lv = &vg->lvs[l];

		for (size_t s = 0; s < lv->nb_segs && !lv->unreadable; s++) {
			struct seg *sg = &lv->segs[s];
			uint64_t per, end, end_bytes;

			if (sg->kind != SEG_STRIPED)
				continue;
			per = sg->nb_le / sg->nb_areas;
			for (unsigned a = 0; a < sg->nb_areas; a++) {
				struct ipv *pv = &vg->pvs[sg->areas[a].pv];

				if (pv->src < 0) {
					lv->unreadable = set_printf(set,
						"physical volume %s is missing",
						pv->uuid);
					break;
				}
				if (ADD_OVERFLOW(sg->areas[a].pe, per, &end) ||
				    MUL_OVERFLOW(end, vg->pub.extent_bytes,
						 &end_bytes) ||
				    ADD_OVERFLOW(end_bytes, pv->pe_start_bytes,
						 &end_bytes) ||
				    end > pv->pe_count ||
				    end_bytes > pv->size_bytes) {
					lv->unreadable = set_printf(set,
						"segment %zu lies past the end "
						"of physical volume %s "
						"(extents %" PRIu64 "-%" PRIu64
						" of %" PRIu64 ")", s + 1,
						pv->uuid, sg->areas[a].pe,
						sg->areas[a].pe + per - 1,
						pv->pe_count);
					break;
				}
			}
		}
	}
}

struct claim {
	size_t pv, lv;
	uint64_t pe, end;
};

static int cmp_claim(const void *a, const void *b)
{
	const struct claim *x = a, *y = b;

	if (x->pv != y->pv)
		return x->pv < y->pv ? -1 : 1;
	return x->pe < y->pe ? -1 : x->pe > y->pe;
}

/* No extent of a PV belongs to two areas: both owners are refused. */
static int check_overlaps(struct lvm_set *set, struct ivg *vg)
{
	CLEANUP_FREE struct claim *c = NULL;
	size_t n = 0, cap = 0;

	for (size_t l = 0; l < vg->nb_lvs; l++) {
		struct ilv *lv = &vg->lvs[l];

		for (size_t s = 0; s < lv->nb_segs; s++) {
			struct seg *sg = &lv->segs[s];

			if (!lv->parsed || sg->kind != SEG_STRIPED)
				continue;
			for (unsigned a = 0; a < sg->nb_areas; a++) {
				uint64_t per = sg->nb_le / sg->nb_areas;
				if (n == cap) {
					struct claim *nc;
					cap = cap ? 2 * cap : 64;
					nc = realloc(c, cap * sizeof(*c));
					if (!nc)
						return -ENOMEM;
					c = nc;
				}
				c[n].pv = sg->areas[a].pv;
				c[n].lv = l;
				c[n].pe = sg->areas[a].pe;
				if (ADD_OVERFLOW(c[n].pe, per, &c[n].end))
					c[n].end = UINT64_MAX;
				n++;
			}
		}
	}
	if (n == 0)
		return 0;
	qsort(c, n, sizeof(*c), cmp_claim);
	{
		/* The claim that reaches furthest so far on this PV. */
		size_t far = 0;
		for (size_t i = 1; i < n; i++) {
			if (c[i].pv != c[far].pv) {
				far = i;
				continue;
			}
			if (c[i].pe < c[far].end) {
				struct ilv *a = &vg->lvs[c[far].lv];
				struct ilv *b = &vg->lvs[c[i].lv];
				const char *why = set_printf(set,
					"extents %" PRIu64 "-%" PRIu64 " of "
					"physical volume %s belong to both %s "
					"and %s", c[i].pe,
					MIN(c[i].end, c[far].end) - 1,
					vg->pvs[c[i].pv].uuid, a->name,
					b->name);
				if (!a->unreadable)
					a->unreadable = why;
				if (!b->unreadable)
					b->unreadable = why;
			}
			if (c[i].end > c[far].end)
				far = i;
		}
	}
	return 0;
}

/* Whether lv can be read, choosing the legs of its mirror segments:
 * NULL or the reason. Bounded by depth, and a loop of legs is refused
 * through the checking mark. */
static const char *resolve(struct lvm_set *set, struct ivg *vg,
			   struct ilv *lv, unsigned depth)
{
	if (lv->checked)
		return lv->unreadable;
	if (lv->checking || depth > LVM_MAX_NESTING)
		return "its legs nest too deep or loop";
	lv->checking = true;
	for (size_t s = 0; s < lv->nb_segs && !lv->unreadable; s++) {
		struct seg *sg = &lv->segs[s];
		const char *first = NULL;

		if (sg->kind == SEG_UNSUPPORTED) {
			lv->unreadable = set_printf(set, "%s volumes are not "
						    "supported", sg->type);
			break;
		}
		if (sg->kind != SEG_MIRROR)
			continue;
		for (unsigned a = 0; a < sg->nb_areas; a++) {
			struct ilv *leg = find_lv(vg, sg->areas[a].lv_name);
			const char *why;
			uint64_t end;

			if (!leg)
				why = set_printf(set, "leg %.64s does not exist",
						 sg->areas[a].lv_name);
			else if (!(why = resolve(set, vg, leg, depth + 1)) &&
				 (ADD_OVERFLOW(sg->areas[a].le, sg->nb_le,
					       &end) ||
				  end > leg->nb_le))
				why = set_printf(set, "leg %.64s is too short",
						 leg->name);
			else if (!why && leg->height >= LVM_MAX_NESTING)
				why = "its legs nest too deep";
			if (!why) {
				sg->leg = (int)a;
				/* open_ilv goes no deeper than this. */
				lv->height = MAX(lv->height, leg->height + 1);
				break;
			}
			if (!first)
				first = why;
		}
		/* The first leg's own reason, once: not nested down a
		 * chain of legs. */
		if (sg->leg < 0 && first && strncmp(first, "no leg", 6) == 0)
			lv->unreadable = first;
		else if (sg->leg < 0)
			lv->unreadable = set_printf(set, "no leg of segment %zu"
						    " can be read (%s)", s + 1,
						    first ? first : "none");
	}
	lv->checking = false;
	lv->checked = true;
	return lv->unreadable;
}

/* "linear", "striped", "mirror,linear": each type once, in order. */
static const char *lv_types(struct lvm_set *set, const struct ilv *lv)
{
	char buf[256] = "";
	size_t used = 0;

	for (size_t s = 0; s < lv->nb_segs; s++) {
		const struct seg *sg = &lv->segs[s];
		const char *t = sg->type ? sg->type : "unknown";
		char *hit;
		size_t tl;

		if (sg->kind == SEG_STRIPED)
			t = sg->nb_areas == 1 ? "linear" : "striped";
		tl = strlen(t);
		hit = buf;
		while ((hit = strstr(hit, t))) {
			if ((hit == buf || hit[-1] == ',') &&
			    (hit[tl] == ',' || hit[tl] == '\0'))
				break;
			hit += tl;
		}
		if (hit || used + tl + 2 > sizeof(buf))
			continue;
		used += (size_t)snprintf(buf + used, sizeof(buf) - used,
					 "%s%s", used ? "," : "", t);
	}
	return set_printf(set, "%s", buf);
}

/* Builds a VG from its newest good copy. */
static int build_vg(struct lvm_set *set, struct ivg *vg,
		    const struct lvm_copy *c)
{
	const struct lvm_node *pvs, *lvs;
	int64_t ext;

	vg->pub.name = c->vg_name;
	vg->pub.uuid = c->vg_uuid;
	vg->pub.seqno = c->seqno;
	if (!valid_name(c->vg_name)) {
		vg->pub.error = set_printf(set, "volume group name '%.64s' is "
					   "not valid", c->vg_name);
		vg->pub.name = "";
		return 0;
	}
	for (size_t i = 0; i + 1 < set->nb_vgs; i++) {
		if (strcmp(set->vgs[i].pub.name, c->vg_name) == 0) {
			vg->pub.error = set_printf(set, "another volume group "
						   "(%s) has the same name",
						   set->vgs[i].pub.uuid);
			return 0;
		}
	}
	if (!lvm_node_int(c->vg, "extent_size", &ext) || ext <= 0 ||
	    (uint64_t)ext > (UINT64_MAX / SECTOR) / 2) {
		vg->pub.error = "the metadata has no valid extent_size";
		return 0;
	}
	vg->pub.extent_bytes = (uint64_t)ext * SECTOR;
	pvs = lvm_node_get(c->vg, "physical_volumes");
	lvs = lvm_node_get(c->vg, "logical_volumes");
	if (!pvs || pvs->kind != LVM_NODE_SECTION) {
		vg->pub.error = "the metadata lists no physical volumes";
		return 0;
	}
	vg->pvs = calloc(pvs->nb_children + 1, sizeof(*vg->pvs));
	if (!vg->pvs)
		return -ENOMEM;
	for (const struct lvm_node *p = pvs->child; p; p = p->next) {
		struct ipv *pv = &vg->pvs[vg->nb_pvs];
		char plain[33];

		if (p->kind != LVM_NODE_SECTION)
			continue;
		pv->key = p->key;
		pv->uuid = lvm_node_str(p, "id");
		pv->src = -1;
		if (!pv->uuid || !uuid_plain(pv->uuid, plain) ||
		    !get_u64(p, "pe_start", &pv->pe_start_bytes) ||
		    !get_u64(p, "pe_count", &pv->pe_count) ||
		    pv->pe_start_bytes > UINT64_MAX / SECTOR) {
			vg->pub.error = set_printf(set, "physical volume %.64s "
						   "lacks a valid id, pe_start "
						   "or pe_count", p->key);
			return 0;
		}
		pv->pe_start_bytes *= SECTOR;
		for (size_t s = 0; s < set->nb_srcs; s++) {
			if (set->disks[s].label_ok &&
			    strcmp(set->disks[s].pv_uuid, plain) == 0) {
				pv->src = (int)s;
				break;
			}
		}
		if (pv->src >= 0)
			pv->size_bytes = img_size(set->srcs[pv->src].img);
		else if (get_u64(p, "dev_size", &pv->size_bytes) &&
			 pv->size_bytes <= UINT64_MAX / SECTOR)
			pv->size_bytes *= SECTOR;
		vg->nb_pvs++;
	}
	vg->pv_by_key = sorted_index(vg, vg->nb_pvs, cmp_pv_idx);
	if (!vg->pv_by_key)
		return -ENOMEM;
	for (size_t i = 1; i < vg->nb_pvs; i++) {
		if (strcmp(vg->pvs[vg->pv_by_key[i - 1]].key,
			   vg->pvs[vg->pv_by_key[i]].key) == 0) {
			vg->pub.error = set_printf(set, "physical volume %.64s "
						   "is listed twice",
						   vg->pvs[vg->pv_by_key[i]].key);
			vg->nb_pvs = 0;
			return 0;
		}
	}
	if (!lvs || lvs->kind != LVM_NODE_SECTION)
		return 0; /* a VG without volumes */
	vg->lvs = calloc(lvs->nb_children + 1, sizeof(*vg->lvs));
	if (!vg->lvs)
		return -ENOMEM;
	for (const struct lvm_node *l = lvs->child; l; l = l->next) {
		if (l->kind != LVM_NODE_SECTION)
			continue;
		parse_lv(set, vg, l, &vg->lvs[vg->nb_lvs++]);
	}
	vg->lv_by_name = sorted_index(vg, vg->nb_lvs, cmp_lv_idx);
	if (!vg->lv_by_name)
		return -ENOMEM;
	/* Two volumes of one name: neither is trusted. */
	for (size_t i = 1; i < vg->nb_lvs; i++) {
		struct ilv *a = &vg->lvs[vg->lv_by_name[i - 1]];
		struct ilv *b = &vg->lvs[vg->lv_by_name[i]];
		if (strcmp(a->name, b->name) == 0) {
			a->unreadable = b->unreadable =
				"two volumes have this name";
			a->parsed = b->parsed = false;
		}
	}
	/* The copy-on-write store of a snapshot reads as its raw
	 * exception table: refuse it rather than show that. */
	for (size_t i = 0; i < vg->nb_lvs; i++) {
		for (size_t s = 0; s < vg->lvs[i].nb_segs; s++) {
			const struct seg *sg = &vg->lvs[i].segs[s];
			const char *cs;
			struct ilv *cow;
			if (!sg->type || strcmp(sg->type, "snapshot") != 0)
				continue;
			cs = lvm_node_str(sg->node, "cow_store");
			cow = cs ? find_lv(vg, cs) : NULL;
			if (cow)
				cow->unreadable = "snapshot volumes are not "
						  "supported";
		}
	}
	check_areas(set, vg);
	if (check_overlaps(set, vg) < 0)
		return -ENOMEM;
	for (size_t i = 0; i < vg->nb_lvs; i++)
		resolve(set, vg, &vg->lvs[i], 0);
	return 0;
}

static int add_error_vg(struct lvm_set *set, const char *name,
			const char *uuid, const char *why)
{
	struct ivg *n;

	/* One entry per VG: the first reason found is kept. */
	for (size_t i = 0; i < set->nb_vgs; i++)
		if (uuid && set->vgs[i].pub.uuid &&
		    strcmp(set->vgs[i].pub.uuid, uuid) == 0)
			return 0;
	n = realloc(set->vgs, (set->nb_vgs + 1) * sizeof(*n));
	if (!n)
		return -ENOMEM;
	set->vgs = n;
	memset(&n[set->nb_vgs], 0, sizeof(*n));
	n[set->nb_vgs].pub.name = name ? name : "";
	n[set->nb_vgs].pub.uuid = uuid ? uuid : "";
	n[set->nb_vgs].pub.error = set_printf(set, "%s", why);
	set->nb_vgs++;
	return 0;
}

static bool vg_known(const struct lvm_set *set, const char *uuid)
{
	for (size_t i = 0; i < set->nb_vgs; i++)
		if (strcmp(set->vgs[i].pub.uuid, uuid) == 0)
			return true;
	return false;
}

struct sorted_lv {
	struct lvm_lv pub;
	struct lv_ref ref;
};

static int cmp_lv(const void *a, const void *b)
{
	const struct sorted_lv *x = a, *y = b;
	int c = strcmp(x->pub.vg_name, y->pub.vg_name);

	return c ? c : strcmp(x->pub.name, y->pub.name);
}

static int publish(struct lvm_set *set)
{
	size_t nb_pvs = 0, nb_lvs = 0;

	for (size_t v = 0; v < set->nb_vgs; v++) {
		nb_pvs += set->vgs[v].nb_pvs;
		for (size_t l = 0; l < set->vgs[v].nb_lvs; l++)
			nb_lvs += set->vgs[v].lvs[l].visible;
	}
	set->pvs = calloc(nb_pvs + 1, sizeof(*set->pvs));
	set->lvs = calloc(nb_lvs + 1, sizeof(*set->lvs));
	set->refs = calloc(nb_lvs + 1, sizeof(*set->refs));
	if (!set->pvs || !set->lvs || !set->refs)
		return -ENOMEM;
	for (size_t v = 0; v < set->nb_vgs; v++) {
		struct ivg *vg = &set->vgs[v];

		for (size_t p = 0; p < vg->nb_pvs; p++) {
			struct lvm_pv *o = &set->pvs[set->nb_pvs++];
			o->vg_name = vg->pub.name;
			o->uuid = vg->pvs[p].uuid;
			o->source = vg->pvs[p].src >= 0
					    ? set->srcs[vg->pvs[p].src].name
					    : NULL;
			o->size_bytes = vg->pvs[p].size_bytes;
		}
		for (size_t l = 0; l < vg->nb_lvs; l++) {
			struct ilv *lv = &vg->lvs[l];
			struct lvm_lv *o;

			if (!lv->visible)
				continue;
			o = &set->lvs[set->nb_lvs];
			o->vg_name = vg->pub.name;
			o->name = lv->name;
			o->vg_uuid = vg->pub.uuid;
			o->uuid = lv->uuid;
			o->size_bytes = lv->nb_le * vg->pub.extent_bytes;
			o->segment_types = lv_types(set, lv);
			o->unreadable = lv->unreadable;
			o->nb_segments = lv->nb_segs;
			set->refs[set->nb_lvs].vg = v;
			set->refs[set->nb_lvs].lv = l;
			set->nb_lvs++;
		}
	}
	/* Sort the public entries and their references together. */
	{
		CLEANUP_FREE struct sorted_lv *tmp =
			calloc(set->nb_lvs + 1, sizeof(*tmp));
		if (!tmp)
			return -ENOMEM;
		for (size_t i = 0; i < set->nb_lvs; i++) {
			tmp[i].pub = set->lvs[i];
			tmp[i].ref = set->refs[i];
		}
		qsort(tmp, set->nb_lvs, sizeof(*tmp), cmp_lv);
		for (size_t i = 0; i < set->nb_lvs; i++) {
			set->lvs[i] = tmp[i].pub;
			set->refs[i] = tmp[i].ref;
		}
	}
	return 0;
}

int lvm_scan(const struct lvm_source *srcs, size_t nb_srcs,
	     struct lvm_set **set_r)
{
	struct lvm_set *set;
	size_t budget = LVM_SCAN_MAX_NODES;
	int ret = -ENOMEM;

	set = calloc(1, sizeof(*set));
	if (!set)
		return -ENOMEM;
	set->srcs = calloc(nb_srcs + 1, sizeof(*set->srcs));
	set->disks = calloc(nb_srcs + 1, sizeof(*set->disks));
	if (!set->srcs || !set->disks)
		goto err;
	set->nb_srcs = nb_srcs;
	for (size_t s = 0; s < nb_srcs; s++) {
		set->srcs[s] = srcs[s];
		/* The caller's names may not outlive the scan; lvm_pv.source
		 * and lvm_source_is_pv use the set's copy. */
		set->srcs[s].name = set_printf(set, "%s", srcs[s].name);
		ret = lvm_disk_read(srcs[s].img, srcs[s].name, set->disks, s,
				    &budget, &set->disks[s]);
		if (ret == -ENOMEM)
			goto err;
		if (ret < 0)
			set->disks[s].is_pv = false; /* unreadable: not ours */
	}
	/* Each VG from its newest good copy, in the order first seen. */
	for (size_t s = 0; s < nb_srcs; s++) {
		for (size_t k = 0; k < set->disks[s].nb_copies; k++) {
			const struct lvm_copy *best = &set->disks[s].copies[k];
			struct ivg *n;

			if (!best->good || vg_known(set, best->vg_uuid))
				continue;
			for (size_t t = s; t < nb_srcs; t++) {
				for (size_t j = 0; j < set->disks[t].nb_copies;
				     j++) {
					const struct lvm_copy *c =
						&set->disks[t].copies[j];
					if (c->good &&
					    strcmp(c->vg_uuid,
						   best->vg_uuid) == 0 &&
					    c->seqno > best->seqno)
						best = c;
				}
			}
			n = realloc(set->vgs, (set->nb_vgs + 1) * sizeof(*n));
			ret = -ENOMEM;
			if (!n)
				goto err;
			set->vgs = n;
			memset(&n[set->nb_vgs], 0, sizeof(*n));
			set->nb_vgs++;
			ret = build_vg(set, &n[set->nb_vgs - 1], best);
			if (ret < 0)
				goto err;
		}
	}
	/* VGs that have no good copy anywhere: listed with the reason. */
	for (size_t s = 0; s < nb_srcs; s++) {
		const struct lvm_disk *d = &set->disks[s];
		for (size_t k = 0; k < d->nb_copies; k++) {
			const struct lvm_copy *c = &d->copies[k];
			if (c->good || c->dup ||
			    (c->vg_uuid && vg_known(set, c->vg_uuid)))
				continue;
			ret = add_error_vg(set, c->vg_name, c->vg_uuid, c->why);
			if (ret < 0)
				goto err;
		}
		if (d->is_pv && !d->label_ok && d->nb_copies == 0) {
			ret = add_error_vg(set, NULL, NULL, d->why);
			if (ret < 0)
				goto err;
		}
	}
	ret = publish(set);
	if (ret < 0)
		goto err;
	*set_r = set;
	return 0;
err:
	lvm_set_free(set);
	return ret;
}

void lvm_set_free(struct lvm_set *set)
{
	if (!set)
		return;
	for (size_t v = 0; v < set->nb_vgs; v++) {
		struct ivg *vg = &set->vgs[v];
		for (size_t l = 0; l < vg->nb_lvs; l++) {
			for (size_t s = 0; s < vg->lvs[l].nb_segs; s++)
				free(vg->lvs[l].segs[s].areas);
			free(vg->lvs[l].segs);
		}
		free(vg->lvs);
		free(vg->pvs);
		free(vg->pv_by_key);
		free(vg->lv_by_name);
	}
	for (size_t s = 0; s < set->nb_srcs; s++)
		lvm_disk_free(&set->disks[s]);
	for (size_t i = 0; i < set->nb_strs; i++)
		free(set->strs[i]);
	free(set->strs);
	free(set->vgs);
	free(set->pvs);
	free(set->lvs);
	free(set->refs);
	free(set->disks);
	free(set->srcs);
	free(set);
}

size_t lvm_nb_vgs(const struct lvm_set *set)
{
	return set->nb_vgs;
}

const struct lvm_vg *lvm_vg_at(const struct lvm_set *set, size_t i)
{
	return i < set->nb_vgs ? &set->vgs[i].pub : NULL;
}

size_t lvm_nb_pvs(const struct lvm_set *set)
{
	return set->nb_pvs;
}

const struct lvm_pv *lvm_pv_at(const struct lvm_set *set, size_t i)
{
	return i < set->nb_pvs ? &set->pvs[i] : NULL;
}

size_t lvm_nb_lvs(const struct lvm_set *set)
{
	return set->nb_lvs;
}

const struct lvm_lv *lvm_lv_at(const struct lvm_set *set, size_t i)
{
	return i < set->nb_lvs ? &set->lvs[i] : NULL;
}

bool lvm_source_is_pv(const struct lvm_set *set, const char *source)
{
	for (size_t s = 0; s < set->nb_srcs; s++)
		if (strcmp(set->srcs[s].name, source) == 0)
			return set->disks[s].is_pv;
	return false;
}

/* One lvm_lv_open: every leg is opened once (a leg shared by several
 * segments, or reached along several paths, is not opened again: the
 * number of handles stays at most the number of LVs of the VG), and the
 * handles of legs go to the top handle, which closes them. */
struct open_ctx {
	struct lvm_set *set;
	struct ivg *vg;
	struct img **memo;   /* per LV of the VG: its handle, once open */
	struct img **legs;   /* the handles made for legs, to hand over */
	size_t nb_legs;
	bool via_leg;        /* a mirror leg was used: read-only */
};

static int open_ilv(struct open_ctx *ctx, size_t l, bool read_only,
		    unsigned depth, struct img **img_r)
{
	struct ivg *vg = ctx->vg;
	struct ilv *lv = &vg->lvs[l];
	CLEANUP_FREE struct img_segment *segs = NULL;
	CLEANUP_FREE struct img_stripe *stripes = NULL;
	size_t nb_stripes = 0, used = 0;
	uint64_t eb = vg->pub.extent_bytes;
	char name[300];
	int ret;

	if (ctx->memo[l]) {
		*img_r = ctx->memo[l];
		return 0;
	}
	if (depth > LVM_MAX_NESTING || lv->unreadable || !lv->checked)
		return -ENOTSUP;
	for (size_t s = 0; s < lv->nb_segs; s++)
		nb_stripes += lv->segs[s].kind == SEG_STRIPED
				      ? lv->segs[s].nb_areas
				      : 1;
	segs = calloc(lv->nb_segs, sizeof(*segs));
	stripes = calloc(nb_stripes, sizeof(*stripes));
	if (!segs || !stripes)
		return -ENOMEM;
	for (size_t s = 0; s < lv->nb_segs; s++) {
		const struct seg *sg = &lv->segs[s];
		struct img_segment *o = &segs[s];
		struct ilv *leg;

		/* parse_lv checked nb_le * extent_bytes for the whole LV. */
		o->start = sg->start_le * eb;
		o->len = sg->nb_le * eb;
		o->stripes = &stripes[used];
		if (sg->kind == SEG_STRIPED) {
			o->nb_stripes = sg->nb_areas;
			o->stripe_bytes = sg->stripe_bytes;
			for (unsigned a = 0; a < sg->nb_areas; a++) {
				const struct ipv *pv = &vg->pvs[sg->areas[a].pv];
				/* check_areas bounded this in bytes. */
				stripes[used].src = ctx->set->srcs[pv->src].img;
				stripes[used].src_off =
					pv->pe_start_bytes +
					sg->areas[a].pe * eb;
				used++;
			}
			continue;
		}
		leg = find_lv(vg, sg->areas[sg->leg].lv_name);
		ret = open_ilv(ctx, (size_t)(leg - vg->lvs), true, depth + 1,
			       &stripes[used].src);
		if (ret < 0)
			return ret;
		ctx->via_leg = true;
		o->nb_stripes = 1;
		stripes[used].src_off = sg->areas[sg->leg].le * eb;
		used++;
	}
	/* No set_printf here: opens may run in several threads at once,
	 * and the set is not changed after the scan. */
	snprintf(name, sizeof(name), "%s/%s", vg->pub.name, lv->name);
	ret = img_compose_open(name, segs, lv->nb_segs,
			       read_only || ctx->via_leg, img_r);
	if (ret < 0)
		return ret;
	if (depth > 0) {
		ctx->memo[l] = *img_r;
		ctx->legs[ctx->nb_legs++] = *img_r;
	}
	return 0;
}

int lvm_lv_open(struct lvm_set *set, size_t i, bool read_only,
		struct img **img_r, struct img_err *err)
{
	const struct lvm_lv *pub;
	struct open_ctx ctx = { .set = set };
	struct img *img = NULL;
	struct ilv *lv;
	int ret;

	if (i >= set->nb_lvs)
		return img_err(err, -ENOENT, "no logical volume %zu", i);
	pub = &set->lvs[i];
	ctx.vg = &set->vgs[set->refs[i].vg];
	lv = &ctx.vg->lvs[set->refs[i].lv];
	if (lv->unreadable)
		return img_err(err, -ENOTSUP, "%s/%s: %s", pub->vg_name,
			       pub->name, lv->unreadable);
	ctx.memo = calloc(ctx.vg->nb_lvs + 1, sizeof(*ctx.memo));
	ctx.legs = calloc(ctx.vg->nb_lvs + 1, sizeof(*ctx.legs));
	ret = -ENOMEM;
	if (ctx.memo && ctx.legs)
		ret = open_ilv(&ctx, set->refs[i].lv, read_only, 0, &img);
	for (size_t k = 0; ret == 0 && k < ctx.nb_legs; k++) {
		ret = img_compose_own(img, ctx.legs[k]);
		if (ret == 0)
			ctx.legs[k] = NULL;
	}
	if (ret < 0) {
		img_close(img);
		for (size_t k = 0; k < ctx.nb_legs; k++)
			img_close(ctx.legs[k]);
	}
	free(ctx.memo);
	free(ctx.legs);
	if (ret < 0)
		return img_err(err, ret, "%s/%s: cannot open: %s",
			       pub->vg_name, pub->name, strerror(-ret));
	*img_r = img;
	return 0;
}
