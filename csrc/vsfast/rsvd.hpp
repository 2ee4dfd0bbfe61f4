// Randomized truncated SVD (Halko, Martinsson & Tropp, SIAM Review 53(2), 2011, Algorithms 4.4
// and 5.1): sketch the range of A with a Gaussian test matrix, sharpen it with power iterations
// re-orthonormalised at every half-step, then take the exact SVD of the small projected matrix.
//
// A wide matrix is handled through its transpose, so the sketch Y always lives on the long side:
// its bases are kept well conditioned by one Cholesky QR pass per half-step and made orthonormal
// by CholeskyQR2 at the last, all at matrix-product speed, and the exact SVD at the end is of a
// short-by-(k + p) matrix. What remains beyond the (2q + 2) passes of matrix products over A, the
// floor of the method, is small. The GPU twin is csrc/cuda/rsvd.cu.
#pragma once

#include "api.hpp"
#include "blas.hpp"
#include "checks.hpp"
#include "orthonormalize.hpp"
#include "parallel.hpp"
#include "random.hpp"
#include "small_svd.hpp"

#include <algorithm>
#include <cstddef>
#include <cmath>
#include <cstdint>
#include <limits>
#include <vector>

namespace vsfast {

template <class T>
struct RsvdWorkspace {
  std::vector<T> y, z, ub, vbt, w, s, scaled;
  OrthWorkspace<T> orth;       // the long side's bases; holds R2 until the end
  SmallSvdWorkspace<T> small;  // the small SVD's

  std::size_t bytes() const { return buffer_bytes(y, z, ub, vbt, w, s, scaled) + orth.bytes() + small.bytes(); }
};

// Run fn on the calling thread's workspace, kept between calls: fresh buffers cost page faults
// worth 15 % of a 512 x 4608 rsvd. Buffers beyond 64 MiB are given back after the call, so a
// one-off large call does not keep its memory.
template <class T, class Fn>
void with_thread_workspace(Fn&& fn) {
  constexpr std::size_t kept_bytes = std::size_t{64} << 20;
  thread_local RsvdWorkspace<T> ws;
  struct Trim {
    RsvdWorkspace<T>& ws;
    ~Trim() {
      if (ws.bytes() > kept_bytes) ws = RsvdWorkspace<T>{};
    }
  } trim{ws};
  fn(ws);
}

// The Gaussian test matrix for m x n matrices: column-major min(m, n) x sketch_width. One sketch
// serves a whole batch, so a matrix gets the same result alone as inside any batch.
template <class T>
std::vector<T> gaussian_sketch(std::size_t m, std::size_t n, const RsvdParams& p) {
  std::vector<T> omega(std::min(m, n) * sketch_width(m, n, p));
  fill_gaussian(omega.data(), omega.size(), p.seed);
  return omega;
}

// a: row-major m x n; omega from gaussian_sketch. Writes u (row-major m x k), s (k) and
// vh (row-major k x n).
template <class T>
void rsvd_rowmajor(const T* a, std::size_t m, std::size_t n, const RsvdParams& p, const T* omega, T* u, T* s,
                   T* vh, RsvdWorkspace<T>& ws) {
  // Column-major view: the n x m matrix A_cm = a^T, leading dimension n. M is its tall
  // orientation: A_cm itself when n >= m, else A_cm^T (which is a).
  const bool t = n < m;
  const std::size_t short_side = std::min(m, n), long_side = std::max(m, n);
  const std::size_t l = sketch_width(m, n, p);
  const blas_int bs = to_blas_int(short_side, "columns"), bl = to_blas_int(long_side, "rows");
  const blas_int bk = static_cast<blas_int>(p.k), bsk = static_cast<blas_int>(l);
  const blas_int lda = static_cast<blas_int>(n);

  ws.y.resize(long_side * l);
  ws.z.resize(short_side * l);
  ws.ub.resize(short_side * l);
  ws.vbt.resize(l * l);
  ws.s.resize(l);

  // Y = M Omega, then alternate Z = M^T Y and Y = M Z, each basis re-orthonormalised before the
  // next product. A long-side Y only gets its Cholesky factor R: Z = (M^T Y) R^-1 equals
  // M^T (Y R^-1), with the triangular solve on the short side instead of the long one.
  // Intermediate bases only need to be well conditioned; the last one, which B is built on, must
  // be orthonormal to working precision: Y = Q R2, with R2 left to apply to smaller matrices.
  gemm(t, false, bl, bsk, bs, T(1), a, lda, omega, bs, T(0), ws.y.data(), bl);
  for (std::size_t it = 0; it < p.power_iters; ++it) {
    const bool factored = gram_factor(ws.y.data(), bl, bsk, bl, ws.orth.gram);
    if (!factored) orthonormalize_householder(ws.y.data(), bl, bsk, bl, ws.orth.tau);
    gemm(!t, false, bs, bsk, bl, T(1), a, lda, ws.y.data(), bl, T(0), ws.z.data(), bs);
    if (factored) trsm_right_upper(bs, bsk, ws.orth.gram.data(), bsk, ws.z.data(), bs);
    condition_basis(ws.z.data(), bs, bsk, bs, ws.orth);
    gemm(t, false, bl, bsk, bs, T(1), a, lda, ws.z.data(), bs, T(0), ws.y.data(), bl);
  }
  const bool r2_pending = orthonormalize_but_factor(ws.y.data(), bl, bsk, bl, ws.orth);

  // B^T = M^T Q = (M^T Y) R2^-1 (short x l); its SVD Ub S Vbt gives M ~ Q B = (Q Vbt^T) S Ub^T,
  // where Q Vbt^T = Y W for the l x k matrix W = R2^-1 Vbt^T (first k columns).
  gemm(!t, false, bs, bsk, bl, T(1), a, lda, ws.y.data(), bl, T(0), ws.z.data(), bs);
  const T* r2 = ws.orth.gram.data();
  if (r2_pending) trsm_right_upper(bs, bsk, r2, bsk, ws.z.data(), bs);
  tall_svd(ws.z.data(), bs, bsk, ws.s.data(), ws.ub.data(), ws.vbt.data(), ws.small);
  std::copy(ws.s.begin(), ws.s.begin() + static_cast<std::ptrdiff_t>(p.k), s);
  ws.w.resize(l * p.k);
  for (std::size_t j = 0; j < p.k; ++j)
    for (std::size_t i = 0; i < l; ++i) ws.w[i + j * l] = ws.vbt[j + i * l];
  if (r2_pending) blas_trsm_upper(CblasLeft, bsk, bk, r2, bsk, ws.w.data(), bsk);

  if (!t) {
    // M = a^T: row-major u (stored as column-major k x m) is the transpose of Ub's first k
    // columns; row-major vh (column-major n x k) is Y W.
    for (std::size_t i = 0; i < m; ++i)
      for (std::size_t j = 0; j < p.k; ++j) u[j + i * p.k] = ws.ub[i + j * m];
    gemm(false, false, bl, bk, bsk, T(1), ws.y.data(), bl, ws.w.data(), bsk, T(0), vh, bl);
  } else {
    // M = a: row-major u (column-major k x m) is (Y W)^T = W^T Y^T; row-major vh (column-major
    // n x k) is Ub's first k columns.
    gemm(true, true, bk, bl, bsk, T(1), ws.w.data(), bsk, ws.y.data(), bl, T(0), u, bk);
    std::copy(ws.ub.begin(), ws.ub.begin() + static_cast<std::ptrdiff_t>(n * p.k), vh);
  }
}

// rsvd_rowmajor for any finite a, its largest magnitude given: a matrix outside the safe range
// is scaled by a power of two (exact) into a copy, and its singular values scaled back. Those
// may then exceed the dtype, which the caller checks.
template <class T>
void rsvd_scaled_rowmajor(const T* a, std::size_t m, std::size_t n, double max_abs, const RsvdParams& p,
                          const T* omega, T* u, T* s, T* vh, RsvdWorkspace<T>& ws) {
  const int e = rescaling_exponent<T>(max_abs);
  if (e == 0) return rsvd_rowmajor(a, m, n, p, omega, u, s, vh, ws);
  ws.scaled.resize(m * n);
  for (std::size_t i = 0; i < m * n; ++i) ws.scaled[i] = std::ldexp(a[i], -e);
  rsvd_rowmajor(ws.scaled.data(), m, n, p, omega, u, s, vh, ws);
  for (std::size_t j = 0; j < p.k; ++j) s[j] = std::ldexp(s[j], e);
}

// The batched entry point of api.hpp: every matrix is scanned (NaN and inf refused), decomposed
// with the one sketch, on its own thread when the batch keeps every thread busy, and the singular
// values scaled back must fit the dtype.
template <class T>
void rsvd(const T* a, std::size_t batch, std::size_t m, std::size_t n, const RsvdParams& p, T* u, T* s, T* vh) {
  const std::vector<double> largest = require_finite_matrices(a, batch, m * n, "A");
  const std::vector<T> omega = gaussian_sketch<T>(m, n, p);
  parallel_for(batch, batch_workers(batch), [&](std::size_t b) {
    with_thread_workspace<T>([&](RsvdWorkspace<T>& ws) {
      rsvd_scaled_rowmajor(a + b * m * n, m, n, largest[b], p, omega.data(), u + b * m * p.k, s + b * p.k,
                           vh + b * p.k * n, ws);
    });
  });
  require_representable(s, batch * p.k, "A's largest singular value");
}

}  // namespace vsfast
