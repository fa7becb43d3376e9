// The rendezvous store's server (protocol in store_protocol.h, request handling in
// store_core.h): one background thread serving every client with poll(); rank 0 (or the
// launcher) runs it for the lifetime of the job.
#ifndef NATIVEEP_SRC_STORE_SERVER_H_
#define NATIVEEP_SRC_STORE_SERVER_H_

#include <cstdint>
#include <memory>
#include <string>
#include <thread>

#include "store_protocol.h"

namespace nep {

// Bounds on connections (defaults from store_protocol.h; tests shrink them).
struct StoreServerLimits {
  int max_connections = store::kMaxConnections;          // authenticated or not
  int max_unauthenticated = store::kMaxUnauthenticated;  // waiting to present the token
  int64_t hello_timeout_ms = store::kHelloTimeoutMs;     // from accept to HELLO
};

// What the server refused so far (for tests and diagnostics).
struct StoreServerCounts {
  int64_t accepted = 0;
  int64_t authenticated = 0;
  int64_t evicted_unauthenticated = 0;  // closed to make room for a newer connection
  int64_t hello_timeouts = 0;           // closed at the handshake deadline
  int64_t refused_full = 0;             // closed at once: max_connections reached
};

class StoreServer {
 public:
  // Listens on host:port (port 0 picks a free port, see port()); clients must present job_token.
  // An empty job_token is refused (NEP_ERR_INVALID_ARGUMENT) unless host is a loopback address.
  StoreServer(const std::string& host, int32_t port, const std::string& job_token,
              const StoreServerLimits& limits = StoreServerLimits{});
  ~StoreServer();  // stops the thread and closes every connection
  StoreServer(const StoreServer&) = delete;
  StoreServer& operator=(const StoreServer&) = delete;

  int32_t port() const { return port_; }
  StoreServerCounts counts() const;

  class Impl;

 private:
  int32_t port_ = 0;
  std::unique_ptr<Impl> impl_;
  std::thread thread_;
};

}  // namespace nep

#endif  // NATIVEEP_SRC_STORE_SERVER_H_
