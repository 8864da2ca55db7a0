using BenchmarkDotNet.Running;

// dotnet run -c Release --project src/GpuIntLab.Benchmarks -- --filter '*' --job short
BenchmarkSwitcher.FromAssembly(typeof(GpuIntLab.Benchmarks.OracleMatVecBenchmarks).Assembly).Run(args);
