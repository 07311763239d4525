/* lvm-text.c: a parser for LVM2's text metadata format, and its CRC.
 *
 * The format (lvm2's doc/ and what vgcfgbackup writes): a file is a
 * section body, a list of items; an item is `key = value` or
 * `name { body }`. A value is a "string" (backslash escapes \" and \\),
 * an integer, a float, or an array `[ v, v, ... ]` of those. `#` starts
 * a comment that runs to the end of the line. Names are words of
 * letters, digits and `_.+-` (VG and LV names may hold hyphens); lvm2
 * never quotes a name, and a quoted one is refused (it could hold '/').
 *
 * The input is untrusted (read from the image): nesting is bounded by
 * LVM_TEXT_MAX_DEPTH, nodes by LVM_TEXT_MAX_NODES, the text by
 * LVM_TEXT_MAX_BYTES (the caller bounds it too), integers are checked
 * for overflow, and every read stays inside [text, text + len). The
 * recursion depth of parse and free is the nesting bound. A scan shares
 * one node budget over all the copies it parses (lvm-disk.c), so memory
 * stays bounded whatever the number of sources.
 *
 * What it does not do: keep comments, or give meaning to any key; lvm.c
 * interprets the tree.
 */
#include "lvm-int.h"

#include <errno.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

struct parser {
	const char *p, *end;
	unsigned line;
	size_t nb_nodes, max_nodes;
	char *why;
	size_t why_len;
};

__attribute__((format(printf, 2, 3))) static int fail(struct parser *ps,
						      const char *fmt, ...)
{
	va_list ap;
	int n;

	n = snprintf(ps->why, ps->why_len, "line %u: ", ps->line);
	if (n >= 0 && (size_t)n < ps->why_len) {
		va_start(ap, fmt);
		vsnprintf(ps->why + n, ps->why_len - (size_t)n, fmt, ap);
		va_end(ap);
	}
	return -EINVAL;
}

static void skip_space(struct parser *ps)
{
	while (ps->p < ps->end) {
		char c = *ps->p;
		if (c == '\n') {
			ps->line++;
			ps->p++;
		} else if (c == ' ' || c == '\t' || c == '\r' || c == '\f' ||
			   c == '\v') {
			ps->p++;
		} else if (c == '#') {
			while (ps->p < ps->end && *ps->p != '\n')
				ps->p++;
		} else {
			return;
		}
	}
}

static bool is_word_char(char c)
{
	return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') ||
	       (c >= '0' && c <= '9') || c == '_' || c == '.' || c == '+' ||
	       c == '-';
}

static struct lvm_node *new_node(struct parser *ps, enum lvm_node_kind kind)
{
	struct lvm_node *n;

	if (ps->nb_nodes >= ps->max_nodes)
		return NULL;
	n = calloc(1, sizeof(*n));
	if (n) {
		n->kind = kind;
		ps->nb_nodes++;
	}
	return n;
}

/* A word at p (at least one word char): a fresh copy. */
static int read_word(struct parser *ps, char **word_r)
{
	const char *s = ps->p;
	char *w;

	while (ps->p < ps->end && is_word_char(*ps->p))
		ps->p++;
	if (ps->p == s)
		return fail(ps, "expected a name");
	w = strndup(s, (size_t)(ps->p - s));
	if (!w)
		return -ENOMEM;
	*word_r = w;
	return 0;
}

/* A quoted string at p (p points at the opening quote), unescaped. */
static int read_string(struct parser *ps, char **str_r)
{
	const char *s;
	char *out, *o;

	ps->p++;
	s = ps->p;
	/* Find the end first so the copy is sized once. */
	while (ps->p < ps->end && *ps->p != '"') {
		if (*ps->p == '\\' && ps->p + 1 < ps->end)
			ps->p++;
		if (*ps->p == '\n')
			ps->line++;
		ps->p++;
	}
	if (ps->p >= ps->end)
		return fail(ps, "unterminated string");
	out = malloc((size_t)(ps->p - s) + 1);
	if (!out)
		return -ENOMEM;
	o = out;
	for (const char *q = s; q < ps->p; q++) {
		if (*q == '\\' && q + 1 < ps->p)
			q++;
		*o++ = *q;
	}
	*o = '\0';
	ps->p++; /* the closing quote */
	*str_r = out;
	return 0;
}

/* A scalar value: string, integer or float. */
static int read_scalar(struct parser *ps, struct lvm_node **node_r)
{
	struct lvm_node *n;
	char *w = NULL;
	int ret;

	if (ps->p < ps->end && *ps->p == '"') {
		n = new_node(ps, LVM_NODE_STRING);
		if (!n)
			return ps->nb_nodes >= ps->max_nodes
				       ? fail(ps, "too many items")
				       : -ENOMEM;
		ret = read_string(ps, &n->str);
		if (ret < 0) {
			free(n);
			return ret;
		}
		*node_r = n;
		return 0;
	}
	if (ps->p >= ps->end || !is_word_char(*ps->p))
		return fail(ps, "expected a value");
	ret = read_word(ps, &w);
	if (ret < 0)
		return ret;
	{
		const char *q = w;
		bool neg = false, is_float = false;
		uint64_t v = 0;

		if (*q == '-' || *q == '+') {
			neg = *q == '-';
			q++;
		}
		if (*q < '0' || *q > '9') {
			ret = fail(ps, "expected a number, not '%.40s'", w);
			free(w);
			return ret;
		}
		for (; *q; q++) {
			if (*q == '.') {
				is_float = true;
				continue;
			}
			if (*q < '0' || *q > '9') {
				ret = fail(ps, "bad number '%.40s'", w);
				free(w);
				return ret;
			}
			if (is_float)
				continue;
			if (v > (UINT64_MAX - (uint64_t)(*q - '0')) / 10 ||
			    v * 10 + (uint64_t)(*q - '0') >
				    (uint64_t)INT64_MAX + neg) {
				ret = fail(ps, "number '%.40s' out of range", w);
				free(w);
				return ret;
			}
			v = v * 10 + (uint64_t)(*q - '0');
		}
		n = new_node(ps, is_float ? LVM_NODE_FLOAT : LVM_NODE_INT);
		if (!n) {
			free(w);
			return ps->nb_nodes >= ps->max_nodes
				       ? fail(ps, "too many items")
				       : -ENOMEM;
		}
		if (is_float) {
			n->str = w;
		} else {
			n->num = neg ? (int64_t)(0 - v) : (int64_t)v;
			free(w);
		}
	}
	*node_r = n;
	return 0;
}

static int read_array(struct parser *ps, struct lvm_node *arr)
{
	struct lvm_node **tail = &arr->child;

	ps->p++; /* '[' */
	for (;;) {
		struct lvm_node *el;
		int ret;

		skip_space(ps);
		if (ps->p < ps->end && *ps->p == ']') {
			ps->p++;
			return 0;
		}
		ret = read_scalar(ps, &el);
		if (ret < 0)
			return ret;
		*tail = el;
		tail = &el->next;
		arr->nb_children++;
		skip_space(ps);
		if (ps->p < ps->end && *ps->p == ',') {
			ps->p++;
			continue;
		}
		if (ps->p < ps->end && *ps->p == ']') {
			ps->p++;
			return 0;
		}
		return fail(ps, "expected ',' or ']' in an array");
	}
}

/* Items until '}' (nested) or the end of the text (top level). */
static int read_body(struct parser *ps, struct lvm_node *sec, unsigned depth)
{
	struct lvm_node **tail = &sec->child;

	for (;;) {
		struct lvm_node *n = NULL;
		char *key = NULL;
		int ret;

		skip_space(ps);
		if (ps->p >= ps->end)
			return depth == 0 ? 0 : fail(ps, "missing '}'");
		if (*ps->p == '}') {
			if (depth == 0)
				return fail(ps, "unexpected '}'");
			ps->p++;
			return 0;
		}
		ret = read_word(ps, &key);
		if (ret < 0)
			return ret;
		skip_space(ps);
		if (ps->p < ps->end && *ps->p == '{') {
			if (depth + 1 >= LVM_TEXT_MAX_DEPTH) {
				free(key);
				return fail(ps, "sections nested too deep");
			}
			ps->p++;
			n = new_node(ps, LVM_NODE_SECTION);
			if (!n) {
				free(key);
				return ps->nb_nodes >= ps->max_nodes
					       ? fail(ps, "too many items")
					       : -ENOMEM;
			}
			n->key = key;
			*tail = n;
			tail = &n->next;
			sec->nb_children++;
			ret = read_body(ps, n, depth + 1);
			if (ret < 0)
				return ret;
			continue;
		}
		if (ps->p >= ps->end || *ps->p != '=') {
			ret = fail(ps, "expected '=' or '{' after '%.40s'", key);
			free(key);
			return ret;
		}
		ps->p++;
		skip_space(ps);
		if (ps->p < ps->end && *ps->p == '[') {
			n = new_node(ps, LVM_NODE_ARRAY);
			if (!n) {
				free(key);
				return ps->nb_nodes >= ps->max_nodes
					       ? fail(ps, "too many items")
					       : -ENOMEM;
			}
			n->key = key;
			*tail = n;
			tail = &n->next;
			sec->nb_children++;
			ret = read_array(ps, n);
			if (ret < 0)
				return ret;
			continue;
		}
		ret = read_scalar(ps, &n);
		if (ret < 0) {
			free(key);
			return ret;
		}
		n->key = key;
		*tail = n;
		tail = &n->next;
		sec->nb_children++;
	}
}

int lvm_text_parse(const char *text, size_t len, size_t *budget,
		   struct lvm_node **root_r, char *why, size_t why_len)
{
	struct parser ps = {
		.p = text, .line = 1, .why = why, .why_len = why_len,
		.max_nodes = LVM_TEXT_MAX_NODES,
	};
	struct lvm_node *root;
	const char *nul;
	int ret;

	if (why_len)
		why[0] = '\0';
	if (len > LVM_TEXT_MAX_BYTES)
		return fail(&ps, "metadata text of %zu bytes is too large",
			    len);
	if (budget && *budget < ps.max_nodes)
		ps.max_nodes = *budget;
	nul = memchr(text, '\0', len);
	ps.end = nul ? nul : text + len;
	root = new_node(&ps, LVM_NODE_SECTION);
	if (!root)
		return -ENOMEM;
	ret = read_body(&ps, root, 0);
	if (budget)
		*budget -= ps.nb_nodes;
	if (ret < 0) {
		lvm_text_free(root);
		return ret;
	}
	*root_r = root;
	return 0;
}

void lvm_text_free(struct lvm_node *node)
{
	while (node) {
		struct lvm_node *next = node->next;
		lvm_text_free(node->child);
		free(node->key);
		free(node->str);
		free(node);
		node = next;
	}
}

const struct lvm_node *lvm_node_get(const struct lvm_node *sec,
				    const char *key)
{
	if (!sec || sec->kind != LVM_NODE_SECTION)
		return NULL;
	for (const struct lvm_node *n = sec->child; n; n = n->next)
		if (n->key && strcmp(n->key, key) == 0)
			return n;
	return NULL;
}

bool lvm_node_int(const struct lvm_node *sec, const char *key, int64_t *v_r)
{
	const struct lvm_node *n = lvm_node_get(sec, key);

	if (!n || n->kind != LVM_NODE_INT)
		return false;
	*v_r = n->num;
	return true;
}

const char *lvm_node_str(const struct lvm_node *sec, const char *key)
{
	const struct lvm_node *n = lvm_node_get(sec, key);

	return n && n->kind == LVM_NODE_STRING ? n->str : NULL;
}

bool lvm_node_has_flag(const struct lvm_node *sec, const char *key,
		       const char *s)
{
	const struct lvm_node *n = lvm_node_get(sec, key);

	if (!n || n->kind != LVM_NODE_ARRAY)
		return false;
	for (const struct lvm_node *e = n->child; e; e = e->next)
		if (e->kind == LVM_NODE_STRING && strcmp(e->str, s) == 0)
			return true;
	return false;
}

static uint32_t crc_table[256];
static pthread_once_t crc_once = PTHREAD_ONCE_INIT;

static void crc_init(void)
{
	for (uint32_t i = 0; i < 256; i++) {
		uint32_t c = i;
		for (int k = 0; k < 8; k++)
			c = (c & 1) ? (c >> 1) ^ 0xedb88320u : c >> 1;
		crc_table[i] = c;
	}
}

uint32_t lvm_crc(uint32_t crc, const void *buf, size_t len)
{
	const uint8_t *p = buf;

	pthread_once(&crc_once, crc_init);
	for (size_t i = 0; i < len; i++)
		crc = crc_table[(crc ^ p[i]) & 0xff] ^ (crc >> 8);
	return crc;
}
