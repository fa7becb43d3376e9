// Row encoders and decoders for the wire formats described in codec.h. Every inner loop is
// branch-free over a block of channels so the compiler can vectorise it.
#include "codec.h"
#include "codec_kernels.h"

#include <algorithm>
#include <cstdlib>

#include "error.h"

#if defined(__x86_64__) && defined(__GNUC__) && !defined(__clang__)
#define NEP_CODEC_CLONES __attribute__((target_clones("avx2", "default")))
#else
#define NEP_CODEC_CLONES
#endif

namespace nep {
namespace {

// The row functions below are inlined into the *_dispatch functions at the end of this namespace,
// which are compiled twice (AVX2 and baseline) and picked at load time.
#define NEP_INLINE inline __attribute__((always_inline))

// Stores v into *out, or adds it (the decoders' two modes).
template <bool kAdd>
NEP_INLINE void put(float* out, float v) {
  if constexpr (kAdd) {
    *out += v;
  } else {
    *out = v;
  }
}

inline int64_t num_blocks(int64_t hidden, int64_t block) { return (hidden + block - 1) / block; }

NEP_INLINE void encode_fp32(const float* x, int64_t hidden, uint8_t* out) {
  std::memcpy(out, x, static_cast<size_t>(hidden) * sizeof(float));
}

template <bool kAdd>
NEP_INLINE void decode_fp32(const uint8_t* in, int64_t hidden, float* out) {
  if constexpr (!kAdd) {
    std::memcpy(out, in, static_cast<size_t>(hidden) * sizeof(float));
  } else {
    for (int64_t i = 0; i < hidden; ++i) {
      float v;
      std::memcpy(&v, in + 4 * i, sizeof v);
      out[i] += v;
    }
  }
}

NEP_INLINE void encode_bf16(const float* x, int64_t hidden, uint8_t* out) {
  for (int64_t i = 0; i < hidden; ++i) {
    uint16_t h = bf16_from_float(x[i]);
    std::memcpy(out + 2 * i, &h, sizeof h);
  }
}

template <bool kAdd>
NEP_INLINE void decode_bf16(const uint8_t* in, int64_t hidden, float* out) {
  for (int64_t i = 0; i < hidden; ++i) {
    uint16_t h;
    std::memcpy(&h, in + 2 * i, sizeof h);
    put<kAdd>(&out[i], bf16_to_float(h));
  }
}

NEP_INLINE void encode_fp8(const float* x, int64_t hidden, uint8_t* out) {
  encode_fp8_blocks(x, hidden, out, [](float amax, float& scale, float& inv_scale) {
    scale = amax / 448.0f;
    inv_scale = 448.0f / amax;  // x * (448 / amax), as DeepEP's per-token cast does
  });
}

template <bool kAdd>
NEP_INLINE void decode_fp8(const uint8_t* in, int64_t hidden, float* out) {
  const uint8_t* scales = in + hidden;
  for (int64_t b = 0, start = 0; start < hidden; ++b, start += kFp8BlockSize) {
    const int64_t n = std::min(kFp8BlockSize, hidden - start);
    float scale;
    std::memcpy(&scale, scales + 4 * b, sizeof scale);
    const uint8_t* ib = in + start;
    float* ob = out + start;
    for (int64_t i = 0; i < n; ++i) {
      put<kAdd>(&ob[i], e4m3_to_float(ib[i]) * scale);
    }
  }
}

NEP_INLINE void encode_mxfp8(const float* x, int64_t hidden, uint8_t* out) {
  uint8_t* scales = out + hidden;
  for (int64_t b = 0, start = 0; start < hidden; ++b, start += kMxBlockSize) {
    const int64_t n = std::min(kMxBlockSize, hidden - start);
    const float* xb = x + start;
    uint8_t* ob = out + start;
    // floor(log2(amax)) is the unbiased exponent field (subnormal or zero amax clamp to -127).
    int32_t shared_exp = static_cast<int32_t>(finite_amax_bits(xb, n) >> 23) - 127 - 8;
    shared_exp = std::clamp(shared_exp, -127, 127);
    // x / 2^shared_exp as two exact power-of-two multiplies, each factor a normal float.
    const int32_t half = -shared_exp / 2;
    const float f1 = pow2f(half);
    const float f2 = pow2f(-shared_exp - half);
    for (int64_t i = 0; i < n; ++i) ob[i] = e4m3_from_float(xb[i] * f1 * f2);
    scales[b] = static_cast<uint8_t>(shared_exp + 127);
  }
}

template <bool kAdd>
NEP_INLINE void decode_mxfp8(const uint8_t* in, int64_t hidden, float* out) {
  const uint8_t* scales = in + hidden;
  for (int64_t b = 0, start = 0; start < hidden; ++b, start += kMxBlockSize) {
    const int64_t n = std::min(kMxBlockSize, hidden - start);
    const int32_t shared_exp = static_cast<int32_t>(scales[b]) - 127;
    const int32_t half = shared_exp / 2;
    float f1 = pow2f(half);
    const float f2 = pow2f(shared_exp - half);
    if (scales[b] == 0xFF) f1 = bits_float(kNanBits);
    const uint8_t* ib = in + start;
    float* ob = out + start;
    for (int64_t i = 0; i < n; ++i) {
      put<kAdd>(&ob[i], e4m3_to_float(ib[i]) * f1 * f2);
    }
  }
}

template <bool kAdd>
NEP_INLINE void decode_any(Wire wire, const uint8_t* in, int64_t hidden, float* out) {
  switch (wire) {
    case Wire::kFp32: return decode_fp32<kAdd>(in, hidden, out);
    case Wire::kBf16: return decode_bf16<kAdd>(in, hidden, out);
    case Wire::kFp8: return decode_fp8<kAdd>(in, hidden, out);
    case Wire::kMxfp8: return decode_mxfp8<kAdd>(in, hidden, out);
  }
  fail(NEP_ERR_INTERNAL, "decode: unknown wire format ", static_cast<int32_t>(wire));
}

// Compiled for AVX2 and for the baseline; the loader picks one (the symbols stay internal).
NEP_CODEC_CLONES void encode_row_dispatch(Wire wire, const float* x, int64_t hidden, uint8_t* out) {
  switch (wire) {
    case Wire::kFp32: return encode_fp32(x, hidden, out);
    case Wire::kBf16: return encode_bf16(x, hidden, out);
    case Wire::kFp8: return encode_fp8(x, hidden, out);
    case Wire::kMxfp8: return encode_mxfp8(x, hidden, out);
  }
  fail(NEP_ERR_INTERNAL, "encode: unknown wire format ", static_cast<int32_t>(wire));
}

NEP_CODEC_CLONES void decode_row_dispatch(Wire wire, const uint8_t* in, int64_t hidden,
                                          float* out) {
  decode_any<false>(wire, in, hidden, out);
}

NEP_CODEC_CLONES void decode_add_row_dispatch(Wire wire, const uint8_t* in, int64_t hidden,
                                              float* acc) {
  decode_any<true>(wire, in, hidden, acc);
}

// ---- instruction sets (the AVX2 and AVX-512 loops live in codec_avx2.cpp, codec_avx512.cpp) --
#if defined(__x86_64__) && defined(__GNUC__)
#define NEP_HAVE_AVX2_PATH 1

bool env_flag(const char* name) {
  const char* env = std::getenv(name);
  return env != nullptr && env[0] != '\0' && env[0] != '0';
}

// The CPU's sets, probed once (the answer cannot change while the process runs). The AVX2 loops
// also use F16C (every AVX2 CPU has it; checked all the same).
struct CpuSets {
  bool avx2 = false;
  bool avx512 = false;
};

const CpuSets& cpu_sets() {
  static const CpuSets sets = [] {
    CpuSets s;
    __builtin_cpu_init();
    s.avx2 = __builtin_cpu_supports("avx2") != 0 && __builtin_cpu_supports("f16c") != 0;
    s.avx512 = s.avx2 && __builtin_cpu_supports("avx512f") != 0 &&
               __builtin_cpu_supports("avx512bw") != 0 && __builtin_cpu_supports("avx512vl") != 0 &&
               __builtin_cpu_supports("avx512dq") != 0;
    return s;
  }();
  return sets;
}
#else
bool env_flag(const char*) { return false; }
#endif

// The first loop that takes the row: the chosen set's, then AVX2's (AVX-512 leaves some rows to
// it), then the compiled loops.
void decode_kind(CodecIsa isa, Wire wire, const uint8_t* in, int64_t hidden, float* out,
                 DecodeKind kind) {
  if (isa == CodecIsa::kAvx512 && decode_row_avx512(wire, in, hidden, out, kind)) return;
  if (isa != CodecIsa::kScalar && decode_row_avx2(wire, in, hidden, out, kind)) return;
  if (kind == DecodeKind::kAdd) {
    decode_add_row_dispatch(wire, in, hidden, out);
  } else {
    decode_row_dispatch(wire, in, hidden, out);
  }
}

void encode_with(CodecIsa isa, Wire wire, const float* x, int64_t hidden, uint8_t* out) {
  if (isa == CodecIsa::kAvx512 && encode_row_avx512(wire, x, hidden, out)) return;
  if (isa != CodecIsa::kScalar && encode_row_avx2(wire, x, hidden, out)) return;
  encode_row_dispatch(wire, x, hidden, out);
}

void require_supported(CodecIsa isa) {
  if (!codec_isa_supported(isa)) {
    fail(NEP_ERR_INTERNAL, "codec: instruction set ", codec_isa_name(isa),
         " is not available on this CPU");
  }
}

}  // namespace

bool wire_is_valid(int32_t wire) { return wire >= NEP_WIRE_FP32 && wire <= NEP_WIRE_MXFP8; }

const char* wire_name(Wire wire) {
  switch (wire) {
    case Wire::kFp32: return "fp32";
    case Wire::kBf16: return "bf16";
    case Wire::kFp8: return "fp8";
    case Wire::kMxfp8: return "mxfp8";
  }
  return "invalid";
}

int64_t wire_row_bytes(Wire wire, int64_t hidden) {
  switch (wire) {
    case Wire::kFp32: return 4 * hidden;
    case Wire::kBf16: return 2 * hidden;
    case Wire::kFp8: return hidden + 4 * num_blocks(hidden, kFp8BlockSize);
    case Wire::kMxfp8: return hidden + num_blocks(hidden, kMxBlockSize);
  }
  fail(NEP_ERR_INTERNAL, "row bytes: unknown wire format ", static_cast<int32_t>(wire));
}

bool codec_isa_supported(CodecIsa isa) {
  switch (isa) {
    case CodecIsa::kScalar: return true;
#ifdef NEP_HAVE_AVX2_PATH
    case CodecIsa::kAvx2: return cpu_sets().avx2;
    case CodecIsa::kAvx512: return cpu_sets().avx512;
#else
    case CodecIsa::kAvx2: return false;
    case CodecIsa::kAvx512: return false;
#endif
  }
  return false;
}

CodecIsa codec_isa() {
  static const CodecIsa chosen = [] {
    if (env_flag("NEP_CODEC_NO_AVX2")) return CodecIsa::kScalar;
    if (codec_isa_supported(CodecIsa::kAvx512) && !env_flag("NEP_CODEC_NO_AVX512"))
      return CodecIsa::kAvx512;
    if (codec_isa_supported(CodecIsa::kAvx2)) return CodecIsa::kAvx2;
    return CodecIsa::kScalar;
  }();
  return chosen;
}

const char* codec_isa_name(CodecIsa isa) {
  switch (isa) {
    case CodecIsa::kScalar: return "scalar";
    case CodecIsa::kAvx2: return "avx2";
    case CodecIsa::kAvx512: return "avx512";
  }
  return "invalid";
}

void encode_row_isa(CodecIsa isa, Wire wire, const float* x, int64_t hidden, uint8_t* out) {
  require_supported(isa);
  encode_with(isa, wire, x, hidden, out);
}

void decode_row_isa(CodecIsa isa, Wire wire, const uint8_t* in, int64_t hidden, float* out) {
  require_supported(isa);
  decode_kind(isa, wire, in, hidden, out, DecodeKind::kStore);
}

void decode_add_row_isa(CodecIsa isa, Wire wire, const uint8_t* in, int64_t hidden, float* acc) {
  require_supported(isa);
  decode_kind(isa, wire, in, hidden, acc, DecodeKind::kAdd);
}

void decode_row_stream_isa(CodecIsa isa, Wire wire, const uint8_t* in, int64_t hidden, float* out) {
  require_supported(isa);
  decode_kind(isa, wire, in, hidden, out, DecodeKind::kStream);
}

void encode_row(Wire wire, const float* x, int64_t hidden, uint8_t* out) {
  encode_with(codec_isa(), wire, x, hidden, out);
}

void decode_row(Wire wire, const uint8_t* in, int64_t hidden, float* out) {
  decode_kind(codec_isa(), wire, in, hidden, out, DecodeKind::kStore);
}

void decode_add_row(Wire wire, const uint8_t* in, int64_t hidden, float* acc) {
  decode_kind(codec_isa(), wire, in, hidden, acc, DecodeKind::kAdd);
}

void decode_row_stream(Wire wire, const uint8_t* in, int64_t hidden, float* out) {
  decode_kind(codec_isa(), wire, in, hidden, out, DecodeKind::kStream);
}

}  // namespace nep
