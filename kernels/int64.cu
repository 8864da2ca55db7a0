// int64.cu: the exact Q16.48 forward pass, bit-identical to GpuIntLab.Oracle.OracleEngine.
// A value is raw / 2^48 with raw an int64. Every product is exact (64x64 -> 128 bits: a*b for the low
// half, __mul64hi for the high half), sums of products are exact 128-bit integers (integer addition is
// associative, so the result depends on no thread order), and every op rounds once to nearest-even,
// exactly as the oracle does. The nonlinear functions are line-by-line ports of
// src/GpuIntLab.Core/FixedPoint (Q48.cs, Q48Transcendental.cs, Wide.cs) using unsigned __int128; their
// constant tables (Pow2Frac, ExpCoef, ExpStepQ110, ExpInvStepQ54) are uploaded from the C# library's own
// arrays (layout in TAB_* below), and RoPE's cos/sin come from the oracle's RopeTable, so both sides use
// the same bits. Where the oracle would throw Q48OverflowException a kernel sets a bit in *err (and
// writes 0); the host checks *err after every step and throws.
//
// Shapes: activations [T, dim] int64 (q and the attention output [T, n_heads * hd], which may differ from hidden);
// weights [N, K] row-major int64; KV cache per layer [positions, kv_dim], grown by the host as the context grows.
// The batch's first position lives in device memory (*pos), advanced by advance_pos (common.cuh).
#include "common.cuh"

#include "q48_math.cuh"

// ---------------------------------------------------------------------------------------------

// x[t, :] = table[tokens[t], :] (Q16.48 embedding rows). grid T.
extern "C" __global__ void embed_q48(const i64* __restrict__ table, const int* __restrict__ tokens, i64* __restrict__ x, int dim) {
    int t = blockIdx.x;
    const i64* row = table + (size_t)tokens[t] * dim;
    for (int i = threadIdx.x; i < dim; i += blockDim.x) x[(size_t)t * dim + i] = row[i];
}

// Y[t, n] = RNE(sum_k W[n, k] * X[t, k] / 2^48): the exact matvec of ExactMatrix.MatVec.
// One warp per output row (8 rows per 256-thread block, grid (ceil(N/8), ceil(T/4))); each warp serves up
// to 4 tokens per W pass, so prefill reads W ceil(T/4) times. K even: 16-byte loads (2 weights per lane
// per step); 128-bit partial sums (hi, lo) are combined across the warp with shuffles and carries.
extern "C" __global__ void __launch_bounds__(256) matmul_q48(const i64* __restrict__ W, const i64* __restrict__ X, i64* __restrict__ Y,
                                                            int N, int K, int T, int* err) {
    int warp = threadIdx.x >> 5, lane = threadIdx.x & 31;
    int row = blockIdx.x * 8 + warp;
    int t0 = blockIdx.y * 4;
    if (row >= N) return;
    i64 hi[4] = {0, 0, 0, 0}; u64 lo[4] = {0, 0, 0, 0};
    const i64* wr = W + (size_t)row * K;
    int nt = T - t0 < 4 ? T - t0 : 4;
    if ((K & 1) == 0) {
        const uint4* w2 = (const uint4*)wr;
        for (int c = lane; c < (K >> 1); c += 32) {
            uint4 wv = w2[c];
            i64 wa = (i64)(((u64)wv.y << 32) | wv.x), wb = (i64)(((u64)wv.w << 32) | wv.z);
            #pragma unroll
            for (int j = 0; j < 4; j++) {
                if (j < nt) {
                    const i64* xr = X + (size_t)(t0 + j) * K + 2 * c;
                    acc128(hi[j], lo[j], wa, xr[0]);
                    acc128(hi[j], lo[j], wb, xr[1]);
                }
            }
        }
    } else {
        for (int c = lane; c < K; c += 32) {
            i64 w = wr[c];
            #pragma unroll
            for (int j = 0; j < 4; j++) if (j < nt) acc128(hi[j], lo[j], w, X[(size_t)(t0 + j) * K + c]);
        }
    }
    #pragma unroll
    for (int j = 0; j < 4; j++) {
        for (int o = 16; o > 0; o >>= 1) {
            i64 ohi = __shfl_xor_sync(FULL_MASK, hi[j], o);
            u64 olo = __shfl_xor_sync(FULL_MASK, lo[j], o);
            u64 s = lo[j] + olo;
            hi[j] += ohi + (s < lo[j] ? 1 : 0);
            lo[j] = s;
        }
    }
    if (lane == 0) {
        for (int j = 0; j < nt; j++) {
            bool ok = true;
            i64 v = round_shift(make128(hi[j], lo[j]), FRAC_BITS, &ok);
            if (!ok) atomicOr(err, ERR_MATMUL);
            Y[(size_t)(t0 + j) * N + row] = v;
        }
    }
}

// Exact 128-bit block sum (sequential over per-thread partials in thread 0: same bits for any layout).
__device__ i128 block_sum128(i128 v, i128* scratch) {
    scratch[threadIdx.x] = v;
    __syncthreads();
    if (threadIdx.x == 0) { i128 s = 0; for (int i = 0; i < (int)blockDim.x; i++) s += scratch[i]; scratch[0] = s; }
    __syncthreads();
    i128 r = scratch[0];
    __syncthreads();
    return r;
}

// OracleEngine.RmsNorm: mean = RNE(sum x^2 / (dim * 2^48)) from the exact 128-bit sum; inv = Rsqrt(mean + eps);
// out = Mul(w, Mul(x, inv)). grid T, blockDim <= 256.
extern "C" __global__ void __launch_bounds__(256) rmsnorm_q48(const i64* __restrict__ x, const i64* __restrict__ w, i64* __restrict__ out,
                                                             int dim, i64 eps, int* err) {
    __shared__ i128 scratch[256];
    const i64* xr = x + (size_t)blockIdx.x * dim;
    i128 ss = 0;
    for (int i = threadIdx.x; i < dim; i += blockDim.x) ss += (i128)xr[i] * xr[i];
    ss = block_sum128(ss, scratch);
    bool inv_ok = true;
    i64 inv = q48_rms_inverse(ss, dim, eps, &inv_ok);
    if (!inv_ok && threadIdx.x == 0) atomicOr(err, ERR_RMSNORM);
    for (int i = threadIdx.x; i < dim; i += blockDim.x) {
        bool k = true;
        i64 v = q48_rms_apply(w[i], xr[i], inv, &k);
        if (!k) atomicOr(err, ERR_RMSNORM);
        out[(size_t)blockIdx.x * dim + i] = v;
    }
}

// Qwen3's q/k norm: every row of dim (= head_dim) values of x RMS-normalised IN PLACE with the same weight w [dim],
// exactly as rmsnorm_q48 (OracleEngine.QkNorm runs OracleEngine.RmsNorm per head). Each element is read and
// written by the same thread, after the block's sum: in place is safe, and x carries no __restrict__.
// grid = rows (T * heads), blockDim <= 256.
extern "C" __global__ void __launch_bounds__(256) rmsnorm_rows_q48(i64* x, const i64* __restrict__ w, int dim, i64 eps, int* err) {
    __shared__ i128 scratch[256];
    i64* xr = x + (size_t)blockIdx.x * dim;
    i128 ss = 0;
    for (int i = threadIdx.x; i < dim; i += blockDim.x) ss += (i128)xr[i] * xr[i];
    ss = block_sum128(ss, scratch);
    bool inv_ok = true;
    i64 inv = q48_rms_inverse(ss, dim, eps, &inv_ok);
    if (!inv_ok && threadIdx.x == 0) atomicOr(err, ERR_QKNORM);
    for (int i = threadIdx.x; i < dim; i += blockDim.x) {
        bool k = true;
        i64 v = q48_rms_apply(w[i], xr[i], inv, &k);
        if (!k) atomicOr(err, ERR_QKNORM);
        xr[i] = v;
    }
}

// OracleEngine.Rope: rotate-half pairs (i, i + hd/2), each output RNE(a*cos -/+ b*sin / 2^48) from the exact
// 128-bit sum; cos/sin are RopeTable's Q16.48 rows [positions, hd/2] (llama3
// rope_scaling applied by the table), uploaded by the host for the positions in use. grid T.
extern "C" __global__ void rope_q48(i64* q, i64* k, const i64* __restrict__ cos_t, const i64* __restrict__ sin_t,
                                    const int* __restrict__ pos, int n_heads, int n_kv, int hd, int* err) {
    int t = blockIdx.x, p = *pos + t, half = hd >> 1;
    const i64* c = cos_t + (size_t)p * half;
    const i64* s = sin_t + (size_t)p * half;
    int nq = n_heads * half, nk = n_kv * half;
    for (int idx = threadIdx.x; idx < nq + nk; idx += blockDim.x) {
        i64* base; int h, i;
        if (idx < nq) { h = idx / half; i = idx % half; base = q + (size_t)t * n_heads * hd + h * hd; }
        else { int j = idx - nq; h = j / half; i = j % half; base = k + (size_t)t * n_kv * hd + h * hd; }
        i64 a = base[i], b = base[i + half];
        bool ok = true;
        i64 ra = round_shift((i128)a * c[i] - (i128)b * s[i], FRAC_BITS, &ok);
        i64 rb = round_shift((i128)b * c[i] + (i128)a * s[i], FRAC_BITS, &ok);
        if (!ok) atomicOr(err, ERR_ROPE);
        base[i] = ra; base[i + half] = rb;
    }
}

extern "C" __global__ void kv_store_q48(const i64* __restrict__ k, const i64* __restrict__ v, i64* kc, i64* vc,
                                        const int* __restrict__ pos, int kv_dim) {
    int t = blockIdx.x; size_t dst = (size_t)(*pos + t) * kv_dim, src = (size_t)t * kv_dim;
    for (int i = threadIdx.x; i < kv_dim; i += blockDim.x) { kc[dst + i] = k[src + i]; vc[dst + i] = v[src + i]; }
}

// OracleEngine attention for query token t and head h (grid (n_heads, T), blockDim <= 256, dynamic shared
// memory 8 bytes per cached position, at least *pos + T): score_j = Mul(RNE(q.k_j / 2^48), scale); Q48.Softmax (max, Q.62 exps by ExpCore
// with one RNE each, exact u128 sum, RNE division into Q16.48); out_i = RNE(sum_j p_j v_j[i] / 2^48).
extern "C" __global__ void __launch_bounds__(256) attention_q48(const i64* __restrict__ q, const i64* __restrict__ kc, const i64* __restrict__ vc,
                                                               i64* __restrict__ out, const int* __restrict__ pos,
                                                               int n_heads, int n_kv, int hd, i64 scale, const u64* __restrict__ tab, int* err) {
    extern __shared__ i64 sc[];
    __shared__ i128 scratch[256];
    int h = blockIdx.x, t = blockIdx.y, n = *pos + t + 1;
    int kvh = h / (n_heads / n_kv), kv_dim = n_kv * hd;
    const i64* qh = q + (size_t)t * n_heads * hd + h * hd;
    i64 mx = (i64)0x8000000000000000ULL;
    bool ok = true;
    for (int j = threadIdx.x; j < n; j += blockDim.x) {
        const i64* kj = kc + (size_t)j * kv_dim + kvh * hd;
        i128 d = 0;
        for (int i = 0; i < hd; i++) d += (i128)qh[i] * kj[i];
        i64 s = q48_mul(round_shift(d, FRAC_BITS, &ok), scale, &ok);
        sc[j] = s;
        mx = s > mx ? s : mx;
    }
    // block max (exact)
    scratch[threadIdx.x] = mx;
    __syncthreads();
    if (threadIdx.x == 0) { i128 m = scratch[0]; for (int i = 1; i < (int)blockDim.x; i++) m = scratch[i] > m ? scratch[i] : m; scratch[0] = m; }
    __syncthreads();
    i64 max = (i64)scratch[0];
    __syncthreads();
    i128 part = 0;
    for (int j = threadIdx.x; j < n; j += blockDim.x) {
        u64 e = softmax_exp((i128)sc[j] - max, tab);
        sc[j] = (i64)e;
        part += (i128)e;
    }
    u128 sum = (u128)block_sum128(part, scratch);   // ends with a barrier: sc[] complete
    for (int j = threadIdx.x; j < n; j += blockDim.x) sc[j] = softmax_div((u64)sc[j], sum);
    __syncthreads();
    for (int i = threadIdx.x; i < hd; i += blockDim.x) {
        i64 ahi = 0; u64 alo = 0;
        for (int j = 0; j < n; j++) acc128(ahi, alo, sc[j], vc[(size_t)j * kv_dim + kvh * hd + i]);
        out[(size_t)t * n_heads * hd + h * hd + i] = round_shift(make128(ahi, alo), FRAC_BITS, &ok);
    }
    if (!ok) atomicOr(err, ERR_ATTENTION);
}

// h = Mul(Silu(g), u) elementwise over n = T * intermediate. The engine passes h == g (in place), so g and
// h carry no __restrict__.
extern "C" __global__ void swiglu_q48(const i64* g, const i64* __restrict__ u, i64* h, int n,
                                      const u64* __restrict__ tab, int* err) {
    for (int i = blockIdx.x * blockDim.x + threadIdx.x; i < n; i += gridDim.x * blockDim.x) {
        bool ok = true;
        h[i] = q48_mul(q48_silu(g[i], tab), u[i], &ok);
        if (!ok) atomicOr(err, ERR_SWIGLU);
    }
}

// x += d with signed-overflow detection (OracleEngine.AddResidual).
extern "C" __global__ void add_q48(i64* x, const i64* __restrict__ d, int n, int* err) {
    for (int i = blockIdx.x * blockDim.x + threadIdx.x; i < n; i += gridDim.x * blockDim.x) {
        bool ok = true;
        x[i] = q48_add_checked(x[i], d[i], &ok);
        if (!ok) atomicOr(err, ERR_RESIDUAL);
    }
}

// y[t, j] += b[j] over n = T * width with signed-overflow detection (OracleEngine.AddBias: q/k/v/o biases).
extern "C" __global__ void bias_add_q48(i64* y, const i64* __restrict__ b, int n, int width, int* err) {
    for (int i = blockIdx.x * blockDim.x + threadIdx.x; i < n; i += gridDim.x * blockDim.x) {
        bool ok = true;
        y[i] = q48_add_checked(y[i], b[i % width], &ok);
        if (!ok) atomicOr(err, ERR_BIAS);
    }
}

// Test entry points: the nonlinear ports element by element, for comparison with the C# library.
extern "C" __global__ void test_q48_functions(const i64* __restrict__ x, i64* __restrict__ rsqrt_out, i64* __restrict__ silu_out,
                                              int n, const u64* __restrict__ tab) {
    for (int i = blockIdx.x * blockDim.x + threadIdx.x; i < n; i += gridDim.x * blockDim.x) {
        i64 v = x[i];
        rsqrt_out[i] = v > (1LL << 18) ? q48_rsqrt(v) : 0;
        silu_out[i] = q48_silu(v, tab);
    }
}
