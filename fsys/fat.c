/* fat.c: the FAT driver. Not written yet: it recognises nothing, so
 * fsys_open answers -EMEDIUMTYPE for such filesystems. */
#include "fsys-int.h"

const struct fsys_ops fsys_fat_ops = {
	.name = "fat",
};
