#!/bin/bash
# formats-vhd-vdi.sh: sequential img_pread speed of a fully allocated
# dynamic VHD and VDI against a qcow2 (64 KiB clusters) and the raw file
# holding the same bytes, measured with imgfmt-bench seq. A benchmark,
# not a test: it prints medians and ratios and exits 0 whatever they are;
# it fails only when an image cannot be made, opened or read byte-exact.
#
#   tests/bench/formats-vhd-vdi.sh [--quick] [--reps N]
#
# Images: 1 GiB of pseudo-random data (64 MiB with --quick) converted by
# qemu-img to qcow2, vpc (dynamic, force_size=on so the virtual size is
# the raw size, 2 MiB blocks) and vdi (dynamic, 1 MiB blocks).
# BUILD=${IMGFS_BUILD_DIR:-<repo>/build}.
set -euo pipefail
# shellcheck source=tests/bench/bench-lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/bench-lib.sh"

bench_parse_args 3 "$@"
if ((QUICK)); then
	SIZE=$((64 << 20))
	((REPS_GIVEN)) || REPS=1
else
	SIZE=$((1 << 30))
fi

bench_require qemu-img awk
bench_need_program
bench_workdir $((SIZE * 5))
mkdir -p "$W/raw"
RAW=$W/raw/disk.raw
"$BENCH" gen "$RAW" "$SIZE" --seed 1 >/dev/null
qemu-img convert -f raw -O qcow2 -o cluster_size=65536 "$RAW" "$W/disk.qcow2"
qemu-img convert -f raw -O vpc -o subformat=dynamic,force_size=on "$RAW" "$W/disk.vhd"
qemu-img convert -f raw -O vdi "$RAW" "$W/disk.vdi"
FMTS=(qcow2 vhd vdi)

# Correctness first (untimed).
for f in "${FMTS[@]}"; do
	"$BENCH" seq "$W/disk.$f" "$RAW" --verify >/dev/null ||
		bench_die "disk.$f does not read as its source"
done
bench_warm "$RAW" "$W"/disk.*

declare -A mbps=()
raw_all=()
for ((rep = 0; rep < REPS; rep++)); do
	bench_log "repetition $((rep + 1))/$REPS"
	for ((i = 0; i < ${#FMTS[@]}; i++)); do
		f=${FMTS[(rep + i) % ${#FMTS[@]}]}
		r=$("$BENCH" seq "$W/disk.$f" "$RAW")
		mbps[$f]+=" $(bench_field img_mbps <<<"$r")"
		raw_all+=("$(bench_field raw_mbps <<<"$r")")
	done
done

raw_med=$(bench_median "${raw_all[@]}")
# shellcheck disable=SC2086
qcow_med=$(bench_median ${mbps[qcow2]})
echo
echo "seq img_pread, $((SIZE >> 20)) MiB fully allocated, $REPS repetition(s), medians"
printf '%-28s %10s %10s %10s\n' image MB/s "vs raw" "vs qcow2"
printf '%-28s %10s %10s %10s\n' "raw pread" "$raw_med" 1.00 -
for f in "${FMTS[@]}"; do
	# shellcheck disable=SC2086
	m=$(bench_median ${mbps[$f]})
	printf '%-28s %10s %10s %10s\n' "disk.$f" "$m" \
		"$(bench_ratio "$m" "$raw_med")" "$(bench_ratio "$m" "$qcow_med")"
done
