#!/usr/bin/env bash
# GPU check of the native CUDA and ILGPU-on-CUDA backends, end to end in one device call.
#
# The GPU machine has the NVIDIA driver and NVRTC (CUDA toolkit or pip wheels) but no .NET SDK and no
# network, so the check program is published HERE, self-contained for linux-x64, into the git-ignored folder
# .device-carry/cuda-check, which travels with the call:
#
#   here, once per C# change:   bash scripts/gpu-check.sh --prepare
#       (prints the published size against the 64 MiB limit on carried paths; kernels/*.cu are read from
#        the checkout on the GPU machine, so a .cu edit needs no republish)
#   first GPU call (machine start ~1-2 min + at most 7 min, leaving a rerun inside 15 min of device time):
#       run(command="bash scripts/gpu-check.sh", carry=[".device-carry/cuda-check"], timeout_s=420)
#   smaller rerun, at once while the machine is warm (kernel checks, int64 hash, token match, a 4-layer
#   speed run; no runner step), if the first run failed or ran long:
#       run(command="GPU_CHECK_LAYERS=4 GPU_CHECK_STEPS=1,2,4 GPU_CHECK_TIMEOUT=220 bash scripts/gpu-check.sh",
#           carry=[".device-carry/cuda-check"], timeout_s=240)
#   then give_back. Untracked paths that must travel: only .device-carry/cuda-check (the carry above);
#   tracked files (kernels/, experiments/gpu-check.json, experiments/models/tinystories-512) come with the
#   checkout.
#
# Dry run without a GPU (checks the plumbing, not the numbers): build the stub driver and point at it,
#   gcc -O1 -shared -fPIC -o /tmp/stub/libcuda.so.1 tests/GpuIntLab.Tests/Cuda/StubDriver/stub_libcuda.c
#   GPUINTLAB_CUDA_DRIVER=/tmp/stub/libcuda.so.1 GPUINTLAB_NVRTC=$(scripts/fetch-nvrtc.sh) \
#     GPU_CHECK_LAYERS=2 bash scripts/gpu-check.sh
#   (expect RESULT: FAIL, since no kernel runs, but no exception, every step reached, and a JSON file).
#
# What it runs (scripts/cuda-check/Program.cs; each step guarded, an error recorded and the next step run):
#   1. every module's kind (CUBIN/PTX) and ptxas report; every kernel against a CPU reference on fresh random
#      data with poisoned outputs; device-to-device copy bandwidth;
#   2. cuda-int64 vs the CPU oracle on the small seeded model (SHA-256 of raw logits) and token match of
#      every native backend x scheme;
#   3. the experiment runner on experiments/gpu-check.json: every cuda-* and ilgpu-* backend on the CUDA
#      device, results as the runner's JSON lines in $OUT/runs/ (copy them to results/runs/ here);
#   4. a TinyLlama-shaped seeded model (22 layers; GPU_CHECK_LAYERS): batch-1 decode tok/s, weight GB/s and
#      the roofline ratio against the measured copy bandwidth;
#   5. (runs right after 2) the families tiny-llama3 / tiny-qwen2 / tiny-qwen3 rebuilt from their seeds: cuda-int64
#      vs the oracle hash over a prefill and decodes that cross the KV caches' first growth, float top-1 agreement.
# Output: $OUT/gpu-check.log (streamed, so it comes back even if the call is killed; summary lines appear as
# they happen, the summary table and RESULT at the end), $OUT/cuda-check.json, $OUT/runs/*.jsonl.
# Exit status: the checker's (0 PASS, 1 FAIL, 2 no CUDA), 3 when the published checker is missing.
set -uo pipefail
cd "$(dirname "$0")/.."
CARRY=.device-carry/cuda-check
BIN=$CARRY/CudaCheck

if [ "${1:-}" = "--prepare" ]; then
  rm -rf "$CARRY"
  dotnet publish scripts/cuda-check/CudaCheck.csproj -c Release -r linux-x64 --self-contained -o "$CARRY" -v q -nologo || exit 1
  rm -f "$CARRY"/*.pdb "$CARRY"/*.dbg
  carried=$(du -sb "$CARRY" | cut -f1)
  tracked=$(git archive HEAD | wc -c)
  untracked=$(git ls-files --others --exclude-standard -z | xargs -0 -r du -cb 2>/dev/null | tail -n1 | cut -f1)
  total=$((carried + tracked + ${untracked:-0}))
  limit=$((64 * 1024 * 1024))
  printf 'published %s: %.1f MiB; tracked tree %.1f MiB; untracked, not ignored %.1f MiB; total %.1f MiB of %.0f MiB\n' \
    "$CARRY" "$(echo "$carried / 1048576" | bc -l)" "$(echo "$tracked / 1048576" | bc -l)" "$(echo "${untracked:-0} / 1048576" | bc -l)" \
    "$(echo "$total / 1048576" | bc -l)" "$(echo "$limit / 1048576" | bc -l)"
  if [ "$total" -gt "$limit" ]; then echo "too large for the device transfer: trim the publish (see CudaCheck.csproj)"; exit 1; fi
  echo 'device call: run(command="bash scripts/gpu-check.sh", carry=[".device-carry/cuda-check"], timeout_s=420)'
  exit 0
fi

OUT="${OUT:-$PWD/gpu-check-out}"; mkdir -p "$OUT"
LAYERS="${GPU_CHECK_LAYERS:-22}"
STEPS="${GPU_CHECK_STEPS:-1,2,3,4,5}"
# The checker's own limit stays under the call's, so its summary, RESULT and JSON are written before a kill.
CHECK_TIMEOUT="${GPU_CHECK_TIMEOUT:-390}"
{
  echo "== device"; nvidia-smi --query-gpu=name,driver_version,memory.total,clocks.sm,clocks.mem --format=csv 2>&1 | head -3
  # NVRTC: the toolkit's, else the pip wheel's (nvidia-cuda-nvrtc), else whatever the loader finds.
  for d in /usr/local/cuda/lib64 /usr/local/cuda/targets/x86_64-linux/lib $(ls -d /opt/torch/.venv/lib/python3*/site-packages/nvidia/cu13/lib /opt/torch/.venv/lib/python3*/site-packages/nvidia/cuda_nvrtc/lib 2>/dev/null); do
    f=$(ls "$d"/libnvrtc.so.* 2>/dev/null | grep -v builtins | head -1)
    if [ -n "$f" ] && [ -z "${GPUINTLAB_NVRTC:-}" ]; then export GPUINTLAB_NVRTC="$f"; export LD_LIBRARY_PATH="$d:${LD_LIBRARY_PATH:-}"; fi
  done
  echo "NVRTC: ${GPUINTLAB_NVRTC:-<loader search>}"
  chmod +x "$BIN" 2>/dev/null   # the transfer may not keep the exec bit
  if [ ! -x "$BIN" ]; then echo "missing $BIN: run 'bash scripts/gpu-check.sh --prepare' here first and carry $CARRY"; exit 3; fi
  echo "== check program (layers $LAYERS, steps $STEPS, limit ${CHECK_TIMEOUT}s)"
  GPUINTLAB_KERNELS="$PWD/kernels" timeout "$CHECK_TIMEOUT" "$BIN" "$OUT" "$LAYERS" experiments/gpu-check.json "$STEPS"
  rc=$?
  echo "exit code: $rc"
  exit $rc
} 2>&1 | tee "$OUT/gpu-check.log"
exit "${PIPESTATUS[0]}"
