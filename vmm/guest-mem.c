/* guest-mem.c: guest-physical address translation with bounds.
 *
 * A guest address is only ever turned into a host pointer here, and only
 * for a whole range that lies inside one region: every check is an
 * overflow-free "off + len <= size" so that a length near 2^64 cannot wrap
 * into a small number. Regions may not overlap in guest-physical space,
 * so a lookup has one answer. There are at most VMM_MEM_MAX_REGIONS (the
 * vhost-user limit without CONFIGURE_MEM_SLOTS), so a linear search is
 * both simple and fast enough.
 *
 * The layer does not map or unmap anything: the owner of the memory
 * (imgvmm.c, vhost-user.c) does, and keeps it mapped while queues use it.
 */
#include "vmm.h"

#include "checked.h"

#include <errno.h>

int vmm_mem_add(struct vmm_mem *mem, uint64_t gpa, uint64_t size_bytes,
		void *host, uint64_t uva)
{
	uint64_t end, uva_end;

	if (size_bytes == 0 || !host || ADD_OVERFLOW(gpa, size_bytes, &end) ||
	    ADD_OVERFLOW(uva, size_bytes, &uva_end))
		return -EINVAL;
	for (unsigned i = 0; i < mem->nb_regions; i++) {
		const struct vmm_mem_region *r = &mem->regions[i];

		/* Both ends are exclusive and cannot wrap (checked on add). */
		if (gpa < r->gpa + r->size_bytes && r->gpa < end)
			return -EINVAL;
	}
	if (mem->nb_regions == VMM_MEM_MAX_REGIONS)
		return -ENOSPC;
	mem->regions[mem->nb_regions++] = (struct vmm_mem_region){
		.gpa = gpa,
		.size_bytes = size_bytes,
		.uva = uva,
		.host = host,
	};
	return 0;
}

static const struct vmm_mem_region *find_gpa(const struct vmm_mem *mem,
					     uint64_t gpa)
{
	for (unsigned i = 0; i < mem->nb_regions; i++) {
		const struct vmm_mem_region *r = &mem->regions[i];

		if (gpa >= r->gpa && gpa - r->gpa < r->size_bytes)
			return r;
	}
	return NULL;
}

void *vmm_mem_gpa(const struct vmm_mem *mem, uint64_t gpa, uint64_t len)
{
	const struct vmm_mem_region *r = find_gpa(mem, gpa);

	if (!r || !range_within(gpa - r->gpa, len, r->size_bytes))
		return NULL;
	return r->host + (gpa - r->gpa);
}

void *vmm_mem_gpa_prefix(const struct vmm_mem *mem, uint64_t gpa,
			 uint64_t len, uint64_t *prefix_len_r)
{
	const struct vmm_mem_region *r = find_gpa(mem, gpa);
	uint64_t off;

	if (!r)
		return NULL;
	off = gpa - r->gpa;
	*prefix_len_r = MIN(len, r->size_bytes - off);
	return r->host + off;
}

void *vmm_mem_uva(const struct vmm_mem *mem, uint64_t uva, uint64_t len)
{
	/* Front-end addresses only matter for rings (vhost-user), and a
	 * region without a uva (0) never matches a nonzero one by accident
	 * because uva ranges are checked like gpa ranges. */
	for (unsigned i = 0; i < mem->nb_regions; i++) {
		const struct vmm_mem_region *r = &mem->regions[i];

		if (uva >= r->uva && uva - r->uva < r->size_bytes &&
		    range_within(uva - r->uva, len, r->size_bytes))
			return r->host + (uva - r->uva);
	}
	return NULL;
}
