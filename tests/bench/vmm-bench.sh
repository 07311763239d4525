#!/bin/bash
# vmm-bench.sh [--quick]: the device model's own cost.
#
# 4 KiB random reads and 1 MiB sequential reads of a 512 MiB raw image
# (64 MiB with --quick) and of its qcow2 twin, once through the virtio-blk
# device model (imgvmm --bench: split virtqueue, descriptor checks, request
# parsing, one queue driven in the same thread so thread hand-offs are not
# counted) and once as direct img_pread calls into the same guest memory,
# at the same offsets in the same order; the two sides alternate in blocks
# of about 8 MiB, so a busy neighbour costs both alike (README.md,
# "vmm-bench.sh"). Prints medians and the time ratio; the target is under
# +10%. Exits 0 either way, non-zero only when something cannot be built
# or run.
#
# The image lives in /dev/shm when there is room (else $TMPDIR) and is
# removed on exit. Binaries come from IMGFS_BUILD_DIR (default build/).
set -euo pipefail

src=$(cd "$(dirname "$0")/../.." && pwd)
build=${IMGFS_BUILD_DIR:-$src/build}
imgvmm=$build/vmm/imgvmm
quick=
size_mib=512
[[ ${1:-} == --quick ]] && { quick=--quick; size_mib=64; }

[[ -x $imgvmm ]] || { echo "vmm-bench.sh: $imgvmm is not built" >&2; exit 1; }
command -v qemu-img >/dev/null || { echo "vmm-bench.sh: needs qemu-img" >&2; exit 1; }

base=/dev/shm
avail_kib=$(df -k --output=avail "$base" 2>/dev/null | tail -n 1 || echo 0)
((avail_kib > size_mib * 3 * 1024)) || base=${TMPDIR:-/var/tmp}
dir=$(mktemp -d "$base/vmm-bench.XXXXXX")
trap 'rm -rf "$dir"' EXIT

# Random bytes: no zero blocks, every qcow2 cluster allocated.
head -c "${size_mib}M" /dev/urandom >"$dir/disk.raw"
qemu-img convert -f raw -O qcow2 "$dir/disk.raw" "$dir/disk.qcow2"

for img in disk.raw disk.qcow2; do
	echo "== $img"
	"$imgvmm" --bench $quick -r "$dir/$img"
done
