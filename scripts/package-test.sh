#!/bin/bash
# package-test.sh: the packages of imgfs, built and used as a user would.
#
#  1. Clones the checkout's HEAD into a temporary folder (so only what is
#     committed counts), builds the Debian packages there with
#     `dpkg-buildpackage -us -uc -b` (the unit tests are left out: test.sh
#     runs them already), checks the clone is still clean, runs lintian.
#  2. Installs imgfs and imgfs-vmm with apt-get and runs a smoke test with
#     a clean environment (env -i PATH=/usr/sbin:/usr/bin:/sbin:/bin):
#     --version, the man pages, `mount -t fuse.imgfs`, an /etc/fstab line,
#     a user mount through fstab by an unprivileged user, the desktop
#     entry and its MIME default, imgfs-open, bash completion.
#  3. Purges both packages; /etc/fstab must be byte for byte what it was.
#  4. Builds a binary RPM from a `git archive` tarball with
#     packaging/rpm/imgfs.spec (rpmbuild -bb --nodeps) and checks its list.
#
# Prints one PASS or FAIL line per check and exits 1 when one failed.
# Run as root on Debian 12 (scripts/test.sh does, in CI), with the
# packages of scripts/deps.sh. Whatever happens, a trap unmounts what it
# mounted, stops what it started, purges the packages it installed,
# restores /etc/fstab, removes the user it created and its folder.
#   PACKAGE_TEST_KEEP=1   keep the temporary folder (packages, logs)
set -uo pipefail
cd "$(dirname "$0")/.."
root=$PWD

passed=0 failed=0
pass() { echo "PASS: $*"; passed=$((passed + 1)); }
fail() { echo "FAIL: $*"; failed=$((failed + 1)); }
# check NAME CMD...: PASS or FAIL by CMD's status.
check() {
	local name=$1
	shift
	if "$@"; then pass "$name"; else fail "$name"; fi
}
note() { printf '\n--- %s (%ds)\n' "$*" "$SECONDS"; }

# The smoke test runs with nothing of our environment.
clean_env() {
	env -i PATH=/usr/sbin:/usr/bin:/sbin:/bin LC_ALL=C "$@"
}

if [[ $EUID -ne 0 ]]; then
	echo "package-test.sh: needs root (it installs packages and edits /etc/fstab)" >&2
	exit 2
fi
for tool in git dpkg-buildpackage lintian apt-get rpmbuild qemu-img sfdisk \
	mkfs.vfat mcopy desktop-file-validate xdg-mime fusermount3 setpriv \
	useradd; do
	command -v "$tool" >/dev/null || {
		echo "package-test.sh: $tool is missing (run scripts/deps.sh)" >&2
		exit 2
	}
done
for p in imgfs imgfs-vmm; do
	if dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q installed; then
		echo "package-test.sh: $p is installed already; this test would remove it" >&2
		exit 2
	fi
done

tmp=$(mktemp -d /tmp/imgfs-package.XXXXXX) || exit 2
chmod 0755 "$tmp"
test_user=imgfs-pkgtest
installed=false made_user=false fstab_saved=false

cleanup() {
	local m pid p
	trap - EXIT INT TERM
	cd /
	# Mounts below our folder, innermost first.
	for m in $(awk -v d="$tmp/" 'index($5, d) == 1 { print $5 }' \
		/proc/self/mountinfo | tac); do
		fusermount3 -u "$m" 2>/dev/null || umount "$m" 2>/dev/null ||
			umount -l "$m" 2>/dev/null ||
			echo "package-test.sh: cannot unmount $m" >&2
	done
	# imgfs-open's watchers and any daemon naming our folder.
	for p in /proc/[0-9]*; do
		pid=${p#/proc/}
		[[ $pid != "$$" ]] || continue
		tr '\0' ' ' 2>/dev/null <"$p/cmdline" | grep -qF "$tmp/" &&
			kill "$pid" 2>/dev/null
	done
	if $installed; then
		DEBIAN_FRONTEND=noninteractive apt-get purge -y -q \
			-o DPkg::Lock::Timeout=300 imgfs imgfs-vmm >/dev/null 2>&1 ||
			echo "package-test.sh: apt-get purge failed" >&2
	fi
	if $fstab_saved && ! cmp -s "$tmp/fstab.orig" /etc/fstab; then
		cat "$tmp/fstab.orig" >/etc/fstab
		echo "package-test.sh: restored /etc/fstab" >&2
	fi
	if $made_user; then
		userdel "$test_user" 2>/dev/null ||
			echo "package-test.sh: cannot remove user $test_user" >&2
	fi
	if [[ -n ${PACKAGE_TEST_KEEP:-} ]]; then
		echo "package-test.sh: kept $tmp" >&2
	else
		rm -rf "$tmp"
	fi
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# ---------------------------------------------------------------------------
note "Debian packages: clean clone of HEAD, dpkg-buildpackage"
# (safe.directory: CI's root may not own the checkout.)
head=$(git -c safe.directory="$root" rev-parse HEAD) || exit 2
git -c safe.directory="$root" clone -q --no-checkout "$root" "$tmp/src" &&
	git -C "$tmp/src" checkout -q --detach "$head" ||
	{ fail "git clone of HEAD $head"; exit 1; }
version=$(sed -n "s/^  version: '\([^']*\)'.*/\1/p" "$tmp/src/meson.build" |
	head -n 1)
deb_version=$(cd "$tmp/src" && dpkg-parsechangelog -S Version)
rpm_version=$(sed -n 's/^Version: *//p' "$tmp/src/packaging/rpm/imgfs.spec")
check "meson, debian/changelog and the RPM spec give one version ($version)" \
	test -n "$version" -a "$deb_version" = "$version" -a "$rpm_version" = "$version"

start=$SECONDS
if (cd "$tmp/src" && DEB_BUILD_OPTIONS="nocheck parallel=$(nproc)" \
	dpkg-buildpackage -us -uc -b) >"$tmp/deb-build.log" 2>&1; then
	pass "dpkg-buildpackage -us -uc -b ($((SECONDS - start)) s)"
else
	fail "dpkg-buildpackage -us -uc -b; the end of its log:"
	tail -n 40 "$tmp/deb-build.log"
	exit 1
fi
dirty=$(git -C "$tmp/src" status --porcelain --untracked-files=all)
check "the clone is still clean after the build${dirty:+: $dirty}" test -z "$dirty"

lintian --fail-on error --tag-display-limit 0 "$tmp"/imgfs_*.changes \
	>"$tmp/lintian.log" 2>&1
lintian_rc=$?
grep -v 'running with root privileges' "$tmp/lintian.log" | sed 's/^/  lintian: /'
check "lintian: no errors" test "$lintian_rc" = 0

# ---------------------------------------------------------------------------
note "install"
debs=("$tmp"/imgfs_*.deb "$tmp"/imgfs-vmm_*.deb)
installed=true
if DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends \
	-o DPkg::Lock::Timeout=300 "${debs[@]}" >"$tmp/apt.log" 2>&1; then
	pass "apt-get install ${debs[*]##*/}"
else
	fail "apt-get install:"
	tail -n 20 "$tmp/apt.log"
	exit 1
fi

got=$(clean_env imgfs --version)
check "imgfs --version (clean environment): $got" test "$got" = "imgfs $version"
got=$(clean_env sh -c 'command -v imgfs')
check "imgfs is /usr/bin/imgfs: $got" test "$got" = /usr/bin/imgfs
for page in imgfs "8 imgfs" imgvmm imgfs-open; do
	# shellcheck disable=SC2086
	got=$(clean_env man -w $page)
	check "man -w $page: $got" test -n "$got"
done
check "imgvmm --help" clean_env sh -c 'imgvmm --help >/dev/null'

# ---------------------------------------------------------------------------
note "mount(8) and /etc/fstab"
img=$tmp/disk.qcow2
mnt=$tmp/mnt
mkdir "$mnt" "$tmp/build"
echo "hello from a package test" >"$tmp/build/hello.txt"
truncate -s 32M "$tmp/build/fat.img"
mkfs.vfat -n PKGTEST "$tmp/build/fat.img" >/dev/null
mcopy -i "$tmp/build/fat.img" "$tmp/build/hello.txt" ::hello.txt
truncate -s 40M "$tmp/build/gpt.raw"
printf 'label: gpt\nstart=2048, size=65536, type=EBD0A0A2-B9E5-4433-87C0-68B6B72699C7\n' |
	sfdisk -q "$tmp/build/gpt.raw"
dd if="$tmp/build/fat.img" of="$tmp/build/gpt.raw" bs=1M seek=1 conv=notrunc \
	status=none
qemu-img convert -f raw -O qcow2 "$tmp/build/gpt.raw" "$img"
chmod 0644 "$img"

mounted() {
	awk -v m="$1" '$5 == m { f = 1 } END { exit !f }' /proc/self/mountinfo
}
not_mounted() {
	! mounted "$1"
}
# The daemon that serves mountpoint $1 is the installed /usr/bin/imgfs;
# prints its PID.
served_by_package() {
	local p arg
	for p in /proc/[0-9]*; do
		[[ $(readlink "$p/exe" 2>/dev/null) == /usr/bin/imgfs ]] || continue
		while IFS= read -r -d '' arg; do
			[[ $arg == "$1" ]] && { echo "${p#/proc/}"; return 0; }
		done 2>/dev/null <"$p/cmdline"
	done
	return 1
}
# Mountpoint $1 shows an image with one partition, served by the package.
shows_image() {
	[[ -f $1/disk && -f $1/p1 ]] && served_by_package "$1" >/dev/null
}

if clean_env mount -t fuse.imgfs "$img" "$mnt" -o ro; then
	pass "mount -t fuse.imgfs IMAGE MNT -o ro"
	check "  the mount shows disk and p1, served by /usr/bin/imgfs" \
		shows_image "$mnt"
	check "  umount MNT" clean_env umount "$mnt"
	check "  nothing is left mounted" not_mounted "$mnt"
else
	fail "mount -t fuse.imgfs IMAGE MNT -o ro"
fi

cp -p /etc/fstab "$tmp/fstab.orig" && fstab_saved=true
umnt=$tmp/user-mnt
printf '%s %s fuse.imgfs ro,noauto 0 0\n%s %s fuse.imgfs ro,noauto,user 0 0\n' \
	"$img" "$mnt" "$img" "$umnt" >>/etc/fstab
if clean_env mount "$mnt"; then
	pass "fstab 'IMAGE MNT fuse.imgfs ro,noauto 0 0': mount MNT"
	check "  MNT/disk is there, served by /usr/bin/imgfs" shows_image "$mnt"
	check "  umount MNT" clean_env umount "$mnt"
else
	fail "fstab 'IMAGE MNT fuse.imgfs ro,noauto 0 0': mount MNT"
fi

if ! id -u "$test_user" >/dev/null 2>&1; then
	useradd --system --user-group --no-create-home --home-dir /nonexistent \
		--shell /usr/sbin/nologin "$test_user" && made_user=true
fi
chmod 0666 /dev/fuse
mkdir "$umnt" && chown "$test_user:" "$umnt"
as_user() {
	setpriv --reuid="$test_user" --regid="$test_user" --init-groups -- \
		env -i PATH=/usr/sbin:/usr/bin:/sbin:/bin LC_ALL=C \
		HOME="$tmp/home" "$@"
}
if as_user mount "$umnt"; then
	pass "fstab with 'user': mount MNT as $test_user"
	check "  $test_user reads MNT/disk" as_user test -r "$umnt/disk"
	check "  $test_user unmounts with fusermount3 -u MNT" \
		as_user fusermount3 -u "$umnt"
else
	fail "fstab with 'user': mount MNT as $test_user"
fi
if as_user mount "$umnt" 2>/dev/null; then
	check "  $test_user unmounts with umount MNT" as_user umount "$umnt"
fi

cat "$tmp/fstab.orig" >/etc/fstab
check "/etc/fstab is restored byte for byte" cmp "$tmp/fstab.orig" /etc/fstab

# ---------------------------------------------------------------------------
note "desktop entry, imgfs-open, bash completion"
desktop=/usr/share/applications/imgfs.desktop
check "desktop-file-validate $desktop" desktop-file-validate "$desktop"
mkdir -p "$tmp/home"
chown "$test_user:" "$tmp/home"
for type in application/x-qemu-disk application/x-vmdk-disk \
	application/x-vdi-disk application/x-vhd-disk application/x-vhdx-disk; do
	got=$(clean_env HOME="$tmp/home" xdg-mime query default "$type")
	check "xdg-mime query default $type: imgfs.desktop${got:+ (got $got)}" \
		test "$got" = imgfs.desktop
done

run_dir=$tmp/run-user
mkdir -m 0700 "$run_dir" && chown "$test_user:" "$run_dir"
open_env=(XDG_RUNTIME_DIR="$run_dir" IMGFS_OPEN_IDLE=6 IMGFS_OPEN_POLL=1)
omnt=$run_dir/imgfs/disk.qcow2
# Both opens first: the idle timer runs from the mount on.
first=$(as_user "${open_env[@]}" imgfs-open --print "$img")
pid1=$(served_by_package "$omnt")
second=$(as_user "${open_env[@]}" imgfs-open --print "$img")
pid2=$(served_by_package "$omnt")
nb=$(grep -c " - fuse.imgfs $img " /proc/self/mountinfo)
check "imgfs-open mounts the image on \$XDG_RUNTIME_DIR/imgfs/disk.qcow2 and names a folder in it: ${first:-nothing}" \
	as_user test "${first%%/files/*}" = "$omnt" -a -f "$omnt/disk"
check "  it names the FAT filesystem's folder, files/p1, when imgfs reads it" \
	as_user test "$first" = "$omnt/files/p1" -a -f "$first/hello.txt"
check "  the folder is private (0700)" \
	test "$(stat -c %a "$run_dir/imgfs")" = 700
check "  a second open reuses the mount ($nb mount, daemon ${pid1:-none} and ${pid2:-none})" \
	test "$second" = "$first" -a "$nb" = 1 -a -n "$pid1" -a "$pid1" = "$pid2"
deadline=$((SECONDS + 60))
while mounted "$omnt" && ((SECONDS < deadline)); do
	sleep 0.5
done
check "  it unmounts itself when unused (idle 6 s)" not_mounted "$omnt"

got=$(clean_env bash -c 'source /usr/share/bash-completion/completions/imgfs; complete -p imgfs')
check "bash completion: the file registers $got" \
	test "$got" = "complete -F _imgfs imgfs"
check "bash completion: bash-completion loads it for imgfs and imgfs-open" \
	clean_env bash -c 'source /usr/share/bash-completion/bash_completion &&
		_completion_loader imgfs; _completion_loader imgfs-open;
		complete -p imgfs >/dev/null && complete -p imgfs-open >/dev/null'
mkdir "$tmp/empty"
check "bash completion: imgfs l<TAB> gives ls" clean_env bash -c \
	'cd "$0" && source /usr/share/bash-completion/completions/imgfs
	COMP_WORDS=(imgfs l); COMP_CWORD=1; _imgfs; [[ ${COMPREPLY[*]} == ls ]]' \
	"$tmp/empty"

# ---------------------------------------------------------------------------
note "purge"
if DEBIAN_FRONTEND=noninteractive apt-get purge -y -q \
	-o DPkg::Lock::Timeout=300 imgfs imgfs-vmm >"$tmp/purge.log" 2>&1; then
	installed=false
	pass "apt-get purge imgfs imgfs-vmm"
else
	fail "apt-get purge imgfs imgfs-vmm"
	tail -n 20 "$tmp/purge.log"
fi
check "  /usr/bin/imgfs and imgvmm are gone" \
	test ! -e /usr/bin/imgfs -a ! -e /usr/bin/imgvmm
check "  /etc/fstab is what it was" cmp "$tmp/fstab.orig" /etc/fstab

# ---------------------------------------------------------------------------
note "RPM: rpmbuild -bb --nodeps packaging/rpm/imgfs.spec"
top=$tmp/rpm
mkdir -p "$top/SOURCES"
git -C "$tmp/src" archive --prefix="imgfs-$version/" \
	-o "$top/SOURCES/imgfs-$version.tar.gz" HEAD
start=$SECONDS
if rpmbuild --define "_topdir $top" -bb --nodeps \
	"$tmp/src/packaging/rpm/imgfs.spec" >"$tmp/rpm-build.log" 2>&1; then
	pass "rpmbuild -bb --nodeps ($((SECONDS - start)) s)"
	list=$(rpm -qlp "$top"/RPMS/*/imgfs-"$version"-*.rpm 2>/dev/null)
	check "  rpm -qlp lists /usr/bin/imgfs" grep -qx /usr/bin/imgfs <<<"$list"
	check "  rpm -qlp lists the man page imgfs.1" \
		grep -qE '^/usr/share/man/man1/imgfs\.1(\.gz)?$' <<<"$list"
	list=$(rpm -qlp "$top"/RPMS/*/imgfs-vmm-"$version"-*.rpm 2>/dev/null)
	check "  rpm -qlp of imgfs-vmm lists /usr/bin/imgvmm" \
		grep -qx /usr/bin/imgvmm <<<"$list"
else
	fail "rpmbuild -bb --nodeps; the end of its log:"
	tail -n 40 "$tmp/rpm-build.log"
fi

note "done"
echo "package-test: $passed passed, $failed failed (${SECONDS} s)"
((failed == 0))
