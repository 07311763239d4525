/* vmdk-desc.c: the VMDK text descriptor (VMware "Virtual Disk Format
 * 5.0", "The Descriptor File").
 *
 * A descriptor is short text: comment lines ("#"), "key = value" lines
 * (version, CID, parentCID, createType, parentFileNameHint, ddb.*) and
 * extent lines "ACCESS SECTORS TYPE ["FILE" [OFFSET]]". It comes from an
 * untrusted file, so the text is bounded (VMDK_DESC_MAX_BYTES, lines of
 * VMDK_DESC_MAX_LINE, at most VMDK_MAX_EXTENTS extents), it stops at the
 * first NUL (an embedded descriptor is padded with zeroes), and every
 * number is parsed with overflow checks. Nothing here opens files: the
 * extent names are checked against the backing= policy where they are
 * opened (vmdk.c, img_open_data_file).
 *
 * Unlike QEMU, which skips every extent line whose access is not RW and
 * every ZERO extent (so its disk is shorter than VMware's), RDONLY and
 * NOACCESS extents keep their place here and ZERO extents read as zeroes,
 * as the specification describes. Extent kinds that name raw host devices
 * (VMFSRAW, VMFSRDM) and seSparse extents (SESPARSE) are refused with
 * -ENOTSUP. VMFSSPARSE extents are sparse extents with a COWD header.
 */
#include "vmdk-int.h"

#include "checked.h"

#include <ctype.h>
#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

void vmdk_desc_free(struct vmdk_desc *desc)
{
	if (!desc)
		return;
	for (size_t i = 0; i < desc->nb_extents; i++)
		free(desc->extents[i].file);
	free(desc->extents);
	free(desc->parent_hint);
	memset(desc, 0, sizeof(*desc));
}

static const char *skip_spaces(const char *p, const char *end)
{
	while (p < end && (*p == ' ' || *p == '\t'))
		p++;
	return p;
}

/* Parses a decimal number; false on no digits or overflow. */
static bool parse_u64(const char **pp, const char *end, uint64_t *v_r)
{
	const char *p = *pp;
	uint64_t v = 0;

	if (p >= end || !isdigit((unsigned char)*p))
		return false;
	while (p < end && isdigit((unsigned char)*p)) {
		if (MUL_OVERFLOW(v, 10, &v) ||
		    ADD_OVERFLOW(v, (uint64_t)(*p - '0'), &v))
			return false;
		p++;
	}
	*pp = p;
	*v_r = v;
	return true;
}

/* The value of a "key = value" line with optional quotes, copied into
 * out (cap bytes). False when it does not fit. */
static bool copy_value(const char *p, const char *end, char *out, size_t cap)
{
	size_t n;

	p = skip_spaces(p, end);
	while (end > p && (end[-1] == ' ' || end[-1] == '\t'))
		end--;
	if (end - p >= 2 && *p == '"' && end[-1] == '"') {
		p++;
		end--;
	}
	n = (size_t)(end - p);
	if (n >= cap)
		return false;
	memcpy(out, p, n);
	out[n] = '\0';
	return true;
}

/* Copies src into dst, cut to cap - 1 bytes. */
static void copy_trunc(char *dst, size_t cap, const char *src)
{
	size_t n = strnlen(src, cap - 1);

	memcpy(dst, src, n);
	dst[n] = '\0';
}

static bool parse_hex32(const char *s, uint32_t *v_r)
{
	char *e;
	unsigned long long v;

	if (!isxdigit((unsigned char)s[0]))
		return false;
	v = strtoull(s, &e, 16);
	if (*e != '\0' || v > 0xffffffffull)
		return false;
	*v_r = (uint32_t)v;
	return true;
}

static int bad_line(struct img_err *err, const char *path, unsigned line_no,
		    const char *why, const char *p, size_t n)
{
	return img_err(err, -EINVAL, "%s: descriptor line %u: %s: '%.*s'",
		       path, line_no, why, (int)MIN(n, (size_t)80), p);
}

static int parse_extent_line(const char *path, unsigned line_no,
			     const char *line, size_t n,
			     struct vmdk_desc *desc, struct img_err *err)
{
	const char *p = line, *end = line + n, *w;
	struct vmdk_desc_extent e = { 0 };
	char type[16];
	size_t tn;

	if (desc->nb_extents >= VMDK_MAX_EXTENTS)
		return img_err(err, -EINVAL, "%s: descriptor names more than "
			       "%u extents", path, VMDK_MAX_EXTENTS);
	if (n >= 2 && strncmp(p, "RW", 2) == 0 && (p[2] == ' ' || p[2] == '\t')) {
		e.access = VMDK_ACCESS_RW;
		p += 2;
	} else if (strncmp(p, "RDONLY", 6) == 0) {
		e.access = VMDK_ACCESS_RDONLY;
		p += 6;
	} else {
		e.access = VMDK_ACCESS_NOACCESS;
		p += 8;
	}
	p = skip_spaces(p, end);
	if (!parse_u64(&p, end, &e.sectors) || e.sectors == 0)
		return bad_line(err, path, line_no, "bad extent size", line, n);
	p = skip_spaces(p, end);
	w = p;
	while (p < end && isalpha((unsigned char)*p))
		p++;
	tn = (size_t)(p - w);
	if (tn == 0 || tn >= sizeof(type))
		return bad_line(err, path, line_no, "bad extent type", line, n);
	memcpy(type, w, tn);
	type[tn] = '\0';
	if (strcmp(type, "FLAT") == 0 || strcmp(type, "VMFS") == 0) {
		e.type = VMDK_EXTENT_FLAT;
	} else if (strcmp(type, "SPARSE") == 0 ||
		   strcmp(type, "VMFSSPARSE") == 0) {
		e.type = VMDK_EXTENT_SPARSE;
	} else if (strcmp(type, "ZERO") == 0) {
		e.type = VMDK_EXTENT_ZERO;
	} else if (strcmp(type, "SESPARSE") == 0 ||
		   strcmp(type, "VMFSRDM") == 0 ||
		   strcmp(type, "VMFSRAW") == 0) {
		return img_err(err, -ENOTSUP, "%s: descriptor line %u: %s "
			       "extents are not supported", path, line_no,
			       type);
	} else {
		return bad_line(err, path, line_no, "unknown extent type", line,
				n);
	}
	p = skip_spaces(p, end);
	if (e.type != VMDK_EXTENT_ZERO) {
		const char *q;

		if (p >= end || *p != '"')
			return bad_line(err, path, line_no,
					"extent file name missing", line, n);
		q = memchr(p + 1, '"', (size_t)(end - p - 1));
		if (!q || q == p + 1)
			return bad_line(err, path, line_no,
					"bad extent file name", line, n);
		if (memchr(p + 1, '\0', (size_t)(q - p - 1)))
			return bad_line(err, path, line_no,
					"bad extent file name", line, n);
		e.file = strndup(p + 1, (size_t)(q - p - 1));
		if (!e.file)
			return img_err(err, -ENOMEM, "%s: out of memory", path);
		p = skip_spaces(q + 1, end);
		if (p < end && e.type == VMDK_EXTENT_FLAT) {
			if (!parse_u64(&p, end, &e.flat_sectors)) {
				free(e.file);
				return bad_line(err, path, line_no,
						"bad extent offset", line, n);
			}
			p = skip_spaces(p, end);
		}
	}
	if (p != end) {
		free(e.file);
		return bad_line(err, path, line_no, "trailing text after extent",
				line, n);
	}
	if (!desc->extents) {
		desc->extents = calloc(VMDK_MAX_EXTENTS, sizeof(*desc->extents));
		if (!desc->extents) {
			free(e.file);
			return img_err(err, -ENOMEM, "%s: out of memory", path);
		}
	}
	desc->extents[desc->nb_extents++] = e;
	return 0;
}

static bool is_extent_line(const char *p, size_t n)
{
	return (n > 3 && strncmp(p, "RW", 2) == 0 &&
		(p[2] == ' ' || p[2] == '\t')) ||
	       (n > 7 && strncmp(p, "RDONLY", 6) == 0 &&
		(p[6] == ' ' || p[6] == '\t')) ||
	       (n > 9 && strncmp(p, "NOACCESS", 8) == 0 &&
		(p[8] == ' ' || p[8] == '\t'));
}

static int parse_key_line(const char *path, unsigned line_no, const char *p,
			  size_t n, struct vmdk_desc *desc, struct img_err *err)
{
	const char *end = p + n, *eq = memchr(p, '=', n), *k_end;
	char key[64], val[VMDK_DESC_MAX_LINE];
	size_t kn;

	if (!eq)
		return 0; /* VMware ignores lines it does not know */
	k_end = eq;
	while (k_end > p && (k_end[-1] == ' ' || k_end[-1] == '\t'))
		k_end--;
	kn = (size_t)(k_end - p);
	if (kn == 0 || kn >= sizeof(key))
		return 0;
	memcpy(key, p, kn);
	key[kn] = '\0';
	if (!copy_value(eq + 1, end, val, sizeof(val)))
		return bad_line(err, path, line_no, "value too long", p, n);

	if (strcasecmp(key, "CID") == 0) {
		if (!parse_hex32(val, &desc->cid))
			return bad_line(err, path, line_no, "bad CID", p, n);
		desc->has_cid = true;
	} else if (strcasecmp(key, "parentCID") == 0) {
		if (!parse_hex32(val, &desc->parent_cid))
			return bad_line(err, path, line_no, "bad parentCID", p,
					n);
		desc->has_parent_cid = true;
	} else if (strcasecmp(key, "createType") == 0) {
		copy_trunc(desc->create_type, sizeof(desc->create_type), val);
	} else if (strcasecmp(key, "parentFileNameHint") == 0) {
		free(desc->parent_hint);
		desc->parent_hint = val[0] ? strdup(val) : NULL;
		if (val[0] && !desc->parent_hint)
			return img_err(err, -ENOMEM, "%s: out of memory", path);
	} else if (strcasecmp(key, "ddb.adapterType") == 0) {
		copy_trunc(desc->adapter_type, sizeof(desc->adapter_type), val);
	} else if (strcasecmp(key, "ddb.virtualHWVersion") == 0) {
		copy_trunc(desc->hw_version, sizeof(desc->hw_version), val);
	}
	return 0;
}

int vmdk_desc_parse(const char *path, const char *text, size_t len,
		    bool want_extents, struct vmdk_desc *desc,
		    struct img_err *err)
{
	const char *p = text, *end;
	unsigned line_no = 0;
	const char *nul = memchr(text, '\0', len);

	memset(desc, 0, sizeof(*desc));
	desc->parent_cid = 0xffffffffu;
	if (len > VMDK_DESC_MAX_BYTES)
		return img_err(err, -EINVAL, "%s: descriptor of %zu bytes is "
			       "larger than %u", path, len,
			       VMDK_DESC_MAX_BYTES);
	end = nul ? nul : text + len;
	while (p < end) {
		const char *nl = memchr(p, '\n', (size_t)(end - p));
		const char *le = nl ? nl : end;
		size_t n;
		int ret;

		line_no++;
		if ((size_t)(le - p) > VMDK_DESC_MAX_LINE)
			return img_err(err, -EINVAL, "%s: descriptor line %u "
				       "is longer than %u bytes", path,
				       line_no, VMDK_DESC_MAX_LINE);
		/* Trim "\r" (descriptors written on Windows) and spaces. */
		while (le > p && (le[-1] == '\r' || le[-1] == ' ' ||
				  le[-1] == '\t'))
			le--;
		p = skip_spaces(p, le);
		n = (size_t)(le - p);
		if (n > 0 && *p != '#') {
			if (is_extent_line(p, n) && !want_extents)
				ret = 0;
			else if (is_extent_line(p, n))
				ret = parse_extent_line(path, line_no, p, n,
							desc, err);
			else
				ret = parse_key_line(path, line_no, p, n, desc,
						     err);
			if (ret < 0)
				return ret;
		}
		p = nl ? nl + 1 : end;
	}
	return 0;
}

bool vmdk_desc_looks_like(const uint8_t *text, size_t len)
{
	const char *p = (const char *)text, *end = p + len;

	while (p < end) {
		const char *nl = memchr(p, '\n', (size_t)(end - p));
		const char *le = nl ? nl : end;

		while (le > p && (le[-1] == '\r' || le[-1] == ' '))
			le--;
		p = skip_spaces(p, le);
		if (p < le && *p != '#') {
			const char *eq;

			if (le - p < 9 || strncmp(p, "version", 7) != 0)
				return false;
			eq = skip_spaces(p + 7, le);
			if (eq >= le || *eq != '=')
				return false;
			eq = skip_spaces(eq + 1, le);
			return le - eq == 1 && *eq >= '1' && *eq <= '3';
		}
		if (!nl)
			return false;
		p = nl + 1;
	}
	return false;
}
