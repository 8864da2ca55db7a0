using System.Runtime.CompilerServices;
using System.Numerics;

namespace GpuIntLab.Training;

/// <summary>
/// AdamW (Loshchilov and Hutter): Adam moments with bias correction and decoupled weight decay,
/// applied only to tensors marked <see cref="ParamTensor.Decay"/> (the matrices, not the norms).
/// The update is a plain element loop, so it is exactly
/// reproducible.
/// </summary>
public sealed class AdamW<T> where T : unmanaged, IFloatingPointIeee754<T>
{
    private readonly T[] _m, _v;
    private readonly IReadOnlyList<ParamTensor> _tensors;
    public double Beta1 { get; init; } = 0.9;
    public double Beta2 { get; init; } = 0.95;
    public double Epsilon { get; init; } = 1e-8;
    public double WeightDecay { get; init; } = 0.1;
    public int StepCount { get; private set; }

    public AdamW(IReadOnlyList<ParamTensor> tensors, int parameterCount)
    {
        _tensors = tensors;
        _m = new T[parameterCount];
        _v = new T[parameterCount];
    }

    [MethodImpl(MethodImplOptions.AggressiveOptimization)]
    public void Step(T[] parameters, T[] grads, double lr)
    {
        StepCount++;
        T b1 = T.CreateChecked(Beta1), b2 = T.CreateChecked(Beta2);
        T c1 = T.One - b1, c2 = T.One - b2;
        T bc1 = T.CreateChecked(1 - Math.Pow(Beta1, StepCount));
        T bc2 = T.CreateChecked(1 - Math.Pow(Beta2, StepCount));
        T eps = T.CreateChecked(Epsilon), lrT = T.CreateChecked(lr);
        foreach (var t in _tensors)
        {
            T decay = t.Decay ? T.One - T.CreateChecked(lr * WeightDecay) : T.One;
            Parallel.For(0, (t.Length + 4095) / 4096, Kernels<T>.Parallelism, chunk =>
            {
                int start = t.Offset + chunk * 4096, end = Math.Min(t.Offset + t.Length, start + 4096);
                for (int i = start; i < end; i++)
                {
                    T g = grads[i];
                    _m[i] = b1 * _m[i] + c1 * g;
                    _v[i] = b2 * _v[i] + c2 * g * g;
                    T mHat = _m[i] / bc1, vHat = _v[i] / bc2;
                    parameters[i] = parameters[i] * decay - lrT * mHat / (T.Sqrt(vHat) + eps);
                }
            });
        }
    }

    /// <summary>Scales the gradient so its global L2 norm is at most maxNorm; returns the norm before clipping.</summary>
    [MethodImpl(MethodImplOptions.AggressiveOptimization)]
    public static double ClipGlobalNorm(T[] grads, double maxNorm)
    {
        double sum = 0;
        for (int i = 0; i < grads.Length; i++) { double g = double.CreateChecked(grads[i]); sum += g * g; }
        double norm = Math.Sqrt(sum);
        if (maxNorm > 0 && norm > maxNorm)
        {
            T s = T.CreateChecked(maxNorm / norm);
            for (int i = 0; i < grads.Length; i++) grads[i] *= s;
        }
        return norm;
    }
}
