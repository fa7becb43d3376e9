#include "store_server.h"

#include <poll.h>
#include <sys/eventfd.h>
#include <sys/socket.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <cerrno>
#include <list>
#include <vector>

#include "error.h"
#include "socket_util.h"
#include "store_core.h"
#include "sys_util.h"

namespace nep {

using store::Session;
using store::StoreCore;

class StoreServer::Impl {
 public:
  Impl(UniqueFd listen_fd, const std::string& token, const StoreServerLimits& limits)
      : listen_(std::move(listen_fd)), core_(token), limits_(limits) {
    wake_.reset(eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK));
    if (wake_.get() < 0) fail(NEP_ERR_INTERNAL, "eventfd failed: ", errno_text(errno));
  }

  void stop() {
    stop_.store(true);
    const uint64_t one = 1;
    if (write(wake_.get(), &one, sizeof one) < 0) {
      // The loop also checks stop_ at least once a second.
    }
  }

  void run() {
    while (!stop_.load()) {
      poll_once();
      const int64_t now = monotonic_ms();
      for (auto& c : conns_) {
        if (!c.dead) consume(c, now);
      }
      expire(now);
      for (auto& c : conns_) {
        if (!c.dead && !c.s.out.empty()) write_some(c);
      }
      conns_.remove_if([](const Conn& c) { return c.dead; });
    }
  }

  StoreServerCounts counts() const {
    StoreServerCounts n;
    n.accepted = accepted_.load();
    n.authenticated = authenticated_.load();
    n.evicted_unauthenticated = evicted_.load();
    n.hello_timeouts = hello_timeouts_.load();
    n.refused_full = refused_full_.load();
    return n;
  }

 private:
  struct Conn {
    UniqueFd fd;
    Session s;
    bool dead = false;
    int64_t hello_deadline = 0;
  };

  void close_conn(Conn& c) {
    c.dead = true;
    c.fd.reset();
  }

  void consume(Conn& c, int64_t now) {
    const bool was_authed = c.s.authed;
    core_.consume(c.s, now, [this](const std::function<void(Session&)>& visit) {
      for (auto& w : conns_) {
        if (!w.dead) visit(w.s);
      }
    });
    if (!was_authed && c.s.authed) authenticated_.fetch_add(1);
  }

  void poll_once() {
    std::vector<pollfd> fds;
    std::vector<Conn*> owners;
    fds.push_back({wake_.get(), POLLIN, 0});
    const int64_t now = monotonic_ms();
    const bool listening = now >= accept_paused_until_;
    fds.push_back({listening ? listen_.get() : -1, POLLIN, 0});
    int64_t next = now + 1000;
    if (!listening) next = std::min(next, accept_paused_until_);
    for (auto& c : conns_) {
      short ev = 0;
      if (!c.s.waiting && !c.s.close_after_flush) ev |= POLLIN;
      if (!c.s.out.empty()) ev |= POLLOUT;
      fds.push_back({c.fd.get(), ev, 0});
      owners.push_back(&c);
      if (c.s.waiting) next = std::min(next, c.s.wait_deadline_ms);
      if (!c.s.authed) next = std::min(next, c.hello_deadline);
    }
    const int timeout = static_cast<int>(std::clamp<int64_t>(next - monotonic_ms(), 0, 1000));
    const int rc = poll(fds.data(), fds.size(), timeout);
    if (rc <= 0) return;
    if (fds[0].revents != 0) {
      uint64_t v;
      while (read(wake_.get(), &v, sizeof v) > 0) {
      }
    }
    for (size_t i = 2; i < fds.size(); ++i) {
      Conn& c = *owners[i - 2];
      if (fds[i].revents & (POLLERR | POLLNVAL)) close_conn(c);
      if (!c.dead && (fds[i].revents & (POLLIN | POLLHUP))) read_some(c);
      if (!c.dead && (fds[i].revents & POLLOUT)) write_some(c);
    }
    // Accepted after the existing connections were read, so their HELLOs count before any
    // eviction a burst of new connections causes.
    if (fds[1].revents & POLLIN) accept_some();
  }

  int unauthenticated() const {
    int n = 0;
    for (const auto& c : conns_) n += !c.dead && !c.s.authed;
    return n;
  }

  int live() const {
    int n = 0;
    for (const auto& c : conns_) n += !c.dead;
    return n;
  }

  // Closes the oldest connection that has not presented the token, preferring one that has sent
  // nothing at all (a real client's HELLO follows its connect at once); false when there is none.
  bool evict_oldest_unauthenticated() {
    Conn* victim = nullptr;
    for (auto& c : conns_) {
      if (c.dead || c.s.authed) continue;
      if (c.s.in.empty()) {
        victim = &c;
        break;
      }
      if (victim == nullptr) victim = &c;
    }
    if (victim == nullptr) return false;
    close_conn(*victim);
    evicted_.fetch_add(1);
    return true;
  }

  void accept_some() {
    for (int i = 0; i < 256; ++i) {
      const int fd = accept4(listen_.get(), nullptr, nullptr, SOCK_NONBLOCK | SOCK_CLOEXEC);
      if (fd < 0) {
        if (errno == EMFILE || errno == ENFILE || errno == ENOBUFS || errno == ENOMEM) {
          // Out of descriptors: make room at the expense of an idle handshake, else stop
          // accepting for a moment instead of spinning on a listener that stays readable.
          if (!evict_oldest_unauthenticated()) accept_paused_until_ = monotonic_ms() + 100;
        }
        return;
      }
      UniqueFd owned(fd);
      accepted_.fetch_add(1);
      if (unauthenticated() >= limits_.max_unauthenticated) evict_oldest_unauthenticated();
      if (live() >= limits_.max_connections) {
        refused_full_.fetch_add(1);
        continue;  // closes it
      }
      conns_.emplace_back();
      Conn& c = conns_.back();
      c.fd = std::move(owned);
      c.hello_deadline = monotonic_ms() + limits_.hello_timeout_ms;
      // A real client sends its HELLO right after connecting: usually it is already here.
      read_some(c);
      if (!c.dead) consume(c, monotonic_ms());
      if (!c.dead && !c.s.out.empty()) write_some(c);
    }
  }

  void read_some(Conn& c) {
    char buf[65536];
    for (;;) {
      const ssize_t n = recv(c.fd.get(), buf, sizeof buf, MSG_DONTWAIT);
      if (n > 0) {
        c.s.in.append(buf, static_cast<size_t>(n));
        if (c.s.in.size() > 2 * static_cast<size_t>(store::kMaxFrameBytes)) {
          close_conn(c);  // a client that floods without reading replies
          return;
        }
        continue;
      }
      if (n == 0 || (errno != EAGAIN && errno != EWOULDBLOCK && errno != EINTR)) {
        // The peer closed (or failed): its pending replies can no longer matter, but requests
        // already received are still served (e.g. a SET sent just before closing).
        consume(c, monotonic_ms());
        close_conn(c);
      }
      return;
    }
  }

  void write_some(Conn& c) {
    while (!c.s.out.empty()) {
      const ssize_t n =
          send(c.fd.get(), c.s.out.data(), c.s.out.size(), MSG_NOSIGNAL | MSG_DONTWAIT);
      if (n > 0) {
        c.s.out.erase(0, static_cast<size_t>(n));
        continue;
      }
      if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK || errno == EINTR)) return;
      close_conn(c);
      return;
    }
    if (c.s.close_after_flush) close_conn(c);
  }

  void expire(int64_t now) {
    for (auto& c : conns_) {
      if (c.dead) continue;
      StoreCore::expire_wait(c.s, now);
      if (!c.s.authed && !c.s.close_after_flush && now >= c.hello_deadline) {
        hello_timeouts_.fetch_add(1);
        close_conn(c);
      }
    }
  }

  UniqueFd listen_;
  UniqueFd wake_;
  StoreCore core_;
  StoreServerLimits limits_;
  std::atomic<bool> stop_{false};
  std::list<Conn> conns_;
  int64_t accept_paused_until_ = 0;
  std::atomic<int64_t> accepted_{0}, authenticated_{0}, evicted_{0}, hello_timeouts_{0},
      refused_full_{0};
};

StoreServer::StoreServer(const std::string& host, int32_t port, const std::string& job_token,
                         const StoreServerLimits& limits) {
  if (job_token.size() > store::kMaxKeyBytes) {
    fail_invalid("job_token has ", job_token.size(), " bytes, more than the limit ",
                 store::kMaxKeyBytes);
  }
  if (limits.max_connections < 1 || limits.max_unauthenticated < 1 || limits.hello_timeout_ms < 1) {
    fail_invalid("store server limits must be >= 1 (max_connections = ", limits.max_connections,
                 ", max_unauthenticated = ", limits.max_unauthenticated,
                 ", hello_timeout_ms = ", limits.hello_timeout_ms, ")");
  }
  if (job_token.empty() && !is_loopback_host(host)) {
    fail_invalid(
        "store server: refusing to listen on ", host, ":", port,
        ", which is not a loopback address, with an empty job token (any host that can reach "
        "it could join the job); set DJL_MOE_JOB_TOKEN to a random secret for every rank "
        "(djl-moe launch does), or bind 127.0.0.1");
  }
  UniqueFd fd = tcp_listen(host, port, &port_);
  impl_ = std::make_unique<Impl>(std::move(fd), job_token, limits);
  thread_ = std::thread([impl = impl_.get()] {
    try {
      impl->run();
    } catch (...) {
      // Only allocation failure can get here; the server stops and clients then time out.
    }
  });
}

StoreServer::~StoreServer() {
  impl_->stop();
  thread_.join();
}

StoreServerCounts StoreServer::counts() const { return impl_->counts(); }

}  // namespace nep
