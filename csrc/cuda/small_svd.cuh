// SVDs of many tall matrices: gesvdjBatched when they fit its 32 x 32 limit, otherwise one
// Jacobi SVD (gesvdj) per matrix, spread over a few streams so that the small ones overlap.
//
// Jacobi rather than QR iteration: it is accurate to working precision in the singular values and
// vectors (no squaring of the condition number, as gesvdaStridedBatched's Gram matrix would), it
// runs entirely on the device, and for the (k + p)-column matrices of the randomized SVD a few
// sweeps converge.
#pragma once

#include "cuda/kernels.cuh"
#include "cuda/library.hpp"

#include <algorithm>
#include <string>
#include <vector>

namespace vsfast::cuda {

constexpr int kBatchedJacobiLimit = 32;

// Sum over the block, returned to every thread (kThreads threads, `scratch` kThreads doubles).
__device__ inline double block_sum(double value, double* scratch) {
  scratch[threadIdx.x] = value;
  __syncthreads();
  for (unsigned s = blockDim.x / 2; s > 0; s /= 2) {
    if (threadIdx.x < s) scratch[threadIdx.x] += scratch[threadIdx.x + s];
    __syncthreads();
  }
  const double total = scratch[0];
  __syncthreads();
  return total;
}

// Left singular vectors of (numerically) zero singular values: a one-sided Jacobi SVD forms U's
// columns as A v_j / s_j, which is no direction at all when s_j is at the rounding level. Such
// columns (s_j <= rel_tol * s_0, s sorted descending) are replaced, as LAPACK's gesdd does, by an
// orthonormal completion of the columns before them: canonical vectors orthogonalised twice
// (classical Gram-Schmidt with reorthogonalisation), the first whose remainder keeps at least
// 1/(2 rows) of its squared length. That changes A's reconstruction by at most s_j. One block per
// matrix; nothing to do (one comparison) for full-rank matrices.
template <class T>
__global__ void complete_null_columns_kernel(T* u, std::size_t rows, std::size_t q, std::size_t u_stride, const T* s,
                                             std::size_t s_stride, double rel_tol) {
  __shared__ double scratch[kThreads];
  T* ub = u + blockIdx.x * u_stride;
  const T* sb = s + blockIdx.x * s_stride;
  const double tau = rel_tol * static_cast<double>(sb[0]);
  std::size_t first = 0;
  while (first < q && static_cast<double>(sb[first]) > tau) ++first;
  std::size_t candidate = 0;
  for (std::size_t j = first; j < q; ++j) {
    T* col = ub + j * rows;
    for (; candidate < rows; ++candidate) {
      for (std::size_t i = threadIdx.x; i < rows; i += blockDim.x) col[i] = i == candidate ? T(1) : T(0);
      __syncthreads();
      for (int pass = 0; pass < 2; ++pass)
        for (std::size_t c = 0; c < j; ++c) {
          const T* other = ub + c * rows;
          double dot = 0;
          for (std::size_t i = threadIdx.x; i < rows; i += blockDim.x) dot += double(other[i]) * double(col[i]);
          dot = block_sum(dot, scratch);
          for (std::size_t i = threadIdx.x; i < rows; i += blockDim.x) col[i] -= T(dot) * other[i];
          __syncthreads();
        }
      double norm2 = 0;
      for (std::size_t i = threadIdx.x; i < rows; i += blockDim.x) norm2 += double(col[i]) * double(col[i]);
      norm2 = block_sum(norm2, scratch);
      if (norm2 * 2.0 * double(rows) > 1.0) {
        const T scale = T(1.0 / sqrt(norm2));
        for (std::size_t i = threadIdx.x; i < rows; i += blockDim.x) col[i] *= scale;
        __syncthreads();
        break;
      }
    }
    ++candidate;
  }
}

template <class T>
struct TallSvdWork {
  int rows = 0, cols = 0, batch = 0;
  bool batched = false;  // gesvdjBatched
  int lwork = 0;         // per lane, or for the whole batch
  T* work = nullptr;
  int* info = nullptr;
  std::size_t u_stride = 0;  // rows x cols (econ) or rows x rows (gesvdjBatched)

  static TallSvdWork layout(Arena& arena, Context& ctx, int rows, int cols, int batch) {
    TallSvdWork w;
    w.rows = rows;
    w.cols = cols;
    w.batch = batch;
    w.batched = rows <= kBatchedJacobiLimit && batch > 1;
    const std::size_t copies = w.batched ? 1 : lanes_for(batch);
    w.lwork = w.batched ? gesvdj_batched_lwork(ctx.solver, rows, cols, ctx.jacobi, batch, static_cast<T*>(nullptr))
                        : gesvdj_lwork(ctx.solver, rows, cols, ctx.jacobi, static_cast<T*>(nullptr));
    w.work = arena.take<T>(copies * static_cast<std::size_t>(std::max(w.lwork, 1)));
    w.info = arena.take<int>(batch);
    w.u_stride = static_cast<std::size_t>(rows) * (w.batched ? rows : cols);
    return w;
  }
};

// a (batch x rows x cols, column-major, rows >= cols; destroyed) = u diag(s) v^T, with u in
// batch x u_stride (first cols columns), s in batch x cols and v in batch x cols x cols.
// Throws LinAlgError if a Jacobi SVD does not converge.
template <class T>
void tall_svd(const Bound& bd, T* a, T* s, T* u, T* v, TallSvdWork<T>& w) {
  const std::size_t size = static_cast<std::size_t>(w.rows) * w.cols, vsize = static_cast<std::size_t>(w.cols) * w.cols;
  if (w.batched) {
    gesvdj_batched(bd.ctx.solver, w.rows, w.cols, a, s, u, v, w.work, w.lwork, w.info, bd.ctx.jacobi, w.batch);
  } else {
    fan_out(bd.ctx, bd.stream, w.batch, [&](std::size_t b, const Lane& lane, std::size_t lane_index) {
      gesvdj(lane.solver, w.rows, w.cols, a + b * size, s + b * w.cols, u + b * w.u_stride, v + b * vsize,
             w.work + lane_index * static_cast<std::size_t>(std::max(w.lwork, 1)), w.lwork, w.info + b, lane.jacobi);
    });
  }
  // Columns of u for singular values at the rounding level of s_0 get an orthonormal completion.
  const double eps = sizeof(T) == 4 ? 1.1920928955078125e-07 : 2.220446049250313e-16;
  complete_null_columns_kernel<<<static_cast<unsigned>(w.batch), kThreads, 0, bd.stream>>>(
      u, static_cast<std::size_t>(w.rows), static_cast<std::size_t>(w.cols), w.u_stride, s,
      static_cast<std::size_t>(w.cols), static_cast<double>(w.rows) * eps);
  check_launch("complete_null_columns_kernel");
  const std::vector<int> info = fetch_ints(w.info, w.batch, bd.stream);
  for (int b = 0; b < w.batch; ++b)
    if (info[b] != 0)
      throw LinAlgError("gesvdj did not converge for matrix " + std::to_string(b) + " (info = " +
                        std::to_string(info[b]) + ")");
}

}  // namespace vsfast::cuda
