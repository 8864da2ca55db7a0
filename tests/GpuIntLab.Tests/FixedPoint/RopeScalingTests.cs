using System.Numerics;
using GpuIntLab.Core.FixedPoint;
using GpuIntLab.Core.Models;
using Xunit;
using Xunit.Abstractions;

namespace GpuIntLab.Tests.FixedPoint;

/// <summary>
/// The llama3 frequency rewrite of the exact table against an independent 224-bit BigInteger evaluation of
/// transformers' formula (written in its wavelength form, with Machin's pi), and its branch decisions against
/// the float64 formula.
/// </summary>
public class RopeScalingTests(ITestOutputHelper output)
{
    private const int P = BigRef.P;

    // conformance tiny-llama3 and Llama-3.2-1B: theta 500000, factor 32, low 1, high 4, original 8192
    private static readonly RopeScaling Llama3 = RopeScaling.Create("llama3", 32, 1, 4, 8192);

    public static TheoryData<int, double, double, double, double, int> Configs() => new()
    {
        { 16, 500000, 32, 1, 4, 8192 },    // conformance tiny-llama3
        { 64, 500000, 32, 1, 4, 8192 },    // Llama-3.2-1B
        { 128, 500000, 8, 1, 4, 8192 },    // Llama-3.1-8B
        { 64, 10000, 7.25, 1.5, 3.75, 4096 }, // dyadic fractions: a common denominator 2^2
        { 64, 10000, 3, 1.1, 2.9, 1000 },  // 1.1 and 2.9 are binary fractions with 52-bit mantissas
    };

    [Theory]
    [MemberData(nameof(Configs))]
    public void Rewrite_MatchesBigIntegerReference_AndFloat64Branches(int headDim, double theta, double factor, double low, double high, int original)
    {
        var scaling = RopeScaling.Create("llama3", factor, low, high, original);
        var plain = new RopeTable(headDim, 1, theta);
        var scaled = new RopeTable(headDim, 1, theta, scaling);
        Assert.Same(scaling, scaled.Scaling);
        double maxAbs = 0, maxRel = 0;
        var bands = new List<string>();
        for (int i = 0; i < headDim / 2; i++)
        {
            // the rule's input is the table's own unscaled Q1.127 frequency, lifted to 224 bits
            BigInteger f = (BigInteger)plain.InverseFrequencyQ127(i) << (P - 127);
            BigInteger reference = ReferenceRule(f, factor, low, high, original, out RopeFrequencyBand referenceBand);
            BigInteger ours = (BigInteger)scaled.InverseFrequencyQ127(i) << (P - 127);
            double abs = (double)BigInteger.Abs(ours - reference) / (double)BigRef.OneP;
            maxAbs = Math.Max(maxAbs, abs);
            maxRel = Math.Max(maxRel, (double)BigInteger.Abs(ours - reference) / (double)reference);
            Assert.Equal(referenceBand, scaled.Band(i));
            Assert.Equal(Float64Band(headDim, theta, i, low, high, original), scaled.Band(i));
            Assert.Equal(RopeFrequencyBand.Kept, plain.Band(i));
            bands.Add(scaled.Band(i).ToString()[..1]);
        }

        output.WriteLine($"d={headDim} theta={theta} factor={factor} low={low} high={high} original={original}: bands {string.Concat(bands)}; " +
            $"max |ours - reference| = 2^{Math.Log2(Math.Max(maxAbs, 1e-300)):F1} absolute, 2^{Math.Log2(Math.Max(maxRel, 1e-300)):F1} relative");

        // stated bound: 2^-128 rounding + f * high / (high - low) * 2^-127.6 for pi'; smooth pairs have f < 0.03 here
        // (x = original f / (2 pi) <= high) and high / (high - low) <= 2.4, so the pi' term is < 2^-131
        Assert.True(maxAbs <= Math.Pow(2, -127), $"rewrite error {maxAbs}");
    }

    [Fact]
    public void BandsAndWorkedValues_OfLlama32()
    {
        // model-families.md 1.3 (float64): pairs 0-14 kept, 15-17 smooth, 18-31 divided;
        // pair 15: 2.1311195e-3 -> 1.2905479e-3, pair 31: 3.0138582e-6 -> 9.4183067e-8
        var table = new RopeTable(64, 1, 500000, Llama3);
        string bands = string.Concat(Enumerable.Range(0, 32).Select(i => table.Band(i).ToString()[..1]));
        Assert.Equal(new string('K', 15) + "SSS" + new string('D', 14), bands);
        Assert.Equal(1.2905479e-3, ToDouble(table.InverseFrequencyQ127(15)), 1e-10);
        Assert.Equal(9.4183067e-8, ToDouble(table.InverseFrequencyQ127(31)), 1e-15);

        // conformance tiny-llama3 (head_dim 16): pairs 0-3 kept, 4 smooth, 5-7 divided
        var tiny = new RopeTable(16, 1, 500000, Llama3);
        Assert.Equal("KKKKSDDD", string.Concat(Enumerable.Range(0, 8).Select(i => tiny.Band(i).ToString()[..1])));
    }

    [Fact]
    public void ScaledTable_EndToEnd_MatchesTrueFrequencyAndCorrectlyRoundedSinCos()
    {
        // true theta^(-2i/d) at 224 bits, the rule applied at 224 bits, then sin/cos: the table is within 1 ulp
        var table = new RopeTable(64, 8192, 500000, Llama3);
        BigInteger lnTheta = BigRef.Ln(500000, 0);
        double maxRel = 0;
        var cs = new UlpStats("RoPE llama3 cos d=64");
        var ss = new UlpStats("RoPE llama3 sin d=64");
        for (int i = 0; i < 32; i++)
        {
            BigInteger trueFrequency = ReferenceRule(BigRef.Exp(-(lnTheta * (2 * i)) / 64), 32, 1, 4, 8192, out _);
            BigInteger ours = (BigInteger)table.InverseFrequencyQ127(i) << (P - 127);
            maxRel = Math.Max(maxRel, (double)BigInteger.Abs(ours - trueFrequency) / (double)trueFrequency);
            foreach (int pos in (int[])[0, 1, 299, 599, 4095, 8191])
            {
                var (s, c) = BigRef.SinCos(trueFrequency * pos);
                cs.Add(pos, table.Cos(pos)[i], BigRef.ToQ48(c));
                ss.Add(pos, table.Sin(pos)[i], BigRef.ToQ48(s));
            }
        }

        output.WriteLine($"llama3 d=64: max inv_freq relative error vs the true rewritten frequency 2^{Math.Log2(maxRel):F1}");
        cs.Report(output);
        ss.Report(output);

        // unscaled error ~2^-80 times the smooth band's amplification (<= 1 + 31 * 4 / 3 ~ 2^5.4)
        Assert.True(maxRel < Math.Pow(2, -70), $"frequency error {maxRel}");
        cs.AssertMax(1);
        ss.AssertMax(1);
    }

    [Fact]
    public void FactorOne_KeepsEveryFrequency()
    {
        // factor 1: divided and smooth bands give f back exactly (the fraction reduces to F)
        var plain = new RopeTable(64, 1, 500000);
        var scaled = new RopeTable(64, 1, 500000, RopeScaling.Create("llama3", 1, 1, 4, 8192));
        for (int i = 0; i < 32; i++)
        {
            Assert.Equal(plain.InverseFrequencyQ127(i), scaled.InverseFrequencyQ127(i));
        }

        Assert.Equal(RopeFrequencyBand.Divided, scaled.Band(31));
    }

    [Fact]
    public void Validation_NamesTheField()
    {
        AssertRefused("type 'yarn' is not supported", () => RopeScaling.Create("yarn", 32, 1, 4, 8192));
        AssertRefused("rope_scaling.factor", () => RopeScaling.Create("llama3", 0.5, 1, 4, 8192));
        AssertRefused("rope_scaling.factor", () => RopeScaling.Create("llama3", double.NaN, 1, 4, 8192));
        AssertRefused("rope_scaling.factor", () => RopeScaling.Create("llama3", double.PositiveInfinity, 1, 4, 8192));
        AssertRefused("rope_scaling.low_freq_factor", () => RopeScaling.Create("llama3", 32, 0, 4, 8192));
        AssertRefused("rope_scaling.low_freq_factor", () => RopeScaling.Create("llama3", 32, -1, 4, 8192));
        AssertRefused("rope_scaling.high_freq_factor", () => RopeScaling.Create("llama3", 32, 4, 4, 8192));
        AssertRefused("rope_scaling.high_freq_factor", () => RopeScaling.Create("llama3", 32, 1, double.NaN, 8192));
        AssertRefused("rope_scaling.original_max_position_embeddings", () => RopeScaling.Create("llama3", 32, 1, 4, 0));

        // the record's public constructor bypasses Create: the table validates again
        AssertRefused("rope_scaling.factor", () => new RopeTable(16, 4, 500000, new RopeScaling("llama3", 0, 1, 4, 8192)));
        AssertRefused("not supported", () => new RopeTable(16, 4, 500000, new RopeScaling("Llama3", 32, 1, 4, 8192)));
    }

    private static void AssertRefused(string expected, Action build)
    {
        var e = Assert.ThrowsAny<ArgumentException>(build);
        Assert.Contains(expected, e.Message);
        Assert.DoesNotContain("(Parameter", e.Message); // one clean line for the config parser to prefix
    }

    // transformers' formula in its wavelength form at 224 bits (independent of the table's rational form):
    // wavelen = 2 pi / f; < original/high kept; > original/low: f / factor; else (1 - s) f / factor + s f.
    private static BigInteger ReferenceRule(BigInteger f, double factor, double low, double high, int original, out RopeFrequencyBand band)
    {
        BigInteger one = BigRef.OneP;
        BigInteger factorP = Exact(factor), lowP = Exact(low), highP = Exact(high), originalP = (BigInteger)original << P;
        BigInteger wavelength = (2 * BigRef.Pi * one) / f;
        BigInteger lowFreqWavelength = originalP * one / lowP;
        BigInteger highFreqWavelength = originalP * one / highP;
        if (wavelength < highFreqWavelength)
        {
            band = RopeFrequencyBand.Kept;
            return f;
        }

        if (wavelength > lowFreqWavelength)
        {
            band = RopeFrequencyBand.Divided;
            return f * one / factorP;
        }

        band = RopeFrequencyBand.Smooth;
        BigInteger s = ((originalP * one / wavelength) - lowP) * one / (highP - lowP);
        return ((one - s) * f / factorP) + (s * f / one);
    }

    // the exact value of a positive double in Q.224 (from its IEEE bits, written here independently)
    private static BigInteger Exact(double v)
    {
        long bits = BitConverter.DoubleToInt64Bits(v);
        int biased = (int)(bits >> 52);
        long mantissa = (bits & ((1L << 52) - 1)) | (1L << 52);
        int exponent = biased - 1075;
        return (BigInteger)mantissa << (P + exponent);
    }

    private static RopeFrequencyBand Float64Band(int headDim, double theta, int i, double low, double high, int original)
    {
        double f = 1.0 / Math.Pow(theta, 2.0 * i / headDim);
        double wavelength = 2 * Math.PI / f;
        return wavelength < original / high ? RopeFrequencyBand.Kept
            : wavelength > original / low ? RopeFrequencyBand.Divided
            : RopeFrequencyBand.Smooth;
    }

    private static double ToDouble(UInt128 q127) => (double)q127 / Math.Pow(2, 127);
}
