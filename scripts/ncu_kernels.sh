#!/bin/bash
# scripts/ncu_kernels.sh — each of mgl's own kernels in one training step, by Nsight Compute
# (ncu): its duration and its DRAM throughput against the card's peak, so that a
# memory-bound kernel running under the memory's rate shows (the profile of `mgl bench
# --profile` gives ms by op, not bytes a second). On the GPU machine; ncu serialises the
# kernels and replays each, so it times one step after one warm-up, and only the kernels
# whose names match.
#
# usage: scripts/ncu_kernels.sh PRESET BATCH [REGEX [SKIP [COUNT]]] > OUT.csv
#   PRESET, BATCH  models/gpt2.mgl's preset and the batch (124m 16, 1.2b 8)
#   REGEX          the kernels (default: mgl's memory-bound ones: norms, column sums,
#                  finishes, chains, the classifier's, AdamW)
#   SKIP, COUNT    kernels of those skipped first (default 300: past the warm-up step's
#                  forward), then profiled (default 60)
# Prints, after ncu's CSV, one line a kernel: name, launches, mean µs, mean DRAM % of peak.
# SKIP and COUNT count only the kernels that match: one step after one warm-up launches
# each layer's kernels twice (1.2b's 79 layer norm backwards: 158), so SKIP must be below
# that to profile anything. With NCU_SECTIONS (ncu section names, e.g. "WarpStateStats
# SchedulerStats"), ncu's report of those sections instead (why a kernel's warps wait).
# The clocks are left alone (--clock-control none: the card's own, as in a training step).
set -u
preset=${1:?usage: scripts/ncu_kernels.sh PRESET BATCH [REGEX [SKIP [COUNT]]]} batch=${2:?}
regex=${3:-'layernorm|norm_colsum|parts_finish|colsum|convert|chain_|vocab|ce_bwd|adamw|sumsq|attention_delta'}
skip=${4:-300} count=${5:-60}
if [ -n "${NCU_SECTIONS:-}" ]; then
	sections=()
	for x in $NCU_SECTIONS; do sections+=(--section "$x"); done
	exec ncu --clock-control none -k "regex:$regex" --launch-skip "$skip" --launch-count "$count" "${sections[@]}" \
		build/mgl bench models/gpt2.mgl --preset "$preset" --set p_drop=0 --seq 1024 --batch "$batch" --steps 1 \
		--warmup 1 --backend cuda
fi
tmp=$(mktemp)
trap 'rm -f "$tmp"' EXIT
ncu --clock-control none -k "regex:$regex" --launch-skip "$skip" --launch-count "$count" \
	--metrics gpu__time_duration.sum,gpu__dram_throughput.avg.pct_of_peak_sustained_elapsed --csv \
	build/mgl bench models/gpt2.mgl --preset "$preset" --set p_drop=0 --seq 1024 --batch "$batch" --steps 1 \
	--warmup 1 --backend cuda >"$tmp" 2>&1
rc=$?
cat "$tmp"
# ncu's CSV: "ID","Process ID","Process Name","Host Name","Kernel Name",...,"Metric Name","Metric Unit","Metric Value"
python3 - "$tmp" <<'EOF'
import csv, sys, collections
rows = [r for r in csv.reader(open(sys.argv[1])) if len(r) > 10]
if not rows:
    sys.exit("ncu_kernels: no CSV rows (see ncu's output above)")
head = rows[0]
try:
    k, m, v, u = head.index("Kernel Name"), head.index("Metric Name"), head.index("Metric Value"), head.index("Metric Unit")
except ValueError:
    sys.exit("ncu_kernels: no Kernel Name / Metric columns in ncu's CSV")
t, d, n = collections.defaultdict(float), collections.defaultdict(float), collections.Counter()
for r in rows[1:]:
    name, val = r[k].split("(")[0], float(r[v].replace(",", ""))
    if r[m] == "gpu__time_duration.sum":
        t[name] += val * {"nsecond": 1e-3, "usecond": 1, "msecond": 1e3, "second": 1e6}.get(r[u], float("nan"))
        n[name] += 1
    else:
        d[name] += val
print("\nkernel, launches, mean us, mean DRAM % of peak")
for name in sorted(t, key=lambda x: -t[x]):
    print(f"{name}, {n[name]}, {t[name] / n[name]:.1f}, {d[name] / n[name]:.1f}")
EOF
exit $rc
