/* runtime/cuda/cuda_backend.h — the cuda backend's contract (cuda.c, nvrtc.c, ops.c,
 * chains.c; internal.h is what they share); built when the CUDA toolkit is (make CUDA=1,
 * the default where /usr/local/cuda exists). */
#ifndef MGL_CUDA_BACKEND_H
#define MGL_CUDA_BACKEND_H

#include <stddef.h>

#include "backend.h"

extern const RtBackend rt_cuda_backend;
/* GPUs this process can use: 0 without a driver or a device (the cpu backend then). */
int rt_cuda_devices(void);
/* CUDA C (kernels/ops.cu when src is NULL), which may #include "prelude.cuh"
 * (kernels/prelude.cuh), compiled by NVRTC for sm_<major><minor>: a cubin (malloc'd), or
 * NULL with NVRTC's log in err. Needs no GPU: CI checks every kernel builds. */
void *rt_cuda_compile(const char *src, int major, int minor, size_t *n, char *err, size_t errlen);
/* The same for a plan's generated chains (the second module a rank loads; ops.cu is the
 * first); *nchains: how many chains. */
void *rt_cuda_compile_plan(const MglPlan *p, int major, int minor, size_t *n, int *nchains, char *err, size_t errlen);

#endif
