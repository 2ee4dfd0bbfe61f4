// Thin, type-generic wrappers over the scipy-openblas32 CBLAS/LAPACKE entry points.
// Every wrapper is column-major; callers that hold row-major data pass its transpose.
#pragma once

#include "common.hpp"

#include <cblas.h>
#include <lapacke.h>

#include <climits>
#include <cstddef>
#include <stdexcept>
#include <string>

namespace vsfast {

using blas_int = blasint;

// Dimensions cross into a 32-bit BLAS: refuse what does not fit instead of overflowing.
inline blas_int to_blas_int(std::size_t value, const char* what) {
  if (value > static_cast<std::size_t>(INT_MAX))
    throw std::invalid_argument(std::string(what) + " = " + std::to_string(value) +
                                " exceeds the 32-bit BLAS limit of 2147483647");
  return static_cast<blas_int>(value);
}

// A LAPACK routine that did not converge is a numerical failure (LinAlgError), not a usage error.
inline void check_lapack(lapack_int info, const char* routine) {
  if (info < 0)
    throw std::logic_error(std::string(routine) + ": illegal argument " + std::to_string(-info));
  if (info > 0)
    throw LinAlgError(std::string(routine) + " did not converge (info = " + std::to_string(info) + ")");
}

inline CBLAS_TRANSPOSE trans(bool t) { return t ? CblasTrans : CblasNoTrans; }

// C (m x n) = alpha * op(A) * op(B) + beta * C, column-major. Callers use the blocked gemm of
// parallel.hpp, which makes results independent of the thread count.
inline void blas_gemm(bool ta, bool tb, blas_int m, blas_int n, blas_int k, float alpha, const float* a,
                 blas_int lda, const float* b, blas_int ldb, float beta, float* c, blas_int ldc) {
  scipy_cblas_sgemm(CblasColMajor, trans(ta), trans(tb), m, n, k, alpha, a, lda, b, ldb, beta, c, ldc);
}
inline void blas_gemm(bool ta, bool tb, blas_int m, blas_int n, blas_int k, double alpha, const double* a,
                 blas_int lda, const double* b, blas_int ldb, double beta, double* c, blas_int ldc) {
  scipy_cblas_dgemm(CblasColMajor, trans(ta), trans(tb), m, n, k, alpha, a, lda, b, ldb, beta, c, ldc);
}

// Thin SVD of the m x n matrix a (destroyed): u is m x min(m,n), vt is min(m,n) x n.
inline lapack_int gesdd(blas_int m, blas_int n, float* a, blas_int lda, float* s, float* u, blas_int ldu,
                        float* vt, blas_int ldvt) {
  return scipy_LAPACKE_sgesdd(LAPACK_COL_MAJOR, 'S', m, n, a, lda, s, u, ldu, vt, ldvt);
}
inline lapack_int gesdd(blas_int m, blas_int n, double* a, blas_int lda, double* s, double* u, blas_int ldu,
                        double* vt, blas_int ldvt) {
  return scipy_LAPACKE_dgesdd(LAPACK_COL_MAJOR, 'S', m, n, a, lda, s, u, ldu, vt, ldvt);
}

// Singular values only.
inline lapack_int gesdd_values(blas_int m, blas_int n, float* a, blas_int lda, float* s) {
  float dummy = 0;
  return scipy_LAPACKE_sgesdd(LAPACK_COL_MAJOR, 'N', m, n, a, lda, s, &dummy, 1, &dummy, 1);
}
inline lapack_int gesdd_values(blas_int m, blas_int n, double* a, blas_int lda, double* s) {
  double dummy = 0;
  return scipy_LAPACKE_dgesdd(LAPACK_COL_MAJOR, 'N', m, n, a, lda, s, &dummy, 1, &dummy, 1);
}

inline lapack_int geqrf(blas_int m, blas_int n, float* a, blas_int lda, float* tau) {
  return scipy_LAPACKE_sgeqrf(LAPACK_COL_MAJOR, m, n, a, lda, tau);
}
inline lapack_int geqrf(blas_int m, blas_int n, double* a, blas_int lda, double* tau) {
  return scipy_LAPACKE_dgeqrf(LAPACK_COL_MAJOR, m, n, a, lda, tau);
}

// Form the m x n matrix Q from the k reflectors left in a by geqrf.
inline lapack_int orgqr(blas_int m, blas_int n, blas_int k, float* a, blas_int lda, const float* tau) {
  return scipy_LAPACKE_sorgqr(LAPACK_COL_MAJOR, m, n, k, a, lda, tau);
}
inline lapack_int orgqr(blas_int m, blas_int n, blas_int k, double* a, blas_int lda, const double* tau) {
  return scipy_LAPACKE_dorgqr(LAPACK_COL_MAJOR, m, n, k, a, lda, tau);
}

// c (n x n, upper triangle) = a^T a for the column-major k x n matrix a.
inline void syrk_gram(blas_int n, blas_int k, const float* a, blas_int lda, float* c, blas_int ldc) {
  scipy_cblas_ssyrk(CblasColMajor, CblasUpper, CblasTrans, n, k, 1.0f, a, lda, 0.0f, c, ldc);
}
inline void syrk_gram(blas_int n, blas_int k, const double* a, blas_int lda, double* c, blas_int ldc) {
  scipy_cblas_dsyrk(CblasColMajor, CblasUpper, CblasTrans, n, k, 1.0, a, lda, 0.0, c, ldc);
}

// c (n x n, upper triangle) += op(a) op(a)^T in double: op(a) = a (column-major n x k) or, with
// `transposed`, a^T (a column-major k x n).
inline void syrk_accumulate(bool transposed, blas_int n, blas_int k, const double* a, blas_int lda, double* c,
                            blas_int ldc) {
  scipy_cblas_dsyrk(CblasColMajor, CblasUpper, trans(transposed), n, k, 1.0, a, lda, 1.0, c, ldc);
}

// Cholesky factor (upper) in place; info > 0 when a is not numerically positive definite.
inline lapack_int potrf_upper(blas_int n, float* a, blas_int lda) {
  return scipy_LAPACKE_spotrf(LAPACK_COL_MAJOR, 'U', n, a, lda);
}
inline lapack_int potrf_upper(blas_int n, double* a, blas_int lda) {
  return scipy_LAPACKE_dpotrf(LAPACK_COL_MAJOR, 'U', n, a, lda);
}

// Eigenvalues (ascending, into w) of the symmetric n x n a whose upper triangle is given; a is
// destroyed.
inline lapack_int symmetric_eigenvalues(blas_int n, double* a, blas_int lda, double* w) {
  return scipy_LAPACKE_dsyevd(LAPACK_COL_MAJOR, 'N', 'U', n, a, lda, w);
}

// Eigenvalues (ascending, into w) and eigenvectors (overwriting a, column i for w[i]) of the
// symmetric n x n a whose upper triangle is given.
inline lapack_int symmetric_eigen(blas_int n, double* a, blas_int lda, double* w) {
  return scipy_LAPACKE_dsyevd(LAPACK_COL_MAJOR, 'V', 'U', n, a, lda, w);
}

// b (n) <- a^-1 b for the Cholesky factor (upper) left in a by potrf_upper.
inline lapack_int potrs_upper(blas_int n, const double* a, blas_int lda, double* b) {
  return scipy_LAPACKE_dpotrs(LAPACK_COL_MAJOR, 'U', n, 1, a, lda, b, n);
}

// b (m x n) <- b r^-1 (side CblasRight, r n x n) or r^-1 b (CblasLeft, r m x m), r upper triangular.
inline void blas_trsm_upper(CBLAS_SIDE side, blas_int m, blas_int n, const float* r, blas_int ldr, float* b,
                            blas_int ldb) {
  scipy_cblas_strsm(CblasColMajor, side, CblasUpper, CblasNoTrans, CblasNonUnit, m, n, 1.0f, r, ldr, b, ldb);
}
inline void blas_trsm_upper(CBLAS_SIDE side, blas_int m, blas_int n, const double* r, blas_int ldr, double* b,
                            blas_int ldb) {
  scipy_cblas_dtrsm(CblasColMajor, side, CblasUpper, CblasNoTrans, CblasNonUnit, m, n, 1.0, r, ldr, b, ldb);
}

// b (m x n) <- r b for the upper-triangular m x m r.
inline void blas_trmm_left_upper(blas_int m, blas_int n, const float* r, blas_int ldr, float* b, blas_int ldb) {
  scipy_cblas_strmm(CblasColMajor, CblasLeft, CblasUpper, CblasNoTrans, CblasNonUnit, m, n, 1.0f, r, ldr, b, ldb);
}
inline void blas_trmm_left_upper(blas_int m, blas_int n, const double* r, blas_int ldr, double* b, blas_int ldb) {
  scipy_cblas_dtrmm(CblasColMajor, CblasLeft, CblasUpper, CblasNoTrans, CblasNonUnit, m, n, 1.0, r, ldr, b, ldb);
}

inline int blas_threads() { return scipy_openblas_get_num_threads(); }
inline void set_blas_threads(int n) { scipy_openblas_set_num_threads(n); }

}  // namespace vsfast
