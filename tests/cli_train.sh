#!/bin/sh
# tests/cli_train.sh — tokenize, train and sample as a user runs them, including the bad
# inputs each must refuse with a clear message (exit 1) or a usage error (exit 2).
# usage: tests/cli_train.sh MGL
mgl=${1:?usage: tests/cli_train.sh MGL}
. "$(dirname "$0")/lib.sh"

# patch_meta CHECKPOINT FROM TO OUT: a copy of CHECKPOINT with the metadata text FROM
# replaced by TO, of the same length
patch_meta() {
	at=$(grep -obUa -- "$2" "$1" | head -n 1 | cut -d: -f1)
	[ -n "$at" ] && cp "$1" "$4" && printf '%s' "$3" | dd of="$4" bs=1 seek="$at" conv=notrunc 2>/dev/null
}

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
# BERT's streams: sentences and documents kept with [SEP] (259 in the byte-level vocabulary)
printf 'The cat sat. It purred!\nStill the same document.\n\nA second one. Of two sentences.\n' > "$tmp/b.txt"
expect 0 'tokens in 2 documents of 5 sentences \(bert, bytes\): wrote' -- tokenize "$tmp/b.txt" -o "$tmp/b.bin" --bert
check "a BERT stream: each sentence ends with [SEP], each document with one more" \
	sh -c 'od -An -v -tu2 -j1024 "$1" | tr -s " " "\n" | grep -v "^$" | grep -n "^259$" | cut -d: -f1 | tr "\n" " " | grep -qx "13 24 49 50 64 82 83 "' - "$tmp/b.bin"
expect 0 '4 files, .* in 8 documents of 20 sentences \(bert, WordPiece\): wrote .*b.bin \(.* and .*b.val.bin' \
	-- tokenize "$tmp/b.txt" "$tmp/b.txt" "$tmp/b.txt" "$tmp/b.txt" -o "$tmp/b.bin" --bert --vocab tests/data/bert/vocab.txt --val-fraction 0.25
check "a BERT validation shard starts at a document's start" \
	sh -c 'od -An -v -tu2 -j1024 "$1" | tr -s " " "\n" | grep -v "^$" | tail -2 | tr "\n" " " | grep -qx "3 3 "' - "$tmp/b.bin"
printf 'one.' > "$tmp/one.txt"
expect 1 '6 tokens in one document: too few to split' -- tokenize "$tmp/one.txt" -o "$tmp/o.bin" --bert --val-fraction 0.5
printf '\n \n\n' > "$tmp/blank.txt"
expect 1 'no tokens: the input is empty or white space' -- tokenize "$tmp/blank.txt" -o "$tmp/o.bin" --bert
printf '[PAD]\n[UNK]\n[CLS]\n[SEP]\nthe\nthe\n' > "$tmp/vocab.txt"
expect 1 "vocab.txt:6: the token 'the' is given already, on line 5" -- tokenize "$tmp/b.txt" -o "$tmp/o.bin" --bert --vocab "$tmp/vocab.txt"
expect 2 '--vocab is BERT.s WordPiece vocabulary: it goes with --bert' -- tokenize "$tmp/b.txt" -o "$tmp/o.bin" --vocab "$tmp/vocab.txt"
expect 2 '--gpt2 and --bert exclude each other' -- tokenize "$tmp/b.txt" -o "$tmp/o.bin" --bert --gpt2 tests/data/gpt2
expect 0 '--bert .*--vocab FILE' -- tokenize --help

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
# the hint to leave --steps out only where the checkpoint's schedule has steps left (the
# metadata patched to a schedule of 9 steps; the run itself stopped at 4): leaving it out of
# a finished run's resume is refused
patch_meta "$tmp/ck/checkpoint.safetensors" '"steps":"4"' '"steps":"9"' "$tmp/ck9.safetensors"
expect 0 'hint: leave out --steps to keep'     -- train models/gpt2.mgl --preset tiny --data "$tmp/t.bin" --steps 6 \
	--batch 2 --resume "$tmp/ck9.safetensors"
no_hint_when_finished() {
	"$mgl" train models/gpt2.mgl --preset tiny --data "$tmp/t.bin" --steps 6 --batch 2 --resume "$tmp/ck" >"$tmp/fin" 2>&1 &&
		grep -q "schedule is not the checkpoint's: --steps 6 (it had 4)" "$tmp/fin" && ! grep -q 'hint: leave out' "$tmp/fin"
}
check 'resuming a finished run beyond its end: a note, and no hint to leave --steps out' no_hint_when_finished
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
expect 1 "$tmp/t.bin: a token shard \(mgl tokenize writes them\), not a checkpoint" -- sample "$tmp/t.bin"
expect 1 "$tmp/t.bin: a token shard"           -- train models/gpt2.mgl --preset tiny --data "$tmp/t.bin" --resume "$tmp/t.bin"
expect 2 '--tokens takes a whole number from 1 to 16,777,216, not' -- sample "$tmp/ck" --tokens 0
expect 2 '--clip takes a number from 0 to 1,000,000, not' -- train models/gpt2.mgl --data "$tmp/t.bin" --clip 2e6

# A vocabulary larger than the tokenizer's (padded, as GPT-2's 50,304 is): the ids the
# tokenizer lacks are never drawn, so every token is one byte.
expect 0 'trained 1 step in'                   -- train models/gpt2.mgl --preset tiny --set vocab=300 --data "$tmp/t.bin" \
	--steps 1 --batch 1 --save "$tmp/pad"
sample_bytes() {   # CHECKPOINT N [OPTIONS]: N tokens and the newline, N + 1 bytes
	ck=$1 n=$2
	shift 2
	"$mgl" sample "$ck" --tokens "$n" "$@" >"$tmp/drawn" || return 1
	test "$(wc -c <"$tmp/drawn")" = $((n + 1))
}
check "a padded vocabulary samples bytes only"                 sample_bytes "$tmp/pad" 500
check "a padded vocabulary samples bytes only (top-k)"         sample_bytes "$tmp/pad" 300 --top-k 280 --seed 9
check "a padded vocabulary samples bytes only (greedy)"        sample_bytes "$tmp/pad" 50 --temperature 0
# a vocabulary smaller than the tokenizer's: a prompt beyond it is refused, not read as zeros
for i in $(seq 300); do echo "abc ABC 0123 cab"; done >"$tmp/low.txt"
expect 0 'wrote'                               -- tokenize "$tmp/low.txt" -o "$tmp/low.bin"
expect 0 'trained 1 step in'                   -- train models/gpt2.mgl --preset tiny --set vocab=100 --data "$tmp/low.bin" \
	--steps 1 --batch 1 --save "$tmp/small"
check "a small vocabulary samples within it"                  sample_bytes "$tmp/small" 100 --prompt ""
expect 1 "the prompt's token 2 \(id 122\) is beyond the model's vocabulary of 100" -- sample "$tmp/small" --prompt az

# A checkpoint's data overwritten with one byte: 0377 makes every weight NaN, 0177 3.4e38
fill_data() {   # FROM BYTE TO
	n=$(od -An -tu8 -N8 "$1" | tr -d ' ') size=$(wc -c <"$1")
	{ head -c $((8 + n)) "$1"; head -c $((size - 8 - n)) /dev/zero | tr '\0' "$2"; } >"$3"
}
fill_data "$tmp/ck/checkpoint.safetensors" '\377' "$tmp/nan.safetensors"
fill_data "$tmp/ck/checkpoint.safetensors" '\177' "$tmp/huge.safetensors"
expect 1 "nan.safetensors holds non-finite values: element 0 of 'wte' is NaN" -- sample "$tmp/nan.safetensors"
expect 1 "huge.safetensors holds non-finite values: the model's logits are NaN" -- sample "$tmp/huge.safetensors"

# The metadata is checked (tests/test_runtime.c tries every key): a value of the wrong
# form is refused, naming the file and the key.
patch_meta "$tmp/ck/checkpoint.safetensors" '"tokenizer":"bytes"' '"tokenizer":"bytez"' "$tmp/tok.safetensors"
expect 1 "tok.safetensors: the metadata's 'tokenizer' is 'bytez', not 'bytes', 'gpt2', 'gpt2:DIR', 'bert', 'wordpiece' or 'wordpiece:FILE'" \
	-- sample "$tmp/tok.safetensors"
patch_meta "$tmp/ck/checkpoint.safetensors" '"step":"4"' '"step":"-"' "$tmp/step.safetensors"
expect 1 "step.safetensors: the metadata's 'step' is '-', not a whole number from 0 to" \
	-- train models/gpt2.mgl --preset tiny --data "$tmp/t.bin" --steps 8 --batch 2 --resume "$tmp/step.safetensors"
patch_meta "$tmp/ck/checkpoint.safetensors" '"preset":"tiny"' '"preset":"ti=y"' "$tmp/preset.safetensors"
expect 1 "preset.safetensors: the metadata's 'preset' is 'ti=y', not a preset's name" -- sample "$tmp/preset.safetensors"
# the source and the set are checked by compiling them: an error is the file's (exit 1)
patch_meta "$tmp/pad/checkpoint.safetensors" '"set":"vocab=300"' '"set":"vocab=3*="' "$tmp/set.safetensors"
expect 1 "set.safetensors \(its set\):1:9: error: expected an expression" -- sample "$tmp/set.safetensors"

# Sharded checkpoints (--save-shards): read wherever one file is; damaged ones refused
sh_train() { "$mgl" train models/gpt2.mgl --preset tiny --data "$tmp/t.bin" --batch 2 "$@" >"$tmp/out" 2>&1; }
sh_train --steps 2 --save "$tmp/sa" --save-shards 3 && sh_train --steps 4 --save "$tmp/sb" --save-shards 3
check "--save-shards 3: three shards and an index, nothing else" \
	sh -c '[ "$(ls -A "$1/sb" | tr "\n" " ")" = "model-00001-of-00003.safetensors model-00002-of-00003.safetensors model-00003-of-00003.safetensors model.safetensors.index.json " ]' - "$tmp"
expect 0 'mgl: resuming from step 4 \('       -- train models/gpt2.mgl --preset tiny --data "$tmp/t.bin" --steps 6 --batch 2 --resume "$tmp/sb"
check "a sharded checkpoint samples"                           sample_bytes "$tmp/sb" 20
cp -r "$tmp/sa" "$tmp/mix" && cp "$tmp/sb/model-00002-of-00003.safetensors" "$tmp/mix/"
expect 1 "mix/model.safetensors.index.json: its shards disagree: metadata '.*' differs between the first shard and shard 2 of 3" \
	-- sample "$tmp/mix"
cp -r "$tmp/sa" "$tmp/gone" && rm "$tmp/gone/model-00003-of-00003.safetensors"
expect 1 "gone/model-00003-of-00003.safetensors: cannot open" -- sample "$tmp/gone"
cp -r "$tmp/sa" "$tmp/esc" && printf '{"weight_map": {"wte": "../t.bin"}}' >"$tmp/esc/model.safetensors.index.json"
expect 1 "the file of 'wte' must be a file name beside the index, not '../t.bin'" -- sample "$tmp/esc"
cp -r "$tmp/sa" "$tmp/dup" && sed 's/"wpe": "[^"]*"/"wte": "model-00002-of-00003.safetensors"/' "$tmp/sa/model.safetensors.index.json" >"$tmp/dup/model.safetensors.index.json"
expect 1 "'wte' is given twice" -- sample "$tmp/dup"
# a save staged whole but published halfway (a crash): read as it stands, finished by the next save
cp -r "$tmp/sa" "$tmp/half" && mkdir "$tmp/half/.saving" && cp "$tmp/sb"/* "$tmp/half/.saving/" && cp "$tmp/sb/model-00001-of-00003.safetensors" "$tmp/half/"
expect 0 'mgl: resuming from step 4 \('       -- train models/gpt2.mgl --preset tiny --data "$tmp/t.bin" --steps 6 --batch 2 --resume "$tmp/half" --save "$tmp/half" --save-shards 2
check "a sharded save after a crash: published, the old shards and the stage gone" \
	sh -c '[ "$(ls -A "$1/half" | tr "\n" " ")" = "model-00001-of-00002.safetensors model-00002-of-00002.safetensors model.safetensors.index.json " ]' - "$tmp"
# back to one file: the index goes, so the file is what is read
sh_train --steps 8 --resume "$tmp/half" --save "$tmp/half" --save-shards 1
check "one file saved over shards: they are gone" sh -c '[ "$(ls -A "$1/half")" = checkpoint.safetensors ]' - "$tmp"

# --save is checked before the first step: onto a file, or where a directory is in the way
: >"$tmp/afile"
expect 1 "cannot save in '$tmp/afile': it is not a directory" -- train models/gpt2.mgl --preset tiny --data "$tmp/t.bin" \
	--steps 3 --batch 1 --save "$tmp/afile" --log "$tmp/afile.jsonl"
check "no step ran before --save was refused" test ! -s "$tmp/afile.jsonl"
mkdir -p "$tmp/indir/checkpoint.safetensors"
expect 1 "cannot save to '$tmp/indir/checkpoint.safetensors': it is not a regular file" \
	-- train models/gpt2.mgl --preset tiny --data "$tmp/t.bin" --steps 3 --batch 1 --save "$tmp/indir"

# --tensorboard DIR (created, with its parents): an events file a run, a resumed run's beside
# the first; tests/test_tensorboard.c reads them back
tb_train() { "$mgl" train models/gpt2.mgl --preset tiny --data "$tmp/t.bin" --batch 2 --tensorboard "$tmp/runs/tb" "$@"; }
tb_files() { ls "$tmp/runs/tb" | grep -c '^events\.out\.tfevents\.[0-9]*\..*\.[0-9]*$'; }
tensorboard_runs() {
	tb_train --steps 2 --save "$tmp/tbck" >"$tmp/tb.out" 2>&1 || { cat "$tmp/tb.out"; return 1; }
	grep -q "^mgl: TensorBoard events to $tmp/runs/tb/events\.out\.tfevents\." "$tmp/tb.out" && [ "$(tb_files)" = 1 ] ||
		{ cat "$tmp/tb.out"; ls "$tmp/runs/tb"; return 1; }
	first=$(ls "$tmp/runs/tb") && cp "$tmp/runs/tb/$first" "$tmp/tb.first"
	tb_train --steps 3 --resume "$tmp/tbck" >"$tmp/tb.out" 2>&1 || { cat "$tmp/tb.out"; return 1; }
	[ "$(tb_files)" = 2 ] && cmp "$tmp/runs/tb/$first" "$tmp/tb.first" || { ls -l "$tmp/runs/tb"; return 1; }
}
check '--tensorboard writes an events file, and a resumed run another beside it' tensorboard_runs
expect 1 "cannot write TensorBoard events in '$tmp/afile': it is not a directory" -- train models/gpt2.mgl --preset tiny \
	--data "$tmp/t.bin" --steps 1 --batch 1 --tensorboard "$tmp/afile"
expect 1 "cannot create the TensorBoard directory '$tmp/afile/tb': Not a directory" -- train models/gpt2.mgl \
	--preset tiny --data "$tmp/t.bin" --steps 1 --batch 1 --tensorboard "$tmp/afile/tb"
expect 2 "hint: did you mean '--tensorboard'\?" -- train models/gpt2.mgl --data "$tmp/t.bin" --tensorbord "$tmp/tb"

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
check 'BERT on a shard that is not a BERT stream is refused before the start line' \
	refused_before_start train models/bert.mgl --preset tiny --data "$tmp/t.bin" --steps 1
check 'a --tensorboard directory that cannot be one is refused before the start line' \
	refused_before_start train models/gpt2.mgl --preset tiny --data "$tmp/t.bin" --tensorboard "$tmp/afile"
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
# off a terminal no progress line is open, so nothing ends one with a blank line
check 'Ctrl-C off a terminal leaves no blank line' sh -c '! grep -n "^$" "$1"' - "$tmp/int.out"
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
check '... leaving no blank line off a terminal' sh -c '! grep -n "^$" "$1"' - "$tmp/int2.out"
# on the cpu, a step of more than a few seconds is announced with its expected time: d = 768
# and 4,096 tokens a micro-batch are some 350 GFLOP, four of them 1.4 TFLOP (in SI units,
# never 1.4e+03 GFLOP), seconds at any speed this backend has
estimate() {
	"$mgl" train models/gpt2.mgl --preset tiny --set d=768,heads=12 --data "$tmp/t.bin" --batch 64 --accum 4 \
		--backend cpu >"$tmp/est.out" 2>&1 &
	pid=$!
	wait_for 'mgl: a step will take about' "$tmp/est.out" || { kill $pid; return 1; }
	stop_now $pid "$tmp/est.out"
	cat "$tmp/est.out"
	grep -Eq '^mgl: a step will take about [0-9.]+ (s|min|h) on this cpu \(1\.[0-9]+ TFLOP at about [0-9.]+ [MG]FLOP/s a rank\)$' \
		"$tmp/est.out" && ! grep -q '^step 1/' "$tmp/est.out"
}
check 'a long first step on the cpu is announced with its expected time' estimate
# the cpu backend's GEMMs: OpenBLAS where it loads (scripts/deps.sh installs it), its own
# loops with MGL_BLAS=0 or where it is absent; mgl train names which, the two train alike
# (1e-5: float rounding in other orders), and MGL_THREADS is shared out over the ranks
gemms() {
	MGL_THREADS=4 "$mgl" train models/gpt2.mgl --preset tiny --data "$tmp/t.bin" --steps 3 --batch 2 --tp 2 \
		--log "$tmp/blas.jsonl" >"$tmp/blas.out" 2>&1 &&
		MGL_BLAS=0 "$mgl" train models/gpt2.mgl --preset tiny --data "$tmp/t.bin" --steps 3 --batch 2 --tp 2 \
			--log "$tmp/loops.jsonl" >"$tmp/loops.out" 2>&1 || return 1
	cat "$tmp/blas.out" "$tmp/loops.out"
	grep -q "^mgl: GEMMs: mgl's own GEMM loops, one thread a rank (no OpenBLAS: MGL_BLAS=0)$" "$tmp/loops.out" || return 1
	if grep -q "^mgl: GEMMs: mgl's own GEMM loops, one thread a rank (no OpenBLAS: no libopenblas" "$tmp/blas.out"; then
		echo "SKIP: mgl train's GEMMs on OpenBLAS (no libopenblas.so.0 here; scripts/deps.sh openblas installs it)" >&2
	else
		grep -Eq '^mgl: GEMMs: OpenBLAS cblas_sgemm on 2 threads a rank: .*\(lib(openblas|cblas)\.so' "$tmp/blas.out" ||
			return 1
	fi
	a=$(grep -o '"step": 3, "loss": [0-9.]*' "$tmp/blas.jsonl" | cut -d' ' -f4)
	b=$(grep -o '"step": 3, "loss": [0-9.]*' "$tmp/loops.jsonl" | cut -d' ' -f4)
	echo "step 3: loss $a, $b with the loops"
	awk -v a="$a" -v b="$b" 'BEGIN { exit !(a > 0 && (a - b) ^ 2 <= (1e-5 * b) ^ 2) }'
}
check "mgl train names the cpu backend's GEMM; OpenBLAS and the loops train alike" gemms
# compiler/hfuse.c lays q, k, v and their biases end to end for the cuda backend's batched
# GEMM (not under MGL_NO_QKV_FWD=1): on the cpu the same numbers either way, step for step,
# at tp 1 and 2
qkv_layout() {
	for tp in 1 2; do
		"$mgl" train models/gpt2.mgl --preset tiny --data "$tmp/t.bin" --steps 3 --batch 2 --tp $tp \
			--log "$tmp/qkv0.jsonl" >/dev/null 2>&1 &&
			MGL_NO_QKV_FWD=1 "$mgl" train models/gpt2.mgl --preset tiny --data "$tmp/t.bin" --steps 3 --batch 2 \
				--tp $tp --log "$tmp/qkv1.jsonl" >/dev/null 2>&1 || return 1
		grep -o '"loss": [0-9.]*' "$tmp/qkv0.jsonl" >"$tmp/qkv0"
		grep -o '"loss": [0-9.]*' "$tmp/qkv1.jsonl" >"$tmp/qkv1"
		[ "$(wc -l <"$tmp/qkv0")" = 3 ] && cmp "$tmp/qkv0" "$tmp/qkv1" || return 1
	done
}
check "MGL_NO_QKV_FWD=1 trains the same losses on the cpu as the default" qkv_layout
bad_threads() {
	MGL_THREADS=0 "$mgl" train models/gpt2.mgl --preset tiny --data "$tmp/t.bin" --steps 1 --batch 2 >"$tmp/thr.out" 2>&1
	[ $? = 1 ] && grep -q '^mgl: error: MGL_THREADS=0 is not a number of threads from 1 to 4,096$' "$tmp/thr.out"
}
check 'MGL_THREADS=0 is refused' bad_threads
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
expect 2 "no GPU can be used here|built without CUDA \(no toolkit at CUDA_HOME when it was built, or make CUDA=0\)" \
	-- train models/gpt2.mgl --preset tiny --data "$tmp/t.bin" --backend cuda
expect 2 "--gpus 2, but the job is tp 1 x dp 1 = 1 rank, one GPU each" -- train models/gpt2.mgl --preset tiny \
	--data "$tmp/t.bin" --gpus 2
expect 2 "unknown backend 'tpu'"               -- train models/gpt2.mgl --preset tiny --data "$tmp/t.bin" --backend tpu
expect 1 't.bin: the last document is not closed: a BERT stream ends with \[SEP\] \[SEP\] \(is this a BERT shard\?\)' \
	-- train models/bert.mgl --preset tiny --data "$tmp/t.bin" --steps 1
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

# BERT: told by its inputs, trained on a BERT stream, its heads reported on the progress
# line, in the log and at the end
expect 0 'tokens in [0-9,]+ documents of [0-9,]+ sentences \(bert, bytes\): wrote' -- tokenize "$tmp/text.txt" \
	-o "$tmp/bert.bin" --bert --val-fraction 0.1
bert_train() {
	"$mgl" train models/bert.mgl --preset tiny --data "$tmp/bert.bin" --val "$tmp/bert.val.bin" --steps 6 --batch 4 \
		--tp 2 --log-every 2 --eval-every 3 --log "$tmp/bert.jsonl" --save "$tmp/bck" >"$tmp/bert.out" 2>&1 || return 1
	cat "$tmp/bert.out"
	[ "$(grep -Ec '^step [24]/6 \| loss [0-9.]+ \| mlm [0-9.]+ \| sop [0-9.]+ \| sop acc [0-9.]+% \| [0-9,]+ tok/s \| [0-9:]+ left$' \
		"$tmp/bert.out")" = 2 ] &&
		[ "$(grep -Ec '^step [36]/6: loss [0-9.]+, validation loss [0-9.]+ \(mlm [0-9.]+, perplexity [0-9.]+; sop [0-9.]+, accuracy [0-9.]+%\)$' \
			"$tmp/bert.out")" = 2 ] &&
		grep -Eq '^trained 6 steps in [0-9.]+ s: loss [0-9.]+ -> [0-9.]+ \(mlm [0-9.]+ -> [0-9.]+, sop accuracy [0-9.]+% -> [0-9.]+%\), validation loss [0-9.]+ \(mlm [0-9.]+, sop accuracy [0-9.]+%\); saved' \
			"$tmp/bert.out"
}
check 'BERT trains: its heads on the progress lines, the evaluations and the summary' bert_train
# each line's numbers by key: sane, and the evaluations' (every third step) too
bert_log_sane() {
	awk -F'[:,}]' '{
		for (i = 1; i < NF; i++) { gsub(/[ "{]/, "", $i); v[$i] = $(i + 1) + 0 }
		if (!(v["sop_acc"] >= 0 && v["sop_acc"] <= 1 && v["mlm_loss"] > 0 && v["sop_loss"] > 0 && v["mlm_loss"] < 20 &&
		      (v["loss"] - v["mlm_loss"] - v["sop_loss"]) ^ 2 < 4e-12)) { print "bad line " NR ": " $0; bad = 1 }
		if (NR % 3 == 0 && !(v["val_sop_acc"] >= 0 && v["val_sop_acc"] <= 1 && v["val_mlm_loss"] > 0 &&
		      (v["val_loss"] - v["val_mlm_loss"] - v["val_sop_loss"]) ^ 2 < 4e-12)) { print "bad evaluation " NR ": " $0; bad = 1 }
		n++
	} END { exit bad || n != 6 }' "$tmp/bert.jsonl"
}
check "BERT's log: mlm_loss, sop_loss and sop_acc each step, the loss their sum, the accuracy from 0 to 1" bert_log_sane
# --dump-first's batch: none with --accum 2 (the step has two), nor one left from before
check "--dump-first with --accum 2: the weights and the gradients, and no batch (the step has two)" sh -c 'for a in 1 2; do
	"$1" train models/bert.mgl --preset tiny --data "$2/bert.bin" --steps 1 --batch 2 --accum $a --dump-first "$2/bacc" \
		>/dev/null 2>&1 || exit 1; [ $a = 2 ] || [ -s "$2/bacc/batch.safetensors" ] || exit 1; done
	[ -s "$2/bacc/grads.safetensors" ] && [ ! -e "$2/bacc/batch.safetensors" ]' - "$mgl" "$tmp"
# an independent BERT (tests/gpu/torch_bert.py --numpy: float64 NumPy, mgl's names) reads what
# --dump-first wrote at tp 2 with --sp (the weights, the gradients and the batch, masking and
# all): mgl's first loss, its heads and accuracy, and every gradient against central differences
bert_numpy() {
	"$mgl" train models/bert.mgl --preset tiny --set p_drop=0 --data "$tmp/bert.bin" --steps 1 --batch 4 --tp 2 --sp \
		--log "$tmp/bn.jsonl" --dump-first "$tmp/bn" >/dev/null 2>&1 &&
		"$1" tests/gpu/torch_bert.py --numpy "$tmp/bn" "$tmp/bn.jsonl" --heads 4
}
py=
for p in python3 /usr/bin/python3; do "$p" -c 'import numpy' 2>/dev/null && { py=$p; break; }; done
if [ -n "$py" ]; then
	check "BERT's first step against NumPy (tests/gpu/torch_bert.py --numpy)" bert_numpy "$py"
else
	echo "SKIP: BERT against NumPy: no python3 with numpy"
fi
expect 0 'mgl: resuming from step 6 .*bck' -- train models/bert.mgl --preset tiny --data "$tmp/bert.bin" --steps 7 --batch 4 \
	--resume "$tmp/bck"
expect 1 "the model's vocabulary \(256\) is smaller than the data's \(261 tokens: its BERT byte vocabulary with BERT's five special tokens\): give --set vocab=261 or more" \
	-- train models/bert.mgl --preset tiny --set vocab=256 --data "$tmp/bert.bin"
# WordPiece: the checkpoint records the vocabulary's file and SHA-256; a resume with another is refused
expect 0 'bert, WordPiece' -- tokenize "$tmp/text.txt" -o "$tmp/wp.bin" --bert --vocab tests/data/bert/vocab.txt
cp tests/data/bert/vocab.txt "$tmp/vocab-a.txt"
expect 0 'trained 2 steps' -- train models/bert.mgl --preset tiny --data "$tmp/wp.bin" --steps 2 --batch 2 \
	--vocab "$tmp/vocab-a.txt" --save "$tmp/wpck"
check "a WordPiece checkpoint records its vocabulary's path" \
	sh -c 'head -c 8192 "$1" | grep -aq "\"tokenizer\":\"wordpiece:$2/vocab-a.txt\""' - "$tmp/wpck/checkpoint.safetensors" "$tmp"
expect 0 'trained 1 step \(steps 3 to 3\)' -- train models/bert.mgl --preset tiny --data "$tmp/wp.bin" --steps 3 --batch 2 \
	--resume "$tmp/wpck"
echo 'zebra' >>"$tmp/vocab-a.txt"
expect 1 "vocab-a.txt is not the vocabulary .*wpck/checkpoint.safetensors was trained with \(its SHA-256 is [0-9a-f]{64}; the checkpoint's, [0-9a-f]{64}\)" \
	-- train models/bert.mgl --preset tiny --data "$tmp/wp.bin" --steps 3 --batch 2 --resume "$tmp/wpck"
expect 1 "wpck/checkpoint.safetensors was trained with other WordPiece tokenizer files \(SHA-256 [0-9a-f]{64}\) than --vocab gives" \
	-- train models/bert.mgl --preset tiny --data "$tmp/wp.bin" --steps 3 --batch 2 --resume "$tmp/wpck" --vocab "$tmp/vocab-a.txt"
expect 2 '--gpt2 \(GPT-2.s BPE\) and --vocab \(BERT.s WordPiece\) exclude each other' -- train models/bert.mgl --preset tiny \
	--data "$tmp/wp.bin" --vocab tests/data/bert/vocab.txt --gpt2 tests/data/gpt2
expect 1 'this model is a language model: it trains on bytes or GPT-2 tokens \(--gpt2 DIR\), not on WordPiece tokens' \
	-- train models/gpt2.mgl --preset tiny --data "$tmp/t.bin" --vocab tests/data/bert/vocab.txt
expect 1 'this model is a BERT: it trains on BERT streams .*, not on GPT-2 tokens' \
	-- train models/bert.mgl --preset tiny --data "$tmp/bert.bin" --gpt2 tests/data/gpt2
expect 1 "GPT-2 has no place for 'wse': not models/gpt2.mgl's layout" -- export "$tmp/bck" -o "$tmp/bhf"
expect 1 "hint: this is a BERT \(models/bert.mgl\), which mgl export does not write: its pre-LN layers" -- export "$tmp/bck" \
	-o "$tmp/bhf"
check "a refused BERT export writes nothing" test ! -e "$tmp/bhf"
sed 's/targets/labels/g' models/gpt2.mgl >"$tmp/labels.mgl"
expect 1 'mgl train feeds language models \(models/gpt2.mgl, models/llama.mgl\), whose inputs are tokens and targets, and BERT \(models/bert.mgl\), whose inputs are tokens, segments, mask, mlm_targets and sop_targets; this model.s inputs are neither' \
	-- train "$tmp/labels.mgl" --preset tiny --data "$tmp/t.bin"

# export: a directory transformers' from_pretrained loads, or the tensors alone
expect 0 'load it with: GPT2LMHeadModel.from_pretrained' -- export "$tmp/ck" -o "$tmp/hf"
check "export -o DIR writes model.safetensors and config.json, no tokenizer for bytes" \
	sh -c 'test "$(ls "$1" | tr "\n" " ")" = "config.json model.safetensors "' - "$tmp/hf"
# config_is DIR KEY VALUE: DIR/config.json has "KEY": VALUE
config_is() { grep -Eq "^  \"$2\": $3,?\$" "$1/config.json" || { echo "config.json lacks \"$2\": $3"; return 1; }; }
for kv in 'vocab_size 256' 'n_positions 64' 'n_embd 64' 'n_layer 2' 'n_head 4' 'n_inner 256' 'layer_norm_epsilon 1e-05' \
	'activation_function "gelu_new"' 'architectures \["GPT2LMHeadModel"\]' 'model_type "gpt2"' 'resid_pdrop 0.1' \
	'tie_word_embeddings true' 'eos_token_id null'; do
	check "config.json of a tiny GPT-2: $kv" config_is "$tmp/hf" $kv
done
# header DIR/model.safetensors PATTERN: the file's JSON header matches PATTERN
header() { head -c 4096 "$1" | tr -d '\000' | grep -aEq "$2" || { echo "no /$2/ in $1's header"; return 1; }; }
check "model.safetensors: c_attn fuses q, k, v as [in, 3 out]" \
	header "$tmp/hf/model.safetensors" '"transformer\.h\.1\.attn\.c_attn\.weight":\{"dtype":"F32","shape":\[64,192\]'
check "model.safetensors: Conv1D weights are [in, out]" \
	header "$tmp/hf/model.safetensors" '"transformer\.h\.0\.mlp\.c_fc\.weight":\{"dtype":"F32","shape":\[64,256\]'
check "model.safetensors: the format is pt" header "$tmp/hf/model.safetensors" '"__metadata__":\{"format":"pt"\}'
check "model.safetensors: 28 tensors" \
	sh -c 'test "$(head -c 4096 "$1" | tr -d "\000" | grep -ao data_offsets | wc -l)" = 28' - "$tmp/hf/model.safetensors"
expect 0 'hfg: model.safetensors .*, config.json, vocab.json, merges.txt, tokenizer_config.json' -- export "$tmp/gck" --hf -o "$tmp/hfg"
check "export of a GPT-2-token model: vocab.json is the tokenizer's encoder.json" cmp "$tmp/hfg/vocab.json" tests/data/gpt2/encoder.json
check "... and merges.txt its vocab.bpe"      cmp "$tmp/hfg/merges.txt" tests/data/gpt2/vocab.bpe
check "... and config.json has its vocabulary" config_is "$tmp/hfg" vocab_size 50257
check "... and its <|endoftext|>"             config_is "$tmp/hfg" eos_token_id 50256
check "... and tokenizer_config.json its length" grep -q '"model_max_length": 64,' "$tmp/hfg/tokenizer_config.json"
expect 0 'one.safetensors: 28 tensors of 2 layers'  -- export "$tmp/ck" --hf -o "$tmp/one.safetensors"
expect 0 'trained 1 step in'                   -- train models/gpt2.mgl --preset tiny --set layers=1 --data "$tmp/t.bin" \
	--steps 1 --batch 1 --save "$tmp/l1"
expect 0 'l1.safetensors: 16 tensors of 1 layer under' -- export "$tmp/l1" -o "$tmp/l1.safetensors"
check "export -o FILE.safetensors: the same tensors, no directory" \
	sh -c 'test -f "$1/one.safetensors" && cmp "$1/one.safetensors" "$1/hf/model.safetensors"' - "$tmp"
expect 1 'is the checkpoint itself: it would be overwritten' -- export "$tmp/ck" -o "$tmp/ck/checkpoint.safetensors"
check "... and the checkpoint is still there"  test -s "$tmp/ck/checkpoint.safetensors"
expect 1 "cannot create the directory '$tmp/no/such'" -- export "$tmp/ck" -o "$tmp/no/such"
expect 1 "$tmp/encoder.json: cannot open"      -- export "$tmp/gck" --gpt2 "$tmp" -o "$tmp/hfx"
expect 1 "tokenizer in 'tests/data/gpt2' has 50,257 tokens and the model 256" \
	-- export "$tmp/ck" --gpt2 tests/data/gpt2 -o "$tmp/hfx"
check "a refused export writes nothing"        test ! -e "$tmp/hfx"
expect 1 'holds no GPT-2 layers'               -- export "$tmp/hf/model.safetensors" -o "$tmp/hfx"
expect 1 'hint: mgl export takes a checkpoint of models/gpt2.mgl' -- export "$tmp/hf/model.safetensors" -o "$tmp/hfx"
expect 2 "--gpt2 DIR gives the tokenizer's files to -o DIR; -o $tmp/x.safetensors gets the tensors alone" \
	-- export "$tmp/gck" -o "$tmp/x.safetensors" --gpt2 tests/data/gpt2
check "... and writes nothing"                 test ! -e "$tmp/x.safetensors"
expect 2 '-o DIR \(or -o FILE.safetensors\) is required' -- export "$tmp/ck"
expect 0 'it is the only one and the default'  -- export --help
# where Python has transformers and torch, from_pretrained loads both directories
if python3 -c 'import transformers, torch' 2>/dev/null; then
	check "transformers loads the exported directories" python3 -c '
import sys
from transformers import GPT2LMHeadModel, AutoTokenizer
for d in sys.argv[1:]:
    m, info = GPT2LMHeadModel.from_pretrained(d, output_loading_info=True)
    bad = [k for k in info["missing_keys"] + info["unexpected_keys"] if not k.endswith((".attn.bias", ".attn.masked_bias"))]
    assert not bad and m.config.n_head == 4, (d, bad)
assert len(AutoTokenizer.from_pretrained(sys.argv[2])) == 50257' "$tmp/hf" "$tmp/hfg"
else
	echo "SKIP: loading the export with transformers (python3 with transformers and torch is not installed)"
fi

# the files are checked by their SHA-256: other files are refused, the same ones anywhere do
sed -i '$d' "$tmp/g2/vocab.bpe"   # one merge fewer: still a tokenizer, not the same one
expect 1 "g2/encoder.json and vocab.bpe are not the files .* was trained with" -- sample "$tmp/gck" --prompt The --tokens 5
expect 1 "hint: give --gpt2 DIR with the files it was trained with" -- sample "$tmp/gck" --prompt The --tokens 5
expect 0 '^The'                                -- sample "$tmp/gck" --prompt The --tokens 5 --gpt2 tests/data/gpt2
expect 1 "g2/encoder.json and vocab.bpe are not the files .* was trained with" -- export "$tmp/gck" -o "$tmp/hfy"
# a directory that is gone: the hint says --gpt2 DIR
rm -r "$tmp/g2"
expect 1 "g2/encoder.json: cannot open: No such file or directory" -- sample "$tmp/gck" --prompt The --tokens 5
expect 1 "hint: the checkpoint was trained with the tokenizer in $tmp/g2; give --gpt2 DIR" \
	-- sample "$tmp/gck" --prompt The --tokens 5

# bench: whole training steps on synthetic tokens, figures counted as the PyTorch baseline
# counts them (FLOPs a token 6 N + 12 L d T, N = 12 L d^2 + V d), here on the cpu backend
"$mgl" bench models/gpt2.mgl --preset tiny --steps 3 --warmup 1 --batch 4 --backend cpu --json --profile \
	>"$tmp/bench.json" 2>"$tmp/bench.err"
check "bench --json is one line" test "$(wc -l <"$tmp/bench.json")" = 1
for key in tag gpus d L H B T params_M ms fwdbwd_ms tflops_fwdbwd tok_s tflops_per_gpu loss mem_GB backend mfu \
	gemm_tflops model preset V params flops_per_token warmup steps ms_min ms_max device gemm_what mem_bytes \
	device_used_bytes profile step_ms outside_ms kinds_ms attention gemm layernorm classifier optimizer collectives other \
	ops what; do
	check "bench --json has \"$key\"" grep -q "\"$key\": " "$tmp/bench.json"
done
# num KEY: the number after the first "KEY": in the JSON; holds EXPR: awk's verdict on the numbers named
num() { grep -o "\"$1\": [-0-9.e+]*" "$tmp/bench.json" | head -1 | sed 's/.*: //'; }
holds() { awk -v ms="$(num ms)" -v lo="$(num ms_min)" -v hi="$(num ms_max)" -v tok="$(num tok_s)" \
	-v fpt="$(num flops_per_token)" -v tf="$(num tflops_per_gpu)" -v loss="$(num loss)" -v mfu="$(num mfu)" \
	-v gemm="$(num gemm_tflops)" -v step="$(num step_ms)" -v outside="$(num outside_ms)" \
	-v kinds="$(sed 's/.*"kinds_ms": {\([^}]*\)}.*/\1/; s/"[a-z]*": //g; s/,/ + /g' "$tmp/bench.json")" \
	-v ops="$(sed 's/.*"ops": \[//' "$tmp/bench.json" | grep -o '"ms": [-0-9.e+]*' | sed 's/.*: //' | paste -sd+)" \
	"BEGIN { split(kinds, k, \" \\\\+ \"); sum = 0; for (i in k) sum += k[i];
		 n = split(ops, o, \"+\"); osum = 0; for (i in o) osum += o[i]; exit !($1) }" ||
	{ echo "not ($1):"; cat "$tmp/bench.json"; return 1; }; }
check "bench: FLOPs a token are 6 N + 12 L d T (L 2, d 64, V 256, T 64)" \
	holds "fpt == 6 * (12 * 2 * 64 * 64 + 256 * 64) + 12 * 2 * 64 * 64"
check "bench: tokens/s > 0, and a batch of 4 x 64 over the median step" holds "tok > 0 && tok * ms / 1e3 > 0.99 * 256 && tok * ms / 1e3 < 1.01 * 256"
check "bench: the median step between the least and the most" holds "lo <= ms && ms <= hi && lo > 0"
check "bench: TFLOP/s are FLOPs a token times tokens/s" holds "tf > 0 && tf / (fpt * tok / 1e12) > 0.99 && tf / (fpt * tok / 1e12) < 1.01"
check "bench: the loss of random tokens is about ln 256" holds "loss > 5.3 && loss < 5.8"
check "bench: MFU against a measured GEMM rate" holds "gemm > 0 && mfu > 0 && mfu < 10"
check "bench: the profile's seven kinds sum to about the step" holds "length(k) == 7 && sum > 0.6 * step && sum <= step * 1.0001"
check "bench: the ops add up to the kinds" holds "n > 10 && osum > 0.999 * sum && osum < 1.001 * sum + 1e-3"
check "bench: what is outside the kinds is the rest of the step" holds "outside >= -1e-3 && sum + outside > 0.999 * step && sum + outside < 1.001 * step"
check "bench says what it runs before it runs it" grep -q '^mgl: benchmarking gpt2 tiny (120,576 parameters) on cpu' "$tmp/bench.err"
expect 0 '^RESULT \{"tag": "mgl", "gpus": 2, "d": 64, "L": 2, "H": 4, "B": 2, "T": 64, .*"backend": "cpu"' \
	-- bench models/gpt2.mgl --preset tiny --tp 2 --batch 2 --steps 1 --warmup 1 --profile --backend cpu
check "bench --profile at tp 2: time in collectives" \
	awk '$1 == "collectives" { found = 1; ok = $2 > 0 } END { exit !(found && ok) }' "$tmp/out"
check "bench --profile at tp 2: the collectives alone, and the bytes mgl explain counts" \
	grep -q '^  communication: [0-9.]* [MG]B a rank a step (mgl explain.s count, ring algorithms), [0-9.]* ms when each' "$tmp/out"
"$mgl" bench models/gpt2.mgl --preset tiny --tp 2 --batch 2 --steps 1 --warmup 1 --profile --backend cpu --json \
	>"$tmp/bench2.json" 2>/dev/null
"$mgl" explain models/gpt2.mgl --preset tiny --tp 2 --batch 2 --dtype f32 --json >"$tmp/explain2.json" 2>/dev/null
check "bench --json at tp 2: collectives_alone_ms > 0, and comm_bytes as mgl explain's bytes_communicated_per_step (f32 on the cpu)" \
	python3 -c 'import json, sys
b = json.load(open(sys.argv[1]))["profile"]; e = json.load(open(sys.argv[2]))
sys.exit(not (b["collectives_alone_ms"] > 0 and b["comm_bytes"] == e["bytes_communicated_per_step"]))' "$tmp/bench2.json" "$tmp/explain2.json"
check "bench --profile at tp 2: the time mgl explain predicts, as it predicts it" \
	python3 -c 'import json, sys
b = json.load(open(sys.argv[1]))["profile"]; e = json.load(open(sys.argv[2]))
sys.exit(not (abs(b["comm_predicted_ms"] - 1e3 * e["comm_seconds"]) < 1e-4 and b["link_gbs"] == 229 and b["link_us"] == 10))' \
	"$tmp/bench2.json" "$tmp/explain2.json"
expect 0 '^  mgl explain predicts [0-9.]+ ms for them \(2 us a collective, 50 GB/s' \
	-- bench models/gpt2.mgl --preset tiny --tp 2 --batch 2 --steps 1 --warmup 1 --profile --backend cpu --link-gbs 50 --link-us 2
# with --accum 2 a micro-batch's collectives count twice, the gradients' reductions once
comm_of() { "$mgl" bench models/gpt2.mgl --preset tiny --batch 2 --steps 1 --warmup 1 --profile --backend cpu --json "$@" \
	2>/dev/null | python3 -c 'import json, sys; print(json.load(sys.stdin)["profile"]["comm_bytes"])'; }
accum_comm() {
	dp1=$(comm_of --dp 2) dp2=$(comm_of --dp 2 --accum 2) tp1=$(comm_of --tp 2) tp2=$(comm_of --tp 2 --accum 2)
	echo "dp 2: $dp1 -> $dp2; tp 2: $tp1 -> $tp2"
	python3 -c 'import sys; a, b, c, d = map(float, sys.argv[1:]); sys.exit(not (a == b > 0 and c < d < 2 * c))' \
		"$dp1" "$dp2" "$tp1" "$tp2"
}
check "bench --profile --accum 2: the gradients' all-reduce once a step, the activations' each micro-batch" accum_comm
check "bench --json at tp 1 has no collectives_alone_ms" sh -c '! grep -q collectives_alone_ms "$1"' - "$tmp/bench.json"
expect 0 '^  MFU         [0-9.]+% of [0-9.e+-]+ [GT]FLOP/s: the cpu backend.s GEMM' -- bench models/gpt2.mgl --preset tiny \
	--steps 1 --warmup 1 --batch 1
expect 0 'usage: mgl bench FILE'               -- bench --help
expect 0 '^RESULT \{"tag": "mgl".*"loss": [0-9.]+' -- bench models/bert.mgl --preset tiny --steps 2 --warmup 1 --backend cpu
expect 2 "no GPU can be used here|built without CUDA" -- bench models/gpt2.mgl --preset tiny --backend cuda
expect 2 "mgl bench has no option '--data'"    -- bench models/gpt2.mgl --preset tiny --data "$tmp/t.bin"
expect 2 '--steps takes a whole number from 1' -- bench models/gpt2.mgl --preset tiny --steps 0

# the GPU kernels build with NVRTC, GPU or not (CI has the toolkit and no driver)
if "$mgl" kernels 2>&1 | grep -q "built without CUDA"; then
	expect 1 'built without CUDA'              -- kernels
else
	expect 0 'kernels/ops.cu: compiled for sm_90 by NVRTC' -- kernels --arch sm_90
	"$mgl" compile models/gpt2.mgl --preset tiny --tp 2 --sp -o "$tmp/kernels.plan" >/dev/null
	expect 0 'the [0-9]+ generated chains of .*kernels.plan: compiled for sm_90' -- kernels "$tmp/kernels.plan"
	expect 1 'cannot open' -- kernels "$tmp/no.plan"
	expect 2 '--arch takes sm_XY'              -- kernels --arch hopper
fi

# --interleave (docs/train.md): micro-batches two at a time, one's segment of steps beside
# the other's collectives. The cpu backend runs the same order, so the losses equal --accum 2
# run one micro-batch after the other (within 1e-5: the tied embedding's two gradient terms
# are added in another order) at tp 2, tp 2 with sp, dp 2, and for BERT (and its
# sentence-order accuracy, each micro-batch's against its own targets); it holds the
# activations of both (mgl bench's memory grows); an odd --accum is refused
same_losses() {   # A.jsonl B.jsonl: as many lines, every loss within 1e-5 relative
	paste "$1" "$2" | awk -F'"loss": ' '{ split($2, a, ","); split($3, b, ","); d = (a[1] - b[1]) / a[1]; if (d < 0) d = -d
		if (d > w) w = d; n++ } END { printf "%d losses, worst relative difference %g\n", n, w; exit !(n >= 3 && w < 1e-5) }'
}
interleave() {
	for job in "--tp 2" "--tp 2 --sp" "--dp 2" "bert"; do
		model=models/gpt2.mgl data="$tmp/t.bin" opts="$job --steps 3 --batch 2"
		[ "$job" = bert ] && model=models/bert.mgl data="$tmp/bert.bin" opts="--tp 2 --steps 4 --batch 4"
		for il in "" --interleave; do
			# shellcheck disable=SC2086
			"$mgl" train $model --preset tiny --data "$data" --accum 2 $opts $il --backend cpu \
				--log "$tmp/il$il.jsonl" >"$tmp/il.out" 2>&1 || { cat "$tmp/il.out"; return 1; }
		done
		echo "$job:" && same_losses "$tmp/il.jsonl" "$tmp/il--interleave.jsonl" || return 1
		grep -q '"loss"' "$tmp/il.jsonl" || return 1
	done
	# BERT's sentence-order accuracy: each micro-batch's logits against its own targets
	for il in "" --interleave; do grep -o '"sop_acc": [0-9.]*' "$tmp/il$il.jsonl" >"$tmp/sop$il"; done
	cat "$tmp/sop--interleave"
	[ "$(wc -l <"$tmp/sop")" -ge 3 ] && cmp "$tmp/sop" "$tmp/sop--interleave" || return 1
	for il in "" --interleave; do
		"$mgl" bench models/gpt2.mgl --preset tiny --tp 2 --batch 2 --accum 2 $il --steps 1 --warmup 1 --backend cpu \
			--json >"$tmp/ilb$il.json" 2>/dev/null || return 1
	done
	cat "$tmp/ilb.json" "$tmp/ilb--interleave.json"
	python3 -c 'import json, sys
a, b = (json.load(open(f)) for f in sys.argv[1:])
sys.exit(not (a["interleave"] is False and b["interleave"] is True and a["accum"] == b["accum"] == 2
              and b["mem_bytes"] > a["mem_bytes"] and a["B"] == b["B"] == 4))' "$tmp/ilb.json" "$tmp/ilb--interleave.json"
}
check "--interleave: the losses of --accum 2 at tp 2, sp, dp 2 and for BERT, and both micro-batches' memory" interleave
expect 2 '--interleave runs two micro-batches at a time: --accum must be even, not 3' -- \
	train models/gpt2.mgl --preset tiny --data "$tmp/t.bin" --steps 1 --batch 2 --accum 3 --interleave --backend cpu
expect 2 '--accum must be even, not 1' -- bench models/gpt2.mgl --preset tiny --steps 1 --batch 2 --interleave --backend cpu
summary cli_train
