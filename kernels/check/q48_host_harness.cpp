// Host build of kernels/q48_math.cuh (the device Q16.48 algorithms) for the test suite: compiled by the
// tests with the host C++ compiler into a shared library and compared, input by input, with the C#
// library the oracle uses (tests/GpuIntLab.Tests/Cuda/CudaQ48PortTests.cs). CUDA built-ins are shimmed.
typedef unsigned long long u64;
typedef long long i64;
typedef unsigned int u32;
#define __device__
#define __forceinline__ inline
static inline i64 __mul64hi(i64 a, i64 b) { return (i64)(((__int128)a * (__int128)b) >> 64); }
static inline int __clzll(i64 v) { return v ? __builtin_clzll((u64)v) : 64; }
#include "../q48_math.cuh"

extern "C" {
i64 h_rsqrt(i64 x) { return q48_rsqrt(x); }
i64 h_silu(i64 x, const u64* tab) { return q48_silu(x, tab); }
i64 h_mul(i64 a, i64 b, int* ok) { bool k = true; i64 r = q48_mul(a, b, &k); *ok = k; return r; }
// The attention kernel's softmax, sequentially: same helpers, same order of operations.
void h_softmax(const i64* x, i64* p, int n, const u64* tab) {
    i64 max = x[0];
    for (int i = 1; i < n; i++) if (x[i] > max) max = x[i];
    u128 sum = 0;
    for (int i = 0; i < n; i++) { u64 e = softmax_exp((i128)x[i] - max, tab); p[i] = (i64)e; sum += e; }
    for (int i = 0; i < n; i++) p[i] = softmax_div((u64)p[i], sum);
}
// matmul_q48's row: acc128 over k, then RNE >> 48.
i64 h_dot(const i64* w, const i64* x, int k, int* ok) {
    i64 hi = 0; u64 lo = 0;
    for (int i = 0; i < k; i++) acc128(hi, lo, w[i], x[i]);
    bool o = true; i64 r = round_shift(make128(hi, lo), FRAC_BITS, &o); *ok = o; return r;
}
// rmsnorm_q48's mean and inverse: DivideRound(sum x^2, n << 48), then Rsqrt(mean + eps).
i64 h_rms_inverse(const i64* x, int n, i64 eps) {
    i128 ss = 0;
    for (int i = 0; i < n; i++) ss += (i128)x[i] * x[i];
    bool ok = true;
    i64 mean = divide_round_nonneg((u128)ss, (u128)n << FRAC_BITS, &ok);
    return q48_rsqrt(mean + eps);
}
}
