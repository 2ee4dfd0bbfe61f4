// The CUDA side's plumbing: status checks that throw, per-thread per-device handles bound to the
// caller's stream, a bump allocator over the caller's workspace and a fan-out of independent
// per-matrix library calls over a few streams. Plain C++: the bindings include it too.
#pragma once

#include "vsfast/common.hpp"

#include <cublas_v2.h>
#include <cuda_runtime_api.h>
#include <cusolverDn.h>

#include <cstddef>
#include <cstdint>
#include <functional>
#include <stdexcept>
#include <string>
#include <vector>

namespace vsfast::cuda {

// A failed CUDA, cuBLAS or cuSOLVER call; the message names the call.
struct CudaError : std::runtime_error {
  using std::runtime_error::runtime_error;
};

// A decomposition that did not converge throws vsfast::LinAlgError (common.hpp), as on the CPU.

void check(cudaError_t status, const char* call);
void check(cublasStatus_t status, const char* call);
void check(cusolverStatus_t status, const char* call);
#define VSFAST_CHECK(call) ::vsfast::cuda::check((call), #call)

// Devices this process can use; 0 (never an error) without a driver or a device.
int device_count();
// Why device_count() is 0, or "" when it is not.
std::string unavailable_reason();
std::string device_name(int device);

// Makes `device` current for the scope and restores the previous one.
class DeviceGuard {
 public:
  explicit DeviceGuard(int device);
  ~DeviceGuard();
  DeviceGuard(const DeviceGuard&) = delete;
  DeviceGuard& operator=(const DeviceGuard&) = delete;

 private:
  int previous_ = -1;
};

// A side stream with its own cuSOLVER handle and Jacobi parameters, for per-matrix calls that
// cuSOLVER cannot batch.
struct Lane {
  cudaStream_t stream = nullptr;
  cusolverDnHandle_t solver = nullptr;
  gesvdjInfo_t jacobi = nullptr;
  cudaEvent_t done = nullptr;
};

constexpr std::size_t kMaxLanes = 16;

// The sweep limit of every Jacobi SVD: cuSOLVER's default, 100, unless set lower, as the tests do
// to make Jacobi give up and the QR-iteration fallback run. configure_jacobi applies it.
void set_jacobi_max_sweeps(int sweeps);
void configure_jacobi(gesvdjInfo_t params);

// Handles of one thread on one device, created on first use and kept for the life of the process:
// creating them costs milliseconds, and destroying them at exit can race the driver's teardown.
struct Context {
  int device = -1;
  cublasHandle_t blas = nullptr;
  cusolverDnHandle_t solver = nullptr;
  gesvdjInfo_t jacobi = nullptr;
  cudaEvent_t fork = nullptr;
  std::vector<Lane> lanes;  // up to kMaxLanes, created when first needed
};

// The current thread's context on `device` (which the caller has made current).
Context& context(int device);

// One call's environment: the device, the caller's stream, the workspace the caller allocated
// with its framework, and whether float32 products over the input may use TF32 tensor cores.
// `extra`, when set, allocates more device memory with the caller's framework, valid until the
// call returns: for the rare paths whose scratch depends on the data (a rescaled copy of the
// input), so that the workspace sized in advance need not hold it.
struct Call {
  int device = 0;
  cudaStream_t stream = nullptr;
  void* workspace = nullptr;
  std::size_t workspace_bytes = 0;
  bool tf32 = false;
  std::function<void*(std::size_t bytes)> extra;
};

// The context with its handles bound to the call's stream.
struct Bound {
  Context& ctx;
  cudaStream_t stream;
  bool tf32;
};
Bound bind(const Call& call);

// Carves aligned pieces out of a workspace. With a null base it only measures: every operation
// lays out its workspace with the same code that sizes it.
class Arena {
 public:
  Arena(void* base, std::size_t size) : base_(static_cast<char*>(base)), size_(size) {}

  template <class T>
  T* take(std::size_t count) {
    used_ = (used_ + kAlign - 1) / kAlign * kAlign;
    T* p = base_ ? reinterpret_cast<T*>(base_ + used_) : nullptr;
    used_ += count * sizeof(T);
    if (base_ && used_ > size_)
      throw std::invalid_argument("workspace: " + std::to_string(size_) + " bytes given, at least " +
                                  std::to_string(used_) + " needed");
    return p;
  }
  std::size_t used() const { return used_ + kAlign; }  // room to align the base itself
  bool measuring() const { return base_ == nullptr; }

 private:
  static constexpr std::size_t kAlign = 256;
  char* base_;
  std::size_t size_;
  std::size_t used_ = 0;
};

// Aligns the caller's workspace pointer for an Arena.
Arena arena_of(const Call& call);

// Lanes used for `items` independent calls.
std::size_t lanes_for(std::size_t items);

// Runs work(item, lane) for item = 0 .. items-1, spread over lanes forked from `stream` and joined
// back into it before returning (also when work throws), so everything stays ordered on the
// caller's stream.
void fan_out(Context& ctx, cudaStream_t stream, std::size_t items,
             const std::function<void(std::size_t, const Lane&, std::size_t lane_index)>& work);

// Copies `count` ints from the device and waits for them: the host-side decisions (a QR fallback,
// a convergence failure) need them.
std::vector<int> fetch_ints(const int* device_ints, std::size_t count, cudaStream_t stream);

// Copies `count` magnitudes written by measure_magnitudes (kernels.cuh) and waits for them.
std::vector<double> fetch_magnitudes(const unsigned long long* slots, std::size_t count, cudaStream_t stream);

// Dimensions cross into 32-bit cuBLAS/cuSOLVER arguments: refuse what does not fit.
int to_int(std::size_t value, const char* what);

}  // namespace vsfast::cuda
