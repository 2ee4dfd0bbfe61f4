// Small elementwise and per-matrix kernels shared by the operations, with their launchers. The
// heavy lifting is cuBLAS/cuSOLVER; these move, scale, check and count.
#pragma once

#include "cuda/context.hpp"
#include "vsfast/common.hpp"
#include "vsfast/random.hpp"

#include <cuda_runtime.h>

#include <algorithm>
#include <cmath>
#include <cstddef>
#include <cstdint>
#include <limits>
#include <stdexcept>
#include <string>
#include <vector>

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

// The counter-based generator of csrc/vsfast/random.hpp (gaussian_pair): entry i depends on
// (seed, i) only, so a sketch is the same on every run and launch configuration.
template <class T>
__global__ void gaussian_kernel(T* out, std::size_t count, std::uint64_t key) {
  for (std::size_t pair = blockIdx.x * std::size_t(blockDim.x) + threadIdx.x; 2 * pair < count;
       pair += std::size_t(gridDim.x) * blockDim.x) {
    const std::size_t i = 2 * pair;
    double first, second;
    gaussian_pair(key, i, first, second);
    out[i] = static_cast<T>(first);
    if (i + 1 < count) out[i + 1] = static_cast<T>(second);
  }
}
template <class T>
void fill_gaussian(T* out, std::size_t count, std::uint64_t seed, cudaStream_t stream) {
  gaussian_kernel<<<blocks_for((count + 1) / 2), kThreads, 0, stream>>>(out, count, splitmix64(seed));
  check_launch("gaussian_kernel");
}

// --- checks ----------------------------------------------------------------------------------------

// The largest of v over the block (kThreads threads), valid in thread 0.
__device__ inline unsigned long long block_max(unsigned long long v) {
  __shared__ unsigned long long warp_max[kThreads / 32];
  for (int offset = 16; offset > 0; offset /= 2) {
    const unsigned long long other = __shfl_down_sync(0xffffffffu, v, offset);
    v = other > v ? other : v;
  }
  if (threadIdx.x % 32 == 0) warp_max[threadIdx.x / 32] = v;
  __syncthreads();
  if (threadIdx.x < 32) {
    v = threadIdx.x < kThreads / 32 ? warp_max[threadIdx.x] : 0;
    for (int offset = 16; offset > 0; offset /= 2) {
      const unsigned long long other = __shfl_down_sync(0xffffffffu, v, offset);
      v = other > v ? other : v;
    }
  }
  __syncthreads();  // warp_max is reused by the caller's next round
  return v;
}

// slots[b] = the largest |x| of matrix b (batch matrices of `size` values, `stride` apart) as the
// bits of a double, +inf where one is NaN or infinite: non-negative doubles order as their bits,
// so one atomicMax per block merges the blocks that share a matrix. Slots zeroed by the launcher.
template <class T>
__global__ void magnitude_kernel(const T* x, std::size_t size, std::size_t stride, std::size_t batch,
                                 std::size_t blocks_per_matrix, unsigned long long* slots) {
  for (std::size_t block = blockIdx.x; block < batch * blocks_per_matrix; block += gridDim.x) {
    const std::size_t b = block / blocks_per_matrix, chunk = block % blocks_per_matrix;
    const T* xb = x + b * stride;
    unsigned long long largest = 0;
    for (std::size_t i = chunk * kThreads + threadIdx.x; i < size; i += blocks_per_matrix * kThreads) {
      const double a = fabs(static_cast<double>(xb[i]));
      const unsigned long long bits = static_cast<unsigned long long>(__double_as_longlong(isfinite(a) ? a : HUGE_VAL));
      largest = bits > largest ? bits : largest;
    }
    largest = block_max(largest);
    if (threadIdx.x == 0 && largest) atomicMax(slots + b, largest);
  }
}
template <class T>
void measure_magnitudes(const T* x, std::size_t size, std::size_t stride, std::size_t batch,
                        unsigned long long* slots, cudaStream_t stream) {
  VSFAST_CHECK(cudaMemsetAsync(slots, 0, batch * sizeof(unsigned long long), stream));
  const std::size_t per_matrix = std::min<std::size_t>((size + 8 * kThreads - 1) / (8 * kThreads), 1024);
  const std::size_t blocks = std::max<std::size_t>(std::min<std::size_t>(batch * per_matrix, 65535 * 16), 1);
  magnitude_kernel<<<static_cast<unsigned>(blocks), kThreads, 0, stream>>>(x, size, stride, batch,
                                                                           std::max<std::size_t>(per_matrix, 1), slots);
  check_launch("magnitude_kernel");
}

// Throws std::invalid_argument naming `name`, as the CPU core does, when a measured magnitude is
// that of NaN or inf.
inline void require_finite(double largest, const char* name) {
  if (std::isinf(largest)) throw std::invalid_argument(finite_message(name));
}

// The largest magnitude of each of `batch` matrices of `size` values, refusing NaN and inf as
// require_finite does; waits for the stream. `slots` is batch values of device workspace.
template <class T>
std::vector<double> require_finite_matrices(const T* x, std::size_t batch, std::size_t size,
                                            unsigned long long* slots, const char* name, cudaStream_t stream) {
  measure_magnitudes(x, size, size, batch, slots, stream);
  std::vector<double> largest = fetch_magnitudes(slots, batch, stream);
  for (double v : largest) require_finite(v, name);
  return largest;
}

// Throws the CPU core's std::overflow_error when `what` (measured as `largest`, scaled by 2^exponent)
// exceeds the dtype.
template <class T>
void require_representable(double largest, const std::string& what, int exponent = 0) {
  if (!(std::ldexp(largest, exponent) <= static_cast<double>(std::numeric_limits<T>::max())))
    throw std::overflow_error(overflow_message<T>(what));
}

// dst_b = src_b * 2^(sign * e_b) for `batch` matrices of `size` values (exact unless it over- or
// underflows); dst may be src.
template <class T>
__global__ void ldexp_kernel(const T* src, std::size_t src_stride, T* dst, std::size_t dst_stride, std::size_t size,
                             std::size_t batch, const int* exponents, int sign) {
  for (std::size_t i = blockIdx.x * std::size_t(blockDim.x) + threadIdx.x; i < size * batch;
       i += std::size_t(gridDim.x) * blockDim.x) {
    const std::size_t b = i / size, j = i % size;
    dst[b * dst_stride + j] = static_cast<T>(ldexp(src[b * src_stride + j], sign * exponents[b]));
  }
}
template <class T>
void scale_by_powers_of_two(const T* src, std::size_t src_stride, T* dst, std::size_t dst_stride, std::size_t size,
                            std::size_t batch, const int* exponents, int sign, cudaStream_t stream) {
  ldexp_kernel<<<blocks_for(size * batch), kThreads, 0, stream>>>(src, src_stride, dst, dst_stride, size, batch,
                                                                   exponents, sign);
  check_launch("ldexp_kernel");
}

// Per-matrix power-of-two exponents that bring each matrix's largest magnitude near 1 where it
// lies outside the safe range (vsfast::rescaling_exponent, as on the CPU), with their copy on the
// device; that copy is null when every exponent is 0, the usual case, which then costs nothing.
struct Scaling {
  std::vector<int> exponents;
  const int* device = nullptr;
};
template <class T>
Scaling plan_scaling(const std::vector<double>& largest, int* device, cudaStream_t stream) {
  Scaling sc;
  for (double v : largest) sc.exponents.push_back(rescaling_exponent<T>(v));
  if (std::any_of(sc.exponents.begin(), sc.exponents.end(), [](int e) { return e != 0; })) {
    VSFAST_CHECK(cudaMemcpyAsync(device, sc.exponents.data(), sc.exponents.size() * sizeof(int),
                                 cudaMemcpyHostToDevice, stream));
    sc.device = device;
  }
  return sc;
}

// Throws the CPU core's OverflowError where a matrix's largest singular value, `top` as computed
// on its rescaled copy, exceeds the dtype once scaled back.
template <class T>
void require_singular_values_fit(const std::vector<double>& top, const Scaling& sc) {
  for (std::size_t b = 0; b < top.size(); ++b)
    require_representable<T>(top[b], "A's largest singular value", sc.exponents[b]);
}

// The leading `width` values of each of `batch` blocks `src_stride` apart, packed into dst: one
// copy when they are contiguous, else a kernel (cudaMemcpy2D refuses pitches beyond memPitch).
template <class T>
__global__ void gather_prefixes_kernel(const T* src, std::size_t src_stride, T* dst, std::size_t width,
                                       std::size_t batch) {
  for (std::size_t i = blockIdx.x * std::size_t(blockDim.x) + threadIdx.x; i < width * batch;
       i += std::size_t(gridDim.x) * blockDim.x)
    dst[i] = src[(i / width) * src_stride + i % width];
}
template <class T>
void gather_prefixes(const T* src, std::size_t src_stride, T* dst, std::size_t width, std::size_t batch,
                     cudaStream_t stream) {
  if (batch == 1 || src_stride == width) {
    VSFAST_CHECK(cudaMemcpyAsync(dst, src, batch * width * sizeof(T), cudaMemcpyDeviceToDevice, stream));
    return;
  }
  gather_prefixes_kernel<<<blocks_for(width * batch), kThreads, 0, stream>>>(src, src_stride, dst, width, batch);
  check_launch("gather_prefixes_kernel");
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
