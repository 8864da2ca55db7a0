// common.cuh: shared device helpers and the float32 forward kernels used by the fp16, int8 and fp8
// modules (each .cu includes this; NVRTC receives it as an in-memory header named "common.cuh").
//
// Conventions every kernel here assumes:
//  * T = number of tokens in the batch (1 for a decode step, the prompt length for prefill);
//    activations are row-major [T, dim] float32.
//  * The position of the first token of the batch lives in DEVICE memory (const int* pos): kernels
//    read it, and advance_pos adds T after the step, so a decode step has no host-side argument
//    that changes from step to step and can be captured once in a CUDA graph and replayed.
//  * KV cache: per layer [positions, kv_dim] float32 for keys and for values, grown by the host with the
//    context (a growth re-captures the decode graph, since the buffers move).
//  * q and the attention output are [T, n_heads * hd] (QDim: Qwen3's may differ from hidden).
//  * Block sizes are the launch's blockDim (a multiple of 32, at most 1024); reductions use
//    warp shuffles then one shared-memory pass.
// No CUDA headers are included: NVRTC provides the built-ins, half/e4m3 conversions are PTX.
#pragma once

typedef unsigned long long u64;
typedef long long i64;
typedef unsigned int u32;
typedef unsigned short u16;

#define FULL_MASK 0xffffffffu

__device__ __forceinline__ float warp_sum(float v) {
    for (int o = 16; o > 0; o >>= 1) v += __shfl_xor_sync(FULL_MASK, v, o);
    return v;
}
__device__ __forceinline__ float warp_max(float v) {
    for (int o = 16; o > 0; o >>= 1) v = fmaxf(v, __shfl_xor_sync(FULL_MASK, v, o));
    return v;
}
__device__ __forceinline__ int warp_sum_int(int v) {
    for (int o = 16; o > 0; o >>= 1) v += __shfl_xor_sync(FULL_MASK, v, o);
    return v;
}

// Block-wide sum/max (all threads get the result). scratch: 32 floats of shared memory.
__device__ float block_sum(float v, float* scratch) {
    int lane = threadIdx.x & 31, warp = threadIdx.x >> 5, nw = (blockDim.x + 31) >> 5;
    v = warp_sum(v);
    __syncthreads();
    if (lane == 0) scratch[warp] = v;
    __syncthreads();
    float r = 0.f;
    for (int i = 0; i < nw; i++) r += scratch[i];   // same order in every thread: deterministic
    return r;
}
__device__ float block_max(float v, float* scratch) {
    int lane = threadIdx.x & 31, warp = threadIdx.x >> 5, nw = (blockDim.x + 31) >> 5;
    v = warp_max(v);
    __syncthreads();
    if (lane == 0) scratch[warp] = v;
    __syncthreads();
    float r = scratch[0];
    for (int i = 1; i < nw; i++) r = fmaxf(r, scratch[i]);
    return r;
}

// IEEE binary16 <-> float32 through PTX cvt (round to nearest even; identical to __float2half_rn).
__device__ __forceinline__ u16 f32_to_f16_bits(float f) {
    u16 h; asm("cvt.rn.f16.f32 %0, %1;" : "=h"(h) : "f"(f)); return h;
}
__device__ __forceinline__ float f16_bits_to_f32(u16 h) {
    float f; asm("cvt.f32.f16 %0, %1;" : "=f"(f) : "h"(h)); return f;
}
// Two halves packed in a 32-bit word (low half = lower index) -> two floats.
__device__ __forceinline__ float2 f16x2_to_float2(u32 w) {
    float2 r; r.x = f16_bits_to_f32((u16)(w & 0xffffu)); r.y = f16_bits_to_f32((u16)(w >> 16)); return r;
}

// ---------------------------------------------------------------------------------------------
// Float32 forward kernels (fp16 / int8 / fp8 backends: everything but the linear layers).
// ---------------------------------------------------------------------------------------------

// x[t, :] = table[tokens[t], :]. grid T, any block.
extern "C" __global__ void embed_f32(const float* __restrict__ table, const int* __restrict__ tokens,
                                     float* __restrict__ x, int dim) {
    int t = blockIdx.x;
    const float* row = table + (size_t)tokens[t] * dim;
    for (int i = threadIdx.x; i < dim; i += blockDim.x) x[(size_t)t * dim + i] = row[i];
}

// out[t] = w * (x[t] * rsqrt(mean(x[t]^2) + eps)), float32. grid T.
extern "C" __global__ void rmsnorm_f32(const float* __restrict__ x, const float* __restrict__ w,
                                       float* __restrict__ out, int dim, float eps) {
    __shared__ float scratch[32];
    const float* xr = x + (size_t)blockIdx.x * dim;
    float ss = 0.f;
    for (int i = threadIdx.x; i < dim; i += blockDim.x) ss += xr[i] * xr[i];
    ss = block_sum(ss, scratch);
    float inv = rsqrtf(ss / (float)dim + eps);
    for (int i = threadIdx.x; i < dim; i += blockDim.x) out[(size_t)blockIdx.x * dim + i] = w[i] * (xr[i] * inv);
}

// HF rotate-half RoPE in place on q [T, n_heads*hd] and k [T, n_kv*hd]; cos/sin tables [positions, hd/2]
// (FloatRope: float64 angles, llama3 rope_scaling applied, rounded once to float32; uploaded as the context grows). grid T.
extern "C" __global__ void rope_f32(float* q, float* k, const float* __restrict__ cos_t, const float* __restrict__ sin_t,
                                    const int* __restrict__ pos, int n_heads, int n_kv, int hd) {
    int t = blockIdx.x, p = *pos + t, half = hd >> 1;
    const float* c = cos_t + (size_t)p * half;
    const float* s = sin_t + (size_t)p * half;
    int nq = n_heads * half, nk = n_kv * half;
    for (int idx = threadIdx.x; idx < nq + nk; idx += blockDim.x) {
        float* base; int h, i;
        if (idx < nq) { h = idx / half; i = idx % half; base = q + (size_t)t * n_heads * hd + h * hd; }
        else { int j = idx - nq; h = j / half; i = j % half; base = k + (size_t)t * n_kv * hd + h * hd; }
        float a = base[i], b = base[i + half];
        base[i] = a * c[i] - b * s[i];
        base[i + half] = b * c[i] + a * s[i];
    }
}

// Appends k, v [T, kv_dim] at positions pos..pos+T-1 of this layer's cache [positions, kv_dim]. grid T.
extern "C" __global__ void kv_store_f32(const float* __restrict__ k, const float* __restrict__ v,
                                        float* kc, float* vc, const int* __restrict__ pos, int kv_dim) {
    int t = blockIdx.x; size_t dst = (size_t)(*pos + t) * kv_dim, src = (size_t)t * kv_dim;
    for (int i = threadIdx.x; i < kv_dim; i += blockDim.x) { kc[dst + i] = k[src + i]; vc[dst + i] = v[src + i]; }
}

// Causal attention for query token t (position pos+t) and head h: grid (n_heads, T), dynamic shared
// memory one float per cached position (sized by the host to the cache's capacity, so the launch is the
// same at every decode step until the cache grows). GQA: head h reads kv head
// h / (n_heads / n_kv). scores in float32, softmax with max subtraction, expf.
extern "C" __global__ void attention_f32(const float* __restrict__ q, const float* __restrict__ kc, const float* __restrict__ vc,
                                         float* __restrict__ out, const int* __restrict__ pos,
                                         int n_heads, int n_kv, int hd, float scale) {
    extern __shared__ float scores[];
    __shared__ float scratch[32];
    int h = blockIdx.x, t = blockIdx.y, n = *pos + t + 1;
    int kvh = h / (n_heads / n_kv), kv_dim = n_kv * hd;
    const float* qh = q + (size_t)t * n_heads * hd + h * hd;
    float mx = -3.0e38f;
    for (int j = threadIdx.x; j < n; j += blockDim.x) {
        const float* kj = kc + (size_t)j * kv_dim + kvh * hd;
        float d = 0.f;
        for (int i = 0; i < hd; i++) d += qh[i] * kj[i];
        d *= scale;
        scores[j] = d;
        mx = fmaxf(mx, d);
    }
    mx = block_max(mx, scratch);
    float sum = 0.f;
    for (int j = threadIdx.x; j < n; j += blockDim.x) { float e = expf(scores[j] - mx); scores[j] = e; sum += e; }
    sum = block_sum(sum, scratch);   // its barriers order every thread's scores[] writes before the reads below
    float inv = 1.f / sum;
    for (int i = threadIdx.x; i < hd; i += blockDim.x) {
        float acc = 0.f;
        for (int j = 0; j < n; j++) acc += scores[j] * vc[(size_t)j * kv_dim + kvh * hd + i];
        out[(size_t)t * n_heads * hd + h * hd + i] = acc * inv;
    }
}

// h = silu(g) * u elementwise over n = T * intermediate. The engines pass h == g (in place), so g and h
// carry no __restrict__: that promise would be false, and the compiler may act on it.
extern "C" __global__ void swiglu_f32(const float* g, const float* __restrict__ u, float* h, int n) {
    for (int i = blockIdx.x * blockDim.x + threadIdx.x; i < n; i += gridDim.x * blockDim.x) {
        float a = g[i];
        h[i] = a / (1.f + expf(-a)) * u[i];
    }
}

// y[t, j] += b[j] over n = T * width (q/k/v/o biases of Qwen2 / attention_bias).
extern "C" __global__ void bias_add_f32(float* y, const float* __restrict__ b, int n, int width) {
    for (int i = blockIdx.x * blockDim.x + threadIdx.x; i < n; i += gridDim.x * blockDim.x) y[i] += b[i % width];
}

// Qwen3's q/k norm: every row of dim (= head_dim) values of x RMS-normalised IN PLACE with the same weight w
// (float32, as rmsnorm_f32). Each element is read and written by the same thread, after the block's sum, so in
// place is safe; x carries no __restrict__. grid = rows (T * heads).
extern "C" __global__ void rmsnorm_rows_f32(float* x, const float* __restrict__ w, int dim, float eps) {
    __shared__ float scratch[32];
    float* xr = x + (size_t)blockIdx.x * dim;
    float ss = 0.f;
    for (int i = threadIdx.x; i < dim; i += blockDim.x) ss += xr[i] * xr[i];
    ss = block_sum(ss, scratch);
    float inv = rsqrtf(ss / (float)dim + eps);
    for (int i = threadIdx.x; i < dim; i += blockDim.x) xr[i] = w[i] * (xr[i] * inv);
}

// x += d elementwise over n.
extern "C" __global__ void add_f32(float* x, const float* __restrict__ d, int n) {
    for (int i = blockIdx.x * blockDim.x + threadIdx.x; i < n; i += gridDim.x * blockDim.x) x[i] += d[i];
}

// *pos += T (one thread): the last kernel of every step.
extern "C" __global__ void advance_pos(int* pos, int T) {
    if (threadIdx.x == 0 && blockIdx.x == 0) *pos += T;
}

// Round float32 activations to IEEE half (the fp16 GEMV/GEMM operand). n elements.
extern "C" __global__ void f32_to_f16(const float* __restrict__ x, u16* __restrict__ xh, int n) {
    for (int i = blockIdx.x * blockDim.x + threadIdx.x; i < n; i += gridDim.x * blockDim.x) xh[i] = f32_to_f16_bits(x[i]);
}
