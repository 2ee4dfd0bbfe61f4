// Counter-based Gaussian numbers: entry i depends on (seed, i) only, so a sketch is the same
// whatever the thread count or the order in which it is filled. The GPU fills its sketches with
// the same generator (gaussian_kernel in csrc/cuda/kernels.cuh).
#pragma once

#include "common.hpp"

#include <cmath>
#include <cstddef>
#include <cstdint>

namespace vsfast {

VSFAST_HOST_DEVICE inline std::uint64_t splitmix64(std::uint64_t x) {
  x += 0x9e3779b97f4a7c15ULL;
  x = (x ^ (x >> 30)) * 0xbf58476d1ce4e5b9ULL;
  x = (x ^ (x >> 27)) * 0x94d049bb133111ebULL;
  return x ^ (x >> 31);
}

// Entries i and i + 1 (i even) of the standard normal sequence of key = splitmix64(seed):
// Box-Muller on the two 32-bit halves of one 64-bit hash of i.
VSFAST_HOST_DEVICE inline void gaussian_pair(std::uint64_t key, std::size_t i, double& first, double& second) {
  constexpr double two_pi = 6.283185307179586476925286766559;
  constexpr double inv_2_32 = 1.0 / 4294967296.0;
  const std::uint64_t bits = splitmix64(key + 0x9e3779b97f4a7c15ULL * i);
  const double u1 = (static_cast<double>(bits >> 32) + 0.5) * inv_2_32;  // in (0, 1): log is finite
  const double u2 = (static_cast<double>(bits & 0xffffffffULL) + 0.5) * inv_2_32;
  const double radius = std::sqrt(-2.0 * std::log(u1));
  first = radius * std::cos(two_pi * u2);
  second = radius * std::sin(two_pi * u2);
}

// Entries [2 begin, 2 end) of the standard normal sequence of `seed`, of the n entries out holds:
// the pairs begin..end, which any thread may fill.
template <class T>
void fill_gaussian_pairs(T* out, std::size_t n, std::uint64_t seed, std::size_t begin, std::size_t end) {
  const std::uint64_t key = splitmix64(seed);
  for (std::size_t i = 2 * begin; i < 2 * end && i < n; i += 2) {
    double first, second;
    gaussian_pair(key, i, first, second);
    out[i] = static_cast<T>(first);
    if (i + 1 < n) out[i + 1] = static_cast<T>(second);
  }
}

}  // namespace vsfast
