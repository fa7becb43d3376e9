// Multi-process harness of the GPU drivers: forks one process per GPU (rank) from a parent that
// never touches CUDA, and gives the ranks a small exchange (all-gather, barrier) over an anonymous
// shared mapping. The project's rendezvous store will implement the same Exchange interface.
#ifndef NATIVEEP_GPU_TESTS_HARNESS_H_
#define NATIVEEP_GPU_TESTS_HARNESS_H_

#include <signal.h>
#include <sys/mman.h>
#include <sys/wait.h>
#include <unistd.h>

#include <atomic>
#include <chrono>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <functional>
#include <stdexcept>
#include <string>
#include <thread>
#include <vector>

namespace nepgpu {

// What the ranks need from a rendezvous.
class Exchange {
 public:
  virtual ~Exchange() = default;
  virtual int rank() const = 0;
  virtual int world() const = 0;
  // Every rank contributes n bytes; out receives world * n bytes ordered by rank.
  virtual void allgather(const void* mine, size_t n, void* out) = 0;
  void barrier() { allgather(nullptr, 0, nullptr); }
};

// All-gather through a MAP_SHARED region created before fork. Call k writes slot [k % 2][rank],
// raises arrive[rank] to k and waits for every rank's arrive >= k: a rank can only reuse a slot two
// calls later, after every rank has arrived at the call in between (so has read this one).
class ForkShmExchange : public Exchange {
 public:
  static constexpr int kMaxRanks = 8;
  static constexpr size_t kSlotBytes = 1 << 16;
  struct Region {
    std::atomic<uint64_t> arrive[kMaxRanks];
    unsigned char slots[2][kMaxRanks][kSlotBytes];
  };

  static Region* map_region() {
    void* p =
        mmap(nullptr, sizeof(Region), PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, -1, 0);
    if (p == MAP_FAILED) throw std::runtime_error("mmap of the exchange region failed");
    Region* r = static_cast<Region*>(p);
    for (auto& a : r->arrive) a.store(0);
    return r;
  }

  ForkShmExchange(Region* region, int rank, int world, int timeout_s)
      : r_(region), rank_(rank), world_(world), timeout_s_(timeout_s) {}

  int rank() const override { return rank_; }
  int world() const override { return world_; }

  void allgather(const void* mine, size_t n, void* out) override {
    if (n > kSlotBytes)
      throw std::runtime_error("exchange: " + std::to_string(n) + " bytes exceed the slot of " +
                               std::to_string(kSlotBytes));
    const uint64_t k = ++calls_;
    const int par = int(k & 1);
    if (n > 0) std::memcpy(r_->slots[par][rank_], mine, n);
    r_->arrive[rank_].store(k, std::memory_order_release);
    const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(timeout_s_);
    for (int p = 0; p < world_; ++p) {
      while (r_->arrive[p].load(std::memory_order_acquire) < k) {
        if (std::chrono::steady_clock::now() > deadline)
          throw std::runtime_error("exchange: rank " + std::to_string(rank_) + " waited " +
                                   std::to_string(timeout_s_) + " s for rank " + std::to_string(p) +
                                   " at call " + std::to_string(k));
        std::this_thread::sleep_for(std::chrono::microseconds(50));
      }
    }
    if (n > 0)
      for (int p = 0; p < world_; ++p)
        std::memcpy(static_cast<unsigned char*>(out) + size_t(p) * n, r_->slots[par][p], n);
  }

 private:
  Region* r_;
  int rank_, world_, timeout_s_;
  uint64_t calls_ = 0;
};

// Forks `world` ranks running body(exchange); returns the number of ranks that failed. A rank that
// fails makes the parent end the others after `grace_s` seconds.
inline int run_ranks(int world, int timeout_s, int grace_s,
                     const std::function<int(Exchange&)>& body) {
  ForkShmExchange::Region* region = ForkShmExchange::map_region();
  std::fflush(stdout);
  std::fflush(stderr);
  std::vector<pid_t> pids;
  for (int r = 0; r < world; ++r) {
    const pid_t pid = fork();
    if (pid < 0) {
      std::perror("fork");
      for (pid_t p : pids) kill(p, SIGKILL);
      return world;
    }
    if (pid == 0) {
      int rc = 1;
      try {
        ForkShmExchange ex(region, r, world, timeout_s);
        rc = body(ex);
      } catch (const std::exception& e) {
        std::fprintf(stderr, "[rank %d] fatal: %s\n", r, e.what());
        rc = 2;
      }
      std::fflush(stdout);
      std::fflush(stderr);
      _exit(rc);
    }
    pids.push_back(pid);
  }
  int failed = 0, left = world;
  std::vector<bool> done(world, false);
  auto kill_deadline = std::chrono::steady_clock::time_point::max();
  while (left > 0) {
    int status = 0;
    const pid_t pid = waitpid(-1, &status, WNOHANG);
    if (pid > 0) {
      for (int r = 0; r < world; ++r) {
        if (pids[r] != pid) continue;
        done[r] = true;
        --left;
        const bool ok = WIFEXITED(status) && WEXITSTATUS(status) == 0;
        if (!ok) {
          ++failed;
          if (WIFEXITED(status))
            std::fprintf(stderr, "[parent] rank %d exited with %d\n", r, WEXITSTATUS(status));
          else
            std::fprintf(stderr, "[parent] rank %d ended by signal %d\n", r,
                         WIFSIGNALED(status) ? WTERMSIG(status) : -1);
          if (kill_deadline == std::chrono::steady_clock::time_point::max())
            kill_deadline = std::chrono::steady_clock::now() + std::chrono::seconds(grace_s);
        }
      }
      continue;
    }
    if (std::chrono::steady_clock::now() > kill_deadline) {
      for (int r = 0; r < world; ++r)
        if (!done[r]) {
          std::fprintf(stderr, "[parent] ending rank %d (pid %d) after a peer failed\n", r,
                       (int)pids[r]);
          kill(pids[r], SIGKILL);
        }
      kill_deadline = std::chrono::steady_clock::time_point::max();
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(5));
  }
  munmap(region, sizeof(ForkShmExchange::Region));
  return failed;
}

// "--name value" options.
inline const char* opt(int argc, char** argv, const char* name, const char* def) {
  for (int i = 1; i + 1 < argc; ++i)
    if (std::strcmp(argv[i], name) == 0) return argv[i + 1];
  return def;
}
inline bool flag(int argc, char** argv, const char* name) {
  for (int i = 1; i < argc; ++i)
    if (std::strcmp(argv[i], name) == 0) return true;
  return false;
}

}  // namespace nepgpu

#endif  // NATIVEEP_GPU_TESTS_HARNESS_H_
