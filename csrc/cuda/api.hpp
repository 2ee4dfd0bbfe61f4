// The GPU twins of the CPU core's operations (csrc/vsfast/api.hpp), name for name: rsvd, svd,
// svdvals, pinv, project and the chain's reconstruct and forward. Arrays are device pointers in
// the CPU core's row-major layout, batched over a leading axis. Every operation runs on
// call.stream and carves its scratch memory from call.workspace, whose size the matching
// *_workspace function gives (call.workspace null): the caller allocates it with its own
// framework, so nothing is allocated per call here.
//
// As on the CPU, every operation owns the loop over the batch, the refusal of inputs holding NaN
// or inf (std::invalid_argument naming the argument) and of results beyond the dtype
// (std::overflow_error), and LinAlgError for a decomposition that does not converge; the caller
// vouches for the memory (sizes, k in [1, min(m, n)], reference rows). The parameters, the rank
// rule and the messages are the CPU's: csrc/vsfast/common.hpp.
#pragma once

#include "cuda/context.hpp"
#include "vsfast/activations.hpp"
#include "vsfast/common.hpp"

#include <cstddef>
#include <cstdint>
#include <optional>
#include <string>
#include <vector>

namespace vsfast::cuda {

// u (batch x m x k), s (batch x k), vh (batch x k x n). A batch holding a matrix outside the safe
// range is rescaled in a copy from call.extra.
template <class T>
std::size_t rsvd_workspace(const Call& call, std::size_t batch, std::size_t m, std::size_t n, const RsvdParams& p);
template <class T>
void rsvd(const Call& call, const T* a, std::size_t batch, std::size_t m, std::size_t n, const RsvdParams& p, T* u,
          T* s, T* vh);

// Thin SVD: u (batch x m x q), s (batch x q), vh (batch x q x n), q = min(m, n).
template <class T>
std::size_t svd_workspace(const Call& call, std::size_t batch, std::size_t m, std::size_t n);
template <class T>
void svd(const Call& call, const T* a, std::size_t batch, std::size_t m, std::size_t n, T* u, T* s, T* vh);

// Singular values only, by the svd's path: s (batch x q), q = min(m, n).
template <class T>
std::size_t svdvals_workspace(const Call& call, std::size_t batch, std::size_t m, std::size_t n);
template <class T>
void svdvals(const Call& call, const T* a, std::size_t batch, std::size_t m, std::size_t n, T* s);

// Pseudoinverses (batch x n x m, or with `transposed` their transposes, batch x m x n) and ranks
// (batch int64, left on the device), by the rank rule of common.hpp. vh, unless null,
// receives the right singular vectors (batch x q x n, q = min(m, n)), whose first rank rows span
// each matrix's row space: a chain layer's factors from one SVD.
template <class T>
std::size_t pinv_workspace(const Call& call, std::size_t batch, std::size_t m, std::size_t n);
template <class T>
void pinv(const Call& call, const T* a, std::size_t batch, std::size_t m, std::size_t n, std::optional<double> rtol,
          std::optional<double> atol, bool transposed, T* out, std::int64_t* ranks, T* vh);

// signal = X B^T B and residual = X - signal for X (rows x n) and orthonormal rows B (r x n).
template <class T>
std::size_t project_workspace(const Call& call, std::size_t rows, std::size_t n, std::size_t r);
template <class T>
void project(const Call& call, const T* x, std::size_t rows, std::size_t n, const T* basis, std::size_t r, T* signal,
             T* residual);

// One layer of a chain, h -> act(h W^T + b), with its factors already on the device.
template <class T>
struct Layer {
  std::size_t m = 0, n = 0;         // W is m x n
  const T* weight = nullptr;        // row-major m x n
  const T* bias = nullptr;          // m values, or null
  const T* pinv_t = nullptr;        // (W^+)^T, row-major m x n
  const T* signal_rows = nullptr;   // V_r^T, row-major rank x n
  std::size_t rank = 0;
  Activation activation;
};

// x (rows x n_0) from targets y (rows x m_last), as Chain<T>::reconstruct on the CPU; returns the
// per-layer clamp counts.
template <class T>
std::size_t reconstruct_workspace(const Call& call, const std::vector<Layer<T>>& layers, std::size_t rows,
                                  std::size_t ref_rows, bool every_layer);
template <class T>
std::vector<std::size_t> reconstruct(const Call& call, const std::vector<Layer<T>>& layers, const T* y,
                                     std::size_t rows, const T* reference, std::size_t ref_rows, bool every_layer,
                                     T* x);

// y (rows x m_last) = the chain applied to x (rows x n_0).
template <class T>
std::size_t forward_workspace(const Call& call, const std::vector<Layer<T>>& layers, std::size_t rows);
template <class T>
void forward(const Call& call, const std::vector<Layer<T>>& layers, const T* x, std::size_t rows, T* y);

// How this module was built (build_info.cu): versions as "major.minor[.patch]", "" where unknown.
struct BuildInfo {
  std::string cuda_runtime_built;  // the CUDA headers compiled against (CUDART_VERSION)
  std::string cuda_runtime;        // the runtime linked in (statically), asked at run time
  std::string cuda_driver;         // the driver's CUDA version; "" without a driver
  std::string nvcc;                // the compiler of the device code
  std::string architectures;       // the compute capabilities compiled (CMAKE_CUDA_ARCHITECTURES)
  std::string cublas_built, cublas;      // headers compiled against, library loaded
  std::string cusolver_built, cusolver;  // the same for cuSOLVER
};
BuildInfo build_info();

}  // namespace vsfast::cuda
