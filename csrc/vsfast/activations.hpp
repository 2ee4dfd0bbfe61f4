// Invertible activations and their inverses. Targets outside an activation's range are moved to
// the nearest point of the range less a relative margin, and counted: never turned into NaN.
//
// One formula per activation (namespace formula), written once for both processors: on the
// device its exp, expm1, log and log1p are CUDA's; on the host they are vmath.hpp's branch-free
// polynomials, so that the CPU's loops over arrays (activate, activation_slopes,
// invert_activation, at the end) vectorise instead of calling glibc's scalar functions entry by
// entry. Activation's scalar forward, slope and inverse, which the CUDA module's kernels call,
// use the same formulas.
#pragma once

#include "common.hpp"

#if !defined(__CUDA_ARCH__)
#include "vmath.hpp"
#endif

#include <cmath>
#include <cstddef>
#include <limits>
#include <stdexcept>
#include <string>

namespace vsfast {

enum class ActivationKind { identity, selu, elu, tanh, sigmoid, leaky_relu };

// torch's constants for SELU, and their product lambda * alpha, SELU's floor: -lambda alpha is the
// lower end of its range. The floor as a double (correctly rounded, not the product of the two
// rounded factors) and the rest, for the inverse near that end.
constexpr double selu_lambda = 1.0507009873554804934193349852946;
constexpr double selu_alpha = 1.6732632423543772848170429916717;
constexpr double selu_floor = 1.7580993408473768599402175208123;
constexpr double selu_floor_rest = 1.41535193800845e-17;

// sqrt(eps) of T, the relative margin inside an activation's range (a literal: device code cannot
// call std::numeric_limits).
template <class T>
VSFAST_HOST_DEVICE constexpr T root_eps() {
  return sizeof(T) == 4 ? T(3.4526698e-4f) : T(1.4901161193847656e-8);
}

namespace formula {

// Forced inline, so that the CPU's loops over arrays inline every formula and vectorise.
#if defined(__CUDACC__)
#define VSFAST_FORMULA __host__ __device__ __forceinline__
#elif defined(__GNUC__)
#define VSFAST_FORMULA inline __attribute__((always_inline))
#else
#define VSFAST_FORMULA inline
#endif

// The elementary functions, on the domains the formulas below use them on.
template <class T>
VSFAST_FORMULA T expm1_nonpositive(T x) {
#if defined(__CUDA_ARCH__)
  return expm1(x);
#else
  return vmath::expm1_nonpositive(x);
#endif
}
template <class T>
VSFAST_FORMULA T exp_nonpositive(T x) {
#if defined(__CUDA_ARCH__)
  return exp(x);
#else
  return vmath::exp_nonpositive(x);
#endif
}
template <class T>
VSFAST_FORMULA T log1p_above_minus_one(T v) {
#if defined(__CUDA_ARCH__)
  return log1p(v);
#else
  return vmath::log1p_above_minus_one(v);
#endif
}
template <class T>
VSFAST_FORMULA T log_normal(T x) {
#if defined(__CUDA_ARCH__)
  return log(x);
#else
  return vmath::log_normal(x);
#endif
}

// Branch-free: both sides of a choice are computed and one is selected, and expm1 and exp only
// ever see x <= 0 (they cannot overflow). NaN gives NaN.
template <class T>
VSFAST_FORMULA T selu(T x) {
  const T above = T(selu_lambda) * x;
  const T below = T(selu_floor) * expm1_nonpositive(x > T(0) ? T(0) : x);
  return x > T(0) ? above : below;
}
template <class T>
VSFAST_FORMULA T elu(T x, T alpha) {
  const T below = alpha * expm1_nonpositive(x > T(0) ? T(0) : x);
  return x > T(0) ? x : below;
}
// tanh|x| = -u / (2 + u) for u = expm1(-2|x|), in (-1, 0]: no overflow, no cancellation.
template <class T>
VSFAST_FORMULA T tanh(T x) {
  const T u = expm1_nonpositive(T(-2) * std::fabs(x));
  return std::copysign(-u / (T(2) + u), x);
}
// 1 / (1 + e^-x) for x >= 0, e^x / (1 + e^x) below, from e = exp(-|x|).
template <class T>
VSFAST_FORMULA T sigmoid(T x) {
  const T e = exp_nonpositive(-std::fabs(x));
  return (x >= T(0) ? T(1) : e) / (T(1) + e);
}
template <class T>
VSFAST_FORMULA T leaky_relu(T x, T slope) {
  const T below = slope * x;
  return x >= T(0) ? x : below;
}

// A constant c = hi + lo in T, to twice T's precision.
template <class T>
struct Split {
  T hi, lo;
  VSFAST_HOST_DEVICE constexpr Split(double value, double rest = 0)
      : hi(T(value)), lo(T((value - double(T(value))) + rest)) {}
};

// log(1 + y / c) for -c < y <= 0. Near y = -c, the rounding of y / c alone (half an ulp) would
// move the result by hundreds of ulps (log1p's sensitivity there is 1 / ((1 + v) |log(1 + v)|));
// below -c/2 the argument is formed as 1 + y / c = ((hi + y) + lo) / c instead, where hi + y is
// exact (Sterbenz's lemma) and the rest of c enters.
template <class T>
VSFAST_FORMULA T log1p_of_ratio(T y, Split<T> c) {
  const T v = y / c.hi, u = ((c.hi + y) + c.lo) / c.hi;
  const bool near_floor = y < T(-0.5) * c.hi;
  const T near = log_normal(near_floor ? u : T(1));
  const T far = log1p_above_minus_one(near_floor ? T(0) : v);
  return near_floor ? near : far;
}

// Inverses, for y inside the range (after the clamp).
template <class T>
VSFAST_FORMULA T selu_inverse(T y) {
  const T above = y / T(selu_lambda);
  const T below = log1p_of_ratio(y > T(0) ? T(0) : y, Split<T>(selu_floor, selu_floor_rest));
  return y > T(0) ? above : below;
}
template <class T>
VSFAST_FORMULA T elu_inverse(T y, Split<T> alpha) {
  const T below = log1p_of_ratio(y > T(0) ? T(0) : y, alpha);
  return y > T(0) ? y : below;
}
// atanh|y| = log1p(2|y| / (1 - |y|)) / 2.
template <class T>
VSFAST_FORMULA T tanh_inverse(T y) {
  const T a = std::fabs(y);
  return std::copysign(T(0.5) * log1p_above_minus_one(T(2) * a / (T(1) - a)), y);
}
// logit(y) = log(y / (1 - y)): below 1/3 as that log (it is then below log(1/2), so keeps its
// relative accuracy), above as log1p((2y - 1) / (1 - y)), whose argument is exact near y = 1/2,
// where logit crosses zero.
template <class T>
VSFAST_FORMULA T sigmoid_inverse(T y) {
  const T rest = T(1) - y;
  const T ratio = y / rest, excess = (T(2) * y - T(1)) / rest;
  const bool low = y < T(1) / T(3);
  const T low_value = log_normal(low ? ratio : T(1));
  const T high_value = log1p_above_minus_one(low ? T(0) : excess);
  return low ? low_value : high_value;
}
template <class T>
VSFAST_FORMULA T leaky_relu_inverse(T y, T slope) {
  const T below = y / slope;
  return y >= T(0) ? y : below;
}

// Slopes d act / dx at x from y = act(x), without a second exp or tanh.
template <class T>
VSFAST_FORMULA T selu_slope(T x, T y) {
  const T below = y + T(selu_floor);
  return x > T(0) ? T(selu_lambda) : below;
}
template <class T>
VSFAST_FORMULA T elu_slope(T x, T y, T alpha) {
  const T below = y + alpha;
  return x > T(0) ? T(1) : below;
}
template <class T>
VSFAST_FORMULA T tanh_slope(T y) {
  return T(1) - y * y;
}
template <class T>
VSFAST_FORMULA T sigmoid_slope(T y) {
  return y * (T(1) - y);
}
template <class T>
VSFAST_FORMULA T leaky_relu_slope(T x, T slope) {
  return x >= T(0) ? T(1) : slope;
}

}  // namespace formula

struct Activation {
  ActivationKind kind = ActivationKind::identity;
  double param = 0;  // ELU's alpha, leaky ReLU's negative slope

  static Activation make(const std::string& name, double param) {
    if (name == "identity") return {ActivationKind::identity, 0};
    if (name == "selu") return {ActivationKind::selu, 0};
    if (name == "tanh") return {ActivationKind::tanh, 0};
    if (name == "sigmoid") return {ActivationKind::sigmoid, 0};
    if (name == "elu") {
      if (!(param > 0) || !std::isfinite(param))
        throw std::invalid_argument("elu needs alpha > 0 to be invertible, got " + std::to_string(param));
      return {ActivationKind::elu, param};
    }
    if (name == "leaky_relu") {
      if (!(param > 0) || !std::isfinite(param))
        throw std::invalid_argument("leaky_relu needs a negative slope > 0 to be invertible, got " +
                                    std::to_string(param));
      return {ActivationKind::leaky_relu, param};
    }
    throw std::invalid_argument("unknown activation '" + name +
                                "'; expected identity, selu, elu, tanh, sigmoid or leaky_relu");
  }

  template <class T>
  VSFAST_HOST_DEVICE T forward(T x) const {
    switch (kind) {
      case ActivationKind::identity: return x;
      case ActivationKind::selu: return formula::selu(x);
      case ActivationKind::elu: return formula::elu(x, T(param));
      case ActivationKind::tanh: return formula::tanh(x);
      case ActivationKind::sigmoid: return formula::sigmoid(x);
      case ActivationKind::leaky_relu: return formula::leaky_relu(x, T(param));
    }
    return x;
  }

  // d forward / dx at x, given y = forward(x): from y, without a second exp or tanh.
  template <class T>
  VSFAST_HOST_DEVICE T slope(T x, T y) const {
    switch (kind) {
      case ActivationKind::identity: return T(1);
      case ActivationKind::selu: return formula::selu_slope(x, y);
      case ActivationKind::elu: return formula::elu_slope(x, y, T(param));
      case ActivationKind::tanh: return formula::tanh_slope(y);
      case ActivationKind::sigmoid: return formula::sigmoid_slope(y);
      case ActivationKind::leaky_relu: return formula::leaky_relu_slope(x, T(param));
    }
    return T(1);
  }

  // The closed interval targets are clamped into: the open range less a relative margin of
  // sqrt(eps) at each finite end (lo and hi are -inf and inf where the range is unbounded).
  template <class T>
  VSFAST_HOST_DEVICE void range(T& lo, T& hi) const {
    const T margin = root_eps<T>(), inf = T(HUGE_VAL);
    lo = -inf, hi = inf;
    switch (kind) {
      case ActivationKind::selu: lo = -T(selu_floor) * (T(1) - margin); break;
      case ActivationKind::elu: lo = -T(param) * (T(1) - margin); break;
      case ActivationKind::tanh: lo = -(T(1) - margin), hi = T(1) - margin; break;
      case ActivationKind::sigmoid: lo = margin, hi = T(1) - margin; break;
      case ActivationKind::identity:
      case ActivationKind::leaky_relu: break;
    }
  }

  // Inverse of forward at y clamped into range(); `clamped` (any integer counter) is incremented
  // when y had to be moved.
  template <class T, class Count>
  VSFAST_HOST_DEVICE T inverse(T y, Count& clamped) const {
    T lo, hi;
    range(lo, hi);
    if (y < lo) y = lo, ++clamped;
    if (y > hi) y = hi, ++clamped;
    return inverse_in_range(y);
  }

  template <class T>
  VSFAST_HOST_DEVICE T inverse_in_range(T y) const {
    switch (kind) {
      case ActivationKind::identity: return y;
      case ActivationKind::selu: return formula::selu_inverse(y);
      case ActivationKind::elu: return formula::elu_inverse(y, formula::Split<T>(param));
      case ActivationKind::tanh: return formula::tanh_inverse(y);
      case ActivationKind::sigmoid: return formula::sigmoid_inverse(y);
      case ActivationKind::leaky_relu: return formula::leaky_relu_inverse(y, T(param));
    }
    return y;
  }
};

#if !defined(__CUDACC__)
// The CPU's loops over arrays. Each calls `loop` with the activation's formula as a lambda, so
// the switch is taken once per array and the loop body inlines a branch-free formula, which the
// compiler vectorises (-O3; gcc -fopt-info-vec confirms it for every kind).
namespace detail {

template <class T, class Loop>
void with_forward(const Activation& a, Loop&& loop) {
  const T param = T(a.param);
  switch (a.kind) {
    case ActivationKind::identity: return loop([](T x) { return x; });
    case ActivationKind::selu: return loop([](T x) { return formula::selu(x); });
    case ActivationKind::elu: return loop([param](T x) { return formula::elu(x, param); });
    case ActivationKind::tanh: return loop([](T x) { return formula::tanh(x); });
    case ActivationKind::sigmoid: return loop([](T x) { return formula::sigmoid(x); });
    case ActivationKind::leaky_relu: return loop([param](T x) { return formula::leaky_relu(x, param); });
  }
}

template <class T, class Loop>
void with_inverse(const Activation& a, Loop&& loop) {
  const T param = T(a.param);
  switch (a.kind) {
    case ActivationKind::identity: return loop([](T y) { return y; });
    case ActivationKind::selu: return loop([](T y) { return formula::selu_inverse(y); });
    case ActivationKind::elu: {
      const formula::Split<T> alpha(a.param);
      return loop([alpha](T y) { return formula::elu_inverse(y, alpha); });
    }
    case ActivationKind::tanh: return loop([](T y) { return formula::tanh_inverse(y); });
    case ActivationKind::sigmoid: return loop([](T y) { return formula::sigmoid_inverse(y); });
    case ActivationKind::leaky_relu: return loop([param](T y) { return formula::leaky_relu_inverse(y, param); });
  }
}

template <class T, class Loop>
void with_slope(const Activation& a, Loop&& loop) {
  const T param = T(a.param);
  switch (a.kind) {
    case ActivationKind::identity: return loop([](T, T) { return T(1); });
    case ActivationKind::selu: return loop([](T x, T y) { return formula::selu_slope(x, y); });
    case ActivationKind::elu: return loop([param](T x, T y) { return formula::elu_slope(x, y, param); });
    case ActivationKind::tanh: return loop([](T, T y) { return formula::tanh_slope(y); });
    case ActivationKind::sigmoid: return loop([](T, T y) { return formula::sigmoid_slope(y); });
    case ActivationKind::leaky_relu: return loop([param](T x, T) { return formula::leaky_relu_slope(x, param); });
  }
}

}  // namespace detail

// h[i] = act(z[i] + bias[i % width]) for n entries, rows of `width` (bias null: none).
template <class T>
void activate(const Activation& a, const T* __restrict z, const T* __restrict bias, std::size_t width,
              T* __restrict h, std::size_t n) {
  detail::with_forward<T>(a, [&](auto f) {
    if (!bias) {
      for (std::size_t i = 0; i < n; ++i) h[i] = f(z[i]);
      return;
    }
    for (std::size_t row = 0; row < n; row += width)
      for (std::size_t j = 0; j < width; ++j) h[row + j] = f(z[row + j] + bias[j]);
  });
}

// In place: h[i] = act(h[i] + bias[i % width]).
template <class T>
void activate_in_place(const Activation& a, const T* __restrict bias, std::size_t width, T* __restrict h,
                       std::size_t n) {
  detail::with_forward<T>(a, [&](auto f) {
    if (!bias) {
      for (std::size_t i = 0; i < n; ++i) h[i] = f(h[i]);
      return;
    }
    for (std::size_t row = 0; row < n; row += width)
      for (std::size_t j = 0; j < width; ++j) h[row + j] = f(h[row + j] + bias[j]);
  });
}

// s[i] = act'(z[i]) from z and h = act(z).
template <class T>
void activation_slopes(const Activation& a, const T* __restrict z, const T* __restrict h, T* __restrict s,
                       std::size_t n) {
  detail::with_slope<T>(a, [&](auto f) {
    for (std::size_t i = 0; i < n; ++i) s[i] = f(z[i], h[i]);
  });
}

// In place: y[i] = act^-1(y[i] clamped into the range) - bias[i % width]; returns how many
// entries were clamped.
template <class T>
std::size_t invert_activation(const Activation& a, const T* __restrict bias, std::size_t width, T* __restrict y,
                              std::size_t n) {
  T lo, hi;
  a.range(lo, hi);
  std::size_t clamped = 0;
  for (std::size_t i = 0; i < n; ++i) clamped += static_cast<std::size_t>(y[i] < lo) + (y[i] > hi);
  detail::with_inverse<T>(a, [&](auto f) {
    for (std::size_t i = 0; i < n; ++i) y[i] = f(y[i] < lo ? lo : (y[i] > hi ? hi : y[i]));
  });
  if (bias)
    for (std::size_t row = 0; row < n; row += width)
      for (std::size_t j = 0; j < width; ++j) y[row + j] -= bias[j];
  return clamped;
}
#endif

}  // namespace vsfast
