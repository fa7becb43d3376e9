// Host oracle of the GPU drivers: deterministic inputs of every rank from a seed, the wire codecs
// written independently of the kernels (bf16 round-to-nearest-even, e4m3 by nearest representable
// value, FP8 1x128 and MXFP8 1x32 group scales), and the plain all-to-all result of layout,
// dispatch and combine.
#ifndef NATIVEEP_GPU_TESTS_ORACLE_H_
#define NATIVEEP_GPU_TESTS_ORACLE_H_

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <vector>

#include "nativeep/cuda_api.h"

namespace nepgpu {

inline uint32_t f2u(float f) {
  uint32_t u;
  std::memcpy(&u, &f, 4);
  return u;
}
inline float u2f(uint32_t u) {
  float f;
  std::memcpy(&f, &u, 4);
  return f;
}

inline uint16_t f32_to_bf16(float f) {
  uint32_t u = f2u(f);
  if ((u & 0x7fffffffu) > 0x7f800000u) return uint16_t((u >> 16) | 0x40u);  // NaN stays NaN
  u += 0x7fffu + ((u >> 16) & 1u);
  return uint16_t(u >> 16);
}
inline float bf16_to_f32(uint16_t h) { return u2f(uint32_t(h) << 16); }
inline float round_bf16(float f) { return bf16_to_f32(f32_to_bf16(f)); }

// e4m3 (no infinities, 0x7f = NaN, max 448).
class E4M3 {
 public:
  E4M3() {
    for (int c = 0; c < 256; ++c) {
      const int e = (c >> 3) & 15, m = c & 7;
      const double mag =
          e == 0 ? m * std::ldexp(1.0, -9) : (1.0 + m / 8.0) * std::ldexp(1.0, e - 7);
      table_[c] = float((c & 0x80) ? -mag : mag);
    }
    table_[0x7f] = table_[0xff] = std::nanf("");
  }
  float decode(uint8_t c) const { return table_[c]; }
  // Nearest representable value, ties to the even code, saturating to +-448; NaN and +-Inf give
  // the NaN code with their sign (e4m3fn has no infinity).
  uint8_t encode(float f) const {
    if (!std::isfinite(f)) return std::signbit(f) ? 0xff : 0x7f;
    const uint8_t sign = std::signbit(f) ? 0x80 : 0;
    const float a = std::fabs(f);
    if (a >= 448.f) return sign | 0x7e;
    int lo = 0, hi = 0x7e;
    while (lo < hi) {
      const int mid = (lo + hi + 1) / 2;
      if (table_[mid] <= a) lo = mid;
      else hi = mid - 1;
    }
    if (table_[lo] == a) return uint8_t(sign | lo);
    const int up = lo + 1;
    const double dl = double(a) - table_[lo], du = double(table_[up]) - a;
    const int c = dl < du ? lo : du < dl ? up : ((lo & 1) == 0 ? lo : up);
    return uint8_t(sign | c);
  }

 private:
  float table_[256];
};

inline const E4M3& e4m3() {
  static const E4M3 t;
  return t;
}

// |x| when finite, else 0: a scale group's amax is its largest finite |x|.
inline float finite_abs(float x) { return std::isfinite(x) ? std::fabs(x) : 0.f; }

// Value of a row after the wire: cast to `wire` and widened back to fp32, as the kernels do.
inline void wire_roundtrip(int wire, const float* in, int64_t H, float* out) {
  const E4M3& q = e4m3();
  if (wire == NEP_WIRE_FP32) {
    std::copy(in, in + H, out);
  } else if (wire == NEP_WIRE_BF16) {
    for (int64_t i = 0; i < H; ++i) out[i] = round_bf16(in[i]);
  } else if (wire == NEP_WIRE_FP8) {
    for (int64_t g = 0; g < H; g += 128) {
      const int n = int(std::min<int64_t>(128, H - g));  // the last group may be partial
      float amax = 0.f;
      for (int i = 0; i < n; ++i) amax = std::max(amax, finite_abs(in[g + i]));
      amax = std::max(amax, 448.f * 0x1p-126f);  // the codec's floor
      const float scale = amax / 448.f, mul = 448.f / amax;
      for (int i = 0; i < n; ++i) {
        const float p = in[g + i] * mul;
        out[g + i] = q.decode(q.encode(p)) * scale;
      }
    }
  } else {  // MXFP8
    for (int64_t g = 0; g < H; g += 32) {
      const int n = int(std::min<int64_t>(32, H - g));  // the last group may be partial
      float amax = 0.f;
      for (int i = 0; i < n; ++i) amax = std::max(amax, finite_abs(in[g + i]));
      const int biased = int((f2u(amax) >> 23) & 0xff);
      const int se = biased == 0 ? -127 : std::max(biased - 127 - 8, -127);
      const float mul = u2f(uint32_t(127 - se) << 23);
      const uint32_t byte = uint32_t(se + 127);
      const float scale = byte == 0 ? u2f(0x00400000u) : u2f(byte << 23);
      for (int i = 0; i < n; ++i) {
        const float p = in[g + i] * mul;
        out[g + i] = q.decode(q.encode(p)) * scale;
      }
    }
  }
}

// Rounds to a tensor dtype and returns the value as fp32.
inline float to_dtype(int dtype, float v) { return dtype == NEP_DTYPE_BF16 ? round_bf16(v) : v; }

// Writes row values (already representable in dtype) as the dtype's bytes.
inline void store_dtype(int dtype, const float* v, int64_t n, uint8_t* out) {
  if (dtype == NEP_DTYPE_BF16) {
    for (int64_t i = 0; i < n; ++i) {
      const uint16_t h = f32_to_bf16(v[i]);
      std::memcpy(out + 2 * i, &h, 2);
    }
  } else {
    std::memcpy(out, v, size_t(n) * 4);
  }
}
inline float load_dtype(int dtype, const uint8_t* p, int64_t i) {
  if (dtype == NEP_DTYPE_BF16) {
    uint16_t h;
    std::memcpy(&h, p + 2 * i, 2);
    return bf16_to_f32(h);
  }
  float f;
  std::memcpy(&f, p + 4 * i, 4);
  return f;
}
inline int dtype_bytes(int dtype) { return dtype == NEP_DTYPE_BF16 ? 2 : 4; }

// ---- Deterministic inputs ----------------------------------------------------------------------

inline uint64_t splitmix64(uint64_t& s) {
  uint64_t z = (s += 0x9e3779b97f4a7c15ull);
  z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
  z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
  return z ^ (z >> 31);
}
struct Rng {
  uint64_t s;
  Rng(uint64_t seed, uint64_t a, uint64_t b, uint64_t c) : s(seed) {
    s ^= a * 0xd1342543de82ef95ull;
    splitmix64(s);
    s ^= b * 0x9e3779b97f4a7c15ull;
    splitmix64(s);
    s ^= c * 0xc2b2ae3d27d4eb4full;
    splitmix64(s);
  }
  uint64_t next() { return splitmix64(s); }
  double uniform() { return double(next() >> 11) * (1.0 / 9007199254740992.0); }  // [0, 1)
  double normal() {
    const double u1 = uniform() + 1e-300, u2 = uniform();
    return std::sqrt(-2.0 * std::log(u1)) * std::cos(6.283185307179586 * u2);
  }
};

enum class Routing { kRandom, kOneExpert, kMasked, kBiased };
enum class Data { kRandom, kPattern };

struct Problem {
  uint64_t seed = 1;
  int world = 2;
  int64_t tokens = 512;    // tokens of rank 0
  int64_t token_step = 0;  // rank r has tokens - r * token_step
  int zero_rank = -1;      // this rank has no tokens
  int64_t hidden = 1024;
  int topk = 8;
  int experts = 64;
  int x_dtype = NEP_DTYPE_BF16;
  Routing routing = Routing::kRandom;
  Data data = Data::kRandom;
  int variant = 0;  // another x with the same routing (cached dispatch)

  int64_t num_tokens(int r) const {
    if (r == zero_rank) return 0;
    return std::max<int64_t>(0, tokens - r * token_step);
  }
  int local_experts() const { return experts / world; }

  // Row t of rank s, in the input dtype's values.
  void x_row(int s, int64_t t, float* out) const {
    if (data == Data::kPattern) {
      for (int64_t h = 0; h < hidden; ++h) out[h] = float(s + 1);
      for (int64_t h = hidden - 256; h < hidden - 128; ++h) out[h] = float(t & 127);
      for (int64_t h = hidden - 128; h < hidden; ++h) out[h] = float((t >> 7) & 127);
      if (variant)
        for (int64_t h = 0; h < hidden - 256; ++h) out[h] = float(-(s + 2));
      return;
    }
    Rng rng(seed + 1000003ull * variant, 1 + s, 1 + t, 7);
    // Row magnitudes from 2^-6 to 2^6 so that the scales of FP8/MXFP8 vary.
    const float mag = std::ldexp(1.f, int(rng.next() % 13) - 6);
    for (int64_t h = 0; h < hidden; ++h) out[h] = to_dtype(x_dtype, float(rng.normal()) * mag);
  }

  // topk_idx and weights of token t of rank s.
  void topk_row(int s, int64_t t, int64_t* idx, float* w) const {
    Rng rng(seed, 1 + s, 1 + t, 11);
    for (int k = 0; k < topk; ++k) w[k] = float(0.05 + rng.uniform());
    if (routing == Routing::kOneExpert) {
      for (int k = 0; k < topk; ++k) idx[k] = k == 0 ? experts - 1 : -1;
      return;
    }
    int n = 0;
    while (n < topk) {
      int64_t e;
      if (routing == Routing::kBiased && rng.uniform() < 0.7)
        e = int64_t(rng.next() % uint64_t(local_experts()));  // rank 0
      else e = int64_t(rng.next() % uint64_t(experts));
      bool dup = false;
      for (int j = 0; j < n; ++j) dup |= idx[j] == e;
      if (!dup) idx[n++] = e;
    }
    if (routing == Routing::kMasked) {
      if (t % 7 == 3) {
        for (int k = 0; k < topk; ++k) idx[k] = -1;
      } else {
        for (int k = 0; k < topk; ++k)
          if (rng.uniform() < 0.3) idx[k] = -1;
      }
    }
  }

  int owner(int64_t e) const { return e < 0 ? -1 : int(e / local_experts()); }
  bool goes_to(int s, int64_t t, int r, std::vector<int64_t>& idx_scratch,
               std::vector<float>& w_scratch) const {
    topk_row(s, t, idx_scratch.data(), w_scratch.data());
    for (int k = 0; k < topk; ++k)
      if (owner(idx_scratch[k]) == r) return true;
    return false;
  }
};

// What rank `me` must see, from a plain all-to-all of every rank's inputs.
struct Expected {
  std::vector<int32_t> tokens_per_rank;         // [W] of me's tokens
  std::vector<int32_t> tokens_per_expert;       // [E] of me's tokens
  std::vector<uint8_t> is_token_in_rank;        // [T_me, W]
  std::vector<int32_t> rank_prefix;             // [W, W]
  std::vector<int32_t> rank_tokens;             // [W]
  std::vector<int32_t> recv_raw, recv_aligned;  // [El]
  std::vector<int> recv_src_rank;               // [R]
  std::vector<int32_t> recv_src_idx;            // [R]
  std::vector<int64_t> recv_topk_idx;           // [R, K]
  std::vector<float> recv_topk_w;               // [R, K]
  int64_t num_recv = 0;
};

inline Expected expect_layout(const Problem& p, int me, int alignment) {
  Expected ex;
  const int W = p.world, K = p.topk, El = p.local_experts();
  std::vector<int64_t> idx(K);
  std::vector<float> w(K);
  ex.tokens_per_rank.assign(W, 0);
  ex.tokens_per_expert.assign(p.experts, 0);
  ex.rank_prefix.assign(W * W, 0);
  ex.rank_tokens.assign(W, 0);
  ex.recv_raw.assign(El, 0);
  ex.recv_aligned.assign(El, 0);
  std::vector<int32_t> count(W * W, 0);  // [s][r]
  for (int s = 0; s < W; ++s) {
    const int64_t T = p.num_tokens(s);
    ex.rank_tokens[s] = int32_t(T);
    if (s == me) ex.is_token_in_rank.assign(size_t(T) * W, 0);
    for (int64_t t = 0; t < T; ++t) {
      p.topk_row(s, t, idx.data(), w.data());
      unsigned mask = 0;
      for (int k = 0; k < K; ++k) {
        if (idx[k] < 0) continue;
        mask |= 1u << p.owner(idx[k]);
        if (s == me) ex.tokens_per_expert[idx[k]]++;
        if (p.owner(idx[k]) == me) ex.recv_raw[idx[k] - int64_t(me) * El]++;
      }
      for (int r = 0; r < W; ++r) {
        if (!((mask >> r) & 1u)) continue;
        count[s * W + r]++;
        if (s == me) {
          ex.tokens_per_rank[r]++;
          ex.is_token_in_rank[size_t(t) * W + r] = 1;
        }
        if (r == me) {
          ex.recv_src_rank.push_back(s);
          ex.recv_src_idx.push_back(int32_t(t));
          for (int k = 0; k < K; ++k) {
            const bool local = p.owner(idx[k]) == me;
            ex.recv_topk_idx.push_back(local ? idx[k] - int64_t(me) * El : -1);
            ex.recv_topk_w.push_back(local ? w[k] : 0.f);
          }
        }
      }
    }
  }
  for (int i = 0; i < W; ++i)
    for (int j = 0; j < W; ++j)
      ex.rank_prefix[i * W + j] = (i > 0 ? ex.rank_prefix[(i - 1) * W + j] : 0) + count[i * W + j];
  ex.num_recv = ex.rank_prefix[(W - 1) * W + me];
  for (int e = 0; e < El; ++e)
    ex.recv_aligned[e] = (ex.recv_raw[e] + alignment - 1) / alignment * alignment;
  return ex;
}

// Received row of (s, t) as fp32 values of recv_dtype.
inline void expect_recv_row(const Problem& p, int wire, int recv_dtype, int s, int64_t t,
                            float* row, std::vector<float>& scratch) {
  scratch.resize(size_t(p.hidden));
  p.x_row(s, t, scratch.data());
  wire_roundtrip(wire, scratch.data(), p.hidden, row);
  for (int64_t h = 0; h < p.hidden; ++h) row[h] = to_dtype(recv_dtype, row[h]);
}

// The combine input a rank builds from a received row: y = dtype(recv * (rank + 1)).
inline void combine_input_row(int y_dtype, int rank, const float* recv, int64_t H, float* y) {
  for (int64_t h = 0; h < H; ++h) y[h] = to_dtype(y_dtype, recv[h] * float(rank + 1));
}

}  // namespace nepgpu

#endif  // NATIVEEP_GPU_TESTS_ORACLE_H_
