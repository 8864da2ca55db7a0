// fp8.cu: FP8 E4M3 (OCP E4M3FN) linear layers, needs sm_89+ (the host refuses older devices with
// "unavailable: needs sm_89"). Weights: the Quantizer's E4M3 codes [N, K] row-major and float32
// scales (1 per-tensor or N per-channel). Activations: one dynamic scale per token, quantized on the
// device with the Quantizer's float32 rule: scale = absmax / 448 (IEEE), code = RNE(x / scale)
// saturating at 448 (cvt.rn.satfinite.e4m3x2.f32). E4M3 x E4M3 products are exact in float32; they
// accumulate in float32; epilogue y = acc * ((double)s_w * s_a) rounded once to float32.
#include "common.cuh"
#include "kvcache.cuh"   // quantized KV caches (fp8-e4m3, int8) for the float32 engine

__device__ __forceinline__ unsigned char f32_to_e4m3(float v) {
    u16 pair;
    // d = {a -> upper byte, b -> lower byte}
    asm("cvt.rn.satfinite.e4m3x2.f32 %0, %1, %2;" : "=h"(pair) : "f"(0.f), "f"(v));
    return (unsigned char)(pair & 0xff);
}
// Two E4M3 codes (low byte = lower index) -> two floats, exact.
__device__ __forceinline__ float2 e4m3x2_to_float2(u16 codes) {
    u32 h2;
    asm("cvt.rn.f16x2.e4m3x2 %0, %1;" : "=r"(h2) : "h"(codes));
    return f16x2_to_float2(h2);
}

// grid T: per-token E4M3 activation quantization (Quantizer.QuantizeActivationsE4M3 in float32).
extern "C" __global__ void quantize_e4m3(const float* __restrict__ x, unsigned char* __restrict__ q,
                                         float* __restrict__ scale, int K) {
#if __CUDA_ARCH__ >= 890
    __shared__ float scratch[32];
    const float* xr = x + (size_t)blockIdx.x * K;
    float m = 0.f;
    for (int i = threadIdx.x; i < K; i += blockDim.x) m = fmaxf(m, fabsf(xr[i]));
    m = block_max(m, scratch);
    float s = m == 0.f ? 1.f : __fdiv_rn(m, 448.f);
    for (int i = threadIdx.x; i < K; i += blockDim.x) q[(size_t)blockIdx.x * K + i] = f32_to_e4m3(__fdiv_rn(xr[i], s));
    if (threadIdx.x == 0) scale[blockIdx.x] = s;
#endif
}

__device__ __forceinline__ float fp8_epilogue(float acc, float ws, float xs) {
    return (float)((double)acc * ((double)ws * (double)xs));
}

// Batch-1 decode GEMV: one warp per row, 8 rows per 256-thread block. K % 16 == 0: 16-byte loads
// (16 codes of W and of x), decoded pairwise by cvt; else a scalar loop.
extern "C" __global__ void __launch_bounds__(256) gemv_e4m3(const unsigned char* __restrict__ W, const unsigned char* __restrict__ xq,
                                                           const float* __restrict__ xs, const float* __restrict__ ws, int per_row,
                                                           float* __restrict__ y, int N, int K) {
#if __CUDA_ARCH__ >= 890
    int warp = threadIdx.x >> 5, lane = threadIdx.x & 31;
    int row = blockIdx.x * 8 + warp;
    if (row >= N) return;
    float acc = 0.f;
    const unsigned char* wr = W + (size_t)row * K;
    if ((K & 15) == 0) {
        const uint4* w4 = (const uint4*)wr; const uint4* x4 = (const uint4*)xq;
        for (int c = lane; c < (K >> 4); c += 32) {
            uint4 a = w4[c], b = x4[c];
            u32 av[4] = {a.x, a.y, a.z, a.w}, bv[4] = {b.x, b.y, b.z, b.w};
            #pragma unroll
            for (int j = 0; j < 4; j++) {
                float2 wa = e4m3x2_to_float2((u16)(av[j] & 0xffff)), xa = e4m3x2_to_float2((u16)(bv[j] & 0xffff));
                float2 wb = e4m3x2_to_float2((u16)(av[j] >> 16)), xb = e4m3x2_to_float2((u16)(bv[j] >> 16));
                acc += wa.x * xa.x + wa.y * xa.y + wb.x * xb.x + wb.y * xb.y;
            }
        }
    } else {
        for (int c = lane; c < K; c += 32) {
            float2 w2 = e4m3x2_to_float2((u16)wr[c]), x2 = e4m3x2_to_float2((u16)xq[c]);
            acc += w2.x * x2.x;
        }
    }
    acc = warp_sum(acc);
    if (lane == 0) y[row] = fp8_epilogue(acc, ws[per_row ? row : 0], xs[0]);
#endif
}

__device__ __forceinline__ u32 ld_u8x4(const unsigned char* p, int r, int c, int R, int C) {
    u32 v = 0;
    #pragma unroll
    for (int i = 0; i < 4; i++)
        if (r < R && c + i < C) v |= ((u32)p[(size_t)r * C + c + i]) << (8 * i);
    return v;
}

// Prefill GEMM on tensor cores: mma.sync.aligned.m16n8k32.row.col.f32.e4m3.e4m3.f32 (sm_89+, PTX ISA
// 8.4+); same tiling and fragment layout as gemm_int8_mma (8-bit operands), zero padding (code 0 = +0).
extern "C" __global__ void __launch_bounds__(128) gemm_e4m3_mma(const unsigned char* __restrict__ Xq, const float* __restrict__ xs,
                                                               const unsigned char* __restrict__ W, const float* __restrict__ ws, int per_row,
                                                               float* __restrict__ Y, int M, int N, int K) {
#if __CUDA_ARCH__ >= 890
    int warp = threadIdx.x >> 5, lane = threadIdx.x & 31, g = lane >> 2, q = lane & 3;
    int m0 = blockIdx.y * 16, n0 = blockIdx.x * 32 + warp * 8;
    if (n0 >= N) return;
    float c0 = 0.f, c1 = 0.f, c2 = 0.f, c3 = 0.f;
    for (int k0 = 0; k0 < K; k0 += 32) {
        int ka = k0 + 4 * q;
        u32 a0 = ld_u8x4(Xq, m0 + g, ka, M, K), a1 = ld_u8x4(Xq, m0 + g + 8, ka, M, K);
        u32 a2 = ld_u8x4(Xq, m0 + g, ka + 16, M, K), a3 = ld_u8x4(Xq, m0 + g + 8, ka + 16, M, K);
        u32 b0 = ld_u8x4(W, n0 + g, ka, N, K), b1 = ld_u8x4(W, n0 + g, ka + 16, N, K);
        asm volatile("mma.sync.aligned.m16n8k32.row.col.f32.e4m3.e4m3.f32 {%0,%1,%2,%3}, {%4,%5,%6,%7}, {%8,%9}, {%0,%1,%2,%3};"
                     : "+f"(c0), "+f"(c1), "+f"(c2), "+f"(c3)
                     : "r"(a0), "r"(a1), "r"(a2), "r"(a3), "r"(b0), "r"(b1));
    }
    int r0 = m0 + g, r1 = m0 + g + 8, col = n0 + 2 * q;
    if (r0 < M && col < N) Y[(size_t)r0 * N + col] = fp8_epilogue(c0, ws[per_row ? col : 0], xs[r0]);
    if (r0 < M && col + 1 < N) Y[(size_t)r0 * N + col + 1] = fp8_epilogue(c1, ws[per_row ? col + 1 : 0], xs[r0]);
    if (r1 < M && col < N) Y[(size_t)r1 * N + col] = fp8_epilogue(c2, ws[per_row ? col : 0], xs[r1]);
    if (r1 < M && col + 1 < N) Y[(size_t)r1 * N + col + 1] = fp8_epilogue(c3, ws[per_row ? col + 1 : 0], xs[r1]);
#endif
}
