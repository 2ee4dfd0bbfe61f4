// Exact thin SVD and singular values (LAPACK gesdd), batched. The GPU twin is csrc/cuda/svd.cu.
//
// Row-major data enters LAPACK as its column-major transpose: the row-major m x n matrix A is the
// column-major n x m matrix A^T. If A^T = U' S V'^T then A = V' S U'^T, so LAPACK's U' (n x r,
// column-major) is exactly the row-major r x n Vh of A, and V'^T (r x m, column-major) is the
// row-major m x r U of A. No transposition is ever copied.
//
// No rescaling here, unlike rsvd and the GPU's Jacobi SVD: gesdd scales a matrix whose entries
// approach the dtype's limits itself. Singular values beyond the dtype are refused.
#pragma once

#include "api.hpp"
#include "blas.hpp"
#include "checks.hpp"
#include "parallel.hpp"

#include <algorithm>
#include <cmath>
#include <cstddef>
#include <vector>

namespace vsfast {

// Thin SVD of the row-major m x n matrix a * 2^-exponent: u (m x r), s (r), vh (r x n),
// r = min(m, n). `work` is resized to hold that scaled copy of a (gesdd destroys its input).
template <class T>
void svd_rowmajor(const T* a, std::size_t m, std::size_t n, T* u, T* s, T* vh, std::vector<T>& work,
                  int exponent = 0) {
  const std::size_t r = std::min(m, n);
  work.assign(a, a + m * n);
  if (exponent != 0)
    for (T& v : work) v = std::ldexp(v, -exponent);
  const blas_int bm = to_blas_int(m, "rows"), bn = to_blas_int(n, "columns"), br = static_cast<blas_int>(r);
  check_lapack(gesdd(bn, bm, work.data(), bn, s, vh, bn, u, br), "gesdd");
}

// The singular values s (min(m, n)) of the row-major m x n matrix a, those of its transpose.
template <class T>
void svdvals_rowmajor(const T* a, std::size_t m, std::size_t n, T* s, std::vector<T>& work) {
  work.assign(a, a + m * n);
  const blas_int bm = to_blas_int(m, "rows"), bn = to_blas_int(n, "columns");
  check_lapack(gesdd_values(bn, bm, work.data(), bn, s), "gesdd");
}

// The batched entry points of api.hpp.
template <class T>
void svd(const T* a, std::size_t batch, std::size_t m, std::size_t n, T* u, T* s, T* vh) {
  const std::size_t q = std::min(m, n);
  require_finite(a, batch * m * n, "A");
  parallel_for(batch, batch_workers(batch), [&](std::size_t b) {
    std::vector<T> work;
    svd_rowmajor(a + b * m * n, m, n, u + b * m * q, s + b * q, vh + b * q * n, work);
  });
  require_representable(s, batch * q, "A's largest singular value");
}

template <class T>
void svdvals(const T* a, std::size_t batch, std::size_t m, std::size_t n, T* s) {
  const std::size_t q = std::min(m, n);
  require_finite(a, batch * m * n, "A");
  parallel_for(batch, batch_workers(batch), [&](std::size_t b) {
    std::vector<T> work;
    svdvals_rowmajor(a + b * m * n, m, n, s + b * q, work);
  });
  require_representable(s, batch * q, "A's largest singular value");
}

}  // namespace vsfast
