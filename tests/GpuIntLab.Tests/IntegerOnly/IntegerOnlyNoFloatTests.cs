using System.Reflection;
using System.Reflection.Emit;
using System.Runtime.CompilerServices;
using System.Text.RegularExpressions;
using GpuIntLab.Backends.Ilgpu;
using Xunit;
using Xunit.Abstractions;

namespace GpuIntLab.Tests.IntegerOnly;

/// <summary>
/// No floating point sneaks into the integer-only step: (1) the sources of the primitives, the CPU step and the
/// kernels hold no float type, literal or Math call (as the oracle's FixedPoint scan); (2) the compiled IL of every
/// kernel and of every method it reaches holds no float opcode and calls nothing that takes or returns a float.
/// </summary>
public class IntegerOnlyNoFloatTests(ITestOutputHelper output)
{
    /// <summary>Files allowed floating point, each for a boundary reason.</summary>
    private static readonly Dictionary<string, string> s_boundary = new()
    {
        ["IntegerOnlyWeights.cs"] = "load-time quantisation of weights, biases, eps and 1/sqrt(d) from float64",
        ["IntegerOnlyEngine.Boundary.cs"] = "float64 views of the int32 buffers and the output logits",
        ["IntegerOnlyNotes.cs"] = "result notes: strings that quote error bounds as decimals",
    };

    private static string RepositoryRoot([CallerFilePath] string thisFile = "")
    {
        var dir = new DirectoryInfo(Path.GetDirectoryName(thisFile)!);
        while (dir != null && !Directory.Exists(Path.Combine(dir.FullName, "src", "GpuIntLab.Core"))) dir = dir.Parent;
        Assert.NotNull(dir);
        return dir!.FullName;
    }

    [Fact]
    public void IntegerSourcesHoldNoFloatingPoint()
    {
        string root = RepositoryRoot();
        var forbidden = new Regex(
            @"\b(double|float|Half|decimal|Double|Single|Decimal|MathF)\b" +
            @"|\bMath\.\w+" +
            @"|\bBitConverter\b" +
            @"|(?<![\w.])\d+\.\d+|(?<![\w.])\d+[eE][+-]?\d+\b|(?<![\w.])\d+[fFdDmM]\b");
        var folder = Directory.GetFiles(Path.Combine(root, "src", "GpuIntLab.Core", "Formats", "IntegerOnly"), "*.cs");
        Assert.True(s_boundary.Keys.All(name => folder.Any(f => Path.GetFileName(f) == name)), "a boundary file was renamed: update the list");
        var files = folder.Where(f => !s_boundary.ContainsKey(Path.GetFileName(f)))
            .Append(Path.Combine(root, "src", "GpuIntLab.Backends", "Ilgpu", "IntegerOnlyKernels.cs")).ToList();
        Assert.True(files.Count >= 7, $"expected the integer sources, found {files.Count}");
        var violations = new List<string>();
        foreach (string file in files)
        {
            string[] lines = File.ReadAllLines(file);
            for (int i = 0; i < lines.Length; i++)
            {
                string code = Regex.Replace(lines[i], @"//.*$", "");
                foreach (Match m in forbidden.Matches(code)) violations.Add($"{Path.GetFileName(file)}:{i + 1}: '{m.Value}' in: {lines[i].Trim()}");
            }
        }
        output.WriteLine($"scanned {files.Count} files: {string.Join(", ", files.Select(Path.GetFileName))}");
        Assert.True(violations.Count == 0, string.Join("\n", violations));
    }

    private static readonly Dictionary<short, OpCode> s_opCodes = typeof(OpCodes).GetFields(BindingFlags.Public | BindingFlags.Static)
        .Select(f => (OpCode)f.GetValue(null)!).ToDictionary(o => o.Value);

    private static readonly HashSet<short> s_floatOpCodes =
    [
        OpCodes.Ldc_R4.Value, OpCodes.Ldc_R8.Value, OpCodes.Conv_R4.Value, OpCodes.Conv_R8.Value, OpCodes.Conv_R_Un.Value,
        OpCodes.Ldind_R4.Value, OpCodes.Ldind_R8.Value, OpCodes.Stind_R4.Value, OpCodes.Stind_R8.Value,
        OpCodes.Ldelem_R4.Value, OpCodes.Ldelem_R8.Value, OpCodes.Stelem_R4.Value, OpCodes.Stelem_R8.Value, OpCodes.Ckfinite.Value,
    ];

    private static bool IsFloat(Type t)
    {
        while (t.HasElementType) t = t.GetElementType()!;
        return t == typeof(float) || t == typeof(double) || t == typeof(Half) || t == typeof(decimal)
            || (t.IsGenericType && t.GetGenericArguments().Any(IsFloat));
    }

    /// <summary>Decodes a method's IL: its float opcodes, and the methods it calls.</summary>
    private static (List<string> FloatOps, List<MethodBase> Calls) Decode(MethodBase method)
    {
        var floats = new List<string>();
        var calls = new List<MethodBase>();
        byte[] il = method.GetMethodBody()?.GetILAsByteArray() ?? [];
        for (int i = 0; i < il.Length;)
        {
            short value = il[i] == 0xFE ? (short)(0xFE00 | il[i + 1]) : il[i];
            var op = s_opCodes[value];
            i += op.Size;
            if (s_floatOpCodes.Contains(op.Value)) floats.Add(op.Name!);
            int operand = op.OperandType switch
            {
                OperandType.InlineNone => 0,
                OperandType.ShortInlineBrTarget or OperandType.ShortInlineI or OperandType.ShortInlineVar => 1,
                OperandType.InlineVar => 2,
                OperandType.InlineI8 or OperandType.InlineR => 8,
                OperandType.InlineSwitch => 4 + 4 * BitConverter.ToInt32(il, i),
                _ => 4,
            };
            if (op.OperandType == OperandType.InlineMethod)
                calls.Add(method.Module.ResolveMethod(BitConverter.ToInt32(il, i), method.DeclaringType?.GetGenericArguments(), method.IsGenericMethod ? method.GetGenericArguments() : null)!);
            i += operand;
        }
        return (floats, calls);
    }

    [Fact]
    public void KernelIlReachesNoFloatingPoint()
    {
        var kernels = typeof(IntegerOnlyKernels).GetMethods(BindingFlags.Public | BindingFlags.Static | BindingFlags.DeclaredOnly);
        Assert.True(kernels.Length >= 10, "expected the integer-only kernels");
        var seen = new HashSet<MethodBase>();
        var pending = new Stack<MethodBase>(kernels);
        var violations = new List<string>();
        while (pending.Count > 0)
        {
            var method = pending.Pop();
            if (!seen.Add(method)) continue;
            string name = $"{method.DeclaringType?.Name}.{method.Name}";
            var returnType = method is MethodInfo info ? info.ReturnType : typeof(void);
            if (IsFloat(returnType) || method.GetParameters().Any(p => IsFloat(p.ParameterType))) violations.Add($"{name} takes or returns floating point");
            // Our own code is followed call by call; library methods (ArrayView indexers, Index1D conversions) are checked by signature only.
            if (method.DeclaringType?.Assembly.GetName().Name?.StartsWith("GpuIntLab", StringComparison.Ordinal) != true) continue;
            var (floats, calls) = Decode(method);
            if (floats.Count > 0) violations.Add($"{name}: {string.Join(", ", floats)}");
            foreach (var call in calls) pending.Push(call);
        }
        output.WriteLine($"{seen.Count} methods reached from {kernels.Length} kernels: {string.Join(", ", seen.Where(m => m.DeclaringType?.Namespace?.StartsWith("GpuIntLab", StringComparison.Ordinal) == true).Select(m => m.DeclaringType!.Name + "." + m.Name).Order())}");
        Assert.True(violations.Count == 0, string.Join("\n", violations));
    }
}
