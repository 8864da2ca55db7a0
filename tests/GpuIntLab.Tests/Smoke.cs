namespace GpuIntLab.Tests; public class Smoke { [Xunit.Fact] public void T() {} }
