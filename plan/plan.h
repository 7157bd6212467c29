/* plan/plan.h — the plan: the contract between the compiler and the runtime.
 *
 * A plan is one rank-parametric program for every rank of a tp x dp job: the values
 * (tensors with their local shapes, layouts and arena offsets), the parameters (with
 * their global shapes and how they are split), and the steps of the forward pass, the
 * backward pass and the optimizer, in the order they run, each with the source line of
 * the model that produced it. The compiler builds it (compiler/), writes it as versioned
 * text (plan.c), and the runtime reads it back and executes it without re-deriving
 * anything. The format is documented in docs/plan.md. The ops it names are defined in
 * ops.def, the registry both sides read.
 *
 * Names exported here start with mgl_ / Mgl / MGL_ (the plan belongs to both sides).
 */
#ifndef MGL_PLAN_H
#define MGL_PLAN_H

#include <math.h>
#include <stdbool.h>
#include <stddef.h>
#include <string.h>
#include <stdint.h>
#include <stdio.h>

#define MGL_PLAN_VERSION 2

/* ---------------------------------------------------------------- files and counts (common.c) */

/* The whole file at path, read to its end (a pipe too), NUL-terminated and malloc'd, *len
 * bytes without the NUL; NULL with a message in err that starts with the path when it
 * cannot be opened or read, memory runs out, or it holds more than limit bytes
 * ("PATH: too large: mgl reads WHAT of at most 8 MiB", what being e.g. "model files"). */
char *mgl_read_whole(const char *path, size_t limit, const char *what, size_t *len, char *err, size_t errlen);

/* A count as people read it, "124,439,808", into buf (32 bytes), which it returns: the one
 * format of integers in every message and report (compiler, runtime and command line). */
const char *mgl_commas(int64_t v, char *buf);

/* An amount v >= 0 of unit in SI units, three digits, into buf (32 bytes), which it
 * returns: "1.17 TFLOP", "7 TFLOP", "350 GFLOP", "12.3 GFLOP/s"; never 7e+03. */
const char *mgl_si(double v, const char *unit, char *buf);

/* Host memory where the caller has no error path to return through (or whose peers, in a
 * job of processes, could not be told): malloc, calloc and realloc that never return NULL.
 * When memory runs out they print "mgl: error: out of host memory: WHAT (N bytes)" and
 * end the process at once (_exit) with status 1, WHAT saying what the memory was for ("the
 * ranks' threads"). A size of 0 asks for 1 byte, so that NULL always means out of memory.
 * Callers that can return an error say so in their own message instead. */
void *mgl_xmalloc(size_t n, const char *what);
void *mgl_xcalloc(size_t count, size_t size, const char *what);
void *mgl_xrealloc(void *p, size_t n, const char *what);

/* ---------------------------------------------------------------- arena */

/* Every plan (and every compilation) allocates from one arena, freed at once. */
typedef struct MglChunk MglChunk;
typedef struct { MglChunk *head; size_t used, cap; } MglArena;

void *mgl_alloc(MglArena *a, size_t n);            /* zeroed, 16-byte aligned; exits if out of memory */
char *mgl_strndup(MglArena *a, const char *s, size_t n);
char *mgl_fmt(MglArena *a, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
void mgl_arena_free(MglArena *a);

/* A growable array in the arena: MGL_PUSH(arena, items, n, cap, value). */
#define MGL_PUSH(A, V, N, CAP, X) do {                                          \
	if ((N) == (CAP)) {                                                      \
		int ncap_ = (CAP) ? 2 * (CAP) : 16;                                  \
		void *nv_ = mgl_alloc((A), (size_t)ncap_ * sizeof *(V));            \
		if ((N)) memcpy(nv_, (V), (size_t)(N) * sizeof *(V));                \
		(V) = nv_; (CAP) = ncap_;                                            \
	}                                                                        \
	(V)[(N)++] = (X);                                                        \
} while (0)

/* A map from strings (not copied: they must outlive it) to ints, in the arena. */
typedef struct {
	const char **keys;
	int *lens, *vals;
	int n, cap;
} MglMap;
int mgl_map_get(const MglMap *m, const char *key, int len);          /* -1 if absent */
void mgl_map_put(MglArena *a, MglMap *m, const char *key, int len, int val);

/* ---------------------------------------------------------------- the op registry (ops.def) */

enum { MGL_PLAN_MAX_RANK = 4 };

enum {
	MGL_OPF_PARAMS = 1 << 0,       /* creates parameters, named after the value it defines */
	MGL_OPF_SPLIT = 1 << 1,        /* takes @column / @row / @replicate */
	MGL_OPF_ELEMENTWISE = 1 << 2,  /* output element i depends on input elements i only */
	MGL_OPF_INTERNAL = 1 << 3,     /* made by the compiler, not callable from a model file */
	MGL_OPF_COLLECTIVE = 1 << 4,   /* communicates over a group */
	MGL_OPF_GRAPH = 1 << 5,        /* a node of the typed graph only, never a step of a plan */
};

/* The attributes a step may carry: MGL_ATTR_<name> numbers them, MglAttrs holds them, a
 * field each (int64_t, or double for REAL ones). Only those the step's op names mean
 * anything; the plan writes and reads just those. */
typedef enum {
#define ATTR(name, kind, lo, hi, dflt, what) MGL_ATTR_##name,
#include "ops.def"
#undef ATTR
	MGL_ATTR_COUNT
} MglAttr;

#define MGL_ATTR_T_BOOL int64_t
#define MGL_ATTR_T_INT int64_t
#define MGL_ATTR_T_REAL double
typedef struct {
#define ATTR(name, kind, lo, hi, dflt, what) MGL_ATTR_T_##kind name;
#include "ops.def"
#undef ATTR
} MglAttrs;

#define MGL_NONE INT64_MIN          /* an INT attribute that is none (ignore: no target left out) */
#define MGL_NONE_ATTR (-INFINITY)   /* ops.def: an attribute whose default is none */

typedef enum { MGL_AK_BOOL, MGL_AK_INT, MGL_AK_REAL } MglAttrKind;

typedef struct {
	const char *name;
	MglAttrKind kind;
	double lo, hi;         /* its range, both included */
	double dflt;           /* NAN: no default; MGL_NONE_ATTR: none */
	const char *what;      /* what it must be, for messages */
	size_t offset;         /* of its field in MglAttrs */
} MglAttrInfo;

extern const MglAttrInfo mgl_attrs[MGL_ATTR_COUNT];

/* Attribute k of a as a number (none as MGL_NONE_ATTR), and set from one. */
double mgl_attr_get(const MglAttrs *a, int k);
void mgl_attr_set(MglAttrs *a, int k, double v);
/* The attributes in mask (MGL_A bits) copied from src to dst. */
void mgl_attrs_copy(MglAttrs *dst, const MglAttrs *src, uint32_t mask);
#define MGL_A(name) (1u << MGL_ATTR_##name)

typedef enum {
#define OP(id, name, flags, kind, in_min, in_max, nout, attrs, layouts, grad, expr, npos_min, npos_max, kwargs, elab, sig) \
	MGL_OP_##id,
#include "ops.def"
#undef OP
	MGL_OP_COUNT
} MglOp;

/* What a step's time counts as when steps are profiled (mgl bench --profile): its op's
 * kind column in ops.def; mgl_kind_name[k] is "attention", "gemm", "layernorm",
 * "classifier", "optimizer", "collectives" or "other". */
typedef enum {
	MGL_KIND_ATTENTION, MGL_KIND_GEMM, MGL_KIND_LAYERNORM, MGL_KIND_CLASSIFIER, MGL_KIND_OPTIMIZER,
	MGL_KIND_COLLECTIVE, MGL_KIND_OTHER, MGL_KIND_COUNT
} MglKind;
extern const char *const mgl_kind_name[MGL_KIND_COUNT];

/* A row of ops.def (which says what each field means). */
typedef struct {
	const char *name;
	unsigned flags;
	MglKind kind;
	int in_min, in_max, nout;   /* in_max -1: any number; nout -1: as many as inputs */
	uint32_t attrs;             /* MGL_A(name) bits */
	const char *layouts;
	const char *grad;           /* "-": not differentiable */
	const char *expr;           /* "": cannot be fused into a chain */
	int npos_min, npos_max;
	const char *kwargs;
	const char *sig;
} MglOpInfo;

extern const MglOpInfo mgl_ops[MGL_OP_COUNT];
/* " name=value" for each attribute op carries, as a plan's step line ends; unless all,
 * only those that differ from their defaults. */
void mgl_attrs_write(FILE *f, MglOp op, const MglAttrs *a, bool all);

/* ---------------------------------------------------------------- layouts */

typedef enum { MGL_F32, MGL_I32, MGL_BF16 } MglDtype;
extern const char *const mgl_dtype_name[3];
extern const int mgl_dtype_size[3];

/* Where a value lives on the tensor-parallel group. */
typedef enum {
	MGL_L_R,   /* replicated: every rank holds the whole tensor */
	MGL_L_S,   /* split along dimension `dim` (counted from the end: 1 is the last) */
	MGL_L_P,   /* partial: the value is the sum over ranks */
	MGL_L_M,   /* partial: the value is the maximum over ranks */
} MglLayoutKind;

typedef struct { uint8_t kind; uint8_t dim; } MglLayout;

/* "R", "S1", "P", "M" */
const char *mgl_layout_str(MglLayout l, char buf[8]);

/* ---------------------------------------------------------------- the plan */

typedef enum {
	MGL_V_INPUT,    /* fed by the data loader each step */
	MGL_V_PARAM,    /* this rank's shard of a parameter (fp32 master) */
	MGL_V_ACT,      /* an activation or activation gradient: lives in the arena */
	MGL_V_GRAD,     /* a parameter's gradient (fp32, persistent, reduced after backward) */
	MGL_V_STATE,    /* optimizer state (AdamW moments) */
	MGL_V_ROLE_COUNT
} MglRole;
extern const char *const mgl_role_name[MGL_V_ROLE_COUNT];

typedef struct {
	const char *name;
	MglRole role;
	MglDtype dtype;
	int rank;
	int64_t shape[MGL_PLAN_MAX_RANK];   /* this rank's shape */
	MglLayout layout;
	int param;             /* PARAM, GRAD, STATE: the parameter it belongs to; else -1
				  (a PARAM or GRAD value of none is a span: MglSpan) */
	int64_t offset;        /* bytes from the start of its region (arena for ACT and INPUT) */
	int64_t bytes;
} MglValue;

/* A span: a PARAM or GRAD value that belongs to no parameter (param -1) and whose bytes are
 * those of two or more parameters' values of its role, laid end to end in the order given:
 * its shape theirs stacked along the first dimension ([3 D, K] for three [D, K]). One GEMM
 * reads or writes a span where each of its members would take a GEMM of its own
 * (compiler/hfuse.c: attention's q, k and v in the backward pass). memplan.c lays the
 * members out so; a plan's reader checks that the members it finds in the span's bytes
 * tile it exactly, each a whole parameter's value of the span's type and trailing shape.
 * A layout span (value -1) has no value of its own: its members, parameters or activations,
 * are only laid end to end, so that a backend may run their steps as one batched GEMM where
 * it finds them so (compiler/hfuse.c: q, k and v's forward; runtime/cuda/ops.c checks the
 * offsets itself). Only the compiler keeps this list: a plan read from disk has none. */
enum { MGL_SPAN_MAX = 4 };
typedef struct {
	int value;                     /* the span, or -1: a layout span */
	int member[MGL_SPAN_MAX], n;   /* its members, first to last */
} MglSpan;

typedef enum { MGL_FWD, MGL_BWD, MGL_OPT } MglPhase;
extern const char *const mgl_phase_name[3];

typedef enum { MGL_GROUP_TP, MGL_GROUP_DP } MglGroup;

typedef struct {
	MglOp op;
	MglPhase phase;
	int *in, nin;          /* value ids */
	int *out, nout;
	int layer;             /* the Transformer layer it belongs to, or -1 */
	int line, col;         /* in the model file */
	int fuse;              /* the fused kernel it belongs to: the index of its first step, or -1 */
	MglAttrs attr;         /* those its op names (ops.def; docs/plan.md) */
	const void *tok;       /* compiler only: the MglTok it came from, for messages */
} MglStep;

/* A GEMM's epilogue (its attribute epi): the steps after it in its fused group that the
 * GEMM computes: a matmul's bias_add of its output, and then the gelu of that or the add
 * of another value (the residual: cuBLASLt's C input, beta = 1); a matmul_dx's accumulate
 * of its output into another gradient (C again), or the gelu_bwd of its output (cuBLASLt's
 * DGELU, the pre-activation its auxiliary input). */
enum { MGL_EPI_BIAS = 1, MGL_EPI_GELU = 2, MGL_EPI_ADD = 4, MGL_EPI_DGELU = 8 };
enum { MGL_CHAIN_MAX_IN = 12 };   /* values a fused chain reads from outside it */

/* How a parameter starts: N(0, std), zeros or ones. */
typedef enum { MGL_INIT_NORMAL, MGL_INIT_ZEROS, MGL_INIT_ONES } MglInit;
extern const char *const mgl_init_name[3];

typedef struct {
	const char *name;      /* layers.3.attention.q.weight */
	int rank;
	int64_t shape[MGL_PLAN_MAX_RANK];   /* global, as stored in checkpoints */
	int64_t padded;        /* rows after vocabulary padding (= shape[0] if none) */
	int split_dim;         /* dimension from the start that is split over tp, or -1 */
	MglInit init;
	double std;            /* MGL_INIT_NORMAL */
	int value, grad, m, v; /* value ids on this rank */
	int line, col;
} MglPlanParam;

/* Activation recomputation (compiler/recompute.c, docs/plan.md): none; selective, the
 * layers' norms and activation functions run again in the backward pass (their outputs are
 * not kept); full, each layer runs again from its input, the only activation it keeps. */
typedef enum { MGL_RECOMPUTE_NONE, MGL_RECOMPUTE_SELECTIVE, MGL_RECOMPUTE_FULL } MglRecompute;
extern const char *const mgl_recompute_name[3];   /* "none", "selective", "full" */

typedef struct {
	int version;
	const char *model, *preset, *source;
	int tp, dp;
	bool sp;
	int zero;                      /* ZeRO stage: 0, or 1 (the optimizer's state sharded over dp) */
	MglRecompute recompute;
	int64_t batch, seq;            /* micro-batch and sequence length it was compiled for */
	MglDtype act_dtype;            /* storage of activations (f32 on cpu, bf16 on cuda) */
	int64_t vocab, vocab_padded;
	MglValue *values;
	int nvalues, capvalues;
	MglStep *steps;
	int nsteps, capsteps;
	MglPlanParam *params;
	int nparams, capparams;
	int64_t arena_bytes;           /* activations: the peak of the memory plan */
	int loss;                      /* the value the model returns: its loss, a scalar activation */
	int logits;                    /* the logits of its (first) cross-entropy, this rank's part; -1 if none */
	int64_t persistent_bytes[MGL_V_ROLE_COUNT];   /* per role, this rank */
	int nlayers;
	MglSpan *spans;                /* compiler only (hfuse.c for memplan.c): not in a plan's text */
	int nspans, capspans;
} MglPlan;

/* ZeRO stage 1 (zero 1): dp rank d owns elements [d c, min(n, (d + 1) c)) of each
 * parameter's n elements on this tp rank, c = ceil(n / dp). It keeps AdamW's moments for
 * those alone (values of shape [c]), receives the gradient summed over dp for those alone
 * (reduce_scatter, group dp) and updates those, then all_gather (group dp) gives every rank
 * the whole parameter again. The parameter's and gradient's buffers hold dp c elements
 * (their bytes padded), so that every rank's piece has c: NCCL's collectives take equal
 * pieces. c is mgl_zero_chunk; *start and the return value are d's piece, 0 long when
 * n < (d + 1) c runs past the end. */
static inline int64_t mgl_zero_chunk(int64_t n, int dp) { return (n + dp - 1) / dp; }
static inline int64_t mgl_zero_piece(int64_t n, int dp, int d, int64_t *start)
{
	int64_t c = mgl_zero_chunk(n, dp), s = (int64_t)d * c;
	*start = s < n ? s : n;
	return s < n ? (n - s < c ? n - s : c) : 0;
}

/* Elements of a value (this rank's shape), and its bytes at its dtype. */
int64_t mgl_numel(const MglValue *v);
int64_t mgl_value_bytes(const MglValue *v);
/* A value seen as [rows, last]: its last dimension (1 for a scalar) and the rows before it. */
static inline int64_t mgl_last_dim(const MglValue *v) { return v->rank ? v->shape[v->rank - 1] : 1; }
static inline int64_t mgl_rows(const MglValue *v) { return mgl_numel(v) / (mgl_last_dim(v) ? mgl_last_dim(v) : 1); }
/* Elements of a parameter's whole, unpadded tensor (as checkpoints hold it). */
int64_t mgl_param_numel(const MglPlanParam *q);

/* When each arena value (roles input and act) is alive: from step first[v] (0 for inputs)
 * to step last[v], both included; -1 for values no step makes. A value no step reads is an
 * output of the plan (the loss) and lives to the last step. The inputs of a step of a fused
 * group live to the group's last step: the group is one kernel, which reads its inputs
 * while it writes its outputs. The memory plan (compiler/memplan.c) places values by
 * these lifetimes and mgl_plan_check_memory holds any plan to them. first, last: [nvalues]. */
void mgl_plan_lifetimes(const MglPlan *p, int *first, int *last);
/* When a runtime that runs collectives beside the compute (the cuda backend: their own
 * stream) must have each one finished: wait[c], for each collective step c, is the first
 * later step that reads one of c's outputs or writes bytes of c's inputs or outputs (the
 * memory plan may give a collective's input, read for the last time there, to a value made
 * after it), or p->nsteps when none does; -1 for the other steps. wait: [nsteps]. */
void mgl_collective_waits(const MglPlan *p, int *wait);
/* Where a segment of steps [from, to) ends when micro-batches are interleaved (docs/plan.md,
 * "Interleaved micro-batches"): just after the first collective step of the phases asked
 * (1 << MglPhase), or at to. A runtime runs micro-batch A's segment, then B's while A's
 * collective is in flight, then A's next, and so on. */
int mgl_segment_end(const MglPlan *p, int from, int to, unsigned phases);
/* The last step of the fused group step s belongs to (s itself when it is alone). */
int mgl_group_end(const MglPlan *p, int s);
/* 0 if no two arena values alive at the same step share a byte, and fused groups are runs
 * of consecutive steps led by their first; else -1 with the two values named in err. */
int mgl_plan_check_memory(const MglPlan *p, char *err, size_t errlen);

/* Fused groups (docs/plan.md): runs of consecutive steps, marked by fuse, that a runtime
 * may run as one kernel. compiler/fuse.c forms them with these rules and the reader holds
 * a plan to them; uses[v] is how many steps read value v.
 * A chain, steps [head, last] run as one generated elementwise kernel: steps of one phase
 * whose ops have a chain expression, each making one activation (not i32) of one size,
 * each after the first reading the one before it, which no other step reads; reading
 * at most MGL_CHAIN_MAX_IN other values, none i32, each shaped like a suffix of the
 * output (broadcast from the right); and the steps that index the whole tensor (G: a
 * dropout) index values of one layout.
 * An epilogue, matmul step s with the bits epi: the bias_add of its output, which no other
 * step reads, adding a parameter, making a bf16 activation (cuBLASLt adds the parameter's
 * bf16 copy); with MGL_EPI_GELU, then the gelu of that, bf16 too, whose rows are a
 * multiple of 8 wide (cuBLASLt's auxiliary output); or with MGL_EPI_ADD, then the add of
 * that and another value. A matmul_dx step's, MGL_EPI_ADD alone: the accumulate of its
 * output and another value; or MGL_EPI_DGELU alone: the gelu_bwd of its output (read by no
 * other step) and a bf16 pre-activation of its shape, making a bf16 activation gradient
 * whose rows are a multiple of 8 wide (the auxiliary input's). What is added: an
 * activation (or activation gradient) of the output's type, shape and layout, read by no
 * step of the group but that one, into an activation likewise; the GEMM's output and the
 * bias_add's read by no other step.
 * mgl_epilogue_steps: how many steps after the GEMM an epilogue covers.
 * A multi-tensor update, steps [head, last] run as one launch over all their parameters
 * (Apex's multi_tensor_apply): adamw steps of one phase clipping by one gradient norm. */
bool mgl_chain_ok(const MglPlan *p, const int *uses, int head, int last);
bool mgl_epilogue_ok(const MglPlan *p, const int *uses, int s, unsigned epi);
int mgl_epilogue_steps(unsigned epi);
bool mgl_adamw_group_ok(const MglPlan *p, int head, int last);
/* A softmax's statistics, steps [head, last = head + 1] run as one pass over the logits: a
 * vocab_max, then a vocab_stats of the same phase and limit reading the same logits and
 * that maximum. */
bool mgl_stats_group_ok(const MglPlan *p, int head, int last);
/* A norm's backward adding another gradient or summing a bias gradient, steps [head, last]
 * as its kernels: a layernorm_bwd or rmsnorm_bwd; then, or not, an accumulate of the same
 * phase of its input gradient dx (read by no other step) and another activation gradient
 * like it, into one like it (the residual stream's gradient: the norm's kernel adds it as
 * it writes dx); then, or not, a bias_grad of the same phase of that gradient (the
 * accumulate's output, else dx) into an f32 vector of its width (the bias gradient of the
 * linear whose output gradient that is: the norm's column sums take it too). At least one
 * of the two. */
bool mgl_norm_add_group_ok(const MglPlan *p, const int *uses, int head, int last);
/* An attention_bwd_qkv and the bias_grad right after it of its output [B, S, 3 D] (dq, dk
 * and dv side by side: q, k and v's bias gradients, an f32 vector [3 D]), steps [head, last =
 * head + 1] of one phase: the attention's kernels sum the columns as they make them
 * (compiler/fuse.c). */
bool mgl_qkv_bias_group_ok(const MglPlan *p, int head, int last);
/* 0 if every fused group of p keeps the rules above, else -1 with the group in err. */
int mgl_plan_check_fusion(const MglPlan *p, char *err, size_t errlen);

/* The kind of each step of p, into kind[nsteps]: its op's (ops.def), except that
 *   - a step of a fused group counts as the group's first (the group is one kernel: a GEMM
 *     and its epilogue are gemm, a chain what its first op is);
 *   - a GEMM of the output layer counts as classifier: one that makes a value a
 *     classifier step reads (the logits) or reads one a classifier step makes (their
 *     gradient), so the classifier's time is the same whether or not it is fused. */
void mgl_step_kinds(const MglPlan *p, MglKind *kind);

/* The plan as text (docs/plan.md). */
void mgl_plan_write(FILE *f, const MglPlan *p);
/* Reads a plan (a file of at most MGL_PLAN_MAX_BYTES); NULL with a message in err
 * (file:line: what is wrong) if it is not one. */
enum { MGL_PLAN_MAX_BYTES = 1 << 30 };
MglPlan *mgl_plan_read(MglArena *a, const char *text, size_t len, const char *name, char *err, size_t errlen);

#endif
