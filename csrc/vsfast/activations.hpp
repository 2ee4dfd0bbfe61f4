// Invertible activations and their inverses. Targets outside an activation's range are moved to
// the nearest point of the range less a relative margin, and counted: never turned into NaN.
#pragma once

#include <cmath>
#include <cstddef>
#include <limits>
#include <stdexcept>
#include <string>

namespace vsfast {

enum class ActivationKind { identity, selu, elu, tanh, sigmoid, leaky_relu };

// torch's constants for SELU.
constexpr double selu_lambda = 1.0507009873554804934193349852946;
constexpr double selu_alpha = 1.6732632423543772848170429916717;

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
  T forward(T x) const {
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
  T slope(T x, T y) const {
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
  // margin of sqrt(eps), and `clamped` is incremented.
  template <class T>
  T inverse(T y, std::size_t& clamped) const {
    const T margin = std::sqrt(std::numeric_limits<T>::epsilon());
    auto at_least = [&](T lo) {
      if (y < lo) { y = lo; ++clamped; }
    };
    auto at_most = [&](T hi) {
      if (y > hi) { y = hi; ++clamped; }
    };
    switch (kind) {
      case ActivationKind::identity: return y;
      case ActivationKind::selu: {
        const T floor = T(selu_lambda * selu_alpha);
        if (y > 0) return y / T(selu_lambda);
        at_least(-floor * (T(1) - margin));
        return std::log1p(y / floor);
      }
      case ActivationKind::elu: {
        if (y > 0) return y;
        const T floor = T(param);
        at_least(-floor * (T(1) - margin));
        return std::log1p(y / floor);
      }
      case ActivationKind::tanh:
        at_least(-(T(1) - margin));
        at_most(T(1) - margin);
        return std::atanh(y);
      case ActivationKind::sigmoid:
        at_least(margin);
        at_most(T(1) - margin);
        return std::log(y) - std::log1p(-y);
      case ActivationKind::leaky_relu: return y >= 0 ? y : y / T(param);
    }
    return y;
  }
};

}  // namespace vsfast
