// Orthonormal bases of tall-skinny column-major matrices at matrix-product speed: Cholesky QR
// (Gram matrix, Cholesky factor, triangular solve) and CholeskyQR2, with Householder QR for the
// matrices whose Gram matrix is not numerically positive definite or whose first pass leaves a
// basis too far from orthonormal. The GPU twin is csrc/cuda/orthonormalize.cuh.
#pragma once

#include "blas.hpp"
#include "parallel.hpp"

#include <algorithm>
#include <cmath>
#include <cstddef>
#include <vector>

namespace vsfast {

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
  std::vector<T> backup, gram, first, tau;

  std::size_t bytes() const { return buffer_bytes(backup, gram, first, tau); }
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

}  // namespace vsfast
