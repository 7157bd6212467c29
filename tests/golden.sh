#!/bin/sh
# tests/golden.sh — golden tests: each tests/golden/*.mgl holds a model and, in its own
# comments, what `mgl check` must print for it and the exit status:
#
#   # args: --preset tiny          (optional: more arguments after the file)
#   # exit: 1
#   #> tests/golden/x.mgl:3:7: error: ...     (stdout and stderr together, one '#>' a line)
#
# usage: tests/golden.sh MGL [FILE...]     UPDATE=1 rewrites the '#>' lines and '# exit:' from
# the output (read the diff before committing it: the expectations are the test).
mgl=${1:?usage: tests/golden.sh MGL [FILE...]}
shift
[ $# -gt 0 ] || set -- tests/golden/*.mgl
pass=0 fail=0
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
for f in "$@"; do
	args=$(sed -n 's/^# args: //p' "$f")
	want_exit=$(sed -n 's/^# exit: //p' "$f")
	# shellcheck disable=SC2086
	"$mgl" check "$f" $args >"$tmp/out" 2>&1
	got_exit=$?
	sed -n 's/^#> \{0,1\}//p' "$f" >"$tmp/want"
	if [ "${UPDATE:-}" = 1 ]; then
		# a new file gets its '# exit:' line after the model (moving no line of it)
		exit_line=
		grep -q '^# exit: ' "$f" || [ "$got_exit" = 0 ] || exit_line="# exit: $got_exit"
		{ grep -v '^#>' "$f"; [ -z "$exit_line" ] || echo "$exit_line"; sed 's/^/#> /; s/^#> $/#>/' "$tmp/out"; } \
			>"$tmp/new" && cp "$tmp/new" "$f"
		sed -i "s/^# exit: .*/# exit: $got_exit/" "$f"
		continue
	fi
	if [ "$got_exit" = "${want_exit:-0}" ] && cmp -s "$tmp/out" "$tmp/want"; then
		pass=$((pass + 1))
	else
		fail=$((fail + 1))
		echo "FAIL $f (exit $got_exit, expected ${want_exit:-0})"
		diff -u "$tmp/want" "$tmp/out" | sed 's/^/    /' | head -40
	fi
done
echo "golden: $pass passed, $fail failed"
[ "$fail" = 0 ]
