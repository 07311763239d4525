#!/usr/bin/env bats
# completion.bats: bash completion of imgfs and imgfs-open
# (packaging/completion/imgfs), driven as readline drives it: COMP_WORDS
# split the way readline splits a line (at ':' and '=' too), COMP_CWORD,
# then the completion function, then COMPREPLY. Places (BLOCKFILE:PATH)
# are asked from an imgfs program: a small stand-in with a known answer
# for the completion's own logic, and the real build when its `imgfs ls`
# can list an image.

bats_require_minimum_version 1.5.0

load helpers

COMPLETION=$BATS_TEST_DIRNAME/../../packaging/completion/imgfs

setup() {
	cd -P "$BATS_TEST_TMPDIR"
	# shellcheck source=../../packaging/completion/imgfs
	source "$COMPLETION"
}

# complete FUNCTION WORD...: what TAB offers at the last WORD, one reply a
# line, sorted.
complete_words() {
	local fn=$1
	shift
	COMP_WORDS=("$@")
	COMP_CWORD=$((${#COMP_WORDS[@]} - 1))
	COMP_LINE="$*"
	COMP_POINT=${#COMP_LINE}
	COMPREPLY=()
	"$fn"
	printf '%s\n' "${COMPREPLY[@]}" | LC_ALL=C sort
}

# A stand-in imgfs with the output format of imgfs ls (one name a line;
# -l: ls -l's columns, numeric owners, ISO dates): a GPT disk with p1, p2,
# a snapshot "before", and a small tree in p2's filesystem; with --disk 2
# (anywhere on its line) a disk without partitions. Anything else fails,
# as an imgfs without the command or the place would.
make_fake_imgfs() {
	mkdir -p bin
	cat >bin/imgfs <<-'EOF'
	#!/bin/bash
	disk=1 args=()
	while (($#)); do
		case $1 in
		--disk) disk=$2; shift 2 ;;
		*) args+=("$1"); shift ;;
		esac
	done
	set -- "${args[@]}"
	[[ $1 == ls ]] || exit 1
	shift
	long=false
	[[ $1 == -l ]] && { long=true; shift; }
	[[ -f $1 ]] || { echo "imgfs: $1: No such file or directory" >&2; exit 1; }
	case ${2:-} in
	'') entries='- disk|d files|- info|- p1|- p2|d snapshots'
		[[ $disk == 2 ]] && entries='- disk|- info' ;;
	snapshots) entries='d before' ;;
	snapshots/before) entries='- disk|d files|- p1|- p2' ;;
	files|snapshots/before/files) entries='d p2' ;;
	p2:/|files/p2) entries='d etc|- hello.txt|d home' ;;
	p2:/etc/|files/p2/etc) entries='- hostname|- os-release' ;;
	*) echo "imgfs: no such place" >&2; exit 1 ;;
	esac
	IFS='|' read -r -a list <<<"$entries"
	for e in "${list[@]}"; do
		if $long; then
			t=${e%% *}
			[[ $t == - ]] && m=-r--r--r-- || m=dr-xr-xr-x
			printf '%s 1 0 0 4096 2026-01-01 00:00 %s\n' "$m" "${e#* }"
		else
			printf '%s\n' "${e#* }"
		fi
	done
	EOF
	chmod +x bin/imgfs
	FAKE=$PWD/bin/imgfs
}

@test "the completion file registers imgfs and imgfs-open" {
	run -0 bash -c "source '$COMPLETION' && complete -p imgfs imgfs-open"
	assert_eq "$output" "complete -F _imgfs imgfs
complete -F _imgfs_open imgfs-open"
}

@test "imgfs <TAB> offers the commands, image files by extension and folders" {
	touch vm.qcow2 old.IMG disk.vmdk win.vhdx notes.txt
	mkdir images
	run -0 complete_words _imgfs imgfs ""
	assert_eq "$output" "$(printf '%s\n' cat cp disk.vmdk images info ls mount old.IMG tar vm.qcow2 win.vhdx | LC_ALL=C sort)"
}

@test "imgfs mount IMAGE <TAB> and imgfs IMAGE <TAB> offer folders for the mount point" {
	touch vm.qcow2 file.txt
	mkdir mnt media
	run -0 complete_words _imgfs imgfs mount vm.qcow2 m
	assert_eq "$output" $'media\nmnt'
	run -0 complete_words _imgfs imgfs vm.qcow2 ""
	assert_eq "$output" $'media\nmnt'
}

@test "--format <TAB> offers the formats, also as --format=" {
	run -0 complete_words _imgfs imgfs --format v
	assert_eq "$output" $'vdi\nvhd\nvhdx\nvmdk\nvpc'
	# readline hands "--format=q" over as three words.
	run -0 complete_words _imgfs imgfs ls --format = q
	assert_eq "$output" "qcow2"
}

@test "-o <TAB> offers the mount options, and backing= its three policies, after a comma too" {
	run -0 complete_words _imgfs imgfs -o ""
	assert_eq "$output" "$(printf '%s\n' ro rw allow_other backing= cache_size= files_idle= format= disk= noatime nodev nosuid noexec | LC_ALL=C sort)"
	run -0 complete_words _imgfs imgfs -o a
	assert_eq "$output" "allow_other"
	run -0 complete_words _imgfs imgfs -o ro,backing =
	assert_eq "$output" $'deny\nfollow\nlocal'
	run -0 complete_words _imgfs imgfs vm.qcow2 mnt -o backing = f
	assert_eq "$output" "follow"
}

@test "options are offered per command" {
	run -0 complete_words _imgfs imgfs info --
	assert_eq "$output" $'--disk\n--format\n--help\n--json'
	run -0 complete_words _imgfs imgfs ls -
	assert_eq "$output" $'--disk\n--format\n--help\n-R\n-l\n-o'
	run -0 complete_words _imgfs imgfs --v
	assert_eq "$output" "--version"
}

@test "imgfs ls IMAGE <TAB> offers the image's block files as BLOCKFILE: places, and its folders" {
	make_fake_imgfs
	touch vm.qcow2
	run -0 complete_words _imgfs "$FAKE" ls vm.qcow2 ""
	assert_eq "$output" $'disk:\nfiles/\np1:\np2:\nsnapshots/'
	run -0 complete_words _imgfs "$FAKE" cat vm.qcow2 p
	assert_eq "$output" $'p1:\np2:'
	# Options before the image do not count as the image.
	run -0 complete_words _imgfs "$FAKE" ls -l --format qcow2 vm.qcow2 d
	assert_eq "$output" "disk:"
}

@test "--disk N is offered, its value is not taken for the image, and places come from that disk" {
	make_fake_imgfs
	touch app.ova
	run -0 complete_words _imgfs imgfs --d
	assert_eq "$output" "--disk"
	run -0 complete_words _imgfs imgfs --disk ""
	assert_eq "$output" ""
	run -0 complete_words _imgfs "$FAKE" ls --disk 2 app.ova ""
	assert_eq "$output" "disk:"
	run -0 complete_words _imgfs "$FAKE" ls app.ova --disk = 2 ""
	assert_eq "$output" "disk:"
	run -0 complete_words _imgfs "$FAKE" ls --disk 1 app.ova p
	assert_eq "$output" $'p1:\np2:'
}

@test "a snapshot's block files complete under snapshots/NAME/" {
	make_fake_imgfs
	touch vm.qcow2
	run -0 complete_words _imgfs "$FAKE" tar vm.qcow2 snapshots/
	assert_eq "$output" "snapshots/before/"
	run -0 complete_words _imgfs "$FAKE" tar vm.qcow2 snapshots/before/p
	assert_eq "$output" $'snapshots/before/p1:\nsnapshots/before/p2:'
}

@test "files/X/PATH places complete like the mount's files/ folder" {
	make_fake_imgfs
	touch vm.qcow2
	run -0 complete_words _imgfs "$FAKE" cat vm.qcow2 files/
	assert_eq "$output" "files/p2/"
	run -0 complete_words _imgfs "$FAKE" cat vm.qcow2 files/p2/h
	assert_eq "$output" $'files/p2/hello.txt\nfiles/p2/home/'
	run -0 complete_words _imgfs "$FAKE" ls vm.qcow2 files/p2/etc/o
	assert_eq "$output" "files/p2/etc/os-release"
}

@test "imgfs cat IMAGE p2:/e<TAB> completes paths inside, folders with a slash" {
	make_fake_imgfs
	touch vm.qcow2
	# After "p2:" readline's word is what follows the colon.
	run -0 complete_words _imgfs "$FAKE" cat vm.qcow2 p2 :
	assert_eq "$output" $'/etc/\n/hello.txt\n/home/'
	run -0 complete_words _imgfs "$FAKE" tar vm.qcow2 p2 : /h
	assert_eq "$output" $'/hello.txt\n/home/'
	run -0 complete_words _imgfs "$FAKE" cp vm.qcow2 p2 : /etc/o
	assert_eq "$output" "/etc/os-release"
}

@test "imgfs cp IMAGE PLACE <TAB> offers local files for the destination" {
	make_fake_imgfs
	touch vm.qcow2
	mkdir out
	run -0 complete_words _imgfs "$FAKE" cp vm.qcow2 p2 : /hello.txt o
	assert_eq "$output" "out"
}

@test "places complete to nothing, silently, when imgfs cannot list the image" {
	make_fake_imgfs
	run -0 complete_words _imgfs "$FAKE" ls missing.qcow2 ""
	assert_eq "$output" ""
	touch vm.qcow2
	run -0 complete_words _imgfs "$FAKE" cat vm.qcow2 p9 : /
	assert_eq "$output" ""
	# An imgfs without the command at all.
	run -0 complete_words _imgfs /bin/false ls vm.qcow2 ""
	assert_eq "$output" ""
}

@test "imgfs ls IMAGE <TAB> with the built imgfs offers the partitions of a GPT disk" {
	require qemu-img sfdisk mkfs.ext4 mkfs.vfat mcopy mmd
	make_gpt_ext4_fat disk.qcow2
	"$IMGFS" ls disk.qcow2 >/dev/null 2>&1 ||
		skip "this imgfs has no ls command yet"
	run -0 complete_words _imgfs "$IMGFS" ls disk.qcow2 p
	assert_eq "$output" $'p1:\np2:\np3:'
	"$IMGFS" ls disk.qcow2 p1:/ >/dev/null 2>&1 ||
		skip "this imgfs cannot list p1:/ yet"
	run -0 complete_words _imgfs "$IMGFS" cat disk.qcow2 p1 : /docs/r
	assert_eq "$output" "/docs/readme.txt"
	run -0 complete_words _imgfs "$IMGFS" cat disk.qcow2 p1 : /d
	assert_eq "$output" $'/data/\n/docs/'
	run -0 complete_words _imgfs "$IMGFS" cat disk.qcow2 files/p1/docs/
	assert_eq "$output" $'files/p1/docs/link-to-hello\nfiles/p1/docs/readme.txt'
}

@test "a snapshot's places complete with the built imgfs" {
	require qemu-img sfdisk mkfs.ext4 mkfs.vfat mcopy mmd
	make_gpt_ext4_fat disk.qcow2
	qemu-img snapshot -c before disk.qcow2
	"$IMGFS" ls disk.qcow2 snapshots >/dev/null 2>&1 ||
		skip "this imgfs has no ls command yet"
	run -0 complete_words _imgfs "$IMGFS" ls disk.qcow2 s
	assert_eq "$output" "snapshots/"
	run -0 complete_words _imgfs "$IMGFS" ls disk.qcow2 snapshots/
	assert_eq "$output" "snapshots/before/"
	run -0 complete_words _imgfs "$IMGFS" ls disk.qcow2 snapshots/before/p
	assert_eq "$output" $'snapshots/before/p1:\nsnapshots/before/p2:\nsnapshots/before/p3:'
}

@test "imgfs-open <TAB> offers image files and its options" {
	touch vm.qcow2 notes.txt
	run -0 complete_words _imgfs_open imgfs-open ""
	assert_eq "$output" "vm.qcow2"
	run -0 complete_words _imgfs_open imgfs-open --
	assert_eq "$output" $'--help\n--idle\n--print\n--unmount\n--version'
}
