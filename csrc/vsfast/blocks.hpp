// The steps of a randomized SVD whose tall matrix M is held as blocks of rows, each step run where
// its block lives (vsfast.distributed schedules them as Dask tasks): the products of one block
// with a small basis, the Gram matrices whose sum over the blocks orthonormalises across them
// (CholeskyQR2, Yamamoto et al., ETNA 44, 2015), and Householder QR for the blocks of TSQR
// (Demmel et al., SIAM J. Sci. Comput. 34, 2012) where CholeskyQR2 cannot be trusted. The one-node
// steps between them are the same kernels on small matrices. rsvd.hpp is the same algorithm on
// one matrix in memory; the functions here reuse its pieces, so that the blocked run draws the
// same sketch and takes the same decisions.
//
// Layout: tall and small matrices are column-major (Python holds a rows x width matrix as a
// C-contiguous width x rows array). A block of M comes as the caller stores it: row-major
// rows x cols (M split by rows), or, with `transposed`, row-major cols x rows, its transpose (a
// wide matrix split by columns, whose transpose is M).
#pragma once

#include "api.hpp"
#include "blas.hpp"
#include "checks.hpp"
#include "orthonormalize.hpp"
#include "parallel.hpp"
#include "rsvd.hpp"

#include <algorithm>
#include <cmath>
#include <cstddef>
#include <string>
#include <vector>

namespace vsfast {

// omega (column-major short x width, width = sketch_width) = the Gaussian test matrix rsvd draws
// for an m x n matrix: whatever the blocks, the sketch is the in-memory call's.
template <class T>
void sketch(std::size_t m, std::size_t n, const RsvdParams& p, T* omega) {
  const std::vector<T> drawn = gaussian_sketch<T>(m, n, p);
  std::copy(drawn.begin(), drawn.end(), omega);
}

// The largest magnitude in a block, which sizes the rescaling of matrices outside the safe range
// (rescaling_exponent of the largest over all blocks); NaN and inf refused, naming the block.
template <class T>
double block_largest(const T* a, std::size_t count, const std::string& name) {
  return require_finite(a, count, name);
}

template <class T>
int block_exponent(double largest) {
  return rescaling_exponent<T>(largest);
}

// The block a scaled by 2^-exponent (exact) into `buffer`, as rsvd rescales a matrix outside the
// safe range before its products, or a itself for exponent 0.
template <class T>
const T* scaled_block(const T* a, std::size_t count, int exponent, std::vector<T>& buffer) {
  if (exponent == 0) return a;
  buffer.resize(count);
  for (std::size_t i = 0; i < count; ++i) buffer[i] = std::ldexp(a[i], -exponent);
  return buffer.data();
}

// Complete the upper triangle of the symmetric n x n column-major g into the full matrix, so that
// sums over blocks and the identity test see every entry.
template <class T>
void symmetrize_upper(T* g, std::size_t n) {
  for (std::size_t j = 0; j < n; ++j)
    for (std::size_t i = j + 1; i < n; ++i) g[i + j * n] = g[j + i * n];
}

// y (rows x width) = 2^-exponent B z for the block B of M (rows x cols) and z (cols x width);
// gram (width x width) = y^T y. The block's part of one product over M and of its Gram matrix.
template <class T>
void block_range(const T* a, std::size_t rows, std::size_t cols, bool transposed, const T* z, std::size_t width,
                 int exponent, T* y, T* gram) {
  const blas_int br = to_blas_int(rows, "rows"), bc = to_blas_int(cols, "columns");
  const blas_int bw = to_blas_int(width, "width");
  std::vector<T> buffer;
  const T* b = scaled_block(a, rows * cols, exponent, buffer);
  // Row-major B is column-major B^T (leading dimension cols); the transposed form is B itself.
  gemm(!transposed, false, br, bw, bc, T(1), b, transposed ? br : bc, z, bc, T(0), y, br);
  vsfast::gram(br, bw, y, br, gram);
  symmetrize_upper(gram, width);
}

// p (cols x width) = 2^-exponent B^T y for the block B of M (rows x cols) and y (rows x width):
// the block's term of M^T Y.
template <class T>
void block_corange(const T* a, std::size_t rows, std::size_t cols, bool transposed, const T* y, std::size_t width,
                   int exponent, T* p) {
  const blas_int br = to_blas_int(rows, "rows"), bc = to_blas_int(cols, "columns");
  const blas_int bw = to_blas_int(width, "width");
  std::vector<T> buffer;
  const T* b = scaled_block(a, rows * cols, exponent, buffer);
  gemm(transposed, false, bc, bw, br, T(1), b, transposed ? br : bc, y, br, T(0), p, bc);
}

// r (n x n, upper triangular, its lower triangle zero) = the Cholesky factor of the symmetric
// gram. False when gram is not numerically positive definite or, with near_identity, when it is
// more than 1/2 from the identity: the test by which CholeskyQR2's second pass is trusted
// (orthonormalize.hpp's cholesky_qr2).
template <class T>
bool cholesky_factor(const T* gram, std::size_t n, bool near_identity, T* r) {
  const blas_int bn = to_blas_int(n, "width");
  std::copy(gram, gram + n * n, r);
  if (near_identity) {
    const std::vector<T> g(gram, gram + n * n);
    if (!(identity_defect(g, bn) < 0.5)) return false;
  }
  if (potrf_upper(bn, r, bn) != 0) return false;
  for (std::size_t j = 0; j < n; ++j) std::fill(r + j * n + j + 1, r + (j + 1) * n, T(0));
  return true;
}

// y (rows x width) <- y r^-1 for the upper-triangular r; gram (unless null) = the new y^T y.
template <class T>
void solve_factor(T* y, std::size_t rows, std::size_t width, const T* r, T* gram) {
  const blas_int br = to_blas_int(rows, "rows"), bw = to_blas_int(width, "width");
  trsm_right_upper(br, bw, r, bw, y, br);
  if (gram) {
    vsfast::gram(br, bw, y, br, gram);
    symmetrize_upper(gram, width);
  }
}

// y (rows x width, rows >= width) = Q R by Householder QR: y <- Q, r (width x width, upper
// triangular, its lower triangle zero) <- R. Q's columns are orthonormal even where y is rank
// deficient, which is why TSQR takes over where CholeskyQR2 fails.
template <class T>
void householder_qr(T* y, std::size_t rows, std::size_t width, T* r) {
  const blas_int br = to_blas_int(rows, "rows"), bw = to_blas_int(width, "width");
  std::vector<T> tau(std::max<std::size_t>(width, 1));
  check_lapack(geqrf(br, bw, y, br, tau.data()), "geqrf");
  for (std::size_t j = 0; j < width; ++j)
    for (std::size_t i = 0; i < width; ++i) r[i + j * width] = i <= j ? y[i + j * rows] : T(0);
  check_lapack(orgqr(br, bw, bw, y, br, tau.data()), "orgqr");
}

}  // namespace vsfast
