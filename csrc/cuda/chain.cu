// The chained reconstruction on the GPU: per layer one fused pass (inverse activation, clamping
// into its domain with a count, bias subtraction) and one GEMM with the precomputed (W^+)^T, as
// reconstruct and forward in csrc/vsfast/chain.hpp.
#include "cuda/api.hpp"
#include "cuda/kernels.cuh"
#include "cuda/library.hpp"
#include "cuda/project.cuh"

#include <algorithm>

namespace vsfast::cuda {

namespace {

// h (rows x m) <- act^-1(h) - b in place, by the CPU's Activation::inverse; counter += entries
// clamped (one atomic per warp).
template <class T>
__global__ void invert_kernel(T* h, std::size_t rows, std::size_t m, const T* bias, Activation act,
                              unsigned long long* counter) {
  unsigned long long clamped = 0;
  for (std::size_t i = blockIdx.x * std::size_t(blockDim.x) + threadIdx.x; i < rows * m;
       i += std::size_t(gridDim.x) * blockDim.x) {
    T v = act.inverse(h[i], clamped);
    if (bias) v -= bias[i % m];
    h[i] = v;
  }
  for (int offset = 16; offset > 0; offset /= 2) clamped += __shfl_down_sync(0xffffffffu, clamped, offset);
  if ((threadIdx.x & 31) == 0 && clamped) atomicAdd(counter, clamped);
}

// h (rows x m) <- act(h + b) in place, by the CPU's Activation::forward.
template <class T>
__global__ void activate_kernel(T* h, std::size_t rows, std::size_t m, const T* bias, Activation act) {
  for (std::size_t i = blockIdx.x * std::size_t(blockDim.x) + threadIdx.x; i < rows * m;
       i += std::size_t(gridDim.x) * blockDim.x)
    h[i] = act.forward(bias ? h[i] + bias[i % m] : h[i]);
}

template <class T>
std::size_t widest(const std::vector<Layer<T>>& layers) {
  std::size_t w = layers.back().m;
  for (const auto& L : layers) w = std::max({w, L.n, L.m});
  return w;
}

// out (rows x m) = act(h W^T + b) for h (rows x n).
template <class T>
void apply_layer(const Bound& bd, const Layer<T>& L, const T* h, std::size_t rows, T* out) {
  const int im = to_int(L.m, "layer outputs"), in = to_int(L.n, "layer inputs"), irows = to_int(rows, "rows");
  // Column-major: out^T (m x rows) = W (W^T is column-major n x m) times h^T (n x rows).
  gemm(bd.ctx.blas, true, false, im, irows, in, T(1), L.weight, in, 0, h, in, 0, T(0), out, im, 0, 1);
  activate_kernel<<<blocks_for(rows * L.m), kThreads, 0, bd.stream>>>(out, rows, L.m, L.bias, L.activation);
  check_launch("activate_kernel");
}

// The magnitudes measured per call, all read at its one wait: inputs are refused for NaN or inf,
// and outputs beyond the dtype raise the CPU core's OverflowError, after the work rather than
// before, since a wait per check would serialise the caller's stream.
enum Check : std::size_t { kInput, kReference, kOutput, kChecks };

template <class T>
struct ChainWork {
  T *a, *b;                      // rows x widest each
  std::vector<T*> ref_inputs;    // the reference's input to layers 0 .. (every_layer ? depth : 1)
  T *ref_signal, *ref_residual;  // ref_rows x widest
  ProjectWork<T> project;
  unsigned long long* clamped;   // depth
  unsigned long long* magnitudes;  // kChecks

  static ChainWork layout(Arena& arena, const std::vector<Layer<T>>& layers, std::size_t rows, std::size_t ref_rows,
                          bool every_layer) {
    ChainWork w;
    const std::size_t wide = widest(layers);
    w.a = arena.take<T>(rows * wide);
    w.b = arena.take<T>(rows * wide);
    std::size_t max_rank = 0;
    if (ref_rows) {
      for (std::size_t l = 0; l < (every_layer ? layers.size() : 1); ++l)
        w.ref_inputs.push_back(arena.take<T>(ref_rows * layers[l].n));
      for (const auto& L : layers) max_rank = std::max(max_rank, L.rank);
    }
    w.ref_signal = arena.take<T>(ref_rows * wide);
    w.ref_residual = arena.take<T>(ref_rows * wide);
    w.project = ProjectWork<T>::layout(arena, ref_rows, max_rank);
    w.clamped = arena.take<unsigned long long>(layers.size());
    w.magnitudes = arena.take<unsigned long long>(kChecks);
    return w;
  }
};

}  // namespace

template <class T>
std::size_t reconstruct_workspace(const Call&, const std::vector<Layer<T>>& layers, std::size_t rows,
                                  std::size_t ref_rows, bool every_layer) {
  Arena arena(nullptr, 0);
  ChainWork<T>::layout(arena, layers, rows, ref_rows, every_layer);
  return arena.used();
}

template <class T>
std::vector<std::size_t> reconstruct(const Call& call, const std::vector<Layer<T>>& layers, const T* y,
                                     std::size_t rows, const T* reference, std::size_t ref_rows, bool every_layer,
                                     T* x) {
  DeviceGuard guard(call.device);
  const Bound bd = bind(call);
  Arena arena = arena_of(call);
  if (!reference) ref_rows = 0;
  ChainWork<T> w = ChainWork<T>::layout(arena, layers, rows, ref_rows, every_layer);
  const std::size_t depth = layers.size();
  measure_magnitudes(y, rows * layers.back().m, 0, 1, w.magnitudes + kInput, bd.stream);
  if (ref_rows) {
    measure_magnitudes(reference, ref_rows * layers.front().n, 0, 1, w.magnitudes + kReference, bd.stream);
    VSFAST_CHECK(cudaMemcpyAsync(w.ref_inputs[0], reference, ref_rows * layers.front().n * sizeof(T),
                                 cudaMemcpyDeviceToDevice, bd.stream));
    for (std::size_t l = 0; l + 1 < w.ref_inputs.size(); ++l)
      apply_layer(bd, layers[l], w.ref_inputs[l], ref_rows, w.ref_inputs[l + 1]);
  }
  VSFAST_CHECK(cudaMemsetAsync(w.clamped, 0, depth * sizeof(unsigned long long), bd.stream));
  T* h = w.a;
  T* next = w.b;
  VSFAST_CHECK(cudaMemcpyAsync(h, y, rows * layers.back().m * sizeof(T), cudaMemcpyDeviceToDevice, bd.stream));
  const int irows = to_int(rows, "rows");
  for (std::size_t l = depth; l-- > 0;) {
    const Layer<T>& L = layers[l];
    invert_kernel<<<blocks_for(rows * L.m), kThreads, 0, bd.stream>>>(h, rows, L.m, L.bias, L.activation,
                                                                      w.clamped + l);
    check_launch("invert_kernel");
    T* out = l == 0 ? x : next;
    // Column-major: out^T (n x rows) = ((W^+)^T as column-major n x m) times h^T (m x rows).
    const int im = to_int(L.m, "layer outputs"), in = to_int(L.n, "layer inputs");
    gemm(bd.ctx.blas, false, false, in, irows, im, T(1), L.pinv_t, in, 0, h, im, 0, T(0), out, in, 0, 1);
    if (l < w.ref_inputs.size()) {
      // Add the reference's component in the layer's rejected space: its residual.
      project_rows(bd, w.ref_inputs[l], ref_rows, L.n, L.signal_rows, L.rank, w.ref_signal, w.ref_residual,
                   w.project);
      add_rows(out, rows, L.n, w.ref_residual, ref_rows, bd.stream);
    }
    std::swap(h, next);
  }
  measure_magnitudes(x, rows * layers.front().n, 0, 1, w.magnitudes + kOutput, bd.stream);
  std::vector<unsigned long long> counts(depth);
  VSFAST_CHECK(cudaMemcpyAsync(counts.data(), w.clamped, depth * sizeof(unsigned long long), cudaMemcpyDeviceToHost,
                               bd.stream));
  const std::vector<double> largest = fetch_magnitudes(w.magnitudes, kChecks, bd.stream);
  require_finite(largest[kInput], "Y");
  if (ref_rows) require_finite(largest[kReference], "reference");
  require_representable<T>(largest[kOutput], "the reconstructed input");
  return std::vector<std::size_t>(counts.begin(), counts.end());
}

template <class T>
struct ForwardWork {
  T *a, *b;                        // rows x widest each
  unsigned long long* magnitudes;  // kChecks

  static ForwardWork layout(Arena& arena, const std::vector<Layer<T>>& layers, std::size_t rows) {
    ForwardWork w;
    const std::size_t wide = widest(layers);
    w.a = arena.take<T>(rows * wide);
    w.b = arena.take<T>(rows * wide);
    w.magnitudes = arena.take<unsigned long long>(kChecks);
    return w;
  }
};

template <class T>
std::size_t forward_workspace(const Call&, const std::vector<Layer<T>>& layers, std::size_t rows) {
  Arena arena(nullptr, 0);
  ForwardWork<T>::layout(arena, layers, rows);
  return arena.used();
}

template <class T>
void forward(const Call& call, const std::vector<Layer<T>>& layers, const T* x, std::size_t rows, T* y) {
  DeviceGuard guard(call.device);
  const Bound bd = bind(call);
  Arena arena = arena_of(call);
  const ForwardWork<T> w = ForwardWork<T>::layout(arena, layers, rows);
  measure_magnitudes(x, rows * layers.front().n, 0, 1, w.magnitudes + kInput, bd.stream);
  const T* h = x;
  for (std::size_t l = 0; l < layers.size(); ++l) {
    T* out = l + 1 == layers.size() ? y : (l % 2 ? w.b : w.a);
    apply_layer(bd, layers[l], h, rows, out);
    h = out;
  }
  measure_magnitudes(y, rows * layers.back().m, 0, 1, w.magnitudes + kOutput, bd.stream);
  const std::vector<double> largest = fetch_magnitudes(w.magnitudes, kChecks, bd.stream);
  require_finite(largest[kInput], "X");
  require_representable<T>(largest[kOutput], "the chain's output");
}

#define VSFAST_INSTANTIATE(T)                                                                                        \
  template std::size_t reconstruct_workspace<T>(const Call&, const std::vector<Layer<T>>&, std::size_t, std::size_t, \
                                                bool);                                                               \
  template std::vector<std::size_t> reconstruct<T>(const Call&, const std::vector<Layer<T>>&, const T*, std::size_t, \
                                                   const T*, std::size_t, bool, T*);                                 \
  template std::size_t forward_workspace<T>(const Call&, const std::vector<Layer<T>>&, std::size_t);                 \
  template void forward<T>(const Call&, const std::vector<Layer<T>>&, const T*, std::size_t, T*);
VSFAST_INSTANTIATE(float)
VSFAST_INSTANTIATE(double)
#undef VSFAST_INSTANTIATE

}  // namespace vsfast::cuda
