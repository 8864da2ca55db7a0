// kvcache.cuh: quantized KV caches of the float32 engines (included by fp16.cu, int8.cu, fp8.cu and block.cu).
// The caches STORE the codes (1 byte per value plus scales), and attention dequantizes at every read, so the
// memory saving is real (about 4x against the float32 cache). The formats are those of the ILGPU engines
// (GpuIntLab.Backends.Ilgpu.KvCacheKernels), value for value:
//  * "fp8-e4m3" (vLLM kv_cache_dtype=fp8, calculate_kv_scales): one scale per layer for K and one for V,
//    k_scale = max|K| / 200 and v_scale = max|V| / 100 over the sequence's first token (position 0), written
//    E4M3_satfinite_RNE(x / scale), read fp16(e4m3 * scale). Cache per layer: [positions, kv_dim] bytes; the
//    scales: float scales[2 * layers] (k, v of each layer).
//  * "int8" (LMDeploy quant_policy=8): per token and kv head, asymmetric: s = (max - min) / 255, zp = min,
//    q = clamp(RNE((x - min) / s), 0, 255), read q * s + min. Cache per layer and position: kv_dim code bytes,
//    padded to a multiple of 4, then (s, min) as two floats per kv head: `stride` bytes per position.
// The attention kernels are attention_f32 with the loads replaced (same order of every float operation).
#pragma once
#include "common.cuh"
#include "lowbit.cuh"

// When the step starts the sequence (*pos == 0): scales[2*layer] = max|k[0,:]| / 200, scales[2*layer+1] =
// max|v[0,:]| / 100 (1 for an all-zero row: vLLM would divide by 0). Otherwise nothing. grid 1, block 256.
extern "C" __global__ void kv_fp8_scales(const float* __restrict__ k, const float* __restrict__ v, float* __restrict__ scales,
                                         int layer, const int* __restrict__ pos, int kv_dim) {
    __shared__ float scratch[32];
    if (*pos != 0) return;   // uniform over the block: no barrier is skipped by part of it
    float mk = 0.f, mv = 0.f;
    for (int i = threadIdx.x; i < kv_dim; i += blockDim.x) { mk = fmaxf(mk, fabsf(k[i])); mv = fmaxf(mv, fabsf(v[i])); }
    mk = block_max(mk, scratch);
    mv = block_max(mv, scratch);   // block_max starts with a barrier: the first result's reads are done
    if (threadIdx.x == 0) {
        scales[2 * layer] = mk == 0.f ? 1.f : __fdiv_rn(mk, 200.f);
        scales[2 * layer + 1] = mv == 0.f ? 1.f : __fdiv_rn(mv, 100.f);
    }
}

// Appends k, v [T, kv_dim] as E4M3 codes at positions pos..pos+T-1 (after kv_fp8_scales on the same stream). grid T.
extern "C" __global__ void kv_store_fp8(const float* __restrict__ k, const float* __restrict__ v, unsigned char* kc, unsigned char* vc,
                                        const float* __restrict__ scales, int layer, const int* __restrict__ pos, int kv_dim) {
    int t = blockIdx.x;
    size_t dst = (size_t)(*pos + t) * kv_dim, src = (size_t)t * kv_dim;
    float ks = scales[2 * layer], vs = scales[2 * layer + 1];
    for (int i = threadIdx.x; i < kv_dim; i += blockDim.x) {
        kc[dst + i] = lb_kv_fp8_encode(k[src + i], ks);
        vc[dst + i] = lb_kv_fp8_encode(v[src + i], vs);
    }
}

// Appends k, v as int8 codes with (s, min) per kv head. grid T, one warp per kv head (block a multiple of 32).
__device__ __forceinline__ void kv_int8_head(const float* x, unsigned char* codes, float* sm, int hd, int lane) {
    float mn = 3.0e38f, mx = -3.0e38f;
    for (int i = lane; i < hd; i += 32) { mn = fminf(mn, x[i]); mx = fmaxf(mx, x[i]); }
    for (int o = 16; o > 0; o >>= 1) { mn = fminf(mn, __shfl_xor_sync(FULL_MASK, mn, o)); mx = fmaxf(mx, __shfl_xor_sync(FULL_MASK, mx, o)); }
    float s = lb_kv_int8_step(mn, mx);
    for (int i = lane; i < hd; i += 32) codes[i] = lb_kv_int8_encode(x[i], mn, s);
    if (lane == 0) { sm[0] = s; sm[1] = mn; }
}
extern "C" __global__ void kv_store_int8(const float* __restrict__ k, const float* __restrict__ v, unsigned char* kc, unsigned char* vc,
                                         const int* __restrict__ pos, int n_kv, int hd, int stride) {
    int t = blockIdx.x, warp = threadIdx.x >> 5, lane = threadIdx.x & 31, kv_dim = n_kv * hd;
    int codes_bytes = (kv_dim + 3) & ~3;
    size_t dst = (size_t)(*pos + t) * stride;
    for (int h = warp; h < n_kv; h += blockDim.x >> 5) {
        const float* ks = k + (size_t)t * kv_dim + h * hd;
        const float* vs = v + (size_t)t * kv_dim + h * hd;
        kv_int8_head(ks, kc + dst + h * hd, (float*)(kc + dst + codes_bytes) + 2 * h, hd, lane);
        kv_int8_head(vs, vc + dst + h * hd, (float*)(vc + dst + codes_bytes) + 2 * h, hd, lane);
    }
}

// Cache readers: value i of kv head kvh at position j.
struct KvFp8 {
    const unsigned char* c; float scale; int kv_dim;
    __device__ __forceinline__ float at(int j, int kvh, int hd, int i) const { return lb_kv_fp8_decode(c[(size_t)j * kv_dim + kvh * hd + i], scale); }
};
struct KvInt8 {
    const unsigned char* c; int stride, codes_bytes;
    __device__ __forceinline__ float at(int j, int kvh, int hd, int i) const {
        const unsigned char* row = c + (size_t)j * stride;
        const float* sm = (const float*)(row + codes_bytes) + 2 * kvh;
        return lb_kv_int8_decode(row[kvh * hd + i], sm[1], sm[0]);
    }
};

// attention_f32 over a quantized cache: grid (n_heads, T), one score per cached position in dynamic shared memory.
template <class Kv>
__device__ __forceinline__ void attention_kv(const float* __restrict__ q, Kv kc, Kv vc, float* __restrict__ out, const int* __restrict__ pos,
                                             int n_heads, int n_kv, int hd, float scale) {
    extern __shared__ float kv_scores[];   // the same dynamic shared memory as attention_f32's scores[]
    __shared__ float scratch[32];
    int h = blockIdx.x, t = blockIdx.y, n = *pos + t + 1;
    int kvh = h / (n_heads / n_kv);
    const float* qh = q + (size_t)t * n_heads * hd + h * hd;
    float mx = -3.0e38f;
    for (int j = threadIdx.x; j < n; j += blockDim.x) {
        float d = 0.f;
        for (int i = 0; i < hd; i++) d += qh[i] * kc.at(j, kvh, hd, i);
        d *= scale;
        kv_scores[j] = d;
        mx = fmaxf(mx, d);
    }
    mx = block_max(mx, scratch);
    float sum = 0.f;
    for (int j = threadIdx.x; j < n; j += blockDim.x) { float e = expf(kv_scores[j] - mx); kv_scores[j] = e; sum += e; }
    sum = block_sum(sum, scratch);
    float inv = 1.f / sum;
    for (int i = threadIdx.x; i < hd; i += blockDim.x) {
        float acc = 0.f;
        for (int j = 0; j < n; j++) acc += kv_scores[j] * vc.at(j, kvh, hd, i);
        out[(size_t)t * n_heads * hd + h * hd + i] = acc * inv;
    }
}

extern "C" __global__ void attention_fp8kv(const float* __restrict__ q, const unsigned char* __restrict__ kc, const unsigned char* __restrict__ vc,
                                           const float* __restrict__ scales, int layer, float* __restrict__ out, const int* __restrict__ pos,
                                           int n_heads, int n_kv, int hd, float scale) {
    int kv_dim = n_kv * hd;
    attention_kv(q, KvFp8{kc, scales[2 * layer], kv_dim}, KvFp8{vc, scales[2 * layer + 1], kv_dim}, out, pos, n_heads, n_kv, hd, scale);
}

extern "C" __global__ void attention_int8kv(const float* __restrict__ q, const unsigned char* __restrict__ kc, const unsigned char* __restrict__ vc,
                                            float* __restrict__ out, const int* __restrict__ pos, int n_heads, int n_kv, int hd, int stride, float scale) {
    int codes_bytes = (n_kv * hd + 3) & ~3;
    attention_kv(q, KvInt8{kc, stride, codes_bytes}, KvInt8{vc, stride, codes_bytes}, out, pos, n_heads, n_kv, hd, scale);
}
