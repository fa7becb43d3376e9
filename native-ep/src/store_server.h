// The rendezvous store's server (protocol in store_protocol.h): one background thread serving
// every client with poll(); rank 0 (or the launcher) runs it for the lifetime of the job.
#ifndef NATIVEEP_SRC_STORE_SERVER_H_
#define NATIVEEP_SRC_STORE_SERVER_H_

#include <cstdint>
#include <memory>
#include <string>
#include <thread>

namespace nep {

class StoreServer {
 public:
  // Listens on host:port (port 0 picks a free port, see port()); clients must present job_token.
  StoreServer(const std::string& host, int32_t port, const std::string& job_token);
  ~StoreServer();  // stops the thread and closes every connection
  StoreServer(const StoreServer&) = delete;
  StoreServer& operator=(const StoreServer&) = delete;

  int32_t port() const { return port_; }

  class Impl;

 private:
  int32_t port_ = 0;
  std::unique_ptr<Impl> impl_;
  std::thread thread_;
};

}  // namespace nep

#endif  // NATIVEEP_SRC_STORE_SERVER_H_
