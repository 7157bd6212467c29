#!/bin/sh
# tests/scripts.sh — the GPU machine's measuring scripts that can be checked here:
# scripts/kernel_times.py on a CSV laid out as Nsight Compute writes it (its own lines before
# the header, a row a kernel a metric, units in their own column) sums one step's kernels by
# name (the launches after the last but one k_adamw, up to the last), and refuses a run
# with fewer than two optimizer launches; scripts/cubin_diff.py tells which kernels of two
# cubins differ in machine code (where nvcc is installed), and refuses a file not ELF;
# scripts/gemm_probe.c builds and refuses bad arguments (where the toolkit is);
# scripts/bench_tp_table.py computes issue 12's figures from RESULT lines, and bench_tp.sh
# refuses a tp its table has no config for; scripts/flash_delta.py (where python3 has numpy
# and torch) checks its emulated attention against autograd's on a BERT tiny step of the cpu's.
# usage: tests/scripts.sh MGL   (the same calling convention as the others; MGL makes
# flash_delta.py's BERT dump, and is handed to bench_tp.sh, which refuses BENCH_TP=3 before running it)
mgl=${1:?usage: tests/scripts.sh MGL}
. "$(dirname "$0")/lib.sh"
if ! command -v python3 >/dev/null; then
	echo "SKIP: scripts/kernel_times.py (no python3)"
	exit 0
fi
kt="python3 $(dirname "$0")/../scripts/kernel_times.py"
row() {   # id name value unit [process]
	echo "\"$1\",\"${5:-1}\",\"mgl\",\"h\",\"$2\",\"1\",\"7\",\"(128, 1, 1)\",\"(8, 1, 1)\",\"0\",\"9.0\",\"Command line profiler metrics\",\"gpu__time_duration.sum\",\"$4\",\"$3\""
}
{
	echo "==PROF== Connected to process 1 (mgl)"
	echo '"ID","Process ID","Process Name","Host Name","Kernel Name","Context","Stream","Block Size","Grid Size","Device","CC","Section Name","Metric Name","Metric Unit","Metric Value"'
	row 0 k_layernorm 1,000 nsecond          # the first step: not counted
	row 1 k_adamw 9,000 nsecond
	row 2 k_layernorm 2,000 nsecond          # the step: 2 + 3 + 1,000 + 10 us
	row 3 sm90_xmma_gemm 3 usecond
	row 4 k_layernorm 1 msecond
	row 5 k_adamw 10,000 nsecond
} >"$tmp/ncu.csv"
# two processes' launches in turn: the step is the last k_adamw's process's
grep '^"[0-9]' "$tmp/ncu.csv" | while IFS= read -r line; do
	echo "$line"
	echo "$line" | sed 's/^\("[0-9]*"\),"1",/\1,"2",/'
done | sed '1i\'"$(sed -n 2p "$tmp/ncu.csv")" >"$tmp/ranks.csv"
$kt "$tmp/ncu.csv" >"$tmp/out" 2>&1
st=$?
check "kernel_times.py: one step, by name, largest first" sh -c "[ $st = 0 ] &&
	grep -q '^one step: 4 launches, 1.015 ms summed' '$tmp/out' &&
	sed -n 3p '$tmp/out' | grep -Eq '^ +1\.002 +98\.7% +2 +501\.0  k_layernorm$' &&
	sed -n 4p '$tmp/out' | grep -Eq '^ +0\.010 +1\.0% +1 +10\.0  k_adamw$' &&
	sed -n 5p '$tmp/out' | grep -Eq '^ +0\.003 +0\.3% +1 +3\.0  sm90_xmma_gemm$'"
{ grep -v 'k_adamw' "$tmp/ncu.csv"; row 9 k_adamw 1 nsecond; } >"$tmp/one.csv"
$kt "$tmp/one.csv" >"$tmp/out" 2>&1
st=$?
check "kernel_times.py: a run of one step is refused" sh -c "[ $st != 0 ] && grep -q '1 launches of k_adamw among 5' '$tmp/out'"
row 9 k_adamw 1 parsec >>"$tmp/ncu.csv"
$kt "$tmp/ncu.csv" >"$tmp/out" 2>&1
st=$?
check "kernel_times.py: an unknown unit is refused" sh -c "[ $st != 0 ] && grep -q \"unknown unit 'parsec'\" '$tmp/out'"
nvcc=${NVCC:-/usr/local/cuda/bin/nvcc}
if [ -x "$nvcc" ]; then
	cd_=$(dirname "$0")/../scripts/cubin_diff.py
	printf 'extern "C" __global__ void k_a(float *x) { x[0] = 1; }\nextern "C" __global__ void k_b(float *x) { x[1] = %s; }\n' 2 >"$tmp/a.cu"
	printf 'extern "C" __global__ void k_a(float *x) { x[0] = 1; }\nextern "C" __global__ void k_b(float *x) { x[1] = %s; }\nextern "C" __global__ void k_c(float *x) { x[2] = 0; }\n' 3 >"$tmp/b.cu"
	"$nvcc" -arch=sm_90a -cubin "$tmp/a.cu" -o "$tmp/a.cubin" && "$nvcc" -arch=sm_90a -cubin "$tmp/b.cu" -o "$tmp/b.cubin"
	python3 "$cd_" "$tmp/a.cubin" "$tmp/b.cubin" >"$tmp/out" 2>&1
	check "cubin_diff.py: k_b changed, k_c new, k_a the same" sh -c "grep -qx 'changed: k_b' '$tmp/out' &&
		grep -qx 'new:     k_c' '$tmp/out' && grep -qx '1 kernels the same machine code' '$tmp/out'"
	python3 "$cd_" "$tmp/a.cu" "$tmp/b.cubin" >"$tmp/out" 2>&1
	st=$?
	check "cubin_diff.py: a file not ELF is refused" sh -c "[ $st != 0 ] && grep -q 'is not a 64-bit little-endian ELF file' '$tmp/out'"
else
	echo "SKIP: scripts/cubin_diff.py (no nvcc at $nvcc)"
fi
# scripts/gemm_probe.c builds warning-free against the toolkit, and refuses bad arguments
# before it touches a GPU
cuda=${CUDA_HOME:-/usr/local/cuda}
if [ -f "$cuda/include/cublasLt.h" ]; then
	${CC:-cc} -O2 -std=c11 -Wall -Wextra -Werror -I"$cuda/include" -o "$tmp/gemm_probe" "$(dirname "$0")/../scripts/gemm_probe.c" \
		-L"$cuda/lib64" -Wl,-rpath,"$cuda/lib64" -lcublasLt -lcudart >"$tmp/out" 2>&1
	check "gemm_probe.c: builds with -Wall -Wextra -Werror" sh -c "[ -x '$tmp/gemm_probe' ] || { cat '$tmp/out'; false; }"
	"$tmp/gemm_probe" fc 6144 8192 >"$tmp/out" 2>&1
	st=$?
	check "gemm_probe: too few arguments, its usage" sh -c "[ $st = 2 ] && grep -q '^usage: gemm_probe NAME' '$tmp/out'"
	"$tmp/gemm_probe" fc 6144 8192 1536 1 1536 0 1536 bias gleu >"$tmp/out" 2>&1
	st=$?
	check "gemm_probe: an unknown epilogue is refused" sh -c "[ $st = 2 ] && grep -qx 'gemm_probe: no epilogue gleu' '$tmp/out'"
else
	echo "SKIP: scripts/gemm_probe.c (no cuBLASLt headers at $cuda)"
fi
$kt "$tmp/ranks.csv" >"$tmp/out" 2>&1
check "kernel_times.py: another process's launches are left out" grep -q '^one step: 4 launches, 1.015 ms summed' "$tmp/out"
# scripts/bench_tp_table.py: issue 12's figures from RESULT lines (weak scaling against the
# 1.2b at tp 1, the ratio to compiled PyTorch, strong scaling, --sp's memory); a run
# missing is '-', and the config's or its reference's missing fails
res() {   # file ms tok_s tflops mem
	printf 'mgl: ...\nRESULT {"ms": %s, "tok_s": %s, "tflops_per_gpu": %s, "mem_GB": %s}\n' "$2" "$3" "$4" "$5" >"$tmp/tp/$1.txt"
}
mkdir -p "$tmp/tp"
res ref.mgl 120 68000 540 37.6
res ref.compiled 140 58000 466 36.2
res weak.mgl 190 43000 486 40.5
res weak.compiled 205 40000 324 39.9
res strong.mgl 75 109000 433 20.1
res sp-off.mgl 60 136000 300 30.0
res sp-on.mgl 61 134000 295 22.5
python3 "$(dirname "$0")/../scripts/bench_tp_table.py" "$tmp/tp" 2 2.5b >"$tmp/out" 2>&1
st=$?
check "bench_tp_table.py: weak scaling, against compiled, strong scaling, --sp's memory" sh -c "[ $st = 0 ] &&
	grep -q '^| 2.5b at tp 2, batch 8x1024 | 486.0 TFLOP/s a GPU (190.00 ms, 43,000 tok/s, 40.5 GB a GPU) | - | 324.0 TFLOP/s .* | weak scaling 90.0% of mgl.s 1.2b at tp 1; 1.079x compiled |$' '$tmp/out' &&
	grep -q '^| 1.2b at tp 1 .* | 1.167x compiled |$' '$tmp/out' && grep -q '| 1.60x tp 1.s step |$' '$tmp/out' &&
	grep -q '| --sp peak memory 22.5 against 30.0 GB a GPU |$' '$tmp/out'"
rm "$tmp/tp/ref.mgl.txt"
python3 "$(dirname "$0")/../scripts/bench_tp_table.py" "$tmp/tp" 2 2.5b >"$tmp/out" 2>&1
st=$?
check "bench_tp_table.py: without the 1.2b at tp 1, no efficiency and a failure" sh -c "[ $st = 1 ] &&
	grep -q '^| 2.5b at tp 2, .* | -; 1.079x compiled |$' '$tmp/out' && grep -q '^| 1.2b at tp 2 (strong scaling) | .* | - |$' '$tmp/out' &&
	grep -q 'no RESULT from ref.mgl' '$tmp/out'"
python3 "$(dirname "$0")/../scripts/bench_tp_table.py" "$tmp/tp" 2 2.5b "weak strong sp" >"$tmp/out" 2>&1
st=$?
check "bench_tp_table.py: a row not asked for is not required" sh -c "[ $st = 0 ]"
BENCH_TP=3 sh "$(dirname "$0")/../scripts/bench_tp.sh" "$mgl" none "$tmp/tp3" >"$tmp/out" 2>&1
st=$?
check "bench_tp.sh: BENCH_TP=3 is refused (2, 4 or 8)" sh -c "[ $st = 2 ] && grep -q 'BENCH_TP=3: the table is for 2, 4 or 8 GPUs' '$tmp/out'"
if python3 -c "import numpy, torch" 2>/dev/null; then
	printf 'the first example. it has two sentences.\n\nand a second document, of its own.\n' >"$tmp/b.txt"
	"$mgl" tokenize "$tmp/b.txt" --bert -o "$tmp/b.bin" >/dev/null 2>&1 &&
		"$mgl" train "$(dirname "$0")/../models/bert.mgl" --preset tiny --data "$tmp/b.bin" --steps 1 --batch 2 --backend cpu \
			--dump-first "$tmp/bert" >/dev/null 2>&1
	python3 "$(dirname "$0")/../scripts/flash_delta.py" "$tmp/bert" --heads 4 >"$tmp/out" 2>&1
	st=$?
	# (o's rounding moves an attention weight's gradient by 1e-3 or more: 2.3e-3 on this dump)
	check "flash_delta.py: its attention, unrounded, is autograd's; o's rounding moves q's or k's gradients" sh -c "[ $st = 0 ] &&
		grep -q '^ok: the emulated attention, unrounded' '$tmp/out' &&
		grep -Eq '^o in bf16 \(delta from it\) .*layers\.[0-9]+\.attention\.[qk]\.weight [0-9.]+e-0[1-3]' '$tmp/out'"
else
	echo "SKIP: scripts/flash_delta.py (python3 without numpy and torch)"
fi
summary scripts
