/* test-qcow2-write-replay.c: replays fuzz-qcow2-write inputs in a
 * normal build, so this build's sanitizers (if any) and compiler see what
 * the fuzzer sees without needing clang.
 *
 * Replays the saved reproducers (tests/fuzz/regress/fuzz-qcow2-write/)
 * and, when qemu-img is there, the target's seed corpus
 * (tests/fuzz/make-corpus.sh OUTDIR qcow2-write), each in a forked child
 * under alarm() so one failure or hang is reported by name and the rest
 * still run. The seeds must reach the target's oracle: most of them are
 * sound images, and every sound one whose script succeeds is reopened
 * and read back, so the test also fails if the oracle stops running.
 */
#undef NDEBUG
#define FUZZ_NO_MAIN_ENTRY
#include "../fuzz/fuzz-qcow2-write.c"

#include "regress.h"

#include <assert.h>
#include <dirent.h>
#include <signal.h>
#include <sys/wait.h>

#define REPLAY_MAX_BYTES (4u << 20)
#define REPLAY_ALARM_SECS (UNDER_ASAN ? 120 : 30)

static uint8_t replay_buf[REPLAY_MAX_BYTES];
static size_t nb_failed, nb_files;

/* Shared with the children, so the parent can sum the oracle's counts. */
static unsigned long *shared_counts;

static void replay_one(const char *path)
{
	pid_t pid;
	int st;

	fflush(stdout);
	fflush(stderr);
	pid = fork();
	assert(pid >= 0);
	if (pid == 0) {
		size_t n = regress_read(path, replay_buf, sizeof(replay_buf));

		alarm(REPLAY_ALARM_SECS);
		fuzz_qcow2_write_one(replay_buf, n);
		shared_counts[0] += fw_nb_sound;
		shared_counts[1] += fw_nb_verified;
		scratch_cleanup();
		_exit(0);
	}
	assert(waitpid(pid, &st, 0) == pid);
	nb_files++;
	if (WIFEXITED(st) && WEXITSTATUS(st) == 0)
		return;
	nb_failed++;
	if (WIFSIGNALED(st))
		printf("FAIL %s: signal %d%s\n", path, WTERMSIG(st),
		       WTERMSIG(st) == SIGALRM ? " (hang)" : "");
	else
		printf("FAIL %s: exit %d\n", path, WEXITSTATUS(st));
}

static void replay_folder(const char *folder)
{
	struct dirent **names;
	char path[4400];
	int n = scandir(folder, &names, NULL, alphasort);

	for (int i = 0; i < n; i++) {
		if (names[i]->d_name[0] != '.') {
			snprintf(path, sizeof(path), "%s/%s", folder,
				 names[i]->d_name);
			replay_one(path);
		}
		free(names[i]);
	}
	if (n >= 0)
		free(names);
}

int main(void)
{
	const char *src = getenv("SRCDIR");
	char dir[] = "/tmp/test-qcow2-write-replay-XXXXXX";
	char cmd[4096];
	size_t nb_regress, nb_seeds = 0;

	shared_counts = mmap(NULL, 2 * sizeof(*shared_counts),
			     PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS,
			     -1, 0);
	assert(shared_counts != MAP_FAILED);

	nb_regress = for_each_regress_file("fuzz-qcow2-write", replay_one);
	printf("%zu reproducers replayed\n", nb_regress);

	if (src && system("qemu-img --version >/dev/null 2>&1 && "
			  "qemu-io --version >/dev/null 2>&1") == 0) {
		unsigned long sound0 = shared_counts[0];
		unsigned long verified0 = shared_counts[1];

		assert(mkdtemp(dir));
		snprintf(cmd, sizeof(cmd),
			 "'%s/tests/fuzz/make-corpus.sh' '%s/seeds' qcow2-write "
			 ">/dev/null", src, dir);
		assert(system(cmd) == 0);
		nb_seeds = nb_files;
		snprintf(cmd, sizeof(cmd), "%s/seeds", dir);
		replay_folder(cmd);
		nb_seeds = nb_files - nb_seeds;
		printf("%zu seeds replayed: %lu sound, %lu read back after "
		       "close\n", nb_seeds, shared_counts[0] - sound0,
		       shared_counts[1] - verified0);
		/* Most seeds are sound images (make-corpus.sh also has
		 * backing, data-file and non-qcow2 ones), and many scripts
		 * succeed whole (snapshots cannot with refcount_bits=1). */
		assert(shared_counts[0] - sound0 >= nb_seeds / 2);
		assert(shared_counts[1] - verified0 >= nb_seeds / 4);
		snprintf(cmd, sizeof(cmd), "rm -rf '%s'", dir);
		assert(system(cmd) == 0);
	} else {
		printf("seeds skipped (SRCDIR unset, or qemu-img missing)\n");
	}
	printf("%zu of %zu inputs replayed cleanly\n", nb_files - nb_failed,
	       nb_files);
	return nb_failed ? 1 : 0;
}
