// Inputs whose chain outputs are chosen targets, found through the forward map, which never leaves
// an activation's range: Gauss-Newton in coordinates of the first layer's row space.
//
// The inputs are x = start + V c, V (n x r) the first layer's signal basis: the start's part in
// that layer's rejected space is kept, ||x - start|| = ||c||, and the chain's Jacobian in c is
// (outputs x r) instead of (outputs x n). Each step is the minimum-norm dc with J dc = y - f(x), so
// the answer stays near the start, halved until the target's error drops. J is computed exactly
// (from the output back, one matrix product per layer over a chunk of targets) at the start and
// wherever a step from an estimated J failed; after each accepted step, Broyden's rank-one update
// makes J map that step to the change of the outputs it caused (and J J^T follows by a rank-two
// update), for the price of a matrix-vector product instead of a pass over every layer per output.
//
// Targets run in chunks whose size depends on the chain alone, one thread per chunk, so the
// results do not depend on the thread count. What is not the method's own work is kept out of the
// loop: each thread holds one NewtonSolver, whose buffers are sized once and reused by every chunk
// it takes (no allocation, page fault or zero-filling per step); each matrix product is one
// OpenBLAS call, so a layer's weights are packed once per product rather than once per block; the
// activations run through the vectorised loops of activations.hpp; the per-target updates are
// loops the compiler vectorises.
#pragma once

#include "activations.hpp"
#include "api.hpp"
#include "blas.hpp"
#include "chain.hpp"
#include "checks.hpp"
#include "parallel.hpp"

#include <algorithm>
#include <atomic>
#include <cmath>
#include <cstddef>
#include <cstdint>
#include <limits>
#include <optional>
#include <stdexcept>
#include <utility>
#include <vector>

namespace vsfast {

namespace detail {

// Euclidean norm of n values, in float64, scaled by the largest magnitude so no square overflows.
template <class V>
double scaled_norm(const V* v, std::size_t n) {
  double peak = 0;
  for (std::size_t i = 0; i < n; ++i) peak = std::max(peak, std::abs(static_cast<double>(v[i])));
  if (!(peak > 0) || !std::isfinite(peak)) return peak;
  double sum = 0;
  for (std::size_t i = 0; i < n; ++i) {
    const double scaled = static_cast<double>(v[i]) / peak;
    sum += scaled * scaled;
  }
  return std::sqrt(sum) * peak;
}

// Row-major C (m x n) = alpha A op(B) + beta C, A (m x k), B (n x k) with `tb` else (k x n), as
// one OpenBLAS call on the calling thread: the solver's unit of parallelism is the chunk, and
// parallel.hpp's blocked gemm would pack the shared operand (a layer's weights) once per block.
template <class T>
void gemm_once(bool tb, std::size_t m, std::size_t n, std::size_t k, T alpha, const T* a, const T* b, T beta, T* c) {
  if (m == 0 || n == 0) return;
  blas_gemm(tb, false, static_cast<blas_int>(n), static_cast<blas_int>(m), static_cast<blas_int>(k), alpha, b,
            static_cast<blas_int>(tb ? k : n), a, static_cast<blas_int>(k), beta, c, static_cast<blas_int>(n));
}

// sum_k a[k] b[k] in float64, as eight interleaved partial sums added in a fixed order: the
// compiler vectorises the independent sums (a single running sum is a chain of dependent
// additions, 4 cycles each), and the order is the same on every CPU and thread count.
template <class T>
double dot(const T* a, const double* b, std::size_t n) {
  constexpr std::size_t lanes = 8;
  double part[lanes] = {};
  std::size_t k = 0;
  for (; k + lanes <= n; k += lanes)
    for (std::size_t q = 0; q < lanes; ++q) part[q] += static_cast<double>(a[k + q]) * b[k + q];
  for (std::size_t q = 0; k < n; ++k, ++q) part[q] += static_cast<double>(a[k]) * b[k];
  return ((part[0] + part[4]) + (part[2] + part[6])) + ((part[1] + part[5]) + (part[3] + part[7]));
}

}  // namespace detail

// One thread's Gauss-Newton solver: buffers for up to `capacity` targets, reused chunk after
// chunk. Every buffer row a chunk reads was written for that chunk first, so a chunk's result
// does not depend on what the thread solved before.
template <class T>
class NewtonSolver {
 public:
  NewtonSolver(const Chain<T>& chain, std::size_t capacity)
      : chain_(chain), depth_(chain.depth()), n_(chain.input_dim()), r_(chain.ranks()[0]), out_(chain.output_dim()),
        m0_(chain.layer(0).m) {
    std::size_t widest = r_;
    for (std::size_t l = 0; l < depth_; ++l) widest = std::max(widest, chain.layer(l).m);
    start_.resize(capacity * n_);
    z0_start_.resize(capacity * m0_);
    y_norm_.resize(capacity);
    c_.resize(capacity * r_);
    steps_.resize(capacity);
    now_.resize(chain, capacity);
    trial_.resize(chain, capacity);
    trial_c_.resize(capacity * r_);
    jac_.resize(capacity * out_ * r_);
    gram_.resize(capacity * out_ * out_);
    back_a_.resize(capacity * out_ * widest);
    back_b_.resize(capacity * out_ * widest);
    slopes_.resize(widest);
    jac_double_.resize(out_ * r_);
    direction_.resize(capacity * r_);
    damping_.resize(capacity);
    before_.resize(capacity * out_);
    fresh_.resize(capacity);
    stale_.resize(capacity);
    moved_.resize(capacity);
    for (auto* list : {&all_, &active_, &going_, &renew_, &pending_, &retry_, &ids_}) list->reserve(capacity);
    chol_.resize(out_ * out_);
    rhs_.resize(out_);
    step_.resize(r_);
    js_.resize(out_);
    u_.resize(out_);
  }

  // The start rows of the next chunk (count x inputs), for the caller to fill.
  T* start() { return start_.data(); }

  // Replaces the first `count` start rows by their part in the first layer's rejected space,
  // start - (start V) V^T, as project_rowmajor computes it.
  void keep_rejected_part(std::size_t count) {
    if (!r_) return;
    T* coef = trial_c_.data();  // count x r: unused until run()
    T* signal = grow(signal_, count * n_).data();
    detail::gemm_once(true, count, r_, n_, T(1), start_.data(), chain_.signal_rows(0).data(), T(0), coef);
    detail::gemm_once(false, count, n_, r_, T(1), coef, chain_.signal_rows(0).data(), T(0), signal);
    for (std::size_t i = 0; i < count * n_; ++i) start_[i] -= signal[i];
  }

  // Solves `count` targets y (count x outputs) from the start rows.
  void run(const T* y, std::size_t count, double tol, std::size_t max_iter) {
    y_ = y;
    count_ = count;
    const auto& first = chain_.layer(0);
    detail::gemm_once(true, count, m0_, n_, T(1), start_.data(), first.weight.data(), T(0), z0_start_.data());
    if (!first.bias.empty())
      for (std::size_t t = 0; t < count; ++t)
        for (std::size_t j = 0; j < m0_; ++j) z0_start_[t * m0_ + j] += first.bias[j];
    for (std::size_t t = 0; t < count; ++t) y_norm_[t] = detail::scaled_norm(y + t * out_, out_);
    std::fill_n(c_.begin(), count * r_, T(0));
    std::fill_n(steps_.begin(), count, 0);
    all_.resize(count);
    for (std::size_t t = 0; t < count; ++t) all_[t] = t;
    evaluate(all_, c_.data(), now_);
    std::fill_n(fresh_.begin(), count, 0);
    std::fill_n(stale_.begin(), count, 1);
    active_.clear();
    for (std::size_t t = 0; t < count; ++t)
      if (!(now_.err[t] <= tol)) active_.push_back(t);
    for (std::size_t iter = 0; iter < max_iter && !active_.empty(); ++iter) {
      renew_.clear();
      for (std::size_t t : active_)
        if (stale_[t]) renew_.push_back(t);
      if (!renew_.empty()) {
        jacobian(renew_);
        for (std::size_t t : renew_) fresh_[t] = 1, stale_[t] = 0;
      }
      min_norm_steps(active_);
      for (std::size_t a = 0; a < active_.size(); ++a) {
        std::copy_n(now_.res.data() + active_[a] * out_, out_, before_.data() + a * out_);
        damping_[a] = T(1);
        moved_[a] = 0;
      }
      line_search(active_);
      going_.clear();
      for (std::size_t a = 0; a < active_.size(); ++a) {
        const std::size_t t = active_[a];
        if (moved_[a]) {
          ++steps_[t];
          broyden_update(t, direction_.data() + a * r_, damping_[a], before_.data() + a * out_);
          fresh_[t] = 0;
          if (!(now_.err[t] <= tol)) going_.push_back(t);
        } else if (!fresh_[t]) {  // an estimated Jacobian's step failed: compute the chain's own
          stale_[t] = 1;
          going_.push_back(t);
        }  // else the exact Jacobian's step failed too: the target is at its rounding floor
      }
      active_.swap(going_);
    }
  }

  // x (count x inputs) = start + c V^T; steps and relative output error per target.
  void write(T* x, std::int64_t* steps, double* error) const {
    std::copy_n(start_.begin(), count_ * n_, x);
    if (r_) detail::gemm_once(false, count_, n_, r_, T(1), c_.data(), chain_.signal_rows(0).data(), T(1), x);
    std::copy_n(steps_.begin(), count_, steps);
    std::copy_n(now_.err.begin(), count_, error);
  }

 private:
  // The chain at some targets' coordinates, one row per target: every layer's pre-activations
  // and activations, the residuals y - f(x) and the relative errors.
  struct Evaluation {
    std::vector<std::vector<T>> pre, post;  // per layer, rows x m_l
    std::vector<double> res, err;           // rows x outputs, rows

    void resize(const Chain<T>& chain, std::size_t rows) {
      pre.resize(chain.depth());
      post.resize(chain.depth());
      for (std::size_t l = 0; l < chain.depth(); ++l) {
        pre[l].resize(rows * chain.layer(l).m);
        post[l].resize(rows * chain.layer(l).m);
      }
      res.resize(rows * chain.output_dim());
      err.resize(rows);
    }
  };

  static std::vector<T>& grow(std::vector<T>& v, std::size_t size) {
    if (v.size() < size) v.resize(size);
    return v;
  }

  // Row p of `e` = the chain at targets[p]'s coordinates, row p of coords (r values).
  void evaluate(const std::vector<std::size_t>& targets, const T* coords, Evaluation& e) const {
    const std::size_t rows = targets.size();
    if (!rows) return;
    T* pre0 = e.pre[0].data();
    for (std::size_t p = 0; p < rows; ++p) std::copy_n(z0_start_.data() + targets[p] * m0_, m0_, pre0 + p * m0_);
    if (r_) detail::gemm_once(true, rows, m0_, r_, T(1), coords, chain_.first_lift().data(), T(1), pre0);
    activate(chain_.layer(0).activation, pre0, static_cast<const T*>(nullptr), m0_, e.post[0].data(), rows * m0_);
    for (std::size_t l = 1; l < depth_; ++l) {
      const auto& L = chain_.layer(l);
      T* pre = e.pre[l].data();
      detail::gemm_once(true, rows, L.m, L.n, T(1), e.post[l - 1].data(), L.weight.data(), T(0), pre);
      if (!L.bias.empty())
        for (std::size_t p = 0; p < rows; ++p)
          for (std::size_t j = 0; j < L.m; ++j) pre[p * L.m + j] += L.bias[j];
      activate(L.activation, static_cast<const T*>(pre), static_cast<const T*>(nullptr), L.m, e.post[l].data(),
               rows * L.m);
    }
    const T* h = e.post[depth_ - 1].data();
    for (std::size_t p = 0; p < rows; ++p) {
      const T* y = y_ + targets[p] * out_;
      double* res = e.res.data() + p * out_;
      for (std::size_t j = 0; j < out_; ++j) res[j] = static_cast<double>(y[j]) - static_cast<double>(h[p * out_ + j]);
      const double y_norm = y_norm_[targets[p]];
      e.err[p] = detail::scaled_norm(res, out_) / (y_norm > 0 ? y_norm : 1.0);
    }
  }

  // Layer l's pre-activation is linear in the previous layer's output through W_l, the first
  // layer's in c through U_r S_r: (rows m_l x cols) row-major.
  const T* map_of(std::size_t l) const { return l ? chain_.layer(l).weight.data() : chain_.first_lift().data(); }
  std::size_t cols_of(std::size_t l) const { return l ? chain_.layer(l).n : r_; }

  // jac_ of `targets` = d outputs / d c at their current coordinates, and gram_ = J J^T in
  // float64, from the last layer back: diag(act'(z_L)) M_L, then per layer a column scaling by
  // act'(z_l) and a product with M_l, over all the targets' rows at once.
  void jacobian(const std::vector<std::size_t>& targets) {
    const std::size_t rows = targets.size() * out_, last = depth_ - 1;
    std::size_t cols = cols_of(last);
    T* a = back_a_.data();
    T* b = back_b_.data();
    T* slopes = slopes_.data();
    for (std::size_t i = 0; i < targets.size(); ++i) {
      const std::size_t t = targets[i];
      activation_slopes(chain_.layer(last).activation, now_.pre[last].data() + t * out_,
                        now_.post[last].data() + t * out_, slopes, out_);
      for (std::size_t o = 0; o < out_; ++o) {
        const T* w = map_of(last) + o * cols;
        T* row = a + (i * out_ + o) * cols;
        for (std::size_t j = 0; j < cols; ++j) row[j] = slopes[o] * w[j];
      }
    }
    for (std::size_t l = last; l-- > 0;) {
      const std::size_t m = chain_.layer(l).m;  // == cols
      for (std::size_t i = 0; i < targets.size(); ++i) {
        const std::size_t t = targets[i];
        activation_slopes(chain_.layer(l).activation, now_.pre[l].data() + t * m, now_.post[l].data() + t * m,
                          slopes, m);
        for (std::size_t o = 0; o < out_; ++o) {
          T* row = a + (i * out_ + o) * m;
          for (std::size_t j = 0; j < m; ++j) row[j] *= slopes[j];
        }
      }
      cols = cols_of(l);
      detail::gemm_once(false, rows, cols, m, T(1), a, map_of(l), T(0), b);
      std::swap(a, b);
    }
    const blas_int bo = static_cast<blas_int>(out_), br = static_cast<blas_int>(r_);
    double* j = jac_double_.data();
    for (std::size_t i = 0; i < targets.size(); ++i) {
      const T* rows_i = a + i * out_ * r_;
      std::copy_n(rows_i, out_ * r_, jac_.data() + targets[i] * out_ * r_);
      for (std::size_t k = 0; k < out_ * r_; ++k) j[k] = static_cast<double>(rows_i[k]);
      double* g = gram_.data() + targets[i] * out_ * out_;
      syrk_gram(bo, br, j, br, g, bo);  // J row-major = J^T column-major; upper triangle
      for (std::size_t p = 0; p < out_; ++p)
        for (std::size_t q = 0; q < p; ++q) g[q * out_ + p] = g[p * out_ + q];
    }
  }

  // Row a of direction_: the minimum-norm dc with J dc = residual for targets[a]: J^T w for
  // (J J^T + ridge) w = residual (the ridge, at rounding level, keeps a Jacobian that lost rank
  // solvable); zero where the factorisation fails, which the line search then drops.
  void min_norm_steps(const std::vector<std::size_t>& targets) {
    const blas_int bo = static_cast<blas_int>(out_);
    double* gram = chol_.data();
    double* w = rhs_.data();
    for (std::size_t a = 0; a < targets.size(); ++a) {
      const std::size_t t = targets[a];
      T* d = direction_.data() + a * r_;
      std::fill_n(d, r_, T(0));
      std::copy_n(gram_.data() + t * out_ * out_, out_ * out_, gram);
      double peak = 0;
      for (std::size_t o = 0; o < out_; ++o) peak = std::max(peak, gram[o * out_ + o]);
      const double ridge = std::max(1e-14 * peak, std::numeric_limits<double>::min());
      for (std::size_t o = 0; o < out_; ++o) gram[o * out_ + o] += ridge;
      std::copy_n(now_.res.data() + t * out_, out_, w);
      if (potrf_upper(bo, gram, bo) != 0 || potrs_upper(bo, gram, bo, w) != 0) continue;
      const T* j = jac_.data() + t * out_ * r_;
      for (std::size_t o = 0; o < out_; ++o) {
        const T wo = static_cast<T>(w[o]);
        const T* jo = j + o * r_;
        for (std::size_t k = 0; k < r_; ++k) d[k] += wo * jo[k];
      }
    }
  }

  // Tries c + damping * direction for every target in `targets`, halving the damping until the
  // error drops (a step from an estimated Jacobian gets one try); moves the targets that improved.
  void line_search(const std::vector<std::size_t>& targets) {
    constexpr int halvings = 12;
    pending_.resize(targets.size());
    for (std::size_t a = 0; a < pending_.size(); ++a) pending_[a] = a;
    for (int h = 0; h < halvings && !pending_.empty(); ++h) {
      ids_.resize(pending_.size());
      for (std::size_t p = 0; p < pending_.size(); ++p) {
        const std::size_t a = pending_[p], t = targets[a];
        ids_[p] = t;
        const T* c = c_.data() + t * r_;
        const T* d = direction_.data() + a * r_;
        const T damping = damping_[a];
        T* trial = trial_c_.data() + p * r_;
        for (std::size_t k = 0; k < r_; ++k) trial[k] = c[k] + damping * d[k];
      }
      evaluate(ids_, trial_c_.data(), trial_);
      retry_.clear();
      for (std::size_t p = 0; p < pending_.size(); ++p) {
        const std::size_t a = pending_[p], t = targets[a];
        if (trial_.err[p] < now_.err[t]) {
          accept(t, p);
          moved_[a] = 1;
        } else if (fresh_[t]) {
          damping_[a] /= 2;
          retry_.push_back(a);
        }
      }
      pending_.swap(retry_);
    }
  }

  // Target t moves to the coordinates of row p of the last trial.
  void accept(std::size_t t, std::size_t p) {
    std::copy_n(trial_c_.data() + p * r_, r_, c_.data() + t * r_);
    for (std::size_t l = 0; l < depth_; ++l) {
      const std::size_t m = chain_.layer(l).m;
      std::copy_n(trial_.pre[l].data() + p * m, m, now_.pre[l].data() + t * m);
      std::copy_n(trial_.post[l].data() + p * m, m, now_.post[l].data() + t * m);
    }
    std::copy_n(trial_.res.data() + p * out_, out_, now_.res.data() + t * out_);
    now_.err[t] = trial_.err[p];
  }

  // J += u s^T, u = (change - J s) / (s^T s), for the step s = damping * direction taken, where
  // change is the outputs' change (the residual's drop); and J J^T with it:
  // += u (J s)^T + (J s) u^T + (s^T s) u u^T.
  void broyden_update(std::size_t t, const T* direction, T damping, const double* before) {
    double* step = step_.data();
    for (std::size_t k = 0; k < r_; ++k) step[k] = static_cast<double>(damping * direction[k]);
    const double ss = detail::dot(step, step, r_);
    if (!(ss > 0) || !std::isfinite(ss)) return;
    T* j = jac_.data() + t * out_ * r_;
    double* js = js_.data();
    double* u = u_.data();
    for (std::size_t o = 0; o < out_; ++o) {
      js[o] = detail::dot(j + o * r_, step, r_);
      u[o] = ((before[o] - now_.res[t * out_ + o]) - js[o]) / ss;
    }
    for (std::size_t o = 0; o < out_; ++o) {
      T* row = j + o * r_;
      const double uo = u[o];
      for (std::size_t k = 0; k < r_; ++k) row[k] += static_cast<T>(uo * step[k]);
    }
    double* g = gram_.data() + t * out_ * out_;
    for (std::size_t p = 0; p < out_; ++p)
      for (std::size_t q = 0; q < out_; ++q) g[p * out_ + q] += u[p] * js[q] + js[p] * u[q] + ss * u[p] * u[q];
  }

  const Chain<T>& chain_;
  const std::size_t depth_, n_, r_, out_, m0_;
  const T* y_ = nullptr;        // the chunk's targets, count x outputs
  std::size_t count_ = 0;
  std::vector<T> start_;        // count x inputs
  std::vector<T> z0_start_;     // the first layer's pre-activations at the start
  std::vector<double> y_norm_;  // ||y|| per target
  std::vector<T> c_;            // coordinates, count x r
  std::vector<std::int64_t> steps_;
  Evaluation now_;              // the chain at c_, row t for target t
  Evaluation trial_;            // the chain at trial_c_, row p for the line search's p-th target
  std::vector<T> trial_c_;
  std::vector<T> jac_;          // count x outputs x r
  std::vector<double> gram_;    // count x outputs x outputs: J J^T
  std::vector<T> back_a_, back_b_, slopes_;  // the Jacobian's products, from the output back
  std::vector<double> jac_double_;
  std::vector<T> direction_, damping_;  // per active target
  std::vector<double> before_;          // per active target: its residual before the line search
  std::vector<char> fresh_, stale_, moved_;
  std::vector<std::size_t> all_, active_, going_, renew_, pending_, retry_, ids_;
  std::vector<double> chol_, rhs_, step_, js_, u_;
  std::vector<T> signal_;       // keep_rejected_part's, sized on first use
};

// Inputs x (rows x inputs) whose chain outputs are y (rows x outputs), to a relative error of tol
// where the iteration gets there within max_iter steps; the steps taken and the relative output
// error reached per target. Every x keeps the part of its reference (ref_rows x inputs, 1 or
// `rows` rows, or none: null) in the first layer's rejected space; its part in the row space
// starts at the reference's with `from_reference` (then x stays near the reference), else at 0
// (x stays near the minimum-norm answer plus that rejected part). The entry point of api.hpp.
template <class T>
void solve(const Chain<T>& chain, const T* y, std::size_t rows, const T* reference, std::size_t ref_rows,
           bool from_reference, double tol, std::size_t max_iter, T* x, std::int64_t* steps, double* error) {
  const std::size_t n = chain.input_dim(), m = chain.output_dim(), r = chain.ranks()[0];
  require_finite(y, rows * m, "Y");
  if (reference) require_finite(reference, ref_rows * n, "reference");
  // Targets per chunk: 128 keeps the GEMMs at full speed and the threads balanced; fewer where a
  // target's Jacobian and Gram matrix would take more than 512 KiB (wide outputs). It depends on
  // the chain alone, so the results do not depend on the thread count.
  const std::size_t per_target = m * (r * sizeof(T) + m * sizeof(double)) + 1;
  const std::size_t chunk = std::clamp<std::size_t>((std::size_t(64) << 20) / per_target, 1, 128);
  const std::size_t chunks = (rows + chunk - 1) / chunk;
  if (r == 0) max_iter = 0;  // the first layer sees nothing of its input: nothing moves
  const int workers = static_cast<int>(std::min<std::size_t>(chunks, static_cast<std::size_t>(num_threads())));
  std::atomic<std::size_t> next{0};
  // One solver per thread, taking chunks until none is left.
  parallel_for(static_cast<std::size_t>(workers), workers, [&](std::size_t) {
    std::optional<NewtonSolver<T>> solver;
    for (std::size_t i; (i = next.fetch_add(1)) < chunks;) {
      if (!solver) solver.emplace(chain, std::min(chunk, rows));
      const std::size_t begin = i * chunk, count = std::min(chunk, rows - begin);
      T* start = solver->start();
      if (reference) {
        for (std::size_t t = 0; t < count; ++t)
          std::copy_n(reference + (ref_rows == 1 ? 0 : begin + t) * n, n, start + t * n);
        if (!from_reference) solver->keep_rejected_part(count);
      } else {
        std::fill_n(start, count * n, T(0));
      }
      solver->run(y + begin * m, count, tol, max_iter);
      solver->write(x + begin * n, steps + begin, error + begin);
    }
  });
  require_representable(x, rows * n, "the solved input");
  // Steps are taken only where the error drops: a non-finite one is the start's.
  if (!std::all_of(error, error + rows, [](double e) { return std::isfinite(e); }))
    throw std::overflow_error(overflow_message<T>("the chain's output at the start"));
}

}  // namespace vsfast
