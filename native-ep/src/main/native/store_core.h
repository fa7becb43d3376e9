// The rendezvous store's request handling without sockets (protocol in store_protocol.h): frame
// splitting, request parsing, the token check, the key-value map with its size bound, and the
// replies. StoreServer feeds it the bytes each connection sent and sends back what it appends;
// the fuzz target fuzz_store drives it directly with arbitrary byte streams.
#ifndef NATIVEEP_SRC_STORE_CORE_H_
#define NATIVEEP_SRC_STORE_CORE_H_

#include <cstdint>
#include <functional>
#include <map>
#include <optional>
#include <string>

namespace nep {
namespace store {

// One decoded request body (see store_protocol.h for the layout of each op).
struct Request {
  uint8_t op = 0;
  std::string key;     // HELLO: the token presented
  std::string value;   // SET
  int64_t number = 0;  // WAIT: timeout_ms; ADD: delta
};

// Parses one frame body. Returns the request, or nullopt with *error set (a message naming the
// op and the limits) when the body is malformed: short, oversized fields or trailing bytes.
std::optional<Request> parse_request(const char* body, size_t size, std::string* error);

// The protocol state of one connection.
struct Session {
  std::string in;   // bytes received and not yet consumed
  std::string out;  // replies not yet sent
  bool authed = false;
  bool close_after_flush = false;  // close once `out` is sent (refused peer, bad frame)
  bool waiting = false;            // a WAIT is pending (no further request is read meanwhile)
  std::string wait_key;
  int64_t wait_deadline_ms = 0;
};

// Calls its argument with every session that may be waiting for a key.
using ForEachSession = std::function<void(const std::function<void(Session&)>&)>;

class StoreCore {
 public:
  explicit StoreCore(std::string job_token);

  // Consumes the complete frames in s.in, appending replies to s.out, until s.in holds no
  // complete frame, s waits (WAIT on a missing key) or s must be closed. A SET or ADD answers
  // every waiting session whose key it stores: `for_each_waiter` must call its argument with
  // every session of the server (s included) that may wait.
  void consume(Session& s, int64_t now_ms, const ForEachSession& for_each_waiter);

  // Answers a pending WAIT of s with TIMEOUT when its deadline has passed; true if it did.
  static bool expire_wait(Session& s, int64_t now_ms);

  uint64_t stored_bytes() const { return bytes_; }
  const std::map<std::string, std::string>& data() const { return data_; }

 private:
  void handle(Session& s, const std::string& body, int64_t now_ms,
              const ForEachSession& for_each_waiter);
  bool store_value(const std::string& key, const std::string& value,
                   const ForEachSession& for_each_waiter);

  std::string token_;
  std::map<std::string, std::string> data_;
  uint64_t bytes_ = 0;
};

}  // namespace store
}  // namespace nep

#endif  // NATIVEEP_SRC_STORE_CORE_H_
