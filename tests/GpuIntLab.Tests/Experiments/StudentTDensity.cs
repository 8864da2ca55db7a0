namespace GpuIntLab.Tests.Experiments;

/// <summary>
/// Student's t density in closed form and its integral by Simpson's rule: an evaluation of the t distribution that
/// shares nothing with the code under test (tables, the incomplete beta function).
/// </summary>
internal static class StudentTDensity
{
    /// <summary>The density of t with <paramref name="df"/> degrees of freedom.</summary>
    public static Func<double, double> Of(int df)
    {
        // Gamma((v+1)/2) / Gamma(v/2) by its recurrence from v = 1 (1/sqrt(pi)) or v = 2 (sqrt(pi)/2).
        double ratio = df % 2 == 1 ? 1 / Math.Sqrt(Math.PI) : Math.Sqrt(Math.PI) / 2;
        for (int v = df % 2 == 1 ? 1 : 2; v < df; v += 2) ratio *= (v + 1.0) / v;
        double c = ratio / Math.Sqrt(df * Math.PI);
        return x => c * Math.Pow(1 + x * x / df, -(df + 1) / 2.0);
    }

    /// <summary>The integral of the density from 0 to <paramref name="upper"/> (Simpson, 20,000 steps).</summary>
    public static double IntegralFromZero(int df, double upper)
    {
        var density = Of(df);
        const int steps = 20000;
        double h = upper / steps, sum = density(0) + density(upper);
        for (int i = 1; i < steps; i++) sum += (i % 2 == 1 ? 4 : 2) * density(i * h);
        return sum * h / 3;
    }
}
