#!/bin/bash
# scripts/ptx_diff.sh — the kernels of kernels/ops.cu whose PTX differs between revision REV
# and this tree (nvcc, no GPU needed). A kernel whose PTX is the same runs as it ran at REV:
# after a refactor, or with a new kernel behind a switch, this says which of the default
# path's kernels a GPU has not run yet (docs/gpu.md). Branch labels are renumbered, and a
# function's static shared arrays named by their own names alone (their mangled names change
# when a kernel's body moves into a template), before comparing. Then the same for the
# machine code (cubins, scripts/cubin_diff.py): a kernel whose PTX differs only by register
# numbering may still be the same code.
#
# usage: scripts/ptx_diff.sh REV [ARCH]   (ARCH: sm_90a unless given)
set -eu
rev=${1:?usage: scripts/ptx_diff.sh REV [ARCH]} arch=${2:-sm_90a}
nvcc=${NVCC:-/usr/local/cuda/bin/nvcc}
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
mkdir -p "$tmp/old/kernels"
for f in ops.cu prelude.cuh; do git show "$rev:kernels/$f" >"$tmp/old/kernels/$f"; done
"$nvcc" -arch="$arch" -ptx -I "$tmp/old/kernels" "$tmp/old/kernels/ops.cu" -o "$tmp/old.ptx"
"$nvcc" -arch="$arch" -ptx -I kernels kernels/ops.cu -o "$tmp/new.ptx"
# each .entry's text, its labels renumbered, as "name md5"
entries() {
	awk '/\.entry /{ name = $0; sub(/.*\.entry /, "", name); sub(/\(.*/, "", name); body = "" }
	     name != "" { gsub(/\$L__[A-Za-z0-9_]+/, "L"); gsub(/_ZZ[A-Za-z0-9_]+E[0-9]+/, "_ZZ"); body = body $0 "\n" }
	     name != "" && /^}$/ { printf "%s", body > (dir "/" name); name = "" }' dir="$2" "$1"
	for f in "$2"/*; do echo "$(basename "$f") $(md5sum <"$f" | cut -c1-32)"; done | sort
}
mkdir -p "$tmp/a" "$tmp/b"
entries "$tmp/old.ptx" "$tmp/a" >"$tmp/a.txt"
entries "$tmp/new.ptx" "$tmp/b" >"$tmp/b.txt"
join -a1 -a2 -e - -o 0,1.2,2.2 "$tmp/a.txt" "$tmp/b.txt" | awk '
	$2 == "-" { print "new:     " $1; next }
	$3 == "-" { print "gone:    " $1; next }
	$2 != $3  { print "changed: " $1; next }
	{ same++ }
	END { printf "%d kernels the same as at the revision\n", same }'
"$nvcc" -arch="$arch" -cubin -I "$tmp/old/kernels" "$tmp/old/kernels/ops.cu" -o "$tmp/old.cubin" 2>/dev/null
"$nvcc" -arch="$arch" -cubin -I kernels kernels/ops.cu -o "$tmp/new.cubin" 2>/dev/null
python3 "$(dirname "$0")/cubin_diff.py" "$tmp/old.cubin" "$tmp/new.cubin"
