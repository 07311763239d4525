#!/bin/bash
# formats-vmdk.sh [MiB]: sequential read speed of the VMDK driver through
# img_pread, against the same data as qcow2. A benchmark, not a test: it
# prints figures and exits 0 whether or not they please; it fails only
# when something cannot be built or read.
#
# It runs test-vmdk in its bench mode (VMDK_BENCH=MiB, default 1024):
# MiB of random data converted by qemu-img to a monolithicSparse VMDK
# (every grain allocated, host-contiguous), to a qcow2 with 64 KiB
# clusters and to a streamOptimized VMDK, each read whole in 1 MiB
# preads three times; the best round of each is printed in MB/s.
# BUILD=${IMGFS_BUILD_DIR:-<repo>/build}.
set -euo pipefail
src=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
build=${IMGFS_BUILD_DIR:-$src/build}
ninja -C "$build" tests/unit/test-vmdk >/dev/null
VMDK_BENCH=${1:-1024} SRCDIR=$src "$build/tests/unit/test-vmdk"
