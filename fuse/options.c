/* options.c: the command line of imgfs.
 *
 *   imgfs [OPTIONS] IMAGE MOUNTPOINT
 *
 * Options may come before or after the two paths, because mount.fuse3
 * (mount -t fuse.imgfs, fstab) calls "imgfs IMAGE MOUNTPOINT -o opts".
 * mount.fuse3 also hands over generic mount options (rw, dev, noatime,
 * ...): those the kernel understands are passed to the mount, those that
 * only mean something to mount(8) or fstab (auto, user, nofail, ...) are
 * accepted and dropped. Anything else is an error naming the option.
 */
#include "ifs.h"

#include "cli.h"
#include "log.h"

#include <errno.h>
#include <getopt.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static void usage(FILE *out)
{
	fprintf(out,
		"Usage: imgfs [OPTIONS] IMAGE MOUNTPOINT\n"
		"Mount a disk image (qcow2, raw, VMDK/OVA, VHD, VHDX, VDI) as files:\n"
		"MOUNTPOINT/disk, one file per partition (p1, p2, ...), files/pN/ for\n"
		"their files, snapshots/NAME/ for internal snapshots, and\n"
		"MOUNTPOINT/info. Unmount with: fusermount3 -u MOUNTPOINT\n"
		"\n"
		"Options:\n"
		"  -f                      stay in the foreground\n"
		"  -d                      debug output (implies -f)\n"
		"  -o ro                   mount read-only\n"
		"  -o allow_other          let other users access the mount\n"
		"  --format FORMAT         raw, qcow2, vmdk, vpc/vhd, vhdx, vdi, ova\n"
		"                          (default: probe; -o format=)\n"
		"  -o backing=local|follow|deny\n"
		"                          which backing/data files may be opened:\n"
		"                          local (default) only inside the image's\n"
		"                          folder, follow any path, deny none\n"
		"  -o cache_size=BYTES     metadata cache size (default 1M)\n"
		"  -o files_idle=SECONDS   close a filesystem under files/ after\n"
		"                          this long unused (default 60, 0: never)\n"
		"  --disk N                the Nth disk of an OVA archive (default 1;\n"
		"                          also -o disk=N); refused for other formats\n"
		"  -h, --help              show this help\n"
		"  -V, --version           show the version\n"
		"\n"
		"Generic mount options (rw, nodev, nosuid, noexec, noatime, ...) are\n"
		"accepted, so mount -t fuse.imgfs and /etc/fstab work.\n"
		"\n"
		"Without FUSE, the same reads as commands (imgfs COMMAND --help):\n"
		"  imgfs info IMAGE [--json]\n"
		"  imgfs ls [-l] [-R] IMAGE [PLACE]\n"
		"  imgfs cat IMAGE PLACE\n"
		"  imgfs cp IMAGE PLACE DEST\n"
		"  imgfs tar IMAGE PLACE\n");
}

/* Options the kernel (through libfuse's mount) understands. */
static const char *const kernel_options[] = {
	"dev", "nodev", "suid", "nosuid", "exec", "noexec", "atime",
	"noatime", "diratime", "nodiratime", "relatime", "norelatime",
	"strictatime", "nostrictatime", "lazytime", "nolazytime", "sync",
	"async", "dirsync", NULL,
};

/* Options that mean something only to mount(8), fstab or mount.fuse3. */
static const char *const ignored_options[] = {
	"auto", "noauto", "user", "nouser", "users", "owner", "group",
	"_netdev", "nofail", "defaults", "default_permissions", "comment",
	"x-systemd", "bg", "fg", NULL,
};

static bool in_list(const char *const *list, const char *name)
{
	for (size_t i = 0; list[i]; i++)
		if (strcmp(list[i], name) == 0)
			return true;
	return false;
}

static int parse_size(const char *s, size_t *out)
{
	char *end;
	unsigned long long v;

	errno = 0;
	v = strtoull(s, &end, 10);
	if (errno || end == s)
		return -EINVAL;
	switch (*end) {
	case 'k': case 'K': v <<= 10; end++; break;
	case 'm': case 'M': v <<= 20; end++; break;
	case 'g': case 'G': v <<= 30; end++; break;
	}
	if (*end || v < 4096 || v > (1ULL << 32))
		return -EINVAL;
	*out = (size_t)v;
	return 0;
}

static void add_kernel_opt(struct ifs_options *opts, const char *opt)
{
	size_t used = strlen(opts->kernel_opts);

	snprintf(opts->kernel_opts + used, sizeof(opts->kernel_opts) - used,
		 "%s%s", used ? "," : "", opt);
}

/* Handles one name[=value] of a -o list. */
static int parse_one_option(struct ifs_options *opts, char *opt)
{
	char *value = strchr(opt, '=');

	if (value)
		*value++ = '\0';
	if (strcmp(opt, "ro") == 0 && !value) {
		opts->read_only = true;
	} else if (strcmp(opt, "rw") == 0 && !value) {
		opts->read_only = false;
	} else if (strcmp(opt, "allow_other") == 0 && !value) {
		opts->allow_other = true;
	} else if (strcmp(opt, "backing") == 0 && value) {
		return cli_parse_backing(value, &opts->backing);
	} else if (strcmp(opt, "format") == 0 && value) {
		return cli_parse_format(value, &opts->format);
	} else if (strcmp(opt, "disk") == 0 && value) {
		return cli_parse_disk(value, &opts->disk);
	} else if (strcmp(opt, "cache_size") == 0 && value) {
		if (parse_size(value, &opts->cache_bytes) < 0) {
			fprintf(stderr, "imgfs: bad cache_size '%s' (bytes, "
				"4096 to 4G, K/M/G suffix allowed)\n", value);
			return -EINVAL;
		}
	} else if (strcmp(opt, "files_idle") == 0 && value) {
		char *end;
		unsigned long n = strtoul(value, &end, 10);

		if (!*value || *end || n > 86400) {
			fprintf(stderr, "imgfs: bad files_idle '%s' (seconds a "
				"filesystem under files/ stays open unused, "
				"0 to 86400, 0: until unmount)\n", value);
			return -EINVAL;
		}
		opts->files_idle_sec = (unsigned)n;
	} else if (in_list(kernel_options, opt) && !value) {
		add_kernel_opt(opts, opt);
	} else if (in_list(ignored_options, opt) ||
		   strncmp(opt, "x-", 2) == 0) {
		/* meaningful to mount(8)/fstab only */
	} else {
		if (value)
			value[-1] = '=';
		fprintf(stderr, "imgfs: unknown option '%s' (see imgfs "
			"--help)\n", opt);
		return -EINVAL;
	}
	return 0;
}

static int parse_option_list(struct ifs_options *opts, const char *list)
{
	char *copy = strdup(list), *save = NULL, *tok;
	int ret = 0;

	if (!copy)
		return -ENOMEM;
	for (tok = strtok_r(copy, ",", &save); tok && ret == 0;
	     tok = strtok_r(NULL, ",", &save))
		ret = parse_one_option(opts, tok);
	free(copy);
	return ret;
}

/* Returns 0 to go on, 1 when the program should exit 0 (help, version),
 * -EINVAL after printing one line on a bad command line. */
int ifs_parse_options(int argc, char **argv, struct ifs_options *opts)
{
	static const struct option longopts[] = {
		{ "help", no_argument, NULL, 'h' },
		{ "version", no_argument, NULL, 'V' },
		{ "format", required_argument, NULL, 'F' },
		{ "disk", required_argument, NULL, 'D' },
		{ NULL, 0, NULL, 0 },
	};
	const char *positional[2];
	int nb_positional = 0, c;

	memset(opts, 0, sizeof(*opts));
	opts->files_idle_sec = 60;
	opterr = 0;
	/* "+" is not used: options may follow the paths (mount.fuse3).
	 * The ":" makes a missing value ':', not an unknown option. */
	while (optind < argc) {
		c = getopt_long(argc, argv, "-:fdo:hV", longopts, NULL);
		if (c == -1)
			break;
		switch (c) {
		case 1:
			if (nb_positional == 2) {
				fprintf(stderr, "imgfs: unexpected argument "
					"'%s' (see imgfs --help)\n", optarg);
				return -EINVAL;
			}
			positional[nb_positional++] = optarg;
			break;
		case 'f':
			opts->foreground = true;
			break;
		case 'd':
			opts->foreground = opts->debug = true;
			break;
		case 'o':
			if (parse_option_list(opts, optarg) < 0)
				return -EINVAL;
			break;
		case 'F':
			if (cli_parse_format(optarg, &opts->format) < 0)
				return -EINVAL;
			break;
		case 'D':
			if (cli_parse_disk(optarg, &opts->disk) < 0)
				return -EINVAL;
			break;
		case 'h':
			usage(stdout);
			return 1;
		case 'V':
			printf("imgfs %s\n", IMGFS_VERSION);
			return 1;
		case ':':
			fprintf(stderr, "imgfs: option '%s' needs a value "
				"(see imgfs --help)\n", argv[optind - 1]);
			return -EINVAL;
		default:
			fprintf(stderr, "imgfs: unknown option '%s' (see "
				"imgfs --help)\n", argv[optind - 1]);
			return -EINVAL;
		}
	}
	if (nb_positional < 2) {
		fprintf(stderr, "imgfs: %s (usage: imgfs [OPTIONS] IMAGE "
			"MOUNTPOINT)\n", nb_positional == 0 ?
			"no image and mountpoint given" :
			"no mountpoint given");
		return -EINVAL;
	}
	opts->image = positional[0];
	opts->mountpoint = positional[1];
	return 0;
}

void ifs_free_options(struct ifs_options *opts)
{
	free(opts->image_abs);
	free(opts->mountpoint_abs);
}
