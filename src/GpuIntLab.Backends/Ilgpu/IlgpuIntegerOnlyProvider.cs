using GpuIntLab.Core.Formats.IntegerOnly;
using GpuIntLab.Core.Inference;
using GpuIntLab.Core.Models;

namespace GpuIntLab.Backends.Ilgpu;

/// <summary>
/// ILGPU integer-only W8A8 (issue 15): I-BERT / I-LLM style, no floating point in the step; bit-identical to the CPU
/// reference <see cref="IntegerOnlyEngine"/>.
/// </summary>
public sealed class IlgpuIntegerOnlyProvider : IEngineProvider
{
    public string Name => "ilgpu-intonly";
    public string Description => "ILGPU kernels: integer-only W8A8 (int8 weights and per-token activations, dyadic requantisation, integer RMSNorm / exp / softmax / SiLU / RoPE, int32 residual); no float in the step";
    public IReadOnlyList<string> Schemes { get; } = [IntegerOnlyNotes.Scheme];
    public Availability CheckAvailability(string accelerator) => IlgpuDevice.Check(accelerator);

    public IInferenceEngine Create(LlamaCheckpoint checkpoint, EngineOptions options)
    {
        IlgpuProvider.CheckScheme(this, options.Scheme);
        var model = new IntegerOnlyModel(checkpoint);
        return IlgpuProvider.Build(options.Accelerator, device => new IlgpuIntegerOnlyEngine(model, device));
    }
}
