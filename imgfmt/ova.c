/* ova.c: the OVA driver (read-only).
 *
 * Not written yet: the driver probes nothing, so OVA files are still
 * refused by name (foreign.c) when probed, and an explicit --format=ova
 * fails with a clear message.
 */
#include "imgfmt-int.h"

#include <errno.h>

static int ova_open(struct img *img, struct img_err *err)
{
	return img_err(err, -ENOTSUP, "%s: reading OVA images is not "
		       "supported yet", img->path);
}

const struct img_ops img_ova_ops = {
	.name = "ova",
	.open = ova_open,
};
