// The checks the batched entry points (api.hpp) make around their work: inputs holding NaN or inf
// are refused, naming the argument, and results that do not fit the dtype raise OverflowError,
// never inf or NaN handed back. The GPU twins are in csrc/cuda/kernels.cuh; the messages are
// common.hpp's, shared by both.
#pragma once

#include "common.hpp"
#include "parallel.hpp"

#include <algorithm>
#include <cmath>
#include <cstddef>
#include <mutex>
#include <stdexcept>
#include <string>
#include <vector>

namespace vsfast {

// One pass over the data, in parallel for large arrays: refuses NaN and inf, naming the argument,
// and returns the largest magnitude.
template <class T>
double require_finite(const T* p, std::size_t count, const std::string& name) {
  std::mutex mutex;
  double largest = 0;
  parallel_rows(count, 1, [&](std::size_t begin, std::size_t end) {
    const double block = max_abs(p + begin, end - begin);
    std::lock_guard<std::mutex> lock(mutex);
    largest = std::isnan(block) || std::isnan(largest) ? block : std::max(largest, block);
  });
  if (std::isnan(largest)) throw std::invalid_argument(finite_message(name));
  return largest;
}

// The largest magnitude of each of `batch` consecutive matrices of `size` values, refusing NaN
// and inf as require_finite does.
template <class T>
std::vector<double> require_finite_matrices(const T* p, std::size_t batch, std::size_t size, const std::string& name) {
  if (batch == 1) return {require_finite(p, size, name)};
  std::vector<double> largest(batch);
  parallel_for(batch, batch_workers(batch), [&](std::size_t b) { largest[b] = max_abs(p + b * size, size); });
  if (std::any_of(largest.begin(), largest.end(), [](double v) { return std::isnan(v); }))
    throw std::invalid_argument(finite_message(name));
  return largest;
}

// A result that does not fit the dtype (singular values or a pseudoinverse beyond its largest
// number) is an OverflowError.
template <class T>
void require_representable(const T* p, std::size_t count, const std::string& what) {
  if (std::isnan(max_abs(p, count))) throw std::overflow_error(overflow_message<T>(what));
}

}  // namespace vsfast
