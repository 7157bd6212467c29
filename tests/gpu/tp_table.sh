#!/bin/bash
# tests/gpu/tp_table.sh MGL OUT — issue 8's table: the first three training losses of
# GPT-2 at tp 1 and tp 2 on the cuda backend's default path (fused chains, GEMM
# epilogues, CUDA graphs), batch 4, dropout off, on GPT-2 tokens of this repository's
# text; each row twice, since an answer that moves between runs is a race. Prints one
# row per case with the worst relative difference of tp 2 against tp 1; exits 1 if any
# is over 3e-4 or a run's losses differ between its two runs.
set -u
mgl=${1:?usage: tests/gpu/tp_table.sh MGL OUT} out=${2:?}
mkdir -p "$out"
cat README.md docs/*.md models/*.mgl compiler/*.c > "$out/text.txt"
"$mgl" tokenize "$out/text.txt" --gpt2 tests/data/gpt2 -o "$out/g.bin" >/dev/null || exit 1
cases=("tiny|--preset tiny --set vocab=50257"
       "tiny seq 1024|--preset tiny --set vocab=50257,seq=1024 --seq 1024"
       "124m|--preset 124m --set p_drop=0 --seq 1024"
       "124m 2 layers|--preset 124m --set p_drop=0,layers=2 --seq 1024"
       "355m|--preset 355m --set p_drop=0 --seq 1024"
       "355m seq 256|--preset 355m --set p_drop=0 --seq 256")
losses() { sed 's/.*"loss": \([0-9.]*\).*/\1/' "$1" | head -3 | paste -sd' '; }
bad=0
printf '| %-14s | %-29s | %-29s | %-9s |\n' run "tp 1 (run 1; run 2)" "tp 2 (run 1; run 2)" worst
for c in "${cases[@]}"; do
	name=${c%%|*} args=${c#*|} tag=$(echo "$name" | tr ' ' _)
	for tp in 1 2; do
		for run in 1 2; do
			# shellcheck disable=SC2086
			"$mgl" train models/gpt2.mgl $args --data "$out/g.bin" --steps 3 --batch 4 --tp $tp --backend cuda \
				--log "$out/${tag}_tp${tp}_$run.jsonl" >"$out/${tag}_tp${tp}_$run.txt" 2>&1 ||
				{ echo "FAIL: $name tp $tp run $run:"; tail -3 "$out/${tag}_tp${tp}_$run.txt"; bad=1; }
		done
	done
	a1=$(losses "$out/${tag}_tp1_1.jsonl") a2=$(losses "$out/${tag}_tp1_2.jsonl")
	b1=$(losses "$out/${tag}_tp2_1.jsonl") b2=$(losses "$out/${tag}_tp2_2.jsonl")
	worst=$(echo "$a1 $a2 $b1 $b2" | awk '{ w = 0; for (i = 1; i <= 3; i++) for (j = 0; j < 4; j++) {
		d = ($(i + 3 * j) - $i) / $i; if (d < 0) d = -d; if (d > w) w = d } printf "%.2e", w }')
	ok=$(awk -v w="$worst" 'BEGIN { print (w <= 3e-4) }')
	[ "$ok" = 1 ] || bad=1
	printf '| %-14s | %-29s | %-29s | %-9s |\n' "$name" "${a1%% *}; ${a2%% *}" "${b1%% *}; ${b2%% *}" "$worst"
	echo "  all three: tp1 [$a1] [$a2] tp2 [$b1] [$b2]" >>"$out/table_detail.txt"
done
exit $bad
