#!/bin/sh
# tests/gpu_check.sh — `make gpu-check`: the cuda backend against the cpu backend, on the GPU
# machine. Needs the mgl binary built with CUDA and at least one GPU (4 for every check).
# usage: tests/gpu_check.sh MGL [OUTDIR]
mgl=${1:?usage: tests/gpu_check.sh MGL [OUTDIR]}
out=${2:-$(mktemp -d)}
mkdir -p "$out"
pass=0 fail=0
ok() { if [ "$1" = 1 ]; then pass=$((pass + 1)); echo "ok: $2"; else fail=$((fail + 1)); echo "FAIL: $2"; fi; }
ngpu=$(nvidia-smi -L 2>/dev/null | wc -l)
echo "gpu_check: $ngpu GPUs"
"$mgl" kernels --arch sm_90 || fail=$((fail + 1))

# 0. every op, forward and backward, against the cpu backend (tests/gpu/test_gpu.c)
test_gpu=$(dirname "$mgl")/tests/gpu/test_gpu
"$test_gpu" "$ngpu" | tee "$out/ops.txt"
ok "$([ "${PIPESTATUS:-0}" = 0 ] && grep -q ' 0 failed' "$out/ops.txt" && echo 1)" "every op on cuda against cpu"

# data: the repository's own text, bytes
cat README.md docs/*.md models/*.mgl compiler/*.c > "$out/text.txt"
"$mgl" tokenize "$out/text.txt" --bytes --val-fraction 0.1 -o "$out/t.bin" >/dev/null

# 1. training: cuda (bf16) follows cpu (f32) over 20 steps at tp 1, 2, 4 (within 2% each step)
for tp in 1 2 4; do
	[ "$tp" -le "$ngpu" ] || continue
	for sp in "" "--sp"; do
		[ "$tp" = 1 ] && [ -n "$sp" ] && continue
		tag="tp$tp$sp"
		"$mgl" train models/gpt2.mgl --preset tiny --data "$out/t.bin" --steps 20 --batch 8 --lr 3e-3 --tp $tp $sp \
			--backend cpu --log "$out/cpu_$tag.jsonl" >"$out/cpu_$tag.txt" 2>&1
		"$mgl" train models/gpt2.mgl --preset tiny --data "$out/t.bin" --steps 20 --batch 8 --lr 3e-3 --tp $tp $sp \
			--backend cuda --log "$out/cuda_$tag.jsonl" >"$out/cuda_$tag.txt" 2>&1
		st=$?
		worst=$(paste "$out/cpu_$tag.jsonl" "$out/cuda_$tag.jsonl" | awk -F'"loss": ' '{
			split($2, a, ","); split($3, b, ","); d = (a[1] - b[1]) / a[1]; if (d < 0) d = -d; if (d > w) w = d; n++ }
			END { if (n != 20) print 1; else printf "%.5f", w }')
		ok "$([ $st = 0 ] && awk -v w="$worst" 'BEGIN { print (w < 0.02) }')" \
			"gpt2 tiny $tag: 20 steps, cuda vs cpu loss, worst relative difference $worst (exit $st)"
		[ $st = 0 ] || tail -5 "$out/cuda_$tag.txt"
	done
done
# 1b. on the GPU, tp 2 and 4 against tp 1: the same 20 losses (within 1%: bf16, and the sums
# of partial results in another order)
for tag in tp2 tp2--sp tp4 tp4--sp; do
	[ -s "$out/cuda_$tag.jsonl" ] || continue
	worst=$(paste "$out/cuda_tp1.jsonl" "$out/cuda_$tag.jsonl" | awk -F'"loss": ' '{
		split($2, a, ","); split($3, b, ","); d = (a[1] - b[1]) / a[1]; if (d < 0) d = -d; if (d > w) w = d; n++ }
		END { if (n != 20) print 1; else printf "%.5f", w }')
	ok "$(awk -v w="$worst" 'BEGIN { print (w < 0.01) }')" "gpt2 tiny on cuda, $tag against tp1: worst relative difference $worst"
done

# 3. GPT-2 124M on one GPU, 200 steps on GPT-2 tokens of this repository's text: the loss falls
"$mgl" tokenize "$out/text.txt" --gpt2 tests/data/gpt2 -o "$out/g.bin" >/dev/null
"$mgl" train models/gpt2.mgl --preset 124m --data "$out/g.bin" --steps 200 --batch 8 --seq 256 --lr 6e-4 \
	--backend cuda --log "$out/124m.jsonl" >"$out/124m.txt" 2>&1
st=$?
first=$(head -1 "$out/124m.jsonl" | sed 's/.*"loss": \([0-9.]*\).*/\1/')
last=$(tail -1 "$out/124m.jsonl" | sed 's/.*"loss": \([0-9.]*\).*/\1/')
tps=$(tail -20 "$out/124m.jsonl" | sed 's/.*"tokens_per_s": \([0-9.]*\).*/\1/' | sort -n | awk '{ a[NR] = $1 } END { print a[int((NR + 1) / 2)] }')
ok "$([ $st = 0 ] && awk -v a="$first" -v b="$last" 'BEGIN { print (b < a - 3) }')" \
	"gpt2 124m, 200 steps on one GPU: loss $first -> $last, median $tps tokens/s over the last 20 steps"
[ $st = 0 ] || tail -5 "$out/124m.txt"

# 4. GPT-2 124M against PyTorch (tests/gpu/torch_gpt2.py): the same weights under Hugging
# Face's names, the same batch (a shard of one window), dropout off: first loss, every
# gradient, then 20 training steps' losses
if python3 -c "import torch" 2>/dev/null; then
	python3 - "$out/g.bin" "$out/one.bin" 257 <<'PY'
import struct, sys
raw = open(sys.argv[1], "rb").read(); n = int(sys.argv[3])
toks = struct.unpack("<%dH" % n, raw[1024:1024 + 2 * n])
open(sys.argv[2], "wb").write(struct.pack("<256i", 20240520, 1, n, *([0] * 253)) + struct.pack("<%dH" % n, *toks))
PY
	"$mgl" train models/gpt2.mgl --preset 124m --set p_drop=0 --data "$out/one.bin" --steps 20 --batch 4 --seq 256 \
		--lr 1e-4 --min-lr 1e-4 --warmup 1 --backend cuda --log "$out/vs_torch.jsonl" --dump-first "$out/first" \
		>"$out/vs_torch.txt" 2>&1 &&
	"$mgl" export "$out/first" --hf -o "$out/first/hf.safetensors" >/dev/null &&
	"$mgl" export "$out/first/grads.safetensors" --hf -o "$out/first/hf_grads.safetensors" >/dev/null &&
	python3 tests/gpu/torch_gpt2.py --weights "$out/first/hf.safetensors" --grads "$out/first/hf_grads.safetensors" \
		--data "$out/one.bin" --log "$out/vs_torch.jsonl" --batch 4 --heads 12 --lr 1e-4 | tee "$out/torch.txt"
	ok "$(grep -q 'torch_gpt2: 3 passed, 0 failed' "$out/torch.txt" && echo 1)" "gpt2 124m against PyTorch"
	[ -s "$out/torch.txt" ] || tail -5 "$out/vs_torch.txt"
fi

# 2. one training step under compute-sanitizer: memcheck and racecheck clean
if command -v compute-sanitizer >/dev/null 2>&1; then
	for tool in memcheck racecheck; do
		MGL_NO_GRAPHS=1 compute-sanitizer --tool $tool --error-exitcode 9 "$mgl" train models/gpt2.mgl --preset tiny \
			--data "$out/t.bin" --steps 1 --batch 2 --seq 32 --backend cuda >"$out/sanitizer_$tool.txt" 2>&1
		st=$?
		ok "$([ $st = 0 ] && grep -Eq 'ERROR SUMMARY: 0 errors|RACECHECK SUMMARY: 0 hazards' "$out/sanitizer_$tool.txt" && echo 1)" \
			"compute-sanitizer --tool $tool, one step: $(grep -E 'ERROR SUMMARY|RACECHECK SUMMARY' "$out/sanitizer_$tool.txt" | head -1)"
		[ $st = 0 ] || tail -5 "$out/sanitizer_$tool.txt"
	done
fi
echo "gpu_check: $pass passed, $fail failed"
[ "$fail" = 0 ]
