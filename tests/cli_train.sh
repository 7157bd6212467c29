#!/bin/sh
# tests/cli_train.sh — tokenize, train and sample as a user runs them, including the bad
# inputs each must refuse with a clear message (exit 1) or a usage error (exit 2).
# usage: tests/cli_train.sh MGL
mgl=${1:?usage: tests/cli_train.sh MGL}
. "$(dirname "$0")/lib.sh"

# tokenize
expect 0 'usage: mgl tokenize'                 -- tokenize --help
expect 0 'usage: mgl tokenize'                 -- help tokenize
expect 2 'no input files given'                -- tokenize -o "$tmp/x.bin"
expect 2 'from 0 to 0.5'                       -- tokenize README.md -o "$tmp/x.bin" --val-fraction 0.7
expect 1 'cannot open'                         -- tokenize "$tmp/missing.txt" -o "$tmp/x.bin"
expect 1 "^mgl: error: $tmp/nope/x.bin: cannot create: No such file" -- tokenize README.md -o "$tmp/nope/x.bin"
for i in 1 2 3 4 5 6; do cat README.md docs/language.md; done >"$tmp/text.txt"
expect 0 'tokens \(bytes\): wrote'             -- tokenize "$tmp/text.txt" -o "$tmp/t.bin" --bytes --val-fraction 0.1
check "tokenize wrote both shards" test -s "$tmp/t.bin" -a -s "$tmp/t.val.bin"
expect 0 'tokens \(gpt2\): wrote'              -- tokenize README.md -o "$tmp/g.bin" --gpt2 tests/data/gpt2 --val-fraction 0.1

# train: a few steps, a log, a checkpoint
expect 0 'trained 4 steps in .* validation loss [0-9.]+ \(perplexity [0-9.]+; token frequencies alone: [0-9.]+\); saved' \
	-- train models/gpt2.mgl --preset tiny --data "$tmp/t.bin" --val "$tmp/t.val.bin" --steps 4 --batch 2 \
	--tp 2 --save "$tmp/ck" --log "$tmp/log.jsonl"
check "the log has a line per step with step and loss" \
	test "$(grep -c '"step": [0-9]*, "loss": [0-9.]*' "$tmp/log.jsonl")" = 4
check "the last step was evaluated" grep -q '"step": 4, .*"val_loss": ' "$tmp/log.jsonl"
check "the checkpoint exists" test -s "$tmp/ck/checkpoint.safetensors"
check "no temporary file is left" test ! -e "$tmp/ck/checkpoint.safetensors.tmp"
expect 0 'trained 6 steps'                     -- train models/gpt2.mgl --preset tiny --data "$tmp/t.bin" --steps 6 \
	--batch 2 --resume "$tmp/ck"
expect 1 "does not match the model: tensor 'wte' is \[256, 64\] in the checkpoint and \[256, 32\] in the model" \
	-- train models/gpt2.mgl --preset tiny --set d=32 --data "$tmp/t.bin" --steps 6 --batch 2 --resume "$tmp/ck"

# sample: the model's source travels in the checkpoint
expect 0 '^Permission'                         -- sample "$tmp/ck" --prompt Permission --tokens 20 --temperature 0
"$mgl" sample "$tmp/ck" --prompt Permission --tokens 30 --seed 3 >"$tmp/s1" 2>&1
"$mgl" sample "$tmp/ck" --prompt Permission --tokens 30 --seed 3 >"$tmp/s2" 2>&1
check "sampling with a seed repeats" cmp -s "$tmp/s1" "$tmp/s2"
check "sampling writes the tokens asked for" test "$(wc -c <"$tmp/s1")" -ge 35
expect 1 'cannot open'                         -- sample "$tmp/nothing"
expect 1 "$tmp/t.bin"                          -- sample "$tmp/t.bin"

# bad input to train
expect 2 '--data TRAIN.bin is required'        -- train models/gpt2.mgl --preset tiny
expect 2 "--seq 128 is longer than the model's sequence \(seq = 64\)" \
	-- train models/gpt2.mgl --preset tiny --data "$tmp/t.bin" --seq 128
expect 1 "$tmp/missing.bin"                    -- train models/gpt2.mgl --preset tiny --data "$tmp/missing.bin"
: >"$tmp/empty.bin"
expect 1 "empty.bin"                           -- train models/gpt2.mgl --preset tiny --data "$tmp/empty.bin"
head -c 3000 "$tmp/t.bin" >"$tmp/trunc.bin"
expect 1 'trunc.bin: truncated'                -- train models/gpt2.mgl --preset tiny --data "$tmp/trunc.bin"
{ printf '\001\002\003\004'; tail -c +5 "$tmp/t.bin"; } >"$tmp/magic.bin"
expect 1 'magic.bin: .*magic'                  -- train models/gpt2.mgl --preset tiny --data "$tmp/magic.bin"
expect 1 "g.bin: token [0-9]+ at position [0-9]+ is beyond the model's vocabulary \(256\)" \
	-- train models/gpt2.mgl --preset tiny --data "$tmp/g.bin"
expect 2 "no GPU can be used here|built without CUDA" -- train models/gpt2.mgl --preset tiny --data "$tmp/t.bin" --backend cuda
expect 2 "unknown backend 'tpu'"               -- train models/gpt2.mgl --preset tiny --data "$tmp/t.bin" --backend tpu
expect 1 'mgl train feeds language models'     -- train models/bert.mgl --preset tiny --data "$tmp/t.bin" --steps 1
expect 1 "the checkpoint is at step 4 already" -- train models/gpt2.mgl --preset tiny --data "$tmp/t.bin" --steps 4 \
	--batch 2 --resume "$tmp/ck"
expect 1 "has a tensor 'layers.1.attention.ln.weight' the model lacks" \
	-- train models/gpt2.mgl --preset tiny --set layers=1 --data "$tmp/t.bin" --steps 8 --batch 2 --resume "$tmp/ck"
expect 1 "cannot create '$tmp/no/such'"        -- train models/gpt2.mgl --preset tiny --data "$tmp/t.bin" --steps 2 \
	--save "$tmp/no/such"
# GPT-2 tokens: the checkpoint remembers the tokenizer, and sample decodes with it
expect 0 'trained 2 steps'                     -- train models/gpt2.mgl --preset tiny --set vocab=50257 --data "$tmp/g.bin" \
	--steps 2 --batch 2 --gpt2 tests/data/gpt2 --save "$tmp/gck"
expect 0 '^The'                                -- sample "$tmp/gck" --prompt The --tokens 5
check "GPT-2 samples decode to more than the prompt" test "$("$mgl" sample "$tmp/gck" --prompt The --tokens 5 | wc -c)" -gt 6

# the GPU kernels build with NVRTC, GPU or not (CI has the toolkit and no driver)
if "$mgl" kernels 2>&1 | grep -q "built without CUDA"; then
	expect 1 'built without CUDA'              -- kernels
else
	expect 0 'kernels/ops.cu: compiled for sm_90 by NVRTC' -- kernels --arch sm_90
	expect 2 '--arch takes sm_XY'              -- kernels --arch hopper
fi

summary cli_train
