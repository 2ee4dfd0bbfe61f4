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

// The bytes held by some vectors' buffers.
template <class... V>
std::size_t buffer_bytes(const V&... v) {
  return (std::size_t{0} + ... + (v.capacity() * sizeof(typename V::value_type)));
}

template <class T>
struct OrthWorkspace {
  std::vector<T> backup, gram, first, tau, small_u;
  std::vector<double> in64, u64, s64, vt64;

  std::size_t bytes() const { return buffer_bytes(backup, gram, first, tau, small_u, in64, u64, s64, vt64); }
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

// gram <- the Cholesky factor R of a's Gram matrix (upper triangle only). False when that
// matrix is not numerically positive definite.
template <class T>
bool gram_factor(const T* a, blas_int m, blas_int n, blas_int lda, std::vector<T>& gram) {
  gram.resize(static_cast<std::size_t>(n) * n);
  vsfast::gram(m, n, a, lda, gram.data());
  return potrf_upper(n, gram.data(), n) == 0;
}

// A well-conditioned basis of the column space of a (m >= n), in place: one Cholesky QR pass,
// or Householder QR when the Gram matrix is not numerically positive definite. Its columns are
// orthonormal to about eps * cond(a)^2 only, which is all a power iteration's next product needs:
// the span is what carries forward.
template <class T>
void condition_basis(T* a, blas_int m, blas_int n, blas_int lda, OrthWorkspace<T>& ws) {
  // A failed factorisation leaves a untouched: no copy to restore from.
  if (gram_factor(a, m, n, lda, ws.gram))
    trsm_right_upper(m, n, ws.gram.data(), n, a, lda);
  else
    orthonormalize_householder(a, m, n, lda, ws.tau);
}

// CholeskyQR2 (Yamamoto et al., ETNA 44, 2015) of the tall column-major m x n a (m >= n), short
// of its last step: a = Q R2 R1 with Q orthonormal; a is left holding a R1^-1 = Q R2, the upper-triangular
// factors in ws.first (R1, its lower triangle zero) and ws.gram (R2, upper triangle only). It runs
// at matrix-product speed and is as accurate as Householder QR once the first pass leaves a nearly
// orthonormal matrix, which the Gram matrix of its result tells: when that is more than 1/2 from
// the identity (a condition number beyond about eps^-1/2), or a factorisation fails, a is
// restored and the result is false.
template <class T>
bool cholesky_qr2(T* a, blas_int m, blas_int n, blas_int lda, OrthWorkspace<T>& ws) {
  ws.backup.assign(a, a + static_cast<std::size_t>(lda) * n);
  if (gram_factor(a, m, n, lda, ws.gram)) {
    trsm_right_upper(m, n, ws.gram.data(), n, a, lda);
    ws.first = ws.gram;
    for (std::size_t j = 0; j < static_cast<std::size_t>(n); ++j)
      std::fill_n(ws.first.begin() + static_cast<std::ptrdiff_t>(j * n + j + 1), n - 1 - j, T(0));
    vsfast::gram(m, n, a, lda, ws.gram.data());
    if (identity_defect(ws.gram, n) < 0.5 && potrf_upper(n, ws.gram.data(), n) == 0) return true;
  }
  std::copy(ws.backup.begin(), ws.backup.end(), a);
  return false;
}

// Orthonormal basis Q of the column space of the tall m x n column-major a (m >= n), up to one
// upper-triangular factor: a <- Q R2. Returns true with R2 in ws.gram (CholeskyQR2, its last
// solve left to the caller, who applies R2^-1 to whichever of its next operands is smaller), or
// false with a = Q (Householder QR, when CholeskyQR2 cannot be trusted).
template <class T>
bool orthonormalize_but_factor(T* a, blas_int m, blas_int n, blas_int lda, OrthWorkspace<T>& ws) {
  if (cholesky_qr2(a, m, n, lda, ws)) return true;
  orthonormalize_householder(a, m, n, lda, ws.tau);
  return false;
}

// Thin SVD of the column-major m x n a (m >= n) computed in float64 and returned as T: s (n),
// u (m x n, leading dimension m), vt (n x n). sgesdd's divide and conquer returns small singular
// values with errors up to ~64 eps ||a|| (OpenBLAS 0.3.34; sgesvd and dgesdd stay near eps ||a||),
// which would put a spurious singular value at the rounding level of float32 into rsvd's results.
template <class T>
void svd_in_double(const T* a, blas_int m, blas_int n, T* s, T* u, T* vt, OrthWorkspace<T>& ws) {
  const std::size_t mn = static_cast<std::size_t>(m) * n, nn = static_cast<std::size_t>(n) * n;
  ws.in64.assign(a, a + mn);
  ws.u64.resize(mn);
  ws.s64.resize(static_cast<std::size_t>(n));
  ws.vt64.resize(nn);
  check_lapack(gesdd(m, n, ws.in64.data(), m, ws.s64.data(), ws.u64.data(), m, ws.vt64.data(), n), "gesdd");
  std::copy(ws.u64.begin(), ws.u64.end(), u);
  std::copy(ws.s64.begin(), ws.s64.end(), s);
  std::copy(ws.vt64.begin(), ws.vt64.end(), vt);
}

// Thin SVD of the tall column-major m x n a (destroyed): s (n), u (m x n, leading dimension m),
// vt (n x n). For m >= 2n, CholeskyQR2 first reduces a to its n x n triangular factor
// R = R2 R1, whose SVD is a fraction of the work on a, and u = Q U_R; otherwise, or when
// CholeskyQR2 cannot be trusted, the SVD of a itself.
template <class T>
void svd_tall(T* a, blas_int m, blas_int n, T* s, T* u, T* vt, OrthWorkspace<T>& ws) {
  if (m >= 2 * n && cholesky_qr2(a, m, n, m, ws)) {
    trsm_right_upper(m, n, ws.gram.data(), n, a, m);
    blas_trmm_left_upper(n, n, ws.gram.data(), n, ws.first.data(), n);
    ws.small_u.resize(static_cast<std::size_t>(n) * n);
    svd_in_double(ws.first.data(), n, n, s, ws.small_u.data(), vt, ws);
    gemm(false, false, m, n, n, T(1), a, m, ws.small_u.data(), n, T(0), u, m);
    return;
  }
  svd_in_double(a, m, n, s, u, vt, ws);
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
