/* info.c: the text of MOUNTPOINT/info.
 *
 * Plain text for a terminal that awk can also parse: "key value" lines
 * for the image, then one header line and one row per snapshot and per
 * partition, columns separated by spaces, "-" for an empty value. Sizes
 * are in bytes (exact, so scripts need no unit parsing).
 */
#include "ifs.h"

#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

static const char *dash(const char *s)
{
	return s && s[0] ? s : "-";
}

static const char *yes_no(bool b)
{
	return b ? "yes" : "no";
}

static void print_image(FILE *f, struct ifs *ifs)
{
	struct img_info info;
	uint64_t alloc;
	unsigned depth = 0;

	img_get_info(ifs->img, &info);
	alloc = ifs_view_allocated(ifs_view_by_slot(ifs, 0), 0,
				   img_size(ifs->img));
	fprintf(f, "image %s\n", img_path(ifs->img));
	fprintf(f, "format %s\n", info.format);
	fprintf(f, "virtual-size %" PRIu64 "\n", info.virtual_size);
	if (info.cluster_size)
		fprintf(f, "cluster-size %" PRIu64 "\n", info.cluster_size);
	fprintf(f, "allocated %" PRIu64 "\n", alloc);
	if (info.qcow2_version) {
		fprintf(f, "qcow2-version %u\n", info.qcow2_version);
		fprintf(f, "refcount-bits %u\n", info.refcount_bits);
		fprintf(f, "extended-l2 %s\n", yes_no(info.extended_l2));
		fprintf(f, "compression %s\n", dash(info.compression));
		fprintf(f, "dirty %s\n", yes_no(info.dirty));
		fprintf(f, "corrupt %s\n", yes_no(info.corrupt));
		if (img_corrupt_reason(ifs->img))
			fprintf(f, "corrupt-reason %s\n",
				img_corrupt_reason(ifs->img));
		fprintf(f, "lazy-refcounts %s\n", yes_no(info.lazy_refcounts));
		if (info.data_file)
			fprintf(f, "data-file %s%s\n", info.data_file,
				info.data_file_raw ? " (raw)" : "");
	}
	fprintf(f, "read-only %s\n",
		yes_no(ifs->opts->read_only || !img_writable(ifs->img)));
	for (struct img *b = img_backing(ifs->img); b; b = img_backing(b)) {
		struct img_info binfo;
		img_get_info(b, &binfo);
		fprintf(f, "backing-%u %s %s\n", ++depth, img_path(b),
			binfo.format);
	}
}

static void print_snapshots(FILE *f, struct ifs *ifs)
{
	size_t shown = 0;

	pthread_mutex_lock(&ifs->views_lock);
	for (size_t i = 1; i < ifs->nb_views; i++)
		shown += !ifs->views[i]->deleted;
	fprintf(f, "\nsnapshots %zu\n", shown);
	if (shown)
		fprintf(f, "DIR ID NAME DATE VM-CLOCK-NS DISK-SIZE NOTE\n");
	pthread_mutex_unlock(&ifs->views_lock);
	if (!shown)
		return;

	pthread_mutex_lock(&ifs->views_lock);
	for (size_t i = 1; i < ifs->nb_views; i++) {
		struct ifs_view *v = ifs->views[i];
		time_t t = (time_t)v->snap_date_sec;
		char date[32] = "-";
		struct tm tm;

		if (v->deleted)
			continue;
		if (gmtime_r(&t, &tm))
			strftime(date, sizeof(date), "%Y-%m-%dT%H:%M:%SZ",
				 &tm);
		fprintf(f, "%s %s %s %s %" PRIu64 " %" PRIu64 " %s\n",
			v->dirname, dash(v->snap_id), dash(v->snap_name), date,
			v->snap_vm_clock_nsec, img_size(v->img),
			v->dirname_is_position ? "named-by-position" :
			v->dirname_is_id       ? "named-by-id" :
						 "-");
	}
	pthread_mutex_unlock(&ifs->views_lock);
}

static void print_partitions(FILE *f, struct ifs_view *view)
{
	const struct part_table *t;

	pthread_rwlock_rdlock(&view->table_lock);
	t = view->table;
	fprintf(f, "\npartition-table %s\n", t ? dash(t->label) : "-");
	if (t && t->disk_id)
		fprintf(f, "disk-id %s\n", t->disk_id);
	if (t && t->error)
		fprintf(f, "partition-error %s\n", t->error);
	if (t && t->warning)
		fprintf(f, "partition-warning %s\n", t->warning);
	if (t && t->disk_fs_type)
		fprintf(f, "disk-filesystem %s %s %s\n", t->disk_fs_type,
			dash(t->disk_fs_label), dash(t->disk_fs_uuid));
	if (t && t->nb_parts) {
		fprintf(f, "FILE START SIZE TYPE FSTYPE LABEL UUID PARTUUID "
			"NAME NOTE\n");
		for (size_t i = 0; i < t->nb_parts; i++) {
			const struct part_entry *e = &t->parts[i];
			fprintf(f, "p%u %" PRIu64 " %" PRIu64
				" %s %s %s %s %s %s %s\n",
				e->number, e->start_bytes, e->size_bytes,
				dash(e->type), dash(e->fs_type),
				dash(e->fs_label), dash(e->fs_uuid),
				dash(e->part_uuid), dash(e->part_name),
				e->past_end ? "past-end-of-disk"
				: e->container ? "extended" : "-");
		}
	}
	pthread_rwlock_unlock(&view->table_lock);
}

char *ifs_info_text(struct ifs *ifs, size_t *len_r)
{
	char *text = NULL;
	size_t len = 0;
	FILE *f = open_memstream(&text, &len);

	if (!f)
		return NULL;
	print_image(f, ifs);
	print_snapshots(f, ifs);
	print_partitions(f, ifs_view_by_slot(ifs, 0));
	if (fclose(f) != 0) {
		free(text);
		return NULL;
	}
	*len_r = len;
	return text;
}
