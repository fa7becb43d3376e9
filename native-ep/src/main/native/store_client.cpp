#include "store_client.h"

#include <algorithm>
#include <chrono>
#include <thread>

#include "error.h"
#include "store_protocol.h"
#include "sys_util.h"

namespace nep {

using namespace store;

namespace {

void check_key(const std::string& key) {
  if (key.empty() || key.size() > kMaxKeyBytes) {
    fail_invalid("store key of ", key.size(), " bytes is outside [1, ", kMaxKeyBytes, "]");
  }
}

}  // namespace

StoreClient::StoreClient(const std::string& host, int32_t port, const std::string& job_token,
                         int64_t timeout_ms, std::string who)
    : endpoint_(host + ":" + std::to_string(port)), who_(std::move(who)), timeout_ms_(timeout_ms) {
  if (timeout_ms <= 0) fail_invalid("timeout_ms = ", timeout_ms, " must be > 0");
  if (job_token.size() > kMaxKeyBytes) {
    fail_invalid("job_token has ", job_token.size(), " bytes, more than the limit ", kMaxKeyBytes);
  }
  const int64_t deadline = monotonic_ms() + timeout_ms;
  std::string body;
  put_u8(body, kHello);
  put_blob(body, job_token);
  std::string reply;
  // A server at its bound on connections, or one that had to make room among connections still
  // in their handshake, closes without a reply: try again until the deadline.
  for (int64_t backoff_ms = 10;; backoff_ms = std::min<int64_t>(backoff_ms * 2, 200)) {
    try {
      fd_ = tcp_connect(host, port, deadline);
    } catch (const Error& e) {
      fail(e.code(), who_, ": ", e.what());
    }
    try {
      reply = request(body, deadline);
      break;
    } catch (const Error& e) {
      if (e.code() != NEP_ERR_PEER || monotonic_ms() + backoff_ms >= deadline) throw;
    }
    fd_.reset();
    std::this_thread::sleep_for(std::chrono::milliseconds(backoff_ms));
  }
  Reader r(reply.data(), reply.size());
  const uint8_t status = r.u8();
  if (status != kOk) fail_reply(status, r.blob(kMaxFrameBytes), "");
}

std::string StoreClient::request(const std::string& body, int64_t deadline_ms) {
  std::string frame;
  put_u32(frame, static_cast<uint32_t>(body.size()));
  frame.append(body);
  const std::string what = "store at " + endpoint_;
  try {
    send_all(fd_.get(), frame, deadline_ms, what);
    char len_bytes[4];
    recv_exact(fd_.get(), len_bytes, 4, deadline_ms, what);
    Reader lr(len_bytes, 4);
    const uint32_t len = lr.u32();
    if (len > kMaxFrameBytes) fail(NEP_ERR_PEER, what, " sent a frame of ", len, " bytes");
    std::string reply(len, '\0');
    recv_exact(fd_.get(), reply.data(), len, deadline_ms, what);
    return reply;
  } catch (const Error& e) {
    fail(e.code(), who_, ": ", e.what());
  }
}

void StoreClient::fail_reply(uint8_t status, const std::string& detail, const std::string& key) {
  switch (status) {
    case kAuth:
      fail(NEP_ERR_PEER, who_, ": store at ", endpoint_, " refused the connection: ", detail);
    case kBadRequest:
      fail(NEP_ERR_INVALID_ARGUMENT, who_, ": store rejected the request for key '", key,
           "': ", detail);
    case kTimeout: fail(NEP_ERR_TIMEOUT, who_, ": timed out waiting for store key '", key, "'");
    default:
      fail(NEP_ERR_PEER, who_, ": store at ", endpoint_, " replied with unknown status ",
           int{status});
  }
}

void StoreClient::set(const std::string& key, const std::string& value) {
  check_key(key);
  if (value.size() > kMaxValueBytes) {
    fail_invalid("store value for '", key, "' has ", value.size(), " bytes, more than the limit ",
                 kMaxValueBytes);
  }
  std::string body;
  put_u8(body, kSet);
  put_blob(body, key);
  put_blob(body, value);
  const std::string reply = request(body, monotonic_ms() + timeout_ms_);
  Reader r(reply.data(), reply.size());
  const uint8_t status = r.u8();
  if (status != kOk) fail_reply(status, r.blob(kMaxFrameBytes), key);
}

std::optional<std::string> StoreClient::get(const std::string& key) {
  check_key(key);
  std::string body;
  put_u8(body, kGet);
  put_blob(body, key);
  const std::string reply = request(body, monotonic_ms() + timeout_ms_);
  Reader r(reply.data(), reply.size());
  const uint8_t status = r.u8();
  if (status == kNotFound) return std::nullopt;
  if (status != kOk) fail_reply(status, r.blob(kMaxFrameBytes), key);
  std::string value = r.blob(kMaxValueBytes);
  if (!r.ok()) fail(NEP_ERR_PEER, who_, ": malformed GET reply for key '", key, "'");
  return value;
}

std::string StoreClient::wait(const std::string& key, int64_t timeout_ms) {
  check_key(key);
  if (timeout_ms < 0) fail_invalid("timeout_ms = ", timeout_ms, " must be >= 0");
  std::string body;
  put_u8(body, kWait);
  put_blob(body, key);
  put_i64(body, timeout_ms);
  // The server answers TIMEOUT at timeout_ms; the socket deadline leaves it time to do so.
  const std::string reply = request(body, monotonic_ms() + timeout_ms + 5000);
  Reader r(reply.data(), reply.size());
  const uint8_t status = r.u8();
  if (status == kTimeout) {
    fail(NEP_ERR_TIMEOUT, who_, ": timed out after ", timeout_ms, " ms waiting for store key '",
         key, "'");
  }
  if (status != kOk) fail_reply(status, r.blob(kMaxFrameBytes), key);
  std::string value = r.blob(kMaxValueBytes);
  if (!r.ok()) fail(NEP_ERR_PEER, who_, ": malformed WAIT reply for key '", key, "'");
  return value;
}

int64_t StoreClient::add(const std::string& key, int64_t delta) {
  check_key(key);
  std::string body;
  put_u8(body, kAdd);
  put_blob(body, key);
  put_i64(body, delta);
  const std::string reply = request(body, monotonic_ms() + timeout_ms_);
  Reader r(reply.data(), reply.size());
  const uint8_t status = r.u8();
  if (status != kOk) fail_reply(status, r.blob(kMaxFrameBytes), key);
  const int64_t value = r.i64();
  if (!r.ok()) fail(NEP_ERR_PEER, who_, ": malformed ADD reply for key '", key, "'");
  return value;
}

}  // namespace nep
