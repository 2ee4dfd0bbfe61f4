# vsfast._cuda: the GPU twins of the core's kernels (csrc/cuda), on cuBLAS and cuSOLVER.
#
# VSFAST_CUDA = AUTO (default) builds the module when nvcc and the cuBLAS/cuSOLVER headers and
# libraries are found and skips it otherwise, unless an NVIDIA GPU is present: then a missing nvcc
# stops the build rather than leave that machine without the module. ON fails the build if
# anything is missing; OFF skips. The environment variable VSFAST_CUDA sets the default.
#
# pip builds through backend/vsfast_backend.py, which turns AUTO into ON where it finds nvcc and
# installs the cuBLAS/cuSOLVER wheels (cuda-toolkit[cublas,cusolver]) into the build environment.
# The libraries are searched, in this order, in VSFAST_CUDA_SITE (CMake or environment variable: a
# site-packages directory holding nvidia wheels, e.g. torch's), in the nvidia wheels that the
# build's Python imports, and in the CUDA toolkit.

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

# An NVIDIA GPU on this machine: its device node, or a GPU listed by the driver's nvidia-smi.
function(vsfast_gpu_present out)
  set(_present FALSE)
  if(EXISTS "/dev/nvidia0")
    set(_present TRUE)
  else()
    find_program(_vsfast_nvidia_smi nvidia-smi)
    if(_vsfast_nvidia_smi)
      execute_process(COMMAND "${_vsfast_nvidia_smi}" -L OUTPUT_VARIABLE _gpus RESULT_VARIABLE _rc
                      ERROR_QUIET TIMEOUT 30)
      if(_rc EQUAL 0 AND _gpus MATCHES "GPU [0-9]")
        set(_present TRUE)
      endif()
    endif()
  endif()
  set(${out} ${_present} PARENT_SCOPE)
endfunction()

# Report why the module is not built and how to get it: fatal when it was asked for or a GPU is
# there to use it, a status line otherwise.
macro(vsfast_cuda_unavailable reason how)
  if(VSFAST_CUDA STREQUAL "ON")
    message(FATAL_ERROR "vsfast: VSFAST_CUDA=ON but ${reason}.\nTo get vsfast._cuda: ${how}; "
                        "VSFAST_CUDA=OFF builds vsfast without it.")
  endif()
  vsfast_gpu_present(_vsfast_gpu)
  if(_vsfast_gpu)
    message(FATAL_ERROR "vsfast: this machine has an NVIDIA GPU but ${reason}.\n"
                        "To get vsfast._cuda: ${how}; VSFAST_CUDA=OFF builds vsfast without it.")
  endif()
  message(STATUS "vsfast: not building the CUDA module: ${reason} (and there is no NVIDIA GPU)")
  return()
endmacro()

if(VSFAST_CUDA STREQUAL "OFF")
  message(STATUS "vsfast: CUDA module off (VSFAST_CUDA=OFF)")
  return()
endif()

include(CheckLanguage)
check_language(CUDA)
if(NOT CMAKE_CUDA_COMPILER)
  vsfast_cuda_unavailable("no CUDA compiler (nvcc) was found"
                          "install the CUDA toolkit (nvcc) or set CUDACXX to its nvcc, then build again")
endif()
set(_vsfast_cuda_archs_given FALSE)
if(DEFINED CMAKE_CUDA_ARCHITECTURES OR DEFINED ENV{CUDAARCHS})
  set(_vsfast_cuda_archs_given TRUE)
endif()
enable_language(CUDA)
set(CMAKE_CUDA_STANDARD 17)
set(CMAKE_CUDA_STANDARD_REQUIRED ON)

# Architectures, unless CMAKE_CUDA_ARCHITECTURES (or CUDAARCHS) names them: machine code for every
# GPU generation from Volta to Hopper that the nvcc in use still compiles for, plus the PTX of the
# newest, which the driver compiles for later GPUs (Blackwell and on) when the module loads.
#   70 V100 | 75 T4, RTX 20 | 80 A100, A30 | 86 A10, A40, RTX 30 | 89 L4, L40, RTX 40 | 90 H100, H200
# CUDA 13 dropped Volta (nvcc --list-gpu-code starts at sm_75); sm_89 and sm_90 came with 11.8.
# Each architecture adds its share to the compile time of the .cu files.
if(NOT _vsfast_cuda_archs_given)
  set(_archs 70 75 80 86 89 90)
  if(CMAKE_CUDA_COMPILER_VERSION VERSION_GREATER_EQUAL 13.0)
    list(REMOVE_ITEM _archs 70)
  endif()
  if(CMAKE_CUDA_COMPILER_VERSION VERSION_LESS 11.8)
    list(REMOVE_ITEM _archs 89 90)
  endif()
  list(POP_BACK _archs _newest)
  list(TRANSFORM _archs APPEND "-real")
  set(CMAKE_CUDA_ARCHITECTURES ${_archs} ${_newest}-real ${_newest}-virtual)
endif()

find_package(CUDAToolkit)
if(NOT CUDAToolkit_FOUND)
  vsfast_cuda_unavailable("the CUDA runtime was not found beside ${CMAKE_CUDA_COMPILER}"
                          "use a complete CUDA toolkit (nvcc with its cudart)")
endif()

# The nvidia packages that the build's Python imports: under pip, those its isolated build
# environment got from the backend; in a --no-build-isolation build, those of that environment.
execute_process(
  COMMAND "${Python_EXECUTABLE}" -c
          "import nvidia; print(';'.join(nvidia.__path__))"
  OUTPUT_VARIABLE _vsfast_python_nvidia
  OUTPUT_STRIP_TRAILING_WHITESPACE
  RESULT_VARIABLE _rc
  ERROR_QUIET)
if(NOT _rc EQUAL 0)
  set(_vsfast_python_nvidia "")
endif()

# Candidate roots of cuBLAS/cuSOLVER (CUDA 13's wheels share one cu13 directory, CUDA 12's have one
# directory per library), then the toolkit itself.
set(_vsfast_nvidia_dirs "")
if(VSFAST_CUDA_SITE)
  list(APPEND _vsfast_nvidia_dirs "${VSFAST_CUDA_SITE}/nvidia")
endif()
list(APPEND _vsfast_nvidia_dirs ${_vsfast_python_nvidia})
set(_vsfast_cuda_roots "")
foreach(_dir IN LISTS _vsfast_nvidia_dirs)
  file(GLOB _subs LIST_DIRECTORIES true "${_dir}/cu[0-9]*" "${_dir}/cublas" "${_dir}/cusolver")
  list(APPEND _vsfast_cuda_roots ${_subs})
endforeach()
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
string(CONCAT _vsfast_libs_how
  "pip install (with build isolation) brings cuBLAS/cuSOLVER as cuda-toolkit[cublas,cusolver] for "
  "nvcc's CUDA version; a --no-build-isolation build needs that package installed, or "
  "VSFAST_CUDA_SITE set to a site-packages holding those nvidia wheels (torch's)")
foreach(_what CUBLAS_INCLUDE_DIR CUSOLVER_INCLUDE_DIR CUBLAS_LIBRARY CUSOLVER_LIBRARY)
  if(NOT VSFAST_${_what})
    set(_searched "the nvidia wheels in '${_vsfast_nvidia_dirs}', then ${_vsfast_cuda_roots}")
    vsfast_cuda_unavailable("${_what} was not found (searched ${_searched})" "${_vsfast_libs_how}")
  endif()
endforeach()
message(STATUS "vsfast: CUDA module for ${CMAKE_CUDA_ARCHITECTURES} with ${VSFAST_CUBLAS_LIBRARY} and "
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
# Architectures a newer nvcc deprecates are still wanted (see above): no warning for them.
target_compile_options(_cuda PRIVATE
  $<$<COMPILE_LANGUAGE:CXX>:-Wall -Wextra>
  $<$<COMPILE_LANGUAGE:CUDA>:-Xcompiler=-Wall,-Wextra -Wno-deprecated-gpu-targets -lineinfo>)
if(VSFAST_WERROR)
  target_compile_options(_cuda PRIVATE
    $<$<COMPILE_LANGUAGE:CXX>:-Werror>
    $<$<COMPILE_LANGUAGE:CUDA>:--Werror=all-warnings -Xcompiler=-Werror>)
endif()
set_target_properties(_cuda PROPERTIES CUDA_SEPARABLE_COMPILATION OFF)

# Run-time search path: site-packages' nvidia wheels beside the installed module (where the
# dependency that the backend adds to a CUDA build puts them, as torch's do), then the directories
# the libraries were linked from, unless those are the nvidia wheels of the build's own Python:
# the isolated build environment is deleted after the build.
set(_vsfast_rpath "$ORIGIN/../nvidia/cu13/lib;$ORIGIN/../nvidia/cublas/lib;$ORIGIN/../nvidia/cusolver/lib")
foreach(_lib IN ITEMS "${VSFAST_CUBLAS_LIBRARY}" "${VSFAST_CUSOLVER_LIBRARY}")
  get_filename_component(_lib_dir "${_lib}" DIRECTORY)
  set(_transient FALSE)
  foreach(_dir IN LISTS _vsfast_python_nvidia)
    string(FIND "${_lib_dir}/" "${_dir}/" _at)
    if(_at EQUAL 0 AND NOT (VSFAST_CUDA_SITE AND "${_dir}" STREQUAL "${VSFAST_CUDA_SITE}/nvidia"))
      set(_transient TRUE)
    endif()
  endforeach()
  if(NOT _transient)
    list(APPEND _vsfast_rpath "${_lib_dir}")
  endif()
endforeach()
list(REMOVE_DUPLICATES _vsfast_rpath)
set_target_properties(_cuda PROPERTIES INSTALL_RPATH "${_vsfast_rpath}" BUILD_WITH_INSTALL_RPATH ON)
install(TARGETS _cuda LIBRARY DESTINATION vsfast)
