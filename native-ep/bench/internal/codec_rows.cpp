// Benchmark of the wire codecs' row loops, per instruction set the CPU has (internal API: it
// times encode_row_isa / decode_*_isa directly, so it links the library's objects, not its C ABI).
// Prints, per set and wire format, for rows of H = 7168 normally distributed floats:
//   in-cache microseconds per row (16 rows, repeated): encode, decode (store), decode-add;
//   from memory, per 256 MiB of fp32 rows (9362 rows): encode into a ring-slot-sized buffer
//   (what a sender does), decode with ordinary stores, decode with streaming stores (what a
//   dispatch receive does), and a 256 MiB memcpy for scale. Best of several runs each.
//
// Usage: bench_codec_rows [--hidden 7168]
#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <random>
#include <string>

#include "codec.h"
#include "codec_kernels.h"

namespace {

double now_s() {
  return std::chrono::duration<double>(std::chrono::steady_clock::now().time_since_epoch()).count();
}

template <class F>
double best_of(int runs, F&& f) {
  double best = 1e300;
  for (int i = 0; i < runs; ++i) {
    const double t0 = now_s();
    f();
    best = std::min(best, now_s() - t0);
  }
  return best;
}

void* aligned(size_t bytes) {
  void* p = std::aligned_alloc(64, (bytes + 63) / 64 * 64);
  if (p == nullptr) {
    std::fprintf(stderr, "cannot allocate %zu bytes\n", bytes);
    std::exit(2);
  }
  return p;
}

}  // namespace

int main(int argc, char** argv) {
  int64_t hidden = 7168;
  for (int i = 1; i < argc; ++i) {
    if (std::string(argv[i]) == "--hidden" && i + 1 < argc) {
      hidden = std::atol(argv[++i]);
    } else {
      std::fprintf(stderr, "usage: %s [--hidden H]\n", argv[0]);
      return 2;
    }
  }
  const int64_t rows = (int64_t{256} << 20) / (4 * hidden), cached = 16;
  float* x = static_cast<float*>(aligned(sizeof(float) * rows * hidden));
  float* y = static_cast<float*>(aligned(sizeof(float) * rows * hidden));
  uint8_t* wire_rows = static_cast<uint8_t*>(aligned(sizeof(float) * rows * hidden));
  uint8_t* ring = static_cast<uint8_t*>(aligned(1 << 20));
  std::mt19937 rng(1);
  std::normal_distribution<float> normal(0.0f, 1.0f);
  for (int64_t i = 0; i < rows * hidden; ++i) x[i] = normal(rng);
  std::memset(y, 0, sizeof(float) * rows * hidden);
  const size_t bytes = sizeof(float) * rows * hidden;
  const double copy = best_of(4, [&] { std::memcpy(y, x, bytes); });
  std::printf(
      "codec rows: H=%lld, %lld rows = %.0f MiB of fp32; memcpy of it %.1f ms; default set %s\n",
      static_cast<long long>(hidden), static_cast<long long>(rows), bytes / 1048576.0, copy * 1e3,
      nep::codec_isa_name(nep::codec_isa()));
  std::printf("%-7s %-6s | in cache, us/row: %7s %7s %7s | from memory, ms: %8s %8s %8s\n", "set",
              "wire", "encode", "decode", "add", "enc>ring", "decode", "stream");
  for (nep::CodecIsa isa : {nep::CodecIsa::kScalar, nep::CodecIsa::kAvx2, nep::CodecIsa::kAvx512}) {
    if (!nep::codec_isa_supported(isa)) continue;
    for (nep::Wire w : {nep::Wire::kFp32, nep::Wire::kBf16, nep::Wire::kFp8, nep::Wire::kMxfp8}) {
      const int64_t rb = nep::wire_row_bytes(w, hidden);
      const int64_t chunk = std::max<int64_t>(1, (256 * 1024) / rb);  // rows per 256 KiB ring slot
      const int reps = 20;
      auto per_row = [&](double s) { return s / (reps * cached) * 1e6; };
      const double enc = per_row(best_of(15, [&] {
        for (int r = 0; r < reps; ++r)
          for (int64_t i = 0; i < cached; ++i)
            nep::encode_row_isa(isa, w, x + i * hidden, hidden, wire_rows + i * rb);
      }));
      const double dec = per_row(best_of(15, [&] {
        for (int r = 0; r < reps; ++r)
          for (int64_t i = 0; i < cached; ++i)
            nep::decode_row_isa(isa, w, wire_rows + i * rb, hidden, y + i * hidden);
      }));
      const double add = per_row(best_of(15, [&] {
        for (int r = 0; r < reps; ++r)
          for (int64_t i = 0; i < cached; ++i)
            nep::decode_add_row_isa(isa, w, wire_rows + i * rb, hidden, y + i * hidden);
      }));
      const double to_ring = best_of(3, [&] {
        for (int64_t i = 0; i < rows; ++i)
          nep::encode_row_isa(isa, w, x + i * hidden, hidden, ring + (i % chunk) * rb);
      });
      for (int64_t i = 0; i < rows; ++i)
        nep::encode_row_isa(isa, w, x + i * hidden, hidden, wire_rows + i * rb);
      const double decode = best_of(3, [&] {
        for (int64_t i = 0; i < rows; ++i)
          nep::decode_row_isa(isa, w, wire_rows + i * rb, hidden, y + i * hidden);
      });
      const double stream = best_of(3, [&] {
        for (int64_t i = 0; i < rows; ++i)
          nep::decode_row_stream_isa(isa, w, wire_rows + i * rb, hidden, y + i * hidden);
      });
      std::printf("%-7s %-6s | %25.2f %7.2f %7.2f | %25.1f %8.1f %8.1f\n", nep::codec_isa_name(isa),
                  nep::wire_name(w), enc, dec, add, to_ring * 1e3, decode * 1e3, stream * 1e3);
    }
  }
  std::free(x);
  std::free(y);
  std::free(wire_rows);
  std::free(ring);
  return 0;
}
