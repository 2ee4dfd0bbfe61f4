// Randomized truncated SVD (Halko, Martinsson & Tropp, SIAM Review 53(2), 2011): sketch the
// range of A with a Gaussian test matrix, sharpen it with passes over A, then take the exact SVD
// of the small projected matrix. Two ways to spend the passes:
//
// - subspace iteration (HMT Algorithms 4.4 and 5.1) keeps the last block (A A^T)^q A Omega,
//   re-orthonormalised at every half-step;
// - block Krylov iteration (Musco & Musco, NeurIPS 2015; Tropp & Webber, arXiv 2306.12418) keeps
//   every block, A Omega, (A A^T) A Omega, ..., (A A^T)^q A Omega, each orthonormalised against
//   the ones before. For the same 2q + 2 passes its space is q + 1 times wider and contains
//   subspace iteration's, and every product M^T Q_j taken to build the next block is also a block
//   of the projected matrix: no pass is added to project A onto the wider space.
//
// Around either: the passes may run in bfloat16 (bf16.hpp) where the rounding of A is far below
// the error of the rank-k approximation, checked against the projected matrix's singular values
// once they are known (a spectrum that needs the input's precision gets it, recomputed from the
// start); and block Krylov may choose its depth from an a-posteriori error estimate (tol).
//
// A wide matrix is handled through its transpose, so the sketch lives on the long side. The GPU
// twin (subspace iteration only) is csrc/cuda/rsvd.cu.
#pragma once

#include "api.hpp"
#include "bf16.hpp"
#include "blas.hpp"
#include "checks.hpp"
#include "orthonormalize.hpp"
#include "parallel.hpp"
#include "random.hpp"
#include "small_svd.hpp"

#include <algorithm>
#include <cmath>
#include <cstddef>
#include <cstdint>
#include <limits>
#include <vector>

namespace vsfast {

template <class T>
struct RsvdWorkspace {
  std::vector<T> y, z, ub, vbt, w, s, scaled;
  std::vector<T> basis, probes, coef;       // block Krylov: orthonormal blocks, probe residuals, projections
  std::vector<double> w64, gram64, eig, ritz;  // singular values of the projected matrix, in float64
  std::size_t gram_ld = 0;                     // gram64's leading dimension
  OrthWorkspace<T> orth;                     // the long side's bases; holds R2 until the end
  SmallSvdWorkspace<T> small;                // the small SVD's
  Bf16Matrix low;                            // A in bfloat16, for the reduced-precision passes
  std::vector<std::uint32_t> packed;

  std::size_t bytes() const {
    return buffer_bytes(y, z, ub, vbt, w, s, scaled, basis, probes, coef, w64, gram64, ritz, eig, packed) +
           orth.bytes() + small.bytes() + low.bytes();
  }
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

// The adaptive stop's probes (HMT 2011, Lemma 4.1): for r Gaussian vectors w_i independent of
// the basis Q, ||(I - QQ^T) A|| <= alpha sqrt(2/pi) max_i ||(I - QQ^T) A w_i|| except with
// probability alpha^-r. r = 20 and alpha = 2 bound it within a factor 1.6, failing once in 10^6.
constexpr std::size_t kProbes = 20;
constexpr double kProbeFactor = 2.0 * 0.79788456080286535588;  // alpha sqrt(2/pi)

// The bfloat16 passes are kept when A's rounding, ||A - bf16(A)||_F (a bound on its spectral
// norm), is at most this share of sigma_{k+1}(A), the error of the best rank-k approximation: the
// error of the result can then grow by at most about twice this share (first order; measured on
// trained-layer spectra: a few 1e-4 relative).
constexpr double kRoundingShare = 1.0 / 4;

// Below this many entries the bfloat16 conversion costs more than the passes save.
constexpr std::size_t kBf16MinEntries = std::size_t{1} << 18;

// Columns in the Gaussian test matrix for m x n matrices: the sketch, and the adaptive stop's
// probes after it.
inline std::size_t test_columns(std::size_t m, std::size_t n, const RsvdParams& p) {
  return sketch_width(m, n, p) + (p.tol > 0 ? kProbes : 0);
}

// The Gaussian test matrix for m x n matrices: column-major min(m, n) x test_columns. One
// sketch serves a whole batch, so a matrix gets the same result alone as inside any batch.
template <class T>
std::vector<T> gaussian_sketch(std::size_t m, std::size_t n, const RsvdParams& p) {
  std::vector<T> omega(std::min(m, n) * test_columns(m, n, p));
  // A pair costs a logarithm, a square root and a sine and cosine, some 40 simple operations in
  // parallel_rows's units (about 20 ns an entry): 1-2 ms for a layer's sketch, worth the threads.
  constexpr std::size_t pair_cost = 40;
  parallel_rows((omega.size() + 1) / 2, pair_cost, [&](std::size_t begin, std::size_t end) {
    fill_gaussian_pairs(omega.data(), omega.size(), p.seed, begin, end);
  });
  return omega;
}

// The tall orientation M of the row-major m x n matrix a, seen column-major as the n x m matrix
// a^T: M is a^T itself when n >= m, else its transpose, a. Every pass is a product with M or
// M^T, in the input's precision or, once `low` is set, with A rounded to bfloat16.
template <class T>
struct TallView {
  const T* a;
  bool t;  // n < m: M = a
  std::size_t short_side, long_side;
  blas_int bs, bl, lda;
  const Bf16Matrix* low = nullptr;
  std::vector<std::uint32_t>* packed = nullptr;

  TallView(const T* a_, std::size_t m, std::size_t n)
      : a(a_),
        t(n < m),
        short_side(std::min(m, n)),
        long_side(std::max(m, n)),
        bs(to_blas_int(short_side, "columns")),
        bl(to_blas_int(long_side, "rows")),
        lda(static_cast<blas_int>(n)) {}

  // y (long x cols, leading dimension long) = M x for x (short x cols, leading dimension short).
  void forward(const T* x, blas_int cols, T* y, bool full) const {
    if (low && !full) return bf16_gemm(*low, !t, x, static_cast<std::size_t>(cols), short_side, y, long_side, *packed);
    gemm(t, false, bl, cols, bs, T(1), a, lda, x, bs, T(0), y, bl);
  }

  // z (short x cols) = M^T y for y (long x cols).
  void backward(const T* y, blas_int cols, T* z, bool full) const {
    if (low && !full) return bf16_gemm(*low, t, y, static_cast<std::size_t>(cols), long_side, z, short_side, *packed);
    gemm(!t, false, bs, cols, bl, T(1), a, lda, y, bl, T(0), z, bs);
  }
};

// An orthonormal basis of the tall column-major m x n a, in place: CholeskyQR2, or Householder
// QR where CholeskyQR2 cannot be trusted.
template <class T>
void orthonormalize(T* a, blas_int m, blas_int n, OrthWorkspace<T>& ws) {
  if (orthonormalize_but_factor(a, m, n, m, ws)) trsm_right_upper(m, n, ws.gram.data(), n, a, m);
}

// The singular values (descending, float64) of the column-major short x d matrix w, whose first
// `known` columns were given to the previous call: only the new columns' part of the Gram matrix
// (kept in ws.gram64) is computed. Their squares' rounding makes values below about 1e-8 of the
// largest inexact, which only ever concerns the checks that use them when those are far from
// deciding anything.
template <class T>
const std::vector<double>& ritz_values(const T* w, std::size_t short_side, std::size_t known, std::size_t d,
                                       RsvdWorkspace<T>& ws) {
  if (known == 0) ws.gram_ld = 0;
  if (d > ws.gram_ld) {  // a wider Gram matrix, its known part moved over
    const std::size_t ld = std::max(d, 2 * ws.gram_ld);
    std::vector<double> wider(ld * ld);
    for (std::size_t j = 0; j < known; ++j)
      std::copy_n(ws.gram64.begin() + static_cast<std::ptrdiff_t>(j * ws.gram_ld), known,
                  wider.begin() + static_cast<std::ptrdiff_t>(j * ld));
    ws.gram64.swap(wider);
    ws.gram_ld = ld;
  }
  const std::size_t fresh = d - known, ld = ws.gram_ld;
  ws.w64.resize(short_side * d);
  std::copy(w + known * short_side, w + d * short_side, ws.w64.begin() + static_cast<std::ptrdiff_t>(known * short_side));
  ws.eig.resize(d * std::max(fresh, d));
  cross(static_cast<blas_int>(short_side), static_cast<blas_int>(d), static_cast<blas_int>(fresh), ws.w64.data(),
        static_cast<blas_int>(short_side), ws.w64.data() + known * short_side, static_cast<blas_int>(short_side),
        ws.eig.data());
  for (std::size_t j = 0; j < fresh; ++j)
    std::copy_n(ws.eig.begin() + static_cast<std::ptrdiff_t>(j * d), d,
                ws.gram64.begin() + static_cast<std::ptrdiff_t>((known + j) * ld));
  for (std::size_t j = 0; j < d; ++j)  // the eigensolver destroys its input: a copy, leading dimension d
    std::copy_n(ws.gram64.begin() + static_cast<std::ptrdiff_t>(j * ld), j + 1,
                ws.eig.begin() + static_cast<std::ptrdiff_t>(j * d));
  ws.ritz.resize(d);
  check_lapack(symmetric_eigenvalues(static_cast<blas_int>(d), ws.eig.data(), static_cast<blas_int>(d), ws.ritz.data()),
               "dsyevd");
  std::reverse(ws.ritz.begin(), ws.ritz.end());
  for (double& v : ws.ritz) v = std::sqrt(std::max(v, 0.0));
  return ws.ritz;
}

// The check of the bfloat16 passes: A's rounding (of Frobenius norm `rounding`) must be at most
// kRoundingShare of sigma_{k+1}(A), of which the projected matrix's (k+1)-th singular value less
// the rounding is a lower bound (interlacing: projecting A onto a basis raises no singular value,
// and the rounding moves each by at most its norm). The first projected matrix, one block of the
// sketch, may underestimate sigma_{k+1} several times: there the check passes, fails when even
// kUnderestimate times its value would, and otherwise waits for the last projected matrix, whose
// verdict is final.
constexpr double kUnderestimate = 4;

struct Bf16Check {
  enum State { open, waiting, passed } state = open;

  // False when the bfloat16 passes must be abandoned.
  bool judge(double rounding, const std::vector<double>& ritz, std::size_t k, bool last) {
    if (ritz.size() <= k) return !last;
    if (rounding <= kRoundingShare * (ritz[k] - rounding)) {
      state = passed;
      return true;
    }
    state = waiting;
    return !last && rounding <= kRoundingShare * kUnderestimate * ritz[k];
  }
};

// u, s, vh from the range finder's result: the long-side basis (long x d; with r2 given, Q R2 for
// an orthonormal Q) and w = M^T Q (short x d, destroyed). The SVD w = Ub S Vb^T gives
// M ~ Q w^T = (Q Vb) S Ub^T, where Q Vb = basis C for the d x k matrix C = R2^-1 Vb (first k
// columns).
// Only the leading k triplets are needed: from w's float64 Gram matrix where that is exact to
// float32's precision (gram_top_svd), else from the whole SVD (tall_svd).
template <class T>
void finish(const TallView<T>& M, const T* basis, T* w, std::size_t d, const T* r2, std::size_t k, T* u, T* s,
            T* vh, RsvdWorkspace<T>& ws) {
  const blas_int bd = static_cast<blas_int>(d), bk = static_cast<blas_int>(k);
  ws.ub.resize(M.short_side * d);
  ws.s.resize(d);
  ws.coef.resize(d * k);
  if (!gram_top_svd(w, M.bs, bd, bk, ws.s.data(), ws.ub.data(), ws.coef.data(), ws.small)) {
    ws.vbt.resize(d * d);
    tall_svd(w, M.bs, bd, ws.s.data(), ws.ub.data(), ws.vbt.data(), ws.small);
    for (std::size_t j = 0; j < k; ++j)
      for (std::size_t i = 0; i < d; ++i) ws.coef[i + j * d] = ws.vbt[j + i * d];
  }
  std::copy(ws.s.begin(), ws.s.begin() + static_cast<std::ptrdiff_t>(k), s);
  if (r2) blas_trsm_upper(CblasLeft, bd, bk, r2, bd, ws.coef.data(), bd);
  if (!M.t) {
    // M = a^T: row-major u (stored as column-major k x m) is the transpose of Ub's first k
    // columns; row-major vh (column-major n x k) is basis C.
    const std::size_t m = M.short_side;
    for (std::size_t i = 0; i < m; ++i)
      for (std::size_t j = 0; j < k; ++j) u[j + i * k] = ws.ub[i + j * m];
    gemm(false, false, M.bl, bk, bd, T(1), basis, M.bl, ws.coef.data(), bd, T(0), vh, M.bl);
  } else {
    // M = a: row-major u (column-major k x m) is (basis C)^T; row-major vh (column-major n x k)
    // is Ub's first k columns.
    gemm(true, true, bk, M.bl, bd, T(1), ws.coef.data(), bd, basis, M.bl, T(0), u, bk);
    std::copy(ws.ub.begin(), ws.ub.begin() + static_cast<std::ptrdiff_t>(M.short_side * k), vh);
  }
}

// Subspace iteration from Y (ws.y, long x l): alternately Z = M^T Y and Y = M Z, each basis
// re-orthonormalised before the next product. A long-side Y only gets its Cholesky factor R:
// Z = (M^T Y) R^-1 equals M^T (Y R^-1), with the triangular solve on the short side instead of the
// long one. Intermediate bases only need to be well conditioned; the last one, which the
// projected matrix is built on, must be orthonormal to working precision: Y = Q R2, with R2 left
// to apply to smaller matrices. With `guarded` bfloat16 passes, returns false as soon as the
// first projected matrix shows that they would cost accuracy.
template <class T>
bool power_iterate(const TallView<T>& M, std::size_t k, std::size_t l, std::size_t iterations, bool guarded, T* u,
                   T* s, T* vh, RsvdWorkspace<T>& ws) {
  const blas_int bsk = static_cast<blas_int>(l), bs = M.bs, bl = M.bl;
  ws.z.resize(M.short_side * l);
  Bf16Check check;
  if (!guarded) check.state = Bf16Check::passed;
  const auto judge = [&](bool last) {  // Z = M^T Q: its singular values are the projected matrix's
    return check.judge(M.low->rounding, ritz_values(ws.z.data(), M.short_side, 0, l, ws), k, last);
  };
  for (std::size_t it = 0; it < iterations; ++it) {
    const bool factored = gram_factor(ws.y.data(), bl, bsk, bl, ws.orth.gram);
    if (!factored) orthonormalize_householder(ws.y.data(), bl, bsk, bl, ws.orth.tau);
    M.backward(ws.y.data(), bsk, ws.z.data(), false);
    if (factored) trsm_right_upper(bs, bsk, ws.orth.gram.data(), bsk, ws.z.data(), bs);
    if (check.state == Bf16Check::open && !judge(false)) return false;
    condition_basis(ws.z.data(), bs, bsk, bs, ws.orth);
    M.forward(ws.z.data(), bsk, ws.y.data(), false);
  }
  const bool r2_pending = orthonormalize_but_factor(ws.y.data(), bl, bsk, bl, ws.orth);
  M.backward(ws.y.data(), bsk, ws.z.data(), true);  // the last pass in the input's precision
  const T* r2 = ws.orth.gram.data();
  if (r2_pending) trsm_right_upper(bs, bsk, r2, bsk, ws.z.data(), bs);
  if (check.state != Bf16Check::passed && !judge(true)) return false;
  finish(M, ws.y.data(), ws.z.data(), l, r2_pending ? r2 : nullptr, k, u, s, vh, ws);
  return true;
}

// Subspace iteration: Y = M Omega, then power_iters iterations.
template <class T>
bool subspace_iteration(const TallView<T>& M, const RsvdParams& p, const T* omega, bool guarded, T* u, T* s, T* vh,
                        RsvdWorkspace<T>& ws) {
  const std::size_t l = sketch_width(M.long_side, M.short_side, p);
  ws.y.resize(M.long_side * l);
  M.forward(omega, static_cast<blas_int>(l), ws.y.data(), false);
  return power_iterate(M, p.k, l, p.power_iters, guarded, u, s, vh, ws);
}

// Block Krylov blocks of b columns in a space of at most min(m, n) dimensions: the depth used.
inline std::size_t krylov_depth(std::size_t short_side, std::size_t b, std::size_t power_iters) {
  return std::min(power_iters, short_side / b - 1);
}

// The adaptive stop's decision after a block: the estimate of ||A - U S Vh||_2 is within tol of
// ||A||_2, or (when no rank-k approximation can be: sigma_{k+1} > tol sigma_1 is certain) the
// leading k + 1 singular values of the projected matrix moved by less than tol sigma_1 over the
// last block, so that further blocks cannot improve the result by the requested accuracy.
struct AdaptiveStop {
  double tol;
  std::size_t k;
  std::vector<double> previous;

  bool done(const std::vector<double>& ritz, double space_residual, double rounding) {
    const std::size_t d = ritz.size();
    const double top = ritz[0] - rounding;
    const double truncation = (d > k ? ritz[k] : 0.0) + rounding;
    const double space = kProbeFactor * space_residual + rounding;
    if (std::hypot(space, truncation) <= tol * top) return true;
    bool settled = d > k && ritz[k] - rounding > tol * (ritz[0] + rounding) && previous.size() > k;
    for (std::size_t i = 0; settled && i <= k; ++i) settled = ritz[i] - previous[i] <= tol * ritz[0];
    previous.assign(ritz.begin(), ritz.begin() + static_cast<std::ptrdiff_t>(std::min(d, k + 1)));
    return settled;
  }
};

// The largest Euclidean norm among the columns of the column-major rows x cols x.
template <class T>
double largest_column_norm(const T* x, std::size_t rows, std::size_t cols) {
  double largest = 0;
  for (std::size_t c = 0; c < cols; ++c) {
    double sum = 0;
    for (std::size_t i = 0; i < rows; ++i) sum += static_cast<double>(x[i + c * rows]) * x[i + c * rows];
    largest = std::max(largest, std::sqrt(sum));
  }
  return largest;
}

// A block whose part outside the earlier blocks is this small a share of it is rounding noise: the
// space is exhausted to working precision (a fast-decaying spectrum, a matrix of low rank). Kept,
// its orthonormalised noise would only add rounding: on a spectrum decaying below float32's
// precision within the first block, two such blocks made the error 8 times subspace
// iteration's. The fixed number of passes left is then spent as subspace iteration continued
// from the block, which takes the last digits out of a low-rank matrix's basis (half the error
// of stopping there, in float32).
template <class T>
constexpr double kExhausted = 64 * std::numeric_limits<T>::epsilon();

template <class T>
double frobenius(const T* x, std::size_t count) {
  double sum = 0;
  for (std::size_t i = 0; i < count; ++i) sum += static_cast<double>(x[i]) * x[i];
  return std::sqrt(sum);
}

// x (long x cols) <- x - Q (Q^T x) for the orthonormal long x d Q.
template <class T>
void remove_span(const T* q, std::size_t long_side, std::size_t d, T* x, std::size_t cols, RsvdWorkspace<T>& ws) {
  const blas_int bl = static_cast<blas_int>(long_side), bd = static_cast<blas_int>(d), bc = static_cast<blas_int>(cols);
  ws.coef.resize(d * cols);
  cross(bl, bd, bc, q, bl, x, bl, ws.coef.data());
  gemm(false, false, bl, bc, bd, T(-1), q, bl, ws.coef.data(), bd, T(1), x, bl);
}

// Block Krylov iteration. Q_0 = orth(M Omega); then per block W_j = M^T Q_j (a block of the
// projected matrix M^T Q) and Q_{j+1} = orth(M W_j) with the earlier blocks removed, by block
// classical Gram-Schmidt run twice, each run followed by one Cholesky QR pass (BCGS2: Barlow &
// Smoktunowicz, Numer. Math. 123, 2013; Householder QR where the Gram matrix is not positive
// definite). The first run leaves a basis within eps cond^2 of orthonormal, which the second
// makes orthonormal to working precision, also when a block is numerically rank deficient (a
// float32 spectrum falling below float32's precision inside the space): one run left the basis
// 2 % from orthonormal on such a spectrum, and the error 15 times subspace iteration's. A block that the earlier ones
// span to working precision ends the Krylov iteration (kExhausted). With tol, probes M w of r
// further Gaussian columns, their residuals kept orthogonal to the blocks, bound
// ||(I - QQ^T) A|| after every block.
template <class T>
bool block_krylov(const TallView<T>& M, const RsvdParams& p, const T* omega, bool guarded, T* u, T* s, T* vh,
                  RsvdWorkspace<T>& ws) {
  const std::size_t ss = M.short_side, ls = M.long_side, b = sketch_width(ls, ss, p);
  const std::size_t depth = krylov_depth(ss, b, p.power_iters);
  const bool adaptive = p.tol > 0;
  const std::size_t r = adaptive ? kProbes : 0;
  const blas_int bb = static_cast<blas_int>(b), bl = M.bl;
  const double rounding = M.low ? M.low->rounding : 0.0;
  ws.y.resize(ls * (b + r));
  M.forward(omega, static_cast<blas_int>(b + r), ws.y.data(), false);
  ws.basis.assign(ws.y.begin(), ws.y.begin() + static_cast<std::ptrdiff_t>(ls * b));
  orthonormalize(ws.basis.data(), bl, bb, ws.orth);
  if (adaptive) {
    ws.probes.assign(ws.y.begin() + static_cast<std::ptrdiff_t>(ls * b), ws.y.end());
    remove_span(ws.basis.data(), ls, b, ws.probes.data(), r, ws);
  }
  AdaptiveStop stop{p.tol, p.k, {}};
  Bf16Check check;
  if (!guarded) check.state = Bf16Check::passed;
  std::size_t d = 0;
  std::size_t gram_known = 0;  // the columns of W whose Gram matrix ritz_values holds (it skips blocks)
  for (std::size_t j = 0;; ++j) {
    const bool last = j == depth;
    ws.w.resize(ss * (d + b));
    M.backward(ws.basis.data() + d * ls, bb, ws.w.data() + d * ss, last && !adaptive);
    const std::size_t known = d;
    d += b;
    const bool judging = check.state == Bf16Check::open && d > p.k;
    if (judging || adaptive) {
      const std::vector<double>& ritz = ritz_values(ws.w.data(), ss, gram_known, d, ws);
      gram_known = d;
      if (judging && !check.judge(rounding, ritz, p.k, false)) return false;
      if (adaptive && stop.done(ritz, largest_column_norm(ws.probes.data(), ls, r), rounding)) break;
    }
    if (last) break;
    ws.basis.resize(ls * (d + b));
    T* next = ws.basis.data() + d * ls;
    M.forward(ws.w.data() + known * ss, bb, next, false);
    ws.y.assign(next, next + ls * b);
    remove_span(ws.basis.data(), ls, d, next, b, ws);
    if (frobenius(next, ls * b) <= kExhausted<T> * frobenius(ws.y.data(), ls * b)) {
      if (adaptive) break;
      return power_iterate(M, p.k, b, depth - j - 1, check.state != Bf16Check::passed, u, s, vh, ws);
    }
    condition_basis(next, bl, bb, bl, ws.orth);
    remove_span(ws.basis.data(), ls, d, next, b, ws);
    condition_basis(next, bl, bb, bl, ws.orth);
    if (adaptive) remove_span(next, ls, b, ws.probes.data(), r, ws);
  }
  // The adaptive stop learns which block is the last only after its pass: with bfloat16 passes,
  // that block of the projected matrix is taken again in the input's precision, as a fixed depth
  // takes it from the start.
  if (adaptive && M.low) M.backward(ws.basis.data() + (d - b) * ls, bb, ws.w.data() + (d - b) * ss, true);
  if (check.state != Bf16Check::passed && !check.judge(rounding, ritz_values(ws.w.data(), ss, 0, d, ws), p.k, true))
    return false;
  finish(M, ws.basis.data(), ws.w.data(), d, static_cast<const T*>(nullptr), p.k, u, s, vh, ws);
  return true;
}

// Whether the bfloat16 passes can run and be checked: the precision asks for them, this CPU has
// them, the matrix is large enough to gain from them, and (for the automatic choice) the
// projected matrix will have a (k+1)-th singular value to check them against.
inline bool bf16_passes(std::size_t m, std::size_t n, const RsvdParams& p) {
  if (p.precision == RsvdPrecision::full || !bf16_supported()) return false;
  if (p.precision == RsvdPrecision::bfloat16) return true;
  const std::size_t b = sketch_width(m, n, p), ss = std::min(m, n);
  const std::size_t width = p.method == RsvdMethod::krylov ? (krylov_depth(ss, b, p.power_iters) + 1) * b : b;
  return m * n >= kBf16MinEntries && width > p.k;
}

template <class T>
bool find_range(const TallView<T>& M, const RsvdParams& p, const T* omega, bool guarded, T* u, T* s, T* vh,
                RsvdWorkspace<T>& ws) {
  return p.method == RsvdMethod::krylov ? block_krylov(M, p, omega, guarded, u, s, vh, ws)
                                        : subspace_iteration(M, p, omega, guarded, u, s, vh, ws);
}

// a: row-major m x n, its largest magnitude max_abs; omega from gaussian_sketch. Writes u
// (row-major m x k), s (k) and vh (row-major k x n): with bfloat16 passes where bf16_passes
// allows them and the check that follows keeps them, else from the start again in the input's
// precision.
template <class T>
void rsvd_rowmajor(const T* a, std::size_t m, std::size_t n, double max_abs, const RsvdParams& p, const T* omega,
                   T* u, T* s, T* vh, RsvdWorkspace<T>& ws) {
  TallView<T> M(a, m, n);
  if (bf16_passes(m, n, p)) {
    to_bf16(a, m, n, max_abs, ws.low);
    M.low = &ws.low;
    M.packed = &ws.packed;
    if (find_range(M, p, omega, p.precision == RsvdPrecision::automatic, u, s, vh, ws)) return;
    M.low = nullptr;
  }
  find_range(M, p, omega, false, u, s, vh, ws);
}

// rsvd_rowmajor for any finite a, its largest magnitude given: a matrix outside the safe range
// is scaled by a power of two (exact) into a copy, and its singular values scaled back. Those
// may then exceed the dtype, which the caller checks.
template <class T>
void rsvd_scaled_rowmajor(const T* a, std::size_t m, std::size_t n, double max_abs, const RsvdParams& p,
                          const T* omega, T* u, T* s, T* vh, RsvdWorkspace<T>& ws) {
  const int e = rescaling_exponent<T>(max_abs);
  if (e == 0) return rsvd_rowmajor(a, m, n, max_abs, p, omega, u, s, vh, ws);
  ws.scaled.resize(m * n);
  for (std::size_t i = 0; i < m * n; ++i) ws.scaled[i] = std::ldexp(a[i], -e);
  rsvd_rowmajor(ws.scaled.data(), m, n, std::ldexp(max_abs, -e), p, omega, u, s, vh, ws);
  for (std::size_t j = 0; j < p.k; ++j) s[j] = std::ldexp(s[j], e);
}

// The batched entry point of api.hpp: every matrix is scanned (NaN and inf refused), decomposed
// with the one sketch, on its own thread when the batch keeps every thread busy, and the singular
// values scaled back must fit the dtype.
template <class T>
void rsvd(const T* a, std::size_t batch, std::size_t m, std::size_t n, const RsvdParams& p, T* u, T* s, T* vh) {
  if (p.tol > 0 && p.method != RsvdMethod::krylov)
    throw std::invalid_argument("tol: the adaptive depth needs method='krylov'");
  if (p.precision == RsvdPrecision::bfloat16 && !bf16_supported())
    throw std::invalid_argument("precision: bfloat16 passes need a CPU with AVX512-BF16, which this one lacks");
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
