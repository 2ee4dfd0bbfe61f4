// Ranks and pseudoinverses through the SVD, never through normal equations. The rank rule is
// common.hpp's, shared with the GPU twin, csrc/cuda/pinv.cu.
#pragma once

#include "api.hpp"
#include "blas.hpp"
#include "checks.hpp"
#include "common.hpp"
#include "parallel.hpp"
#include "svd.hpp"

#include <algorithm>
#include <cmath>
#include <cstddef>
#include <cstdint>
#include <optional>
#include <vector>

namespace vsfast {

// Rank by the rule of numpy's matrix_rank / scipy's pinv, with the floor of rank_floor (see
// common.hpp for both).
template <class T>
std::size_t rank_of(const T* s, std::size_t count, std::size_t m, std::size_t n, std::optional<double> rtol,
                    std::optional<double> atol) {
  if (count == 0) return 0;
  const double tol = rank_threshold(static_cast<double>(s[0]), rank_rtol<T>(rtol, atol, m, n), atol.value_or(0.0),
                                    rank_floor<T>());
  std::size_t rank = 0;
  while (rank < count && static_cast<double>(s[rank]) > tol) ++rank;
  return rank;
}

template <class T>
struct PinvFactors {
  std::size_t rank = 0;
  int exponent = 0;         // the factors are those of W * 2^-exponent
  std::vector<T> u, s, vh;  // thin SVD: u m x q, s q, vh q x n, q = min(m, n)
};

// A matrix large enough for its singular values to overflow is decomposed scaled down by a
// power of two (exact), and its pseudoinverse, which is small, scaled back.
template <class T>
PinvFactors<T> pinv_factors(const T* w, std::size_t m, std::size_t n, std::optional<double> rtol,
                            std::optional<double> atol) {
  PinvFactors<T> f;
  const std::size_t q = std::min(m, n);
  f.u.resize(m * q);
  f.s.resize(q);
  f.vh.resize(q * n);
  f.exponent = std::max(0, rescaling_exponent<T>(max_abs(w, m * n)));
  std::vector<T> work;
  svd_rowmajor(w, m, n, f.u.data(), f.s.data(), f.vh.data(), work, f.exponent);
  if (atol) atol = std::ldexp(*atol, -f.exponent);
  f.rank = rank_of(f.s.data(), q, m, n, rtol, atol);
  return f;
}

// Writes W^+ (row-major n x m) or, when `transposed`, (W^+)^T (row-major m x n).
template <class T>
void pinv_from_factors(const PinvFactors<T>& f, std::size_t m, std::size_t n, bool transposed, T* out) {
  const std::size_t q = std::min(m, n), r = f.rank;
  if (r == 0) {
    std::fill(out, out + m * n, T(0));
    return;
  }
  std::vector<T> scaled_vh(f.vh.begin(), f.vh.begin() + static_cast<std::ptrdiff_t>(r * n));
  for (std::size_t i = 0; i < r; ++i)
    for (std::size_t j = 0; j < n; ++j) scaled_vh[i * n + j] = std::ldexp(scaled_vh[i * n + j] / f.s[i], -f.exponent);
  const blas_int bm = to_blas_int(m, "rows"), bn = to_blas_int(n, "columns");
  const blas_int br = static_cast<blas_int>(r), bq = static_cast<blas_int>(q);
  if (transposed)  // U_r (S_r^-1 Vh_r)
    gemm_rowmajor(false, false, bm, bn, br, T(1), f.u.data(), bq, scaled_vh.data(), bn, T(0), out, bn);
  else  // (S_r^-1 Vh_r)^T U_r^T
    gemm_rowmajor(true, true, bn, bm, br, T(1), scaled_vh.data(), bn, f.u.data(), bq, T(0), out, bm);
}

// The batched entry points of api.hpp.
template <class T>
void pinv(const T* a, std::size_t batch, std::size_t m, std::size_t n, std::optional<double> rtol,
          std::optional<double> atol, bool transposed, T* out, std::int64_t* ranks, T* vh) {
  const std::size_t q = std::min(m, n);
  require_finite(a, batch * m * n, "A");
  parallel_for(batch, batch_workers(batch), [&](std::size_t b) {
    const PinvFactors<T> f = pinv_factors(a + b * m * n, m, n, rtol, atol);
    pinv_from_factors(f, m, n, transposed, out + b * m * n);
    ranks[b] = static_cast<std::int64_t>(f.rank);
    if (vh) std::copy(f.vh.begin(), f.vh.end(), vh + b * q * n);
  });
  require_representable(out, batch * m * n, "the pseudoinverse");
}

template <class T>
void rank(const T* s, std::size_t batch, std::size_t count, std::size_t m, std::size_t n, std::optional<double> rtol,
          std::optional<double> atol, std::int64_t* ranks) {
  require_finite(s, batch * count, "S");
  for (std::size_t b = 0; b < batch; ++b)
    ranks[b] = static_cast<std::int64_t>(rank_of(s + b * count, count, m, n, rtol, atol));
}

}  // namespace vsfast
