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
// the product's reduction. A gets two copies, one paired along its rows (for A X: A's words are
// broadcast, the lanes run over the thin operand's columns) and one paired along its columns
// (for A^T X: A's words for 16 consecutive output rows fill a vector, the thin operand's words
// are broadcast); the thin operand is packed into the same pairs per pass. Each output element
// is reduced in one fixed order by one thread: results do not depend on the thread count.
#pragma once

#include "parallel.hpp"

#include <algorithm>
#include <cmath>
#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <new>
#include <stdexcept>
#include <type_traits>
#include <utility>
#include <vector>

#ifdef __linux__
#include <sys/mman.h>
#endif

#if defined(__x86_64__) && ((defined(__GNUC__) && __GNUC__ >= 10) || defined(__clang__))
#define VSFAST_BF16_KERNELS 1
#include <immintrin.h>
#endif

// GCC 12's AVX-512 intrinsics start from deliberately undefined vectors, which its
// -Wmaybe-uninitialized reports wherever this file's kernels inline them (GCC bug 105593, fixed
// in GCC 13): silenced here only.
#if defined(__GNUC__) && !defined(__clang__)
#pragma GCC diagnostic push
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"
#pragma GCC diagnostic ignored "-Wuninitialized"
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

// Words for A's bfloat16 copies, uninitialised (the conversion writes every one) and, on Linux,
// in transparent huge pages: the first touch of each fresh 4 KiB page is a page fault, and a
// 4096 x 4096 matrix's copies (64 MiB, too large to keep between calls) cost 55 ms of faults and
// zeroing per call on a virtual machine, more than the conversion and a bfloat16 pass together.
class WordBuffer {
 public:
  WordBuffer() = default;
  WordBuffer(const WordBuffer&) = delete;
  WordBuffer& operator=(const WordBuffer&) = delete;
  WordBuffer(WordBuffer&& other) noexcept { swap(other); }
  WordBuffer& operator=(WordBuffer&& other) noexcept {
    WordBuffer(std::move(other)).swap(*this);
    return *this;
  }
  ~WordBuffer() { std::free(data_); }

  void resize(std::size_t count) {
    if (count > capacity_) {
      constexpr std::size_t page = std::size_t{2} << 20;
      const std::size_t bytes = (count * sizeof(std::uint32_t) + page - 1) / page * page;
      void* fresh = std::aligned_alloc(page, bytes);
      if (!fresh) throw std::bad_alloc();
#ifdef __linux__
      madvise(fresh, bytes, MADV_HUGEPAGE);  // advice only: a refusal leaves ordinary pages
#endif
      std::free(data_);
      data_ = static_cast<std::uint32_t*>(fresh);
      capacity_ = bytes / sizeof(std::uint32_t);
    }
    size_ = count;
  }
  std::uint32_t* data() { return data_; }
  const std::uint32_t* data() const { return data_; }
  std::size_t size() const { return size_; }
  std::size_t capacity() const { return capacity_; }

 private:
  void swap(WordBuffer& other) noexcept {
    std::swap(data_, other.data_);
    std::swap(size_, other.size_);
    std::swap(capacity_, other.capacity_);
  }

  std::uint32_t* data_ = nullptr;
  std::size_t size_ = 0, capacity_ = 0;
};

// A (row-major m x n) times 2^-exponent rounded to bfloat16, in the two pairings the passes read.
struct Bf16Matrix {
  std::size_t m = 0, n = 0;
  int exponent = 0;  // products are scaled back by 2^exponent
  WordBuffer rows;   // word (i, p) = (a[i][2p], a[i][2p + 1]) at i * ceil(n/2) + p
  WordBuffer cols;   // word (p, j) = (a[2p][j], a[2p + 1][j]) at p * n + j
  double rounding = 0;  // ||A - 2^exponent bf16(2^-exponent A)||_F

  std::size_t row_words() const { return (n + 1) / 2; }
  std::size_t col_words() const { return (m + 1) / 2; }
  std::size_t bytes() const { return (rows.capacity() + cols.capacity()) * sizeof(std::uint32_t); }
};

// a[i][j] * scale as float, zero past the row's end (the odd column that completes a pair).
template <class T>
float scaled_or_zero(const T* row, std::size_t n, std::size_t j, T scale) {
  return j < n ? static_cast<float>(row[j] * scale) : 0.0f;
}

// Columns [from, n) of the row pair (r0, r1) into both copies, r1 null past the last row (its
// entries zero); returns their squared rounding errors' sum.
template <class T>
double convert_pair_tail(const T* r0, const T* r1, std::size_t from, std::size_t n, T scale, std::uint32_t* row0,
                         std::uint32_t* row1, std::uint32_t* cols) {
  double sum = 0;
  for (std::size_t j = from; j < n; ++j) {
    const float x0 = scaled_or_zero(r0, n, j, scale), x1 = r1 ? scaled_or_zero(r1, n, j, scale) : 0.0f;
    cols[j] = bf16_pair(x0, x1);
    const double d0 = x0 - bf16_value(bf16_high_bits(x0)), d1 = x1 - bf16_value(bf16_high_bits(x1));
    sum += d0 * d0 + d1 * d1;
  }
  for (std::size_t q = from / 2; q < (n + 1) / 2; ++q) {
    row0[q] = bf16_pair(scaled_or_zero(r0, n, 2 * q, scale), scaled_or_zero(r0, n, 2 * q + 1, scale));
    if (r1) row1[q] = bf16_pair(scaled_or_zero(r1, n, 2 * q, scale), scaled_or_zero(r1, n, 2 * q + 1, scale));
  }
  return sum;
}

#ifdef VSFAST_BF16_KERNELS

// 16 consecutive entries times scale, as floats.
__attribute__((target("avx512f,avx512bw"))) inline __m512 load16(const float* p, float scale) {
  return _mm512_mul_ps(_mm512_loadu_ps(p), _mm512_set1_ps(scale));
}
__attribute__((target("avx512f,avx512bw"))) inline __m512 load16(const double* p, double scale) {
  const __m512d s = _mm512_set1_pd(scale);
  const __m256 lo = _mm512_cvtpd_ps(_mm512_mul_pd(_mm512_loadu_pd(p), s));
  const __m256 hi = _mm512_cvtpd_ps(_mm512_mul_pd(_mm512_loadu_pd(p + 8), s));
  return _mm512_castpd_ps(_mm512_insertf64x4(_mm512_castpd256_pd512(_mm256_castps_pd(lo)), _mm256_castps_pd(hi), 1));
}

// bf16_high_bits of 16 floats: the same rounding as the scalar code, bit for bit.
__attribute__((target("avx512f,avx512bw"))) inline __m512i round16(__m512 x) {
  const __m512i bits = _mm512_castps_si512(x);
  const __m512i lsb = _mm512_and_si512(_mm512_srli_epi32(bits, 16), _mm512_set1_epi32(1));
  const __m512i rounded = _mm512_add_epi32(bits, _mm512_add_epi32(lsb, _mm512_set1_epi32(0x7fff)));
  return _mm512_and_si512(rounded, _mm512_set1_epi32(static_cast<int>(0xffff0000u)));
}

// convert_pair_tail for columns [0, count), count a multiple of 16: the rows copy takes each
// row's bfloat16 values in order (two to a word, the first in the low half: x86 is little
// endian), the columns copy pairs the two rows' values of each column.
template <class T>
__attribute__((target("avx512f,avx512bw"))) double convert_pair_avx512(const T* r0, const T* r1, std::size_t count,
                                                                       T scale, std::uint32_t* row0,
                                                                       std::uint32_t* row1, std::uint32_t* cols) {
  __m512 squares = _mm512_setzero_ps();
  for (std::size_t j = 0; j < count; j += 16) {
    const __m512 x0 = load16(r0 + j, scale);
    const __m512i h0 = round16(x0);
    const __m512 d0 = _mm512_sub_ps(x0, _mm512_castsi512_ps(h0));
    squares = _mm512_fmadd_ps(d0, d0, squares);
    _mm256_storeu_si256(reinterpret_cast<__m256i*>(row0 + j / 2), _mm512_cvtepi32_epi16(_mm512_srli_epi32(h0, 16)));
    __m512i h1 = _mm512_setzero_si512();
    if (r1) {
      const __m512 x1 = load16(r1 + j, scale);
      h1 = round16(x1);
      const __m512 d1 = _mm512_sub_ps(x1, _mm512_castsi512_ps(h1));
      squares = _mm512_fmadd_ps(d1, d1, squares);
      _mm256_storeu_si256(reinterpret_cast<__m256i*>(row1 + j / 2), _mm512_cvtepi32_epi16(_mm512_srli_epi32(h1, 16)));
    }
    _mm512_storeu_si512(cols + j, _mm512_or_si512(_mm512_srli_epi32(h0, 16), h1));
  }
  return _mm512_reduce_add_ps(squares);
}

#endif

// Fill both copies of a's bfloat16 rounding and measure its Frobenius norm; max_abs is a's
// largest magnitude. A matrix beyond float32's comfortable range (a float64 one) is scaled by a
// power of two first, exactly. The rounding is measured from A's float32 values, which differ
// from a float64 A's by at most 2^-24 of them, 2^15 times less than bfloat16's rounding. Blocks
// of row pairs are converted in parallel, vectorised where the passes can run (the conversion
// is one read of A: 0.1 of a float32 pass of 84 columns over a 4096 x 4096 matrix, against 0.85
// scalar); their squared rounding errors are summed in block order.
template <class T>
void to_bf16(const T* a, std::size_t m, std::size_t n, double max_abs, Bf16Matrix& out) {
  out.m = m;
  out.n = n;
  out.exponent = rescaling_exponent<float>(max_abs);
  const T scale = static_cast<T>(std::ldexp(1.0, -out.exponent));
  const std::size_t nw = out.row_words(), mw = out.col_words();
  out.rows.resize(m * nw);
  out.cols.resize(mw * n);
  const std::size_t pairs_per_block = 16, blocks = (mw + pairs_per_block - 1) / pairs_per_block;
  std::vector<double> squares(blocks), norms(blocks);
  parallel_for(blocks, workers_for(4.0 * m * n, blocks), [&](std::size_t b) {
    double sum = 0, norm = 0;
    for (std::size_t p = b * pairs_per_block; p < std::min(mw, (b + 1) * pairs_per_block); ++p) {
      const T* r0 = a + 2 * p * n;
      const T* r1 = 2 * p + 1 < m ? r0 + n : nullptr;
      std::uint32_t* row0 = out.rows.data() + 2 * p * nw;
      std::uint32_t* row1 = r1 ? row0 + nw : nullptr;
      std::uint32_t* cols = out.cols.data() + p * n;
      std::size_t done = 0;
#ifdef VSFAST_BF16_KERNELS
      if (bf16_supported()) {
        done = n / 16 * 16;
        sum += convert_pair_avx512(r0, r1, done, scale, row0, row1, cols);
      }
#endif
      sum += convert_pair_tail(r0, r1, done, n, scale, row0, row1, cols);
      if constexpr (std::is_same_v<T, double>)  // the rows are still in cache
        for (std::size_t j = 0; j < (r1 ? 2 * n : n); ++j) norm += r0[j] * r0[j] * (scale * scale);
    }
    squares[b] = sum;
    norms[b] = norm;
  });
  double total = 0, frobenius = 0;
  for (std::size_t b = 0; b < blocks; ++b) total += squares[b], frobenius += norms[b];
  // The passes accumulate in float32: for a float64 A that is a perturbation of A too, of about
  // 2^-24 sqrt(length of the sums) ||A||_F, which an A exact in bfloat16 (integers, bfloat16
  // weights widened) would otherwise leave out of the check (its rounding is 0).
  const double accumulation = std::ldexp(std::sqrt(frobenius * static_cast<double>(std::max(m, n))), -24);
  out.rounding = std::ldexp(std::hypot(std::sqrt(total), accumulation), out.exponent);
}

// The thin operand x (column-major, len x cols, leading dimension ldx) times `scale` rounded to
// bfloat16 and paired along its columns: word (p, c) = (x[2p][c], x[2p + 1][c]) at
// p * width + c, with width = cols rounded up to a multiple of 16 (zeros beyond cols and below
// the last row). The product is taken in double, so a scale that brings x into range is exact.
template <class T>
void pack_bf16_pairs(const T* x, std::size_t len, std::size_t cols, std::size_t ldx, std::size_t width, double scale,
                     std::vector<std::uint32_t>& out) {
  const std::size_t pairs = (len + 1) / 2;
  out.assign(pairs * width, 0u);
  const auto at = [&](const T* column, std::size_t i) {
    return i < len ? static_cast<float>(static_cast<double>(column[i]) * scale) : 0.0f;
  };
  for (std::size_t c = 0; c < cols; ++c) {
    const T* column = x + c * ldx;
    for (std::size_t p = 0; p < pairs; ++p) out[p * width + c] = bf16_pair(at(column, 2 * p), at(column, 2 * p + 1));
  }
}

// The power of two e that brings x's largest magnitude into [1, 2) (0 for x = 0): the thin
// operand of a pass (M^T Q has A's magnitude) is scaled by 2^-e before its rounding to bfloat16,
// which would overflow beyond float's range and flush to zero below its normal numbers.
template <class T>
int thin_exponent(const T* x, std::size_t len, std::size_t cols, std::size_t ldx) {
  double largest = 0;
  for (std::size_t c = 0; c < cols; ++c)
    for (std::size_t i = 0; i < len; ++i) largest = std::max(largest, std::abs(static_cast<double>(x[i + c * ldx])));
  return largest > 0 ? std::ilogb(largest) : 0;
}

#ifdef VSFAST_BF16_KERNELS

// The tile of the product A x: R output rows by J vectors of 16 output columns. For every pair
// index p, row r's word of A (at a + r * row_words + p) is broadcast and multiplied with the J
// packed words of x; the tile (float32, row-major, leading dimension ldt) is loaded, accumulated
// into and stored back.
template <int R, int J>
__attribute__((target("avx512f,avx512bw,avx512bf16"))) void bf16_tile(const std::uint32_t* a, std::size_t row_words,
                                                                        std::size_t pairs, const std::uint32_t* xp,
                                                                        std::size_t width, float* tile,
                                                                        std::size_t ldt) {
  __m512 acc[R][J];
  for (int r = 0; r < R; ++r)
    for (int j = 0; j < J; ++j) acc[r][j] = _mm512_loadu_ps(tile + r * ldt + 16 * j);
  for (std::size_t p = 0; p < pairs; ++p) {
    __m512bh x[J];
    for (int j = 0; j < J; ++j) x[j] = (__m512bh)_mm512_loadu_si512(xp + p * width + 16 * j);
    for (int r = 0; r < R; ++r) {
      const __m512bh w = (__m512bh)_mm512_set1_epi32(static_cast<int>(a[r * row_words + p]));
      for (int j = 0; j < J; ++j) acc[r][j] = _mm512_dpbf16_ps(acc[r][j], w, x[j]);
    }
  }
  for (int r = 0; r < R; ++r)
    for (int j = 0; j < J; ++j) _mm512_storeu_ps(tile + r * ldt + 16 * j, acc[r][j]);
}

using Bf16Tile = void (*)(const std::uint32_t*, std::size_t, std::size_t, const std::uint32_t*, std::size_t, float*,
                          std::size_t);

// Tiles of 4 rows by up to 6 vectors: 24 accumulators, 6 operand vectors and a broadcast fill
// the 32 vector registers. The columns are split into groups as even as possible (96 columns:
// one group of 6 vectors, not 5 + 1, whose single-vector tiles run at a quarter of the speed).
constexpr int kTileRows = 4, kTileVectors = 6;

template <int R>
Bf16Tile bf16_tile_for(int vectors) {
  switch (vectors) {
    case 1: return &bf16_tile<R, 1>;
    case 2: return &bf16_tile<R, 2>;
    case 3: return &bf16_tile<R, 3>;
    case 4: return &bf16_tile<R, 4>;
    case 5: return &bf16_tile<R, 5>;
    default: return &bf16_tile<R, 6>;
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

// The tile of the transposed product, where A's words for consecutive output rows are
// contiguous: V vectors of 16 output rows by C output columns. For every pair index p, V vectors
// of A's words (at a + p * pair_stride) are loaded and multiplied with each column's broadcast
// word of x; the tile (float32, column-major, leading dimension ldt) is loaded, accumulated into
// and stored back. Rows come in whole vectors (the callers pad): masked loads here made GCC 12
// keep the accumulators in memory, at a third of the speed.
template <int C, int V>
__attribute__((target("avx512f,avx512bw,avx512bf16"))) void bf16_tile_t(const std::uint32_t* a, std::size_t pair_stride,
                                                                          std::size_t pairs, const std::uint32_t* xp,
                                                                          std::size_t width, float* tile,
                                                                          std::size_t ldt) {
  __m512 acc[C][V];
  for (int c = 0; c < C; ++c)
    for (int v = 0; v < V; ++v) acc[c][v] = _mm512_loadu_ps(tile + c * ldt + 16 * v);
  for (std::size_t p = 0; p < pairs; ++p) {
    __m512bh w[V];
    for (int v = 0; v < V; ++v) w[v] = (__m512bh)_mm512_loadu_si512(a + p * pair_stride + 16 * v);
    for (int c = 0; c < C; ++c) {
      const __m512bh x = (__m512bh)_mm512_set1_epi32(static_cast<int>(xp[p * width + c]));
      for (int v = 0; v < V; ++v) acc[c][v] = _mm512_dpbf16_ps(acc[c][v], w[v], x);
    }
  }
  for (int c = 0; c < C; ++c)
    for (int v = 0; v < V; ++v) _mm512_storeu_ps(tile + c * ldt + 16 * v, acc[c][v]);
}

using Bf16TileT = void (*)(const std::uint32_t*, std::size_t, std::size_t, const std::uint32_t*, std::size_t, float*,
                           std::size_t);

// 6 columns by 4 vectors (64 rows): 24 accumulators, 4 operand vectors and a broadcast.
constexpr int kTileColumns = 6, kTileRowVectors = 4;

template <int C>
Bf16TileT bf16_tile_t_for(int vectors) {
  switch (vectors) {
    case 1: return &bf16_tile_t<C, 1>;
    case 2: return &bf16_tile_t<C, 2>;
    case 3: return &bf16_tile_t<C, 3>;
    default: return &bf16_tile_t<C, kTileRowVectors>;
  }
}

inline Bf16TileT bf16_tile_t_for(int columns, int vectors) {
  switch (columns) {
    case 1: return bf16_tile_t_for<1>(vectors);
    case 2: return bf16_tile_t_for<2>(vectors);
    case 3: return bf16_tile_t_for<3>(vectors);
    case 4: return bf16_tile_t_for<4>(vectors);
    case 5: return bf16_tile_t_for<5>(vectors);
    default: return bf16_tile_t_for<kTileColumns>(vectors);
  }
}

#endif

// out (column-major, rows x cols, leading dimension ldo) = A x for A's row-paired copy (row r's
// words at a + r * row_words) and the packed thin operand xp (pairs x width words from
// pack_bf16_pairs). Blocks of 256 output rows run in parallel; within a block, the reduction
// runs in chunks of 256 pairs so that the chunk of xp stays in cache while every row of the
// block reads it.
template <class T>
void bf16_product(const std::uint32_t* a, std::size_t row_words, std::size_t rows, std::size_t pairs,
                  const std::vector<std::uint32_t>& xp, std::size_t cols, std::size_t width, T scale, T* out,
                  std::size_t ldo) {
#ifdef VSFAST_BF16_KERNELS
  constexpr std::size_t chunk = 256, vector = 16;
  const std::size_t vectors = width / vector, groups = (vectors + kTileVectors - 1) / kTileVectors;
  const std::size_t blocks = block_count(rows);
  parallel_for(blocks, workers_for(2.0 * rows * pairs * 2 * width, blocks), [&](std::size_t b) {
    const std::size_t begin = b * kBlock, count = std::min(kBlock, rows - begin);
    std::vector<float> tile(count * width, 0.0f);
    for (std::size_t p0 = 0; p0 < pairs; p0 += chunk) {
      const std::size_t np = std::min(chunk, pairs - p0);
      for (std::size_t r0 = 0; r0 < count; r0 += kTileRows) {
        const int nr = static_cast<int>(std::min<std::size_t>(kTileRows, count - r0));
        for (std::size_t g = 0, v0 = 0; g < groups; ++g) {
          const std::size_t nv = (vectors - v0) / (groups - g), c0 = v0 * vector;
          bf16_tile_for(nr, static_cast<int>(nv))(a + (begin + r0) * row_words + p0, row_words, np,
                                                  xp.data() + p0 * width + c0, width, tile.data() + r0 * width + c0,
                                                  width);
          v0 += nv;
        }
      }
    }
    for (std::size_t c = 0; c < cols; ++c)
      for (std::size_t r = 0; r < count; ++r) out[begin + r + c * ldo] = static_cast<T>(tile[r * width + c]) * scale;
  });
#else
  (void)a, (void)row_words, (void)rows, (void)pairs, (void)xp, (void)cols, (void)width, (void)scale, (void)out,
      (void)ldo;
  throw std::logic_error("bf16_product: this build has no bfloat16 kernels");
#endif
}

// out (column-major, rows x cols, leading dimension ldo) = A^T x for A's column-paired copy (pair
// p's words for all `rows` output rows at a + p * rows) and the packed thin operand xp. Blocks of
// 256 output rows run in parallel; within a block, tiles of 64 rows by 6 columns sweep the
// reduction in chunks of 64 pairs. Each chunk's panel of A (64 pairs by 64 rows) is first copied
// together: in place its words lie a row of A apart, which for power-of-two widths all map to the
// same few cache sets, and every column group re-read them from memory (3 times slower).
template <class T>
void bf16_product_t(const std::uint32_t* a, std::size_t rows, std::size_t pairs, const std::vector<std::uint32_t>& xp,
                    std::size_t cols, std::size_t width, T scale, T* out, std::size_t ldo) {
#ifdef VSFAST_BF16_KERNELS
  constexpr std::size_t chunk = 64, step = 16 * kTileRowVectors;
  const std::size_t blocks = block_count(rows);
  parallel_for(blocks, workers_for(2.0 * rows * pairs * 2 * cols, blocks), [&](std::size_t b) {
    const std::size_t begin = b * kBlock, count = std::min(kBlock, rows - begin), ldt = (count + 15) / 16 * 16;
    std::vector<float> tile(ldt * cols, 0.0f);  // column-major, rows padded to whole vectors
    std::vector<std::uint32_t> panel(chunk * step, 0u);
    for (std::size_t p0 = 0; p0 < pairs; p0 += chunk) {
      const std::size_t np = std::min(chunk, pairs - p0);
      for (std::size_t r0 = 0; r0 < count; r0 += step) {
        const std::size_t nr = std::min(step, count - r0);
        const int nv = static_cast<int>((nr + 15) / 16);
        for (std::size_t p = 0; p < np; ++p)  // rows past nr keep zeros: their results are not read
          std::copy_n(a + (p0 + p) * rows + begin + r0, nr, panel.begin() + static_cast<std::ptrdiff_t>(p * step));
        for (std::size_t c0 = 0; c0 < cols; c0 += kTileColumns) {
          const int nc = static_cast<int>(std::min<std::size_t>(kTileColumns, cols - c0));
          bf16_tile_t_for(nc, nv)(panel.data(), step, np, xp.data() + p0 * width + c0, width, tile.data() + c0 * ldt + r0,
                                  ldt);
        }
      }
    }
    for (std::size_t c = 0; c < cols; ++c)
      for (std::size_t r = 0; r < count; ++r) out[begin + r + c * ldo] = static_cast<T>(tile[r + c * ldt]) * scale;
  });
#else
  (void)a, (void)rows, (void)pairs, (void)xp, (void)cols, (void)width, (void)scale, (void)out, (void)ldo;
  throw std::logic_error("bf16_product_t: this build has no bfloat16 kernels");
#endif
}

// out (column-major m x cols) = A x for x (column-major n x cols), or with `transposed`
// out (n x cols) = A^T x for x (m x cols), A rounded to bfloat16. `packed` is scratch.
template <class T>
void bf16_gemm(const Bf16Matrix& a, bool transposed, const T* x, std::size_t cols, std::size_t ldx, T* out,
               std::size_t ldo, std::vector<std::uint32_t>& packed) {
  const std::size_t width = (cols + 15) / 16 * 16, len = transposed ? a.m : a.n;
  const int e = thin_exponent(x, len, cols, ldx);
  const T scale = static_cast<T>(std::ldexp(1.0, a.exponent + e));
  pack_bf16_pairs(x, len, cols, ldx, width, std::ldexp(1.0, -e), packed);
  if (!transposed)
    bf16_product(a.rows.data(), a.row_words(), a.m, a.row_words(), packed, cols, width, scale, out, ldo);
  else
    bf16_product_t(a.cols.data(), a.n, a.col_words(), packed, cols, width, scale, out, ldo);
}

}  // namespace vsfast

#if defined(__GNUC__) && !defined(__clang__)
#pragma GCC diagnostic pop
#endif
