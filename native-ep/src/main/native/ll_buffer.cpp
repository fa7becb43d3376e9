#include "ll_buffer.h"

#include <sched.h>
#include <sys/mman.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cmath>
#include <cstring>
#include <functional>
#include <limits>
#include <new>
#include <optional>
#include <sstream>

#include "agreement.h"
#include "codec.h"
#include "collectives.h"
#include "error.h"
#include "layout.h"
#include "ll_codec.h"
#include "shm_segment.h"
#include "sys_util.h"

namespace nep {
namespace {

constexpr uint64_t kLlMagic = 0x313030304c4c504eull;  // "NPLL0001"
constexpr int64_t kHeaderBytes = 4096;
constexpr int64_t kMsgHeaderBytes = 16;
constexpr int64_t kFlagBytes = 64;  // the Flag struct; the per-expert counts follow it
constexpr size_t kReasonBytes = 1024;
constexpr int64_t kMaxRegionBytes = int64_t{1} << 44;  // 16 TiB: anything larger is a mistake

int64_t round_up(int64_t v, int64_t a) { return (v + a - 1) / a * a; }

// a * b, or NEP_ERR_CAPACITY naming `what` when it leaves [0, kMaxRegionBytes].
int64_t mul_checked(int64_t a, int64_t b, const char* what) {
  int64_t r = 0;
  if (__builtin_mul_overflow(a, b, &r) || r > kMaxRegionBytes) {
    fail(NEP_ERR_CAPACITY, "the low-latency buffer's ", what, " (", a, " x ", b,
         " bytes) exceeds the limit of ", kMaxRegionBytes, " bytes");
  }
  return r;
}

const char* kind_name(LlKind k) { return k == LlKind::kDispatch ? "dispatch" : "combine"; }

// One message header in a dispatch source area.
struct MsgHeader {
  int32_t token;
  int32_t slot;
  int32_t reserved[2];
};
static_assert(sizeof(MsgHeader) == kMsgHeaderBytes, "message header is 16 bytes");

// What every rank publishes during set-up.
struct SetupRecord {
  int32_t status;
  int32_t pid;
  char name[64];
  char message[184];
};
static_assert(sizeof(SetupRecord) == 256, "set-up record is 256 bytes");

void copy_text(char* dst, size_t cap, const std::string& s) {
  const size_t n = std::min(s.size(), cap - 1);
  std::memcpy(dst, s.data(), n);
  dst[n] = '\0';
}

uint64_t random_id() {
  const std::string hex = random_hex(8);
  uint64_t v = 0;
  for (char c : hex) v = v * 16 + static_cast<uint64_t>(c <= '9' ? c - '0' : c - 'a' + 10);
  return v;
}

}  // namespace

// ---- Shared structures --------------------------------------------------------------------------

struct LlBuffer::Header {
  uint64_t magic;
  int32_t rank;
  int32_t world;
  int32_t pid;
  int32_t num_experts;
  int32_t max_topk;
  int32_t reserved;
  int64_t max_tokens;
  int64_t hidden;
  int64_t slot_row_bytes;
  int64_t region_bytes;
  alignas(64) std::atomic<uint32_t> doorbell;  // peers ring it after publishing a flag or release
  alignas(64) std::atomic<uint32_t> sleeping;  // 1 while the owner may sleep on the doorbell
  alignas(64) std::atomic<uint32_t> aborted;
  char reason[kReasonBytes];
  alignas(64) std::atomic<uint64_t> released[2];  // last call whose receive finished, per buffer
};
static_assert(sizeof(LlBuffer::Header) <= kHeaderBytes, "header must fit its page");
static_assert(std::atomic<uint64_t>::is_always_lock_free, "shared atomics must be lock-free");
static_assert(std::atomic<uint32_t>::is_always_lock_free, "shared atomics must be lock-free");

// Written by a sender into the receiver's region; `seq` last, with release order.
struct LlBuffer::Flag {
  std::atomic<uint64_t> seq;
  int32_t kind;
  int32_t wire;
  int32_t flags;
  int32_t reserved;
  int64_t rows;    // messages (dispatch) or rows (combine) the sender wrote for this call
  int64_t tokens;  // the sender's T (diagnostics)
};
static_assert(sizeof(LlBuffer::Flag) <= kFlagBytes, "flag must fit its block");

// A rank's region: a shared-memory segment (W > 1) or anonymous memory (W = 1).
class LlBuffer::Memory {
 public:
  explicit Memory(ShmSegment segment) : segment_(std::move(segment)) {}
  Memory(uint8_t* anon, size_t bytes) : anon_(anon), bytes_(bytes) {}
  ~Memory() {
    if (anon_ != nullptr) munmap(anon_, bytes_);
  }
  Memory(const Memory&) = delete;
  Memory& operator=(const Memory&) = delete;

  static std::unique_ptr<Memory> anonymous(size_t bytes) {
    void* p = mmap(nullptr, bytes, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    if (p == MAP_FAILED) {
      fail(NEP_ERR_CAPACITY, "cannot map ", bytes,
           " bytes for the low-latency buffer: ", errno_text(errno));
    }
    return std::make_unique<Memory>(static_cast<uint8_t*>(p), bytes);
  }

  uint8_t* data() const { return anon_ != nullptr ? anon_ : segment_.data(); }
  ShmSegment& segment() { return segment_; }

 private:
  ShmSegment segment_;
  uint8_t* anon_ = nullptr;
  size_t bytes_ = 0;
};

// ---- Set-up -------------------------------------------------------------------------------------

LlBuffer::LlBuffer(Transport& transport, const LlConfig& config)
    : config_(config), rank_(transport.rank()), world_(transport.world_size()) {
  CallHeader mine;
  mine.op = kOpLlCreate;
  mine.values[0] = config.max_tokens;
  mine.values[1] = config.hidden;
  mine.values[2] = config.num_experts;
  mine.values[3] = config.max_topk;
  mine.values[4] = config.max_wire;
  // Validates the configuration and derives the sizes (run inside agree(), so a rank with bad
  // values still takes part and every rank fails at once).
  auto sizes = [&] {
    const LlConfig& c = config_;
    if (c.max_tokens < 1) fail_invalid("max_tokens_per_rank = ", c.max_tokens, " must be >= 1");
    int64_t rows_per_expert = 0;
    if (__builtin_mul_overflow(c.max_tokens, static_cast<int64_t>(world_), &rows_per_expert) ||
        rows_per_expert > std::numeric_limits<int32_t>::max()) {
      fail(NEP_ERR_CAPACITY, "max_tokens_per_rank = ", c.max_tokens, " times world_size = ", world_,
           " exceeds the limit ", std::numeric_limits<int32_t>::max(), " rows per local expert");
    }
    if (c.hidden < 1) fail_invalid("hidden = ", c.hidden, " must be >= 1");
    // Checked before any size is derived from them: wire_row_bytes(hidden) and the per-expert
    // tables would overflow or allocate gigabytes first.
    if (c.hidden > kMaxLlHidden) {
      fail(NEP_ERR_CAPACITY, "hidden = ", c.hidden, " exceeds the limit ", kMaxLlHidden,
           " of the low-latency buffer");
    }
    if (c.num_experts < 1) fail_invalid("num_experts = ", c.num_experts, " must be >= 1");
    if (c.num_experts > kMaxExperts) {
      fail(NEP_ERR_CAPACITY, "num_experts = ", c.num_experts, " exceeds the limit ", kMaxExperts,
           " of the low-latency buffer");
    }
    if (c.num_experts % world_ != 0) {
      fail_invalid("num_experts = ", c.num_experts, " is not a multiple of world_size = ", world_);
    }
    if (c.max_topk < 1 || c.max_topk > c.num_experts) {
      fail_invalid("max_topk = ", c.max_topk, " is outside [1, num_experts = ", c.num_experts, "]");
    }
    if (!wire_is_valid(c.max_wire)) {
      fail_invalid("max_wire = ", c.max_wire,
                   " is not a wire format (0 fp32, 1 bf16, 2 fp8, 3 mxfp8)");
    }
    if (c.timeout_ms <= 0) fail_invalid("timeout_ms = ", c.timeout_ms, " must be > 0");
    if (c.poll_ms <= 0) fail_invalid("poll_ms = ", c.poll_ms, " must be > 0");
    if (c.spin_us < 0) fail_invalid("spin_us = ", c.spin_us, " must be >= 0");
    local_ = c.num_experts / world_;
    slot_row_bytes_ = wire_row_bytes(static_cast<Wire>(c.max_wire), c.hidden);
    msg_stride_ = round_up(kMsgHeaderBytes + slot_row_bytes_, 64);
    row_stride_ = round_up(slot_row_bytes_, 64);
    src_msgs_ = mul_checked(c.max_tokens, std::min(c.max_topk, local_), "messages per source");
    flag_stride_ = round_up(kFlagBytes + 4 * static_cast<int64_t>(local_), 64);
    flags_bytes_ = round_up(mul_checked(world_, flag_stride_, "flag blocks"), 4096);
    const int64_t dispatch_bytes =
        mul_checked(world_, mul_checked(src_msgs_, msg_stride_, "dispatch area"), "dispatch area");
    const int64_t combine_bytes = mul_checked(mul_checked(c.max_tokens, c.max_topk, "combine rows"),
                                              row_stride_, "combine area");
    data_bytes_ = round_up(std::max(dispatch_bytes, combine_bytes), 4096);
    region_bytes_ = kHeaderBytes + 2 * (flags_bytes_ + data_bytes_);
    if (region_bytes_ > kMaxRegionBytes) {
      fail(NEP_ERR_CAPACITY, "the low-latency buffer needs ", region_bytes_,
           " bytes per rank, above the limit ", kMaxRegionBytes);
    }
  };
  auto all = agree(transport, mine, sizes);
  const char* names[5] = {"max_tokens_per_rank", "hidden", "num_experts", "max_topk", "max_wire"};
  for (int i = 0; i < 5; ++i) require_same(all, i, names[i], rank_);
  id_ = random_id();
  row_scratch_.resize(static_cast<size_t>(config_.hidden));
  counts_.resize(static_cast<size_t>(world_) * local_);
  cursor_.resize(static_cast<size_t>(local_));
  watch_.resize(static_cast<size_t>(world_));
  bases_.assign(static_cast<size_t>(world_), nullptr);

  auto init_own = [&](uint8_t* base) {
    Header* h = new (base) Header{};
    h->magic = kLlMagic;
    h->rank = rank_;
    h->world = world_;
    h->pid = static_cast<int32_t>(getpid());
    h->num_experts = config_.num_experts;
    h->max_topk = config_.max_topk;
    h->max_tokens = config_.max_tokens;
    h->hidden = config_.hidden;
    h->slot_row_bytes = slot_row_bytes_;
    h->region_bytes = region_bytes_;
    for (int32_t slot = 0; slot < 2; ++slot) {
      for (int32_t s = 0; s < world_; ++s) {
        new (base + kHeaderBytes + slot * (flags_bytes_ + data_bytes_) + s * flag_stride_) Flag{};
      }
    }
  };

  if (world_ == 1) {
    memory_.push_back(Memory::anonymous(static_cast<size_t>(region_bytes_)));
    bases_[0] = memory_[0]->data();
    init_own(bases_[0]);
    return;
  }

  // W > 1: round 1 creates and publishes every region, round 2 maps the peers'; each round
  // all-gathers a status so a rank that fails makes the others fail at once, naming it.
  memory_.resize(static_cast<size_t>(world_));
  names_.assign(static_cast<size_t>(world_), "");
  std::vector<SetupRecord> records(static_cast<size_t>(world_));
  auto unlink_all = [&] {
    for (const std::string& n : names_) {
      if (!n.empty()) ShmSegment::unlink_by_name(n);
    }
  };
  auto round = [&](const char* what, const std::function<void()>& body) {
    SetupRecord rec{};
    rec.pid = static_cast<int32_t>(getpid());
    std::optional<Error> local;
    try {
      body();
      if (memory_[rank_]) copy_text(rec.name, sizeof rec.name, memory_[rank_]->segment().name());
    } catch (const Error& e) {
      local = e;
      rec.status = e.code();
      copy_text(rec.message, sizeof rec.message, e.what());
    } catch (const std::bad_alloc&) {
      local = Error(NEP_ERR_CAPACITY, "out of memory");
      rec.status = NEP_ERR_CAPACITY;
    } catch (const std::exception& e) {
      local = Error(NEP_ERR_INTERNAL, std::string("internal error: ") + e.what());
      rec.status = NEP_ERR_INTERNAL;
      copy_text(rec.message, sizeof rec.message, e.what());
    }
    all_gather_bytes(transport, &rec, sizeof rec, records.data(), what);
    if (local) throw *local;
    for (int32_t r = 0; r < world_; ++r) {
      if (records[r].status != NEP_OK) {
        fail(NEP_ERR_PEER, "nep_ll_buffer_create: rank ", r, " failed (status ", records[r].status,
             "): ", records[r].message, "; rank ", rank_, " stops too");
      }
    }
  };
  try {
    round("low-latency buffer set-up (create)", [&] {
      memory_[rank_] =
          std::make_unique<Memory>(ShmSegment::create(static_cast<size_t>(region_bytes_)));
      bases_[rank_] = memory_[rank_]->data();
      init_own(bases_[rank_]);
    });
    for (int32_t r = 0; r < world_; ++r) names_[r] = std::string(records[r].name);
    round("low-latency buffer set-up (map)", [&] {
      for (int32_t p = 0; p < world_; ++p) {
        if (p == rank_) continue;
        memory_[p] = std::make_unique<Memory>(
            ShmSegment::open(names_[p], static_cast<size_t>(region_bytes_)));
        bases_[p] = memory_[p]->data();
        const Header* ph = header(p);
        if (ph->magic != kLlMagic || ph->rank != p || ph->world != world_ ||
            ph->num_experts != config_.num_experts || ph->max_topk != config_.max_topk ||
            ph->max_tokens != config_.max_tokens || ph->hidden != config_.hidden ||
            ph->slot_row_bytes != slot_row_bytes_ || ph->region_bytes != region_bytes_) {
          fail(NEP_ERR_PEER, "rank ", rank_, ": the low-latency region of rank ", p, " (",
               names_[p], ") does not match this rank's configuration");
        }
        if (records[p].pid != static_cast<int32_t>(getpid())) {
          watch_[p] = std::make_unique<PeerWatch>();
          watch_[p]->watch(p, records[p].pid);
        }
      }
    });
  } catch (...) {
    unlink_all();
    throw;
  }
  unlink_all();
  memory_[rank_]->segment().unlink_name();
}

LlBuffer::~LlBuffer() = default;

// ---- Addresses ----------------------------------------------------------------------------------

LlBuffer::Header* LlBuffer::header(int32_t r) const { return reinterpret_cast<Header*>(bases_[r]); }

LlBuffer::Flag* LlBuffer::flag(int32_t owner, int32_t slot, int32_t src) const {
  return reinterpret_cast<Flag*>(bases_[owner] + kHeaderBytes +
                                 slot * (flags_bytes_ + data_bytes_) + src * flag_stride_);
}

int32_t* LlBuffer::flag_counts(Flag* f) const {
  return reinterpret_cast<int32_t*>(reinterpret_cast<uint8_t*>(f) + kFlagBytes);
}

uint8_t* LlBuffer::data(int32_t owner, int32_t slot) const {
  return bases_[owner] + kHeaderBytes + slot * (flags_bytes_ + data_bytes_) + flags_bytes_;
}

uint8_t* LlBuffer::dispatch_msg(int32_t owner, int32_t slot, int32_t src, int64_t index) const {
  return data(owner, slot) + (src * src_msgs_ + index) * msg_stride_;
}

uint8_t* LlBuffer::combine_row(int32_t owner, int32_t slot, int64_t token, int32_t k) const {
  return data(owner, slot) + (token * config_.max_topk + k) * row_stride_;
}

void LlBuffer::poison_data() {
  for (int32_t slot = 0; slot < 2; ++slot) {
    std::memset(data(rank_, slot), 0xFF, static_cast<size_t>(data_bytes_));
  }
}

// ---- Waiting, failures --------------------------------------------------------------------------

void LlBuffer::notify(int32_t peer) {
  std::atomic_thread_fence(std::memory_order_seq_cst);
  Header* h = header(peer);
  if (h->sleeping.load(std::memory_order_relaxed) != 0) {
    h->doorbell.fetch_add(1, std::memory_order_release);
    futex_wake_all(&h->doorbell);
  }
}

void LlBuffer::mark_broken(const std::string& message) noexcept {
  if (broken_) return;
  broken_ = true;
  try {
    broken_message_ = message;
  } catch (...) {
  }
  Header* h = header(rank_);
  copy_text(h->reason, kReasonBytes, message);
  h->aborted.store(1, std::memory_order_release);
  for (int32_t p = 0; p < world_; ++p) {
    if (p == rank_) continue;
    Header* ph = header(p);
    ph->doorbell.fetch_add(1, std::memory_order_release);
    futex_wake_all(&ph->doorbell);
  }
}

void LlBuffer::fail_broken(int32_t code, const std::string& message) {
  mark_broken(message);
  throw Error(code, message);
}

void LlBuffer::check_usable() const {
  if (broken_) {
    fail(NEP_ERR_PEER, "rank ", rank_,
         ": the low-latency buffer is unusable after an earlier failure: ", broken_message_);
  }
}

void LlBuffer::check_aborted(const char* what) {
  for (int32_t q = 0; q < world_; ++q) {
    if (q == rank_) continue;
    const Header* h = header(q);
    if (h->aborted.load(std::memory_order_acquire) != 0) {
      fail_broken(NEP_ERR_PEER, "rank " + std::to_string(rank_) + ": " + what +
                                    " stopped because rank " + std::to_string(q) +
                                    " failed: " + std::string(h->reason));
    }
  }
}

template <class Ready, class Describe>
void LlBuffer::wait_until(int32_t peer, Ready&& ready, Describe&& describe, const char* what) {
  if (ready()) return;
  const int64_t deadline = monotonic_ms() + config_.timeout_ms;
  if (config_.spin_us > 0) {
    const auto spin_end =
        std::chrono::steady_clock::now() + std::chrono::microseconds(config_.spin_us);
    do {
      sched_yield();
      if (ready()) return;
    } while (std::chrono::steady_clock::now() < spin_end);
  }
  Header* own = header(rank_);
  own->sleeping.store(1, std::memory_order_seq_cst);
  std::atomic_thread_fence(std::memory_order_seq_cst);
  struct Awake {
    Header* h;
    ~Awake() { h->sleeping.store(0, std::memory_order_relaxed); }
  } awake{own};
  for (;;) {
    const uint32_t bell = own->doorbell.load(std::memory_order_seq_cst);
    if (ready()) return;
    check_aborted(what);
    if (peer != rank_ && watch_[peer] && watch_[peer]->first_dead() == peer && !ready()) {
      std::ostringstream os;
      os << "rank " << rank_ << ": peer rank " << peer << " (pid " << watch_[peer]->pid_of(peer)
         << ") exited during " << what << "; this rank was " << describe();
      fail_broken(NEP_ERR_PEER, os.str());
    }
    const int64_t now = monotonic_ms();
    if (now >= deadline) {
      std::ostringstream os;
      os << "rank " << rank_ << " timed out after " << config_.timeout_ms << " ms in " << what
         << ": " << describe();
      fail_broken(NEP_ERR_TIMEOUT, os.str());
    }
    futex_wait(&own->doorbell, bell, std::min(config_.poll_ms, deadline - now));
  }
}

void LlBuffer::wait_released(int32_t dest, int32_t slot, uint64_t seq, const char* what) {
  if (seq <= 2) return;
  const uint64_t need = seq - 2;
  std::atomic<uint64_t>& released = header(dest)->released[slot];
  wait_until(dest, [&] { return released.load(std::memory_order_acquire) >= need; }, [&] {
    std::ostringstream os;
    os << "waiting for rank " << dest << " to release buffer " << slot << " (counter released["
       << slot << "] of rank " << dest << " = " << released.load() << ", needs >= " << need
       << ": rank " << dest << " has not completed the receive of call " << need << ")";
    return os.str();
  }, what);
}

void LlBuffer::wait_flag(int32_t src, int32_t slot, uint64_t seq, const char* what) {
  Flag* f = flag(rank_, slot, src);
  wait_until(src, [&] {
    const uint64_t v = f->seq.load(std::memory_order_acquire);
    if (v > seq) {
      fail_broken(NEP_ERR_PEER, "rank " + std::to_string(rank_) + ": " + what + " (call " +
                                    std::to_string(seq) + ") found call " + std::to_string(v) +
                                    " from rank " + std::to_string(src) +
                                    ": the ranks disagree on the sequence of low-latency calls");
    }
    return v == seq;
  }, [&] {
    std::ostringstream os;
    os << "waiting for rank " << src << "'s data of call " << seq << " (counter flag[" << src
       << "] of buffer " << slot << " on rank " << rank_ << " = " << f->seq.load() << ", expected "
       << seq << ")";
    return os.str();
  }, what);
}

void LlBuffer::release(const LlOp& op) {
  header(rank_)->released[op.slot].store(op.seq, std::memory_order_release);
  pending_[op.slot] = 0;
  for (int32_t p = 0; p < world_; ++p) {
    if (p != rank_) notify(p);
  }
}

// ---- Calls --------------------------------------------------------------------------------------

void LlBuffer::check_wire(int32_t wire, int32_t flags) const {
  if (!wire_is_valid(wire)) {
    fail_invalid("wire = ", wire, " is not a wire format (0 fp32, 1 bf16, 2 fp8, 3 mxfp8)");
  }
  const int64_t bytes = wire_row_bytes(static_cast<Wire>(wire), config_.hidden);
  if (bytes > slot_row_bytes_) {
    fail(NEP_ERR_CAPACITY, "wire ", wire_name(static_cast<Wire>(wire)), " needs ", bytes,
         " bytes per row of ", config_.hidden,
         " channels but this low-latency buffer was created for ",
         wire_name(static_cast<Wire>(config_.max_wire)), " (", slot_row_bytes_,
         " bytes per row); create it with a wider max_wire");
  }
  if ((flags & ~1) != 0)
    fail_invalid("flags = ", flags, " has unknown bits (known: 1 round_scale)");
  if ((flags & 1) != 0 && wire != static_cast<int32_t>(Wire::kFp8)) {
    fail_invalid("flags round_scale (power-of-two scales) needs wire fp8, not ",
                 wire_name(static_cast<Wire>(wire)));
  }
}

void LlBuffer::check_op(const LlOp& op, LlKind kind) const {
  if (op.buffer_id != id_) fail_invalid("the operation was issued by another low-latency buffer");
  if (op.kind != kind) {
    fail_invalid("the operation is a ", kind_name(op.kind), ", not a ", kind_name(kind),
                 ": complete it with the matching receive");
  }
  switch (op.state) {
    case LlOpState::kPending: break;
    case LlOpState::kReceived:
      fail_invalid("the receive of call ", op.seq, " was already completed");
    case LlOpState::kAbandoned: fail_invalid("call ", op.seq, " was abandoned");
    case LlOpState::kFailed: fail(NEP_ERR_PEER, "call ", op.seq, " failed earlier");
  }
  check_usable();
}

void LlBuffer::begin_call(LlOp& op, LlKind kind, int32_t wire, int32_t flags) {
  const uint64_t seq = seq_ + 1;
  const int32_t slot = static_cast<int32_t>(seq % 2);
  if (pending_[slot] != 0) {
    fail_invalid("low-latency call ", pending_[slot], " (a ", kind_name(pending_kind_[slot]),
                 ") still awaits its receive on buffer ", slot,
                 ": at most two calls may await their receive (double buffering); complete it"
                 " (its hook) or destroy it before issuing call ",
                 seq);
  }
  seq_ = seq;
  pending_[slot] = seq;
  pending_kind_[slot] = kind;
  op.kind = kind;
  op.state = LlOpState::kPending;
  op.buffer_id = id_;
  op.seq = seq;
  op.slot = slot;
  op.wire = wire;
  op.flags = flags;
}

LlOp LlBuffer::dispatch_send(const float* x, int64_t num_tokens, int64_t hidden,
                             const int64_t* topk_idx, int32_t num_topk, int32_t wire,
                             int32_t flags) {
  check_usable();
  check_wire(wire, flags);
  if (hidden != config_.hidden) {
    fail_invalid("hidden = ", hidden,
                 " differs from the low-latency buffer's hidden = ", config_.hidden);
  }
  if (num_tokens < 0) fail_invalid("num_tokens = ", num_tokens, " must be >= 0");
  if (num_tokens > config_.max_tokens) {
    fail(NEP_ERR_CAPACITY, "x has num_tokens = ", num_tokens,
         " tokens, more than max_tokens_per_rank = ", config_.max_tokens,
         " of this low-latency buffer");
  }
  if (num_topk < 1) fail_invalid("num_topk = ", num_topk, " must be >= 1");
  if (num_topk > config_.max_topk) {
    fail(NEP_ERR_CAPACITY, "num_topk = ", num_topk, " exceeds max_topk = ", config_.max_topk,
         " of this low-latency buffer");
  }
  if (num_tokens > 0 && x == nullptr) fail_invalid("x is null");
  validate_routing(topk_idx, RoutingShape{num_tokens, num_topk, config_.num_experts, world_});

  const Wire w = static_cast<Wire>(wire);
  const int64_t rb = wire_row_bytes(w, config_.hidden);
  const int64_t tk = num_tokens * num_topk;
  LlOp op;
  op.num_tokens = num_tokens;
  op.num_topk = num_topk;
  op.topk_idx.assign(topk_idx, topk_idx + tk);
  stage_.resize(static_cast<size_t>(num_tokens * rb));
  begin_call(op, LlKind::kDispatch, wire, flags);

  try {
    // Per destination and local expert: message counts, then each token's row encoded once.
    std::fill(counts_.begin(), counts_.end(), 0);
    for (int64_t i = 0; i < tk; ++i) {
      const int64_t e = op.topk_idx[i];
      if (e >= 0) ++counts_[e];  // [W, El] flattened is the global expert id
    }
    const bool pow2 = (flags & 1) != 0;
    for (int64_t t = 0; t < num_tokens; ++t) {
      bool routed = false;
      for (int32_t k = 0; k < num_topk; ++k) routed = routed || op.topk_idx[t * num_topk + k] >= 0;
      if (routed)
        encode_row_ll(w, pow2, x + t * config_.hidden, config_.hidden, stage_.data() + t * rb);
    }
    // Other ranks first (rotated so ranks do not all start with the same one), this rank last.
    for (int32_t step = 1; step <= world_; ++step) {
      const int32_t d = (rank_ + step) % world_;
      wait_released(d, op.slot, op.seq, "low-latency dispatch send");
      const int32_t* dcounts = counts_.data() + static_cast<int64_t>(d) * local_;
      int64_t n = 0;
      for (int32_t e = 0; e < local_; ++e) {
        cursor_[e] = static_cast<int32_t>(n);
        n += dcounts[e];
      }
      const int64_t lo = static_cast<int64_t>(d) * local_;
      for (int64_t t = 0; t < num_tokens; ++t) {
        for (int32_t k = 0; k < num_topk; ++k) {
          const int64_t e = op.topk_idx[t * num_topk + k] - lo;
          if (e < 0 || e >= local_) continue;
          uint8_t* m = dispatch_msg(d, op.slot, rank_, cursor_[e]++);
          const MsgHeader mh{static_cast<int32_t>(t), k, {0, 0}};
          std::memcpy(m, &mh, sizeof mh);
          std::memcpy(m + kMsgHeaderBytes, stage_.data() + t * rb, static_cast<size_t>(rb));
        }
      }
      Flag* f = flag(d, op.slot, rank_);
      f->kind = static_cast<int32_t>(LlKind::kDispatch);
      f->wire = wire;
      f->flags = flags;
      f->rows = n;
      f->tokens = num_tokens;
      std::memcpy(flag_counts(f), dcounts, 4 * static_cast<size_t>(local_));
      f->seq.store(op.seq, std::memory_order_release);
      if (d != rank_) notify(d);
      op.rows_sent += n;
      op.bytes_sent += n * (kMsgHeaderBytes + rb);
    }
  } catch (const std::exception& e) {
    mark_broken(e.what());
    throw;
  }
  return op;
}

LlHandle LlBuffer::dispatch_recv(LlOp& op, float* recv_x, int32_t* recv_count,
                                 int32_t* recv_src_info, int64_t* recv_layout_range) {
  check_op(op, LlKind::kDispatch);
  if (recv_x == nullptr) fail_invalid("recv_x is null");
  if (recv_count == nullptr) fail_invalid("recv_count is null");
  const int64_t hidden = config_.hidden;
  LlHandle h;
  h.buffer_id = id_;
  h.rank = rank_;
  h.world_size = world_;
  h.num_experts = config_.num_experts;
  h.num_local_experts = local_;
  h.max_tokens = config_.max_tokens;
  h.hidden = hidden;
  h.num_tokens = op.num_tokens;
  h.num_topk = op.num_topk;
  const int64_t per_expert = h.rows_per_expert();
  try {
    h.topk_idx = op.topk_idx;
    h.recv_count.assign(static_cast<size_t>(local_), 0);
    h.src_token.assign(static_cast<size_t>(local_ * per_expert), -1);
    h.src_slot.assign(static_cast<size_t>(local_ * per_expert), -1);
    h.layout_range.assign(static_cast<size_t>(local_) * world_, 0);
  } catch (const std::bad_alloc&) {
    fail(NEP_ERR_CAPACITY, "out of memory for the low-latency handle");
  }
  try {
    for (int32_t s = 0; s < world_; ++s) {
      wait_flag(s, op.slot, op.seq, "low-latency dispatch receive");
      Flag* f = flag(rank_, op.slot, s);
      const int32_t* c = flag_counts(f);
      int64_t total = 0;
      bool counts_ok = true;
      for (int32_t e = 0; e < local_; ++e) {
        counts_ok = counts_ok && c[e] >= 0 && c[e] <= config_.max_tokens;
        total += c[e];
      }
      if (f->kind != static_cast<int32_t>(LlKind::kDispatch) || !wire_is_valid(f->wire) ||
          wire_row_bytes(static_cast<Wire>(f->wire), hidden) > slot_row_bytes_ || !counts_ok ||
          total != f->rows || total > src_msgs_ || f->tokens < 0 ||
          f->tokens > config_.max_tokens) {
        std::ostringstream os;
        os << "rank " << rank_ << ": low-latency dispatch receive (call " << op.seq
           << ") got from rank " << s << " a "
           << (f->kind == static_cast<int32_t>(LlKind::kCombine) ? "combine" : "message")
           << " with wire " << f->wire << " and " << f->rows
           << " rows: the ranks disagree on the sequence of low-latency calls";
        fail_broken(NEP_ERR_PEER, os.str());
      }
      const Wire w = static_cast<Wire>(f->wire);
      int64_t index = 0;
      for (int32_t e = 0; e < local_; ++e) {
        const int64_t begin = h.recv_count[e];
        for (int64_t i = 0; i < c[e]; ++i, ++index) {
          const uint8_t* m = dispatch_msg(rank_, op.slot, s, index);
          MsgHeader mh;
          std::memcpy(&mh, m, sizeof mh);
          if (mh.token < 0 || mh.token >= f->tokens || mh.slot < 0 || mh.slot >= config_.max_topk) {
            fail_broken(NEP_ERR_PEER,
                        "rank " + std::to_string(rank_) + ": low-latency dispatch from rank " +
                            std::to_string(s) + " carries token " + std::to_string(mh.token) +
                            " slot " + std::to_string(mh.slot) + ", outside the buffer's limits");
          }
          const int64_t row = e * per_expert + begin + i;
          decode_row(w, m + kMsgHeaderBytes, hidden, recv_x + row * hidden);
          h.src_token[row] = mh.token;
          h.src_slot[row] = mh.slot;
        }
        h.layout_range[static_cast<int64_t>(e) * world_ + s] = (begin << 32) | c[e];
        h.recv_count[e] = static_cast<int32_t>(begin + c[e]);
      }
    }
  } catch (const std::exception& e) {
    op.state = LlOpState::kFailed;
    mark_broken(e.what());
    throw;
  }
  release(op);
  op.state = LlOpState::kReceived;
  std::copy(h.recv_count.begin(), h.recv_count.end(), recv_count);
  if (recv_src_info != nullptr) std::copy(h.src_token.begin(), h.src_token.end(), recv_src_info);
  if (recv_layout_range != nullptr)
    std::copy(h.layout_range.begin(), h.layout_range.end(), recv_layout_range);
  return h;
}

LlOp LlBuffer::combine_send(const LlHandle& h, const float* y, int64_t hidden,
                            const int64_t* topk_idx, const float* topk_weights, int64_t num_tokens,
                            int32_t num_topk, int32_t wire) {
  check_usable();
  if (h.buffer_id != id_) {
    fail_invalid(
        "the handle was made by another low-latency buffer; combine needs the buffer whose"
        " dispatch produced it");
  }
  check_wire(wire, 0);
  if (hidden != config_.hidden) {
    fail_invalid("hidden = ", hidden,
                 " differs from the low-latency buffer's hidden = ", config_.hidden);
  }
  if (num_tokens != h.num_tokens) {
    fail_invalid("num_tokens = ", num_tokens, " differs from the handle's dispatch, which had ",
                 h.num_tokens, " tokens on this rank");
  }
  if (num_topk != h.num_topk) {
    fail_invalid("num_topk = ", num_topk,
                 " differs from the handle's dispatch, which had K = ", h.num_topk);
  }
  const int64_t tk = num_tokens * num_topk;
  if (tk > 0 && topk_idx == nullptr) fail_invalid("topk_idx is null");
  if (tk > 0 && topk_weights == nullptr) fail_invalid("topk_weights is null");
  for (int64_t i = 0; i < tk; ++i) {
    if (topk_idx[i] != h.topk_idx[i]) {
      fail_invalid("topk_idx[", i / num_topk, "][", i % num_topk, "] = ", topk_idx[i],
                   " differs from the dispatched routing (", h.topk_idx[i],
                   "); combine takes the topk_idx of the dispatch that made the handle");
    }
    if (topk_idx[i] >= 0 && !std::isfinite(topk_weights[i])) {
      fail_invalid("topk_weights[", i / num_topk, "][", i % num_topk, "] = ", topk_weights[i],
                   " is not finite");
    }
  }
  int64_t received = 0;
  for (int32_t c : h.recv_count) received += c;
  if (received > 0 && y == nullptr) fail_invalid("y is null");

  const Wire w = static_cast<Wire>(wire);
  const int64_t rb = wire_row_bytes(w, hidden);
  const int64_t per_expert = h.rows_per_expert();
  LlOp op;
  op.num_tokens = num_tokens;
  op.num_topk = num_topk;
  op.topk_idx.assign(topk_idx, topk_idx + tk);
  op.topk_weights.assign(topk_weights, topk_weights + tk);
  begin_call(op, LlKind::kCombine, wire, 0);
  try {
    for (int32_t step = 1; step <= world_; ++step) {
      const int32_t d = (rank_ + step) % world_;
      wait_released(d, op.slot, op.seq, "low-latency combine send");
      int64_t n = 0;
      for (int32_t e = 0; e < local_; ++e) {
        const int64_t range = h.layout_range[static_cast<int64_t>(e) * world_ + d];
        const int64_t begin = range >> 32;
        const int64_t count = range & 0xFFFFFFFF;
        for (int64_t i = 0; i < count; ++i) {
          const int64_t row = e * per_expert + begin + i;
          encode_row(w, y + row * hidden, hidden,
                     combine_row(d, op.slot, h.src_token[row], h.src_slot[row]));
        }
        n += count;
      }
      Flag* f = flag(d, op.slot, rank_);
      f->kind = static_cast<int32_t>(LlKind::kCombine);
      f->wire = wire;
      f->flags = 0;
      f->rows = n;
      f->tokens = num_tokens;
      f->seq.store(op.seq, std::memory_order_release);
      if (d != rank_) notify(d);
      op.rows_sent += n;
      op.bytes_sent += n * rb;
    }
  } catch (const std::exception& e) {
    mark_broken(e.what());
    throw;
  }
  return op;
}

void LlBuffer::combine_recv(LlOp& op, float* out) {
  check_op(op, LlKind::kCombine);
  const int64_t hidden = config_.hidden;
  const int64_t t_count = op.num_tokens;
  const int32_t k_count = op.num_topk;
  if (t_count > 0 && out == nullptr) fail_invalid("out is null");
  std::vector<int64_t> expected(static_cast<size_t>(world_), 0);
  for (int64_t e : op.topk_idx) {
    if (e >= 0) ++expected[e / local_];
  }
  std::vector<Wire> wires(static_cast<size_t>(world_), Wire::kFp32);
  try {
    for (int32_t q = 0; q < world_; ++q) {
      wait_flag(q, op.slot, op.seq, "low-latency combine receive");
      const Flag* f = flag(rank_, op.slot, q);
      if (f->kind != static_cast<int32_t>(LlKind::kCombine) || !wire_is_valid(f->wire) ||
          wire_row_bytes(static_cast<Wire>(f->wire), hidden) > slot_row_bytes_ ||
          f->rows != expected[q]) {
        std::ostringstream os;
        os << "rank " << rank_ << ": low-latency combine receive (call " << op.seq
           << ") got from rank " << q << " a "
           << (f->kind == static_cast<int32_t>(LlKind::kDispatch) ? "dispatch" : "combine")
           << " with " << f->rows << " rows where this rank's topk_idx selects " << expected[q]
           << " experts of rank " << q
           << ": the ranks disagree on the sequence of low-latency calls or on the handle";
        fail_broken(NEP_ERR_PEER, os.str());
      }
      wires[q] = static_cast<Wire>(f->wire);
    }
    float* tmp = row_scratch_.data();
    for (int64_t t = 0; t < t_count; ++t) {
      float* o = out + t * hidden;
      bool first = true;
      for (int32_t k = 0; k < k_count; ++k) {
        const int64_t e = op.topk_idx[t * k_count + k];
        if (e < 0) continue;
        decode_row(wires[e / local_], combine_row(rank_, op.slot, t, k), hidden, tmp);
        scale_row(tmp, hidden, op.topk_weights[t * k_count + k], o, !first);
        first = false;
      }
      if (first) std::memset(o, 0, static_cast<size_t>(hidden) * sizeof(float));
    }
  } catch (const std::exception& e) {
    op.state = LlOpState::kFailed;
    mark_broken(e.what());
    throw;
  }
  release(op);
  op.state = LlOpState::kReceived;
}

bool LlBuffer::ready(const LlOp& op) {
  if (op.buffer_id != id_ || op.state != LlOpState::kPending || broken_) return false;
  for (int32_t s = 0; s < world_; ++s) {
    if (flag(rank_, op.slot, s)->seq.load(std::memory_order_acquire) != op.seq) return false;
  }
  return true;
}

void LlBuffer::abandon(LlOp& op) noexcept {
  if (op.buffer_id != id_ || op.state != LlOpState::kPending) return;
  op.state = LlOpState::kAbandoned;
  if (broken_ || pending_[op.slot] != op.seq) return;
  release(op);
}

}  // namespace nep
