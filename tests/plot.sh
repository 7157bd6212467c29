#!/bin/sh
# tests/plot.sh — `mgl plot` of the log `mgl train --log` writes: the SVG renders (librsvg's
# rsvg-convert), holds one point per logged step in step order, and the curves draw
# pixels; a log that is not one is refused with its file and line.
# usage: tests/plot.sh MGL
mgl=${1:?usage: tests/plot.sh MGL}
. "$(dirname "$0")/lib.sh"

# points SVG CLASS: the x,y pairs of the polyline of that class, one a line
points() {
	sed -n "s/.*<polyline class=\"$2\"[^>]* points=\"\([^\"]*\)\".*/\1/p" "$1" | tr ' ' '\n'
}
# steps_drawn SVG CLASS N: the polyline has N points with x increasing
steps_drawn() {
	points "$1" "$2" | awk -F, -v want="$3" '
		NR > 1 && $1 <= x { print "x goes back at point " NR ": " x " then " $1; bad = 1 }
		{ x = $1 } END { if (NR != want) { print NR " points, not " want; bad = 1 }; exit bad }'
}
# renders SVG: rsvg-convert draws it as PNG
renders() {
	command -v rsvg-convert >/dev/null || { echo "rsvg-convert is not installed (scripts/deps.sh rsvg-convert)"; return 1; }
	rsvg-convert "$1" -o "${1%.svg}.png" && [ -s "${1%.svg}.png" ]
}
# draws SVG CLASS: the PNG changes when that polyline's points are taken out, so the curve
# drew pixels
draws() {
	sed "s/\(<polyline class=\"$2\"[^>]* points=\"\)[^\"]*\"/\1\"/" "$1" >"$tmp/without.svg"
	! cmp -s "$1" "$tmp/without.svg" || { echo "no polyline of class $2"; return 1; }
	rsvg-convert "$1" -o "$tmp/with.png" && rsvg-convert "$tmp/without.svg" -o "$tmp/without.png" &&
		! cmp -s "$tmp/with.png" "$tmp/without.png"
}

# a real log: 12 steps, evaluated every 4
for i in 1 2 3; do cat README.md docs/language.md; done >"$tmp/text.txt"
"$mgl" tokenize "$tmp/text.txt" -o "$tmp/t.bin" --bytes --val-fraction 0.1 >/dev/null
"$mgl" train models/gpt2.mgl --preset tiny --data "$tmp/t.bin" --val "$tmp/t.val.bin" --steps 12 --batch 2 \
	--eval-every 4 --eval-batches 2 --log "$tmp/log.jsonl" >/dev/null 2>&1
check 'the training log has 12 lines'                test "$(wc -l <"$tmp/log.jsonl")" = 12
expect 0 'loss.svg: the loss at 12 steps, the validation loss at 3, the learning rate$' \
	-- plot "$tmp/log.jsonl" -o "$tmp/loss.svg"
check 'the plot renders with rsvg-convert'           renders "$tmp/loss.svg"
check 'the training loss: a point per step, in order' steps_drawn "$tmp/loss.svg" loss 12
check 'the validation loss: a point per evaluation'  steps_drawn "$tmp/loss.svg" val_loss 3
check 'the learning rate: a point per step'          steps_drawn "$tmp/loss.svg" lr 12
check 'the training loss curve draws pixels'         draws "$tmp/loss.svg" loss
check 'the learning rate curve draws pixels'         draws "$tmp/loss.svg" lr
for text in '>training loss<' '>validation loss<' '>learning rate<' '>step<' '>loss (nats per token)<' \
	"<title>mgl train: $tmp/log.jsonl</title>" '>12<' '>0<'; do
	check "the plot has the text $text"              grep -q "$text" "$tmp/loss.svg"
done
check 'no temporary file is left'                    test ! -e "$tmp/loss.svg.tmp"
expect 0 '^<\?xml version="1.0"'                     -- plot "$tmp/log.jsonl"

# a resumed run appends to the log, repeating steps after its checkpoint: the later win
{ head -n 8 "$tmp/log.jsonl"; sed -n '6,12p' "$tmp/log.jsonl" | sed 's/"loss": [0-9.]*/"loss": 9.5/'; } >"$tmp/resumed.jsonl"
expect 0 'the loss at 12 steps'                      -- plot "$tmp/resumed.jsonl" -o "$tmp/resumed.svg"
check 'a resumed log: 12 points, in order'           steps_drawn "$tmp/resumed.svg" loss 12
# steps 6 to 12 of the later run all have loss 9.5: one height, which none of 1 to 5 has
later_wins() {
	y=$(points "$tmp/resumed.svg" loss | tail -n 7 | cut -d, -f2 | sort -u)
	[ "$(echo "$y" | wc -l)" = 1 ] && ! points "$tmp/resumed.svg" loss | head -n 5 | grep -q ",$y\$"
}
check 'a resumed log: the repeated steps are the later run' later_wins
# one step, no validation, no learning rate: still a drawing
echo '{"step": 1, "loss": 5.5}' >"$tmp/one.jsonl"
expect 0 'one.svg: the loss at 1 step$'              -- plot "$tmp/one.jsonl" -o "$tmp/one.svg"
check 'a one-step plot renders'                      renders "$tmp/one.svg"
# non-finite numbers as C and Python write them (a grad_norm may be one) are read
echo '{"step": 1, "loss": 5.5, "grad_norm": inf, "x": NaN, "s": "\u00e9", "t": true, "n": null}' >"$tmp/inf.jsonl"
expect 0 'the loss at 1 step'                        -- plot "$tmp/inf.jsonl" -o "$tmp/inf.svg"

# what is not a log: file, line (and column) and what is wrong; never a half-written plot
expect 1 "README.md:1:1: expected '\{': not a line of \`mgl train --log\`" -- plot README.md -o "$tmp/bad.svg"
check 'a refused log leaves no plot'                 test ! -e "$tmp/bad.svg" -a ! -e "$tmp/bad.svg.tmp"
{ head -n 2 "$tmp/log.jsonl"; head -c 24 "$tmp/log.jsonl"; } >"$tmp/cut.jsonl"
expect 1 'cut.jsonl:3:25: the object is not closed: a line cut short\?' -- plot "$tmp/cut.jsonl"
printf '{"step": 1, "loss": 1, ' >"$tmp/comma.jsonl"
expect 1 'comma.jsonl:1:24: the object is not closed: a line cut short\?' -- plot "$tmp/comma.jsonl"
printf '{"step": 1, "loss": 1, 2}' >"$tmp/key.jsonl"
expect 1 'key.jsonl:1:24: expected a key in double quotes' -- plot "$tmp/key.jsonl"
printf '{"step": 1, "loss": 1,}' >"$tmp/trailing.jsonl"
expect 1 "trailing.jsonl:1:23: a ',' before the closing bracket" -- plot "$tmp/trailing.jsonl"
printf '{"step": 1, "loss": 1.e5}' >"$tmp/dot.jsonl"
expect 1 'dot.jsonl:1:23: a number ends early' -- plot "$tmp/dot.jsonl"
{ head -n 2 "$tmp/log.jsonl"; echo '{"step": 3, "lr": 0.1}'; } >"$tmp/noloss.jsonl"
expect 1 'noloss.jsonl:3: no "loss" that is a finite number' -- plot "$tmp/noloss.jsonl"
echo '{"step": 2.5, "loss": 1}' >"$tmp/half.jsonl"
expect 1 'half.jsonl:1: no "step" that is a whole number from 1' -- plot "$tmp/half.jsonl"
echo '{"step": 1, "loss": 1} x' >"$tmp/after.jsonl"
expect 1 'after.jsonl:1:24: text after the object' -- plot "$tmp/after.jsonl"
echo '{"step": 1, "loss": {"a": 1}}' >"$tmp/nested.jsonl"
expect 1 'nested.jsonl:1:21: a nested object or array' -- plot "$tmp/nested.jsonl"
echo '{"step": 1, "loss": 01}' >"$tmp/zero.jsonl"
expect 1 "zero.jsonl:1:21: a number with a leading zero" -- plot "$tmp/zero.jsonl"
printf '{"step": 1, "lo\377ss": 1}\n' >"$tmp/utf8.jsonl"
expect 1 'utf8.jsonl:1:16: a string is not valid UTF-8' -- plot "$tmp/utf8.jsonl"
: >"$tmp/empty.jsonl"
expect 1 'empty.jsonl has no steps' -- plot "$tmp/empty.jsonl"
head -c 5000 /dev/zero | tr '\0' ' ' >"$tmp/long.jsonl"
expect 1 'long.jsonl:1: a line longer than 4,096 bytes' -- plot "$tmp/long.jsonl"
expect 1 "$tmp/missing.jsonl: cannot open" -- plot "$tmp/missing.jsonl"
expect 1 "$tmp: cannot read: Is a directory" -- plot "$tmp"
head -c 3000 /dev/urandom >"$tmp/random.jsonl"
expect 1 'random.jsonl:[0-9]+' -- plot "$tmp/random.jsonl"
expect 2 "unexpected argument" -- plot "$tmp/log.jsonl" "$tmp/log.jsonl"

summary plot
