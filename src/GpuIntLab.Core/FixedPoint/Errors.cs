using System.Runtime.CompilerServices;

namespace GpuIntLab.Core.FixedPoint;

/// <summary>
/// Exception factories, kept out of line: building the message in the hot methods themselves would make
/// every call zero the interpolated-string state in its prologue.
/// </summary>
internal static class Errors
{
    [MethodImpl(MethodImplOptions.NoInlining)]
    public static Q48OverflowException FromIntOverflow(int v) =>
        new($"Q48.FromInt overflow: {v} is outside [-32768, 32767]");

    [MethodImpl(MethodImplOptions.NoInlining)]
    public static Q48OverflowException Overflow2(string op, long a, string symbol, long b) =>
        new($"Q48.{op} overflow: {Q48.Describe(a)} {symbol} {Q48.Describe(b)}");

    [MethodImpl(MethodImplOptions.NoInlining)]
    public static Q48OverflowException Overflow1(string op, string function, long x) =>
        new($"Q48.{op} overflow: {function}({Q48.Describe(x)}) >= 32768");

    [MethodImpl(MethodImplOptions.NoInlining)]
    public static Q48OverflowException RoundShiftOverflow(Int128 v, int shift) =>
        new($"Q48.RoundShift overflow: v = {v} (0x{v:X32}), shift = {shift}");

    [MethodImpl(MethodImplOptions.NoInlining)]
    public static DivideByZeroException DivideByZero(long a) =>
        new($"Q48.Div: division by zero ({Q48.Describe(a)} / 0)");

    [MethodImpl(MethodImplOptions.NoInlining)]
    public static ArgumentOutOfRangeException Domain(string op, string what, long x) =>
        new("x", $"Q48.{op} of {what} value {Q48.Describe(x)}");

    [MethodImpl(MethodImplOptions.NoInlining)]
    public static ArgumentException SoftmaxLength(int outputLength, int inputLength) =>
        new($"Q48.Softmax: output length {outputLength} != input length {inputLength}", "p");
}
