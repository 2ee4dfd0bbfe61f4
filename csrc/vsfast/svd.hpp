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

// The singular values s (min(m, n)) of the row-major m x n float matrix a from the eigenvalues of
// its Gram matrix on the short side, G = A A^T (wide) or A^T A (tall), accumulated in double over
// panels of the long side so that only one panel is ever converted. `gram` and `panel` are
// scratch.
inline void svdvals_gram_rowmajor(const float* a, std::size_t m, std::size_t n, float* s, std::vector<double>& gram,
                                  std::vector<double>& panel) {
  constexpr std::size_t width = 256;  // long-side entries per panel: a BLAS-3 update, a small copy
  const std::size_t q = std::min(m, n), len = std::max(m, n);
  const bool tall = m > n;
  const blas_int bq = to_blas_int(q, "the short side");
  gram.assign(q * q, 0.0);
  panel.resize(q * std::min(width, len));
  for (std::size_t j0 = 0; j0 < len; j0 += width) {
    const std::size_t b = std::min(width, len - j0);
    if (tall) {  // rows j0.. of A: row-major b x n is column-major n x b, and G += P P^T
      std::copy(a + j0 * n, a + (j0 + b) * n, panel.begin());
      syrk_accumulate(false, bq, static_cast<blas_int>(b), panel.data(), bq, gram.data(), bq);
    } else {  // columns j0.. of A, stored column-major b x m, and G += P^T P
      for (std::size_t i = 0; i < m; ++i)
        std::copy(a + i * n + j0, a + i * n + j0 + b, panel.begin() + i * b);
      syrk_accumulate(true, bq, static_cast<blas_int>(b), panel.data(), static_cast<blas_int>(b), gram.data(), bq);
    }
  }
  std::vector<double> eigenvalues(q);
  check_lapack(symmetric_eigenvalues(bq, gram.data(), bq, eigenvalues.data()), "dsyevd");
  for (std::size_t i = 0; i < q; ++i)  // ascending; rounding can leave a zero one slightly negative
    s[i] = static_cast<float>(std::sqrt(std::max(eigenvalues[q - 1 - i], 0.0)));
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
