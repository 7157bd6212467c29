#!/bin/bash
# scripts/bench_ab.sh — A/B timing on the GPU machine, in one call on one card: this tree's
# mgl against a base revision's, and under environment switches, each variant run in turn
# and then again in the same order (a card's speed drifts between calls by a few percent:
# only figures from one call compare; docs/bench.md, "A/B in one call").
#
# usage: scripts/bench_ab.sh BASE OUT PRESET "BENCH OPTIONS" VARIANT...
#   BASE      a git revision or a directory holding a tree (`git archive REV | tar -x -C DIR`,
#             carried with the call: the GPU machine's .git may not have REV), built in
#             OUT/base beside this tree ("-": none)
#   OUT       where each run's whole output goes (OUT/TAG.N.txt)
#   PRESET    a preset of models/gpt2.mgl (124m, 1.2b, ...)
#   OPTIONS   more `mgl bench` options ("--batch 16 --steps 20 --warmup 3")
#   VARIANT   TAG=base, TAG=new, or TAG=new:VAR=VALUE[,VAR=VALUE...] (this tree's binary with
#             those variables set, e.g. nodgelu=new:MGL_NO_DGELU_EPILOGUE=1)
# SEQ (default 1024), BACKEND (default cuda), ROUNDS (default 2: each variant run twice) and
# RUN_TIMEOUT (seconds a run may take, default 600: a variant that hangs loses only its run)
# may be set. TORCH_GPT (the PyTorch baseline, torch_gpt.py) with TORCH_ARGS (its model and
# batch, e.g. "--dmodel 768 --nlayer 12 --nhead 12 --batch 16"): its compiled step timed
# before the variants and after them, and each variant's ratio to the mean of the two (issue
# 11's figure, from the same call). The machine has no re2c: carry build/grammar/lex.c with
# the tree (it is copied into the base's build). Prints each run's median step and the
# profile's kinds, the card's mean power and SM clock while timed (nvidia-smi dmon), then a
# summary.
set -u
base=${1:?usage: scripts/bench_ab.sh BASE OUT PRESET "OPTIONS" VARIANT...} out=${2:?} preset=${3:?} opts=${4-}
shift 4 || exit 2
[ $# -gt 0 ] || { echo "bench_ab: no variants" >&2; exit 2; }
mkdir -p "$out" || exit 1
export CUDA_VISIBLE_DEVICES=${CUDA_VISIBLE_DEVICES:-0}
jobs=$(nproc 2>/dev/null || echo 4)
if [ "$base" != - ]; then
	rm -rf "$out/base" && mkdir -p "$out/base/build/grammar" || exit 1
	if [ -d "$base" ]; then   # a tree (the GPU machine's copy of .git may lack recent commits)
		cp -r "$base"/. "$out/base"/ || exit 1
	else
		git archive "$base" | tar -x -C "$out/base" || { echo "bench_ab: no revision $base" >&2; exit 1; }
	fi
	cp build/grammar/lex.c "$out/base/build/grammar/" 2>/dev/null
	(cd "$out/base" && make -s -j"$jobs" build/mgl >"$out/base.build.txt" 2>&1) &
fi
make -s -j"$jobs" build/mgl >"$out/new.build.txt" 2>&1 || { tail -20 "$out/new.build.txt"; exit 1; }
wait
[ "$base" = - ] || [ -x "$out/base/build/mgl" ] || { tail -20 "$out/base.build.txt"; exit 1; }

# run TAG N: one variant, its output to OUT/TAG.N.txt
run() {
	local tag=${1%%=*} spec=${1#*=} n=$2 bin=build/mgl envs=()
	[ "${spec%%:*}" = base ] && bin=$out/base/build/mgl
	[[ $spec == *:* ]] && IFS=, read -ra envs <<<"${spec#*:}"
	# shellcheck disable=SC2086
	timeout "${RUN_TIMEOUT:-600}" env "${envs[@]}" "$bin" bench models/gpt2.mgl --preset "$preset" --set p_drop=0 --seq "${SEQ:-1024}" --backend "${BACKEND:-cuda}" \
		--profile $opts >"$out/$tag.$n.txt" 2>&1
	echo "== $tag ($spec), run $n"
	grep -E '^  (step|attention|gemm|layernorm|classifier|optimizer|other|outside) ' "$out/$tag.$n.txt"
}
# the card's power and clock while the variants run: it may sit at its power cap, where a
# kernel made quicker without doing less work buys little (docs/gpu.md)
dmon=
if command -v nvidia-smi >/dev/null 2>&1; then
	nvidia-smi dmon -s pc -d 1 >"$out/dmon.txt" 2>&1 &
	dmon=$!
fi
# torch N: the baseline's compiled step (ms), its output to OUT/torch.N.txt
torch() {
	# shellcheck disable=SC2086
	python3 "$TORCH_GPT" ${TORCH_ARGS-} --seq "${SEQ:-1024}" --compile >"$out/torch.$1.txt" 2>&1
	grep -o '"ms": [0-9.]*' "$out/torch.$1.txt" | head -1 | awk '{print $2}'
}
t1= t2=
[ -n "${TORCH_GPT-}" ] && t1=$(torch 1) && echo "== PyTorch compiled, before: ${t1:-failed} ms"
for n in $(seq "${ROUNDS:-2}"); do
	for v in "$@"; do run "$v" "$n"; done
done
[ -n "${TORCH_GPT-}" ] && t2=$(torch 2) && echo "== PyTorch compiled, after: ${t2:-failed} ms"
if [ -n "$dmon" ]; then
	kill "$dmon" 2>/dev/null
	# columns: gpu pwr gtemp mtemp mclk pclk ...; the samples over 300 W are the steps'
	awk '$1 !~ /^#/ && $2 > 300 { n++; w += $2; c += $6 } END { if (n) printf "card while timed: %.0f W, SM clock %.0f MHz (mean of %d samples over 300 W)\n", w / n, c / n, n }' "$out/dmon.txt"
fi
echo
tm=$(echo "${t1:-} ${t2:-}" | awk '{ n = 0; s = 0; for (i = 1; i <= NF; i++) { s += $i; n++ } if (n) printf "%.2f", s / n }')
echo "| variant | step (median), run 1 / run 2 |${tm:+ PyTorch compiled ($tm ms) / mgl |}"
echo "| --- | --- |${tm:+ --- |}"
for v in "$@"; do
	tag=${v%%=*}
	ms=$(for n in $(seq "${ROUNDS:-2}"); do grep -m1 '^  step ' "$out/$tag.$n.txt" | awk '{print $2}'; done)
	printf '| %s | %s |' "$v" "$(echo "$ms" | awk '{print $1 " ms"}' | paste -sd/ -)"
	[ -z "$tm" ] || printf ' %s |' "$(echo "$ms" | awk -v t="$tm" '$1 > 0 {printf "%.3fx\n", t / $1}' | paste -sd/ -)"
	echo
done
