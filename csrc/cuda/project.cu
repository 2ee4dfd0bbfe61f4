// Splitting inputs into signal = X B^T B and residual = X - signal on the GPU: two GEMMs and one
// elementwise pass, as project_rowmajor in csrc/vsfast/project.hpp.
#include "cuda/api.hpp"
#include "cuda/kernels.cuh"
#include "cuda/library.hpp"
#include "cuda/project.cuh"

namespace vsfast::cuda {

template <class T>
std::size_t project_workspace(const Call& call, std::size_t rows, std::size_t n, std::size_t r) {
  (void)call;
  Arena arena(nullptr, 0);
  ProjectWork<T>::layout(arena, rows, n, r);
  arena.take<unsigned long long>(2);
  return arena.used();
}

template <class T>
void project(const Call& call, const T* x, std::size_t rows, std::size_t n, const T* basis, std::size_t r, T* signal,
             T* residual) {
  DeviceGuard guard(call.device);
  const Bound bd = bind(call);
  Arena arena = arena_of(call);
  ProjectWork<T> w = ProjectWork<T>::layout(arena, rows, n, r);
  unsigned long long* magnitudes = arena.take<unsigned long long>(2);  // X, basis: one wait
  measure_magnitudes(x, rows * n, 0, 1, magnitudes, bd.stream);
  if (r) measure_magnitudes(basis, r * n, 0, 1, magnitudes + 1, bd.stream);
  const std::vector<double> largest = fetch_magnitudes(magnitudes, r ? 2 : 1, bd.stream);
  require_finite(largest[0], "X");
  if (r) require_finite(largest[1], "basis");
  project_rows(bd, x, rows, n, basis, r, signal, residual, w);
  // A second wait only for inputs near the dtype's limit, as on the CPU.
  if (r && projection_may_overflow<T>(r, n, largest[0], largest[1])) {
    measure_magnitudes(signal, rows * n, 0, 1, magnitudes, bd.stream);
    measure_magnitudes(residual, rows * n, 0, 1, magnitudes + 1, bd.stream);
    const std::vector<double> results = fetch_magnitudes(magnitudes, 2, bd.stream);
    require_representable<T>(results[0], "the signal part");
    require_representable<T>(results[1], "the residual part");
  }
}

#define VSFAST_INSTANTIATE(T)                                                                                   \
  template std::size_t project_workspace<T>(const Call&, std::size_t, std::size_t, std::size_t);               \
  template void project<T>(const Call&, const T*, std::size_t, std::size_t, const T*, std::size_t, T*, T*);
VSFAST_INSTANTIATE(float)
VSFAST_INSTANTIATE(double)
#undef VSFAST_INSTANTIATE

}  // namespace vsfast::cuda
