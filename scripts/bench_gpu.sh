#!/bin/sh
# scripts/bench_gpu.sh MGL TORCH_GPT OUT — GPT-2 124M training throughput on one GPU, mgl
# and the PyTorch baseline (torch_gpt.py, eager) side by side, same card, same call: batch
# 8 x 1024, median tokens/s of steps 11-30 for mgl; the baseline's own median.
# TORCH_GPT is not in this repository: docs/BENCHMARKS.md says how to bring it into the run
# (from the workplace's shared/bench/torch_gpt.py).
mgl=${1:?} torch_gpt=${2:?} out=${3:?}
[ -f "$torch_gpt" ] || { echo "bench_gpu.sh: no $torch_gpt: copy the workplace's shared/bench/torch_gpt.py in (docs/BENCHMARKS.md)" >&2; exit 1; }
mkdir -p "$out"
cat README.md docs/*.md compiler/*.c runtime/*.c > "$out/text.txt"
"$mgl" tokenize "$out/text.txt" --gpt2 tests/data/gpt2 -o "$out/g.bin" >/dev/null
nvidia-smi --query-gpu=name --format=csv,noheader | head -1
for run in 1 2; do
	"$mgl" train models/gpt2.mgl --preset 124m --data "$out/g.bin" --steps 30 --batch 8 --seq 1024 --backend cuda \
		--log "$out/mgl$run.jsonl" >/dev/null 2>&1 || { echo "mgl failed"; exit 1; }
	tail -20 "$out/mgl$run.jsonl" | sed 's/.*"tokens_per_s": \([0-9.]*\).*/\1/' | sort -n |
		awk -v r=$run '{ a[NR] = $1 } END { printf "mgl run %d: median %.0f tokens/s\n", r, a[int((NR + 1) / 2)] }'
done
CUDA_VISIBLE_DEVICES=0 python3 "$torch_gpt" --dmodel 768 --nlayer 12 --nhead 12 --batch 8 --seq 1024 2>&1 | grep RESULT
