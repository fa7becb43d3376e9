// TCP helpers for the rendezvous store: resolve, listen, connect, and blocking frame I/O with a
// deadline (poll-based; never blocks past it).
#ifndef NATIVEEP_SRC_SOCKET_UTIL_H_
#define NATIVEEP_SRC_SOCKET_UTIL_H_

#include <cstdint>
#include <string>

namespace nep {

// Owns a file descriptor.
class UniqueFd {
 public:
  UniqueFd() = default;
  explicit UniqueFd(int fd) : fd_(fd) {}
  ~UniqueFd();
  UniqueFd(UniqueFd&& o) noexcept : fd_(o.release()) {}
  UniqueFd& operator=(UniqueFd&& o) noexcept;
  UniqueFd(const UniqueFd&) = delete;
  UniqueFd& operator=(const UniqueFd&) = delete;
  int get() const { return fd_; }
  int release() {
    const int fd = fd_;
    fd_ = -1;
    return fd;
  }
  void reset(int fd = -1);

 private:
  int fd_ = -1;
};

// True when host resolves to an IPv4 loopback address (127.0.0.0/8); false for any other
// address, including 0.0.0.0 (every interface). Throws when host cannot be resolved.
bool is_loopback_host(const std::string& host);

// A listening IPv4 TCP socket on host:port (port 0 picks a free one); returns it and the port.
UniqueFd tcp_listen(const std::string& host, int32_t port, int32_t* bound_port);
// Connects to host:port, retrying refused connections until deadline_ms (monotonic clock).
UniqueFd tcp_connect(const std::string& host, int32_t port, int64_t deadline_ms);

// Writes all of data / reads exactly n bytes, or throws: NEP_ERR_TIMEOUT at deadline_ms, and
// NEP_ERR_PEER when the other side closed. `what` names the peer in messages.
void send_all(int fd, const std::string& data, int64_t deadline_ms, const std::string& what);
void recv_exact(int fd, char* out, size_t n, int64_t deadline_ms, const std::string& what);

}  // namespace nep

#endif  // NATIVEEP_SRC_SOCKET_UTIL_H_
