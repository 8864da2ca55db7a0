// int8.cu: W8A8 linear layers, the schemes of GpuIntLab.Core.Formats.Quantizer.
// Weights: symmetric int8 codes [N, K] row-major (the Quantizer's Codes, byte for byte) and float32
// scales: 1 (per-tensor) or N (per-channel, smoothquant). Activations: one dynamic scale per token,
// quantized on the device by quantize_int8 with exactly the Quantizer's float32 rule, so the codes
// equal Quantizer.QuantizeActivationsInt8 bit for bit. Products s8 x s8 accumulate exactly in int32
// (K <= Quantizer.MaxInt8Cols); the epilogue rescales in float64: y = acc * ((double)s_w * s_a),
// rounded once to float32 - the float32 rounding of Quantizer.ReferenceMatVec.
#include "common.cuh"
#include "kvcache.cuh"   // quantized KV caches (fp8-e4m3, int8) for the float32 engine

// Per-token activation quantization, one block per token row (grid T): x' = smooth ? x / s : x
// (IEEE float32 division, SmoothQuant); absmax = max |x'| (exact); scale = absmax / 127 (IEEE), or 1
// when absmax is 0; q = clamp(rint(x' / scale), -127, 127) with round-half-even (__float2int_rn).
extern "C" __global__ void quantize_int8(const float* __restrict__ x, const float* __restrict__ smooth,
                                         signed char* __restrict__ q, float* __restrict__ scale, int K) {
    __shared__ float scratch[32];
    const float* xr = x + (size_t)blockIdx.x * K;
    float m = 0.f;
    for (int i = threadIdx.x; i < K; i += blockDim.x) {
        float v = smooth ? __fdiv_rn(xr[i], smooth[i]) : xr[i];
        m = fmaxf(m, fabsf(v));
    }
    m = block_max(m, scratch);
    float s = m == 0.f ? 1.f : __fdiv_rn(m, 127.f);
    for (int i = threadIdx.x; i < K; i += blockDim.x) {
        float v = smooth ? __fdiv_rn(xr[i], smooth[i]) : xr[i];
        int c = __float2int_rn(__fdiv_rn(v, s));
        c = c > 127 ? 127 : (c < -127 ? -127 : c);
        q[(size_t)blockIdx.x * K + i] = (signed char)c;
    }
    if (threadIdx.x == 0) scale[blockIdx.x] = s;
}

__device__ __forceinline__ float int8_epilogue(int acc, float ws, float xs) {
    return (float)((double)acc * ((double)ws * (double)xs));
}

// Batch-1 decode GEMV with dp4a: one warp per output row, 8 rows per 256-thread block (grid
// ceil(N/8)). K % 16 == 0: 16-byte loads (4 dp4a per load pair); K % 4 == 0: 4-byte loads; else scalar.
// per_row: 1 if ws has N entries (per-channel, smoothquant), 0 for one per-tensor scale.
extern "C" __global__ void __launch_bounds__(256) gemv_int8(const signed char* __restrict__ W, const signed char* __restrict__ xq,
                                                           const float* __restrict__ xs, const float* __restrict__ ws, int per_row,
                                                           float* __restrict__ y, int N, int K) {
    int warp = threadIdx.x >> 5, lane = threadIdx.x & 31;
    int row = blockIdx.x * 8 + warp;
    if (row >= N) return;
    int acc = 0;
    const signed char* wr = W + (size_t)row * K;
    if ((K & 15) == 0) {
        const uint4* w4 = (const uint4*)wr; const uint4* x4 = (const uint4*)xq;
        #pragma unroll 4
        for (int c = lane; c < (K >> 4); c += 32) {
            uint4 a = w4[c], b = x4[c];
            acc = __dp4a((int)a.x, (int)b.x, acc); acc = __dp4a((int)a.y, (int)b.y, acc);
            acc = __dp4a((int)a.z, (int)b.z, acc); acc = __dp4a((int)a.w, (int)b.w, acc);
        }
    } else if ((K & 3) == 0) {
        const int* w1 = (const int*)wr; const int* x1 = (const int*)xq;
        for (int c = lane; c < (K >> 2); c += 32) acc = __dp4a(w1[c], x1[c], acc);
    } else {
        for (int c = lane; c < K; c += 32) acc += (int)wr[c] * (int)xq[c];
    }
    acc = warp_sum_int(acc);
    if (lane == 0) y[row] = int8_epilogue(acc, ws[per_row ? row : 0], xs[0]);
}

__device__ __forceinline__ u32 ld_s8x4(const signed char* p, int r, int c, int R, int C) {
    u32 v = 0;
    #pragma unroll
    for (int i = 0; i < 4; i++)
        if (r < R && c + i < C) v |= ((u32)(unsigned char)p[(size_t)r * C + c + i]) << (8 * i);
    return v;
}

// Prefill GEMM on tensor cores: Y[M, N] = dequant(Xq[M, K] . W[N, K]^T) with
// mma.sync.aligned.m16n8k32.row.col.s32.s8.s8.s32 (sm_80+), int32 accumulation, rescaling fused in the
// epilogue with each row's token scale and each column's weight scale. One 16x8 tile per warp, 128-thread
// blocks cover 16 x 32 (grid (ceil(N/32), ceil(M/16))), zero padding at the edges (any M, N, K).
// Fragment layout (m16n8k32, 8-bit): g = lane/4, q = lane%4; a0:(g, 4q..4q+3) a1:(g+8, 4q..)
// a2:(g, 4q+16..) a3:(g+8, 4q+16..); b0:(k=4q..4q+3, n=g) b1:(k=4q+16.., n=g); C as for m16n8k16.
extern "C" __global__ void __launch_bounds__(128) gemm_int8_mma(const signed char* __restrict__ Xq, const float* __restrict__ xs,
                                                               const signed char* __restrict__ W, const float* __restrict__ ws, int per_row,
                                                               float* __restrict__ Y, int M, int N, int K) {
#if __CUDA_ARCH__ >= 800
    int warp = threadIdx.x >> 5, lane = threadIdx.x & 31, g = lane >> 2, q = lane & 3;
    int m0 = blockIdx.y * 16, n0 = blockIdx.x * 32 + warp * 8;
    if (n0 >= N) return;
    int c0 = 0, c1 = 0, c2 = 0, c3 = 0;
    for (int k0 = 0; k0 < K; k0 += 32) {
        int ka = k0 + 4 * q;
        u32 a0 = ld_s8x4(Xq, m0 + g, ka, M, K), a1 = ld_s8x4(Xq, m0 + g + 8, ka, M, K);
        u32 a2 = ld_s8x4(Xq, m0 + g, ka + 16, M, K), a3 = ld_s8x4(Xq, m0 + g + 8, ka + 16, M, K);
        u32 b0 = ld_s8x4(W, n0 + g, ka, N, K), b1 = ld_s8x4(W, n0 + g, ka + 16, N, K);
        asm volatile("mma.sync.aligned.m16n8k32.row.col.s32.s8.s8.s32 {%0,%1,%2,%3}, {%4,%5,%6,%7}, {%8,%9}, {%0,%1,%2,%3};"
                     : "+r"(c0), "+r"(c1), "+r"(c2), "+r"(c3)
                     : "r"(a0), "r"(a1), "r"(a2), "r"(a3), "r"(b0), "r"(b1));
    }
    int r0 = m0 + g, r1 = m0 + g + 8, col = n0 + 2 * q;
    if (r0 < M && col < N) Y[(size_t)r0 * N + col] = int8_epilogue(c0, ws[per_row ? col : 0], xs[r0]);
    if (r0 < M && col + 1 < N) Y[(size_t)r0 * N + col + 1] = int8_epilogue(c1, ws[per_row ? col + 1 : 0], xs[r0]);
    if (r1 < M && col < N) Y[(size_t)r1 * N + col] = int8_epilogue(c2, ws[per_row ? col : 0], xs[r1]);
    if (r1 < M && col + 1 < N) Y[(size_t)r1 * N + col + 1] = int8_epilogue(c3, ws[per_row ? col + 1 : 0], xs[r1]);
#endif
}
