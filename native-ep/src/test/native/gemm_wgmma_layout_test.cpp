// The Hopper GEMM tier's encodings (src/main/native/cuda/sm90a/wgmma_layout.h), checked on the CPU
// against values worked out by hand from the PTX ISA and the cuTensorMapEncodeTiled rules: the
// wgmma shared-memory descriptor's bit fields, the 128-byte swizzle TMA writes (a bijection of a
// tile, 16-byte chunk index XOR row mod 8) and that every k32 step's descriptor reads exactly the
// bytes TMA put there, the fp32 accumulator's register layout, the tensor maps' parameters, and
// the stage ring's mbarrier parities in a simulation of the producer, the TMA engine and the
// consumer warps under random interleavings (no deadlock, no stale or overwritten stage), the
// MXFP8 promotion's one-multiply rule against ldexp, and the persistent kernels' tile orders (each
// output element computed once).
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <random>
#include <set>
#include <string>
#include <vector>

#include "cuda/sm90a/wgmma_layout.h"

namespace wg = nep::wgmma;

namespace {

TEST(WgmmaLayout, DescriptorFieldsByHand) {
  // A tile at shared address 0x400: start 0x400 >> 4 = 0x40 in bits 0-13, leading byte offset 16
  // (encoded 1) in bits 16-29, stride byte offset 1024 (encoded 0x40) in bits 32-45, base offset
  // 0, swizzle mode 1 (128-byte) in bits 62-63.
  EXPECT_EQ(wg::sw128_kmajor_desc(0x400), 0x4000004000010040ull);
  // 0x1A400 >> 4 = 0x1A40.
  EXPECT_EQ(wg::sw128_kmajor_desc(0x1A400), 0x4000004000011A40ull);
  // The k32 steps of a stage: +32, +64, +96 bytes = +2, +4, +6 in the start field.
  EXPECT_EQ(wg::desc_advance(wg::sw128_kmajor_desc(0x1A400), 32), 0x4000004000011A42ull);
  EXPECT_EQ(wg::desc_advance(wg::sw128_kmajor_desc(0x1A400), 96), 0x4000004000011A46ull);
  // The start field keeps 14 bits of address >> 4 (shared addresses below 256 KiB).
  EXPECT_EQ(wg::sw128_kmajor_desc(0x3FC00) & 0x3FFFu, 0x3FC0u);
  const uint64_t d = wg::make_desc(0x2C00, 0x30, 0x800, 5, 2);
  EXPECT_EQ(wg::desc_start(d), 0x2C00u);
  EXPECT_EQ(wg::desc_lbo(d), 0x30u);
  EXPECT_EQ(wg::desc_sbo(d), 0x800u);
  EXPECT_EQ(wg::desc_base_offset(d), 5u);
  EXPECT_EQ(wg::desc_swizzle(d), 2u);
  EXPECT_EQ(d, (uint64_t(0x2C0)) | (uint64_t(3) << 16) | (uint64_t(0x80) << 32) |
                   (uint64_t(5) << 49) | (uint64_t(2) << 62));
  // Nothing outside the documented fields.
  constexpr uint64_t kFields =
      0x3FFFull | (0x3FFFull << 16) | (0x3FFFull << 32) | (7ull << 49) | (3ull << 62);
  EXPECT_EQ(wg::make_desc(0xFFFFFFFFu, 0xFFFFFFFFu, 0xFFFFFFFFu, 0xFFu, 0xFFu) & ~kFields, 0u);
  const uint64_t k = wg::sw128_kmajor_desc(0x8000);
  EXPECT_EQ(wg::desc_sbo(k), 1024u);
  EXPECT_EQ(wg::desc_lbo(k), 16u);
  EXPECT_EQ(wg::desc_base_offset(k), 0u);
  EXPECT_EQ(wg::desc_swizzle(k), wg::kSwizzleMode128B);
  EXPECT_EQ(wg::kSwizzleMode128B, 1u);
}

TEST(WgmmaLayout, Swizzle128ByHand) {
  EXPECT_EQ(wg::sw128_offset(0, 0), 0u);
  EXPECT_EQ(wg::sw128_offset(0, 127), 127u);
  EXPECT_EQ(wg::sw128_offset(1, 0), 128u + 16u);              // chunk 0 ^ 1
  EXPECT_EQ(wg::sw128_offset(1, 16), 128u);                   // chunk 1 ^ 1
  EXPECT_EQ(wg::sw128_offset(7, 127), 7u * 128 + 15);         // chunk 7 ^ 7 = 0
  EXPECT_EQ(wg::sw128_offset(9, 33), 9u * 128 + 3 * 16 + 1);  // chunk 2 ^ (9 mod 8) = 3
  EXPECT_EQ(wg::sw128_offset(8, 40), 8u * 128 + 40);          // row 8 repeats row 0
  EXPECT_EQ(wg::sw128_address(0x0), 0x0u);
  EXPECT_EQ(wg::sw128_address(0x80), 0x90u);    // row 1, chunk 0 -> chunk 1
  EXPECT_EQ(wg::sw128_address(0x3A5), 0x3D5u);  // row 7, chunk 2 byte 5 -> chunk 2 ^ 7 = 5
}

TEST(WgmmaLayout, Swizzle128IsABijectionOfTheTile) {
  std::vector<int> hits(wg::kTileBytes, 0);
  for (uint32_t r = 0; r < wg::kTileRows; ++r)
    for (uint32_t kb = 0; kb < wg::kTileK; ++kb) {
      const uint32_t o = wg::sw128_offset(r, kb);
      ASSERT_LT(o, wg::kTileBytes);
      ++hits[o];
      // Rows stay in place; 16-byte chunks move whole, to chunk (kb / 16) XOR (r mod 8).
      EXPECT_EQ(o / 128, r);
      EXPECT_EQ((o % 128) / 16, ((kb / 16) ^ (r % 8)));
      EXPECT_EQ(o % 16, kb % 16);
    }
  for (uint32_t o = 0; o < wg::kTileBytes; ++o) ASSERT_EQ(hits[o], 1) << o;
}

TEST(WgmmaLayout, AddressSwizzleMatchesTheTmaLayoutOnAlignedTiles) {
  for (uint32_t base : {0u, 1024u, 0x2000u, 0x14000u, 0x28400u}) {
    for (uint32_t r = 0; r < wg::kTileRows; ++r)
      for (uint32_t kb = 0; kb < wg::kTileK; ++kb)
        ASSERT_EQ(wg::sw128_address(base + r * 128 + kb), base + wg::sw128_offset(r, kb))
            << base << " " << r << " " << kb;
  }
  // A tile off the 1024-byte boundary would be read with another phase of the pattern.
  bool differs = false;
  for (uint32_t r = 0; r < 8; ++r)
    differs |= wg::sw128_address(128 + r * 128) != 128 + wg::sw128_offset(r, 0);
  EXPECT_TRUE(differs);
}

// Every k32 step of a stage, for A (each warpgroup's 64 rows) and B (128 rows): the descriptor
// the kernel builds reads element (row, step * 32 + kbyte) exactly where TMA stored it.
TEST(WgmmaLayout, DescriptorStepsReadWhatTmaWrote) {
  for (uint32_t tile : {0x400u, 0x4400u, 0x14400u}) {
    for (uint32_t wgi = 0; wgi < 2; ++wgi) {
      const uint32_t a = tile + wgi * 64 * wg::kTileK;  // the warpgroup's half of an A tile
      for (uint32_t ks = 0; ks < wg::kTileK / wg::kStepK; ++ks) {
        const uint64_t d = wg::desc_advance(wg::sw128_kmajor_desc(a), ks * wg::kStepK);
        EXPECT_EQ(wg::desc_base_offset(d), 0u);
        for (uint32_t r = 0; r < 64; ++r)
          for (uint32_t kb = 0; kb < wg::kStepK; ++kb)
            ASSERT_EQ(wg::desc_read_address(d, r, kb),
                      tile + wg::sw128_offset(wgi * 64 + r, ks * wg::kStepK + kb))
                << tile << " wg " << wgi << " step " << ks << " row " << r << " byte " << kb;
      }
    }
    for (uint32_t ks = 0; ks < wg::kTileK / wg::kStepK; ++ks) {
      const uint64_t d = wg::desc_advance(wg::sw128_kmajor_desc(tile), ks * wg::kStepK);
      for (uint32_t r = 0; r < wg::kTileRows; ++r)
        for (uint32_t kb = 0; kb < wg::kStepK; ++kb)
          ASSERT_EQ(wg::desc_read_address(d, r, kb),
                    tile + wg::sw128_offset(r, ks * wg::kStepK + kb));
    }
  }
  // A wrong stride byte offset (128: rows as if unswizzled 8-row groups) reads other bytes.
  const uint64_t bad = wg::make_desc(0x400, 16, 128, 0, wg::kSwizzleMode128B);
  EXPECT_NE(wg::desc_read_address(bad, 8, 0), 0x400u + wg::sw128_offset(8, 0));
}

TEST(WgmmaLayout, AccumulatorLayoutByHand) {
  EXPECT_EQ(wg::acc_row(0, 0), 0u);
  EXPECT_EQ(wg::acc_col(0, 0), 0u);
  EXPECT_EQ(wg::acc_col(0, 1), 1u);
  EXPECT_EQ(wg::acc_row(0, 2), 8u);
  EXPECT_EQ(wg::acc_col(0, 2), 0u);
  EXPECT_EQ(wg::acc_row(0, 4), 0u);
  EXPECT_EQ(wg::acc_col(0, 4), 8u);
  EXPECT_EQ(wg::acc_row(5, 3), 9u);  // lane 5: row 1 (+8 for d[2], d[3]), columns 2, 3
  EXPECT_EQ(wg::acc_col(5, 3), 3u);
  EXPECT_EQ(wg::acc_row(37, 6), 25u);  // warp 1 lane 5: row 16 + 1 + 8
  EXPECT_EQ(wg::acc_col(37, 6), 10u);  // 8 * 1 + 2 * 1
  EXPECT_EQ(wg::acc_row(127, 63), 63u);
  EXPECT_EQ(wg::acc_col(127, 63), 127u);
}

TEST(WgmmaLayout, AccumulatorCoversTheTileOnce) {
  std::vector<int> hits(64 * 128, 0);
  for (uint32_t t = 0; t < 128; ++t)
    for (uint32_t i = 0; i < 64; ++i) {
      const uint32_t r = wg::acc_row(t, i), c = wg::acc_col(t, i);
      ASSERT_LT(r, 64u);
      ASSERT_LT(c, 128u);
      ++hits[r * 128 + c];
      // Two rows per thread: d[i] with (i / 2) even on the first, odd on the second (8 below).
      EXPECT_EQ(r, wg::acc_row(t, (i / 2) % 2 == 0 ? 0 : 2));
    }
  for (int h : hits) ASSERT_EQ(h, 1);
}

TEST(WgmmaLayout, TensorMapParameters) {
  // The M-grouped A of a hot-expert case: k = 304, 517 rows, lda = 304.
  const wg::TmaMap2d a = wg::tile_map(304, 517, 304);
  EXPECT_EQ(a.dims[0], 304u);  // innermost first
  EXPECT_EQ(a.dims[1], 517u);
  EXPECT_EQ(a.strides[0], 304u);
  EXPECT_EQ(a.box[0], 128u);
  EXPECT_EQ(a.box[1], 128u);
  EXPECT_EQ(wg::map_problem(a, 0x7f0000000000ull), nullptr);
  EXPECT_EQ(wg::box_bytes(a), 16384u);
  EXPECT_EQ(wg::kStageTxBytes, 2 * wg::box_bytes(a));
  // Wire rows: k = 96 elements in rows of 112 bytes.
  EXPECT_EQ(wg::map_problem(wg::tile_map(96, 5, 112), 0x10000), nullptr);
  // k = 16 (one row narrower than a box: zero fill beyond) and one row.
  EXPECT_EQ(wg::map_problem(wg::tile_map(16, 1, 16), 0x10000), nullptr);
  const std::string misaligned = wg::map_problem(a, 0x10008);
  EXPECT_NE(misaligned.find("16-byte aligned"), std::string::npos);
  EXPECT_NE(std::string(wg::map_problem(wg::tile_map(200, 5, 200), 0)).find("multiple of 16"),
            std::string::npos);
  EXPECT_NE(std::string(wg::map_problem(wg::tile_map(96, 0, 96), 0)).find("dimension"),
            std::string::npos);
  EXPECT_NE(std::string(wg::map_problem(wg::tile_map(128, 4, 112), 0)).find("below the row"),
            std::string::npos);
  EXPECT_NE(std::string(wg::map_problem(wg::tile_map(128, 4, int64_t(1) << 40), 0)).find("2^40"),
            std::string::npos);
  wg::TmaMap2d wide = a;
  wide.box[0] = 256;  // 256 bytes inner: more than the 128-byte swizzle span
  EXPECT_NE(std::string(wg::map_problem(wide, 0)).find("swizzle span"), std::string::npos);
  wide.box[0] = 120;
  EXPECT_NE(std::string(wg::map_problem(wide, 0)).find("multiple of 16"), std::string::npos);
}

TEST(WgmmaLayout, StageParitiesByHand) {
  // Stages 0-4 fill the five slots for the first time (phase 0 of full), 5-9 the second time.
  EXPECT_EQ(wg::stage_slot(0, 5), 0);
  EXPECT_EQ(wg::stage_slot(7, 5), 2);
  EXPECT_EQ(wg::full_parity(4, 5), 0u);
  EXPECT_EQ(wg::full_parity(5, 5), 1u);
  EXPECT_EQ(wg::full_parity(12, 5), 0u);
  EXPECT_FALSE(wg::producer_waits(4, 5));
  EXPECT_TRUE(wg::producer_waits(5, 5));
  EXPECT_EQ(wg::empty_parity(5, 5), 0u);  // the first release of slot 0
  EXPECT_EQ(wg::empty_parity(10, 5), 1u);
  EXPECT_EQ(wg::empty_parity(15, 5), 0u);
}

// ---- A model of the stage ring ---------------------------------------------------------------
// mbarrier as the PTX ISA describes it: a phase completes when its pending arrivals and its
// transaction count both reach zero; then the arrivals reset to the init count and the phase
// number advances. try_wait.parity(P) is true once the phase of parity P has completed, i.e. while
// the current (incomplete) phase's parity differs from P.
struct Mbarrier {
  int count = 0, pending = 0;
  int64_t tx = 0;
  uint32_t phase = 0;
  void init(int c) {
    count = pending = c;
    tx = 0;
    phase = 0;
  }
  void settle() {
    if (pending == 0 && tx == 0) {
      ++phase;
      pending = count;
    }
  }
  void arrive() {
    ASSERT_GT(pending, 0);
    --pending;
    settle();
  }
  void arrive_expect_tx(int64_t bytes) {
    tx += bytes;
    arrive();
  }
  void complete_tx(int64_t bytes) {
    tx -= bytes;
    settle();
  }
  bool try_wait_parity(uint32_t parity) const { return (phase & 1u) != parity; }
};

struct Box {
  int slot;
  int64_t stage;
};

// One run of `stages_total` reduction stages through `slots` slots under a random schedule: the
// kernel's producer (wait empty, expect both boxes, issue them), a TMA engine completing boxes in
// any order, and the consumer warps (wait full, read, release).
void simulate(int slots, int warps, int64_t stages_total, uint32_t seed) {
  std::mt19937 rng(seed);
  std::vector<Mbarrier> full(slots), empty(slots);
  for (int s = 0; s < slots; ++s) {
    full[s].init(1);
    empty[s].init(warps);
  }
  std::vector<int64_t> slot_stage(slots, -1);  // the stage whose bytes a slot holds
  std::vector<int> boxes_landed(stages_total, 0), released(stages_total, 0);
  std::vector<Box> in_flight;
  int64_t produced = 0;
  std::vector<int64_t> consumed(warps, 0);
  for (;;) {
    // Every actor that can move now.
    std::vector<int> ready;  // 0: producer, 1: TMA engine, 2 + w: consumer warp w
    if (produced < stages_total) {
      const int s = wg::stage_slot(produced, slots);
      if (!wg::producer_waits(produced, slots) ||
          empty[s].try_wait_parity(wg::empty_parity(produced, slots)))
        ready.push_back(0);
    }
    if (!in_flight.empty()) ready.push_back(1);
    for (int w = 0; w < warps; ++w) {
      const int64_t st = consumed[w];
      if (st < stages_total &&
          full[wg::stage_slot(st, slots)].try_wait_parity(wg::full_parity(st, slots)))
        ready.push_back(2 + w);
    }
    bool done = produced == stages_total && in_flight.empty();
    for (int w = 0; w < warps; ++w) done = done && consumed[w] == stages_total;
    if (done) break;
    ASSERT_FALSE(ready.empty()) << "deadlock: slots " << slots << " stages " << stages_total
                                << " seed " << seed << " produced " << produced;
    const int who = ready[rng() % ready.size()];
    if (who == 0) {
      const int64_t st = produced++;
      const int s = wg::stage_slot(st, slots);
      // The slot is free: every warp released the stage it held.
      if (st >= slots) ASSERT_EQ(released[st - slots], warps) << "slot overwritten before release";
      full[s].arrive_expect_tx(wg::kStageTxBytes);
      in_flight.push_back({s, st});
      in_flight.push_back({s, st});
    } else if (who == 1) {
      const size_t i = rng() % in_flight.size();
      const Box b = in_flight[i];
      in_flight.erase(in_flight.begin() + long(i));
      slot_stage[b.slot] = b.stage;
      ++boxes_landed[b.stage];
      full[b.slot].complete_tx(wg::kStageTxBytes / 2);
    } else {
      const int w = who - 2;
      const int64_t st = consumed[w]++;
      const int s = wg::stage_slot(st, slots);
      ASSERT_EQ(boxes_landed[st], 2) << "stage " << st << " read before both boxes landed";
      ASSERT_EQ(slot_stage[s], st) << "slot " << s << " holds another stage";
      ++released[st];
      empty[s].arrive();
    }
  }
  for (int64_t st = 0; st < stages_total; ++st) ASSERT_EQ(released[st], warps);
}

TEST(WgmmaLayout, StageRingNeverDeadlocksNorReadsAStaleStage) {
  for (int slots : {1, 2, 3, wg::kStages})
    for (int64_t stages :
         {int64_t(1), int64_t(2), int64_t(5), int64_t(6), int64_t(11), int64_t(17)})
      for (uint32_t seed = 0; seed < 40; ++seed) {
        simulate(slots, wg::kConsumerWarps, stages, seed * 7919u + uint32_t(slots));
        if (HasFatalFailure()) return;
      }
}

// The MXFP8 promotion's one-multiply case is taken exactly where it gives ldexp's value: for every
// pair of E8M0 bytes, the rule says fast iff neither is NaN and 2^(ea + eb - 254) is a normal
// float, and then p times the float of mx_factor_bits equals ldexp(p, ea + eb - 254) bit for bit
// for partial sums of every magnitude, signed zeros and subnormals included.
TEST(WgmmaLayout, MxOneMultiplyPromotionIsLdexpWhereTaken) {
  std::mt19937 rng(17);
  std::vector<float> partials = {0.0f,
                                 -0.0f,
                                 1.0f,
                                 -1.5f,
                                 448.0f * 448.0f * 32.0f,
                                 3.0e-3f,
                                 std::ldexp(1.0f, -140),
                                 -std::ldexp(1.7f, -130),
                                 6.5e30f};
  std::uniform_real_distribution<float> mant(-2.0f, 2.0f);
  std::uniform_int_distribution<int> ex(-40, 40);
  for (int i = 0; i < 24; ++i) partials.push_back(std::ldexp(mant(rng), ex(rng)));
  int fast_pairs = 0;
  for (int ea = 0; ea < 256; ++ea)
    for (int eb = 0; eb < 256; ++eb) {
      const int e = ea + eb - 254;
      const bool normal = ea < 255 && eb < 255 && e >= -126 && e <= 127;
      ASSERT_EQ(wg::mx_range_fast(ea, ea, eb, eb), normal) << "ea " << ea << " eb " << eb;
      if (!normal) continue;
      ++fast_pairs;
      uint32_t bits = wg::mx_factor_bits(uint32_t(ea), uint32_t(eb));
      float factor;
      std::memcpy(&factor, &bits, sizeof factor);
      for (float p : partials) {
        const float want = std::ldexp(p, e), got = p * factor;
        uint32_t w, g;
        std::memcpy(&w, &want, 4);
        std::memcpy(&g, &got, 4);
        ASSERT_EQ(g, w) << "p " << p << " ea " << ea << " eb " << eb;
      }
    }
  // Bytes 0..254 each; the sums below 128 and above 381 leave the normal range.
  EXPECT_EQ(fast_pairs, 255 * 255 - 128 * 129 / 2 - 127 * 128 / 2);
}

// A stage's bit is set only when every pair inside the byte ranges takes the one-multiply case (the
// ranges come from bytewise minima and maxima over a tile's rows and columns), and is set when
// they all do; each of the four bytes decides its own bit.
TEST(WgmmaLayout, MxFastBlocksHoldForEveryPairInTheRanges) {
  std::mt19937 rng(29);
  std::uniform_int_distribution<int> byte(0, 255), near(110, 140);
  for (int trial = 0; trial < 4000; ++trial) {
    uint32_t min_a = 0, max_a = 0, min_b = 0, max_b = 0;
    bool want[4];
    for (int j = 0; j < 4; ++j) {
      auto pick = [&](int& lo, int& hi) {
        lo = trial % 2 ? near(rng) : byte(rng);
        hi = trial % 2 ? near(rng) : byte(rng);
        if (lo > hi) std::swap(lo, hi);
      };
      int la, ha, lb, hb;
      pick(la, ha);
      pick(lb, hb);
      bool all = true;
      for (int a = la; a <= ha && all; ++a)
        for (int b = lb; b <= hb && all; ++b) all = wg::mx_range_fast(a, a, b, b);
      want[j] = all;
      min_a |= uint32_t(la) << (8 * j);
      max_a |= uint32_t(ha) << (8 * j);
      min_b |= uint32_t(lb) << (8 * j);
      max_b |= uint32_t(hb) << (8 * j);
    }
    const uint32_t got = wg::mx_fast_blocks(min_a, max_a, min_b, max_b);
    for (int j = 0; j < 4; ++j) ASSERT_EQ((got >> j) & 1u, want[j] ? 1u : 0u) << "trial " << trial;
  }
}

// The persistent kernels' tile orders: every element of C is computed by exactly one tile, each
// tile's rows belong to one group (rows_a stops at the group's end), and empty groups get no
// M-tile, over random layouts with empty, one-row, hot and 128-unaligned groups.
TEST(WgmmaLayout, PersistentTilesCoverEachOutputOnce) {
  std::mt19937 rng(41);
  for (int trial = 0; trial < 40; ++trial) {
    const int32_t count = 1 + int32_t(rng() % 9);
    std::vector<int64_t> offsets(size_t(count) + 1, 0);
    std::vector<int32_t> prefix(size_t(count) + 1, 0);
    for (int32_t g = 0; g < count; ++g) {
      const uint32_t kind = rng() % 5;
      const int64_t rows = kind == 0   ? 0
                           : kind == 1 ? 1
                           : kind == 2 ? 128 * (1 + rng() % 3)
                                       : int64_t(rng() % 700);
      offsets[size_t(g) + 1] = offsets[size_t(g)] + rows;
      prefix[size_t(g) + 1] = prefix[size_t(g)] + int32_t((rows + 127) / 128);
    }
    const int64_t n = 1 + int64_t(rng() % 300);
    const int32_t n_tiles = int32_t((n + 127) / 128);
    const int64_t m = offsets[size_t(count)];
    std::vector<int> hits(size_t(m * n), 0);
    const int32_t tiles = prefix[size_t(count)] * n_tiles;
    for (int32_t j = 0; j < tiles; ++j) {
      const wg::MTile t = wg::m_tile(j, n_tiles, prefix.data(), offsets.data(), count, n);
      ASSERT_TRUE(t.g >= 0 && t.g < count) << "tile " << j;
      ASSERT_GE(t.row0, offsets[size_t(t.g)]);
      ASSERT_EQ((t.row0 - offsets[size_t(t.g)]) % 128, 0);
      ASSERT_TRUE(t.rows_a >= 1 && t.rows_a <= 128 && t.rows_b >= 1 && t.rows_b <= 128);
      ASSERT_LE(t.row0 + t.rows_a, offsets[size_t(t.g) + 1]) << "tile " << j << " leaves its group";
      for (int64_t r = t.row0; r < t.row0 + t.rows_a; ++r)
        for (int64_t c = t.n0; c < t.n0 + t.rows_b; ++c) ++hits[size_t(r * n + c)];
    }
    for (size_t i = 0; i < hits.size(); ++i)
      ASSERT_EQ(hits[i], 1) << "trial " << trial << " at " << i;

    const int64_t kn = 1 + int64_t(rng() % 300), kk = 1 + int64_t(rng() % 300);
    const int32_t kn_tiles = int32_t((kn + 127) / 128), kk_tiles = int32_t((kk + 127) / 128);
    std::vector<int> khits(size_t(count * kn * kk), 0);
    for (int32_t j = 0; j < count * kn_tiles * kk_tiles; ++j) {
      const wg::KTile t = wg::k_tile(j, kn_tiles, kk_tiles, kn, kk);
      ASSERT_TRUE(t.g >= 0 && t.g < count);
      ASSERT_TRUE(t.rows_a >= 1 && t.rows_a <= 128 && t.rows_b >= 1 && t.rows_b <= 128);
      for (int64_t r = t.n0; r < t.n0 + t.rows_a; ++r)
        for (int64_t c = t.k0; c < t.k0 + t.rows_b; ++c)
          ++khits[size_t((int64_t(t.g) * kn + r) * kk + c)];
    }
    for (size_t i = 0; i < khits.size(); ++i) ASSERT_EQ(khits[i], 1) << "trial " << trial;
  }
}

}  // namespace
