using System.Numerics;
using System.Reflection;
using System.Runtime.CompilerServices;
using System.Text.RegularExpressions;
using GpuIntLab.Core.FixedPoint;
using Xunit;

namespace GpuIntLab.Tests.FixedPoint;

public class BoundaryAndConstantsTests
{
    private const long One = Q48.One;

    [Fact]
    public void ReferenceConstants_AgreeWithFloat64()
    {
        // sanity of the reference series themselves: rounded to 53 bits they are Math.PI and Math.Log(2)
        Assert.Equal(BitConverter.DoubleToInt64Bits(Math.PI) & ((1L << 52) - 1), (long)(BigRef.RoundShift(BigRef.Pi, BigRef.P - 51) & ((BigInteger.One << 52) - 1)));
        Assert.Equal(BitConverter.DoubleToInt64Bits(Math.Log(2)) & ((1L << 52) - 1), (long)(BigRef.RoundShift(BigRef.Ln2, BigRef.P - 53) & ((BigInteger.One << 52) - 1)));
    }

    [Fact]
    public void HardCodedConstants_AreCorrectlyRounded()
    {
        Assert.Equal(BigRef.RoundShift(BigRef.Ln2, BigRef.P - 128), (BigInteger)Q48Constants.Ln2Q128);
        Assert.Equal(BigRef.RoundShift(BigRef.Pi, BigRef.P - 125), (BigInteger)Q48Constants.PiQ125);
        Assert.Equal(BigRef.RoundShift(BigRef.Ln2, BigRef.P - 120), (BigInteger)Q48Constants.Ln2Q120);
        Assert.Equal(BigRef.RoundShift(BigRef.Ln2, BigRef.P - 102), (BigInteger)Q48Constants.ExpStepQ110);
        Assert.Equal(BigRef.RoundShift(BigRef.Pi, BigRef.P - 99), (BigInteger)Q48Constants.PiOver2Q100);
    }

    [Fact]
    public void Tables_MatchBigIntegerReference()
    {
        for (int j = 0; j < 256; j++)
        {
            // 2^(j/256) in Q.126 within 2^-118 relative
            BigInteger t = BigRef.Exp(BigRef.Ln2 * j / 256) >> (BigRef.P - 126);
            Assert.True(BigInteger.Abs(t - (BigInteger)Q48Constants.Pow2Frac[j]) < (BigInteger.One << 9), $"Pow2Frac[{j}]");
            // ln(2^16 / a_j) in Q.126 within 2^-118 absolute, and a_j / 2^16 >= 1 / (1 + j/256)
            ulong a = Q48Constants.LogRecip[j];
            Assert.True((BigInteger)a * (256 + j) >= BigInteger.One << 24);
            BigInteger l = (BigRef.Ln(BigInteger.One << 16, 0) - BigRef.Ln(a, 0)) >> (BigRef.P - 126);
            Assert.True(BigInteger.Abs(l - (BigInteger)Q48Constants.LogNegLnRecip[j]) < (BigInteger.One << 9), $"LogNegLnRecip[{j}]");
        }
    }

    private static BigInteger ExactRneOfDouble(double v)
    {
        long bits = BitConverter.DoubleToInt64Bits(v);
        int be = (int)((bits >> 52) & 0x7FF);
        BigInteger m = (bits & ((1L << 52) - 1)) | (be == 0 ? 0 : 1L << 52);
        int e = (be == 0 ? -1074 : be - 1075) + 48;
        BigInteger mag = e >= 0 ? m << e : BigRef.RoundShift(m, -e);
        return bits < 0 ? -mag : mag;
    }

    [Fact]
    public void FromDouble_IsExactRne()
    {
        var rng = new Random(41);
        var values = new List<double> { 0.0, -0.0, 1, -1, 0.5, 1e-300, double.Epsilon, -double.Epsilon, 32767.999, -32768, Math.PI, -Math.E };
        values.Add(Math.Pow(2, -49));         // exactly half an ulp -> 0 (even)
        values.Add(3 * Math.Pow(2, -49));     // 1.5 ulp -> 2
        values.Add(5 * Math.Pow(2, -49));     // 2.5 ulp -> 2
        values.Add(-3 * Math.Pow(2, -49));    // -1.5 ulp -> -2
        values.Add(32768 - Math.Pow(2, -38)); // representable below the limit
        for (int i = 0; i < 100_000; i++)
        {
            values.Add((rng.NextDouble() * 2 - 1) * Math.Pow(2, rng.Next(-60, 16)));
        }

        foreach (double v in values)
        {
            Assert.Equal(ExactRneOfDouble(v), (BigInteger)Q48.FromDouble(v));
        }

        Assert.Equal(0, Q48.FromDouble(Math.Pow(2, -49)));
        Assert.Equal(2, Q48.FromDouble(3 * Math.Pow(2, -49)));
        Assert.Equal(long.MinValue, Q48.FromDouble(-32768));
        Assert.Throws<Q48OverflowException>(() => Q48.FromDouble(32768));
        Assert.Throws<Q48OverflowException>(() => Q48.FromDouble(-32768.00000000001));
        Assert.Throws<Q48OverflowException>(() => Q48.FromDouble(double.PositiveInfinity));
        Assert.Throws<Q48OverflowException>(() => Q48.FromDouble(1e300));
        Assert.Throws<ArgumentException>(() => Q48.FromDouble(double.NaN));
    }

    [Fact]
    public void ToDouble_RoundTrips()
    {
        var rng = new Random(42);
        for (int i = 0; i < 100_000; i++)
        {
            long raw = rng.NextInt64(long.MinValue, long.MaxValue) >> rng.Next(0, 63);
            double d = Q48.ToDouble(raw);
            Assert.Equal((double)raw / One, d);
            if (Math.Abs(raw) < (1L << 53))
            {
                Assert.Equal(raw, Q48.FromDouble(d)); // exact when raw has <= 53 significant bits
            }
        }

        Assert.Equal(-32768.0, Q48.ToDouble(long.MinValue));
        Assert.Equal(1.0, Q48.ToDouble(One));
    }

    private static string FixedPointSourceDir([CallerFilePath] string thisFile = "")
    {
        var dir = new DirectoryInfo(Path.GetDirectoryName(thisFile)!);
        while (dir != null && !Directory.Exists(Path.Combine(dir.FullName, "src", "GpuIntLab.Core", "FixedPoint")))
        {
            dir = dir.Parent;
        }

        Assert.NotNull(dir);
        return Path.Combine(dir!.FullName, "src", "GpuIntLab.Core", "FixedPoint");
    }

    /// <summary>
    /// The compute core must be integer only: every file under FixedPoint/ except Q48Boundary.cs is scanned
    /// (comments stripped) for floating-point types, float literals and floating-point Math calls.
    /// </summary>
    [Fact]
    public void ComputeCore_UsesNoFloatingPoint()
    {
        var forbidden = new Regex(
            @"\b(double|float|Half|decimal|Double|Single|Decimal|MathF)\b" +
            @"|\bMath\.(?!BigMul\b)\w+" +
            @"|\bBitConverter\b" +
            @"|(?<![\w.])\d+\.\d+|(?<![\w.])\d+[eE][+-]?\d+\b|(?<![\w.])\d+[fFdDmM]\b");
        string dir = FixedPointSourceDir();
        var files = Directory.GetFiles(dir, "*.cs").Where(f => Path.GetFileName(f) != "Q48Boundary.cs").ToList();
        Assert.True(files.Count >= 5, $"expected the FixedPoint sources in {dir}");
        var violations = new List<string>();
        foreach (string file in files)
        {
            string[] lines = File.ReadAllLines(file);
            for (int i = 0; i < lines.Length; i++)
            {
                string code = Regex.Replace(lines[i], @"//.*$", ""); // line and doc comments
                code = Regex.Replace(code, "\"(?:[^\"\\\\]|\\\\.)*\"", "\"\"");  // string literals
                if (forbidden.IsMatch(code))
                {
                    violations.Add($"{Path.GetFileName(file)}:{i + 1}: {lines[i].Trim()}");
                }
            }
        }

        Assert.True(violations.Count == 0, "floating point in the integer core:\n" + string.Join("\n", violations));
        Assert.True(File.Exists(Path.Combine(dir, "Q48Boundary.cs")));
    }

    /// <summary>Reflection: only the marked boundary members take or return floating-point types.</summary>
    [Fact]
    public void OnlyBoundaryMembers_HaveFloatingPointSignatures()
    {
        string[] allowed = ["ToDouble", "FromDouble", "DecomposeDouble", "ThetaBits", ".ctor"];
        var floatTypes = new HashSet<Type> { typeof(double), typeof(float), typeof(Half), typeof(decimal) };
        var asm = typeof(Q48).Assembly;
        const BindingFlags all = BindingFlags.Public | BindingFlags.NonPublic | BindingFlags.Static | BindingFlags.Instance | BindingFlags.DeclaredOnly;
        foreach (var type in asm.GetTypes().Where(t => t.Namespace == typeof(Q48).Namespace))
        {
            foreach (var f in type.GetFields(all))
            {
                Assert.False(floatTypes.Contains(f.FieldType), $"{type.Name}.{f.Name} is floating point");
            }

            foreach (MethodBase m in type.GetMethods(all).Cast<MethodBase>().Concat(type.GetConstructors(all)))
            {
                bool usesFloat = m.GetParameters().Any(p => floatTypes.Contains(p.ParameterType.IsByRef ? p.ParameterType.GetElementType()! : p.ParameterType))
                    || (m is MethodInfo mi && floatTypes.Contains(mi.ReturnType));
                if (usesFloat)
                {
                    Assert.Contains(m.Name, allowed);
                    if (m.Name == ".ctor")
                    {
                        Assert.Equal(typeof(RopeTable), type);
                    }
                }
            }
        }
    }
}
