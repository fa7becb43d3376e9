// A rank dying in the middle of a combine ("a rank killed during dispatch, combine,
// all-reduce"): the dispatch case is ShmProcesses.RankExitingMidDispatchFailsThePeersNamingIt,
// the all-reduce case Reliability.RankKilledDuringAllReduceFailsEveryPeerNamingIt. Here the
// dispatch completes on every rank, then rank 2 exits without any clean-up after publishing three
// chunks of its combine (the transport's test hook, deterministic). The live ranks must fail with
// NEP_ERR_PEER naming rank 2 and the combine within seconds, stay failed, and leave no segment.
#include <gtest/gtest.h>

#include <string>
#include <vector>

#include "engine.h"
#include "ep_check.h"
#include "multiprocess.h"
#include "shm_process.h"
#include "shm_transport.h"

namespace {

using neptest::RankEnv;

}  // namespace

TEST(CombineFault, RankExitingMidCombineFailsThePeersNamingItAndTheOperation) {
  nep::ShmConfig c;
  c.slots = 2;
  c.slot_bytes = 1024;
  c.timeout_ms = 20000;
  const int64_t hidden = 64;
  const auto res = neptest::run_ranks(3, [&](RankEnv& env) -> std::string {
    std::string bad;
    auto t = neptest::make_transport(env, c, bad);
    const neptest::World w = neptest::make_world(3, 3, hidden, 400);
    const auto& r = w.routing[env.rank];
    const auto h = nep::dispatch_notify(*t, r.idx.data(), r.tokens, w.topk, w.experts, 1);
    std::vector<float> recv(static_cast<size_t>(h.num_recv * hidden), -7.0f);
    nep::DispatchArgs d;
    d.x = w.x[env.rank].data();
    d.hidden = hidden;
    d.recv_x = recv.data();
    nep::dispatch(*t, &h, d);  // completes on every rank: the fault is in the combine
    if (h.num_recv > 0 && recv[0] == -7.0f) bad += "dispatch left its output untouched\n";
    std::vector<float> out(static_cast<size_t>(r.tokens * hidden), -7.0f);
    nep::CombineArgs a;
    a.y = recv.data();
    a.hidden = hidden;
    a.out = out.data();
    if (env.rank == 2) t->set_exit_after_chunks(3);
    return bad + neptest::expect_peer_exit(env, 2, "combine", [&] { nep::combine(*t, &h, a); });
  }, 60000, 1000);
  EXPECT_EQ(res.exit_codes[2], 3) << res.text[2];  // the test hook's exit code
  EXPECT_EQ(res.exit_codes[0], 0) << res.text[0];
  EXPECT_EQ(res.exit_codes[1], 0) << res.text[1];
  for (const auto& t : res.text) std::printf("%s", t.c_str());
  neptest::expect_no_segments_left(res, 3);
}
