#!/bin/bash
# build.sh [DIR [meson options...]]: configures and builds imgfs.
# A new DIR is set up with the options; an existing one gets them applied
# (meson configure), so a changed option is never silently ignored.
# Compiler output is shown only when the build fails.
set -euo pipefail
cd "$(dirname "$0")/.."
dir=${1:-build}
shift || true
log=$(mktemp)
trap 'rm -f "$log"' EXIT
if [ ! -f "$dir/build.ninja" ]; then
	meson setup "$dir" "$@" >"$log" 2>&1 || { cat "$log" >&2; exit 1; }
elif (($#)); then
	meson configure "$dir" "$@" >"$log" 2>&1 || { cat "$log" >&2; exit 1; }
fi
if ! ninja -C "$dir" >"$log" 2>&1; then
	grep -v '^\[' "$log" >&2 || cat "$log" >&2
	exit 1
fi
