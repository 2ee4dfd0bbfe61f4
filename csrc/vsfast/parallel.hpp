// Batch-level parallelism: a stack of independent problems spread over threads, each thread
// making single-threaded BLAS calls, when that beats threading inside each BLAS call.
#pragma once

#include "blas.hpp"

#include <algorithm>
#include <atomic>
#include <cstddef>
#include <exception>
#include <mutex>
#include <thread>
#include <vector>

namespace vsfast {

// While any batch runs on our own threads, OpenBLAS is set to one thread (its thread count is
// process-wide: this OpenBLAS has no per-thread setting), and the previous count is restored when
// the last such batch ends. Results do not depend on BLAS's thread count, only speed does.
class SerialBlasScope {
 public:
  SerialBlasScope() {
    std::lock_guard<std::mutex> lock(mutex());
    if (state().depth++ == 0) {
      state().saved = blas_threads();
      set_blas_threads(1);
    }
  }
  ~SerialBlasScope() {
    std::lock_guard<std::mutex> lock(mutex());
    if (--state().depth == 0) set_blas_threads(state().saved);
  }
  SerialBlasScope(const SerialBlasScope&) = delete;
  SerialBlasScope& operator=(const SerialBlasScope&) = delete;

  // The thread count a call may use: OpenBLAS's own (it honours OPENBLAS_NUM_THREADS and the
  // CPU affinity), or the one saved while a batch has set it to one.
  static int configured_threads() {
    std::lock_guard<std::mutex> lock(mutex());
    return state().depth > 0 ? state().saved : blas_threads();
  }

 private:
  struct State {
    int depth = 0, saved = 1;
  };
  static std::mutex& mutex() {
    static std::mutex m;
    return m;
  }
  static State& state() {
    static State s;
    return s;
  }
};

inline int available_threads() { return std::max(1, SerialBlasScope::configured_threads()); }

// Spread a batch over threads only when every thread gets whole items: a batch smaller than the
// thread count, or one that leaves a thread idle for a round, runs faster with threaded BLAS.
inline int batch_workers(std::size_t count) {
  const std::size_t threads = static_cast<std::size_t>(available_threads());
  if (count < 2 || threads < 2) return 1;
  if (count >= 2 * threads || count % threads == 0) return static_cast<int>(std::min(count, threads));
  return 1;
}

// Call fn(i) for every i in [0, count) on `workers` threads. Items are handed out by an atomic
// counter; each item's result depends only on i, so the outcome is the same on any thread count.
// The first exception thrown by any item is rethrown in the caller once all threads have stopped.
template <class Fn>
void parallel_for(std::size_t count, int workers, Fn&& fn) {
  if (workers <= 1 || count <= 1) {
    for (std::size_t i = 0; i < count; ++i) fn(i);
    return;
  }
  std::atomic<std::size_t> next{0};
  std::atomic<bool> failed{false};
  std::exception_ptr error;
  auto run = [&] {
    try {
      for (std::size_t i; !failed.load() && (i = next.fetch_add(1)) < count;) fn(i);
    } catch (...) {
      if (!failed.exchange(true)) error = std::current_exception();
    }
  };
  SerialBlasScope serial_blas;
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
  if (error) std::rethrow_exception(error);
}

// Elementwise work over `rows` rows in chunks; threads only pay off for a large amount of work.
template <class Fn>
void parallel_rows(std::size_t rows, std::size_t row_cost, Fn&& fn) {
  constexpr std::size_t min_work_per_chunk = 1 << 16;
  const std::size_t rows_per_chunk = std::max<std::size_t>(1, min_work_per_chunk / std::max<std::size_t>(1, row_cost));
  const std::size_t chunks = (rows + rows_per_chunk - 1) / rows_per_chunk;
  const int workers = static_cast<int>(std::min<std::size_t>(chunks, static_cast<std::size_t>(available_threads())));
  parallel_for(chunks, workers, [&](std::size_t c) {
    const std::size_t begin = c * rows_per_chunk;
    fn(begin, std::min(rows, begin + rows_per_chunk));
  });
}

}  // namespace vsfast
