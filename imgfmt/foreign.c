/* foreign.c: recognises image formats imgfs does not read.
 *
 * Without an explicit format, a VMDK, QED, LUKS, Parallels, Bochs,
 * cloop or DMG image would otherwise fall through to raw and show its
 * container bytes as the disk: partitions would be missing and a write
 * would corrupt the container. Refusing it with its name tells the user
 * what to do instead. The signatures are the ones each format's
 * documentation fixes at the start of the file, and for DMG (Apple's
 * UDIF) the 512-byte "koly" trailer at its end (img_foreign_format_tail).
 * VHD, VHDX and VDI are read by vpc.c, vhdx.c and vdi.c, which probe
 * them; a VDI of a version vdi.c does not read (1.0) is still refused
 * here by name.
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
	MAGIC("QED", 0, "QED\0"),
	MAGIC("LUKS", 0, "LUKS\xba\xbe"),
	MAGIC("Parallels", 0, "WithoutFreeSpace"),
	MAGIC("Parallels", 0, "WithouFreSpacExt"),
	MAGIC("Bochs", 0, "Bochs Virtual HD Image"),
};

/* VDI puts a free-text banner first and its binary signature at 64. */
#define VDI_SIGNATURE_OFFSET 64
#define VDI_SIGNATURE 0xbeda107fu

/* cloop (the Linux compressed loop device, as Knoppix shipped it): a shell
 * script preamble "#!/bin/sh\n#V2.0 Format\n" (V3.0, V4.0 for the later
 * versions), then the compressed blocks. QEMU's block/cloop.c probes the
 * V2.0 preamble. */
static bool is_cloop(const uint8_t *head, size_t len)
{
	static const char pre[] = "#!/bin/sh\n#V";
	static const char post[] = ".0 Format\n";
	size_t pl = sizeof(pre) - 1, ql = sizeof(post) - 1;

	return len >= pl + 1 + ql && memcmp(head, pre, pl) == 0 &&
	       head[pl] >= '2' && head[pl] <= '4' &&
	       memcmp(head + pl + 1, post, ql) == 0;
}

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
	if (is_cloop(head, len))
		return "cloop";
	return NULL;
}

/* UDIF's trailer: "koly", version 4, header size 512, all big-endian. */
const char *img_foreign_format_tail(const uint8_t *tail, size_t len)
{
	if (len >= 12 && memcmp(tail, "koly", 4) == 0 &&
	    get_be32(tail + 4) == 4 && get_be32(tail + 8) == 512)
		return "DMG";
	return NULL;
}
