/* stub_libcuda.c: a stand-in libcuda.so for running the CUDA engines' host path on a machine without a GPU.
 * It checks PLUMBING, NOT NUMBERS: kernels never execute (device memory is host memory that only copies and
 * memsets touch), so every logit a test reads back is whatever the buffers held. What it does check, each
 * refusal as the real driver's error code plus a line in the log:
 *   - module loads: the image must be a CUBIN (ELF) or PTX text; kernels and their parameter sizes are read
 *     from the CUBIN's .nv.info.<kernel> sections (EIATTR_KPARAM_INFO records) or the PTX .entry lists;
 *   - cuModuleGetFunction: the name must be a kernel of that image; refused during stream capture (strict
 *     lazy-loading drivers refuse it there too, CUDA_ERROR_STREAM_CAPTURE_UNSUPPORTED);
 *   - launches: grid/block against the device limits below, dynamic shared memory against the kernel's
 *     attribute (default 48 KB - static, as the real driver) and static + dynamic against the opt-in limit,
 *     the parameter array (every pointer non-null for each parameter of the signature), no `extra`;
 *   - copies and memsets: the device range must lie inside one allocation; host copies refused in capture;
 *   - stream capture / graph instantiate / graph launch: captured launches are replayed into the log;
 *   - freed memory: an 8-byte parameter equal to the base of a freed (and not re-allocated) allocation is refused
 *     at launch and at every graph launch (a graph captured before a buffer moved; the real GPU would fault).
 * Every launch is appended to the file named by STUB_CUDA_LOG ("launch|replay <kernel> grid=.. block=..
 * smem=.. params=N"). Build: gcc -O1 -shared -fPIC -o libcuda.so.1 stub_libcuda.c
 */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

typedef int CUresult;
enum { OK = 0, INVALID_VALUE = 1, OUT_OF_MEMORY = 2, INVALID_IMAGE = 200, INVALID_HANDLE = 400, NOT_FOUND = 500,
       LAUNCH_OUT_OF_RESOURCES = 701, CAPTURE_UNSUPPORTED = 900 };

#define OPTIN_SMEM 232448      /* H100/H200: 227 KB per block after opting in */
#define DEFAULT_SMEM 49152     /* 48 KB without the opt-in */
#define MAX_KERNELS 64
#define MAX_PARAMS 32
#define MAX_ALLOCS 65536
#define MAX_NODES 8192

typedef struct { char name[128]; int nparams; int sizes[MAX_PARAMS]; int static_smem; int max_dynamic; } Kernel;
typedef struct { int magic; int nkernels; Kernel k[MAX_KERNELS]; } Module;
typedef struct { Kernel* k; unsigned g[3], b[3], smem; int nparams; uint64_t args[MAX_PARAMS]; } Node;
typedef struct { int capturing; int nnodes; Node* nodes; } Stream;
typedef struct { int nnodes; Node* nodes; } Graph;

static FILE* g_log;
static int g_cc = 90;
static struct { uint8_t* p; size_t n; } g_alloc[MAX_ALLOCS];
static int g_nalloc;

static void logf_(const char* fmt, ...) __attribute__((format(printf, 1, 2)));
#include <stdarg.h>
static void logf_(const char* fmt, ...) {
  if (!g_log) return;
  va_list a; va_start(a, fmt); vfprintf(g_log, fmt, a); va_end(a); fputc('\n', g_log); fflush(g_log);
}
static CUresult refuse(CUresult rc, const char* what) { logf_("REFUSED %d %s", rc, what); return rc; }

/* Not a driver entry point: lets a test name the log file (.NET on Linux does not pass its own
 * Environment.SetEnvironmentVariable changes to getenv). */
void stubSetLog(const char* path) { if (g_log) fclose(g_log); g_log = fopen(path, "a"); }

CUresult cuInit(unsigned flags) {
  (void)flags;
  const char* path = getenv("STUB_CUDA_LOG");
  if (path && !g_log) g_log = fopen(path, "a");
  const char* cc = getenv("STUB_CUDA_CC");
  if (cc) g_cc = atoi(cc);
  return OK;
}
CUresult cuDriverGetVersion(int* v) { *v = 12040; return OK; }
CUresult cuDeviceGetCount(int* n) { *n = 1; return OK; }
CUresult cuDeviceGet(int* d, int ordinal) { if (ordinal != 0) return INVALID_VALUE; *d = 0; return OK; }
CUresult cuDeviceGetName(char* name, int len, int dev) { (void)dev; snprintf(name, len, "STUB GPU (no device: plumbing check only)"); return OK; }
CUresult cuDeviceGetAttribute(int* v, int attr, int dev) {
  (void)dev;
  switch (attr) {
    case 1: *v = 1024; return OK;              /* max threads per block */
    case 16: *v = 132; return OK;              /* SMs */
    case 36: *v = 2619000; return OK;          /* memory clock kHz */
    case 37: *v = 6144; return OK;             /* bus width */
    case 38: *v = 50 * 1024 * 1024; return OK; /* L2 */
    case 75: *v = g_cc / 10; return OK;
    case 76: *v = g_cc % 10; return OK;
    case 97: *v = OPTIN_SMEM; return OK;
    default: *v = 0; return OK;
  }
}
CUresult cuDeviceTotalMem_v2(size_t* b, int dev) { (void)dev; *b = (size_t)141 << 30; return OK; }
CUresult cuDevicePrimaryCtxRetain(void** c, int dev) { (void)dev; *c = (void*)0x1; return OK; }
CUresult cuDevicePrimaryCtxRelease_v2(int dev) { (void)dev; return OK; }
CUresult cuCtxSetCurrent(void* c) { return c ? OK : INVALID_VALUE; }
CUresult cuCtxSynchronize(void) { return OK; }

static const char* g_names[][2] = {
  {"0", "CUDA_SUCCESS"}, {"1", "CUDA_ERROR_INVALID_VALUE"}, {"2", "CUDA_ERROR_OUT_OF_MEMORY"},
  {"200", "CUDA_ERROR_INVALID_IMAGE"}, {"400", "CUDA_ERROR_INVALID_HANDLE"}, {"500", "CUDA_ERROR_NOT_FOUND"},
  {"701", "CUDA_ERROR_LAUNCH_OUT_OF_RESOURCES"}, {"900", "CUDA_ERROR_STREAM_CAPTURE_UNSUPPORTED"}};
CUresult cuGetErrorName(CUresult rc, const char** s) {
  for (size_t i = 0; i < sizeof g_names / sizeof g_names[0]; i++) if (atoi(g_names[i][0]) == rc) { *s = g_names[i][1]; return OK; }
  *s = NULL; return INVALID_VALUE;
}
CUresult cuGetErrorString(CUresult rc, const char** s) {
  CUresult r = cuGetErrorName(rc, s);
  if (r == OK) *s = "refused by the stub driver (see STUB_CUDA_LOG)";
  return r;
}

/* ---- module images ---- */
static Kernel* add_kernel(Module* m, const char* name, size_t len) {
  if (m->nkernels == MAX_KERNELS || len >= sizeof m->k[0].name) return NULL;
  Kernel* k = &m->k[m->nkernels++];
  memset(k, 0, sizeof *k);
  memcpy(k->name, name, len);
  return k;
}
static Kernel* find_kernel(Module* m, const char* name) {
  for (int i = 0; i < m->nkernels; i++) if (strcmp(m->k[i].name, name) == 0) return &m->k[i];
  return NULL;
}
static int parse_cubin(Module* m, const uint8_t* d) {
  uint64_t shoff; uint16_t shentsize, shnum, shstrndx;
  memcpy(&shoff, d + 0x28, 8); memcpy(&shentsize, d + 0x3A, 2); memcpy(&shnum, d + 0x3C, 2); memcpy(&shstrndx, d + 0x3E, 2);
  const uint8_t* sh = d + shoff;
  uint64_t stroff; memcpy(&stroff, sh + (size_t)shstrndx * shentsize + 0x18, 8);
  for (int pass = 0; pass < 2; pass++)   /* pass 0: kernels from .nv.info.<k>; pass 1: .nv.shared.<k> sizes */
    for (int i = 0; i < shnum; i++) {
      const uint8_t* s = sh + (size_t)i * shentsize;
      uint32_t nameoff; uint64_t off, size; memcpy(&nameoff, s, 4); memcpy(&off, s + 0x18, 8); memcpy(&size, s + 0x20, 8);
      const char* name = (const char*)d + stroff + nameoff;
      if (pass == 0 && strncmp(name, ".nv.info.", 9) == 0) {
        Kernel* k = add_kernel(m, name + 9, strlen(name + 9));
        if (!k) return 0;
        for (uint64_t p = 0; p + 4 <= size;) {
          uint8_t fmt = d[off + p], attr = d[off + p + 1];
          if (fmt == 4) {   /* EIFMT_SVAL: u16 size, then data */
            uint16_t n; memcpy(&n, d + off + p + 2, 2);
            if (attr == 0x17 && n >= 12) {   /* EIATTR_KPARAM_INFO: u32 index, u16 ordinal, u16 offset, u32 flags (size << 18) */
              uint16_t ordinal; uint32_t flags; memcpy(&ordinal, d + off + p + 8, 2); memcpy(&flags, d + off + p + 12, 4);
              if (ordinal >= MAX_PARAMS) return 0;
              k->sizes[ordinal] = (int)((flags >> 18) & 0x3fff);
              if (ordinal + 1 > k->nparams) k->nparams = ordinal + 1;
            }
            p += 4 + n;
          } else p += 4;
        }
      }
      if (pass == 1 && strncmp(name, ".nv.shared.", 11) == 0) {
        Kernel* k = find_kernel(m, name + 11);
        /* this NVRTC reserves 1 KB of system shared memory per kernel in the section (sm_80+) */
        if (k) k->static_smem = size >= 1024 ? (int)size - 1024 : (int)size;
      }
    }
  return m->nkernels > 0;
}
static int parse_ptx(Module* m, const char* t) {
  for (const char* e = strstr(t, ".entry "); e; e = strstr(e + 1, ".entry ")) {
    const char* n = e + 7; while (*n == ' ') n++;
    const char* end = n; while (*end && *end != '(' && *end != ' ' && *end != '\n') end++;
    Kernel* k = add_kernel(m, n, (size_t)(end - n));
    if (!k) return 0;
    const char* close = strchr(end, ')');
    for (const char* p = strstr(end, ".param "); p && close && p < close; p = strstr(p + 1, ".param ")) {
      const char* ty = strstr(p, " .") + 2;   /* .u64 / .u32 / .f32 ... */
      if (k->nparams == MAX_PARAMS) return 0;
      k->sizes[k->nparams++] = atoi(ty + 1) / 8;
    }
  }
  return m->nkernels > 0;
}
CUresult cuModuleLoadData(void** mod, const void* image) {
  const uint8_t* d = image;
  Module* m = calloc(1, sizeof *m);
  m->magic = 0x5EAD;
  int ok = memcmp(d, "\x7f" "ELF", 4) == 0 ? parse_cubin(m, d) : parse_ptx(m, (const char*)d);
  if (!ok) { free(m); return refuse(INVALID_IMAGE, "cuModuleLoadData: neither a CUBIN with kernels nor PTX with .entry"); }
  for (int i = 0; i < m->nkernels; i++)
    for (int j = 0; j < m->k[i].nparams; j++)
      if (m->k[i].sizes[j] == 0) { free(m); return refuse(INVALID_IMAGE, "cuModuleLoadData: a kernel parameter without size"); }
  for (int i = 0; i < m->nkernels; i++) m->k[i].max_dynamic = DEFAULT_SMEM - m->k[i].static_smem;
  logf_("module %s %d kernels", memcmp(d, "\x7f" "ELF", 4) == 0 ? "CUBIN" : "PTX", m->nkernels);
  *mod = m;
  return OK;
}
CUresult cuModuleUnload(void* mod) { Module* m = mod; if (!m || m->magic != 0x5EAD) return INVALID_HANDLE; m->magic = 0; return OK; }

static int g_capturing;   /* any stream in capture (ThreadLocal mode: this thread) */
CUresult cuModuleGetFunction(void** f, void* mod, const char* name) {
  Module* m = mod;
  if (!m || m->magic != 0x5EAD) return INVALID_HANDLE;
  if (g_capturing) { logf_("REFUSED cuModuleGetFunction(%s) during stream capture", name); return CAPTURE_UNSUPPORTED; }
  Kernel* k = find_kernel(m, name);
  if (!k) { logf_("REFUSED cuModuleGetFunction(%s): not in the module", name); return NOT_FOUND; }
  *f = k;
  return OK;
}
CUresult cuFuncSetAttribute(void* f, int attr, int value) {
  Kernel* k = f;
  if (attr != 8) return refuse(INVALID_VALUE, "cuFuncSetAttribute: only MAX_DYNAMIC_SHARED_SIZE_BYTES is modelled");
  if (value < 0 || value + k->static_smem > OPTIN_SMEM) { logf_("REFUSED cuFuncSetAttribute(%s, %d): static %d + dynamic > opt-in %d", k->name, value, k->static_smem, OPTIN_SMEM); return INVALID_VALUE; }
  k->max_dynamic = value;
  return OK;
}

/* ---- memory ---- */
static int find_alloc(uint64_t p, size_t n) {
  for (int i = 0; i < g_nalloc; i++)
    if (g_alloc[i].p && p >= (uint64_t)(uintptr_t)g_alloc[i].p && p + n <= (uint64_t)(uintptr_t)g_alloc[i].p + g_alloc[i].n) return i;
  return -1;
}
CUresult cuMemAlloc_v2(uint64_t* p, size_t n) {
  if (g_nalloc == MAX_ALLOCS) return OUT_OF_MEMORY;
  uint8_t* m = calloc(1, n ? n : 1);
  if (!m) return OUT_OF_MEMORY;
  g_alloc[g_nalloc].p = m; g_alloc[g_nalloc].n = n; g_nalloc++;
  *p = (uint64_t)(uintptr_t)m;
  return OK;
}
#define MAX_FREED 65536
static uint64_t g_freed[MAX_FREED];
static int g_nfreed;
/* A freed allocation's base that no live allocation covers now (calloc may hand the address out again). */
static int is_stale(uint64_t v) {
  if (!v || find_alloc(v, 1) >= 0) return 0;
  for (int i = 0; i < g_nfreed; i++) if (g_freed[i] == v) return 1;
  return 0;
}
CUresult cuMemFree_v2(uint64_t p) {
  for (int i = 0; i < g_nalloc; i++) if ((uint64_t)(uintptr_t)g_alloc[i].p == p) {
    free(g_alloc[i].p); g_alloc[i].p = NULL;
    if (g_nfreed < MAX_FREED) g_freed[g_nfreed++] = p;
    logf_("free %zu bytes", g_alloc[i].n);
    return OK;
  }
  return refuse(INVALID_VALUE, "cuMemFree_v2: not an allocation");
}
static CUresult check_range(uint64_t p, size_t n, const char* call) {
  if (find_alloc(p, n) < 0) { logf_("REFUSED %s: [0x%llx, +%zu) is not inside one allocation", call, (unsigned long long)p, n); return INVALID_VALUE; }
  return OK;
}
CUresult cuMemcpyHtoDAsync_v2(uint64_t dst, const void* src, size_t n, void* s) {
  (void)s; if (g_capturing) return refuse(CAPTURE_UNSUPPORTED, "cuMemcpyHtoDAsync during capture");
  CUresult r = check_range(dst, n, "cuMemcpyHtoDAsync_v2"); if (r) return r;
  memcpy((void*)(uintptr_t)dst, src, n); return OK;
}
CUresult cuMemcpyDtoHAsync_v2(void* dst, uint64_t src, size_t n, void* s) {
  (void)s; if (g_capturing) return refuse(CAPTURE_UNSUPPORTED, "cuMemcpyDtoHAsync during capture");
  CUresult r = check_range(src, n, "cuMemcpyDtoHAsync_v2"); if (r) return r;
  memcpy(dst, (void*)(uintptr_t)src, n); return OK;
}
CUresult cuMemcpyDtoDAsync_v2(uint64_t dst, uint64_t src, size_t n, void* s) {
  (void)s;
  CUresult r = check_range(dst, n, "cuMemcpyDtoDAsync_v2 dst"); if (r) return r;
  r = check_range(src, n, "cuMemcpyDtoDAsync_v2 src"); if (r) return r;
  memmove((void*)(uintptr_t)dst, (void*)(uintptr_t)src, n); return OK;
}
CUresult cuMemsetD8Async(uint64_t dst, unsigned char v, size_t n, void* s) {
  (void)s; CUresult r = check_range(dst, n, "cuMemsetD8Async"); if (r) return r;
  memset((void*)(uintptr_t)dst, v, n); return OK;
}

/* ---- streams, launches, graphs ---- */
CUresult cuStreamCreate(void** s, unsigned flags) { (void)flags; *s = calloc(1, sizeof(Stream)); return OK; }
CUresult cuStreamSynchronize(void* s) { Stream* st = s; if (st && st->capturing) return refuse(CAPTURE_UNSUPPORTED, "cuStreamSynchronize during capture"); return OK; }
CUresult cuStreamDestroy_v2(void* s) { free(s); return OK; }

static void log_node(const char* what, const Node* n) {
  logf_("%s %s grid=%u,%u,%u block=%u,%u,%u smem=%u params=%d", what, n->k->name, n->g[0], n->g[1], n->g[2], n->b[0], n->b[1], n->b[2], n->smem, n->nparams);
}
CUresult cuLaunchKernel(void* f, unsigned gx, unsigned gy, unsigned gz, unsigned bx, unsigned by, unsigned bz,
                        unsigned smem, void* stream, void** params, void** extra) {
  Kernel* k = f;
  Stream* st = stream;
  if (!k) return INVALID_HANDLE;
  char why[256] = "";
  if (gx == 0 || gy == 0 || gz == 0 || gx > 2147483647u || gy > 65535 || gz > 65535) snprintf(why, sizeof why, "grid %u,%u,%u outside the limits", gx, gy, gz);
  else if (bx == 0 || by == 0 || bz == 0 || bx > 1024 || by > 1024 || bz > 64 || (unsigned long long)bx * by * bz > 1024) snprintf(why, sizeof why, "block %u,%u,%u outside the limits", bx, by, bz);
  else if ((int)smem > k->max_dynamic) snprintf(why, sizeof why, "dynamic shared memory %u > the kernel's limit %d (set cuFuncSetAttribute MAX_DYNAMIC_SHARED_SIZE_BYTES)", smem, k->max_dynamic);
  else if ((int)smem + k->static_smem > OPTIN_SMEM) snprintf(why, sizeof why, "shared memory %u + %d static > %d", smem, k->static_smem, OPTIN_SMEM);
  else if (extra) snprintf(why, sizeof why, "extra is not NULL");
  else if (k->nparams > 0 && !params) snprintf(why, sizeof why, "no parameter array for %d parameters", k->nparams);
  else for (int i = 0; i < k->nparams; i++) if (!params[i]) { snprintf(why, sizeof why, "parameter %d is a null pointer", i); break; }
  Node n = {k, {gx, gy, gz}, {bx, by, bz}, smem, k->nparams, {0}};
  if (!why[0])
    for (int i = 0; i < k->nparams; i++) if (k->sizes[i] == 8) {
      memcpy(&n.args[i], params[i], 8);
      if (is_stale(n.args[i])) { snprintf(why, sizeof why, "parameter %d points to freed memory 0x%llx", i, (unsigned long long)n.args[i]); break; }
    }
  if (why[0]) { logf_("REFUSED launch %s: %s", k->name, why); return why[0] == 'd' || why[0] == 's' ? LAUNCH_OUT_OF_RESOURCES : INVALID_VALUE; }
  if (st && st->capturing) {
    if (st->nnodes == MAX_NODES) return OUT_OF_MEMORY;
    st->nodes[st->nnodes++] = n;
    log_node("capture", &n);
  } else log_node("launch", &n);
  return OK;
}
CUresult cuStreamBeginCapture_v2(void* s, int mode) {
  Stream* st = s;
  if (!st || st->capturing) return INVALID_VALUE;
  st->capturing = 1; g_capturing = 1; st->nnodes = 0; st->nodes = malloc(sizeof(Node) * MAX_NODES);
  logf_("begin-capture mode=%d", mode);
  return OK;
}
CUresult cuStreamEndCapture(void* s, void** graph) {
  Stream* st = s;
  if (!st || !st->capturing) return INVALID_VALUE;
  Graph* g = malloc(sizeof *g); g->nnodes = st->nnodes; g->nodes = st->nodes;
  st->capturing = 0; g_capturing = 0; st->nodes = NULL;
  logf_("end-capture %d nodes", g->nnodes);
  *graph = g;
  return OK;
}
CUresult cuGraphInstantiateWithFlags(void** exec, void* graph, unsigned long long flags) { (void)flags; *exec = graph; return graph ? OK : INVALID_VALUE; }
CUresult cuGraphLaunch(void* exec, void* stream) {
  Graph* g = exec; (void)stream;
  if (!g) return INVALID_HANDLE;
  for (int i = 0; i < g->nnodes; i++)
    for (int j = 0; j < g->nodes[i].nparams; j++)
      if (is_stale(g->nodes[i].args[j])) {
        logf_("REFUSED graph-launch: node %d (%s) parameter %d points to freed memory 0x%llx", i, g->nodes[i].k->name, j, (unsigned long long)g->nodes[i].args[j]);
        return INVALID_VALUE;
      }
  logf_("graph-launch %d nodes", g->nnodes);
  for (int i = 0; i < g->nnodes; i++) log_node("replay", &g->nodes[i]);
  return OK;
}
CUresult cuGraphExecDestroy(void* e) { (void)e; return OK; }
CUresult cuGraphDestroy(void* g) { Graph* gr = g; if (gr) { free(gr->nodes); free(gr); } return OK; }

CUresult cuEventCreate(void** e, unsigned flags) { (void)flags; *e = malloc(1); return OK; }
CUresult cuEventRecord(void* e, void* s) { (void)e; (void)s; return OK; }
CUresult cuEventSynchronize(void* e) { (void)e; return OK; }
CUresult cuEventElapsedTime_v2(float* ms, void* a, void* b) { (void)a; (void)b; *ms = 0.5f; return OK; }
CUresult cuEventElapsedTime(float* ms, void* a, void* b) { return cuEventElapsedTime_v2(ms, a, b); }
CUresult cuEventDestroy_v2(void* e) { free(e); return OK; }
