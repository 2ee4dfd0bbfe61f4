// Exact thin SVD, Householder orthonormalisation and orthogonal complements.
//
// Row-major data enters LAPACK as its column-major transpose: the row-major m x n matrix A is the
// column-major n x m matrix A^T. If A^T = U' S V'^T then A = V' S U'^T, so LAPACK's U' (n x r,
// column-major) is exactly the row-major r x n Vh of A, and V'^T (r x m, column-major) is the
// row-major m x r U of A. No transposition is ever copied.
#pragma once

#include "blas.hpp"
#include "parallel.hpp"
#include "range.hpp"

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

// Replace the m x n column-major matrix a (m >= n) by an orthonormal basis of its column space,
// in place (Householder QR). Columns beyond a rank-deficient a's rank are still orthonormal.
template <class T>
void orthonormalize_householder(T* a, blas_int m, blas_int n, blas_int lda, std::vector<T>& tau) {
  tau.resize(static_cast<std::size_t>(std::max<blas_int>(n, 1)));
  check_lapack(geqrf(m, n, a, lda, tau.data()), "geqrf");
  check_lapack(orgqr(m, n, n, a, lda, tau.data()), "orgqr");
}

template <class T>
struct OrthWorkspace {
  std::vector<T> backup, gram, tau;
};

// Frobenius distance from the identity of the symmetric n x n matrix whose upper triangle is g.
template <class T>
double identity_defect(const std::vector<T>& g, blas_int n) {
  double sum = 0;
  for (blas_int j = 0; j < n; ++j)
    for (blas_int i = 0; i <= j; ++i) {
      const double d = static_cast<double>(g[i + static_cast<std::size_t>(j) * n]) - (i == j ? 1.0 : 0.0);
      sum += (i == j ? 1.0 : 2.0) * d * d;
    }
  return std::sqrt(sum);
}

// a <- a R^-1 for the Cholesky factor R of the Gram matrix held in gram (overwritten). Returns
// false when the Gram matrix is not numerically positive definite.
template <class T>
bool cholesky_qr_step(T* a, blas_int m, blas_int n, blas_int lda, std::vector<T>& gram) {
  if (potrf_upper(n, gram.data(), n) != 0) return false;
  trsm_right_upper(m, n, gram.data(), n, a, lda);
  return true;
}

// A well-conditioned basis of the column space of a (m >= n), in place: one Cholesky QR pass,
// or Householder QR when the Gram matrix is not numerically positive definite. Its columns are
// orthonormal to about eps * cond(a)^2 only, which is all a power iteration's next product needs:
// the span is what carries forward.
template <class T>
void condition_basis(T* a, blas_int m, blas_int n, blas_int lda, OrthWorkspace<T>& ws) {
  ws.gram.resize(static_cast<std::size_t>(n) * n);
  vsfast::gram(m, n, a, lda, ws.gram.data());
  // A failed Cholesky factorisation leaves a untouched: no copy to restore from.
  if (!cholesky_qr_step(a, m, n, lda, ws.gram)) orthonormalize_householder(a, m, n, lda, ws.tau);
}

// Orthonormal basis of the column space of the tall m x n column-major a (m >= n), in place.
// CholeskyQR2 (Yamamoto et al., ETNA 44, 2015) runs at matrix-product speed and is as accurate as
// Householder QR once the first pass leaves a nearly orthonormal matrix: the Gram matrix of that
// pass's result, which the second pass needs anyway, tells. When it is more than 1/2 from the
// identity (a condition number beyond about eps^-1/2), or a Cholesky factorisation fails, the
// Householder QR of the saved input is used instead.
template <class T>
void orthonormalize(T* a, blas_int m, blas_int n, blas_int lda, OrthWorkspace<T>& ws) {
  ws.backup.assign(a, a + static_cast<std::size_t>(lda) * n);
  ws.gram.resize(static_cast<std::size_t>(n) * n);
  vsfast::gram(m, n, a, lda, ws.gram.data());
  if (cholesky_qr_step(a, m, n, lda, ws.gram)) {
    vsfast::gram(m, n, a, lda, ws.gram.data());
    if (identity_defect(ws.gram, n) < 0.5 && cholesky_qr_step(a, m, n, lda, ws.gram)) return;
  }
  std::copy(ws.backup.begin(), ws.backup.end(), a);
  orthonormalize_householder(a, m, n, lda, ws.tau);
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

}  // namespace vsfast
