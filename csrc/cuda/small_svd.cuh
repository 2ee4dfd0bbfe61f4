// SVDs of many tall matrices: gesvdjBatched when they fit its 32 x 32 limit, otherwise one
// Jacobi SVD (gesvdj) per matrix, spread over a few streams so that the small ones overlap; QR
// iteration (gesvd) for any matrix on which Jacobi does not converge. The CPU twin, for the
// randomized SVD's projected matrix, is csrc/vsfast/small_svd.hpp.
//
// Jacobi rather than QR iteration: it is accurate to working precision in the singular values and
// vectors (no squaring of the condition number, as gesvdaStridedBatched's Gram matrix would), it
// runs entirely on the device, and for the (k + p)-column matrices of the randomized SVD a few
// sweeps converge.
#pragma once

#include "cuda/kernels.cuh"
#include "cuda/library.hpp"

#include <algorithm>
#include <functional>
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
  // The QR-iteration fallback, one matrix at a time on the caller's stream.
  int qr_lwork = 0;
  T* qr_work = nullptr;
  T* rwork = nullptr;  // cols
  T* vt = nullptr;     // cols x cols: gesvd's V^T
  int* qr_info = nullptr;

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
    w.qr_lwork = gesvd_lwork(ctx.solver, rows, cols, static_cast<T*>(nullptr));
    w.qr_work = arena.take<T>(static_cast<std::size_t>(std::max(w.qr_lwork, 1)));
    w.rwork = arena.take<T>(cols);
    w.vt = arena.take<T>(static_cast<std::size_t>(cols) * cols);
    w.qr_info = arena.take<int>(1);
    return w;
  }
};

// Rewrites matrix b of tall_svd's input, which the Jacobi SVD destroyed, for the fallback: the
// callers still hold what it was made from, so no copy of every input is kept for a rare path.
using RestoreInput = std::function<void(std::size_t b)>;

// Matrix b again by QR iteration (gesvd), whose V^T goes transposed into v's slot. Returns its
// largest singular value; throws LinAlgError if gesvd does not converge either.
template <class T>
T qr_fallback(const Bound& bd, T* a, T* s, T* u, T* v, TallSvdWork<T>& w, const RestoreInput& restore,
              std::size_t b) {
  const std::size_t size = static_cast<std::size_t>(w.rows) * w.cols, vsize = static_cast<std::size_t>(w.cols) * w.cols;
  restore(b);
  gesvd(bd.ctx.solver, w.rows, w.cols, a + b * size, s + b * w.cols, u + b * w.u_stride, w.vt, w.qr_work, w.qr_lwork,
        w.rwork, w.qr_info);
  transpose(w.vt, static_cast<std::size_t>(w.cols), static_cast<std::size_t>(w.cols), static_cast<std::size_t>(w.cols),
            vsize, v + b * vsize, vsize, 1, bd.stream);
  T top;
  VSFAST_CHECK(cudaMemcpyAsync(&top, s + b * w.cols, sizeof(T), cudaMemcpyDeviceToHost, bd.stream));
  const int info = fetch_ints(w.qr_info, 1, bd.stream)[0];
  if (info != 0)
    throw LinAlgError("the SVD of matrix " + std::to_string(b) + " did not converge, by Jacobi rotations nor by QR " +
                      "iteration (gesvd info = " + std::to_string(info) + ")");
  return top;
}

// a (batch x rows x cols, column-major, rows >= cols; destroyed) = u diag(s) v^T, with u in
// batch x u_stride (first cols columns), s in batch x cols and v in batch x cols x cols.
// A matrix whose Jacobi SVD does not converge (known to happen on large or ill-conditioned ones)
// is redone by QR iteration; LinAlgError only if that fails too. Returns the largest singular
// value of every matrix, read at the same wait as the convergence flags.
template <class T>
std::vector<double> tall_svd(const Bound& bd, T* a, T* s, T* u, T* v, TallSvdWork<T>& w,
                             const RestoreInput& restore) {
  const std::size_t size = static_cast<std::size_t>(w.rows) * w.cols, vsize = static_cast<std::size_t>(w.cols) * w.cols;
  if (w.batched) {
    configure_jacobi(bd.ctx.jacobi);
    gesvdj_batched(bd.ctx.solver, w.rows, w.cols, a, s, u, v, w.work, w.lwork, w.info, bd.ctx.jacobi, w.batch);
  } else {
    fan_out(bd.ctx, bd.stream, w.batch, [&](std::size_t b, const Lane& lane, std::size_t lane_index) {
      configure_jacobi(lane.jacobi);
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
  std::vector<T> top(w.batch);  // s_b[0]: a narrow pitch, cols values
  VSFAST_CHECK(cudaMemcpy2DAsync(top.data(), sizeof(T), s, w.cols * sizeof(T), sizeof(T), w.batch,
                                 cudaMemcpyDeviceToHost, bd.stream));
  const std::vector<int> info = fetch_ints(w.info, w.batch, bd.stream);
  for (int b = 0; b < w.batch; ++b)
    if (info[b] != 0) top[b] = qr_fallback(bd, a, s, u, v, w, restore, b);
  return std::vector<double>(top.begin(), top.end());
}

}  // namespace vsfast::cuda
