// Keeping results inside the dtype's range, shared by the CPU core and the CUDA module: the
// largest magnitude of the data, the power-of-two rescaling of inputs whose products would
// overflow or underflow, the thresholds of the rank rule, and the message of a result that does
// not fit the dtype.
#pragma once

#include <algorithm>
#include <cmath>
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <limits>
#include <optional>
#include <string>
#include <type_traits>

namespace vsfast {

// Largest magnitude among count values, or NaN when one of them is NaN or inf. One integer max
// over the values' bit patterns with the sign cleared: those order as the magnitudes do, with inf
// and NaN above every finite value, and the loop vectorises (twice the speed of a floating-point
// max with an isfinite test).
template <class T>
double max_abs(const T* p, std::size_t count) {
  using Bits = std::conditional_t<sizeof(T) == 4, std::int32_t, std::int64_t>;
  constexpr Bits magnitude = std::numeric_limits<Bits>::max();
  Bits largest = 0;
  for (std::size_t i = 0; i < count; ++i) {
    Bits bits;
    std::memcpy(&bits, p + i, sizeof bits);
    largest = std::max(largest, static_cast<Bits>(bits & magnitude));
  }
  T value;
  std::memcpy(&value, &largest, sizeof value);
  return std::isfinite(value) ? static_cast<double>(value) : std::nan("");
}

// The power-of-two exponent that brings a matrix whose largest magnitude is max_abs near 1, or 0
// when it is safe as it is. The sketch's Gram matrices square the matrix's scale: beyond
// 2^(max_exponent / 4) they could overflow, below its reciprocal lose digits to underflow.
template <class T>
int rescaling_exponent(double max_abs) {
  constexpr int limit = std::numeric_limits<T>::max_exponent / 4;  // 32 for float, 256 for double
  if (max_abs == 0) return 0;
  const int e = std::ilogb(max_abs);
  return e > limit || e < -limit ? e : 0;
}

// The rank rule of numpy's matrix_rank / scipy's pinv counts singular values above
// max(atol, rtol * s[0]); rtol defaults to max(m, n) * eps when neither tolerance is given and to
// 0 when only atol is.
template <class T>
double rank_rtol(std::optional<double> rtol, std::optional<double> atol, std::size_t m, std::size_t n) {
  return rtol ? *rtol : (atol ? 0.0 : static_cast<double>(std::max(m, n)) * std::numeric_limits<T>::epsilon());
}

// Below the tolerances, a floor: subnormal singular values never count, whatever the tolerances,
// since their reciprocals overflow and a pseudoinverse through them would be inf or NaN.
template <class T>
double rank_floor() {
  return static_cast<double>(std::numeric_limits<T>::min()) * (1 - std::numeric_limits<T>::epsilon());
}

template <class T>
const char* dtype_name() {
  return std::is_same_v<T, float> ? "float32" : "float64";
}

// The message of the std::overflow_error (Python's OverflowError) raised when a result, named by
// `what`, does not fit the dtype: never inf or NaN handed back.
template <class T>
std::string overflow_message(const std::string& what) {
  return what + " overflows " + dtype_name<T>() +
         (std::is_same_v<T, float> ? "; compute in float64 or scale the input down" : "; scale the input down");
}

}  // namespace vsfast
