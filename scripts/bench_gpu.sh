#!/bin/sh
# scripts/bench_gpu.sh MGL TORCH_GPT [OUT] — the speed table on one GPU: `mgl bench` and the
# PyTorch baseline (shared/bench/torch_gpt.py, eager and compiled) side by side, same card,
# one call (`make bench TORCH_GPT=...`). Rows: GPT-2 124M at batch 16 x 1024, the Megatron
# 1.2B config (d 1536, 40 layers, 16 heads) at batch 8 x 1024, and BERT 336M (24 layers, d
# 1024, 16 heads) at batch 32 x 512; then the card's bf16 GEMM rate that mgl measured (the
# MFU's denominator). Each program's whole output is kept in OUT (default build/bench); the
# table is printed at the end. BENCH_ROWS="bert-336m" runs only the rows named.
#
# Both sides train the same model: GPT-2 without dropout (torch_gpt.py has none: mgl runs
# with --set p_drop=0), bf16 activations, AdamW, random tokens. torch_gpt.py's vocabulary is
# 50,304; mgl's GPT-2 has 50,257, which it pads to 50,304 at tp 1 (the same GEMMs), and
# counts 50,257 in its FLOPs (0.03% fewer). BERT's baseline is the same GPT with
# bidirectional attention (--bidir), vocabulary 30,592 (mgl's 30,522 padded, as mgl pads it
# at tp 1), without BERT's heads and segment embedding (docs/bench.md, "BERT"). docs/bench.md
# says what every figure means.
mgl=${1:?usage: scripts/bench_gpu.sh MGL TORCH_GPT [OUT]} torch_gpt=${2:?usage: scripts/bench_gpu.sh MGL TORCH_GPT [OUT]}
out=${3:-build/bench}
rows=${BENCH_ROWS:-gpt2-124m megatron-1.2b bert-336m}
mkdir -p "$out" || exit 1
export CUDA_VISIBLE_DEVICES=${CUDA_VISIBLE_DEVICES:-0}   # one GPU, the same one for both
nvidia-smi --query-gpu=name,driver_version --format=csv,noheader 2>/dev/null | head -1
status=0
# shellcheck source=scripts/baseline.sh
. "$(dirname "$0")/baseline.sh"

# row NAME MODEL SEQ "MGL BENCH OPTIONS" "TORCH_GPT OPTIONS"
row() {
	name=$1 model=$2 seq=$3
	shift 3
	case " $rows " in *" $name "*) ;; *) return 0 ;; esac
	echo "== $name: mgl bench $model $1 --seq $seq"
	# shellcheck disable=SC2086
	"$mgl" bench "$model" $1 --set p_drop=0 --seq "$seq" --steps 20 --warmup 3 --backend cuda --profile \
		>"$out/$name.mgl.txt" 2>&1 || status=1
	cat "$out/$name.mgl.txt"
	[ "$baseline" = 1 ] || return 0
	for mode in eager compiled; do
		flag=; [ "$mode" = compiled ] && flag=--compile
		echo "== $name: torch_gpt.py $2 --seq $seq $flag"
		# shellcheck disable=SC2086
		python3 "$torch_gpt" $2 --seq "$seq" $flag --tag "$name-$mode" >"$out/$name.$mode.txt" 2>&1
		grep RESULT "$out/$name.$mode.txt" || tail -5 "$out/$name.$mode.txt"
	done
}
row gpt2-124m models/gpt2.mgl 1024 "--preset 124m --batch 16" "--dmodel 768 --nlayer 12 --nhead 12 --batch 16"
row megatron-1.2b models/gpt2.mgl 1024 "--preset 1.2b --batch 8" "--dmodel 1536 --nlayer 40 --nhead 16 --batch 8"
row bert-336m models/bert.mgl 512 "--preset 336m --batch 32" \
	"--bidir --vocab 30592 --dmodel 1024 --nlayer 24 --nhead 16 --batch 32"

echo
python3 - "$out" "$rows" "$(dirname "$0")" <<'PY'
import sys
out, chosen = sys.argv[1], sys.argv[2].split()
sys.path.insert(0, sys.argv[3])
from bench_tp_table import result   # (a run's RESULT line, or None)
def cell(r, tflops_first):
    if not r:
        return '-'
    tok, tf, mem = f"{r['tok_s']:,} tok/s", f"{r['tflops_per_gpu']:.1f} TFLOP/s", f"{r['mem_GB']:.1f} GB"
    return f"{tf} ({tok}, {mem})" if tflops_first else f"{tok} ({tf}, {mem})"
rows = [('gpt2-124m', 'GPT-2 124m, batch 16x1024', False),
        ('megatron-1.2b', 'Megatron 1.2b config (d 1536, 40 layers, 16 heads), batch 8x1024', True),
        ('bert-336m', 'BERT 336m (24 layers, d 1024, 16 heads), batch 32x512; baseline: --bidir GPT', True)]
print('| case (one GPU) | mgl | PyTorch eager | PyTorch compiled | mgl / compiled |')
print('| --- | --- | --- | --- | --- |')
gemm = None
for name, what, tf in [r for r in rows if r[0] in chosen]:
    m, e, c = (result(out, f'{name}.{k}') for k in ('mgl', 'eager', 'compiled'))
    ratio = f"{m['tok_s'] / c['tok_s']:.3f}" if m and c else '-'
    print(f'| {what} | {cell(m, tf)} | {cell(e, tf)} | {cell(c, tf)} | {ratio} |')
    gemm = gemm or (m and m.get('gemm_tflops'))
print(f"| bf16 GEMM 8192^3 on this card, measured by mgl bench (the ceiling) | {gemm:.0f} TFLOP/s | | | |" if gemm
      else '| bf16 GEMM 8192^3 | not measured | | | |')
PY
exit $status
