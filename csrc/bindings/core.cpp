// vsfast._core: the CPU kernels for Python. This file converts arrays, makes the checks memory
// safety needs (dtype, C-contiguity, shapes, k within bounds), allocates outputs, releases the
// GIL and dispatches on the dtype. The operations of csrc/vsfast/api.hpp do the rest, refusing
// NaN and inf in inputs and results beyond the dtype themselves; arguments that are wrong without
// being unsafe (tolerances, a negative tol) are the Python layer's to refuse (vsfast/_arrays.py).
#include <pybind11/numpy.h>
#include <pybind11/pybind11.h>
#include <pybind11/stl.h>

#include "vsfast/api.hpp"

#include <algorithm>
#include <cstdint>
#include <initializer_list>
#include <optional>
#include <string>
#include <tuple>
#include <vector>

namespace py = pybind11;

namespace {

// ---------------------------------------------------------------------------------------------
// Arrays: what the kernels may read and write.

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

void require_layout(const py::array& a, const std::string& name) {
  if (!is_f32(a) && !has_dtype<double>(a))
    throw py::type_error(name + ": expected a float32 or float64 array, got dtype " +
                         py::str(a.dtype()).cast<std::string>());
  if (!(a.flags() & py::array::c_style)) throw std::invalid_argument(name + ": expected a C-contiguous array");
  // numpy allows arrays whose data sit at any byte offset (one unpickled from a network buffer,
  // a view into raw bytes); reading them as float/double would be undefined behaviour.
  if (reinterpret_cast<std::uintptr_t>(a.data()) % static_cast<std::uintptr_t>(a.itemsize()) != 0)
    throw std::invalid_argument(name + ": expected an aligned array (its data start at an address that is not a "
                                "multiple of its item size); copy it first, e.g. numpy.require(a, requirements='CA')");
}

// A matrix (2-D) or a batch of matrices (3-D), every dimension non-empty.
struct MatrixShape {
  bool batched;
  std::size_t batch, rows, cols;
};

MatrixShape matrix_shape(const py::array& a, const std::string& name, bool allow_batch) {
  require_layout(a, name);
  const bool batched = a.ndim() == 3;
  if (a.ndim() != 2 && !(allow_batch && batched))
    throw std::invalid_argument(name + ": expected a " + (allow_batch ? "2-D or 3-D" : "2-D") + " array, got shape " +
                                shape_str(a));
  for (py::ssize_t i = 0; i < a.ndim(); ++i)
    if (a.shape(i) == 0)
      throw std::invalid_argument(name + ": expected non-empty dimensions, got shape " + shape_str(a));
  const auto dim = [&](int i) { return static_cast<std::size_t>(a.shape(i)); };
  return batched ? MatrixShape{true, dim(0), dim(1), dim(2)} : MatrixShape{false, 1, dim(0), dim(1)};
}

// A 2-D array of dtype T with `width` columns (`what`: whose size that is).
template <class T>
MatrixShape rows_of(const py::array& a, const std::string& name, std::size_t width, const char* what) {
  const MatrixShape s = matrix_shape(a, name, false);
  if (!has_dtype<T>(a))
    throw py::type_error(name + ": expected dtype " + vsfast::dtype_name<T>() + ", got " +
                         py::str(a.dtype()).cast<std::string>());
  if (s.cols != width)
    throw std::invalid_argument(name + ": expected " + std::to_string(width) + " columns (" + what + "), got shape " +
                                shape_str(a));
  return s;
}

template <class T>
const T* cdata(const py::array& a) {
  return static_cast<const T*>(a.data());
}

// Shape of a per-matrix result with or without the batch axis.
std::vector<py::ssize_t> with_batch(const MatrixShape& s, std::initializer_list<std::size_t> dims) {
  std::vector<py::ssize_t> shape;
  if (s.batched) shape.push_back(static_cast<py::ssize_t>(s.batch));
  for (std::size_t d : dims) shape.push_back(static_cast<py::ssize_t>(d));
  return shape;
}

template <class T>
py::array_t<T> empty_array(std::vector<py::ssize_t> shape) {
  return py::array_t<T>(std::move(shape));
}

template <class F>
py::object dispatch(const py::array& a, F&& f) {
  if (is_f32(a)) return f(float{});
  return f(double{});  // require_layout admits only float32 and float64
}

// ---------------------------------------------------------------------------------------------
// Operations.

py::object svd_py(const py::array& a) {
  const MatrixShape s = matrix_shape(a, "A", true);
  const std::size_t q = std::min(s.rows, s.cols);
  return dispatch(a, [&](auto tag) -> py::object {
    using T = decltype(tag);
    auto u = empty_array<T>(with_batch(s, {s.rows, q}));
    auto sv = empty_array<T>(with_batch(s, {q}));
    auto vh = empty_array<T>(with_batch(s, {q, s.cols}));
    T *pu = u.mutable_data(), *ps = sv.mutable_data(), *pv = vh.mutable_data();
    {
      py::gil_scoped_release release;
      vsfast::svd<T>(cdata<T>(a), s.batch, s.rows, s.cols, pu, ps, pv);
    }
    return py::make_tuple(u, sv, vh);
  });
}

py::object svdvals_py(const py::array& a) {
  const MatrixShape s = matrix_shape(a, "A", true);
  return dispatch(a, [&](auto tag) -> py::object {
    using T = decltype(tag);
    auto sv = empty_array<T>(with_batch(s, {std::min(s.rows, s.cols)}));
    T* ps = sv.mutable_data();
    {
      py::gil_scoped_release release;
      vsfast::svdvals<T>(cdata<T>(a), s.batch, s.rows, s.cols, ps);
    }
    return std::move(sv);
  });
}

py::object svdvals_gram_py(const py::array& a) {
  const MatrixShape s = matrix_shape(a, "A", true);
  if (!has_dtype<float>(a))
    throw py::type_error("A: expected dtype float32 (float64 input takes svdvals), got " +
                         py::str(a.dtype()).cast<std::string>());
  auto sv = empty_array<float>(with_batch(s, {std::min(s.rows, s.cols)}));
  float* ps = sv.mutable_data();
  {
    py::gil_scoped_release release;
    vsfast::svdvals_gram(cdata<float>(a), s.batch, s.rows, s.cols, ps);
  }
  return std::move(sv);
}

vsfast::RsvdMethod rsvd_method(const std::string& name) {
  if (name == "subspace") return vsfast::RsvdMethod::subspace;
  if (name == "krylov") return vsfast::RsvdMethod::krylov;
  throw std::invalid_argument("method: expected 'subspace' or 'krylov', got '" + name + "'");
}

vsfast::RsvdPrecision rsvd_precision(const std::string& name) {
  if (name == "full") return vsfast::RsvdPrecision::full;
  if (name == "auto") return vsfast::RsvdPrecision::automatic;
  if (name == "bfloat16") return vsfast::RsvdPrecision::bfloat16;
  throw std::invalid_argument("precision: expected 'full', 'auto' or 'bfloat16', got '" + name + "'");
}

// oversample and power_iters are unsigned: pybind11 refuses a negative one before it gets here.
py::object rsvd_py(const py::array& a, std::size_t k, std::size_t oversample, std::size_t power_iters,
                   std::uint64_t seed, const std::string& method, const std::string& precision, double tol) {
  const MatrixShape s = matrix_shape(a, "A", true);
  vsfast::require_k_in_range(k, s.rows, s.cols);
  const vsfast::RsvdParams params{k, oversample, power_iters, seed, rsvd_method(method), rsvd_precision(precision),
                                  tol};
  return dispatch(a, [&](auto tag) -> py::object {
    using T = decltype(tag);
    auto u = empty_array<T>(with_batch(s, {s.rows, k}));
    auto sv = empty_array<T>(with_batch(s, {k}));
    auto vh = empty_array<T>(with_batch(s, {k, s.cols}));
    T *pu = u.mutable_data(), *ps = sv.mutable_data(), *pv = vh.mutable_data();
    {
      py::gil_scoped_release release;
      vsfast::rsvd<T>(cdata<T>(a), s.batch, s.rows, s.cols, params, pu, ps, pv);
    }
    return py::make_tuple(u, sv, vh);
  });
}

// Rank of each row of singular values S (1-D, or 2-D for a batch) of m x n matrices.
py::array_t<std::int64_t> rank_py(const py::array& sv, std::size_t m, std::size_t n, std::optional<double> rtol,
                                  std::optional<double> atol) {
  require_layout(sv, "S");
  if (sv.ndim() != 1 && sv.ndim() != 2)
    throw std::invalid_argument("S: expected a 1-D or 2-D array, got shape " + shape_str(sv));
  const bool batched = sv.ndim() == 2;
  const std::size_t batch = batched ? sv.shape(0) : 1, count = sv.shape(sv.ndim() - 1);
  py::array_t<std::int64_t> out(batched ? std::vector<py::ssize_t>{py::ssize_t(batch)} : std::vector<py::ssize_t>{});
  std::int64_t* po = out.mutable_data();
  dispatch(sv, [&](auto tag) -> py::object {
    using T = decltype(tag);
    vsfast::rank<T>(cdata<T>(sv), batch, count, m, n, rtol, atol, po);
    return py::none();
  });
  return out;
}

// Orthonormal rows spanning the complement of the given orthonormal rows (r x n, or a batch).
py::object complement_py(const py::array& basis, std::size_t n) {
  require_layout(basis, "basis");
  if (basis.ndim() != 2 && basis.ndim() != 3)
    throw std::invalid_argument("basis: expected a 2-D or 3-D array, got shape " + shape_str(basis));
  const bool batched = basis.ndim() == 3;
  const std::size_t batch = batched ? basis.shape(0) : 1, r = basis.shape(basis.ndim() - 2);
  if (static_cast<std::size_t>(basis.shape(basis.ndim() - 1)) != n || r > n)
    throw std::invalid_argument("basis: expected r x " + std::to_string(n) + " rows with r <= " + std::to_string(n) +
                                ", got shape " + shape_str(basis));
  const MatrixShape s{batched, batch, n - r, n};
  return dispatch(basis, [&](auto tag) -> py::object {
    using T = decltype(tag);
    auto out = empty_array<T>(with_batch(s, {n - r, n}));
    T* po = out.mutable_data();
    {
      py::gil_scoped_release release;
      vsfast::complement<T>(cdata<T>(basis), batch, r, n, po);
    }
    return std::move(out);
  });
}

py::object project_py(const py::array& x, const py::array& basis) {
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
    auto signal = empty_array<T>(with_batch(xs, {xs.rows, xs.cols}));
    auto residual = empty_array<T>(with_batch(xs, {xs.rows, xs.cols}));
    T *ps = signal.mutable_data(), *pr = residual.mutable_data();
    {
      py::gil_scoped_release release;
      vsfast::project<T>(cdata<T>(x), xs.rows, xs.cols, cdata<T>(basis), r, ps, pr);
    }
    return py::make_tuple(signal, residual);
  });
}

py::object pinv_py(const py::array& a, std::optional<double> rtol, std::optional<double> atol) {
  const MatrixShape s = matrix_shape(a, "A", true);
  return dispatch(a, [&](auto tag) -> py::object {
    using T = decltype(tag);
    auto out = empty_array<T>(with_batch(s, {s.cols, s.rows}));
    py::array_t<std::int64_t> ranks(with_batch(s, {}));
    T* po = out.mutable_data();
    std::int64_t* pr = ranks.mutable_data();
    {
      py::gil_scoped_release release;
      vsfast::pinv<T>(cdata<T>(a), s.batch, s.rows, s.cols, rtol, atol, /*transposed=*/false, po, pr, nullptr);
    }
    return py::make_tuple(out, ranks);
  });
}

// ---------------------------------------------------------------------------------------------
// The block steps of a distributed rsvd (blocks.hpp). Tall and small matrices travel as their
// column-major storage: a rows x width matrix is a C-contiguous (width, rows) array.

// A 2-D array of the dtype of `like` (memory safety: the kernels read both as one type).
void require_same_dtype(const py::array& a, const std::string& name, const py::array& like, const char* like_name) {
  if (is_f32(a) != is_f32(like))
    throw py::type_error(name + ": expected the dtype of " + like_name + ", " +
                         py::str(like.dtype()).cast<std::string>() + ", got " + py::str(a.dtype()).cast<std::string>());
}

// A column-major (cols x width) matrix held as a (width, cols) array: its width.
std::size_t width_of(const py::array& a, const std::string& name, std::size_t cols, const char* what) {
  const MatrixShape s = matrix_shape(a, name, false);
  if (s.cols != cols)
    throw std::invalid_argument(name + ": expected a (width, " + std::to_string(cols) + ") array (" + what +
                                "), got shape " + shape_str(a));
  return s.rows;
}

py::object sketch_py(std::size_t m, std::size_t n, std::size_t k, std::size_t oversample, std::uint64_t seed,
                     const py::object& dtype) {
  vsfast::require_k_in_range(k, m, n);
  const vsfast::RsvdParams params{k, oversample, 0, seed};
  const std::size_t short_side = std::min(m, n), width = vsfast::sketch_width(m, n, params);
  const py::dtype dt = py::dtype::from_args(dtype);
  const auto draw = [&](auto tag) -> py::object {
    using T = decltype(tag);
    auto omega = empty_array<T>({py::ssize_t(width), py::ssize_t(short_side)});
    vsfast::sketch<T>(m, n, params, omega.mutable_data());
    return std::move(omega);
  };
  if (dt.equal(py::dtype::of<float>())) return draw(float{});
  if (dt.equal(py::dtype::of<double>())) return draw(double{});
  throw py::type_error("dtype: expected float32 or float64, got " + py::str(dt).cast<std::string>());
}

double block_largest_py(const py::array& a, const std::string& name) {
  require_layout(a, name);
  double largest = 0;
  dispatch(a, [&](auto tag) -> py::object {
    using T = decltype(tag);
    py::gil_scoped_release release;
    largest = vsfast::block_largest<T>(cdata<T>(a), static_cast<std::size_t>(a.size()), name);
    return py::none();
  });
  return largest;
}

int block_exponent_py(double largest, const py::object& dtype) {
  const py::dtype dt = py::dtype::from_args(dtype);
  if (dt.equal(py::dtype::of<float>())) return vsfast::block_exponent<float>(largest);
  if (dt.equal(py::dtype::of<double>())) return vsfast::block_exponent<double>(largest);
  throw py::type_error("dtype: expected float32 or float64, got " + py::str(dt).cast<std::string>());
}

// The block B (rows x cols) of M that `a` stores: a itself, or with `transposed` its transpose.
MatrixShape block_shape(const py::array& a, bool transposed) {
  MatrixShape s = matrix_shape(a, "A", false);
  if (transposed) std::swap(s.rows, s.cols);
  return s;
}

py::object block_range_py(const py::array& a, const py::array& z, bool transposed, int exponent) {
  const MatrixShape b = block_shape(a, transposed);
  const std::size_t width = width_of(z, "Z", b.cols, "the basis, cols x width, column-major");
  require_same_dtype(z, "Z", a, "A");
  return dispatch(a, [&](auto tag) -> py::object {
    using T = decltype(tag);
    auto y = empty_array<T>({py::ssize_t(width), py::ssize_t(b.rows)});
    auto gram = empty_array<T>({py::ssize_t(width), py::ssize_t(width)});
    T *py_ = y.mutable_data(), *pg = gram.mutable_data();
    {
      py::gil_scoped_release release;
      vsfast::block_range<T>(cdata<T>(a), b.rows, b.cols, transposed, cdata<T>(z), width, exponent, py_, pg);
    }
    return py::make_tuple(y, gram);
  });
}

py::object block_corange_py(const py::array& a, const py::array& y, bool transposed, int exponent) {
  const MatrixShape b = block_shape(a, transposed);
  const std::size_t width = width_of(y, "Y", b.rows, "rows x width, column-major");
  require_same_dtype(y, "Y", a, "A");
  return dispatch(a, [&](auto tag) -> py::object {
    using T = decltype(tag);
    auto p = empty_array<T>({py::ssize_t(width), py::ssize_t(b.cols)});
    T* pp = p.mutable_data();
    {
      py::gil_scoped_release release;
      vsfast::block_corange<T>(cdata<T>(a), b.rows, b.cols, transposed, cdata<T>(y), width, exponent, pp);
    }
    return std::move(p);
  });
}

// A square (n, n) array.
std::size_t square_of(const py::array& a, const std::string& name) {
  const MatrixShape s = matrix_shape(a, name, false);
  if (s.rows != s.cols) throw std::invalid_argument(name + ": expected a square array, got shape " + shape_str(a));
  return s.rows;
}

py::object cholesky_factor_py(const py::array& gram, bool near_identity) {
  const std::size_t n = square_of(gram, "G");
  return dispatch(gram, [&](auto tag) -> py::object {
    using T = decltype(tag);
    auto r = empty_array<T>({py::ssize_t(n), py::ssize_t(n)});
    T* pr = r.mutable_data();
    bool factored;
    {
      py::gil_scoped_release release;
      factored = vsfast::cholesky_factor<T>(cdata<T>(gram), n, near_identity, pr);
    }
    return factored ? py::object(std::move(r)) : py::object(py::none());
  });
}

py::object solve_factor_py(const py::array& y, const py::array& r, bool with_gram) {
  const MatrixShape s = matrix_shape(y, "Y", false);  // (width, rows)
  if (square_of(r, "R") != s.rows)
    throw std::invalid_argument("R: expected a (" + std::to_string(s.rows) + ", " + std::to_string(s.rows) +
                                ") array, Y's width, got shape " + shape_str(r));
  require_same_dtype(r, "R", y, "Y");
  return dispatch(y, [&](auto tag) -> py::object {
    using T = decltype(tag);
    py::array_t<T> out(std::vector<py::ssize_t>{py::ssize_t(s.rows), py::ssize_t(s.cols)}, cdata<T>(y));  // a copy
    py::object gram = py::none();
    T* pg = nullptr;
    if (with_gram) {
      auto g = empty_array<T>({py::ssize_t(s.rows), py::ssize_t(s.rows)});
      pg = g.mutable_data();
      gram = std::move(g);
    }
    T* po = out.mutable_data();
    {
      py::gil_scoped_release release;
      vsfast::solve_factor<T>(po, s.cols, s.rows, cdata<T>(r), pg);
    }
    return py::make_tuple(out, gram);
  });
}

py::object householder_qr_py(const py::array& y) {
  const MatrixShape s = matrix_shape(y, "Y", false);  // (width, rows)
  if (s.cols < s.rows)
    throw std::invalid_argument("Y: expected at least as many rows as columns, a (width, rows) array with rows >= "
                                "width, got shape " + shape_str(y));
  return dispatch(y, [&](auto tag) -> py::object {
    using T = decltype(tag);
    py::array_t<T> q(std::vector<py::ssize_t>{py::ssize_t(s.rows), py::ssize_t(s.cols)}, cdata<T>(y));  // a copy
    auto r = empty_array<T>({py::ssize_t(s.rows), py::ssize_t(s.rows)});
    T *pq = q.mutable_data(), *pr = r.mutable_data();
    {
      py::gil_scoped_release release;
      vsfast::householder_qr<T>(pq, s.cols, s.rows, pr);
    }
    return py::make_tuple(q, r);
  });
}

// ---------------------------------------------------------------------------------------------
// The chain: one class per dtype; the Python layer picks the one matching its arrays.

template <class T>
vsfast::Layer<T> make_layer(std::size_t index, const py::array& w, const py::object& b, const std::string& act,
                            double param) {
  const std::string name = "layers[" + std::to_string(index) + "]";
  const MatrixShape s = matrix_shape(w, name + ".weight", false);
  if (!has_dtype<T>(w)) throw py::type_error(name + ".weight: expected dtype " + vsfast::dtype_name<T>());
  vsfast::Layer<T> layer;
  layer.m = s.rows;
  layer.n = s.cols;
  layer.weight.assign(cdata<T>(w), cdata<T>(w) + s.rows * s.cols);
  if (!b.is_none()) {
    const auto bias = b.cast<py::array>();
    require_layout(bias, name + ".bias");
    if (!has_dtype<T>(bias) || bias.ndim() != 1 || static_cast<std::size_t>(bias.shape(0)) != s.rows)
      throw std::invalid_argument(name + ".bias: expected " + std::to_string(s.rows) +
                                  " values of the weight's dtype, got shape " + shape_str(bias));
    layer.bias.assign(cdata<T>(bias), cdata<T>(bias) + s.rows);
  }
  layer.activation = vsfast::Activation::make(act, param);
  return layer;
}

// A chain's optional reference inputs: none, or rows of the chain's input size, 1 or one per
// target.
template <class T>
struct Reference {
  py::array array;  // keeps the data alive
  const T* data = nullptr;
  std::size_t rows = 0;
};

template <class T>
Reference<T> reference_of(const py::object& reference, std::size_t targets, std::size_t width) {
  Reference<T> r;
  if (reference.is_none()) return r;
  r.array = reference.cast<py::array>();
  r.rows = rows_of<T>(r.array, "reference", width, "the chain's input size").rows;
  vsfast::require_reference_rows(r.rows, targets);
  r.data = cdata<T>(r.array);
  return r;
}

using LayerTuple = std::tuple<py::array, py::object, std::string, double>;

template <class T>
void bind_chain(py::module_& m, const char* name) {
  using C = vsfast::Chain<T>;
  py::class_<C>(m, name)
      .def(py::init([](const std::vector<LayerTuple>& tuples, std::optional<double> rtol,
                       std::optional<double> atol) {
             std::vector<vsfast::Layer<T>> layers;
             for (std::size_t i = 0; i < tuples.size(); ++i) {
               const auto& [w, b, act, param] = tuples[i];
               layers.push_back(make_layer<T>(i, w, b, act, param));
             }
             py::gil_scoped_release release;
             return new C(std::move(layers), rtol, atol);
           }),
           py::arg("layers"), py::arg("rtol") = py::none(), py::arg("atol") = py::none())
      .def_property_readonly("depth", &C::depth)
      .def_property_readonly("input_dim", &C::input_dim)
      .def_property_readonly("output_dim", &C::output_dim)
      .def_property_readonly("ranks", &C::ranks)
      .def(
          "reconstruct",
          [](const C& chain, const py::array& y, const py::object& reference, bool every_layer) {
            const MatrixShape s = rows_of<T>(y, "Y", chain.output_dim(), "the chain's output size");
            const Reference<T> ref = reference_of<T>(reference, s.rows, chain.input_dim());
            auto x = empty_array<T>({py::ssize_t(s.rows), py::ssize_t(chain.input_dim())});
            T* px = x.mutable_data();
            std::vector<std::size_t> clamped;
            {
              py::gil_scoped_release release;
              clamped = vsfast::reconstruct<T>(chain, cdata<T>(y), s.rows, ref.data, ref.rows, every_layer, px);
            }
            return py::make_tuple(x, clamped);
          },
          py::arg("Y"), py::arg("reference") = py::none(), py::arg("every_layer") = false)
      .def(
          "solve",
          [](const C& chain, const py::array& y, const py::object& reference, bool from_reference, double tol,
             std::size_t max_iter) {
            const MatrixShape s = rows_of<T>(y, "Y", chain.output_dim(), "the chain's output size");
            const Reference<T> ref = reference_of<T>(reference, s.rows, chain.input_dim());
            auto x = empty_array<T>({py::ssize_t(s.rows), py::ssize_t(chain.input_dim())});
            auto steps = empty_array<std::int64_t>({py::ssize_t(s.rows)});
            auto error = empty_array<double>({py::ssize_t(s.rows)});
            T* px = x.mutable_data();
            std::int64_t* psteps = steps.mutable_data();
            double* perror = error.mutable_data();
            {
              py::gil_scoped_release release;
              vsfast::solve<T>(chain, cdata<T>(y), s.rows, ref.data, ref.rows, from_reference, tol, max_iter, px,
                               psteps, perror);
            }
            return py::make_tuple(x, steps, error);
          },
          py::arg("Y"), py::arg("reference"), py::arg("from_reference"), py::arg("tol"), py::arg("max_iter"))
      .def(
          "solve_box",
          [](const C& chain, const py::array& y, const py::object& reference, double lo, double hi, double tol,
             std::size_t max_iter) {
            const MatrixShape s = rows_of<T>(y, "Y", chain.output_dim(), "the chain's output size");
            const Reference<T> ref = reference_of<T>(reference, s.rows, chain.input_dim());
            auto x = empty_array<T>({py::ssize_t(s.rows), py::ssize_t(chain.input_dim())});
            auto steps = empty_array<std::int64_t>({py::ssize_t(s.rows)});
            auto error = empty_array<double>({py::ssize_t(s.rows)});
            auto violation = empty_array<double>({py::ssize_t(s.rows)});
            T* px = x.mutable_data();
            std::int64_t* psteps = steps.mutable_data();
            double* perror = error.mutable_data();
            double* pviolation = violation.mutable_data();
            {
              py::gil_scoped_release release;
              vsfast::solve_box<T>(chain, cdata<T>(y), s.rows, ref.data, ref.rows, lo, hi, tol, max_iter, px,
                                   psteps, perror, pviolation);
            }
            return py::make_tuple(x, steps, error, violation);
          },
          py::arg("Y"), py::arg("reference"), py::arg("lo"), py::arg("hi"), py::arg("tol"), py::arg("max_iter"))
      .def(
          "forward",
          [](const C& chain, const py::array& x) {
            const MatrixShape s = rows_of<T>(x, "X", chain.input_dim(), "the chain's input size");
            auto y = empty_array<T>({py::ssize_t(s.rows), py::ssize_t(chain.output_dim())});
            T* py_ = y.mutable_data();
            {
              py::gil_scoped_release release;
              vsfast::forward<T>(chain, cdata<T>(x), s.rows, py_);
            }
            return y;
          },
          py::arg("X"));
}

py::dict build_info_py() {
  const vsfast::BuildInfo info = vsfast::build_info();
  py::dict cpu;
  for (const auto& [feature, present] : info.cpu) cpu[py::str(feature)] = present;
  py::dict out;
  out["compiler"] = info.compiler;
  out["build_type"] = info.build_type;
  out["cxx_flags"] = info.cxx_flags;
  out["compiled_for"] = info.compiled_for;
  out["cpu_features"] = cpu;
  out["blas_config"] = info.blas_config;
  out["sanitizers"] = info.sanitizers;
  out["threads"] = vsfast::num_threads();
  return out;
}

}  // namespace

PYBIND11_MODULE(_core, m) {
  m.doc() = "vsfast's CPU kernels (OpenBLAS). Use the vsfast package, which validates and converts inputs.";
  // numpy's own exception as the base, so that callers catch one class for numpy's and vsfast's
  // failures; local to this module, so that vsfast._cuda can register its own for the same type.
  const py::object numpy_error = py::module_::import("numpy.linalg").attr("LinAlgError");
  py::register_local_exception<vsfast::LinAlgError>(m, "LinAlgError", numpy_error);

  m.def("svd", &svd_py, py::arg("A"));
  m.def("svdvals", &svdvals_py, py::arg("A"));
  m.def("svdvals_gram", &svdvals_gram_py, py::arg("A"));
  m.def("rsvd", &rsvd_py, py::arg("A"), py::arg("k"), py::arg("oversample"), py::arg("power_iters"),
        py::arg("seed"), py::arg("method") = "subspace", py::arg("precision") = "full", py::arg("tol") = 0.0);
  m.def("bf16_supported", &vsfast::rsvd_bfloat16_available,
        "Whether this CPU and build run rsvd's bfloat16 passes (AVX512-BF16).");
  m.def("rank", &rank_py, py::arg("S"), py::arg("m"), py::arg("n"), py::arg("rtol") = py::none(),
        py::arg("atol") = py::none());
  m.def("complement", &complement_py, py::arg("basis"), py::arg("n"));
  m.def("project", &project_py, py::arg("X"), py::arg("basis"));
  m.def("pinv", &pinv_py, py::arg("A"), py::arg("rtol") = py::none(), py::arg("atol") = py::none());
  m.def("sketch", &sketch_py, py::arg("m"), py::arg("n"), py::arg("k"), py::arg("oversample"), py::arg("seed"),
        py::arg("dtype"));
  m.def("block_largest", &block_largest_py, py::arg("A"), py::arg("name"));
  m.def("block_exponent", &block_exponent_py, py::arg("largest"), py::arg("dtype"));
  m.def("block_range", &block_range_py, py::arg("A"), py::arg("Z"), py::arg("transposed"), py::arg("exponent"));
  m.def("block_corange", &block_corange_py, py::arg("A"), py::arg("Y"), py::arg("transposed"), py::arg("exponent"));
  m.def("cholesky_factor", &cholesky_factor_py, py::arg("G"), py::arg("near_identity"));
  m.def("solve_factor", &solve_factor_py, py::arg("Y"), py::arg("R"), py::arg("with_gram"));
  m.def("householder_qr", &householder_qr_py, py::arg("Y"));
  vsfast::init_threads();
  m.def("get_num_threads", &vsfast::num_threads, "Threads vsfast's kernels use.");
  m.def("set_num_threads", &vsfast::set_num_threads, py::arg("threads"),
        "Set the threads vsfast's kernels use; results do not depend on it.");
  m.def("build_info", &build_info_py,
        "How this module was built (compiler, flags, OpenBLAS) and what this CPU offers (SIMD extensions).");
  bind_chain<float>(m, "ChainF32");
  bind_chain<double>(m, "ChainF64");
}

// The thread count as plain C symbols, so that threadpoolctl's controller for vsfast (see
// vsfast/config.py) finds this library among the loaded ones and sets its threads like any BLAS.
extern "C" {
__attribute__((visibility("default"))) int vsfast_get_num_threads() { return vsfast::num_threads(); }
__attribute__((visibility("default"))) void vsfast_set_num_threads(int n) { vsfast::set_num_threads(n < 1 ? 1 : n); }
}
