#!/bin/bash
# scripts/ncu_kernel.sh — where one kernel's warps wait, on the GPU machine: Nsight Compute's
# full set with source counters for the first launch of KERNEL (a regular expression on its
# name) in a run of COMMAND, then the SASS instructions with the most stall samples, each with
# its reasons, and the kernel's summary pages. The kernels are compiled with -lineinfo
# (runtime/cuda/nvrtc.c), so the report maps each instruction to its line of kernels/ops.cu.
# ncu holds the SM clock at its base (1.33 GHz on an H200) and flushes the caches before each
# pass: compare its durations with each other, not with `mgl bench`'s (docs/perf-notes.md,
# twentieth sitting).
#
# usage: scripts/ncu_kernel.sh OUT KERNEL COMMAND...
#   e.g. scripts/ncu_kernel.sh $OUT/ncu 'k_flash_bwd_wg_sums_tma_96' build/mgl bench \
#        models/gpt2.mgl --preset 1.2b --set p_drop=0 --batch 8 --steps 1 --warmup 1 --backend cuda
# Writes OUT/kernel.ncu-rep (open it in Nsight Compute's UI), OUT/details.txt, OUT/sass.csv and
# OUT/stalls.txt (printed: the top 40 instructions by stall samples).
set -u
out=${1:?usage: scripts/ncu_kernel.sh OUT KERNEL COMMAND...} kernel=${2:?} && shift 2
[ $# -gt 0 ] || { echo "ncu_kernel: no command" >&2; exit 2; }
command -v ncu >/dev/null || { echo "ncu_kernel: no ncu here" >&2; exit 1; }
mkdir -p "$out" || exit 1
rm -f "$out/kernel.ncu-rep"   # (so that a run matching no launch does not find an old report)
ncu --target-processes all -k "regex:$kernel" --launch-count 1 --set full --import-source yes -f -o "$out/kernel" "$@" \
	>"$out/run.txt" 2>&1 || { tail -20 "$out/run.txt"; exit 1; }
[ -f "$out/kernel.ncu-rep" ] || { echo "ncu_kernel: no launch of $kernel"; tail -5 "$out/run.txt"; exit 1; }
ncu -i "$out/kernel.ncu-rep" --page details --print-details all >"$out/details.txt" 2>&1
ncu -i "$out/kernel.ncu-rep" --page source --print-source sass --csv >"$out/sass.csv" 2>"$out/sass.err" ||
	{ echo "ncu_kernel: no source page:"; head -5 "$out/sass.err"; }
python3 - "$out/sass.csv" >"$out/stalls.txt" <<'PY'
# the instructions with the most warp-stall samples: the columns are found by name (they differ
# between versions of Nsight Compute): the address, the source (SASS), the samples, each reason
import csv, sys
rows = list(csv.reader(open(sys.argv[1], newline='')))
head = next((i for i, r in enumerate(rows) if any('Source' in c for c in r)), None)
if head is None:
    sys.exit('no header with a Source column in ' + sys.argv[1])
names, body = rows[head], rows[head + 1:]
def col(*keys):
    return next((i for i, n in enumerate(names) if all(k.lower() in n.lower() for k in keys)), None)
src, addr = col('source'), col('address')
total = col('warp stall sampling', 'all samples')
if total is None:
    total = col('stall', 'sampl')
if total is None:
    sys.exit('no stall-sampling column among: ' + ', '.join(names))
reasons = [i for i, n in enumerate(names) if 'stall' in n.lower() and 'sampling' not in n.lower()]
def num(r, i):
    try:
        return float(r[i].replace(',', ''))
    except (ValueError, IndexError, TypeError):
        return 0.0
body = [r for r in body if len(r) == len(names)]
all_samples = sum(num(r, total) for r in body) or 1
print(f'{len(body)} instructions, {all_samples:.0f} stall samples; the top 40:')
for r in sorted(body, key=lambda r: -num(r, total))[:40]:
    why = sorted(((num(r, i), names[i]) for i in reasons if num(r, i) > 0), reverse=True)[:3]
    print(f'{100 * num(r, total) / all_samples:5.1f}%  {r[addr] if addr is not None else "":>8}  {r[src][:70]:70}  '
          + ', '.join(f'{n} {v:.0f}' for v, n in why))
PY
cat "$out/stalls.txt"
grep -E "Duration|Issue Slots Busy|No Eligible|L2 Cache Throughput|DRAM Throughput|Registers Per|Achieved Occupancy" "$out/details.txt" | head -12
