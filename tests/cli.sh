#!/bin/sh
# tests/cli.sh — the command line as a user meets it: help, version, exit statuses, and
# the inputs that are not model text at all (missing, empty, huge, binary, a directory).
# usage: tests/cli.sh MGL
mgl=${1:?usage: tests/cli.sh MGL}
pass=0 fail=0
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT

# expect STATUS PATTERN -- ARGS...: runs mgl ARGS, wants exit STATUS and PATTERN (grep -E)
# somewhere in its output (stdout and stderr together).
expect() {
	want=$1 pattern=$2
	shift 3
	"$mgl" "$@" >"$tmp/out" 2>&1
	got=$?
	if [ "$got" = "$want" ] && grep -Eq -- "$pattern" "$tmp/out"; then
		pass=$((pass + 1))
	else
		fail=$((fail + 1))
		echo "FAIL: mgl $* -> exit $got (wanted $want), output lacks /$pattern/:"
		sed 's/^/    /' "$tmp/out" | head -20
	fi
}

expect 0 '^mgl [0-9]+\.[0-9]+\.[0-9]+$'       -- --version
expect 0 'usage: mgl COMMAND'                  -- --help
expect 0 'check +check a model file'           -- help
expect 2 'usage: mgl COMMAND'                  --
expect 0 'usage: mgl check FILE'               -- check --help
expect 0 'usage: mgl check FILE'               -- help check
expect 2 "unknown command 'chek'"              -- chek models/gpt2.mgl
expect 2 "did you mean 'mgl check'"            -- chek models/gpt2.mgl
expect 2 "unknown option '--presett'"          -- check models/gpt2.mgl --presett 124m
expect 2 "option '--preset' needs a value"     -- check models/gpt2.mgl --preset
expect 2 'no model file given'                 -- check
expect 2 "unexpected argument 'extra'"         -- check models/gpt2.mgl extra
expect 2 "--dump takes ast or graph"           -- check models/gpt2.mgl --dump=tokens
expect 0 'parameters  124,439,808'             -- check models/gpt2.mgl --preset 124m
expect 0 'parameters  354,823,168'             -- check models/gpt2.mgl --preset=355m
expect 0 'parameters  774,030,080'             -- check models/gpt2.mgl --preset 774m
expect 0 'parameters  1,557,611,200'           -- check models/gpt2.mgl --preset 1.5b
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
expect 1 "cannot open '$tmp/missing.mgl': No such file or directory" -- check "$tmp/missing.mgl"
: >"$tmp/empty.mgl"
expect 1 'empty.mgl:1:1: error: the file is empty' -- check "$tmp/empty.mgl"
head -c 9000000 /dev/zero | tr '\0' '#' >"$tmp/huge.mgl"
expect 1 'is too large: mgl reads model files of at most 8 MiB' -- check "$tmp/huge.mgl"
expect 1 "cannot read '$tmp': Is a directory" -- check "$tmp"
head -c 4096 /dev/urandom >"$tmp/random.mgl"
printf '\177ELF\002\001\001' >"$tmp/binary.mgl"
expect 1 'binary.mgl:1:1: error: unexpected byte 0x7f' -- check "$tmp/binary.mgl"
# whatever random bytes hold, the answer is a diagnostic with a location, never a crash
expect 1 'random.mgl:[0-9]+:[0-9]+: error: ' -- check "$tmp/random.mgl"

echo "cli: $pass passed, $fail failed"
[ "$fail" = 0 ]
