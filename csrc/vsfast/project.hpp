// Splitting inputs into the part a subspace keeps and the part it rejects:
// signal = X B^T B and residual = X - signal, for B with orthonormal rows. The rejected space
// is never formed: its projection is the residual.
#pragma once

#include "blas.hpp"
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

}  // namespace vsfast
