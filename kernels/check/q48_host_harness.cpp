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
    return q48_rms_inverse(ss, n, eps, &ok);
}
// rmsnorm_rows_q48 with its grid run in sequence (one block per row of dim values, in place), the same helpers;
// returns the error flag the kernel would set (0 or ERR_QKNORM).
int h_rmsnorm_rows(i64* x, const i64* w, int rows, int dim, i64 eps) {
    int err = 0;
    for (int r = 0; r < rows; r++) {
        i64* xr = x + (long)r * dim;
        i128 ss = 0;
        for (int i = 0; i < dim; i++) ss += (i128)xr[i] * xr[i];
        bool ok = true;
        i64 inv = q48_rms_inverse(ss, dim, eps, &ok);
        for (int i = 0; i < dim; i++) xr[i] = q48_rms_apply(w[i], xr[i], inv, &ok);
        if (!ok) err |= ERR_QKNORM;
    }
    return err;
}
// bias_add_q48 over n = rows * width, in sequence; returns the error flag (0 or ERR_BIAS).
int h_bias_add(i64* y, const i64* b, int n, int width) {
    int err = 0;
    for (int i = 0; i < n; i++) { bool ok = true; y[i] = q48_add_checked(y[i], b[i % width], &ok); if (!ok) err |= ERR_BIAS; }
    return err;
}
}
