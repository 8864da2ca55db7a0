// lowbit.cuh: device ports of the low-bit codecs of GpuIntLab.Core.Formats.LowBit (BF16, the OCP mini-floats
// E4M3 / E5M2 / E2M3 / E3M2 / E2M1, the E8M0 MX scale rules, NVFP4's two-level scale) and the activation
// quantizers built from them. Only integer bit manipulation and explicitly rounded IEEE float32 operations
// (__fmul_rn, __fdiv_rn, ...), so every function returns the Core codec's bits; kernels/check/lowbit_host_harness.cpp
// builds this header for the host and the test suite compares it with the C# codecs (LowBitPortTests).
// No kernels here (device functions only): the .cu files that include it declare the kernels.
//
// Element decoding is bit decoding (no tables): a code's value is (-1)^s * 2^(e - bias) * (1 + m / 2^M), or
// 2^(1 - bias) * m / 2^M for e = 0, built from exact powers of two. It covers every FINITE code; the quantizers
// never produce the E4M3 NaN or the E5M2 infinity/NaN codes (satfinite), and NaN inputs are handled before
// decoding (an MX block with a NaN gets the NaN scale and decodes to NaN as a whole).
#pragma once

#ifndef LOWBIT_HOST
typedef unsigned int u32;
typedef unsigned short u16;
#endif

#define LB_FLT_MAX __uint_as_float(0x7f7fffffu)

// 2^k as a float for k in [-127, 127] (2^-127 is the float subnormal 0x00400000), exactly.
__device__ __forceinline__ float lb_pow2(int k) {
    return k >= -126 ? __uint_as_float((u32)(k + 127) << 23) : __uint_as_float(0x00400000u);
}

// bfloat16 RNE (Bf16.FromFloat): ties to even, overflow to infinity through the carry, NaN -> sign | 0x7FC0.
__device__ __forceinline__ u16 lb_f32_to_bf16(float f) {
    u32 b = __float_as_uint(f);
    if ((b & 0x7fffffffu) > 0x7f800000u) return (u16)(((b >> 16) & 0x8000u) | 0x7fc0u);
    return (u16)((b + 0x7fffu + ((b >> 16) & 1u)) >> 16);
}
__device__ __forceinline__ float lb_bf16_to_f32(u16 h) { return __uint_as_float((u32)h << 16); }

// MiniFloatFormat.RoundMagnitude: a finite non-negative float (its bits) rounded to nearest even onto a binary
// format with `mbits` mantissa bits and exponent bias `bias`, unbounded above; returns the magnitude code.
__device__ __forceinline__ int lb_round_magnitude(u32 mag, int mbits, int bias) {
    int fe = (int)(mag >> 23);
    u32 sig = mag & 0x7fffffu;
    if (fe != 0) sig |= 0x800000u; else fe = 1;   // float subnormal: exponent field 1's scale, no implicit bit
    int ue = fe - 127;
    int te = ue > 1 - bias ? ue : 1 - bias;
    int shift = te - ue + 23 - mbits;             // >= 23 - mbits >= 20
    u32 r;
    if (shift >= 25) r = 0;                       // below half the smallest step
    else {
        r = sig >> shift;
        u32 rem = sig & ((1u << shift) - 1u), half = 1u << (shift - 1);
        if (rem > half || (rem == half && (r & 1u))) r++;
    }
    return ((te + bias - 1) << mbits) + (int)r;   // a carry into the next binade moves the exponent by itself
}

// MiniFloatFormat.Encode: RNE with satfinite. nan_code < 0 (FP6/FP4: no NaN; Core refuses NaN, a kernel cannot
// throw) gives the saturated code of the input's sign; callers keep NaN away from those formats.
__device__ __forceinline__ int lb_encode(float v, int mbits, int bias, int max_code, int sign_bit, int nan_code) {
    u32 b = __float_as_uint(v);
    int sign = (b >> 31) ? sign_bit : 0;
    u32 mag = b & 0x7fffffffu;
    if (mag > 0x7f800000u) return nan_code >= 0 ? nan_code : (sign | max_code);
    if (mag == 0x7f800000u) return sign | max_code;
    int code = lb_round_magnitude(mag, mbits, bias);
    return sign | (code > max_code ? max_code : code);
}

// Value of a finite code (bit decoding; see the header comment).
__device__ __forceinline__ float lb_decode(int code, int ebits, int mbits, int bias) {
    int e = (code >> mbits) & ((1 << ebits) - 1), m = code & ((1 << mbits) - 1);
    float mag = e == 0 ? __fmul_rn((float)m, lb_pow2(1 - bias - mbits))
                       : __fmul_rn((float)(m | (1 << mbits)), lb_pow2(e - bias - mbits));
    return (code >> (ebits + mbits)) & 1 ? -mag : mag;
}

// The two fixed formats NVFP4 and the FP8 KV cache use.
__device__ __forceinline__ int lb_e4m3_encode(float v) { return lb_encode(v, 3, 7, 0x7e, 0x80, 0x7f); }
__device__ __forceinline__ float lb_e4m3_decode(int code) {
    return (code & 0x7f) == 0x7f ? __uint_as_float(0x7fc00000u) : lb_decode(code, 4, 3, 7);
}
__device__ __forceinline__ int lb_e2m1_encode(float v) { return lb_encode(v, 1, 1, 7, 8, -1); }
__device__ __forceinline__ float lb_e2m1_decode(int code) { return lb_decode(code, 2, 1, 1); }

// E8M0.ScaleFor: the scale byte of an MX block whose largest magnitude is amax (NaN for a block with a NaN).
// rule 0 = ocp-floor (OCP MX v1.0: floor(log2 amax) - emax_elem from the exponent bits, clamped at -127; NaN or
// infinity -> 0xFF); rule 1 = rceil (TransformerEngine float_to_e8m0(amax * fl32(1 / max_elem)): rounded up to a
// power of two through the bits; NaN -> 0xFF, infinity -> 0xFE).
__device__ __forceinline__ int lb_e8m0_scale(float amax, int rule, int emax_elem, float rcp_max) {
    if (rule == 0) {
        int field = (int)((__float_as_uint(amax) >> 23) & 0xffu);
        if (field == 0xff) return 0xff;
        int shared = field - 127 - emax_elem;
        return (shared < -127 ? -127 : shared) + 127;
    }
    float value = __fmul_rn(amax, rcp_max);
    u32 bits = __float_as_uint(value);
    int field = (int)((bits >> 23) & 0xffu), mantissa = (int)(bits & 0x7fffffu);
    if (field == 0xff) return mantissa != 0 ? 0xff : 0xfe;
    if (mantissa > 0 && field != 0xfe && !(field == 0 && mantissa <= 0x400000)) field++;
    return field;
}

// An MX element format as the kernels take it (MiniFloatFormat's fields).
struct LbMx { int ebits, mbits, bias, max_code, sign_bit, nan_code, rule, emax_elem; float rcp_max; };

// MxCodec.Quantize then MxVector.Dequantize of one block x[0..n): amax (a NaN -> the NaN scale, all outputs NaN),
// the E8M0 scale, codes of x * 2^(127 - scale) (1.0 for byte 0 under rceil), outputs element * 2^(scale - 127).
__device__ __forceinline__ void lb_mx_block(const float* x, float* out, int n, LbMx f) {
    float amax = 0.f;
    bool nan = false;
    for (int i = 0; i < n; i++) {
        u32 b = __float_as_uint(x[i]) & 0x7fffffffu;
        if (b > 0x7f800000u) nan = true;
        else { float a = __uint_as_float(b); if (a > amax) amax = a; }
    }
    int scale = lb_e8m0_scale(nan ? __uint_as_float(0x7fc00000u) : amax, f.rule, f.emax_elem, f.rcp_max);
    if (scale == 0xff) { for (int i = 0; i < n; i++) out[i] = __uint_as_float(0x7fc00000u); return; }
    float encode = f.rule == 1 && scale == 0 ? 1.f : lb_pow2(127 - scale);
    float decode = lb_pow2(scale - 127);
    for (int i = 0; i < n; i++) {
        int code = lb_encode(__fmul_rn(x[i], encode), f.mbits, f.bias, f.max_code, f.sign_bit, f.nan_code);
        out[i] = __fmul_rn(lb_decode(code, f.ebits, f.mbits, f.bias), decode);
    }
}

// Nvfp4Codec.GlobalEncodeScale of a vector's amax: fl32(2688 / amax) capped at FLT_MAX; 1 for amax 0 or an underflow to 0.
__device__ __forceinline__ float lb_nvfp4_global(float amax) {
    float s = fminf(__fdiv_rn(2688.f, amax), LB_FLT_MAX);
    return amax == 0.f || s == 0.f ? 1.f : s;
}

// Nvfp4Codec.Quantize then Nvfp4Vector.Dequantize of one 16-element block (n <= 16) with global encode scale g:
// s_b = E4M3(min(amax * (g * fl32(1/6)), FLT_MAX)), decode = fp32(s_b) * fl32(1/g),
// codes E2M1(x * min(1 / decode, FLT_MAX)), outputs e2m1 * decode. Also returns the scale code.
__device__ __forceinline__ int lb_nvfp4_block(const float* x, float* out, int n, float g) {
    const float one_sixth = __uint_as_float(0x3e2aaaabu);   // fl32(1/6), as C#'s (1f / 6f)
    float global_decode = __fdiv_rn(1.f, g);
    float factor = __fmul_rn(g, one_sixth);
    float amax = 0.f;
    for (int i = 0; i < n; i++) amax = fmaxf(amax, fabsf(x[i]));
    int sc = lb_e4m3_encode(fminf(__fmul_rn(amax, factor), LB_FLT_MAX));
    float decode = __fmul_rn(lb_e4m3_decode(sc), global_decode);
    float multiplier = fminf(__fdiv_rn(1.f, decode), LB_FLT_MAX);
    for (int i = 0; i < n; i++) out[i] = __fmul_rn(lb_e2m1_decode(lb_e2m1_encode(__fmul_rn(x[i], multiplier))), decode);
    return sc;
}

// IEEE half RNE of a float, returned as float (cvt.rn.f16.f32 then back), in software so the host build has it too:
// overflow (at or above 65520) gives infinity, NaN stays NaN.
__device__ __forceinline__ float lb_f16_round(float v) {
    u32 b = __float_as_uint(v), mag = b & 0x7fffffffu;
    if (mag >= 0x7f800000u) return v;
    int code = lb_round_magnitude(mag, 10, 15);
    float r = code >= 0x7c00 ? __uint_as_float(0x7f800000u) : lb_decode(code, 5, 10, 15);
    return (b >> 31) ? -r : r;
}

// KV cache, fp8-e4m3 as vLLM (KvCacheKernels): write E4M3(x / scale), read fp16(e4m3 * scale) (vLLM reads through half).
__device__ __forceinline__ unsigned char lb_kv_fp8_encode(float x, float scale) {
    return (unsigned char)lb_e4m3_encode(__fdiv_rn(x, scale));
}
__device__ __forceinline__ float lb_kv_fp8_decode(unsigned char code, float scale) {
    return lb_f16_round(__fmul_rn(lb_e4m3_decode(code), scale));
}

// KV cache, int8 per token per kv head, asymmetric (LMDeploy): s = (max - min) / 255 (1 when max == min),
// q = clamp(RNE((x - min) / s), 0, 255), read q * s + min, all float32.
__device__ __forceinline__ float lb_kv_int8_step(float mn, float mx) { return mx > mn ? __fdiv_rn(__fsub_rn(mx, mn), 255.f) : 1.f; }
__device__ __forceinline__ unsigned char lb_kv_int8_encode(float x, float mn, float s) {
    float q = rintf(__fdiv_rn(__fsub_rn(x, mn), s));
    return (unsigned char)(q < 0.f ? 0.f : q > 255.f ? 255.f : q);
}
__device__ __forceinline__ float lb_kv_int8_decode(unsigned char q, float mn, float s) { return __fadd_rn(__fmul_rn((float)q, s), mn); }
