/* foreign.c: recognises image formats imgfs does not read.
 *
 * Without an explicit format, a VMDK, VDI, VHD(X), QED, LUKS, Parallels
 * or Bochs image would otherwise fall through to raw and show its
 * container bytes as the disk: partitions would be missing and a write
 * would corrupt the container. Refusing it with its name tells the user
 * what to do instead. The signatures are the ones each format's
 * documentation fixes at the start of the file.
 */
#include "imgfmt-int.h"

#include "endian.h"

#include <string.h>

struct foreign_magic {
	const char *name;
	size_t offset;
	const char *magic;
	size_t len;
};

#define MAGIC(n, o, m) { n, o, m, sizeof(m) - 1 }

static const struct foreign_magic foreign_magics[] = {
	MAGIC("VMDK", 0, "KDMV"),                  /* hosted sparse extent */
	MAGIC("VMDK", 0, "COWD"),                  /* ESX sparse extent */
	MAGIC("VMDK", 0, "# Disk DescriptorFile"), /* text descriptor */
	MAGIC("VHDX", 0, "vhdxfile"),
	MAGIC("VHD", 0, "conectix"),               /* dynamic VHD header */
	MAGIC("QED", 0, "QED\0"),
	MAGIC("LUKS", 0, "LUKS\xba\xbe"),
	MAGIC("Parallels", 0, "WithoutFreeSpace"),
	MAGIC("Parallels", 0, "WithouFreSpacExt"),
	MAGIC("Bochs", 0, "Bochs Virtual HD Image"),
};

/* VDI puts a free-text banner first and its binary signature at 64. */
#define VDI_SIGNATURE_OFFSET 64
#define VDI_SIGNATURE 0xbeda107fu

const char *img_foreign_format(const uint8_t *head, size_t len)
{
	for (size_t i = 0; i < sizeof(foreign_magics) / sizeof(foreign_magics[0]);
	     i++) {
		const struct foreign_magic *m = &foreign_magics[i];

		if (len >= m->offset + m->len &&
		    memcmp(head + m->offset, m->magic, m->len) == 0)
			return m->name;
	}
	if (len >= VDI_SIGNATURE_OFFSET + 4 &&
	    get_le32(head + VDI_SIGNATURE_OFFSET) == VDI_SIGNATURE)
		return "VDI";
	return NULL;
}
