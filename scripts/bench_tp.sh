#!/bin/sh
# scripts/bench_tp.sh MGL TORCH_GPT [OUT] — the tensor-parallel table of issues 12, 16 and 17
# on TP GPUs of one machine, in one call (`make bench-tp TORCH_GPT=...`): the Megatron-LM
# paper's weak-scaling config for TP GPUs (2.5b at 2, 4.2b at 4, 8.3b at 8; batch 8 x 1024)
# at tp TP, mgl beside the PyTorch baseline's hand-written tensor parallelism (torch_gpt.py
# --manual under torch.distributed.run, eager and compiled); the 1.2b at tp 1 on one GPU of
# the same machine, mgl and compiled PyTorch (the weak-scaling reference); then mgl's 1.2b at
# tp TP (strong scaling) and 355M at tp TP with and without --sp (peak memory). The
# config's mgl run has --profile: the communication's exposed time beside what `mgl
# explain` predicts for it. BENCH_TP (2, 4 or 8) defaults to the most of those the GPUs
# allow (CUDA_VISIBLE_DEVICES's, else the machine's); BENCH_ROWS ("ref weak strong sp", the
# default) runs only those named. A run may take RUN_TIMEOUT seconds (default 300). Each
# program's whole output is kept in OUT (default build/bench_tp); scripts/bench_tp_table.py
# prints the table of the rows run at the end. The exit status is mgl's: 1 if one of its
# runs failed. Both sides train GPT without dropout, bf16, AdamW, on random tokens (bench_gpu.sh
# says how the two models match).
mgl=${1:?usage: scripts/bench_tp.sh MGL TORCH_GPT [OUT]} torch_gpt=${2:?usage: scripts/bench_tp.sh MGL TORCH_GPT [OUT]}
out=${3:-build/bench_tp}
if [ -n "${CUDA_VISIBLE_DEVICES-}" ]; then
	gpus=$CUDA_VISIBLE_DEVICES
else
	gpus=$(nvidia-smi --query-gpu=index --format=csv,noheader 2>/dev/null | paste -sd, -)
fi
ngpu=$(echo "$gpus" | tr , '\n' | grep -c .)
tp=${BENCH_TP:-$( [ "$ngpu" -ge 8 ] && echo 8 || { [ "$ngpu" -ge 4 ] && echo 4; } || echo 2)}
rows=${BENCH_ROWS:-ref weak strong sp}
case $tp in
2) preset=2.5b dims="--dmodel 1920 --nlayer 54 --nhead 20" ;;
4) preset=4.2b dims="--dmodel 2304 --nlayer 64 --nhead 24" ;;
8) preset=8.3b dims="--dmodel 3072 --nlayer 72 --nhead 32" ;;
*) echo "bench_tp: BENCH_TP=$tp: the table is for 2, 4 or 8 GPUs" >&2; exit 2 ;;
esac
if [ "$ngpu" -lt "$tp" ]; then
	echo "SKIP: bench_tp: tp $tp needs $tp GPUs; this machine has $ngpu"
	exit 0
fi
mkdir -p "$out" || exit 1
nvidia-smi --query-gpu=name,driver_version --format=csv,noheader | head -1
status=0
# shellcheck source=scripts/baseline.sh
. "$(dirname "$0")/baseline.sh"
want() { case " $rows " in *" $1 "*) return 0 ;; esac; return 1; }

# first N: the first N of the GPUs, as CUDA_VISIBLE_DEVICES lists them
first() { echo "$gpus" | cut -d, -f1-"$1"; }
# mgl_run NAME N OPTIONS...: mgl bench on the first N GPUs, into OUT/NAME.txt
mgl_run() {
	name=$1 n=$2
	shift 2
	echo "== $name: mgl bench models/gpt2.mgl $*"
	CUDA_VISIBLE_DEVICES=$(first "$n") timeout "${RUN_TIMEOUT:-300}" "$mgl" bench models/gpt2.mgl "$@" --set p_drop=0 \
		--seq 1024 --steps 20 --warmup 3 --backend cuda >"$out/$name.txt" 2>&1 || status=1
	grep -E '^  (step|FLOP/s|memory|communication|collective|above|mgl explain)' "$out/$name.txt" ||
		tail -5 "$out/$name.txt"
}
# torch_run NAME N OPTIONS...: torch_gpt.py on one GPU, or its hand-written tensor
# parallelism on the first N (one process a GPU), into OUT/NAME.txt (a failure shows as '-'
# in the table, and does not change the exit status)
torch_run() {
	name=$1 n=$2
	shift 2
	[ "$baseline" = 1 ] || return 0
	echo "== $name: torch_gpt.py $*"
	if [ "$n" = 1 ]; then
		CUDA_VISIBLE_DEVICES=$(first 1) timeout "${RUN_TIMEOUT:-300}" python3 "$torch_gpt" "$@" --tag "$name" \
			>"$out/$name.txt" 2>&1
	else
		CUDA_VISIBLE_DEVICES=$(first "$n") timeout "${RUN_TIMEOUT:-300}" python3 -m torch.distributed.run --standalone \
			--nproc_per_node="$n" "$torch_gpt" "$@" --manual --tag "$name" >"$out/$name.txt" 2>&1
	fi
	grep RESULT "$out/$name.txt" || tail -5 "$out/$name.txt"
}
# (a row not run this time must not show an earlier call's figures)
rm -f "$out"/ref.*.txt "$out"/weak.*.txt "$out"/strong.*.txt "$out"/sp-*.txt

if want ref; then
	mgl_run ref.mgl 1 --preset 1.2b --batch 8
	torch_run ref.compiled 1 --dmodel 1536 --nlayer 40 --nhead 16 --batch 8 --compile
fi
if want weak; then
	mgl_run weak.mgl "$tp" --preset "$preset" --batch 8 --tp "$tp" --profile
	# shellcheck disable=SC2086
	torch_run weak.eager "$tp" $dims --batch 8
	# shellcheck disable=SC2086
	torch_run weak.compiled "$tp" $dims --batch 8 --compile
fi
if want strong; then
	mgl_run strong.mgl "$tp" --preset 1.2b --batch 8 --tp "$tp"
fi
if want sp; then
	mgl_run sp-off.mgl "$tp" --preset 355m --batch 8 --tp "$tp"
	mgl_run sp-on.mgl "$tp" --preset 355m --batch 8 --tp "$tp" --sp
fi
echo
python3 "$(dirname "$0")/bench_tp_table.py" "$out" "$tp" "$preset" "$rows" || status=1
exit $status
