# tests/lib.sh — what the shell test scripts share; sourced after setting `mgl`.
# Counts in pass and fail; makes $tmp (removed on exit).
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

# check WHAT COMMAND...: a test that is more than one mgl run; COMMAND must succeed.
check() {
	what=$1
	shift
	if "$@" >"$tmp/check" 2>&1; then
		pass=$((pass + 1))
	else
		fail=$((fail + 1))
		echo "FAIL: $what:"
		sed 's/^/    /' "$tmp/check" | head -20
	fi
}

# summary NAME: the closing line, and the status
summary() {
	echo "$1: $pass passed, $fail failed"
	[ "$fail" = 0 ]
}
