// libFuzzer target over the rendezvous store's message handling (store_core.h: frame splitting,
// request parsing, the token check, WAIT/ADD/SET semantics), without sockets: the same code the
// server runs for every connection's bytes.
//
// The input is a stream of steps on three connections (Session objects sharing one StoreCore
// with the token "tok"). Each step's control byte picks the connection and what happens:
//   0  raw bytes (any length up to 255) appended to the connection's input, split anywhere;
//   1  one frame built from choices: op 0..7, a key from a small set or raw bytes, a value, an
//      i64 from interesting values, and sometimes a lying length prefix or trailing bytes;
//   2  a HELLO with the right token, a wrong one, or a truncated one;
//   3  time passes (0..2550 ms): pending WAITs whose deadline passed are answered TIMEOUT.
// After every step the connection's input is consumed, and the invariants below are checked:
//   - every reply is a complete frame <= kMaxFrameBytes whose status is one of the five codes,
//     and whose BAD_REQUEST/AUTH message is a blob that fills the rest of the frame;
//   - a connection that has not presented the token gets only AUTH (then it is closed) or the
//     OK of its HELLO, and its input never changes the store;
//   - a closed (refused) connection consumes nothing more;
//   - a waiting connection's key is absent from the store (a SET of it must have woken it), and
//     a waiting connection gets no reply until it is woken or times out;
//   - the store's byte count equals the sum over its keys and values (recounted by a loop) and
//     stays <= kMaxStoreBytes.
// A violation prints "INVARIANT VIOLATED" and aborts (libFuzzer saves the input).
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <functional>
#include <limits>
#include <map>
#include <string>

#include "../src/main/native/store_core.h"
#include "../src/main/native/store_protocol.h"

namespace {

using nep::store::Session;
using nep::store::StoreCore;

[[noreturn]] void violated(const char* what, const std::string& detail) {
  std::fprintf(stderr, "INVARIANT VIOLATED: %s: %s\n", what, detail.c_str());
  std::abort();
}

class FuzzInput {
 public:
  FuzzInput(const uint8_t* d, size_t n) : d_(d), n_(n) {}
  bool done() const { return pos_ >= n_; }
  uint8_t byte() { return pos_ < n_ ? d_[pos_++] : 0; }
  std::string bytes(size_t n) {
    std::string s;
    while (n-- > 0 && pos_ < n_) s.push_back(static_cast<char>(d_[pos_++]));
    return s;
  }
  int64_t i64() {
    static const int64_t kInteresting[] = {0,
                                           1,
                                           -1,
                                           50,
                                           3000,
                                           std::numeric_limits<int64_t>::max(),
                                           std::numeric_limits<int64_t>::min(),
                                           std::numeric_limits<int64_t>::max() - 1,
                                           -3000,
                                           std::numeric_limits<int32_t>::max(),
                                           1LL << 40};
    const uint8_t sel = byte();
    if (sel < 200) return kInteresting[sel % (sizeof kInteresting / sizeof kInteresting[0])];
    int64_t v = 0;
    for (int i = 0; i < 8; ++i) v = static_cast<int64_t>((static_cast<uint64_t>(v) << 8) | byte());
    return v;
  }

 private:
  const uint8_t* d_;
  size_t n_;
  size_t pos_ = 0;
};

struct Conn {
  Session s;
  int64_t replies = 0;
  bool refused = false;  // got AUTH: the server closes it after sending
};

std::string key_choice(FuzzInput& in) {
  static const char* kKeys[] = {"a", "b", "n", "nep/shm/1/segment/0", ""};
  const uint8_t sel = in.byte();
  if (sel < 200) return kKeys[sel % 5];
  return in.bytes(sel - 200);
}

std::string built_frame(FuzzInput& in) {
  std::string body;
  const uint8_t op = in.byte() % 8;
  nep::store::put_u8(body, op);
  nep::store::put_blob(body, key_choice(in));
  if (op == nep::store::kSet) {
    const uint8_t sel = in.byte();
    nep::store::put_blob(body, sel < 128 ? std::to_string(sel) : in.bytes(sel - 128));
  } else if (op == nep::store::kWait || op == nep::store::kAdd) {
    nep::store::put_i64(body, in.i64());
  }
  const uint8_t twist = in.byte();
  if (twist >= 240) body += in.bytes(twist - 239);                // trailing bytes
  if (twist >= 225 && twist < 240) body.resize(body.size() / 2);  // truncated fields
  std::string frame;
  uint32_t len = static_cast<uint32_t>(body.size());
  if (twist >= 215 && twist < 225) len = static_cast<uint32_t>(in.i64());  // a lying length
  nep::store::put_u32(frame, len);
  return frame + body;
}

std::string hello_frame(FuzzInput& in) {
  std::string body;
  nep::store::put_u8(body, nep::store::kHello);
  const uint8_t sel = in.byte();
  nep::store::put_blob(body, sel < 160 ? "tok" : sel < 200 ? "tok0" : sel < 230 ? "" : "to");
  if (sel >= 250) body.pop_back();
  std::string frame;
  nep::store::put_u32(frame, static_cast<uint32_t>(body.size()));
  return frame + body;
}

// Takes the complete reply frames off c.s.out (what the server would send), checking each.
void drain_replies(Conn& c, bool was_authed) {
  std::string& out = c.s.out;
  size_t pos = 0;
  while (out.size() - pos >= 4) {
    nep::store::Reader lr(out.data() + pos, 4);
    const uint32_t len = lr.u32();
    if (len > nep::store::kMaxFrameBytes)
      violated("reply", "frame of " + std::to_string(len) + " bytes");
    if (out.size() - pos - 4 < len) violated("reply", "incomplete reply frame");
    nep::store::Reader r(out.data() + pos + 4, len);
    const uint8_t status = r.u8();
    if (!r.ok() || status > nep::store::kAuth)
      violated("reply", "status " + std::to_string(status));
    if (status == nep::store::kBadRequest || status == nep::store::kAuth) {
      const std::string message = r.blob(nep::store::kMaxFrameBytes);
      if (!r.ok() || !r.at_end() || message.empty())
        violated("reply", "error reply without a message blob");
    }
    if (!was_authed && status != nep::store::kAuth && status != nep::store::kOk) {
      violated("unauthenticated", "reply with status " + std::to_string(status));
    }
    if (status == nep::store::kAuth) c.refused = true;
    if (status == nep::store::kOk && !was_authed) was_authed = true;  // the OK of its HELLO
    ++c.replies;
    pos += 4 + len;
  }
  if (pos != out.size()) violated("reply", "bytes after the last complete frame");
  out.clear();
}

void check_store(const StoreCore& core, Conn* conns, int n) {
  uint64_t bytes = 0;
  for (const auto& kv : core.data()) bytes += kv.first.size() + kv.second.size();
  if (bytes != core.stored_bytes()) {
    violated("store", "counted " + std::to_string(bytes) + " bytes, the store says " +
                          std::to_string(core.stored_bytes()));
  }
  if (bytes > nep::store::kMaxStoreBytes) violated("store", "above kMaxStoreBytes");
  for (int i = 0; i < n; ++i) {
    const Session& s = conns[i].s;
    if (s.waiting && core.data().count(s.wait_key) != 0)
      violated("wait", "waiting for a key that is set: " + s.wait_key);
    if (s.waiting && !s.authed) violated("wait", "an unauthenticated connection waits");
  }
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  FuzzInput in(data, size);
  StoreCore core("tok");
  constexpr int kConns = 3;
  Conn conns[kConns];
  int64_t now = 1000;
  auto for_each = [&](const std::function<void(Session&)>& visit) {
    for (auto& c : conns) visit(c.s);
  };
  int steps = 0;
  while (!in.done() && steps++ < 512) {
    const uint8_t control = in.byte();
    Conn& c = conns[control % kConns];
    const int kind = (control >> 2) & 3;
    if (kind == 3) {
      now += 10 * static_cast<int64_t>(in.byte());
      for (auto& w : conns) {
        const bool was_waiting = w.s.waiting;
        const bool answered = StoreCore::expire_wait(w.s, now);
        if (answered && (!was_waiting || now < w.s.wait_deadline_ms))
          violated("expire", "answered early");
        drain_replies(w, w.s.authed);
      }
      check_store(core, conns, kConns);
      continue;
    }
    const std::string add = kind == 0   ? in.bytes(in.byte())
                            : kind == 1 ? built_frame(in)
                                        : hello_frame(in);
    if (c.refused || c.s.close_after_flush) {
      // The server closed it after its last reply; a new connection takes its place.
      c = Conn{};
    }
    c.s.in += add;
    const bool was_authed = c.s.authed;
    const bool was_waiting = c.s.waiting;
    const std::map<std::string, std::string> before =
        was_authed ? std::map<std::string, std::string>{} : core.data();
    core.consume(c.s, now, for_each);
    if (!c.s.authed && core.data() != before)
      violated("unauthenticated", "input changed the store");
    if (was_waiting && c.s.waiting && !c.s.out.empty())
      violated("wait", "a waiting connection got a reply");
    for (auto& w : conns) drain_replies(w, &w == &c ? was_authed : w.s.authed);
    if (c.refused && !c.s.close_after_flush) violated("auth", "refused but not closed");
    if (c.s.close_after_flush) {
      // Nothing more is read from a connection that is being closed.
      const int64_t r = c.replies;
      c.s.in += add;
      core.consume(c.s, now, for_each);
      if (!c.s.out.empty() || c.replies != r) violated("close", "a closing connection was served");
    }
    check_store(core, conns, kConns);
  }
  return 0;
}
