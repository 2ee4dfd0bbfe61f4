// Elementary functions for the activations' loops over arrays (activations.hpp): expm1 and exp of
// x <= 0, log1p and log, in float and double. glibc's scalar expm1f and log1pf cost a call and a
// branchy evaluation per value (13-17 % of Chain.solve's time in profiles on AMD EPYC and Intel
// Xeon); these are branch-free polynomials, so a loop that calls them vectorises on any x86-64
// (SSE2, the wheels' baseline) or other target, and gives the same bits on every CPU that runs
// the same build. glibc's vector library (libmvec) would be called only under -ffast-math, and
// has expm1 and log1p only from glibc 2.35.
//
// Each function stays within a few units in the last place (ulps) of the exact value over its
// domain, subnormal results included: tests/test_activations.py measures the activations built on
// them against long double, and docs/inverse-maps.md states the bound. The methods are the
// classic ones (Cody and Waite's reduction for exp, fdlibm's formulation of log) with the Taylor
// coefficients of the series, whose truncation error is stated at each polynomial.
#pragma once

#include <cstdint>
#include <cstring>

// Forced inline: the loops that call these vectorise only if the whole body is inlined into them.
#if defined(__GNUC__)
#define VSFAST_VMATH inline __attribute__((always_inline))
#else
#define VSFAST_VMATH inline
#endif

namespace vsfast::vmath {

template <class T>
struct Format;

template <>
struct Format<float> {
  using Bits = std::uint32_t;
  using Int = std::int32_t;
  static constexpr int mantissa = 23, bias = 127, min_exponent = -126;
  // ln 2 = ln2_hi + ln2_lo, ln2_hi with 9 trailing zero bits: k * ln2_hi is exact for |k| < 512.
  static constexpr float ln2_hi = 0.693145751953125f, ln2_lo = 1.42860677e-6f;
  static constexpr float inv_ln2 = 1.44269504f;
  static constexpr float round_shift = 12582912.0f;  // 1.5 * 2^23: x + it rounds x to an integer
  static constexpr float exp_floor = -104.0f;        // exp(x) < 2^-150 below: rounds to 0
  static constexpr Bits sqrt_half = 0x3f3504f3;      // the bits of sqrt(1/2)
};

template <>
struct Format<double> {
  using Bits = std::uint64_t;
  using Int = std::int32_t;  // exponents: 32-bit lanes, which SSE2 can shift, compare and convert
  static constexpr int mantissa = 52, bias = 1023, min_exponent = -1022;
  // ln2_hi with 21 trailing zero bits: k * ln2_hi is exact for |k| < 2^21 (fdlibm's split).
  static constexpr double ln2_hi = 6.93147180369123816490e-01, ln2_lo = 1.90821492927058770002e-10;
  static constexpr double inv_ln2 = 1.44269504088896338700e+00;
  static constexpr double round_shift = 6755399441055744.0;  // 1.5 * 2^52
  static constexpr double exp_floor = -746.0;                // exp(x) < 2^-1075 below
  static constexpr Bits sqrt_half = 0x3fe6a09e667f3bcdULL;
};

template <class T>
VSFAST_VMATH typename Format<T>::Bits bits_of(T x) {
  typename Format<T>::Bits b;
  std::memcpy(&b, &x, sizeof b);
  return b;
}

template <class T>
VSFAST_VMATH T from_bits(typename Format<T>::Bits b) {
  T x;
  std::memcpy(&x, &b, sizeof x);
  return x;
}

// 2^k for min_exponent <= k <= max exponent, built from its bits.
template <class T>
VSFAST_VMATH T pow2(typename Format<T>::Int k) {
  using F = Format<T>;
  return from_bits<T>(static_cast<typename F::Bits>(static_cast<std::uint32_t>(k + F::bias)) << F::mantissa);
}

// expm1(r) for |r| <= ln2/2: r + r^2 (1/2! + r/3! + ...). The first omitted term, r^9/9! in
// float and r^14/14! in double, is below 1e-9 and 2e-17 of the result.
VSFAST_VMATH float expm1_reduced(float r) {
  float p = 1.0f / 40320;
  p = p * r + 1.0f / 5040;
  p = p * r + 1.0f / 720;
  p = p * r + 1.0f / 120;
  p = p * r + 1.0f / 24;
  p = p * r + 1.0f / 6;
  p = p * r + 0.5f;
  return r + r * r * p;
}

VSFAST_VMATH double expm1_reduced(double r) {
  double p = 1.0 / 6227020800.0;
  p = p * r + 1.0 / 479001600.0;
  p = p * r + 1.0 / 39916800.0;
  p = p * r + 1.0 / 3628800.0;
  p = p * r + 1.0 / 362880.0;
  p = p * r + 1.0 / 40320.0;
  p = p * r + 1.0 / 5040.0;
  p = p * r + 1.0 / 720.0;
  p = p * r + 1.0 / 120.0;
  p = p * r + 1.0 / 24.0;
  p = p * r + 1.0 / 6.0;
  p = p * r + 0.5;
  return r + r * r * p;
}

// x = k ln2 + r with k an integer and |r| <= ln2/2 (Cody-Waite: x - k ln2_hi is exact), for
// exp_floor <= x <= 0; returns r and sets k.
template <class T>
VSFAST_VMATH T reduce_ln2(T x, typename Format<T>::Int& k) {
  using F = Format<T>;
  const T kf = (x * F::inv_ln2 + F::round_shift) - F::round_shift;  // rounded to an integer
  k = static_cast<typename F::Int>(kf);
  return (x - kf * F::ln2_hi) - kf * F::ln2_lo;
}

// expm1(x) for x <= 0 (NaN gives NaN): 2^k (1 + expm1(r)) - 1 = (2^k - 1) + 2^k expm1(r), where
// 2^k - 1 is exact while 2^k >= eps; below that the result is -1 to rounding and 2^k is held at the
// smallest normal power.
template <class T>
VSFAST_VMATH T expm1_nonpositive(T x) {
  using F = Format<T>;
  const T clipped = x < F::exp_floor ? F::exp_floor : x;  // NaN passes through
  typename F::Int k;
  const T r = reduce_ln2(clipped, k);
  const T t = pow2<T>(k < F::min_exponent ? F::min_exponent : k);
  return (t - T(1)) + t * expm1_reduced(r);
}

// exp(x) for x <= 0 (NaN gives NaN), subnormal results included: (1 + expm1(r)) 2^k1 2^k2 with
// k1 + k2 = k and both halves normal, so only the last product rounds into the subnormal range.
template <class T>
VSFAST_VMATH T exp_nonpositive(T x) {
  using F = Format<T>;
  const T clipped = x < F::exp_floor ? F::exp_floor : x;
  typename F::Int k;
  const T r = reduce_ln2(clipped, k);
  const typename F::Int k1 = k / 2, k2 = k - k1;
  return ((T(1) + expm1_reduced(r)) * pow2<T>(k1)) * pow2<T>(k2);
}

// log(1 + f) - f + f^2/2 for f in [sqrt(1/2) - 1, sqrt(2) - 1], as s (f^2/2 + R), s = f / (2 + f):
// log(1 + f) = 2 atanh(s) = 2s + 2s^3/3 + 2s^5/5 + ..., |s| <= 0.1716 (fdlibm's formulation, with
// the series' own coefficients in R). The first omitted term is below 3e-9 (float) and 3e-17
// (double) of log(1 + f).
VSFAST_VMATH float log1p_tail(float s, float hfsq) {
  const float z = s * s;
  float r = 2.0f / 9;
  r = r * z + 2.0f / 7;
  r = r * z + 2.0f / 5;
  r = r * z + 2.0f / 3;
  return s * (hfsq + r * z);
}

VSFAST_VMATH double log1p_tail(double s, double hfsq) {
  const double z = s * s;
  double r = 2.0 / 19;
  r = r * z + 2.0 / 17;
  r = r * z + 2.0 / 15;
  r = r * z + 2.0 / 13;
  r = r * z + 2.0 / 11;
  r = r * z + 2.0 / 9;
  r = r * z + 2.0 / 7;
  r = r * z + 2.0 / 5;
  r = r * z + 2.0 / 3;
  return s * (hfsq + r * z);
}

// log(u) + c for a positive normal u and a correction c << 1 (the relative rounding error of u,
// when u stands for 1 + v): u = 2^k m with m in [sqrt(1/2), sqrt(2)), f = m - 1 exact,
// log(u) = k ln2 + log(1 + f).
template <class T>
VSFAST_VMATH T log_corrected(T u, T c) {
  using F = Format<T>;
  typename F::Bits b = bits_of(u) + (bits_of(T(1)) - F::sqrt_half);
  const typename F::Int k = static_cast<typename F::Int>(b >> F::mantissa) - F::bias;
  b = (b & ((typename F::Bits(1) << F::mantissa) - 1)) + F::sqrt_half;
  const T f = from_bits<T>(b) - T(1);
  const T kf = static_cast<T>(k);
  const T hfsq = T(0.5) * f * f, s = f / (T(2) + f);
  return kf * F::ln2_hi + (f - (hfsq - (log1p_tail(s, hfsq) + (kf * F::ln2_lo + c))));
}

// log(x) for a positive normal x.
template <class T>
VSFAST_VMATH T log_normal(T x) {
  return log_corrected(x, T(0));
}

// log1p(v) for v > -1 with 1 + v normal: log(u) for u = 1 + v rounded, plus the part of v that
// the rounding lost, relative to u (exact: Sterbenz's lemma makes u - 1 or u - v exact).
template <class T>
VSFAST_VMATH T log1p_above_minus_one(T v) {
  const T u = T(1) + v;
  const T lost_small = v - (u - T(1)), lost_large = T(1) - (u - v);
  const T lost = u < T(2) ? lost_small : lost_large;
  return log_corrected(u, lost / u);
}

}  // namespace vsfast::vmath
