// Exact thin SVD and singular values on the GPU, batched (the SVD itself: svd.cuh). The CPU twin
// is csrc/vsfast/svd.hpp.
#include "cuda/api.hpp"
#include "cuda/svd.cuh"

#include <algorithm>
#include <vector>

namespace vsfast::cuda {

namespace {

// Singular values computed on copies scaled by 2^-e_b: refused where they exceed the dtype once
// scaled back, then scaled back.
template <class T>
void unscale_singular_values(const Bound& bd, const std::vector<double>& top, const Scaling& sc, T* s,
                             std::size_t batch, std::size_t q) {
  require_singular_values_fit<T>(top, sc);
  if (sc.device) scale_by_powers_of_two(s, q, s, q, q, batch, sc.device, +1, bd.stream);
}

}  // namespace

template <class T>
std::size_t svd_workspace(const Call& call, std::size_t batch, std::size_t m, std::size_t n) {
  DeviceGuard guard(call.device);
  Arena arena(nullptr, 0);
  SvdWork<T>::layout(arena, context(call.device), batch, m, n);
  return arena.used();
}

template <class T>
void svd(const Call& call, const T* a, std::size_t batch, std::size_t m, std::size_t n, T* u, T* s, T* vh) {
  DeviceGuard guard(call.device);
  const Bound bd = bind(call);
  Arena arena = arena_of(call);
  SvdWork<T> w = SvdWork<T>::layout(arena, bd.ctx, batch, m, n);
  const Scaling sc = measure_and_plan(bd, a, batch, m, n, w);
  const std::vector<double> top = svd_into(bd, a, batch, m, n, sc, u, s, vh, w);
  unscale_singular_values(bd, top, sc, s, batch, static_cast<std::size_t>(w.cols));
}

// The svd's own workspace: its singular vectors stay there.
template <class T>
std::size_t svdvals_workspace(const Call& call, std::size_t batch, std::size_t m, std::size_t n) {
  return svd_workspace<T>(call, batch, m, n);
}

template <class T>
void svdvals(const Call& call, const T* a, std::size_t batch, std::size_t m, std::size_t n, T* s) {
  DeviceGuard guard(call.device);
  const Bound bd = bind(call);
  Arena arena = arena_of(call);
  SvdWork<T> w = SvdWork<T>::layout(arena, bd.ctx, batch, m, n);
  const Scaling sc = measure_and_plan(bd, a, batch, m, n, w);
  const std::vector<double> top = decompose(bd, a, batch, m, n, sc, s, w);
  unscale_singular_values(bd, top, sc, s, batch, static_cast<std::size_t>(w.cols));
}

#define VSFAST_INSTANTIATE(T)                                                                                       \
  template std::size_t svd_workspace<T>(const Call&, std::size_t, std::size_t, std::size_t);                       \
  template void svd<T>(const Call&, const T*, std::size_t, std::size_t, std::size_t, T*, T*, T*);                  \
  template std::size_t svdvals_workspace<T>(const Call&, std::size_t, std::size_t, std::size_t);                   \
  template void svdvals<T>(const Call&, const T*, std::size_t, std::size_t, std::size_t, T*);
VSFAST_INSTANTIATE(float)
VSFAST_INSTANTIATE(double)
#undef VSFAST_INSTANTIATE

}  // namespace vsfast::cuda
