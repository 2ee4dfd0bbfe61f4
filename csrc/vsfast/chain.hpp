// The chained reconstruction of inputs from outputs, and the chain's forward map. The GPU twin is
// csrc/cuda/chain.cu.
//
// A chain is a list of layers h_l = act_l(W_l h_{l-1} + b_l), vectors as rows. Going backwards,
// each layer undoes its activation, subtracts its bias and applies W_l^+; the per-layer factor
// (W_l^+)^T = U_r S_r^-1 V_r^T is computed once, so many targets cost one matrix product per layer.
#pragma once

#include "activations.hpp"
#include "api.hpp"
#include "blas.hpp"
#include "checks.hpp"
#include "parallel.hpp"
#include "pinv.hpp"
#include "project.hpp"

#include <algorithm>
#include <atomic>
#include <cmath>
#include <cstddef>
#include <memory>
#include <optional>
#include <string>
#include <vector>

namespace vsfast {

namespace detail {

// U_r S_r (m x rank, row-major) of W from its factors.
template <class T>
std::vector<T> lift(const PinvFactors<T>& f, std::size_t m) {
  const std::size_t q = f.s.size();
  std::vector<T> out(m * f.rank);
  for (std::size_t i = 0; i < m; ++i)
    for (std::size_t k = 0; k < f.rank; ++k) out[i * f.rank + k] = f.u[i * q + k] * std::ldexp(f.s[k], f.exponent);
  return out;
}

// In place: h <- act^-1(h) - b. Returns how many entries had to be clamped.
template <class T>
std::size_t invert_layer(const Layer<T>& L, T* h, std::size_t rows) {
  std::atomic<std::size_t> clamped{0};
  const T* bias = L.bias.empty() ? nullptr : L.bias.data();
  parallel_rows(rows, L.m, [&](std::size_t begin, std::size_t end) {
    clamped += invert_activation(L.activation, bias, L.m, h + begin * L.m, (end - begin) * L.m);
  });
  return clamped.load();
}

// Scratch memory left uninitialised: every entry is written before it is read (a zero-filled
// std::vector would write it twice).
template <class T>
std::unique_ptr<T[]> scratch(std::size_t count) {
  return std::unique_ptr<T[]>(new T[count]);
}

// out (rows x m) = act(h W^T + b) for rows x n inputs h.
template <class T>
void apply_layer(const Layer<T>& L, const T* h, std::size_t rows, T* out) {
  gemm_rowmajor(false, true, to_blas_int(rows, "rows"), static_cast<blas_int>(L.m), static_cast<blas_int>(L.n), T(1),
                h, static_cast<blas_int>(L.n), L.weight.data(), static_cast<blas_int>(L.n), T(0), out,
                static_cast<blas_int>(L.m));
  const T* bias = L.bias.empty() ? nullptr : L.bias.data();
  parallel_rows(rows, L.m, [&](std::size_t begin, std::size_t end) {
    activate_in_place(L.activation, bias, L.m, out + begin * L.m, (end - begin) * L.m);
  });
}

// x += the component of the reference rows in layer l's rejected (null) space.
template <class T>
void add_rejected_part(const Chain<T>& chain, std::size_t l, const T* reference, std::size_t ref_rows, T* x,
                       std::size_t rows) {
  const std::size_t n = chain.layer(l).n;
  const auto signal = scratch<T>(ref_rows * n), residual = scratch<T>(ref_rows * n);
  project_rowmajor(reference, ref_rows, n, chain.signal_rows(l).data(), chain.ranks()[l], signal.get(),
                   residual.get());
  for (std::size_t i = 0; i < rows; ++i) {
    const T* r = residual.get() + (ref_rows == 1 ? 0 : i * n);
    for (std::size_t j = 0; j < n; ++j) x[i * n + j] += r[j];
  }
}

}  // namespace detail

template <class T>
Chain<T>::Chain(std::vector<Layer<T>> layers, std::optional<double> rtol, std::optional<double> atol)
    : layers_(std::move(layers)) {
  require_chained(layers_);
  for (std::size_t l = 0; l < layers_.size(); ++l) {
    const std::string name = "layers[" + std::to_string(l) + "]";
    require_finite(layers_[l].weight.data(), layers_[l].weight.size(), name + ".weight");
    require_finite(layers_[l].bias.data(), layers_[l].bias.size(), name + ".bias");
  }
  pinv_t_.resize(layers_.size());
  ranks_.resize(layers_.size());
  signal_rows_.resize(layers_.size());
  for (std::size_t l = 0; l < layers_.size(); ++l) {
    const auto& L = layers_[l];
    const PinvFactors<T> f = pinv_factors(L.weight.data(), L.m, L.n, rtol, atol);
    ranks_[l] = f.rank;
    pinv_t_[l].resize(L.m * L.n);
    pinv_from_factors(f, L.m, L.n, /*transposed=*/true, pinv_t_[l].data());
    signal_rows_[l].assign(f.vh.begin(), f.vh.begin() + static_cast<std::ptrdiff_t>(f.rank * L.n));
    if (l == 0) first_lift_ = detail::lift(f, L.m);
  }
}

// The entry points of api.hpp. A reference input fills the rejected space of the first layer, or
// with `every_layer` of every layer with the reference's own activations there: adding a vector
// of W_l's null space to layer l's input leaves its output unchanged, so y is still reproduced,
// while the inputs, and the intermediate values, resemble the reference's. clamped[l] counts the
// targets of layer l moved into its activation's range.
template <class T>
std::vector<std::size_t> reconstruct(const Chain<T>& chain, const T* y, std::size_t rows, const T* reference,
                                     std::size_t ref_rows, bool every_layer, T* x) {
  const std::size_t depth = chain.depth(), n0 = chain.input_dim();
  require_finite(y, rows * chain.output_dim(), "Y");
  if (reference) require_finite(reference, ref_rows * n0, "reference");
  std::vector<std::size_t> clamped(depth, 0);
  // The reference's input to every layer (only the first one's unless every_layer).
  std::vector<const T*> ref_inputs;
  std::vector<std::unique_ptr<T[]>> ref_activations;
  if (reference) {
    ref_inputs.push_back(reference);
    for (std::size_t l = 0; every_layer && l + 1 < depth; ++l) {
      ref_activations.push_back(detail::scratch<T>(ref_rows * chain.layer(l).m));
      detail::apply_layer(chain.layer(l), ref_inputs.back(), ref_rows, ref_activations.back().get());
      ref_inputs.push_back(ref_activations.back().get());
    }
  }
  // Two scratch buffers of the widest layer; the first layer writes straight into x.
  std::size_t widest = chain.output_dim();
  for (std::size_t l = 0; l < depth; ++l) widest = std::max(widest, chain.layer(l).n);
  const auto scratch_a = detail::scratch<T>(rows * widest), scratch_b = detail::scratch<T>(rows * widest);
  T* h = scratch_a.get();
  T* next = scratch_b.get();
  std::copy(y, y + rows * chain.output_dim(), h);
  for (std::size_t l = depth; l-- > 0;) {
    const Layer<T>& L = chain.layer(l);
    clamped[l] = detail::invert_layer(L, h, rows);
    T* out = l == 0 ? x : next;
    gemm_rowmajor(false, false, to_blas_int(rows, "rows"), static_cast<blas_int>(L.n), static_cast<blas_int>(L.m),
                  T(1), h, static_cast<blas_int>(L.m), chain.pinv_t(l).data(), static_cast<blas_int>(L.n), T(0), out,
                  static_cast<blas_int>(L.n));
    if (l < ref_inputs.size()) detail::add_rejected_part(chain, l, ref_inputs[l], ref_rows, out, rows);
    std::swap(h, next);
  }
  require_representable(x, rows * n0, "the reconstructed input");
  return clamped;
}

template <class T>
void forward(const Chain<T>& chain, const T* x, std::size_t rows, T* y) {
  require_finite(x, rows * chain.input_dim(), "X");
  // Hidden layers alternate between two scratch buffers; the last writes straight into y.
  std::size_t widest = 0;
  for (std::size_t l = 0; l + 1 < chain.depth(); ++l) widest = std::max(widest, chain.layer(l).m);
  const auto scratch_a = detail::scratch<T>(rows * widest), scratch_b = detail::scratch<T>(rows * widest);
  const T* h = x;
  for (std::size_t l = 0; l < chain.depth(); ++l) {
    T* out = l + 1 == chain.depth() ? y : (l % 2 ? scratch_b.get() : scratch_a.get());
    detail::apply_layer(chain.layer(l), h, rows, out);
    h = out;
  }
  require_representable(y, rows * chain.output_dim(), "the chain's output");
}

}  // namespace vsfast
