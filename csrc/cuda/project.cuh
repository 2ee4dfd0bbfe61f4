// The projection shared by project.cu and the chain's reference term.
#pragma once

#include "cuda/kernels.cuh"
#include "cuda/library.hpp"

namespace vsfast::cuda {

template <class T>
struct ProjectWork {
  T* coef = nullptr;  // rows x r

  static ProjectWork layout(Arena& arena, std::size_t rows, std::size_t r) {
    ProjectWork w;
    w.coef = arena.take<T>(rows * r);
    return w;
  }
  static ProjectWork layout(Arena& arena, std::size_t rows, std::size_t, std::size_t r) {
    return layout(arena, rows, r);
  }
};

// x: row-major rows x n; basis: row-major r x n with orthonormal rows.
template <class T>
void project_rows(const Bound& bd, const T* x, std::size_t rows, std::size_t n, const T* basis, std::size_t r,
                  T* signal, T* residual, const ProjectWork<T>& w) {
  if (r == 0) {
    VSFAST_CHECK(cudaMemsetAsync(signal, 0, rows * n * sizeof(T), bd.stream));
    VSFAST_CHECK(cudaMemcpyAsync(residual, x, rows * n * sizeof(T), cudaMemcpyDeviceToDevice, bd.stream));
    return;
  }
  // Column-major: X^T (n x rows), B^T (n x r). coef^T (r x rows) = B X^T; signal^T = B^T coef^T.
  const int in = to_int(n, "input dimension"), ir = to_int(r, "basis size"), irows = to_int(rows, "number of inputs");
  gemm(bd.ctx.blas, true, false, ir, irows, in, T(1), basis, in, 0, x, in, 0, T(0), w.coef, ir, 0, 1);
  gemm(bd.ctx.blas, false, false, in, irows, ir, T(1), basis, in, 0, w.coef, ir, 0, T(0), signal, in, 0, 1);
  subtract(x, signal, residual, rows * n, bd.stream);
}

}  // namespace vsfast::cuda
