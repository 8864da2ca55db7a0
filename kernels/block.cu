// block.cu: the 2025-2026 linear formats (issue 15) on CUDA cores, dequantized in registers:
//  * BF16: bf16 weights and activations (RNE), float32 accumulation (GEMV; prefill mma.sync m16n8k16 bf16).
//  * INT4 weight-only (W4A16: RTN, GPTQ, AWQ), group `group` along K: codes PACKED two per byte on the device
//    (low nibble = even column), float32 or fp16 group scales, one zero-point byte per group (8 for the
//    symmetric grids); activations fp16 (RNE), after the AWQ channel divisor when there is one.
//  * MX (MXFP8 E4M3 / E5M2, MXFP6 E2M3 / E3M2, MXFP4) and NVFP4: element codes (4-bit formats packed two per byte,
//    8- and 6-bit formats one per byte: FP6 is not bit-packed, so it takes 8 bits per code on the device), one
//    scale byte per block (E8M0 for MX, block 32; E4M3 for NVFP4, block 16, times the tensor's fl32(1 / S_enc)).
//    sm_80-sm_90 have no block-scaled MMA (tcgen05 / mma.kind::mxf8f6f4 need sm_100 / sm_120): emulated by
//    dequantization to float32 in the kernel. Weight-only: activations rounded to bf16; W+A: activations
//    quantized per block on the device with the same rule (lowbit.cuh, bit for bit with the Core codecs) and
//    dequantized exactly to float32.
// Dequantized weight = (element value - zero) * scale in float32 (the codecs' float32 value); products rounded to
// float32 (no FMA: --fmad=false), per-lane partial sums in K order, then a warp-shuffle tree. Decode GEMVs: one
// warp per output row, 8 rows per 256-thread block, grid (ceil(N/8), T): prefill runs the same kernel once per
// token (blockIdx.y), re-reading the weights T times (simple, not fast; only BF16 has a tensor-core prefill).
#include "common.cuh"
#include "lowbit.cuh"
#include "kvcache.cuh"

// ---- activations (grid-stride over n = T * K) ----

// xb = bf16(x) as bits (the BF16 linear's operand).
extern "C" __global__ void input_bf16(const float* __restrict__ x, u16* __restrict__ xb, int n) {
    for (int i = blockIdx.x * blockDim.x + threadIdx.x; i < n; i += gridDim.x * blockDim.x) xb[i] = lb_f32_to_bf16(x[i]);
}
// xf = bf16(x) as float (the weight-only MX / NVFP4 operand: bf16 activations).
extern "C" __global__ void input_bf16_f32(const float* __restrict__ x, float* __restrict__ xf, int n) {
    for (int i = blockIdx.x * blockDim.x + threadIdx.x; i < n; i += gridDim.x * blockDim.x) xf[i] = lb_bf16_to_f32(lb_f32_to_bf16(x[i]));
}
// xh = fp16(x / div[k]) (AWQ channel divisor, has_div = 1) or fp16(x): W4A16's half activations.
extern "C" __global__ void input_f16(const float* __restrict__ x, const float* __restrict__ div, int has_div, u16* __restrict__ xh, int n, int K) {
    for (int i = blockIdx.x * blockDim.x + threadIdx.x; i < n; i += gridDim.x * blockDim.x)
        xh[i] = f32_to_f16_bits(has_div ? __fdiv_rn(x[i], div[i % K]) : x[i]);
}
// MX quantize-dequantize of every block of bs values of every row (T rows of K): one thread per block.
extern "C" __global__ void input_mx(const float* __restrict__ x, float* __restrict__ xq, int T, int K, int bs,
                                    int ebits, int mbits, int bias, int max_code, int sign_bit, int nan_code,
                                    int rule, int emax_elem, float rcp_max) {
    int nb = (K + bs - 1) / bs;
    LbMx f = {ebits, mbits, bias, max_code, sign_bit, nan_code, rule, emax_elem, rcp_max};
    for (int b = blockIdx.x * blockDim.x + threadIdx.x; b < T * nb; b += gridDim.x * blockDim.x) {
        int t = b / nb, start = (b % nb) * bs, n = K - start < bs ? K - start : bs;
        lb_mx_block(x + (size_t)t * K + start, xq + (size_t)t * K + start, n, f);
    }
}
// NVFP4 quantize-dequantize of each row with its own global scale (the row's amax: per token). grid T.
extern "C" __global__ void input_nvfp4(const float* __restrict__ x, float* __restrict__ xq, int K) {
    __shared__ float scratch[32];
    const float* xr = x + (size_t)blockIdx.x * K;
    float amax = 0.f;
    for (int i = threadIdx.x; i < K; i += blockDim.x) amax = fmaxf(amax, fabsf(xr[i]));
    float g = lb_nvfp4_global(block_max(amax, scratch));
    for (int b = threadIdx.x; b * 16 < K; b += blockDim.x) {
        int n = K - b * 16 < 16 ? K - b * 16 : 16;
        lb_nvfp4_block(xr + b * 16, xq + (size_t)blockIdx.x * K + b * 16, n, g);
    }
}

// ---- BF16 ----

__device__ __forceinline__ float bf16_dot2(u32 w, u32 x) {
    return __fmul_rn(__uint_as_float(w << 16), __uint_as_float(x << 16)) + __fmul_rn(__uint_as_float(w & 0xffff0000u), __uint_as_float(x & 0xffff0000u));
}

// y[t, row] = sum_k bf16(W[row, k]) * xb[t, k]. K % 8 == 0: 16-byte loads (8 values); else a scalar loop.
extern "C" __global__ void __launch_bounds__(256) gemv_bf16(const u16* __restrict__ W, const u16* __restrict__ xb,
                                                           float* __restrict__ y, int N, int K) {
    int warp = threadIdx.x >> 5, lane = threadIdx.x & 31, row = blockIdx.x * 8 + warp, t = blockIdx.y;
    if (row >= N) return;
    const u16* x = xb + (size_t)t * K;
    float acc = 0.f;
    if ((K & 7) == 0) {
        const uint4* w4 = (const uint4*)(W + (size_t)row * K);
        const uint4* x4 = (const uint4*)x;
        #pragma unroll 4
        for (int c = lane; c < (K >> 3); c += 32) {
            uint4 a = w4[c], b = x4[c];
            acc += bf16_dot2(a.x, b.x) + bf16_dot2(a.y, b.y) + bf16_dot2(a.z, b.z) + bf16_dot2(a.w, b.w);
        }
    } else {
        const u16* wr = W + (size_t)row * K;
        for (int c = lane; c < K; c += 32) acc += __fmul_rn(lb_bf16_to_f32(wr[c]), lb_bf16_to_f32(x[c]));
    }
    acc = warp_sum(acc);
    if (lane == 0) y[(size_t)t * N + row] = acc;
}

__device__ __forceinline__ u16 ld_b(const u16* p, int r, int c, int R, int C) { return (r < R && c < C) ? p[(size_t)r * C + c] : (u16)0; }
__device__ __forceinline__ u32 pack_b2(u16 lo, u16 hi) { return (u32)lo | ((u32)hi << 16); }

// Prefill GEMM Y[M, N] = X[M, K] . W[N, K]^T on tensor cores: mma.sync.aligned.m16n8k16.row.col.f32.bf16.bf16.f32
// (sm_80+), the tiling and fragment layout of gemm_f16_mma (fp16.cu) with bf16 operands; zero padding (bits 0 = +0).
extern "C" __global__ void __launch_bounds__(128) gemm_bf16_mma(const u16* __restrict__ X, const u16* __restrict__ W,
                                                               float* __restrict__ Y, int M, int N, int K) {
#if __CUDA_ARCH__ >= 800
    int warp = threadIdx.x >> 5, lane = threadIdx.x & 31, g = lane >> 2, q = lane & 3;
    int m0 = blockIdx.y * 16, n0 = blockIdx.x * 32 + warp * 8;
    if (n0 >= N) return;
    float c0 = 0.f, c1 = 0.f, c2 = 0.f, c3 = 0.f;
    for (int k0 = 0; k0 < K; k0 += 16) {
        int ka = k0 + 2 * q;
        u32 a0 = pack_b2(ld_b(X, m0 + g, ka, M, K), ld_b(X, m0 + g, ka + 1, M, K));
        u32 a1 = pack_b2(ld_b(X, m0 + g + 8, ka, M, K), ld_b(X, m0 + g + 8, ka + 1, M, K));
        u32 a2 = pack_b2(ld_b(X, m0 + g, ka + 8, M, K), ld_b(X, m0 + g, ka + 9, M, K));
        u32 a3 = pack_b2(ld_b(X, m0 + g + 8, ka + 8, M, K), ld_b(X, m0 + g + 8, ka + 9, M, K));
        u32 b0 = pack_b2(ld_b(W, n0 + g, ka, N, K), ld_b(W, n0 + g, ka + 1, N, K));
        u32 b1 = pack_b2(ld_b(W, n0 + g, ka + 8, N, K), ld_b(W, n0 + g, ka + 9, N, K));
        asm volatile("mma.sync.aligned.m16n8k16.row.col.f32.bf16.bf16.f32 {%0,%1,%2,%3}, {%4,%5,%6,%7}, {%8,%9}, {%0,%1,%2,%3};"
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

// ---- INT4 weight-only (W4A16) ----

__device__ __forceinline__ float int4_scale(const void* scales, int scale_f16, size_t i) {
    return scale_f16 ? f16_bits_to_f32(((const u16*)scales)[i]) : ((const float*)scales)[i];
}
// Eight codes of one 32-bit word (low nibble first) times eight halves of x (one uint4), for one group.
__device__ __forceinline__ float int4_dot8(u32 codes, uint4 xv, float z, float s) {
    u32 xs[4] = {xv.x, xv.y, xv.z, xv.w};
    float acc = 0.f;
    #pragma unroll
    for (int j = 0; j < 4; j++) {
        float2 x2 = f16x2_to_float2(xs[j]);
        float w0 = __fmul_rn((float)((codes >> (8 * j)) & 15u) - z, s);
        float w1 = __fmul_rn((float)((codes >> (8 * j + 4)) & 15u) - z, s);
        acc += __fmul_rn(w0, x2.x) + __fmul_rn(w1, x2.y);
    }
    return acc;
}

// y[t, row] = sum_k ((code[row, k] - zero[row, g]) * scale[row, g]) * xh[t, k], g = k / group. Codes [N, ceil(K/2)]
// bytes (two per byte), scales [N, G] float32 or fp16 (scale_f16), zeros [N, G] bytes, G = ceil(K / group).
// K % 32 == 0 and group % 32 == 0: each lane streams 16 bytes (32 codes) and 64 bytes of x per step; else scalar.
extern "C" __global__ void __launch_bounds__(256) gemv_int4(const unsigned char* __restrict__ Wp, const void* __restrict__ scales, int scale_f16,
                                                           const unsigned char* __restrict__ zeros, const u16* __restrict__ xh,
                                                           float* __restrict__ y, int N, int K, int group) {
    int warp = threadIdx.x >> 5, lane = threadIdx.x & 31, row = blockIdx.x * 8 + warp, t = blockIdx.y;
    if (row >= N) return;
    int G = (K + group - 1) / group, stride = (K + 1) >> 1;
    const unsigned char* wr = Wp + (size_t)row * stride;
    const u16* x = xh + (size_t)t * K;
    size_t g0 = (size_t)row * G;
    float acc = 0.f;
    if ((K & 31) == 0 && (group & 31) == 0) {
        const uint4* w4 = (const uint4*)wr;
        const uint4* x4 = (const uint4*)x;
        for (int c = lane; c < (K >> 5); c += 32) {
            int g = (c << 5) / group;
            float s = int4_scale(scales, scale_f16, g0 + g), z = (float)zeros[g0 + g];
            uint4 w = w4[c];
            acc += int4_dot8(w.x, x4[4 * c], z, s) + int4_dot8(w.y, x4[4 * c + 1], z, s)
                 + int4_dot8(w.z, x4[4 * c + 2], z, s) + int4_dot8(w.w, x4[4 * c + 3], z, s);
        }
    } else {
        for (int c = lane; c < K; c += 32) {
            int g = c / group;
            float code = (float)((wr[c >> 1] >> ((c & 1) * 4)) & 15);
            float w = __fmul_rn(code - (float)zeros[g0 + g], int4_scale(scales, scale_f16, g0 + g));
            acc += __fmul_rn(w, f16_bits_to_f32(x[c]));
        }
    }
    acc = warp_sum(acc);
    if (lane == 0) y[(size_t)t * N + row] = acc;
}

// ---- MX / NVFP4 (block-scaled mini-floats), dequantized in registers ----

struct BlockFmt { int code_bits, scale_kind, bs, ebits, mbits, bias; float global_decode; };

// Decode scale of a block from its scale byte: E8M0 2^(s - 127) (scale_kind 0; 0xFF = NaN) or, for NVFP4
// (scale_kind 1), fp32(E4M3 s) * fl32(1 / S_enc), as Nvfp4Vector.BlockDecodeScale.
__device__ __forceinline__ float block_scale(unsigned char s, const BlockFmt& f) {
    if (f.scale_kind == 0) return s == 0xff ? __uint_as_float(0x7fc00000u) : lb_pow2((int)s - 127);
    return __fmul_rn(lb_e4m3_decode(s), f.global_decode);
}
__device__ __forceinline__ int block_code(const unsigned char* wr, int k, int code_bits) {
    return code_bits == 4 ? (wr[k >> 1] >> ((k & 1) * 4)) & 15 : wr[k];
}

// y[t, row] = sum_k (element(code[row, k]) * scale(row, k / bs)) * x[t, k] with x float32 (bf16-rounded or
// block-quantize-dequantized by input_*). Codes [N, ceil(K/2)] (code_bits 4) or [N, K] bytes (8; FP6 too), scale
// bytes [N, ceil(K/bs)]. K % 8 == 0: each lane takes 8 consecutive codes per step (one u32 of nibbles or 8 bytes;
// bs is 16 or 32, so 8 codes share one scale) and 2 float4 of x; else a scalar loop.
extern "C" __global__ void __launch_bounds__(256) gemv_block(const unsigned char* __restrict__ codes, int code_bits,
                                                            const unsigned char* __restrict__ scales, int scale_kind, float global_decode,
                                                            int bs, int ebits, int mbits, int bias,
                                                            const float* __restrict__ xf, float* __restrict__ y, int N, int K) {
    int warp = threadIdx.x >> 5, lane = threadIdx.x & 31, row = blockIdx.x * 8 + warp, t = blockIdx.y;
    if (row >= N) return;
    BlockFmt f = {code_bits, scale_kind, bs, ebits, mbits, bias, global_decode};
    int nb = (K + bs - 1) / bs, stride = code_bits == 4 ? (K + 1) >> 1 : K;
    const unsigned char* wr = codes + (size_t)row * stride;
    const unsigned char* sr = scales + (size_t)row * nb;
    const float* x = xf + (size_t)t * K;
    float acc = 0.f;
    if ((K & 7) == 0) {
        for (int c = lane; c < (K >> 3); c += 32) {
            float s = block_scale(sr[(c << 3) / bs], f);
            u32 lo, hi;
            if (code_bits == 4) { u32 w = ((const u32*)wr)[c]; lo = w; hi = 0; }
            else { uint2 w = ((const uint2*)wr)[c]; lo = w.x; hi = w.y; }
            float4 xa = ((const float4*)x)[2 * c], xb = ((const float4*)x)[2 * c + 1];
            float xv[8] = {xa.x, xa.y, xa.z, xa.w, xb.x, xb.y, xb.z, xb.w};
            #pragma unroll
            for (int j = 0; j < 8; j++) {
                int code = code_bits == 4 ? (int)((lo >> (4 * j)) & 15u) : (int)(((j < 4 ? lo : hi) >> (8 * (j & 3))) & 0xffu);
                acc += __fmul_rn(__fmul_rn(lb_decode(code, ebits, mbits, bias), s), xv[j]);
            }
        }
    } else {
        for (int k = lane; k < K; k += 32)
            acc += __fmul_rn(__fmul_rn(lb_decode(block_code(wr, k, code_bits), ebits, mbits, bias), block_scale(sr[k / bs], f)), x[k]);
    }
    acc = warp_sum(acc);
    if (lane == 0) y[(size_t)t * N + row] = acc;
}
