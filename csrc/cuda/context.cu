#include "cuda/context.hpp"

#include <atomic>
#include <climits>
#include <cstring>
#include <map>
#include <memory>

namespace vsfast::cuda {

void check(cudaError_t status, const char* call) {
  if (status != cudaSuccess)
    throw CudaError(std::string(call) + " failed: " + cudaGetErrorName(status) + " (" + cudaGetErrorString(status) +
                    ")");
}

void check(cublasStatus_t status, const char* call) {
  if (status != CUBLAS_STATUS_SUCCESS)
    throw CudaError(std::string(call) + " failed: " + cublasGetStatusName(status) + " (" +
                    cublasGetStatusString(status) + ")");
}

void check(cusolverStatus_t status, const char* call) {
  if (status != CUSOLVER_STATUS_SUCCESS)
    throw CudaError(std::string(call) + " failed: cuSOLVER status " + std::to_string(static_cast<int>(status)));
}

namespace {
cudaError_t count_devices(int* count) {
  *count = 0;
  const cudaError_t status = cudaGetDeviceCount(count);
  if (status != cudaSuccess) {
    cudaGetLastError();  // clear the sticky-free error so later calls report their own
    *count = 0;
  }
  return status;
}
}  // namespace

int device_count() {
  int count = 0;
  count_devices(&count);
  return count;
}

std::string unavailable_reason() {
  int count = 0;
  const cudaError_t status = count_devices(&count);
  if (status != cudaSuccess) return std::string(cudaGetErrorName(status)) + ": " + cudaGetErrorString(status);
  return count == 0 ? "no CUDA device" : "";
}

std::string device_name(int device) {
  cudaDeviceProp prop{};
  VSFAST_CHECK(cudaGetDeviceProperties(&prop, device));
  return prop.name;
}

DeviceGuard::DeviceGuard(int device) {
  VSFAST_CHECK(cudaGetDevice(&previous_));
  if (previous_ != device) VSFAST_CHECK(cudaSetDevice(device));
}

DeviceGuard::~DeviceGuard() {
  int current = -1;
  if (cudaGetDevice(&current) == cudaSuccess && current != previous_) cudaSetDevice(previous_);
}

namespace {
std::atomic<int> jacobi_max_sweeps{100};
}

void set_jacobi_max_sweeps(int sweeps) {
  if (sweeps < 1) throw std::invalid_argument("sweeps: expected >= 1, got " + std::to_string(sweeps));
  jacobi_max_sweeps = sweeps;
}

void configure_jacobi(gesvdjInfo_t params) {
  VSFAST_CHECK(cusolverDnXgesvdjSetMaxSweeps(params, jacobi_max_sweeps.load()));
}

Context& context(int device) {
  // Deliberately never destroyed (see Context).
  thread_local std::map<int, Context*> contexts;
  Context*& ctx = contexts[device];
  if (ctx) return *ctx;
  auto fresh = std::make_unique<Context>();
  fresh->device = device;
  VSFAST_CHECK(cublasCreate(&fresh->blas));
  VSFAST_CHECK(cusolverDnCreate(&fresh->solver));
  VSFAST_CHECK(cusolverDnCreateGesvdjInfo(&fresh->jacobi));
  VSFAST_CHECK(cusolverDnXgesvdjSetSortEig(fresh->jacobi, 1));  // descending, as LAPACK
  VSFAST_CHECK(cudaEventCreateWithFlags(&fresh->fork, cudaEventDisableTiming));
  ctx = fresh.release();
  return *ctx;
}

Bound bind(const Call& call) {
  Context& ctx = context(call.device);
  VSFAST_CHECK(cublasSetStream(ctx.blas, call.stream));
  VSFAST_CHECK(cusolverDnSetStream(ctx.solver, call.stream));
  VSFAST_CHECK(cublasSetMathMode(ctx.blas, CUBLAS_DEFAULT_MATH));
  return {ctx, call.stream, call.tf32};
}

Arena arena_of(const Call& call) {
  if (!call.workspace) return Arena(nullptr, 0);
  const auto address = reinterpret_cast<std::uintptr_t>(call.workspace);
  const std::uintptr_t aligned = (address + 255) / 256 * 256;
  const std::size_t skipped = aligned - address;
  if (skipped > call.workspace_bytes) throw std::invalid_argument("workspace: too small to align");
  return Arena(reinterpret_cast<void*>(aligned), call.workspace_bytes - skipped);
}

std::size_t lanes_for(std::size_t items) { return items < kMaxLanes ? items : kMaxLanes; }

namespace {
void ensure_lanes(Context& ctx, std::size_t count) {
  while (ctx.lanes.size() < count) {
    Lane lane;
    VSFAST_CHECK(cudaStreamCreateWithFlags(&lane.stream, cudaStreamNonBlocking));
    VSFAST_CHECK(cusolverDnCreate(&lane.solver));
    VSFAST_CHECK(cusolverDnSetStream(lane.solver, lane.stream));
    VSFAST_CHECK(cusolverDnCreateGesvdjInfo(&lane.jacobi));
    VSFAST_CHECK(cusolverDnXgesvdjSetSortEig(lane.jacobi, 1));
    VSFAST_CHECK(cudaEventCreateWithFlags(&lane.done, cudaEventDisableTiming));
    ctx.lanes.push_back(lane);
  }
}

// Makes the caller's stream wait for the lanes, whatever happened in between.
struct Join {
  Context& ctx;
  cudaStream_t stream;
  std::size_t lanes;
  ~Join() {
    for (std::size_t i = 0; i < lanes; ++i) {
      cudaEventRecord(ctx.lanes[i].done, ctx.lanes[i].stream);
      cudaStreamWaitEvent(stream, ctx.lanes[i].done, 0);
    }
  }
};
}  // namespace

void fan_out(Context& ctx, cudaStream_t stream, std::size_t items,
             const std::function<void(std::size_t, const Lane&, std::size_t)>& work) {
  if (items == 0) return;
  const std::size_t lanes = lanes_for(items);
  ensure_lanes(ctx, lanes);
  VSFAST_CHECK(cudaEventRecord(ctx.fork, stream));
  for (std::size_t i = 0; i < lanes; ++i) VSFAST_CHECK(cudaStreamWaitEvent(ctx.lanes[i].stream, ctx.fork, 0));
  Join join{ctx, stream, lanes};
  for (std::size_t item = 0; item < items; ++item) work(item, ctx.lanes[item % lanes], item % lanes);
}

namespace {
template <class T>
std::vector<T> fetch(const T* device_values, std::size_t count, cudaStream_t stream) {
  std::vector<T> host(count);
  if (count == 0) return host;
  VSFAST_CHECK(cudaMemcpyAsync(host.data(), device_values, count * sizeof(T), cudaMemcpyDeviceToHost, stream));
  VSFAST_CHECK(cudaStreamSynchronize(stream));
  return host;
}
}  // namespace

std::vector<int> fetch_ints(const int* device_ints, std::size_t count, cudaStream_t stream) {
  return fetch(device_ints, count, stream);
}

std::vector<double> fetch_magnitudes(const unsigned long long* slots, std::size_t count, cudaStream_t stream) {
  const std::vector<unsigned long long> bits = fetch(slots, count, stream);
  std::vector<double> values(count);
  std::memcpy(values.data(), bits.data(), count * sizeof(double));
  return values;
}

int to_int(std::size_t value, const char* what) {
  if (value > static_cast<std::size_t>(INT_MAX))
    throw std::invalid_argument(std::string(what) + " = " + std::to_string(value) +
                                " exceeds the 32-bit limit of cuBLAS/cuSOLVER, 2147483647");
  return static_cast<int>(value);
}

}  // namespace vsfast::cuda
