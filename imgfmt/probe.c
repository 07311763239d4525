/* probe.c: picks a format for a file opened without an explicit one.
 *
 * Each driver scores the first IMG_PROBE_BYTES of the file (QEMU's
 * bdrv_probe), and drivers whose signature is a footer also score the
 * last sector; the highest score wins and raw, which scores 1 for
 * anything, is the fallback. A file shorter than the probe window is
 * probed on what it has. A file that carries the signature of a format
 * no driver reads (foreign.c) is refused rather than shown as raw.
 */
#include "imgfmt-int.h"

#include "io.h"

#include <errno.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#define TAIL_BYTES 512

static ssize_t pread_retry(int fd, void *buf, size_t len, off_t off)
{
	ssize_t n;

	do
		n = pread(fd, buf, len, off);
	while (n < 0 && errno == EINTR);
	return n;
}

int img_probe_format(int fd, const char *path, enum img_format *fmt_r,
		     struct img_err *err)
{
	uint8_t head[IMG_PROBE_BYTES], tail[TAIL_BYTES];
	ssize_t n, tail_n = 0;
	struct stat st;
	int best = -1;

	n = pread_retry(fd, head, sizeof(head), 0);
	if (n < 0)
		return img_err(err, -errno, "%s: cannot read: %s", path,
			       strerror(errno));
	if (fstat(fd, &st) == 0 && S_ISREG(st.st_mode) &&
	    st.st_size >= TAIL_BYTES) {
		tail_n = pread_retry(fd, tail, sizeof(tail),
				     st.st_size - TAIL_BYTES);
		if (tail_n < 0)
			tail_n = 0;
	}
	*fmt_r = IMG_FORMAT_RAW;
	for (unsigned f = IMG_FORMAT_RAW; f < IMG_FORMAT_COUNT; f++) {
		const struct img_ops *ops = img_driver((enum img_format)f);
		int score = ops->probe ? ops->probe(head, (size_t)n) : 0;

		if (ops->probe_tail && tail_n == TAIL_BYTES) {
			int t = ops->probe_tail(tail, (size_t)tail_n);
			if (t > score)
				score = t;
		}
		if (score > best) {
			best = score;
			*fmt_r = (enum img_format)f;
		}
	}
	if (*fmt_r == IMG_FORMAT_RAW) {
		const char *foreign = img_foreign_format(head, (size_t)n);

		if (!foreign && tail_n == TAIL_BYTES)
			foreign = img_foreign_format_tail(tail, TAIL_BYTES);
		if (foreign)
			return img_err(err, -EMEDIUMTYPE,
				       "%s: %s images are not supported; imgfs "
				       "reads %s (convert it with "
				       "'qemu-img convert -O qcow2', or give "
				       "--format=raw to see the file's bytes)",
				       path, foreign, img_format_names());
	}
	return 0;
}

bool img_probes_as_other(const uint8_t *head, size_t head_len,
			 const uint8_t *tail, size_t tail_len)
{
	for (unsigned f = IMG_FORMAT_RAW + 1; f < IMG_FORMAT_COUNT; f++) {
		const struct img_ops *ops = img_driver((enum img_format)f);

		if (head && ops->probe && ops->probe(head, head_len) > 1)
			return true;
		if (tail && ops->probe_tail &&
		    ops->probe_tail(tail, tail_len) > 1)
			return true;
	}
	if (tail && img_foreign_format_tail(tail, tail_len))
		return true;
	return head && img_foreign_format(head, head_len) != NULL;
}
