// Dispatch and combine with DeepEP normal-mode semantics (include/nativeep/c_api.h, "Dispatch and
// combine"), written once against Transport. All three calls are collective over the transport's
// ranks.
#ifndef NATIVEEP_SRC_ENGINE_H_
#define NATIVEEP_SRC_ENGINE_H_

#include <cstdint>

#include "dispatch_handle.h"
#include "transport.h"

namespace nep {

// Validates topk_idx [T, K] (E experts over the transport's W ranks), exchanges counts and each
// sent row's source index and local expert ids, and returns the handle.
DispatchHandle dispatch_notify(Transport& transport, const int64_t* topk_idx, int64_t num_tokens,
                               int32_t num_topk, int32_t num_experts, int32_t expert_alignment);

struct DispatchArgs {
  const float* x = nullptr;  // [T, hidden]
  int64_t hidden = 0;
  int32_t wire = 0;                     // NEP_WIRE_*
  const float* topk_weights = nullptr;  // [T, K] or null
  float* recv_x = nullptr;              // [R, hidden]
  int64_t* recv_topk_idx = nullptr;     // [R, K] or null
  float* recv_topk_weights = nullptr;   // [R, K] or null
  // keep_wire: the output is recv_rows instead of recv_x (FP8 and MXFP8 wires only), each received
  // row's wire bytes [R, recv_row_bytes] unchanged, recv_row_bytes = wire_row_bytes(wire, hidden);
  // recv_x must then be null.
  bool keep_wire = false;
  uint8_t* recv_rows = nullptr;
  int64_t recv_row_bytes = 0;
};

// Moves x to the ranks holding its experts, decoded into recv_x or kept in wire form in recv_rows
// (the choice is each rank's own: the bytes on the wire are the same). Weights move when any rank
// passes topk_weights or recv_topk_weights; then every rank must pass topk_weights if T > 0 and
// recv_topk_weights if R > 0. `handle` may be null (reported as an invalid argument after agreeing
// with the peers).
void dispatch(Transport& transport, const DispatchHandle* handle, const DispatchArgs& args);

struct CombineArgs {
  const float* y = nullptr;  // [R, hidden]
  int64_t hidden = 0;
  int32_t wire = 0;
  const float* y_weights = nullptr;  // [R, K] or null
  float* out = nullptr;              // [T, hidden]
  float* out_weights = nullptr;      // [T, K] or null
};

// out[t] = sum over the ranks r that received t, in rank order, of y_r[slot(t, r)] (fp32);
// tokens sent nowhere get zeros. Weights follow the same rule as in dispatch.
void combine(Transport& transport, const DispatchHandle* handle, const CombineArgs& args);

}  // namespace nep

#endif  // NATIVEEP_SRC_ENGINE_H_
