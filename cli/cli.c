/* cli.c: dispatches the commands without FUSE (imgfs info|ls|cat|cp|tar
 * IMAGE ...), parses their common options, and runs `info`.
 *
 * Common options mean what they mean for the mount (fuse/options.c):
 * --format FORMAT (or -o format=), -o backing=local|follow|deny, --disk
 * N (or -o disk=N: an OVA's Nth disk; an image of another format
 * refuses it). Mount-only options (-o ro, allow_other,
 * ...) are refused here: these commands never write and never mount.
 * Options may come before or after the arguments.
 *
 * SIGPIPE keeps its default action: a reader that goes away (`imgfs cat
 * ... | head`) ends the program quietly, as it ends cat.
 */
#include "cli-int.h"

#include "checked.h"

#include <ctype.h>
#include <errno.h>
#include <getopt.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/time.h>
#include <time.h>
#include <unistd.h>

static const struct {
	const char *name;
	int (*run)(int argc, char **argv);
} commands[] = {
	{ "info", cli_cmd_info },
	{ "ls", cli_cmd_ls },
	{ "cat", cli_cmd_cat },
	{ "cp", cli_cmd_cp },
	{ "tar", cli_cmd_tar },
};
#define NB_COMMANDS (sizeof(commands) / sizeof(commands[0]))

bool cli_is_command(const char *name)
{
	for (size_t i = 0; i < NB_COMMANDS; i++)
		if (strcmp(commands[i].name, name) == 0)
			return true;
	return false;
}

int cli_main(int argc, char **argv)
{
	signal(SIGPIPE, SIG_DFL);
	for (size_t i = 0; i < NB_COMMANDS; i++)
		if (strcmp(commands[i].name, argv[0]) == 0)
			return commands[i].run(argc, argv);
	fprintf(stderr, "imgfs: %s: unknown command\n", argv[0]);
	return CLI_EXIT_USAGE;
}

double cli_now(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (double)ts.tv_sec + ts.tv_nsec / 1e9;
}

static const char common_help[] =
	"\n"
	"Common options:\n"
	"  --format FORMAT    raw, qcow2, vmdk, vpc/vhd, vhdx, vdi, ova (default:\n"
	"                     probe; also -o format=FORMAT)\n"
	"  -o backing=local|follow|deny\n"
	"                     which backing/data files may be opened: local\n"
	"                     (default) only inside the image's folder, follow\n"
	"                     any path, deny none\n"
	"  --disk N           the Nth disk of an OVA archive (default 1; also\n"
	"                     -o disk=N); refused for other formats\n"
	"  -h, --help         show this help\n"
	"\n"
	"A PLACE is BLOCKFILE or BLOCKFILE:PATH. BLOCKFILE is a block file as the\n"
	"mount shows it (disk, p2, lvm/VG/LV, snapshots/NAME/p2); PATH is a path in\n"
	"its filesystem. BLOCKFILE alone means its raw bytes.\n"
	"The image is opened read-only; nothing is written into it.\n"
	"Exit status: 0 success, 1 failure (some file could not be read or\n"
	"written), 2 bad command line.\n";

int cli_parse_backing(const char *value, enum img_backing_policy *policy_r)
{
	if (strcmp(value, "local") == 0)
		*policy_r = IMG_BACKING_LOCAL;
	else if (strcmp(value, "follow") == 0)
		*policy_r = IMG_BACKING_FOLLOW;
	else if (strcmp(value, "deny") == 0)
		*policy_r = IMG_BACKING_DENY;
	else {
		fprintf(stderr, "imgfs: unknown backing policy '%s' (use "
			"local, follow or deny)\n", value);
		return -EINVAL;
	}
	return 0;
}

int cli_parse_format(const char *value, enum img_format *format_r)
{
	if (img_format_from_name(value, format_r) < 0) {
		fprintf(stderr, "imgfs: unknown format '%s' (use one of: %s)\n",
			value, img_format_names());
		return -EINVAL;
	}
	return 0;
}

/* As many disks as imgfmt/ova.c reads members from an archive; the
 * driver names the count when a number lies past the disks it holds. */
#define CLI_MAX_DISK 65536

int cli_parse_disk(const char *value, unsigned *disk_r)
{
	char *end;
	unsigned long n;

	errno = 0;
	n = strtoul(value, &end, 10);
	/* strtoul takes a sign and blanks: a number is digits only. */
	if (!isdigit((unsigned char)value[0]) || *end || errno || n < 1 ||
	    n > CLI_MAX_DISK) {
		fprintf(stderr, "imgfs: bad disk '%s' (the number of a disk "
			"in an OVA, from 1)\n", value);
		return -EINVAL;
	}
	*disk_r = (unsigned)n;
	return 0;
}

static int parse_o(char *list, struct cli_opts *o)
{
	char *save = NULL;

	for (char *tok = strtok_r(list, ",", &save); tok;
	     tok = strtok_r(NULL, ",", &save)) {
		char *v = strchr(tok, '=');

		if (v)
			*v++ = '\0';
		if (v && strcmp(tok, "backing") == 0) {
			if (cli_parse_backing(v, &o->backing) < 0)
				return -EINVAL;
		} else if (v && strcmp(tok, "format") == 0) {
			if (cli_parse_format(v, &o->format) < 0)
				return -EINVAL;
		} else if (v && strcmp(tok, "disk") == 0) {
			if (cli_parse_disk(v, &o->disk) < 0)
				return -EINVAL;
		} else if (!v && strcmp(tok, "ro") == 0) {
			/* always read-only */
		} else {
			if (v)
				v[-1] = '=';
			fprintf(stderr, "imgfs: unknown option '%s' (see "
				"imgfs %s --help)\n", tok, "COMMAND");
			return -EINVAL;
		}
	}
	return 0;
}

int cli_parse(int argc, char **argv, const char *flags, const char *usage,
	      struct cli_opts *o, char **pos, int min_pos, int max_pos,
	      int *nb_pos_r)
{
	static const struct option longopts[] = {
		{ "help", no_argument, NULL, 'h' },
		{ "format", required_argument, NULL, 'F' },
		{ "json", no_argument, NULL, 'J' },
		{ "disk", required_argument, NULL, 'D' },
		{ NULL, 0, NULL, 0 },
	};
	char optstring[32];
	int nb = 0, c;

	memset(o, 0, sizeof(*o));
	/* "-": arguments in any order; ":": a missing value is ':'. */
	snprintf(optstring, sizeof(optstring), "-:ho:%s", flags);
	opterr = 0;
	optind = 1;
	while ((c = getopt_long(argc, argv, optstring, longopts, NULL)) != -1) {
		switch (c) {
		case 1:
			if (nb == max_pos) {
				fprintf(stderr, "imgfs %s: unexpected argument "
					"'%s' (usage: %s)\n", argv[0], optarg,
					usage);
				return CLI_EXIT_USAGE;
			}
			pos[nb++] = optarg;
			break;
		case 'h':
			printf("Usage: %s\n%s", usage, common_help);
			return 1;
		case 'F':
			if (cli_parse_format(optarg, &o->format) < 0)
				return CLI_EXIT_USAGE;
			break;
		case 'o':
			if (parse_o(optarg, o) < 0)
				return CLI_EXIT_USAGE;
			break;
		case 'D':
			if (cli_parse_disk(optarg, &o->disk) < 0)
				return CLI_EXIT_USAGE;
			break;
		case 'J':
			if (strcmp(argv[0], "info") != 0)
				goto unknown;
			o->json = true;
			break;
		case 'l':
			o->longfmt = true;
			break;
		case 'R':
			o->recursive = true;
			break;
		case ':':
			fprintf(stderr, "imgfs %s: option '%s' needs a value\n",
				argv[0], argv[optind - 1]);
			return CLI_EXIT_USAGE;
		default:
		unknown:
			fprintf(stderr, "imgfs %s: unknown option '%s' (usage: "
				"%s)\n", argv[0], argv[optind - 1], usage);
			return CLI_EXIT_USAGE;
		}
	}
	if (nb < min_pos) {
		fprintf(stderr, "imgfs %s: %s (usage: %s)\n", argv[0],
			nb == 0 ? "no image given" : "missing argument", usage);
		return CLI_EXIT_USAGE;
	}
	*nb_pos_r = nb;
	return 0;
}

/* Output */

int cli_out_init(struct cli_out *o, int fd)
{
	memset(o, 0, sizeof(*o));
	o->fd = fd;
	o->cap = 2 * CLI_IO_BYTES;
	o->buf = malloc(o->cap);
	return o->buf ? 0 : -ENOMEM;
}

static int out_write_fd(struct cli_out *o, const uint8_t *p, size_t len)
{
	while (len) {
		ssize_t n = write(o->fd, p, len);

		if (n < 0 && errno == EINTR)
			continue;
		if (n < 0) {
			if (!o->error)
				o->error = -errno;
			return -errno;
		}
		p += n;
		len -= (size_t)n;
	}
	return 0;
}

int cli_out_flush(struct cli_out *o)
{
	int ret;

	if (o->error)
		return o->error;
	ret = out_write_fd(o, o->buf, o->len);
	o->len = 0;
	return ret;
}

int cli_out_write(struct cli_out *o, const void *p, size_t len)
{
	if (o->error)
		return o->error;
	o->total += len;
	if (o->len + len > o->cap) {
		int ret = cli_out_flush(o);

		if (ret < 0)
			return ret;
		if (len >= o->cap)
			return out_write_fd(o, p, len);
	}
	memcpy(o->buf + o->len, p, len);
	o->len += len;
	return 0;
}

void cli_out_free(struct cli_out *o)
{
	free(o->buf);
	o->buf = NULL;
}

/* Progress */

void cli_progress_start(struct cli_progress *p, const char *what,
			uint64_t total)
{
	memset(p, 0, sizeof(*p));
	p->on = isatty(STDERR_FILENO);
	p->what = what;
	p->total = total;
	p->start = p->last = cli_now();
}

static void human(uint64_t b, char *buf, size_t len)
{
	static const char units[] = "BKMGTPE";
	double v = (double)b;
	unsigned u = 0;

	while (v >= 1024 && u < sizeof(units) - 2) {
		v /= 1024;
		u++;
	}
	snprintf(buf, len, u ? "%.1f %ciB" : "%.0f %c", v, units[u]);
}

static void progress_draw(struct cli_progress *p, double now)
{
	char done[32], rate[32], left[32] = "";
	double secs = now - p->start;
	double bps = secs > 0 ? (double)p->done / secs : 0;

	human(p->done, done, sizeof(done));
	human((uint64_t)bps, rate, sizeof(rate));
	if (p->total && bps > 0 && p->done <= p->total) {
		double t = (double)(p->total - p->done) / bps;

		snprintf(left, sizeof(left), ", %d:%02d left", (int)t / 60,
			 (int)t % 60);
	}
	if (p->total) {
		unsigned pct = (unsigned)(MIN(p->done, p->total) * 100 /
					  p->total);
		fprintf(stderr, "\r%s: %3u%% %s, %s/s%s\033[K", p->what, pct,
			done, rate, left);
	} else {
		fprintf(stderr, "\r%s: %s, %s/s\033[K", p->what, done, rate);
	}
}

void cli_progress_add(struct cli_progress *p, uint64_t bytes)
{
	double now;

	p->done += bytes;
	if (!p->on)
		return;
	now = cli_now();
	if (now - p->last < 0.25)
		return;
	p->last = now;
	progress_draw(p, now);
}

void cli_progress_end(struct cli_progress *p)
{
	if (!p->on)
		return;
	/* The total may have been an estimate (blocks used): done is done. */
	if (p->total && p->done < p->total)
		p->total = p->done;
	progress_draw(p, cli_now());
	fputc('\n', stderr);
}

/* info */

static uint64_t allocated_bytes(struct img *img)
{
	uint64_t total = 0, off = 0, end = img_size(img);

	while (off < end) {
		struct img_extent ext;

		if (img_block_status(img, off, end - off, &ext) < 0)
			break;
		if (ext.kind == IMG_EXTENT_DATA && ext.depth == 0)
			total += ext.len;
		off += ext.len;
	}
	return total;
}

int cli_info_print(struct cli_session *s, FILE *f, bool json)
{
	struct cli_disk *d = &s->active;
	struct cli_info_snapshot *snaps = NULL;
	struct cli_info_files *files = NULL;
	struct part_table **lv_tables = NULL;
	size_t nb_files = 0, cap;
	struct cli_info_data data;
	int ret;

	ret = cli_disk_table(s, d);
	if (!ret)
		ret = cli_session_snapshots(s);
	if (!ret)
		ret = cli_disk_lvm(s, d);
	if (ret < 0)
		return ret;
	snaps = calloc(s->nb_snaps + 1, sizeof(*snaps));
	cap = d->table->nb_parts + 1 + lvm_nb_lvs(d->lvm);
	files = calloc(cap, sizeof(*files));
	lv_tables = calloc(lvm_nb_lvs(d->lvm) + 1, sizeof(*lv_tables));
	if (!snaps || !files || !lv_tables) {
		free(snaps);
		free(files);
		free(lv_tables);
		return -ENOMEM;
	}
	for (size_t i = 0; i < s->nb_snaps; i++) {
		const struct img_snapshot *sn = s->snap_dirs[i].snap;

		snaps[i] = (struct cli_info_snapshot){
			.dirname = s->snap_dirs[i].dirname,
			.id = sn->id,
			.name = sn->name,
			.date_sec = sn->date_sec,
			.date_nsec = sn->date_nsec,
			.vm_clock_nsec = sn->vm_clock_nsec,
			.disk_size = sn->disk_size,
			.vm_state_size = sn->vm_state_size,
			.kind = s->snap_dirs[i].kind,
			.unreadable = sn->unreadable,
		};
	}
	nb_files = cli_info_files_from_table(d->table, files, cap);
	for (size_t i = 0; i < lvm_nb_lvs(d->lvm) && nb_files < cap; i++) {
		const struct lvm_lv *lv = lvm_lv_at(d->lvm, i);
		struct img *lvimg = NULL;
		struct img_err err;

		if (!lv->unreadable &&
		    lvm_lv_open(d->lvm, i, true, &lvimg, &err) == 0) {
			if (cli_scan_img(lvimg, &lv_tables[i]) < 0)
				lv_tables[i] = NULL;
			img_close(lvimg);
		}
		cli_info_files_of_lv(lv, lv_tables[i], &files[nb_files++]);
	}
	data = (struct cli_info_data){
		.img = s->img,
		.image_path = img_path(s->img),
		.read_only = true,
		.allocated = allocated_bytes(s->img),
		.snaps = snaps,
		.nb_snaps = s->nb_snaps,
		.table = d->table,
		.files = files,
		.nb_files = nb_files,
		.lvm = d->lvm,
		.lv_tables = (const struct part_table *const *)lv_tables,
	};
	ret = cli_info_write(f, &data, json);
	for (size_t i = 0; i < lvm_nb_lvs(d->lvm); i++)
		part_table_free(lv_tables[i]);
	free(lv_tables);
	free(snaps);
	free(files);
	return ret;
}

int cli_cmd_info(int argc, char **argv)
{
	static const char usage[] = "imgfs info [--json] [OPTIONS] IMAGE";
	struct cli_session s;
	struct cli_opts o;
	char *pos[1];
	int nb, ret;

	ret = cli_parse(argc, argv, "", usage, &o, pos, 1, 1, &nb);
	if (ret)
		return ret == 1 ? CLI_EXIT_OK : ret;
	if (cli_session_open(&s, pos[0], &o) < 0)
		return CLI_EXIT_FAIL;
	ret = cli_info_print(&s, stdout, o.json);
	cli_session_close(&s);
	if (fflush(stdout) != 0 || ret < 0)
		return CLI_EXIT_FAIL;
	return CLI_EXIT_OK;
}
