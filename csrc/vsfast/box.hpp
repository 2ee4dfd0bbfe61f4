// Inputs inside a box [lo, hi] whose chain outputs are chosen targets, nearest a reference: for
// every target y, x minimising ||x - a|| subject to f(x) = y and lo <= x <= hi, where f is the
// whole chain, so the rejected spaces of every layer are free (not only the first one's).
//
// Method: projected Gauss-Newton, i.e. sequential quadratic programming with the Gauss-Newton
// model of the constraint. At x_k, with J = df/dx (outputs x inputs) and r = y - f(x_k), the
// step solves the convex quadratic program
//     min ||x - a||^2  subject to  J (x - x_k) = r,  lo <= x <= hi,
// the projection of the reference onto the box cut by the linearised constraint. A fixed point
// satisfies f(x) = y and the first-order (KKT) conditions of the nonlinear problem; for one layer
// the constraint is linear and one step is the exact answer. The quadratic program has as many
// equality rows as the chain has outputs (10 here) and as many variables as inputs (784), so it is
// solved in its dual: for multipliers l, x(l) = clip(a + J^T l), and l solves the piecewise-linear
// equation J x(l) = J x_k + r by semismooth Newton, whose matrix J D J^T (D: 1 on the inputs
// strictly inside the box, else 0) is outputs x outputs. Each Newton step costs a few passes over
// J, and the iteration is exact once it has found which inputs sit on the box (an active-set
// method on the dual). A primal active-set or interior-point method would work on the 784
// variables instead, and ADMM needs hundreds of iterations for the 1e-4 output accuracy asked.
//
// Targets with no preimage inside the box: the clip is made soft, x(l) = b + eps (u - b) outside
// the box (b the nearer bound, u = a + J^T l, eps = kOutsideSlope), which is the quadratic
// program with a penalty (1 / eps - 1) / 2 * dist(x, box)^2 in place of the bounds. Its dual has
// a solution for every right-hand side, so the Gauss-Newton iteration still reaches f(x) = y;
// where the box can hold a preimage, the penalised optimum lies within eps * |multiplier| of it
// (below 1e-7 here) and is clipped onto the box at the end; elsewhere it is the preimage with
// the least squared distance to the box, and that distance (the largest excursion of an input
// outside the box) is reported. The method is local: from a far reference it finds a nearby
// preimage, not necessarily the nearest one of all.
//
// Targets run in chunks whose size depends on the chain alone, one thread per chunk, so results
// do not depend on the thread count. The GPU module has no twin: csrc/cuda/api.hpp lists what it
// has, and the Python GPU chain refuses this operation with a TypeError.
#pragma once

#include "api.hpp"
#include "blas.hpp"
#include "chain.hpp"
#include "checks.hpp"
#include "parallel.hpp"

#include <algorithm>
#include <cmath>
#include <cstddef>
#include <cstdint>
#include <iterator>
#include <limits>
#include <stdexcept>
#include <vector>

namespace vsfast {

namespace box_detail {

// Slope of the soft clip outside the box: the penalty weight on the squared distance to the box
// is 1 / kOutsideSlope - 1. Small enough that a feasible target's answer leaves the box by less
// than 1e-7 before the final clip (multipliers stay below 100 on MNIST), large enough that the
// Newton matrix keeps a condition number far from double's limit.
constexpr double kOutsideSlope = 1e-9;
// Inputs outside the box by at most this fraction of its width count as inside and are clipped.
constexpr double kInsideTolerance = 1e-6;
// Dual Newton iterations per quadratic program and halvings of its steps: a program that needs
// more is one whose answer the outer iteration's own line search rejects anyway (it happens only
// far outside the box, where the soft clip's curvature is that of the penalty).
constexpr int kDualIterations = 30;
constexpr int kDualHalvings = 12;
// Halvings of the restoring step in the outer line search.
constexpr int kHalvings = 30;

// The clip onto [lo, hi] with `slope` instead of 0 outside.
inline double soft_clip(double u, double lo, double hi, double slope) {
  if (u > hi) return hi + slope * (u - hi);
  if (u < lo) return lo + slope * (u - lo);
  return u;
}

inline double norm2(const double* v, std::size_t n) {
  double s = 0;
  for (std::size_t i = 0; i < n; ++i) s += v[i] * v[i];
  return std::sqrt(s);
}

// Euclidean norm of n values in double, scaled by the largest magnitude so no square overflows.
template <class V>
double scaled_norm(const V* v, std::size_t n) {
  double peak = 0;
  for (std::size_t i = 0; i < n; ++i) peak = std::max(peak, std::abs(static_cast<double>(v[i])));
  if (!(peak > 0) || !std::isfinite(peak)) return peak;
  double sum = 0;
  for (std::size_t i = 0; i < n; ++i) sum += (static_cast<double>(v[i]) / peak) * (static_cast<double>(v[i]) / peak);
  return std::sqrt(sum) * peak;
}

// The largest excursion of any of n values outside [lo, hi] (0 inside).
template <class V>
double excursion(const V* x, std::size_t n, double lo, double hi) {
  double worst = 0;
  for (std::size_t i = 0; i < n; ++i) {
    const double v = static_cast<double>(x[i]);
    worst = std::max({worst, lo - v, v - hi});
  }
  return worst;
}

// The dual of the quadratic program min ||x - a||^2, J x = c, x in the box clipped with `slope`
// outside (kOutsideSlope: the soft box; 0: the box itself): finds the multipliers lam (outputs;
// warm start in, answer out) with J x(lam) = c and writes x(lam). J is outputs x n, row-major.
// Returns false when the line search could not lower the residual (then x is the last iterate,
// which the caller judges like any other).
inline bool dual_newton(const double* J, std::size_t out, std::size_t n, const double* a, const double* c,
                        double lo, double hi, double slope, double* lam, double* x) {
  // Row-major J (out x n) is the column-major n x out matrix the BLAS calls below read.
  const blas_int bn = static_cast<blas_int>(n), bo = static_cast<blas_int>(out);
  std::vector<double> u(n), g(out), trial_u(n), trial_lam(out), trial_x(n), trial_g(out), scaled(out * n),
      h(out * out), step(out);
  // u = a + J^T l, xs = x(l) and gs = J xs - c; returns ||gs||.
  auto residual = [&](const double* l, double* us, double* xs, double* gs) {
    std::copy(a, a + n, us);
    blas_gemm(false, false, bn, 1, bo, 1.0, J, bn, l, bo, 1.0, us, bn);
    for (std::size_t j = 0; j < n; ++j) xs[j] = soft_clip(us[j], lo, hi, slope);
    for (std::size_t o = 0; o < out; ++o) gs[o] = -c[o];
    blas_gemm(true, false, bo, 1, bn, 1.0, J, bn, xs, bn, 1.0, gs, bo);
    return norm2(gs, out);
  };
  // Stop at rounding level: the products J x carry errors of about eps * ||J|| ||x||.
  double gnorm = residual(lam, u.data(), x, g.data());
  const double floor = 64 * std::numeric_limits<double>::epsilon() *
                       (norm2(J, out * n) * std::max(norm2(x, n), 1.0) + norm2(c, out));
  for (int it = 0; it < kDualIterations && gnorm > floor; ++it) {
    // H = J D J^T (upper triangle) as the Gram matrix of J's columns scaled by sqrt(D), plus a
    // ridge far below the soft clip's own curvature (it keeps H invertible where the inputs
    // inside the box do not span the outputs).
    for (std::size_t j = 0; j < n; ++j) {
      const double root = (u[j] > hi || u[j] < lo) ? std::sqrt(slope) : 1.0;
      for (std::size_t o = 0; o < out; ++o) scaled[o * n + j] = root * J[o * n + j];
    }
    syrk_gram(bo, bn, scaled.data(), bn, h.data(), bo);
    double trace = 0;
    for (std::size_t p = 0; p < out; ++p) trace += h[p * out + p];
    const double ridge = std::max(1e-15 * trace / static_cast<double>(out), std::numeric_limits<double>::min());
    for (std::size_t p = 0; p < out; ++p) h[p * out + p] += ridge;
    for (std::size_t o = 0; o < out; ++o) step[o] = -g[o];
    if (potrf_upper(bo, h.data(), bo) != 0 || potrs_upper(bo, h.data(), bo, step.data()) != 0) return false;
    double alpha = 1;
    bool moved = false;
    for (int k = 0; k < kDualHalvings && !moved; ++k, alpha /= 2) {
      for (std::size_t o = 0; o < out; ++o) trial_lam[o] = lam[o] + alpha * step[o];
      const double trial = residual(trial_lam.data(), trial_u.data(), trial_x.data(), trial_g.data());
      if (trial < (1 - 1e-4 * alpha) * gnorm) {
        std::copy(trial_lam.begin(), trial_lam.end(), lam);
        std::copy(trial_x.begin(), trial_x.end(), x);
        u.swap(trial_u);
        g.swap(trial_g);
        gnorm = trial;
        moved = true;
      }
    }
    if (!moved) return false;  // x is still that of the last accepted multipliers
  }
  return true;
}

template <class T>
class BoxChunk {
 public:
  // `count` targets y (count x outputs) and their references a (count x inputs, as double).
  BoxChunk(const Chain<T>& chain, const T* y, std::vector<double> reference, std::size_t count, double lo,
           double hi)
      : chain_(chain), y_(y), a_(std::move(reference)), count_(count), depth_(chain.depth()), n_(chain.input_dim()),
        out_(chain.output_dim()), lo_(lo), hi_(hi) {
    x_.resize(count * n_);
    for (std::size_t i = 0; i < x_.size(); ++i) x_[i] = static_cast<T>(std::clamp(a_[i], lo, hi));
    y_norm_.resize(count);
    for (std::size_t t = 0; t < count; ++t) y_norm_[t] = scaled_norm(y + t * out_, out_);
    lam_.assign(count * out_, 0.0);
    steps_.assign(count, 0);
    err_.assign(count, 0.0);
    merit_.assign(count, 0.0);
  }

  void run(double tol, std::size_t max_iter) {
    std::vector<std::size_t> active(count_);
    for (std::size_t t = 0; t < count_; ++t) active[t] = t;
    now_ = evaluate(active, x_.data());
    for (std::size_t t = 0; t < count_; ++t) err_[t] = now_.err[t], merit_[t] = merit(t, x_.data() + t * n_);
    for (std::size_t iter = 0; iter < max_iter && !active.empty(); ++iter) active = step(active, tol);
  }

  // Targets within kInsideTolerance of the box are put inside it: clipped, then one last
  // quadratic program with the box itself (the active set is known by now, so its dual Newton
  // takes a step or two) makes the linearised constraint exact again, and the better of the two
  // is kept. Those further outside keep the soft box's answer and report how far outside it is.
  void finish() {
    const double slack = kInsideTolerance * (hi_ - lo_);
    const T lo = static_cast<T>(lo_), hi = static_cast<T>(hi_);
    std::vector<std::size_t> inside;
    violation_.assign(count_, 0.0);
    for (std::size_t t = 0; t < count_; ++t) {
      T* row = x_.data() + t * n_;
      violation_[t] = excursion(row, n_, lo_, hi_);
      if (violation_[t] > slack) continue;
      for (std::size_t j = 0; j < n_; ++j) row[j] = std::clamp(row[j], lo, hi);
      violation_[t] = 0;
      inside.push_back(t);
    }
    if (inside.empty()) return;
    const Evaluation clipped = evaluate(inside, gather(inside).data());
    for (std::size_t i = 0; i < inside.size(); ++i) accept(inside[i], clipped, i, x_.data() + inside[i] * n_, 0.0);
    const std::vector<double> jac = jacobian(inside);
    std::vector<T> polished(inside.size() * n_);
    std::vector<double> xk(n_), c(out_), xq(n_);
    for (std::size_t i = 0; i < inside.size(); ++i) {
      const std::size_t t = inside[i];
      const double* J = jac.data() + i * out_ * n_;
      for (std::size_t j = 0; j < n_; ++j) xk[j] = static_cast<double>(x_[t * n_ + j]);
      for (std::size_t o = 0; o < out_; ++o) {
        double v = now_.res[t * out_ + o];
        for (std::size_t j = 0; j < n_; ++j) v += J[o * n_ + j] * xk[j];
        c[o] = v;
      }
      dual_newton(J, out_, n_, a_.data() + t * n_, c.data(), lo_, hi_, 0.0, lam_.data() + t * out_, xq.data());
      for (std::size_t j = 0; j < n_; ++j) polished[i * n_ + j] = std::clamp(static_cast<T>(xq[j]), lo, hi);
    }
    const Evaluation e = evaluate(inside, polished.data());
    for (std::size_t i = 0; i < inside.size(); ++i)
      if (e.err[i] < err_[inside[i]]) accept(inside[i], e, i, polished.data() + i * n_, 0.0);
  }

  // x (count x inputs); steps, relative output error and box violation per target.
  void write(T* x, std::int64_t* steps, double* error, double* violation) const {
    std::copy(x_.begin(), x_.end(), x);
    std::copy(steps_.begin(), steps_.end(), steps);
    std::copy(err_.begin(), err_.end(), error);
    std::copy(violation_.begin(), violation_.end(), violation);
  }

 private:
  struct Evaluation {
    std::vector<std::vector<T>> pre, post;  // per layer, rows x m_l
    std::vector<double> res, err;           // rows x outputs (y - f(x)), rows
  };

  // The current inputs of `targets`, one row each.
  std::vector<T> gather(const std::vector<std::size_t>& targets) const {
    std::vector<T> rows(targets.size() * n_);
    for (std::size_t i = 0; i < targets.size(); ++i)
      std::copy_n(x_.begin() + static_cast<std::ptrdiff_t>(targets[i] * n_), n_,
                  rows.begin() + static_cast<std::ptrdiff_t>(i * n_));
    return rows;
  }

  // The chain at `rows` inputs xs (rows x inputs), for the targets `targets` (in that order).
  Evaluation evaluate(const std::vector<std::size_t>& targets, const T* xs) const {
    const std::size_t rows = targets.size();
    Evaluation e;
    e.pre.resize(depth_);
    e.post.resize(depth_);
    const T* h = xs;
    for (std::size_t l = 0; l < depth_; ++l) {
      const Layer<T>& L = chain_.layer(l);
      e.pre[l].resize(rows * L.m);
      if (rows)
        gemm_rowmajor(false, true, static_cast<blas_int>(rows), static_cast<blas_int>(L.m),
                      static_cast<blas_int>(L.n), T(1), h, static_cast<blas_int>(L.n), L.weight.data(),
                      static_cast<blas_int>(L.n), T(0), e.pre[l].data(), static_cast<blas_int>(L.m));
      e.post[l].resize(rows * L.m);
      if (!L.bias.empty())  // the pre-activations keep the bias: the slopes are taken at them
        for (std::size_t i = 0; i < rows; ++i)
          for (std::size_t j = 0; j < L.m; ++j) e.pre[l][i * L.m + j] += L.bias[j];
      activate(L.activation, e.pre[l].data(), static_cast<const T*>(nullptr), L.m, e.post[l].data(), rows * L.m);
      h = e.post[l].data();
    }
    e.res.resize(rows * out_);
    e.err.resize(rows);
    for (std::size_t i = 0; i < rows; ++i) {
      const std::size_t t = targets[i];
      for (std::size_t o = 0; o < out_; ++o)
        e.res[i * out_ + o] = static_cast<double>(y_[t * out_ + o]) - static_cast<double>(h[i * out_ + o]);
      e.err[i] = scaled_norm(e.res.data() + i * out_, out_) / (y_norm_[t] > 0 ? y_norm_[t] : 1.0);
    }
    return e;
  }

  // ||x - a||^2 / 2 plus the soft box's penalty: the objective each quadratic program lowers.
  double merit(std::size_t t, const T* x) const {
    const double* a = a_.data() + t * n_;
    const double weight = 1 / kOutsideSlope - 1;
    double near = 0, outside = 0;
    for (std::size_t j = 0; j < n_; ++j) {
      const double v = static_cast<double>(x[j]);
      near += (v - a[j]) * (v - a[j]);
      const double d = v > hi_ ? v - hi_ : (v < lo_ ? lo_ - v : 0.0);
      outside += d * d;
    }
    return 0.5 * near + 0.5 * weight * outside;
  }

  // d f / d x of each target in `targets` at its current input, in double: (targets x outputs x
  // inputs), from the last layer back, diag(act'(z_L)) W_L, then per layer a column scaling by
  // act'(z_l) and a product with W_l, over all the targets' rows at once.
  std::vector<double> jacobian(const std::vector<std::size_t>& targets) const {
    const std::size_t rows = targets.size() * out_, last = depth_ - 1;
    std::vector<T> a(rows * chain_.layer(last).n), b;
    for (std::size_t i = 0; i < targets.size(); ++i) {
      const std::size_t t = targets[i];
      const Layer<T>& L = chain_.layer(last);
      for (std::size_t o = 0; o < out_; ++o) {
        const T slope = L.activation.slope(now_.pre[last][t * out_ + o], now_.post[last][t * out_ + o]);
        for (std::size_t j = 0; j < L.n; ++j) a[(i * out_ + o) * L.n + j] = slope * L.weight[o * L.n + j];
      }
    }
    for (std::size_t l = last; l-- > 0;) {
      const Layer<T>& L = chain_.layer(l);  // a has L.m columns
      for (std::size_t i = 0; i < targets.size(); ++i) {
        const T* z = now_.pre[l].data() + targets[i] * L.m;
        const T* h = now_.post[l].data() + targets[i] * L.m;
        for (std::size_t j = 0; j < L.m; ++j) {
          const T s = L.activation.slope(z[j], h[j]);
          for (std::size_t o = 0; o < out_; ++o) a[(i * out_ + o) * L.m + j] *= s;
        }
      }
      b.resize(rows * L.n);
      gemm_rowmajor(false, false, static_cast<blas_int>(rows), static_cast<blas_int>(L.n),
                    static_cast<blas_int>(L.m), T(1), a.data(), static_cast<blas_int>(L.m), L.weight.data(),
                    static_cast<blas_int>(L.n), T(0), b.data(), static_cast<blas_int>(L.n));
      a.swap(b);
    }
    return std::vector<double>(a.begin(), a.end());
  }

  // One Gauss-Newton step for every target in `targets`; returns those still going.
  //
  // The quadratic program projects a point onto the box cut by the linearised constraint. With
  // the reference itself the step can be long, and the chain's curvature then spoils it: the
  // trials project x_k + beta (a - x_k) for beta = 1, 1/4, 1/16 and 0, the last the shortest
  // step that restores the linearised constraint (Gauss-Newton on the constraint alone,
  // quadratically convergent). A target short of tol accepts the first trial that halves its
  // output error (or reaches tol), and after those, x_k + alpha d_0 along the restoring step for
  // alpha = 1/2, 1/4, ... while that lowers the error; a target within tol accepts the first
  // trial that keeps it within tol and lowers the merit. A target stops when no trial is
  // accepted (within tol: no step gets nearer the reference; short of it: stalled), or when it
  // is within tol and moved by less than a thousandth of its distance to the reference.
  std::vector<std::size_t> step(const std::vector<std::size_t>& targets, double tol) {
    static constexpr double betas[] = {1.0, 0.25, 0.0625, 0.0};
    constexpr std::size_t tries = std::size(betas);
    const std::vector<double> jac = jacobian(targets);
    const std::size_t count = targets.size();
    std::vector<double> xk(count * n_), c(count * out_), restore(count * n_), trial_lam(count * out_);
    for (std::size_t i = 0; i < count; ++i) {
      const std::size_t t = targets[i];
      const double* J = jac.data() + i * out_ * n_;
      for (std::size_t j = 0; j < n_; ++j) xk[i * n_ + j] = static_cast<double>(x_[t * n_ + j]);
      for (std::size_t o = 0; o < out_; ++o) {  // c = J x_k + r: the linearised constraint J x = c
        double v = now_.res[t * out_ + o];
        for (std::size_t j = 0; j < n_; ++j) v += J[o * n_ + j] * xk[i * n_ + j];
        c[i * out_ + o] = v;
      }
    }
    std::vector<std::size_t> pending(count), going;
    for (std::size_t i = 0; i < count; ++i) pending[i] = i;
    std::vector<std::size_t> ids;
    std::vector<T> trial;
    std::vector<double> point(n_), xq(n_);
    for (std::size_t round = 0; round < tries + kHalvings && !pending.empty(); ++round) {
      ids.resize(pending.size());
      trial.resize(pending.size() * n_);
      for (std::size_t p = 0; p < pending.size(); ++p) {
        const std::size_t i = pending[p], t = targets[i];
        ids[p] = t;
        if (round < tries) {
          const double beta = betas[round];
          for (std::size_t j = 0; j < n_; ++j)
            point[j] = xk[i * n_ + j] + beta * (a_[t * n_ + j] - xk[i * n_ + j]);
          double* lam = trial_lam.data() + i * out_;
          std::copy_n(lam_.begin() + static_cast<std::ptrdiff_t>(t * out_), out_, lam);
          dual_newton(jac.data() + i * out_ * n_, out_, n_, point.data(), c.data() + i * out_, lo_, hi_,
                      kOutsideSlope, lam, xq.data());
          for (std::size_t j = 0; j < n_; ++j) trial[p * n_ + j] = static_cast<T>(xq[j]);
          if (beta == 0)
            for (std::size_t j = 0; j < n_; ++j) restore[i * n_ + j] = xq[j] - xk[i * n_ + j];
        } else {
          const double alpha = std::ldexp(1.0, -static_cast<int>(round - tries + 1));
          for (std::size_t j = 0; j < n_; ++j)
            trial[p * n_ + j] = static_cast<T>(xk[i * n_ + j] + alpha * restore[i * n_ + j]);
        }
      }
      const Evaluation e = evaluate(ids, trial.data());
      std::vector<std::size_t> retry;
      for (std::size_t p = 0; p < pending.size(); ++p) {
        const std::size_t i = pending[p], t = targets[i];
        const double m = merit(t, trial.data() + p * n_), err = e.err[p];
        const bool short_of_tol = err_[t] > tol;
        const bool accepted = !short_of_tol ? err <= tol && m < merit_[t]
                              : round < tries ? err <= std::max(0.5 * err_[t], tol)
                                              : err < err_[t];
        if (!accepted) {
          if (short_of_tol || round + 1 < tries) retry.push_back(i);
          continue;
        }
        double moved = 0, distance = 0;
        for (std::size_t j = 0; j < n_; ++j) {
          const double v = static_cast<double>(trial[p * n_ + j]);
          moved += (v - xk[i * n_ + j]) * (v - xk[i * n_ + j]);
          distance += (v - a_[t * n_ + j]) * (v - a_[t * n_ + j]);
        }
        accept(t, e, p, trial.data() + p * n_, m);
        if (round < tries)
          std::copy_n(trial_lam.begin() + static_cast<std::ptrdiff_t>(i * out_), out_,
                      lam_.begin() + static_cast<std::ptrdiff_t>(t * out_));
        ++steps_[t];
        if (short_of_tol || err_[t] > tol || std::sqrt(moved) > 1e-3 * std::sqrt(distance)) going.push_back(t);
      }
      pending.swap(retry);
    }
    std::sort(going.begin(), going.end());
    return going;
  }

  void accept(std::size_t t, const Evaluation& e, std::size_t p, const T* x, double m) {
    std::copy_n(x, n_, x_.begin() + static_cast<std::ptrdiff_t>(t * n_));
    for (std::size_t l = 0; l < depth_; ++l) {
      const std::size_t w = chain_.layer(l).m;
      std::copy_n(e.pre[l].begin() + static_cast<std::ptrdiff_t>(p * w), w,
                  now_.pre[l].begin() + static_cast<std::ptrdiff_t>(t * w));
      std::copy_n(e.post[l].begin() + static_cast<std::ptrdiff_t>(p * w), w,
                  now_.post[l].begin() + static_cast<std::ptrdiff_t>(t * w));
    }
    std::copy_n(e.res.begin() + static_cast<std::ptrdiff_t>(p * out_), out_,
                now_.res.begin() + static_cast<std::ptrdiff_t>(t * out_));
    err_[t] = e.err[p];
    merit_[t] = m;
  }

  const Chain<T>& chain_;
  const T* y_;
  std::vector<double> a_;  // references, count x inputs
  std::size_t count_, depth_, n_, out_;
  double lo_, hi_;
  std::vector<T> x_;             // current inputs, count x inputs
  std::vector<double> y_norm_;   // ||y|| per target
  std::vector<double> lam_;      // multipliers of the last quadratic program, count x outputs
  std::vector<std::int64_t> steps_;
  std::vector<double> err_, merit_, violation_;
  Evaluation now_;  // the chain at x_, rows in target order
};

}  // namespace box_detail

// The entry point of api.hpp: inputs x (rows x inputs) in [lo, hi] whose chain outputs are y
// (rows x outputs), nearest the reference (ref_rows = 1 or rows rows; null: the origin), to a
// relative output error of tol within max_iter Gauss-Newton steps. Per target: the steps taken,
// the relative output error and the box violation, the largest excursion of an input outside
// [lo, hi] (0 when a preimage inside the box was found; then x lies inside exactly).
template <class T>
void solve_box(const Chain<T>& chain, const T* y, std::size_t rows, const T* reference, std::size_t ref_rows,
               double lo, double hi, double tol, std::size_t max_iter, T* x, std::int64_t* steps, double* error,
               double* violation) {
  const std::size_t n = chain.input_dim(), m = chain.output_dim();
  if (!(std::isfinite(lo) && std::isfinite(hi) && lo < hi))
    throw std::invalid_argument("box: expected finite bounds lo < hi, got " + std::to_string(lo) + ", " +
                                std::to_string(hi));
  require_finite(y, rows * m, "Y");
  if (reference) require_finite(reference, ref_rows * n, "reference");
  // Targets per thread's task: 32 keeps the Jacobian's GEMMs efficient and the threads balanced,
  // fewer where a chunk's Jacobians (double) would pass 32 MiB. It depends on the chain alone, so
  // the results do not depend on the thread count.
  const std::size_t per_target = m * n * (sizeof(double) + sizeof(T)) + 1;
  const std::size_t chunk = std::clamp<std::size_t>((std::size_t(32) << 20) / per_target, 1, 32);
  const std::size_t chunks = (rows + chunk - 1) / chunk;
  const int workers = static_cast<int>(std::min<std::size_t>(chunks, static_cast<std::size_t>(num_threads())));
  parallel_for(chunks, workers, [&](std::size_t i) {
    const std::size_t begin = i * chunk, count = std::min(chunk, rows - begin);
    std::vector<double> start(count * n, 0.0);
    if (reference)
      for (std::size_t t = 0; t < count; ++t) {
        const T* row = reference + (ref_rows == 1 ? 0 : begin + t) * n;
        std::copy(row, row + n, start.begin() + static_cast<std::ptrdiff_t>(t * n));
      }
    box_detail::BoxChunk<T> part(chain, y + begin * m, std::move(start), count, lo, hi);
    part.run(tol, max_iter);
    part.finish();
    part.write(x + begin * n, steps + begin, error + begin, violation + begin);
  });
  if (!std::all_of(error, error + rows, [](double e) { return std::isfinite(e); }))
    throw std::overflow_error(overflow_message<T>("the chain's output inside the box"));
}

}  // namespace vsfast
