// build_info() of api.hpp: the CUDA versions this module was built with and runs with, asked
// without a device (a machine without a GPU answers too). The CPU twin is
// csrc/vsfast/build_info.cpp.
#include "cuda/api.hpp"

#include <cublas_v2.h>
#include <cuda_runtime_api.h>
#include <cusolver_common.h>

#include <string>

#ifndef VSFAST_CUDA_ARCHITECTURES
#define VSFAST_CUDA_ARCHITECTURES ""
#endif

namespace vsfast::cuda {

namespace {

std::string version(int major, int minor, int patch) {
  return std::to_string(major) + "." + std::to_string(minor) + "." + std::to_string(patch);
}

// CUDA's encoding of its versions, 1000 * major + 10 * minor, as "major.minor"; 0 for none.
std::string cuda_version(int encoded) {
  return encoded > 0 ? std::to_string(encoded / 1000) + "." + std::to_string(encoded % 1000 / 10) : "";
}

// A library's version from its *GetProperty function, or "" when it does not answer.
template <class Status, class Get>
std::string library_version(Get get, Status ok) {
  int major = 0, minor = 0, patch = 0;
  if (get(MAJOR_VERSION, &major) != ok || get(MINOR_VERSION, &minor) != ok || get(PATCH_LEVEL, &patch) != ok)
    return "";
  return version(major, minor, patch);
}

}  // namespace

BuildInfo build_info() {
  BuildInfo info;
  info.cuda_runtime_built = cuda_version(CUDART_VERSION);
  int runtime = 0, driver = 0;
  if (cudaRuntimeGetVersion(&runtime) == cudaSuccess) info.cuda_runtime = cuda_version(runtime);
  if (cudaDriverGetVersion(&driver) == cudaSuccess) info.cuda_driver = cuda_version(driver);
  cudaGetLastError();  // neither call may leave an error for the next one to report
  info.nvcc = version(__CUDACC_VER_MAJOR__, __CUDACC_VER_MINOR__, __CUDACC_VER_BUILD__);
  info.architectures = VSFAST_CUDA_ARCHITECTURES;
  info.cublas_built = version(CUBLAS_VER_MAJOR, CUBLAS_VER_MINOR, CUBLAS_VER_PATCH);
  info.cublas = library_version(cublasGetProperty, CUBLAS_STATUS_SUCCESS);
  info.cusolver_built = version(CUSOLVER_VER_MAJOR, CUSOLVER_VER_MINOR, CUSOLVER_VER_PATCH);
  info.cusolver = library_version(cusolverGetProperty, CUSOLVER_STATUS_SUCCESS);
  return info;
}

}  // namespace vsfast::cuda
