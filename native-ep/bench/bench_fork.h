// Shared by the CPU benchmark drivers (bench_*.cpp): forking the ranks of one world size on this
// host, and the small helpers their option parsing and reports use. Public C ABI only.
#ifndef NATIVEEP_BENCH_BENCH_FORK_H_
#define NATIVEEP_BENCH_BENCH_FORK_H_

#include <poll.h>
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <numeric>
#include <random>
#include <string>
#include <vector>

#include "nativeep/c_api.h"

namespace nep_bench {

inline double now_us() {
  return std::chrono::duration<double, std::micro>(
             std::chrono::steady_clock::now().time_since_epoch())
      .count();
}

inline double median(std::vector<double> v) {
  if (v.empty()) return 0.0;
  std::sort(v.begin(), v.end());
  const size_t n = v.size();
  return n % 2 == 1 ? v[n / 2] : 0.5 * (v[n / 2 - 1] + v[n / 2]);
}

// Routing of t tokens to k distinct uniform experts of `experts` each (a partial Fisher-Yates
// shuffle per token): calls pick(i, j, expert) for token i's j-th expert, in that order, so pick
// may draw from rng too.
template <class Pick>
void distinct_experts(std::mt19937_64& rng, int64_t t, int64_t k, int32_t experts, Pick pick) {
  std::vector<int64_t> perm(static_cast<size_t>(experts));
  for (int64_t i = 0; i < t; ++i) {
    std::iota(perm.begin(), perm.end(), 0);
    for (int64_t j = 0; j < k; ++j) {
      std::uniform_int_distribution<int64_t> draw(j, experts - 1);
      std::swap(perm[j], perm[draw(rng)]);
      pick(i, j, perm[j]);
    }
  }
}

// Reports a failed call and returns false.
inline bool ok(int32_t rc, const char* what, const char* err, int rank) {
  if (rc != NEP_OK)
    std::fprintf(stderr, "rank %d: %s failed (status %d): %s\n", rank, what, rc, err);
  return rc == NEP_OK;
}

// Creates the rank's cpu-shm communicator (rendezvous on 127.0.0.1:port); nullptr after
// reporting a failure.
inline nep_comm* create_comm(int world, int rank, int port, const char* token) {
  char err[2048];
  nep_comm* comm = nullptr;
  const int32_t rc = nep_comm_create_shm(rank, world, rank, world, "127.0.0.1", port, token, 120000,
                                         &comm, err, sizeof err);
  return ok(rc, "nep_comm_create_shm", err, rank) ? comm : nullptr;
}

// NEP_WIRE_* for "fp32", "bf16", "fp8", "mxfp8"; -1 (and a message) otherwise.
inline int32_t parse_wire(const std::string& v) {
  if (v == "fp32") return NEP_WIRE_FP32;
  if (v == "bf16") return NEP_WIRE_BF16;
  if (v == "fp8") return NEP_WIRE_FP8;
  if (v == "mxfp8") return NEP_WIRE_MXFP8;
  std::fprintf(stderr, "unknown wire '%s' (fp32, bf16, fp8, mxfp8)\n", v.c_str());
  return -1;
}

inline const char* wire_label(int32_t w) {
  switch (w) {
    case NEP_WIRE_FP32: return "fp32";
    case NEP_WIRE_BF16: return "bf16";
    case NEP_WIRE_FP8: return "fp8";
    default: return "mxfp8";
  }
}

// The workload both CPU benchmarks take; each driver's options extend it.
struct Shape {
  std::vector<int> worlds = {2, 4};  // world sizes to run, one after another
  int64_t tokens = 4096;             // per rank
  int64_t hidden = 7168;
  int32_t experts = 256;
  int32_t topk = 8;
  int iters = 5;  // timed iterations
};

// The value of option argv[i], advancing i past it; exits (status 2) with a message when the
// command line ends first.
inline std::string option_value(int argc, char** argv, int& i) {
  if (i + 1 >= argc) {
    std::fprintf(stderr, "%s needs a value\n", argv[i]);
    std::exit(2);
  }
  return argv[++i];
}

// Parses option argv[i] into s when it is one of Shape's (--worlds 2,4 --tokens --hidden
// --experts --topk --iters), advancing i past its value; false when it is none of them.
inline bool parse_shape_option(int argc, char** argv, int& i, Shape& s);

// "2,4,8" -> {"2", "4", "8"}.
inline std::vector<std::string> split_list(const std::string& v) {
  std::vector<std::string> out;
  size_t pos = 0;
  while (pos <= v.size()) {
    const size_t comma = v.find(',', pos);
    out.push_back(v.substr(pos, comma == std::string::npos ? std::string::npos : comma - pos));
    if (comma == std::string::npos) break;
    pos = comma + 1;
  }
  return out;
}

inline bool parse_shape_option(int argc, char** argv, int& i, Shape& s) {
  const std::string option = argv[i];
  auto next = [&] { return option_value(argc, argv, i); };
  if (option == "--worlds") {
    s.worlds.clear();
    for (const std::string& v : split_list(next())) s.worlds.push_back(std::atoi(v.c_str()));
  } else if (option == "--tokens") {
    s.tokens = std::atoll(next().c_str());
  } else if (option == "--hidden") {
    s.hidden = std::atoll(next().c_str());
  } else if (option == "--experts") {
    s.experts = std::atoi(next().c_str());
  } else if (option == "--topk") {
    s.topk = std::atoi(next().c_str());
  } else if (option == "--iters") {
    s.iters = std::atoi(next().c_str());
  } else {
    return false;
  }
  return true;
}

// Parses the command line: Shape's options, and the driver's own through own(option, next), which
// returns whether it took the option (next() gives its value). False after reporting an unknown
// option (see the comment at the top of `source`).
template <class Own>
bool parse_options(int argc, char** argv, Shape& s, const char* source, Own own) {
  for (int i = 1; i < argc; ++i) {
    const std::string option = argv[i];
    auto next = [&] { return option_value(argc, argv, i); };
    if (parse_shape_option(argc, argv, i, s) || own(option, next)) continue;
    std::fprintf(stderr, "unknown option %s (see the comment at the top of %s)\n", option.c_str(),
                 source);
    return false;
  }
  return true;
}

// Forks the ranks of one world size. Rank 0 serves the rendezvous store (job token `job`) and
// tells the others its port through pipes; every rank runs run_rank(rank, port) and exits with
// its result. Waits for all of them; past `deadline` the ranks still running are killed (the
// message says so) and the result is 3. Returns the worst exit code.
template <class RankFn>
int fork_world(int world, const char* job, std::chrono::seconds deadline, RankFn run_rank) {
  std::vector<int> port_r(world), port_w(world);
  for (int r = 0; r < world; ++r) {
    int p[2];
    if (pipe(p) != 0) return 2;
    port_r[r] = p[0];
    port_w[r] = p[1];
  }
  std::fflush(nullptr);
  std::vector<pid_t> pids(world, -1);
  for (int r = 0; r < world; ++r) {
    const pid_t pid = fork();
    if (pid == 0) {
      int port = 0;
      nep_store_server* server = nullptr;
      char err[1024];
      if (r == 0) {
        if (nep_store_server_create("127.0.0.1", 0, job, &server, err, sizeof err) != NEP_OK) {
          std::fprintf(stderr, "store server: %s\n", err);
          _exit(2);
        }
        port = nep_store_server_port(server);
        for (int q = 1; q < world; ++q) {
          const std::string s = std::to_string(port) + "\n";
          if (write(port_w[q], s.data(), s.size()) < 0) _exit(2);
        }
      } else {
        pollfd pf{port_r[r], POLLIN, 0};
        char b[32] = {0};
        if (poll(&pf, 1, 60000) <= 0 || read(port_r[r], b, sizeof b - 1) <= 0) _exit(2);
        port = std::atoi(b);
      }
      const int code = run_rank(r, port);
      // Rank 0 finished the last collective, so the others are done with the store.
      if (r == 0) nep_store_server_destroy(server);
      std::fflush(nullptr);
      _exit(code);
    }
    pids[r] = pid;
  }
  int worst = 0;
  const auto end = std::chrono::steady_clock::now() + deadline;
  int running = world;
  while (running > 0) {
    for (int r = 0; r < world; ++r) {
      if (pids[r] < 0) continue;
      int status = 0;
      if (waitpid(pids[r], &status, WNOHANG) == pids[r]) {
        const int code = WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
        if (code != 0) std::fprintf(stderr, "rank %d exited with %d\n", r, code);
        worst = std::max(worst, code);
        pids[r] = -1;
        --running;
      }
    }
    if (running > 0 && std::chrono::steady_clock::now() > end) {
      for (int r = 0; r < world; ++r) {
        if (pids[r] > 0) {
          std::fprintf(stderr, "deadline of %llds passed: rank %d killed\n",
                       static_cast<long long>(deadline.count()), r);
          kill(pids[r], SIGKILL);
          waitpid(pids[r], nullptr, 0);
        }
      }
      worst = 3;
      break;
    }
    usleep(2000);
  }
  for (int r = 0; r < world; ++r) {
    close(port_r[r]);
    close(port_w[r]);
  }
  return worst;
}

// Runs fork_world for each of s.worlds in turn (job token `job`, each world under `deadline`),
// every rank calling run_rank(world, rank, port); a world size that does not divide s.experts
// stops there (status 2). Returns the worst exit code.
template <class RankFn>
int run_worlds(const Shape& s, const char* job, std::chrono::seconds deadline, RankFn run_rank) {
  int worst = 0;
  for (int world : s.worlds) {
    if (world < 1 || s.experts % world != 0) {
      std::fprintf(stderr, "world %d does not divide %d experts\n", world, s.experts);
      return 2;
    }
    worst = std::max(worst, fork_world(world, job, deadline, [&](int rank, int port) {
      return run_rank(world, rank, port);
    }));
  }
  return worst;
}

}  // namespace nep_bench

#endif  // NATIVEEP_BENCH_BENCH_FORK_H_
