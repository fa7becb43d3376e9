// Runs a test body in W forked processes, one per rank, as a real job would: child 0 serves the
// rendezvous store on 127.0.0.1 with a free port and passes the port to the others; every child
// gets a connected store client. A body returns its failures as text; the parent collects exit
// codes and that text, and kills any child still running at the deadline.
#ifndef NATIVEEP_TESTS_MULTIPROCESS_H_
#define NATIVEEP_TESTS_MULTIPROCESS_H_

#include <poll.h>
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <cstdio>
#include <functional>
#include <memory>
#include <string>
#include <thread>
#include <vector>

#include "error.h"
#include "store_client.h"
#include "store_server.h"
#include "sys_util.h"

namespace neptest {

struct RankEnv {
  int32_t rank = 0;
  int32_t world = 1;
  int32_t port = 0;
  std::string host = "127.0.0.1";
  std::string token;
  nep::StoreClient* store = nullptr;
  std::string* notes = nullptr;  // extra lines for the parent (e.g. segment names)
};

struct ProcessResults {
  std::vector<int> exit_codes;    // 0 pass, 1 checks failed, 2 threw, 3 test exit hook, -signal
  std::vector<std::string> text;  // failures and notes per rank
};

namespace detail {

inline void write_all(int fd, const std::string& s) {
  size_t off = 0;
  while (off < s.size()) {
    const ssize_t n = write(fd, s.data() + off, s.size() - off);
    if (n <= 0) return;
    off += static_cast<size_t>(n);
  }
}

inline std::string read_all(int fd) {
  std::string out;
  char buf[4096];
  for (;;) {
    const ssize_t n = read(fd, buf, sizeof buf);
    if (n <= 0) return out;
    out.append(buf, static_cast<size_t>(n));
  }
}

// What a child runs; never returns.
[[noreturn]] inline void child_main(int32_t rank, int32_t world, int port_read,
                                    const std::vector<int>& port_writes, int report,
                                    int64_t linger_ms,
                                    const std::function<std::string(RankEnv&)>& body) {
  std::string text;
  int code = 0;
  std::unique_ptr<nep::StoreServer> server;
  try {
    RankEnv env;
    env.rank = rank;
    env.world = world;
    env.token = "test-token";
    if (rank == 0) {
      server = std::make_unique<nep::StoreServer>(env.host, 0, env.token);
      env.port = server->port();
      for (int fd : port_writes) write_all(fd, std::to_string(env.port) + "\n");
    } else {
      pollfd p{port_read, POLLIN, 0};
      if (poll(&p, 1, 20000) <= 0) throw nep::Error(NEP_ERR_TIMEOUT, "no store port from rank 0");
      char buf[32] = {0};
      if (read(port_read, buf, sizeof buf - 1) <= 0)
        throw nep::Error(NEP_ERR_PEER, "rank 0 died before the store started");
      env.port = std::atoi(buf);
    }
    nep::StoreClient store(env.host, env.port, env.token, 20000, "rank " + std::to_string(rank));
    env.store = &store;
    env.notes = &text;
    const std::string failures = body(env);
    if (!failures.empty()) {
      text += failures;
      code = 1;
    }
    store.set("test/done/" + std::to_string(rank), "1");
    if (rank == 0) {
      // Keep serving until every rank is done (or the linger time ends: a rank may have died).
      const int64_t until = nep::monotonic_ms() + linger_ms;
      for (int32_t r = 1; r < world; ++r) {
        const int64_t left = until - nep::monotonic_ms();
        if (left <= 0) break;
        try {
          store.wait("test/done/" + std::to_string(r), left);
        } catch (const nep::Error&) {
          break;
        }
      }
    }
  } catch (const nep::Error& e) {
    text += "rank " + std::to_string(rank) + " threw (status " + std::to_string(e.code()) +
            "): " + e.what() + "\n";
    code = 2;
  } catch (const std::exception& e) {
    text += "rank " + std::to_string(rank) + " threw: " + e.what() + "\n";
    code = 2;
  }
  server.reset();
  write_all(report, text.substr(0, 60000));
  _exit(code);
}

}  // namespace detail

inline ProcessResults run_ranks(int32_t world, const std::function<std::string(RankEnv&)>& body,
                                int64_t deadline_ms = 60000, int64_t linger_ms = 30000) {
  std::vector<int> port_r(world, -1), port_w(world, -1), rep_r(world, -1), rep_w(world, -1);
  for (int32_t r = 0; r < world; ++r) {
    int p[2];
    if (pipe(p) != 0) throw nep::Error(NEP_ERR_INTERNAL, "pipe failed");
    port_r[r] = p[0];
    port_w[r] = p[1];
    if (pipe(p) != 0) throw nep::Error(NEP_ERR_INTERNAL, "pipe failed");
    rep_r[r] = p[0];
    rep_w[r] = p[1];
  }
  std::fflush(nullptr);
  std::vector<pid_t> pids(world, -1);
  for (int32_t r = 0; r < world; ++r) {
    const pid_t pid = fork();
    if (pid == 0) {
      for (int32_t q = 0; q < world; ++q) {
        close(rep_r[q]);
        if (q != r) close(rep_w[q]);
        if (q != r) close(port_r[q]);
        if (r != 0 || q == 0) close(port_w[q]);
      }
      std::vector<int> writes;
      if (r == 0) {
        for (int32_t q = 1; q < world; ++q) writes.push_back(port_w[q]);
      }
      detail::child_main(r, world, port_r[r], writes, rep_w[r], linger_ms, body);
    }
    pids[r] = pid;
  }
  for (int32_t r = 0; r < world; ++r) {
    close(port_r[r]);
    close(port_w[r]);
    close(rep_w[r]);
  }
  ProcessResults res;
  res.exit_codes.assign(world, -100);
  res.text.assign(world, "");
  const int64_t until = nep::monotonic_ms() + deadline_ms;
  int running = world;
  while (running > 0) {
    for (int32_t r = 0; r < world; ++r) {
      if (pids[r] < 0) continue;
      int status = 0;
      const pid_t got = waitpid(pids[r], &status, WNOHANG);
      if (got == pids[r]) {
        res.exit_codes[r] = WIFEXITED(status) ? WEXITSTATUS(status) : -WTERMSIG(status);
        pids[r] = -1;
        --running;
      }
    }
    if (running == 0) break;
    if (nep::monotonic_ms() > until) {
      for (int32_t r = 0; r < world; ++r) {
        if (pids[r] > 0) {
          kill(pids[r], SIGKILL);
          waitpid(pids[r], nullptr, 0);
          res.text[r] += "rank " + std::to_string(r) + " killed at the test deadline\n";
          res.exit_codes[r] = -SIGKILL;
          pids[r] = -1;
        }
      }
      break;
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(5));
  }
  for (int32_t r = 0; r < world; ++r) {
    res.text[r] = detail::read_all(rep_r[r]) + res.text[r];
    close(rep_r[r]);
  }
  return res;
}

}  // namespace neptest

#endif  // NATIVEEP_TESTS_MULTIPROCESS_H_
