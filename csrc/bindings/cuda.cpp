// vsfast._cuda: the GPU kernels for Python. Arrays arrive as device pointers with their shapes,
// the caller's stream and a workspace allocated by the caller's framework (see vsfast/_gpu.py);
// this file makes the checks memory safety needs (the dtype, the device, non-empty sizes, k within
// bounds, pointers into that device's memory, workspaces, chained layers, reference rows),
// releases the GIL and dispatches on the dtype. The operations of csrc/cuda/api.hpp do the rest,
// refusing NaN and inf in inputs and results beyond the dtype themselves; arguments that are wrong
// without being unsafe (tolerances) are the Python layer's to refuse (vsfast/_arrays.py).
#include <pybind11/pybind11.h>
#include <pybind11/stl.h>

#include "cuda/api.hpp"

#include <cstdint>
#include <functional>
#include <optional>
#include <string>
#include <tuple>
#include <vector>

namespace py = pybind11;
using namespace vsfast::cuda;

namespace {

// ---------------------------------------------------------------------------------------------
// Argument checks.

enum class Dtype { f32, f64 };

Dtype parse_dtype(const std::string& name) {
  if (name == "float32") return Dtype::f32;
  if (name == "float64") return Dtype::f64;
  throw py::type_error("dtype: expected 'float32' or 'float64', got '" + name + "'");
}

template <class F>
auto dispatch(Dtype dtype, F&& f) {
  return dtype == Dtype::f32 ? f(float{}) : f(double{});
}

int check_device(int device) {
  const int count = device_count();
  if (device < 0 || device >= count)
    throw std::invalid_argument("device: expected a CUDA device index in [0, " + std::to_string(count) + "), got " +
                                std::to_string(device) + (count ? "" : " (" + unavailable_reason() + ")"));
  return device;
}

// Sizes are unsigned (pybind11 refuses a negative one); an empty one would have the kernels read
// the first entry of nothing.
std::size_t positive(std::size_t value, const char* name) {
  if (value < 1) throw std::invalid_argument(std::string(name) + ": expected >= 1, got 0");
  return value;
}

// A pointer into device memory of `device`, aligned for the dtype.
template <class T>
T* device_pointer(std::uintptr_t address, int device, const std::string& name) {
  if (!address) throw std::invalid_argument(name + ": null device pointer");
  if (address % alignof(T)) throw std::invalid_argument(name + ": pointer not aligned for its dtype");
  void* p = reinterpret_cast<void*>(address);
  cudaPointerAttributes attr{};
  VSFAST_CHECK(cudaPointerGetAttributes(&attr, p));
  if (attr.type != cudaMemoryTypeDevice && attr.type != cudaMemoryTypeManaged)
    throw py::type_error(name + ": expected device memory, got a host pointer");
  if (attr.device != device)
    throw std::invalid_argument(name + ": on CUDA device " + std::to_string(attr.device) + ", expected device " +
                                std::to_string(device));
  return static_cast<T*>(p);
}

// The call's environment. The workspace may be empty only when nothing is needed.
Call make_call(int device, std::uintptr_t stream, std::uintptr_t workspace, std::size_t workspace_bytes) {
  Call call;
  call.device = check_device(device);
  call.stream = reinterpret_cast<cudaStream_t>(stream);
  call.workspace_bytes = workspace_bytes;
  call.workspace = workspace ? device_pointer<unsigned char>(workspace, device, "workspace") : nullptr;
  if (!call.workspace && call.workspace_bytes) throw std::invalid_argument("workspace: null with a nonzero size");
  return call;
}

// Call::extra through the caller's Python allocator (fn(nbytes) -> device pointer), which runs
// with the GIL taken back. fn outlives the call: it is an argument of the binding.
std::function<void*(std::size_t)> extra_memory(const py::object& fn, int device) {
  if (fn.is_none()) return {};
  const py::object* allocate = &fn;
  return [allocate, device](std::size_t bytes) -> void* {
    py::gil_scoped_acquire gil;
    const auto address = (*allocate)(bytes).cast<std::uintptr_t>();
    return device_pointer<unsigned char>(address, device, "extra workspace");
  };
}

Call sizing_call(int device) {
  Call call;
  call.device = check_device(device);
  return call;
}

vsfast::RsvdParams rsvd_params(std::size_t m, std::size_t n, std::size_t k, std::size_t oversample,
                               std::size_t power_iters, std::uint64_t seed) {
  vsfast::require_k_in_range(k, m, n);
  return {k, oversample, power_iters, seed};
}

// ---------------------------------------------------------------------------------------------
// Operations: a *_workspace function giving the bytes to allocate, and the operation itself.

std::size_t rsvd_workspace_py(const std::string& dtype, int device, std::size_t batch, std::size_t m, std::size_t n,
                              std::size_t k, std::size_t oversample, std::size_t power_iters) {
  const std::size_t b = positive(batch, "batch"), rows = positive(m, "m"), cols = positive(n, "n");
  const vsfast::RsvdParams p = rsvd_params(rows, cols, k, oversample, power_iters, 0);
  const Call call = sizing_call(device);
  return dispatch(parse_dtype(dtype), [&](auto tag) { return rsvd_workspace<decltype(tag)>(call, b, rows, cols, p); });
}

void rsvd_py(const std::string& dtype, int device, std::uintptr_t stream, std::uintptr_t workspace,
             std::size_t workspace_bytes, std::uintptr_t a, std::size_t batch, std::size_t m, std::size_t n,
             std::size_t k, std::size_t oversample, std::size_t power_iters, std::uint64_t seed, bool tf32,
             std::uintptr_t u, std::uintptr_t s, std::uintptr_t vh, const py::object& extra) {
  const std::size_t b = positive(batch, "batch"), rows = positive(m, "m"), cols = positive(n, "n");
  const vsfast::RsvdParams p = rsvd_params(rows, cols, k, oversample, power_iters, seed);
  Call call = make_call(device, stream, workspace, workspace_bytes);
  call.tf32 = tf32;
  call.extra = extra_memory(extra, device);
  dispatch(parse_dtype(dtype), [&](auto tag) {
    using T = decltype(tag);
    const T* pa = device_pointer<T>(a, device, "A");
    T *pu = device_pointer<T>(u, device, "U"), *ps = device_pointer<T>(s, device, "S"),
      *pv = device_pointer<T>(vh, device, "Vh");
    py::gil_scoped_release release;
    rsvd<T>(call, pa, b, rows, cols, p, pu, ps, pv);
    return 0;
  });
}

std::size_t svd_workspace_py(const std::string& dtype, int device, std::size_t batch, std::size_t m, std::size_t n) {
  const std::size_t b = positive(batch, "batch"), rows = positive(m, "m"), cols = positive(n, "n");
  const Call call = sizing_call(device);
  return dispatch(parse_dtype(dtype), [&](auto tag) { return svd_workspace<decltype(tag)>(call, b, rows, cols); });
}

void svd_py(const std::string& dtype, int device, std::uintptr_t stream, std::uintptr_t workspace,
            std::size_t workspace_bytes, std::uintptr_t a, std::size_t batch, std::size_t m, std::size_t n,
            std::uintptr_t u, std::uintptr_t s, std::uintptr_t vh) {
  const std::size_t b = positive(batch, "batch"), rows = positive(m, "m"), cols = positive(n, "n");
  const Call call = make_call(device, stream, workspace, workspace_bytes);
  dispatch(parse_dtype(dtype), [&](auto tag) {
    using T = decltype(tag);
    const T* pa = device_pointer<T>(a, device, "A");
    T *pu = device_pointer<T>(u, device, "U"), *ps = device_pointer<T>(s, device, "S"),
      *pv = device_pointer<T>(vh, device, "Vh");
    py::gil_scoped_release release;
    svd<T>(call, pa, b, rows, cols, pu, ps, pv);
    return 0;
  });
}

// The svd's argument convention, without U and Vh.
std::size_t svdvals_workspace_py(const std::string& dtype, int device, std::size_t batch, std::size_t m,
                                 std::size_t n) {
  const std::size_t b = positive(batch, "batch"), rows = positive(m, "m"), cols = positive(n, "n");
  const Call call = sizing_call(device);
  return dispatch(parse_dtype(dtype),
                  [&](auto tag) { return svdvals_workspace<decltype(tag)>(call, b, rows, cols); });
}

void svdvals_py(const std::string& dtype, int device, std::uintptr_t stream, std::uintptr_t workspace,
                std::size_t workspace_bytes, std::uintptr_t a, std::size_t batch, std::size_t m, std::size_t n,
                std::uintptr_t s) {
  const std::size_t b = positive(batch, "batch"), rows = positive(m, "m"), cols = positive(n, "n");
  const Call call = make_call(device, stream, workspace, workspace_bytes);
  dispatch(parse_dtype(dtype), [&](auto tag) {
    using T = decltype(tag);
    const T* pa = device_pointer<T>(a, device, "A");
    T* ps = device_pointer<T>(s, device, "S");
    py::gil_scoped_release release;
    svdvals<T>(call, pa, b, rows, cols, ps);
    return 0;
  });
}

std::size_t pinv_workspace_py(const std::string& dtype, int device, std::size_t batch, std::size_t m, std::size_t n) {
  const std::size_t b = positive(batch, "batch"), rows = positive(m, "m"), cols = positive(n, "n");
  const Call call = sizing_call(device);
  return dispatch(parse_dtype(dtype), [&](auto tag) { return pinv_workspace<decltype(tag)>(call, b, rows, cols); });
}

void pinv_py(const std::string& dtype, int device, std::uintptr_t stream, std::uintptr_t workspace,
             std::size_t workspace_bytes, std::uintptr_t a, std::size_t batch, std::size_t m, std::size_t n,
             std::optional<double> rtol, std::optional<double> atol, bool transposed, std::uintptr_t out,
             std::uintptr_t ranks, std::uintptr_t vh) {
  const std::size_t b = positive(batch, "batch"), rows = positive(m, "m"), cols = positive(n, "n");
  const Call call = make_call(device, stream, workspace, workspace_bytes);
  auto* pr = device_pointer<std::int64_t>(ranks, device, "ranks");
  dispatch(parse_dtype(dtype), [&](auto tag) {
    using T = decltype(tag);
    const T* pa = device_pointer<T>(a, device, "A");
    T* po = device_pointer<T>(out, device, "out");
    T* pv = vh ? device_pointer<T>(vh, device, "Vh") : nullptr;
    py::gil_scoped_release release;
    pinv<T>(call, pa, b, rows, cols, rtol, atol, transposed, po, pr, pv);
    return 0;
  });
}

std::size_t project_workspace_py(const std::string& dtype, int device, std::size_t rows, std::size_t n,
                                 std::size_t r) {
  const std::size_t nr = positive(rows, "rows"), nn = positive(n, "n"), rank = r;
  const Call call = sizing_call(device);
  return dispatch(parse_dtype(dtype), [&](auto tag) { return project_workspace<decltype(tag)>(call, nr, nn, rank); });
}

void project_py(const std::string& dtype, int device, std::uintptr_t stream, std::uintptr_t workspace,
                std::size_t workspace_bytes, std::uintptr_t x, std::size_t rows, std::size_t n, std::uintptr_t basis,
                std::size_t r, std::uintptr_t signal, std::uintptr_t residual) {
  const std::size_t nr = positive(rows, "rows"), nn = positive(n, "n"), rank = r;
  const Call call = make_call(device, stream, workspace, workspace_bytes);
  dispatch(parse_dtype(dtype), [&](auto tag) {
    using T = decltype(tag);
    const T* px = device_pointer<T>(x, device, "X");
    const T* pb = rank ? device_pointer<T>(basis, device, "basis") : nullptr;
    T *ps = device_pointer<T>(signal, device, "signal"), *pr = device_pointer<T>(residual, device, "residual");
    py::gil_scoped_release release;
    project<T>(call, px, nr, nn, pb, rank, ps, pr);
    return 0;
  });
}

// A chain layer from Python: (m, n, weight, bias or 0, pinv_t or 0, signal_rows or 0, rank,
// activation, parameter). pinv_t and signal_rows are needed for reconstruct only.
using LayerTuple = std::tuple<std::size_t, std::size_t, std::uintptr_t, std::uintptr_t, std::uintptr_t,
                              std::uintptr_t, std::size_t, std::string, double>;

template <class T>
std::vector<Layer<T>> make_layers(const std::vector<LayerTuple>& tuples, int device, bool with_factors) {
  std::vector<Layer<T>> layers;
  for (std::size_t i = 0; i < tuples.size(); ++i) {
    const auto& [m, n, weight, bias, pinv_t, signal_rows, rank, act, param] = tuples[i];
    const std::string name = "layers[" + std::to_string(i) + "]";
    Layer<T> L;
    L.m = positive(m, (name + ".m").c_str());
    L.n = positive(n, (name + ".n").c_str());
    L.weight = device_pointer<T>(weight, device, name + ".weight");
    L.bias = bias ? device_pointer<T>(bias, device, name + ".bias") : nullptr;
    L.rank = rank;
    if (with_factors) {
      L.pinv_t = device_pointer<T>(pinv_t, device, name + ".pinv_t");
      if (L.rank) L.signal_rows = device_pointer<T>(signal_rows, device, name + ".signal_rows");
    }
    L.activation = vsfast::Activation::make(act, param);
    layers.push_back(L);
  }
  vsfast::require_chained(layers);
  return layers;
}

std::size_t reconstruct_workspace_py(const std::string& dtype, int device, const std::vector<LayerTuple>& layers,
                                     std::size_t rows, std::size_t ref_rows, bool every_layer) {
  const std::size_t nr = positive(rows, "rows"), nref = ref_rows;
  const Call call = sizing_call(device);
  return dispatch(parse_dtype(dtype), [&](auto tag) {
    using T = decltype(tag);
    return reconstruct_workspace<T>(call, make_layers<T>(layers, device, false), nr, nref, every_layer);
  });
}

std::vector<std::size_t> reconstruct_py(const std::string& dtype, int device, std::uintptr_t stream,
                                        std::uintptr_t workspace, std::size_t workspace_bytes,
                                        const std::vector<LayerTuple>& layers, std::uintptr_t y, std::size_t rows,
                                        std::uintptr_t reference, std::size_t ref_rows, bool every_layer,
                                        std::uintptr_t x) {
  const std::size_t nr = positive(rows, "rows"), nref = reference ? ref_rows : 0;
  if (reference) vsfast::require_reference_rows(nref, nr);
  const Call call = make_call(device, stream, workspace, workspace_bytes);
  return dispatch(parse_dtype(dtype), [&](auto tag) {
    using T = decltype(tag);
    const auto specs = make_layers<T>(layers, device, true);
    const T* py_ = device_pointer<T>(y, device, "Y");
    const T* pref = nref ? device_pointer<T>(reference, device, "reference") : nullptr;
    T* px = device_pointer<T>(x, device, "X");
    py::gil_scoped_release release;
    return reconstruct<T>(call, specs, py_, nr, pref, nref, every_layer, px);
  });
}

std::size_t forward_workspace_py(const std::string& dtype, int device, const std::vector<LayerTuple>& layers,
                                 std::size_t rows) {
  const std::size_t nr = positive(rows, "rows");
  const Call call = sizing_call(device);
  return dispatch(parse_dtype(dtype), [&](auto tag) {
    using T = decltype(tag);
    return forward_workspace<T>(call, make_layers<T>(layers, device, false), nr);
  });
}

void forward_py(const std::string& dtype, int device, std::uintptr_t stream, std::uintptr_t workspace,
                std::size_t workspace_bytes, const std::vector<LayerTuple>& layers, std::uintptr_t x,
                std::size_t rows, std::uintptr_t y) {
  const std::size_t nr = positive(rows, "rows");
  const Call call = make_call(device, stream, workspace, workspace_bytes);
  dispatch(parse_dtype(dtype), [&](auto tag) {
    using T = decltype(tag);
    const auto specs = make_layers<T>(layers, device, false);
    const T* px = device_pointer<T>(x, device, "X");
    T* py_ = device_pointer<T>(y, device, "Y");
    py::gil_scoped_release release;
    forward<T>(call, specs, px, nr, py_);
    return 0;
  });
}

py::dict build_info_py() {
  const BuildInfo info = build_info();
  py::dict out;
  out["cuda_runtime_built"] = info.cuda_runtime_built;
  out["cuda_runtime"] = info.cuda_runtime;
  out["cuda_driver"] = info.cuda_driver;
  out["nvcc"] = info.nvcc;
  out["architectures"] = info.architectures;
  out["cublas_built"] = info.cublas_built;
  out["cublas"] = info.cublas;
  out["cusolver_built"] = info.cusolver_built;
  out["cusolver"] = info.cusolver;
  out["device_count"] = device_count();
  return out;
}

}  // namespace

PYBIND11_MODULE(_cuda, m) {
  m.doc() = "vsfast's GPU kernels (cuBLAS, cuSOLVER). Use the vsfast package, which passes torch CUDA tensors and "
            "CuPy arrays here by device pointer.";
  py::register_exception<CudaError>(m, "CudaError", PyExc_RuntimeError);
  // A subclass of the CPU core's LinAlgError (itself numpy.linalg.LinAlgError's), so that callers
  // catch one exception whatever the device; local to this module, as the CPU core's is to it.
  const py::object core_error = py::module_::import("vsfast._core").attr("LinAlgError");
  py::register_local_exception<vsfast::LinAlgError>(m, "LinAlgError", core_error);

  m.def("device_count", &device_count, "CUDA devices usable by this process (0 without a driver).");
  m.def("unavailable_reason", &unavailable_reason, "Why no CUDA device is usable, or ''.");
  m.def("_set_jacobi_max_sweeps", &set_jacobi_max_sweeps, py::arg("sweeps"),
        "For tests: the sweep limit of the Jacobi SVDs (default 100); a low one makes them give up, so that the "
        "QR-iteration fallback runs.");
  m.def("device_name", [](int device) { return device_name(check_device(device)); }, py::arg("device"));
  m.def("build_info", &build_info_py,
        "How this module was built (CUDA runtime, nvcc, architectures, cuBLAS/cuSOLVER) and what it runs with.");

  m.def("rsvd_workspace", &rsvd_workspace_py, py::arg("dtype"), py::arg("device"), py::arg("batch"), py::arg("m"),
        py::arg("n"), py::arg("k"), py::arg("oversample"), py::arg("power_iters"));
  m.def("rsvd", &rsvd_py, py::arg("dtype"), py::arg("device"), py::arg("stream"), py::arg("workspace"),
        py::arg("workspace_bytes"), py::arg("A"), py::arg("batch"), py::arg("m"), py::arg("n"), py::arg("k"),
        py::arg("oversample"), py::arg("power_iters"), py::arg("seed"), py::arg("tf32"), py::arg("U"), py::arg("S"),
        py::arg("Vh"), py::arg("extra") = py::none());
  m.def("svd_workspace", &svd_workspace_py, py::arg("dtype"), py::arg("device"), py::arg("batch"), py::arg("m"),
        py::arg("n"));
  m.def("svd", &svd_py, py::arg("dtype"), py::arg("device"), py::arg("stream"), py::arg("workspace"),
        py::arg("workspace_bytes"), py::arg("A"), py::arg("batch"), py::arg("m"), py::arg("n"), py::arg("U"),
        py::arg("S"), py::arg("Vh"));
  m.def("svdvals_workspace", &svdvals_workspace_py, py::arg("dtype"), py::arg("device"), py::arg("batch"),
        py::arg("m"), py::arg("n"));
  m.def("svdvals", &svdvals_py, py::arg("dtype"), py::arg("device"), py::arg("stream"), py::arg("workspace"),
        py::arg("workspace_bytes"), py::arg("A"), py::arg("batch"), py::arg("m"), py::arg("n"), py::arg("S"));
  m.def("pinv_workspace", &pinv_workspace_py, py::arg("dtype"), py::arg("device"), py::arg("batch"), py::arg("m"),
        py::arg("n"));
  m.def("pinv", &pinv_py, py::arg("dtype"), py::arg("device"), py::arg("stream"), py::arg("workspace"),
        py::arg("workspace_bytes"), py::arg("A"), py::arg("batch"), py::arg("m"), py::arg("n"), py::arg("rtol"),
        py::arg("atol"), py::arg("transposed"), py::arg("out"), py::arg("ranks"), py::arg("Vh") = 0);
  m.def("project_workspace", &project_workspace_py, py::arg("dtype"), py::arg("device"), py::arg("rows"),
        py::arg("n"), py::arg("r"));
  m.def("project", &project_py, py::arg("dtype"), py::arg("device"), py::arg("stream"), py::arg("workspace"),
        py::arg("workspace_bytes"), py::arg("X"), py::arg("rows"), py::arg("n"), py::arg("basis"), py::arg("r"),
        py::arg("signal"), py::arg("residual"));
  m.def("reconstruct_workspace", &reconstruct_workspace_py, py::arg("dtype"), py::arg("device"), py::arg("layers"),
        py::arg("rows"), py::arg("ref_rows"), py::arg("every_layer"));
  m.def("reconstruct", &reconstruct_py, py::arg("dtype"), py::arg("device"), py::arg("stream"), py::arg("workspace"),
        py::arg("workspace_bytes"), py::arg("layers"), py::arg("Y"), py::arg("rows"), py::arg("reference"),
        py::arg("ref_rows"), py::arg("every_layer"), py::arg("X"));
  m.def("forward_workspace", &forward_workspace_py, py::arg("dtype"), py::arg("device"), py::arg("layers"),
        py::arg("rows"));
  m.def("forward", &forward_py, py::arg("dtype"), py::arg("device"), py::arg("stream"), py::arg("workspace"),
        py::arg("workspace_bytes"), py::arg("layers"), py::arg("X"), py::arg("rows"), py::arg("Y"));
}
