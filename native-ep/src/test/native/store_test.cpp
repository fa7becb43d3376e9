// Rendezvous store: server and client in one process (threads), the documented wire protocol
// spoken with a raw socket, limits, token check, timeouts naming the key, and the C ABI.
#include <gtest/gtest.h>

#include <arpa/inet.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <unistd.h>

#include <atomic>
#include <thread>
#include <vector>

#include "error.h"
#include "nativeep/c_api.h"
#include "socket_util.h"
#include "store_client.h"
#include "store_protocol.h"
#include "store_server.h"
#include "sys_util.h"

namespace {

const char* kHost = "127.0.0.1";

nep::StoreClient client(const nep::StoreServer& s, const std::string& who = "rank 0") {
  return nep::StoreClient(kHost, s.port(), "tok", 5000, who);
}

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

}  // namespace

TEST(Store, SetGetAddWait) {
  nep::StoreServer server(kHost, 0, "tok");
  ASSERT_GT(server.port(), 0);
  auto a = client(server);
  auto b = client(server, "rank 1");
  EXPECT_FALSE(a.get("missing").has_value());
  a.set("k", std::string("v\0w", 3));
  EXPECT_EQ(b.get("k").value(), std::string("v\0w", 3));
  a.set("k", "");
  EXPECT_EQ(b.get("k").value(), "");
  EXPECT_EQ(a.add("n", 5), 5);
  EXPECT_EQ(b.add("n", -2), 3);
  EXPECT_EQ(a.get("n").value(), "3");
  int32_t code = 0;
  EXPECT_NE(error_of([&] { a.add("k", 1); }, &code).find("whose value is not an integer"),
            std::string::npos);
  EXPECT_EQ(code, NEP_ERR_INVALID_ARGUMENT);

  // wait returns once another client sets the key, not before.
  std::atomic<bool> set_done{false};
  std::thread setter([&] {
    auto c = client(server, "rank 2");
    std::this_thread::sleep_for(std::chrono::milliseconds(150));
    set_done = true;
    c.set("late", "here");
  });
  const int64_t start = nep::monotonic_ms();
  EXPECT_EQ(b.wait("late", 5000), "here");
  EXPECT_TRUE(set_done.load());
  EXPECT_GE(nep::monotonic_ms() - start, 100);
  setter.join();
  EXPECT_EQ(b.wait("late", 0), "here");  // present keys return at once
}

TEST(Store, WaitTimeoutNamesKeyAndWaiter) {
  nep::StoreServer server(kHost, 0, "tok");
  auto a = client(server, "rank 3");
  int32_t code = 0;
  const int64_t start = nep::monotonic_ms();
  const std::string m = error_of([&] { a.wait("nep/shm/1/segment/2", 300); }, &code);
  const int64_t took = nep::monotonic_ms() - start;
  EXPECT_EQ(code, NEP_ERR_TIMEOUT);
  EXPECT_EQ(m, "rank 3: timed out after 300 ms waiting for store key 'nep/shm/1/segment/2'");
  EXPECT_GE(took, 290);
  EXPECT_LT(took, 3000);
  a.set("after", "1");  // the connection still works after a timed-out wait
  EXPECT_EQ(a.get("after").value(), "1");
}

TEST(Store, ManyClientsAddConcurrently) {
  nep::StoreServer server(kHost, 0, "tok");
  std::vector<std::thread> threads;
  for (int i = 0; i < 8; ++i) {
    threads.emplace_back([&] {
      auto c = client(server);
      for (int k = 0; k < 50; ++k) c.add("count", 1);
    });
  }
  for (auto& t : threads) t.join();
  EXPECT_EQ(client(server).get("count").value(), "400");
}

TEST(Store, RejectsWrongTokenOversizeAndAbsentServer) {
  nep::StoreServer server(kHost, 0, "right");
  int32_t code = 0;
  std::string m =
      error_of([&] { nep::StoreClient c(kHost, server.port(), "wrong", 2000, "rank 1"); }, &code);
  EXPECT_EQ(code, NEP_ERR_PEER);
  EXPECT_NE(m.find("rank 1: store at 127.0.0.1:"), std::string::npos) << m;
  EXPECT_NE(m.find("refused the connection: wrong job token"), std::string::npos) << m;

  nep::StoreClient ok(kHost, server.port(), "right", 2000, "rank 0");
  m = error_of([&] { ok.set("big", std::string(nep::store::kMaxValueBytes + 1, 'x')); }, &code);
  EXPECT_EQ(code, NEP_ERR_INVALID_ARGUMENT);
  EXPECT_NE(m.find("more than the limit 1048576"), std::string::npos) << m;
  m = error_of([&] { ok.get(std::string(2000, 'k')); }, &code);
  EXPECT_NE(m.find("store key of 2000 bytes is outside [1, 1024]"), std::string::npos) << m;
  ok.set("max", std::string(nep::store::kMaxValueBytes, 'y'));
  EXPECT_EQ(ok.get("max").value().size(), nep::store::kMaxValueBytes);

  // Nobody listens on a port that was just released: a timeout naming the address.
  int32_t free_port = 0;
  {
    nep::tcp_listen(kHost, 0, &free_port);
  }
  m = error_of([&] { nep::StoreClient c(kHost, free_port, "right", 300, "rank 5"); }, &code);
  EXPECT_EQ(code, NEP_ERR_TIMEOUT);
  EXPECT_NE(m.find("rank 5: store at 127.0.0.1:" + std::to_string(free_port) + " not reachable"),
            std::string::npos)
      << m;
}

TEST(Store, ServerShutdownFailsAWaitingClient) {
  auto server = std::make_unique<nep::StoreServer>(kHost, 0, "tok");
  auto c = client(*server);
  std::thread stopper([&] {
    std::this_thread::sleep_for(std::chrono::milliseconds(100));
    server.reset();
  });
  int32_t code = 0;
  const std::string m = error_of([&] { c.wait("never", 5000); }, &code);
  stopper.join();
  EXPECT_EQ(code, NEP_ERR_PEER);
  EXPECT_NE(m.find("closed the connection"), std::string::npos) << m;
}

// The protocol as documented in store_protocol.h, spoken byte by byte (what a Java client does).
TEST(Store, RawProtocolMatchesTheDocumentation) {
  nep::StoreServer server(kHost, 0, "tok");
  nep::UniqueFd fd = nep::tcp_connect(kHost, server.port(), nep::monotonic_ms() + 2000);
  auto roundtrip = [&](const std::string& body) {
    std::string frame;
    nep::store::put_u32(frame, static_cast<uint32_t>(body.size()));
    frame += body;
    nep::send_all(fd.get(), frame, nep::monotonic_ms() + 2000, "store");
    char len[4];
    nep::recv_exact(fd.get(), len, 4, nep::monotonic_ms() + 2000, "store");
    const uint32_t n = static_cast<uint8_t>(len[0]) | static_cast<uint8_t>(len[1]) << 8 |
                       static_cast<uint8_t>(len[2]) << 16 |
                       static_cast<uint32_t>(static_cast<uint8_t>(len[3])) << 24;
    std::string reply(n, '\0');
    nep::recv_exact(fd.get(), reply.data(), n, nep::monotonic_ms() + 2000, "store");
    return reply;
  };
  // HELLO: op 1, blob "tok" -> status 0.
  EXPECT_EQ(roundtrip(std::string("\x01\x03\x00\x00\x00tok", 8)), std::string("\x00", 1));
  // SET "a" = "xyz": op 2, blob key, blob value -> status 0.
  EXPECT_EQ(roundtrip(std::string("\x02\x01\x00\x00\x00"
                                  "a"
                                  "\x03\x00\x00\x00"
                                  "xyz",
                                  13)),
            std::string("\x00", 1));
  // GET "a" -> status 0, blob "xyz".
  EXPECT_EQ(roundtrip(std::string("\x03\x01\x00\x00\x00"
                                  "a",
                                  6)),
            std::string("\x00\x03\x00\x00\x00xyz", 8));
  // GET "b" -> status 1 (not found).
  EXPECT_EQ(roundtrip(std::string("\x03\x01\x00\x00\x00"
                                  "b",
                                  6)),
            std::string("\x01", 1));
  // ADD "c" += 258 -> status 0, i64 258.
  EXPECT_EQ(roundtrip(std::string("\x05\x01\x00\x00\x00"
                                  "c"
                                  "\x02\x01\x00\x00\x00\x00\x00\x00",
                                  14)),
            std::string("\x00\x02\x01\x00\x00\x00\x00\x00\x00", 9));
  // WAIT "b" for 50 ms -> status 2 (timeout).
  EXPECT_EQ(roundtrip(std::string("\x04\x01\x00\x00\x00"
                                  "b"
                                  "\x32\x00\x00\x00\x00\x00\x00\x00",
                                  14)),
            std::string("\x02", 1));
  // Unknown op 9 -> status 3 with a message.
  EXPECT_EQ(roundtrip(std::string("\x09\x01\x00\x00\x00"
                                  "b",
                                  6))
                .substr(0, 1),
            std::string("\x03", 1));
}

TEST(Store, FirstRequestMustBeHello) {
  nep::StoreServer server(kHost, 0, "tok");
  nep::UniqueFd fd = nep::tcp_connect(kHost, server.port(), nep::monotonic_ms() + 2000);
  std::string frame;
  nep::store::put_u32(frame, 6);
  frame += std::string(
      "\x03\x01\x00\x00\x00"
      "a",
      6);
  nep::send_all(fd.get(), frame, nep::monotonic_ms() + 2000, "store");
  char head[5];
  nep::recv_exact(fd.get(), head, 5, nep::monotonic_ms() + 2000, "store");
  EXPECT_EQ(head[4], nep::store::kAuth);
}

TEST(StoreCApi, ServerClientRoundTrip) {
  char err[512];
  nep_store_server* server = nullptr;
  ASSERT_EQ(nep_store_server_create(kHost, 0, "tok", &server, err, sizeof err), NEP_OK) << err;
  const int32_t port = nep_store_server_port(server);
  ASSERT_GT(port, 0);
  nep_store* c = nullptr;
  ASSERT_EQ(nep_store_connect(kHost, port, "tok", 3000, &c, err, sizeof err), NEP_OK) << err;
  ASSERT_EQ(nep_store_set(c, "key", "hello", 5, err, sizeof err), NEP_OK) << err;
  char buf[8];
  int64_t len = 0;
  ASSERT_EQ(nep_store_get(c, "key", buf, sizeof buf, &len, err, sizeof err), NEP_OK) << err;
  EXPECT_EQ(std::string(buf, len), "hello");
  EXPECT_EQ(nep_store_get(c, "key", buf, 3, &len, err, sizeof err), NEP_ERR_CAPACITY);
  EXPECT_EQ(len, 5);
  EXPECT_NE(std::string(err).find("has 5 bytes but the buffer holds 3"), std::string::npos) << err;
  ASSERT_EQ(nep_store_get(c, "nothing", buf, sizeof buf, &len, err, sizeof err), NEP_OK) << err;
  EXPECT_EQ(len, -1);
  EXPECT_EQ(nep_store_wait(c, "nothing", 100, buf, sizeof buf, &len, err, sizeof err),
            NEP_ERR_TIMEOUT);
  EXPECT_NE(std::string(err).find("waiting for store key 'nothing'"), std::string::npos) << err;
  ASSERT_EQ(nep_store_wait(c, "key", 100, buf, sizeof buf, &len, err, sizeof err), NEP_OK) << err;
  int64_t v = 0;
  ASSERT_EQ(nep_store_add(c, "ctr", 7, &v, err, sizeof err), NEP_OK) << err;
  EXPECT_EQ(v, 7);
  EXPECT_EQ(nep_store_set(nullptr, "k", "v", 1, err, sizeof err), NEP_ERR_INVALID_ARGUMENT);
  EXPECT_EQ(std::string(err), "store is null");
  EXPECT_EQ(nep_store_set(c, nullptr, "v", 1, err, sizeof err), NEP_ERR_INVALID_ARGUMENT);
  EXPECT_EQ(std::string(err), "key is null");
  nep_store* bad = nullptr;
  EXPECT_EQ(nep_store_connect(kHost, port, "nope", 1000, &bad, err, sizeof err), NEP_ERR_PEER);
  EXPECT_EQ(bad, nullptr);
  nep_store_server* taken = nullptr;
  EXPECT_EQ(nep_store_server_create(kHost, port, "tok", &taken, err, sizeof err), NEP_ERR_INTERNAL);
  EXPECT_NE(std::string(err).find("cannot bind 127.0.0.1:" + std::to_string(port)),
            std::string::npos)
      << err;
  nep_store_close(c);
  nep_store_server_destroy(server);
  EXPECT_EQ(nep_store_server_port(nullptr), -1);
}
