/* wire.c: a partition table as bytes, to carry it between processes.
 *
 * fuse/ scans a qcow2 disk through its own mount in a child process (so
 * that a killed daemon never waits on its own FUSE requests) and gets
 * the table back through a pipe in this form. Both ends are the same
 * program, but the decoder still checks every length: it trusts nothing
 * past the buffer it was given.
 *
 * Layout, host byte order: strings as u32 length (UINT32_MAX for NULL)
 * and bytes; the table's seven strings, u64 nb_parts, then per entry u32
 * number, u64 start, u64 size, u8 past_end, u8 container and seven
 * strings.
 */
#include "partition.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>

struct wbuf {
	uint8_t *p;
	size_t len, cap;
	bool failed;
};

static void put(struct wbuf *w, const void *src, size_t n)
{
	if (w->failed)
		return;
	if (w->len + n > w->cap) {
		size_t cap = w->cap ? w->cap * 2 : 1024;
		uint8_t *p;

		while (cap < w->len + n)
			cap *= 2;
		p = realloc(w->p, cap);
		if (!p) {
			w->failed = true;
			return;
		}
		w->p = p;
		w->cap = cap;
	}
	memcpy(w->p + w->len, src, n);
	w->len += n;
}

static void put_str(struct wbuf *w, const char *s)
{
	uint32_t n = s ? (uint32_t)strlen(s) : UINT32_MAX;

	put(w, &n, sizeof(n));
	if (s)
		put(w, s, n);
}

int part_table_encode(const struct part_table *t, uint8_t **buf_r,
		      size_t *len_r)
{
	struct wbuf w = { 0 };
	uint64_t nb = t->nb_parts;

	put_str(&w, t->label);
	put_str(&w, t->disk_id);
	put_str(&w, t->error);
	put_str(&w, t->warning);
	put_str(&w, t->disk_fs_type);
	put_str(&w, t->disk_fs_label);
	put_str(&w, t->disk_fs_uuid);
	put(&w, &nb, sizeof(nb));
	for (size_t i = 0; i < t->nb_parts; i++) {
		const struct part_entry *e = &t->parts[i];
		uint32_t number = e->number;
		uint8_t flags[2] = { e->past_end, e->container };

		put(&w, &number, sizeof(number));
		put(&w, &e->start_bytes, sizeof(e->start_bytes));
		put(&w, &e->size_bytes, sizeof(e->size_bytes));
		put(&w, flags, sizeof(flags));
		put_str(&w, e->type);
		put_str(&w, e->type_name);
		put_str(&w, e->part_uuid);
		put_str(&w, e->part_name);
		put_str(&w, e->fs_type);
		put_str(&w, e->fs_label);
		put_str(&w, e->fs_uuid);
	}
	if (w.failed) {
		free(w.p);
		return -ENOMEM;
	}
	*buf_r = w.p;
	*len_r = w.len;
	return 0;
}

struct rbuf {
	const uint8_t *p;
	size_t left;
	int err;
};

static void get(struct rbuf *r, void *dst, size_t n)
{
	if (r->err || n > r->left) {
		r->err = r->err ? r->err : -EPROTO;
		memset(dst, 0, n);
		return;
	}
	memcpy(dst, r->p, n);
	r->p += n;
	r->left -= n;
}

static char *get_str(struct rbuf *r)
{
	uint32_t n;
	char *s;

	get(r, &n, sizeof(n));
	if (r->err || n == UINT32_MAX)
		return NULL;
	if (n > r->left) {
		r->err = -EPROTO;
		return NULL;
	}
	s = malloc((size_t)n + 1);
	if (!s) {
		r->err = -ENOMEM;
		return NULL;
	}
	memcpy(s, r->p, n);
	s[n] = '\0';
	r->p += n;
	r->left -= n;
	return s;
}

/* The fixed part of an entry: a bound on nb_parts before allocating. */
#define ENTRY_MIN_BYTES (4 + 8 + 8 + 2 + 7 * 4)

int part_table_decode(const uint8_t *buf, size_t len,
		      struct part_table **table_r)
{
	struct rbuf r = { buf, len, 0 };
	struct part_table *t = calloc(1, sizeof(*t));
	uint64_t nb;

	if (!t)
		return -ENOMEM;
	t->label = get_str(&r);
	t->disk_id = get_str(&r);
	t->error = get_str(&r);
	t->warning = get_str(&r);
	t->disk_fs_type = get_str(&r);
	t->disk_fs_label = get_str(&r);
	t->disk_fs_uuid = get_str(&r);
	get(&r, &nb, sizeof(nb));
	if (!r.err && nb > r.left / ENTRY_MIN_BYTES)
		r.err = -EPROTO;
	if (!r.err && nb) {
		t->parts = calloc((size_t)nb, sizeof(*t->parts));
		if (!t->parts)
			r.err = -ENOMEM;
	}
	for (uint64_t i = 0; !r.err && i < nb; i++) {
		struct part_entry *e = &t->parts[i];
		uint32_t number;
		uint8_t flags[2];

		t->nb_parts = (size_t)i + 1;
		get(&r, &number, sizeof(number));
		get(&r, &e->start_bytes, sizeof(e->start_bytes));
		get(&r, &e->size_bytes, sizeof(e->size_bytes));
		get(&r, flags, sizeof(flags));
		e->number = number;
		e->past_end = flags[0] != 0;
		e->container = flags[1] != 0;
		e->type = get_str(&r);
		e->type_name = get_str(&r);
		e->part_uuid = get_str(&r);
		e->part_name = get_str(&r);
		e->fs_type = get_str(&r);
		e->fs_label = get_str(&r);
		e->fs_uuid = get_str(&r);
	}
	if (!r.err && r.left)
		r.err = -EPROTO; /* trailing bytes */
	if (r.err) {
		part_table_free(t);
		return r.err;
	}
	*table_r = t;
	return 0;
}
