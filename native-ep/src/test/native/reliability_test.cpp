// Faults and security of the cpu-shm transport between forked processes, beyond
// shm_process_test.cpp: a rank stopped with SIGSTOP past the timeout, a rank killed with SIGKILL
// during an all-reduce, a /dev/shm without room (injected with RLIMIT_FSIZE: the same errno path
// as a full tmpfs without needing a mount), and the permissions and names of the segments.
// Every case ends with a clear error on every live rank within the timeout and no segment left.
#include <dirent.h>
#include <gtest/gtest.h>
#include <signal.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <unistd.h>

#include <atomic>
#include <chrono>
#include <fstream>
#include <regex>
#include <set>
#include <sstream>
#include <string>
#include <thread>
#include <vector>

#include "collectives.h"
#include "multiprocess.h"
#include "nativeep/c_api.h"
#include "shm_segment.h"
#include "shm_transport.h"

namespace {

using neptest::RankEnv;

std::set<std::string> nep_names_in_dev_shm() {
  std::set<std::string> out;
  DIR* d = opendir("/dev/shm");
  if (d == nullptr) return out;
  while (dirent* e = readdir(d)) {
    const std::string n = e->d_name;
    if (n.rfind("nep-", 0) == 0) out.insert("/" + n);
  }
  closedir(d);
  return out;
}

// Names that appeared since `before` and are still there after a grace period (other tests'
// segments live only during their set-up; a leak stays).
std::vector<std::string> left_behind(const std::set<std::string>& before) {
  std::vector<std::string> left;
  for (int i = 0; i < 30; ++i) {
    left.clear();
    for (const auto& n : nep_names_in_dev_shm()) {
      if (before.count(n) == 0) left.push_back(n);
    }
    if (left.empty()) break;
    std::this_thread::sleep_for(std::chrono::milliseconds(100));
  }
  return left;
}

std::string join(const std::vector<std::string>& v) {
  std::string s;
  for (const auto& x : v) s += x + " ";
  return s;
}

bool contains(const std::string& s, const std::string& part) {
  return s.find(part) != std::string::npos;
}

nep::ShmConfig small_rings(int64_t timeout_ms) {
  nep::ShmConfig c;
  c.slots = 2;
  c.slot_bytes = 4096;
  c.timeout_ms = timeout_ms;
  return c;
}

// Mappings of /dev/shm/nep-* segments in this process: "(deleted)" once their names are unlinked.
std::vector<std::pair<std::string, std::string>> shm_mappings() {
  std::vector<std::pair<std::string, std::string>> out;  // (address range, path)
  std::ifstream maps("/proc/self/maps");
  std::string line;
  while (std::getline(maps, line)) {
    const auto at = line.find("/dev/shm/nep-");
    if (at == std::string::npos) continue;
    out.emplace_back(line.substr(0, line.find(' ')), line.substr(at));
  }
  return out;
}

TEST(Reliability, StoppedRankMakesPeersTimeOutNamingRankAndOperation) {
  const int64_t timeout = 1500;
  const auto before = nep_names_in_dev_shm();
  const auto res = neptest::run_ranks(3, [&](RankEnv& env) -> std::string {
    std::string bad;
    nep::ShmTransport t(*env.store, env.rank, env.world, small_rings(timeout));
    env.store->set("pid/" + std::to_string(env.rank), std::to_string(getpid()));
    // A warm-up all-reduce proves the job works before the fault.
    std::vector<float> small(64, 1.0f);
    nep::all_reduce_sum(t, small.data(), 64);
    if (small[0] != 3.0f) bad += "warm-up all_reduce gave " + std::to_string(small[0]) + "\n";
    const int64_t count = 8 << 20;  // 32 MiB through 4 KiB slots: thousands of chunks
    std::vector<float> data(count, 1.0f);
    std::atomic<bool> entering{false};
    std::thread stopper;
    if (env.rank == 2) {
      stopper = std::thread([&] {
        while (!entering.load()) std::this_thread::yield();
        std::this_thread::sleep_for(std::chrono::milliseconds(3));
        kill(getpid(), SIGSTOP);  // the whole process stalls, as under a debugger or swapping
      });
    }
    const int64_t start = nep::monotonic_ms();
    entering.store(true);
    try {
      nep::all_reduce_sum(t, data.data(), count);
      bad +=
          "rank " + std::to_string(env.rank) + ": all_reduce succeeded despite the stopped rank\n";
    } catch (const nep::Error& e) {
      const int64_t took = nep::monotonic_ms() - start;
      const std::string m = e.what();
      *env.notes += "rank " + std::to_string(env.rank) + " after " + std::to_string(took) +
                    " ms: " + m + "\n";
      if (env.rank != 2) {
        // Either this rank's own deadline, or a peer's timeout that names the stopped rank.
        if (e.code() != NEP_ERR_TIMEOUT && e.code() != NEP_ERR_PEER)
          bad += "status " + std::to_string(e.code()) + "\n";
        if (!contains(m, "waiting for rank 2") || !contains(m, "all_reduce") ||
            !contains(m, "timed out after 1500 ms")) {
          bad +=
              "message does not name the stopped rank, the operation and the timeout: " + m + "\n";
        }
        if (took < timeout - 100 || took > timeout + 3000)
          bad += "failed after " + std::to_string(took) + " ms\n";
        if (env.rank == 0) {
          // Wake the stopped rank: it must now fail cleanly too instead of hanging.
          kill(static_cast<pid_t>(std::stoll(env.store->wait("pid/2", 5000))), SIGCONT);
        }
      } else {
        if (e.code() != NEP_ERR_PEER && e.code() != NEP_ERR_TIMEOUT)
          bad += "resumed rank: status " + std::to_string(e.code()) + "\n";
        if (!contains(m, "all_reduce")) bad += "resumed rank: " + m + "\n";
      }
    }
    if (stopper.joinable()) stopper.join();
    return bad;
  }, 60000, 8000);
  for (int r = 0; r < 3; ++r)
    EXPECT_EQ(res.exit_codes[r], 0) << "rank " << r << ":\n" << res.text[r];
  for (const auto& t : res.text) std::printf("%s", t.c_str());
  const auto left = left_behind(before);
  EXPECT_TRUE(left.empty()) << "left in /dev/shm: " << join(left);
}

TEST(Reliability, RankKilledDuringAllReduceFailsEveryPeerNamingIt) {
  const int64_t timeout = 20000;
  const auto before = nep_names_in_dev_shm();
  const auto res = neptest::run_ranks(3, [&](RankEnv& env) -> std::string {
    std::string bad;
    nep::ShmTransport t(*env.store, env.rank, env.world, small_rings(timeout));
    std::vector<float> small(64, 1.0f);
    nep::all_reduce_sum(t, small.data(), 64);
    const int64_t count = 8 << 20;
    std::vector<float> data(count, 1.0f);
    std::atomic<bool> entering{false};
    std::thread killer;
    if (env.rank == 1) {
      killer = std::thread([&] {
        while (!entering.load()) std::this_thread::yield();
        std::this_thread::sleep_for(std::chrono::milliseconds(3));
        kill(getpid(), SIGKILL);  // no clean-up of any kind
      });
    }
    const int64_t start = nep::monotonic_ms();
    entering.store(true);
    try {
      nep::all_reduce_sum(t, data.data(), count);
      bad += "all_reduce succeeded although rank 1 was killed\n";
    } catch (const nep::Error& e) {
      const int64_t took = nep::monotonic_ms() - start;
      const std::string m = e.what();
      if (e.code() != NEP_ERR_PEER) bad += "status " + std::to_string(e.code()) + ": " + m + "\n";
      if (!contains(m, "rank 1") || !contains(m, "exited during all_reduce"))
        bad += "message: " + m + "\n";
      if (took > 5000)
        bad += "detection took " + std::to_string(took) + " ms (timeout " +
               std::to_string(timeout) + ")\n";
    }
    if (killer.joinable()) killer.join();
    return bad;
  }, 60000, 3000);
  EXPECT_EQ(res.exit_codes[1], -SIGKILL) << res.text[1];
  EXPECT_EQ(res.exit_codes[0], 0) << res.text[0];
  EXPECT_EQ(res.exit_codes[2], 0) << res.text[2];
  const auto left = left_behind(before);
  EXPECT_TRUE(left.empty()) << "left in /dev/shm: " << join(left);
}

// RLIMIT_FSIZE makes ftruncate/fallocate of a tmpfs file fail with EFBIG (SIGXFSZ ignored): the
// same error path as ENOSPC from a full /dev/shm, injected without a mount.
void limit_file_size(rlim_t bytes) {
  signal(SIGXFSZ, SIG_IGN);
  rlimit rl{};
  getrlimit(RLIMIT_FSIZE, &rl);
  rl.rlim_cur = bytes;
  if (setrlimit(RLIMIT_FSIZE, &rl) != 0) throw nep::Error(NEP_ERR_INTERNAL, "setrlimit failed");
}

TEST(Reliability, NoRoomInDevShmIsACapacityErrorAndThePeerTimesOutNamingTheRank) {
  const auto before = nep_names_in_dev_shm();
  const auto res = neptest::run_ranks(2, [&](RankEnv& env) -> std::string {
    std::string bad;
    const nep::ShmConfig c = small_rings(1500);
    if (env.rank == 1) {
      limit_file_size(8 << 10);
      const int64_t need = nep::ShmTransport::segment_bytes(2, c);
      try {
        nep::ShmTransport t(*env.store, 1, 2, c);
        bad += "set-up succeeded without room for a " + std::to_string(need) + "-byte segment\n";
      } catch (const nep::Error& e) {
        const std::string m = e.what();
        *env.notes += "rank 1: " + m + "\n";
        if (e.code() != NEP_ERR_CAPACITY)
          bad += "status " + std::to_string(e.code()) + ": " + m + "\n";
        if (!contains(m, "/dev/shm") || !contains(m, std::to_string(need) + " bytes"))
          bad += "message: " + m + "\n";
      }
      // The C ABI reports the same, and the library still works with what fits.
      char err[512];
      nep_comm* comm = nullptr;
      const int32_t rc = nep_comm_create_shm(1, 2, 1, 2, env.host.c_str(), env.port,
                                             env.token.c_str(), 1500, &comm, err, sizeof err);
      if (rc != NEP_ERR_CAPACITY || comm != nullptr || !contains(err, "/dev/shm")) {
        bad += "C ABI: status " + std::to_string(rc) + " " + err + "\n";
      }
      try {
        nep::ShmSegment s = nep::ShmSegment::create(4 << 10);
        if (s.data() == nullptr) bad += "a 4 KiB segment has no data\n";
      } catch (const nep::Error& e) {
        bad += std::string("a 4 KiB segment failed under an 8 KiB limit: ") + e.what() + "\n";
      }
      return bad;
    }
    try {
      nep::ShmTransport t(*env.store, 0, 2, c);
      bad += "rank 0 set up a job whose rank 1 has no segment\n";
    } catch (const nep::Error& e) {
      const std::string m = e.what();
      *env.notes += "rank 0: " + m + "\n";
      if (e.code() != NEP_ERR_TIMEOUT ||
          !contains(m, "rank 1 never published its shared-memory segment")) {
        bad += "rank 0: status " + std::to_string(e.code()) + ": " + m + "\n";
      }
    }
    return bad;
  }, 60000, 5000);
  for (int r = 0; r < 2; ++r)
    EXPECT_EQ(res.exit_codes[r], 0) << "rank " << r << ":\n" << res.text[r];
  for (const auto& t : res.text) std::printf("%s", t.c_str());
  const auto left = left_behind(before);
  EXPECT_TRUE(left.empty()) << "left in /dev/shm: " << join(left);
}

TEST(Reliability, SegmentsAreOwnerOnlyWithUnpredictableNamesWhateverTheUmask) {
  const mode_t old = umask(0);  // the mode must come from the code, not from the umask
  std::set<std::string> names;
  const std::regex pattern("^/nep-[0-9a-f]{32}$");
  for (int i = 0; i < 64; ++i) {
    nep::ShmSegment s = nep::ShmSegment::create(4096);
    EXPECT_TRUE(std::regex_match(s.name(), pattern)) << s.name();
    struct stat st{};
    ASSERT_EQ(stat(("/dev/shm" + s.name()).c_str(), &st), 0) << s.name();
    EXPECT_EQ(st.st_mode & 07777, static_cast<mode_t>(0600)) << s.name();
    EXPECT_EQ(st.st_uid, geteuid());
    names.insert(s.name());
    s.unlink_name();
    EXPECT_NE(stat(("/dev/shm" + s.name()).c_str(), &st), 0) << s.name() << " still linked";
  }
  umask(old);
  EXPECT_EQ(names.size(), 64u) << "names repeat";
  // Opening a peer's segment checks its size: a stale or foreign segment is refused by name.
  nep::ShmSegment s = nep::ShmSegment::create(4096);
  try {
    nep::ShmSegment::open(s.name(), 8192);
    ADD_FAILURE() << "a 4096-byte segment opened as 8192 bytes";
  } catch (const nep::Error& e) {
    EXPECT_EQ(e.code(), NEP_ERR_PEER);
    EXPECT_TRUE(contains(e.what(), s.name()) && contains(e.what(), "4096") &&
                contains(e.what(), "8192"))
        << e.what();
  }
}

TEST(Reliability, MappedSegmentsOfAJobAreOwnerOnlyAndUnlinked) {
  const auto res = neptest::run_ranks(2, [&](RankEnv& env) -> std::string {
    std::string bad;
    umask(0);
    nep::ShmTransport t(*env.store, env.rank, env.world, small_rings(5000));
    const auto maps = shm_mappings();
    std::set<std::string> paths;
    for (const auto& m : maps) {
      paths.insert(m.second);
      if (!contains(m.second, "(deleted)"))
        bad += "mapped segment still linked: " + m.second + "\n";
      struct stat st{};
      const std::string link = "/proc/self/map_files/" + m.first;
      if (stat(link.c_str(), &st) == 0) {
        if ((st.st_mode & 07777) != 0600) {
          std::ostringstream os;
          os << m.second << " has mode " << std::oct << (st.st_mode & 07777);
          bad += os.str() + "\n";
        }
      } else {
        *env.notes += "map_files not readable here (" + std::string(strerror(errno)) +
                      "): mode not checked\n";
      }
    }
    if (paths.size() != 2)
      bad += "expected 2 mapped segments, found " + std::to_string(paths.size()) + "\n";
    std::vector<float> v(16, 1.0f);
    nep::all_reduce_sum(t, v.data(), 16);
    if (v[0] != 2.0f) bad += "all_reduce gave " + std::to_string(v[0]) + "\n";
    return bad;
  });
  for (int r = 0; r < 2; ++r)
    EXPECT_EQ(res.exit_codes[r], 0) << "rank " << r << ":\n" << res.text[r];
}

}  // namespace
