/* qcow2.c: placeholder until the qcow2 driver lands; probes only. */
#include "imgfmt-int.h"

#include <errno.h>

static int qcow2_probe(const uint8_t *head, size_t len)
{
	if (len >= 8 && head[0] == 'Q' && head[1] == 'F' && head[2] == 'I' &&
	    head[3] == 0xfb)
		return 100;
	return 0;
}

static int qcow2_open(struct img *img, struct img_err *err)
{
	return img_err(err, -ENOTSUP, "%s: qcow2 not yet supported",
		       img->path);
}

const struct img_ops img_qcow2_ops = {
	.name  = "qcow2",
	.probe = qcow2_probe,
	.open  = qcow2_open,
};
