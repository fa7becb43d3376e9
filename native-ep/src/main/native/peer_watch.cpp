#include "peer_watch.h"

#include <fcntl.h>
#include <poll.h>
#include <sys/syscall.h>
#include <unistd.h>

#include <cstdio>
#include <cstring>
#include <string>

namespace nep {
namespace {

bool proc_says_dead(pid_t pid) {
  const std::string path = "/proc/" + std::to_string(pid) + "/stat";
  FILE* f = std::fopen(path.c_str(), "r");
  if (f == nullptr) return true;
  char buf[512];
  const size_t n = std::fread(buf, 1, sizeof buf - 1, f);
  std::fclose(f);
  buf[n] = '\0';
  // Format: "pid (comm) S ..."; comm may contain ')' so take the last one.
  const char* close = std::strrchr(buf, ')');
  if (close == nullptr || close[1] == '\0' || close[2] == '\0') return false;
  const char state = close[2];
  return state == 'Z' || state == 'X' || state == 'x';
}

}  // namespace

PeerWatch::~PeerWatch() {
  for (const Peer& p : peers_) {
    if (p.pidfd >= 0) close(p.pidfd);
  }
}

void PeerWatch::watch(int index, pid_t pid) {
#ifdef SYS_pidfd_open
  const int fd = static_cast<int>(syscall(SYS_pidfd_open, pid, 0));
#else
  const int fd = -1;
#endif
  peers_.push_back(Peer{index, pid, fd});
}

int PeerWatch::first_dead() const {
  for (const Peer& p : peers_) {
    if (p.pidfd >= 0) {
      pollfd pfd{p.pidfd, POLLIN, 0};
      if (poll(&pfd, 1, 0) > 0 && (pfd.revents & (POLLIN | POLLHUP | POLLERR)) != 0) return p.index;
    } else if (proc_says_dead(p.pid)) {
      return p.index;
    }
  }
  return -1;
}

pid_t PeerWatch::pid_of(int index) const {
  for (const Peer& p : peers_) {
    if (p.index == index) return p.pid;
  }
  return -1;
}

}  // namespace nep
