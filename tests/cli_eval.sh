#!/bin/sh
# tests/cli_eval.sh — mgl eval as a user runs it, on the small files in tests/data/eval/
# (wiki.test.tokens and lambada_test.jsonl in their published formats), each result checked
# against a path that shares none of eval's windowing or scoring:
#   - WikiText with windows that do not overlap against mgl train's validation loss on the
#     detokenized text (wiki.detok.txt, written by Megatron-LM's detokenizer in Python, is
#     tokenized by mgl tokenize: 705 bytes, 11 windows of 64 and one token);
#   - overlapping windows against non-overlapping ones on a model that sees one token
#     (bigram.mgl: the context cannot matter, so every stride must give the same sum,
#     which a target counted twice or missed would change);
#   - LAMBADA against mgl sample's greedy continuation of each context;
# and the bad inputs each must refuse with a clear message.
# usage: tests/cli_eval.sh MGL
mgl=${1:?usage: tests/cli_eval.sh MGL}
. "$(dirname "$0")/lib.sh"
d=tests/data/eval

# |a - b| <= tol
near() { awk -v a="$1" -v b="$2" -v t="$3" 'BEGIN { d = a - b; if (d < 0) d = -d; exit !(d <= t) }'; }
# the value of KEY in a one-line JSON object on stdin
field() { sed -n "s/.*\"$1\": \\([^,}]*\\).*/\\1/p"; }

# a model that has learnt three sentences, so that its greedy predictions are worth testing
for i in $(seq 200); do printf 'the cat sat on the mat. a dog ran to the park. my friend reads a book. '; done >"$tmp/rep.txt"
"$mgl" tokenize "$tmp/rep.txt" --bytes -o "$tmp/r.bin" >/dev/null 2>&1
expect 0 'trained 120 steps' -- train models/gpt2.mgl --preset tiny --data "$tmp/r.bin" --steps 120 --batch 8 --lr 3e-3 \
	--save "$tmp/ck"

# ---------------------------------------------------------------- WikiText

"$mgl" tokenize $d/wiki.detok.txt --bytes -o "$tmp/w.bin" >/dev/null 2>&1
expect 0 'wiki.test.tokens: 180 words -> 705 tokens \(bytes\), in 11 windows of 64 tokens, each 64 after the last' \
	-- eval "$tmp/ck" --wikitext $d/wiki.test.tokens --stride 64
# mgl train's evaluation after a step at learning rate 0: the mean loss of the same 704 targets
"$mgl" train models/gpt2.mgl --preset tiny --resume "$tmp/ck" --data "$tmp/r.bin" --val "$tmp/w.bin" --steps 121 \
	--lr 0 --min-lr 0 --eval-batches 11 --batch 1 >"$tmp/val" 2>&1
val=$(sed -n 's/.*validation loss \([0-9.]*\) .*/\1/p' "$tmp/val")
for job in "" "--tp 2 --batch 3" "--dp 2 --batch 2"; do
	# shellcheck disable=SC2086
	"$mgl" eval "$tmp/ck" --wikitext $d/wiki.test.tokens --stride 64 --json $job >"$tmp/e.json" 2>/dev/null
	loss=$(field loss <"$tmp/e.json")
	check "WikiText at stride 64 ($job): the loss ($loss) is mgl train's validation loss ($val)" near "$loss" "$val" 6e-5
done
check "the JSON counts: 704 predicted of 705 tokens, 180 words" \
	grep -q '"words": 180, "tokens": 705, "predicted": 704, "seq": 64, "stride": 64, "windows": 11,' "$tmp/e.json"
sum=$(field loss_sum <"$tmp/e.json")
check "perplexity = exp(sum / 704), adjusted = exp(sum / 179)" sh -c "grep -q \"\\\"perplexity\\\": $(awk -v s="$sum" \
	'BEGIN { printf "%.6g", exp(s / 704) }'), \\\"adjusted_perplexity\\\": $(awk -v s="$sum" 'BEGIN { printf "%.6g", exp(s / 179) }')}\" \"$tmp/e.json\""
# the default stride (32 for a window of 64) predicts from more context: a lower loss
"$mgl" eval "$tmp/ck" --wikitext $d/wiki.test.tokens --json >"$tmp/o.json" 2>/dev/null
check "the default stride is 32 (21 windows)" grep -q '"stride": 32, "windows": 21,' "$tmp/o.json"
check "overlapping windows give another loss than disjoint ones" sh -c "! grep -q '\"loss_sum\": $sum,' \"$tmp/o.json\""

# GPT-2's tokenizer, from the checkpoint: the tokens of the detokenized text as mgl tokenize
# makes them (which adds <|endoftext|> after the document)
"$mgl" tokenize $d/wiki.detok.txt --gpt2 tests/data/gpt2 -o "$tmp/g.bin" >"$tmp/g.out" 2>&1
ng=$(sed -n 's/.*-> \([0-9]*\) tokens (gpt2).*/\1/p' "$tmp/g.out")
expect 0 'trained 1 step' -- train models/gpt2.mgl --preset tiny --set vocab=50257 --gpt2 tests/data/gpt2 --data "$tmp/g.bin" \
	--steps 1 --batch 1 --save "$tmp/gk"
expect 0 "\"tokenizer\": \"gpt2\", \"words\": 180, \"tokens\": $((ng - 1)), " -- eval "$tmp/gk" --wikitext $d/wiki.test.tokens --json

# every stride counts each target once: the same sum where context does not matter
expect 0 'trained 60 steps' -- train $d/bigram.mgl --data "$tmp/r.bin" --steps 60 --lr 1e-2 --save "$tmp/bg"
"$mgl" eval "$tmp/bg" --wikitext $d/wiki.test.tokens --stride 16 --json >"$tmp/b.json" 2>/dev/null
ref=$(field loss_sum <"$tmp/b.json")
for job in "--stride 1" "--stride 5" "--stride 7 --tp 2 --batch 3" "--stride 8 --dp 2 --batch 5"; do
	# shellcheck disable=SC2086
	s=$("$mgl" eval "$tmp/bg" --wikitext $d/wiki.test.tokens --json $job 2>/dev/null | field loss_sum)
	check "a one-token model's summed loss at $job ($s) is that of disjoint windows ($ref)" near "$s" "$ref" 1e-3
done

# ---------------------------------------------------------------- LAMBADA

# lambada_test.jsonl's texts, as context|word (its lines 6 and 7 write theirs with escapes,
# white space around and other keys); an example is right when mgl sample's greedy
# continuation of the context is " word"
right=0
while IFS='|' read -r ctx word; do
	n=$(printf ' %s' "$word" | wc -c)
	got=$("$mgl" sample "$tmp/ck" --prompt "$ctx" --temperature 0 --tokens "$n" 2>/dev/null)
	[ "$got" = "$ctx $word" ] && right=$((right + 1))
done <<'EOF'
the cat sat on the|mat
a dog ran to the|park
my friend reads a|book
the cat sat on the|park
a dog ran to the|mat
my friend reads a|book
a dog ran to the|park
the cat sat on the|mats
EOF
check "some LAMBADA examples are right and some wrong ($right of 8), so the count tests something" \
	test "$right" -gt 0 -a "$right" -lt 8
for job in "" "--tp 2 --batch 3" "--dp 2 --batch 1"; do
	# shellcheck disable=SC2086
	expect 0 "lambada_test.jsonl: $right of 8 last words predicted whole \(bytes, greedy\)" \
		-- eval "$tmp/ck" --lambada $d/lambada_test.jsonl $job
done
expect 0 "\"examples\": 8, \"correct\": $right, " -- eval "$tmp/ck" --lambada $d/lambada_test.jsonl --json
# a context longer than the window loses its start: the same verdict as the text cut by hand
# to its last 65 bytes (the word and 61 bytes before it, which start inside a word)
long=$(for i in $(seq 3); do printf 'the cat sat on the mat. a dog ran to the park. my friend reads a book. '; done)
printf '{"text": "%sthe cat sat on the mat"}\n' "$long" >"$tmp/long.jsonl"
printf '{"text": "%s"}\n' "$(printf '%sthe cat sat on the mat' "$long" | tail -c 65)" >"$tmp/cut.jsonl"
"$mgl" eval "$tmp/ck" --lambada "$tmp/cut.jsonl" --json 2>/dev/null | field correct >"$tmp/cut"
check "the cut text starts inside a word" grep -q '^{"text": "g ran to the park' "$tmp/cut.jsonl"
expect 0 "\"examples\": 1, \"correct\": $(cat "$tmp/cut")," -- eval "$tmp/ck" --lambada "$tmp/long.jsonl" --json

# ---------------------------------------------------------------- bad input

expect 2 'give one of --wikitext FILE and --lambada FILE.jsonl' -- eval "$tmp/ck"
expect 2 'give one of --wikitext FILE and --lambada FILE.jsonl' -- eval "$tmp/ck" --wikitext a --lambada b
expect 2 '--stride goes with --wikitext' -- eval "$tmp/ck" --lambada $d/lambada_test.jsonl --stride 4
expect 2 '--stride 65 is more than the window of 64 tokens' -- eval "$tmp/ck" --wikitext $d/wiki.test.tokens --stride 65
expect 2 "mgl eval has no option '--prompt'" -- eval "$tmp/ck" --wikitext $d/wiki.test.tokens --prompt x
expect 1 "$tmp/none.tokens: cannot open" -- eval "$tmp/ck" --wikitext "$tmp/none.tokens"
expect 1 "$tmp/none.jsonl: cannot open" -- eval "$tmp/ck" --lambada "$tmp/none.jsonl"
expect 1 "$tmp/nothing: cannot open" -- eval "$tmp/nothing" --lambada $d/lambada_test.jsonl
: >"$tmp/empty"
expect 1 "$tmp/empty: no text: the file is empty or white space" -- eval "$tmp/ck" --wikitext "$tmp/empty"
expect 1 "$tmp/empty: no examples: the file is empty" -- eval "$tmp/ck" --lambada "$tmp/empty"
printf '\0\0' >"$tmp/nul.tokens"
expect 0 ' -> 2 tokens \(bytes\)' -- eval "$tmp/ck" --wikitext "$tmp/nul.tokens"
printf 'x' >"$tmp/one.tokens"
expect 1 '1 token: there is nothing to predict' -- eval "$tmp/ck" --wikitext "$tmp/one.tokens"
printf '{"text": "a b"}\n\n{"text": "a b",}\n' >"$tmp/bad.jsonl"
expect 1 "bad.jsonl:3:16: a ',' before the closing bracket" -- eval "$tmp/ck" --lambada "$tmp/bad.jsonl"
printf '{"text": "a b"}\n{"text": 3}\n' >"$tmp/bad.jsonl"
expect 1 'bad.jsonl:2:10: "text" must be a string' -- eval "$tmp/ck" --lambada "$tmp/bad.jsonl"
printf '{"txt": "a b"}\n' >"$tmp/bad.jsonl"
expect 1 'bad.jsonl:1:1: no "text"' -- eval "$tmp/ck" --lambada "$tmp/bad.jsonl"
printf '["a b"]\n' >"$tmp/bad.jsonl"
expect 1 "bad.jsonl:1:1: expected '\{'" -- eval "$tmp/ck" --lambada "$tmp/bad.jsonl"
printf '{"text": "a b"} {"text": "c d"}\n' >"$tmp/bad.jsonl"
expect 1 'bad.jsonl:1:17: text after the object' -- eval "$tmp/ck" --lambada "$tmp/bad.jsonl"
printf '{"text": "a b"}\n{"text": "word"}\n' >"$tmp/bad.jsonl"
expect 1 'bad.jsonl:2: the text is one word: there is nothing to predict it from' -- eval "$tmp/ck" --lambada "$tmp/bad.jsonl"
printf '{"text": " \\n "}\n' >"$tmp/bad.jsonl"
expect 1 'bad.jsonl:1: the text is empty or white space' -- eval "$tmp/ck" --lambada "$tmp/bad.jsonl"
printf '{"text": "a %s"}\n' "$(printf 'x%.0s' $(seq 70))" >"$tmp/bad.jsonl"
expect 1 'bad.jsonl:1: the last word is 71 tokens, more than a sequence of 64 can predict' \
	-- eval "$tmp/ck" --lambada "$tmp/bad.jsonl"
for i in $(seq 100); do echo "abc ABC 0123 cab"; done >"$tmp/low.txt"
"$mgl" tokenize "$tmp/low.txt" -o "$tmp/low.bin" >/dev/null 2>&1
expect 0 'trained 1 step in' -- train models/gpt2.mgl --preset tiny --set vocab=100 --data "$tmp/low.bin" --steps 1 \
	--batch 1 --save "$tmp/small"
printf '{"text": "a \\u00e9"}\n' >"$tmp/bad.jsonl"
expect 1 "example 1's token 3 \(id 195\) is beyond the model's vocabulary of 100" \
	-- eval "$tmp/small" --lambada "$tmp/bad.jsonl"

summary cli_eval
