// C ABI: wire codecs and layout.
#include <limits>

#include "api_guard.h"
#include "codec.h"
#include "layout.h"
#include "nativeep/c_api.h"
#include "nativeep/export.h"

using nep::Wire;

namespace {

constexpr int64_t kMaxHidden = std::numeric_limits<int64_t>::max() / 8;

// Checks the arguments of nep_encode_rows / nep_decode_rows, then calls
// row(wire, r, wire_row_bytes) for each row r.
template <typename RowFn>
void for_each_codec_row(int32_t wire, int64_t in, int64_t rows, int64_t hidden, int64_t out,
                        const char* in_name, RowFn row) {
  if (!nep::wire_is_valid(wire)) {
    nep::fail_invalid("wire = ", wire, " is not a wire format (0 fp32, 1 bf16, 2 fp8, 3 mxfp8)");
  }
  if (hidden <= 0 || hidden > kMaxHidden) nep::fail_invalid("hidden = ", hidden, " must be > 0");
  if (rows < 0) nep::fail_invalid("rows = ", rows, " must be >= 0");
  if (rows > 0) {
    nep::require_address(in, in_name);
    nep::require_address(out, "out");
  }
  const Wire w = static_cast<Wire>(wire);
  const int64_t row_bytes = nep::wire_row_bytes(w, hidden);
  for (int64_t r = 0; r < rows; ++r) row(w, r, row_bytes);
}

}  // namespace

NEP_EXPORT int64_t nep_wire_row_bytes(int32_t wire, int64_t hidden) {
  if (!nep::wire_is_valid(wire) || hidden <= 0 || hidden > kMaxHidden) return -1;
  return nep::wire_row_bytes(static_cast<Wire>(wire), hidden);
}

NEP_EXPORT int32_t nep_encode_rows(int32_t wire, int64_t x, int64_t rows, int64_t hidden,
                                   int64_t out, char* err, int64_t err_cap) {
  return nep::guarded(err, err_cap, [&] {
    const float* src = reinterpret_cast<const float*>(x);
    uint8_t* dst = reinterpret_cast<uint8_t*>(out);
    for_each_codec_row(wire, x, rows, hidden, out, "x", [&](Wire w, int64_t r, int64_t bytes) {
      nep::encode_row(w, src + r * hidden, hidden, dst + r * bytes);
    });
  });
}

NEP_EXPORT int32_t nep_decode_rows(int32_t wire, int64_t in, int64_t rows, int64_t hidden,
                                   int64_t out, char* err, int64_t err_cap) {
  return nep::guarded(err, err_cap, [&] {
    const uint8_t* src = reinterpret_cast<const uint8_t*>(in);
    float* dst = reinterpret_cast<float*>(out);
    for_each_codec_row(wire, in, rows, hidden, out, "in", [&](Wire w, int64_t r, int64_t bytes) {
      nep::decode_row(w, src + r * bytes, hidden, dst + r * hidden);
    });
  });
}

NEP_EXPORT int32_t nep_layout(int64_t topk_idx, int64_t num_tokens, int32_t num_topk,
                              int32_t num_experts, int32_t world_size, int64_t tokens_per_rank,
                              int64_t tokens_per_expert, int64_t is_token_in_rank, char* err,
                              int64_t err_cap) {
  return nep::guarded(err, err_cap, [&] {
    const nep::RoutingShape shape{num_tokens, num_topk, num_experts, world_size};
    const int64_t* ids = reinterpret_cast<const int64_t*>(topk_idx);
    nep::validate_routing(ids, shape);
    nep::compute_layout(ids, shape, reinterpret_cast<int32_t*>(tokens_per_rank),
                        reinterpret_cast<int32_t*>(tokens_per_expert),
                        reinterpret_cast<uint8_t*>(is_token_in_rank));
  });
}
