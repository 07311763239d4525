/* probe.c: picks a format for a file opened without an explicit one.
 *
 * Each driver scores the first bytes (QEMU's bdrv_probe); the highest
 * score wins and raw, which scores 1 for anything, is the fallback. A
 * file shorter than the probe window is probed on what it has. A file
 * that carries another format's signature (foreign.c) is refused rather
 * than shown as raw.
 */
#include "imgfmt-int.h"

#include "io.h"

#include <errno.h>
#include <string.h>
#include <unistd.h>

#define PROBE_BYTES 512

int img_probe_format(int fd, const char *path, enum img_format *fmt_r,
		     struct img_err *err)
{
	static const struct {
		const struct img_ops *ops;
		enum img_format fmt;
	} drivers[] = {
		{ &img_qcow2_ops, IMG_FORMAT_QCOW2 },
		{ &img_raw_ops, IMG_FORMAT_RAW },
	};
	uint8_t head[PROBE_BYTES];
	ssize_t n;
	int best = -1;

	do
		n = pread(fd, head, sizeof(head), 0);
	while (n < 0 && errno == EINTR);
	if (n < 0)
		return img_err(err, -errno, "%s: cannot read: %s", path,
			       strerror(errno));
	for (size_t i = 0; i < sizeof(drivers) / sizeof(drivers[0]); i++) {
		int score = drivers[i].ops->probe(head, (size_t)n);
		if (score > best) {
			best = score;
			*fmt_r = drivers[i].fmt;
		}
	}
	if (*fmt_r == IMG_FORMAT_RAW) {
		const char *foreign = img_foreign_format(head, (size_t)n);

		if (foreign)
			return img_err(err, -EMEDIUMTYPE,
				       "%s: %s images are not supported; imgfs "
				       "reads qcow2 and raw (convert it with "
				       "'qemu-img convert -O qcow2', or give "
				       "--format=raw to see the file's bytes)",
				       path, foreign);
	}
	return 0;
}
