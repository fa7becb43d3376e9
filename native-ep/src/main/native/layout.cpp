#include "layout.h"

#include <algorithm>
#include <cstring>
#include <limits>
#include <vector>

#include "error.h"

namespace nep {
namespace {

// Reports the first expert that occurs twice in row t (entries already range-checked).
void check_row_duplicates(const int64_t* row, int64_t t, int32_t k_count) {
  for (int32_t a = 1; a < k_count; ++a) {
    if (row[a] < 0) continue;
    for (int32_t b = 0; b < a; ++b) {
      if (row[b] == row[a]) {
        fail_invalid("topk_idx[", t, "] selects expert ", row[a], " twice (slots ", b, " and ", a,
                     "); each expert may appear at most once per token");
      }
    }
  }
}

// Same check for wide rows, by sorting a copy.
void check_row_duplicates_sorted(const int64_t* row, int64_t t, int32_t k_count,
                                 std::vector<int64_t>& scratch) {
  scratch.assign(row, row + k_count);
  std::sort(scratch.begin(), scratch.end());
  for (int32_t i = 1; i < k_count; ++i) {
    if (scratch[i] >= 0 && scratch[i] == scratch[i - 1]) check_row_duplicates(row, t, k_count);
  }
}

}  // namespace

void validate_routing(const int64_t* topk_idx, const RoutingShape& s) {
  if (s.num_tokens < 0) fail_invalid("num_tokens = ", s.num_tokens, " must be >= 0");
  if (s.num_tokens > std::numeric_limits<int32_t>::max()) {
    fail(NEP_ERR_CAPACITY, "num_tokens = ", s.num_tokens, " exceeds the limit ",
         std::numeric_limits<int32_t>::max());
  }
  if (s.num_topk < 1) fail_invalid("num_topk = ", s.num_topk, " must be >= 1");
  if (s.world_size < 1) fail_invalid("world_size = ", s.world_size, " must be >= 1");
  if (s.num_experts < 1) fail_invalid("num_experts = ", s.num_experts, " must be >= 1");
  // Work memory grows with W and E (per-rank and per-expert counts): bound both, so a wild value
  // is refused instead of becoming a multi-gigabyte allocation.
  if (s.world_size > kMaxWorldSize) {
    fail(NEP_ERR_CAPACITY, "world_size = ", s.world_size, " exceeds the limit ", kMaxWorldSize);
  }
  if (s.num_experts > kMaxExperts) {
    fail(NEP_ERR_CAPACITY, "num_experts = ", s.num_experts, " exceeds the limit ", kMaxExperts);
  }
  if (s.num_experts % s.world_size != 0) {
    fail_invalid("num_experts = ", s.num_experts,
                 " is not a multiple of world_size = ", s.world_size);
  }
  if (s.num_tokens > 0 && topk_idx == nullptr) fail_invalid("topk_idx is null");
  constexpr int32_t kQuadraticLimit = 32;
  std::vector<int64_t> scratch;
  const int64_t e = s.num_experts;
  for (int64_t t = 0; t < s.num_tokens; ++t) {
    const int64_t* row = topk_idx + t * s.num_topk;
    for (int32_t k = 0; k < s.num_topk; ++k) {
      if (row[k] < -1 || row[k] >= e) {
        fail_invalid("topk_idx[", t, "][", k, "] = ", row[k], " is outside [-1, ", e, ")");
      }
    }
    if (s.num_topk <= kQuadraticLimit) {
      check_row_duplicates(row, t, s.num_topk);
    } else {
      check_row_duplicates_sorted(row, t, s.num_topk, scratch);
    }
  }
}

void compute_layout(const int64_t* topk_idx, const RoutingShape& s, int32_t* tokens_per_rank,
                    int32_t* tokens_per_expert, uint8_t* is_token_in_rank) {
  const int32_t w = s.world_size;
  const int64_t local = s.num_experts / w;
  std::vector<int32_t> per_rank(w, 0);
  if (tokens_per_expert != nullptr)
    std::fill(tokens_per_expert, tokens_per_expert + s.num_experts, 0);
  // last_token[r] == t marks rank r as already counted for token t.
  std::vector<int64_t> last_token(w, -1);
  for (int64_t t = 0; t < s.num_tokens; ++t) {
    const int64_t* row = topk_idx + t * s.num_topk;
    uint8_t* in_rank = is_token_in_rank != nullptr ? is_token_in_rank + t * w : nullptr;
    if (in_rank != nullptr) std::memset(in_rank, 0, static_cast<size_t>(w));
    for (int32_t k = 0; k < s.num_topk; ++k) {
      const int64_t expert = row[k];
      if (expert < 0) continue;
      if (tokens_per_expert != nullptr) ++tokens_per_expert[expert];
      const int64_t r = expert / local;
      if (last_token[r] != t) {
        last_token[r] = t;
        ++per_rank[r];
        if (in_rank != nullptr) in_rank[r] = 1;
      }
    }
  }
  if (tokens_per_rank != nullptr) std::copy(per_rank.begin(), per_rank.end(), tokens_per_rank);
}

}  // namespace nep
