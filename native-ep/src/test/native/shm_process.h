// Checks shared by the multi-process tests of the cpu-shm transport. Each rank notes the segments
// it made as lines "segment <name>" of its text (RankEnv::notes); once the ranks have ended, none
// of them may still be linked in /dev/shm. A rank's exit in the middle of a collective must fail
// every peer within seconds, naming it, and leave their communicator unusable.
#ifndef NATIVEEP_TESTS_SHM_PROCESS_H_
#define NATIVEEP_TESTS_SHM_PROCESS_H_

#include <gtest/gtest.h>
#include <sys/stat.h>

#include <functional>
#include <memory>
#include <sstream>
#include <string>
#include <vector>

#include "error.h"
#include "multiprocess.h"
#include "shm_transport.h"
#include "sys_util.h"

namespace neptest {

// Whether the POSIX shared-memory object `name` ("/...") is linked.
inline bool shm_name_exists(const std::string& name) {
  struct stat st{};
  return stat(("/dev/shm" + name).c_str(), &st) == 0;
}

// Lines "segment <name>" that the children noted.
inline std::vector<std::string> noted_segments(const ProcessResults& res) {
  std::vector<std::string> names;
  for (const std::string& text : res.text) {
    std::istringstream in(text);
    std::string line;
    while (std::getline(in, line)) {
      if (line.rfind("segment ", 0) == 0) names.push_back(line.substr(8));
    }
  }
  return names;
}

// At least `at_least` segments were noted and none of them is left in /dev/shm.
inline void expect_no_segments_left(const ProcessResults& res, size_t at_least) {
  const auto names = noted_segments(res);
  EXPECT_GE(names.size(), at_least);
  for (const std::string& n : names) EXPECT_FALSE(shm_name_exists(n)) << n << " left in /dev/shm";
}

// Creates the rank's transport, notes its segment names and adds a line to `failures` for each
// one still linked (every segment is unlinked once all ranks have mapped it).
inline std::unique_ptr<nep::ShmTransport> make_transport(RankEnv& env, const nep::ShmConfig& config,
                                                         std::string& failures) {
  auto t = std::make_unique<nep::ShmTransport>(*env.store, env.rank, env.world, config);
  for (const std::string& n : t->segment_names()) {
    *env.notes += "segment " + n + "\n";
    if (shm_name_exists(n)) failures += "segment " + n + " still linked after set-up\n";
  }
  return t;
}

// Runs call(), the collective `what` in which rank `dead` exits: it must throw NEP_ERR_PEER within
// 5 s naming that rank, its exit and `what`, and a second call must be refused as unusable.
// Notes the message in env.notes; returns what went wrong.
inline std::string expect_peer_exit(RankEnv& env, int dead, const std::string& what,
                                    const std::function<void()>& call) {
  const std::string peer = "rank " + std::to_string(dead);
  const int64_t start = nep::monotonic_ms();
  try {
    call();
    return what + " succeeded although " + peer + " exited\n";
  } catch (const nep::Error& e) {
    std::string bad;
    const int64_t took = nep::monotonic_ms() - start;
    const std::string m = e.what();
    *env.notes +=
        "rank " + std::to_string(env.rank) + " after " + std::to_string(took) + " ms: " + m + "\n";
    if (e.code() != NEP_ERR_PEER) bad += "status " + std::to_string(e.code()) + ": " + m + "\n";
    if (m.find(peer) == std::string::npos || m.find("exited") == std::string::npos ||
        m.find(what) == std::string::npos) {
      bad += "message does not name " + peer + ", its exit and the " + what + ": " + m + "\n";
    }
    if (took > 5000) bad += "detection took " + std::to_string(took) + " ms\n";
    try {
      call();
      bad += "a second " + what + " succeeded on the broken communicator\n";
    } catch (const nep::Error& e2) {
      if (std::string(e2.what()).find("unusable after an earlier failure") == std::string::npos)
        bad += e2.what();
    }
    return bad;
  }
}

}  // namespace neptest

#endif  // NATIVEEP_TESTS_SHM_PROCESS_H_
