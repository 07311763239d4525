#!/bin/sh
# run.sh [SECONDS | --long]: build the libFuzzer targets, seed them, run
# each one. --long runs each for an hour (FUZZ_LONG_SECONDS to change it):
# the optional deep run, by hand or on a spare machine, never in CI.
#
# Builds build-fuzz (CC=clang, -Dfuzzing=true; FUZZ_BUILD=DIR for another)
# if it is not there yet, makes the seed corpora with make-corpus.sh (one
# per kind of input: qcow2 images, partitioned disks, vhost-user message
# sequences), and runs every target for SECONDS (default 60) with a 512
# MiB RSS limit and a 10 s per-input timeout, from its seeds and its saved
# reproducers (tests/fuzz/regress/TARGET/, when there are any). New inputs
# go to build-fuzz/fuzz-corpus/TARGET (kept between runs, so coverage
# accumulates); crashes, leaks and timeouts are written to
# build-fuzz/fuzz-artifacts/TARGET/. Exits non-zero when any target found
# one, after printing the file and how to replay it. A target whose seeds
# need a missing tool (make-corpus.sh exits 77) is skipped. FUZZ_TARGETS
# (space-separated names) runs only those targets.
set -eu
# A target killed by its time limit skips its atexit cleanup: remove the
# scratch images it leaves in /dev/shm whatever happens.
trap 'rm -f /dev/shm/fuzz-qcow2-*.img /dev/shm/fuzz-fsys-fat-*.img /dev/shm/fuzz-vpc-*.img /dev/shm/fuzz-vdi-*.img /dev/shm/fuzz-vmdk-*.img /dev/shm/fuzz-vhdx-*.img /dev/shm/fuzz-lvm-*.img; rm -rf /dev/shm/fuzz-vpc-*.d' EXIT

case ${1:-} in
--long) secs=${FUZZ_LONG_SECONDS:-3600} ;;
'') secs=60 ;;
*[!0-9]*) echo "usage: run.sh [SECONDS | --long]" >&2; exit 2 ;;
*) secs=$1 ;;
esac
src=$(cd "$(dirname "$0")/../.." && pwd)
build=${FUZZ_BUILD:-$src/build-fuzz}
targets=${FUZZ_TARGETS:-"fuzz-qcow2 fuzz-probe fuzz-qcow2-write fuzz-virtq fuzz-vhost-user fuzz-partition fuzz-vpc fuzz-vdi fuzz-fsys-fat fuzz-fsys-ext fuzz-vmdk fuzz-ova fuzz-vhdx fuzz-lvm"}

# The seed kind (make-corpus.sh) each target reads.
kind_of() {
	case $1 in
	fuzz-partition) echo partition ;;
	fuzz-vhost-user) echo vhost-user ;;
	fuzz-qcow2-write) echo qcow2-write ;;
	fuzz-fsys-fat) echo fat ;;
	fuzz-fsys-ext) echo ext ;;
	fuzz-vpc) echo vpc ;;
	fuzz-vdi) echo vdi ;;
	fuzz-vhdx) echo vhdx ;;
	fuzz-lvm) echo lvm ;;
	fuzz-vmdk|fuzz-ova) echo vmdk ;;
	*) echo qcow2 ;;
	esac
}

if [ ! -f "$build/build.ninja" ]; then
	CC=clang meson setup "$build" "$src" -Dfuzzing=true
fi
ninja -C "$build" $(for t in $targets; do echo "tests/fuzz/$t"; done)

seeds=$build/fuzz-seeds
rm -rf "$seeds"
skip=
for kind in qcow2 qcow2-write partition vhost-user vpc vdi fat vmdk vhdx lvm ext; do
	rc=0
	"$src/tests/fuzz/make-corpus.sh" "$seeds/$kind" "$kind" || rc=$?
	if [ $rc = 77 ]; then
		skip="$skip $kind"
	elif [ $rc != 0 ]; then
		exit $rc
	fi
done

# A smaller ASan quarantine keeps the RSS well under the limit.
export ASAN_OPTIONS="${ASAN_OPTIONS:-quarantine_size_mb=32:detect_leaks=1}"
# Leaks inside libfdisk itself are not ours to fix (see lsan.supp).
export LSAN_OPTIONS="${LSAN_OPTIONS:-suppressions=$src/tests/fuzz/lsan.supp}"
export UBSAN_OPTIONS="${UBSAN_OPTIONS:-print_stacktrace=1:halt_on_error=1}"

status=0
for t in $targets; do
	kind=$(kind_of "$t")
	case " $skip " in
	*" $kind "*) echo "run.sh: $t skipped (no $kind seeds)"; continue ;;
	esac
	regress=$src/tests/fuzz/regress/$t
	[ -d "$regress" ] || regress=
	corpus=$build/fuzz-corpus/$t
	artifacts=$build/fuzz-artifacts/$t
	mkdir -p "$corpus" "$artifacts"
	log=$build/fuzz-$t.log
	echo "run.sh: $t for ${secs}s (log: $log)"
	# The first directory receives new inputs; the seeds stay read-only.
	if "$build/tests/fuzz/$t" "$corpus" "$seeds/$kind" ${regress:+"$regress"} \
		-max_total_time="$secs" -rss_limit_mb=512 -timeout=10 \
		-max_len=524288 -print_final_stats=1 \
		-artifact_prefix="$artifacts/" >"$log" 2>&1; then
		grep -E '^stat::number_of_executed_units|^stat::peak_rss' "$log" |
			sed "s/^/run.sh: $t: /"
	else
		status=1
		echo "run.sh: $t FAILED; last lines of $log:" >&2
		tail -n 30 "$log" >&2
		for f in "$artifacts"/*; do
			[ -e "$f" ] || continue
			echo "run.sh: crashing input: $f" >&2
			echo "run.sh: replay: $build/tests/fuzz/$t $f" >&2
		done
	fi
done
exit $status
