/* A stand-in libcuda.so.1 for tests: the driver API calls kgpu validate makes, on the CPU.
 *
 * cuLaunchKernel really adds the vectors, reading the kernel's arguments from kernelParams exactly as
 * the driver would, so a test passing through it proves kgpu's ctypes marshalling (pointer sizes,
 * argument order, grid covering n) rather than a canned answer. FAKE_CUDA_MODE picks a failure:
 *   nodevice   cuInit returns CUDA_ERROR_NO_DEVICE (100)
 *   wrong      one result element is off by one
 *   refuse50   the JIT refuses `.target sm_50` (CUDA_ERROR_INVALID_PTX, 218) and accepts others
 *   badptx     the JIT refuses every module, with an error log
 *   oom        cuMemAlloc returns CUDA_ERROR_OUT_OF_MEMORY (2)
 * FAKE_CUDA_VERSION sets cuDriverGetVersion (default 13000); FAKE_CUDA_LOG appends one line per context
 * API used and per module target loaded, so tests can see which path ran.
 */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

typedef int CUresult;
typedef int CUdevice;
typedef uint64_t CUdeviceptr;

static int initialised;

static const char *mode(void) { const char *m = getenv("FAKE_CUDA_MODE"); return m ? m : ""; }

static void note(const char *what) {
    const char *path = getenv("FAKE_CUDA_LOG");
    if (!path) return;
    FILE *f = fopen(path, "a");
    if (f) { fprintf(f, "%s\n", what); fclose(f); }
}

CUresult cuInit(unsigned int flags) {
    if (flags != 0) return 1;
    if (strcmp(mode(), "nodevice") == 0) return 100;
    initialised = 1;
    return 0;
}

CUresult cuDriverGetVersion(int *v) {
    const char *s = getenv("FAKE_CUDA_VERSION");
    *v = s ? atoi(s) : 13000;
    return 0;
}

CUresult cuDeviceGetCount(int *n) { if (!initialised) return 3; *n = 1; return 0; }

CUresult cuDeviceGet(CUdevice *d, int ordinal) { if (ordinal != 0) return 101; *d = 0; return 0; }

CUresult cuDeviceGetName(char *name, int len, CUdevice d) {
    (void)d; snprintf(name, (size_t)len, "Fake H100 80GB HBM3"); return 0;
}

CUresult cuDeviceGetUuid_v2(unsigned char *uuid, CUdevice d) {
    (void)d;
    static const unsigned char u[16] = {0xc7, 0x07, 0xcd, 0x42, 0x1d, 0xcd, 0x53, 0x07,
                                        0xb9, 0xcd, 0x75, 0x08, 0x18, 0x91, 0x2a, 0x76};
    memcpy(uuid, u, 16); return 0;
}

CUresult cuDeviceGetPCIBusId(char *bus, int len, CUdevice d) {
    (void)d; snprintf(bus, (size_t)len, "0000:00:1E.0"); return 0;
}

CUresult cuDeviceGetAttribute(int *v, int attr, CUdevice d) {
    (void)d;
    if (attr == 75) { *v = 9; return 0; }
    if (attr == 76) { *v = 0; return 0; }
    return 1;
}

struct ctx_params { void *exec; int n; void *cig; };
static int ctx_token;

CUresult cuCtxCreate_v2(void **ctx, unsigned int flags, CUdevice d) {
    (void)flags; (void)d; note("cuCtxCreate_v2"); *ctx = &ctx_token; return 0;
}

CUresult cuCtxCreate_v4(void **ctx, struct ctx_params *p, unsigned int flags, CUdevice d) {
    (void)flags; (void)d;
    if (!p || p->exec || p->cig || p->n) return 1;
    note("cuCtxCreate_v4"); *ctx = &ctx_token; return 0;
}

CUresult cuCtxDestroy_v2(void *ctx) { return ctx == &ctx_token ? 0 : 201; }
CUresult cuCtxSynchronize(void) { return 0; }

static int module_token, function_token;

CUresult cuModuleLoadDataEx(void **module, const char *image, unsigned int n, int *opts, void **vals) {
    char *errlog = NULL; size_t errlen = 0;
    for (unsigned int i = 0; i < n; i++) {
        if (opts[i] == 5) errlog = (char *)vals[i];
        if (opts[i] == 6) errlen = (size_t)(uintptr_t)vals[i];
    }
    if (!strstr(image, ".entry vectorAdd(")) return 218;
    int sm50 = strstr(image, ".target sm_50") != NULL;
    if (strcmp(mode(), "badptx") == 0 || (sm50 && strcmp(mode(), "refuse50") == 0)) {
        if (errlog && errlen) snprintf(errlog, errlen, "ptxas fatal   : Unsupported .target 'sm_50'");
        return 218;
    }
    const char *t = strstr(image, ".target ");
    char line[64] = {0};
    if (t) { size_t k = strcspn(t, "\n"); if (k > 63) k = 63; memcpy(line, t, k); }
    note(line);
    *module = &module_token;
    return 0;
}

CUresult cuModuleGetFunction(void **fn, void *module, const char *name) {
    if (module != &module_token) return 400;
    if (strcmp(name, "vectorAdd") != 0) return 500;
    *fn = &function_token; return 0;
}

CUresult cuModuleUnload(void *module) { return module == &module_token ? 0 : 400; }

CUresult cuMemAlloc_v2(CUdeviceptr *p, size_t bytes) {
    if (strcmp(mode(), "oom") == 0) return 2;
    void *m = malloc(bytes); if (!m) return 2;
    *p = (CUdeviceptr)(uintptr_t)m; return 0;
}

CUresult cuMemFree_v2(CUdeviceptr p) { free((void *)(uintptr_t)p); return 0; }

CUresult cuMemcpyHtoD_v2(CUdeviceptr dst, const void *src, size_t n) {
    memcpy((void *)(uintptr_t)dst, src, n); return 0;
}

CUresult cuMemcpyDtoH_v2(void *dst, CUdeviceptr src, size_t n) {
    memcpy(dst, (const void *)(uintptr_t)src, n); return 0;
}

CUresult cuLaunchKernel(void *fn, unsigned gx, unsigned gy, unsigned gz, unsigned bx, unsigned by, unsigned bz,
                        unsigned shared, void *stream, void **params, void **extra) {
    (void)stream;
    if (fn != &function_token || gy != 1 || gz != 1 || by != 1 || bz != 1 || shared != 0 || extra) return 1;
    const float *a = (const float *)(uintptr_t)*(CUdeviceptr *)params[0];
    const float *b = (const float *)(uintptr_t)*(CUdeviceptr *)params[1];
    float *c = (float *)(uintptr_t)*(CUdeviceptr *)params[2];
    int n = *(int *)params[3];
    for (unsigned long i = 0; i < (unsigned long)gx * bx && i < (unsigned long)n; i++) c[i] = a[i] + b[i];
    if (strcmp(mode(), "wrong") == 0) c[n / 2] += 1.0f;
    return 0;
}

CUresult cuGetErrorName(CUresult e, const char **s) {
    switch (e) {
    case 2: *s = "CUDA_ERROR_OUT_OF_MEMORY"; return 0;
    case 100: *s = "CUDA_ERROR_NO_DEVICE"; return 0;
    case 218: *s = "CUDA_ERROR_INVALID_PTX"; return 0;
    default: *s = "CUDA_ERROR_UNKNOWN"; return 0;
    }
}

CUresult cuGetErrorString(CUresult e, const char **s) {
    switch (e) {
    case 2: *s = "out of memory"; return 0;
    case 100: *s = "no CUDA-capable device is detected"; return 0;
    case 218: *s = "a PTX JIT compilation failed"; return 0;
    default: *s = "unknown error"; return 0;
    }
}
