#!/bin/sh
# tests/cli_oom.sh — memory running out anywhere: each command below runs again and again
# under MGL_OOM_AT=N (tests/oom_shim.c: mgl's N-th allocation fails), N = 1, 2, ... until
# a run makes fewer allocations than N, so that every allocation it makes fails once. Each
# run must end as a user expects on a full machine: the command's work done (where mgl can
# do without the memory, as the scheduler's overlap), or exit 1 with a message that memory
# ran out. Never a signal, a sanitizer's report, a hang, or exit 1 about something else.
# MGL_OOM_STRIDE=K fails every K-th allocation only (the sanitizers' slower pass).
# usage: tests/cli_oom.sh MGL MGL_OOM
mgl=${1:?usage: tests/cli_oom.sh MGL MGL_OOM} oom=${2:?usage: tests/cli_oom.sh MGL MGL_OOM}
. "$(dirname "$0")/lib.sh"
stride=${MGL_OOM_STRIDE:-1}

# sweep WHAT ARGS...: mgl_oom ARGS with each allocation failing in turn
sweep() {
	what=$1 n=1 failed=0 bad=
	shift
	while [ "$n" -le 100000 ]; do
		MGL_OOM_AT=$n timeout 120 "$oom" "$@" >"$tmp/oom" 2>&1
		got=$?
		grep -q "oom-shim: allocation" "$tmp/oom" || break   # fewer allocations than n: all were tried
		if grep -Eq 'Sanitizer|runtime error' "$tmp/oom" || { [ "$got" != 0 ] && [ "$got" != 1 ]; } ||
		   { [ "$got" = 1 ] && ! grep -q 'out of .*memory' "$tmp/oom"; }; then
			bad="allocation $n: exit $got"
			break
		fi
		[ "$got" = 1 ] && failed=$((failed + 1))
		n=$((n + stride))
	done
	# the sweep ends, and memory running out was seen (the shim works, and is linked in)
	if [ -z "$bad" ] && [ "$got" = 0 ] && [ "$failed" -gt 0 ]; then
		pass=$((pass + 1))
	else
		fail=$((fail + 1))
		echo "FAIL: $what with each allocation failing: ${bad:-exit $got after $n runs, $failed said out of memory}:"
		sed 's/^/    /' "$tmp/oom" | head -20
	fi
}

"$mgl" tokenize README.md -o "$tmp/t.bin" --bytes --val-fraction 0.1 >/dev/null || exit 1
head -c 2000 README.md >"$tmp/small.txt"
sweep "compile" compile models/gpt2.mgl -o "$tmp/p.plan"
sweep "tokenize --gpt2" tokenize "$tmp/small.txt" -o "$tmp/g.bin" --gpt2 tests/data/gpt2 --val-fraction 0.1
# tp 2: the ranks' threads and collectives; --save: the checkpoint
sweep "train" train models/gpt2.mgl --preset tiny --set layers=1 --data "$tmp/t.bin" --val "$tmp/t.val.bin" \
	--steps 1 --batch 2 --tp 2 --save "$tmp/ck"
sweep "sample" sample "$tmp/ck" --tokens 2 --prompt "The" --top-k 5
summary cli_oom.sh
