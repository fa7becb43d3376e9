// cpu-shm between forked processes (W = 2, 3, 4): dispatch/combine against the oracle on every
// rank, collectives, chunking through small rings and rows larger than a slot, and the failure
// paths: a rank exiting mid-dispatch, a rank arriving late, a rank never arriving. After every
// test no segment of the job is left in /dev/shm.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <cstring>
#include <string>
#include <vector>

#include "capi_objects.h"
#include "collectives.h"
#include "ep_check.h"
#include "multiprocess.h"
#include "nativeep/c_api.h"
#include "shm_process.h"
#include "shm_transport.h"

namespace {

using neptest::expect_no_segments_left;
using neptest::make_transport;
using neptest::RankEnv;
using neptest::shm_name_exists;

// Runs exchange_rows over t with `ex` (its send_rows and recv_rows set from send and recv), then
// returns a line for each source s whose rows did not all arrive (next[s]: rows the consumer took).
std::string exchange_all_rows(nep::Transport& t, nep::RowExchange ex,
                              const std::vector<int64_t>& send, const std::vector<int64_t>& recv,
                              nep::RowProducer& producer, nep::RowConsumer& consumer,
                              const std::vector<int64_t>& next) {
  ex.send_rows = send.data();
  ex.recv_rows = recv.data();
  t.exchange_rows(ex, producer, consumer);
  std::string bad;
  for (size_t s = 0; s < recv.size(); ++s) {
    if (next[s] != recv[s])
      bad += "got " + std::to_string(next[s]) + " of " + std::to_string(recv[s]) + " rows from " +
             std::to_string(s) + "\n";
  }
  return bad;
}

std::string collectives_check(nep::Transport& t) {
  std::string bad;
  const int64_t count = 3001;
  std::vector<float> f(count);
  std::vector<double> d(count);
  for (int64_t i = 0; i < count; ++i) {
    f[i] = std::sin(static_cast<float>(i + 7 * t.rank()));
    d[i] = std::cos(static_cast<double>(i) * (t.rank() + 1));
  }
  nep::all_reduce_sum(t, f.data(), count);
  nep::all_reduce_sum(t, d.data(), count);
  for (int64_t i = 0; i < count; ++i) {
    float wf = std::sin(static_cast<float>(i));
    double wd = std::cos(static_cast<double>(i));
    for (int32_t r = 1; r < t.world_size(); ++r) {
      wf += std::sin(static_cast<float>(i + 7 * r));
      wd += std::cos(static_cast<double>(i) * (r + 1));
    }
    if (f[i] != wf || d[i] != wd) {
      bad += "all_reduce element " + std::to_string(i) + " differs from the rank-ordered sum\n";
      break;
    }
  }
  const int32_t mine[2] = {t.rank(), 100 + t.rank()};
  std::vector<int32_t> all(2 * t.world_size(), -1);
  nep::all_gather(t, mine, sizeof mine, all.data());
  for (int32_t r = 0; r < t.world_size(); ++r) {
    if (all[2 * r] != r || all[2 * r + 1] != 100 + r)
      bad += "all_gather slot " + std::to_string(r) + " wrong\n";
  }
  return bad;
}

void run_ep(int32_t world, const nep::ShmConfig& config, int64_t hidden, int64_t base_tokens,
            bool all_to_one, int repeats) {
  const auto res = neptest::run_ranks(world, [&](RankEnv& env) {
    std::string bad;
    auto t = make_transport(env, config, bad);
    const neptest::World w =
        neptest::make_world(77 + world, world, hidden, base_tokens, all_to_one);
    for (int32_t wire = NEP_WIRE_FP32; wire <= NEP_WIRE_MXFP8; ++wire) {
      bad += neptest::check_ep_rank(*t, w, wire, wire == NEP_WIRE_MXFP8 ? 32 : 1, repeats);
    }
    bad += collectives_check(*t);
    return bad;
  });
  for (int32_t r = 0; r < world; ++r) {
    EXPECT_EQ(res.exit_codes[r], 0) << "rank " << r << ":\n" << res.text[r];
  }
  expect_no_segments_left(res, static_cast<size_t>(world));
}

}  // namespace

TEST(ShmProcesses, TwoRanksSmallRingsChunkRows) {
  nep::ShmConfig c;
  c.slots = 2;
  c.slot_bytes = 2048;  // an fp32 row of 96 channels + weights is 400 bytes: 5 rows per chunk
  run_ep(2, c, 96, 150, false, 3);
}

TEST(ShmProcesses, FourRanksRowsLargerThanASlot) {
  nep::ShmConfig c;
  c.slots = 2;
  c.slot_bytes = 1024;  // a 700-channel fp32 row is 2816 bytes: it travels in 3 pieces
  run_ep(4, c, 700, 20, false, 2);
}

TEST(ShmProcesses, FourRanksDefaultRingsDeterministicCombine) {
  run_ep(4, nep::ShmConfig{}, 256, 300, false, 20);
}

TEST(ShmProcesses, ThreeRanksEveryTokenToOneExpert) {
  nep::ShmConfig c;
  c.slot_bytes = 4096;
  run_ep(3, c, 64, 200, true, 2);
}

TEST(ShmProcesses, CApiCommunicatorDispatchAndCollectives) {
  const auto res = neptest::run_ranks(2, [](RankEnv& env) {
    std::string bad;
    char err[512];
    nep_comm* comm = nullptr;
    if (nep_comm_create_shm(env.rank, env.world, env.rank, env.world, env.host.c_str(), env.port,
                            env.token.c_str(), 10000, &comm, err, sizeof err) != NEP_OK) {
      return std::string("create: ") + err + "\n";
    }
    if (nep_comm_rank(comm) != env.rank || nep_comm_world_size(comm) != 2)
      bad += "rank/world wrong\n";
    const neptest::World w = neptest::make_world(5, 2, 40, 30);
    bad += neptest::check_ep_rank(*comm->transport, w, NEP_WIRE_BF16, 4, 2);
    double v[3] = {1.0 + env.rank, 2.0, 3.0};
    if (nep_all_reduce_sum_f64(comm, reinterpret_cast<int64_t>(v), 3, err, sizeof err) != NEP_OK)
      bad += err;
    if (v[0] != 3.0 || v[1] != 4.0 || v[2] != 6.0) bad += "nep_all_reduce_sum_f64 wrong\n";
    float f[2] = {0.5f, static_cast<float>(env.rank)};
    if (nep_all_reduce_sum_f32(comm, reinterpret_cast<int64_t>(f), 2, err, sizeof err) != NEP_OK)
      bad += err;
    if (f[0] != 1.0f || f[1] != 1.0f) bad += "nep_all_reduce_sum_f32 wrong\n";
    int64_t mine = 10 + env.rank, all[2] = {0, 0};
    if (nep_all_gather(comm, reinterpret_cast<int64_t>(&mine), 8, reinterpret_cast<int64_t>(all),
                       err, sizeof err) != NEP_OK)
      bad += err;
    if (all[0] != 10 || all[1] != 11) bad += "nep_all_gather wrong\n";
    if (nep_barrier(comm, err, sizeof err) != NEP_OK) bad += err;
    // A mismatched count is a peer disagreement on every rank, not a hang.
    float g[4] = {0, 0, 0, 0};
    const int32_t rc =
        nep_all_reduce_sum_f32(comm, reinterpret_cast<int64_t>(g), 3 + env.rank, err, sizeof err);
    if (rc != NEP_ERR_PEER || std::string(err).find("passed count = ") == std::string::npos) {
      bad += "mismatched all_reduce: status " + std::to_string(rc) + " " + err + "\n";
    }
    nep_comm_destroy(comm);
    return bad;
  });
  for (int r = 0; r < 2; ++r) EXPECT_EQ(res.exit_codes[r], 0) << res.text[r];
}

TEST(ShmProcesses, RankExitingMidDispatchFailsThePeersNamingIt) {
  nep::ShmConfig c;
  c.slots = 2;
  c.slot_bytes = 1024;
  c.timeout_ms = 20000;
  const int64_t hidden = 64;
  const auto res = neptest::run_ranks(3, [&](RankEnv& env) -> std::string {
    std::string bad;
    auto t = make_transport(env, c, bad);
    const neptest::World w = neptest::make_world(3, 3, hidden, 400);
    const auto& r = w.routing[env.rank];
    const auto h = nep::dispatch_notify(*t, r.idx.data(), r.tokens, w.topk, w.experts, 1);
    std::vector<float> recv(h.num_recv * hidden);
    nep::DispatchArgs d;
    d.x = w.x[env.rank].data();
    d.hidden = hidden;
    d.recv_x = recv.data();
    if (env.rank == 2) t->set_exit_after_chunks(3);
    return bad + neptest::expect_peer_exit(env, 2, "dispatch", [&] { nep::dispatch(*t, &h, d); });
  }, 60000, 1000);
  EXPECT_EQ(res.exit_codes[2], 3) << res.text[2];  // the test hook's exit code
  EXPECT_EQ(res.exit_codes[0], 0) << res.text[0];
  EXPECT_EQ(res.exit_codes[1], 0) << res.text[1];
  expect_no_segments_left(res, 3);
}

TEST(ShmProcesses, LateRankTimesOutNamingRankAndCounter) {
  nep::ShmConfig c;
  c.timeout_ms = 700;
  const auto res = neptest::run_ranks(2, [&](RankEnv& env) -> std::string {
    std::string bad;
    auto t = make_transport(env, c, bad);
    if (env.rank == 1) std::this_thread::sleep_for(std::chrono::milliseconds(2000));
    std::vector<float> data(10, 1.0f);
    const int64_t start = nep::monotonic_ms();
    try {
      nep::all_reduce_sum(*t, data.data(), 10);
      return bad + "all_reduce succeeded\n";
    } catch (const nep::Error& e) {
      const std::string m = e.what();
      const int64_t took = nep::monotonic_ms() - start;
      if (env.rank == 0) {
        if (e.code() != NEP_ERR_TIMEOUT) bad += "status " + std::to_string(e.code()) + "\n";
        if (m.find("rank 0 timed out after 700 ms") == std::string::npos ||
            m.find("waiting for rank 1") == std::string::npos ||
            m.find("rows received 0 of") == std::string::npos) {
          bad += "message: " + m + "\n";
        }
        if (took < 650 || took > 3000) bad += "timed out after " + std::to_string(took) + " ms\n";
      } else {
        if (e.code() != NEP_ERR_PEER || m.find("rank 0 failed") == std::string::npos)
          bad += "late rank: " + m + "\n";
      }
    }
    return bad;
  });
  for (int r = 0; r < 2; ++r) EXPECT_EQ(res.exit_codes[r], 0) << res.text[r];
  expect_no_segments_left(res, 2);
}

TEST(ShmProcesses, MissingRankFailsRendezvousNamingTheKey) {
  nep::ShmConfig c;
  c.timeout_ms = 700;
  const auto res = neptest::run_ranks(3, [&](RankEnv& env) -> std::string {
    if (env.rank == 2) return "";  // never creates the communicator
    try {
      nep::ShmTransport t(*env.store, env.rank, env.world, c);
      return "set-up succeeded without rank 2\n";
    } catch (const nep::Error& e) {
      const std::string m = e.what();
      if (e.code() == NEP_ERR_TIMEOUT &&
          m.find("rank " + std::to_string(env.rank) +
                 ": timed out after 700 ms waiting for store key 'nep/shm/1/segment/2'") !=
              std::string::npos &&
          m.find("rank 2 never published its shared-memory segment") != std::string::npos) {
        return "";
      }
      return "message: " + m + "\n";
    }
  });
  for (int r = 0; r < 3; ++r) EXPECT_EQ(res.exit_codes[r], 0) << res.text[r];
}

TEST(ShmCApi, OtherHostsAndBadArgumentsFailAtOnce) {
  char err[512];
  nep_comm* comm = nullptr;
  EXPECT_EQ(nep_comm_create_shm(0, 4, 0, 2, "127.0.0.1", 1, "t", 1000, &comm, err, sizeof err),
            NEP_ERR_UNSUPPORTED);
  EXPECT_NE(std::string(err).find("world_size = 4 and local_world_size = 2"), std::string::npos)
      << err;
  EXPECT_EQ(nep_comm_create_shm(4, 4, 4, 4, "127.0.0.1", 1, "t", 1000, &comm, err, sizeof err),
            NEP_ERR_INVALID_ARGUMENT);
  EXPECT_EQ(std::string(err), "rank = 4 is outside [0, 4)");
  EXPECT_EQ(nep_comm_create_shm(1, 2, 0, 2, "127.0.0.1", 1, "t", 1000, &comm, err, sizeof err),
            NEP_ERR_INVALID_ARGUMENT);
  EXPECT_NE(std::string(err).find("local_rank = 0 must equal rank = 1"), std::string::npos) << err;
  EXPECT_EQ(nep_comm_create_shm(0, 2, 0, 2, nullptr, 1, "t", 1000, &comm, err, sizeof err),
            NEP_ERR_INVALID_ARGUMENT);
  EXPECT_EQ(std::string(err), "store_host is null");
  EXPECT_EQ(nep_comm_create_shm(0, 2, 0, 2, "127.0.0.1", 1, "t", 0, &comm, err, sizeof err),
            NEP_ERR_INVALID_ARGUMENT);
  EXPECT_EQ(comm, nullptr);
  EXPECT_EQ(nep_barrier(nullptr, err, sizeof err), NEP_ERR_INVALID_ARGUMENT);
  EXPECT_EQ(std::string(err), "comm is null");
}

// exchange_rows with source_gated on W = 4 with tiny rings: the consumer lets a chunk of source s
// in only when every lower source has delivered at least as many rows as the chunk ends at
// (capped at what that source sends). Every row must arrive exactly once, each source in order,
// no chunk may be consumed while its gate is closed, and ready() is never asked about the lowest
// unfinished source.
TEST(ShmProcesses, ExchangeRowsSourceGated) {
  const int32_t world = 4;
  nep::ShmConfig c;
  c.slots = 2;
  c.slot_bytes = 160;  // 10 rows of 16 bytes per chunk
  auto rows_between = [](int32_t src, int32_t dst) -> int64_t {
    return (src == 1 && dst == 2) ? 0 : 45 + 13 * ((src + 2 * dst) % 4);
  };
  const auto res = neptest::run_ranks(world, [&](RankEnv& env) {
    std::string bad;
    auto t = make_transport(env, c, bad);
    for (int pass = 0; pass < 3; ++pass) {
      std::vector<int64_t> send(world), recv(world);
      for (int32_t r = 0; r < world; ++r) {
        send[r] = rows_between(env.rank, r);
        recv[r] = rows_between(r, env.rank);
      }
      std::vector<int64_t> next(world, 0);
      auto open = [&](int32_t src, int64_t first, int64_t count) {
        for (int32_t r = 0; r < src; ++r) {
          if (next[r] < std::min(recv[r], first + count)) return false;
        }
        return true;
      };
      auto producer =
          nep::make_producer([&](int32_t dest, int64_t first, int64_t count, uint8_t* buf) {
        for (int64_t i = 0; i < count; ++i) {
          const int64_t row[2] = {env.rank * 1000 + dest, (first + i) * 3 + pass};
          std::memcpy(buf + 16 * i, row, 16);
        }
      });
      auto consumer = nep::make_gated_consumer(
          [&](int32_t src, int64_t first, int64_t count, const uint8_t* buf) {
        if (first != next[src]) bad += "source " + std::to_string(src) + " chunk out of order\n";
        if (!open(src, first, count))
          bad += "chunk of source " + std::to_string(src) + " consumed while gated\n";
        for (int64_t i = 0; i < count; ++i) {
          int64_t row[2];
          std::memcpy(row, buf + 16 * i, 16);
          if (row[0] != src * 1000 + env.rank || row[1] != (first + i) * 3 + pass) {
            bad +=
                "row " + std::to_string(first + i) + " from " + std::to_string(src) + " is wrong\n";
          }
        }
        next[src] = first + count;
      }, [&](int32_t src, int64_t first, int64_t count) {
        int32_t lowest = 0;
        while (lowest < world && next[lowest] == recv[lowest]) ++lowest;
        if (src <= lowest)
          bad += "ready() asked about the lowest unfinished source " + std::to_string(src) + "\n";
        return open(src, first, count);
      });
      nep::RowExchange ex;
      ex.row_bytes = 16;
      ex.what = "gated exchange test";
      ex.source_gated = true;
      bad += exchange_all_rows(*t, ex, send, recv, producer, consumer, next);
    }
    return bad;
  });
  for (int32_t r = 0; r < world; ++r) {
    EXPECT_EQ(res.exit_codes[r], 0) << "rank " << r << ":\n" << res.text[r];
  }
  expect_no_segments_left(res, static_cast<size_t>(world));
}

// exchange_rows itself on W = 3 with tiny rings (many chunks per stream, one pair with no rows):
// every row arrives exactly once with its payload, the rows of each source in increasing order;
// in the default mode sources never interleave, with any_source_order they may.
TEST(ShmProcesses, ExchangeRowsOrderedAndAnySourceOrder) {
  const int32_t world = 3;
  nep::ShmConfig c;
  c.slots = 2;
  c.slot_bytes = 240;  // 10 rows of 24 bytes per chunk
  auto rows_between = [](int32_t src, int32_t dst) -> int64_t {
    return (src == 2 && dst == 0) ? 0 : 37 + 11 * src + 5 * dst;
  };
  const auto res = neptest::run_ranks(world, [&](RankEnv& env) {
    std::string bad;
    auto t = make_transport(env, c, bad);
    for (int pass = 0; pass < 4; ++pass) {
      const bool any_order = pass % 2 == 1;
      std::vector<int64_t> send(world), recv(world);
      for (int32_t r = 0; r < world; ++r) {
        send[r] = rows_between(env.rank, r);
        recv[r] = rows_between(r, env.rank);
      }
      std::vector<int64_t> next(world, 0);
      int32_t last_src = -1;
      bool went_back = false;
      auto producer =
          nep::make_producer([&](int32_t dest, int64_t first, int64_t count, uint8_t* buf) {
        for (int64_t i = 0; i < count; ++i) {
          const int64_t row[3] = {env.rank, dest, (first + i) * 7 + pass};
          std::memcpy(buf + 24 * i, row, 24);
        }
      });
      auto consumer =
          nep::make_consumer([&](int32_t src, int64_t first, int64_t count, const uint8_t* buf) {
        if (src < last_src) went_back = true;
        last_src = src;
        if (first != next[src]) bad += "source " + std::to_string(src) + " chunk out of order\n";
        for (int64_t i = 0; i < count; ++i) {
          int64_t row[3];
          std::memcpy(row, buf + 24 * i, 24);
          if (row[0] != src || row[1] != env.rank || row[2] != (first + i) * 7 + pass) {
            bad +=
                "row " + std::to_string(first + i) + " from " + std::to_string(src) + " is wrong\n";
          }
        }
        next[src] = first + count;
      });
      nep::RowExchange ex;
      ex.row_bytes = 24;
      ex.what = "exchange test";
      ex.any_source_order = any_order;
      bad += exchange_all_rows(*t, ex, send, recv, producer, consumer, next);
      if (!any_order && went_back) bad += "ordered exchange interleaved sources\n";
    }
    return bad;
  });
  for (int32_t r = 0; r < world; ++r) {
    EXPECT_EQ(res.exit_codes[r], 0) << "rank " << r << ":\n" << res.text[r];
  }
  expect_no_segments_left(res, static_cast<size_t>(world));
}
