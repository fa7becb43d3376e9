// The routing of one dispatch, computed by the notify step and reused by dispatch (fresh or
// cached) and combine without recomputing the layout.
#ifndef NATIVEEP_SRC_DISPATCH_HANDLE_H_
#define NATIVEEP_SRC_DISPATCH_HANDLE_H_

#include <cstdint>
#include <vector>

namespace nep {

struct DispatchHandle {
  int32_t rank = 0;
  int32_t world_size = 1;
  int64_t num_tokens = 0;         // T on this rank
  int64_t num_recv = 0;           // R received by this rank
  int32_t num_topk = 0;           // K
  int32_t num_experts = 0;        // E
  int32_t num_local_experts = 0;  // E / W
  int32_t expert_alignment = 1;

  // rank_prefix_matrix [W, W]: [i][j] = tokens sent by ranks 0..i to rank j.
  std::vector<int32_t> rank_prefix_matrix;
  // Rows received from source s occupy [recv_offset[s], recv_offset[s + 1]) of recv_x.
  std::vector<int64_t> recv_offset;  // [W + 1]
  // Tokens sent to rank d, ascending: send_tokens[send_offset[d] .. send_offset[d + 1]).
  std::vector<int64_t> send_offset;  // [W + 1]
  std::vector<int32_t> send_tokens;
  std::vector<uint8_t> is_token_in_rank;  // [T, W]
  // Lowest rank that received token t, or -1: combine stores that rank's row and adds the rest.
  std::vector<int32_t> first_rank;                      // [T]
  std::vector<int32_t> recv_src_idx;                    // [R]
  std::vector<int32_t> recv_topk_local;                 // [R, K] local expert id in [0, El) or -1
  std::vector<int32_t> recv_tokens_per_expert;          // [El] raw
  std::vector<int32_t> recv_tokens_per_expert_aligned;  // [El] padded to expert_alignment

  int64_t sent_to(int32_t dest) const { return send_offset[dest + 1] - send_offset[dest]; }
  int64_t received_from(int32_t src) const { return recv_offset[src + 1] - recv_offset[src]; }
};

}  // namespace nep

#endif  // NATIVEEP_SRC_DISPATCH_HANDLE_H_
