# mgl — build, test, demo.
#
#   make            build/mgl
#   make demo       build, then run the main job
#   make check      unit (Check), golden and CLI tests, then all of them again under
#                   AddressSanitizer + UndefinedBehaviorSanitizer
#   make bench      on the GPU machine: issue 11's speed table, mgl bench beside PyTorch
#                   (TORCH_GPT=path/to/shared/bench/torch_gpt.py, copied into the call)
#   make fuzz       libFuzzer on every reader of untrusted input (clang); FUZZ_SECONDS=600 for a long run
#
# Generated sources (the re2c lexer) go to build/, never into the tree.

CC      ?= cc
BUILD   ?= build
OPT     ?= -O2
CFLAGS  ?= $(OPT) -g
WARN    := -std=c11 -D_POSIX_C_SOURCE=200809L -Wall -Wextra -Werror -Wshadow -Wstrict-prototypes
ALL_CFLAGS = $(WARN) $(CFLAGS) $(SANFLAGS) $(CUDA_CFLAGS) $(INC) -MMD -MP

# Each directory sees its own headers and plan/'s, so the compiler cannot include the
# runtime nor the runtime the compiler (compiler -> plan <- runtime); the command line and
# the tests see everything. `make includes` checks that no file reaches around the -I
# flags with a path.
INC_plan     := -Iplan
INC_compiler := -Icompiler -Iplan
INC_runtime  := -Iruntime -Iplan
INC_ALL      := -Icompiler -Iplan -Iruntime
INC           = $(or $(INC_$(firstword $(subst /, ,$*))),$(INC_ALL))
LDLIBS  += -lm -lpthread -ldl

SAN_FLAGS := -fsanitize=address,undefined -fno-sanitize-recover=all -fno-omit-frame-pointer

COMPILER_SRC := plan/plan.c plan/common.c compiler/util.c compiler/parse.c compiler/config.c compiler/elaborate.c compiler/autodiff.c \
                compiler/partition.c compiler/recompute.c compiler/adamw.c compiler/hfuse.c compiler/schedule.c compiler/fuse.c compiler/memplan.c compiler/pipeline.c \
                compiler/explain.c compiler/dot.c
COMPILER_OBJ := $(COMPILER_SRC:%.c=$(BUILD)/%.o) $(BUILD)/grammar/lex.o
RUNTIME_SRC  := runtime/exec.c runtime/cpu.c runtime/cpu64.c runtime/train.c runtime/data.c runtime/bert_data.c \
                runtime/checkpoint.c runtime/hf.c runtime/tokenizer.c runtime/json.c runtime/io.c runtime/tensorboard.c \
                runtime/eval.c runtime/launch.c
RUNTIME_OBJ  := $(RUNTIME_SRC:%.c=$(BUILD)/%.o)

# The cuda backend: built where the CUDA toolkit is (CUDA=0 builds a cpu-only mgl). It
# links the runtime, cuBLASLt, NCCL and NVRTC, never libcuda: the binary must start on a
# machine with no driver (CI) and fall back to the cpu backend.
CUDA_HOME ?= /usr/local/cuda
CUDA ?= $(if $(wildcard $(CUDA_HOME)/include/cuda_runtime_api.h),1,0)
ifeq ($(CUDA),1)
RUNTIME_OBJ  += $(BUILD)/runtime/cuda/cuda.o $(BUILD)/runtime/cuda/nvrtc.o $(BUILD)/runtime/cuda/ops.o \
                $(BUILD)/runtime/cuda/chains.o $(BUILD)/runtime/cuda/host_comm.o $(BUILD)/kernels_src.o
CUDA_CFLAGS  := -DMGL_CUDA=1 -isystem $(CUDA_HOME)/include
CUDA_LIBS    := -L$(CUDA_HOME)/lib64 -Wl,-rpath,$(CUDA_HOME)/lib64 -lcudart -lcublasLt -lnccl -lnvrtc
endif
CLI_OBJ      := $(BUILD)/cli/main.o $(BUILD)/cli/compile.o $(BUILD)/cli/train.o $(BUILD)/cli/tokenize.o \
                $(BUILD)/cli/export.o $(BUILD)/cli/plot.o $(BUILD)/cli/bench.o $(BUILD)/cli/eval.o
TEST_UNITS   := $(BUILD)/tests/test_ops $(BUILD)/tests/test_compiler $(BUILD)/tests/test_plan $(BUILD)/tests/test_runtime \
                $(BUILD)/tests/test_checkpoint $(BUILD)/tests/test_runtime_data $(BUILD)/tests/test_io \
                $(BUILD)/tests/test_tensorboard $(BUILD)/tests/test_eval $(BUILD)/tests/test_hf $(BUILD)/tests/test_launch

.PHONY: all demo check test includes deps deps-test fuzz fuzz-replay gpu-check bench bench-tp clean
all: deps $(BUILD)/mgl

# what the build needs, and what the tests run besides (Graphviz's dot draws tests/cli.sh's
# graphs, mpirun launches tests/cli_launch.sh's processes); OpenBLAS, which the cpu backend
# loads at run time, where it can be had
deps:
	@CC=$(CC) scripts/deps.sh cc re2c
	@scripts/deps.sh openblas
deps-test: deps
	@CC=$(CC) scripts/deps.sh cc re2c check dot rsvg-convert
	@scripts/deps.sh mpi

$(BUILD)/mgl: $(CLI_OBJ) $(COMPILER_OBJ) $(RUNTIME_OBJ)
	$(CC) $(ALL_CFLAGS) -o $@ $(filter %.o,$^) $(CUDA_LIBS) $(LDLIBS)

$(BUILD)/kernels_src.c: kernels/ops.cu kernels/prelude.cuh scripts/embed.sh
	@mkdir -p $(dir $@)
	{ scripts/embed.sh rt_kernels_src kernels/ops.cu; scripts/embed.sh rt_kernels_prelude kernels/prelude.cuh; } > $@
$(BUILD)/kernels_src.o: $(BUILD)/kernels_src.c
	$(CC) -c $< -o $@

$(BUILD)/grammar/lex.c: grammar/mgl.re
	@mkdir -p $(dir $@)
	re2c -W --no-generation-date -i $< -o $@

$(BUILD)/%.o: %.c
	@mkdir -p $(dir $@)
	$(CC) $(ALL_CFLAGS) -c $< -o $@

# the cpu kernels' inner loops are written to be vectorized, which takes -O3 (unless a
# sanitizer build asked for something else)
$(BUILD)/runtime/cpu.o $(BUILD)/runtime/cpu64.o: OPT := $(if $(SANFLAGS),$(OPT),-O3)

$(BUILD)/grammar/lex.o: INC = $(INC_compiler)
$(BUILD)/grammar/lex.o: $(BUILD)/grammar/lex.c
	$(CC) $(ALL_CFLAGS) -c $< -o $@

CHECK_LIBS = $(shell pkg-config --libs check 2>/dev/null || echo -lcheck -lsubunit -lrt -lm -lpthread)

$(BUILD)/tests/%: tests/%.c $(COMPILER_OBJ) $(RUNTIME_OBJ)
	@mkdir -p $(dir $@)
	$(CC) $(ALL_CFLAGS) -o $@ $(filter %.c %.o,$^) $(CHECK_LIBS) $(CUDA_LIBS) $(LDLIBS)

# test_io makes fsync fail on demand (tests/test_io.c)
$(BUILD)/tests/test_io: LDLIBS += -Wl,--wrap=fsync

# mgl whose memory runs out on demand (tests/oom_shim.c), for tests/cli_oom.sh. Built
# without the cuda backend (CUDA=0, objects of its own in $(BUILD)/nocuda): the sweeps run
# it thousands of times, and a binary linked with cuBLASLt spends 0.35 s of each start in
# that library's initialisation (perf, thirty-second sitting: 349 s of CI's first pass),
# while mgl's own allocations in the cpu path, the one the tests take, are the same.
MGL_OOM := $(if $(filter 1,$(CUDA)),$(BUILD)/nocuda/tests/mgl_oom,$(BUILD)/tests/mgl_oom)
$(BUILD)/tests/mgl_oom: tests/oom_shim.c $(CLI_OBJ) $(COMPILER_OBJ) $(RUNTIME_OBJ)
	@mkdir -p $(dir $@)
	$(CC) $(ALL_CFLAGS) -o $@ $(filter %.c %.o,$^) $(CUDA_LIBS) $(LDLIBS) \
		-Wl,--wrap=malloc,--wrap=calloc,--wrap=realloc,--wrap=strdup
ifeq ($(CUDA),1)
.PHONY: $(BUILD)/nocuda/tests/mgl_oom
$(BUILD)/nocuda/tests/mgl_oom:
	@$(MAKE) --no-print-directory CUDA=0 BUILD=$(BUILD)/nocuda $@
endif

# The tests, run against the build in $(BUILD). With the toolkit, the GPU suite's test_gpu is
# built too (warnings as errors, as everything), so that it compiles when a GPU is lent;
# it runs under make gpu-check only.
test: includes $(BUILD)/mgl $(TEST_UNITS) $(MGL_OOM) $(if $(filter 1,$(CUDA)),$(BUILD)/tests/gpu/test_gpu)
	@for t in $(TEST_UNITS); do CK_FORK=no $$t || exit 1; done
	@tests/golden.sh $(BUILD)/mgl
	@tests/cli.sh $(BUILD)/mgl
	@tests/cli_train.sh $(BUILD)/mgl
	@tests/cli_eval.sh $(BUILD)/mgl
	@tests/cli_import.sh $(BUILD)/mgl
	@tests/cli_launch.sh $(BUILD)/mgl
	@tests/plot.sh $(BUILD)/mgl
	@tests/scripts.sh $(BUILD)/mgl
	@tests/cli_oom.sh $(BUILD)/mgl $(MGL_OOM)

includes:
	@! grep -n '^#include "[^"]*/' compiler/*.[ch] plan/*.[ch] plan/ops.def runtime/*.[ch] runtime/cuda/*.[ch] \
		grammar/mgl.re || { echo "includes: name headers without a path; the Makefile's -I flags set what each directory sees"; exit 1; }

check: deps-test
	@$(MAKE) --no-print-directory test
	@echo "== again under AddressSanitizer and UndefinedBehaviorSanitizer"
	@MGL_COMPILE_LIMIT=5 MGL_OOM_STRIDE=7 $(MAKE) --no-print-directory test BUILD=build/san SANFLAGS="$(SAN_FLAGS)" OPT=-O1

# The GPU suite, on the GPU machine (tests/gpu_check.sh): the cuda backend against the cpu.
gpu-check: $(BUILD)/mgl $(BUILD)/tests/gpu/test_gpu
	tests/gpu_check.sh $(BUILD)/mgl $(GPU_OUT)

# The speed table (scripts/bench_gpu.sh, docs/bench.md): mgl bench and the PyTorch baseline
# on one GPU, in one call; every output kept in BENCH_OUT.
TORCH_GPT ?= .bench/torch_gpt.py
BENCH_OUT ?= $(BUILD)/bench
bench: $(BUILD)/mgl
	scripts/bench_gpu.sh $(BUILD)/mgl $(TORCH_GPT) $(BENCH_OUT)

# The tensor-parallel table (scripts/bench_tp.sh; issues 12, 16, 17) on 2, 4 or 8 GPUs of
# one machine: BENCH_TP=N picks, BENCH_TP_OUT keeps every output.
BENCH_TP_OUT ?= $(BUILD)/bench_tp
bench-tp: $(BUILD)/mgl
	scripts/bench_tp.sh $(BUILD)/mgl $(TORCH_GPT) $(BENCH_TP_OUT)

# plain C, no Check: the GPU machine has none
$(BUILD)/tests/gpu/test_gpu: tests/gpu/test_gpu.c $(COMPILER_OBJ) $(RUNTIME_OBJ)
	@mkdir -p $(dir $@)
	$(CC) $(ALL_CFLAGS) -o $@ $(filter %.c %.o,$^) $(CUDA_LIBS) $(LDLIBS)

# The main job: a tiny GPT trained on the licence texts every Debian/Ubuntu machine has,
# then a sample from it (examples/demo.sh).
demo: all
	@examples/demo.sh

# libFuzzer, one target per reader of untrusted input: the model compiler (lex, parse,
# elaborate), the plan reader (with a write/read/write round trip), the checkpoint reader,
# the token shards and tokenizer files, BERT's vocab.txt and streams, mgl eval's data files,
# and Hugging Face's config.json, index and GPT-2 tensors (mgl import). Each
# tests/fuzz_NAME.c has its corpus in tests/fuzz/NAME_corpus (kept in the repository) and
# maybe tests/fuzz/NAME.dict; new inputs go to build/fuzz/new_NAME, findings to
# build/fuzz/crash-*. `make fuzz` runs each target FUZZ_SECONDS; `make fuzz-replay` runs
# every corpus once.
FUZZ_SECONDS ?= 60
FUZZERS := compile plan checkpoint data bert eval hf
FUZZ_SRC_compile := $(COMPILER_SRC) build/fuzz/lex.c
FUZZ_SRC_plan := plan/plan.c plan/common.c
FUZZ_SRC_runtime := runtime/json.c runtime/io.c plan/plan.c plan/common.c
FUZZ_SRC_checkpoint := runtime/checkpoint.c runtime/hf.c $(FUZZ_SRC_runtime)
FUZZ_SRC_data := runtime/data.c $(FUZZ_SRC_runtime)
FUZZ_SRC_hf := runtime/hf.c runtime/checkpoint.c $(FUZZ_SRC_runtime)
FUZZ_SRC_bert := runtime/tokenizer.c runtime/bert_data.c $(FUZZ_SRC_runtime)
FUZZ_SRC_eval := runtime/eval.c runtime/exec.c runtime/launch.c $(FUZZ_SRC_runtime)
FUZZ_DEPS := $(wildcard plan/*.h plan/ops.def compiler/*.h runtime/*.h runtime/tokenizer.c)
FUZZ_CFLAGS := -std=c11 -D_POSIX_C_SOURCE=200809L -g -O1 -fsanitize=fuzzer,address,undefined -fno-sanitize-recover=all

build/fuzz/lex.c: grammar/mgl.re
	@scripts/deps.sh re2c
	@mkdir -p build/fuzz
	re2c -W --no-generation-date -i $< -o $@

.SECONDEXPANSION:
build/fuzz/fuzz_%: tests/fuzz_%.c $$(FUZZ_SRC_$$*) $(FUZZ_DEPS)
	@scripts/deps.sh clang
	@mkdir -p build/fuzz
	clang $(FUZZ_CFLAGS) -Icompiler -Iplan -Iruntime -o $@ $< $(FUZZ_SRC_$*) -lm

fuzz: $(FUZZERS:%=build/fuzz/fuzz_%)
	@for f in $(FUZZERS); do \
		d=../../tests/fuzz/$$f.dict; [ -f tests/fuzz/$$f.dict ] && dict=-dict=$$d || dict=; \
		mkdir -p build/fuzz/new_$$f; echo "== fuzz_$$f for $(FUZZ_SECONDS) s"; \
		(cd build/fuzz && ./fuzz_$$f -max_total_time=$(FUZZ_SECONDS) -timeout=10 -rss_limit_mb=2048 $$dict \
			-print_final_stats=1 new_$$f ../../tests/fuzz/$${f}_corpus 2>&1 | tail -4) || exit 1; \
		[ -z "$$(ls build/fuzz/crash-* build/fuzz/leak-* build/fuzz/timeout-* 2>/dev/null)" ] || exit 1; \
	done
fuzz-replay: $(FUZZERS:%=build/fuzz/fuzz_%)
	@for f in $(FUZZERS); do (cd build/fuzz && ./fuzz_$$f -runs=0 ../../tests/fuzz/$${f}_corpus 2>&1 | tail -1) || exit 1; done

clean:
	rm -rf build

-include $(shell find $(BUILD) -name '*.d' 2>/dev/null)
