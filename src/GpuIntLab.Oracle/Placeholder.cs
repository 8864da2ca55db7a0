namespace GpuIntLab.Oracle; internal static class Placeholder {}
