// The CPU core's operations, the twins of csrc/cuda/api.hpp name for name and argument for
// argument: rsvd, svd, svdvals, pinv, project and the chain's reconstruct and forward; and the
// CPU's own rank, complement, the chain's solve and solve_box, and the block steps of a
// distributed rsvd. Arrays are row-major (the block steps' own layout aside) and batched over a
// leading axis, as on the GPU. Where the GPU takes a Call (device, stream, workspace), the CPU
// takes nothing: it runs on vsfast's threads (parallel.hpp: num_threads, set_num_threads) and
// keeps its scratch memory per thread.
//
// Every operation owns what surrounds its numerics: the loop over the batch (spread over threads
// when whole matrices keep every thread busy, else one matrix after another, each using the
// threads), the refusal of inputs holding NaN or inf (std::invalid_argument naming the argument:
// Python's ValueError), and the refusal of results beyond the dtype (std::overflow_error:
// OverflowError). A decomposition that does not converge throws LinAlgError. The caller vouches
// for the memory: pointers to as many values as the sizes say, k in [1, min(m, n)]
// (require_k_in_range) and a reference of 1 or `rows` rows (require_reference_rows).
//
// Each operation is defined at the end of its own header (rsvd.hpp, svd.hpp, pinv.hpp,
// project.hpp, chain.hpp, newton.hpp, box.hpp), as each GPU twin at the end of its .cu file, and compiled
// for float and double in api.cpp.
#pragma once

#include "activations.hpp"
#include "common.hpp"
#include "parallel.hpp"

#include <cstddef>
#include <cstdint>
#include <optional>
#include <string>
#include <utility>
#include <vector>

namespace vsfast {

// Truncated SVD by randomized range finding: u (batch x m x k), s (batch x k), vh (batch x k x n).
// One Gaussian sketch serves the whole batch, so a matrix gets the same result alone as inside
// any batch; a matrix outside the safe range is decomposed rescaled by a power of two. The CPU
// runs both methods, bfloat16 passes and the adaptive depth (RsvdParams); tol with subspace
// iteration, or bfloat16 forced on a CPU without AVX512-BF16, is a std::invalid_argument.
template <class T>
void rsvd(const T* a, std::size_t batch, std::size_t m, std::size_t n, const RsvdParams& p, T* u, T* s, T* vh);

// CPU only: whether rsvd's bfloat16 passes run here (AVX512-BF16 on this CPU, kernels in this
// build).
bool rsvd_bfloat16_available();

// Thin SVD: u (batch x m x q), s (batch x q), vh (batch x q x n), q = min(m, n).
template <class T>
void svd(const T* a, std::size_t batch, std::size_t m, std::size_t n, T* u, T* s, T* vh);

// Singular values only, as svd computes them: s (batch x q), q = min(m, n).
template <class T>
void svdvals(const T* a, std::size_t batch, std::size_t m, std::size_t n, T* s);

// CPU only: the singular values of float matrices (s: batch x q, descending) as the square roots
// of the eigenvalues of their Gram matrices on the short side, formed and decomposed in double.
// Products of float entries are exact in double, so each sigma_i^2 is off by about
// max(m, n) * eps_double * ||A||_F^2 at most: closer than a float SVD for every sigma_i above
// the float rank tolerance, and up to 2.6 times faster on tall or wide matrices (a BLAS-3 product
// and a q x q eigenproblem in place of a bidiagonalisation of A). For the metrics of weight
// matrices; svdvals stays the route for double input and for values near the noise floor,
// sqrt(max(m, n) * eps_double) * ||A||_F.
// (Defined in api.cpp around svd.hpp's svdvals_gram_rowmajor: it has no double twin.)
void svdvals_gram(const float* a, std::size_t batch, std::size_t m, std::size_t n, float* s);

// Pseudoinverses (batch x n x m, or with `transposed` their transposes, batch x m x n) and ranks
// (batch values) by the rank rule of common.hpp. vh, unless null, receives the right singular
// vectors (batch x q x n, q = min(m, n)), whose first rank rows span each matrix's row space.
template <class T>
void pinv(const T* a, std::size_t batch, std::size_t m, std::size_t n, std::optional<double> rtol,
          std::optional<double> atol, bool transposed, T* out, std::int64_t* ranks, T* vh);

// The rank of each of `batch` rows of `count` singular values s (descending) of m x n matrices.
template <class T>
void rank(const T* s, std::size_t batch, std::size_t count, std::size_t m, std::size_t n, std::optional<double> rtol,
          std::optional<double> atol, std::int64_t* ranks);

// signal = X B^T B and residual = X - signal for X (rows x n) and orthonormal rows B (r x n).
template <class T>
void project(const T* x, std::size_t rows, std::size_t n, const T* basis, std::size_t r, T* signal, T* residual);

// Orthonormal rows (batch x (n - r) x n) spanning the complement of each batch's r orthonormal
// rows of length n (batch x r x n).
template <class T>
void complement(const T* basis, std::size_t batch, std::size_t r, std::size_t n, T* out);

// --- CPU only: the steps of a randomized SVD over a tall matrix held as blocks of rows ---------
// (blocks.hpp; vsfast.distributed runs them as Dask tasks). Tall and small matrices are
// column-major; a block B of M (rows x cols) is row-major, or with `transposed` its row-major
// transpose.

// omega (column-major min(m, n) x sketch_width) = the Gaussian test matrix rsvd draws for m x n.
template <class T>
void sketch(std::size_t m, std::size_t n, const RsvdParams& p, T* omega);

// The largest magnitude among count values; NaN or inf refused, naming `name`.
template <class T>
double block_largest(const T* a, std::size_t count, const std::string& name);

// y (rows x width) = 2^-exponent B z, z (cols x width); gram (width x width) = y^T y.
template <class T>
void block_range(const T* a, std::size_t rows, std::size_t cols, bool transposed, const T* z, std::size_t width,
                 int exponent, T* y, T* gram);

// p (cols x width) = 2^-exponent B^T y, y (rows x width).
template <class T>
void block_corange(const T* a, std::size_t rows, std::size_t cols, bool transposed, const T* y, std::size_t width,
                   int exponent, T* p);

// The power of two rsvd scales a matrix whose largest magnitude is `largest` by (2^-exponent),
// 0 inside the safe range (common.hpp's rescaling_exponent).
template <class T>
int block_exponent(double largest);

// r = the upper Cholesky factor of the symmetric n x n gram; false when gram is not numerically
// positive definite or, with near_identity, more than 1/2 from the identity (CholeskyQR2's test).
template <class T>
bool cholesky_factor(const T* gram, std::size_t n, bool near_identity, T* r);

// y (rows x width) <- y r^-1 for the upper-triangular r; gram (unless null) = the new y^T y.
template <class T>
void solve_factor(T* y, std::size_t rows, std::size_t width, const T* r, T* gram);

// y (rows x width, rows >= width) <- Q and r <- R of its Householder QR.
template <class T>
void householder_qr(T* y, std::size_t rows, std::size_t width, T* r);

// One layer of a chain, h -> act(h W^T + b), holding its weight and bias.
template <class T>
struct Layer {
  std::size_t m = 0, n = 0;  // W is m x n
  std::vector<T> weight;     // row-major m x n
  std::vector<T> bias;       // m values, or empty
  Activation activation;
};

// Layers with their factors for going backwards, computed once (chain.hpp): per layer
// (W^+)^T = U_r S_r^-1 V_r^T and the signal basis V_r^T from one SVD, the rank by pinv's rule.
// Refuses layers that do not chain and weights or biases holding NaN or inf.
template <class T>
class Chain {
 public:
  Chain(std::vector<Layer<T>> layers, std::optional<double> rtol, std::optional<double> atol);

  std::size_t depth() const { return layers_.size(); }
  std::size_t input_dim() const { return layers_.front().n; }
  std::size_t output_dim() const { return layers_.back().m; }
  const std::vector<std::size_t>& ranks() const { return ranks_; }
  const Layer<T>& layer(std::size_t l) const { return layers_[l]; }
  // (W_l^+)^T, row-major m x n.
  const std::vector<T>& pinv_t(std::size_t l) const { return pinv_t_[l]; }
  // V_r^T of layer l (rank x n, row-major): an orthonormal basis of its signal space, as rows.
  const std::vector<T>& signal_rows(std::size_t l) const { return signal_rows_[l]; }
  // U_r S_r of the first layer (m x rank, row-major): W x = U_r S_r (V_r^T x), so a move of c
  // along the signal basis moves the first layer's pre-activation by U_r S_r c.
  const std::vector<T>& first_lift() const { return first_lift_; }

 private:
  std::vector<Layer<T>> layers_;
  std::vector<std::vector<T>> pinv_t_;
  std::vector<std::size_t> ranks_;
  std::vector<std::vector<T>> signal_rows_;
  std::vector<T> first_lift_;
};

// x (rows x n_0) from targets y (rows x m_last): backwards through every layer, invert the
// activation (clamping targets outside its range), subtract the bias, apply (W^+)^T. A reference
// (ref_rows rows, or null) fills the first layer's rejected space, or every layer's with
// every_layer. Returns the per-layer clamp counts.
template <class T>
std::vector<std::size_t> reconstruct(const Chain<T>& chain, const T* y, std::size_t rows, const T* reference,
                                     std::size_t ref_rows, bool every_layer, T* x);

// y (rows x m_last) = the chain applied to x (rows x n_0).
template <class T>
void forward(const Chain<T>& chain, const T* x, std::size_t rows, T* y);

// CPU only: inputs x (rows x n_0) whose outputs are y, by Gauss-Newton through the forward map
// (newton.hpp), to a relative error of tol within max_iter steps; the steps taken and the error
// reached per target.
template <class T>
void solve(const Chain<T>& chain, const T* y, std::size_t rows, const T* reference, std::size_t ref_rows,
           bool from_reference, double tol, std::size_t max_iter, T* x, std::int64_t* steps, double* error);

// CPU only: inputs x (rows x n_0) inside the box [lo, hi] whose outputs are y, nearest the
// reference (null: the origin), by projected Gauss-Newton through the whole chain (box.hpp); the
// steps taken, the relative output error and the box violation (largest excursion outside the
// box, 0 when inside) per target.
template <class T>
void solve_box(const Chain<T>& chain, const T* y, std::size_t rows, const T* reference, std::size_t ref_rows,
               double lo, double hi, double tol, std::size_t max_iter, T* x, std::int64_t* steps, double* error,
               double* violation);

// How this module was built and what the CPU it runs on offers (build_info.cpp).
struct BuildInfo {
  std::string compiler;                             // name and version
  std::string build_type, cxx_flags;                // CMake's build type and its compiler flags
  std::vector<std::string> compiled_for;            // instruction-set extensions the compiler could use
  std::vector<std::pair<std::string, bool>> cpu;    // extensions this CPU supports, detected now
  std::string blas_config;                          // OpenBLAS's own description of its build
  bool sanitizers = false;                          // AddressSanitizer and UBSan compiled in
};
BuildInfo build_info();

}  // namespace vsfast
