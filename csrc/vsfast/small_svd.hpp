// The SVD of the randomized SVD's small projected matrix: tall, with k + p columns. The GPU twin
// is csrc/cuda/small_svd.cuh.
#pragma once

#include "blas.hpp"
#include "orthonormalize.hpp"
#include "parallel.hpp"

#include <algorithm>
#include <cmath>
#include <cstddef>
#include <type_traits>
#include <vector>

namespace vsfast {

template <class T>
struct SmallSvdWorkspace {
  OrthWorkspace<T> orth;  // CholeskyQR2 of the tall input
  std::vector<T> small_u;
  std::vector<double> in64, u64, s64, vt64, gram64;

  std::size_t bytes() const { return orth.bytes() + buffer_bytes(small_u, in64, u64, s64, vt64, gram64); }
};

// Thin SVD of the column-major m x n a (m >= n) computed in float64 and returned as T: s (n),
// u (m x n, leading dimension m), vt (n x n). sgesdd's divide and conquer returns small singular
// values with errors up to ~64 eps ||a|| (OpenBLAS 0.3.34; sgesvd and dgesdd stay near eps ||a||),
// which would put a spurious singular value at the rounding level of float32 into rsvd's results.
template <class T>
void svd_in_double(const T* a, blas_int m, blas_int n, T* s, T* u, T* vt, SmallSvdWorkspace<T>& ws) {
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
void tall_svd(T* a, blas_int m, blas_int n, T* s, T* u, T* vt, SmallSvdWorkspace<T>& ws) {
  if (m >= 2 * n && cholesky_qr2(a, m, n, m, ws.orth)) {
    trsm_right_upper(m, n, ws.orth.gram.data(), n, a, m);
    blas_trmm_left_upper(n, n, ws.orth.gram.data(), n, ws.orth.first.data(), n);
    ws.small_u.resize(static_cast<std::size_t>(n) * n);
    svd_in_double(ws.orth.first.data(), n, n, s, ws.small_u.data(), vt, ws);
    gemm(false, false, m, n, n, T(1), a, m, ws.small_u.data(), n, T(0), u, m);
    return;
  }
  svd_in_double(a, m, n, s, u, vt, ws);
}

// The leading k singular triplets of the column-major float32 m x n a from the eigenpairs of its
// float64 Gram matrix: s (k), u (m x k, leading dimension m), v (n x k, leading dimension n),
// where LAPACK's SVD of an n x n factor costs twice as much (a 512 x 188 matrix: 8.3 ms against
// 3.8). Squaring the singular values costs float64's precision, not float32's: the eigenvalues
// are exact to a modest multiple of eps64 s_1^2 (the Gram matrix's and the eigensolver's
// rounding), so s_i to that multiple of eps64 (s_1/s_i)^2 relative, and u_i = a v_i / s_i is
// orthonormal to the same order. While s_k >= 1e-4 s_1 that is a multiple of 1.1e-8, measured
// below float32's rounding (eps32 = 6e-8; tests/test_svd.py); below it, or for float64 input,
// returns false and leaves the decomposition to tall_svd, after the Gram route's cost: a float32
// spectrum falling that far within the first k values is rare enough not to test for first.
constexpr double kGramSvdFloor = 1e-4;

template <class T>
bool gram_top_svd(const T* a, blas_int m, blas_int n, blas_int k, T* s, T* u, T* v, SmallSvdWorkspace<T>& ws) {
  if constexpr (!std::is_same_v<T, float>) {
    return false;
  } else {
    const std::size_t mn = static_cast<std::size_t>(m) * n, nn = static_cast<std::size_t>(n) * n;
    ws.in64.assign(a, a + mn);
    ws.gram64.resize(nn);
    ws.s64.resize(static_cast<std::size_t>(n));
    gram(m, n, ws.in64.data(), m, ws.gram64.data());
    check_lapack(symmetric_eigen(n, ws.gram64.data(), n, ws.s64.data()), "dsyevd");
    const double top = std::sqrt(std::max(ws.s64[n - 1], 0.0));
    const double kth = std::sqrt(std::max(ws.s64[n - k], 0.0));
    if (!(kth >= kGramSvdFloor * top) || top == 0) return false;
    ws.vt64.resize(static_cast<std::size_t>(n) * k);  // the leading eigenvectors, descending
    for (blas_int j = 0; j < k; ++j)
      std::copy_n(ws.gram64.begin() + static_cast<std::ptrdiff_t>(n - 1 - j) * n, n,
                  ws.vt64.begin() + static_cast<std::ptrdiff_t>(j) * n);
    ws.u64.resize(static_cast<std::size_t>(m) * k);
    gemm(false, false, m, k, n, 1.0, ws.in64.data(), m, ws.vt64.data(), n, 0.0, ws.u64.data(), m);
    for (blas_int j = 0; j < k; ++j) {
      const double sj = std::sqrt(ws.s64[n - 1 - j]);
      const std::size_t uj = static_cast<std::size_t>(j) * m, vj = static_cast<std::size_t>(j) * n;
      s[j] = static_cast<T>(sj);
      for (blas_int i = 0; i < m; ++i) u[i + uj] = static_cast<T>(ws.u64[i + uj] / sj);
      for (blas_int i = 0; i < n; ++i) v[i + vj] = static_cast<T>(ws.vt64[i + vj]);
    }
    return true;
  }
}

}  // namespace vsfast
