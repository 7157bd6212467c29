#!/bin/sh
# examples/demo.sh — `make demo`: a tiny GPT trained on text every Debian or Ubuntu machine
# has (the licence texts in /usr/share/common-licenses), on the cpu backend, in one to two
# minutes on two cores; then a sample from it, and a plot of the loss. Byte-level tokens,
# so nothing to download. 1,440 steps: twice the steps of before OpenBLAS, in less time;
# they lower the loss more than a larger model does in that time (docs/BENCHMARKS.md,
# "the demo").
set -eu
mgl=${MGL:-build/mgl}
out=${OUT:-build/demo}
steps=${STEPS:-1440}
mkdir -p "$out"
# the licences themselves, not the symlinks to them (GPL -> GPL-3): no text twice
files=$(find /usr/share/common-licenses -maxdepth 1 -type f | sort)
[ -n "$files" ] || { echo "demo: no texts in /usr/share/common-licenses" >&2; exit 1; }
# shellcheck disable=SC2086
"$mgl" tokenize $files --bytes --val-fraction 0.1 -o "$out/licenses.bin"
# two tensor-parallel ranks: one thread per core, and the partitioned plan at work
"$mgl" train models/gpt2.mgl --preset tiny --tp 2 --data "$out/licenses.bin" --val "$out/licenses.val.bin" \
	--steps "$steps" --batch 16 --lr 3e-3 --eval-every $((steps / 6)) --save "$out/ckpt" \
	--log "$out/metrics.jsonl" | tee "$out/summary.txt"
echo
echo "== a sample (mgl sample $out/ckpt --prompt 'Permission is hereby granted')"
"$mgl" sample "$out/ckpt" --prompt "Permission is hereby granted" --tokens 300 --temperature 0.7
echo
echo "== the loss and the learning rate against the steps (mgl plot $out/metrics.jsonl -o $out/loss.svg)"
"$mgl" plot "$out/metrics.jsonl" -o "$out/loss.svg"
echo "open $out/loss.svg in a browser to see it"
