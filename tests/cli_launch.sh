#!/bin/sh
# tests/cli_launch.sh — mgl train launched as processes (docs/multinode.md), on the cpu
# backend: under mpirun, 2 and 4 processes give the losses of the same job run as threads
# of one process, figure for figure, and the same checkpoint byte for byte; torchrun's
# variables (through MPI); and what each process says when the launch is wrong: a rank that
# never comes (named by every other rank within MGL_RENDEZVOUS_TIMEOUT) or fails before or
# after the start (the others end, never hang: each such run bounded by timeout), a count of
# processes that is not the job's, the cpu backend between processes without MPI.
# Without mpirun (no Open MPI: scripts/deps.sh mpi) the MPI runs print SKIP.
# usage: tests/cli_launch.sh MGL
mgl=${1:?usage: tests/cli_launch.sh MGL}
. "$(dirname "$0")/lib.sh"

"$mgl" tokenize /usr/share/common-licenses/GPL-3 -o "$tmp/t.bin" >/dev/null 2>&1 || { echo "cli_launch: cannot tokenize"; exit 1; }
job="train models/gpt2.mgl --preset tiny --data $tmp/t.bin --steps 4 --batch 2"

# a rank that never comes: rank 0 waits MGL_RENDEZVOUS_TIMEOUT seconds, then names it
export MGL_RENDEZVOUS_TIMEOUT=1
RANK=0 WORLD_SIZE=2 MGL_RENDEZVOUS=file:$tmp/rdv expect 1 'mgl: error: rank 0: rank 1 of 2 did not arrive within 1 s \(rendezvous file' \
	-- $job --dp 2
RANK=1 WORLD_SIZE=2 MGL_RENDEZVOUS=file:$tmp/rdv expect 1 'mgl: error: rank 1: rank 0 did not arrive within 1 s' -- $job --dp 2
RANK=2 WORLD_SIZE=2 expect 1 "torchrun's variables make no sense: RANK=2, WORLD_SIZE=2" -- $job --dp 2
RANK=1 WORLD_SIZE=2 expect 1 'no way to meet: give MGL_RENDEZVOUS=file:PATH' -- $job --dp 2
RANK=1 WORLD_SIZE=2 MGL_RENDEZVOUS=tcp:127.0.0.1:1 expect 1 'a TCP rendezvous needs MGL_JOB_SECRET' -- $job --dp 2
RANK=1 WORLD_SIZE=2 MGL_RENDEZVOUS=file:$tmp/rdv MGL_EXCHANGE_TIMEOUT=0 expect 1 \
	"rank 1: MGL_EXCHANGE_TIMEOUT is '0': seconds, 1 to 86,400" -- $job --dp 2
# one rank fails before it meets the others (its own bad option), the other waits for it:
# both end with an error naming the problem within the timeout, never a hang
MGL_RENDEZVOUS=file:$tmp/rdv3 RANK=1 WORLD_SIZE=2 timeout 30 "$mgl" $job --dp 2 --steps 0 >"$tmp/early1" 2>&1 &
MGL_RENDEZVOUS=file:$tmp/rdv3 RANK=0 WORLD_SIZE=2 timeout 30 "$mgl" $job --dp 2 >"$tmp/early0" 2>&1
echo $? >"$tmp/early0_rc"
wait
check "a rank that fails before the rendezvous: the other ends within the timeout, naming it" \
	sh -c '[ "$(cat "$1/early0_rc")" = 1 ] && grep -q "rank 0: rank 1 of 2 did not arrive within 1 s" "$1/early0" &&
		grep -q "error: --steps takes a whole number" "$1/early1"' - "$tmp"
unset MGL_RENDEZVOUS_TIMEOUT

# torchrun's launch meets over the rendezvous; the cpu backend's collectives need MPI
for r in 0 1; do
	RANK=$r WORLD_SIZE=2 LOCAL_RANK=$r MGL_RENDEZVOUS=file:$tmp/rdv2 "$mgl" $job --dp 2 >"$tmp/tr$r" 2>&1 &
done
wait
check "torchrun's processes meet, and the cpu backend says it needs MPI, on each rank" \
	sh -c 'grep -q "rank 0: the cpu backend.s collectives between processes go through MPI.*torchrun.s processes are not MPI.s: they meet over TCP" "$1/tr0" &&
		grep -q "rank 1: the cpu backend.s collectives between processes go through MPI" "$1/tr1"' - "$tmp"

if ! command -v mpirun >/dev/null 2>&1; then
	echo "SKIP: mgl train under mpirun (no mpirun here; scripts/deps.sh mpi installs Open MPI)"
	summary cli_launch
	exit
fi
# CI runs as root, on 2 cores. Open MPI's and NCCL's own allocations outlive MPI_Finalize:
# under LeakSanitizer (make check's second pass) they would fail every rank's exit, so the
# processes mpirun starts are not checked for leaks (the threaded runs still are)
mpi="env ASAN_OPTIONS=${ASAN_OPTIONS:+$ASAN_OPTIONS:}detect_leaks=0 mpirun --allow-run-as-root --oversubscribe"

# tp 2 x dp 2: 4 processes, and the same job as 4 threads
"$mgl" $job --tp 2 --dp 2 --log "$tmp/threads4.jsonl" >"$tmp/out" 2>&1
$mpi -n 4 "$mgl" $job --tp 2 --dp 2 --log "$tmp/procs4.jsonl" --save "$tmp/ck4" >"$tmp/procs4.out" 2>&1
check "mpirun -n 4, tp 2 x dp 2: the losses of the threads, figure for figure" \
	sh -c '[ "$(grep -c loss "$1/procs4.jsonl")" = 4 ] && [ "$(grep -o "\"loss\": [0-9.]*" "$1/procs4.jsonl")" = "$(grep -o "\"loss\": [0-9.]*" "$1/threads4.jsonl")" ]' - "$tmp"
check "mpirun -n 4: rank 0 alone speaks" test "$(grep -c '^trained 4 steps' "$tmp/procs4.out")" = 1
# its checkpoint: a shard a process (the default across processes), resumed by one
# process (threads, tp 1) as the threads' one-file checkpoint is
check "mpirun -n 4: a shard a process, an index, nothing staged left" \
	sh -c 'cd "$1/ck4" && [ "$(ls)" = "$(printf "model-0000%s-of-00004.safetensors\n" 1 2 3 4; echo model.safetensors.index.json)" ] && [ ! -e .saving ]' - "$tmp"
# each process gathers only the tensors of its shard: the files are the threads' four shards
"$mgl" $job --tp 2 --dp 2 --save "$tmp/ck4s" --save-shards 4 >"$tmp/out" 2>&1
check "mpirun -n 4's shards and index are those of 4 threads' --save-shards 4, byte for byte" \
	sh -c 'for f in model-00001-of-00004.safetensors model-00002-of-00004.safetensors model-00003-of-00004.safetensors model-00004-of-00004.safetensors model.safetensors.index.json; do cmp "$1/ck4/$f" "$1/ck4s/$f" || exit 1; done' - "$tmp"
"$mgl" $job --tp 2 --dp 2 --save "$tmp/ck4t" >"$tmp/out" 2>&1
"$mgl" train models/gpt2.mgl --preset tiny --data "$tmp/t.bin" --steps 6 --batch 2 --dp 2 --resume "$tmp/ck4" \
	--log "$tmp/r4.jsonl" >"$tmp/out" 2>&1
"$mgl" train models/gpt2.mgl --preset tiny --data "$tmp/t.bin" --steps 6 --batch 2 --dp 2 --resume "$tmp/ck4t" \
	--log "$tmp/r4t.jsonl" >"$tmp/out" 2>&1
check "mpirun -n 4's sharded checkpoint resumes in 1 process at tp 1 as the threads' checkpoint does" \
	sh -c '[ "$(grep -c loss "$1/r4.jsonl")" = 2 ] && [ "$(grep -o "\"loss\": [0-9.]*" "$1/r4.jsonl")" = "$(grep -o "\"loss\": [0-9.]*" "$1/r4t.jsonl")" ]' - "$tmp"

# tp 2 at 2 processes: the losses and the checkpoint of the threads
"$mgl" $job --tp 2 --log "$tmp/threads2.jsonl" --save "$tmp/ck1" >"$tmp/out" 2>&1
$mpi -n 2 "$mgl" $job --tp 2 --log "$tmp/procs2.jsonl" --save "$tmp/ck2" --save-shards 1 >"$tmp/out" 2>&1
check "mpirun -n 2, tp 2: the losses of the threads" \
	sh -c '[ "$(grep -c loss "$1/procs2.jsonl")" = 4 ] && [ "$(grep -o "\"loss\": [0-9.]*" "$1/procs2.jsonl")" = "$(grep -o "\"loss\": [0-9.]*" "$1/threads2.jsonl")" ]' - "$tmp"
check "mpirun -n 2, tp 2, --save-shards 1: the checkpoint of the threads, byte for byte" \
	cmp "$tmp/ck1/checkpoint.safetensors" "$tmp/ck2/checkpoint.safetensors"
# and resumed by one process, threads
expect 0 '^trained 2 steps \(steps 5 to 6\)' -- train models/gpt2.mgl --preset tiny --data "$tmp/t.bin" --steps 6 \
	--batch 2 --resume "$tmp/ck2"

# torchrun's variables, MPI asked for (MGL_MPI=1): the same as dp 2 threads
"$mgl" $job --dp 2 --log "$tmp/threads_dp.jsonl" >"$tmp/out" 2>&1
$mpi -n 2 sh -c 'exec env -u OMPI_COMM_WORLD_RANK -u OMPI_COMM_WORLD_SIZE -u OMPI_COMM_WORLD_LOCAL_RANK \
	RANK=$OMPI_COMM_WORLD_RANK WORLD_SIZE=$OMPI_COMM_WORLD_SIZE LOCAL_RANK=$OMPI_COMM_WORLD_LOCAL_RANK MGL_MPI=1 "$0" "$@"' \
	"$mgl" $job --dp 2 --log "$tmp/torchrun.jsonl" >"$tmp/out" 2>&1
check "torchrun's variables over MPI, dp 2: the losses of the threads" \
	sh -c '[ "$(grep -c loss "$1/torchrun.jsonl")" = 4 ] && [ "$(grep -o "\"loss\": [0-9.]*" "$1/torchrun.jsonl")" = "$(grep -o "\"loss\": [0-9.]*" "$1/threads_dp.jsonl")" ]' - "$tmp"

# the wrong count of processes: every rank says so
$mpi -n 3 "$mgl" $job --tp 2 --dp 2 >"$tmp/out" 2>&1
check "mpirun -n 3 for a job of 4 ranks: refused" \
	grep -q 'mpirun started 3 processes for a job of 4 ranks (tp 2 x dp 2): start one process a rank' "$tmp/out"

# --dump-first: rank 0 writes the files, the other ranks send their parts and write nothing
$mpi -n 2 "$mgl" $job --tp 2 --dump-first "$tmp/dump" >"$tmp/out" 2>&1
echo $? >"$tmp/dump_rc"
check "mpirun -n 2 with --dump-first: every rank ends well, rank 0 writes the weights, gradients and batch" \
	sh -c '[ "$(cat "$1/dump_rc")" = 0 ] && [ -s "$1/dump/checkpoint.safetensors" ] && [ -s "$1/dump/grads.safetensors" ] &&
		[ -s "$1/dump/batch.safetensors" ]' - "$tmp"

# rank 0 fails after the start (its data missing) while rank 1 trains on and waits for it in
# a collective: the job ends with rank 0's error, never a hang
$mpi -n 2 sh -c '[ "$OMPI_COMM_WORLD_RANK" = 0 ] && set -- "$@" --data /nonexistent; exec "$0" "$@"' \
	timeout 60 "$mgl" $job --dp 2 >"$tmp/out" 2>&1
echo $? >"$tmp/fail_rc"
check "mpirun -n 2, rank 0 fails at its data: the job ends with its error, not at timeout's 60 s" \
	sh -c '[ "$(cat "$1/fail_rc")" != 0 ] && [ "$(cat "$1/fail_rc")" != 124 ] && grep -q "rank 0: .*/nonexistent" "$1/out"' - "$tmp"

# ZeRO-1 gathers its pieces in one process's memory: refused across processes
$mpi -n 2 "$mgl" $job --dp 2 --zero 1 >"$tmp/out" 2>&1
check "mpirun -n 2 with --zero 1: refused" \
	grep -q 'rank 1: --zero 1 runs with the job.s ranks in one process for now' "$tmp/out"

summary cli_launch
