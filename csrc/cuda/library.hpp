// Type-generic wrappers over the cuBLAS and cuSOLVER routines vsfast uses, all column-major, as
// on the CPU: callers holding row-major data pass its transpose. Each checks its status.
#pragma once

#include "cuda/context.hpp"

namespace vsfast::cuda {

inline cublasOperation_t op(bool transpose) { return transpose ? CUBLAS_OP_T : CUBLAS_OP_N; }

// Workspace-size queries read no data, but some refuse null pointers: they get this aligned,
// never dereferenced address instead.
template <class T>
T* probe() {
  return reinterpret_cast<T*>(std::uintptr_t{4096});
}

// C_b = alpha op(A_b) op(B_b) + beta C_b for b < batch; a stride of 0 shares one matrix.
inline void gemm(cublasHandle_t h, bool ta, bool tb, int m, int n, int k, float alpha, const float* a, int lda,
                 long long sa, const float* b, int ldb, long long sb, float beta, float* c, int ldc, long long sc,
                 int batch) {
  VSFAST_CHECK(cublasSgemmStridedBatched(h, op(ta), op(tb), m, n, k, &alpha, a, lda, sa, b, ldb, sb, &beta, c, ldc, sc,
                                         batch));
}
inline void gemm(cublasHandle_t h, bool ta, bool tb, int m, int n, int k, double alpha, const double* a, int lda,
                 long long sa, const double* b, int ldb, long long sb, double beta, double* c, int ldc, long long sc,
                 int batch) {
  VSFAST_CHECK(cublasDgemmStridedBatched(h, op(ta), op(tb), m, n, k, &alpha, a, lda, sa, b, ldb, sb, &beta, c, ldc, sc,
                                         batch));
}

// Lower Cholesky factors of the n x n matrices a[b], in place; info[b] > 0 where one is not
// numerically positive definite.
inline void potrf_lower_batched(cusolverDnHandle_t h, int n, float** a, int lda, int* info, int batch) {
  VSFAST_CHECK(cusolverDnSpotrfBatched(h, CUBLAS_FILL_MODE_LOWER, n, a, lda, info, batch));
}
inline void potrf_lower_batched(cusolverDnHandle_t h, int n, double** a, int lda, int* info, int batch) {
  VSFAST_CHECK(cusolverDnDpotrfBatched(h, CUBLAS_FILL_MODE_LOWER, n, a, lda, info, batch));
}

// b[i] <- l[i]^-1 b[i] for lower-triangular n x n l[i] and n x cols b[i].
inline void trsm_left_lower_batched(cublasHandle_t h, int n, int cols, const float* const* l, int ldl,
                                    float* const* b, int ldb, int batch) {
  const float one = 1;
  VSFAST_CHECK(cublasStrsmBatched(h, CUBLAS_SIDE_LEFT, CUBLAS_FILL_MODE_LOWER, CUBLAS_OP_N, CUBLAS_DIAG_NON_UNIT, n,
                                  cols, &one, l, ldl, b, ldb, batch));
}
inline void trsm_left_lower_batched(cublasHandle_t h, int n, int cols, const double* const* l, int ldl,
                                    double* const* b, int ldb, int batch) {
  const double one = 1;
  VSFAST_CHECK(cublasDtrsmBatched(h, CUBLAS_SIDE_LEFT, CUBLAS_FILL_MODE_LOWER, CUBLAS_OP_N, CUBLAS_DIAG_NON_UNIT, n,
                                  cols, &one, l, ldl, b, ldb, batch));
}

// Householder QR (geqrf) and the explicit Q (orgqr), for the rare CholeskyQR fallback.
inline int geqrf_lwork(cusolverDnHandle_t h, int m, int n, float*) {
  int lwork = 0;
  VSFAST_CHECK(cusolverDnSgeqrf_bufferSize(h, m, n, probe<float>(), m, &lwork));
  return lwork;
}
inline int geqrf_lwork(cusolverDnHandle_t h, int m, int n, double*) {
  int lwork = 0;
  VSFAST_CHECK(cusolverDnDgeqrf_bufferSize(h, m, n, probe<double>(), m, &lwork));
  return lwork;
}
inline int orgqr_lwork(cusolverDnHandle_t h, int m, int n, float*) {
  int lwork = 0;
  VSFAST_CHECK(cusolverDnSorgqr_bufferSize(h, m, n, n, probe<float>(), m, probe<float>(), &lwork));
  return lwork;
}
inline int orgqr_lwork(cusolverDnHandle_t h, int m, int n, double*) {
  int lwork = 0;
  VSFAST_CHECK(cusolverDnDorgqr_bufferSize(h, m, n, n, probe<double>(), m, probe<double>(), &lwork));
  return lwork;
}
inline void geqrf(cusolverDnHandle_t h, int m, int n, float* a, int lda, float* tau, float* work, int lwork,
                  int* info) {
  VSFAST_CHECK(cusolverDnSgeqrf(h, m, n, a, lda, tau, work, lwork, info));
}
inline void geqrf(cusolverDnHandle_t h, int m, int n, double* a, int lda, double* tau, double* work, int lwork,
                  int* info) {
  VSFAST_CHECK(cusolverDnDgeqrf(h, m, n, a, lda, tau, work, lwork, info));
}
inline void orgqr(cusolverDnHandle_t h, int m, int n, float* a, int lda, const float* tau, float* work, int lwork,
                  int* info) {
  VSFAST_CHECK(cusolverDnSorgqr(h, m, n, n, a, lda, tau, work, lwork, info));
}
inline void orgqr(cusolverDnHandle_t h, int m, int n, double* a, int lda, const double* tau, double* work, int lwork,
                  int* info) {
  VSFAST_CHECK(cusolverDnDorgqr(h, m, n, n, a, lda, tau, work, lwork, info));
}

// Thin SVD of one tall m x n matrix (m >= n) by Jacobi rotations (gesvdj, econ): a (destroyed)
// = u diag(s) v^T with u m x n, v n x n.
inline int gesvdj_lwork(cusolverDnHandle_t h, int m, int n, gesvdjInfo_t p, float*) {
  int lwork = 0;
  VSFAST_CHECK(cusolverDnSgesvdj_bufferSize(h, CUSOLVER_EIG_MODE_VECTOR, 1, m, n, probe<float>(), m,
                                            probe<float>(), probe<float>(), m, probe<float>(), n, &lwork, p));
  return lwork;
}
inline int gesvdj_lwork(cusolverDnHandle_t h, int m, int n, gesvdjInfo_t p, double*) {
  int lwork = 0;
  VSFAST_CHECK(cusolverDnDgesvdj_bufferSize(h, CUSOLVER_EIG_MODE_VECTOR, 1, m, n, probe<double>(), m,
                                            probe<double>(), probe<double>(), m, probe<double>(), n, &lwork, p));
  return lwork;
}
inline void gesvdj(cusolverDnHandle_t h, int m, int n, float* a, float* s, float* u, float* v, float* work, int lwork,
                   int* info, gesvdjInfo_t p) {
  VSFAST_CHECK(
      cusolverDnSgesvdj(h, CUSOLVER_EIG_MODE_VECTOR, 1, m, n, a, m, s, u, m, v, n, work, lwork, info, p));
}
inline void gesvdj(cusolverDnHandle_t h, int m, int n, double* a, double* s, double* u, double* v, double* work,
                   int lwork, int* info, gesvdjInfo_t p) {
  VSFAST_CHECK(
      cusolverDnDgesvdj(h, CUSOLVER_EIG_MODE_VECTOR, 1, m, n, a, m, s, u, m, v, n, work, lwork, info, p));
}

// Thin SVD of one tall m x n matrix (m >= n) by QR iteration (gesvd, the fallback when Jacobi
// does not converge): a (destroyed) = u diag(s) vt with u m x n, vt n x n (V transposed, unlike
// gesvdj). rwork holds n - 1 values.
inline int gesvd_lwork(cusolverDnHandle_t h, int m, int n, float*) {
  int lwork = 0;
  VSFAST_CHECK(cusolverDnSgesvd_bufferSize(h, m, n, &lwork));
  return lwork;
}
inline int gesvd_lwork(cusolverDnHandle_t h, int m, int n, double*) {
  int lwork = 0;
  VSFAST_CHECK(cusolverDnDgesvd_bufferSize(h, m, n, &lwork));
  return lwork;
}
inline void gesvd(cusolverDnHandle_t h, int m, int n, float* a, float* s, float* u, float* vt, float* work, int lwork,
                  float* rwork, int* info) {
  VSFAST_CHECK(cusolverDnSgesvd(h, 'S', 'S', m, n, a, m, s, u, m, vt, n, work, lwork, rwork, info));
}
inline void gesvd(cusolverDnHandle_t h, int m, int n, double* a, double* s, double* u, double* vt, double* work,
                  int lwork, double* rwork, int* info) {
  VSFAST_CHECK(cusolverDnDgesvd(h, 'S', 'S', m, n, a, m, s, u, m, vt, n, work, lwork, rwork, info));
}

// Full SVDs of a batch of matrices of at most 32 x 32 (gesvdjBatched): u m x m, v n x n.
inline int gesvdj_batched_lwork(cusolverDnHandle_t h, int m, int n, gesvdjInfo_t p, int batch, float*) {
  int lwork = 0;
  VSFAST_CHECK(cusolverDnSgesvdjBatched_bufferSize(h, CUSOLVER_EIG_MODE_VECTOR, m, n, probe<float>(), m,
                                                   probe<float>(), probe<float>(), m, probe<float>(), n, &lwork, p,
                                                   batch));
  return lwork;
}
inline int gesvdj_batched_lwork(cusolverDnHandle_t h, int m, int n, gesvdjInfo_t p, int batch, double*) {
  int lwork = 0;
  VSFAST_CHECK(cusolverDnDgesvdjBatched_bufferSize(h, CUSOLVER_EIG_MODE_VECTOR, m, n, probe<double>(), m,
                                                   probe<double>(), probe<double>(), m, probe<double>(), n, &lwork, p,
                                                   batch));
  return lwork;
}
inline void gesvdj_batched(cusolverDnHandle_t h, int m, int n, float* a, float* s, float* u, float* v, float* work,
                           int lwork, int* info, gesvdjInfo_t p, int batch) {
  VSFAST_CHECK(cusolverDnSgesvdjBatched(h, CUSOLVER_EIG_MODE_VECTOR, m, n, a, m, s, u, m, v, n, work, lwork, info, p,
                                        batch));
}
inline void gesvdj_batched(cusolverDnHandle_t h, int m, int n, double* a, double* s, double* u, double* v,
                           double* work, int lwork, int* info, gesvdjInfo_t p, int batch) {
  VSFAST_CHECK(cusolverDnDgesvdjBatched(h, CUSOLVER_EIG_MODE_VECTOR, m, n, a, m, s, u, m, v, n, work, lwork, info, p,
                                        batch));
}

}  // namespace vsfast::cuda
