// Exact thin SVD and pseudoinverse on the GPU, batched.
//
// Row-major data is the column-major transpose, as on the CPU. Each matrix is copied into its tall
// orientation C (rows >= cols; the Jacobi SVD destroys its input anyway): C = A^T when n >= m,
// else A. Then C = Uc S Vc^T, and A's factors are Uc and Vc, one of them transposed. A matrix
// whose largest magnitude lies outside the safe range (rescaling_exponent) is copied scaled by a
// power of two, exact, and its singular values scaled back: Jacobi rotations square the scale.
#include "cuda/api.hpp"
#include "cuda/small_svd.cuh"

#include <algorithm>

namespace vsfast::cuda {

namespace {

template <class T>
struct SvdWork {
  bool wide;  // n >= m: C = A^T
  int rows, cols, batch;
  T *c, *uc, *vc;
  unsigned long long* magnitudes;  // batch
  int* exponents;                  // batch
  TallSvdWork<T> small;

  static SvdWork layout(Arena& arena, Context& ctx, std::size_t batch, std::size_t m, std::size_t n) {
    SvdWork w;
    w.wide = n >= m;
    w.rows = to_int(std::max(m, n), "max(m, n)");
    w.cols = to_int(std::min(m, n), "min(m, n)");
    w.batch = to_int(batch, "batch");
    to_int(m * n, "m * n");
    w.small = TallSvdWork<T>::layout(arena, ctx, w.rows, w.cols, w.batch);
    w.c = arena.take<T>(batch * m * n);
    w.uc = arena.take<T>(batch * w.small.u_stride);
    w.vc = arena.take<T>(batch * static_cast<std::size_t>(w.cols) * w.cols);
    w.magnitudes = arena.take<unsigned long long>(batch);
    w.exponents = arena.take<int>(batch);
    return w;
  }
};

// The rescaling of every matrix of a, after refusing NaN and inf (one wait).
template <class T>
Scaling measure_and_plan(const Bound& bd, const T* a, std::size_t batch, std::size_t m, std::size_t n,
                         SvdWork<T>& w) {
  const std::vector<double> largest = require_finite_matrices(a, batch, m * n, w.magnitudes, "A", bd.stream);
  return plan_scaling<T>(largest, w.exponents, bd.stream);
}

// C_b for b in [first, first + count): A_b^T (wide) or A_b as column-major, scaled by 2^-e_b.
template <class T>
void working_copy(const Bound& bd, const T* a, std::size_t first, std::size_t count, std::size_t m, std::size_t n,
                  const Scaling& sc, SvdWork<T>& w) {
  const std::size_t size = m * n;
  const T* src = a + first * size;
  T* dst = w.c + first * size;
  const int* exponents = sc.device ? sc.device + first : nullptr;
  if (w.wide && exponents) {
    scale_by_powers_of_two(src, size, dst, size, size, count, exponents, -1, bd.stream);
    return;
  }
  if (w.wide)
    VSFAST_CHECK(cudaMemcpyAsync(dst, src, count * size * sizeof(T), cudaMemcpyDeviceToDevice, bd.stream));
  else  // a as column-major n x m, transposed into m x n
    transpose(src, n, m, n, size, dst, size, count, bd.stream);
  if (exponents) scale_by_powers_of_two(dst, size, dst, size, size, count, exponents, -1, bd.stream);
}

// The SVD of every matrix of a * 2^-e into u, s, vh (see svd in api.hpp), s left scaled. Returns
// each matrix's largest (scaled) singular value.
template <class T>
std::vector<double> svd_into(const Bound& bd, const T* a, std::size_t batch, std::size_t m, std::size_t n,
                             const Scaling& sc, T* u, T* s, T* vh, SvdWork<T>& w) {
  const std::size_t q = w.cols;
  working_copy(bd, a, 0, batch, m, n, sc, w);
  const std::vector<double> top = tall_svd(bd, w.c, s, w.uc, w.vc, w.small,
                                           [&](std::size_t b) { working_copy(bd, a, b, 1, m, n, sc, w); });
  if (w.wide) {
    // A = Vc S Uc^T: row-major vh (column-major n x q) is Uc's first q columns; row-major u
    // (column-major q x m) is Vc^T.
    gather_prefixes(w.uc, w.small.u_stride, vh, n * q, batch, bd.stream);
    transpose(w.vc, m, q, m, q * q, u, q * m, batch, bd.stream);
  } else {
    // A = Uc S Vc^T: row-major u (column-major q x m) is Uc's first q columns transposed; row-major
    // vh (column-major n x q, n = q) is Vc.
    transpose(w.uc, m, q, m, w.small.u_stride, u, q * m, batch, bd.stream);
    VSFAST_CHECK(cudaMemcpyAsync(vh, w.vc, batch * q * q * sizeof(T), cudaMemcpyDeviceToDevice, bd.stream));
  }
  return top;
}

// ranks[b]: rank_of's rule (csrc/vsfast/chain.hpp) applied as the CPU's pinv_factors does: to the
// singular values of W_b scaled down by 2^e_b where e_b > 0, atol with them, and to W_b's own
// otherwise. s holds those of W_b * 2^-e_b (exponents null: all 0).
template <class T>
__global__ void rank_kernel(const T* s, std::size_t q, std::size_t batch, double rtol, double atol, double floor,
                            const int* exponents, std::int64_t* ranks) {
  for (std::size_t b = blockIdx.x * std::size_t(blockDim.x) + threadIdx.x; b < batch;
       b += std::size_t(gridDim.x) * blockDim.x) {
    const T* sb = s + b * q;
    const int e = exponents ? exponents[b] : 0, unscale = e < 0 ? e : 0;
    const double tol = fmax(fmax(ldexp(atol, e > 0 ? -e : 0), rtol * ldexp(static_cast<double>(sb[0]), unscale)),
                            floor);
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
  require_singular_values_fit<T>(top, sc);
  const std::size_t q = w.cols;
  if (sc.device) scale_by_powers_of_two(s, q, s, q, q, batch, sc.device, +1, bd.stream);
}

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
  template std::size_t svd_workspace<T>(const Call&, std::size_t, std::size_t, std::size_t);                       \
  template void svd<T>(const Call&, const T*, std::size_t, std::size_t, std::size_t, T*, T*, T*);                  \
  template std::size_t pinv_workspace<T>(const Call&, std::size_t, std::size_t, std::size_t);                      \
  template void pinv<T>(const Call&, const T*, std::size_t, std::size_t, std::size_t, std::optional<double>,       \
                        std::optional<double>, bool, T*, std::int64_t*, T*);
VSFAST_INSTANTIATE(float)
VSFAST_INSTANTIATE(double)
#undef VSFAST_INSTANTIATE

}  // namespace vsfast::cuda
