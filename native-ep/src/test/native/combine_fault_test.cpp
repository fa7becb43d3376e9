// A rank dying in the middle of a combine (issue 8: "a rank killed during dispatch, combine,
// all-reduce"): the dispatch case is ShmProcesses.RankExitingMidDispatchFailsThePeersNamingIt,
// the all-reduce case Reliability.RankKilledDuringAllReduceFailsEveryPeerNamingIt. Here the
// dispatch completes on every rank, then rank 2 exits without any clean-up after publishing three
// chunks of its combine (the transport's test hook, deterministic). The live ranks must fail with
// NEP_ERR_PEER naming rank 2 and the combine within seconds, stay failed, and leave no segment.
#include <gtest/gtest.h>
#include <sys/stat.h>

#include <string>
#include <vector>

#include "engine.h"
#include "ep_check.h"
#include "multiprocess.h"
#include "shm_transport.h"

namespace {

using neptest::RankEnv;

bool shm_name_exists(const std::string& name) {
  struct stat st{};
  return stat(("/dev/shm" + name).c_str(), &st) == 0;
}

}  // namespace

TEST(CombineFault, RankExitingMidCombineFailsThePeersNamingItAndTheOperation) {
  nep::ShmConfig c;
  c.slots = 2;
  c.slot_bytes = 1024;
  c.timeout_ms = 20000;
  const int64_t hidden = 64;
  const auto res = neptest::run_ranks(3, [&](RankEnv& env) -> std::string {
    std::string bad;
    auto t = std::make_unique<nep::ShmTransport>(*env.store, env.rank, env.world, c);
    for (const std::string& n : t->segment_names()) *env.notes += "segment " + n + "\n";
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
    const int64_t start = nep::monotonic_ms();
    try {
      nep::combine(*t, &h, a);
      return bad + "combine succeeded although rank 2 exited\n";
    } catch (const nep::Error& e) {
      const int64_t took = nep::monotonic_ms() - start;
      const std::string m = e.what();
      *env.notes += "rank " + std::to_string(env.rank) + " after " + std::to_string(took) +
                    " ms: " + m + "\n";
      if (e.code() != NEP_ERR_PEER) bad += "status " + std::to_string(e.code()) + ": " + m + "\n";
      if (m.find("rank 2") == std::string::npos || m.find("exited") == std::string::npos ||
          m.find("combine") == std::string::npos) {
        bad += "message does not name rank 2, its exit and the combine: " + m + "\n";
      }
      if (took > 5000) bad += "detection took " + std::to_string(took) + " ms (timeout 20000)\n";
      try {
        nep::combine(*t, &h, a);
        bad += "a second combine succeeded on the broken communicator\n";
      } catch (const nep::Error& e2) {
        if (std::string(e2.what()).find("unusable after an earlier failure") == std::string::npos)
          bad += e2.what();
      }
    }
    return bad;
  }, 60000, 1000);
  EXPECT_EQ(res.exit_codes[2], 3) << res.text[2];  // the test hook's exit code
  EXPECT_EQ(res.exit_codes[0], 0) << res.text[0];
  EXPECT_EQ(res.exit_codes[1], 0) << res.text[1];
  for (const auto& t : res.text) std::printf("%s", t.c_str());
  size_t names = 0;
  for (const std::string& text : res.text) {
    size_t at = 0;
    while ((at = text.find("segment ", at)) != std::string::npos) {
      const size_t end = text.find('\n', at);
      const std::string n = text.substr(at + 8, end - at - 8);
      EXPECT_FALSE(shm_name_exists(n)) << n << " left in /dev/shm";
      ++names;
      at = end;
    }
  }
  EXPECT_GE(names, 3u);
}
