#!/usr/bin/env bash
# Syntax/semantic check of kernels/*.cu without a CUDA toolkit: clang's CUDA front end and NVPTX backend
# (-nocudainc -nocudalib, CUDA built-ins declared by kernels/check/clang_cuda_shim.h) compile each file to
# PTX. Checks C++ and CUDA device rules and the 128-bit integer code; it does NOT assemble the inline PTX
# (mma.sync, cvt ... e4m3): only ptxas/NVRTC on a CUDA machine does (scripts/gpu-check.sh).
# clang 14 knows archs up to sm_86, so fp8.cu is parsed for sm_86 with __CUDA_ARCH__ forced to 890.
set -euo pipefail
cd "$(dirname "$0")/.."
CLANG=${CLANG:-$(command -v clang++-14 || command -v clang++)}
out=$(mktemp -d)
common=(-x cuda --cuda-device-only -nocudainc -nocudalib -include kernels/check/clang_cuda_shim.h -Ikernels -S)
for f in fp16 int8 int64; do "$CLANG" "${common[@]}" --cuda-gpu-arch=sm_80 -o "$out/$f.ptx" "kernels/$f.cu"; echo "ok   $f.cu (sm_80): $(grep -c '^.visible .entry' "$out/$f.ptx") kernels"; done
"$CLANG" "${common[@]}" --cuda-gpu-arch=sm_86 -Wno-builtin-macro-redefined -U__CUDA_ARCH__ -D__CUDA_ARCH__=890 -o "$out/fp8.ptx" kernels/fp8.cu
echo "ok   fp8.cu (sm_86 parse, __CUDA_ARCH__=890): $(grep -c '^.visible .entry' "$out/fp8.ptx") kernels"
${CXX:-g++} -O2 -shared -fPIC -o "$out/libq48.so" kernels/check/q48_host_harness.cpp && echo "ok   q48_math.cuh as host C++ (kernels/check/q48_host_harness.cpp)"
rm -rf "$out"
