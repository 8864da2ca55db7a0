using GpuIntLab.Core.Formats.IntegerOnly;
using ILGPU;
using ILGPU.Runtime;

namespace GpuIntLab.Backends.Ilgpu;

/// <summary>
/// The integer-only W8A8 step on an ILGPU device. Each kernel only indexes and reduces; every value it computes comes
/// from the same static helpers the CPU reference engine calls (<see cref="DyadicQuantization"/>,
/// <see cref="IntegerRmsNorm"/>, <see cref="IntegerExp"/>, <see cref="IntegerAttention"/>), which ILGPU compiles into the
/// kernel, so device and CPU compute one integer function; integer sums are associative, so the thread layout
/// cannot change a bit. No floating point (a test scans this file).
/// </summary>
public static class IntegerOnlyKernels
{
    /// <summary>One thread per row of rowLength: the row's dynamic int8 scale into scales[2 row], scales[2 row + 1].</summary>
    public static void RowScales(Index1D row, ArrayView<int> x, ArrayView<int> scales, int rowLength)
    {
        long amax = 0;
        for (int i = 0; i < rowLength; i++)
        {
            long a = IntegerArithmetic.Abs(x[row * rowLength + i]);
            if (a > amax) amax = a;
        }
        DyadicQuantization.ActivationScale(amax, out int multiplier, out int exponent);
        scales[2 * row] = multiplier;
        scales[2 * row + 1] = exponent;
    }

    /// <summary>One thread per element: its int8 code at its row's scale.</summary>
    public static void QuantizeCodes(Index1D i, ArrayView<int> x, ArrayView<int> scales, ArrayView<sbyte> codes, int rowLength)
    {
        int row = i / rowLength;
        codes[i] = (sbyte)DyadicQuantization.Quantize(x[i], scales[2 * row], scales[2 * row + 1]);
    }

    /// <summary>
    /// One thread per output row: the exact int32 sum of int8 products (W column-major [cols, rows], coalesced), the
    /// dyadic requantisation with the input's scale (scale[0], scale[1]) and the row's, then the int32 bias if any.
    /// </summary>
    public static void MatVec(Index1D r, ArrayView<sbyte> w, ArrayView<sbyte> x, ArrayView<int> inputScale,
        ArrayView<int> multipliers, ArrayView<int> exponents, ArrayView<int> bias, int hasBias, ArrayView<int> y, int rows, int cols)
    {
        int accumulator = 0;
        for (int j = 0; j < cols; j++) accumulator += w[(long)j * rows + r.X] * x[j];
        int v = DyadicQuantization.Requantize(accumulator, inputScale[0], inputScale[1], multipliers[r], exponents[r]);
        y[r] = hasBias != 0 ? DyadicQuantization.SaturatingAdd(v, bias[r]) : v;
    }

    /// <summary>One thread per hidden element: the token's embedding row (read from the column-major int8 matrix) at 2^-16.</summary>
    public static void Embed(Index1D j, ArrayView<sbyte> w, ArrayView<int> multipliers, ArrayView<int> exponents, ArrayView<int> x, int token, int vocab) =>
        x[j] = DyadicQuantization.Dequantize(w[(long)j.X * vocab + token], multipliers[token], exponents[token]);

    /// <summary>One thread per row of n: RMSNorm's prescale shift, root and extra bits into stats[3 row ..].</summary>
    public static void NormStats(Index1D row, ArrayView<int> x, ArrayView<long> stats, int n, int epsilonMultiplier, int epsilonExponent)
    {
        long amax = 0;
        for (int i = 0; i < n; i++)
        {
            long a = IntegerArithmetic.Abs(x[row * n + i]);
            if (a > amax) amax = a;
        }
        int shift = IntegerRmsNorm.PrescaleShift(amax);
        long sumSquares = 0;
        for (int i = 0; i < n; i++)
        {
            long p = IntegerRmsNorm.Prescale(x[row * n + i], shift);
            sumSquares += p * p;
        }
        long root = IntegerRmsNorm.Root(sumSquares, n, IntegerRmsNorm.Epsilon(epsilonMultiplier, epsilonExponent, shift), out int extraBits);
        stats[3 * row] = shift;
        stats[3 * row + 1] = root;
        stats[3 * row + 2] = extraBits;
    }

    /// <summary>One thread per element: gamma * x / rms with its row's statistics (output may alias x).</summary>
    public static void NormApply(Index1D i, ArrayView<int> x, ArrayView<long> stats, ArrayView<int> weightCodes, int weightShift, ArrayView<int> output, int n)
    {
        int row = i / n;
        long normalized = IntegerRmsNorm.Normalize(IntegerRmsNorm.Prescale(x[i], (int)stats[3 * row]), stats[3 * row + 1], (int)stats[3 * row + 2]);
        output[i] = IntegerRmsNorm.ApplyWeight(normalized, weightCodes[i % n], weightShift);
    }

    /// <summary>One thread per (head, pair i): rotate-half RoPE with the int32 table row of the position.</summary>
    public static void Rope(Index1D index, ArrayView<int> vec, ArrayView<int> cos, ArrayView<int> sin, int position, int half)
    {
        int h = index / half, i = index % half;
        int ia = h * 2 * half + i, ib = ia + half;
        IntegerAttention.Rotate(vec[ia], vec[ib], cos[position * half + i], sin[position * half + i], out int a, out int b);
        vec[ia] = a;
        vec[ib] = b;
    }

    /// <summary>One thread per (head, cached position t): the int8 q.k dot and its requantised score at 2^-16.</summary>
    public static void Scores(Index1D index, ArrayView<sbyte> queryCodes, ArrayView<int> queryScales, ArrayView<sbyte> keys, ArrayView<int> keyScales,
        ArrayView<long> scores, int n, int headDim, int kvDim, int group, int scaleMultiplier, int scaleExponent)
    {
        int h = index / n, t = index % n;
        int kvHead = h / group; // HF repeat_kv
        int qo = h * headDim, ko = t * kvDim + kvHead * headDim;
        long dot = 0;
        for (int i = 0; i < headDim; i++) dot += queryCodes[qo + i] * keys[ko + i];
        int ks = t * 2 * (kvDim / headDim) + 2 * kvHead;
        scores[index] = IntegerAttention.Score(dot, queryScales[2 * h], queryScales[2 * h + 1], keyScales[ks], keyScales[ks + 1], scaleMultiplier, scaleExponent);
    }

    /// <summary>One thread per head: the integer softmax of its n scores into 16-bit probabilities.</summary>
    public static void Softmax(Index1D h, ArrayView<long> scores, ArrayView<long> exps, ArrayView<int> probabilities, int n)
    {
        long max = scores[h * n];
        for (int t = 1; t < n; t++) if (scores[h * n + t] > max) max = scores[h * n + t];
        long sum = 0;
        for (int t = 0; t < n; t++)
        {
            long e = IntegerExp.Exp(scores[h * n + t] - max, IntegerAttention.ScoreFracBits);
            exps[h * n + t] = e;
            sum += e;
        }
        for (int t = 0; t < n; t++) probabilities[h * n + t] = IntegerExp.Probability(exps[h * n + t], sum);
    }

    /// <summary>One thread per (head, i): the probability-weighted sum of int8 values over the cache, to 2^-16.</summary>
    public static void AttentionOutput(Index1D index, ArrayView<int> probabilities, ArrayView<sbyte> values, ArrayView<int> valueScales,
        ArrayView<int> output, int n, int headDim, int kvDim, int group)
    {
        int h = index / headDim, i = index % headDim;
        int kvHead = h / group;
        long accumulator = 0;
        for (int t = 0; t < n; t++)
        {
            int p = probabilities[h * n + t];
            if (p == 0) continue; // adds exactly nothing (as on the CPU)
            int vs = t * 2 * (kvDim / headDim) + 2 * kvHead;
            accumulator += IntegerAttention.ValueTerm(p, values[t * kvDim + kvHead * headDim + i], valueScales[vs], valueScales[vs + 1]);
        }
        output[index] = IntegerAttention.Output(accumulator);
    }

    /// <summary>x[i] = sat32(x[i] + delta[i]).</summary>
    public static void Residual(Index1D i, ArrayView<int> x, ArrayView<int> delta) => x[i] = DyadicQuantization.SaturatingAdd(x[i], delta[i]);

    /// <summary>gate[i] = silu(gate[i]) * up[i] (integer sigmoid).</summary>
    public static void SwiGlu(Index1D i, ArrayView<int> gate, ArrayView<int> up) => gate[i] = IntegerExp.SwiGlu(gate[i], up[i]);
}
