// build_info() of api.hpp: what a bug report about speed or numerics needs to know about this
// build. The compiler's flags come from CMake (CMakeLists.txt passes them as definitions); the
// CPU's features are detected when asked, since a wheel built on one machine runs on others.
#include "vsfast/api.hpp"

#include <cblas.h>

#if defined(__x86_64__) || defined(__i386__)
#include <cpuid.h>
#endif

namespace vsfast {

namespace {

#ifndef VSFAST_COMPILER
#define VSFAST_COMPILER "unknown"
#endif
#ifndef VSFAST_BUILD_TYPE
#define VSFAST_BUILD_TYPE ""
#endif
#ifndef VSFAST_CXX_FLAGS
#define VSFAST_CXX_FLAGS ""
#endif

// The instruction-set extensions the compiler was allowed to use (-march, -m...): code built for
// one the CPU lacks dies with an illegal instruction.
std::vector<std::string> compiled_for() {
  std::vector<std::string> isa;
#ifdef __SSE2__
  isa.push_back("sse2");
#endif
#ifdef __SSE4_2__
  isa.push_back("sse4.2");
#endif
#ifdef __AVX__
  isa.push_back("avx");
#endif
#ifdef __AVX2__
  isa.push_back("avx2");
#endif
#ifdef __FMA__
  isa.push_back("fma");
#endif
#ifdef __AVX512F__
  isa.push_back("avx512f");
#endif
#ifdef __AVX512BF16__
  isa.push_back("avx512bf16");
#endif
#ifdef __ARM_NEON
  isa.push_back("neon");
#endif
  return isa;
}

#if defined(__x86_64__) || defined(__i386__)
// AMX: the CPU has tiles (CPUID leaf 7, EDX bits 24 and 22) and the operating system saves their
// state (XCR0 bits 17 and 18), which __builtin_cpu_supports does not tell on every compiler.
std::pair<bool, bool> amx_tile_and_bf16() {
  unsigned a = 0, b = 0, c = 0, d = 0;
  if (!__get_cpuid(1, &a, &b, &c, &d) || !(c & (1u << 27))) return {false, false};  // OSXSAVE
  unsigned xcr0_low = 0, xcr0_high = 0;
  __asm__("xgetbv" : "=a"(xcr0_low), "=d"(xcr0_high) : "c"(0));
  const bool os_saves_tiles = (xcr0_low >> 17 & 1u) && (xcr0_low >> 18 & 1u);
  if (!os_saves_tiles || !__get_cpuid_count(7, 0, &a, &b, &c, &d)) return {false, false};
  return {(d >> 24 & 1u) != 0, (d >> 22 & 1u) != 0};
}
#endif

std::vector<std::pair<std::string, bool>> cpu_features() {
#if defined(__x86_64__) || defined(__i386__)
  __builtin_cpu_init();
  const auto [amx_tile, amx_bf16] = amx_tile_and_bf16();
  return {
      {"sse4.2", __builtin_cpu_supports("sse4.2") != 0},
      {"avx", __builtin_cpu_supports("avx") != 0},
      {"avx2", __builtin_cpu_supports("avx2") != 0},
      {"fma", __builtin_cpu_supports("fma") != 0},
      {"avx512f", __builtin_cpu_supports("avx512f") != 0},
      {"avx512bf16", __builtin_cpu_supports("avx512bf16") != 0},
      {"amx-tile", amx_tile},
      {"amx-bf16", amx_bf16},
  };
#else
  return {};
#endif
}

}  // namespace

BuildInfo build_info() {
  BuildInfo info;
  info.compiler = VSFAST_COMPILER;
  info.build_type = VSFAST_BUILD_TYPE;
  info.cxx_flags = VSFAST_CXX_FLAGS;
  info.compiled_for = compiled_for();
  info.cpu = cpu_features();
  const char* config = scipy_openblas_get_config();
  info.blas_config = config ? config : "";
#if defined(VSFAST_SANITIZE) && VSFAST_SANITIZE
  info.sanitizers = true;
#endif
  return info;
}

}  // namespace vsfast
