// Helpers shared by the native tests: seeded random routing, a plain all-to-all oracle for
// dispatch/combine, poisoning of outputs, and an in-process world of W ranks on threads.
#ifndef NATIVEEP_TESTS_TEST_SUPPORT_H_
#define NATIVEEP_TESTS_TEST_SUPPORT_H_

#include <algorithm>
#include <condition_variable>
#include <cstdint>
#include <cstring>
#include <exception>
#include <functional>
#include <limits>
#include <mutex>
#include <numeric>
#include <random>
#include <string>
#include <thread>
#include <vector>

#include "error.h"
#include "transport.h"

namespace neptest {

inline float nan_f() { return std::numeric_limits<float>::quiet_NaN(); }

template <class T>
void poison(std::vector<T>& v) {
  std::memset(v.data(), 0xFF, v.size() * sizeof(T));  // NaN for floats, -1 for ints
}

// Routing of one rank: topk_idx [T, K] with distinct experts per row, some -1 slots; hot_share
// of the rows select expert `hot` first (imbalance).
struct Routing {
  int64_t tokens = 0;
  int32_t topk = 0;
  std::vector<int64_t> idx;
  std::vector<float> weights;
};

inline Routing random_routing(std::mt19937_64& rng, int64_t tokens, int32_t topk, int32_t experts,
                              double minus_one_share, double hot_share, int32_t hot = 0) {
  Routing r;
  r.tokens = tokens;
  r.topk = topk;
  r.idx.resize(static_cast<size_t>(tokens * topk));
  r.weights.resize(r.idx.size());
  std::vector<int64_t> perm(experts);
  std::uniform_real_distribution<double> u(0.0, 1.0);
  for (int64_t t = 0; t < tokens; ++t) {
    std::iota(perm.begin(), perm.end(), 0);
    std::shuffle(perm.begin(), perm.end(), rng);
    if (u(rng) < hot_share) std::swap(perm[0], *std::find(perm.begin(), perm.end(), hot));
    for (int32_t k = 0; k < topk; ++k) {
      int64_t e = k < experts ? perm[k] : -1;
      if (u(rng) < minus_one_share) e = -1;
      r.idx[t * topk + k] = e;
      r.weights[t * topk + k] = static_cast<float>(u(rng));
    }
  }
  return r;
}

inline std::vector<float> random_rows(std::mt19937_64& rng, int64_t rows, int64_t hidden) {
  std::normal_distribution<float> n(0.0f, 1.0f);
  std::vector<float> x(static_cast<size_t>(rows * hidden));
  for (float& v : x) v = n(rng);
  return x;
}

// What rank `me` should receive, written as the plainest all-to-all over every rank's routing.
struct OracleRecv {
  std::vector<int32_t> src_rank, src_idx;  // [R]
  std::vector<int64_t> local_ids;          // [R, K]
  std::vector<float> weights;              // [R, K], zero where not local
  std::vector<int32_t> per_expert;         // [El]
};

inline OracleRecv oracle_recv(const std::vector<Routing>& all, int32_t me, int32_t experts) {
  const int32_t world = static_cast<int32_t>(all.size());
  const int32_t local = experts / world;
  OracleRecv o;
  o.per_expert.assign(local, 0);
  for (int32_t s = 0; s < world; ++s) {
    const Routing& r = all[s];
    for (int64_t t = 0; t < r.tokens; ++t) {
      bool mine = false;
      for (int32_t k = 0; k < r.topk; ++k) {
        const int64_t e = r.idx[t * r.topk + k];
        if (e >= 0 && e / local == me) mine = true;
      }
      if (!mine) continue;
      o.src_rank.push_back(s);
      o.src_idx.push_back(static_cast<int32_t>(t));
      for (int32_t k = 0; k < r.topk; ++k) {
        const int64_t e = r.idx[t * r.topk + k];
        const bool local_e = e >= 0 && e / local == me;
        o.local_ids.push_back(local_e ? e - static_cast<int64_t>(me) * local : -1);
        o.weights.push_back(local_e ? r.weights[t * r.topk + k] : 0.0f);
        if (local_e) ++o.per_expert[e - static_cast<int64_t>(me) * local];
      }
    }
  }
  return o;
}

// ---- An in-process world: W ranks on W threads, exchanging through full mailboxes ------------

class ThreadWorld {
 public:
  explicit ThreadWorld(int32_t world) : world_(world), boxes_(static_cast<size_t>(world) * world) {}
  int32_t world() const { return world_; }
  std::vector<uint8_t>& box(int32_t src, int32_t dst) { return boxes_[src * world_ + dst]; }
  void barrier() {
    std::unique_lock<std::mutex> lock(mu_);
    const int64_t gen = generation_;
    if (++arrived_ == world_) {
      arrived_ = 0;
      ++generation_;
      cv_.notify_all();
    } else {
      cv_.wait(lock, [&] { return generation_ != gen; });
    }
  }

 private:
  int32_t world_;
  std::vector<std::vector<uint8_t>> boxes_;
  std::mutex mu_;
  std::condition_variable cv_;
  int32_t arrived_ = 0;
  int64_t generation_ = 0;
};

// Produces in chunks of 3 rows and consumes in chunks of 2, so chunk arithmetic is exercised.
class ThreadTransport final : public nep::Transport {
 public:
  ThreadTransport(ThreadWorld& world, int32_t rank) : world_(world), rank_(rank) {}
  int32_t rank() const override { return rank_; }
  int32_t world_size() const override { return world_.world(); }
  const char* name() const override { return "test-threads"; }
  void exchange_rows(const nep::RowExchange& ex, nep::RowProducer& producer,
                     nep::RowConsumer& consumer) override {
    const int32_t w = world_.world();
    for (int32_t d = 0; d < w; ++d) {
      std::vector<uint8_t>& box = world_.box(rank_, d);
      box.assign(static_cast<size_t>(ex.send_rows[d] * ex.row_bytes), 0);
      for (int64_t first = 0; first < ex.send_rows[d]; first += 3) {
        const int64_t n = std::min<int64_t>(3, ex.send_rows[d] - first);
        producer.produce(d, first, n, box.data() + first * ex.row_bytes);
      }
    }
    world_.barrier();
    for (int32_t s = 0; s < w; ++s) {
      const std::vector<uint8_t>& box = world_.box(s, rank_);
      if (static_cast<int64_t>(box.size()) != ex.recv_rows[s] * ex.row_bytes) {
        world_.barrier();
        nep::fail(NEP_ERR_INTERNAL, ex.what, ": rank ", rank_, " expected ", ex.recv_rows[s],
                  " rows from rank ", s, " but got ", box.size() / ex.row_bytes);
      }
      for (int64_t first = 0; first < ex.recv_rows[s]; first += 2) {
        const int64_t n = std::min<int64_t>(2, ex.recv_rows[s] - first);
        consumer.consume(s, first, n, box.data() + first * ex.row_bytes);
      }
    }
    world_.barrier();
  }

 private:
  ThreadWorld& world_;
  int32_t rank_;
};

// Runs body(transport) on W threads; rethrows the first exception.
inline void run_world(int32_t world, const std::function<void(nep::Transport&)>& body) {
  ThreadWorld w(world);
  std::vector<std::exception_ptr> errors(world);
  std::vector<std::thread> threads;
  for (int32_t r = 0; r < world; ++r) {
    threads.emplace_back([&, r] {
      ThreadTransport t(w, r);
      try {
        body(t);
      } catch (...) {
        errors[r] = std::current_exception();
      }
    });
  }
  for (auto& th : threads) th.join();
  for (auto& e : errors) {
    if (e) std::rethrow_exception(e);
  }
}

}  // namespace neptest

#endif  // NATIVEEP_TESTS_TEST_SUPPORT_H_
