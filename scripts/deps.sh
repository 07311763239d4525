#!/bin/bash
# deps.sh: installs what imgfs needs to build, test and benchmark, on
# Debian 12, as root. Does nothing when everything is already there.
set -euo pipefail

packages=(
	build-essential meson ninja-build pkg-config
	libfuse3-dev fuse3 zlib1g-dev libzstd-dev libdeflate-dev libblkid-dev libfdisk-dev
	libext2fs-dev comerr-dev
	qemu-utils qemu-system-x86 qemu-block-extra
	bats fdisk fuse2fs e2fsprogs dosfstools mtools attr acl bindfs fio
	clang libclang-rt-14-dev util-linux python3 procps psmisc
	busybox-static cpio kmod lvm2 libarchive-tools
	git dpkg-dev debhelper lintian rpm desktop-file-utils shared-mime-info
	xdg-utils bash-completion man-db
)

missing=()
for p in "${packages[@]}"; do
	dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "ok installed" ||
		missing+=("$p")
done
if ((${#missing[@]})); then
	if [ "$(id -u)" != 0 ]; then
		echo "deps.sh: missing packages: ${missing[*]} (run as root to install)" >&2
		exit 1
	fi
	export DEBIAN_FRONTEND=noninteractive
	apt-get update -q
	apt-get install -y -q --no-install-recommends "${missing[@]}"
fi
# Distributions ship /dev/fuse as 0666; some machines here have 0600.
if [ -c /dev/fuse ] && [ "$(id -u)" = 0 ]; then
	chmod 0666 /dev/fuse
fi
