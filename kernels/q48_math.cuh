// q48_math.cuh: the Q16.48 integer algorithms of src/GpuIntLab.Core/FixedPoint (Q48.cs,
// Q48Transcendental.cs, Wide.cs) as device functions, line by line, in unsigned __int128.
// 128-bit division is done here by udiv128 (shift-subtract, exact), so the code needs no compiler
// run-time helper (__udivti3): it compiles unchanged under NVRTC, clang's NVPTX backend, and as host
// C++ (kernels/check/q48_host_harness.cpp), where the test suite compares it with the C# library.
// Needs the u64/i64 typedefs (common.cuh) and __mul64hi / __clzll (CUDA built-ins, shimmed on the host).
#pragma once

typedef unsigned __int128 u128;
typedef __int128 i128;

#define ERR_MATMUL 1
#define ERR_RMSNORM 2
#define ERR_ROPE 4
#define ERR_ATTENTION 8
#define ERR_SWIGLU 16
#define ERR_RESIDUAL 32
#define ERR_BIAS 64
#define ERR_QKNORM 128

// Table layout (u64 words): Pow2Frac[256] as (lo, hi) pairs, ExpCoef[9] pairs, ExpStepQ110 pair, ExpInvStepQ54.
#define TAB_POW2FRAC 0
#define TAB_EXPCOEF 512
#define TAB_EXPSTEP 530
#define TAB_EXPINVSTEP 532
#define TAB_WORDS 533

#define FRAC_BITS 48
#define EXP_EARLY_ZERO (-(40LL << 48))

__device__ __forceinline__ u128 tab128(const u64* tab, int i) { return ((u128)tab[i + 1] << 64) | (u128)tab[i]; }
__device__ __forceinline__ i128 shl_signed(i128 v, int s) { return (i128)((u128)v << s); }

// (hi:lo) += a * b exactly (ExactMatrix.Accumulate): low product a*b, high product __mul64hi, carry.
__device__ __forceinline__ void acc128(i64& hi, u64& lo, i64 a, i64 b) {
    u64 plo = (u64)a * (u64)b;
    i64 phi = __mul64hi(a, b);
    u64 s = lo + plo;
    hi += phi + (s < lo ? 1 : 0);
    lo = s;
}
__device__ __forceinline__ i128 make128(i64 hi, u64 lo) { return (i128)(((u128)(u64)hi << 64) | (u128)lo); }

// Q48.TryRoundShift: RNE of v / 2^s (1 <= s <= 127) into int64; *ok = false on overflow.
__device__ i64 round_shift(i128 v, int s, bool* ok) {
    i128 q = v >> s;
    u128 rem = (u128)v & (((u128)1 << s) - 1);
    u128 half = (u128)1 << (s - 1);
    if (rem > half || (rem == half && (q & 1) != 0)) q++;
    if (q > (i128)0x7fffffffffffffffLL || q < -(i128)0x7fffffffffffffffLL - 1) { *ok = false; return 0; }
    return (i64)q;
}
// Q48.Mul
__device__ __forceinline__ i64 q48_mul(i64 a, i64 b, bool* ok) { return round_shift((i128)a * (i128)b, FRAC_BITS, ok); }

// ---- Wide.cs ----
__device__ u128 mul_full(u128 a, u128 b, u128* lo) {
    u64 a0 = (u64)a, a1 = (u64)(a >> 64), b0 = (u64)b, b1 = (u64)(b >> 64);
    u128 p00 = (u128)a0 * b0, p01 = (u128)a0 * b1, p10 = (u128)a1 * b0, p11 = (u128)a1 * b1;
    u128 mid = (p00 >> 64) + (u64)p01 + (u64)p10;
    *lo = (mid << 64) | (u64)p00;
    return p11 + (p01 >> 64) + (p10 >> 64) + (mid >> 64);
}
__device__ u128 mul_shr(u128 a, u128 b, int s) {
    u128 lo; u128 hi = mul_full(a, b, &lo);
    return s == 128 ? hi : (hi << (128 - s)) | (lo >> s);
}
__device__ __forceinline__ u128 mul_hi64(u128 a, u64 b) {
    u128 lo = (u128)(u64)a * b, hi = (u128)(u64)(a >> 64) * b;
    return hi + (lo >> 64);
}
__device__ u128 round_shift_u(u128 v, int s) {
    if (s >= 129) return 0;
    if (s == 128) return v > ((u128)1 << 127) ? 1 : 0;
    u128 q = v >> s;
    u128 rem = v & (((u128)1 << s) - 1);
    u128 half = (u128)1 << (s - 1);
    if (rem > half || (rem == half && (q & 1) != 0)) q++;
    return q;
}
__device__ int clz128(u128 n) {
    u64 hi = (u64)(n >> 64), lo = (u64)n;
    return hi ? __clzll((i64)hi) : (lo ? 64 + __clzll((i64)lo) : 128);
}
// n / d and n % d for d > 0, exact (binary long division over the quotient's bits only).
__device__ u128 udiv128(u128 n, u128 d, u128* rem) {
    if (d > n) { if (rem) *rem = n; return 0; }
    int shift = clz128(d) - clz128(n);
    d <<= shift;
    u128 q = 0;
    for (int i = 0; i <= shift; i++) {
        q <<= 1;
        if (n >= d) { n -= d; q |= 1; }
        d >>= 1;
    }
    if (rem) *rem = n;
    return q;
}
__device__ __forceinline__ u128 udiv(u128 n, u128 d) { return udiv128(n, d, 0); }
__device__ u64 isqrt128(u128 n) {
    if (n == 0) return 0;
    int bits = 128 - clz128(n);
    u128 x = (u128)1 << ((bits + 1) / 2);
    while (true) {
        u128 y = (x + udiv(n, x)) >> 1;
        if (y >= x) return (u64)x;
        x = y;
    }
}

// ---- Q48.Rsqrt (correctly rounded); x > 2^18 checked by the caller ----
__device__ i64 q48_rsqrt(i64 x) {
    u64 ux = (u64)x;
    u128 maxv = ~(u128)0;
    u128 q1 = udiv(maxv, ux);
    u128 r1 = maxv - q1 * ux + 1;
    if (r1 == ux) { q1++; r1 = 0; }
    u128 q = (q1 << 16) + udiv(r1 << 16, ux);
    u64 s = isqrt128(q);
    u64 c = 2 * s + 1;
    u128 sq = (u128)c * c;
    if (mul_hi64(sq, ux) < ((u128)1 << 82)) s++;
    return (i64)s;
}

// ---- Q48.ExpCore: exp(x) for x in Q.110, returns m in [2^126, 2^127), exp(x) ~ m * 2^(e - 126) ----
__device__ u128 exp_core(i128 xq110, int* e, const u64* tab) {
    i128 step = (i128)tab128(tab, TAB_EXPSTEP);
    i64 invstep = (i64)tab[TAB_EXPINVSTEP];
    i64 xa = (i64)(xq110 >> 62);
    i64 n = (i64)(((i128)xa * (i128)invstep) >> 102);
    i128 r = xq110 - (i128)n * step;
    while (r < 0) { n--; r += step; }
    while (r >= step) { n++; r -= step; }
    u128 ru = (u128)r;
    u64 rhi = (u64)(ru >> 38);
    u64 rlo = (u64)ru & ((1ULL << 38) - 1);
    u128 p = tab128(tab, TAB_EXPCOEF + 2 * 8);
    for (int k = 7; k >= 0; k--) p = tab128(tab, TAB_EXPCOEF + 2 * k) + (mul_hi64(p, rhi) >> 8);
    p += mul_hi64(p, rlo) >> 46;
    *e = (int)(n >> 8);
    return mul_shr(tab128(tab, TAB_POW2FRAC + 2 * (int)(n & 255)), p, 126);
}

// ---- Q48.Sigmoid / Silu ----
__device__ u128 reciprocal126(u128 d) {
    u64 dh = (u64)(d >> 64);
    u128 two127 = (u128)1 << 127;
    u128 y = udiv(two127, dh) << 61;
    u128 t = two127 - mul_shr(d, y, 126);
    y = mul_shr(y, t, 126);
    t = two127 - mul_shr(d, y, 126);
    return mul_shr(y, t, 126);
}
__device__ u128 sigmoid_q126(i64 x, const u64* tab) {
    i64 ax = x < 0 ? -x : x;
    int e;
    u128 m = exp_core(shl_signed(-(i128)ax, 62), &e, tab);
    u128 em = m >> (-e);
    u128 inv = reciprocal126(((u128)1 << 126) + em);
    return x >= 0 ? inv : mul_shr(em, inv, 126);
}
__device__ i64 q48_silu(i64 x, const u64* tab) {
    if (x >= -EXP_EARLY_ZERO) return x;
    if (x <= EXP_EARLY_ZERO) return 0;
    u128 s = sigmoid_q126(x, tab);
    u64 ax = x < 0 ? (u64)0 - (u64)x : (u64)x;
    u128 lo = (u128)ax * (u64)s;
    u128 hi = (u128)ax * (u64)(s >> 64) + (lo >> 64);
    u64 low = (u64)lo;
    u128 q = hi >> 62;
    u128 remhi = hi & (((u128)1 << 62) - 1);
    u128 halfhi = (u128)1 << 61;
    if (remhi > halfhi || (remhi == halfhi && (low != 0 || (q & 1) != 0))) q++;
    return x < 0 ? -(i64)q : (i64)q;
}

// Q48.Softmax's last step: RNE(num / sum) for the Q.62 exponential e (num = e << 48).
__device__ i64 softmax_div(u64 e, u128 sum) {
    u128 num = (u128)e << FRAC_BITS, r;
    u128 q = udiv128(num, sum, &r);
    u128 r2 = r << 1;
    if (r2 > sum || (r2 == sum && (q & 1) != 0)) q++;
    return (i64)q;
}
// OracleEngine.DivideRound for a non-negative numerator: RNE(num / den); *ok = false past int64.
__device__ i64 divide_round_nonneg(u128 num, u128 den, bool* ok) {
    u128 r;
    u128 q = udiv128(num, den, &r);
    u128 twice = r << 1;
    if (twice > den || (twice == den && (q & 1) != 0)) q += 1;
    if (q > (u128)0x7fffffffffffffffULL) { *ok = false; return 0; }
    return (i64)q;
}
// Softmax exponential of d = x - max <= 0: exp(d) in Q.62 with one RNE, 0 below -40.
__device__ u64 softmax_exp(i128 d, const u64* tab) {
    if (d < (i128)EXP_EARLY_ZERO) return 0;
    int ex;
    u128 m = exp_core(shl_signed(d, 62), &ex, tab);
    return (u64)round_shift_u(m, 64 - ex);
}

// a + b with OracleEngine's signed-overflow test (AddResidual, AddBias): overflow iff both operands share a sign
// the sum does not. The add is done on u64 (wraps, defined) so the test sees the wrapped sum; *ok = false then.
__device__ __forceinline__ i64 q48_add_checked(i64 a, i64 b, bool* ok) {
    i64 s = (i64)((u64)a + (u64)b);
    if (((a ^ s) & (b ^ s)) < 0) *ok = false;
    return s;
}
// OracleEngine.RmsNorm's inverse from the exact sum of squares ss of dim values: mean = DivideRound(ss, dim << 48),
// inv = Rsqrt(mean + eps). Where the oracle would throw (mean past int64, mean + eps past int64, or an argument
// Rsqrt refuses, <= 2^18) *ok = false and the inverse of 1.0 stands in, so the kernel still writes finite values.
__device__ i64 q48_rms_inverse(i128 ss, int dim, i64 eps, bool* ok) {
    bool fits = true;
    i64 mean = divide_round_nonneg((u128)ss, (u128)dim << FRAC_BITS, &fits);
    // mean + eps must not leave the i64 range; tested before adding, since signed overflow is undefined
    // behaviour in C++ and a wrap-around test after the add may be folded away by the compiler.
    bool sum_fits = eps >= 0 ? mean <= (i64)0x7fffffffffffffffLL - eps : mean >= (-(i64)0x7fffffffffffffffLL - 1) - eps;
    i64 arg = sum_fits ? mean + eps : 0;
    if (!fits || !sum_fits || arg <= (1LL << 18)) { *ok = false; arg = 1LL << 48; }
    return q48_rsqrt(arg);
}
// OracleEngine.RmsNorm's output element: Mul(w, Mul(x, inv)).
__device__ __forceinline__ i64 q48_rms_apply(i64 w, i64 x, i64 inv, bool* ok) { return q48_mul(w, q48_mul(x, inv, ok), ok); }
