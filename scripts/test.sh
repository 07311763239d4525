#!/bin/bash
# test.sh: installs what is needed, builds, and runs every test of imgfs:
#   1. unit tests (meson test) in a normal build and in an ASan/UBSan build,
#      and in a ThreadSanitizer build the unit tests of the threaded readers
#      and the concurrent bats cases against its daemon (no report allowed)
#   2. integration tests (bats, tests/bats/*.bats) against the normal build
#   3. each libFuzzer target for a short fixed time (tests/fuzz/run.sh)
#   4. the packages (scripts/package-test.sh): Debian packages built from a
#      clean clone, installed, smoke-tested and purged; an RPM built
#   5. the benchmarks once in quick mode, to prove they run (tests/bench)
# Ends with one line "N passed, N failed, N skipped" and a non-zero status
# if anything failed. Run as root on Debian 12 (CI does).
#   FUZZ_SECONDS=N   fuzz time per target (default 20)
#   SKIP_PACKAGE=1   leave out step 4
#   SKIP_BENCH=1     leave out step 5
set -uo pipefail
cd "$(dirname "$0")/.."
root=$PWD

bash scripts/deps.sh || exit 1

passed=0 failed=0 skipped=0
failures=()
note() { printf '\n=== %s\n' "$*"; }

# Adds the counts of a meson test run from its JSON log.
count_meson() {
	local log=$1/meson-logs/testlog.json name=$2
	[ -f "$log" ] || { failed=$((failed + 1)); failures+=("$name: no test log"); return; }
	local p f s
	p=$(grep -c '"result": "OK"' "$log")
	s=$(grep -c '"result": "SKIP"' "$log")
	f=$(grep -c -E '"result": "(FAIL|TIMEOUT|ERROR|UNEXPECTEDPASS)"' "$log")
	passed=$((passed + p)) skipped=$((skipped + s)) failed=$((failed + f))
	((f)) && failures+=("$name: $f unit test(s) failed")
}

note "build (debugoptimized) and unit tests"
if bash scripts/build.sh build; then
	meson test -C build --print-errorlogs --num-processes 2
	count_meson build "unit"
else
	failed=$((failed + 1)); failures+=("build failed")
fi

# meson's per-test timeouts (tests/unit/meson.build) only guard hangs:
# the sanitizer builds run several times slower than the normal one, on
# machines whose two cores are shared, so they get three times as long.
note "ASan/UBSan build and unit tests"
if bash scripts/build.sh build-asan -Db_sanitize=address,undefined \
	-Db_lundef=false; then
	ASAN_OPTIONS=detect_leaks=1:abort_on_error=1 \
	UBSAN_OPTIONS=halt_on_error=1:print_stacktrace=1 \
		meson test -C build-asan --print-errorlogs --num-processes 2 \
		--timeout-multiplier 3
	count_meson build-asan "unit (asan)"
else
	failed=$((failed + 1)); failures+=("asan build failed")
fi

# The daemon of the TSan build serves the bats cases that do several
# things at once: concurrent.bats (snapshots taken and deleted during
# writes, readers during rescans, parallel readers of files/) and fio
# --verify on several partitions at once. The daemons run as the test
# user, so each writes its reports to a folder anyone may write; a report
# fails the step even when the case itself passed.
tsan_daemon() {
	local logs tap f p
	logs=$(mktemp -d) tap=$(mktemp)
	chmod 1777 "$logs"
	{
		export TSAN_OPTIONS="log_path=$logs/tsan second_deadlock_stack=1"
		export IMGFS_BUILD_DIR=$root/build-tsan
		bats --tap tests/bats/concurrent.bats
		bats --tap -f 'fio --verify' tests/bats/write-faults.bats
	} | tee "$tap"
	p=$(grep -E '^ok ' "$tap" | grep -vc '# skip')
	f=$(grep -c '^not ok ' "$tap")
	passed=$((passed + p)) failed=$((failed + f))
	((f)) && failures+=("bats (tsan daemon): $f failed")
	if grep -l 'ThreadSanitizer' "$logs"/tsan.* 2>/dev/null; then
		cat "$logs"/tsan.* >&2
		failed=$((failed + 1))
		failures+=("ThreadSanitizer reported races in the daemon")
	fi
	rm -rf "$logs" "$tap"
}

# The readers that several threads use at once: the filesystem drivers,
# the image formats read in parallel, the device model, qcow2 read pins
# against discards (test-qcow2-pins, a few seconds). (The other qcow2 suites
# run too long under TSan on these machines for every CI run.)
note "ThreadSanitizer build and the threaded unit tests"
if bash scripts/build.sh build-tsan -Db_sanitize=thread -Db_lundef=false; then
	TSAN_OPTIONS=halt_on_error=1:second_deadlock_stack=1 \
		meson test -C build-tsan --print-errorlogs --num-processes 2 \
		--timeout-multiplier 3 \
		test-fsys-fat test-fsys-ext test-vpc test-vdi test-vhdx \
		test-virtio-blk test-vhost-user test-img-raw test-qcow2-pins
	count_meson build-tsan "unit (tsan)"
	tsan_daemon
else
	failed=$((failed + 1)); failures+=("tsan build failed")
fi

note "integration tests (bats)"
if [ -x build/fuse/imgfs ]; then
	tap=$(mktemp)
	IMGFS_BUILD_DIR=$root/build bats --tap tests/bats | tee "$tap"
	p=$(grep -E '^ok ' "$tap" | grep -vc '# skip')
	s=$(grep -E '^ok .*# skip' -c "$tap")
	f=$(grep -c '^not ok ' "$tap")
	passed=$((passed + p)) skipped=$((skipped + s)) failed=$((failed + f))
	((f)) && failures+=("bats: $f failed")
	rm -f "$tap"
fi

note "fuzzing (${FUZZ_SECONDS:-20} s per target)"
if [ -x tests/fuzz/run.sh ]; then
	if bash tests/fuzz/run.sh "${FUZZ_SECONDS:-20}"; then
		passed=$((passed + 1))
	else
		failed=$((failed + 1)); failures+=("fuzzing found a crash")
	fi
fi

if [ -z "${SKIP_PACKAGE:-}" ]; then
	note "packages: .deb from a clean clone, installed and smoke-tested, then purged; .rpm built"
	tap=$(mktemp)
	bash scripts/package-test.sh 2>&1 | tee "$tap"
	rc=${PIPESTATUS[0]}
	p=$(grep -c '^PASS: ' "$tap")
	f=$(grep -c '^FAIL: ' "$tap")
	# A stop before any check (a missing tool) counts as one failure.
	((rc != 0 && f == 0)) && f=1
	passed=$((passed + p)) failed=$((failed + f))
	((f)) && failures+=("packages: $f failed")
	rm -f "$tap"
fi

if [ -z "${SKIP_BENCH:-}" ]; then
	note "benchmarks, quick mode (proves they run; figures mean little)"
	for b in tests/bench/imgfmt.sh tests/bench/mount.sh \
		tests/bench/mount-write.sh tests/bench/vmm-bench.sh \
		tests/bench/files.sh tests/bench/formats.sh tests/bench/scale.sh; do
		[ -x "$b" ] || continue
		if IMGFS_BUILD_DIR=$root/build bash "$b" --quick; then
			passed=$((passed + 1))
		else
			failed=$((failed + 1)); failures+=("$b --quick failed")
		fi
	done
fi

note "summary"
for f in "${failures[@]}"; do echo "FAILED: $f"; done
echo "$passed passed, $failed failed, $skipped skipped"
[ "$failed" = 0 ]
