/* ext.c: the ext2/3/4 driver. Not written yet: it recognises nothing, so
 * fsys_open answers -EMEDIUMTYPE for such filesystems. */
#include "fsys-int.h"

const struct fsys_ops fsys_ext_ops = {
	.name = "ext",
};
