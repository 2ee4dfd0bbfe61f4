// Invertible activations and their inverses. Targets outside an activation's range are moved to
// the nearest point of the range less a relative margin, and counted: never turned into NaN.
// forward, slope and inverse run on the host and, in the CUDA module's kernels, on the device.
#pragma once

#include "common.hpp"

#include <cmath>
#include <cstddef>
#include <stdexcept>
#include <string>

namespace vsfast {

enum class ActivationKind { identity, selu, elu, tanh, sigmoid, leaky_relu };

// torch's constants for SELU.
constexpr double selu_lambda = 1.0507009873554804934193349852946;
constexpr double selu_alpha = 1.6732632423543772848170429916717;

// sqrt(eps) of T, the relative margin inside an activation's range (a literal: device code cannot
// call std::numeric_limits).
template <class T>
VSFAST_HOST_DEVICE constexpr T root_eps() {
  return sizeof(T) == 4 ? T(3.4526698e-4f) : T(1.4901161193847656e-8);
}

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
      case ActivationKind::selu:
        return x > 0 ? T(selu_lambda) * x : T(selu_lambda * selu_alpha) * std::expm1(x);
      case ActivationKind::elu: return x > 0 ? x : T(param) * std::expm1(x);
      case ActivationKind::tanh: return std::tanh(x);
      case ActivationKind::sigmoid: return T(1) / (T(1) + std::exp(-x));
      case ActivationKind::leaky_relu: return x >= 0 ? x : T(param) * x;
    }
    return x;
  }

  // d forward / dx at x, given y = forward(x): from y, without a second exp or tanh.
  template <class T>
  VSFAST_HOST_DEVICE T slope(T x, T y) const {
    switch (kind) {
      case ActivationKind::identity: return T(1);
      case ActivationKind::selu: return x > 0 ? T(selu_lambda) : y + T(selu_lambda * selu_alpha);
      case ActivationKind::elu: return x > 0 ? T(1) : y + T(param);
      case ActivationKind::tanh: return T(1) - y * y;
      case ActivationKind::sigmoid: return y * (T(1) - y);
      case ActivationKind::leaky_relu: return x >= 0 ? T(1) : T(param);
    }
    return T(1);
  }

  // Inverse of forward at y; y outside the open range is first clamped inside it with a relative
  // margin of sqrt(eps), and `clamped` (any integer counter) is incremented.
  template <class T, class Count>
  VSFAST_HOST_DEVICE T inverse(T y, Count& clamped) const {
    const T margin = root_eps<T>();
    switch (kind) {
      case ActivationKind::identity: return y;
      case ActivationKind::selu: {
        const T floor = T(selu_lambda * selu_alpha);
        if (y > 0) return y / T(selu_lambda);
        clamp_below(y, -floor * (T(1) - margin), clamped);
        return std::log1p(y / floor);
      }
      case ActivationKind::elu: {
        if (y > 0) return y;
        const T floor = T(param);
        clamp_below(y, -floor * (T(1) - margin), clamped);
        return std::log1p(y / floor);
      }
      case ActivationKind::tanh:
        clamp_below(y, -(T(1) - margin), clamped);
        clamp_above(y, T(1) - margin, clamped);
        return std::atanh(y);
      case ActivationKind::sigmoid:
        clamp_below(y, margin, clamped);
        clamp_above(y, T(1) - margin, clamped);
        return std::log(y) - std::log1p(-y);
      case ActivationKind::leaky_relu: return y >= 0 ? y : y / T(param);
    }
    return y;
  }

 private:
  template <class T, class Count>
  VSFAST_HOST_DEVICE static void clamp_below(T& y, T lo, Count& clamped) {
    if (y < lo) y = lo, ++clamped;
  }
  template <class T, class Count>
  VSFAST_HOST_DEVICE static void clamp_above(T& y, T hi, Count& clamped) {
    if (y > hi) y = hi, ++clamped;
  }
};

}  // namespace vsfast
