// Pseudoinverses and ranks on the GPU, batched, through the exact SVD of svd.cuh. The CPU twin is
// csrc/vsfast/pinv.hpp.
#include "cuda/api.hpp"
#include "cuda/svd.cuh"

#include <algorithm>
#include <cstdint>

namespace vsfast::cuda {

namespace {

// ranks[b]: the rank rule (rank_threshold, csrc/vsfast/common.hpp) applied as the CPU's
// pinv_factors does: to the singular values of W_b scaled down by 2^e_b where e_b > 0, atol with
// them, and to W_b's own otherwise. s holds those of W_b * 2^-e_b (exponents null: all 0).
template <class T>
__global__ void rank_kernel(const T* s, std::size_t q, std::size_t batch, double rtol, double atol, double floor,
                            const int* exponents, std::int64_t* ranks) {
  for (std::size_t b = blockIdx.x * std::size_t(blockDim.x) + threadIdx.x; b < batch;
       b += std::size_t(gridDim.x) * blockDim.x) {
    const T* sb = s + b * q;
    const int e = exponents ? exponents[b] : 0, unscale = e < 0 ? e : 0;
    const double tol =
        rank_threshold(ldexp(static_cast<double>(sb[0]), unscale), rtol, ldexp(atol, e > 0 ? -e : 0), floor);
    std::int64_t rank = 0;
    while (rank < static_cast<std::int64_t>(q) && ldexp(static_cast<double>(sb[rank]), unscale) > tol) ++rank;
    ranks[b] = rank;
  }
}

// Row i of each column-major q x m matrix ut_b (that is, U_b's column i) scaled by 2^-e_b / s_b[i]
// for i below the rank, zeroed beyond it: U_r S_r^-1 of the unscaled W_b, in place. In double, so
// that neither the reciprocal nor the power of two leaves the range on the way.
template <class T>
__global__ void scale_by_inverse_kernel(T* ut, std::size_t q, std::size_t m, const T* s, const std::int64_t* ranks,
                                        const int* exponents, std::size_t batch) {
  for (std::size_t i = blockIdx.x * std::size_t(blockDim.x) + threadIdx.x; i < q * m * batch;
       i += std::size_t(gridDim.x) * blockDim.x) {
    const std::size_t b = i / (q * m), row = i % q;
    const int e = exponents ? exponents[b] : 0;
    ut[i] = static_cast<std::int64_t>(row) < ranks[b]
                ? static_cast<T>(ldexp(static_cast<double>(ut[i]) / static_cast<double>(s[b * q + row]), -e))
                : T(0);
  }
}

template <class T>
struct PinvWork {
  SvdWork<T> svd;
  T *u, *s, *vh;

  static PinvWork layout(Arena& arena, Context& ctx, std::size_t batch, std::size_t m, std::size_t n) {
    PinvWork w;
    w.svd = SvdWork<T>::layout(arena, ctx, batch, m, n);
    const std::size_t q = std::min(m, n);
    w.u = arena.take<T>(batch * m * q);
    w.s = arena.take<T>(batch * q);
    w.vh = arena.take<T>(batch * q * n);
    return w;
  }
};

}  // namespace

template <class T>
std::size_t pinv_workspace(const Call& call, std::size_t batch, std::size_t m, std::size_t n) {
  DeviceGuard guard(call.device);
  Arena arena(nullptr, 0);
  PinvWork<T>::layout(arena, context(call.device), batch, m, n);
  return arena.used();
}

// No check that W^+ fits the dtype, and so no wait for it: each of its entries is at most
// 1 / s_r in magnitude (Cauchy-Schwarz on orthonormal singular vectors), and the rank rule's
// floor keeps s_r at least the smallest normal number, whose reciprocal fits.
template <class T>
void pinv(const Call& call, const T* a, std::size_t batch, std::size_t m, std::size_t n, std::optional<double> rtol,
          std::optional<double> atol, bool transposed, T* out, std::int64_t* ranks, T* vh) {
  DeviceGuard guard(call.device);
  const Bound bd = bind(call);
  Arena arena = arena_of(call);
  PinvWork<T> w = PinvWork<T>::layout(arena, bd.ctx, batch, m, n);
  if (!vh) vh = w.vh;
  const Scaling sc = measure_and_plan(bd, a, batch, m, n, w.svd);
  svd_into(bd, a, batch, m, n, sc, w.u, w.s, vh, w.svd);
  const std::size_t q = std::min(m, n);
  rank_kernel<<<blocks_for(batch), kThreads, 0, bd.stream>>>(w.s, q, batch, rank_rtol<T>(rtol, atol, m, n),
                                                             atol.value_or(0.0), rank_floor<T>(), sc.device, ranks);
  check_launch("rank_kernel");
  scale_by_inverse_kernel<<<blocks_for(q * m * batch), kThreads, 0, bd.stream>>>(w.u, q, m, w.s, ranks, sc.device,
                                                                                 batch);
  check_launch("scale_by_inverse_kernel");
  // With ut = S_r^-1 U_r^T (column-major q x m) and vcm = V (column-major n x q, row-major vh):
  // row-major W^+ (n x m) is the column-major m x n matrix ut^T vcm^T, and row-major (W^+)^T is
  // the column-major n x m matrix vcm ut.
  const int im = static_cast<int>(m), in = static_cast<int>(n), iq = static_cast<int>(q);
  const long long su = static_cast<long long>(q * m), sv = static_cast<long long>(n * q),
                  so = static_cast<long long>(m * n);
  if (transposed)
    gemm(bd.ctx.blas, false, false, in, im, iq, T(1), vh, in, sv, w.u, iq, su, T(0), out, in, so, w.svd.batch);
  else
    gemm(bd.ctx.blas, true, true, im, in, iq, T(1), w.u, iq, su, vh, in, sv, T(0), out, im, so, w.svd.batch);
}

#define VSFAST_INSTANTIATE(T)                                                                                       \
  template std::size_t pinv_workspace<T>(const Call&, std::size_t, std::size_t, std::size_t);                      \
  template void pinv<T>(const Call&, const T*, std::size_t, std::size_t, std::size_t, std::optional<double>,       \
                        std::optional<double>, bool, T*, std::int64_t*, T*);
VSFAST_INSTANTIATE(float)
VSFAST_INSTANTIATE(double)
#undef VSFAST_INSTANTIATE

}  // namespace vsfast::cuda
