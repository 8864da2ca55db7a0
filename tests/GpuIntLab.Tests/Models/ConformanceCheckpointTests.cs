using GpuIntLab.Core.Models;
using Xunit;

namespace GpuIntLab.Tests.Models;

/// <summary>The regenerated conformance checkpoints equal the project lead's byte for byte (SHA256SUMS).</summary>
public class ConformanceCheckpointTests
{
    public static TheoryData<string> Files()
    {
        var data = new TheoryData<string>();
        foreach (var line in File.ReadAllLines(Path.Combine(TestData.ConformanceDir, "SHA256SUMS")))
            if (line.Trim().Length > 0) data.Add(line.Split("  ", 2)[1]);
        return data;
    }

    [Theory]
    [MemberData(nameof(Files))]
    public void RegeneratedFileMatchesPublishedHash(string relativePath)
    {
        var expected = File.ReadAllLines(Path.Combine(TestData.ConformanceDir, "SHA256SUMS"))
            .Select(l => l.Split("  ", 2)).Single(p => p[1] == relativePath)[0];
        Assert.Equal(expected, TestData.Sha256(Path.Combine(TestData.ConformanceRoot, relativePath)));
    }

    [Fact]
    public void SharedFolderMatchesWhenPresent()
    {
        // The lead's copy travels beside the repo on developer machines; a fresh clone may not have it.
        string shared = Path.GetFullPath(Path.Combine(AppContext.BaseDirectory, "../../../../../../shared/conformance/tiny-gqa-bf16/model.safetensors"));
        if (!File.Exists(shared)) return;
        Assert.Equal(TestData.Sha256(shared), TestData.Sha256(Path.Combine(TestData.ConformanceBf16, "model.safetensors")));
    }

    [Fact]
    public void AllFoldersOpenWithTheSameShapes()
    {
        foreach (var folder in new[] { TestData.ConformanceBf16, TestData.ConformanceF16Sharded, TestData.ConformanceF32, TestData.ConformanceTiedBf16 })
        {
            using var ckpt = LlamaCheckpoint.Open(folder);
            Assert.Equal(64, ckpt.Config.HiddenSize);
            Assert.Equal(16, ckpt.Config.HeadDim);
            Assert.Equal(2, ckpt.Config.GroupSize);
            Assert.Equal([32000, 64], ckpt.LmHead.Shape);
        }
    }
}
