#!/bin/sh
# tests/demo_check.sh — runs the demo (examples/demo.sh) and checks what it promises: it
# finishes within the time limit, the loss falls, the final validation loss is well under
# that of predicting byte frequencies (1.1 nats a byte: the demo's 1,440 steps reach about
# 1.3 here, its old 720 steps 1.02), a sample comes out, and the loss is plotted (an SVG
# with a point per logged step, which librsvg renders).
# usage: tests/demo_check.sh MGL [SECONDS]
mgl=${1:?usage: tests/demo_check.sh MGL [SECONDS]}
limit=${2:-180}
out=$(mktemp -d)
trap 'rm -rf "$out"' EXIT
start=$(date +%s)
MGL=$mgl OUT=$out examples/demo.sh >"$out/demo.log" 2>&1
status=$?
took=$(($(date +%s) - start))
cat "$out/demo.log"
summary=$(grep '^trained ' "$out/demo.log")
val=$(echo "$summary" | sed -n 's/.*validation loss \([0-9.]*\) .*/\1/p')
base=$(echo "$summary" | sed -n 's/.*token frequencies alone: \([0-9.]*\)).*/\1/p')
first=$(echo "$summary" | sed -n 's/.*: loss \([0-9.]*\) -> .*/\1/p')
last=$(echo "$summary" | sed -n 's/.*: loss [0-9.]* -> \([0-9.]*\),.*/\1/p')
sample=$(sed -n '/^== a sample/,/^== the loss/p' "$out/demo.log" | sed '1d;$d' | wc -c)
logged=$(wc -l <"$out/metrics.jsonl" 2>/dev/null)
plotted=$(sed -n 's/.*<polyline class="loss"[^>]* points="\([^"]*\)".*/\1/p' "$out/loss.svg" 2>/dev/null | wc -w)
pass=0 fail=0
ok() { if [ "$1" = 1 ]; then pass=$((pass + 1)); else fail=$((fail + 1)); echo "FAIL: $2"; fi; }
ok "$([ "$status" = 0 ] && echo 1)" "the demo exited $status"
ok "$([ "$took" -le "$limit" ] && echo 1)" "the demo took $took s (the limit is $limit s)"
ok "$(awk -v a="$first" -v b="$last" 'BEGIN { print (b < a - 2) }')" "the loss did not fall: $first -> $last"
ok "$(awk -v v="$val" -v b="$base" 'BEGIN { print (v != "" && v < b - 1.1) }')" \
	"validation loss $val is not 1.1 under the byte-frequency baseline $base"
ok "$([ "$sample" -gt 200 ] && echo 1)" "the sample is $sample bytes"
ok "$(grep -q "^open $out/loss.svg in a browser" "$out/demo.log" && echo 1)" "the demo does not say where its plot is"
ok "$([ -n "$logged" ] && [ "$plotted" = "$logged" ] && echo 1)" "the plot has $plotted points for $logged logged steps"
if command -v rsvg-convert >/dev/null; then
	ok "$(rsvg-convert "$out/loss.svg" -o "$out/loss.png" && echo 1)" "librsvg cannot render $out/loss.svg"
else
	echo "SKIP: rendering the plot (rsvg-convert is not installed: scripts/deps.sh rsvg-convert)"
fi
echo "demo: took $took s; validation loss $val vs $base for byte frequencies"
echo "demo_check: $pass passed, $fail failed"
[ "$fail" = 0 ]
