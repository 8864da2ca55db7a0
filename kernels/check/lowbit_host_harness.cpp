// Host build of kernels/lowbit.cuh (the device ports of the low-bit codecs) for the test suite: compiled by the
// tests with the host C++ compiler (-ffp-contract=off: no fused multiply-add, like NVRTC's --fmad=false) into a
// shared library and compared, input by input, with the C# codecs of GpuIntLab.Core.Formats.LowBit
// (tests/GpuIntLab.Tests/Cuda/LowBitPortTests.cs). CUDA built-ins are shimmed with IEEE float32 operations
// (x86-64 SSE arithmetic rounds to nearest even, as the __*_rn intrinsics do).
#include <math.h>
#include <cstring>
typedef unsigned int u32;
typedef unsigned short u16;
#define LOWBIT_HOST
#define __device__
#define __forceinline__ inline
static inline u32 __float_as_uint(float f) { u32 u; std::memcpy(&u, &f, 4); return u; }
static inline float __uint_as_float(u32 u) { float f; std::memcpy(&f, &u, 4); return f; }
static inline float __fmul_rn(float a, float b) { volatile float r = a * b; return r; }
static inline float __fdiv_rn(float a, float b) { volatile float r = a / b; return r; }
static inline float __fadd_rn(float a, float b) { volatile float r = a + b; return r; }
static inline float __fsub_rn(float a, float b) { volatile float r = a - b; return r; }
#include "../lowbit.cuh"

extern "C" {
int h_encode(float v, int mbits, int bias, int max_code, int sign_bit, int nan_code) { return lb_encode(v, mbits, bias, max_code, sign_bit, nan_code); }
float h_decode(int code, int ebits, int mbits, int bias) { return lb_decode(code, ebits, mbits, bias); }
float h_e4m3_decode(int code) { return lb_e4m3_decode(code); }
int h_e8m0_scale(float amax, int rule, int emax_elem, float rcp_max) { return lb_e8m0_scale(amax, rule, emax_elem, rcp_max); }
u16 h_bf16(float v) { return lb_f32_to_bf16(v); }
float h_f16_round(float v) { return lb_f16_round(v); }
// input_mx over a vector of n values in blocks of bs (the kernel's per-thread block loop).
void h_mx(const float* x, float* out, int n, int bs, int ebits, int mbits, int bias, int max_code, int sign_bit, int nan_code, int rule, int emax_elem, float rcp_max) {
    LbMx f = {ebits, mbits, bias, max_code, sign_bit, nan_code, rule, emax_elem, rcp_max};
    for (int s = 0; s < n; s += bs) lb_mx_block(x + s, out + s, n - s < bs ? n - s : bs, f);
}
// input_nvfp4 of one row: global scale from the row's amax, then 16-value blocks.
void h_nvfp4(const float* x, float* out, int n) {
    float amax = 0.f;
    for (int i = 0; i < n; i++) amax = fmaxf(amax, fabsf(x[i]));
    float g = lb_nvfp4_global(amax);
    for (int s = 0; s < n; s += 16) lb_nvfp4_block(x + s, out + s, n - s < 16 ? n - s : 16, g);
}
// The KV caches' store then read of one row (fp8: given scale) / one head (int8: its own min and step).
void h_kv_fp8(const float* x, float* out, int n, float scale) { for (int i = 0; i < n; i++) out[i] = lb_kv_fp8_decode(lb_kv_fp8_encode(x[i], scale), scale); }
void h_kv_int8(const float* x, float* out, int n) {
    float mn = x[0], mx = x[0];
    for (int i = 1; i < n; i++) { mn = fminf(mn, x[i]); mx = fmaxf(mx, x[i]); }
    float s = lb_kv_int8_step(mn, mx);
    for (int i = 0; i < n; i++) out[i] = lb_kv_int8_decode(lb_kv_int8_encode(x[i], mn, s), mn, s);
}
}
