/* snapname.c: the names of the folders under snapshots/.
 *
 * The mount and the commands must name a snapshot the same way, so a
 * place like snapshots/NAME/p2 means the same in both. The rules:
 * a snapshot's folder is named by its name; if that cannot be a folder
 * name (empty, longer than NAME_MAX, has a '/', is "." or "..") or is
 * shared by two snapshots, by its ID; if the ID cannot be one either
 * (the same rules; a hostile table can repeat or blank IDs), by its
 * position in the table, "snapshot-N". A name that equals the ID of a
 * snapshot shown by ID gives way and is shown by its own ID (or
 * position), which may make another name give way in turn: the work
 * list follows such chains to the end. "snapshot-N" steps aside from a
 * shown name or ID that happens to equal it by appending '~'.
 *
 * Every folder name is then valid and unique whatever the table holds,
 * and the result does not depend on the order of the table. Sorted
 * index arrays keep it O(n log n) for the 65536 snapshots a table may
 * hold.
 */
#include "cli.h"

#include "cleanup.h"

#include <errno.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static bool valid_dirname(const char *s)
{
	size_t len = s ? strlen(s) : 0;

	return len > 0 && len <= NAME_MAX && !strchr(s, '/') &&
	       strcmp(s, ".") != 0 && strcmp(s, "..") != 0;
}

struct sort_ctx {
	const struct img_snapshot *list;
	bool by_id;
};

static const char *key_of(const struct sort_ctx *c, size_t i)
{
	const char *k = c->by_id ? c->list[i].id : c->list[i].name;

	return k ? k : "";
}

static int cmp_index(const void *a, const void *b, void *c)
{
	return strcmp(key_of(c, *(const size_t *)a),
		      key_of(c, *(const size_t *)b));
}

static void sort_indexes(const struct sort_ctx *c, size_t *order, size_t nb)
{
	for (size_t i = 0; i < nb; i++)
		order[i] = i;
	qsort_r(order, nb, sizeof(*order), cmp_index, (void *)c);
}

/* [*lo_r, *hi_r): the part of order whose key equals key. */
static void equal_range(const struct sort_ctx *c, const size_t *order,
			size_t nb, const char *key, size_t *lo_r, size_t *hi_r)
{
	size_t lo = 0, hi = nb;

	while (lo < hi) {
		size_t mid = lo + (hi - lo) / 2;

		if (strcmp(key_of(c, order[mid]), key) < 0)
			lo = mid + 1;
		else
			hi = mid;
	}
	*lo_r = lo;
	for (hi = lo; hi < nb && strcmp(key_of(c, order[hi]), key) == 0;)
		hi++;
	*hi_r = hi;
}

/* The snapshot whose key is key and whose folder is named by that kind of
 * key, or nb. */
static size_t shown_as(const struct sort_ctx *c, const size_t *order,
		       size_t nb, const enum cli_dirname_kind *kind,
		       enum cli_dirname_kind want, const char *key)
{
	size_t lo, hi;

	equal_range(c, order, nb, key, &lo, &hi);
	for (size_t k = lo; k < hi; k++)
		if (kind[order[k]] == want)
			return order[k];
	return nb;
}

/* True when the k-th entry of order has a key no neighbour shares. */
static bool alone_at(const struct sort_ctx *c, const size_t *order,
		     size_t nb, size_t k)
{
	const char *key = key_of(c, order[k]);

	return (k == 0 || strcmp(key_of(c, order[k - 1]), key) != 0) &&
	       (k + 1 == nb || strcmp(key_of(c, order[k + 1]), key) != 0);
}

int cli_snapshot_dirnames(const struct img_snapshot *list, size_t nb,
			  char **dirnames, enum cli_dirname_kind *kind)
{
	struct sort_ctx names = { list, false }, ids = { list, true };
	CLEANUP_FREE size_t *by_name = NULL, *by_id = NULL, *work = NULL;
	CLEANUP_FREE bool *id_ok = NULL;
	size_t nb_work = 0, n1 = nb ? nb : 1;

	by_name = calloc(n1, sizeof(*by_name));
	by_id = calloc(n1, sizeof(*by_id));
	work = calloc(n1, sizeof(*work));
	id_ok = calloc(n1, sizeof(*id_ok));
	if (!by_name || !by_id || !work || !id_ok)
		return -ENOMEM;
	sort_indexes(&names, by_name, nb);
	sort_indexes(&ids, by_id, nb);
	for (size_t k = 0; k < nb; k++) {
		size_t i = by_name[k];

		kind[i] = valid_dirname(list[i].name) &&
					  alone_at(&names, by_name, nb, k) ?
				  CLI_DIRNAME_BY_NAME :
				  CLI_DIRNAME_BY_ID;
		i = by_id[k];
		id_ok[i] = valid_dirname(list[i].id) &&
			   alone_at(&ids, by_id, nb, k);
	}
	for (size_t i = 0; i < nb; i++) {
		if (kind[i] == CLI_DIRNAME_BY_NAME)
			continue;
		if (!id_ok[i])
			kind[i] = CLI_DIRNAME_BY_POSITION;
		work[nb_work++] = i;
	}
	/* Each snapshot enters the list at most once: when it stops being
	 * shown by name. */
	while (nb_work) {
		size_t i = work[--nb_work], j;

		if (kind[i] != CLI_DIRNAME_BY_ID)
			continue;
		j = shown_as(&names, by_name, nb, kind, CLI_DIRNAME_BY_NAME,
			     list[i].id);
		if (j < nb && j != i) {
			kind[j] = id_ok[j] ? CLI_DIRNAME_BY_ID :
					     CLI_DIRNAME_BY_POSITION;
			work[nb_work++] = j;
		}
	}
	for (size_t i = 0; i < nb; i++) {
		char *d = NULL;

		if (kind[i] == CLI_DIRNAME_BY_NAME)
			d = strdup(list[i].name);
		else if (kind[i] == CLI_DIRNAME_BY_ID)
			d = strdup(list[i].id);
		else if (asprintf(&d, "snapshot-%zu", i + 1) < 0)
			d = NULL;
		while (d && kind[i] == CLI_DIRNAME_BY_POSITION &&
		       (shown_as(&names, by_name, nb, kind,
				 CLI_DIRNAME_BY_NAME, d) < nb ||
			shown_as(&ids, by_id, nb, kind, CLI_DIRNAME_BY_ID, d) <
				nb)) {
			char *longer = NULL;

			if (asprintf(&longer, "%s~", d) < 0)
				longer = NULL;
			free(d);
			d = longer;
		}
		if (!d) {
			for (size_t k = 0; k < i; k++)
				free(dirnames[k]);
			return -ENOMEM;
		}
		dirnames[i] = d;
	}
	return 0;
}
