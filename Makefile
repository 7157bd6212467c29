# mgl — build, test, demo.
#
#   make            build/mgl
#   make demo       build, then run the main job
#   make check      unit (Check), golden and CLI tests, then all of them again under
#                   AddressSanitizer + UndefinedBehaviorSanitizer
#   make fuzz       libFuzzer on the parser and the plan reader (clang); FUZZ_SECONDS=600 for a long run
#
# Generated sources (the re2c lexer) go to build/, never into the tree.

CC      ?= cc
BUILD   ?= build
OPT     ?= -O2
CFLAGS  ?= $(OPT) -g
WARN    := -std=c11 -D_POSIX_C_SOURCE=200809L -Wall -Wextra -Werror -Wshadow -Wstrict-prototypes
ALL_CFLAGS = $(WARN) $(CFLAGS) $(SANFLAGS) -Icompiler -Iplan -Iruntime -MMD -MP
LDLIBS  += -lm -lpthread

SAN_FLAGS := -fsanitize=address,undefined -fno-sanitize-recover=all -fno-omit-frame-pointer

COMPILER_SRC := plan/plan.c compiler/util.c compiler/parse.c compiler/elaborate.c compiler/autodiff.c \
                compiler/partition.c compiler/optimizer.c compiler/fuse.c compiler/schedule.c compiler/explain.c compiler/dot.c
COMPILER_OBJ := $(COMPILER_SRC:%.c=$(BUILD)/%.o) $(BUILD)/grammar/lex.o
RUNTIME_SRC  := runtime/exec.c runtime/cpu.c runtime/cpu64.c runtime/train.c runtime/data.c \
                runtime/checkpoint.c runtime/tokenizer.c
RUNTIME_OBJ  := $(RUNTIME_SRC:%.c=$(BUILD)/%.o)
CLI_OBJ      := $(BUILD)/cli/main.o $(BUILD)/cli/compile.o $(BUILD)/cli/train.o $(BUILD)/cli/tokenize.o
TEST_UNITS   := $(BUILD)/tests/test_compiler $(BUILD)/tests/test_plan $(BUILD)/tests/test_runtime

.PHONY: all demo check test deps deps-test fuzz fuzz-replay clean
all: deps $(BUILD)/mgl

deps:
	@scripts/deps.sh re2c
deps-test:
	@scripts/deps.sh re2c check

$(BUILD)/mgl: $(CLI_OBJ) $(COMPILER_OBJ) $(RUNTIME_OBJ)
	$(CC) $(ALL_CFLAGS) -o $@ $(filter %.o,$^) $(LDLIBS)

$(BUILD)/grammar/lex.c: grammar/mgl.re
	@mkdir -p $(dir $@)
	re2c -W --no-generation-date -i $< -o $@

$(BUILD)/%.o: %.c
	@mkdir -p $(dir $@)
	$(CC) $(ALL_CFLAGS) -c $< -o $@

# the cpu kernels' inner loops are written to be vectorized, which takes -O3 (unless a
# sanitizer build asked for something else)
$(BUILD)/runtime/cpu.o $(BUILD)/runtime/cpu64.o: OPT := $(if $(SANFLAGS),$(OPT),-O3)

$(BUILD)/grammar/lex.o: $(BUILD)/grammar/lex.c
	$(CC) $(ALL_CFLAGS) -c $< -o $@

CHECK_LIBS = $(shell pkg-config --libs check 2>/dev/null || echo -lcheck -lsubunit -lrt -lm -lpthread)

$(BUILD)/tests/%: tests/%.c $(COMPILER_OBJ) $(RUNTIME_OBJ)
	@mkdir -p $(dir $@)
	$(CC) $(ALL_CFLAGS) -o $@ $(filter %.c %.o,$^) $(CHECK_LIBS) $(LDLIBS)

# The tests, run against the build in $(BUILD).
test: $(BUILD)/mgl $(TEST_UNITS)
	@for t in $(TEST_UNITS); do CK_FORK=no $$t || exit 1; done
	@tests/golden.sh $(BUILD)/mgl
	@tests/cli.sh $(BUILD)/mgl

check: deps-test
	@$(MAKE) --no-print-directory test
	@echo "== again under AddressSanitizer and UndefinedBehaviorSanitizer"
	@$(MAKE) --no-print-directory test BUILD=build/san SANFLAGS="$(SAN_FLAGS)" OPT=-O1

# The main job. For now: check both models and show GPT-2 124M's summary.
demo: all
	$(BUILD)/mgl check models/gpt2.mgl --preset 124m
	$(BUILD)/mgl check models/bert.mgl --preset 336m

# libFuzzer on lex + parse + elaborate (fuzz_compile, corpus tests/fuzz/corpus) and on the
# plan reader with a write/read/write round trip (fuzz_plan, corpus tests/fuzz/plan_corpus;
# built from plan/plan.c alone). The corpora are kept in the repository; findings land in
# build/fuzz/ as crash-* files. `make fuzz` runs each target for FUZZ_SECONDS.
FUZZ_SECONDS ?= 60
FUZZ_BIN := build/fuzz/fuzz_compile
FUZZ_PLAN_BIN := build/fuzz/fuzz_plan
FUZZ_CFLAGS := -std=c11 -D_POSIX_C_SOURCE=200809L -g -O1 -fsanitize=fuzzer,address,undefined -fno-sanitize-recover=all
$(FUZZ_BIN): tests/fuzz_compile.c $(COMPILER_SRC) grammar/mgl.re
	@scripts/deps.sh re2c clang
	@mkdir -p build/fuzz
	re2c -W --no-generation-date -i grammar/mgl.re -o build/fuzz/lex.c
	clang $(FUZZ_CFLAGS) -Icompiler -Iplan -o $@ tests/fuzz_compile.c $(COMPILER_SRC) build/fuzz/lex.c -lm
$(FUZZ_PLAN_BIN): tests/fuzz_plan.c plan/plan.c plan/plan.h compiler/ops.def
	@scripts/deps.sh clang
	@mkdir -p build/fuzz
	clang $(FUZZ_CFLAGS) -Iplan -o $@ tests/fuzz_plan.c plan/plan.c
fuzz: $(FUZZ_BIN) $(FUZZ_PLAN_BIN)
	@mkdir -p build/fuzz/new build/fuzz/new_plan
	cd build/fuzz && ./fuzz_compile -max_total_time=$(FUZZ_SECONDS) -timeout=10 -rss_limit_mb=2048 \
		-dict=../../tests/fuzz/mgl.dict new ../../tests/fuzz/corpus
	cd build/fuzz && ./fuzz_plan -max_total_time=$(FUZZ_SECONDS) -timeout=10 -rss_limit_mb=2048 \
		new_plan ../../tests/fuzz/plan_corpus
fuzz-replay: $(FUZZ_BIN) $(FUZZ_PLAN_BIN)
	$(FUZZ_BIN) -runs=0 tests/fuzz/corpus
	$(FUZZ_PLAN_BIN) -runs=0 tests/fuzz/plan_corpus

clean:
	rm -rf build

-include $(shell find $(BUILD) -name '*.d' 2>/dev/null)
