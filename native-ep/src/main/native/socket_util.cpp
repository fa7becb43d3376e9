#include "socket_util.h"

#include <arpa/inet.h>
#include <fcntl.h>
#include <netdb.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <sys/socket.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <chrono>
#include <cstring>
#include <thread>

#include "error.h"
#include "sys_util.h"

namespace nep {

UniqueFd::~UniqueFd() { reset(); }

UniqueFd& UniqueFd::operator=(UniqueFd&& o) noexcept {
  if (this != &o) reset(o.release());
  return *this;
}

void UniqueFd::reset(int fd) {
  if (fd_ >= 0) close(fd_);
  fd_ = fd;
}

namespace {

sockaddr_in resolve_ipv4(const std::string& host, int32_t port) {
  if (port < 0 || port > 65535) fail_invalid("port = ", port, " is outside [0, 65535]");
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_port = htons(static_cast<uint16_t>(port));
  if (inet_pton(AF_INET, host.c_str(), &addr.sin_addr) == 1) return addr;
  addrinfo hints{};
  hints.ai_family = AF_INET;
  hints.ai_socktype = SOCK_STREAM;
  addrinfo* res = nullptr;
  const int rc = getaddrinfo(host.c_str(), nullptr, &hints, &res);
  if (rc != 0 || res == nullptr) {
    fail_invalid("store host '", host, "' cannot be resolved: ", gai_strerror(rc));
  }
  addr.sin_addr = reinterpret_cast<sockaddr_in*>(res->ai_addr)->sin_addr;
  freeaddrinfo(res);
  return addr;
}

void wait_fd(int fd, short events, int64_t deadline_ms, const std::string& what,
             const char* doing) {
  for (;;) {
    const int64_t left = deadline_ms - monotonic_ms();
    if (left <= 0) fail(NEP_ERR_TIMEOUT, "timed out ", doing, " ", what);
    pollfd p{fd, events, 0};
    const int rc = poll(&p, 1, static_cast<int>(std::min<int64_t>(left, 1000)));
    if (rc > 0) return;
    if (rc < 0 && errno != EINTR)
      fail(NEP_ERR_INTERNAL, "poll failed ", doing, " ", what, ": ", errno_text(errno));
  }
}

}  // namespace

bool is_loopback_host(const std::string& host) {
  const sockaddr_in addr = resolve_ipv4(host, 0);
  return (ntohl(addr.sin_addr.s_addr) >> 24) == 127;
}

UniqueFd tcp_listen(const std::string& host, int32_t port, int32_t* bound_port) {
  const sockaddr_in addr = resolve_ipv4(host, port);
  UniqueFd fd(socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0));
  if (fd.get() < 0) fail(NEP_ERR_INTERNAL, "socket failed: ", errno_text(errno));
  const int one = 1;
  setsockopt(fd.get(), SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
  if (bind(fd.get(), reinterpret_cast<const sockaddr*>(&addr), sizeof addr) != 0) {
    fail(NEP_ERR_INTERNAL, "store server cannot bind ", host, ":", port, ": ", errno_text(errno));
  }
  if (listen(fd.get(), 1024) != 0) fail(NEP_ERR_INTERNAL, "listen failed: ", errno_text(errno));
  sockaddr_in bound{};
  socklen_t len = sizeof bound;
  getsockname(fd.get(), reinterpret_cast<sockaddr*>(&bound), &len);
  if (bound_port != nullptr) *bound_port = ntohs(bound.sin_port);
  return fd;
}

UniqueFd tcp_connect(const std::string& host, int32_t port, int64_t deadline_ms) {
  const sockaddr_in addr = resolve_ipv4(host, port);
  std::string last = "no attempt";
  int64_t backoff_ms = 10;
  for (;;) {
    UniqueFd fd(socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0));
    if (fd.get() < 0) fail(NEP_ERR_INTERNAL, "socket failed: ", errno_text(errno));
    if (connect(fd.get(), reinterpret_cast<const sockaddr*>(&addr), sizeof addr) == 0) {
      const int one = 1;
      setsockopt(fd.get(), IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
      return fd;
    }
    last = errno_text(errno);
    const int64_t left = deadline_ms - monotonic_ms();
    if (left <= 0) {
      fail(NEP_ERR_TIMEOUT, "store at ", host, ":", port,
           " not reachable before the timeout (last error: ", last, ")");
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(std::min(backoff_ms, left)));
    backoff_ms = std::min<int64_t>(backoff_ms * 2, 200);
  }
}

void send_all(int fd, const std::string& data, int64_t deadline_ms, const std::string& what) {
  size_t off = 0;
  while (off < data.size()) {
    wait_fd(fd, POLLOUT, deadline_ms, what, "sending to");
    const ssize_t n = send(fd, data.data() + off, data.size() - off, MSG_NOSIGNAL | MSG_DONTWAIT);
    if (n > 0) {
      off += static_cast<size_t>(n);
    } else if (n < 0 && errno != EAGAIN && errno != EWOULDBLOCK && errno != EINTR) {
      fail(NEP_ERR_PEER, "connection to ", what, " failed while sending: ", errno_text(errno));
    }
  }
}

void recv_exact(int fd, char* out, size_t n, int64_t deadline_ms, const std::string& what) {
  size_t got = 0;
  while (got < n) {
    wait_fd(fd, POLLIN, deadline_ms, what, "receiving from");
    const ssize_t r = recv(fd, out + got, n - got, MSG_DONTWAIT);
    if (r > 0) {
      got += static_cast<size_t>(r);
    } else if (r == 0) {
      fail(NEP_ERR_PEER, what, " closed the connection");
    } else if (errno != EAGAIN && errno != EWOULDBLOCK && errno != EINTR) {
      fail(NEP_ERR_PEER, "connection to ", what, " failed while receiving: ", errno_text(errno));
    }
  }
}

}  // namespace nep
