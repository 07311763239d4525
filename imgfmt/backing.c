/* backing.c: finding and opening the files an image names in its header.
 *
 * A qcow2 image may name a backing file and an external data file. Both
 * are untrusted strings (CVE-2024-32498: an image can name /etc/shadow or
 * a json: description and have its contents served), so every name goes
 * through one gate here:
 *   - relative names are taken relative to the naming image's folder;
 *   - "json:" and protocol names ("nbd:", "http:", ...) are refused;
 *   - the path is resolved with realpath(), and the policy applies to the
 *     result: backing=local allows only files inside the top image's
 *     folder or below it, follow allows any, deny allows none;
 *   - a chain that names a file already in it, or grows deeper than
 *     IMG_MAX_CHAIN_DEPTH, is refused with -ELOOP.
 * Backing images are always opened read-only. Data files are opened as
 * images are (img_open_disk_file): a regular file or a block device
 * only, and a FIFO is refused without waiting for a writer.
 */
#include "imgfmt-int.h"

#include "cleanup.h"

#include <ctype.h>
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

int img_open_common(struct img *img, const char *path, enum img_format fmt,
		    struct img_err *err);

/* True for "proto:..." where proto looks like a protocol name. QEMU treats
 * such names as protocols, and we serve local files only. */
static bool names_protocol(const char *name)
{
	const char *p = name;

	while (isalnum((unsigned char)*p) || *p == '-' || *p == '+' ||
	       *p == '_' || *p == '.')
		p++;
	return p != name && *p == ':';
}

/* Joins name to the folder of parent_path unless name is absolute. */
static char *resolve_name(const char *parent_path, const char *name)
{
	const char *slash;
	char *out;

	if (name[0] == '/')
		return strdup(name);
	slash = strrchr(parent_path, '/');
	if (!slash)
		return strdup(name);
	if (asprintf(&out, "%.*s/%s", (int)(slash - parent_path), parent_path,
		     name) < 0)
		return NULL;
	return out;
}

static bool inside_dir(const char *real, const char *dir)
{
	size_t n = strlen(dir);

	if (strcmp(dir, "/") == 0)
		return true;
	return strncmp(real, dir, n) == 0 && real[n] == '/';
}

/* Resolves name for parent and applies the policy. On success *real_r is
 * the realpath and *path_r the joined (unresolved) path. what is "backing
 * file" or "data file", for messages. */
static int check_named_file(struct img *parent, const char *name,
			    const char *what, char **path_r, char **real_r,
			    struct img_err *err)
{
	CLEANUP_FREE char *path = NULL;
	CLEANUP_FREE char *real = NULL;

	if (strncmp(name, "file:", 5) == 0)
		name += 5;
	if (name[0] == '\0')
		return img_err(err, -EINVAL, "%s: %s name is empty",
			       parent->path, what);
	if (strncmp(name, "json:", 5) == 0 || names_protocol(name))
		return img_err(err, -ENOTSUP, "%s: %s '%s' is not a local "
			       "file; only local files are supported",
			       parent->path, what, name);
	if (parent->opts.backing == IMG_BACKING_DENY)
		return img_err(err, -EPERM, "%s: %s '%s' refused by "
			       "-o backing=deny; -o backing=local or "
			       "backing=follow would allow it",
			       parent->path, what, name);
	path = resolve_name(parent->path, name);
	if (!path)
		return img_err(err, -ENOMEM, "%s: out of memory",
			       parent->path);
	real = realpath(path, NULL);
	if (!real) {
		int e = errno;
		return img_err(err, -e, "%s: %s %s: %s", parent->path, what,
			       path, strerror(e));
	}
	if (parent->opts.backing == IMG_BACKING_LOCAL &&
	    !inside_dir(real, parent->trusted_dir))
		return img_err(err, -EPERM, "%s: %s %s lies outside %s "
			       "(symbolic links resolved); mount with "
			       "-o backing=follow to allow it",
			       parent->path, what, real, parent->trusted_dir);
	*path_r = TAKE_PTR(path);
	*real_r = TAKE_PTR(real);
	return 0;
}

int img_open_backing(struct img *parent, const char *name,
		     enum img_format fmt, struct img **backing_r,
		     struct img_err *err)
{
	CLEANUP_FREE char *path = NULL;
	char *real = NULL;
	struct img *child;
	int ret;

	ret = check_named_file(parent, name, "backing file", &path, &real,
			       err);
	if (ret < 0)
		return ret;
	for (const struct img *i = parent; i; i = i->opener) {
		if (i->real_path && strcmp(i->real_path, real) == 0) {
			ret = img_err(err, -ELOOP, "%s: backing chain loops: "
				      "%s is already in the chain",
				      parent->path, real);
			free(real);
			return ret;
		}
	}
	if (parent->chain_depth + 1 > IMG_MAX_CHAIN_DEPTH) {
		free(real);
		return img_err(err, -ELOOP, "%s: backing chain is deeper "
			       "than %d images", parent->path,
			       IMG_MAX_CHAIN_DEPTH);
	}

	child = img_alloc(&parent->opts);
	if (!child) {
		free(real);
		return img_err(err, -ENOMEM, "%s: out of memory", path);
	}
	child->read_only = true;
	/* The disk number picks a disk of the top image only. */
	child->opts.disk = 0;
	child->real_path = real;
	child->opener = parent;
	child->chain_depth = parent->chain_depth + 1;
	child->trusted_dir = strdup(parent->trusted_dir);
	if (!child->trusted_dir) {
		img_close(child);
		return img_err(err, -ENOMEM, "%s: out of memory", path);
	}
	ret = img_open_common(child, path, fmt, err);
	child->opener = NULL;
	if (ret < 0) {
		img_close(child);
		return ret;
	}
	*backing_r = child;
	return 0;
}

int img_open_data_file(struct img *parent, const char *name, int *fd_r,
		       struct img_err *err)
{
	CLEANUP_FREE char *path = NULL;
	CLEANUP_FREE char *real = NULL;
	const char *why;
	int ret, fd;

	ret = check_named_file(parent, name, "data file", &path, &real, err);
	if (ret < 0)
		return ret;
	ret = img_open_disk_file(real, parent->read_only, &fd, &why);
	if (ret < 0)
		return img_err(err, ret, "%s: data file %s: %s", parent->path,
			       path, why);
	ret = img_lock_file(fd, path, !parent->read_only, err);
	if (ret < 0) {
		close(fd);
		return ret;
	}
	*fd_r = fd;
	return 0;
}
