/* checked.h: overflow-checked arithmetic and alignment helpers.
 *
 * Every size or offset read from an image goes through these before it is
 * used, so a hostile header cannot wrap an addition into a small number.
 * Each returns true when the result overflowed (like __builtin_*_overflow).
 */
#ifndef IMGFS_COMMON_CHECKED_H
#define IMGFS_COMMON_CHECKED_H

#include <stdbool.h>
#include <stdint.h>

#define ADD_OVERFLOW(a, b, r) __builtin_add_overflow((a), (b), (r))
#define MUL_OVERFLOW(a, b, r) __builtin_mul_overflow((a), (b), (r))

#define MIN(a, b) ((a) < (b) ? (a) : (b))
#define MAX(a, b) ((a) > (b) ? (a) : (b))

/* True when x is a multiple of align (align must be a power of two). */
static inline bool is_aligned(uint64_t x, uint64_t align)
{
	return (x & (align - 1)) == 0;
}

static inline uint64_t align_down(uint64_t x, uint64_t align)
{
	return x & ~(align - 1);
}

/* Rounds up; the caller makes sure x + align - 1 does not overflow. */
static inline uint64_t align_up(uint64_t x, uint64_t align)
{
	return (x + align - 1) & ~(align - 1);
}

static inline uint64_t div_round_up(uint64_t x, uint64_t d)
{
	return x / d + (x % d != 0);
}

/* True when [off, off + len) fits inside [0, limit) without wrapping. */
static inline bool range_within(uint64_t off, uint64_t len, uint64_t limit)
{
	uint64_t end;

	if (ADD_OVERFLOW(off, len, &end))
		return false;
	return end <= limit;
}

#endif
