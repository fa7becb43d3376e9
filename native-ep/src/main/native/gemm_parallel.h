// A plain fork-join over std::thread for the CPU GEMM path: parallel_rows(count, work, body)
// runs body(begin, end) over [0, count) in chunks on up to the hardware's threads (inline when
// the work, count x work multiply-adds, is small).
#ifndef NATIVEEP_SRC_GEMM_PARALLEL_H_
#define NATIVEEP_SRC_GEMM_PARALLEL_H_

#include <algorithm>
#include <cstdint>
#include <exception>
#include <thread>
#include <vector>

namespace nep {
namespace gemm {

template <class Body>
void parallel_rows(int64_t count, int64_t work_per_row, Body&& body) {
  if (count <= 0) return;
  constexpr int64_t kMinWorkPerThread = int64_t(1) << 22;  // multiply-adds
  const int64_t hw = std::max<int64_t>(1, std::thread::hardware_concurrency());
  const int64_t by_work =
      std::max<int64_t>(1, count * std::max<int64_t>(1, work_per_row) / kMinWorkPerThread);
  const int64_t threads = std::min({hw, by_work, count, int64_t(64)});
  if (threads <= 1) {
    body(int64_t(0), count);
    return;
  }
  std::vector<std::thread> pool;
  std::vector<std::exception_ptr> errors(static_cast<size_t>(threads));
  pool.reserve(static_cast<size_t>(threads));
  for (int64_t t = 0; t < threads; ++t) {
    const int64_t begin = count * t / threads, end = count * (t + 1) / threads;
    pool.emplace_back([&, t, begin, end] {
      try {
        body(begin, end);
      } catch (...) {
        errors[static_cast<size_t>(t)] = std::current_exception();
      }
    });
  }
  for (auto& th : pool) th.join();
  for (auto& e : errors)
    if (e) std::rethrow_exception(e);
}

}  // namespace gemm
}  // namespace nep

#endif  // NATIVEEP_SRC_GEMM_PARALLEL_H_
