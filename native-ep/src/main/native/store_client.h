// A client of the rendezvous store (protocol in store_protocol.h). Not thread-safe: one request
// at a time. Every call has a deadline; timeouts name the key and who waited for it.
#ifndef NATIVEEP_SRC_STORE_CLIENT_H_
#define NATIVEEP_SRC_STORE_CLIENT_H_

#include <cstdint>
#include <optional>
#include <string>

#include "socket_util.h"

namespace nep {

class StoreClient {
 public:
  // Connects (retrying until timeout_ms while the server is not up yet) and presents the token.
  // `who` (e.g. "rank 2") prefixes error messages; timeout_ms also bounds each later request.
  StoreClient(const std::string& host, int32_t port, const std::string& job_token,
              int64_t timeout_ms, std::string who);

  void set(const std::string& key, const std::string& value);
  std::optional<std::string> get(const std::string& key);
  // Blocks until key exists (NEP_ERR_TIMEOUT after timeout_ms, naming the key).
  std::string wait(const std::string& key, int64_t timeout_ms);
  int64_t add(const std::string& key, int64_t delta);

  int64_t timeout_ms() const { return timeout_ms_; }
  const std::string& who() const { return who_; }

 private:
  std::string request(const std::string& body, int64_t deadline_ms);
  [[noreturn]] void fail_reply(uint8_t status, const std::string& detail, const std::string& key);

  std::string endpoint_;
  std::string who_;
  int64_t timeout_ms_;
  UniqueFd fd_;
};

}  // namespace nep

#endif  // NATIVEEP_SRC_STORE_CLIENT_H_
