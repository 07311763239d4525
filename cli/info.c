/* info.c: the info text (MOUNTPOINT/info and `imgfs info`) and its JSON
 * form (`imgfs info --json`), from plain data (struct cli_info_data), so
 * the mount and the command print the same thing.
 *
 * Text: "key value" lines for the image, then one header line and one
 * row per snapshot, per block file's files/ status, per volume group,
 * physical volume, logical volume (with the filesystem in it) and
 * partition, columns separated by spaces, "-" for an empty value. Sizes
 * are in bytes (exact, so scripts need no unit parsing). The partition
 * table comes last (scripts read from its header row to the end).
 *
 * JSON: one object; keys are stable and listed in the man page
 * (imgfs.1, "JSON KEYS"). Absent values are null, never missing keys.
 */
#include "cli-int.h"

#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

bool cli_fs_type_readable(const char *fs_type)
{
	static const char *const readable[] = {
		"ext2", "ext3", "ext4", "ext4dev", "vfat", "msdos",
	};

	for (size_t i = 0; fs_type && i < sizeof(readable) / sizeof(*readable);
	     i++)
		if (strcmp(fs_type, readable[i]) == 0)
			return true;
	return false;
}

bool cli_files_reason(const char *fs_type, bool container, char *buf,
		      size_t len)
{
	if (container)
		snprintf(buf, len, "extended partition (holds the logical "
			 "partitions)");
	else if (fs_type && strcmp(fs_type, "LVM2_member") == 0)
		snprintf(buf, len, "LVM physical volume (see lvm/)");
	else if (!fs_type)
		snprintf(buf, len, "no filesystem found");
	else if (!cli_fs_type_readable(fs_type))
		snprintf(buf, len, "no filesystem imgfs reads (%s)", fs_type);
	else
		return false;
	return true;
}

size_t cli_info_files_from_table(const struct part_table *t,
				 struct cli_info_files *files, size_t cap)
{
	size_t n = 0;

	if (!t || !cap)
		return 0;
	if (t->nb_parts == 0) {
		snprintf(files[0].name, sizeof(files[0].name), "disk");
		files[0].shown = !cli_files_reason(t->disk_fs_type, false,
						   files[0].reason,
						   sizeof(files[0].reason));
		if (files[0].shown)
			files[0].reason[0] = '\0';
		return 1;
	}
	for (size_t i = 0; i < t->nb_parts && n < cap; i++) {
		const struct part_entry *e = &t->parts[i];
		struct cli_info_files *f = &files[n++];

		snprintf(f->name, sizeof(f->name), "p%u", e->number);
		f->shown = !cli_files_reason(e->fs_type, e->container,
					     f->reason, sizeof(f->reason));
		if (f->shown)
			f->reason[0] = '\0';
	}
	return n;
}

bool cli_lv_files_shown(const struct part_table *t)
{
	return t && t->nb_parts == 0 && cli_fs_type_readable(t->disk_fs_type);
}

void cli_info_files_of_lv(const struct lvm_lv *lv, const struct part_table *t,
			  struct cli_info_files *f)
{
	snprintf(f->name, sizeof(f->name), "lvm/%s/%s", lv->vg_name, lv->name);
	f->shown = false;
	f->reason[0] = '\0';
	if (lv->unreadable)
		snprintf(f->reason, sizeof(f->reason), "%s", lv->unreadable);
	else if (!t)
		snprintf(f->reason, sizeof(f->reason), "cannot be read");
	else if (t->nb_parts)
		snprintf(f->reason, sizeof(f->reason), "holds a partition "
			 "table (%s), not a filesystem", t->label);
	else
		f->shown = !cli_files_reason(t->disk_fs_type, false, f->reason,
					     sizeof(f->reason));
	if (f->shown)
		f->reason[0] = '\0';
}

static const char *dash(const char *s)
{
	return s && s[0] ? s : "-";
}

static const char *yes_no(bool b)
{
	return b ? "yes" : "no";
}

static void iso_date(uint64_t sec, char *buf, size_t len)
{
	time_t t = (time_t)sec;
	struct tm tm;

	snprintf(buf, len, "-");
	if (gmtime_r(&t, &tm))
		strftime(buf, len, "%Y-%m-%dT%H:%M:%SZ", &tm);
}

static const char *kind_note(enum cli_dirname_kind k)
{
	return k == CLI_DIRNAME_BY_POSITION ? "named-by-position" :
	       k == CLI_DIRNAME_BY_ID	    ? "named-by-id" :
					      "-";
}

static void text_qcow2(FILE *f, const struct img_info_qcow2 *q,
		       const char *corrupt_reason)
{
	fprintf(f, "qcow2-version %u\n", q->version);
	fprintf(f, "refcount-bits %u\n", q->refcount_bits);
	fprintf(f, "extended-l2 %s\n", yes_no(q->extended_l2));
	fprintf(f, "compression %s\n", dash(q->compression));
	fprintf(f, "dirty %s\n", yes_no(q->dirty));
	fprintf(f, "corrupt %s\n", yes_no(q->corrupt));
	if (corrupt_reason)
		fprintf(f, "corrupt-reason %s\n", corrupt_reason);
	fprintf(f, "lazy-refcounts %s\n", yes_no(q->lazy_refcounts));
	if (q->data_file)
		fprintf(f, "data-file %s%s\n", q->data_file,
			q->data_file_raw ? " (raw)" : "");
}

static void text_image(FILE *f, const struct cli_info_data *d)
{
	struct img_info info;
	unsigned depth = 0;

	img_get_info(d->img, &info);
	fprintf(f, "image %s\n", d->image_path);
	fprintf(f, "format %s\n", info.format);
	fprintf(f, "virtual-size %" PRIu64 "\n", info.virtual_size);
	if (info.cluster_size)
		fprintf(f, "cluster-size %" PRIu64 "\n", info.cluster_size);
	fprintf(f, "allocated %" PRIu64 "\n", d->allocated);
	if (info.kind == IMG_INFO_QCOW2)
		text_qcow2(f, &info.qcow2, img_corrupt_reason(d->img));
	for (size_t i = 0; i < info.nb_fields; i++)
		fprintf(f, "%s %s\n", info.fields[i].key,
			info.fields[i].value);
	fprintf(f, "read-only %s\n", yes_no(d->read_only));
	for (struct img *b = img_backing(d->img); b; b = img_backing(b)) {
		struct img_info binfo;

		img_get_info(b, &binfo);
		fprintf(f, "backing-%u %s %s\n", ++depth, img_path(b),
			binfo.format);
	}
}

static void text_snapshots(FILE *f, const struct cli_info_data *d)
{
	fprintf(f, "\nsnapshots %zu\n", d->nb_snaps);
	if (d->nb_snaps)
		fprintf(f, "DIR ID NAME DATE VM-CLOCK-NS DISK-SIZE NOTE "
			"UNREADABLE\n");
	for (size_t i = 0; i < d->nb_snaps; i++) {
		const struct cli_info_snapshot *s = &d->snaps[i];
		char date[32];

		iso_date(s->date_sec, date, sizeof(date));
		fprintf(f, "%s %s %s %s %" PRIu64 " %" PRIu64 " %s %s\n",
			s->dirname, dash(s->id), dash(s->name), date,
			s->vm_clock_nsec, s->disk_size, kind_note(s->kind),
			dash(s->unreadable));
	}
}

static void text_files(FILE *f, const struct cli_info_data *d)
{
	if (!d->nb_files)
		return;
	fprintf(f, "\nfiles %zu\n", d->nb_files);
	/* Rows are named files/X, so that they never read as the partition
	 * rows below (whose first column is X). */
	fprintf(f, "FOLDER SHOWN REASON\n");
	for (size_t i = 0; i < d->nb_files; i++)
		fprintf(f, "files/%s %s %s\n", d->files[i].name,
			yes_no(d->files[i].shown), dash(d->files[i].reason));
}

/* The scan of LV i, or NULL. */
static const struct part_table *lv_table(const struct cli_info_data *d,
					 size_t i)
{
	return d->lv_tables ? d->lv_tables[i] : NULL;
}

static void text_lvm(FILE *f, const struct cli_info_data *d)
{
	size_t nb_vgs = d->lvm ? lvm_nb_vgs(d->lvm) : 0;
	size_t nb_pvs = d->lvm ? lvm_nb_pvs(d->lvm) : 0;
	size_t nb_lvs = d->lvm ? lvm_nb_lvs(d->lvm) : 0;

	if (!nb_vgs)
		return;
	fprintf(f, "\nvolume-groups %zu\n", nb_vgs);
	fprintf(f, "VG UUID SEQNO EXTENT-SIZE ERROR\n");
	for (size_t i = 0; i < nb_vgs; i++) {
		const struct lvm_vg *vg = lvm_vg_at(d->lvm, i);

		fprintf(f, "%s %s %" PRIu64 " %" PRIu64 " %s\n", dash(vg->name),
			dash(vg->uuid), vg->seqno, vg->extent_bytes,
			dash(vg->error));
	}
	fprintf(f, "\nphysical-volumes %zu\n", nb_pvs);
	if (nb_pvs)
		fprintf(f, "VG UUID FILE SIZE NOTE\n");
	for (size_t i = 0; i < nb_pvs; i++) {
		const struct lvm_pv *pv = lvm_pv_at(d->lvm, i);

		fprintf(f, "%s %s %s %" PRIu64 " %s\n", pv->vg_name,
			dash(pv->uuid), dash(pv->source), pv->size_bytes,
			pv->source ? "-" : "missing");
	}
	fprintf(f, "\nlogical-volumes %zu\n", nb_lvs);
	if (nb_lvs)
		fprintf(f, "FILE SIZE SEGMENTS UUID FSTYPE LABEL FSUUID "
			"UNREADABLE\n");
	for (size_t i = 0; i < nb_lvs; i++) {
		const struct lvm_lv *lv = lvm_lv_at(d->lvm, i);
		const struct part_table *t = lv_table(d, i);

		fprintf(f, "lvm/%s/%s %" PRIu64 " %s %s %s %s %s %s\n",
			lv->vg_name, lv->name, lv->size_bytes,
			dash(lv->segment_types), dash(lv->uuid),
			dash(t ? t->disk_fs_type : NULL),
			dash(t ? t->disk_fs_label : NULL),
			dash(t ? t->disk_fs_uuid : NULL), dash(lv->unreadable));
	}
}

static void text_partitions(FILE *f, const struct part_table *t)
{
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
	if (!t || !t->nb_parts)
		return;
	fprintf(f, "FILE START SIZE TYPE FSTYPE LABEL UUID PARTUUID NAME "
		"NOTE\n");
	for (size_t i = 0; i < t->nb_parts; i++) {
		const struct part_entry *e = &t->parts[i];

		fprintf(f, "p%u %" PRIu64 " %" PRIu64 " %s %s %s %s %s %s %s\n",
			e->number, e->start_bytes, e->size_bytes, dash(e->type),
			dash(e->fs_type), dash(e->fs_label), dash(e->fs_uuid),
			dash(e->part_uuid), dash(e->part_name),
			e->past_end    ? "past-end-of-disk" :
			e->container ? "extended" :
				       "-");
	}
}

/* JSON */

static void json_str(FILE *f, const char *s)
{
	if (!s) {
		fputs("null", f);
		return;
	}
	fputc('"', f);
	for (const unsigned char *p = (const unsigned char *)s; *p; p++) {
		if (*p == '"' || *p == '\\')
			fprintf(f, "\\%c", *p);
		else if (*p == '\n')
			fputs("\\n", f);
		else if (*p == '\t')
			fputs("\\t", f);
		else if (*p < 0x20 || *p == 0x7f)
			fprintf(f, "\\u%04x", *p);
		else
			fputc(*p, f);
	}
	fputc('"', f);
}

/* A string that may be empty: "" becomes null. */
static void json_opt(FILE *f, const char *s)
{
	json_str(f, s && s[0] ? s : NULL);
}

static void json_key(FILE *f, bool *first, const char *key)
{
	fprintf(f, "%s\"%s\": ", *first ? "" : ", ", key);
	*first = false;
}

static void json_kstr(FILE *f, bool *first, const char *key, const char *v)
{
	json_key(f, first, key);
	json_opt(f, v);
}

static void json_kuint(FILE *f, bool *first, const char *key, uint64_t v)
{
	json_key(f, first, key);
	fprintf(f, "%" PRIu64, v);
}

static void json_kbool(FILE *f, bool *first, const char *key, bool v)
{
	json_key(f, first, key);
	fputs(v ? "true" : "false", f);
}

static const struct cli_info_files *files_of(const struct cli_info_data *d,
					     const char *name)
{
	for (size_t i = 0; i < d->nb_files; i++)
		if (strcmp(d->files[i].name, name) == 0)
			return &d->files[i];
	return NULL;
}

static void json_files(FILE *f, bool *first, const struct cli_info_data *d,
		       const char *name)
{
	const struct cli_info_files *fi = files_of(d, name);

	json_kbool(f, first, "files", fi && fi->shown);
	json_kstr(f, first, "files_reason", fi && !fi->shown ? fi->reason :
							      NULL);
}

static void json_qcow2(FILE *f, const struct img_info_qcow2 *q,
		       const char *corrupt_reason)
{
	bool fb = true;

	fputc('{', f);
	json_kuint(f, &fb, "version", q->version);
	json_kuint(f, &fb, "refcount_bits", q->refcount_bits);
	json_kbool(f, &fb, "extended_l2", q->extended_l2);
	json_kstr(f, &fb, "compression", q->compression);
	json_kbool(f, &fb, "dirty", q->dirty);
	json_kbool(f, &fb, "corrupt", q->corrupt);
	json_kstr(f, &fb, "corrupt_reason", corrupt_reason);
	json_kbool(f, &fb, "lazy_refcounts", q->lazy_refcounts);
	json_kstr(f, &fb, "data_file", q->data_file);
	json_kbool(f, &fb, "data_file_raw", q->data_file_raw);
	fputc('}', f);
}

static void json_image(FILE *f, bool *first, const struct cli_info_data *d)
{
	struct img_info info;
	bool fb;

	img_get_info(d->img, &info);
	json_kstr(f, first, "image", d->image_path);
	json_kstr(f, first, "format", info.format);
	json_kuint(f, first, "virtual_size", info.virtual_size);
	json_key(f, first, "cluster_size");
	if (info.cluster_size)
		fprintf(f, "%" PRIu64, info.cluster_size);
	else
		fputs("null", f);
	json_kuint(f, first, "allocated", d->allocated);
	json_kbool(f, first, "read_only", d->read_only);
	json_key(f, first, "qcow2");
	if (info.kind == IMG_INFO_QCOW2)
		json_qcow2(f, &info.qcow2, img_corrupt_reason(d->img));
	else
		fputs("null", f);
	json_key(f, first, "fields");
	fputc('{', f);
	fb = true;
	for (size_t i = 0; i < info.nb_fields; i++)
		json_kstr(f, &fb, info.fields[i].key, info.fields[i].value);
	fputc('}', f);
	json_key(f, first, "backing_chain");
	fputc('[', f);
	for (struct img *b = img_backing(d->img); b; b = img_backing(b)) {
		struct img_info binfo;

		img_get_info(b, &binfo);
		fputs(b == img_backing(d->img) ? "{" : ", {", f);
		fb = true;
		json_kstr(f, &fb, "path", img_path(b));
		json_kstr(f, &fb, "format", binfo.format);
		fputc('}', f);
	}
	fputc(']', f);
}

static void json_snapshots(FILE *f, bool *first,
			   const struct cli_info_data *d)
{
	json_key(f, first, "snapshots");
	fputc('[', f);
	for (size_t i = 0; i < d->nb_snaps; i++) {
		const struct cli_info_snapshot *s = &d->snaps[i];
		static const char *const kinds[] = { "name", "id", "position" };
		char date[32];
		bool fb = true;

		iso_date(s->date_sec, date, sizeof(date));
		fputs(i ? ", {" : "{", f);
		json_kstr(f, &fb, "dir", s->dirname);
		json_key(f, &fb, "id");
		json_str(f, s->id ? s->id : "");
		json_key(f, &fb, "name");
		json_str(f, s->name ? s->name : "");
		json_kstr(f, &fb, "date", date);
		json_kuint(f, &fb, "date_sec", s->date_sec);
		json_kuint(f, &fb, "date_nsec", s->date_nsec);
		json_kuint(f, &fb, "vm_clock_nsec", s->vm_clock_nsec);
		json_kuint(f, &fb, "disk_size", s->disk_size);
		json_kuint(f, &fb, "vm_state_size", s->vm_state_size);
		json_kstr(f, &fb, "named_by", kinds[s->kind]);
		json_kstr(f, &fb, "unreadable", s->unreadable);
		fputc('}', f);
	}
	fputc(']', f);
}

static void json_partitions(FILE *f, bool *first,
			    const struct cli_info_data *d)
{
	const struct part_table *t = d->table;
	bool fb = true;

	json_key(f, first, "partition_table");
	fputc('{', f);
	json_kstr(f, &fb, "label", t ? t->label : NULL);
	json_kstr(f, &fb, "disk_id", t ? t->disk_id : NULL);
	json_kstr(f, &fb, "error", t ? t->error : NULL);
	json_kstr(f, &fb, "warning", t ? t->warning : NULL);
	fputc('}', f);
	json_key(f, first, "disk_filesystem");
	if (t && t->disk_fs_type) {
		fb = true;
		fputc('{', f);
		json_kstr(f, &fb, "fs_type", t->disk_fs_type);
		json_kstr(f, &fb, "fs_label", t->disk_fs_label);
		json_kstr(f, &fb, "fs_uuid", t->disk_fs_uuid);
		json_files(f, &fb, d, "disk");
		fputc('}', f);
	} else {
		fputs("null", f);
	}
	json_key(f, first, "partitions");
	fputc('[', f);
	for (size_t i = 0; t && i < t->nb_parts; i++) {
		const struct part_entry *e = &t->parts[i];
		char name[32];

		snprintf(name, sizeof(name), "p%u", e->number);
		fb = true;
		fputs(i ? ", {" : "{", f);
		json_kuint(f, &fb, "number", e->number);
		json_kstr(f, &fb, "file", name);
		json_kuint(f, &fb, "start", e->start_bytes);
		json_kuint(f, &fb, "size", e->size_bytes);
		json_kstr(f, &fb, "type", e->type);
		json_kstr(f, &fb, "type_name", e->type_name);
		json_kstr(f, &fb, "uuid", e->part_uuid);
		json_kstr(f, &fb, "name", e->part_name);
		json_kstr(f, &fb, "fs_type", e->fs_type);
		json_kstr(f, &fb, "fs_label", e->fs_label);
		json_kstr(f, &fb, "fs_uuid", e->fs_uuid);
		json_kbool(f, &fb, "container", e->container);
		json_kbool(f, &fb, "past_end", e->past_end);
		json_files(f, &fb, d, name);
		fputc('}', f);
	}
	fputc(']', f);
}

static void json_lvm(FILE *f, bool *first, const struct cli_info_data *d)
{
	size_t nb_vgs = d->lvm ? lvm_nb_vgs(d->lvm) : 0;
	size_t nb_pvs = d->lvm ? lvm_nb_pvs(d->lvm) : 0;
	size_t nb_lvs = d->lvm ? lvm_nb_lvs(d->lvm) : 0;

	json_key(f, first, "volume_groups");
	fputc('[', f);
	for (size_t i = 0; i < nb_vgs; i++) {
		const struct lvm_vg *vg = lvm_vg_at(d->lvm, i);
		bool fb = true;

		fputs(i ? ", {" : "{", f);
		json_kstr(f, &fb, "name", vg->name);
		json_kstr(f, &fb, "uuid", vg->uuid);
		json_kuint(f, &fb, "seqno", vg->seqno);
		json_kuint(f, &fb, "extent_size", vg->extent_bytes);
		json_kstr(f, &fb, "error", vg->error);
		fputc('}', f);
	}
	fputc(']', f);
	json_key(f, first, "physical_volumes");
	fputc('[', f);
	for (size_t i = 0; i < nb_pvs; i++) {
		const struct lvm_pv *pv = lvm_pv_at(d->lvm, i);
		bool fb = true;

		fputs(i ? ", {" : "{", f);
		json_kstr(f, &fb, "vg", pv->vg_name);
		json_kstr(f, &fb, "uuid", pv->uuid);
		json_kstr(f, &fb, "file", pv->source);
		json_kuint(f, &fb, "size", pv->size_bytes);
		json_kbool(f, &fb, "missing", !pv->source);
		fputc('}', f);
	}
	fputc(']', f);
	json_key(f, first, "logical_volumes");
	fputc('[', f);
	for (size_t i = 0; i < nb_lvs; i++) {
		const struct lvm_lv *lv = lvm_lv_at(d->lvm, i);
		const struct part_table *t = lv_table(d, i);
		char name[300];
		bool fb = true;

		snprintf(name, sizeof(name), "lvm/%s/%s", lv->vg_name,
			 lv->name);
		fputs(i ? ", {" : "{", f);
		json_kstr(f, &fb, "vg", lv->vg_name);
		json_kstr(f, &fb, "name", lv->name);
		json_kstr(f, &fb, "file", name);
		json_kstr(f, &fb, "uuid", lv->uuid);
		json_kuint(f, &fb, "size", lv->size_bytes);
		json_kstr(f, &fb, "segment_types", lv->segment_types);
		json_kstr(f, &fb, "fs_type", t ? t->disk_fs_type : NULL);
		json_kstr(f, &fb, "fs_label", t ? t->disk_fs_label : NULL);
		json_kstr(f, &fb, "fs_uuid", t ? t->disk_fs_uuid : NULL);
		json_kstr(f, &fb, "unreadable", lv->unreadable);
		json_files(f, &fb, d, name);
		fputc('}', f);
	}
	fputc(']', f);
}

int cli_info_write(FILE *f, const struct cli_info_data *d, bool json)
{
	if (json) {
		bool first = true;

		fputc('{', f);
		json_image(f, &first, d);
		json_snapshots(f, &first, d);
		json_partitions(f, &first, d);
		json_lvm(f, &first, d);
		fputs("}\n", f);
	} else {
		text_image(f, d);
		text_snapshots(f, d);
		text_files(f, d);
		text_lvm(f, d);
		text_partitions(f, d->table);
	}
	return ferror(f) ? -EIO : 0;
}
