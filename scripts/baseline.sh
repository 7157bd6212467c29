# shellcheck shell=sh disable=SC2154,SC2034   # (torch_gpt is the caller's; baseline is for it)
# scripts/baseline.sh — sourced by bench_gpu.sh and bench_tp.sh: baseline=1 when the PyTorch
# baseline ($torch_gpt, the workplace's torch_gpt.py) can run here, else 0 after a SKIP line
# saying why (mgl's own figures are measured either way).
baseline=1
if [ ! -f "$torch_gpt" ]; then
	echo "SKIP: the PyTorch baseline: no $torch_gpt (copy the workplace's shared/bench/torch_gpt.py into the call: docs/BENCHMARKS.md)"
	baseline=0
elif ! python3 -c 'import torch' 2>/dev/null; then
	echo "SKIP: the PyTorch baseline: python3 has no torch"
	baseline=0
fi
