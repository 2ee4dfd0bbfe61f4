// Pseudoinverses through the SVD and the chained reconstruction of inputs from outputs.
//
// A chain is a list of layers h_l = act_l(W_l h_{l-1} + b_l), vectors as rows. Going backwards,
// each layer undoes its activation, subtracts its bias and applies W_l^+; the per-layer factor
// (W_l^+)^T = U_r S_r^-1 V_r^T is computed once, so many targets cost one matrix product per layer.
#pragma once

#include "activations.hpp"
#include "blas.hpp"
#include "parallel.hpp"
#include "project.hpp"
#include "range.hpp"
#include "svd.hpp"

#include <algorithm>
#include <atomic>
#include <cmath>
#include <cstddef>
#include <memory>
#include <optional>
#include <stdexcept>
#include <string>
#include <vector>

namespace vsfast {

// Rank by the rule of numpy's matrix_rank / scipy's pinv, with the floor of rank_floor (see
// range.hpp for both).
template <class T>
std::size_t rank_of(const T* s, std::size_t count, std::size_t m, std::size_t n, std::optional<double> rtol,
                    std::optional<double> atol) {
  if (count == 0) return 0;
  const double tol = std::max({atol.value_or(0.0), rank_rtol<T>(rtol, atol, m, n) * static_cast<double>(s[0]),
                               rank_floor<T>()});
  std::size_t rank = 0;
  while (rank < count && static_cast<double>(s[rank]) > tol) ++rank;
  return rank;
}

template <class T>
struct PinvFactors {
  std::size_t rank = 0;
  int exponent = 0;         // the factors are those of W * 2^-exponent
  std::vector<T> u, s, vh;  // thin SVD: u m x q, s q, vh q x n, q = min(m, n)
};

// A matrix large enough for its singular values to overflow is decomposed scaled down by a
// power of two (exact), and its pseudoinverse, which is small, scaled back.
template <class T>
PinvFactors<T> pinv_factors(const T* w, std::size_t m, std::size_t n, std::optional<double> rtol,
                            std::optional<double> atol) {
  PinvFactors<T> f;
  const std::size_t q = std::min(m, n);
  f.u.resize(m * q);
  f.s.resize(q);
  f.vh.resize(q * n);
  f.exponent = std::max(0, rescaling_exponent<T>(max_abs(w, m * n)));
  std::vector<T> work;
  svd_rowmajor(w, m, n, f.u.data(), f.s.data(), f.vh.data(), work, f.exponent);
  if (atol) atol = std::ldexp(*atol, -f.exponent);
  f.rank = rank_of(f.s.data(), q, m, n, rtol, atol);
  return f;
}

// Writes W^+ (row-major n x m) or, when `transposed`, (W^+)^T (row-major m x n).
template <class T>
void pinv_from_factors(const PinvFactors<T>& f, std::size_t m, std::size_t n, bool transposed, T* out) {
  const std::size_t q = std::min(m, n), r = f.rank;
  if (r == 0) {
    std::fill(out, out + m * n, T(0));
    return;
  }
  std::vector<T> scaled_vh(f.vh.begin(), f.vh.begin() + static_cast<std::ptrdiff_t>(r * n));
  for (std::size_t i = 0; i < r; ++i)
    for (std::size_t j = 0; j < n; ++j) scaled_vh[i * n + j] = std::ldexp(scaled_vh[i * n + j] / f.s[i], -f.exponent);
  const blas_int bm = to_blas_int(m, "rows"), bn = to_blas_int(n, "columns");
  const blas_int br = static_cast<blas_int>(r), bq = static_cast<blas_int>(q);
  if (transposed)  // U_r (S_r^-1 Vh_r)
    gemm_rowmajor(false, false, bm, bn, br, T(1), f.u.data(), bq, scaled_vh.data(), bn, T(0), out, bn);
  else  // (S_r^-1 Vh_r)^T U_r^T
    gemm_rowmajor(true, true, bn, bm, br, T(1), scaled_vh.data(), bn, f.u.data(), bq, T(0), out, bm);
}

template <class T>
struct LayerSpec {
  std::vector<T> weight;  // row-major m x n
  std::vector<T> bias;    // m entries, or empty
  std::size_t m = 0, n = 0;
  Activation activation;
};

template <class T>
class Chain {
 public:
  Chain(std::vector<LayerSpec<T>> specs, std::optional<double> rtol, std::optional<double> atol)
      : layers_(std::move(specs)) {
    if (layers_.empty()) throw std::invalid_argument("layers: expected at least one layer");
    for (std::size_t l = 1; l < layers_.size(); ++l)
      if (layers_[l].n != layers_[l - 1].m)
        throw std::invalid_argument("layers: layer " + std::to_string(l) + " takes " +
                                    std::to_string(layers_[l].n) + " inputs but layer " + std::to_string(l - 1) +
                                    " gives " + std::to_string(layers_[l - 1].m) + " outputs");
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
      if (l == 0) first_lift_ = lift(f, L.m);
    }
  }

  std::size_t depth() const { return layers_.size(); }
  std::size_t input_dim() const { return layers_.front().n; }
  std::size_t output_dim() const { return layers_.back().m; }
  const std::vector<std::size_t>& ranks() const { return ranks_; }
  const LayerSpec<T>& layer(std::size_t l) const { return layers_[l]; }
  // V_r^T of layer l (rank x n, row-major): an orthonormal basis of its signal space, as rows.
  const std::vector<T>& signal_rows(std::size_t l) const { return signal_rows_[l]; }
  // U_r S_r of the first layer (m x rank, row-major): W x = U_r S_r (V_r^T x), so a move of c
  // along the signal basis moves the first layer's pre-activation by U_r S_r c.
  const std::vector<T>& first_lift() const { return first_lift_; }

  // x (rows x input_dim) = inputs whose outputs are y (rows x output_dim). A reference input
  // (ref_rows rows, 1 or `rows`) fills the rejected space of the first layer, or with
  // `every_layer` of every layer with the reference's own activations there: adding a vector of
  // W_l's null space to layer l's input leaves its output unchanged, so y is still reproduced,
  // while the inputs, and the intermediate values, resemble the reference's. clamped[l] counts
  // the targets of layer l moved into its activation's range.
  void reconstruct(const T* y, std::size_t rows, const T* reference, std::size_t ref_rows, bool every_layer, T* x,
                   std::vector<std::size_t>& clamped) const {
    clamped.assign(layers_.size(), 0);
    // The reference's input to every layer (only the first one's unless every_layer).
    std::vector<std::vector<T>> ref_inputs;
    if (reference) {
      ref_inputs.emplace_back(reference, reference + ref_rows * input_dim());
      for (std::size_t l = 0; every_layer && l + 1 < layers_.size(); ++l)
        ref_inputs.push_back(apply_layer(layers_[l], ref_inputs.back().data(), ref_rows));
    }
    // Two scratch buffers of the widest layer, left uninitialised: every entry is written before
    // it is read. The first layer writes straight into x.
    std::size_t widest = output_dim();
    for (const auto& L : layers_) widest = std::max(widest, L.n);
    std::unique_ptr<T[]> scratch_a(new T[rows * widest]), scratch_b(new T[rows * widest]);
    T* h = scratch_a.get();
    T* next = scratch_b.get();
    std::copy(y, y + rows * output_dim(), h);
    for (std::size_t l = layers_.size(); l-- > 0;) {
      const auto& L = layers_[l];
      clamped[l] = invert_activation(L, h, rows);
      T* out = l == 0 ? x : next;
      gemm_rowmajor(false, false, to_blas_int(rows, "rows"), static_cast<blas_int>(L.n), static_cast<blas_int>(L.m),
                    T(1), h, static_cast<blas_int>(L.m), pinv_t_[l].data(), static_cast<blas_int>(L.n), T(0), out,
                    static_cast<blas_int>(L.n));
      if (l < ref_inputs.size()) add_rejected_part(l, ref_inputs[l].data(), ref_rows, out, rows);
      std::swap(h, next);
    }
  }

  // y (rows x output_dim) = the chain applied to x (rows x input_dim).
  void forward(const T* x, std::size_t rows, T* y) const {
    std::vector<T> h(x, x + rows * input_dim());
    for (const auto& L : layers_) h = apply_layer(L, h.data(), rows);
    std::copy(h.begin(), h.end(), y);
  }

 private:
  // In place: h <- act^-1(h) - b. Returns how many entries had to be clamped.
  static std::size_t invert_activation(const LayerSpec<T>& L, T* h, std::size_t rows) {
    std::atomic<std::size_t> clamped{0};
    parallel_rows(rows, L.m, [&](std::size_t begin, std::size_t end) {
      std::size_t local = 0;
      for (std::size_t i = begin; i < end; ++i)
        for (std::size_t j = 0; j < L.m; ++j) {
          T& v = h[i * L.m + j];
          v = L.activation.inverse(v, local);
          if (!L.bias.empty()) v -= L.bias[j];
        }
      clamped += local;
    });
    return clamped.load();
  }

  // act(h W^T + b) for rows x n inputs h.
  static std::vector<T> apply_layer(const LayerSpec<T>& L, const T* h, std::size_t rows) {
    std::vector<T> out(rows * L.m);
    gemm_rowmajor(false, true, to_blas_int(rows, "rows"), static_cast<blas_int>(L.m), static_cast<blas_int>(L.n), T(1),
                  h, static_cast<blas_int>(L.n), L.weight.data(), static_cast<blas_int>(L.n), T(0), out.data(),
                  static_cast<blas_int>(L.m));
    parallel_rows(rows, L.m, [&](std::size_t begin, std::size_t end) {
      for (std::size_t i = begin; i < end; ++i)
        for (std::size_t j = 0; j < L.m; ++j) {
          T& v = out[i * L.m + j];
          v = L.activation.forward(L.bias.empty() ? v : v + L.bias[j]);
        }
    });
    return out;
  }

  static std::vector<T> lift(const PinvFactors<T>& f, std::size_t m) {
    const std::size_t q = f.s.size();
    std::vector<T> out(m * f.rank);
    for (std::size_t i = 0; i < m; ++i)
      for (std::size_t k = 0; k < f.rank; ++k) out[i * f.rank + k] = f.u[i * q + k] * std::ldexp(f.s[k], f.exponent);
    return out;
  }

  // x += the component of the reference rows in layer l's rejected (null) space.
  void add_rejected_part(std::size_t l, const T* reference, std::size_t ref_rows, T* x, std::size_t rows) const {
    const std::size_t n = layers_[l].n;
    std::vector<T> signal(ref_rows * n), residual(ref_rows * n);
    project_rowmajor(reference, ref_rows, n, signal_rows_[l].data(), ranks_[l], signal.data(), residual.data());
    for (std::size_t i = 0; i < rows; ++i) {
      const T* r = residual.data() + (ref_rows == 1 ? 0 : i * n);
      for (std::size_t j = 0; j < n; ++j) x[i * n + j] += r[j];
    }
  }

  std::vector<LayerSpec<T>> layers_;
  std::vector<std::vector<T>> pinv_t_;  // (W_l^+)^T, row-major m_l x n_l
  std::vector<std::size_t> ranks_;
  std::vector<std::vector<T>> signal_rows_;  // V_r^T of each layer: its signal space, as rows
  std::vector<T> first_lift_;                // U_r S_r of the first layer
};

}  // namespace vsfast
