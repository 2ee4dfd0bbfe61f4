// Counter-based Gaussian numbers: entry i depends on (seed, i) only, so a sketch is the same
// whatever the thread count or the order in which it is filled.
#pragma once

#include <cmath>
#include <cstddef>
#include <cstdint>

namespace vsfast {

inline std::uint64_t splitmix64(std::uint64_t x) {
  x += 0x9e3779b97f4a7c15ULL;
  x = (x ^ (x >> 30)) * 0xbf58476d1ce4e5b9ULL;
  x = (x ^ (x >> 27)) * 0x94d049bb133111ebULL;
  return x ^ (x >> 31);
}

// Fill out[0..n) with independent standard normal numbers (Box-Muller on 32-bit uniforms).
template <class T>
void fill_gaussian(T* out, std::size_t n, std::uint64_t seed) {
  const std::uint64_t key = splitmix64(seed);
  constexpr double two_pi = 6.283185307179586476925286766559;
  constexpr double inv_2_32 = 1.0 / 4294967296.0;
  for (std::size_t i = 0; i < n; i += 2) {
    const std::uint64_t bits = splitmix64(key + 0x9e3779b97f4a7c15ULL * i);
    const double u1 = (static_cast<double>(bits >> 32) + 0.5) * inv_2_32;  // in (0, 1): log is finite
    const double u2 = (static_cast<double>(bits & 0xffffffffULL) + 0.5) * inv_2_32;
    const double radius = std::sqrt(-2.0 * std::log(u1));
    out[i] = static_cast<T>(radius * std::cos(two_pi * u2));
    if (i + 1 < n) out[i + 1] = static_cast<T>(radius * std::sin(two_pi * u2));
  }
}

}  // namespace vsfast
