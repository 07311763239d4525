/* info.c: the text of MOUNTPOINT/info.
 *
 * The text itself comes from cli_info_write (cli/info.c), which `imgfs
 * info IMAGE` prints too, so the two always agree. This file only
 * gathers what the mount has into plain data: the active image, the
 * snapshot views that are not deleted, a copy of the active view's
 * partition table (taken under table_lock, printed without it), the LVM
 * scan with what each volume holds, and the files/ status of each block
 * file by the rule files.c follows.
 */
#include "ifs.h"

#include "cli.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

char *ifs_info_text(struct ifs *ifs, size_t *len_r)
{
	struct ifs_view *active = ifs_view_by_slot(ifs, 0);
	struct cli_info_snapshot *snaps = NULL;
	struct cli_info_files *files = NULL;
	struct part_table *table = NULL;
	const struct lvm_set *lvm;
	const struct part_table *const *lv_tables;
	size_t nb_lvs;
	struct cli_info_data d;
	size_t nb_snaps = 0, nb_files = 0;
	char *text = NULL;
	size_t len = 0;
	FILE *f;
	int ret;

	pthread_rwlock_rdlock(&active->table_lock);
	table = part_table_dup(active->table);
	pthread_rwlock_unlock(&active->table_lock);
	/* The LVM scan (set and per-volume tables) lives until unmount. */
	lvm = ifs_lvm_set(active, &lv_tables);
	nb_lvs = lvm && lv_tables ? lvm_nb_lvs(lvm) : 0;
	if (table) {
		size_t cap = table->nb_parts + 1 + nb_lvs;

		files = calloc(cap, sizeof(*files));
		if (files)
			nb_files = cli_info_files_from_table(table, files, cap);
		for (size_t i = 0; files && i < nb_lvs && nb_files < cap; i++)
			cli_info_files_of_lv(lvm_lv_at(lvm, i), lv_tables[i],
					     &files[nb_files++]);
	}

	/* Views are never freed before unmount, so their strings outlive
	 * the lock. */
	pthread_mutex_lock(&ifs->views_lock);
	snaps = calloc(ifs->nb_views, sizeof(*snaps));
	for (size_t i = 1; snaps && i < ifs->nb_views; i++) {
		struct ifs_view *v = ifs->views[i];

		if (ifs_view_is_deleted(v))
			continue;
		snaps[nb_snaps++] = (struct cli_info_snapshot){
			.dirname = v->dirname,
			.id = v->snap_id,
			.name = v->snap_name,
			.date_sec = v->snap_date_sec,
			.vm_clock_nsec = v->snap_vm_clock_nsec,
			.disk_size = v->snap_disk_size,
			.kind = v->dirname_is_position ? CLI_DIRNAME_BY_POSITION :
				v->dirname_is_id       ? CLI_DIRNAME_BY_ID :
							 CLI_DIRNAME_BY_NAME,
			.unreadable = __atomic_load_n(&v->open_error,
						      __ATOMIC_ACQUIRE),
		};
	}
	pthread_mutex_unlock(&ifs->views_lock);

	d = (struct cli_info_data){
		.img = ifs->img,
		.image_path = img_path(ifs->img),
		.read_only = ifs->opts->read_only || !img_writable(ifs->img),
		.allocated = ifs_view_allocated(active, ifs->img),
		.snaps = snaps,
		.nb_snaps = nb_snaps,
		.table = table,
		.files = files,
		.nb_files = nb_files,
		.lvm = lvm,
		.lv_tables = lv_tables,
	};
	f = open_memstream(&text, &len);
	if (f) {
		ret = snaps ? cli_info_write(f, &d, false) : -1;
		if (fclose(f) != 0 || ret < 0) {
			free(text);
			text = NULL;
		}
	}
	free(snaps);
	free(files);
	part_table_free(table);
	if (text)
		*len_r = len;
	return text;
}
