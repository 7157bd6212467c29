#!/bin/sh
# scripts/deps.sh — installs what the build lacks, or says the one command that would.
# usage: scripts/deps.sh TOOL...   (cc, re2c, check, clang, dot, rsvg-convert, openblas, mpi)
# Called by the Makefile before a build (`make deps`: what building needs; `make deps-test`:
# that and what the tests run), so `make demo` and `make check` work on a fresh Debian or
# Ubuntu machine with nothing but make installed first.
# openblas is wanted, not needed: the cpu backend loads it at run time (docs/DESIGN.md) and
# runs its own, slower GEMM without it, so where it cannot be installed (no root, no
# package registry: the GPU machine) the build says so and goes on.
if [ "${1:-}" = openblas ]; then
	{ ldconfig -p 2>/dev/null || /sbin/ldconfig -p 2>/dev/null; } | grep -q 'libopenblas\.so\.0' && exit 0
	if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
		echo "mgl: installing libopenblas-dev (the cpu backend's GEMMs)" >&2
		export DEBIAN_FRONTEND=noninteractive
		{ apt-get install -y -qq libopenblas-dev || { apt-get update -qq && apt-get install -y -qq libopenblas-dev; }; } \
			>/dev/null 2>&1 && exit 0
	fi
	echo "mgl: note: no OpenBLAS here; the cpu backend's GEMMs run its own loops, some 20 times slower" >&2
	echo "  (to have it: sudo apt-get install -y libopenblas-dev)" >&2
	exit 0
fi
# mpi is wanted by the tests, not needed: mgl loads Open MPI's libmpi at run time under
# mpirun (runtime/launch.c), and tests/cli_launch.sh prints SKIP for its runs without mpirun.
if [ "${1:-}" = mpi ]; then
	command -v mpirun >/dev/null 2>&1 && exit 0
	if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
		echo "mgl: installing libopenmpi-dev and openmpi-bin (the tests' mpirun)" >&2
		export DEBIAN_FRONTEND=noninteractive
		{ apt-get install -y -qq libopenmpi-dev openmpi-bin || { apt-get update -qq && apt-get install -y -qq libopenmpi-dev openmpi-bin; }; } \
			>/dev/null 2>&1 && exit 0
	fi
	echo "mgl: note: no mpirun here; tests/cli_launch.sh skips its MPI runs (sudo apt-get install -y libopenmpi-dev openmpi-bin)" >&2
	exit 0
fi
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
