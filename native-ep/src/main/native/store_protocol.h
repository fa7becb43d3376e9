// Rendezvous key-value store: the wire protocol shared by StoreServer, StoreClient and any other
// client (Java speaks it too). TCP; all integers little-endian.
//
// Frame (both directions): u32 body_length (<= kMaxFrameBytes; <= kMaxHelloFrameBytes before the
// HELLO is accepted), then body_length bytes.
// A blob is u32 length + bytes. A request body starts with u8 op:
//   HELLO 1  blob job_token                 -> OK | AUTH(blob message), then the server closes
//   SET   2  blob key, blob value           -> OK
//   GET   3  blob key                       -> OK blob value | NOT_FOUND
//   WAIT  4  blob key, i64 timeout_ms       -> OK blob value once the key exists | TIMEOUT
//   ADD   5  blob key, i64 delta            -> OK i64 new_value (missing key counts as 0; the
//                                              value is kept as decimal ASCII, so GET returns
//                                              e.g. "3"; ADD on a non-integer value is BAD_REQUEST)
// A reply body starts with u8 status: 0 OK, 1 NOT_FOUND, 2 TIMEOUT, 3 BAD_REQUEST (blob
// message), 4 AUTH (blob message). The first request of a connection must be HELLO with the
// job's token; it must arrive within kHelloTimeoutMs, and at most kMaxUnauthenticated
// connections may be waiting to send it (the oldest is closed first). One request at a time per
// connection (a WAIT blocks that connection until it is answered). A server on an address other
// than loopback refuses to start with an empty token.
// Limits: key <= kMaxKeyBytes, value <= kMaxValueBytes, stored keys+values <= kMaxStoreBytes,
// at most kMaxConnections clients; beyond them a request gets BAD_REQUEST or the connection is
// refused.
#ifndef NATIVEEP_SRC_STORE_PROTOCOL_H_
#define NATIVEEP_SRC_STORE_PROTOCOL_H_

#include <cstdint>
#include <cstring>
#include <string>

namespace nep {
namespace store {

enum Op : uint8_t { kHello = 1, kSet = 2, kGet = 3, kWait = 4, kAdd = 5 };
enum Status : uint8_t { kOk = 0, kNotFound = 1, kTimeout = 2, kBadRequest = 3, kAuth = 4 };

constexpr uint32_t kMaxKeyBytes = 1024;
constexpr uint32_t kMaxValueBytes = 1u << 20;
constexpr uint32_t kMaxFrameBytes = kMaxValueBytes + 4096;
constexpr uint32_t kMaxHelloFrameBytes = 1 + 4 + kMaxKeyBytes;  // the largest frame before HELLO
constexpr uint64_t kMaxStoreBytes = 64ull << 20;
constexpr int kMaxConnections = 4096;
// Handshake bounds: a connection must present the token within kHelloTimeoutMs of being
// accepted, and at most kMaxUnauthenticated connections may be waiting to do so; beyond that
// the oldest waiting connection is closed, so idle connections cannot crowd out real ranks
// (whose HELLO follows their connect at once).
constexpr int64_t kHelloTimeoutMs = 10000;
constexpr int kMaxUnauthenticated = 64;

// Appends little-endian fields to a frame body.
inline void put_u8(std::string& b, uint8_t v) { b.push_back(static_cast<char>(v)); }
inline void put_u32(std::string& b, uint32_t v) {
  for (int i = 0; i < 4; ++i) b.push_back(static_cast<char>((v >> (8 * i)) & 0xFF));
}
inline void put_i64(std::string& b, int64_t v) {
  const uint64_t u = static_cast<uint64_t>(v);
  for (int i = 0; i < 8; ++i) b.push_back(static_cast<char>((u >> (8 * i)) & 0xFF));
}
inline void put_blob(std::string& b, const std::string& s) {
  put_u32(b, static_cast<uint32_t>(s.size()));
  b.append(s);
}

// Reads fields from a frame body; ok() turns false on a short or oversized read.
class Reader {
 public:
  Reader(const char* data, size_t size) : p_(data), end_(data + size) {}
  bool ok() const { return ok_; }
  bool at_end() const { return p_ == end_; }
  uint8_t u8() {
    if (!need(1)) return 0;
    return static_cast<uint8_t>(*p_++);
  }
  uint32_t u32() {
    if (!need(4)) return 0;
    uint32_t v = 0;
    for (int i = 0; i < 4; ++i) v |= static_cast<uint32_t>(static_cast<uint8_t>(p_[i])) << (8 * i);
    p_ += 4;
    return v;
  }
  int64_t i64() {
    if (!need(8)) return 0;
    uint64_t v = 0;
    for (int i = 0; i < 8; ++i) v |= static_cast<uint64_t>(static_cast<uint8_t>(p_[i])) << (8 * i);
    p_ += 8;
    return static_cast<int64_t>(v);
  }
  std::string blob(uint32_t max_bytes) {
    const uint32_t n = u32();
    if (!ok_ || n > max_bytes || !need(n)) {
      ok_ = false;
      return {};
    }
    std::string s(p_, n);
    p_ += n;
    return s;
  }

 private:
  bool need(size_t n) {
    if (!ok_ || static_cast<size_t>(end_ - p_) < n) ok_ = false;
    return ok_;
  }
  const char* p_;
  const char* end_;
  bool ok_ = true;
};

}  // namespace store
}  // namespace nep

#endif  // NATIVEEP_SRC_STORE_PROTOCOL_H_
