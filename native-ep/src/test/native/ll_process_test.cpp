// Low-latency mode between forked processes over cpu-shm (W = 2, 3, 4), through the C ABI: every
// rank checks its own outputs against the oracle over steps of every wire format (send and
// receive split around normal-mode work, shared buffers poisoned between steps), double buffering
// with a slow rank (the others' sends wait for its release), refusals, and the failure paths: a
// receive that times out names the rank, the peer and the counter; a rank that exits makes its
// peers fail at once; ranks that disagree on the configuration fail at creation. After every test
// no segment of the job is left in /dev/shm.
#include <gtest/gtest.h>
#include <unistd.h>

#include <string>
#include <vector>

#include "ll_check.h"
#include "multiprocess.h"
#include "shm_process.h"

namespace {

using neptest::expect_no_segments_left;
using neptest::LlRankCheck;
using neptest::LlShape;
using neptest::RankEnv;
using neptest::shm_name_exists;

// The cpu-shm communicator and a low-latency buffer of one rank; notes the LL segment names.
struct RankLl {
  nep_comm* comm = nullptr;
  nep_ll_buffer* buf = nullptr;
  char err[1024] = {0};
  std::string failure;

  RankLl(RankEnv& env, const LlShape& s, int64_t timeout_ms) {
    if (nep_comm_create_shm(env.rank, env.world, env.rank, env.world, env.host.c_str(), env.port,
                            env.token.c_str(), timeout_ms, &comm, err, sizeof err) != NEP_OK) {
      failure = std::string("nep_comm_create_shm: ") + err + "\n";
      return;
    }
    if (nep_ll_buffer_create(comm, s.max_tokens, s.hidden, s.experts, s.topk, s.max_wire,
                             timeout_ms, &buf, err, sizeof err) != NEP_OK) {
      failure = std::string("nep_ll_buffer_create: ") + err + "\n";
      return;
    }
    for (const std::string& n : buf->impl->segment_names()) {
      *env.notes += "segment " + n + "\n";
      if (shm_name_exists(n)) failure += "segment " + n + " still linked after set-up\n";
    }
  }
  ~RankLl() {
    nep_ll_buffer_destroy(buf);
    nep_comm_destroy(comm);
  }
  RankLl(const RankLl&) = delete;
  RankLl& operator=(const RankLl&) = delete;
};

void run_ll(const LlShape& s, int steps, int32_t slow_rank) {
  const auto res = neptest::run_ranks(s.world, [&](RankEnv& env) -> std::string {
    RankLl ll(env, s, 20000);
    if (!ll.failure.empty() || ll.buf == nullptr) return ll.failure;
    LlRankCheck c(ll.comm, ll.buf, s, 1000 + s.world);
    neptest::ll_steps(c, steps);
    neptest::ll_double_buffering(c, slow_rank);
    neptest::ll_refusals(c);
    return c.failures();
  });
  for (int32_t r = 0; r < s.world; ++r)
    EXPECT_EQ(res.exit_codes[r], 0) << "rank " << r << ":\n" << res.text[r];
  expect_no_segments_left(res, static_cast<size_t>(s.world));
}

// A dispatch receive that should fail: its status, error message and how long it took.
struct FailedRecv {
  int32_t rc;
  std::string message;
  int64_t took_ms;
};

// Receives the dispatch of `op` (rows of `hidden` floats from up to `slots` messages) and
// destroys op.
FailedRecv failing_dispatch_recv(nep_ll_op* op, int64_t slots, int64_t hidden) {
  std::vector<float> x(static_cast<size_t>(slots * hidden));
  std::vector<int32_t> count(2);
  nep_ll_handle* h = nullptr;
  char err[1024];
  const int64_t start = nep::monotonic_ms();
  const int32_t rc =
      nep_ll_dispatch_recv(op, reinterpret_cast<int64_t>(x.data()),
                           reinterpret_cast<int64_t>(count.data()), 0, 0, &h, err, sizeof err);
  const int64_t took = nep::monotonic_ms() - start;
  nep_ll_op_destroy(op);
  return FailedRecv{rc, err, took};
}

}  // namespace

TEST(LlProcesses, TwoRanksMoreTopkThanLocalExperts) {
  // El = 3 < K = 4: a token sends up to 3 messages to one rank
  const LlShape s = neptest::ll_shape(2, 12, 384, 6, 4);
  run_ll(s, 6, 1);
}

TEST(LlProcesses, ThreeRanksHiddenNotAMultipleOf128) {
  const LlShape s = neptest::ll_shape(3, 10, 300, 12, 3);
  run_ll(s, 5, -1);
}

TEST(LlProcesses, FourRanksStepsDoubleBufferingSlowRankRefusals) {
  const LlShape s = neptest::ll_shape(4, 16, 256, 32, 6);
  run_ll(s, 10, 2);
}

TEST(LlProcesses, ReceiveTimeoutNamesRankPeerAndCounter) {
  const LlShape s = neptest::ll_shape(2, 4, 256, 4, 2);
  const auto res = neptest::run_ranks(2, [&](RankEnv& env) -> std::string {
    RankLl ll(env, s, 600);
    if (!ll.failure.empty() || ll.buf == nullptr) return ll.failure;
    if (env.rank == 1) {
      std::this_thread::sleep_for(std::chrono::milliseconds(1000));  // never sends
      return "";
    }
    LlRankCheck c(ll.comm, ll.buf, s, 3);
    const auto all = c.inputs(0, [](int32_t) { return 4; });
    nep_ll_op* op = c.dispatch_send(all[0], neptest::LlWires{});
    if (op == nullptr) return c.failures();
    const FailedRecv f = failing_dispatch_recv(op, 2 * 8, 256);
    const std::string& m = f.message;
    const int32_t rc = f.rc;
    const int64_t took = f.took_ms;
    char err[1024];
    std::string bad;
    if (rc != NEP_ERR_TIMEOUT) bad += "status " + std::to_string(rc) + ": " + m + "\n";
    for (const char* part :
         {"rank 0 timed out after 600 ms in low-latency dispatch receive",
          "waiting for rank 1's data of call 1", "counter flag[1] of buffer 1 on rank 0 = 0"}) {
      if (m.find(part) == std::string::npos)
        bad += "message lacks '" + std::string(part) + "': " + m + "\n";
    }
    if (took < 550 || took > 3000) bad += "timed out after " + std::to_string(took) + " ms\n";
    // The buffer is unusable afterwards and says why.
    if (nep_ll_dispatch_send(ll.buf, reinterpret_cast<int64_t>(all[0].x.data()), 4, s.hidden,
                             reinterpret_cast<int64_t>(all[0].idx.data()), s.topk, NEP_WIRE_BF16, 0,
                             &op, err, sizeof err) != NEP_ERR_PEER ||
        std::string(err).find("unusable after an earlier failure") == std::string::npos) {
      bad += std::string("send after the timeout: ") + err + "\n";
    }
    return bad + c.failures();
  });
  for (int r = 0; r < 2; ++r)
    EXPECT_EQ(res.exit_codes[r], 0) << "rank " << r << ":\n" << res.text[r];
  expect_no_segments_left(res, 2);
}

TEST(LlProcesses, RankExitingBeforeItSendsFailsThePeersNamingIt) {
  const LlShape s = neptest::ll_shape(3, 4, 256, 6, 2);
  const auto res = neptest::run_ranks(3, [&](RankEnv& env) -> std::string {
    RankLl ll(env, s, 20000);
    if (!ll.failure.empty() || ll.buf == nullptr) return ll.failure;
    if (env.rank == 2) _exit(3);
    LlRankCheck c(ll.comm, ll.buf, s, 4);
    const auto all = c.inputs(0, [](int32_t) { return 4; });
    nep_ll_op* op = c.dispatch_send(all[env.rank], neptest::LlWires{});
    if (op == nullptr) return c.failures();
    const FailedRecv f = failing_dispatch_recv(op, 2 * 12, 256);
    const std::string& m = f.message;
    const int32_t rc = f.rc;
    const int64_t took = f.took_ms;
    std::string bad;
    if (rc != NEP_ERR_PEER) bad += "status " + std::to_string(rc) + ": " + m + "\n";
    // The rank that waits for rank 2 sees it exit; a rank may instead see the other one give up.
    const bool named =
        m.find("peer rank 2") != std::string::npos && m.find("exited") != std::string::npos;
    const bool relayed =
        m.find("failed: ") != std::string::npos && m.find("peer rank 2") != std::string::npos;
    if (!named && !relayed) bad += "message: " + m + "\n";
    if (took > 5000) bad += "detection took " + std::to_string(took) + " ms\n";
    return bad + c.failures();
  }, 60000, 300);
  EXPECT_EQ(res.exit_codes[2], 3) << res.text[2];
  EXPECT_EQ(res.exit_codes[0], 0) << res.text[0];
  EXPECT_EQ(res.exit_codes[1], 0) << res.text[1];
}

TEST(LlProcesses, RanksDisagreeingOnTheConfigurationFailAtCreation) {
  const auto res = neptest::run_ranks(2, [&](RankEnv& env) -> std::string {
    char err[1024];
    nep_comm* comm = nullptr;
    if (nep_comm_create_shm(env.rank, env.world, env.rank, env.world, env.host.c_str(), env.port,
                            env.token.c_str(), 5000, &comm, err, sizeof err) != NEP_OK) {
      return std::string("create comm: ") + err + "\n";
    }
    nep_ll_buffer* buf = nullptr;
    const int32_t rc = nep_ll_buffer_create(comm, 8 + env.rank, 256, 4, 2, NEP_WIRE_BF16, 5000,
                                            &buf, err, sizeof err);
    std::string bad;
    if (rc != NEP_ERR_PEER || buf != nullptr ||
        std::string(err).find("passed max_tokens_per_rank = ") == std::string::npos) {
      bad += "status " + std::to_string(rc) + ": " + err + "\n";
    }
    // The communicator stays usable: a barrier and then an agreeing creation work.
    if (nep_barrier(comm, err, sizeof err) != NEP_OK) bad += std::string("barrier: ") + err + "\n";
    if (nep_ll_buffer_create(comm, 8, 256, 4, 2, NEP_WIRE_BF16, 5000, &buf, err, sizeof err) !=
        NEP_OK) {
      bad += std::string("agreeing create: ") + err + "\n";
    }
    nep_ll_buffer_destroy(buf);
    nep_comm_destroy(comm);
    return bad;
  });
  for (int r = 0; r < 2; ++r)
    EXPECT_EQ(res.exit_codes[r], 0) << "rank " << r << ":\n" << res.text[r];
}
