namespace GpuIntLab.Core.FixedPoint;

/// <summary>
/// Thrown when a Q16.48 result does not fit the format (|value| &gt;= 32768, i.e. outside the
/// range of a <see cref="long"/> raw value). The message names the operation and its operands.
/// Q16.48 arithmetic never wraps silently.
/// </summary>
public sealed class Q48OverflowException : OverflowException
{
    public Q48OverflowException()
        : base("Q16.48 overflow")
    {
    }

    public Q48OverflowException(string message)
        : base(message)
    {
    }

    public Q48OverflowException(string message, Exception innerException)
        : base(message, innerException)
    {
    }
}
