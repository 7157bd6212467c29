#!/bin/sh
# tests/cli.sh — the command line as a user meets it: help, version, exit statuses, mistyped
# options, and the inputs that are not model text at all (missing, empty, huge, binary, a
# directory); then compile, explain and dot, whose graphs must render with Graphviz's dot,
# and whose -o refuses what is not a file to replace (a directory, a device);
# and what a new user meets first: that `make deps-test` installs what the tests run, and
# that the docs link only to what the repository holds.
# usage: tests/cli.sh MGL
mgl=${1:?usage: tests/cli.sh MGL}
. "$(dirname "$0")/lib.sh"

expect 0 '^mgl [0-9]+\.[0-9]+\.[0-9]+$'       -- --version
expect 0 'usage: mgl COMMAND'                  -- --help
expect 0 'check +check a model file'           -- help
expect 2 'usage: mgl COMMAND'                  --
expect 0 'usage: mgl check FILE'               -- check --help
expect 0 'usage: mgl check FILE'               -- help check
expect 2 "unknown command 'chek'"              -- chek models/gpt2.mgl
expect 2 "did you mean 'mgl check'"            -- chek models/gpt2.mgl
expect 2 "unknown option '--presett'"          -- check models/gpt2.mgl --presett 124m
# a mistyped option gets the closest one the command takes; another command's, who takes it
expect 2 "hint: did you mean '--preset'\?"    -- check models/gpt2.mgl --presett 124m
expect 2 "hint: did you mean '--steps'\?"     -- train models/gpt2.mgl --step 3
expect 2 "hint: did you mean '--bytes'\?"     -- tokenize README.md --byte -o "$tmp/x.bin"
expect 2 "hint: see 'mgl train --help'"       -- train models/gpt2.mgl --learning-rate 3
expect 2 "mgl check has no option '--tp'"      -- check models/gpt2.mgl --tp 2
expect 2 "it is an option of mgl compile, explain, dot, train, eval and bench" -- check models/gpt2.mgl --tp 2
# limits are integers with separators, never 1.67772e+07
expect 2 "--tokens takes a whole number from 1 to 16,777,216, not '0'" -- sample x --tokens 0
expect 2 "--clip takes a number from 0 to 1,000,000, not '-1'" -- train models/gpt2.mgl --clip -1
expect 2 "option '--preset' needs a value"     -- check models/gpt2.mgl --preset
expect 2 'no model file given'                 -- check
# the argument missing is named for what the command reads
expect 2 'no model file or plan given'         -- explain
expect 2 'no log file given'                   -- plot
expect 2 'no checkpoint given'                 -- export -o "$tmp/x"
expect 2 'no checkpoint given'                 -- sample
expect 2 "unexpected argument 'y': give one file" -- kernels x y
expect 2 "unexpected argument 'extra'"         -- check models/gpt2.mgl extra
expect 2 "--dump takes ast or graph"           -- check models/gpt2.mgl --dump=tokens
expect 0 'parameters  124,439,808'             -- check models/gpt2.mgl --preset 124m
expect 0 'parameters  354,823,168'             -- check models/gpt2.mgl --preset=355m
expect 0 'parameters  774,030,080'             -- check models/gpt2.mgl --preset 774m
expect 0 'parameters  1,557,611,200'           -- check models/gpt2.mgl --preset 1.5b
expect 0 'parameters  953,223,168'             -- check models/llama.mgl --preset 1b
expect 0 'layers\.\*\.mlp\.fc\.weight +\[3072, 768\] +column +12 +28,311,552' -- check models/gpt2.mgl
expect 0 'wte +\[50257, 768\] +row'           -- check models/gpt2.mgl
expect 0 'hidden      1536'                    -- check models/gpt2.mgl --preset 1.2b
expect 0 'layers      2$'                      -- check models/bert.mgl --preset tiny
# --set may be repeated; later values win, and may refer to other keys
expect 0 'layers      3$'                      -- check models/gpt2.mgl --preset tiny --set layers=2 --set layers=3
expect 0 'hidden      128$'                    -- check models/gpt2.mgl --set d=heads*8,heads=16
expect 2 "did you mean '355m'"                 -- check models/gpt2.mgl --preset 355M
expect 2 'the presets are: 124m, 355m'         -- check models/gpt2.mgl --preset nope
expect 2 "^--set:1:1: error: --set sets 'dd'"  -- check models/gpt2.mgl --set dd=3
expect 2 '^--set:1:3: error: expected an expression' -- check models/gpt2.mgl --set d=

# files that are not models
expect 1 "$tmp/missing.mgl: cannot open: No such file or directory" -- check "$tmp/missing.mgl"
: >"$tmp/empty.mgl"
expect 1 'empty.mgl:1:1: error: the file is empty' -- check "$tmp/empty.mgl"
head -c 9000000 /dev/zero | tr '\0' '#' >"$tmp/huge.mgl"
expect 1 'huge.mgl: too large: mgl reads model files of at most 8 MiB' -- check "$tmp/huge.mgl"
expect 1 "$tmp: cannot read: Is a directory" -- check "$tmp"
head -c 4096 /dev/urandom >"$tmp/random.mgl"
printf '\177ELF\002\001\001' >"$tmp/binary.mgl"
expect 1 'binary.mgl:1:1: error: unexpected byte 0x7f' -- check "$tmp/binary.mgl"
# whatever random bytes hold, the answer is a diagnostic with a location, never a crash
expect 1 'random.mgl:[0-9]+:[0-9]+: error: ' -- check "$tmp/random.mgl"

# compile: -o writes the plan (renamed into place, so a failed compile leaves none)
compile_o() {
	"$mgl" compile models/gpt2.mgl --preset tiny --tp 2 -o "$tmp/gpt2.plan" || return 1
	[ "$(head -n 1 "$tmp/gpt2.plan")" = "mgl-plan 2" ] || { echo "first line: $(head -n 1 "$tmp/gpt2.plan")"; return 1; }
	[ "$(tail -n 1 "$tmp/gpt2.plan")" = "end" ] || { echo "last line: $(tail -n 1 "$tmp/gpt2.plan")"; return 1; }
	grep -qx 'tp 2' "$tmp/gpt2.plan" || return 1
	! ls -A "$tmp" | grep -v '^gpt2\.plan$' | grep gpt2     # no temporary file left behind
}
check 'compile -o writes a whole plan, from "mgl-plan 2" to "end"' compile_o
expect 0 '^mgl-plan 2$'                        -- compile models/gpt2.mgl --preset tiny --tp 2 --dump=partition
expect 0 '^s 0 fwd embedding '                 -- compile models/gpt2.mgl --preset tiny --tp 2 --dump=partition
expect 2 "--dump takes ast, graph, autodiff, partition, recompute, adamw, hfuse, schedule, fuse or memplan, not 'nope'" -- compile models/gpt2.mgl --preset tiny --dump=nope
expect 2 "--tp takes a whole number from 1 to 4,096, not '0'" -- compile models/gpt2.mgl --tp 0
expect 2 "--tp takes a whole number from 1 to 4,096, not 'x'" -- compile models/gpt2.mgl --tp x
expect 1 'gpt2.mgl:[0-9]+:[0-9]+: error: 12 heads cannot be split over --tp 8' -- compile models/gpt2.mgl --tp 8 -o "$tmp/tp8.plan"
expect 1 'hint: --tp must divide 12: 1, 2, 3, 4, 6, 12$' -- compile models/gpt2.mgl --tp 8 -o "$tmp/tp8.plan"
check 'a failed compile -o leaves no plan, whole or part' sh -c '! ls -A "$1" | grep tp8' - "$tmp"
# a file that cannot be written is named as given, never as mgl's temporary file
expect 1 "$tmp/nope/g.plan: cannot create: No such file" -- compile models/gpt2.mgl --preset tiny -o "$tmp/nope/g.plan"
expect 1 "$tmp/nope/g.dot: cannot create: No such file" -- dot models/gpt2.mgl --preset tiny -o "$tmp/nope/g.dot"
# a directory (or a device) where the file should go is refused, not renamed over
mkdir "$tmp/adir"
expect 1 "$tmp/adir: cannot write: it is a directory" -- compile models/gpt2.mgl --preset tiny -o "$tmp/adir"
check 'a refused -o leaves no temporary file' test ! -e "$tmp/adir.tmp"
# a device is written into, never renamed over (as root that replaced /dev/null itself);
# a device node of the test's own, so that a fault cannot reach the machine's
into_device() {
	mknod "$tmp/null" c 1 3 2>/dev/null || { echo "SKIP: -o a device node (mknod needs root)"; return 0; }
	"$mgl" compile models/gpt2.mgl --preset tiny -o "$tmp/null" && [ -c "$tmp/null" ] && [ ! -e "$tmp/null.tmp" ]
}
check 'compile -o a device writes into it and leaves it a device' into_device
# a symbolic link is followed: the file it names is replaced and the link stays (-o
# /dev/stdout with standard output in a file is such a link; renaming over it replaced
# /dev/stdout); a link of the test's own
through_link() {
	echo old >"$tmp/real" && ln -s "$tmp/real" "$tmp/link" &&
	"$mgl" compile models/gpt2.mgl --preset tiny -o "$tmp/link" && [ -L "$tmp/link" ] && head -1 "$tmp/real" | grep -qx 'mgl-plan 2'
}
check 'compile -o a symbolic link replaces the file it names and keeps the link' through_link
expect 2 "--seq 2048 is longer than the model's sequence" -- compile models/gpt2.mgl --seq 2048

# explain: collectives per layer; with --sp the all-reduces become all-gathers and
# reduce-scatters
expect 0 'a layer, fwd    2 '                  -- explain models/gpt2.mgl --preset tiny --tp 2
expect 0 'a layer, fwd    0  +2  +2$'          -- explain models/gpt2.mgl --preset tiny --tp 2 --sp
expect 0 '"collectives_per_layer": \{"forward": \{"all_reduce": 2, "all_gather": 0, "reduce_scatter": 0\}' -- explain models/gpt2.mgl --preset tiny --tp 2 --json
expect 0 '"collectives_per_layer": \{"forward": \{"all_reduce": 0, "all_gather": 2, "reduce_scatter": 2\}' -- explain models/gpt2.mgl --preset tiny --tp 2 --sp --json
expect 0 '^\{"model": "gpt2", "preset": "tiny", "tp": 2, ' -- explain models/gpt2.mgl --preset tiny --tp 2 --json
# the same separators as check, and FLOPs in SI units (never 1.17e+12)
expect 0 'parameters +62,708,736 on this rank \(model: 124,439,808; vocabulary padded 50,257 -> 50,432, 175 rows added\)' \
	-- explain models/gpt2.mgl --tp 2
expect 0 'flops +1.17 TFLOP forward \+ 2.34 TFLOP backward per micro-batch' -- explain models/gpt2.mgl --tp 2
# the collectives' time by the alpha-beta model: 629,243,908 bytes and 53 collectives at tp 2
# (124M, batch 8) are 2.748 ms at 229 GB/s and 0.530 ms of 10 us each; 6.292 + 0.265 at 100
# GB/s and 5 us; the JSON's figures agree with the count
expect 0 'sent +600.09 MiB per micro-batch: 3.278 ms at 229 GB/s and 10 us a collective \(53 of them' \
	-- explain models/gpt2.mgl --tp 2
expect 0 'sent +600.09 MiB per micro-batch: 6.557 ms at 100 GB/s and 5 us a collective' \
	-- explain models/gpt2.mgl --tp 2 --link-gbs 100 --link-us 5
expect 0 '"bytes_communicated_per_step": 629243908, "collectives_per_step": 53, "comm_seconds": 0.00327778999, "link_gbs": 229, "link_us": 10,' \
	-- explain models/gpt2.mgl --tp 2 --json
expect 0 'sent +0 B per micro-batch$'          -- explain models/gpt2.mgl --preset tiny
expect 2 "--link-gbs is the link's rate: more than 0, not 0" -- explain models/gpt2.mgl --tp 2 --link-gbs 0
expect 2 "mgl train has no option '--link-us'" -- train models/gpt2.mgl --link-us 3
expect 0 'dp gradients +1 bucketed all-reduce, overlapped' -- explain models/gpt2.mgl --preset tiny --dp 2
expect 0 'dp gradients +13 bucketed all-reduces, overlapped' -- explain models/gpt2.mgl --dp 2
# ZeRO-1 and recomputation: the memory with and without them; the plan says so
expect 0 'dp gradients +13 bucketed reduce-scatters, overlapped .*; the weights all-gathered after AdamW' -- explain models/gpt2.mgl --dp 2 --zero 1
expect 0 'ZeRO-1 +optimizer 474.84 MiB a rank, 949.68 MiB without: AdamW.s moments sharded over dp 2' -- explain models/gpt2.mgl --dp 2 --zero 1
expect 0 'recompute +activations 1.74 GiB, 3.86 GiB without; a layer keeps 12.00 MiB, 192.38 MiB without' -- explain models/gpt2.mgl --recompute full
expect 0 'recompute +activations 3.02 GiB, 3.86 GiB without; a layer keeps 120.38 MiB, 192.38 MiB without' -- explain models/gpt2.mgl --recompute selective
expect 0 '"zero": 1, "recompute": "full", "without": \{"optimizer": 995807232, ' -- explain models/gpt2.mgl --dp 2 --zero 1 --recompute full --json
expect 2 '--zero 1 shards the optimizer over the data-parallel ranks: it needs --dp 2 or more' -- explain models/gpt2.mgl --zero 1
expect 2 "--zero takes 0 or 1 \(ZeRO stage 1: the sharded optimizer\), not '2'" -- train models/gpt2.mgl --dp 2 --zero 2 --data x.bin
expect 2 "--recompute takes none, selective or full, not 'some'" -- compile models/gpt2.mgl --recompute some
expect 0 '^s [0-9]+ bwd layernorm ' -- compile models/gpt2.mgl --preset tiny --recompute full --dump=recompute
expect 0 '^zero 1$' -- compile models/gpt2.mgl --preset tiny --dp 2 --zero 1 -o "$tmp/zero.plan" --dump=memplan
# a linear's weight gradient in bf16 at dp 1 in a bf16 plan (compiler/adamw.c), f32 under MGL_F32_GRADS, at dp 2 or in f32
expect 0 '^v [0-9]+ grad grad:layers.0.attention.q.weight bf16 ' -- compile models/gpt2.mgl --preset tiny --dump=adamw
MGL_F32_GRADS=1 expect 0 '^v [0-9]+ grad grad:layers.0.attention.q.weight f32 ' -- compile models/gpt2.mgl --preset tiny --dump=adamw
expect 0 '^v [0-9]+ grad grad:layers.0.attention.q.weight f32 ' -- compile models/gpt2.mgl --preset tiny --dp 2 --dump=adamw
expect 0 '^v [0-9]+ grad grad:layers.0.attention.q.weight f32 ' -- compile models/gpt2.mgl --preset tiny --dtype f32 --dump=adamw
expect 0 '^v [0-9]+ grad grad:layers.0.attention.q.weight f32 ' -- compile models/gpt2.mgl --preset tiny --accum 2 --dump=adamw
expect 0 'gradients 158.21 MiB' -- explain models/gpt2.mgl --tp 2
expect 0 'gradients 239.21 MiB' -- explain models/gpt2.mgl --tp 2 --accum 2
check "compile --zero 1 --recompute selective -o writes the plan" \
	"$mgl" compile models/gpt2.mgl --preset tiny --dp 2 --zero 1 --recompute selective -o "$tmp/zero.plan"
expect 0 'tp 1, dp 2, ZeRO-1, recompute selective, batch' -- explain "$tmp/zero.plan"
expect 2 '--accum compiles a model, but .* is a plan' -- explain "$tmp/zero.plan" --accum 2
expect 2 '--recompute compiles a model, but .*zero.plan is a plan' -- explain "$tmp/zero.plan" --recompute full

# dot: of a model and of a plan file; what it writes must render
expect 0 '^digraph plan \{$'                   -- dot models/gpt2.mgl --preset tiny --tp 2
expect 0 '^digraph plan \{$'                   -- dot "$tmp/gpt2.plan"
# render NAME MGL-DOT-ARGS...: mgl dot ARGS -o NAME.dot, then dot -Tsvg must draw it
render() {
	name=$1
	shift
	command -v dot >/dev/null || { echo "Graphviz's dot is not installed (scripts/deps.sh dot)"; return 1; }
	"$mgl" dot "$@" -o "$tmp/$name.dot" || return 1
	dot -Tsvg "$tmp/$name.dot" -o "$tmp/$name.svg" || return 1
	grep -q '<svg' "$tmp/$name.svg" || { echo "no <svg in $tmp/$name.svg"; return 1; }
}
check 'dot of a model renders with dot -Tsvg'        render model models/gpt2.mgl --preset tiny --tp 2
check 'dot of a plan file renders with dot -Tsvg'    render plan "$tmp/gpt2.plan"
check 'dot --backward of a BERT plan renders'        render bert models/bert.mgl --preset tiny --tp 2 --sp --backward
check 'dot of a plan file and of its model agree'    cmp "$tmp/model.dot" "$tmp/plan.dot"
# smaller A B: file A is not empty and is smaller than file B
smaller() {
	a=$(wc -c <"$1") b=$(wc -c <"$2")
	[ "$a" -gt 0 ] && [ "$a" -lt "$b" ] || { echo "$1: $a bytes, $2: $b bytes"; return 1; }
}
check 'dot --layers all renders'                     render all "$tmp/gpt2.plan" --layers all
check 'dot draws less than --layers all'             smaller "$tmp/plan.dot" "$tmp/all.dot"
check 'dot --layers 1 renders'                       render layers1 "$tmp/gpt2.plan" --layers 1
check 'dot --layers 1 is the default'                cmp "$tmp/plan.dot" "$tmp/layers1.dot"
expect 2 "--layers takes a whole number from 1 to 1,048,576 or 'all', not 'some'" -- dot "$tmp/gpt2.plan" --layers some
# connected FILE.dot: every node on an edge, and one piece (the folded layers take the
# edges across the cut): the nodes on no edge and the number of pieces otherwise
connected() {
	awk 'function top(x) { while (up[x] != x) x = up[x] = up[up[x]]; return x }
	/ -> / { if (!($1 in up)) up[$1] = $1; if (!($3 in up)) up[$3] = $3; up[top($1)] = top($3); next }
	/^ +[A-Za-z_][A-Za-z0-9_]* \[/ && $1 != "node" && $1 != "edge" { nodes[$1] = 1 }
	END { for (n in nodes) { if (!(n in up)) { lone = lone " " n; up[n] = n }; pieces[top(n)] = 1 }
	      k = 0; for (r in pieces) k++
	      if (k != 1 || lone != "") { print FILENAME ": " k " pieces; on no edge:" lone; exit 1 } }' "$1"
}
# svg_at_most PT FILE.svg: the drawing is at most PT points wide and high
svg_at_most() {
	size=$(grep -o '<svg width="[0-9]*pt" height="[0-9]*pt"' "$2" | tr -dc '0-9 ')
	set -- "$1" $size
	[ "$#" = 3 ] && [ "$2" -le "$1" ] && [ "$3" -le "$1" ] || { echo "the drawing is ${2}x$3 pt"; return 1; }
}
check 'dot of GPT-2 1.2b renders'                    render big models/gpt2.mgl --preset 1.2b --tp 2
check 'dot of GPT-2 1.2b fits in 4,000 x 4,000 pt'   svg_at_most 4000 "$tmp/big.svg"
check 'dot of GPT-2 1.2b is one piece'               connected "$tmp/big.dot"
check 'dot folds layers 1-39 into one node'          grep -q '^  folded_fwd \[label="layers 1-39\\n39 more like layer 0"' "$tmp/big.dot"
check 'dot forward-only has no backward step'        sh -c '! grep -Eq "_bwd|d_loss" "$1"' - "$tmp/big.dot"
check 'dot --layers all has no folded node'          sh -c '! grep -q folded "$1"' - "$tmp/all.dot"
check 'dot --layers all is one piece'                connected "$tmp/all.dot"
check 'dot --backward of a BERT plan is one piece'   connected "$tmp/bert.dot"
check 'dot --backward folds the backward layers'     grep -q '^  folded_bwd ' "$tmp/bert.dot"
check 'dot --layers 3 of 5 folds layers 3-4 (fwd, bwd)' sh -c '"$1" dot models/gpt2.mgl --preset tiny --set layers=5 \
	--tp 2 --sp --backward --layers 3 -o "$2" && awk "/folded/ && /layers 3-4/ { n++ } END { exit n != 2 }" "$2"' - \
	"$mgl" "$tmp/sp.dot"
check '... and is one piece'                        connected "$tmp/sp.dot"
# the legend: what each layout and each collective's colour means
for row in '>R<.*>replicated' '>S1<.*>split over the ranks along the last dimension' '>P<.*>partial sums' \
	'>M<.*>partial maxima' 'all_reduce<.*>a collective'; do
	check "the drawing's legend explains /$row/" sh -c 'tr -d "\n" <"$1" | grep -Eq "$2"' - "$tmp/big.svg" "$row"
done
# a damaged plan is refused with the file and the line, never drawn
head -c 20000 "$tmp/gpt2.plan" >"$tmp/cut.plan"
expect 1 "^mgl: error: $tmp/cut.plan:[0-9]+: "  -- dot "$tmp/cut.plan"
sed '$d' "$tmp/gpt2.plan" >"$tmp/noend.plan"
expect 1 "noend.plan:[0-9]+: the plan ends early \(truncated\?\)" -- dot "$tmp/noend.plan"

# a plan: explain reads it as dot does, with what the model compiled the same way costs;
# the options that compile are refused with one; check, compile and train name it a plan
explain_plan() {
	"$mgl" explain models/gpt2.mgl --preset tiny --tp 2 >"$tmp/model.txt" && "$mgl" explain "$tmp/gpt2.plan" >"$tmp/plan.txt" &&
		cmp "$tmp/model.txt" "$tmp/plan.txt" && grep -q 'gradients [1-9]' "$tmp/plan.txt"
}
check 'explain of a plan file and of its model agree' explain_plan
expect 0 '"tp": 2, "dp": 1'                    -- explain "$tmp/gpt2.plan" --json
expect 2 "--tp compiles a model, but $tmp/gpt2.plan is a plan, compiled already" -- dot "$tmp/gpt2.plan" --tp 4
expect 2 "--preset compiles a model, but $tmp/gpt2.plan is a plan" -- explain "$tmp/gpt2.plan" --preset wide
expect 2 "--dtype compiles a model, but"       -- explain "$tmp/gpt2.plan" --dtype f32
expect 1 "$tmp/gpt2.plan is a plan \(mgl compile writes them\), not a model file" -- check "$tmp/gpt2.plan"
expect 1 'hint: give the model file; mgl explain and mgl dot read plans too' -- compile "$tmp/gpt2.plan"
expect 1 "$tmp/gpt2.plan is a plan"            -- train "$tmp/gpt2.plan" --data "$tmp/x.bin"

# The usage lines people read: every command's --help says its exit status, and its usage
# line names every option its list describes; README's command block has every command,
# and it and the usage lines of docs/ name the options of --help's usage (a subset where
# they end in ...).
# opts: the options (-o, --name) in the text on stdin, one a line, sorted
opts() { grep -oE -- '(^|[[ |])--?[a-z][a-z0-9-]*' | sed 's/^[[ |]//' | sort -u; }
# forms_of CMD: the usage lines of mgl CMD --help, a form a line (continuations joined);
# usage_of CMD: all of them on one line
forms_of() {
	"$mgl" "$1" --help | sed -n '1,/^$/p' | sed 's/^usage: //' |
		awk '/^ *mgl / { if (l) print l; l = $0; next } /^ / { l = l $0 } END { if (l) print l }'
}
usage_of() { forms_of "$1" | tr '\n' ' '; }
help_agrees() {
	bad=0
	for c in $commands; do
		"$mgl" "$c" --help >"$tmp/help" || { echo "mgl $c --help failed"; bad=1; continue; }
		grep -q '^Exit status: ' "$tmp/help" || { echo "mgl $c --help: no 'Exit status:' line"; bad=1; }
		case $(usage_of "$c") in *' ... '*) continue ;; esac
		sed -n 's/^  \(--*[a-z][a-z0-9-]*\).*/\1/p' "$tmp/help" | sort -u >"$tmp/listed"
		usage_of "$c" | opts >"$tmp/usage"
		comm -23 "$tmp/listed" "$tmp/usage" | sed "s/^/mgl $c --help: its usage line lacks /" | grep . && bad=1
	done
	return $bad
}
commands=$("$mgl" --help | sed -n 's/^  \([a-z][a-z]*\)  .*/\1/p')
check "every --help has an exit status, and a usage line with every option it lists" help_agrees
# doc_usages: README's command block, and docs' usage lines ("mgl CMD FILE ..."), one a line
doc_usages() {
	awk '/^## Commands/ { on = 1 } on && /^```/ { if (inb) exit; inb = 1; next }
	     inb && /^mgl [a-z]+ [^-]/ { if (l) print l; l = $0; next } inb && /^ / && l { l = l $0; next }
	     inb { if (l) print l; l = "" } END { if (l) print l }' README.md
	awk '/^```/ { inb = !inb; if (l) print l; l = ""; next }
	     inb && /^mgl [a-z]+ [A-Z]/ { if (l) print l; l = $0; next } inb && /^ / && l { l = l $0; next }
	     { if (l) print l; l = "" }' docs/*.md
}
docs_agree() {
	bad=0
	doc_usages >"$tmp/usages"
	for c in $commands; do
		grep -q "^mgl $c" "$tmp/usages" || { echo "README's command block has no 'mgl $c' line"; bad=1; }
	done
	[ "$(wc -l <"$tmp/usages")" -ge 12 ] || { echo "only $(wc -l <"$tmp/usages") usage lines found"; cat "$tmp/usages"; return 1; }
	while IFS= read -r line; do
		c=$(echo "$line" | cut -d' ' -f2)
		echo "$line" | opts >"$tmp/doc"
		forms_of "$c" >"$tmp/forms"
		ok=
		while IFS= read -r form; do   # the line must name the options of one of the forms
			echo "$form" | opts >"$tmp/usage"
			extra=$(comm -23 "$tmp/doc" "$tmp/usage") missing=$(comm -13 "$tmp/doc" "$tmp/usage")
			case $line in *' ...' | *'[options]'*) missing= ;; esac
			[ -z "$extra$missing" ] && ok=1
		done <"$tmp/forms"
		[ -n "$ok" ] || { echo "'$line' names other options than mgl $c --help's usage:"; cat "$tmp/forms"; bad=1; }
	done <"$tmp/usages"
	return $bad
}
check "the docs' usage lines name the options of --help's" docs_agree

# the quick start installs what the tests run: on a machine without Graphviz (a PATH with
# no dot) and without root, `make deps-test` names the package to install
deps_without_dot() {
	mkdir -p "$tmp/bin"
	for t in re2c pkg-config cc; do ln -sf "$(command -v $t)" "$tmp/bin/$t"; done
	printf '#!/bin/sh\necho 1000\n' >"$tmp/bin/id" && chmod +x "$tmp/bin/id"
	make=$(command -v make)
	PATH="$tmp/bin" "$make" --no-print-directory -s deps-test >"$tmp/deps" 2>&1 && { echo "deps-test passed without dot"; return 1; }
	grep -q 'sudo apt-get install -y.* graphviz' "$tmp/deps" || { cat "$tmp/deps"; return 1; }
}
check 'make deps-test installs Graphviz (or says how) for the dot tests' deps_without_dot

# links_resolve: every relative link of README.md and docs/*.md names a file of the
# repository (not one beside it, as ../shared/DESIGN.md was), and every #anchor a heading
links_resolve() {
	root=$(pwd -P) bad=0
	for md in README.md docs/*.md; do
		dir=$(dirname "$md")
		for link in $(grep -o '\](\([^)#: ]*\)\(#[^) ]*\)\{0,1\})' "$md" | sed 's/^](//; s/)$//'); do
			file=${link%%#*} anchor=
			case $link in *'#'*) anchor=${link#*#} ;; esac
			target=$md
			[ -n "$file" ] && target=$dir/$file
			if [ ! -e "$target" ] || case $(realpath "$target") in "$root"/*) false ;; *) true ;; esac; then
				echo "$md: $link: no such file in the repository"; bad=1; continue
			fi
			[ -z "$anchor" ] || case $target in *.md) ;; *) continue ;; esac
			[ -z "$anchor" ] && continue
			sed -n 's/^#\{1,6\} //p' "$target" | tr 'A-Z' 'a-z' | sed 's/[^a-z0-9 _-]//g; s/ /-/g' |
				grep -qx -- "$anchor" || { echo "$md: $link: no heading for #$anchor"; bad=1; }
		done
	done
	return $bad
}
check 'the docs link only to files of the repository, and to headings that exist' links_resolve

# docs_models: every fenced block of README.md and docs/*.md that is a whole model (a
# `model` line and a closing brace of its own) passes mgl check
docs_models() {
	bad=0 n=0
	for md in README.md docs/*.md; do
		awk -v out="$tmp/doc_model" '/^ *```/ { if (inb && buf ~ /(^|\n)model [A-Za-z_0-9]+\(/ && buf ~ /\n}\n/)
			{ n++; f = out n ".mgl"; printf "%s", buf > f; close(f); print f " " FILENAME ":" start }
			inb = !inb; buf = ""; start = NR + 1; next } inb { buf = buf $0 "\n" }' "$md" >"$tmp/blocks"
		while read -r f where; do
			n=$((n + 1))
			"$mgl" check "$f" >"$tmp/doc_check" 2>&1 || { echo "$where: the model does not check:"; cat "$tmp/doc_check"; bad=1; }
		done <"$tmp/blocks"
	done
	[ $n -ge 3 ] || { echo "only $n models found in the docs"; bad=1; }
	return $bad
}
check "the docs' models pass mgl check" docs_models
# docs/adding-an-op.md's way to add a golden file: UPDATE=1 writes what a new model's
# check prints and its exit status (after the model, moving none of its lines), and the
# file then passes
golden_new() {
	mkdir -p "$tmp/golden"
	printf '# gelu takes one argument\nconfig { d = 4 }\nmodel m(x: f32[batch, d]) {\n  return gelu(x, 3)\n}\n' \
		>"$tmp/golden/new.mgl"
	UPDATE=1 tests/golden.sh "$mgl" "$tmp/golden/new.mgl" >/dev/null || return 1
	grep -qx '# exit: 1' "$tmp/golden/new.mgl" && grep -q '^#> .*new.mgl:4:18: error: too many arguments' "$tmp/golden/new.mgl" ||
		{ cat "$tmp/golden/new.mgl"; return 1; }
	tests/golden.sh "$mgl" "$tmp/golden/new.mgl"
}
check 'UPDATE=1 tests/golden.sh MGL NEW.mgl writes a golden file that passes' golden_new

summary cli
