// vsfast's own threading. OpenBLAS runs single-threaded and every parallel loop splits its work
// into blocks whose boundaries do not depend on the thread count, so results are bitwise the same
// on any number of threads (OpenBLAS's own threading is not: its level-2 kernels split
// reductions by thread). Blocks are handed out dynamically, which also keeps a loaded machine
// from stalling a whole call on one slow thread.
#pragma once

#include "blas.hpp"

#include <pthread.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <condition_variable>
#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <exception>
#include <functional>
#include <mutex>
#include <thread>
#include <vector>

namespace vsfast {

namespace detail {
inline std::atomic<int>& thread_count() {
  static std::atomic<int> count{1};
  return count;
}
inline bool& inside_parallel_region() {
  thread_local bool inside = false;
  return inside;
}
}  // namespace detail

inline int num_threads() { return detail::thread_count().load(); }

inline void set_num_threads(int n) {
  if (n < 1) throw std::invalid_argument("threads: expected >= 1, got " + std::to_string(n));
  detail::thread_count() = n;
}

// Called once at import: the default thread count is what OpenBLAS detected (it honours
// OPENBLAS_NUM_THREADS and the CPU affinity) unless VSFAST_NUM_THREADS says otherwise; OpenBLAS
// itself is then set to one thread.
inline void init_threads() {
  int n = std::max(1, blas_threads());
  if (const char* env = std::getenv("VSFAST_NUM_THREADS")) {
    const int requested = std::atoi(env);
    if (requested > 0) n = requested;
  }
  set_num_threads(n);
  set_blas_threads(1);
}

namespace detail {

inline void cpu_relax() {
#if defined(__x86_64__) || defined(__i386__)
  __builtin_ia32_pause();
#endif
}

// Threads kept between parallel regions. Starting a thread, or waking a sleeping one, takes
// 0.1-0.2 ms on a virtual machine: as long as many of the regions of one rsvd or chain call, which
// then ran nearly serially. Workers therefore spin for 2 ms after each region, long enough to
// cover the serial steps between the regions of one call (a Cholesky factorisation, a small SVD),
// before they sleep. One caller uses the pool at a time; a concurrent caller gets `false` and
// starts threads of its own.
class WorkerPool {
 public:
  // Run body() on `helpers` pool threads and on the calling thread; body must not throw.
  bool try_run(int helpers, const std::function<void()>& body) {
    std::unique_lock<std::mutex> owner(busy_, std::try_to_lock);
    if (!owner || helpers > kMaxHelpers) return false;
    grow(helpers);
    {
      std::lock_guard<std::mutex> lock(mutex_);
      body_ = &body;
      running_.store(helpers, std::memory_order_relaxed);
      // The generation and the number of helpers wanted change in one atomic store, so a worker
      // that is late for one region can never take part in it with the next region's count.
      const std::uint64_t generation = (state_.load(std::memory_order_relaxed) >> kHelperBits) + 1;
      state_.store(generation << kHelperBits | static_cast<std::uint64_t>(helpers), std::memory_order_release);
    }
    wake_.notify_all();
    body();
    for (int spins = 0; running_.load(std::memory_order_acquire) > 0; ++spins) {
      if (spins < 1 << 14)
        cpu_relax();
      else
        std::this_thread::yield();  // a helper was descheduled
    }
    return true;
  }

 private:
  static constexpr int kHelperBits = 16;
  static constexpr int kMaxHelpers = (1 << kHelperBits) - 1;
  static constexpr std::chrono::microseconds kSpin{2000};

  void grow(int helpers) {
    while (static_cast<int>(threads_) < helpers) {
      // A new worker starts from the current state, so it waits for the next region.
      std::thread(&WorkerPool::work, this, static_cast<int>(threads_), state_.load()).detach();
      ++threads_;
    }
  }

  [[noreturn]] void work(int index, std::uint64_t seen) {
    inside_parallel_region() = true;
    for (;;) {
      seen = await_change(seen);
      if (index < static_cast<int>(seen & kMaxHelpers)) {
        (*body_)();
        running_.fetch_sub(1, std::memory_order_release);
      }
    }
  }

  std::uint64_t await_change(std::uint64_t seen) {
    const auto until = std::chrono::steady_clock::now() + kSpin;
    for (int spins = 1;; ++spins) {
      const std::uint64_t now = state_.load(std::memory_order_acquire);
      if (now != seen) return now;
      cpu_relax();
      if (spins % 1024 == 0 && std::chrono::steady_clock::now() > until) break;
    }
    std::unique_lock<std::mutex> lock(mutex_);
    wake_.wait(lock, [&] { return state_.load(std::memory_order_acquire) != seen; });
    return state_.load(std::memory_order_acquire);
  }

  std::mutex busy_;   // held by the caller whose region the pool runs
  std::mutex mutex_;  // with wake_: sleeping workers
  std::condition_variable wake_;
  std::atomic<std::uint64_t> state_{0};  // generation << kHelperBits | helpers wanted
  std::atomic<int> running_{0};          // helpers still inside the current region
  const std::function<void()>* body_ = nullptr;
  std::size_t threads_ = 0;
};

// The process's pool. Never destroyed: its detached workers may outlive static destructors. A
// child of fork() has none of its parent's threads and gets a new, empty pool.
inline std::atomic<WorkerPool*>& pool_slot() {
  static std::atomic<WorkerPool*> slot{nullptr};
  return slot;
}

inline WorkerPool& worker_pool() {
  static const bool created = [] {
    pool_slot().store(new WorkerPool);
    pthread_atfork(nullptr, nullptr, [] { pool_slot().store(new WorkerPool); });
    return true;
  }();
  (void)created;
  return *pool_slot().load();
}

}  // namespace detail

namespace detail {
// vsfast's threads call OpenBLAS, which must then run on one thread: init_threads sets it so, but
// threadpoolctl.threadpool_limits(n) sets every BLAS it finds, this OpenBLAS included, to n, and
// each of vsfast's workers would start n more threads (3x slower on 2 cores). Set back here.
inline void keep_blas_serial() {
  if (blas_threads() == 1) return;
  static std::mutex setting;
  std::lock_guard<std::mutex> lock(setting);
  if (blas_threads() != 1) set_blas_threads(1);
}
}  // namespace detail

// Call fn(i) for every i in [0, count), on up to `workers` threads. Nested calls run serially.
// The first exception thrown by any item is rethrown here once all threads have stopped.
template <class Fn>
void parallel_for(std::size_t count, int workers, Fn&& fn) {
  if (detail::inside_parallel_region()) workers = 1;
  detail::keep_blas_serial();
  workers = static_cast<int>(std::min<std::size_t>(count, static_cast<std::size_t>(std::max(workers, 1))));
  if (workers <= 1) {
    for (std::size_t i = 0; i < count; ++i) fn(i);
    return;
  }
  std::atomic<std::size_t> next{0};
  std::atomic<bool> failed{false};
  std::exception_ptr error;
  const std::function<void()> run = [&] {
    const bool was_inside = detail::inside_parallel_region();
    detail::inside_parallel_region() = true;
    try {
      for (std::size_t i; !failed.load() && (i = next.fetch_add(1)) < count;) fn(i);
    } catch (...) {
      if (!failed.exchange(true)) error = std::current_exception();
    }
    detail::inside_parallel_region() = was_inside;
  };
  if (!detail::worker_pool().try_run(workers - 1, run)) {
    std::vector<std::thread> pool;
    pool.reserve(static_cast<std::size_t>(workers - 1));
    try {
      for (int t = 1; t < workers; ++t) pool.emplace_back(run);
    } catch (...) {
      failed = true;  // could not start a thread: let the started ones stop, then report
      for (auto& th : pool) th.join();
      throw;
    }
    run();
    for (auto& th : pool) th.join();
  }
  if (error) std::rethrow_exception(error);
}

// Workers for `flops` of work in `blocks` blocks: below a few million flops threads cost more
// than they save.
inline int workers_for(double flops, std::size_t blocks) {
  constexpr double min_parallel_flops = 4e6;
  if (flops < min_parallel_flops) return 1;
  return static_cast<int>(std::min<std::size_t>(blocks, static_cast<std::size_t>(num_threads())));
}

// Spread a batch over threads when every thread gets whole items; otherwise process the items in
// turn and let each one use the threads.
inline int batch_workers(std::size_t count) {
  const std::size_t threads = static_cast<std::size_t>(num_threads());
  if (count >= 2 * threads || count % threads == 0) return static_cast<int>(std::min(count, threads));
  return 1;
}

// Rows (or columns) per block of the blocked kernels below: large enough for BLAS to run at full
// speed on a block, small enough to balance a few threads.
constexpr std::size_t kBlock = 256;

inline std::size_t block_count(std::size_t extent) { return (extent + kBlock - 1) / kBlock; }

// Rows per partial product of the reductions below (Gram matrices, cross products of tall
// matrices), fixed by the row count alone so that the sum does not depend on the threads: small
// enough to spread a basis of a few thousand rows evenly (chunks of 2048 rows left one of two
// threads idle for a third of a 4608-row basis), large enough for BLAS's blocking, and growing
// beyond kMaxPartials chunks so that the partial results' memory stays bounded on tall inputs.
constexpr std::size_t kReductionChunk = 2 * kBlock;
constexpr std::size_t kMaxPartials = 16;

inline std::size_t reduction_chunk(std::size_t rows) {
  const std::size_t even = (rows + kMaxPartials - 1) / kMaxPartials;
  return std::max(kReductionChunk, block_count(even) * kBlock);
}

// Column-major C (m x n) = alpha op(A) op(B) + beta C, split into blocks along the longer of
// C's dimensions. The reduction over k is never split.
template <class T>
void gemm(bool ta, bool tb, blas_int m, blas_int n, blas_int k, T alpha, const T* a, blas_int lda, const T* b,
          blas_int ldb, T beta, T* c, blas_int ldc) {
  const bool by_rows = m >= n;
  const std::size_t extent = static_cast<std::size_t>(by_rows ? m : n), blocks = block_count(extent);
  const double flops = 2.0 * m * n * k;
  parallel_for(blocks, workers_for(flops, blocks), [&](std::size_t i) {
    const std::size_t begin = i * kBlock;
    const blas_int len = static_cast<blas_int>(std::min(kBlock, extent - begin));
    if (by_rows)  // rows of op(A) and C
      blas_gemm(ta, tb, len, n, k, alpha, ta ? a + begin * lda : a + begin, lda, b, ldb, beta, c + begin, ldc);
    else  // columns of op(B) and C
      blas_gemm(ta, tb, m, len, k, alpha, a, lda, tb ? b + begin : b + begin * ldb, ldb, beta, c + begin * ldc,
                ldc);
  });
}

// Row-major C (m x n) = alpha op(A) op(B) + beta C, via the column-major identity C^T = op(B)^T op(A)^T.
template <class T>
void gemm_rowmajor(bool ta, bool tb, blas_int m, blas_int n, blas_int k, T alpha, const T* a, blas_int lda,
                   const T* b, blas_int ldb, T beta, T* c, blas_int ldc) {
  gemm(tb, ta, n, m, k, alpha, b, ldb, a, lda, beta, c, ldc);
}

// b (m x n, column-major) <- b r^-1 for the upper-triangular n x n r, in blocks of rows.
template <class T>
void trsm_right_upper(blas_int m, blas_int n, const T* r, blas_int ldr, T* b, blas_int ldb) {
  const std::size_t blocks = block_count(static_cast<std::size_t>(m));
  parallel_for(blocks, workers_for(1.0 * m * n * n, blocks), [&](std::size_t i) {
    const std::size_t begin = i * kBlock;
    const blas_int len = static_cast<blas_int>(std::min(kBlock, static_cast<std::size_t>(m) - begin));
    blas_trsm_upper(CblasRight, len, n, r, ldr, b + begin, ldb);
  });
}

// Elementwise work over `rows` rows of `row_cost` operations each, in blocks fixed by row_cost.
template <class Fn>
void parallel_rows(std::size_t rows, std::size_t row_cost, Fn&& fn) {
  constexpr std::size_t work_per_block = 1 << 16;
  const std::size_t per_block = std::max<std::size_t>(1, work_per_block / std::max<std::size_t>(1, row_cost));
  const std::size_t blocks = (rows + per_block - 1) / per_block;
  parallel_for(blocks, workers_for(10.0 * rows * row_cost, blocks), [&](std::size_t i) {
    const std::size_t begin = i * per_block;
    fn(begin, std::min(rows, begin + per_block));
  });
}

// out (size values) = the sum over fixed chunks of m rows of part(begin, rows, partial), which
// writes a chunk's partial result: computed in parallel, summed in chunk order, so the result does
// not depend on the threads. No rows: zero.
template <class T, class Part>
void reduce_row_chunks(std::size_t m, std::size_t size, double flops, T* out, Part&& part) {
  const std::size_t chunk = reduction_chunk(m), chunks = (m + chunk - 1) / chunk;
  if (chunks == 0) {
    std::fill_n(out, size, T(0));
    return;
  }
  std::vector<T> partial((chunks - 1) * size);
  parallel_for(chunks, workers_for(flops, chunks), [&](std::size_t i) {
    const std::size_t begin = i * chunk;
    part(begin, std::min(chunk, m - begin), i == 0 ? out : partial.data() + (i - 1) * size);
  });
  if (chunks > 1)
    parallel_rows(size, chunks - 1, [&](std::size_t begin, std::size_t end) {
      for (std::size_t i = 1; i < chunks; ++i)
        for (std::size_t j = begin; j < end; ++j) out[j] += partial[(i - 1) * size + j];
    });
}

// c (n x n, upper triangle) = a^T a for the column-major m x n matrix a.
template <class T>
void gram(blas_int m, blas_int n, const T* a, blas_int lda, T* c) {
  reduce_row_chunks(static_cast<std::size_t>(m), static_cast<std::size_t>(n) * n, 1.0 * m * n * n, c,
                    [&](std::size_t begin, std::size_t rows, T* out) {
                      syrk_gram(n, static_cast<blas_int>(rows), a + begin, lda, out, n);
                    });
}

// c (d x cols) = a^T b for the column-major m x d a and m x cols b.
template <class T>
void cross(blas_int m, blas_int d, blas_int cols, const T* a, blas_int lda, const T* b, blas_int ldb, T* c) {
  reduce_row_chunks(static_cast<std::size_t>(m), static_cast<std::size_t>(d) * cols, 2.0 * m * d * cols, c,
                    [&](std::size_t begin, std::size_t rows, T* out) {
                      blas_gemm(true, false, d, cols, static_cast<blas_int>(rows), T(1), a + begin, lda, b + begin,
                                ldb, T(0), out, d);
                    });
}

}  // namespace vsfast
