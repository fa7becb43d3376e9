// Rendezvous store security: no unauthenticated server off loopback, bounded
// handshakes (a cap on connections that have not presented the token, evicting the oldest, and a
// handshake deadline), the total connection bound, and protocol edge cases the fuzz target
// fuzz_store checks as invariants (ADD overflow, huge WAIT timeouts, malformed HELLO).
#include <gtest/gtest.h>

#include <poll.h>
#include <sys/socket.h>
#include <unistd.h>

#include <atomic>
#include <cstdint>
#include <deque>
#include <limits>
#include <string>
#include <thread>
#include <vector>

#include "error.h"
#include "nativeep/c_api.h"
#include "socket_util.h"
#include "store_client.h"
#include "store_core.h"
#include "store_protocol.h"
#include "store_server.h"
#include "sys_util.h"

namespace {

const char* kHost = "127.0.0.1";

template <class Fn>
std::string error_of(Fn&& fn, int32_t* code = nullptr) {
  try {
    fn();
  } catch (const nep::Error& e) {
    if (code != nullptr) *code = e.code();
    return e.what();
  }
  return "";
}

bool contains(const std::string& s, const std::string& part) {
  return s.find(part) != std::string::npos;
}

// Waits up to ms for the server to close fd; true when it did (EOF or reset).
bool closed_by_server(int fd, int64_t ms) {
  const int64_t deadline = nep::monotonic_ms() + ms;
  for (;;) {
    const int64_t left = deadline - nep::monotonic_ms();
    if (left <= 0) return false;
    pollfd p{fd, POLLIN, 0};
    if (poll(&p, 1, static_cast<int>(left)) > 0) {
      char b;
      const ssize_t n = recv(fd, &b, 1, MSG_DONTWAIT);
      if (n == 0 || (n < 0 && errno != EAGAIN && errno != EWOULDBLOCK && errno != EINTR))
        return true;
    }
  }
}

std::string frame(const std::string& body) {
  std::string f;
  nep::store::put_u32(f, static_cast<uint32_t>(body.size()));
  return f + body;
}

std::string hello(const std::string& token) {
  std::string b;
  nep::store::put_u8(b, nep::store::kHello);
  nep::store::put_blob(b, token);
  return b;
}

// Sends one request frame and returns the reply body.
std::string roundtrip(int fd, const std::string& body) {
  nep::send_all(fd, frame(body), nep::monotonic_ms() + 3000, "store");
  char len[4];
  nep::recv_exact(fd, len, 4, nep::monotonic_ms() + 3000, "store");
  nep::store::Reader r(len, 4);
  std::string reply(r.u32(), '\0');
  nep::recv_exact(fd, reply.data(), reply.size(), nep::monotonic_ms() + 3000, "store");
  return reply;
}

}  // namespace

TEST(StoreSecurity, EmptyTokenOffLoopbackIsRefusedNamingTheAddressAndTheVariable) {
  for (const char* host : {"0.0.0.0", "10.1.2.3", "192.0.2.7"}) {
    int32_t code = 0;
    const std::string m = error_of([&] { nep::StoreServer s(host, 29555, ""); }, &code);
    EXPECT_EQ(code, NEP_ERR_INVALID_ARGUMENT) << m;
    EXPECT_TRUE(contains(m, std::string("refusing to listen on ") + host + ":29555")) << m;
    EXPECT_TRUE(contains(m, "not a loopback address") && contains(m, "empty job token")) << m;
    EXPECT_TRUE(contains(m, "DJL_MOE_JOB_TOKEN")) << m;
  }
  // Through the C ABI (what the Java StoreServer calls): the same refusal, nothing created.
  char err[1024];
  nep_store_server* s = reinterpret_cast<nep_store_server*>(0x1);
  EXPECT_EQ(nep_store_server_create("0.0.0.0", 0, "", &s, err, sizeof err),
            NEP_ERR_INVALID_ARGUMENT);
  EXPECT_EQ(s, nullptr);
  EXPECT_TRUE(contains(err, "0.0.0.0:0") && contains(err, "DJL_MOE_JOB_TOKEN")) << err;

  EXPECT_FALSE(nep::is_loopback_host("0.0.0.0"));
  EXPECT_FALSE(nep::is_loopback_host("128.0.0.1"));
  EXPECT_TRUE(nep::is_loopback_host("127.0.0.1"));
  EXPECT_TRUE(nep::is_loopback_host("127.3.2.1"));
  EXPECT_TRUE(nep::is_loopback_host("localhost"));

  // Loopback needs no token (single-host runs without a launcher); it still works.
  for (const char* host : {"127.0.0.1", "localhost"}) {
    nep::StoreServer open(host, 0, "");
    nep::StoreClient c(host, open.port(), "", 3000, "rank 0");
    c.set("k", "v");
    EXPECT_EQ(c.get("k").value(), "v");
  }
}

TEST(StoreSecurity, SilentConnectionsAreClosedAtTheHandshakeDeadline) {
  nep::StoreServerLimits limits;
  limits.hello_timeout_ms = 400;
  nep::StoreServer server(kHost, 0, "tok", limits);
  nep::StoreClient real(kHost, server.port(), "tok", 5000, "rank 0");
  const int64_t start = nep::monotonic_ms();
  nep::UniqueFd silent = nep::tcp_connect(kHost, server.port(), nep::monotonic_ms() + 2000);
  // Slowloris: two bytes of a frame length, then nothing.
  nep::UniqueFd partial = nep::tcp_connect(kHost, server.port(), nep::monotonic_ms() + 2000);
  nep::send_all(partial.get(), std::string("\x08\x00", 2), nep::monotonic_ms() + 2000, "store");
  EXPECT_TRUE(closed_by_server(silent.get(), 5000));
  EXPECT_TRUE(closed_by_server(partial.get(), 5000));
  const int64_t took = nep::monotonic_ms() - start;
  EXPECT_GE(took, 350);
  EXPECT_LT(took, 3000);
  EXPECT_EQ(server.counts().hello_timeouts, 2);
  // An authenticated connection is not subject to the deadline.
  std::this_thread::sleep_for(std::chrono::milliseconds(500));
  real.set("after", "1");
  EXPECT_EQ(real.get("after").value(), "1");
  EXPECT_EQ(server.counts().authenticated, 1);
}

TEST(StoreSecurity, AFloodOfIdleConnectionsIsBoundedAndDoesNotBlockRealRanks) {
  nep::StoreServerLimits limits;
  limits.max_unauthenticated = 8;
  limits.hello_timeout_ms = 60000;  // only the cap can help within this test's time
  nep::StoreServer server(kHost, 0, "tok", limits);
  const int port = server.port();
  std::vector<nep::UniqueFd> idle;
  for (int i = 0; i < 200; ++i)
    idle.push_back(nep::tcp_connect(kHost, port, nep::monotonic_ms() + 2000));

  // A real rank gets in at once although 200 idle connections came first.
  int64_t start = nep::monotonic_ms();
  nep::StoreClient a(kHost, port, "tok", 3000, "rank 0");
  a.set("k", "v");
  EXPECT_LT(nep::monotonic_ms() - start, 2000);

  // The server holds at most `max_unauthenticated` of them: the others were closed.
  int closed = 0;
  for (auto& fd : idle) closed += closed_by_server(fd.get(), closed >= 192 ? 50 : 3000);
  EXPECT_GE(closed, 192);
  EXPECT_LE(closed, 200);
  EXPECT_GE(server.counts().evicted_unauthenticated, 192);
  idle.clear();

  // While a flooder keeps opening idle connections, ranks still connect and work.
  std::atomic<bool> stop{false};
  std::atomic<int64_t> flood_connects{0};
  std::thread flooder([&] {
    std::deque<nep::UniqueFd> held;
    while (!stop.load()) {
      try {
        held.push_back(nep::tcp_connect(kHost, port, nep::monotonic_ms() + 1000));
        flood_connects.fetch_add(1);
      } catch (const nep::Error&) {
      }
      if (held.size() > 256) held.pop_front();
    }
  });
  // The ranks start once the flood has filled the handshake cap many times over.
  const int64_t flood_deadline = nep::monotonic_ms() + 10000;
  while (flood_connects.load() < 100 && nep::monotonic_ms() < flood_deadline) {
    std::this_thread::sleep_for(std::chrono::milliseconds(5));
  }
  if (flood_connects.load() < 100) {
    stop.store(true);
    flooder.join();
    FAIL() << "the flood did not run: " << flood_connects.load() << " connections in 10 s";
  }
  std::vector<std::thread> ranks;
  std::atomic<int> ok{0};
  std::vector<std::string> failures(4);
  for (int r = 0; r < 4; ++r) {
    ranks.emplace_back([&, r] {
      try {
        for (int i = 0; i < 20; ++i) {
          nep::StoreClient c(kHost, port, "tok", 5000, "rank " + std::to_string(r));
          c.add("count", 1);
        }
        ok.fetch_add(1);
      } catch (const nep::Error& e) {
        failures[r] = e.what();
      }
    });
  }
  for (auto& t : ranks) t.join();
  stop.store(true);
  flooder.join();
  for (int r = 0; r < 4; ++r) EXPECT_EQ(failures[r], "") << "rank " << r;
  EXPECT_EQ(ok.load(), 4);
  EXPECT_EQ(a.get("count").value(), "80");
  std::printf(
      "flood: %lld idle connections opened during 80 real connections; counts: accepted %lld, "
      "authenticated %lld, evicted %lld\n",
      static_cast<long long>(flood_connects.load()),
      static_cast<long long>(server.counts().accepted),
      static_cast<long long>(server.counts().authenticated),
      static_cast<long long>(server.counts().evicted_unauthenticated));
}

TEST(StoreSecurity, TheTotalConnectionBoundRefusesTheNextAndRecovers) {
  nep::StoreServerLimits limits;
  limits.max_connections = 3;
  nep::StoreServer server(kHost, 0, "tok", limits);
  std::vector<std::unique_ptr<nep::StoreClient>> held;
  for (int i = 0; i < 3; ++i) {
    held.push_back(std::make_unique<nep::StoreClient>(kHost, server.port(), "tok", 3000,
                                                      "rank " + std::to_string(i)));
  }
  int32_t code = 0;
  const std::string m =
      error_of([&] { nep::StoreClient c(kHost, server.port(), "tok", 1000, "rank 3"); }, &code);
  EXPECT_EQ(code, NEP_ERR_PEER) << m;
  // Closed at once (EOF, or a reset when the HELLO was still unread).
  EXPECT_TRUE(contains(m, "rank 3: ") &&
              (contains(m, "closed the connection") || contains(m, "reset by peer")))
      << m;
  EXPECT_GE(server.counts().refused_full, 1);  // the client retried until its deadline
  held.pop_back();
  // Room again once a client left (the server notices the close within a poll round).
  bool joined = false;
  for (int i = 0; i < 50 && !joined; ++i) {
    try {
      nep::StoreClient c(kHost, server.port(), "tok", 1000, "rank 3");
      c.set("in", "1");
      joined = true;
    } catch (const nep::Error&) {
      std::this_thread::sleep_for(std::chrono::milliseconds(20));
    }
  }
  EXPECT_TRUE(joined);
}

TEST(StoreSecurity, ProtocolEdgesAreRefusedOrSaturatedNotUndefined) {
  nep::StoreServer server(kHost, 0, "tok");
  // A HELLO with the right token but trailing bytes is malformed: refused and closed.
  {
    nep::UniqueFd fd = nep::tcp_connect(kHost, server.port(), nep::monotonic_ms() + 2000);
    const std::string r = roundtrip(fd.get(), hello("tok") + "x");
    EXPECT_EQ(static_cast<uint8_t>(r[0]), nep::store::kAuth);
    EXPECT_TRUE(contains(r, "malformed HELLO")) << r.substr(5);
    EXPECT_TRUE(closed_by_server(fd.get(), 3000));
  }
  nep::UniqueFd fd = nep::tcp_connect(kHost, server.port(), nep::monotonic_ms() + 2000);
  ASSERT_EQ(roundtrip(fd.get(), hello("tok")), std::string("\x00", 1));
  // A second HELLO is a bad request, not an unknown op.
  std::string r = roundtrip(fd.get(), hello("tok"));
  EXPECT_EQ(static_cast<uint8_t>(r[0]), nep::store::kBadRequest);
  EXPECT_TRUE(contains(r, "already authenticated")) << r;
  // ADD past INT64_MAX: refused naming the key, the value kept.
  auto add = [&](int64_t delta) {
    std::string b;
    nep::store::put_u8(b, nep::store::kAdd);
    nep::store::put_blob(b, "n");
    nep::store::put_i64(b, delta);
    return roundtrip(fd.get(), b);
  };
  EXPECT_EQ(add(std::numeric_limits<int64_t>::max()).substr(0, 1), std::string("\x00", 1));
  r = add(1);
  EXPECT_EQ(static_cast<uint8_t>(r[0]), nep::store::kBadRequest);
  EXPECT_TRUE(contains(r, "overflows int64") && contains(r, "'n'")) << r;
  r = add(-1);
  nep::store::Reader rr(r.data() + 1, r.size() - 1);
  EXPECT_EQ(rr.i64(), std::numeric_limits<int64_t>::max() - 1);
  // WAIT with timeout INT64_MAX waits (the deadline saturates instead of wrapping into the past).
  nep::UniqueFd waiter = nep::tcp_connect(kHost, server.port(), nep::monotonic_ms() + 2000);
  ASSERT_EQ(roundtrip(waiter.get(), hello("tok")), std::string("\x00", 1));
  std::string wb;
  nep::store::put_u8(wb, nep::store::kWait);
  nep::store::put_blob(wb, "later");
  nep::store::put_i64(wb, std::numeric_limits<int64_t>::max());
  nep::send_all(waiter.get(), frame(wb), nep::monotonic_ms() + 2000, "store");
  pollfd p{waiter.get(), POLLIN, 0};
  EXPECT_EQ(poll(&p, 1, 300), 0) << "WAIT with a huge timeout answered at once";
  nep::StoreClient setter(kHost, server.port(), "tok", 3000, "rank 1");
  setter.set("later", "ok");
  char head[10];
  nep::recv_exact(waiter.get(), head, 10, nep::monotonic_ms() + 3000, "store");
  EXPECT_EQ(std::string(head + 4, 6), std::string("\x00\x02\x00\x00\x00o", 6));
}

TEST(StoreSecurity, ParseRequestNamesTheShapeOfEveryMalformedOp) {
  std::string error;
  EXPECT_FALSE(nep::store::parse_request("", 0, &error));
  EXPECT_EQ(error, "empty request");
  const std::string set_short(
      "\x02\x01\x00\x00\x00k\x05\x00\x00\x00"
      "ab",
      12);
  EXPECT_FALSE(nep::store::parse_request(set_short.data(), set_short.size(), &error));
  EXPECT_EQ(error, "malformed SET (key <= 1024 bytes, value <= 1 MiB)");
  const std::string wait_short("\x04\x01\x00\x00\x00k\x01\x02", 8);
  EXPECT_FALSE(nep::store::parse_request(wait_short.data(), wait_short.size(), &error));
  EXPECT_EQ(error, "malformed WAIT (key <= 1024 bytes, i64 timeout_ms)");
  const std::string unknown("\x07", 1);
  EXPECT_FALSE(nep::store::parse_request(unknown.data(), unknown.size(), &error));
  EXPECT_EQ(error, "unknown op 7");
  const std::string get(
      "\x03\x02\x00\x00\x00"
      "ab",
      7);
  auto q = nep::store::parse_request(get.data(), get.size(), &error);
  ASSERT_TRUE(q);
  EXPECT_EQ(q->op, nep::store::kGet);
  EXPECT_EQ(q->key, "ab");
}
