/* cleanup.h: scope-bound cleanup for function-local resources.
 *
 * Declare with CLEANUP_FREE / CLEANUP_CLOSE and always initialize
 * (= NULL, = -1). Hand ownership out of the scope with TAKE_PTR() or
 * TAKE_FD(). LOCK_FOR_SCOPE(&m) holds a pthread mutex until the end of
 * the enclosing block.
 */
#ifndef IMGFS_COMMON_CLEANUP_H
#define IMGFS_COMMON_CLEANUP_H

#include <pthread.h>
#include <stdlib.h>
#include <unistd.h>

static inline void cleanup_free(void *p)
{
	free(*(void **)p);
}

static inline void cleanup_close(const int *fd)
{
	if (*fd >= 0)
		close(*fd);
}

static inline void cleanup_unlock(pthread_mutex_t **m)
{
	if (*m)
		pthread_mutex_unlock(*m);
}

#define CLEANUP_FREE __attribute__((cleanup(cleanup_free)))
#define CLEANUP_CLOSE __attribute__((cleanup(cleanup_close)))

#define CLEANUP_CONCAT_(a, b) a##b
#define CLEANUP_CONCAT(a, b) CLEANUP_CONCAT_(a, b)

/* Locks m now, unlocks it when the enclosing scope ends. */
#define LOCK_FOR_SCOPE(m)                                                      \
	__attribute__((cleanup(cleanup_unlock))) pthread_mutex_t               \
		*CLEANUP_CONCAT(scope_lock_, __LINE__) = (m);                  \
	pthread_mutex_lock(CLEANUP_CONCAT(scope_lock_, __LINE__))

/* Returns p and sets the variable to NULL so cleanup leaves it alone. */
#define TAKE_PTR(p)                                                            \
	({                                                                     \
		__typeof__(p) take_ptr_tmp_ = (p);                             \
		(p) = NULL;                                                    \
		take_ptr_tmp_;                                                 \
	})

#define TAKE_FD(fd)                                                            \
	({                                                                     \
		int take_fd_tmp_ = (fd);                                       \
		(fd) = -1;                                                     \
		take_fd_tmp_;                                                  \
	})

#endif
