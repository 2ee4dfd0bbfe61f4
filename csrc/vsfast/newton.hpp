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
// Targets run in chunks whose size depends on the chain alone, one thread per chunk, so the
// results do not depend on the thread count.
#pragma once

#include "api.hpp"
#include "blas.hpp"
#include "chain.hpp"
#include "checks.hpp"
#include "parallel.hpp"
#include "project.hpp"

#include <algorithm>
#include <cmath>
#include <cstddef>
#include <cstdint>
#include <limits>
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

}  // namespace detail

template <class T>
class NewtonChunk {
 public:
  // `count` targets y (count x outputs) from the inputs `start` (count x inputs).
  NewtonChunk(const Chain<T>& chain, const T* y, std::vector<T> start, std::size_t count)
      : chain_(chain), y_(y), start_(std::move(start)), count_(count), depth_(chain.depth()), r_(chain.ranks()[0]),
        out_(chain.output_dim()) {
    const auto& first = chain.layer(0);
    z0_start_.resize(count * first.m);
    gemm_rowmajor(false, true, static_cast<blas_int>(count), static_cast<blas_int>(first.m),
                  static_cast<blas_int>(first.n), T(1), start_.data(), static_cast<blas_int>(first.n),
                  first.weight.data(), static_cast<blas_int>(first.n), T(0), z0_start_.data(),
                  static_cast<blas_int>(first.m));
    add_bias(first, z0_start_.data(), count);
    y_norm_.resize(count);
    for (std::size_t t = 0; t < count; ++t) y_norm_[t] = detail::scaled_norm(y + t * out_, out_);
    c_.assign(count * r_, T(0));
    steps_.assign(count, 0);
  }

  void run(double tol, std::size_t max_iter) {
    std::vector<std::size_t> all(count_);
    for (std::size_t t = 0; t < count_; ++t) all[t] = t;
    now_ = evaluate(all, c_.data());
    jac_.resize(count_ * out_ * r_);
    gram_.resize(count_ * out_ * out_);
    std::vector<char> fresh(count_, 0), stale(count_, 1);
    std::vector<std::size_t> active;
    for (std::size_t t = 0; t < count_; ++t)
      if (!(now_.err[t] <= tol)) active.push_back(t);
    for (std::size_t iter = 0; iter < max_iter && !active.empty(); ++iter) {
      std::vector<std::size_t> renew;
      for (std::size_t t : active)
        if (stale[t]) renew.push_back(t);
      if (!renew.empty()) {
        jacobian(renew);
        for (std::size_t t : renew) fresh[t] = 1, stale[t] = 0;
      }
      const std::vector<T> direction = min_norm_steps(active);
      std::vector<T> damping(active.size(), T(1));
      std::vector<double> before(active.size() * out_);
      for (std::size_t a = 0; a < active.size(); ++a)
        std::copy_n(now_.res.begin() + static_cast<std::ptrdiff_t>(active[a] * out_), out_, before.begin() + a * out_);
      std::vector<char> moved(active.size(), 0);
      line_search(active, direction, fresh, damping, moved);
      std::vector<std::size_t> going;
      for (std::size_t a = 0; a < active.size(); ++a) {
        const std::size_t t = active[a];
        if (moved[a]) {
          ++steps_[t];
          broyden_update(t, direction.data() + a * r_, damping[a], before.data() + a * out_);
          fresh[t] = 0;
          if (!(now_.err[t] <= tol)) going.push_back(t);
        } else if (!fresh[t]) {  // an estimated Jacobian's step failed: compute the chain's own
          stale[t] = 1;
          going.push_back(t);
        }  // else the exact Jacobian's step failed too: the target is at its rounding floor
      }
      active.swap(going);
    }
  }

  // x (count x inputs) = start + c V^T; steps and relative output error per target.
  void write(T* x, std::int64_t* steps, double* error) const {
    const std::size_t n = chain_.input_dim();
    std::copy(start_.begin(), start_.end(), x);
    if (r_)
      gemm_rowmajor(false, false, static_cast<blas_int>(count_), static_cast<blas_int>(n), static_cast<blas_int>(r_),
                    T(1), c_.data(), static_cast<blas_int>(r_), chain_.signal_rows(0).data(),
                    static_cast<blas_int>(n), T(1), x, static_cast<blas_int>(n));
    std::copy(steps_.begin(), steps_.end(), steps);
    std::copy(now_.err.begin(), now_.err.end(), error);
  }

 private:
  // The chain at some targets' coordinates: every layer's pre-activations, residuals, errors.
  struct Evaluation {
    std::vector<std::vector<T>> pre, post;  // per layer, rows x m_l: before and after the activation
    std::vector<double> res, err;           // rows x outputs, rows
  };

  static void add_bias(const Layer<T>& L, T* z, std::size_t rows) {
    if (L.bias.empty()) return;
    for (std::size_t i = 0; i < rows; ++i)
      for (std::size_t j = 0; j < L.m; ++j) z[i * L.m + j] += L.bias[j];
  }

  // Rows in the order of `targets`; coords holds one row of r values per target.
  Evaluation evaluate(const std::vector<std::size_t>& targets, const T* coords) const {
    const std::size_t rows = targets.size();
    const blas_int brows = static_cast<blas_int>(rows);
    Evaluation e;
    e.pre.resize(depth_);
    e.post.resize(depth_);
    const auto& first = chain_.layer(0);
    e.pre[0].resize(rows * first.m);
    for (std::size_t i = 0; i < rows; ++i)
      std::copy_n(z0_start_.begin() + static_cast<std::ptrdiff_t>(targets[i] * first.m), first.m,
                  e.pre[0].begin() + static_cast<std::ptrdiff_t>(i * first.m));
    if (rows && r_)
      gemm_rowmajor(false, true, brows, static_cast<blas_int>(first.m), static_cast<blas_int>(r_), T(1), coords,
                    static_cast<blas_int>(r_), chain_.first_lift().data(), static_cast<blas_int>(r_), T(1),
                    e.pre[0].data(), static_cast<blas_int>(first.m));
    e.post[0] = activate(first, e.pre[0]);
    for (std::size_t l = 1; l < depth_; ++l) {
      const auto& L = chain_.layer(l);
      e.pre[l].resize(rows * L.m);
      if (rows)
        gemm_rowmajor(false, true, brows, static_cast<blas_int>(L.m), static_cast<blas_int>(L.n), T(1),
                      e.post[l - 1].data(), static_cast<blas_int>(L.n), L.weight.data(), static_cast<blas_int>(L.n),
                      T(0), e.pre[l].data(), static_cast<blas_int>(L.m));
      add_bias(L, e.pre[l].data(), rows);
      e.post[l] = activate(L, e.pre[l]);
    }
    const std::vector<T>& h = e.post[depth_ - 1];
    e.res.resize(rows * out_);
    e.err.resize(rows);
    for (std::size_t i = 0; i < rows; ++i) {
      const std::size_t t = targets[i];
      for (std::size_t j = 0; j < out_; ++j)
        e.res[i * out_ + j] = static_cast<double>(y_[t * out_ + j]) - static_cast<double>(h[i * out_ + j]);
      const double norm = detail::scaled_norm(e.res.data() + i * out_, out_);
      e.err[i] = norm / (y_norm_[t] > 0 ? y_norm_[t] : 1.0);
    }
    return e;
  }

  static std::vector<T> activate(const Layer<T>& L, const std::vector<T>& z) {
    std::vector<T> h(z.size());
    for (std::size_t i = 0; i < z.size(); ++i) h[i] = L.activation.forward(z[i]);
    return h;
  }

  // Layer l's pre-activation is linear in the previous layer's output through W_l, the first
  // layer's in c through U_r S_r: (rows m_l x cols) row-major.
  const T* map_of(std::size_t l) const { return l ? chain_.layer(l).weight.data() : chain_.first_lift().data(); }
  std::size_t cols_of(std::size_t l) const { return l ? chain_.layer(l).n : r_; }

  // jac_ of `targets` = d outputs / d c at their current coordinates, and gram_ = J J^T in
  // float64, from the last layer back:
  // diag(act'(z_L)) M_L, then per layer a column scaling by act'(z_l) and a product with M_l,
  // over all the targets' rows at once.
  void jacobian(const std::vector<std::size_t>& targets) {
    const std::size_t rows = targets.size() * out_, last = depth_ - 1;
    std::size_t cols = cols_of(last);
    std::vector<T> a(rows * cols), b;
    for (std::size_t i = 0; i < targets.size(); ++i) {
      const T* z = now_.pre[last].data() + targets[i] * out_;
      const T* h = now_.post[last].data() + targets[i] * out_;
      for (std::size_t o = 0; o < out_; ++o) {
        const T slope = chain_.layer(last).activation.slope(z[o], h[o]);
        const T* w = map_of(last) + o * cols;
        T* row = a.data() + (i * out_ + o) * cols;
        for (std::size_t j = 0; j < cols; ++j) row[j] = slope * w[j];
      }
    }
    for (std::size_t l = last; l-- > 0;) {
      const std::size_t m = chain_.layer(l).m;  // == cols
      std::vector<T> slopes(m);
      for (std::size_t i = 0; i < targets.size(); ++i) {
        const T* z = now_.pre[l].data() + targets[i] * m;
        const T* h = now_.post[l].data() + targets[i] * m;
        for (std::size_t j = 0; j < m; ++j) slopes[j] = chain_.layer(l).activation.slope(z[j], h[j]);
        for (std::size_t o = 0; o < out_; ++o) {
          T* row = a.data() + (i * out_ + o) * m;
          for (std::size_t j = 0; j < m; ++j) row[j] *= slopes[j];
        }
      }
      cols = cols_of(l);
      b.resize(rows * cols);
      gemm_rowmajor(false, false, static_cast<blas_int>(rows), static_cast<blas_int>(cols), static_cast<blas_int>(m),
                    T(1), a.data(), static_cast<blas_int>(m), map_of(l), static_cast<blas_int>(cols), T(0), b.data(),
                    static_cast<blas_int>(cols));
      a.swap(b);
    }
    std::vector<double> j(out_ * r_);
    const blas_int bo = static_cast<blas_int>(out_), br = static_cast<blas_int>(r_);
    for (std::size_t i = 0; i < targets.size(); ++i) {
      const auto rows_i = a.begin() + static_cast<std::ptrdiff_t>(i * out_ * r_);
      std::copy_n(rows_i, out_ * r_, jac_.begin() + static_cast<std::ptrdiff_t>(targets[i] * out_ * r_));
      std::copy_n(rows_i, out_ * r_, j.begin());
      double* g = gram_.data() + targets[i] * out_ * out_;
      syrk_gram(bo, br, j.data(), br, g, bo);  // J row-major = J^T column-major; upper triangle
      for (std::size_t p = 0; p < out_; ++p)
        for (std::size_t q = 0; q < p; ++q) g[q * out_ + p] = g[p * out_ + q];
    }
  }

  // Per target, the minimum-norm dc with J dc = residual: J^T w for (J J^T + ridge) w = residual
  // (the ridge, at rounding level, keeps a Jacobian that lost rank solvable). Rows in the order
  // of `targets`.
  std::vector<T> min_norm_steps(const std::vector<std::size_t>& targets) const {
    std::vector<T> direction(targets.size() * r_, T(0));
    std::vector<double> gram(out_ * out_), w(out_);
    const blas_int bo = static_cast<blas_int>(out_);
    for (std::size_t a = 0; a < targets.size(); ++a) {
      const std::size_t t = targets[a];
      std::copy_n(gram_.begin() + static_cast<std::ptrdiff_t>(t * out_ * out_), out_ * out_, gram.begin());
      double peak = 0;
      for (std::size_t o = 0; o < out_; ++o) peak = std::max(peak, gram[o * out_ + o]);
      const double ridge = std::max(1e-14 * peak, std::numeric_limits<double>::min());
      for (std::size_t o = 0; o < out_; ++o) gram[o * out_ + o] += ridge;
      std::copy_n(now_.res.begin() + static_cast<std::ptrdiff_t>(t * out_), out_, w.begin());
      if (potrf_upper(bo, gram.data(), bo) != 0 || potrs_upper(bo, gram.data(), bo, w.data()) != 0)
        continue;  // no step: the line search drops the target
      const T* j = jac_.data() + t * out_ * r_;
      T* d = direction.data() + a * r_;
      for (std::size_t o = 0; o < out_; ++o) {
        const T wo = static_cast<T>(w[o]);
        for (std::size_t k = 0; k < r_; ++k) d[k] += wo * j[o * r_ + k];
      }
    }
    return direction;
  }

  // Tries c + damping * direction for every target in `targets`, halving the damping until the
  // error drops (a step from an estimated Jacobian gets one try); moves the targets that improved.
  void line_search(const std::vector<std::size_t>& targets, const std::vector<T>& direction,
                   const std::vector<char>& fresh, std::vector<T>& damping, std::vector<char>& moved) {
    constexpr int halvings = 12;
    std::vector<std::size_t> pending(targets.size());
    for (std::size_t a = 0; a < pending.size(); ++a) pending[a] = a;
    std::vector<std::size_t> ids;
    std::vector<T> trial;
    for (int h = 0; h < halvings && !pending.empty(); ++h) {
      ids.resize(pending.size());
      trial.resize(pending.size() * r_);
      for (std::size_t p = 0; p < pending.size(); ++p) {
        const std::size_t a = pending[p], t = targets[a];
        ids[p] = t;
        for (std::size_t k = 0; k < r_; ++k)
          trial[p * r_ + k] = c_[t * r_ + k] + damping[a] * direction[a * r_ + k];
      }
      const Evaluation e = evaluate(ids, trial.data());
      std::vector<std::size_t> retry;
      for (std::size_t p = 0; p < pending.size(); ++p) {
        const std::size_t a = pending[p], t = targets[a];
        if (e.err[p] < now_.err[t]) {
          accept(t, e, p, trial.data() + p * r_);
          moved[a] = 1;
        } else if (fresh[t]) {
          damping[a] /= 2;
          retry.push_back(a);
        }
      }
      pending.swap(retry);
    }
  }

  void accept(std::size_t t, const Evaluation& e, std::size_t p, const T* coords) {
    std::copy_n(coords, r_, c_.begin() + static_cast<std::ptrdiff_t>(t * r_));
    for (std::size_t l = 0; l < depth_; ++l) {
      const std::size_t m = chain_.layer(l).m;
      std::copy_n(e.pre[l].begin() + static_cast<std::ptrdiff_t>(p * m), m,
                  now_.pre[l].begin() + static_cast<std::ptrdiff_t>(t * m));
      std::copy_n(e.post[l].begin() + static_cast<std::ptrdiff_t>(p * m), m,
                  now_.post[l].begin() + static_cast<std::ptrdiff_t>(t * m));
    }
    std::copy_n(e.res.begin() + static_cast<std::ptrdiff_t>(p * out_), out_,
                now_.res.begin() + static_cast<std::ptrdiff_t>(t * out_));
    now_.err[t] = e.err[p];
  }

  // J += u s^T, u = (change - J s) / (s^T s), for the step s = damping * direction taken, where
  // change is the outputs' change (the residual's drop); and J J^T with it:
  // += u (J s)^T + (J s) u^T + (s^T s) u u^T.
  void broyden_update(std::size_t t, const T* direction, T damping, const double* before) {
    std::vector<double> step(r_), js(out_, 0.0), u(out_);
    double ss = 0;
    for (std::size_t k = 0; k < r_; ++k) {
      step[k] = static_cast<double>(damping * direction[k]);
      ss += step[k] * step[k];
    }
    if (!(ss > 0) || !std::isfinite(ss)) return;
    T* j = jac_.data() + t * out_ * r_;
    for (std::size_t o = 0; o < out_; ++o) {
      for (std::size_t k = 0; k < r_; ++k) js[o] += static_cast<double>(j[o * r_ + k]) * step[k];
      u[o] = ((before[o] - now_.res[t * out_ + o]) - js[o]) / ss;
    }
    for (std::size_t o = 0; o < out_; ++o) {
      T* row = j + o * r_;
      for (std::size_t k = 0; k < r_; ++k) row[k] += static_cast<T>(u[o] * step[k]);
    }
    double* g = gram_.data() + t * out_ * out_;
    for (std::size_t p = 0; p < out_; ++p)
      for (std::size_t q = 0; q < out_; ++q) g[p * out_ + q] += u[p] * js[q] + js[p] * u[q] + ss * u[p] * u[q];
  }

  const Chain<T>& chain_;
  const T* y_;
  std::vector<T> start_;        // count x inputs
  std::size_t count_, depth_, r_, out_;
  std::vector<T> z0_start_;     // the first layer's pre-activations at the start
  std::vector<double> y_norm_;  // ||y|| per target
  std::vector<T> c_;            // coordinates, count x r
  std::vector<T> jac_;          // count x outputs x r
  std::vector<double> gram_;    // count x outputs x outputs: J J^T
  std::vector<std::int64_t> steps_;
  Evaluation now_;              // the chain at c_
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
  // Targets per thread's task: 128 keeps the GEMMs at full speed and the threads balanced; fewer
  // where a target's Jacobian and Gram matrix would take more than 512 KiB (wide outputs). It
  // depends on the chain alone, so the results do not depend on the thread count.
  const std::size_t per_target = m * (r * sizeof(T) + m * sizeof(double)) + 1;
  const std::size_t chunk = std::clamp<std::size_t>((std::size_t(64) << 20) / per_target, 1, 128);
  const std::size_t chunks = (rows + chunk - 1) / chunk;
  if (r == 0) max_iter = 0;  // the first layer sees nothing of its input: nothing moves
  const int workers = static_cast<int>(std::min<std::size_t>(chunks, static_cast<std::size_t>(num_threads())));
  parallel_for(chunks, workers, [&](std::size_t i) {
    const std::size_t begin = i * chunk, count = std::min(chunk, rows - begin);
    std::vector<T> start(count * n, T(0));
    if (reference) {
      for (std::size_t t = 0; t < count; ++t)
        std::copy_n(reference + (ref_rows == 1 ? 0 : begin + t) * n, n, start.begin() + static_cast<std::ptrdiff_t>(t * n));
      if (!from_reference) {  // keep the rejected part: start - V V^T start
        std::vector<T> signal(count * n), rejected(count * n);
        project_rowmajor(start.data(), count, n, chain.signal_rows(0).data(), r, signal.data(), rejected.data());
        start.swap(rejected);
      }
    }
    NewtonChunk<T> part(chain, y + begin * m, std::move(start), count);
    part.run(tol, max_iter);
    part.write(x + begin * n, steps + begin, error + begin);
  });
  require_representable(x, rows * n, "the solved input");
  // Steps are taken only where the error drops: a non-finite one is the start's.
  if (!std::all_of(error, error + rows, [](double e) { return std::isfinite(e); }))
    throw std::overflow_error(overflow_message<T>("the chain's output at the start"));
}

}  // namespace vsfast
