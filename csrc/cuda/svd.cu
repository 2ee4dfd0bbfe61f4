// Exact thin SVD and pseudoinverse on the GPU, batched.
//
// Row-major data is the column-major transpose, as on the CPU. Each matrix is copied into its tall
// orientation C (rows >= cols; the Jacobi SVD destroys its input anyway): C = A^T when n >= m,
// else A. Then C = Uc S Vc^T, and A's factors are Uc and Vc, one of them transposed.
#include "cuda/api.hpp"
#include "cuda/small_svd.cuh"

#include <algorithm>
#include <cfloat>

namespace vsfast::cuda {

namespace {

template <class T>
struct SvdWork {
  bool wide;  // n >= m: C = A^T
  int rows, cols, batch;
  T *c, *uc, *vc;
  int* flag;
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
    w.flag = arena.take<int>(1);
    return w;
  }
};

// The SVD of every matrix of a into u, s, vh (see svd in api.hpp).
template <class T>
void svd_into(const Bound& bd, const T* a, std::size_t batch, std::size_t m, std::size_t n, T* u, T* s, T* vh,
              SvdWork<T>& w) {
  const std::size_t q = w.cols, size = m * n;
  if (w.wide)
    VSFAST_CHECK(cudaMemcpyAsync(w.c, a, batch * size * sizeof(T), cudaMemcpyDeviceToDevice, bd.stream));
  else  // a as column-major n x m, transposed into m x n
    transpose(a, n, m, n, size, w.c, size, batch, bd.stream);
  tall_svd(bd, w.c, s, w.uc, w.vc, w.small);
  if (w.wide) {
    // A = Vc S Uc^T: row-major vh (column-major n x q) is Uc's first q columns; row-major u
    // (column-major q x m) is Vc^T.
    VSFAST_CHECK(cudaMemcpy2DAsync(vh, n * q * sizeof(T), w.uc, w.small.u_stride * sizeof(T), n * q * sizeof(T),
                                   batch, cudaMemcpyDeviceToDevice, bd.stream));
    transpose(w.vc, m, q, m, q * q, u, q * m, batch, bd.stream);
  } else {
    // A = Uc S Vc^T: row-major u (column-major q x m) is Uc's first q columns transposed; row-major
    // vh (column-major n x q, n = q) is Vc.
    transpose(w.uc, m, q, m, w.small.u_stride, u, q * m, batch, bd.stream);
    VSFAST_CHECK(cudaMemcpyAsync(vh, w.vc, batch * q * q * sizeof(T), cudaMemcpyDeviceToDevice, bd.stream));
  }
}

template <class T>
struct Epsilon;
template <>
struct Epsilon<float> {
  static constexpr double value = FLT_EPSILON;
};
template <>
struct Epsilon<double> {
  static constexpr double value = DBL_EPSILON;
};

// ranks[b]: singular values of s_b above max(atol, rtol * s_b[0]), numpy's matrix_rank rule with
// rtol's default max(m, n) * eps (0 when only atol is given), as rank_of in csrc/vsfast/chain.hpp.
template <class T>
__global__ void rank_kernel(const T* s, std::size_t q, std::size_t batch, double rtol, double atol,
                            std::int64_t* ranks) {
  for (std::size_t b = blockIdx.x * std::size_t(blockDim.x) + threadIdx.x; b < batch;
       b += std::size_t(gridDim.x) * blockDim.x) {
    const T* sb = s + b * q;
    const double tol = fmax(atol, rtol * static_cast<double>(sb[0]));
    std::int64_t rank = 0;
    while (rank < static_cast<std::int64_t>(q) && static_cast<double>(sb[rank]) > tol) ++rank;
    ranks[b] = rank;
  }
}

// Row i of each column-major q x m matrix ut_b (that is, U_b's column i) scaled by 1 / s_b[i] for
// i below the rank, zeroed beyond it: U_r S_r^-1 in place.
template <class T>
__global__ void scale_by_inverse_kernel(T* ut, std::size_t q, std::size_t m, const T* s, const std::int64_t* ranks,
                                        std::size_t batch) {
  for (std::size_t i = blockIdx.x * std::size_t(blockDim.x) + threadIdx.x; i < q * m * batch;
       i += std::size_t(gridDim.x) * blockDim.x) {
    const std::size_t b = i / (q * m), row = i % q;
    ut[i] = static_cast<std::int64_t>(row) < ranks[b] ? ut[i] / s[b * q + row] : T(0);
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
  require_finite(a, batch * m * n, w.flag, "A", bd.stream);
  svd_into(bd, a, batch, m, n, u, s, vh, w);
}

template <class T>
std::size_t pinv_workspace(const Call& call, std::size_t batch, std::size_t m, std::size_t n) {
  DeviceGuard guard(call.device);
  Arena arena(nullptr, 0);
  PinvWork<T>::layout(arena, context(call.device), batch, m, n);
  return arena.used();
}

template <class T>
void pinv(const Call& call, const T* a, std::size_t batch, std::size_t m, std::size_t n, std::optional<double> rtol,
          std::optional<double> atol, T* out, std::int64_t* ranks) {
  DeviceGuard guard(call.device);
  const Bound bd = bind(call);
  Arena arena = arena_of(call);
  PinvWork<T> w = PinvWork<T>::layout(arena, bd.ctx, batch, m, n);
  require_finite(a, batch * m * n, w.svd.flag, "A", bd.stream);
  svd_into(bd, a, batch, m, n, w.u, w.s, w.vh, w.svd);
  const std::size_t q = std::min(m, n);
  const double r = rtol ? *rtol : (atol ? 0.0 : static_cast<double>(std::max(m, n)) * Epsilon<T>::value);
  rank_kernel<<<blocks_for(batch), kThreads, 0, bd.stream>>>(w.s, q, batch, r, atol.value_or(0.0), ranks);
  check_launch("rank_kernel");
  scale_by_inverse_kernel<<<blocks_for(q * m * batch), kThreads, 0, bd.stream>>>(w.u, q, m, w.s, ranks, batch);
  check_launch("scale_by_inverse_kernel");
  // Row-major W^+ (n x m) is the column-major m x n matrix U_r S_r^-1 V_r^T = ut^T vcm^T, with
  // ut = U^T (column-major q x m) and vcm = V (column-major n x q).
  const int im = static_cast<int>(m), in = static_cast<int>(n), iq = static_cast<int>(q);
  gemm(bd.ctx.blas, true, true, im, in, iq, T(1), w.u, iq, static_cast<long long>(q * m), w.vh, in,
       static_cast<long long>(n * q), T(0), out, im, static_cast<long long>(m * n), w.svd.batch);
}

#define VSFAST_INSTANTIATE(T)                                                                                       \
  template std::size_t svd_workspace<T>(const Call&, std::size_t, std::size_t, std::size_t);                       \
  template void svd<T>(const Call&, const T*, std::size_t, std::size_t, std::size_t, T*, T*, T*);                  \
  template std::size_t pinv_workspace<T>(const Call&, std::size_t, std::size_t, std::size_t);                      \
  template void pinv<T>(const Call&, const T*, std::size_t, std::size_t, std::size_t, std::optional<double>,       \
                        std::optional<double>, T*, std::int64_t*);
VSFAST_INSTANTIATE(float)
VSFAST_INSTANTIATE(double)
#undef VSFAST_INSTANTIATE

}  // namespace vsfast::cuda
