#include "store_core.h"

#include <algorithm>
#include <charconv>
#include <cstdint>

#include "store_protocol.h"

namespace nep {
namespace store {

namespace {

void reply(Session& s, const std::string& body) {
  put_u32(s.out, static_cast<uint32_t>(body.size()));
  s.out.append(body);
}

void reply_status(Session& s, Status st, const std::string& message = {}) {
  std::string b;
  put_u8(b, st);
  if (st == kBadRequest || st == kAuth) put_blob(b, message);
  reply(s, b);
}

void reply_value(Session& s, const std::string& value) {
  std::string b;
  put_u8(b, kOk);
  put_blob(b, value);
  reply(s, b);
}

// Compares tokens without an early exit on the first differing byte.
bool same_token(const std::string& a, const std::string& b) {
  if (a.size() != b.size()) return false;
  unsigned diff = 0;
  for (size_t i = 0; i < a.size(); ++i) diff |= static_cast<unsigned char>(a[i] ^ b[i]);
  return diff == 0;
}

}  // namespace

std::optional<Request> parse_request(const char* body, size_t size, std::string* error) {
  Reader r(body, size);
  Request q;
  q.op = r.u8();
  if (!r.ok()) {
    *error = "empty request";
    return std::nullopt;
  }
  const char* shape = nullptr;
  switch (q.op) {
    case kHello:
      q.key = r.blob(kMaxKeyBytes);
      shape = "malformed HELLO (token <= 1024 bytes)";
      break;
    case kSet:
      q.key = r.blob(kMaxKeyBytes);
      q.value = r.blob(kMaxValueBytes);
      shape = "malformed SET (key <= 1024 bytes, value <= 1 MiB)";
      break;
    case kGet:
      q.key = r.blob(kMaxKeyBytes);
      shape = "malformed GET (key <= 1024 bytes)";
      break;
    case kWait:
      q.key = r.blob(kMaxKeyBytes);
      q.number = r.i64();
      shape = "malformed WAIT (key <= 1024 bytes, i64 timeout_ms)";
      break;
    case kAdd:
      q.key = r.blob(kMaxKeyBytes);
      q.number = r.i64();
      shape = "malformed ADD (key <= 1024 bytes, i64 delta)";
      break;
    default: *error = "unknown op " + std::to_string(q.op); return std::nullopt;
  }
  if (!r.ok() || !r.at_end()) {
    *error = shape;
    return std::nullopt;
  }
  return q;
}

StoreCore::StoreCore(std::string job_token) : token_(std::move(job_token)) {}

void StoreCore::consume(Session& s, int64_t now_ms, const ForEachSession& for_each_waiter) {
  while (!s.waiting && !s.close_after_flush && s.in.size() >= 4) {
    Reader len_reader(s.in.data(), 4);
    const uint32_t len = len_reader.u32();
    // Before the token, only a HELLO fits: an unauthenticated peer cannot make the server
    // buffer a large frame.
    const uint32_t limit = s.authed ? kMaxFrameBytes : kMaxHelloFrameBytes;
    if (len > limit) {
      const std::string what =
          "frame of " + std::to_string(len) + " bytes exceeds the limit " + std::to_string(limit);
      if (s.authed) {
        reply_status(s, kBadRequest, what);
      } else {
        reply_status(s, kAuth, "the first request must be HELLO with the job token (" + what + ")");
      }
      s.close_after_flush = true;
      s.in.clear();
      return;
    }
    if (s.in.size() < 4 + static_cast<size_t>(len)) return;
    const std::string body = s.in.substr(4, len);
    s.in.erase(0, 4 + static_cast<size_t>(len));
    handle(s, body, now_ms, for_each_waiter);
  }
}

bool StoreCore::expire_wait(Session& s, int64_t now_ms) {
  if (!s.waiting || now_ms < s.wait_deadline_ms) return false;
  s.waiting = false;
  reply_status(s, kTimeout);
  return true;
}

void StoreCore::handle(Session& s, const std::string& body, int64_t now_ms,
                       const ForEachSession& for_each_waiter) {
  std::string error;
  const std::optional<Request> q = parse_request(body.data(), body.size(), &error);
  if (!s.authed) {
    if (!q || q->op != kHello || !same_token(q->key, token_)) {
      const bool hello = !body.empty() && static_cast<uint8_t>(body[0]) == kHello;
      reply_status(s, kAuth,
                   !hello ? "the first request must be HELLO with the job token"
                   : !q   ? error
                          : "wrong job token");
      s.close_after_flush = true;
      return;
    }
    s.authed = true;
    reply_status(s, kOk);
    return;
  }
  if (!q) return reply_status(s, kBadRequest, error);
  switch (q->op) {
    case kHello:
      return reply_status(s, kBadRequest, "HELLO on a connection that is already authenticated");
    case kSet:
      if (!store_value(q->key, q->value, for_each_waiter)) {
        return reply_status(s, kBadRequest,
                            "store is full (limit " + std::to_string(kMaxStoreBytes) + " bytes)");
      }
      return reply_status(s, kOk);
    case kGet: {
      auto it = data_.find(q->key);
      if (it == data_.end()) return reply_status(s, kNotFound);
      return reply_value(s, it->second);
    }
    case kWait: {
      auto it = data_.find(q->key);
      if (it != data_.end()) return reply_value(s, it->second);
      s.waiting = true;
      s.wait_key = q->key;
      // Saturating: a huge timeout waits "forever" instead of wrapping into the past.
      const int64_t t = std::max<int64_t>(0, q->number);
      s.wait_deadline_ms = t > INT64_MAX - now_ms ? INT64_MAX : now_ms + t;
      return;
    }
    case kAdd: {
      int64_t current = 0;
      auto it = data_.find(q->key);
      if (it != data_.end()) {
        const std::string& v = it->second;
        auto res = std::from_chars(v.data(), v.data() + v.size(), current);
        if (res.ec != std::errc() || res.ptr != v.data() + v.size()) {
          return reply_status(s, kBadRequest,
                              "ADD on key '" + q->key + "' whose value is not an integer");
        }
      }
      int64_t next = 0;
      if (__builtin_add_overflow(current, q->number, &next)) {
        return reply_status(s, kBadRequest,
                            "ADD of " + std::to_string(q->number) + " to key '" + q->key +
                                "' = " + std::to_string(current) + " overflows int64");
      }
      if (!store_value(q->key, std::to_string(next), for_each_waiter)) {
        return reply_status(s, kBadRequest,
                            "store is full (limit " + std::to_string(kMaxStoreBytes) + " bytes)");
      }
      std::string b;
      put_u8(b, kOk);
      put_i64(b, next);
      return reply(s, b);
    }
    default: return reply_status(s, kBadRequest, "unknown op " + std::to_string(q->op));
  }
}

bool StoreCore::store_value(const std::string& key, const std::string& value,
                            const ForEachSession& for_each_waiter) {
  auto it = data_.find(key);
  const uint64_t old = it == data_.end() ? 0 : key.size() + it->second.size();
  if (bytes_ - old + key.size() + value.size() > kMaxStoreBytes) return false;
  bytes_ = bytes_ - old + key.size() + value.size();
  data_[key] = value;
  for_each_waiter([&](Session& w) {
    if (w.waiting && w.wait_key == key) {
      w.waiting = false;
      reply_value(w, value);
    }
  });
  return true;
}

}  // namespace store
}  // namespace nep
