#include "store_server.h"

#include <poll.h>
#include <sys/eventfd.h>
#include <sys/socket.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <cerrno>
#include <charconv>
#include <list>
#include <map>
#include <vector>

#include "error.h"
#include "socket_util.h"
#include "store_protocol.h"
#include "sys_util.h"

namespace nep {

using namespace store;

class StoreServer::Impl {
 public:
  Impl(UniqueFd listen_fd, std::string token) : listen_(std::move(listen_fd)), token_(std::move(token)) {
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
      for (auto& c : conns_) process_input(c);
      expire(monotonic_ms());
      conns_.remove_if([](const Conn& c) { return c.dead; });
    }
  }

 private:
  struct Conn {
    UniqueFd fd;
    std::string in, out;
    bool authed = false;
    bool dead = false;
    bool close_after_flush = false;
    int64_t hello_deadline = 0;
    bool waiting = false;
    std::string wait_key;
    int64_t wait_deadline = 0;
  };

  void poll_once() {
    std::vector<pollfd> fds;
    std::vector<Conn*> owners;
    fds.push_back({wake_.get(), POLLIN, 0});
    owners.push_back(nullptr);
    fds.push_back({listen_.get(), POLLIN, 0});
    owners.push_back(nullptr);
    int64_t next = monotonic_ms() + 1000;
    for (auto& c : conns_) {
      short ev = 0;
      if (!c.waiting && !c.close_after_flush) ev |= POLLIN;
      if (!c.out.empty()) ev |= POLLOUT;
      fds.push_back({c.fd.get(), ev, 0});
      owners.push_back(&c);
      if (c.waiting) next = std::min(next, c.wait_deadline);
      if (!c.authed) next = std::min(next, c.hello_deadline);
    }
    const int timeout = static_cast<int>(std::clamp<int64_t>(next - monotonic_ms(), 0, 1000));
    const int rc = poll(fds.data(), fds.size(), timeout);
    if (rc <= 0) return;
    if (fds[0].revents != 0) {
      uint64_t v;
      while (read(wake_.get(), &v, sizeof v) > 0) {
      }
    }
    if (fds[1].revents & POLLIN) accept_all();
    for (size_t i = 2; i < fds.size(); ++i) {
      Conn& c = *owners[i];
      if (fds[i].revents & (POLLERR | POLLNVAL)) c.dead = true;
      if (fds[i].revents & (POLLIN | POLLHUP)) read_some(c);
      if (fds[i].revents & POLLOUT) write_some(c);
    }
  }

  void accept_all() {
    for (;;) {
      const int fd = accept4(listen_.get(), nullptr, nullptr, SOCK_NONBLOCK | SOCK_CLOEXEC);
      if (fd < 0) return;
      if (static_cast<int>(conns_.size()) >= kMaxConnections) {
        close(fd);
        continue;
      }
      conns_.emplace_back();
      conns_.back().fd.reset(fd);
      conns_.back().hello_deadline = monotonic_ms() + kHelloTimeoutMs;
    }
  }

  void read_some(Conn& c) {
    char buf[65536];
    for (;;) {
      const ssize_t n = recv(c.fd.get(), buf, sizeof buf, MSG_DONTWAIT);
      if (n > 0) {
        c.in.append(buf, static_cast<size_t>(n));
        if (c.in.size() > 2 * static_cast<size_t>(kMaxFrameBytes)) {
          c.dead = true;  // a client that floods without reading replies
          return;
        }
        continue;
      }
      if (n == 0 || (errno != EAGAIN && errno != EWOULDBLOCK && errno != EINTR)) c.dead = true;
      return;
    }
  }

  void write_some(Conn& c) {
    while (!c.out.empty()) {
      const ssize_t n = send(c.fd.get(), c.out.data(), c.out.size(), MSG_NOSIGNAL | MSG_DONTWAIT);
      if (n > 0) {
        c.out.erase(0, static_cast<size_t>(n));
        continue;
      }
      if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK || errno == EINTR)) return;
      c.dead = true;
      return;
    }
    if (c.close_after_flush) c.dead = true;
  }

  static void reply(Conn& c, const std::string& body) {
    put_u32(c.out, static_cast<uint32_t>(body.size()));
    c.out.append(body);
  }

  static void reply_status(Conn& c, Status s, const std::string& message = {}) {
    std::string b;
    put_u8(b, s);
    if (s == kBadRequest || s == kAuth) put_blob(b, message);
    reply(c, b);
  }

  static void reply_value(Conn& c, const std::string& value) {
    std::string b;
    put_u8(b, kOk);
    put_blob(b, value);
    reply(c, b);
  }

  void process_input(Conn& c) {
    while (!c.dead && !c.waiting && !c.close_after_flush && c.in.size() >= 4) {
      Reader len_reader(c.in.data(), 4);
      const uint32_t len = len_reader.u32();
      if (len > kMaxFrameBytes) {
        reply_status(c, kBadRequest, "frame of " + std::to_string(len) + " bytes exceeds the limit " +
                                         std::to_string(kMaxFrameBytes));
        c.close_after_flush = true;
        break;
      }
      if (c.in.size() < 4 + static_cast<size_t>(len)) break;
      const std::string body = c.in.substr(4, len);
      c.in.erase(0, 4 + static_cast<size_t>(len));
      handle(c, body);
    }
    if (!c.out.empty()) write_some(c);
  }

  // Compares tokens without an early exit on the first differing byte.
  static bool same_token(const std::string& a, const std::string& b) {
    if (a.size() != b.size()) return false;
    unsigned diff = 0;
    for (size_t i = 0; i < a.size(); ++i) diff |= static_cast<unsigned char>(a[i] ^ b[i]);
    return diff == 0;
  }

  void handle(Conn& c, const std::string& body) {
    Reader r(body.data(), body.size());
    const uint8_t op = r.u8();
    if (!c.authed) {
      const std::string token = r.blob(kMaxKeyBytes);
      if (op != kHello || !r.ok() || !same_token(token, token_)) {
        reply_status(c, kAuth, op != kHello ? "the first request must be HELLO with the job token"
                                            : "wrong job token");
        c.close_after_flush = true;
        return;
      }
      c.authed = true;
      reply_status(c, kOk);
      return;
    }
    const std::string key = r.blob(kMaxKeyBytes);
    switch (op) {
      case kSet: {
        const std::string value = r.blob(kMaxValueBytes);
        if (!r.ok() || !r.at_end()) return bad(c, "malformed SET (key <= 1024 bytes, value <= 1 MiB)");
        if (!store_value(key, value)) return bad(c, "store is full (limit " + std::to_string(kMaxStoreBytes) + " bytes)");
        reply_status(c, kOk);
        return;
      }
      case kGet: {
        if (!r.ok() || !r.at_end()) return bad(c, "malformed GET");
        auto it = data_.find(key);
        if (it == data_.end()) return reply_status(c, kNotFound);
        return reply_value(c, it->second);
      }
      case kWait: {
        const int64_t timeout_ms = r.i64();
        if (!r.ok() || !r.at_end()) return bad(c, "malformed WAIT");
        auto it = data_.find(key);
        if (it != data_.end()) return reply_value(c, it->second);
        c.waiting = true;
        c.wait_key = key;
        c.wait_deadline = monotonic_ms() + std::max<int64_t>(0, timeout_ms);
        return;
      }
      case kAdd: {
        const int64_t delta = r.i64();
        if (!r.ok() || !r.at_end()) return bad(c, "malformed ADD");
        int64_t current = 0;
        auto it = data_.find(key);
        if (it != data_.end()) {
          const std::string& s = it->second;
          auto res = std::from_chars(s.data(), s.data() + s.size(), current);
          if (res.ec != std::errc() || res.ptr != s.data() + s.size()) {
            return bad(c, "ADD on key '" + key + "' whose value is not an integer");
          }
        }
        const int64_t next = current + delta;
        if (!store_value(key, std::to_string(next))) return bad(c, "store is full");
        std::string b;
        put_u8(b, kOk);
        put_i64(b, next);
        return reply(c, b);
      }
      default:
        return bad(c, "unknown op " + std::to_string(op));
    }
  }

  void bad(Conn& c, const std::string& message) { reply_status(c, kBadRequest, message); }

  bool store_value(const std::string& key, const std::string& value) {
    auto it = data_.find(key);
    const uint64_t old = it == data_.end() ? 0 : key.size() + it->second.size();
    if (bytes_ - old + key.size() + value.size() > kMaxStoreBytes) return false;
    bytes_ = bytes_ - old + key.size() + value.size();
    data_[key] = value;
    for (auto& w : conns_) {
      if (w.waiting && w.wait_key == key) {
        w.waiting = false;
        reply_value(w, value);
        write_some(w);
      }
    }
    return true;
  }

  void expire(int64_t now) {
    for (auto& c : conns_) {
      if (c.waiting && now >= c.wait_deadline) {
        c.waiting = false;
        reply_status(c, kTimeout);
        write_some(c);
      }
      if (!c.authed && !c.close_after_flush && now >= c.hello_deadline) c.dead = true;
    }
  }

  UniqueFd listen_;
  UniqueFd wake_;
  std::string token_;
  std::atomic<bool> stop_{false};
  std::list<Conn> conns_;
  std::map<std::string, std::string> data_;
  uint64_t bytes_ = 0;
};

StoreServer::StoreServer(const std::string& host, int32_t port, const std::string& job_token) {
  if (job_token.size() > kMaxKeyBytes) {
    fail_invalid("job_token has ", job_token.size(), " bytes, more than the limit ", kMaxKeyBytes);
  }
  UniqueFd fd = tcp_listen(host, port, &port_);
  impl_ = std::make_unique<Impl>(std::move(fd), job_token);
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

}  // namespace nep
