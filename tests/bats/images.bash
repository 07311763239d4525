# images.bash: building test images with qemu-img and qemu-io.
#
# Load it from a .bats file with `load images`. Every function works on the
# paths it is given (relative paths are relative to the current directory;
# tests cd into $BATS_TEST_TMPDIR first) and fails the test, with qemu's
# own message on stderr, when a qemu tool fails. Nothing here skips: check
# for qemu-img / qemu-io with your own `require` before calling.
#
# Building:
#   make_raw PATH SIZE                     sparse raw image (qemu-img create)
#   make_qcow2 PATH SIZE [OPTS [ARGS...]]  qcow2; OPTS is a qemu-img -o list
#                                          ("" for none), ARGS go to
#                                          qemu-img create as they are
#   make_overlay PATH BACKING [BFMT [SIZE [OPTS]]]
#                                          qcow2 over BACKING, named as given
#                                          (relative names are relative to
#                                          PATH's folder); BFMT "" probes
#   make_chain DIR DEPTH SIZE [OPTS]       DIR/layer0.qcow2 .. layerN-1,
#                                          each backed by the one before,
#                                          each writing its own pattern
# Writing:
#   qio IMG CMD...                         qemu-io -c CMD for each CMD
#   fill_pattern IMG [SEED [UNIT]]         data, zero, unallocated, zero
#                                          over data, compressed and
#                                          unaligned pieces, deterministic
#   strip_backing_format IMG               hide the backing-format header
#                                          extension so the backing probes
#   set_incompatible_bit IMG BIT           set a qcow2 v3 incompatible
#                                          feature bit (0 dirty, 1 corrupt)
#   set_feature_name IMG TYPE BIT NAME     name a feature bit in the
#                                          header's feature-name table
#   snapshot_entry_offset IMG N            where entry N (from 0) of the
#                                          snapshot table lies, to break
#                                          one field of it (put_be64)
# Reading facts:
#   img_format IMG, img_cluster_size IMG, img_virtual_size IMG
#   qemu_raw IMG OUT [ARGS...]             qemu-img convert -O raw

# qemu-img info --output=json, for the small facts below.
_img_info_json() {
	qemu-img info -U --output=json "$1"
}

# Prints the value of a top-level numeric or string field of the JSON.
_json_field() {
	sed -n 's/^    "'"$1"'": "\{0,1\}\([^",]*\)"\{0,1\},\{0,1\}$/\1/p' | head -n 1
}

img_format() {
	_img_info_json "$1" | _json_field format
}

img_cluster_size() {
	local c
	c=$(_img_info_json "$1" | _json_field cluster-size)
	echo "${c:-0}"
}

img_virtual_size() {
	_img_info_json "$1" | _json_field virtual-size
}

make_raw() {
	qemu-img create -q -f raw "$1" "$2"
}

make_qcow2() {
	local path=$1 size=$2 opts=${3:-}
	shift 2
	[[ $# -gt 0 ]] && shift
	if [[ -n $opts ]]; then
		qemu-img create -q -f qcow2 -o "$opts" "$@" "$path" "$size"
	else
		qemu-img create -q -f qcow2 "$@" "$path" "$size"
	fi
}

# make_overlay PATH BACKING [BFMT [SIZE [OPTS]]]: BACKING is stored as
# given. With BFMT empty the image names no backing format and readers
# must probe (qemu-img refuses to create that directly, so the overlay is
# created with the real format and the extension is hidden afterwards).
make_overlay() {
	local path=$1 backing=$2 bfmt=${3-qcow2} size=${4:-} opts=${5:-}
	local real_fmt=$bfmt dir

	if [[ -z $bfmt ]]; then
		dir=$(dirname "$path")
		if [[ $backing == /* ]]; then
			real_fmt=$(img_format "$backing")
		else
			real_fmt=$(img_format "$dir/$backing")
		fi
	fi
	qemu-img create -q -f qcow2 ${opts:+-o "$opts"} -b "$backing" \
		-F "$real_fmt" "$path" $size || return 1
	if [[ -z $bfmt ]]; then
		strip_backing_format "$path"
	fi
}

# strip_backing_format IMG: turns the backing-format header extension
# (magic 0xe2792aca) into an unknown extension, which readers skip, so the
# backing file's format must be probed.
strip_backing_format() {
	local img=$1 off
	off=$(head -c 4096 "$img" | LC_ALL=C grep -obUaP '\xe2\x79\x2a\xca' |
		head -n 1 | cut -d: -f1)
	if [[ -z $off ]]; then
		echo "strip_backing_format: $img has no backing format" >&2
		return 1
	fi
	printf '\x69\x66\x73\x21' |
		dd of="$img" bs=1 seek="$off" conv=notrunc status=none
}

# set_incompatible_bit IMG BIT: ORs bit BIT (0..63) into the qcow2 v3
# header's incompatible_features (bytes 72..79, big-endian).
set_incompatible_bit() {
	local img=$1 bit=$2 byte_off old new
	byte_off=$((79 - bit / 8))
	old=$(od -A n -t u1 -j "$byte_off" -N 1 "$img" | tr -d ' ')
	new=$((old | (1 << (bit % 8))))
	printf "\\x$(printf %02x "$new")" |
		dd of="$img" bs=1 seek="$byte_off" conv=notrunc status=none
}

# qio IMG CMD...: runs all CMDs in one qemu-io process, quietly. qemu-io
# exits non-zero when a command fails; its message goes to stderr.
qio() {
	local img=$1 fmt args=()
	shift
	fmt=$(img_format "$img") || return 1
	for c in "$@"; do
		args+=(-c "$c")
	done
	qemu-io -f "$fmt" "${args[@]}" "$img" >/dev/null
}

# fill_pattern IMG [SEED [UNIT]]: writes a deterministic mix over the
# whole image in UNIT-sized pieces (default: the largest of 64 KiB, one
# cluster and two allocation units; it must be a multiple of the cluster
# size, as compressed writes need whole clusters). Piece i
# gets, by i mod 8:
#   0 data (byte 0xNN from SEED and i)   1 left alone (unallocated)
#   2 write -z (zero flag, no host)      3 compressed data (write -c)
#   4 data, then its middle discarded    5 small writes at odd offsets
#   6 data, then write -z on its first   7 data, then write -z -u on its
#     half (zero flag keeps the host       second half (zeroed and
#     cluster)                             unmapped)
# The discards and zero writes of 4, 6 and 7 cover whole allocation units
# (clusters, or subclusters with extended L2) so that qemu really records
# them as unallocated or zero; where half a piece is less than that, they
# cover the whole piece. Then come writes that straddle the boundaries
# 4|5, 5|6 and 6|7 (between pieces that hold data anyway, so the other
# kinds keep their clusters) and the last 700 bytes of the disk.
# Raw images and images with an external data file get plain data instead
# of compressed pieces. The same SEED gives the same bytes, different
# SEEDs different ones, so layers of a chain and snapshots differ.
fill_pattern() {
	local img=$1 seed=${2:-1} unit=${3:-} size cluster gran fmt compress=1
	local cmds=() i off n b half quarter info

	info=$(_img_info_json "$img") || return 1
	fmt=$(_json_field format <<<"$info")
	size=$(_json_field virtual-size <<<"$info")
	cluster=$(_json_field cluster-size <<<"$info")
	cluster=${cluster:-4096}
	gran=$cluster
	if grep -q '"extended-l2": true' <<<"$info"; then
		gran=$((cluster / 32))
	fi
	if [[ -z $unit ]]; then
		unit=65536
		((gran * 2 > unit)) && unit=$((gran * 2))
		((cluster > unit)) && unit=$cluster
	fi
	if [[ $fmt != qcow2 ]] || grep -q '"data-file":' <<<"$info"; then
		compress=0
	fi
	n=$((size / unit))
	half=$((unit / 2))
	((half % gran == 0)) || half=$unit
	quarter=$((unit / 4))
	((quarter % gran == 0)) || quarter=0
	for ((i = 0; i < n; i++)); do
		off=$((i * unit))
		b=$(printf '0x%02x' $(((seed * 53 + i * 29) % 255 + 1)))
		case $((i % 8)) in
		0) cmds+=("write -P $b $off $unit") ;;
		1) ;;
		2) cmds+=("write -z $off $unit") ;;
		3)
			if ((compress)); then
				# Compressed writes go to unallocated clusters
				# only; the discard makes this one so when the
				# image was filled before.
				cmds+=("discard $off $unit")
				cmds+=("write -c -P $b $off $unit")
			else
				cmds+=("write -P $b $off $unit")
			fi
			;;
		4)
			cmds+=("write -P $b $off $unit")
			if ((quarter)); then
				cmds+=("discard $((off + quarter)) $half")
			else
				cmds+=("discard $off $unit")
			fi
			;;
		5)
			cmds+=("write -P $b $((off + 1536)) 3000")
			cmds+=("write -P $b $((off + unit / 2 + 4096 + 7)) 4096")
			;;
		6)
			cmds+=("write -P $b $off $unit")
			cmds+=("write -z $off $half")
			;;
		7)
			cmds+=("write -P $b $off $unit")
			cmds+=("write -z -u $((off + unit - half)) $half")
			;;
		esac
	done
	for ((i = 1; i < n; i++)); do
		case $((i % 8)) in 5 | 6 | 7) ;; *) continue ;; esac
		b=$(printf '0x%02x' $(((seed * 71 + i * 13) % 255 + 1)))
		cmds+=("write -P $b $((i * unit - 1000)) 3000")
	done
	if ((size > 700)); then
		cmds+=("write -P 0x$(printf %02x $((seed % 255 + 1))) $((size - 700)) 700")
	fi
	qio "$img" "${cmds[@]}"
}

# make_chain DIR DEPTH SIZE [OPTS]: DIR/layer0.qcow2 is the base; layer k
# (k > 0) is backed by "layer$((k-1)).qcow2" (a relative name) with the
# backing format recorded. Layer k writes a 64 KiB piece of its own at
# k * 64 KiB, overwrites half of its parent's piece and, on v3 images,
# zeroes a piece of an older layer, so every layer shows through somewhere.
# Prints nothing; the top is DIR/layer$((DEPTH-1)).qcow2.
make_chain() {
	local dir=$1 depth=$2 size=$3 opts=${4:-} k unit=65536 cmds b
	mkdir -p "$dir"
	make_qcow2 "$dir/layer0.qcow2" "$size" "$opts" || return 1
	qio "$dir/layer0.qcow2" "write -P 0x01 0 $size" \
		"write -z $((unit * 2)) $unit" || return 1
	for ((k = 1; k < depth; k++)); do
		make_overlay "$dir/layer$k.qcow2" "layer$((k - 1)).qcow2" qcow2 \
			"" "$opts" || return 1
		b=$(printf '0x%02x' $((k % 250 + 2)))
		cmds=("write -P $b $((k * unit)) $unit"
			"write -P $b $(((k - 1) * unit + unit / 2)) $((unit / 4))")
		if [[ $opts != *compat=0.10* ]] && ((k % 3 == 0)); then
			cmds+=("write -z $(((k / 3) * unit + 512)) 4096")
		fi
		qio "$dir/layer$k.qcow2" "${cmds[@]}" || return 1
	done
}

# qemu_raw IMG OUT [ARGS...]: the reference bytes, from qemu-img convert.
# ARGS go before IMG (e.g. -l snapshot.name=NAME).
qemu_raw() {
	local img=$1 out=$2
	shift 2
	qemu-img convert -U "$@" -O raw "$img" "$out"
}

# set_feature_name IMG TYPE BIT NAME: makes the first entry of the qcow2
# feature-name table (header extension 0x6803f857) name feature BIT of
# TYPE (0 incompatible, 1 compatible, 2 autoclear) NAME (up to 46 bytes),
# so that a reader can name an unknown feature bit in its error. The entry
# it replaces (qemu writes "dirty bit" first) loses its name.
set_feature_name() {
	local img=$1 type=$2 bit=$3 name=$4 off
	off=$(head -c 4096 "$img" | LC_ALL=C grep -obUaP '\x68\x03\xf8\x57' |
		head -n 1 | cut -d: -f1)
	if [[ -z $off ]]; then
		echo "set_feature_name: $img has no feature-name table" >&2
		return 1
	fi
	{
		printf "\\x$(printf %02x "$type")\\x$(printf %02x "$bit")"
		printf '%s' "$name"
		head -c $((46 - ${#name})) /dev/zero
	} | dd of="$img" bs=1 seek=$((off + 8)) conv=notrunc status=none
}

# _be IMG OFFSET BYTES: the big-endian number of BYTES bytes at OFFSET.
_be() {
	echo $((16#$(od -A n -t x1 -j "$2" -N "$3" "$1" | tr -d ' \n')))
}

# snapshot_entry_offset IMG N: the file offset of entry N (from 0) of the
# qcow2 snapshot table. Each entry is 40 bytes, its extra data, ID and
# name, padded to 8 (docs/interop/qcow2.txt, "Snapshots"); its L1 table
# offset is the 8 bytes at the start, its L1 size the 4 bytes at 8.
snapshot_entry_offset() {
	local img=$1 n=$2 off i len
	off=$(_be "$img" 64 8)
	for ((i = 0; i < n; i++)); do
		len=$((40 + $(_be "$img" $((off + 36)) 4) +
			$(_be "$img" $((off + 12)) 2) + $(_be "$img" $((off + 14)) 2)))
		off=$((off + (len + 7) / 8 * 8))
	done
	echo "$off"
}
