// Splitting inputs into the part a subspace keeps and the part it rejects:
// signal = X B^T B and residual = X - signal, for B with orthonormal rows. The rejected space
// is never formed: its projection is the residual. Its basis, the orthogonal complement, is
// built only on request. The GPU twin is csrc/cuda/project.cu (projections only).
#pragma once

#include "api.hpp"
#include "blas.hpp"
#include "checks.hpp"
#include "parallel.hpp"

#include <algorithm>
#include <cstddef>
#include <vector>

namespace vsfast {

// x: row-major rows x n; basis: row-major r x n with orthonormal rows.
template <class T>
void project_rowmajor(const T* x, std::size_t rows, std::size_t n, const T* basis, std::size_t r, T* signal,
                      T* residual) {
  const blas_int bn = to_blas_int(n, "input dimension"), br = to_blas_int(r, "basis size");
  to_blas_int(rows, "number of inputs");
  if (r == 0) {
    std::fill(signal, signal + rows * n, T(0));
    std::copy(x, x + rows * n, residual);
    return;
  }
  // Row blocks keep a block of X in cache between its two products and its subtraction.
  constexpr std::size_t block = kBlock;
  const std::size_t blocks = (rows + block - 1) / block;
  parallel_for(blocks, workers_for(4.0 * rows * n * r, blocks), [&](std::size_t b) {
    const std::size_t begin = b * block, count = std::min(block, rows - begin);
    const blas_int bc = static_cast<blas_int>(count);
    const T* xb = x + begin * n;
    T* sb = signal + begin * n;
    T* rb = residual + begin * n;
    std::vector<T> coef(count * r);
    gemm_rowmajor(false, true, bc, br, bn, T(1), xb, bn, basis, bn, T(0), coef.data(), br);
    gemm_rowmajor(false, false, bc, bn, br, T(1), coef.data(), br, basis, bn, T(0), sb, bn);
    for (std::size_t i = 0; i < count * n; ++i) rb[i] = xb[i] - sb[i];
  });
}

// Orthonormal basis of the orthogonal complement of r orthonormal rows of length n (row-major
// r x n): written as (n - r) rows of length n into out.
template <class T>
void complement_rowmajor(const T* rows, std::size_t r, std::size_t n, T* out, std::vector<T>& work,
                         std::vector<T>& tau) {
  const blas_int bn = to_blas_int(n, "basis length"), br = static_cast<blas_int>(r);
  // Column-major n x n work whose first r columns are the given rows; the full Q of their QR
  // factorisation has the complement in its last n - r columns.
  work.assign(n * n, T(0));
  std::copy(rows, rows + r * n, work.begin());
  tau.assign(std::max<std::size_t>(r, 1), T(0));
  if (r > 0) check_lapack(geqrf(bn, br, work.data(), bn, tau.data()), "geqrf");
  check_lapack(orgqr(bn, bn, br, work.data(), bn, tau.data()), "orgqr");
  std::copy(work.begin() + static_cast<std::ptrdiff_t>(r * n), work.end(), out);
}

// The entry points of api.hpp.
template <class T>
void project(const T* x, std::size_t rows, std::size_t n, const T* basis, std::size_t r, T* signal, T* residual) {
  const double x_max = require_finite(x, rows * n, "X");
  const double basis_max = require_finite(basis, r * n, "basis");
  project_rowmajor(x, rows, n, basis, r, signal, residual);
  if (projection_may_overflow<T>(r, n, x_max, basis_max)) {
    require_representable(signal, rows * n, "the signal part");
    require_representable(residual, rows * n, "the residual part");
  }
}

template <class T>
void complement(const T* basis, std::size_t batch, std::size_t r, std::size_t n, T* out) {
  require_finite(basis, batch * r * n, "basis");
  parallel_for(batch, batch_workers(batch), [&](std::size_t b) {
    std::vector<T> work, tau;
    complement_rowmajor(basis + b * r * n, r, n, out + b * (n - r) * n, work, tau);
  });
}

}  // namespace vsfast
