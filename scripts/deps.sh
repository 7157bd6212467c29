#!/bin/sh
# scripts/deps.sh — installs what the build lacks, or says the one command that would.
# usage: scripts/deps.sh TOOL...   (cc, re2c, check, clang, dot, rsvg-convert)
# Called by the Makefile before a build (`make deps`: what building needs; `make deps-test`:
# that and what the tests run), so `make demo` and `make check` work on a fresh Debian or
# Ubuntu machine with nothing but make installed first.
missing=""
for need in "$@"; do
	case "$need" in
	cc)    command -v "${CC:-cc}" >/dev/null 2>&1 || case "${CC:-cc}" in *clang*) missing="$missing clang" ;; *) missing="$missing gcc" ;; esac ;;
	re2c)  command -v re2c >/dev/null 2>&1 || missing="$missing re2c" ;;
	check) pkg-config --exists check 2>/dev/null || [ -f /usr/include/check.h ] || missing="$missing check pkg-config" ;;
	clang) command -v clang >/dev/null 2>&1 || missing="$missing clang" ;;
	dot)   command -v dot >/dev/null 2>&1 || missing="$missing graphviz" ;;
	rsvg-convert) command -v rsvg-convert >/dev/null 2>&1 || missing="$missing librsvg2-bin" ;;
	esac
done
[ -z "$missing" ] && exit 0
if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
	echo "mgl: installing$missing" >&2
	export DEBIAN_FRONTEND=noninteractive
	{ apt-get install -y -qq $missing || { apt-get update -qq && apt-get install -y -qq $missing; }; } >/dev/null 2>&1 && exit 0
	echo "mgl: could not install$missing; try: apt-get update && apt-get install -y$missing" >&2
	exit 1
fi
echo "mgl: the build needs$missing; install it with:" >&2
echo "  sudo apt-get install -y$missing" >&2
exit 1
