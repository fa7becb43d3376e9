// Low-latency mode (decoding), DeepEP's LL semantics on CPU ranks of one host (cpu-shm) or a world
// of one (loopback). See include/nativeep/c_api.h "Low-latency mode".
//
// Memory. Every rank owns one region that every rank maps (a POSIX shared-memory segment for
// W > 1, exchanged once through the communicator's collectives; anonymous memory for W = 1). The
// region holds a header (doorbell futex, abort flag, the `released` counters) and two buffers
// (double buffering: call n uses buffer n % 2). Each buffer has W flag blocks (one per peer that
// writes into it) and one data area, whose meaning depends on the call:
//   dispatch: W source areas of max_tokens * min(max_topk, El) messages; a message is a 16-byte
//             header (source token, top-k slot) and the row in the sender's wire format. A
//             sender groups its messages to a rank by local expert, tokens ascending.
//   combine:  max_tokens * max_topk rows indexed by (source token, top-k slot) at the source
//             rank; the expert ranks write each row straight into its slot.
// Fixed sizes: nothing depends on the routing, so no counts are exchanged before the data.
//
// Protocol of call n on buffer b = n % 2 (every rank issues the same sequence of calls):
//   send:    for each destination d, wait until d has released buffer b of call n - 2
//            (d.released[b] >= n - 2), write the messages into d's region, then the flag block
//            (kind, wire, row count, per-expert counts) and last the flag's sequence number n
//            (release store); ring d's doorbell if d sleeps.
//   receive: for each source s in rank order wait until flag[b][s] == n (acquire), decode its
//            rows into the caller's output, then publish released[b] = n so senders may reuse b.
// A call returns after its send phase; the receive runs when the caller asks (the hook), so other
// work can run between. At most two calls may await their receive (one per buffer).
//
// Waiting: a short sched_yield phase, then the doorbell futex in slices of poll_ms; every slice
// checks the deadline (timeout_ms per wait), the peers' abort flags and whether the awaited peer
// has exited. A failure after the send began marks this rank's region aborted (peers stop at once
// with NEP_ERR_PEER) and the buffer unusable. Argument errors found before anything is sent leave
// the buffer usable and consume no call number.
#ifndef NATIVEEP_SRC_LL_BUFFER_H_
#define NATIVEEP_SRC_LL_BUFFER_H_

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "peer_watch.h"
#include "transport.h"

namespace nep {

// Largest hidden size a low-latency buffer accepts (row sizes are derived from it in int64;
// anything larger is refused with NEP_ERR_CAPACITY before a size is computed). num_experts is
// bounded by kMaxExperts (layout.h), as in the normal mode.
constexpr int64_t kMaxLlHidden = int64_t{1} << 24;

struct LlConfig {
  int64_t max_tokens = 0;      // max_tokens_per_rank: tokens one rank passes to one dispatch
  int64_t hidden = 0;          // H
  int32_t num_experts = 0;     // E, a multiple of W
  int32_t max_topk = 0;        // largest K a call may pass
  int32_t max_wire = 1;        // widest wire format (NEP_WIRE_*): sizes the row slots
  int64_t timeout_ms = 30000;  // per wait
  int64_t poll_ms = 20;        // longest futex sleep between liveness checks
  int64_t spin_us = 50;        // sched_yield phase before sleeping
};

enum class LlKind : int32_t { kDispatch = 1, kCombine = 2 };

enum class LlOpState : int32_t { kPending = 0, kReceived = 1, kAbandoned = 2, kFailed = 3 };

// One issued call whose receive is outstanding (or done).
struct LlOp {
  LlKind kind = LlKind::kDispatch;
  LlOpState state = LlOpState::kPending;
  uint64_t buffer_id = 0;
  uint64_t seq = 0;  // call number, 1-based, the same on every rank
  int32_t slot = 0;  // buffer seq % 2
  int32_t wire = 0;
  int32_t flags = 0;
  int64_t num_tokens = 0;
  int32_t num_topk = 0;
  std::vector<int64_t> topk_idx;    // [T, K] this rank's routing (copied at send)
  std::vector<float> topk_weights;  // [T, K] (combine)
  int64_t rows_sent = 0;            // messages this rank sent (all destinations)
  int64_t bytes_sent = 0;           // their bytes, headers included
};

// Routing of one low-latency dispatch as seen by the receiving (expert) rank, plus the source
// side's routing that combine checks against.
struct LlHandle {
  uint64_t buffer_id = 0;
  int32_t rank = 0;
  int32_t world_size = 1;
  int32_t num_experts = 0;
  int32_t num_local_experts = 0;
  int64_t max_tokens = 0;
  int64_t hidden = 0;
  int64_t num_tokens = 0;             // T this rank dispatched
  int32_t num_topk = 0;               // K this rank dispatched
  std::vector<int64_t> topk_idx;      // [T, K] this rank's dispatch routing
  std::vector<int32_t> recv_count;    // [El]
  std::vector<int32_t> src_token;     // [El, W * max_tokens]; -1 past recv_count
  std::vector<int32_t> src_slot;      // [El, W * max_tokens] top-k slot k of the row at its source
  std::vector<int64_t> layout_range;  // [El, W] (begin << 32) | count of rows from each source

  int64_t rows_per_expert() const { return static_cast<int64_t>(world_size) * max_tokens; }
};

class LlBuffer {
 public:
  // Collective over the transport's ranks (all on this host): agrees on the configuration,
  // creates and maps the regions. The transport is used only here.
  LlBuffer(Transport& transport, const LlConfig& config);
  ~LlBuffer();
  LlBuffer(const LlBuffer&) = delete;
  LlBuffer& operator=(const LlBuffer&) = delete;

  int32_t rank() const { return rank_; }
  int32_t world_size() const { return world_; }
  int32_t num_local_experts() const { return local_; }
  const LlConfig& config() const { return config_; }
  uint64_t id() const { return id_; }
  int64_t region_bytes() const { return region_bytes_; }  // memory per rank (shared for W > 1)
  int64_t slot_row_bytes() const { return slot_row_bytes_; }
  // Names of every rank's segment (unlinked once the constructor returns); empty for W = 1.
  const std::vector<std::string>& segment_names() const { return names_; }

  // Send phase of a dispatch of x [T, hidden] routed by topk_idx [T, K] (in [-1, E)).
  LlOp dispatch_send(const float* x, int64_t num_tokens, int64_t hidden, const int64_t* topk_idx,
                     int32_t num_topk, int32_t wire, int32_t flags);
  // Receive phase: waits for every source, writes recv_x [El, W * max_tokens, hidden] (rows
  // past recv_count untouched), recv_count [El] and, where not null, recv_src_info
  // [El, W * max_tokens] (source token, -1 past the count) and recv_layout_range [El, W].
  LlHandle dispatch_recv(LlOp& op, float* recv_x, int32_t* recv_count, int32_t* recv_src_info,
                         int64_t* recv_layout_range);

  // Send phase of a combine of y [El, W * max_tokens, hidden] along handle's routing; topk_idx
  // must equal the dispatched one; topk_weights [T, K] weight the sum at the source.
  LlOp combine_send(const LlHandle& handle, const float* y, int64_t hidden, const int64_t* topk_idx,
                    const float* topk_weights, int64_t num_tokens, int32_t num_topk, int32_t wire);
  // Receive phase: out [T, hidden] = sum over unmasked slots k of w[t][k] * row(t, k), fp32,
  // in slot order; zeros for tokens routed nowhere.
  void combine_recv(LlOp& op, float* out);

  // True when the receive of op would not wait (every source has published).
  bool ready(const LlOp& op);
  // Gives up the receive of a pending op: releases its buffer for the peers. No-op otherwise.
  void abandon(LlOp& op) noexcept;

  // Test hook: fills this rank's data areas (both buffers) with 0xFF bytes. Call only while no
  // peer can be writing into them (e.g. between barriers).
  void poison_data();

  struct Header;
  struct Flag;

 private:
  void check_usable() const;
  void check_op(const LlOp& op, LlKind kind) const;
  void check_wire(int32_t wire, int32_t flags) const;
  // Reserves the next call number; fails when its buffer still awaits a receive.
  void begin_call(LlOp& op, LlKind kind, int32_t wire, int32_t flags);

  uint8_t* region(int32_t r) const { return bases_[r]; }
  Header* header(int32_t r) const;
  Flag* flag(int32_t owner, int32_t slot, int32_t src) const;
  int32_t* flag_counts(Flag* f) const;
  uint8_t* data(int32_t owner, int32_t slot) const;
  uint8_t* dispatch_msg(int32_t owner, int32_t slot, int32_t src, int64_t index) const;
  uint8_t* combine_row(int32_t owner, int32_t slot, int64_t token, int32_t k) const;

  void wait_released(int32_t dest, int32_t slot, uint64_t seq, const char* what);
  void wait_flag(int32_t src, int32_t slot, uint64_t seq, const char* what);
  template <class Ready, class Describe>
  void wait_until(int32_t peer, Ready&& ready, Describe&& describe, const char* what);
  void check_aborted(const char* what);  // fails when any peer has aborted
  void notify(int32_t peer);
  void release(const LlOp& op);
  [[noreturn]] void fail_broken(int32_t code, const std::string& message);
  void mark_broken(const std::string& message) noexcept;

  class Memory;

  LlConfig config_;
  int32_t rank_ = 0;
  int32_t world_ = 1;
  int32_t local_ = 0;
  uint64_t id_ = 0;
  int64_t slot_row_bytes_ = 0;  // wire_row_bytes(max_wire, hidden)
  int64_t msg_stride_ = 0;      // dispatch message: 16-byte header + row, 64-aligned
  int64_t row_stride_ = 0;      // combine row, 64-aligned
  int64_t src_msgs_ = 0;        // dispatch messages per source area
  int64_t flag_stride_ = 0;
  int64_t flags_bytes_ = 0;  // per buffer
  int64_t data_bytes_ = 0;   // per buffer
  int64_t region_bytes_ = 0;
  std::vector<std::unique_ptr<Memory>> memory_;  // [W] (own + mapped peers) or [1]
  std::vector<uint8_t*> bases_;                  // [W]
  std::vector<std::string> names_;
  std::vector<std::unique_ptr<PeerWatch>> watch_;  // [W]; null for this rank and same-process peers
  uint64_t seq_ = 0;                               // last call number issued
  uint64_t pending_[2] = {0, 0};  // call awaiting its receive per buffer, 0 if none
  LlKind pending_kind_[2] = {LlKind::kDispatch, LlKind::kDispatch};
  bool broken_ = false;
  std::string broken_message_;
  // Scratch reused across calls.
  std::vector<uint8_t> stage_;      // encoded rows of one dispatch [T, row bytes]
  std::vector<int32_t> counts_;     // [W, El]
  std::vector<int32_t> cursor_;     // [El]
  std::vector<float> row_scratch_;  // [hidden]
};

}  // namespace nep

#endif  // NATIVEEP_SRC_LL_BUFFER_H_
