// Randomized truncated SVD on the GPU: the algorithm of csrc/vsfast/rsvd.hpp (Halko, Martinsson &
// Tropp 2011) with every product over A a strided-batched GEMM, the bases re-conditioned at every
// half-step by batched Cholesky QR and made orthonormal at the last by CholeskyQR2, and the small
// SVD of the (k + p)-column projected matrix by Jacobi rotations.
#include "cuda/api.hpp"
#include "cuda/orthonormalize.cuh"
#include "cuda/small_svd.cuh"

#include <algorithm>
#include <type_traits>
#include <utility>

namespace vsfast::cuda {

namespace {

struct RsvdDims {
  bool t;  // n < m: M = A itself is tall; else M = A^T
  int short_side, long_side, l, k, batch;
  RsvdDims(std::size_t batch_, std::size_t m, std::size_t n, const RsvdParams& p)
      : t(n < m),
        short_side(to_int(std::min(m, n), "min(m, n)")),
        long_side(to_int(std::max(m, n), "max(m, n)")),
        l(static_cast<int>(sketch_width(m, n, p))),
        k(static_cast<int>(p.k)),
        batch(to_int(batch_, "batch")) {
    to_int(m * n, "m * n");
    to_int(std::max(m, n) * static_cast<std::size_t>(l), "max(m, n) * (k + oversample)");
  }
};

template <class T>
struct RsvdWork {
  T *omega, *y, *y_alt, *z, *z_alt, *s_all, *ub, *v;
  unsigned long long* magnitudes;  // batch
  int* exponents;                  // batch
  OrthWork<T> orth;
  TallSvdWork<T> small;

  static RsvdWork layout(Arena& arena, Context& ctx, const RsvdDims& d) {
    RsvdWork w;
    const std::size_t b = d.batch, l = d.l, ls = d.long_side, ss = d.short_side;
    w.omega = arena.take<T>(ss * l);
    w.y = arena.take<T>(b * ls * l);
    w.y_alt = arena.take<T>(b * ls * l);
    w.z = arena.take<T>(b * ss * l);
    w.z_alt = arena.take<T>(b * ss * l);
    w.small = TallSvdWork<T>::layout(arena, ctx, d.short_side, d.l, d.batch);
    w.s_all = arena.take<T>(b * l);
    w.ub = arena.take<T>(b * w.small.u_stride);  // short x l, or short x short from gesvdjBatched
    w.v = arena.take<T>(b * l * l);
    w.magnitudes = arena.take<unsigned long long>(b);
    w.exponents = arena.take<int>(b);
    w.orth = OrthWork<T>::layout(arena, ctx, d.long_side, d.l, b);
    return w;
  }
};

// A product over A (the passes that count): TF32 tensor cores when the caller opted in.
template <class T>
void product_over_a(const Bound& bd, bool ta, int m, int n, int k, const T* a, int lda, long long sa, const T* b,
                    int ldb, long long sb, T* c, int ldc, long long sc, int batch) {
  const bool tf32 = bd.tf32 && std::is_same_v<T, float>;
  if (tf32) VSFAST_CHECK(cublasSetMathMode(bd.ctx.blas, CUBLAS_TF32_TENSOR_OP_MATH));
  gemm(bd.ctx.blas, ta, false, m, n, k, T(1), a, lda, sa, b, ldb, sb, T(0), c, ldc, sc, batch);
  if (tf32) VSFAST_CHECK(cublasSetMathMode(bd.ctx.blas, CUBLAS_DEFAULT_MATH));
}

// The matrices the algorithm runs on: a itself, or, where a matrix lies outside the safe range,
// a copy (from call.extra: the workspace sized in advance does not hold one) with every matrix
// scaled by its power of two, as rsvd_scaled_rowmajor does on the CPU.
template <class T>
const T* rescaled(const Call& call, const Bound& bd, const T* a, std::size_t batch, std::size_t size,
                  const Scaling& sc) {
  if (!sc.device) return a;
  if (!call.extra)
    throw std::invalid_argument("A: needs rescaling by a power of two, and no memory for the copy was given");
  T* copy = static_cast<T*>(call.extra(batch * size * sizeof(T)));
  scale_by_powers_of_two(a, size, copy, size, size, batch, sc.device, -1, bd.stream);
  return copy;
}

}  // namespace

template <class T>
std::size_t rsvd_workspace(const Call& call, std::size_t batch, std::size_t m, std::size_t n, const RsvdParams& p) {
  DeviceGuard guard(call.device);
  Context& ctx = context(call.device);
  Arena arena(nullptr, 0);
  RsvdWork<T>::layout(arena, ctx, RsvdDims(batch, m, n, p));
  return arena.used();
}

template <class T>
void rsvd(const Call& call, const T* a_in, std::size_t batch, std::size_t m, std::size_t n, const RsvdParams& p, T* u,
          T* s, T* vh) {
  DeviceGuard guard(call.device);
  const Bound bd = bind(call);
  const RsvdDims d(batch, m, n, p);
  Arena arena = arena_of(call);
  RsvdWork<T> w = RsvdWork<T>::layout(arena, bd.ctx, d);
  const std::vector<double> largest = require_finite_matrices(a_in, batch, m * n, w.magnitudes, "A", bd.stream);
  const Scaling sc = plan_scaling<T>(largest, w.exponents, bd.stream);
  const T* a = rescaled(call, bd, a_in, batch, m * n, sc);

  // Column-major view of each matrix: A_cm = a^T, n x m, leading dimension n. M is its tall
  // orientation, as on the CPU.
  const int lda = static_cast<int>(n), bs = d.short_side, bl = d.long_side, l = d.l, k = d.k, nb = d.batch;
  const long long sa = static_cast<long long>(m) * n, sy = static_cast<long long>(bl) * l,
                  sz = static_cast<long long>(bs) * l;
  fill_gaussian(w.omega, static_cast<std::size_t>(bs) * l, p.seed, bd.stream);

  T *y = w.y, *y_alt = w.y_alt, *z = w.z, *z_alt = w.z_alt;
  // Y = M Omega (one sketch for the whole batch: stride 0), then Z = M^T Y and Y = M Z.
  auto sketch_y = [&](const T* from, long long stride) {
    product_over_a(bd, d.t, bl, l, bs, a, lda, sa, from, bs, stride, y, bl, sy, nb);
  };
  // Z_b = M_b^T Y_b for the matrices [first, first + count).
  auto project_back = [&](std::size_t first, int count) {
    const long long f = static_cast<long long>(first);
    product_over_a(bd, !d.t, bs, l, bl, a + f * sa, lda, sa, y + f * sy, bl, sy, z + f * sz, bs, sz, count);
  };
  auto sharpen = [&](T*& x, T*& alt, int rows, bool last) {
    if (last) {
      orthonormalize(bd, x, alt, rows, l, nb, w.orth);  // in place
    } else {
      T* basis = condition_basis(bd, x, alt, rows, l, nb, w.orth);  // written into alt
      alt = x;
      x = basis;
    }
  };
  sketch_y(w.omega, 0);
  sharpen(y, y_alt, bl, p.power_iters == 0);
  for (std::size_t it = 0; it < p.power_iters; ++it) {
    project_back(0, nb);
    sharpen(z, z_alt, bs, false);
    sketch_y(z, sz);
    sharpen(y, y_alt, bl, it + 1 == p.power_iters);
  }

  // B^T = M^T Y (short x l); its SVD Ub S V^T gives M ~ Y B = (Y V) S Ub^T.
  project_back(0, nb);
  const std::vector<double> top =
      tall_svd(bd, z, w.s_all, w.ub, w.v, w.small, [&](std::size_t b) { project_back(b, 1); });
  require_singular_values_fit<T>(top, sc);

  gather_prefixes(w.s_all, static_cast<std::size_t>(l), s, static_cast<std::size_t>(k), batch, bd.stream);
  if (sc.device) scale_by_powers_of_two(s, k, s, k, k, batch, sc.device, +1, bd.stream);
  const long long sv = static_cast<long long>(l) * l;
  if (!d.t) {
    // M = a^T: row-major u (column-major k x m) is Ub's first k columns transposed; row-major vh
    // (column-major n x k) is Y V restricted to k columns.
    transpose(w.ub, m, static_cast<std::size_t>(k), m, w.small.u_stride, u, m * k, batch, bd.stream);
    gemm(bd.ctx.blas, false, false, bl, k, l, T(1), y, bl, sy, w.v, l, sv, T(0), vh, bl,
         static_cast<long long>(bl) * k, nb);
  } else {
    // M = a: row-major u (column-major k x m) is (Y V)^T = V^T Y^T restricted to k rows; row-major
    // vh (column-major n x k) is Ub's first k columns.
    gemm(bd.ctx.blas, true, true, k, bl, l, T(1), w.v, l, sv, y, bl, sy, T(0), u, k, static_cast<long long>(k) * bl,
         nb);
    gather_prefixes(w.ub, w.small.u_stride, vh, n * k, batch, bd.stream);
  }
}

template std::size_t rsvd_workspace<float>(const Call&, std::size_t, std::size_t, std::size_t, const RsvdParams&);
template std::size_t rsvd_workspace<double>(const Call&, std::size_t, std::size_t, std::size_t, const RsvdParams&);
template void rsvd<float>(const Call&, const float*, std::size_t, std::size_t, std::size_t, const RsvdParams&, float*,
                          float*, float*);
template void rsvd<double>(const Call&, const double*, std::size_t, std::size_t, std::size_t, const RsvdParams&,
                           double*, double*, double*);

}  // namespace vsfast::cuda
