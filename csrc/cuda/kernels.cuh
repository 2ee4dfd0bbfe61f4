// Small elementwise and per-matrix kernels shared by the operations, with their launchers. The
// heavy lifting is cuBLAS/cuSOLVER; these move, scale, check and count.
#pragma once

#include "cuda/context.hpp"

#include <cuda_runtime.h>

#include <cstddef>
#include <cstdint>

namespace vsfast::cuda {

constexpr int kThreads = 256;

inline unsigned blocks_for(std::size_t count) {
  const std::size_t blocks = (count + kThreads - 1) / kThreads;
  return static_cast<unsigned>(blocks < 65535 * 16 ? (blocks ? blocks : 1) : 65535 * 16);
}

inline void check_launch(const char* kernel) { check(cudaGetLastError(), kernel); }

// --- elementwise ---------------------------------------------------------------------------------

// dst_b (cols x rows) = src_b^T for the column-major rows x cols src_b (leading dimension ld).
template <class T>
__global__ void transpose_kernel(const T* src, std::size_t rows, std::size_t cols, std::size_t ld,
                                 std::size_t src_stride, T* dst, std::size_t dst_stride, std::size_t batch) {
  const std::size_t total = rows * cols * batch;
  for (std::size_t i = blockIdx.x * std::size_t(blockDim.x) + threadIdx.x; i < total;
       i += std::size_t(gridDim.x) * blockDim.x) {
    const std::size_t b = i / (rows * cols), rest = i % (rows * cols);
    const std::size_t c = rest / rows, r = rest % rows;  // consecutive threads read consecutive rows
    dst[b * dst_stride + r * cols + c] = src[b * src_stride + c * ld + r];
  }
}
template <class T>
void transpose(const T* src, std::size_t rows, std::size_t cols, std::size_t ld, std::size_t src_stride, T* dst,
               std::size_t dst_stride, std::size_t batch, cudaStream_t stream) {
  transpose_kernel<<<blocks_for(rows * cols * batch), kThreads, 0, stream>>>(src, rows, cols, ld, src_stride, dst,
                                                                             dst_stride, batch);
  check_launch("transpose_kernel");
}

// out = a - b, elementwise.
template <class T>
__global__ void subtract_kernel(const T* a, const T* b, T* out, std::size_t count) {
  for (std::size_t i = blockIdx.x * std::size_t(blockDim.x) + threadIdx.x; i < count;
       i += std::size_t(gridDim.x) * blockDim.x)
    out[i] = a[i] - b[i];
}
template <class T>
void subtract(const T* a, const T* b, T* out, std::size_t count, cudaStream_t stream) {
  subtract_kernel<<<blocks_for(count), kThreads, 0, stream>>>(a, b, out, count);
  check_launch("subtract_kernel");
}

// x (rows x n, row-major) += r, where r has one row for all (r_rows == 1) or one per row of x.
template <class T>
__global__ void add_rows_kernel(T* x, std::size_t rows, std::size_t n, const T* r, std::size_t r_rows) {
  for (std::size_t i = blockIdx.x * std::size_t(blockDim.x) + threadIdx.x; i < rows * n;
       i += std::size_t(gridDim.x) * blockDim.x)
    x[i] += r[(r_rows == 1 ? 0 : i / n) * n + i % n];
}
template <class T>
void add_rows(T* x, std::size_t rows, std::size_t n, const T* r, std::size_t r_rows, cudaStream_t stream) {
  add_rows_kernel<<<blocks_for(rows * n), kThreads, 0, stream>>>(x, rows, n, r, r_rows);
  check_launch("add_rows_kernel");
}

// Identity n x n matrices, column-major, batch of them.
template <class T>
__global__ void identity_kernel(T* a, std::size_t n, std::size_t batch) {
  for (std::size_t i = blockIdx.x * std::size_t(blockDim.x) + threadIdx.x; i < n * n * batch;
       i += std::size_t(gridDim.x) * blockDim.x) {
    const std::size_t rest = i % (n * n);
    a[i] = rest / n == rest % n ? T(1) : T(0);
  }
}
template <class T>
void set_identity(T* a, std::size_t n, std::size_t batch, cudaStream_t stream) {
  identity_kernel<<<blocks_for(n * n * batch), kThreads, 0, stream>>>(a, n, batch);
  check_launch("identity_kernel");
}

// ptrs[b] = base + b * stride: the pointer arrays cuBLAS/cuSOLVER batched routines take.
template <class T>
__global__ void pointer_array_kernel(T* base, std::size_t stride, T** ptrs, std::size_t batch) {
  for (std::size_t b = blockIdx.x * std::size_t(blockDim.x) + threadIdx.x; b < batch;
       b += std::size_t(gridDim.x) * blockDim.x)
    ptrs[b] = base + b * stride;
}
template <class T>
void pointer_array(T* base, std::size_t stride, T** ptrs, std::size_t batch, cudaStream_t stream) {
  pointer_array_kernel<<<blocks_for(batch), kThreads, 0, stream>>>(base, stride, ptrs, batch);
  check_launch("pointer_array_kernel");
}

// --- the Gaussian sketch -----------------------------------------------------------------------------

// The counter-based generator of csrc/vsfast/random.hpp: entry i depends on (seed, i) only, so a
// sketch is the same on every run and launch configuration.
__host__ __device__ inline std::uint64_t splitmix64(std::uint64_t x) {
  x += 0x9e3779b97f4a7c15ULL;
  x = (x ^ (x >> 30)) * 0xbf58476d1ce4e5b9ULL;
  x = (x ^ (x >> 27)) * 0x94d049bb133111ebULL;
  return x ^ (x >> 31);
}

template <class T>
__global__ void gaussian_kernel(T* out, std::size_t count, std::uint64_t key) {
  const double two_pi = 6.283185307179586476925286766559, inv_2_32 = 1.0 / 4294967296.0;
  for (std::size_t pair = blockIdx.x * std::size_t(blockDim.x) + threadIdx.x; 2 * pair < count;
       pair += std::size_t(gridDim.x) * blockDim.x) {
    const std::size_t i = 2 * pair;
    const std::uint64_t bits = splitmix64(key + 0x9e3779b97f4a7c15ULL * i);
    const double u1 = (static_cast<double>(bits >> 32) + 0.5) * inv_2_32;
    const double u2 = (static_cast<double>(bits & 0xffffffffULL) + 0.5) * inv_2_32;
    const double radius = sqrt(-2.0 * log(u1));
    double s, c;
    sincos(two_pi * u2, &s, &c);
    out[i] = static_cast<T>(radius * c);
    if (i + 1 < count) out[i + 1] = static_cast<T>(radius * s);
  }
}
template <class T>
void fill_gaussian(T* out, std::size_t count, std::uint64_t seed, cudaStream_t stream) {
  gaussian_kernel<<<blocks_for((count + 1) / 2), kThreads, 0, stream>>>(out, count, splitmix64(seed));
  check_launch("gaussian_kernel");
}

// --- checks ----------------------------------------------------------------------------------------

// flag = 1 if any of the count values is NaN or infinite (flag zeroed by the launcher).
template <class T>
__global__ void nonfinite_kernel(const T* x, std::size_t count, int* flag) {
  bool bad = false;
  for (std::size_t i = blockIdx.x * std::size_t(blockDim.x) + threadIdx.x; i < count;
       i += std::size_t(gridDim.x) * blockDim.x)
    bad |= !isfinite(x[i]);
  if (__syncthreads_or(bad) && threadIdx.x == 0) *flag = 1;
}

// Throws std::invalid_argument naming `name` when x holds NaN or inf, as the CPU core does; waits
// for the stream. `flag` is one int of device workspace.
template <class T>
void require_finite(const T* x, std::size_t count, int* flag, const char* name, cudaStream_t stream) {
  VSFAST_CHECK(cudaMemsetAsync(flag, 0, sizeof(int), stream));
  nonfinite_kernel<<<blocks_for(count), kThreads, 0, stream>>>(x, count, flag);
  check_launch("nonfinite_kernel");
  if (fetch_ints(flag, 1, stream)[0])
    throw std::invalid_argument(std::string(name) + ": expected finite values, found NaN or inf");
}

// defect[b] = || g_b - I ||_F for the n x n matrices g_b: how far a basis is from orthonormal.
template <class T>
__global__ void identity_defect_kernel(const T* g, std::size_t n, double* defect) {
  const T* gb = g + blockIdx.x * n * n;
  double sum = 0;
  for (std::size_t i = threadIdx.x; i < n * n; i += blockDim.x) {
    const double d = static_cast<double>(gb[i]) - (i / n == i % n ? 1.0 : 0.0);
    sum += d * d;
  }
  __shared__ double partial[kThreads];
  partial[threadIdx.x] = sum;
  __syncthreads();
  for (unsigned s = blockDim.x / 2; s > 0; s /= 2) {
    if (threadIdx.x < s) partial[threadIdx.x] += partial[threadIdx.x + s];
    __syncthreads();
  }
  if (threadIdx.x == 0) defect[blockIdx.x] = sqrt(partial[0]);
}
template <class T>
void identity_defect(const T* g, std::size_t n, double* defect, std::size_t batch, cudaStream_t stream) {
  identity_defect_kernel<<<static_cast<unsigned>(batch), kThreads, 0, stream>>>(g, n, defect);
  check_launch("identity_defect_kernel");
}

}  // namespace vsfast::cuda
