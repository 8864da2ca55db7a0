#!/usr/bin/env bash
# GPU check of the native CUDA backend (issue 6), end to end in one device call (< 10 minutes on an H100).
#
# .NET on the device: the device machine has the NVIDIA driver (libcuda.so.1) and a CUDA toolkit / pip
# wheels with NVRTC, but no .NET SDK and no network. So the check program is published HERE, self-contained
# for linux-x64 (no runtime needed there, ~29 MB), into the git-ignored folder .device-carry/cuda-check,
# and that folder is carried with the call:
#
#   here:   dotnet publish scripts/cuda-check/CudaCheck.csproj -c Release -o .device-carry/cuda-check
#   device: run(command="bash scripts/gpu-check.sh", carry=[".device-carry/cuda-check"], timeout_s=600)
#
# The kernels are read from this checkout's kernels/ (GPUINTLAB_KERNELS), so editing a .cu file needs no
# republish; C# changes do. What it runs (scripts/cuda-check/Program.cs):
#   1. every kernel against a CPU reference on fresh random data with poisoned outputs
#      (INT8 quantize/GEMV/GEMM and INT64 matmul + Q16.48 rsqrt/silu bit-exact; FP16/FP8 rel L2 <= 1e-5),
#      plus the measured device-to-device copy bandwidth;
#   2. cuda-int64 vs the CPU oracle on the small seeded model: SHA-256 of raw logits must be identical;
#   3. token match vs the oracle (4 gate prompts x 20 greedy tokens) for every backend x scheme;
#   4. a TinyLlama-shaped seeded model (22 layers; 2nd argument of the program): batch-1 decode tok/s,
#      achieved weight GB/s and roofline ratio vs the copy bandwidth.
# Output: the summary table last; full results in $OUT/cuda-check.json, logs in $OUT/gpu-check.log.
set -uo pipefail
cd "$(dirname "$0")/.."
OUT="${OUT:-$PWD/gpu-check-out}"; mkdir -p "$OUT"
BIN=.device-carry/cuda-check/CudaCheck
LAYERS="${GPU_CHECK_LAYERS:-22}"
{
  echo "== device"; nvidia-smi --query-gpu=name,driver_version,memory.total,clocks.sm,clocks.mem --format=csv 2>&1 | head -3
  # NVRTC: the toolkit's, else the pip wheel's (nvidia-cuda-nvrtc), else whatever the loader finds.
  for d in /usr/local/cuda/lib64 /usr/local/cuda/targets/x86_64-linux/lib $(ls -d /opt/torch/.venv/lib/python3*/site-packages/nvidia/cu13/lib /opt/torch/.venv/lib/python3*/site-packages/nvidia/cuda_nvrtc/lib 2>/dev/null); do
    f=$(ls "$d"/libnvrtc.so.* 2>/dev/null | grep -v builtins | head -1)
    if [ -n "$f" ] && [ -z "${GPUINTLAB_NVRTC:-}" ]; then export GPUINTLAB_NVRTC="$f"; export LD_LIBRARY_PATH="$d:${LD_LIBRARY_PATH:-}"; fi
  done
  echo "NVRTC: ${GPUINTLAB_NVRTC:-<loader search>}"
  if command -v nvcc >/dev/null; then
    echo "== nvcc compile check (sm_90, resource usage)"
    for f in fp16 int8 fp8 int64; do nvcc -arch=sm_90 -cubin -Xptxas -v -Ikernels -o "$OUT/$f.cubin" "kernels/$f.cu" 2>&1 | grep -E "error|registers|spill|stack" | head -40; done
    cuobjdump -sass "$OUT/fp16.cubin" 2>/dev/null | grep -c HMMA | sed 's/^/fp16 HMMA count: /'
    cuobjdump -sass "$OUT/int8.cubin" 2>/dev/null | grep -c IMMA | sed 's/^/int8 IMMA count: /'
    rm -f "$OUT"/*.cubin
  fi
  if [ ! -x "$BIN" ]; then echo "missing $BIN: publish it here first (see header) and carry .device-carry/cuda-check"; exit 3; fi
  echo "== check program"
  GPUINTLAB_KERNELS="$PWD/kernels" timeout 540 "$BIN" "$OUT" "$LAYERS"
  echo "exit code: $?"
} 2>&1 | tee "$OUT/gpu-check.log"
