# vsfast._cuda: the GPU twins of the core's kernels (csrc/cuda), on cuBLAS and cuSOLVER.
#
# VSFAST_CUDA = AUTO (default) builds the module when nvcc and the cuBLAS/cuSOLVER headers and
# libraries are found and skips it otherwise; ON fails the build if they are missing; OFF skips.
# The environment variable VSFAST_CUDA sets the default. The libraries come from the CUDA toolkit
# or from the nvidia-* wheels that torch's CUDA build installs: VSFAST_CUDA_SITE (CMake variable
# or environment variable) names a site-packages directory holding them, since pip builds in an
# isolated environment that does not have them.

set(_vsfast_cuda_default AUTO)
if(DEFINED ENV{VSFAST_CUDA} AND NOT "$ENV{VSFAST_CUDA}" STREQUAL "")
  set(_vsfast_cuda_default "$ENV{VSFAST_CUDA}")
endif()
set(VSFAST_CUDA "${_vsfast_cuda_default}" CACHE STRING "Build vsfast._cuda: AUTO, ON or OFF")
string(TOUPPER "${VSFAST_CUDA}" VSFAST_CUDA)
if(NOT VSFAST_CUDA MATCHES "^(AUTO|ON|OFF)$")
  message(FATAL_ERROR "VSFAST_CUDA must be AUTO, ON or OFF, got '${VSFAST_CUDA}'")
endif()
if(NOT DEFINED VSFAST_CUDA_SITE AND DEFINED ENV{VSFAST_CUDA_SITE})
  set(VSFAST_CUDA_SITE "$ENV{VSFAST_CUDA_SITE}")
endif()

# Report why the module is not built: fatal when it was asked for, a status line otherwise.
macro(vsfast_cuda_unavailable reason)
  if(VSFAST_CUDA STREQUAL "ON")
    message(FATAL_ERROR "VSFAST_CUDA=ON but ${reason}")
  endif()
  message(STATUS "vsfast: not building the CUDA module: ${reason}")
  return()
endmacro()

if(VSFAST_CUDA STREQUAL "OFF")
  message(STATUS "vsfast: CUDA module off (VSFAST_CUDA=OFF)")
  return()
endif()

include(CheckLanguage)
check_language(CUDA)
if(NOT CMAKE_CUDA_COMPILER)
  vsfast_cuda_unavailable("no CUDA compiler (nvcc) was found")
endif()
if(NOT DEFINED CMAKE_CUDA_ARCHITECTURES)
  set(CMAKE_CUDA_ARCHITECTURES 80 90)  # A100 and H100/H200
endif()
enable_language(CUDA)
set(CMAKE_CUDA_STANDARD 17)
set(CMAKE_CUDA_STANDARD_REQUIRED ON)
find_package(CUDAToolkit)
if(NOT CUDAToolkit_FOUND)
  vsfast_cuda_unavailable("the CUDA runtime was not found")
endif()

# Candidate roots of cuBLAS/cuSOLVER: the nvidia wheels (CUDA 13 ships one cu13 directory, CUDA
# 12 one directory per library), then the toolkit itself.
set(_vsfast_cuda_roots "")
if(VSFAST_CUDA_SITE)
  foreach(_sub nvidia/cu13 nvidia/cublas nvidia/cusolver nvidia/cuda_runtime)
    if(EXISTS "${VSFAST_CUDA_SITE}/${_sub}")
      list(APPEND _vsfast_cuda_roots "${VSFAST_CUDA_SITE}/${_sub}")
    endif()
  endforeach()
endif()
list(APPEND _vsfast_cuda_roots "${CUDAToolkit_LIBRARY_ROOT}")
get_filename_component(_vsfast_toolkit_root "${CUDAToolkit_LIBRARY_DIR}" DIRECTORY)
list(APPEND _vsfast_cuda_roots "${_vsfast_toolkit_root}")

find_path(VSFAST_CUBLAS_INCLUDE_DIR cublas_v2.h PATHS ${_vsfast_cuda_roots} ${CUDAToolkit_INCLUDE_DIRS}
          PATH_SUFFIXES include NO_DEFAULT_PATH)
find_path(VSFAST_CUSOLVER_INCLUDE_DIR cusolverDn.h PATHS ${_vsfast_cuda_roots} ${CUDAToolkit_INCLUDE_DIRS}
          PATH_SUFFIXES include NO_DEFAULT_PATH)
# The wheels carry only versioned files (libcublas.so.13): name them as they are.
find_library(VSFAST_CUBLAS_LIBRARY NAMES cublas libcublas.so.13 libcublas.so.12
             PATHS ${_vsfast_cuda_roots} PATH_SUFFIXES lib lib64 NO_DEFAULT_PATH)
find_library(VSFAST_CUSOLVER_LIBRARY NAMES cusolver libcusolver.so.12 libcusolver.so.11
             PATHS ${_vsfast_cuda_roots} PATH_SUFFIXES lib lib64 NO_DEFAULT_PATH)
foreach(_what CUBLAS_INCLUDE_DIR CUSOLVER_INCLUDE_DIR CUBLAS_LIBRARY CUSOLVER_LIBRARY)
  if(NOT VSFAST_${_what})
    set(_hint "set VSFAST_CUDA_SITE to the site-packages holding torch's nvidia wheels")
    vsfast_cuda_unavailable("${_what} was not found (searched ${_vsfast_cuda_roots}; ${_hint})")
  endif()
endforeach()
message(STATUS "vsfast: CUDA module for sm ${CMAKE_CUDA_ARCHITECTURES} with ${VSFAST_CUBLAS_LIBRARY} and "
               "${VSFAST_CUSOLVER_LIBRARY}")

pybind11_add_module(_cuda MODULE
  csrc/bindings/cuda.cpp
  csrc/cuda/context.cu
  csrc/cuda/rsvd.cu
  csrc/cuda/svd.cu
  csrc/cuda/pinv.cu
  csrc/cuda/project.cu
  csrc/cuda/chain.cu
  csrc/cuda/build_info.cu)
target_include_directories(_cuda PRIVATE csrc)
# What _cuda.build_info() reports as the compute capabilities compiled.
string(REPLACE ";" " " _vsfast_cuda_archs "${CMAKE_CUDA_ARCHITECTURES}")
set_source_files_properties(csrc/cuda/build_info.cu PROPERTIES COMPILE_DEFINITIONS
  "VSFAST_CUDA_ARCHITECTURES=\"${_vsfast_cuda_archs}\"")
# After the toolkit's own headers, so that the wheel's copies of the runtime headers never
# shadow those of the compiler in use.
target_include_directories(_cuda SYSTEM AFTER PRIVATE ${CUDAToolkit_INCLUDE_DIRS}
                           "${VSFAST_CUBLAS_INCLUDE_DIR}" "${VSFAST_CUSOLVER_INCLUDE_DIR}")
# The runtime is linked statically: only cuBLAS and cuSOLVER must be found at run time.
target_link_libraries(_cuda PRIVATE CUDA::cudart_static "${VSFAST_CUBLAS_LIBRARY}" "${VSFAST_CUSOLVER_LIBRARY}")
target_compile_options(_cuda PRIVATE
  $<$<COMPILE_LANGUAGE:CXX>:-Wall -Wextra>
  $<$<COMPILE_LANGUAGE:CUDA>:-Xcompiler=-Wall,-Wextra --Werror=all-warnings -lineinfo>)
set_target_properties(_cuda PROPERTIES CUDA_SEPARABLE_COMPILATION OFF)
# Beside torch's nvidia wheels in site-packages, or in the toolkit the build used.
get_filename_component(_vsfast_cublas_dir "${VSFAST_CUBLAS_LIBRARY}" DIRECTORY)
get_filename_component(_vsfast_cusolver_dir "${VSFAST_CUSOLVER_LIBRARY}" DIRECTORY)
set_target_properties(_cuda PROPERTIES
  INSTALL_RPATH
    "$ORIGIN/../nvidia/cu13/lib;$ORIGIN/../nvidia/cublas/lib;$ORIGIN/../nvidia/cusolver/lib;${_vsfast_cublas_dir};${_vsfast_cusolver_dir}"
  BUILD_WITH_INSTALL_RPATH ON)
install(TARGETS _cuda LIBRARY DESTINATION vsfast)
