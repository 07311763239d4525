/* ova.c: the OVA driver (read-only): a tar archive holding an OVF
 * descriptor and one or more VMDK disks (DMTF DSP0243, "OVF package"),
 * served straight from inside the archive, no extraction.
 *
 * The archive is walked once at open. Each 512-byte header is checked
 * (its checksum, an octal or base-256 size, the member lying inside the
 * file) and names come from ustar (prefix + name), pax extended headers
 * ("path", "size") or GNU long-name members. The walk is bounded: offsets
 * only grow, at most OVA_MAX_MEMBERS members, names of at most
 * OVA_MAX_NAME bytes, pax and long-name data of at most OVA_MAX_META.
 *
 * The disks are the members that the OVF's <File ovf:href="..."> elements
 * name and that hold a sparse VMDK (the "KDMV" magic), in archive order;
 * an OVF that names none of them falls back to every *.vmdk member. The
 * disk picked by opts.disk (numbered from 1; the first by default) is
 * opened by the VMDK driver as a slice (fd, offset, length) of the archive (vmdk-int.h),
 * which never reads outside the member. Disks that are descriptors or
 * differencing disks (naming other files) are refused: an archive has no
 * folder to resolve them in.
 *
 * Not done: OVF chunked or gzip-compressed disk files (ovf:chunkSize,
 * ovf:compression), manifest (.mf) checks.
 */
#include "vmdk-int.h"

#include "checked.h"
#include "cleanup.h"
#include "io.h"

#include <ctype.h>
#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/stat.h>

#define TAR_BLOCK 512u
#define OVA_MAX_MEMBERS 65536u
#define OVA_MAX_NAME 4096u
#define OVA_MAX_META (64u << 10)
#define OVA_MAX_OVF (4u << 20)
#define OVA_INFO_DISKS 6

struct ova_member {
	char *name;
	uint64_t off;  /* data offset in the archive */
	uint64_t size; /* data bytes */
};

struct ova_state {
	struct vmdk_state *vmdk;
	size_t nb_members;
	struct ova_member *members;
	size_t nb_disks;
	size_t *disks; /* indexes into members */
	size_t disk_index;
};

static struct ova_state *ova_state(struct img *img)
{
	return img->priv;
}

/* True when the header's checksum (bytes summed with the checksum field
 * read as spaces, unsigned as POSIX says or signed as old tars did)
 * matches the octal number stored in it. */
static bool tar_checksum_ok(const uint8_t *h)
{
	uint64_t want = 0;
	unsigned sum_u = 0;
	int sum_s = 0;
	size_t i = 148;
	bool digits = false;

	while (i < 156 && h[i] == ' ')
		i++;
	for (; i < 156 && h[i] >= '0' && h[i] <= '7'; i++) {
		want = want * 8 + (uint64_t)(h[i] - '0');
		digits = true;
	}
	if (!digits)
		return false;
	for (i = 0; i < TAR_BLOCK; i++) {
		uint8_t c = (i >= 148 && i < 156) ? ' ' : h[i];
		sum_u += c;
		sum_s += (int8_t)c;
	}
	return want == sum_u || (int64_t)want == sum_s;
}

/* The size field: octal digits (leading spaces or NULs allowed, ending at
 * a space or NUL), or GNU base-256 when the top bit of the first byte is
 * set. False for anything else or a size of 2^63 or more. */
static bool tar_size(const uint8_t *f, uint64_t *size_r)
{
	uint64_t v = 0;
	size_t i = 0;

	if (f[0] & 0x80) {
		if (f[0] != 0x80)
			return false; /* negative, or more than 88 bits */
		for (i = 1; i < 12; i++) {
			if (v >> 55)
				return false;
			v = (v << 8) | f[i];
		}
		*size_r = v;
		return true;
	}
	while (i < 12 && (f[i] == ' ' || f[i] == '\0'))
		i++;
	for (; i < 12 && f[i] >= '0' && f[i] <= '7'; i++) {
		if (v >> 60)
			return false;
		v = v * 8 + (uint64_t)(f[i] - '0');
	}
	for (; i < 12; i++)
		if (f[i] != ' ' && f[i] != '\0')
			return false;
	*size_r = v;
	return true;
}

static bool is_zero_block(const uint8_t *h)
{
	for (size_t i = 0; i < TAR_BLOCK; i++)
		if (h[i])
			return false;
	return true;
}

/* The member name of a ustar/GNU header (prefix only in POSIX ustar). */
static void tar_header_name(const uint8_t *h, char *out, size_t cap)
{
	size_t nlen = strnlen((const char *)h, 100);
	size_t plen = 0;

	if (memcmp(h + 257, "ustar\0", 6) == 0)
		plen = strnlen((const char *)h + 345, 155);
	if (plen)
		snprintf(out, cap, "%.*s/%.*s", (int)plen, h + 345, (int)nlen,
			 h);
	else
		snprintf(out, cap, "%.*s", (int)nlen, h);
}

/* Parses pax records "LEN key=value\n" for path and size. */
static void pax_parse(const char *p, size_t n, char *path, size_t cap,
		      bool *has_path, uint64_t *size, bool *has_size)
{
	const char *end = p + n;

	while (p < end) {
		const char *q = p, *kv, *eq;
		uint64_t len = 0;

		while (q < end && isdigit((unsigned char)*q)) {
			len = len * 10 + (uint64_t)(*q - '0');
			if (len > n)
				return;
			q++;
		}
		if (q == p || q >= end || *q != ' ' || len > (uint64_t)(end - p) ||
		    len < (uint64_t)(q - p) + 3 || p[len - 1] != '\n')
			return;
		kv = q + 1;
		eq = memchr(kv, '=', (size_t)(p + len - 1 - kv));
		if (eq) {
			size_t kn = (size_t)(eq - kv);
			size_t vn = (size_t)(p + len - 1 - (eq + 1));

			if (kn == 4 && memcmp(kv, "path", 4) == 0 && vn < cap &&
			    vn > 0) {
				memcpy(path, eq + 1, vn);
				path[vn] = '\0';
				*has_path = true;
			} else if (kn == 4 && memcmp(kv, "size", 4) == 0) {
				uint64_t v = 0;
				const char *d = eq + 1;
				size_t i;

				for (i = 0; i < vn && isdigit((unsigned char)d[i]) &&
					    !(v >> 59);
				     i++)
					v = v * 10 + (uint64_t)(d[i] - '0');
				if (i == vn && vn > 0) {
					*size = v;
					*has_size = true;
				}
			}
		}
		p += len;
	}
}

static bool ends_with_ci(const char *s, const char *suffix)
{
	size_t n = strlen(s), m = strlen(suffix);

	return n >= m && strcasecmp(s + n - m, suffix) == 0;
}

/* A member name without leading "./". */
static const char *plain_name(const char *name)
{
	while (name[0] == '.' && name[1] == '/')
		name += 2;
	return name;
}

static int ova_probe(const uint8_t *head, size_t len)
{
	char name[OVA_MAX_NAME];
	uint64_t off = 0;
	bool next_named = false;

	/* Up to three headers fit the window: a pax or GNU long-name
	 * header and the first real member's. */
	for (int i = 0; i < 3 && off + TAR_BLOCK <= len; i++) {
		const uint8_t *h = head + off;
		uint64_t size;
		char type;

		if (memcmp(h + 257, "ustar", 5) != 0 || !tar_checksum_ok(h) ||
		    !tar_size(h + 124, &size))
			return 0;
		type = (char)h[156];
		if (type == 'x' || type == 'L') {
			bool has_path = false, has_size = false;
			uint64_t psize = 0;
			uint64_t avail = len - off - TAR_BLOCK;

			if (type == 'L' && size > 0 && size <= avail &&
			    size < sizeof(name)) {
				memcpy(name, h + TAR_BLOCK, size);
				name[size] = '\0';
				next_named = true;
			} else if (type == 'x' && size <= avail) {
				pax_parse((const char *)h + TAR_BLOCK,
					  (size_t)size, name, sizeof(name),
					  &has_path, &psize, &has_size);
				next_named = has_path;
			}
			if (size > len)
				return 0;
			off += TAR_BLOCK + align_up(size, TAR_BLOCK);
			continue;
		}
		if (type == 'g') {
			if (size > len)
				return 0;
			off += TAR_BLOCK + align_up(size, TAR_BLOCK);
			continue;
		}
		if (!next_named)
			tar_header_name(h, name, sizeof(name));
		return ends_with_ci(name, ".ovf") ? 100 : 0;
	}
	return 0;
}

static void free_state(struct ova_state *s)
{
	if (!s)
		return;
	vmdk_state_free(s->vmdk);
	for (size_t i = 0; i < s->nb_members; i++)
		free(s->members[i].name);
	free(s->members);
	free(s->disks);
	free(s);
}

/* Walks the archive and fills s->members with its regular files. */
static int walk_tar(struct img *img, struct ova_state *s, uint64_t file_bytes,
		    struct img_err *err)
{
	uint64_t off = 0;
	char long_name[OVA_MAX_NAME];
	bool has_long_name = false;
	uint64_t pax_size = 0;
	bool has_pax_size = false;
	size_t cap = 0;

	for (;;) {
		uint8_t h[TAR_BLOCK];
		uint64_t size, data_off, next;
		char type;
		int ret;

		if (off + TAR_BLOCK > file_bytes)
			break; /* no end-of-archive blocks: tolerated */
		ret = full_pread(img->fd, h, sizeof(h), off);
		if (ret < 0)
			return img_err(err, ret, "%s: cannot read the tar header "
				       "at %" PRIu64 ": %s", img->path, off,
				       strerror(-ret));
		if (is_zero_block(h))
			break;
		if (!tar_checksum_ok(h))
			return img_err(err, -EINVAL, "%s: tar header at %" PRIu64
				       " has a bad checksum", img->path, off);
		if (!tar_size(h + 124, &size))
			return img_err(err, -EINVAL, "%s: tar header at %" PRIu64
				       " has a bad size field", img->path, off);
		type = (char)h[156];
		if (has_pax_size && type != 'x' && type != 'g') {
			size = pax_size;
			has_pax_size = false;
		}
		data_off = off + TAR_BLOCK;
		if (!range_within(data_off, size, file_bytes))
			return img_err(err, -EINVAL, "%s: tar member at %" PRIu64
				       " of %" PRIu64 " bytes runs past the end "
				       "of the archive (%" PRIu64 " bytes)",
				       img->path, off, size, file_bytes);
		next = data_off + align_up(size, TAR_BLOCK);
		if (next < data_off) /* cannot wrap: size < file_bytes */
			return -EIO;

		if (type == 'x' || type == 'L') {
			CLEANUP_FREE char *meta = NULL;
			bool has_path = false;

			if (size > OVA_MAX_META)
				return img_err(err, -EINVAL, "%s: tar extended "
					       "header at %" PRIu64 " of %" PRIu64
					       " bytes is too large", img->path,
					       off, size);
			meta = malloc(size + 1);
			if (!meta)
				return img_err(err, -ENOMEM, "%s: out of memory",
					       img->path);
			ret = full_pread(img->fd, meta, size, data_off);
			if (ret < 0)
				return img_err(err, ret, "%s: cannot read: %s",
					       img->path, strerror(-ret));
			meta[size] = '\0';
			if (type == 'L') {
				snprintf(long_name, sizeof(long_name), "%s",
					 meta);
				has_long_name = long_name[0] != '\0';
			} else {
				pax_parse(meta, (size_t)size, long_name,
					  sizeof(long_name), &has_path,
					  &pax_size, &has_pax_size);
				if (has_path)
					has_long_name = true;
			}
		} else if (type == '0' || type == '\0' || type == '7') {
			struct ova_member *m;

			if (s->nb_members >= OVA_MAX_MEMBERS)
				return img_err(err, -EINVAL, "%s: archive has "
					       "more than %u members", img->path,
					       OVA_MAX_MEMBERS);
			if (s->nb_members == cap) {
				size_t ncap = cap ? cap * 2 : 16;
				void *p = realloc(s->members,
						  ncap * sizeof(*s->members));
				if (!p)
					return img_err(err, -ENOMEM, "%s: out of "
						       "memory", img->path);
				s->members = p;
				cap = ncap;
			}
			m = &s->members[s->nb_members];
			if (has_long_name) {
				m->name = strdup(long_name);
			} else {
				char name[OVA_MAX_NAME];
				tar_header_name(h, name, sizeof(name));
				m->name = strdup(name);
			}
			if (!m->name)
				return img_err(err, -ENOMEM, "%s: out of memory",
					       img->path);
			m->off = data_off;
			m->size = size;
			s->nb_members++;
			has_long_name = false;
		} else if (type != 'g') {
			has_long_name = false; /* directories, links... */
		}
		off = next;
	}
	if (s->nb_members == 0)
		return img_err(err, -EINVAL, "%s: not an OVA: the tar archive "
			       "holds no files", img->path);
	return 0;
}

/* True when the member starts with the sparse VMDK magic. */
static bool member_is_sparse_vmdk(struct img *img, const struct ova_member *m)
{
	uint8_t magic[4];

	return m->size >= TAR_BLOCK &&
	       full_pread(img->fd, magic, 4, m->off) == 0 &&
	       memcmp(magic, "KDMV", 4) == 0;
}

/* Collects the href of every File element of the OVF text into refs
 * (at most max); returns how many. */
static size_t ovf_file_refs(const char *ovf, char **refs, size_t max)
{
	size_t nb = 0;
	const char *p = ovf;

	while (nb < max && (p = strstr(p, "File"))) {
		const char *elem_end, *href;
		bool tag = p > ovf && (p[-1] == '<' || p[-1] == ':');

		p += 4;
		if (!tag || (*p != ' ' && *p != '\t' && *p != '\n' &&
			     *p != '\r'))
			continue;
		elem_end = strchr(p, '>');
		if (!elem_end)
			break;
		href = strstr(p, "href=\"");
		if (href && href < elem_end) {
			const char *v = href + 6;
			const char *q = memchr(v, '"', (size_t)(elem_end - v));

			if (q && q > v) {
				refs[nb] = strndup(v, (size_t)(q - v));
				if (refs[nb])
					nb++;
			}
		}
		p = elem_end;
	}
	return nb;
}

static int pick_disks(struct img *img, struct ova_state *s,
		      struct img_err *err)
{
	const struct ova_member *ovf = NULL;
	char *refs[256];
	size_t nb_refs = 0;

	s->disks = calloc(s->nb_members, sizeof(*s->disks));
	if (!s->disks)
		return img_err(err, -ENOMEM, "%s: out of memory", img->path);
	for (size_t i = 0; i < s->nb_members && !ovf; i++)
		if (ends_with_ci(s->members[i].name, ".ovf"))
			ovf = &s->members[i];
	if (ovf && ovf->size <= OVA_MAX_OVF) {
		CLEANUP_FREE char *text = malloc(ovf->size + 1);

		if (!text)
			return img_err(err, -ENOMEM, "%s: out of memory",
				       img->path);
		if (full_pread(img->fd, text, ovf->size, ovf->off) == 0) {
			text[ovf->size] = '\0';
			nb_refs = ovf_file_refs(text, refs,
						sizeof(refs) / sizeof(refs[0]));
		}
	}
	for (size_t i = 0; i < s->nb_members; i++) {
		const char *name = plain_name(s->members[i].name);

		for (size_t r = 0; r < nb_refs; r++) {
			if (strcmp(plain_name(refs[r]), name) == 0 &&
			    member_is_sparse_vmdk(img, &s->members[i])) {
				s->disks[s->nb_disks++] = i;
				break;
			}
		}
	}
	for (size_t r = 0; r < nb_refs; r++)
		free(refs[r]);
	if (s->nb_disks == 0) {
		for (size_t i = 0; i < s->nb_members; i++)
			if (ends_with_ci(s->members[i].name, ".vmdk"))
				s->disks[s->nb_disks++] = i;
	}
	if (s->nb_disks == 0)
		return img_err(err, -EINVAL, "%s: the OVA holds no VMDK disk",
			       img->path);
	return 0;
}

static int ova_open(struct img *img, struct img_err *err)
{
	struct ova_state *s;
	const struct ova_member *m;
	CLEANUP_FREE char *name = NULL;
	struct stat st;
	int ret;

	img->read_only = true;
	if (fstat(img->fd, &st) < 0)
		return img_err(err, -errno, "%s: %s", img->path,
			       strerror(errno));
	s = calloc(1, sizeof(*s));
	if (!s)
		return img_err(err, -ENOMEM, "%s: out of memory", img->path);
	img->priv = s;
	ret = walk_tar(img, s, (uint64_t)st.st_size, err);
	if (ret < 0)
		return ret;
	ret = pick_disks(img, s, err);
	if (ret < 0)
		return ret;
	/* Disks are numbered from 1, as --disk and info number them. */
	if (img->opts.disk > s->nb_disks)
		return img_err(err, -ENOENT, "%s: there is no disk %u: the OVA "
			       "holds %zu disk%s", img->path, img->opts.disk,
			       s->nb_disks, s->nb_disks == 1 ? "" : "s");
	s->disk_index = img->opts.disk ? img->opts.disk - 1 : 0;
	m = &s->members[s->disks[s->disk_index]];
	if (asprintf(&name, "%s: %s", img->path, m->name) < 0)
		return img_err(err, -ENOMEM, "%s: out of memory", img->path);
	ret = vmdk_open_slice(img, img->fd, m->off, m->size, name, &s->vmdk,
			      &img->size, err);
	if (ret == -EINVAL && !member_is_sparse_vmdk(img, m))
		return img_err(err, -ENOTSUP, "%s: disk %s is not a sparse "
			       "VMDK (descriptors naming other files are not "
			       "supported inside an OVA)", img->path, m->name);
	return ret;
}

static void ova_close(struct img *img)
{
	free_state(ova_state(img));
	img->priv = NULL;
}

static int ova_pread(struct img *img, void *buf, size_t len, uint64_t off)
{
	return vmdk_state_pread(img, ova_state(img)->vmdk, buf, len, off);
}

static int ova_block_status(struct img *img, uint64_t off, uint64_t len,
			    struct img_extent *ext_r)
{
	return vmdk_state_block_status(ova_state(img)->vmdk, off, len, ext_r);
}

static int ova_get_info(struct img *img, struct img_info *info)
{
	struct ova_state *s = ova_state(img);

	img_info_add(info, "disks", "%zu", s->nb_disks);
	for (size_t i = 0; i < s->nb_disks && i < OVA_INFO_DISKS; i++) {
		char key[16];

		snprintf(key, sizeof(key), "disk %zu", i + 1);
		img_info_add(info, key, "%s%s",
			     plain_name(s->members[s->disks[i]].name),
			     i == s->disk_index ? " (shown)" : "");
	}
	vmdk_state_info(s->vmdk, info);
	return 0;
}

const struct img_ops img_ova_ops = {
	.name         = "ova",
	.probe        = ova_probe,
	.open         = ova_open,
	.close        = ova_close,
	.pread        = ova_pread,
	.block_status = ova_block_status,
	.get_info     = ova_get_info,
};
