// The exact batched SVD on the GPU, shared by svd.cu (svd, svdvals) and pinv.cu.
//
// Row-major data is the column-major transpose, as on the CPU. Each matrix is copied into its tall
// orientation C (rows >= cols; the Jacobi SVD destroys its input anyway): C = A^T when n >= m,
// else A. Then C = Uc S Vc^T, and A's factors are Uc and Vc, one of them transposed. A matrix
// whose largest magnitude lies outside the safe range (rescaling_exponent) is copied scaled by a
// power of two, exact, and its singular values scaled back: Jacobi rotations square the scale.
#pragma once

#include "cuda/api.hpp"
#include "cuda/kernels.cuh"
#include "cuda/small_svd.cuh"

#include <algorithm>
#include <vector>

namespace vsfast::cuda {

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

// The SVD of every matrix of a * 2^-e, C = Uc S Vc^T, into s (batch x q, left scaled) and w.uc,
// w.vc. Returns each matrix's largest (scaled) singular value.
template <class T>
std::vector<double> decompose(const Bound& bd, const T* a, std::size_t batch, std::size_t m, std::size_t n,
                              const Scaling& sc, T* s, SvdWork<T>& w) {
  working_copy(bd, a, 0, batch, m, n, sc, w);
  return tall_svd(bd, w.c, s, w.uc, w.vc, w.small, [&](std::size_t b) { working_copy(bd, a, b, 1, m, n, sc, w); });
}

// The SVD of every matrix of a * 2^-e into u, s, vh (see svd in api.hpp), s left scaled. Returns
// each matrix's largest (scaled) singular value.
template <class T>
std::vector<double> svd_into(const Bound& bd, const T* a, std::size_t batch, std::size_t m, std::size_t n,
                             const Scaling& sc, T* u, T* s, T* vh, SvdWork<T>& w) {
  const std::size_t q = w.cols;
  const std::vector<double> top = decompose(bd, a, batch, m, n, sc, s, w);
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

}  // namespace vsfast::cuda
