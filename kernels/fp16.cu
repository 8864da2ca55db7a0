// fp16.cu: FP16 linear layers. Weights IEEE half [N, K] row-major (y = W x, N outputs, K inputs),
// activations rounded to half, products accumulated in float32.
#include "common.cuh"
#include "kvcache.cuh"   // quantized KV caches (fp8-e4m3, int8) for the float32 engine

// Batch-1 decode GEMV, bandwidth bound: one warp per output row, 8 rows per 256-thread block
// (grid ceil(N/8)). When K % 8 == 0 (every row 16-byte aligned) each lane streams 16-byte loads
// (8 halves of W and of x) and several of them are in flight per lane; otherwise a scalar loop.
// Partial sums are reduced with warp shuffles. y [N] float32.
extern "C" __global__ void __launch_bounds__(256) gemv_f16(const u16* __restrict__ W, const u16* __restrict__ x,
                                                          float* __restrict__ y, int N, int K) {
    int warp = threadIdx.x >> 5, lane = threadIdx.x & 31;
    int row = blockIdx.x * 8 + warp;
    if (row >= N) return;
    float acc = 0.f;
    if ((K & 7) == 0) {
        const uint4* w4 = (const uint4*)(W + (size_t)row * K);
        const uint4* x4 = (const uint4*)x;
        int n4 = K >> 3;
        #pragma unroll 4
        for (int c = lane; c < n4; c += 32) {
            uint4 wv = w4[c], xv = x4[c];
            float2 a, b;
            a = f16x2_to_float2(wv.x); b = f16x2_to_float2(xv.x); acc += a.x * b.x + a.y * b.y;
            a = f16x2_to_float2(wv.y); b = f16x2_to_float2(xv.y); acc += a.x * b.x + a.y * b.y;
            a = f16x2_to_float2(wv.z); b = f16x2_to_float2(xv.z); acc += a.x * b.x + a.y * b.y;
            a = f16x2_to_float2(wv.w); b = f16x2_to_float2(xv.w); acc += a.x * b.x + a.y * b.y;
        }
    } else {
        const u16* wr = W + (size_t)row * K;
        for (int c = lane; c < K; c += 32) acc += f16_bits_to_f32(wr[c]) * f16_bits_to_f32(x[c]);
    }
    acc = warp_sum(acc);
    if (lane == 0) y[row] = acc;
}

__device__ __forceinline__ u16 ld_h(const u16* p, int r, int c, int R, int C, int ld) {
    return (r < R && c < C) ? p[(size_t)r * ld + c] : (u16)0;
}
__device__ __forceinline__ u32 pack_h2(u16 lo, u16 hi) { return (u32)lo | ((u32)hi << 16); }

// Prefill GEMM on tensor cores: Y[M, N] = X[M, K] . W[N, K]^T with mma.sync.aligned.m16n8k16.row.col
// .f32.f16.f16.f32 (sm_80+). Each warp owns one 16x8 tile of Y; a 128-thread block owns 16 rows x 32
// columns (grid (ceil(N/32), ceil(M/16))). Fragments are loaded straight from global memory with
// zero padding at the edges (any M, N, K). Fragment layout (PTX ISA, m16n8k16 .f16): g = lane/4,
// q = lane%4; A regs a0:(g, 2q..2q+1) a1:(g+8, 2q..) a2:(g, 2q+8..) a3:(g+8, 2q+8..); B regs
// b0:(k=2q..2q+1, n=g) b1:(k=2q+8.., n=g) - B "col" = W's row-major [N, K]; C c0,c1:(g, 2q..2q+1)
// c2,c3:(g+8, 2q..).
extern "C" __global__ void __launch_bounds__(128) gemm_f16_mma(const u16* __restrict__ X, const u16* __restrict__ W,
                                                              float* __restrict__ Y, int M, int N, int K) {
#if __CUDA_ARCH__ >= 800
    int warp = threadIdx.x >> 5, lane = threadIdx.x & 31, g = lane >> 2, q = lane & 3;
    int m0 = blockIdx.y * 16, n0 = blockIdx.x * 32 + warp * 8;
    if (n0 >= N) return;
    float c0 = 0.f, c1 = 0.f, c2 = 0.f, c3 = 0.f;
    for (int k0 = 0; k0 < K; k0 += 16) {
        int ka = k0 + 2 * q;
        u32 a0 = pack_h2(ld_h(X, m0 + g, ka, M, K, K), ld_h(X, m0 + g, ka + 1, M, K, K));
        u32 a1 = pack_h2(ld_h(X, m0 + g + 8, ka, M, K, K), ld_h(X, m0 + g + 8, ka + 1, M, K, K));
        u32 a2 = pack_h2(ld_h(X, m0 + g, ka + 8, M, K, K), ld_h(X, m0 + g, ka + 9, M, K, K));
        u32 a3 = pack_h2(ld_h(X, m0 + g + 8, ka + 8, M, K, K), ld_h(X, m0 + g + 8, ka + 9, M, K, K));
        u32 b0 = pack_h2(ld_h(W, n0 + g, ka, N, K, K), ld_h(W, n0 + g, ka + 1, N, K, K));
        u32 b1 = pack_h2(ld_h(W, n0 + g, ka + 8, N, K, K), ld_h(W, n0 + g, ka + 9, N, K, K));
        asm volatile("mma.sync.aligned.m16n8k16.row.col.f32.f16.f16.f32 {%0,%1,%2,%3}, {%4,%5,%6,%7}, {%8,%9}, {%0,%1,%2,%3};"
                     : "+f"(c0), "+f"(c1), "+f"(c2), "+f"(c3)
                     : "r"(a0), "r"(a1), "r"(a2), "r"(a3), "r"(b0), "r"(b1));
    }
    int r0 = m0 + g, r1 = m0 + g + 8, col = n0 + 2 * q;
    if (r0 < M && col < N) Y[(size_t)r0 * N + col] = c0;
    if (r0 < M && col + 1 < N) Y[(size_t)r0 * N + col + 1] = c1;
    if (r1 < M && col < N) Y[(size_t)r1 * N + col] = c2;
    if (r1 < M && col + 1 < N) Y[(size_t)r1 * N + col + 1] = c3;
#endif
}
