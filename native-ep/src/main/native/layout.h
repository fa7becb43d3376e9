// Routing layout of one rank's tokens: which ranks and experts each token goes to.
// Experts are split in contiguous blocks of E / W over W ranks; a token counts once per rank
// however many of its experts live there (per-rank deduplication).
#ifndef NATIVEEP_SRC_LAYOUT_H_
#define NATIVEEP_SRC_LAYOUT_H_

#include <cstdint>

namespace nep {

// Limits of validate_routing (NEP_ERR_CAPACITY beyond them).
constexpr int32_t kMaxWorldSize = 1 << 16;
constexpr int32_t kMaxExperts = 1 << 20;

struct RoutingShape {
  int64_t num_tokens;   // T >= 0, at most INT32_MAX (received source indices are int32)
  int32_t num_topk;     // K >= 1
  int32_t num_experts;  // E >= 1, a multiple of world_size
  int32_t world_size;   // W >= 1
};

// Throws nep::Error (NEP_ERR_INVALID_ARGUMENT / NEP_ERR_CAPACITY) naming the argument, its value
// and the limit when the shape is out of range, when topk_idx is null for T > 0, when an entry is
// outside [-1, E) (e.g. "topk_idx[3][1] = 70 is outside [-1, 64)") or when an expert appears twice
// in one row.
void validate_routing(const int64_t* topk_idx, const RoutingShape& shape);

// Writes tokens_per_rank [W] int32, tokens_per_expert [E] int32 and is_token_in_rank [T, W]
// uint8 (0/1); any output may be null. Expects validate_routing to have passed.
void compute_layout(const int64_t* topk_idx, const RoutingShape& shape, int32_t* tokens_per_rank,
                    int32_t* tokens_per_expert, uint8_t* is_token_in_rank);

}  // namespace nep

#endif  // NATIVEEP_SRC_LAYOUT_H_
