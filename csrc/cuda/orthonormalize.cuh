// Orthonormal bases of tall-skinny batches at matrix-product speed: CholeskyQR (Gram matrix by
// GEMM, batched Cholesky, the triangular inverse applied by GEMM), with Householder QR for the
// matrices whose Gram matrix is not numerically positive definite. The same decisions as the CPU
// core's condition_basis / orthonormalize_but_factor (csrc/vsfast/orthonormalize.hpp).
//
// The factor's inverse is formed once (an n x n triangular solve) and applied by a GEMM rather
// than a TRSM over the tall matrix: cuBLAS's batched TRSM is far from GEMM speed on tall blocks,
// and the second CholeskyQR pass removes the extra rounding of the explicit inverse.
#pragma once

#include "cuda/kernels.cuh"
#include "cuda/library.hpp"

#include <algorithm>
#include <vector>

namespace vsfast::cuda {

template <class T>
struct OrthWork {
  T* gram = nullptr;   // batch x n x n: Gram matrices, then their Cholesky factors
  T* linv = nullptr;   // batch x n x n: the factors' inverses
  T** gram_ptrs = nullptr;
  T** linv_ptrs = nullptr;
  int* info = nullptr;        // 2 x batch: Cholesky failures of the two passes
  double* defect = nullptr;   // batch
  T* tau = nullptr;           // Householder fallback, one matrix at a time
  T* qr_work = nullptr;
  int qr_lwork = 0;
  int* qr_info = nullptr;
  bool pointers_ready = false;

  // For bases of up to max_rows rows and n columns.
  static OrthWork layout(Arena& arena, Context& ctx, int max_rows, int n, std::size_t batch) {
    OrthWork w;
    const std::size_t nn = static_cast<std::size_t>(n) * n;
    w.gram = arena.take<T>(batch * nn);
    w.linv = arena.take<T>(batch * nn);
    w.gram_ptrs = arena.take<T*>(batch);
    w.linv_ptrs = arena.take<T*>(batch);
    w.info = arena.take<int>(2 * batch);
    w.defect = arena.take<double>(batch);
    w.tau = arena.take<T>(n);
    w.qr_lwork = std::max(geqrf_lwork(ctx.solver, max_rows, n, static_cast<T*>(nullptr)),
                          orgqr_lwork(ctx.solver, max_rows, n, static_cast<T*>(nullptr)));
    w.qr_work = arena.take<T>(static_cast<std::size_t>(std::max(w.qr_lwork, 1)));
    w.qr_info = arena.take<int>(1);
    return w;
  }
};

// Gram matrices of the batch x (rows x n) column-major x into w.gram.
template <class T>
void gram(const Bound& bd, const T* x, int rows, int n, int batch, T* out) {
  const long long sx = static_cast<long long>(rows) * n, sg = static_cast<long long>(n) * n;
  gemm(bd.ctx.blas, true, false, n, n, rows, T(1), x, rows, sx, x, rows, sx, T(0), out, n, sg, batch);
}

// Factor w.gram in place and form the inverses of the factors in w.linv; info[b] > 0 where a Gram
// matrix is not positive definite.
template <class T>
void cholesky_inverse(const Bound& bd, int n, int batch, OrthWork<T>& w, int* info) {
  if (!w.pointers_ready) {
    pointer_array(w.gram, static_cast<std::size_t>(n) * n, w.gram_ptrs, batch, bd.stream);
    pointer_array(w.linv, static_cast<std::size_t>(n) * n, w.linv_ptrs, batch, bd.stream);
    w.pointers_ready = true;
  }
  potrf_lower_batched(bd.ctx.solver, n, w.gram_ptrs, n, info, batch);
  set_identity(w.linv, n, batch, bd.stream);
  trsm_left_lower_batched(bd.ctx.blas, n, n, w.gram_ptrs, n, w.linv_ptrs, n, batch);
}

// out = x L^-T for the factors in w.linv: x R^-1 with R = L^T.
template <class T>
void apply_inverse(const Bound& bd, const T* x, int rows, int n, int batch, const OrthWork<T>& w, T* out) {
  const long long sx = static_cast<long long>(rows) * n, sg = static_cast<long long>(n) * n;
  gemm(bd.ctx.blas, false, true, rows, n, n, T(1), x, rows, sx, w.linv, n, sg, T(0), out, rows, sx, batch);
}

// Householder QR of x_b in place (rows x n), replacing it by its orthonormal factor.
template <class T>
void householder(const Bound& bd, T* xb, int rows, int n, OrthWork<T>& w) {
  geqrf(bd.ctx.solver, rows, n, xb, rows, w.tau, w.qr_work, w.qr_lwork, w.qr_info);
  orgqr(bd.ctx.solver, rows, n, xb, rows, w.tau, w.qr_work, w.qr_lwork, w.qr_info);
}

// A well-conditioned basis of each x_b's column space (one Cholesky QR pass), written to
// scratch; x is left as it was except where the Householder fallback ran. Returns scratch.
template <class T>
T* condition_basis(const Bound& bd, T* x, T* scratch, int rows, int n, int batch, OrthWork<T>& w) {
  gram(bd, x, rows, n, batch, w.gram);
  cholesky_inverse(bd, n, batch, w, w.info);
  apply_inverse(bd, x, rows, n, batch, w, scratch);
  const std::vector<int> info = fetch_ints(w.info, batch, bd.stream);
  const std::size_t size = static_cast<std::size_t>(rows) * n;
  for (int b = 0; b < batch; ++b)
    if (info[b] != 0) {
      householder(bd, x + b * size, rows, n, w);
      VSFAST_CHECK(cudaMemcpyAsync(scratch + b * size, x + b * size, size * sizeof(T), cudaMemcpyDeviceToDevice,
                                   bd.stream));
    }
  return scratch;
}

// Orthonormal bases of the x_b's column spaces, in place, by CholeskyQR2 (Yamamoto et al., ETNA
// 44, 2015). As on the CPU, a matrix whose first pass leaves a Gram matrix more than 1/2 from the
// identity (condition beyond about eps^-1/2), or whose Cholesky factorisation fails, gets the
// Householder QR of its input instead. scratch holds batch x rows x n values.
template <class T>
void orthonormalize(const Bound& bd, T* x, T* scratch, int rows, int n, int batch, OrthWork<T>& w) {
  gram(bd, x, rows, n, batch, w.gram);
  cholesky_inverse(bd, n, batch, w, w.info);
  apply_inverse(bd, x, rows, n, batch, w, scratch);
  gram(bd, scratch, rows, n, batch, w.gram);
  identity_defect(w.gram, n, w.defect, batch, bd.stream);
  cholesky_inverse(bd, n, batch, w, w.info + batch);
  // One wait for both passes' verdicts.
  std::vector<double> defect(batch);
  VSFAST_CHECK(cudaMemcpyAsync(defect.data(), w.defect, batch * sizeof(double), cudaMemcpyDeviceToHost, bd.stream));
  const std::vector<int> info = fetch_ints(w.info, 2 * static_cast<std::size_t>(batch), bd.stream);
  const std::size_t size = static_cast<std::size_t>(rows) * n;
  for (int b = 0; b < batch; ++b) {
    if (info[b] == 0 && info[batch + b] == 0 && defect[b] < 0.5) continue;
    // The fallback's result goes where the second pass reads, with an identity factor, so that the
    // batched second pass below leaves it unchanged.
    householder(bd, x + b * size, rows, n, w);
    VSFAST_CHECK(cudaMemcpyAsync(scratch + b * size, x + b * size, size * sizeof(T), cudaMemcpyDeviceToDevice,
                                 bd.stream));
    set_identity(w.linv + b * static_cast<std::size_t>(n) * n, n, 1, bd.stream);
  }
  apply_inverse(bd, scratch, rows, n, batch, w, x);
}

}  // namespace vsfast::cuda
