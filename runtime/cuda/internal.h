/* runtime/cuda/internal.h — what the files of the cuda backend share, and nothing outside
 * runtime/cuda/ includes (cuda_backend.h is the directory's contract):
 *   cuda.c    the backend: memory, communicators, the step as a CUDA graph, host copies
 *   nvrtc.c   the kernels: NVRTC, the on-disk cache, loading
 *   ops.c     the ops: a launch (or a cuBLASLt GEMM, or an NCCL call) for each op of a plan
 *   chains.c  the generated kernels of the plan's fused elementwise chains
 *   host_comm.c  the collectives through the host, where ranks share a GPU (MGL_SHARE_GPU)
 */
#ifndef MGL_CUDA_INTERNAL_H
#define MGL_CUDA_INTERNAL_H

#include "backend.h"
#include "cuda_backend.h"

#include <cublasLt.h>
#include <cuda_runtime_api.h>
#include <nccl.h>

typedef uint16_t bf16;

/* The run's parameters as the kernels read them (struct Run in ops.cu). */
typedef struct {
	unsigned long long key;
	int train;
	float lr, beta1, beta2, eps, weight_decay, clip;
	float bc1, bc2;
} DevRun;

/* chains.c: a generated kernel for each of the plan's fused elementwise chains, and for
 * each step alone whose op has a chain expression (plan/ops.def) where the chain rules
 * allow (else its kernel in ops.c runs it) */
typedef struct {
	int head, last;            /* steps [head, last] */
	int in[MGL_CHAIN_MAX_IN];  /* the values it reads from outside, in kernel-argument order */
	int nin;
	int out;                   /* the one value it writes */
	int indexed;               /* the value whose elements G indexes (a dropout's input), or -1 */
	int width;                 /* elements a thread: 8 or 4 (vector loads) where every size allows, else 1 */
	int kernel;                /* the head of the chain whose kernel it runs (nvrtc.c: the same code) */
} CudaChain;
/* The chains (*chains malloc'd), or -(s + 1) if step s can run neither alone nor so. */
int cuda_chains(const MglPlan *p, CudaChain **chains);
char *cuda_chain_source(const MglPlan *p, const CudaChain *c, int tp);   /* malloc'd */

typedef struct CudaHostGroup CudaHostGroup;
typedef enum { CUDA_ALL_REDUCE, CUDA_REDUCE_SCATTER, CUDA_ALL_GATHER } CudaColl;

typedef struct {
	cudaGraphExec_t exec;
	bool eager, made;
} Graph;

typedef struct {
	int device;
	int arch;                 /* compute capability, 10 major + minor: 90 for sm_90 */
	cudaStream_t compute, comm;
	cudaEvent_t to_comm, to_compute;
	cudaEvent_t tune[2];   /* around the trials of a GEMM's candidate algorithms (ops.c: lt_gemm) */
	int gemm_sms;             /* SMs a GEMM beside a collective in flight is given (the rest are
				     left to NCCL's blocks), or 0: all */
	cublasLtHandle_t lt;
	void *ws;
	size_t ws_size;
	unsigned char *region[MGL_V_ROLE_COUNT];
	bf16 *shadow;             /* bf16 copies of the parameters, at half their offsets */
	float *scratch;           /* attention_bwd's dk, dv in fp32; the ce count; the norm */
	int64_t scratch_n;
	unsigned *colsum_count;   /* k_colsum's blocks done a stripe of 32 columns (0 between launches) */
	int64_t colsum_n;
	void *pack;               /* staging for the tp collectives cuda_staged says need it (NULL: none does) */
	int64_t pack_n;
	DevRun *run;
	ncclComm_t tp, dp;
	CudaHostGroup *host_tp, *host_dp;   /* MGL_SHARE_GPU: the groups instead (host_comm.c), else NULL */
	void *host_buf;           /* ... and the copies through the host */
	size_t host_cap;          /* bytes */
	Graph graphs[128];        /* by phases, first and last micro-batch, interleaved or not, and the micro-batch selected (cuda_run) */
	uint64_t module[2];       /* the keys of the loaded modules the kernels below are in: */
	int nmodules;             /* the fixed kernels' (ops.cu), then the chains' (if any) */
	cudaKernel_t *kernels;    /* ops.c's, by its numbering (cuda_kernel_names) */
	CudaChain *chains;          /* the plan's fused chains, and each one's kernel */
	int nchains;
	cudaKernel_t *chain_kernels;
	int *chain_at;            /* step -> the chain it heads, or -1 */
	int *qkv_batch;           /* step -> 3: its GEMM batched with the next two groups'; -1: done so; 0 (ops.c) */
	int *coll_wait;           /* per step: the step a collective's result is waited for at
				     (plan.h: mgl_collective_waits), -1 for other steps */
	cudaEvent_t *coll_done;   /* per collective step: recorded on the comm stream after it */
	int *inflight, ninflight; /* collectives issued and not yet waited for */
	/* Micro-batches held at once (job->nmicro): each one's activations, run parameters and
	 * collectives in flight; region[MGL_V_ACT], run, coll_done, inflight and ninflight above
	 * are the selected one's (cuda.c: cuda_use_micro) */
	struct {
		unsigned char *arena;
		DevRun *run;
		cudaEvent_t *coll_done;
		int *inflight, ninflight;
	} micro[2];
	int cur;                  /* the micro-batch selected */
	void **mt;                /* per step: its multi-tensor table (ops.c), on the device */
	int *mt_n;                /* and its chunks (blocks) */
	cublasLtMatmulAlgo_t *algo;   /* per step, found once (and at nsteps: cuda_gemm_rate's) */
	bool *has_algo;
	bool sp_grouped;          /* MGL_SP_GROUPED: tp collectives a row at a time (cuda_staged) */
	bool fa_tma;              /* the wgmma attention by TMA (its tiles; the backward's dQ, lse and delta: ops.c,
				   * op_attention, attention_bwd): 9.0, unless MGL_NO_FA_TMA */
	void *tma_encode;         /* ... and then the driver's cuTensorMapEncodeTiled */
	int sms;                  /* the GPU's SMs (gemm_sms's margin is taken from them) */
	const MglStep *step;      /* the one running: for error messages */
	int64_t allocated;        /* bytes of the cudaMallocs above */
	cudaEvent_t *marks;       /* timed runs (RtRank.step_seconds): an event before each step run, and one after */
	int *mark_step;           /* the step each mark starts; nmarks recorded in this run */
	int nmarks;
} Dev;

/* host_comm.c: where the ranks share a GPU, a collective of the group NCCL's call would
 * name (tp or dp), on device buffers: count as NCCL's (all-reduce: elements in and out;
 * reduce-scatter: out, and in is the group's size times that; all-gather: in, out the
 * size times it), dtype f32, bf16 or i32, a sum unless max (all-reduce only); in and out
 * may be the same buffer, or overlap as NCCL's in-place forms do. After the comm stream's
 * work so far; returns when the result is in place, 0 or -1 with the error in r->err. */
int cuda_host_collective(RtRank *r, bool dp, CudaColl kind, const void *in, void *out, size_t count, int dtype, bool max);
/* the job's groups (its dp tp-groups, then its tp dp-groups), or NULL out of memory */
CudaHostGroup *cuda_host_groups(const RtJob *j);
void cuda_host_groups_free(CudaHostGroup *g, const RtJob *j);
/* rank r's groups of the job's g (Dev.host_tp, host_dp: those of more than one rank); none if g is NULL */
void cuda_host_join(RtRank *r, CudaHostGroup *g);
/* a rank failed: every collective waiting or to come fails instead of waiting for it */
void cuda_host_break(CudaHostGroup *g, const RtJob *j);

/* cuda.c: an error of rank r (naming the step running, if any) into r->err; returns -1 */
int cuda_fail(RtRank *r, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
#define CK(call) do { cudaError_t e_ = (call); if (e_ != cudaSuccess) return cuda_fail(r, "%s: %s", #call, cudaGetErrorString(e_)); } while (0)
#define CKB(call) do { cublasStatus_t e_ = (call); if (e_ != CUBLAS_STATUS_SUCCESS) return cuda_fail(r, "%s: cuBLAS status %d", #call, (int)e_); } while (0)
#define CKN(call) do { ncclResult_t e_ = (call); if (e_ != ncclSuccess) return cuda_fail(r, "%s: %s", #call, ncclGetErrorString(e_)); } while (0)

/* nvrtc.c: the fixed kernels and the plan's chains, compiled (or from the cache) and loaded
 * for a GPU of compute capability major.minor into r's Dev */
int cuda_load_kernels(RtRank *r, int major, int minor);
void cuda_release_kernels(Dev *d);
/* ops.c: collectives run on the comm stream beside the compute, which waits for each at
 * the first step that needs it. cuda_comm_due: the last collective in flight that step
 * needs (all of them at step -1, the end of a run), or -1; cuda_comm_wait: the compute
 * stream waits for those. */
int cuda_comm_due(RtRank *r, int step);
int cuda_comm_wait(RtRank *r, int step);
/* A tp all_gather or reduce_scatter along dimension dim (counted from the end) of x, its
 * part or its whole, seen as [outer, n, inner] (rt_around): row o of the whole, [tp * n *
 * inner], is contiguous, and rank r's piece of it, [n * inner], sits at r * n * inner, just
 * where NCCL's all-gather puts rank r's elements in its receive buffer and its
 * reduce-scatter takes them from its send buffer. So ops.c runs it as one NCCL operation a
 * row, in one ncclGroupStart / ncclGroupEnd, straight between the tensors: no staging
 * copy, no pack or unpack kernel, and the compute stream waits only at the step that needs
 * the result. Under --sp the gathered dimension is the sequence and the rows are the
 * micro-batch's sequences: 8 to 32 in practice, each row a megabyte or so (355m tp 2: 512
 * tokens of 1024 bf16 features a rank), where each operation runs near NCCL's bandwidth.
 * But each operation has a fixed cost, whatever its bytes (its enqueue on the host when
 * the step is not replayed from a CUDA graph; on the GPU its own protocol steps and
 * handshakes between the ranks, microseconds each): it grows with the rows while the bytes
 * stay the same. Past CUDA_GROUPED_MAX rows (large batches of short sequences) the
 * collective goes through the staging buffer d->pack as one NCCL call instead, with a pack
 * or unpack kernel (one more pass over the tensor), and the compute waits for it at once
 * (the next staged collective reuses the buffer). 64: a bound chosen, not measured, above
 * the batches tp runs use and far below what NCCL takes in one group (older versions
 * refused more than 2,048 collectives). Until it is measured and checked on two GPUs the
 * row-at-a-time path is taken only under MGL_SP_GROUPED=1 (docs/gpu.md; read once when a
 * rank opens, Dev.sp_grouped: every rank of a job must be given the same, or their NCCL
 * calls would not match); by default every collective of more than one row is staged. */
#define CUDA_GROUPED_MAX 64
static inline bool cuda_staged(const MglValue *x, int dim, bool grouped)
{
	int64_t outer, n, inner;
	rt_around(x, dim, &outer, &n, &inner);
	return outer > (grouped ? CUDA_GROUPED_MAX : 1);
}
/* cuda.c: micro-batch k's activations, run parameters and collectives are the Dev's own
 * fields from now on (the selected one's ninflight kept for it) */
void cuda_use_micro(Dev *d, int k);
/* collectives in flight, of every micro-batch */
static inline int cuda_in_flight(const Dev *d)
{
	int n = d->ninflight;
	for (int k = 0; k < 2; k++)
		n += k != d->cur ? d->micro[k].ninflight : 0;
	return n;
}
/* cuda.c: cudaMalloc, counted in d->allocated */
cudaError_t cuda_malloc(Dev *d, void **p, size_t n);
/* ops.c: once the kernels are loaded and the memory allocated, what the ops' launches keep:
 * kernel attributes (the flash-attention backward's shared memory), the optimizer's tables */
int cuda_ops_prepare(RtRank *r);
/* ops.c: the bands of rows a column sum of x[M, N] is split into (scratch: bands * N floats;
 * and a counter a stripe of 32 columns) */
bool cuda_norm_one_pass(int64_t D);                 /* whether the layernorm backward takes rows of D in one pass */
int64_t cuda_norm_bands(int64_t M);                 /* its grid, for M rows */
int64_t cuda_colsum_bands(int64_t M, int64_t N);   /* at the rank's close, after its graphs */

/* ops.c: the fixed kernels of kernels/ops.cu it launches, by name (k_NAME), and each op's
 * launch, by op (NULL: the backend has no kernel of its own for it) */
extern const char *const cuda_kernel_names[];
extern const int cuda_nkernels;
typedef struct {
	RtRank *r;
	const MglStep *s;
	int index;             /* the step's number */
	bool last_micro, first_micro;   /* RtRun's */
} CudaCtx;
typedef int CudaOpFn(CudaCtx *c);
extern CudaOpFn *const cuda_ops[MGL_OP_COUNT];
/* The bf16 GEMM rate of rank r's GPU, as PyTorch's A @ B runs it: random n x n bf16
 * matrices, fp32 accumulation, a bf16 result, through the backend's own cuBLASLt call; the
 * median of 20 timed runs after 3 untimed ones, in FLOP/s. 0, with what failed in r->err,
 * if it could not be run (no room for the three matrices beside the plan). */
double cuda_gemm_rate(RtRank *r, int64_t n);

/* ---------------------------------------------------------------- values */

static inline dim3 cuda_dim3(int64_t n)
{
	dim3 d = {(unsigned)n, 1, 1};
	return d;
}

/* The storage type the backend gives a value: parameters fp32 (their bf16 copy apart: P16),
 * the rest as the plan says (gradients f32, or bf16: compiler/adamw.c) */
static inline int cuda_storage(const MglValue *x) { return x->role == MGL_V_PARAM ? MGL_F32 : (int)x->dtype; }

static inline const MglValue *val(const RtRank *r, int v) { return &r->job->plan->values[v]; }
static inline int dt(const RtRank *r, int v) { return cuda_storage(val(r, v)); }

/* A value's bytes on the device. */
static inline void *P(const RtRank *r, int v)
{
	const Dev *d = r->mem;
	const MglValue *x = val(r, v);
	return d->region[x->role == MGL_V_INPUT ? MGL_V_ACT : x->role] + x->offset;
}

/* The bf16 copy of a parameter (GEMM operands). */
static inline void *P16(const RtRank *r, int v)
{
	const Dev *d = r->mem;
	return (unsigned char *)d->shadow + val(r, v)->offset / 2;
}

#endif
