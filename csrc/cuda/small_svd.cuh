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
  const std::vector<int> info = fetch_ints(w.info, w.batch, bd.stream);
  for (int b = 0; b < w.batch; ++b)
    if (info[b] != 0)
      throw LinAlgError("gesvdj did not converge for matrix " + std::to_string(b) + " (info = " +
                        std::to_string(info[b]) + ")");
}

}  // namespace vsfast::cuda
