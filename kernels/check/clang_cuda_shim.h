// Syntax-check shim: lets clang (-x cuda --cuda-device-only -nocudainc -nocudalib) parse kernels/*.cu
// without a CUDA toolkit. NVRTC never sees this file: it provides these names itself.
// Only the CUDA built-ins the kernels use are declared, with CUDA's signatures.
#pragma once
#include <__clang_cuda_builtin_vars.h>
typedef __SIZE_TYPE__ size_t;  // NVRTC predefines size_t
#define __device__ __attribute__((device))
#define __global__ __attribute__((global))
#define __shared__ __attribute__((shared))
#define __constant__ __attribute__((constant))
#define __host__ __attribute__((host))
#define __forceinline__ __inline__ __attribute__((always_inline))
#define __launch_bounds__(...) __attribute__((launch_bounds(__VA_ARGS__)))
struct __attribute__((aligned(16))) uint4 { unsigned int x, y, z, w; };
struct __attribute__((aligned(8))) uint2 { unsigned int x, y; };
struct __attribute__((aligned(8))) float2 { float x, y; };
__device__ unsigned long long __umul64hi(unsigned long long, unsigned long long);
__device__ long long __mul64hi(long long, long long);
__device__ float __shfl_xor_sync(unsigned, float, int, int = 32);
__device__ int __shfl_xor_sync(unsigned, int, int, int = 32);
__device__ unsigned __shfl_xor_sync(unsigned, unsigned, int, int = 32);
__device__ long long __shfl_xor_sync(unsigned, long long, int, int = 32);
__device__ unsigned long long __shfl_xor_sync(unsigned, unsigned long long, int, int = 32);
__device__ float __shfl_sync(unsigned, float, int, int = 32);
__device__ int __float2int_rn(float);
__device__ float __fdiv_rn(float, float);
__device__ float __int2float_rn(int);
__device__ float __expf(float);
__device__ float expf(float);
__device__ float rsqrtf(float);
__device__ float sqrtf(float);
__device__ float fabsf(float);
__device__ float fmaxf(float, float);
__device__ float fminf(float, float);
__device__ int __dp4a(int, int, int);
__device__ int __clzll(long long);
__device__ int atomicOr(int*, int);
__device__ int atomicAdd(int*, int);
__device__ float __ldg(const float*);
__device__ uint4 __ldg(const uint4*);
__device__ void __threadfence();
