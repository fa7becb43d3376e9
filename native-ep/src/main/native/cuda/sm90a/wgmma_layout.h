// Encodings of the Hopper GEMM tier (gemm_wgmma.cu) that need no GPU to compute: the shared-memory
// matrix descriptor of a K-major operand in the 128-byte swizzle, the swizzle itself (as TMA writes
// a tile and as the tensor core reads one through a descriptor), the fp32 accumulator's register
// layout of wgmma m64nNk32, the TMA tensor-map parameters of a tile and the rules the driver checks
// them against, and the mbarrier phase parities of the stage ring. The kernel uses these functions
// and src/test/native/gemm_wgmma_layout_test.cpp checks them against values worked out by hand from
// the PTX ISA (sections "Matrix Descriptor Format", "Register Fragments and Shared Memory Matrix
// Layouts" of wgmma, "Tensor Map" swizzle modes and "mbarrier" phases) and the
// cuTensorMapEncodeTiled documentation. Plain C++17: host compilers include it as well as nvcc.
#ifndef NATIVEEP_CUDA_SM90A_WGMMA_LAYOUT_H_
#define NATIVEEP_CUDA_SM90A_WGMMA_LAYOUT_H_

#include <cstdint>

#if defined(__CUDACC__)
#define NEP_WG_HD __host__ __device__
#else
#define NEP_WG_HD
#endif

namespace nep {
namespace wgmma {

// ---- Tiles and the 128-byte swizzle -----------------------------------------------------------
// A stage holds one operand tile of kTileRows rows of kTileK e4m3 bytes along K (K-major), written
// by one TMA box. With CU_TENSOR_MAP_SWIZZLE_128B a row is one 128-byte swizzle span and the
// pattern repeats every 8 rows (1024 bytes): the 16-byte chunk c of row r lands at chunk
// c XOR (r mod 8) of that row, provided the tile starts on a 1024-byte boundary.
constexpr uint32_t kTileRows = 128;
constexpr uint32_t kTileK = 128;  // bytes of a row = e4m3 elements along K
constexpr uint32_t kTileBytes = kTileRows * kTileK;
constexpr uint32_t kSwizzleSpan = 128;   // bytes swizzled together (one row)
constexpr uint32_t kSwizzleAtom = 1024;  // 8 rows: the pattern's period and the tile alignment
constexpr uint32_t kChunk = 16;          // the unit the swizzle permutes
constexpr uint32_t kStepK = 32;          // K of one wgmma m64nNk32 e4m3 (32 bytes)

static_assert(kTileK == kSwizzleSpan, "one tile row is one swizzle span");
static_assert(kTileK % kStepK == 0, "whole wgmma steps per stage");

// Byte offset of (row, kbyte) in a tile as TMA stores it with the 128-byte swizzle.
NEP_WG_HD constexpr uint32_t sw128_offset(uint32_t row, uint32_t kbyte) {
  return row * kSwizzleSpan + ((((kbyte / kChunk) ^ (row % 8)) % 8) * kChunk) + kbyte % kChunk;
}

// The same swizzle as a function of the shared-memory address (what the hardware applies on both
// sides): address bits [4, 7) are XORed with bits [7, 10).
NEP_WG_HD constexpr uint32_t sw128_address(uint32_t address) {
  return address ^ (((address >> 7) & 7u) << 4);
}

// ---- wgmma shared-memory matrix descriptor (sm_90) ---------------------------------------------
// bits  0-13: start address >> 4 (of the address & 0x3FFFF)
// bits 16-29: leading dimension byte offset >> 4
// bits 32-45: stride dimension byte offset >> 4
// bits 49-51: base offset (the pattern's phase when the start is not on a 1024-byte boundary)
// bits 62-63: swizzle mode: 0 none, 1 128-byte, 2 64-byte, 3 32-byte
// For a K-major operand in the 128-byte swizzle the stride byte offset is the distance between
// 8-row groups (1024 bytes here: rows are 128 bytes); the leading byte offset is not used while one
// wgmma's K (32 bytes) stays inside the 128-byte span, and is set to 16 (encoded 1). Each k32 step
// inside the span moves the start address by 32 bytes; bits [7, 10) of the address do not change,
// so the base offset stays 0.
constexpr uint32_t kSwizzleMode128B = 1;

NEP_WG_HD constexpr uint64_t make_desc(uint32_t start, uint32_t lbo, uint32_t sbo,
                                       uint32_t base_offset, uint32_t swizzle_mode) {
  return (uint64_t((start & 0x3FFFFu) >> 4)) | (uint64_t((lbo & 0x3FFFFu) >> 4) << 16) |
         (uint64_t((sbo & 0x3FFFFu) >> 4) << 32) | (uint64_t(base_offset & 7u) << 49) |
         (uint64_t(swizzle_mode & 3u) << 62);
}

// The descriptor of a tile (1024-byte aligned shared address) of 128-byte K-major rows.
NEP_WG_HD constexpr uint64_t sw128_kmajor_desc(uint32_t tile_address) {
  return make_desc(tile_address, kChunk, 8 * kSwizzleSpan, 0, kSwizzleMode128B);
}

// The descriptor `bytes` further along K (bytes a multiple of 16, start + bytes below 2^18).
NEP_WG_HD constexpr uint64_t desc_advance(uint64_t desc, uint32_t bytes) {
  return desc + (bytes >> 4);
}

NEP_WG_HD constexpr uint32_t desc_start(uint64_t d) { return uint32_t(d & 0x3FFFu) << 4; }
NEP_WG_HD constexpr uint32_t desc_lbo(uint64_t d) { return uint32_t((d >> 16) & 0x3FFFu) << 4; }
NEP_WG_HD constexpr uint32_t desc_sbo(uint64_t d) { return uint32_t((d >> 32) & 0x3FFFu) << 4; }
NEP_WG_HD constexpr uint32_t desc_base_offset(uint64_t d) { return uint32_t(d >> 49) & 7u; }
NEP_WG_HD constexpr uint32_t desc_swizzle(uint64_t d) { return uint32_t(d >> 62) & 3u; }

// The shared address the tensor core reads for (row, kbyte) of one k32 step (kbyte < 32) of a
// K-major 128-byte swizzled operand described by `desc`: rows in 8-row groups sbo apart, 128
// bytes apart inside a group, then the address swizzle. The CPU test checks that this equals the
// TMA layout (sw128_offset) of (row, step * 32 + kbyte) for every step the kernel issues.
NEP_WG_HD constexpr uint32_t desc_read_address(uint64_t desc, uint32_t row, uint32_t kbyte) {
  return sw128_address(desc_start(desc) + (row / 8) * desc_sbo(desc) + (row % 8) * kSwizzleSpan +
                       kbyte);
}

// ---- The fp32 accumulator of wgmma m64nNk32 --------------------------------------------------
// Thread t (0..127) of the warpgroup holds N/2 floats d[i]: warp t/32 owns rows [16 (t/32), +16);
// d[i] is row 16 (t/32) + (t%32)/4 + 8 ((i/2) mod 2), column 8 (i/4) + 2 (t%4) + (i mod 2).
NEP_WG_HD constexpr uint32_t acc_row(uint32_t t, uint32_t i) {
  return (t / 32) * 16 + (t % 32) / 4 + ((i / 2) % 2) * 8;
}
NEP_WG_HD constexpr uint32_t acc_col(uint32_t t, uint32_t i) {
  return (i / 4) * 8 + (t % 4) * 2 + i % 2;
}

// ---- TMA tensor maps -------------------------------------------------------------------------
// A 2D map of e4m3 bytes, innermost dimension first (as cuTensorMapEncodeTiled takes it): `inner`
// bytes per row (K, or the padded tokens), `outer` rows, `stride` bytes between rows, boxes of one
// tile, 128-byte swizzle, zero fill outside the tensor (an out-of-range box still delivers, and
// counts, all its bytes).
struct TmaMap2d {
  uint64_t dims[2];     // {inner, outer}
  uint64_t strides[1];  // bytes between rows
  uint32_t box[2];      // {kTileK, kTileRows}
};

NEP_WG_HD constexpr TmaMap2d tile_map(int64_t inner, int64_t outer, int64_t stride) {
  return TmaMap2d{{uint64_t(inner), uint64_t(outer)}, {uint64_t(stride)}, {kTileK, kTileRows}};
}

// Bytes one box delivers (what the stage's mbarrier expects per operand).
NEP_WG_HD constexpr uint32_t box_bytes(const TmaMap2d& m) { return m.box[0] * m.box[1]; }

// Null when the driver takes the map (1-byte elements, no interleave, 128-byte swizzle), else the
// rule it breaks: a 16-byte aligned global address; every dimension in [1, 2^32]; the row stride a
// multiple of 16 below 2^40 and not below the row; boxes of [1, 256] per dimension whose inner
// extent is a multiple of 16 bytes and, for the 128-byte swizzle, at most 128 bytes.
constexpr const char* map_problem(const TmaMap2d& m, uint64_t address) {
  if (address % 16 != 0) return "the global address is not 16-byte aligned";
  for (uint64_t d : m.dims)
    if (d < 1 || d > (uint64_t(1) << 32)) return "a dimension is outside [1, 2^32]";
  if (m.strides[0] % 16 != 0) return "the row stride is not a multiple of 16 bytes";
  if (m.strides[0] >= (uint64_t(1) << 40)) return "the row stride reaches 2^40 bytes";
  if (m.strides[0] < m.dims[0]) return "the row stride is below the row's bytes";
  for (uint32_t b : m.box)
    if (b < 1 || b > 256) return "a box dimension is outside [1, 256]";
  if (m.box[0] % 16 != 0) return "the box's inner bytes are not a multiple of 16";
  if (m.box[0] > kSwizzleSpan) return "the box's inner bytes exceed the 128-byte swizzle span";
  return nullptr;
}

// ---- The stage ring's mbarrier phases ---------------------------------------------------------
// kStages slots of one A and one B tile; one producer thread fills them, kConsumerWarps warps (two
// warpgroups) consume them, each warp arriving once on the slot's empty barrier per stage.
constexpr int kStages = 5;
constexpr int kConsumerWarps = 8;
constexpr uint32_t kStageTxBytes = 2 * kTileBytes;  // both boxes, zero-filled parts included

// Stage st of the reduction uses slot st % stages for the (st / stages)-th time. full[slot]
// (count 1 + the stage's bytes) completes one phase per fill, empty[slot] (one arrival per
// consumer warp) one phase per release. try_wait.parity(P) returns once the phase of parity P has
// completed, so the consumer of stage st waits on full with parity (st / stages) & 1, and the
// producer, before refilling a slot (st >= stages), waits on empty for the release of stage
// st - stages: parity (st / stages - 1) & 1.
NEP_WG_HD constexpr int stage_slot(int64_t st, int stages) { return int(st % stages); }
NEP_WG_HD constexpr uint32_t full_parity(int64_t st, int stages) {
  return uint32_t(st / stages) & 1u;
}
NEP_WG_HD constexpr bool producer_waits(int64_t st, int stages) { return st >= stages; }
NEP_WG_HD constexpr uint32_t empty_parity(int64_t st, int stages) {
  return uint32_t(st / stages - 1) & 1u;
}

// ---- MXFP8 promotion: the one-multiply case -------------------------------------------------
// An MX block's partial sum p is promoted as ldexp(p, ea + eb - 254) (the CPU path's promote_mx;
// E8M0 bytes ea, eb, 255 = NaN). Where 2^(ea + eb - 254) is a normal float, p times that float
// rounds once, to the same value; its bits are (ea + eb - 127) << 23.
NEP_WG_HD constexpr uint32_t mx_factor_bits(uint32_t ea, uint32_t eb) {
  return (ea + eb - 127u) << 23;
}
// Whether every pair of bytes ea in [lo_a, hi_a], eb in [lo_b, hi_b] takes the one-multiply case:
// no NaN byte and ea + eb - 254 in [-126, 127] (the sums of the pairs span exactly
// [lo_a + lo_b, hi_a + hi_b]).
NEP_WG_HD constexpr bool mx_range_fast(int lo_a, int hi_a, int lo_b, int hi_b) {
  return hi_a < 255 && hi_b < 255 && lo_a + lo_b - 254 >= -126 && hi_a + hi_b - 254 <= 127;
}
// For a stage of four MX blocks: bit j set when block j's pairs all take the one-multiply case,
// from the bytewise minima and maxima (byte j: block j) of A's rows and B's columns.
NEP_WG_HD constexpr uint32_t mx_fast_blocks(uint32_t min_a, uint32_t max_a, uint32_t min_b,
                                            uint32_t max_b) {
  uint32_t bits = 0;
  for (int j = 0; j < 4; ++j) {
    const int sh = 8 * j;
    if (mx_range_fast(int((min_a >> sh) & 0xFFu), int((max_a >> sh) & 0xFFu),
                      int((min_b >> sh) & 0xFFu), int((max_b >> sh) & 0xFFu)))
      bits |= 1u << j;
  }
  return bits;
}

// ---- Persistent tiles ---------------------------------------------------------------------------
// The persistent kernels' CTAs take tiles j = blockIdx.x, + gridDim.x, ... of a linear order.
//
// M-grouped GEMM (C [offsets[G], n] = A_g B_g^T per group): tile j is row tile j / n_tiles of the
// grouped layout (group g's rows [offsets[g], offsets[g+1]) in tiles of kTileRows, tile_prefix[g]
// of them before g) against column tile j % n_tiles; rows_a and rows_b are the tile's real rows of
// A (the group's, not the next group's) and of B.
struct MTile {
  int32_t g;
  int64_t row0, n0;
  int32_t rows_a, rows_b;
};
NEP_WG_HD inline MTile m_tile(int32_t j, int32_t n_tiles, const int32_t* tile_prefix,
                              const int64_t* offsets, int32_t count, int64_t n) {
  const int32_t tile = j / n_tiles;
  int32_t lo = 0, hi = count - 1;  // the group whose tiles hold `tile` (the last such: empty
  while (lo < hi) {                // groups share their prefix with the next)
    const int32_t mid = (lo + hi + 1) / 2;
    if (tile_prefix[mid] <= tile) lo = mid;
    else hi = mid - 1;
  }
  MTile t;
  t.g = lo;
  t.row0 = offsets[lo] + int64_t(tile - tile_prefix[lo]) * kTileRows;
  t.n0 = int64_t(j % n_tiles) * kTileRows;
  const int64_t ra = offsets[lo + 1] - t.row0, rb = n - t.n0;
  t.rows_a = int32_t(ra < int64_t(kTileRows) ? ra : int64_t(kTileRows));
  t.rows_b = int32_t(rb < int64_t(kTileRows) ? rb : int64_t(kTileRows));
  return t;
}

// K-grouped GEMM (C_g [n, k] = A_g B_g^T over group g's padded tokens): tile j is group
// j / (n_tiles k_tiles), row tile (j / k_tiles) % n_tiles, column tile j % k_tiles of C_g.
struct KTile {
  int32_t g;
  int64_t n0, k0;
  int32_t rows_a, rows_b;
};
NEP_WG_HD inline KTile k_tile(int32_t j, int32_t n_tiles, int32_t k_tiles, int64_t n, int64_t k) {
  KTile t;
  t.g = j / (n_tiles * k_tiles);
  t.n0 = int64_t((j / k_tiles) % n_tiles) * kTileRows;
  t.k0 = int64_t(j % k_tiles) * kTileRows;
  const int64_t ra = n - t.n0, rb = k - t.k0;
  t.rows_a = int32_t(ra < int64_t(kTileRows) ? ra : int64_t(kTileRows));
  t.rows_b = int32_t(rb < int64_t(kTileRows) ? rb : int64_t(kTileRows));
  return t;
}

}  // namespace wgmma
}  // namespace nep

#endif  // NATIVEEP_CUDA_SM90A_WGMMA_LAYOUT_H_
