// What the CPU core (csrc/vsfast) and the CUDA module (csrc/cuda) must agree on, in one place:
// the randomized SVD's parameters, the rank rule, keeping results inside the dtype's range (the
// largest magnitude of the data, the power-of-two rescaling of inputs whose products would
// overflow or underflow), the argument checks both bindings make, and the messages of the errors
// both sides raise. Plain C++ without BLAS or CUDA headers: every translation unit of both
// modules includes it, nvcc's too.
#pragma once

#include <algorithm>
#include <cmath>
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <limits>
#include <optional>
#include <stdexcept>
#include <string>
#include <type_traits>

#if defined(__CUDACC__)
#define VSFAST_HOST_DEVICE __host__ __device__
#else
#define VSFAST_HOST_DEVICE
#endif

namespace vsfast {

// A decomposition that did not converge: a numerical failure, not a usage error (Python's
// vsfast.LinAlgError, a numpy.linalg.LinAlgError).
struct LinAlgError : std::runtime_error {
  using std::runtime_error::runtime_error;
};

// --- the randomized SVD's parameters ----------------------------------------------------------

// How the range of A is found: subspace (power) iteration keeps the last block of
// (A A^T)^q A Omega; block Krylov iteration keeps every block, A Omega to (A A^T)^q A Omega,
// for the same passes over A (csrc/vsfast/rsvd.hpp). The GPU runs subspace iteration only.
enum class RsvdMethod : int { subspace = 0, krylov = 1 };

// The precision of the passes over A: the input's (full), or all but the last in bfloat16 where
// this CPU has AVX512-BF16 and the rounding costs no accuracy (automatic), or in bfloat16
// without that check (bfloat16: for measuring what the check protects). CPU only.
enum class RsvdPrecision : int { full = 0, automatic = 1, bfloat16 = 2 };

struct RsvdParams {
  std::size_t k = 0;            // singular triplets returned
  std::size_t oversample = 10;  // extra sketch columns: the error bound improves fast with them
  std::size_t power_iters = 2;  // each pass sharpens the spectrum's decay by its power
  std::uint64_t seed = 0;
  RsvdMethod method = RsvdMethod::subspace;
  RsvdPrecision precision = RsvdPrecision::full;
  // Adaptive depth (block Krylov only): stop once the a-posteriori estimate of
  // ||A - U S Vh||_2 / ||A||_2 is at most tol, or once further passes cannot improve it;
  // power_iters is then the most iterations allowed. 0: a fixed power_iters.
  double tol = 0;
};

// Refuses a k outside [1, min(m, n)]: the outputs are sized by k and the sketch holds at most
// min(m, n) columns, so a larger k would write past them.
inline void require_k_in_range(std::size_t k, std::size_t m, std::size_t n) {
  const std::size_t q = std::min(m, n);
  if (k < 1 || k > q)
    throw std::invalid_argument("k: expected 1 <= k <= min(m, n) = " + std::to_string(q) + ", got " +
                                std::to_string(k));
}

// Columns in the sketch of an m x n matrix: k + oversample, at most min(m, n). Never below k
// (for k <= min(m, n)), whatever oversample is: k + oversample is not formed, so it cannot wrap.
inline std::size_t sketch_width(std::size_t m, std::size_t n, const RsvdParams& p) {
  const std::size_t q = std::min(m, n);
  return p.k >= q ? q : p.k + std::min(p.oversample, q - p.k);
}

// --- the dtype's range ---------------------------------------------------------------------------

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

// Whether X B^T B (rows of X, r orthonormal rows B of length n) might leave the dtype: its
// entries are at most r n max|X| max|B|^2, so only inputs near the dtype's limit can overflow and
// only then need the results checked.
template <class T>
bool projection_may_overflow(std::size_t r, std::size_t n, double x_max, double basis_max) {
  return 2.0 * static_cast<double>(r) * static_cast<double>(n) * x_max * basis_max * basis_max >
         static_cast<double>(std::numeric_limits<T>::max());
}

// --- the rank rule -------------------------------------------------------------------------------

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

// The value singular values must exceed to count, for the largest one s0 and the tolerances as
// rank_rtol gives them: max(atol, rtol * s0, floor). Host and device code apply the same rule.
VSFAST_HOST_DEVICE inline double rank_threshold(double s0, double rtol, double atol, double floor) {
  const double relative = rtol * s0;
  const double tol = atol > relative ? atol : relative;
  return tol > floor ? tol : floor;
}

// --- messages and the checks both bindings make ------------------------------------------------

template <class T>
const char* dtype_name() {
  return std::is_same_v<T, float> ? "float32" : "float64";
}

// The message of the std::invalid_argument (Python's ValueError) raised for an input holding NaN
// or inf, named by `name`.
inline std::string finite_message(const std::string& name) {
  return name + ": expected finite values, found NaN or inf";
}

// The message of the std::overflow_error (Python's OverflowError) raised when a result, named by
// `what`, does not fit the dtype: never inf or NaN handed back.
template <class T>
std::string overflow_message(const std::string& what) {
  return what + " overflows " + dtype_name<T>() +
         (std::is_same_v<T, float> ? "; compute in float64 or scale the input down" : "; scale the input down");
}

// A chain's reference inputs: one row for every target, or one per target. The kernels read row
// i of a per-target reference for target i, so any other count would read past it.
inline void require_reference_rows(std::size_t ref_rows, std::size_t rows) {
  if (ref_rows != 1 && ref_rows != rows)
    throw std::invalid_argument("reference: expected 1 or " + std::to_string(rows) + " rows, got " +
                                std::to_string(ref_rows));
}

// Layers (anything with sizes m x n) that chain: at least one, each taking what the previous one
// gives. The kernels size every intermediate buffer from these.
template <class Layers>
void require_chained(const Layers& layers) {
  if (layers.empty()) throw std::invalid_argument("layers: expected at least one layer");
  for (std::size_t l = 1; l < layers.size(); ++l)
    if (layers[l].n != layers[l - 1].m)
      throw std::invalid_argument("layers: layer " + std::to_string(l) + " takes " + std::to_string(layers[l].n) +
                                  " inputs but layer " + std::to_string(l - 1) + " gives " +
                                  std::to_string(layers[l - 1].m) + " outputs");
}

}  // namespace vsfast
