#include "engine.h"

#include <sys/mman.h>
#include <unistd.h>

#include <algorithm>
#include <cstring>
#include <limits>
#include <vector>

#include "agreement.h"
#include "codec.h"
#include "collectives.h"
#include "error.h"
#include "layout.h"

namespace nep {
namespace {

constexpr int64_t kInt32Max = std::numeric_limits<int32_t>::max();
// Outputs of at least this many bytes are written with streaming (non-temporal) stores where the
// codec has them: far larger than L2, they would only evict the cache, and ordinary stores read
// every destination line before writing it (measured: fp8 decode of a 117 MB [4096, 7168]
// output 25% faster streamed).
constexpr int64_t kStreamOutputBytes = 16 << 20;

// True when the output's pages are already backed by memory (sampled at its first, middle and
// last page). A fresh output is not: each first touch faults and the kernel zero-fills the page
// through the cache, after which streaming stores only add traffic (measured: a cached fp32
// dispatch into a new 117 MB output 25% slower streamed), so streaming is kept for reused outputs.
bool pages_resident(const void* p, int64_t bytes) {
  const uintptr_t page = static_cast<uintptr_t>(sysconf(_SC_PAGESIZE));
  for (int64_t off : {int64_t{0}, bytes / 2, bytes - 1}) {
    const uintptr_t a =
        (reinterpret_cast<uintptr_t>(p) + static_cast<uintptr_t>(off)) & ~(page - 1);
    unsigned char v = 0;
    if (mincore(reinterpret_cast<void*>(a), 1, &v) != 0 || (v & 1u) == 0) return false;
  }
  return true;
}

// Whether a decoder writing `rows` rows of `hidden` floats into out should stream.
bool stream_output(const float* out, int64_t rows, int64_t hidden) {
  const int64_t bytes = rows * hidden * static_cast<int64_t>(sizeof(float));
  return bytes >= kStreamOutputBytes && pages_resident(out, bytes);
}

// Header value slots for dispatch and combine.
enum Slot { kHidden = 0, kWire = 1, kHasIn = 2, kHasOut = 3, kRowsIn = 4, kRowsOut = 5 };

void check_handle(const Transport& t, const DispatchHandle* h) {
  if (h == nullptr) fail_invalid("handle is null");
  if (h->world_size != t.world_size()) {
    fail_invalid("handle world_size = ", h->world_size,
                 " does not match comm world_size = ", t.world_size());
  }
  if (h->rank != t.rank()) {
    fail_invalid("handle was made on rank ", h->rank, " but comm is rank ", t.rank());
  }
}

void check_hidden_wire(int64_t hidden, int32_t wire) {
  if (hidden <= 0) fail_invalid("hidden = ", hidden, " must be > 0");
  if (!wire_is_valid(wire)) {
    fail_invalid("wire = ", wire, " is not a wire format (0 fp32, 1 bf16, 2 fp8, 3 mxfp8)");
  }
}

// A dispatch into wire rows: only the scaled FP8 wires (whose rows a GEMM reads as they are), with
// the caller's row size equal to the wire's.
void check_raw_rows(int32_t wire, int64_t hidden, int64_t row_bytes) {
  if (wire != NEP_WIRE_FP8 && wire != NEP_WIRE_MXFP8) {
    fail_invalid("wire = ", wire, " (", wire_name(static_cast<Wire>(wire)),
                 ") has no wire-row output: only fp8 (2) and mxfp8 (3) rows are kept as they are");
  }
  const int64_t expected = wire_row_bytes(static_cast<Wire>(wire), hidden);
  if (row_bytes != expected) {
    fail_invalid("recv_row_bytes = ", row_bytes, " must equal the ",
                 wire_name(static_cast<Wire>(wire)), " row size of hidden = ", hidden, ", ",
                 expected);
  }
}

// Weights move when any rank passes either weight pointer; then each rank must pass its input
// weights if it has input rows and its output weights if it has output rows.
bool weights_move(const std::vector<CallHeader>& all, int32_t me, const char* in_name,
                  const char* out_name) {
  bool any = false;
  for (const CallHeader& h : all) any = any || h.values[kHasIn] != 0 || h.values[kHasOut] != 0;
  if (!any) return false;
  for (size_t r = 0; r < all.size(); ++r) {
    const CallHeader& h = all[r];
    const char* missing = nullptr;
    int64_t rows = 0;
    if (h.values[kRowsIn] > 0 && h.values[kHasIn] == 0) {
      missing = in_name;
      rows = h.values[kRowsIn];
    } else if (h.values[kRowsOut] > 0 && h.values[kHasOut] == 0) {
      missing = out_name;
      rows = h.values[kRowsOut];
    }
    if (missing == nullptr) continue;
    if (static_cast<int32_t>(r) == me) {
      fail_invalid(missing, " is null but weights are being moved (a rank passed ", in_name, " or ",
                   out_name, ") and this rank has ", rows, " rows for it");
    }
    fail(NEP_ERR_PEER, op_name(all[me].op), ": rank ", r, " passed no ", missing, " for its ", rows,
         " rows while weights are being moved");
  }
  return true;
}

}  // namespace

DispatchHandle dispatch_notify(Transport& transport, const int64_t* topk_idx, int64_t num_tokens,
                               int32_t num_topk, int32_t num_experts, int32_t expert_alignment) {
  const int32_t w = transport.world_size();
  const int32_t me = transport.rank();
  const RoutingShape shape{num_tokens, num_topk, num_experts, w};
  CallHeader mine;
  mine.op = kOpNotify;
  mine.values[0] = num_topk;
  mine.values[1] = num_experts;
  auto all = agree(transport, mine, [&] {
    validate_routing(topk_idx, shape);
    if (expert_alignment < 1)
      fail_invalid("expert_alignment = ", expert_alignment, " must be >= 1");
  });
  require_same(all, 0, "num_topk", me);
  require_same(all, 1, "num_experts", me);

  DispatchHandle h;
  h.rank = me;
  h.world_size = w;
  h.num_tokens = num_tokens;
  h.num_topk = num_topk;
  h.num_experts = num_experts;
  h.num_local_experts = num_experts / w;
  h.expert_alignment = expert_alignment;
  const int64_t t_count = num_tokens;
  const int32_t k_count = num_topk;
  const int32_t local = h.num_local_experts;

  // Layout and send lists (tokens ascending per destination).
  std::vector<int32_t> per_rank(w);
  h.is_token_in_rank.resize(static_cast<size_t>(t_count * w));
  compute_layout(topk_idx, shape, per_rank.data(), nullptr, h.is_token_in_rank.data());
  h.send_offset.assign(w + 1, 0);
  for (int32_t r = 0; r < w; ++r) h.send_offset[r + 1] = h.send_offset[r] + per_rank[r];
  h.send_tokens.resize(static_cast<size_t>(h.send_offset[w]));
  h.first_rank.assign(static_cast<size_t>(t_count), -1);
  {
    std::vector<int64_t> cursor(h.send_offset.begin(), h.send_offset.end() - 1);
    for (int64_t t = 0; t < t_count; ++t) {
      const uint8_t* in_rank = h.is_token_in_rank.data() + t * w;
      for (int32_t r = w - 1; r >= 0; --r) {
        if (in_rank[r] == 0) continue;
        h.send_tokens[cursor[r]++] = static_cast<int32_t>(t);
        h.first_rank[t] = r;
      }
    }
  }

  // Counts matrix C[i][j] = tokens rank i sends to rank j.
  std::vector<int64_t> sends(per_rank.begin(), per_rank.end());
  std::vector<int64_t> counts(static_cast<size_t>(w) * w);
  all_gather_bytes(transport, sends.data(), w * static_cast<int64_t>(sizeof(int64_t)),
                   counts.data(), "dispatch_notify counts");
  h.rank_prefix_matrix.resize(static_cast<size_t>(w) * w);
  for (int32_t j = 0; j < w; ++j) {
    int64_t sum = 0;
    for (int32_t i = 0; i < w; ++i) {
      sum += counts[i * w + j];
      if (sum > kInt32Max) {
        fail(NEP_ERR_CAPACITY, "rank ", j, " would receive ", sum, " tokens, above the limit ",
             kInt32Max);
      }
      h.rank_prefix_matrix[i * w + j] = static_cast<int32_t>(sum);
    }
  }
  h.recv_offset.assign(w + 1, 0);
  for (int32_t s = 0; s < w; ++s) h.recv_offset[s + 1] = h.rank_prefix_matrix[s * w + me];
  h.num_recv = h.recv_offset[w];

  // Per received row: its source token index and its experts as local ids (-1 elsewhere).
  const int64_t row_bytes = 4 * (1 + static_cast<int64_t>(k_count));
  std::vector<int64_t> send_rows(w), recv_rows(w);
  for (int32_t r = 0; r < w; ++r) {
    send_rows[r] = h.sent_to(r);
    recv_rows[r] = h.received_from(r);
  }
  h.recv_src_idx.resize(static_cast<size_t>(h.num_recv));
  h.recv_topk_local.resize(static_cast<size_t>(h.num_recv * k_count));
  auto producer = make_producer([&](int32_t d, int64_t first, int64_t n, uint8_t* buf) {
    const int32_t* tokens = h.send_tokens.data() + h.send_offset[d] + first;
    const int64_t lo = static_cast<int64_t>(d) * local;
    for (int64_t i = 0; i < n; ++i) {
      uint8_t* row = buf + i * row_bytes;
      std::memcpy(row, &tokens[i], 4);
      const int64_t* ids = topk_idx + static_cast<int64_t>(tokens[i]) * k_count;
      for (int32_t k = 0; k < k_count; ++k) {
        const int64_t e = ids[k];
        const int32_t id = (e >= lo && e < lo + local) ? static_cast<int32_t>(e - lo) : -1;
        std::memcpy(row + 4 + 4 * k, &id, 4);
      }
    }
  });
  auto consumer = make_consumer([&](int32_t s, int64_t first, int64_t n, const uint8_t* buf) {
    const int64_t r0 = h.recv_offset[s] + first;
    for (int64_t i = 0; i < n; ++i) {
      const uint8_t* row = buf + i * row_bytes;
      std::memcpy(&h.recv_src_idx[r0 + i], row, 4);
      std::memcpy(&h.recv_topk_local[(r0 + i) * k_count], row + 4,
                  4 * static_cast<size_t>(k_count));
    }
  });
  RowExchange ex;
  ex.row_bytes = row_bytes;
  ex.send_rows = send_rows.data();
  ex.recv_rows = recv_rows.data();
  ex.what = "dispatch_notify metadata";
  ex.any_source_order = true;  // each received row has its own place
  transport.exchange_rows(ex, producer, consumer);

  h.recv_tokens_per_expert.assign(local, 0);
  for (int32_t id : h.recv_topk_local) {
    if (id >= 0) ++h.recv_tokens_per_expert[id];
  }
  h.recv_tokens_per_expert_aligned.resize(local);
  for (int32_t e = 0; e < local; ++e) {
    const int64_t a = expert_alignment;
    const int64_t padded = (h.recv_tokens_per_expert[e] + a - 1) / a * a;
    if (padded > kInt32Max) {
      fail(NEP_ERR_CAPACITY, "local expert ", e, " count ", h.recv_tokens_per_expert[e],
           " padded to expert_alignment = ", a, " exceeds ", kInt32Max);
    }
    h.recv_tokens_per_expert_aligned[e] = static_cast<int32_t>(padded);
  }
  return h;
}

namespace {

// A dispatch or combine as this rank calls it: rows flow from `in` to `out`, each with its
// routing weights when the call moves them (the names are those of the C API's arguments).
struct DataCall {
  int32_t op;
  int64_t hidden;
  int32_t wire;
  const void* in;
  const char* in_name;
  const void* out;
  const char* out_name;
  const void* in_weights;
  const char* in_weights_name;
  const void* out_weights;
  const char* out_weights_name;
  // Dispatch into wire rows: out is [R, raw_row_bytes] bytes (0 = decode into float rows).
  int64_t raw_row_bytes = 0;
  bool raw = false;
  bool both_outputs = false;  // float and wire-row outputs given together (refused)
};

// The rows of a dispatch or combine once every rank agrees on the call.
struct DataRows {
  bool with_weights;   // every rank moves the routing weights with the rows
  int64_t data_bytes;  // a row's encoded data
  int64_t row_bytes;   // data_bytes, then the num_topk weights when they move
};

// Checks this rank's arguments and agrees with every rank on hidden, wire and whether weights
// move (dispatch reads num_tokens rows and writes num_recv, combine the reverse).
DataRows agree_data_call(Transport& transport, const DispatchHandle* handle, const DataCall& c) {
  const int32_t me = transport.rank();
  const int64_t tokens = handle != nullptr ? handle->num_tokens : 0;
  const int64_t recv = handle != nullptr ? handle->num_recv : 0;
  const bool forward = c.op == kOpDispatch;
  CallHeader mine;
  mine.op = c.op;
  mine.values[kHidden] = c.hidden;
  mine.values[kWire] = c.wire;
  mine.values[kHasIn] = c.in_weights != nullptr ? 1 : 0;
  mine.values[kHasOut] = c.out_weights != nullptr ? 1 : 0;
  mine.values[kRowsIn] = forward ? tokens : recv;
  mine.values[kRowsOut] = forward ? recv : tokens;
  auto all = agree(transport, mine, [&] {
    check_handle(transport, handle);
    check_hidden_wire(c.hidden, c.wire);
    if (mine.values[kRowsIn] > 0 && c.in == nullptr) fail_invalid(c.in_name, " is null");
    if (mine.values[kRowsOut] > 0 && c.out == nullptr) fail_invalid(c.out_name, " is null");
    if (c.both_outputs) fail_invalid("recv_x and recv_rows are both given: pass one of them");
    if (c.raw) check_raw_rows(c.wire, c.hidden, c.raw_row_bytes);
  });
  require_same(all, kHidden, "hidden", me);
  require_same(all, kWire, "wire", me);
  DataRows rows;
  rows.with_weights = weights_move(all, me, c.in_weights_name, c.out_weights_name);
  rows.data_bytes = wire_row_bytes(static_cast<Wire>(c.wire), c.hidden);
  rows.row_bytes =
      rows.data_bytes + (rows.with_weights ? 4 * static_cast<int64_t>(handle->num_topk) : 0);
  return rows;
}

}  // namespace

void dispatch(Transport& transport, const DispatchHandle* handle, const DispatchArgs& a) {
  const bool raw = a.keep_wire;
  DataCall call{kOpDispatch,
                a.hidden,
                a.wire,
                a.x,
                "x",
                raw ? static_cast<const void*>(a.recv_rows) : a.recv_x,
                raw ? "recv_rows" : "recv_x",
                a.topk_weights,
                "topk_weights",
                a.recv_topk_weights,
                "recv_topk_weights"};
  call.raw = raw;
  call.raw_row_bytes = a.recv_row_bytes;
  call.both_outputs = raw && a.recv_x != nullptr;
  const DataRows rows = agree_data_call(transport, handle, call);
  const bool with_weights = rows.with_weights;
  const DispatchHandle& h = *handle;
  const int32_t w = h.world_size;
  const int32_t k_count = h.num_topk;
  const int64_t hidden = a.hidden;
  const Wire wire = static_cast<Wire>(a.wire);
  const int64_t x_bytes = rows.data_bytes;
  const int64_t row_bytes = rows.row_bytes;

  if (a.recv_topk_idx != nullptr) {
    for (size_t i = 0; i < h.recv_topk_local.size(); ++i) a.recv_topk_idx[i] = h.recv_topk_local[i];
  }

  std::vector<int64_t> send_rows(w), recv_rows(w);
  for (int32_t r = 0; r < w; ++r) {
    send_rows[r] = h.sent_to(r);
    recv_rows[r] = h.received_from(r);
  }
  auto producer = make_producer([&](int32_t d, int64_t first, int64_t n, uint8_t* buf) {
    const int32_t* tokens = h.send_tokens.data() + h.send_offset[d] + first;
    for (int64_t i = 0; i < n; ++i) {
      const int64_t t = tokens[i];
      uint8_t* row = buf + i * row_bytes;
      encode_row(wire, a.x + t * hidden, hidden, row);
      if (with_weights) {
        std::memcpy(row + x_bytes, a.topk_weights + t * k_count, 4 * static_cast<size_t>(k_count));
      }
    }
  });
  const bool stream = !raw && stream_output(a.recv_x, h.num_recv, hidden);
  auto consumer = make_consumer([&](int32_t s, int64_t first, int64_t n, const uint8_t* buf) {
    const int64_t r0 = h.recv_offset[s] + first;
    for (int64_t i = 0; i < n; ++i) {
      const int64_t r = r0 + i;
      const uint8_t* row = buf + i * row_bytes;
      if (raw) {
        std::memcpy(a.recv_rows + r * x_bytes, row, static_cast<size_t>(x_bytes));
      } else if (stream) {
        decode_row_stream(wire, row, hidden, a.recv_x + r * hidden);
      } else {
        decode_row(wire, row, hidden, a.recv_x + r * hidden);
      }
      if (with_weights) {
        const int32_t* local_ids = h.recv_topk_local.data() + r * k_count;
        float* out_w = a.recv_topk_weights + r * k_count;
        for (int32_t k = 0; k < k_count; ++k) {
          float v;
          std::memcpy(&v, row + x_bytes + 4 * k, 4);
          out_w[k] = local_ids[k] >= 0 ? v : 0.0f;
        }
      }
    }
  });
  RowExchange ex;
  ex.row_bytes = row_bytes;
  ex.send_rows = send_rows.data();
  ex.recv_rows = recv_rows.data();
  ex.what = "dispatch";
  ex.any_source_order = true;  // each received row has its own place
  transport.exchange_rows(ex, producer, consumer);
}

void combine(Transport& transport, const DispatchHandle* handle, const CombineArgs& a) {
  const DataRows rows = agree_data_call(transport, handle,
                                        {kOpCombine, a.hidden, a.wire, a.y, "y", a.out, "out",
                                         a.y_weights, "y_weights", a.out_weights, "out_weights"});
  const bool with_weights = rows.with_weights;
  const DispatchHandle& h = *handle;
  const int32_t w = h.world_size;
  const int32_t k_count = h.num_topk;
  const int64_t hidden = a.hidden;
  const Wire wire = static_cast<Wire>(a.wire);
  const int64_t y_bytes = rows.data_bytes;
  const int64_t row_bytes = rows.row_bytes;

  // Tokens no rank received: exact zeros (the others are fully written below).
  for (int64_t t = 0; t < h.num_tokens; ++t) {
    if (h.first_rank[t] >= 0) continue;
    std::memset(a.out + t * hidden, 0, static_cast<size_t>(hidden) * sizeof(float));
    if (with_weights) std::memset(a.out_weights + t * k_count, 0, 4 * static_cast<size_t>(k_count));
  }

  // Rows go back the way they came: to rank d the rows received from d, in the same order.
  std::vector<int64_t> send_rows(w), recv_rows(w);
  for (int32_t r = 0; r < w; ++r) {
    send_rows[r] = h.received_from(r);
    recv_rows[r] = h.sent_to(r);
  }
  auto producer = make_producer([&](int32_t d, int64_t first, int64_t n, uint8_t* buf) {
    const int64_t r0 = h.recv_offset[d] + first;
    for (int64_t i = 0; i < n; ++i) {
      const int64_t r = r0 + i;
      uint8_t* row = buf + i * row_bytes;
      encode_row(wire, a.y + r * hidden, hidden, row);
      if (with_weights) {
        std::memcpy(row + y_bytes, a.y_weights + r * k_count, 4 * static_cast<size_t>(k_count));
      }
    }
  });
  // Each token's rows are applied in source-rank order: the lowest rank that holds a token stores
  // its row, later ranks add theirs, so each sum runs in rank order. Sources may interleave
  // (source_gated): a chunk of source s is taken only when every lower rank holding its tokens
  // has delivered them. Each source sends its rows in ascending token order, so rank r has
  // delivered token t once the next token it will deliver is above t.
  std::vector<int64_t> consumed(w, 0);  // rows taken per source
  auto next_token = [&](int32_t r) -> int64_t {
    return consumed[r] < recv_rows[r] ? h.send_tokens[h.send_offset[r] + consumed[r]]
                                      : std::numeric_limits<int64_t>::max();
  };
  auto ready = [&](int32_t s, int64_t first, int64_t n) {
    const int32_t* tokens = h.send_tokens.data() + h.send_offset[s] + first;
    for (int32_t r = 0; r < s; ++r) {
      const int64_t next = next_token(r);
      for (int64_t i = 0; i < n; ++i) {
        const int64_t t = tokens[i];
        if (t < next) continue;  // ascending: rank r delivered every token below next
        if (h.is_token_in_rank[t * w + r] != 0) return false;
      }
    }
    return true;
  };
  const bool stream = stream_output(a.out, h.num_tokens, hidden);
  auto consumer = make_gated_consumer([&](int32_t s, int64_t first, int64_t n, const uint8_t* buf) {
    consumed[s] = first + n;
    const int32_t* tokens = h.send_tokens.data() + h.send_offset[s] + first;
    for (int64_t i = 0; i < n; ++i) {
      const int64_t t = tokens[i];
      const uint8_t* row = buf + i * row_bytes;
      const bool store = h.first_rank[t] == s;
      float* out_row = a.out + t * hidden;
      if (store && stream) {
        decode_row_stream(wire, row, hidden, out_row);
      } else if (store) {
        decode_row(wire, row, hidden, out_row);
      } else {
        decode_add_row(wire, row, hidden, out_row);
      }
      if (with_weights) {
        float* out_w = a.out_weights + t * k_count;
        for (int32_t k = 0; k < k_count; ++k) {
          float v;
          std::memcpy(&v, row + y_bytes + 4 * k, 4);
          out_w[k] = store ? v : out_w[k] + v;
        }
      }
    }
  }, ready);
  RowExchange ex;
  ex.row_bytes = row_bytes;
  ex.send_rows = send_rows.data();
  ex.recv_rows = recv_rows.data();
  ex.what = "combine";
  ex.source_gated = true;
  transport.exchange_rows(ex, producer, consumer);
}

}  // namespace nep
