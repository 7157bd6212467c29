#!/bin/bash
# scripts/kernel_times.sh — every kernel of one training step, timed alone at the card's own
# clocks, on the GPU machine: Nsight Compute with one metric (gpu__time_duration) over a run
# of COMMAND, its clock and caches left as they are (--clock-control none, --cache-control
# none; ncu_kernel.sh locks the clock at 1.33 GHz and flushes). The step is the kernels
# between the run's last two launches of k_adamw (the optimizer, one launch a step), its
# k_adamw included; printed by kernel name: launches, total and mean microseconds, share.
# Where `mgl bench --profile` times plan steps (a fused group's kernels together, with the
# launches between them, eager), this separates a group's kernels (the attention
# backward's delta, main kernel, conversion and finish; the norm backward and its finish).
# ncu runs the kernels one at a time, so their sum can exceed the step's time by the
# launch gaps a CUDA graph hides.
#
# usage: scripts/kernel_times.sh OUT COMMAND...
#   e.g. scripts/kernel_times.sh $OUT/kt build/mgl bench models/gpt2.mgl --preset 1.2b \
#        --set p_drop=0 --batch 8 --steps 1 --warmup 2 --backend cuda
# Writes OUT/ncu.csv (every launch) and OUT/step.txt (printed).
set -u
out=${1:?usage: scripts/kernel_times.sh OUT COMMAND...} && shift
[ $# -gt 0 ] || { echo "kernel_times: no command" >&2; exit 2; }
command -v ncu >/dev/null || { echo "kernel_times: no ncu here" >&2; exit 1; }
mkdir -p "$out" || exit 1
ncu --target-processes all --clock-control none --cache-control none --metrics gpu__time_duration.sum \
	--print-units base --print-kernel-base function --csv --log-file "$out/ncu.csv" "$@" >"$out/run.txt" 2>&1 ||
	{ tail -20 "$out/run.txt"; exit 1; }
python3 scripts/kernel_times.py "$out/ncu.csv" | tee "$out/step.txt"
