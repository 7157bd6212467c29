#!/bin/sh
# scripts/bench_mproc.sh MGL [OUT] — what --zero 1 and --recompute cost and save (issue 14), on
# the GPU machine, as a table for docs/BENCHMARKS.md: `mgl bench` of GPT-2 355M at batch
# 8 x 1024, dropout off, at dp 2 (2 GPUs, the ranks threads of one process: mgl bench is one
# process) with and without --zero 1, and at tp 1 (one GPU) with --recompute none, selective
# and full. Each row: the median step, tokens/s (all GPUs), TFLOP/s a GPU (the model's FLOPs:
# recomputation's extra work is not counted), the memory mgl allocated on each GPU (all of
# it at the start: the peak) and the memory in use on the GPU (cudaMemGetInfo: with the CUDA
# context and NCCL's buffers); docs/bench.md defines them.
# Each run's whole output is kept in OUT (default build/bench_mproc).
# BENCH_PRESET (355m), BENCH_BATCH (8), BENCH_SEQ (1024): another GPT-2 preset or batch.
mgl=${1:?usage: scripts/bench_mproc.sh MGL [OUT]}
out=${2:-build/bench_mproc}
preset=${BENCH_PRESET:-355m} batch=${BENCH_BATCH:-8} seq=${BENCH_SEQ:-1024}
mkdir -p "$out" || exit 1
nvidia-smi --query-gpu=name,driver_version --format=csv,noheader 2>/dev/null | head -1
status=0
# row NAME OPTIONS: one mgl bench, its JSON in OUT/NAME.json
row() {
	name=$1
	shift
	echo "== $name: mgl bench models/gpt2.mgl --preset $preset --batch $batch --seq $seq $*"
	"$mgl" bench models/gpt2.mgl --preset "$preset" --set p_drop=0 --batch "$batch" --seq "$seq" --steps 10 --warmup 3 \
		--backend cuda --json "$@" >"$out/$name.json" 2>"$out/$name.err" || { status=1; tail -3 "$out/$name.err"; }
}
row dp2 --dp 2
row dp2-zero1 --dp 2 --zero 1
row tp1 --recompute none
row tp1-selective --recompute selective
row tp1-full --recompute full

echo
python3 - "$out" "$preset" "$batch" "$seq" <<'PY'
import json, os, sys
out, preset, batch, seq = sys.argv[1:]
rows = [('dp2', 'dp 2 (2 GPUs)'), ('dp2-zero1', 'dp 2, --zero 1'), ('tp1', 'tp 1 (one GPU), --recompute none'),
        ('tp1-selective', 'tp 1, --recompute selective'), ('tp1-full', 'tp 1, --recompute full')]
def result(name):
    try:
        return json.loads(open(os.path.join(out, name + '.json')).read())
    except (OSError, ValueError):
        return None
gb = lambda b: '-' if b is None else f'{b / 1e9:.2f} GB'
print(f'GPT-2 {preset}, batch {batch} x {seq} a GPU, dropout off, `mgl bench --steps 10 --warmup 3` (median step)')
print()
print('| case | ms a step | tokens/s (all GPUs) | TFLOP/s a GPU | allocated a GPU | in use a GPU |')
print('| --- | --- | --- | --- | --- | --- |')
for name, what in rows:
    r = result(name)
    if not r:
        print(f'| {what} | failed: {out}/{name}.err | | | | |')
        continue
    print(f"| {what} | {r['ms']:.2f} | {r['tok_s']:,.0f} | {r['tflops_per_gpu']:.1f} | {gb(r['mem_bytes'])} "
          f"| {gb(r['device_used_bytes'])} |")
PY
exit $status
