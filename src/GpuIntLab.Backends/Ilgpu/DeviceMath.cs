using ILGPU;
using ILGPU.Runtime.Cuda;

namespace GpuIntLab.Backends.Ilgpu;

/// <summary>
/// Scalar helpers callable from ILGPU kernels (and from the host, for tests). Integer bit manipulation
/// and IEEE +, -, *, / only, so the CPU accelerator and CUDA give the same bits: no libm, no
/// ILGPU.Half (its conversions are not the RNE of CUDA's cvt.rn.f16.f32), no Math.BigMul (breaks ILGPU).
/// </summary>
public static class DeviceMath
{
    // ---------------------------------------------------------------- float32 ----------

    /// <summary>
    /// a * b rounded to float32, never fused into a following add: ILGPU writes <c>mul.f32</c>, which ptxas may
    /// contract with an add into an FMA (one rounding instead of two) while the CPU rounds both; <c>mul.rn.f32</c>
    /// (explicit rounding modifier) is never contracted, so CUDA rounds like the CPU accelerator.
    /// </summary>
    public static float Mul(float a, float b)
    {
        if (CudaAsm.IsSupported)
        {
            CudaAsm.Emit("mul.rn.f32 %0, %1, %2;", out float r, a, b);
            return r;
        }
        return a * b;
    }

    /// <summary>Round to nearest, ties to even, of a float with |v| &lt; 2^23 (exact: truncation plus an exact fraction test).</summary>
    public static float RoundEven(float v)
    {
        float t = (int)v;              // toward zero, exact for |v| < 2^31
        float frac = v - t;            // exact (Sterbenz-style: same binade or smaller)
        float a = frac < 0 ? -frac : frac;
        float step = v < 0 ? -1f : 1f;
        if (a > 0.5f) return t + step;
        if (a == 0.5f && (((int)t) & 1) != 0) return t + step;
        return t;
    }

    /// <summary>IEEE float -&gt; binary16 bits, round to nearest even, gradual underflow, overflow to infinity (= Fp16.FromFloat).</summary>
    public static ushort FloatToHalf(float value)
    {
        uint b = (uint)Interop.FloatAsInt(value);
        uint sign = (b >> 16) & 0x8000u;
        uint a = b & 0x7FFFFFFFu;
        if (a >= 0x7F800000u) return (ushort)(sign | (a > 0x7F800000u ? 0x7E00u : 0x7C00u));
        int e = (int)(a >> 23) - 127;
        uint mant = a & 0x7FFFFFu;
        if (e >= 16) return (ushort)(sign | 0x7C00u);
        if (e >= -14)
        {
            uint h = ((uint)(e + 15) << 10) | (mant >> 13);
            uint rem = mant & 0x1FFFu;
            if (rem > 0x1000u || (rem == 0x1000u && (h & 1u) != 0)) h++; // a carry into the exponent (up to 0x7C00 = inf) is correct
            return (ushort)(sign | h);
        }
        if (e < -25) return (ushort)sign;                // below 2^-25: rounds to zero
        uint m = mant | 0x800000u;                       // value = m * 2^(e-23); units of 2^-24: m * 2^(e+1)
        int shift = -(e + 1);                            // 14..24
        uint q = m >> shift;
        uint r = m & ((1u << shift) - 1u);
        uint half = 1u << (shift - 1);
        if (r > half || (r == half && (q & 1u) != 0)) q++;
        return (ushort)(sign | q);
    }

    /// <summary>binary16 bits -&gt; float, exact.</summary>
    public static float HalfToFloat(ushort bits)
    {
        uint h = bits;
        uint sign = (h & 0x8000u) << 16;
        uint e = (h >> 10) & 0x1Fu;
        uint m = h & 0x3FFu;
        if (e == 0)
        {
            float v = m * 5.9604644775390625E-8f; // m * 2^-24, exact
            return sign != 0 ? -v : v;
        }
        if (e == 31) return Interop.IntAsFloat(sign | 0x7F800000u | (m << 13));
        return Interop.IntAsFloat(sign | ((e - 15 + 127) << 23) | (m << 13));
    }

    /// <summary>float -&gt; E4M3FN code, RNE with SATFINITE (= E4M3.Encode(float) for finite inputs; NaN -&gt; 0x7F).</summary>
    public static byte FloatToE4M3(float value)
    {
        uint b = (uint)Interop.FloatAsInt(value);
        uint sign = (b >> 24) & 0x80u;
        uint a = b & 0x7FFFFFFFu;
        if (a > 0x7F800000u) return 0x7F;
        if (a >= 0x43E80000u) return (byte)(sign | 0x7Eu);      // |v| >= 464 (and inf) saturate to 448
        int e = (int)(a >> 23) - 127;
        uint code;
        if (e < -6)
        {
            // subnormal range: multiples of 2^-9; |v| * 512 < 8 is exact
            float s = Interop.IntAsFloat(a) * 512f;
            code = (uint)(int)RoundEven(s);
        }
        else
        {
            uint mant = a & 0x7FFFFFu;
            uint keep = mant >> 20;
            uint rem = mant & 0xFFFFFu;
            if (rem > 0x80000u || (rem == 0x80000u && (keep & 1u) != 0)) keep++;
            code = ((uint)(e + 7) << 3) + keep;               // keep == 8 carries into the exponent
            if (code > 0x7Eu) code = 0x7Eu;
        }
        return (byte)(sign | code);
    }

    /// <summary>
    /// e^x in float32 from IEEE +, *, / only (Cody-Waite reduction by ln2, degree-7 Taylor on |r| &lt;= ln2/2,
    /// scaling by 2^n through the exponent bits): relative error a few float ulp. 0 below -87, +inf above 88.7.
    /// </summary>
    public static float Exp(float x)
    {
        if (x < -87f) return 0f;
        if (x > 88.7f) return float.PositiveInfinity;
        float n = RoundEven(x * 1.44269504f);
        float r = x - Mul(n, 0.693145752f);    // ln2 high part (exact product for |n| < 2^8)
        r = r - Mul(n, 1.42860677e-6f);        // ln2 low part
        float p = 1f / 5040f;
        p = Mul(p, r) + 1f / 720f;
        p = Mul(p, r) + 1f / 120f;
        p = Mul(p, r) + 1f / 24f;
        p = Mul(p, r) + 1f / 6f;
        p = Mul(p, r) + 0.5f;
        p = Mul(p, r) + 1f;
        p = Mul(p, r) + 1f;
        int ni = (int)n;
        // 2^n as two factors so that n = -126..-87 and n = 128 stay finite/normal in the steps
        int n1 = ni / 2, n2 = ni - n1;
        float s1 = Interop.IntAsFloat((uint)(n1 + 127) << 23);
        float s2 = Interop.IntAsFloat((uint)(n2 + 127) << 23);
        return p * s1 * s2;
    }

    /// <summary>1/sqrt(v) for v &gt; 0 in float32 from a bit-level guess and Newton steps on sqrt (IEEE ops only; within ~1 ulp).</summary>
    public static float Rsqrt(float v)
    {
        float y = Interop.IntAsFloat(0x1FBD1DF5u + ((uint)Interop.FloatAsInt(v) >> 1)); // ~sqrt(v)
        for (int i = 0; i < 5; i++) y = 0.5f * (y + v / y);
        return 1f / y;
    }

    // ---------------------------------------------------------------- int64 / Q16.48 ----------

    /// <summary>Exact signed 64x64 -&gt; 128 product from 32-bit halves; returns the high word, the low in <paramref name="lo"/>.</summary>
    public static long MulFull(long a, long b, out ulong lo)
    {
        ulong ua = (ulong)a, ub = (ulong)b;
        ulong a0 = ua & 0xFFFFFFFFUL, a1 = ua >> 32, b0 = ub & 0xFFFFFFFFUL, b1 = ub >> 32;
        ulong p00 = a0 * b0, p01 = a0 * b1, p10 = a1 * b0, p11 = a1 * b1;
        ulong mid = (p00 >> 32) + (p01 & 0xFFFFFFFFUL) + (p10 & 0xFFFFFFFFUL);
        lo = (mid << 32) | (p00 & 0xFFFFFFFFUL);
        ulong hi = p11 + (p01 >> 32) + (p10 >> 32) + (mid >> 32);
        // unsigned -> signed: subtract b * 2^64 when a < 0 and a * 2^64 when b < 0
        if (a < 0) hi -= ub;
        if (b < 0) hi -= ua;
        return (long)hi;
    }

    /// <summary>(hi:lo) += a * b exactly (128-bit two's complement).</summary>
    public static void Accumulate(ref long hi, ref ulong lo, long a, long b)
    {
        long ph = MulFull(a, b, out ulong pl);
        ulong sum = lo + pl;
        hi += ph + (sum < lo ? 1L : 0L);
        lo = sum;
    }

    /// <summary>(hi:lo) -= (bh:bl).</summary>
    public static void Subtract(ref long hi, ref ulong lo, long bh, ulong bl)
    {
        ulong d = lo - bl;
        hi = hi - bh - (lo < bl ? 1L : 0L);
        lo = d;
    }

    /// <summary>RNE of (hi:lo) / 2^48 as a long; false when it leaves the int64 range (= Q48.RoundShift(v, 48)).</summary>
    public static bool RoundShift48(long hi, ulong lo, out long result)
    {
        ulong qlo = (lo >> 48) | ((ulong)hi << 16);
        long qhi = hi >> 48;
        ulong rem = lo & 0xFFFFFFFFFFFFUL;
        const ulong half = 1UL << 47;
        if (rem > half || (rem == half && (qlo & 1UL) != 0))
        {
            qlo++;
            if (qlo == 0) qhi++;
        }
        result = (long)qlo;
        return qhi == (result >> 63);
    }

    /// <summary>Q16.48 product a*b rounded once (RNE); false on overflow (= Q48.Mul).</summary>
    public static bool Mul(long a, long b, out long result)
    {
        long hi = MulFull(a, b, out ulong lo);
        return RoundShift48(hi, lo, out result);
    }
}
