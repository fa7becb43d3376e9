// Liveness of peer processes on this host: a pidfd per peer (readable once the process has
// exited, zombie or not, immune to pid reuse); where pidfd_open is unavailable, the state in
// /proc/<pid>/stat (exited or zombie counts as dead).
#ifndef NATIVEEP_SRC_PEER_WATCH_H_
#define NATIVEEP_SRC_PEER_WATCH_H_

#include <sys/types.h>

#include <vector>

namespace nep {

class PeerWatch {
 public:
  PeerWatch() = default;
  ~PeerWatch();
  PeerWatch(const PeerWatch&) = delete;
  PeerWatch& operator=(const PeerWatch&) = delete;

  // Starts watching peer `index` (e.g. its rank) with process id pid.
  void watch(int index, pid_t pid);
  // Index of the first watched peer that has exited, or -1.
  int first_dead() const;
  pid_t pid_of(int index) const;

 private:
  struct Peer {
    int index;
    pid_t pid;
    int pidfd;  // -1: use /proc
  };
  std::vector<Peer> peers_;
};

}  // namespace nep

#endif  // NATIVEEP_SRC_PEER_WATCH_H_
