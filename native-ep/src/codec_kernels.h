// Internal to the codec: the row loops per instruction set. encode_row / decode_row /
// decode_add_row (codec.h) use the best set the CPU has; tests call every supported set and
// require bit-identical bytes and floats (each set computes the scalar formulas of codec.h lane by
// lane, with the same float operations in the same order).
//
// Environment (read once per process): NEP_CODEC_NO_AVX512=1 keeps the row loops off AVX-512,
// NEP_CODEC_NO_AVX2=1 keeps them off every vector set (the scalar reference runs).
#ifndef NATIVEEP_SRC_CODEC_KERNELS_H_
#define NATIVEEP_SRC_CODEC_KERNELS_H_

#include <cstdint>

#include "codec.h"

namespace nep {

enum class CodecIsa : int32_t { kScalar = 0, kAvx2 = 1, kAvx512 = 2 };

// True when this CPU (and OS) can run the set; kScalar always.
bool codec_isa_supported(CodecIsa isa);
// The set encode_row and the decoders use (best supported, minus what the environment disables).
CodecIsa codec_isa();
const char* codec_isa_name(CodecIsa isa);

// The row functions of codec.h on a given set; isa must be supported.
void encode_row_isa(CodecIsa isa, Wire wire, const float* x, int64_t hidden, uint8_t* out);
void decode_row_isa(CodecIsa isa, Wire wire, const uint8_t* in, int64_t hidden, float* out);
void decode_add_row_isa(CodecIsa isa, Wire wire, const uint8_t* in, int64_t hidden, float* acc);
void decode_row_stream_isa(CodecIsa isa, Wire wire, const uint8_t* in, int64_t hidden, float* out);

enum class DecodeKind : int32_t { kStore = 0, kAdd = 1, kStream = 2 };

// AVX2 (+F16C) loops in codec_avx2.cpp; false when the wire has none there (fp32 stores and adds
// are a memcpy and a compiler loop). Callers check codec_isa_supported(kAvx2) first.
bool encode_row_avx2(Wire wire, const float* x, int64_t hidden, uint8_t* out);
bool decode_row_avx2(Wire wire, const uint8_t* in, int64_t hidden, float* out, DecodeKind kind);

// AVX-512 (F, BW, VL, DQ) loops in codec_avx512.cpp: bf16 and FP8 encode, streaming fp32 and
// bf16 decode; false for the rest, which the AVX2 loops (measured faster for them on Intel and
// AMD cores; native-ep/bench/RESULTS.md) or the compiled loops take. Callers check
// codec_isa_supported(kAvx512) first.
bool encode_row_avx512(Wire wire, const float* x, int64_t hidden, uint8_t* out);
bool decode_row_avx512(Wire wire, const uint8_t* in, int64_t hidden, float* out, DecodeKind kind);

}  // namespace nep

#endif  // NATIVEEP_SRC_CODEC_KERNELS_H_
