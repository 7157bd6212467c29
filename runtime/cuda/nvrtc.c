/* runtime/cuda/nvrtc.c — the cuda backend's kernels, two modules a rank: kernels/ops.cu
 * (the same for every plan) and the plan's generated chains (chains.c), each with
 * kernels/prelude.cuh before it. Each is compiled by NVRTC for the device's architecture
 * the first time and cached on disk by a hash of its source, the prelude, the options and
 * the versions, then loaded through the runtime API (cudaLibraryLoadData: no libcuda link,
 * so the one mgl binary starts on a machine without a driver and uses the cpu backend).
 * Two modules, not one, because ops.cu takes NVRTC about 20 s and the chains a second or
 * two: a new plan (another batch, tp, model) compiles only its chains.
 */
#include "internal.h"

#include <nvrtc.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

extern const char rt_kernels_src[], rt_kernels_prelude[];   /* kernels/ops.cu, prelude.cuh: embedded by the Makefile */

/* Modules by the hash of their source (the fixed kernels, and a plan's chains): NVRTC and
 * the loading once for each, whichever rank asks first; counted by the ranks using them and
 * unloaded when the last one closes (a process may run many plans one after another). */
static pthread_mutex_t module_lock = PTHREAD_MUTEX_INITIALIZER;
static struct Module { uint64_t key; cudaLibrary_t lib; int users; } *modules;
static int nmodules;

static uint64_t fnv(const void *p, size_t n, uint64_t h)
{
	for (size_t i = 0; i < n; i++)
		h = (h ^ ((const unsigned char *)p)[i]) * 1099511628211ull;
	return h;
}

static const char *cache_dir(char *buf, size_t n)
{
	const char *m = getenv("MGL_CACHE"), *x = getenv("XDG_CACHE_HOME"), *h = getenv("HOME");
	if (m)
		snprintf(buf, n, "%s", m);
	else if (x)
		snprintf(buf, n, "%s/mgl", x);
	else
		snprintf(buf, n, "%s/.cache/mgl", h ? h : "/tmp");
	return buf;
}

/* A cache file: "MGLK", the key, the size, a checksum, then the cubin. Untrusted: all of
 * it is checked, and a file that fails is ignored (and rewritten). */
static void *cache_load(const char *path, uint64_t key, size_t *n)
{
	FILE *f = fopen(path, "rb");
	if (!f)
		return NULL;
	uint64_t hdr[4];
	void *buf = NULL;
	if (fread(hdr, sizeof hdr, 1, f) == 1 && hdr[0] == 0x4b4c474dull && hdr[1] == key && hdr[2] > 0 &&
	    hdr[2] < (1u << 30) && (buf = malloc(hdr[2])) && fread(buf, 1, hdr[2], f) == hdr[2] &&
	    fnv(buf, hdr[2], 1469598103934665603ull) == hdr[3] && fgetc(f) == EOF) {
		*n = hdr[2];
		fclose(f);
		return buf;
	}
	free(buf);
	fclose(f);
	return NULL;
}

/* Through a temporary file and a rename, but not io.c's rt_atomic_open: several processes
 * may store one entry at once, so the temporary name is the process's own, and a cache
 * needs no sync (a torn or lost file fails cache_load's checks and is compiled again). */
static void cache_store(const char *dir, const char *path, uint64_t key, const void *buf, size_t n)
{
	char tmp[1100];
	mkdir(dir, 0777);
	snprintf(tmp, sizeof tmp, "%s.%d.tmp", path, (int)getpid());
	FILE *f = fopen(tmp, "wb");
	if (!f)
		return;   /* no cache: compile every time */
	uint64_t hdr[4] = {0x4b4c474dull, key, n, fnv(buf, n, 1469598103934665603ull)};
	bool ok = fwrite(hdr, sizeof hdr, 1, f) == 1 && fwrite(buf, 1, n, f) == n;
	ok &= fclose(f) == 0;
	if (!ok || rename(tmp, path))
		remove(tmp);
}

/* Compiles src (kernels/ops.cu if NULL) for sm_XY with NVRTC: the cubin (malloc'd) or NULL
 * with err. */
void *rt_cuda_compile(const char *src, int major, int minor, size_t *n, char *err, size_t errlen)
{
	char arch[64];
	/* 9.0 as sm_90a: its architecture-specific instructions (wgmma) run on it alone, and
	 * a cubin compiled so is for it alone, which is what this one is */
	snprintf(arch, sizeof arch, "--gpu-architecture=sm_%d%d%s", major, minor, major == 9 && minor == 0 ? "a" : "");
	const char *opts[] = {arch, "-default-device", "--std=c++17", "-lineinfo"};
	nvrtcProgram prog;
	const char *headers[] = {rt_kernels_prelude}, *names[] = {"prelude.cuh"};
	nvrtcResult rc = nvrtcCreateProgram(&prog, src ? src : rt_kernels_src, src ? "chains.cu" : "kernels/ops.cu", 1, headers,
					    names);
	if (rc != NVRTC_SUCCESS) {
		snprintf(err, errlen, "NVRTC: %s", nvrtcGetErrorString(rc));
		return NULL;
	}
	rc = nvrtcCompileProgram(prog, (int)(sizeof opts / sizeof opts[0]), opts);
	if (rc != NVRTC_SUCCESS) {
		size_t ln = 0;
		nvrtcGetProgramLogSize(prog, &ln);
		char *log = malloc(ln + 1);
		if (log)
			log[0] = 0, nvrtcGetProgramLog(prog, log);
		snprintf(err, errlen, "NVRTC could not compile %s for sm_%d%d: %s\n%.1500s",
			 src ? "the generated chains" : "kernels/ops.cu", major, minor, nvrtcGetErrorString(rc),
			 log ? log : "(no log: out of host memory)");
		free(log);
		nvrtcDestroyProgram(&prog);
		return NULL;
	}
	void *cubin = NULL;
	bool sized = nvrtcGetCUBINSize(prog, n) == NVRTC_SUCCESS;
	if (sized && !(cubin = malloc(*n))) {
		snprintf(err, errlen, "out of host memory: the cubin for sm_%d%d (%s bytes)", major, minor,
			 mgl_commas((int64_t)*n, (char[32]){0}));
	} else if (!sized || nvrtcGetCUBIN(prog, cubin) != NVRTC_SUCCESS) {
		free(cubin);
		cubin = NULL;
		snprintf(err, errlen, "NVRTC: no cubin for sm_%d%d", major, minor);
	}
	nvrtcDestroyProgram(&prog);
	return cubin;
}

/* The module of src for this GPU (compiled, or from the disk cache, or already loaded);
 * its key into *key for cuda_release_kernels. */
static int load_module(RtRank *r, const char *src, int major, int minor, cudaLibrary_t *lib, uint64_t *keyp)
{
	pthread_mutex_lock(&module_lock);
	int rc = 0;
	int nv_major = 0, nv_minor = 0, driver = 0;
	nvrtcVersion(&nv_major, &nv_minor);
	cudaDriverGetVersion(&driver);
	uint64_t key = fnv(src, strlen(src), fnv(rt_kernels_prelude, strlen(rt_kernels_prelude), 1469598103934665603ull));
	int facts[5] = {major, minor, nv_major, nv_minor, driver};
	key = fnv(facts, sizeof facts, key);
	*keyp = key;
	for (int i = 0; i < nmodules; i++)
		if (modules[i].key == key) {
			*lib = modules[i].lib;
			modules[i].users++;
			goto out;
		}
	char dir[900], path[1000];
	cache_dir(dir, sizeof dir);
	snprintf(path, sizeof path, "%s/kernels-%016llx.cubin", dir, (unsigned long long)key);
	size_t n = 0;
	void *cubin = cache_load(path, key, &n);
	if (!cubin) {
		char err[2048];
		if (!(cubin = rt_cuda_compile(src == rt_kernels_src ? NULL : src, major, minor, &n, err, sizeof err))) {
			rc = cuda_fail(r, "%s", err);
			goto out;
		}
		cache_store(dir, path, key, cubin, n);
	}
	cudaError_t e = cudaLibraryLoadData(lib, cubin, NULL, NULL, 0, NULL, NULL, 0);
	free(cubin);
	if (e != cudaSuccess) {
		rc = cuda_fail(r, "loading the kernels: %s", cudaGetErrorString(e));
		goto out;
	}
	struct Module *grown = realloc(modules, (size_t)(nmodules + 1) * sizeof *modules);
	if (!grown) {
		cudaLibraryUnload(*lib);
		rc = cuda_fail(r, "out of host memory for the kernel modules");
		goto out;
	}
	modules = grown;
	modules[nmodules++] = (struct Module){key, *lib, 1};
out:
	pthread_mutex_unlock(&module_lock);
	return rc;
}

/* The plan's chains (chains.c) as one source after the prelude (malloc'd), each kernel once:
 * a chain whose kernel would be the same as an earlier one's but for its name (the same
 * steps on values of the same sizes, as every layer has) runs that one, chains[c].kernel
 * (a GPT-2 124M plan without dropout: 85 chains, 5 kernels). */
static char *chains_source(const MglPlan *p, CudaChain *chains, int n)
{
	static const char head[] = "#include \"prelude.cuh\"\n";
	size_t len = sizeof head;
	char *src = mgl_xmalloc(len, "the chain kernels' source"), **k = mgl_xcalloc((size_t)n + 1, sizeof *k, "the chain kernels");
	memcpy(src, head, len);
	for (int c = 0; c < n; c++) {
		k[c] = cuda_chain_source(p, &chains[c], p->tp);
		const char *params = strchr(strstr(k[c], "void chain_"), '(');
		chains[c].kernel = chains[c].head;
		for (int e = 0; e < c && chains[c].kernel == chains[c].head; e++)
			if (chains[e].kernel == chains[e].head && !strcmp(params, strchr(strstr(k[e], "void chain_"), '(')))
				chains[c].kernel = chains[e].head;
		if (chains[c].kernel != chains[c].head)
			continue;
		src = mgl_xrealloc(src, len + strlen(k[c]), "the chain kernels' source");
		memcpy(src + len - 1, k[c], strlen(k[c]) + 1);
		len += strlen(k[c]);
	}
	for (int c = 0; c < n; c++)
		free(k[c]);
	free(k);
	return src;
}

void *rt_cuda_compile_plan(const MglPlan *p, int major, int minor, size_t *n, int *nchains, char *err, size_t errlen)
{
	CudaChain *chains = NULL;
	*nchains = cuda_chains(p, &chains);
	if (*nchains < 0) {
		snprintf(err, errlen, "step %d: the cuda backend has no kernel for %s", -*nchains - 1,
			 mgl_ops[p->steps[-*nchains - 1].op].name);
		return NULL;
	}
	char *src = chains_source(p, chains, *nchains);
	if (getenv("MGL_KERNEL_SOURCE"))   /* for debugging (docs/gpu.md) */
		fputs(src, stdout);
	void *cubin = rt_cuda_compile(src, major, minor, n, err, errlen);
	free(src);
	free(chains);
	return cubin;
}

/* The rank's two modules (the fixed kernels; the plan's chains, if it has any), loaded for
 * its GPU. */
int cuda_load_kernels(RtRank *r, int major, int minor)
{
	Dev *d = r->mem;
	const MglPlan *p = r->job->plan;
	d->chain_at = malloc((size_t)(p->nsteps + 1) * sizeof *d->chain_at);
	if (!d->chain_at)
		return cuda_fail(r, "out of host memory: the steps' chains (%s bytes)",
				 mgl_commas((int64_t)((size_t)(p->nsteps + 1) * sizeof *d->chain_at), (char[32]){0}));
	for (int s = 0; s < p->nsteps; s++)
		d->chain_at[s] = -1;
	int n = cuda_chains(p, &d->chains);
	if (n < 0)
		return cuda_fail(r, "step %d: the cuda backend has no kernel for %s", -n - 1, mgl_ops[p->steps[-n - 1].op].name);
	d->nchains = n;
	for (int c = 0; c < n; c++)
		d->chain_at[d->chains[c].head] = c;
	cudaLibrary_t lib;
	if (load_module(r, rt_kernels_src, major, minor, &lib, &d->module[0]))
		return -1;
	d->nmodules = 1;
	d->kernels = calloc((size_t)cuda_nkernels, sizeof *d->kernels);
	d->chain_kernels = calloc((size_t)d->nchains + 1, sizeof *d->chain_kernels);
	if (!d->kernels || !d->chain_kernels)
		return cuda_fail(r, "out of host memory: the kernel table (%s bytes)",
				 mgl_commas((int64_t)((size_t)(cuda_nkernels + d->nchains + 1) * sizeof *d->kernels), (char[32]){0}));
	for (int k = 0; k < cuda_nkernels; k++)
		CK(cudaLibraryGetKernel(&d->kernels[k], lib, cuda_kernel_names[k]));
	if (!n)
		return 0;
	char *src = chains_source(p, d->chains, n);
	int rc = load_module(r, src, major, minor, &lib, &d->module[1]);
	free(src);
	if (rc)
		return -1;
	d->nmodules = 2;
	for (int c = 0; c < d->nchains; c++) {
		char name[64];
		snprintf(name, sizeof name, "chain_%d", d->chains[c].kernel);
		CK(cudaLibraryGetKernel(&d->chain_kernels[c], lib, name));
	}
	return 0;
}

/* The rank no longer uses its modules: the last user of each unloads it. */
void cuda_release_kernels(Dev *d)
{
	pthread_mutex_lock(&module_lock);
	for (int m = 0; m < d->nmodules; m++)
		for (int i = 0; i < nmodules; i++)
			if (modules[i].key == d->module[m] && --modules[i].users == 0) {
				cudaLibraryUnload(modules[i].lib);
				modules[i] = modules[--nmodules];
				break;
			}
	pthread_mutex_unlock(&module_lock);
	d->nmodules = 0;
}
