// The randomized SVD's passes over A with A rounded to bfloat16, on CPUs with AVX512-BF16 (AMD
// Zen 4 and later, Intel Cooper Lake and Sapphire Rapids and later), detected at run time.
// OpenBLAS 0.3.34 as shipped by scipy-openblas32 exports no sbgemm, so the products are computed
// here: one dot-product instruction (vdpbf16ps) does twice the multiply-adds of a float32 FMA,
// and A is read at half the bytes. Products accumulate in float32; A and the thin operand are
// rounded to bfloat16 (8 significant bits) on the way in, which perturbs A by
// ||A - bf16(A)||_F, measured exactly while A is converted: rsvd.hpp uses these passes only when
// that perturbation is well below the error of the rank-k approximation (see its guard).
//
// Layout: the instruction multiplies pairs of bfloat16 values and adds both products into one
// float32 lane, so each operand is stored as 32-bit words holding two consecutive values along
// the product's reduction. A gets two copies, one paired along its rows (for A X) and one paired
// along its columns (for A^T X); the thin operand is packed into the same pairs per pass. Each
// output element is reduced in one fixed order by one thread: results do not depend on the thread
// count.
#pragma once

#include "parallel.hpp"

#include <algorithm>
#include <cmath>
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <stdexcept>
#include <vector>

#if defined(__x86_64__) && ((defined(__GNUC__) && __GNUC__ >= 10) || defined(__clang__))
#define VSFAST_BF16_KERNELS 1
#include <immintrin.h>
#endif

namespace vsfast {

// Whether this CPU (and this build) can run the bfloat16 passes.
inline bool bf16_supported() {
#ifdef VSFAST_BF16_KERNELS
  static const bool supported = __builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512bw") &&
                                __builtin_cpu_supports("avx512bf16");
  return supported;
#else
  return false;
#endif
}

// The bfloat16 nearest to x (ties to even) as the high half of a float32's bits. x is finite and
// far below float32's largest number (to_bf16 scales A into range), so no rounding overflows.
inline std::uint32_t bf16_high_bits(float x) {
  std::uint32_t bits;
  std::memcpy(&bits, &x, sizeof bits);
  bits += 0x7fffu + ((bits >> 16) & 1u);
  return bits & 0xffff0000u;
}

inline float bf16_value(std::uint32_t high_bits) {
  float x;
  std::memcpy(&x, &high_bits, sizeof x);
  return x;
}

// A word of two bfloat16 values: `first` in the low half, `second` in the high half.
inline std::uint32_t bf16_pair(float first, float second) {
  return (bf16_high_bits(first) >> 16) | bf16_high_bits(second);
}

// A (row-major m x n) times 2^-exponent rounded to bfloat16, in the two pairings the passes read.
struct Bf16Matrix {
  std::size_t m = 0, n = 0;
  int exponent = 0;                 // products are scaled back by 2^exponent
  std::vector<std::uint32_t> rows;  // word (i, p) = (a[i][2p], a[i][2p + 1]) at i * ceil(n/2) + p
  std::vector<std::uint32_t> cols;  // word (p, j) = (a[2p][j], a[2p + 1][j]) at p * n + j
  double rounding = 0;              // ||A - 2^exponent bf16(2^-exponent A)||_F

  std::size_t row_words() const { return (n + 1) / 2; }
  std::size_t col_words() const { return (m + 1) / 2; }
  std::size_t bytes() const { return (rows.capacity() + cols.capacity()) * sizeof(std::uint32_t); }
};

// a[i][j] * scale as float, zero past the matrix's end (the odd row or column that completes a
// pair).
template <class T>
float entry_or_zero(const T* a, std::size_t m, std::size_t n, std::size_t i, std::size_t j, T scale) {
  return i < m && j < n ? static_cast<float>(a[i * n + j] * scale) : 0.0f;
}

// Fill both copies of a's bfloat16 rounding and measure its Frobenius norm; max_abs is a's
// largest magnitude. A matrix beyond float32's comfortable range (a float64 one, or one whose
// products could overflow) is scaled by a power of two first, exactly. Blocks of rows are
// converted in parallel; their squared rounding errors are summed in block order.
template <class T>
void to_bf16(const T* a, std::size_t m, std::size_t n, double max_abs, Bf16Matrix& out) {
  out.m = m;
  out.n = n;
  out.exponent = rescaling_exponent<float>(max_abs);
  const T scale = static_cast<T>(std::ldexp(1.0, -out.exponent));
  const std::size_t nw = out.row_words(), mw = out.col_words();
  out.rows.resize(m * nw);
  out.cols.resize(mw * n);
  // Row pairs (2p, 2p + 1): both copies are written from them, so each block reads its rows once.
  const std::size_t pairs_per_block = 64, blocks = (mw + pairs_per_block - 1) / pairs_per_block;
  std::vector<double> squares(blocks);
  parallel_for(blocks, workers_for(8.0 * m * n, blocks), [&](std::size_t b) {
    double sum = 0;
    for (std::size_t p = b * pairs_per_block; p < std::min(mw, (b + 1) * pairs_per_block); ++p) {
      for (std::size_t i = 2 * p; i < std::min(m, 2 * p + 2); ++i) {
        std::uint32_t* words = out.rows.data() + i * nw;
        for (std::size_t q = 0; q < nw; ++q)
          words[q] = bf16_pair(entry_or_zero(a, m, n, i, 2 * q, scale), entry_or_zero(a, m, n, i, 2 * q + 1, scale));
        for (std::size_t j = 0; j < n; ++j) {
          const T x = a[i * n + j] * scale;
          const double d = static_cast<double>(x) - bf16_value(bf16_high_bits(static_cast<float>(x)));
          sum += d * d;
        }
      }
      std::uint32_t* words = out.cols.data() + p * n;
      for (std::size_t j = 0; j < n; ++j)
        words[j] = bf16_pair(entry_or_zero(a, m, n, 2 * p, j, scale), entry_or_zero(a, m, n, 2 * p + 1, j, scale));
    }
    squares[b] = sum;
  });
  double total = 0;
  for (double s : squares) total += s;
  out.rounding = std::ldexp(std::sqrt(total), out.exponent);
}

// The thin operand x (column-major, len x cols, leading dimension ldx) rounded to bfloat16 and
// paired along its columns: word (p, c) = (x[2p][c], x[2p + 1][c]) at p * width + c, with
// width = cols rounded up to a multiple of 16 (zeros beyond cols and below the last row).
template <class T>
void pack_bf16_pairs(const T* x, std::size_t len, std::size_t cols, std::size_t ldx, std::size_t width,
                     std::vector<std::uint32_t>& out) {
  const std::size_t pairs = (len + 1) / 2;
  out.assign(pairs * width, 0u);
  for (std::size_t c = 0; c < cols; ++c) {
    const T* column = x + c * ldx;
    for (std::size_t p = 0; p < pairs; ++p)
      out[p * width + c] = bf16_pair(static_cast<float>(column[2 * p]),
                                     2 * p + 1 < len ? static_cast<float>(column[2 * p + 1]) : 0.0f);
  }
}

#ifdef VSFAST_BF16_KERNELS

// The register tile: R output rows by J vectors of 16 output columns. For every pair index p,
// row r's word of A is broadcast and multiplied with the J packed words of x; the tile (float32,
// row-major, leading dimension ldt) is loaded, accumulated into and stored back.
template <int R, int J>
__attribute__((target("avx512f,avx512bw,avx512bf16"))) void bf16_tile(const std::uint32_t* a, std::size_t row_stride,
                                                                        std::size_t pair_stride, std::size_t pairs,
                                                                        const std::uint32_t* xp, std::size_t width,
                                                                        float* tile, std::size_t ldt) {
  __m512 acc[R][J];
  for (int r = 0; r < R; ++r)
    for (int j = 0; j < J; ++j) acc[r][j] = _mm512_loadu_ps(tile + r * ldt + 16 * j);
  for (std::size_t p = 0; p < pairs; ++p) {
    __m512bh x[J];
    for (int j = 0; j < J; ++j) x[j] = (__m512bh)_mm512_loadu_si512(xp + p * width + 16 * j);
    for (int r = 0; r < R; ++r) {
      const __m512bh w = (__m512bh)_mm512_set1_epi32(static_cast<int>(a[r * row_stride + p * pair_stride]));
      for (int j = 0; j < J; ++j) acc[r][j] = _mm512_dpbf16_ps(acc[r][j], w, x[j]);
    }
  }
  for (int r = 0; r < R; ++r)
    for (int j = 0; j < J; ++j) _mm512_storeu_ps(tile + r * ldt + 16 * j, acc[r][j]);
}

using Bf16Tile = void (*)(const std::uint32_t*, std::size_t, std::size_t, std::size_t, const std::uint32_t*,
                          std::size_t, float*, std::size_t);

constexpr int kTileRows = 4, kTileVectors = 5;

template <int R>
Bf16Tile bf16_tile_for(int vectors) {
  switch (vectors) {
    case 1: return &bf16_tile<R, 1>;
    case 2: return &bf16_tile<R, 2>;
    case 3: return &bf16_tile<R, 3>;
    case 4: return &bf16_tile<R, 4>;
    default: return &bf16_tile<R, 5>;
  }
}

inline Bf16Tile bf16_tile_for(int rows, int vectors) {
  switch (rows) {
    case 1: return bf16_tile_for<1>(vectors);
    case 2: return bf16_tile_for<2>(vectors);
    case 3: return bf16_tile_for<3>(vectors);
    default: return bf16_tile_for<kTileRows>(vectors);
  }
}

#endif

// out (column-major, rows x cols, leading dimension ldo) = the product whose row r and pair index
// p read A's word a[r * row_stride + p * pair_stride], with the packed thin operand xp (pairs x
// width words from pack_bf16_pairs). Blocks of 256 output rows run in parallel; within a block,
// the reduction runs in chunks of 256 pairs so that the chunk of xp stays in cache while every
// row of the block reads it.
template <class T>
void bf16_product(const std::uint32_t* a, std::size_t row_stride, std::size_t pair_stride, std::size_t rows,
                  std::size_t pairs, const std::vector<std::uint32_t>& xp, std::size_t cols, std::size_t width,
                  T scale, T* out, std::size_t ldo) {
#ifdef VSFAST_BF16_KERNELS
  constexpr std::size_t chunk = 256, vector = 16, step = vector * kTileVectors;
  const std::size_t blocks = block_count(rows);
  parallel_for(blocks, workers_for(2.0 * rows * pairs * 2 * width, blocks), [&](std::size_t b) {
    const std::size_t begin = b * kBlock, count = std::min(kBlock, rows - begin);
    std::vector<float> tile(count * width, 0.0f);
    for (std::size_t p0 = 0; p0 < pairs; p0 += chunk) {
      const std::size_t np = std::min(chunk, pairs - p0);
      for (std::size_t r0 = 0; r0 < count; r0 += kTileRows) {
        const int nr = static_cast<int>(std::min<std::size_t>(kTileRows, count - r0));
        for (std::size_t c0 = 0; c0 < width; c0 += step) {
          const int nv = static_cast<int>(std::min(step, width - c0) / vector);
          bf16_tile_for(nr, nv)(a + (begin + r0) * row_stride + p0 * pair_stride, row_stride, pair_stride, np,
                                xp.data() + p0 * width + c0, width, tile.data() + r0 * width + c0, width);
        }
      }
    }
    for (std::size_t c = 0; c < cols; ++c)
      for (std::size_t r = 0; r < count; ++r) out[begin + r + c * ldo] = static_cast<T>(tile[r * width + c]) * scale;
  });
#else
  (void)a, (void)row_stride, (void)pair_stride, (void)rows, (void)pairs, (void)xp, (void)cols, (void)width,
      (void)scale, (void)out, (void)ldo;
  throw std::logic_error("bf16_product: this build has no bfloat16 kernels");
#endif
}

// out (column-major m x cols) = A x for x (column-major n x cols), or with `transposed`
// out (n x cols) = A^T x for x (m x cols), A rounded to bfloat16. `packed` is scratch.
template <class T>
void bf16_gemm(const Bf16Matrix& a, bool transposed, const T* x, std::size_t cols, std::size_t ldx, T* out,
               std::size_t ldo, std::vector<std::uint32_t>& packed) {
  const std::size_t width = (cols + 15) / 16 * 16;
  const T scale = static_cast<T>(std::ldexp(1.0, a.exponent));
  if (!transposed) {
    pack_bf16_pairs(x, a.n, cols, ldx, width, packed);
    bf16_product(a.rows.data(), a.row_words(), 1, a.m, a.row_words(), packed, cols, width, scale, out, ldo);
  } else {
    pack_bf16_pairs(x, a.m, cols, ldx, width, packed);
    bf16_product(a.cols.data(), 1, a.n, a.n, a.col_words(), packed, cols, width, scale, out, ldo);
  }
}

}  // namespace vsfast
