#include "collectives.h"

#include <cstring>
#include <vector>

#include "agreement.h"
#include "error.h"

namespace nep {

void all_gather_bytes(Transport& transport, const void* in, int64_t bytes, void* out,
                      const char* what) {
  if (bytes <= 0) return;
  const int32_t w = transport.world_size();
  std::vector<int64_t> counts(static_cast<size_t>(w), bytes);
  RowExchange ex;
  ex.row_bytes = 1;
  ex.send_rows = counts.data();
  ex.recv_rows = counts.data();
  ex.what = what;
  const uint8_t* src = static_cast<const uint8_t*>(in);
  uint8_t* dst = static_cast<uint8_t*>(out);
  auto producer = make_producer([&](int32_t, int64_t first, int64_t count, uint8_t* buf) {
    std::memcpy(buf, src + first, static_cast<size_t>(count));
  });
  auto consumer = make_consumer([&](int32_t s, int64_t first, int64_t count, const uint8_t* buf) {
    std::memcpy(dst + s * bytes + first, buf, static_cast<size_t>(count));
  });
  transport.exchange_rows(ex, producer, consumer);
}

void all_gather(Transport& transport, const void* in, int64_t bytes, void* out) {
  CallHeader h;
  h.op = kOpAllGather;
  h.values[0] = bytes;
  auto all = agree(transport, h, [&] {
    if (bytes < 0) fail_invalid("bytes = ", bytes, " must be >= 0");
    if (bytes > 0 && in == nullptr) fail_invalid("in is null");
    if (bytes > 0 && out == nullptr) fail_invalid("out is null");
  });
  require_same(all, 0, "bytes", transport.rank());
  all_gather_bytes(transport, in, bytes, out, "all_gather");
}

namespace {

template <class T>
void all_reduce_impl(Transport& transport, T* data, int64_t count) {
  CallHeader h;
  h.op = kOpAllReduce;
  h.values[0] = count;
  h.values[1] = static_cast<int64_t>(sizeof(T));
  auto all = agree(transport, h, [&] {
    if (count < 0) fail_invalid("count = ", count, " must be >= 0");
    if (count > 0 && data == nullptr) fail_invalid("data is null");
  });
  const int32_t me = transport.rank();
  require_same(all, 0, "count", me);
  require_same(all, 1, "element size", me);
  if (count == 0) return;
  const int32_t w = transport.world_size();
  auto part_begin = [&](int32_t r) { return count * r / w; };
  auto part_size = [&](int32_t r) { return part_begin(r + 1) - part_begin(r); };
  const int64_t mine = part_size(me);
  std::vector<T> acc(static_cast<size_t>(mine));
  std::vector<int64_t> send(w), recv(w);
  RowExchange ex;
  ex.row_bytes = sizeof(T);
  ex.send_rows = send.data();
  ex.recv_rows = recv.data();

  // Reduce-scatter: rank r owns part r and sums it over sources in rank order.
  for (int32_t r = 0; r < w; ++r) {
    send[r] = part_size(r);
    recv[r] = mine;
  }
  ex.what = "all_reduce (reduce-scatter)";
  auto scatter = make_producer([&](int32_t d, int64_t first, int64_t n, uint8_t* buf) {
    std::memcpy(buf, data + part_begin(d) + first, static_cast<size_t>(n) * sizeof(T));
  });
  auto reduce = make_consumer([&](int32_t s, int64_t first, int64_t n, const uint8_t* buf) {
    T* a = acc.data() + first;
    if (s == 0) {
      std::memcpy(a, buf, static_cast<size_t>(n) * sizeof(T));
    } else {
      for (int64_t i = 0; i < n; ++i) {
        T v;
        std::memcpy(&v, buf + i * sizeof(T), sizeof(T));
        a[i] += v;
      }
    }
  });
  transport.exchange_rows(ex, scatter, reduce);

  // All-gather of the reduced parts.
  for (int32_t r = 0; r < w; ++r) {
    send[r] = mine;
    recv[r] = part_size(r);
  }
  ex.what = "all_reduce (all-gather)";
  auto share = make_producer([&](int32_t, int64_t first, int64_t n, uint8_t* buf) {
    std::memcpy(buf, acc.data() + first, static_cast<size_t>(n) * sizeof(T));
  });
  auto gather = make_consumer([&](int32_t s, int64_t first, int64_t n, const uint8_t* buf) {
    std::memcpy(data + part_begin(s) + first, buf, static_cast<size_t>(n) * sizeof(T));
  });
  transport.exchange_rows(ex, share, gather);
}

}  // namespace

void all_reduce_sum(Transport& transport, float* data, int64_t count) {
  all_reduce_impl(transport, data, count);
}

void all_reduce_sum(Transport& transport, double* data, int64_t count) {
  all_reduce_impl(transport, data, count);
}

}  // namespace nep
