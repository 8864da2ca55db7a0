using System.Security.Cryptography;
using GpuIntLab.Core.Formats;
using Xunit;
using Xunit.Abstractions;

namespace GpuIntLab.Tests.Quantization;

/// <summary>
/// Quantization schemes: error bounds, the reference matvec against an independent float64
/// dequantized dot product, scheme comparisons on outlier matrices, determinism, argument checks.
/// </summary>
public class QuantizerTests(ITestOutputHelper output)
{
    private static float[] RandomMatrix(Random rng, int n, float amplitude = 1f)
    {
        var w = new float[n];
        for (int i = 0; i < n; i++) w[i] = (float)((rng.NextDouble() * 2 - 1) * amplitude);
        return w;
    }

    /// <summary>Weights spanning several binades, with exact zeros and a few tiny values.</summary>
    private static float[] WideMatrix(Random rng, int n)
    {
        var w = new float[n];
        for (int i = 0; i < n; i++)
        {
            double u = rng.NextDouble() * 2 - 1;
            w[i] = i % 37 == 0 ? 0f : (float)(u * Math.Pow(2, -rng.Next(0, 12)));
        }
        return w;
    }

    private static readonly (QuantFormat F, QuantScheme S)[] AllCombos =
    [
        (QuantFormat.Int8, QuantScheme.PerTensor), (QuantFormat.Int8, QuantScheme.PerChannel),
        (QuantFormat.Int8, QuantScheme.SmoothQuant), (QuantFormat.E4M3, QuantScheme.PerTensor),
        (QuantFormat.E4M3, QuantScheme.PerChannel),
    ];

    private static float[] AbsMaxColumns(float[][] calibration, int cols)
    {
        var m = new float[cols];
        foreach (var x in calibration)
            for (int j = 0; j < cols; j++) m[j] = Math.Max(m[j], Math.Abs(x[j]));
        return m;
    }

    private static QuantizedMatrix QuantizeAny(float[] w, int rows, int cols, QuantFormat f, QuantScheme s, Random rng)
    {
        if (s != QuantScheme.SmoothQuant) return Quantizer.Quantize(w, rows, cols, f, s);
        var act = new float[cols];
        for (int j = 0; j < cols; j++) act[j] = (float)(0.1 + rng.NextDouble() * (j % 5 == 0 ? 20 : 1));
        return Quantizer.Quantize(w, rows, cols, f, s, act, 0.5f);
    }

    [Fact]
    public void Quantization_Int8_ScalesCodesAndHalfStepErrorBound()
    {
        var rng = new Random(11);
        const int rows = 48, cols = 200;
        var w = WideMatrix(rng, rows * cols);
        for (int c = 0; c < cols; c++) w[5 * cols + c] = 0f;   // an all-zero row
        w[7 * cols + 3] = -2.75f;                               // exact -absmax of row 7 -> -127, never -128

        foreach (var scheme in new[] { QuantScheme.PerTensor, QuantScheme.PerChannel })
        {
            var m = Quantizer.Quantize(w, rows, cols, QuantFormat.Int8, scheme);
            Assert.Equal(scheme == QuantScheme.PerTensor ? 1 : rows, m.WeightScales.Length);
            Assert.Null(m.SmoothFactors);
            double worstRatio = 0;
            for (int r = 0; r < rows; r++)
            {
                // independent scale: absmax / 127 in float64, rounded to float; 1 for an all-zero block
                double absMax = 0;
                int r0 = scheme == QuantScheme.PerTensor ? 0 : r, r1 = scheme == QuantScheme.PerTensor ? rows : r + 1;
                for (int i = r0 * cols; i < r1 * cols; i++) absMax = Math.Max(absMax, Math.Abs(w[i]));
                float expectScale = absMax == 0 ? 1f : (float)(absMax / 127.0);
                Assert.Equal(expectScale, m.ScaleOfRow(r));
                double scale = m.ScaleOfRow(r);
                for (int c = 0; c < cols; c++)
                {
                    sbyte q = m.Int8Codes[r * cols + c];
                    Assert.InRange(q, -127, 127);
                    double err = Math.Abs(w[r * cols + c] - q * scale);    // exact in float64
                    Assert.True(err <= scale / 2, $"{scheme} [{r},{c}] w={w[r * cols + c]} q={q} scale={scale}");
                    worstRatio = Math.Max(worstRatio, err / scale);
                    Assert.Equal(q * scale, m.Dequantize(r, c));
                }
            }
            if (scheme == QuantScheme.PerChannel)
            {
                Assert.Equal(1f, m.WeightScales[5]);
                Assert.All(m.Codes.AsSpan(5 * cols, cols).ToArray(), b => Assert.Equal(0, b));
                Assert.Equal(-127, m.Int8Codes[7 * cols + 3]);
            }
            Assert.DoesNotContain((byte)0x80, m.Codes);
            output.WriteLine($"int8 {scheme}: worst |w - deq| / scale = {worstRatio:F6} (bound 0.5)");
        }
    }

    [Fact]
    public void Quantization_E4M3_ScalesAndRelativeErrorBound()
    {
        var rng = new Random(12);
        const int rows = 40, cols = 160;
        var w = WideMatrix(rng, rows * cols);
        foreach (var scheme in new[] { QuantScheme.PerTensor, QuantScheme.PerChannel })
        {
            var m = Quantizer.Quantize(w, rows, cols, QuantFormat.E4M3, scheme);
            double worstRel = 0;
            for (int r = 0; r < rows; r++)
            {
                double absMax = 0;
                int r0 = scheme == QuantScheme.PerTensor ? 0 : r, r1 = scheme == QuantScheme.PerTensor ? rows : r + 1;
                for (int i = r0 * cols; i < r1 * cols; i++) absMax = Math.Max(absMax, Math.Abs(w[i]));
                Assert.Equal((float)(absMax / 448.0), m.ScaleOfRow(r));
                double scale = m.ScaleOfRow(r);
                for (int c = 0; c < cols; c++)
                {
                    byte code = m.Codes[r * cols + c];
                    Assert.False(E4M3.IsNaN(code));
                    double t = w[r * cols + c] / scale;                           // the value being encoded
                    double deq = E4M3Tests.RefDecode(code);
                    Assert.True(Math.Abs(deq) <= 448);
                    double err = Math.Abs(t - deq);
                    // normals (|t| >= 2^-6): half an ulp = 2^-4 of the binade start <= 2^-4 |t|;
                    // subnormals: half the subnormal spacing 2^-9, i.e. 2^-10 absolute.
                    double bound = Math.Abs(t) >= Math.Pow(2, -6) ? Math.Pow(2, -4) * Math.Abs(t) : Math.Pow(2, -10);
                    Assert.True(err <= bound, $"{scheme} [{r},{c}] t={t} deq={deq}");
                    if (Math.Abs(t) >= Math.Pow(2, -6)) worstRel = Math.Max(worstRel, err / Math.Abs(t));
                    Assert.Equal(deq * scale, m.Dequantize(r, c));
                }
            }
            output.WriteLine($"e4m3 {scheme}: worst relative error on normals = {worstRel:F6} (bound {Math.Pow(2, -4)})");
        }
    }

    /// <summary>Independent activation quantization (float32 rules restated here) plus the dequantized dot product.</summary>
    private static double[] IndependentMatVec(QuantizedMatrix m, float[] x, out float actScale, out int[] actCodes, out double[] sumAbs)
    {
        int rows = m.Rows, cols = m.Cols;
        var xs = (float[])x.Clone();
        if (m.Scheme == QuantScheme.SmoothQuant)
            for (int j = 0; j < cols; j++) xs[j] = xs[j] / m.SmoothFactors![j];
        float absMax = xs.Max(Math.Abs);
        float limit = m.Format == QuantFormat.Int8 ? 127f : 448f;
        actScale = absMax == 0 ? 1f : absMax / limit;
        var qa = new double[cols];
        actCodes = new int[cols];
        for (int j = 0; j < cols; j++)
        {
            float t = xs[j] / actScale;
            if (m.Format == QuantFormat.Int8)
            {
                double q = Math.Clamp(Math.Round((double)t, MidpointRounding.ToEven), -127, 127);
                actCodes[j] = (int)q;
                qa[j] = q * actScale;
            }
            else
            {
                byte code = E4M3.Encode(t);
                actCodes[j] = code;
                qa[j] = E4M3Tests.RefDecode(code) * actScale;
            }
        }
        var y = new double[rows];
        sumAbs = new double[rows];
        for (int r = 0; r < rows; r++)
        {
            double s = 0;
            for (int j = 0; j < cols; j++)
            {
                byte b = m.Codes[r * cols + j];
                double wq = m.Format == QuantFormat.Int8 ? (sbyte)b : E4M3Tests.RefDecode(b);
                double term = wq * m.ScaleOfRow(r) * qa[j];
                s += term;
                sumAbs[r] += Math.Abs(term);
            }
            y[r] = s;
        }
        return y;
    }

    [Fact]
    public void Quantization_ReferenceMatVec_EqualsIndependentDequantizedDot()
    {
        var rng = new Random(13);
        const int rows = 33, cols = 301;
        var w = RandomMatrix(rng, rows * cols, 0.3f);
        var x = RandomMatrix(rng, cols, 4f);
        x[17] = 40f;
        foreach (var (f, s) in AllCombos)
        {
            var m = QuantizeAny(w, rows, cols, f, s, rng);
            var y = new double[rows];
            Quantizer.ReferenceMatVec(m, x, y);
            var yi = IndependentMatVec(m, x, out float sa, out int[] codes, out double[] sumAbs);

            // activation codes and scale must match bit for bit
            var xs = Quantizer.SmoothedActivations(m, x);
            if (f == QuantFormat.Int8)
            {
                var q = new sbyte[cols];
                Assert.Equal(sa, Quantizer.QuantizeActivationsInt8(xs, q));
                for (int j = 0; j < cols; j++) Assert.Equal(codes[j], q[j]);
            }
            else
            {
                var q = new byte[cols];
                Assert.Equal(sa, Quantizer.QuantizeActivationsE4M3(xs, q));
                for (int j = 0; j < cols; j++) Assert.Equal(codes[j], q[j]);
            }

            double worst = 0;
            for (int r = 0; r < rows; r++)
            {
                // The two sums differ only by float64 rounding (different association, a few
                // roundings per term): |difference| <= (cols + 3) * 2^-52 * sum |terms|.
                double tol = (cols + 3) * Math.Pow(2, -52) * sumAbs[r];
                double d = Math.Abs(y[r] - yi[r]);
                worst = Math.Max(worst, d / sumAbs[r]);
                Assert.True(d <= tol, $"{f}/{s} row {r}: {y[r]} vs {yi[r]}");
            }
            output.WriteLine($"{f}/{s}: max |reference - independent| / sum|terms| = {worst:E2} (bound {(cols + 3) * Math.Pow(2, -52):E2})");
        }
    }

    [Fact]
    public void Quantization_ActivationRoundingIsNearestEvenAndZeroSafe()
    {
        float[] x = [127f, 2.5f, 3.5f, -2.5f, -0.5f, 0.5f, 1.5f, -127f];   // scale exactly 1
        var q = new sbyte[x.Length];
        Assert.Equal(1f, Quantizer.QuantizeActivationsInt8(x, q));
        Assert.Equal(new sbyte[] { 127, 2, 4, -2, 0, 0, 2, -127 }, q);

        var zeros = new float[5];
        Assert.Equal(1f, Quantizer.QuantizeActivationsInt8(zeros, q.AsSpan(0, 5)));
        Assert.All(q.AsSpan(0, 5).ToArray(), v => Assert.Equal(0, v));
        var c = new byte[5];
        Assert.Equal(1f, Quantizer.QuantizeActivationsE4M3(zeros, c));
        Assert.All(c, v => Assert.Equal(0, v));

        float[] xe = [448f, -448f, 1.0625f, 17f, -0.001f];                  // scale exactly 1
        Assert.Equal(1f, Quantizer.QuantizeActivationsE4M3(xe, c));
        Assert.Equal(new byte[] { 0x7E, 0xFE, E4M3.Encode(1.0625f), E4M3.Encode(17f), E4M3.Encode(-0.001f) }, c);
        Assert.Equal(0x38, c[2]);   // 1.0625 = midpoint 1|1.125 -> even (1.0 = 0x38)
        Assert.Equal(0x58, c[3]);   // 17 = midpoint 16|18 -> even (16 = 0x58)
    }

    private static double RelRmsError(double[] yq, double[] yExact, Func<int, bool> include)
    {
        double num = 0, den = 0;
        for (int r = 0; r < yq.Length; r++)
        {
            if (!include(r)) continue;
            num += (yq[r] - yExact[r]) * (yq[r] - yExact[r]);
            den += yExact[r] * yExact[r];
        }
        return Math.Sqrt(num / den);
    }

    private static double[] ExactMatVec(float[] w, int rows, int cols, float[] x)
    {
        var y = new double[rows];
        for (int r = 0; r < rows; r++)
        {
            double s = 0;
            for (int j = 0; j < cols; j++) s += (double)w[r * cols + j] * x[j];
            y[r] = s;
        }
        return y;
    }

    private static double[] RefMatVec(QuantizedMatrix m, float[] x)
    {
        var y = new double[m.Rows];
        Quantizer.ReferenceMatVec(m, x, y);
        return y;
    }

    [Fact]
    public void Quantization_Schemes_PerChannelBeatsPerTensorWithOutlierOutputRow()
    {
        var rng = new Random(21);
        const int rows = 64, cols = 512, outlier = 3;
        var w = RandomMatrix(rng, rows * cols);
        for (int c = 0; c < cols; c++) w[outlier * cols + c] *= 100f;
        double pt = 0, pc = 0, ePt = 0, ePc = 0;
        const int trials = 8;
        for (int t = 0; t < trials; t++)
        {
            var x = RandomMatrix(rng, cols);
            var exact = ExactMatVec(w, rows, cols, x);
            bool Normal(int r) => r != outlier;
            pt += RelRmsError(RefMatVec(Quantizer.Quantize(w, rows, cols, QuantFormat.Int8, QuantScheme.PerTensor), x), exact, Normal);
            pc += RelRmsError(RefMatVec(Quantizer.Quantize(w, rows, cols, QuantFormat.Int8, QuantScheme.PerChannel), x), exact, Normal);
            ePt += RelRmsError(RefMatVec(Quantizer.Quantize(w, rows, cols, QuantFormat.E4M3, QuantScheme.PerTensor), x), exact, Normal);
            ePc += RelRmsError(RefMatVec(Quantizer.Quantize(w, rows, cols, QuantFormat.E4M3, QuantScheme.PerChannel), x), exact, Normal);
        }
        pt /= trials; pc /= trials; ePt /= trials; ePc /= trials;
        output.WriteLine($"outlier output row (x100), relative RMS error on the other rows, mean of {trials} vectors:");
        output.WriteLine($"  int8 per-tensor  {pt:E3}");
        output.WriteLine($"  int8 per-channel {pc:E3}  (ratio {pt / pc:F1}x)");
        output.WriteLine($"  e4m3 per-tensor  {ePt:E3}");
        output.WriteLine($"  e4m3 per-channel {ePc:E3}  (ratio {ePt / ePc:F2}x)");
        Assert.True(pc * 10 < pt, $"per-channel {pc} should be at least 10x below per-tensor {pt}");
        // E4M3 is floating point: the outlier only shifts exponents, so the two stay within 2x.
        Assert.True(ePt < 2 * ePc && ePc < 2 * ePt);
    }

    [Fact]
    public void Quantization_Schemes_SmoothQuantBeatsPerChannelWithOutlierInputChannel()
    {
        var rng = new Random(22);
        const int rows = 64, cols = 512, outlier = 7;
        var w = RandomMatrix(rng, rows * cols);
        float[] Activation()
        {
            var x = RandomMatrix(rng, cols);
            x[outlier] *= 50f;
            if (Math.Abs(x[outlier]) < 25f) x[outlier] = MathF.CopySign(25f + Math.Abs(x[outlier]), x[outlier]);
            return x;
        }
        var calibration = Enumerable.Range(0, 16).Select(_ => Activation()).ToArray();
        var actMax = AbsMaxColumns(calibration, cols);
        var pc = Quantizer.Quantize(w, rows, cols, QuantFormat.Int8, QuantScheme.PerChannel);
        var sq = Quantizer.Quantize(w, rows, cols, QuantFormat.Int8, QuantScheme.SmoothQuant, actMax, 0.5f);
        var sq75 = Quantizer.Quantize(w, rows, cols, QuantFormat.Int8, QuantScheme.SmoothQuant, actMax, 0.75f);
        double ePc = 0, eSq = 0, eSq75 = 0;
        const int trials = 8;
        for (int t = 0; t < trials; t++)
        {
            var x = Activation();
            var exact = ExactMatVec(w, rows, cols, x);
            ePc += RelRmsError(RefMatVec(pc, x), exact, _ => true);
            eSq += RelRmsError(RefMatVec(sq, x), exact, _ => true);
            eSq75 += RelRmsError(RefMatVec(sq75, x), exact, _ => true);
        }
        ePc /= trials; eSq /= trials; eSq75 /= trials;
        output.WriteLine($"outlier input channel (x50), relative RMS error, mean of {trials} vectors:");
        output.WriteLine($"  int8 per-channel/per-token {ePc:E3}");
        output.WriteLine($"  int8 SmoothQuant a=0.5     {eSq:E3}  (ratio {ePc / eSq:F2}x), s[outlier]={sq.SmoothFactors![outlier]:F3}");
        output.WriteLine($"  int8 SmoothQuant a=0.75    {eSq75:E3}  (ratio {ePc / eSq75:F2}x)");
        Assert.True(eSq * 2 < ePc, $"SmoothQuant {eSq} should be at least 2x below per-channel {ePc}");
    }

    [Fact]
    public void Quantization_SmoothQuant_FactorsFollowTheFormulaWithGuards()
    {
        const int rows = 3, cols = 4;
        float[] w =
        [
            0.5f, 0f, 2f, -1f,
            -4f, 0f, 1f, 0.25f,
            1f, 0f, -0.5f, 0.5f,
        ];
        float[] act = [9f, 3f, 0f, 16f];
        var m = Quantizer.Quantize(w, rows, cols, QuantFormat.Int8, QuantScheme.SmoothQuant, act, 0.5f);
        var s = m.SmoothFactors!;
        Assert.Equal(cols, s.Length);
        Assert.Equal((float)(Math.Sqrt(9) / Math.Sqrt(4)), s[0]);   // max|X|^0.5 / max|W|^0.5
        Assert.Equal(1f, s[1]);                                      // all-zero weight column -> 1
        Assert.Equal(1f, s[2]);                                      // zero activation max -> 1
        Assert.Equal((float)(Math.Sqrt(16) / Math.Sqrt(1)), s[3]);
        Assert.Equal(rows, m.WeightScales.Length);
        // stored weights are W' = W * s (per-channel int8): dequantized W'/s is within half a step / s
        for (int r = 0; r < rows; r++)
            for (int c = 0; c < cols; c++)
                Assert.True(Math.Abs(m.Dequantize(r, c) / s[c] - w[r * cols + c]) <= m.WeightScales[r] / 2 / s[c]);

        // alpha = 0 -> s = 1 / max|W|; alpha = 1 -> s = max|X|
        var s0 = Quantizer.SmoothFactors(w, rows, cols, act, 0f);
        var s1 = Quantizer.SmoothFactors(w, rows, cols, act, 1f);
        Assert.Equal(0.25f, s0[0]);
        Assert.Equal(9f, s1[0]);
        Assert.Equal(16f, s1[3]);
        // lower clamp
        var sc = Quantizer.SmoothFactors([1e6f], 1, 1, [1e-12f], 0.5f);
        Assert.Equal((float)Quantizer.MinSmoothFactor, sc[0]);

        // the activations the backend quantizes are x / s
        float[] x = [3f, 1f, 2f, 8f];
        var xs = Quantizer.SmoothedActivations(m, x);
        for (int j = 0; j < cols; j++) Assert.Equal(x[j] / s[j], xs[j]);
    }

    private static byte[] Fingerprint(QuantizedMatrix m)
    {
        var bytes = new List<byte>(m.Codes);
        foreach (var s in m.WeightScales) bytes.AddRange(BitConverter.GetBytes(s));
        if (m.SmoothFactors != null) foreach (var s in m.SmoothFactors) bytes.AddRange(BitConverter.GetBytes(s));
        return bytes.ToArray();
    }

    [Fact]
    public void Quantization_IsDeterministic()
    {
        const int rows = 24, cols = 96;
        // Pinned fingerprints (codes + scales + smooth factors): a change means a quantization rule
        // changed, which changes every INT8/FP8 result; update deliberately, never casually.
        var pinned = new Dictionary<(QuantFormat, QuantScheme), string>
        {
            [(QuantFormat.Int8, QuantScheme.PerTensor)] = "F456D93B8BFF6764",
            [(QuantFormat.Int8, QuantScheme.PerChannel)] = "DCB472CCF01C772D",
            [(QuantFormat.Int8, QuantScheme.SmoothQuant)] = "2F5EDC9B4D94D056",
            [(QuantFormat.E4M3, QuantScheme.PerTensor)] = "17DD960168AB0B34",
            [(QuantFormat.E4M3, QuantScheme.PerChannel)] = "50DAB76D50EF67A1",
        };
        var lines = new List<string>();
        foreach (var (f, s) in AllCombos)
        {
            var a = QuantizeAny(WideMatrix(new Random(5), rows * cols), rows, cols, f, s, new Random(6));
            var b = QuantizeAny(WideMatrix(new Random(5), rows * cols), rows, cols, f, s, new Random(6));
            Assert.Equal(Fingerprint(a), Fingerprint(b));
            var x = RandomMatrix(new Random(7), cols, 3f);
            var ya = RefMatVec(a, x);
            var yb = RefMatVec(b, x);
            Assert.Equal(ya.Select(BitConverter.DoubleToInt64Bits), yb.Select(BitConverter.DoubleToInt64Bits));
            string hash = Convert.ToHexString(SHA256.HashData(Fingerprint(a)))[..16];
            lines.Add($"{f}/{s}: sha256 {hash}");
            Assert.Equal(pinned[(f, s)], hash);
        }
        foreach (var l in lines) output.WriteLine(l);
    }

    [Fact]
    public void Quantization_RejectsInvalidArguments()
    {
        var w = new float[] { 1f, 2f, 3f, 4f, 5f, 6f };
        float[] act = [1f, 1f, 1f];
        Assert.Throws<ArgumentException>(() => Quantizer.Quantize(w, 2, 3, QuantFormat.E4M3, QuantScheme.SmoothQuant, act));
        Assert.Throws<ArgumentException>(() => Quantizer.Quantize(w, 2, 3, QuantFormat.Int8, QuantScheme.SmoothQuant));
        Assert.Throws<ArgumentException>(() => Quantizer.Quantize(w, 2, 3, QuantFormat.Int8, QuantScheme.SmoothQuant, [1f, 1f]));
        Assert.Throws<ArgumentException>(() => Quantizer.Quantize(w, 2, 3, QuantFormat.Int8, QuantScheme.SmoothQuant, act, 1.5f));
        Assert.Throws<ArgumentException>(() => Quantizer.Quantize(w, 2, 3, QuantFormat.Int8, QuantScheme.SmoothQuant, [1f, float.NaN, 1f]));
        Assert.Throws<ArgumentException>(() => Quantizer.Quantize(w, 2, 3, QuantFormat.Int8, QuantScheme.PerChannel, act));
        Assert.Throws<ArgumentException>(() => Quantizer.Quantize(w, 3, 3, QuantFormat.Int8, QuantScheme.PerChannel));
        Assert.Throws<ArgumentException>(() => Quantizer.Quantize([1f, float.PositiveInfinity], 1, 2, QuantFormat.Int8, QuantScheme.PerTensor));
        Assert.Throws<ArgumentException>(() => Quantizer.Quantize([float.NaN], 1, 1, QuantFormat.E4M3, QuantScheme.PerTensor));
        Assert.Throws<ArgumentException>(() => Quantizer.Quantize(new float[Quantizer.MaxInt8Cols + 1], 1, Quantizer.MaxInt8Cols + 1, QuantFormat.Int8, QuantScheme.PerTensor));
        Assert.Throws<ArgumentException>(() => Quantizer.QuantizeActivationsInt8([1f, float.NaN], new sbyte[2]));
        Assert.Throws<ArgumentException>(() => Quantizer.QuantizeActivationsE4M3([float.NegativeInfinity], new byte[1]));
        var m = Quantizer.Quantize(w, 2, 3, QuantFormat.Int8, QuantScheme.PerTensor);
        Assert.Throws<ArgumentException>(() => Quantizer.ReferenceMatVec(m, [1f, 2f], new double[2]));
        Assert.Throws<ArgumentException>(() => Quantizer.ReferenceMatVec(m, [1f, 2f, 3f], new double[3]));
        Assert.Equal(133144, Quantizer.MaxInt8Cols);
    }
}
