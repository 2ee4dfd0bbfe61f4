// vsfast._core: the CPU kernels for Python. This file only checks arguments, allocates outputs
// and releases the GIL; the numerics live in csrc/vsfast/.
#include <pybind11/numpy.h>
#include <pybind11/pybind11.h>
#include <pybind11/stl.h>

#include "vsfast/chain.hpp"
#include "vsfast/newton.hpp"
#include "vsfast/parallel.hpp"
#include "vsfast/project.hpp"
#include "vsfast/range.hpp"
#include "vsfast/rsvd.hpp"
#include "vsfast/svd.hpp"

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <mutex>
#include <optional>
#include <string>
#include <tuple>
#include <type_traits>
#include <vector>

namespace py = pybind11;
using namespace vsfast;

namespace {

// ---------------------------------------------------------------------------------------------
// Argument checks. The Python layer has already converted what it could; these refuse anything
// that would make a kernel read out of bounds or compute garbage.

std::string shape_str(const py::array& a) {
  std::string s = "(";
  for (py::ssize_t i = 0; i < a.ndim(); ++i) s += (i ? ", " : "") + std::to_string(a.shape(i));
  return s + (a.ndim() == 1 ? ",)" : ")");
}

// numpy's dtype equivalence (native byte order), not object identity.
template <class T>
bool has_dtype(const py::array& a) {
  return py::isinstance<py::array_t<T>>(a);
}
bool is_f32(const py::array& a) { return has_dtype<float>(a); }
bool is_f64(const py::array& a) { return has_dtype<double>(a); }

void require_layout(const py::array& a, const char* name) {
  if (!is_f32(a) && !is_f64(a))
    throw py::type_error(std::string(name) + ": expected a float32 or float64 array, got dtype " +
                         py::str(a.dtype()).cast<std::string>());
  if (!(a.flags() & py::array::c_style))
    throw std::invalid_argument(std::string(name) + ": expected a C-contiguous array");
}

// A matrix (2-D) or a batch of matrices (3-D), every dimension non-empty.
struct MatrixShape {
  bool batched;
  std::size_t batch, rows, cols;
};

MatrixShape matrix_shape(const py::array& a, const char* name, bool allow_batch) {
  require_layout(a, name);
  const bool batched = a.ndim() == 3;
  if (a.ndim() != 2 && !(allow_batch && batched))
    throw std::invalid_argument(std::string(name) + ": expected a " + (allow_batch ? "2-D or 3-D" : "2-D") +
                                " array, got shape " + shape_str(a));
  for (py::ssize_t i = 0; i < a.ndim(); ++i)
    if (a.shape(i) == 0)
      throw std::invalid_argument(std::string(name) + ": expected non-empty dimensions, got shape " + shape_str(a));
  const auto dim = [&](int i) { return static_cast<std::size_t>(a.shape(i)); };
  return batched ? MatrixShape{true, dim(0), dim(1), dim(2)} : MatrixShape{false, 1, dim(0), dim(1)};
}

// One pass over the data, in parallel for large arrays (called with the GIL released): refuses
// NaN and inf, naming the argument, and returns the largest magnitude.
template <class T>
double require_finite(const T* p, std::size_t count, const char* name) {
  std::mutex mutex;
  double largest = 0;
  parallel_rows(count, 1, [&](std::size_t begin, std::size_t end) {
    const double block = max_abs(p + begin, end - begin);
    std::lock_guard<std::mutex> lock(mutex);
    largest = std::isnan(block) || std::isnan(largest) ? block : std::max(largest, block);
  });
  if (std::isnan(largest))
    throw std::invalid_argument(std::string(name) + ": expected finite values, found NaN or inf");
  return largest;
}

// The largest magnitude of each of `batch` consecutive matrices of `size` values, refusing NaN
// and inf as require_finite does.
template <class T>
std::vector<double> require_finite_matrices(const T* p, std::size_t batch, std::size_t size, const char* name) {
  if (batch == 1) return {require_finite(p, size, name)};
  std::vector<double> largest(batch);
  parallel_for(batch, batch_workers(batch), [&](std::size_t b) { largest[b] = max_abs(p + b * size, size); });
  if (std::any_of(largest.begin(), largest.end(), [](double v) { return std::isnan(v); }))
    throw std::invalid_argument(std::string(name) + ": expected finite values, found NaN or inf");
  return largest;
}

// A result that does not fit the dtype (singular values or a pseudoinverse beyond its largest
// number) is an OverflowError, never inf or NaN handed back.
template <class T>
void require_representable(const T* p, std::size_t count, const char* what) {
  if (std::isnan(max_abs(p, count))) throw std::overflow_error(overflow_message<T>(what));
}

template <class T>
const T* cdata(const py::array& a) {
  return static_cast<const T*>(a.data());
}

template <class T>
py::array_t<T> empty_array(std::vector<py::ssize_t> shape) {
  return py::array_t<T>(std::move(shape));
}

// Shape of a per-matrix result with or without the batch axis.
std::vector<py::ssize_t> with_batch(const MatrixShape& s, std::vector<py::ssize_t> dims) {
  if (s.batched) dims.insert(dims.begin(), static_cast<py::ssize_t>(s.batch));
  return dims;
}

template <class F>
py::object dispatch(const py::array& a, F&& f) {
  if (is_f32(a)) return f(float{});
  return f(double{});  // require_layout admits only float32 and float64
}

std::optional<double> check_tolerance(std::optional<double> value, const char* name) {
  if (value && !(std::isfinite(*value) && *value >= 0))
    throw std::invalid_argument(std::string(name) + ": expected a finite number >= 0, got " + std::to_string(*value));
  return value;
}

// ---------------------------------------------------------------------------------------------
// Kernels.

py::object svd(const py::array& a) {
  const MatrixShape s = matrix_shape(a, "A", true);
  return dispatch(a, [&](auto tag) -> py::object {
    using T = decltype(tag);
    const std::size_t q = std::min(s.rows, s.cols);
    auto u = empty_array<T>(with_batch(s, {py::ssize_t(s.rows), py::ssize_t(q)}));
    auto sv = empty_array<T>(with_batch(s, {py::ssize_t(q)}));
    auto vh = empty_array<T>(with_batch(s, {py::ssize_t(q), py::ssize_t(s.cols)}));
    const T* in = cdata<T>(a);
    T *pu = u.mutable_data(), *ps = sv.mutable_data(), *pv = vh.mutable_data();
    {
      py::gil_scoped_release release;
      require_finite(in, s.batch * s.rows * s.cols, "A");
      parallel_for(s.batch, batch_workers(s.batch), [&](std::size_t b) {
        std::vector<T> work;
        svd_rowmajor(in + b * s.rows * s.cols, s.rows, s.cols, pu + b * s.rows * q, ps + b * q,
                     pv + b * q * s.cols, work);
      });
      require_representable(ps, s.batch * q, "A's largest singular value");
    }
    return py::make_tuple(u, sv, vh);
  });
}

py::object rsvd(const py::array& a, long long k, long long oversample, long long power_iters, std::uint64_t seed) {
  const MatrixShape s = matrix_shape(a, "A", true);
  const std::size_t q = std::min(s.rows, s.cols);
  if (k < 1 || static_cast<std::size_t>(k) > q)
    throw std::invalid_argument("k: expected 1 <= k <= min(m, n) = " + std::to_string(q) + ", got " +
                                std::to_string(k));
  if (oversample < 0) throw std::invalid_argument("oversample: expected >= 0, got " + std::to_string(oversample));
  if (power_iters < 0)
    throw std::invalid_argument("power_iters: expected >= 0, got " + std::to_string(power_iters));
  RsvdParams params{static_cast<std::size_t>(k), static_cast<std::size_t>(oversample),
                    static_cast<std::size_t>(power_iters), seed};
  return dispatch(a, [&](auto tag) -> py::object {
    using T = decltype(tag);
    auto u = empty_array<T>(with_batch(s, {py::ssize_t(s.rows), py::ssize_t(k)}));
    auto sv = empty_array<T>(with_batch(s, {py::ssize_t(k)}));
    auto vh = empty_array<T>(with_batch(s, {py::ssize_t(k), py::ssize_t(s.cols)}));
    const T* in = cdata<T>(a);
    T *pu = u.mutable_data(), *ps = sv.mutable_data(), *pv = vh.mutable_data();
    {
      py::gil_scoped_release release;
      const std::vector<double> largest = require_finite_matrices(in, s.batch, s.rows * s.cols, "A");
      const std::vector<T> omega = gaussian_sketch<T>(s.rows, s.cols, params);
      parallel_for(s.batch, batch_workers(s.batch), [&](std::size_t b) {
        with_thread_workspace<T>([&](RsvdWorkspace<T>& ws) {
          rsvd_scaled_rowmajor(in + b * s.rows * s.cols, s.rows, s.cols, largest[b], params, omega.data(),
                               pu + b * s.rows * params.k, ps + b * params.k, pv + b * params.k * s.cols, ws);
        });
      });
      require_representable(ps, s.batch * params.k, "A's largest singular value");
    }
    return py::make_tuple(u, sv, vh);
  });
}

// Rank of each row of singular values s (1-D, or 2-D for a batch) of m x n matrices.
py::array_t<std::int64_t> rank(const py::array& s, std::size_t m, std::size_t n, std::optional<double> rtol,
                               std::optional<double> atol) {
  require_layout(s, "S");
  if (s.ndim() != 1 && s.ndim() != 2)
    throw std::invalid_argument("S: expected a 1-D or 2-D array, got shape " + shape_str(s));
  check_tolerance(rtol, "rtol");
  check_tolerance(atol, "atol");
  const std::size_t batch = s.ndim() == 2 ? s.shape(0) : 1, len = s.shape(s.ndim() - 1);
  py::array_t<std::int64_t> out(s.ndim() == 2 ? std::vector<py::ssize_t>{py::ssize_t(batch)}
                                                : std::vector<py::ssize_t>{});
  auto* po = out.mutable_data();
  dispatch(s, [&](auto tag) -> py::object {
    using T = decltype(tag);
    for (std::size_t b = 0; b < batch; ++b)
      po[b] = static_cast<std::int64_t>(rank_of(cdata<T>(s) + b * len, len, m, n, rtol, atol));
    return py::none();
  });
  return out;
}

// Orthonormal rows spanning the complement of the given orthonormal rows (r x n, or a batch).
py::object complement(const py::array& rows, std::size_t n) {
  require_layout(rows, "basis");
  if (rows.ndim() != 2 && rows.ndim() != 3)
    throw std::invalid_argument("basis: expected a 2-D or 3-D array, got shape " + shape_str(rows));
  const bool batched = rows.ndim() == 3;
  const std::size_t batch = batched ? rows.shape(0) : 1, r = rows.shape(rows.ndim() - 2);
  if (static_cast<std::size_t>(rows.shape(rows.ndim() - 1)) != n || r > n)
    throw std::invalid_argument("basis: expected r x " + std::to_string(n) + " rows with r <= " + std::to_string(n) +
                                ", got shape " + shape_str(rows));
  return dispatch(rows, [&](auto tag) -> py::object {
    using T = decltype(tag);
    std::vector<py::ssize_t> shape{py::ssize_t(n - r), py::ssize_t(n)};
    if (batched) shape.insert(shape.begin(), py::ssize_t(batch));
    auto out = empty_array<T>(shape);
    const T* in = cdata<T>(rows);
    T* po = out.mutable_data();
    {
      py::gil_scoped_release release;
      parallel_for(batch, batch_workers(batch), [&](std::size_t b) {
        std::vector<T> work, tau;
        complement_rowmajor(in + b * r * n, r, n, po + b * (n - r) * n, work, tau);
      });
    }
    return out;
  });
}

py::object project(const py::array& x, const py::array& basis) {
  const MatrixShape xs = matrix_shape(x, "X", false);
  require_layout(basis, "basis");
  if (basis.ndim() != 2 || static_cast<std::size_t>(basis.shape(1)) != xs.cols)
    throw std::invalid_argument("basis: expected r x " + std::to_string(xs.cols) + " orthonormal rows, got shape " +
                                shape_str(basis));
  if (is_f32(basis) != is_f32(x))
    throw py::type_error("basis: expected the dtype of X, " + py::str(x.dtype()).cast<std::string>() + ", got " +
                         py::str(basis.dtype()).cast<std::string>());
  const std::size_t r = basis.shape(0);
  return dispatch(x, [&](auto tag) -> py::object {
    using T = decltype(tag);
    auto signal = empty_array<T>({py::ssize_t(xs.rows), py::ssize_t(xs.cols)});
    auto residual = empty_array<T>({py::ssize_t(xs.rows), py::ssize_t(xs.cols)});
    const T *px = cdata<T>(x), *pb = cdata<T>(basis);
    T *ps = signal.mutable_data(), *pr = residual.mutable_data();
    {
      py::gil_scoped_release release;
      const double x_max = require_finite(px, xs.rows * xs.cols, "X");
      const double b_max = require_finite(pb, r * xs.cols, "basis");
      project_rowmajor(px, xs.rows, xs.cols, pb, r, ps, pr);
      // |X B^T B| <= r n max|X| max|B|^2 elementwise: only inputs near the dtype's limit can overflow.
      if (2.0 * r * xs.cols * x_max * b_max * b_max > std::numeric_limits<T>::max()) {
        require_representable(ps, xs.rows * xs.cols, "the signal part");
        require_representable(pr, xs.rows * xs.cols, "the residual part");
      }
    }
    return py::make_tuple(signal, residual);
  });
}

py::object pinv(const py::array& a, std::optional<double> rtol, std::optional<double> atol) {
  const MatrixShape s = matrix_shape(a, "A", true);
  check_tolerance(rtol, "rtol");
  check_tolerance(atol, "atol");
  return dispatch(a, [&](auto tag) -> py::object {
    using T = decltype(tag);
    auto out = empty_array<T>(with_batch(s, {py::ssize_t(s.cols), py::ssize_t(s.rows)}));
    py::array_t<std::int64_t> ranks(with_batch(s, {}));
    const T* in = cdata<T>(a);
    T* po = out.mutable_data();
    std::int64_t* pr = ranks.mutable_data();
    {
      py::gil_scoped_release release;
      require_finite(in, s.batch * s.rows * s.cols, "A");
      parallel_for(s.batch, batch_workers(s.batch), [&](std::size_t b) {
        const auto f = pinv_factors(in + b * s.rows * s.cols, s.rows, s.cols, rtol, atol);
        pinv_from_factors(f, s.rows, s.cols, /*transposed=*/false, po + b * s.rows * s.cols);
        pr[b] = static_cast<std::int64_t>(f.rank);
      });
      require_representable(po, s.batch * s.rows * s.cols, "the pseudoinverse");
    }
    return py::make_tuple(out, ranks);
  });
}

// ---------------------------------------------------------------------------------------------
// The chain: one class per dtype; the Python layer picks the one matching its arrays.

template <class T>
LayerSpec<T> layer_spec(std::size_t index, const py::array& w, const py::object& b, const std::string& act,
                        double param) {
  const std::string wname = "layers[" + std::to_string(index) + "].weight";
  const MatrixShape s = matrix_shape(w, wname.c_str(), false);
  if (!has_dtype<T>(w))
    throw py::type_error(wname + ": expected dtype " + py::str(py::dtype::of<T>()).cast<std::string>());
  LayerSpec<T> spec;
  spec.m = s.rows;
  spec.n = s.cols;
  spec.weight.assign(cdata<T>(w), cdata<T>(w) + s.rows * s.cols);
  require_finite(spec.weight.data(), spec.weight.size(), wname.c_str());
  if (!b.is_none()) {
    const std::string bname = "layers[" + std::to_string(index) + "].bias";
    const auto bias = b.cast<py::array>();
    require_layout(bias, bname.c_str());
    if (!has_dtype<T>(bias) || bias.ndim() != 1 || static_cast<std::size_t>(bias.shape(0)) != s.rows)
      throw std::invalid_argument(bname + ": expected " + std::to_string(s.rows) + " values of the weight's dtype, got shape " +
                                  shape_str(bias));
    spec.bias.assign(cdata<T>(bias), cdata<T>(bias) + s.rows);
    require_finite(spec.bias.data(), spec.bias.size(), bname.c_str());
  }
  spec.activation = Activation::make(act, param);
  return spec;
}

// A 2-D array of the chain's dtype with `width` columns (`what`: the chain's input or output size).
template <class T>
MatrixShape chain_rows(const py::array& a, const char* name, std::size_t width, const char* what) {
  const MatrixShape s = matrix_shape(a, name, false);
  if (!has_dtype<T>(a)) throw py::type_error(std::string(name) + ": expected the chain's dtype");
  if (s.cols != width)
    throw std::invalid_argument(std::string(name) + ": expected " + std::to_string(width) + " columns (" + what +
                                "), got shape " + shape_str(a));
  return s;
}

// A chain's optional reference inputs: none, one row, or one per target.
template <class T>
struct ChainReference {
  py::array array;  // keeps the data alive
  const T* data = nullptr;
  std::size_t rows = 0;
};

template <class T>
ChainReference<T> chain_reference(const py::object& reference, std::size_t targets, std::size_t width) {
  ChainReference<T> r;
  if (reference.is_none()) return r;
  r.array = reference.cast<py::array>();
  const MatrixShape s = matrix_shape(r.array, "reference", false);
  if (!has_dtype<T>(r.array)) throw py::type_error("reference: expected the chain's dtype");
  if (s.cols != width || (s.rows != 1 && s.rows != targets))
    throw std::invalid_argument("reference: expected 1 or " + std::to_string(targets) + " rows of " +
                                std::to_string(width) + " values, got shape " + shape_str(r.array));
  r.data = cdata<T>(r.array);
  r.rows = s.rows;
  return r;
}

template <class T>
void bind_chain(py::module_& m, const char* name) {
  using C = Chain<T>;
  py::class_<C>(m, name)
      .def(py::init([](const std::vector<std::tuple<py::array, py::object, std::string, double>>& layers,
                       std::optional<double> rtol, std::optional<double> atol) {
             std::vector<LayerSpec<T>> specs;
             for (std::size_t i = 0; i < layers.size(); ++i) {
               const auto& [w, b, act, param] = layers[i];
               specs.push_back(layer_spec<T>(i, w, b, act, param));
             }
             check_tolerance(rtol, "rtol");
             check_tolerance(atol, "atol");
             py::gil_scoped_release release;
             return new C(std::move(specs), rtol, atol);
           }),
           py::arg("layers"), py::arg("rtol") = py::none(), py::arg("atol") = py::none())
      .def_property_readonly("depth", &C::depth)
      .def_property_readonly("input_dim", &C::input_dim)
      .def_property_readonly("output_dim", &C::output_dim)
      .def_property_readonly("ranks", &C::ranks)
      .def(
          "reconstruct",
          [](const C& chain, const py::array& y, const py::object& reference, bool every_layer) {
            const MatrixShape s = chain_rows<T>(y, "Y", chain.output_dim(), "the chain's output size");
            const ChainReference<T> ref = chain_reference<T>(reference, s.rows, chain.input_dim());
            auto x = empty_array<T>({py::ssize_t(s.rows), py::ssize_t(chain.input_dim())});
            std::vector<std::size_t> clamped;
            const T* py_ = cdata<T>(y);
            T* px = x.mutable_data();
            {
              py::gil_scoped_release release;
              require_finite(py_, s.rows * s.cols, "Y");
              if (ref.data) require_finite(ref.data, ref.rows * chain.input_dim(), "reference");
              chain.reconstruct(py_, s.rows, ref.data, ref.rows, every_layer, px, clamped);
              require_representable(px, s.rows * chain.input_dim(), "the reconstructed input");
            }
            return py::make_tuple(x, clamped);
          },
          py::arg("Y"), py::arg("reference") = py::none(), py::arg("every_layer") = false)
      .def(
          "solve",
          [](const C& chain, const py::array& y, const py::object& reference, bool from_reference, double tol,
             std::size_t max_iter) {
            const MatrixShape s = chain_rows<T>(y, "Y", chain.output_dim(), "the chain's output size");
            const ChainReference<T> ref = chain_reference<T>(reference, s.rows, chain.input_dim());
            if (!(tol >= 0) || !std::isfinite(tol))
              throw std::invalid_argument("tol: expected a finite number >= 0, got " + std::to_string(tol));
            auto x = empty_array<T>({py::ssize_t(s.rows), py::ssize_t(chain.input_dim())});
            auto steps = empty_array<std::int64_t>({py::ssize_t(s.rows)});
            auto error = empty_array<double>({py::ssize_t(s.rows)});
            const T* py_ = cdata<T>(y);
            T* px = x.mutable_data();
            std::int64_t* psteps = steps.mutable_data();
            double* perror = error.mutable_data();
            {
              py::gil_scoped_release release;
              require_finite(py_, s.rows * s.cols, "Y");
              if (ref.data) require_finite(ref.data, ref.rows * chain.input_dim(), "reference");
              solve_chain(chain, py_, s.rows, ref.data, ref.rows, from_reference, tol, max_iter, px, psteps, perror);
              require_representable(px, s.rows * chain.input_dim(), "the solved input");
              // Steps are taken only where the error drops: a non-finite one is the start's.
              if (!std::all_of(perror, perror + s.rows, [](double e) { return std::isfinite(e); }))
                throw std::overflow_error(overflow_message<T>("the chain's output at the start"));
            }
            return py::make_tuple(x, steps, error);
          },
          py::arg("Y"), py::arg("reference"), py::arg("from_reference"), py::arg("tol"), py::arg("max_iter"))
      .def(
          "forward",
          [](const C& chain, const py::array& x) {
            const MatrixShape s = chain_rows<T>(x, "X", chain.input_dim(), "the chain's input size");
            auto y = empty_array<T>({py::ssize_t(s.rows), py::ssize_t(chain.output_dim())});
            const T* px = cdata<T>(x);
            T* py_ = y.mutable_data();
            {
              py::gil_scoped_release release;
              require_finite(px, s.rows * s.cols, "X");
              chain.forward(px, s.rows, py_);
              require_representable(py_, s.rows * chain.output_dim(), "the chain's output");
            }
            return y;
          },
          py::arg("X"));
}

}  // namespace

PYBIND11_MODULE(_core, m) {
  m.doc() = "vsfast's CPU kernels (OpenBLAS). Use the vsfast package, which validates and converts inputs.";
  py::register_exception<LinAlgError>(m, "LinAlgError", PyExc_ValueError);

  m.def("svd", &svd, py::arg("A"));
  m.def("rsvd", &rsvd, py::arg("A"), py::arg("k"), py::arg("oversample"), py::arg("power_iters"), py::arg("seed"));
  m.def("rank", &rank, py::arg("S"), py::arg("m"), py::arg("n"), py::arg("rtol") = py::none(),
        py::arg("atol") = py::none());
  m.def("complement", &complement, py::arg("basis"), py::arg("n"));
  m.def("project", &project, py::arg("X"), py::arg("basis"));
  m.def("pinv", &pinv, py::arg("A"), py::arg("rtol") = py::none(), py::arg("atol") = py::none());
  init_threads();
  m.def("get_num_threads", &num_threads, "Threads vsfast's kernels use.");
  m.def("set_num_threads", &set_num_threads, py::arg("threads"),
        "Set the threads vsfast's kernels use; results do not depend on it.");
  bind_chain<float>(m, "ChainF32");
  bind_chain<double>(m, "ChainF64");
}

// The thread count as plain C symbols, so that threadpoolctl's controller for vsfast (see
// vsfast/config.py) finds this library among the loaded ones and sets its threads like any BLAS.
extern "C" {
__attribute__((visibility("default"))) int vsfast_get_num_threads() { return vsfast::num_threads(); }
__attribute__((visibility("default"))) void vsfast_set_num_threads(int n) { vsfast::set_num_threads(n < 1 ? 1 : n); }
}
