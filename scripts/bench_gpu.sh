#!/bin/sh
# scripts/bench_gpu.sh MGL TORCH_GPT [OUT] — the speed table on one GPU: `mgl bench` and the
# PyTorch baseline (shared/bench/torch_gpt.py, eager and compiled) side by side, same card,
# one call (`make bench TORCH_GPT=...`). Rows: GPT-2 124M at batch 16 x 1024, and the
# Megatron 1.2B config (d 1536, 40 layers, 16 heads) at batch 8 x 1024; then the card's bf16
# GEMM rate that mgl measured (the MFU's denominator). Each program's whole output is kept
# in OUT (default build/bench); the table is printed at the end.
#
# Both sides train the same model: GPT-2 without dropout (torch_gpt.py has none: mgl runs
# with --set p_drop=0), bf16 activations, AdamW, random tokens. torch_gpt.py's vocabulary is
# 50,304; mgl's GPT-2 has 50,257, which it pads to 50,304 at tp 1 (the same GEMMs), and
# counts 50,257 in its FLOPs (0.03% fewer). docs/bench.md says what every figure means.
mgl=${1:?usage: scripts/bench_gpu.sh MGL TORCH_GPT [OUT]} torch_gpt=${2:?usage: scripts/bench_gpu.sh MGL TORCH_GPT [OUT]}
out=${3:-build/bench}
mkdir -p "$out" || exit 1
export CUDA_VISIBLE_DEVICES=${CUDA_VISIBLE_DEVICES:-0}   # one GPU, the same one for both
nvidia-smi --query-gpu=name,driver_version --format=csv,noheader 2>/dev/null | head -1
status=0 baseline=1
if [ ! -f "$torch_gpt" ]; then
	echo "SKIP: the PyTorch baseline: no $torch_gpt (copy the workplace's shared/bench/torch_gpt.py into the call: docs/BENCHMARKS.md)"
	baseline=0
elif ! python3 -c 'import torch' 2>/dev/null; then
	echo "SKIP: the PyTorch baseline: python3 has no torch"
	baseline=0
fi

# row NAME "MGL BENCH OPTIONS" "TORCH_GPT OPTIONS"
row() {
	name=$1
	echo "== $name: mgl bench $2"
	# shellcheck disable=SC2086
	"$mgl" bench models/gpt2.mgl $2 --set p_drop=0 --seq 1024 --steps 20 --warmup 3 --backend cuda --profile \
		>"$out/$name.mgl.txt" 2>&1 || status=1
	cat "$out/$name.mgl.txt"
	[ "$baseline" = 1 ] || return 0
	for mode in eager compiled; do
		flag=; [ "$mode" = compiled ] && flag=--compile
		echo "== $name: torch_gpt.py $3 $flag"
		# shellcheck disable=SC2086
		python3 "$torch_gpt" $3 --seq 1024 $flag --tag "$name-$mode" >"$out/$name.$mode.txt" 2>&1
		grep RESULT "$out/$name.$mode.txt" || tail -5 "$out/$name.$mode.txt"
	done
}
row gpt2-124m "--preset 124m --batch 16" "--dmodel 768 --nlayer 12 --nhead 12 --batch 16"
row megatron-1.2b "--preset 1.2b --batch 8" "--dmodel 1536 --nlayer 40 --nhead 16 --batch 8"

echo
python3 - "$out" <<'PY'
import json, os, sys
out = sys.argv[1]
def result(name):
    try:
        for line in open(os.path.join(out, name)):
            if line.startswith('RESULT '):
                return json.loads(line[7:])
    except OSError:
        pass
    return None
def cell(r, tflops_first):
    if not r:
        return '-'
    tok, tf, mem = f"{r['tok_s']:,} tok/s", f"{r['tflops_per_gpu']:.1f} TFLOP/s", f"{r['mem_GB']:.1f} GB"
    return f"{tf} ({tok}, {mem})" if tflops_first else f"{tok} ({tf}, {mem})"
rows = [('gpt2-124m', 'GPT-2 124m, batch 16x1024', False),
        ('megatron-1.2b', 'Megatron 1.2b config (d 1536, 40 layers, 16 heads), batch 8x1024', True)]
print('| case (one GPU) | mgl | PyTorch eager | PyTorch compiled | mgl / compiled |')
print('| --- | --- | --- | --- | --- |')
gemm = None
for name, what, tf in rows:
    m, e, c = (result(f'{name}.{k}.txt') for k in ('mgl', 'eager', 'compiled'))
    ratio = f"{m['tok_s'] / c['tok_s']:.3f}" if m and c else '-'
    print(f'| {what} | {cell(m, tf)} | {cell(e, tf)} | {cell(c, tf)} | {ratio} |')
    gemm = gemm or (m and m.get('gemm_tflops'))
print(f"| bf16 GEMM 8192^3 on this card, measured by mgl bench (the ceiling) | {gemm:.0f} TFLOP/s | | | |" if gemm
      else '| bf16 GEMM 8192^3 | not measured | | | |')
PY
exit $status
