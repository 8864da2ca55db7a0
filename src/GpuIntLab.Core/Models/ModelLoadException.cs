namespace GpuIntLab.Core.Models;

/// <summary>A user-facing problem with a model file or folder: the message names the file and the problem.</summary>
public sealed class ModelLoadException(string message, Exception? inner = null) : Exception(message, inner);
