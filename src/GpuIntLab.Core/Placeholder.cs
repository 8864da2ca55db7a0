namespace GpuIntLab.Core; internal static class Placeholder {}
