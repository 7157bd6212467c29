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
# resuming says so, counts the steps it ran, and keeps the checkpoint's schedule unless told
expect 0 'mgl: resuming from step 4 \('       -- train models/gpt2.mgl --preset tiny --data "$tmp/t.bin" --steps 6 \
	--batch 2 --resume "$tmp/ck"
expect 0 '^trained 2 steps \(steps 5 to 6\) in' -- train models/gpt2.mgl --preset tiny --data "$tmp/t.bin" --steps 6 \
	--batch 2 --resume "$tmp/ck"
expect 0 "schedule is not the checkpoint's: --steps 6 \(it had 4\); step 5 runs at lr" \
	-- train models/gpt2.mgl --preset tiny --data "$tmp/t.bin" --steps 6 --batch 2 --resume "$tmp/ck"
expect 0 'hint: leave out --steps to keep'     -- train models/gpt2.mgl --preset tiny --data "$tmp/t.bin" --steps 6 \
	--batch 2 --resume "$tmp/ck"
# without --steps the run goes to the checkpoint's last step: here it is there already
expect 1 'the checkpoint is at step 4 already' -- train models/gpt2.mgl --preset tiny --data "$tmp/t.bin" --batch 2 \
	--resume "$tmp/ck"
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
# refused before the start line: nothing says "training" that will not train
refused_before_start() {
	"$mgl" "$@" >"$tmp/refused" 2>&1 && { echo "mgl $* succeeded"; return 1; }
	grep -q '^mgl: error: ' "$tmp/refused" && ! grep -q 'mgl: training' "$tmp/refused" || { cat "$tmp/refused"; return 1; }
}
check 'a missing shard is refused before the start line' \
	refused_before_start train models/gpt2.mgl --preset tiny --data "$tmp/missing.bin"
check 'a checkpoint of another model is refused before the start line' \
	refused_before_start train models/gpt2.mgl --preset tiny --set d=32 --data "$tmp/t.bin" --steps 9 --resume "$tmp/ck"
check 'a model that is not a language model is refused before the start line' \
	refused_before_start train models/bert.mgl --preset tiny --data "$tmp/t.bin" --steps 1
check 'a missing GPT-2 tokenizer is refused before the start line' \
	refused_before_start train models/gpt2.mgl --preset tiny --data "$tmp/t.bin" --gpt2 "$tmp/nowhere"
expect 1 "hint: examples/fetch_gpt2_tokenizer.sh DIR fetches" -- train models/gpt2.mgl --preset tiny --data "$tmp/t.bin" \
	--gpt2 "$tmp/nowhere"

# progress off a terminal: a line every --log-every steps, into a pipe too
piped_progress() {
	"$mgl" train models/gpt2.mgl --preset tiny --data "$tmp/t.bin" --steps 6 --batch 2 --log-every 2 2>&1 | cat >"$tmp/piped"
	n=$(grep -c '^step [246]/6 | loss [0-9.]* | [0-9,]* tok/s | [0-9:]* left$' "$tmp/piped")
	[ "$n" = 3 ] || { cat "$tmp/piped"; return 1; }
}
check 'a progress line every --log-every steps, through a pipe' piped_progress

# Ctrl-C: acknowledged at once; the run stops after the step, saves and exits 130. A second
# Ctrl-C stops at once (exit 130), saving nothing, leaving no part of a checkpoint.
# wait_for TEXT FILE: until FILE holds TEXT (at most 60 s)
wait_for() {
	i=0
	while ! grep -q -- "$1" "$2"; do
		i=$((i + 1))
		[ $i -le 600 ] || { echo "no '$1' in $2 after 60 s:"; cat "$2"; return 1; }
		sleep 0.1
	done
}
ctrl_c() {
	"$mgl" train models/gpt2.mgl --preset tiny --data "$tmp/t.bin" --steps 100000 --batch 2 --save "$tmp/int" \
		>"$tmp/int.out" 2>&1 &
	pid=$!
	wait_for 'mgl: training' "$tmp/int.out" || { kill $pid; return 1; }
	kill -INT $pid
	wait $pid
	st=$?
	cat "$tmp/int.out"
	[ $st = 130 ] && grep -q 'Ctrl-C: stopping after this step and saving; Ctrl-C again to stop now' "$tmp/int.out" &&
		grep -q '^mgl: interrupted after step [0-9,]* (saved)$' "$tmp/int.out" && test -s "$tmp/int/checkpoint.safetensors"
}
check 'Ctrl-C is acknowledged, and the run saves and stops with 130' ctrl_c
# stop_now PID OUT: Ctrl-C twice, the second once the first was acknowledged; the status
stop_now() {
	kill -INT "$1"
	wait_for 'Ctrl-C again to stop now' "$2" || { kill "$1"; return 1; }
	kill -INT "$1"
	wait "$1"
}
ctrl_c_twice() {
	"$mgl" train models/gpt2.mgl --preset tiny --data "$tmp/t.bin" --steps 100000 --batch 256 --save "$tmp/int2" \
		>"$tmp/int2.out" 2>&1 &
	pid=$!
	wait_for 'mgl: training' "$tmp/int2.out" || { kill $pid; return 1; }
	stop_now $pid "$tmp/int2.out"
	st=$?
	cat "$tmp/int2.out"
	[ $st = 130 ] && grep -q 'mgl: stopped now, without saving' "$tmp/int2.out" && ! grep -q '^trained' "$tmp/int2.out" &&
		test ! -e "$tmp/int2/checkpoint.safetensors" -a ! -e "$tmp/int2/checkpoint.safetensors.tmp"
}
check 'a second Ctrl-C stops at once, with 130, saving nothing' ctrl_c_twice
# on the cpu, a step of more than a few seconds is announced with its expected time: d = 768
# and 4,096 tokens a step are some 350 GFLOP, seconds at any speed this backend has
estimate() {
	"$mgl" train models/gpt2.mgl --preset tiny --set d=768,heads=12 --data "$tmp/t.bin" --batch 64 --backend cpu \
		>"$tmp/est.out" 2>&1 &
	pid=$!
	wait_for 'mgl: a step will take about' "$tmp/est.out" || { kill $pid; return 1; }
	stop_now $pid "$tmp/est.out"
	cat "$tmp/est.out"
	grep -Eq '^mgl: a step will take about [0-9.]+ (s|min|h) on this cpu \([0-9.]+ GFLOP at about [0-9.]+ GFLOP/s a core\)$' \
		"$tmp/est.out" && ! grep -q '^step 1/' "$tmp/est.out"
}
check 'a long first step on the cpu is announced with its expected time' estimate
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
# GPT-2 tokens: the checkpoint remembers the tokenizer, as an absolute path and the SHA-256
# of its files, and sample decodes with it, from any directory
cp -r tests/data/gpt2 "$tmp/g2"
mgl_abs=$(cd "$(dirname "$mgl")" && pwd)/$(basename "$mgl")
check "train with --gpt2 given as a relative path" sh -c 'cd "$1" && "$2" train "$3/models/gpt2.mgl" --preset tiny \
	--set vocab=50257 --data g.bin --steps 2 --batch 2 --gpt2 g2 --save gck' - "$tmp" "$mgl_abs" "$(pwd)"
expect 0 '^The'                                -- sample "$tmp/gck" --prompt The --tokens 5
check "GPT-2 samples decode to more than the prompt" test "$("$mgl" sample "$tmp/gck" --prompt The --tokens 5 | wc -c)" -gt 6
# a resumed run keeps the checkpoint's tokenizer
expect 0 'trained 1 step \(steps 3 to 3\)'    -- train models/gpt2.mgl --preset tiny --set vocab=50257 --data "$tmp/g.bin" \
	--steps 3 --batch 2 --resume "$tmp/gck" --save "$tmp/gck2"
check "a resumed checkpoint keeps its tokenizer" \
	sh -c 'head -c 4096 "$1" | grep -aq "\"tokenizer\":\"gpt2:$2/g2\""' - "$tmp/gck2/checkpoint.safetensors" "$tmp"
# the files are checked by their SHA-256: other files are refused, the same ones anywhere do
sed -i '$d' "$tmp/g2/vocab.bpe"   # one merge fewer: still a tokenizer, not the same one
expect 1 "g2/encoder.json and vocab.bpe are not the files .* was trained with" -- sample "$tmp/gck" --prompt The --tokens 5
expect 1 "hint: give --gpt2 DIR with the files it was trained with" -- sample "$tmp/gck" --prompt The --tokens 5
expect 0 '^The'                                -- sample "$tmp/gck" --prompt The --tokens 5 --gpt2 tests/data/gpt2
# a directory that is gone: the hint says --gpt2 DIR
rm -r "$tmp/g2"
expect 1 "g2/encoder.json: cannot open: No such file or directory" -- sample "$tmp/gck" --prompt The --tokens 5
expect 1 "hint: the checkpoint was trained with the tokenizer in $tmp/g2; give --gpt2 DIR" \
	-- sample "$tmp/gck" --prompt The --tokens 5

# the GPU kernels build with NVRTC, GPU or not (CI has the toolkit and no driver)
if "$mgl" kernels 2>&1 | grep -q "built without CUDA"; then
	expect 1 'built without CUDA'              -- kernels
else
	expect 0 'kernels/ops.cu: compiled for sm_90 by NVRTC' -- kernels --arch sm_90
	expect 2 '--arch takes sm_XY'              -- kernels --arch hopper
fi

summary cli_train
