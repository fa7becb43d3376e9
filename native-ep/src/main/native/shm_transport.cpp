#include "shm_transport.h"

#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <cstring>
#include <new>
#include <sstream>

#include "error.h"
#include "sys_util.h"

namespace nep {
namespace {

constexpr uint64_t kMagic = 0x31304d4853504e45ull;  // "ENPSHM01"
constexpr int64_t kHeaderBytes = 4096;
constexpr int64_t kChannelBytes = 128;
constexpr int64_t kSlotHeaderBytes = 64;
constexpr size_t kReasonBytes = 1024;

struct SegmentHeader {
  uint64_t magic;
  int32_t rank;
  int32_t world;
  int32_t pid;
  int32_t slots;
  int64_t slot_bytes;
  alignas(64) std::atomic<uint32_t> doorbell;
  // Nonzero while the owner sleeps (or is about to sleep) on its doorbell: peers make the wake-up
  // system call only then, not after every chunk.
  alignas(64) std::atomic<uint32_t> sleeping;
  alignas(64) std::atomic<uint32_t> aborted;
  char reason[kReasonBytes];
};
static_assert(sizeof(SegmentHeader) <= kHeaderBytes, "header must fit its page");

// Ring control of the channel owner -> dest, in the owner's segment.
struct Channel {
  alignas(64) std::atomic<uint64_t> tail;  // chunks published by the owner
  alignas(64) std::atomic<uint64_t> head;  // chunks consumed by dest
};
static_assert(sizeof(Channel) <= kChannelBytes, "channel control must fit its slot");
static_assert(std::atomic<uint64_t>::is_always_lock_free, "shared atomics must be lock-free");

struct SlotHeader {
  uint64_t seq;         // exchange number, the same on every rank
  int64_t first_row;    // first row of the chunk in the (sender -> receiver) stream
  int64_t rows;         // rows in the chunk (1 for a piece of a large row)
  int64_t byte_offset;  // offset of this piece inside the row (0 for whole rows)
  int64_t bytes;        // payload bytes
};
static_assert(sizeof(SlotHeader) <= kSlotHeaderBytes, "slot header must fit");

int64_t round64(int64_t v) { return (v + 63) / 64 * 64; }

}  // namespace

// Addresses inside a segment.
struct ShmTransport::Layout {
  static SegmentHeader* header(uint8_t* base) { return reinterpret_cast<SegmentHeader*>(base); }
  static Channel* channel(uint8_t* base, int32_t dest) {
    return reinterpret_cast<Channel*>(base + kHeaderBytes + dest * kChannelBytes);
  }
  static uint8_t* slot(uint8_t* base, int32_t world, const ShmConfig& c, int32_t dest,
                       uint64_t index) {
    const int64_t slot_stride = kSlotHeaderBytes + round64(c.slot_bytes);
    const int64_t ring =
        dest * static_cast<int64_t>(c.slots) + static_cast<int64_t>(index % c.slots);
    return base + kHeaderBytes + world * kChannelBytes + ring * slot_stride;
  }
};

// Where one exchange_rows call stands.
struct ShmTransport::Progress {
  std::vector<int64_t> sent;           // rows published per destination
  std::vector<int64_t> piece;          // bytes of the current large row published per destination
  std::vector<int64_t> received_from;  // rows consumed per source
  int32_t src = 0;                     // source being consumed (rank order); with any_source_order,
                                       // the first source not finished
  int64_t received = 0;                // rows consumed from src
  int64_t assembled = 0;               // bytes of the current large row from src
};

int64_t ShmTransport::segment_bytes(int32_t world, const ShmConfig& c) {
  return kHeaderBytes + world * kChannelBytes +
         world * static_cast<int64_t>(c.slots) * (kSlotHeaderBytes + round64(c.slot_bytes));
}

ShmTransport::ShmTransport(StoreClient& store, int32_t rank, int32_t world, const ShmConfig& config)
    : rank_(rank), world_(world), config_(config) {
  if (world < 1) fail_invalid("world_size = ", world, " must be >= 1");
  if (rank < 0 || rank >= world) fail_invalid("rank = ", rank, " is outside [0, ", world, ")");
  if (config.slots < 1) fail_invalid("shm slots = ", config.slots, " must be >= 1");
  if (config.slot_bytes < 64)
    fail_invalid("shm slot_bytes = ", config.slot_bytes, " must be >= 64");
  if (config.timeout_ms <= 0) fail_invalid("timeout_ms = ", config.timeout_ms, " must be > 0");
  if (config.poll_ms <= 0) fail_invalid("poll_ms = ", config.poll_ms, " must be > 0");
  const size_t bytes = static_cast<size_t>(segment_bytes(world, config));
  segments_.resize(world);
  names_.resize(world);
  send_stage_.resize(world);

  ShmSegment own = ShmSegment::create(bytes);
  SegmentHeader* h = new (own.data()) SegmentHeader{};
  h->magic = kMagic;
  h->rank = rank;
  h->world = world;
  h->pid = static_cast<int32_t>(getpid());
  h->slots = config.slots;
  h->slot_bytes = config.slot_bytes;
  for (int32_t d = 0; d < world; ++d) new (Layout::channel(own.data(), d)) Channel{};
  names_[rank] = own.name();
  segments_[rank] = std::move(own);

  // Each rank counts the communicators it creates; collective creation keeps the counts equal.
  const int64_t generation = store.add("nep/shm/created/" + std::to_string(rank), 1);
  const std::string prefix = "nep/shm/" + std::to_string(generation) + "/";
  auto unlink_known = [&] {
    for (const std::string& n : names_) {
      if (!n.empty()) ShmSegment::unlink_by_name(n);
    }
  };
  try {
    store.set(prefix + "segment/" + std::to_string(rank), names_[rank]);
    for (int32_t p = 0; p < world; ++p) {
      if (p == rank) continue;
      try {
        names_[p] = store.wait(prefix + "segment/" + std::to_string(p), config.timeout_ms);
      } catch (const Error& e) {
        fail(e.code(), e.what(), " (rank ", p, " never published its shared-memory segment)");
      }
      segments_[p] = ShmSegment::open(names_[p], bytes);
      const SegmentHeader* ph = Layout::header(segments_[p].data());
      if (ph->magic != kMagic || ph->rank != p || ph->world != world || ph->slots != config.slots ||
          ph->slot_bytes != config.slot_bytes) {
        fail(NEP_ERR_PEER, "rank ", rank, ": segment of rank ", p, " (", names_[p],
             ") does not match: rank ", ph->rank, ", world ", ph->world, ", slots ", ph->slots,
             ", slot_bytes ", ph->slot_bytes, " (this rank: world ", world, ", slots ",
             config.slots, ", slot_bytes ", config.slot_bytes, ")");
      }
      peers_.watch(p, ph->pid);
    }
    store.set(prefix + "mapped/" + std::to_string(rank), "1");
    for (int32_t p = 0; p < world; ++p) {
      if (p == rank) continue;
      try {
        store.wait(prefix + "mapped/" + std::to_string(p), config.timeout_ms);
      } catch (const Error& e) {
        fail(e.code(), e.what(), " (rank ", p, " did not map every segment)");
      }
    }
  } catch (...) {
    unlink_known();
    throw;
  }
  unlink_known();
  segments_[rank].unlink_name();
}

ShmTransport::~ShmTransport() = default;

void ShmTransport::ring(int32_t peer) {
  SegmentHeader* h = Layout::header(segments_[peer].data());
  // Sequentially consistent pair with the sleeper's (sleeping = 1, then futex_wait on the
  // doorbell value it read before): either this load sees the flag, or the sleeper's futex_wait
  // sees the new doorbell value and returns at once. No wake-up is lost either way.
  h->doorbell.fetch_add(1, std::memory_order_seq_cst);
  if (h->sleeping.load(std::memory_order_seq_cst) != 0) futex_wake_all(&h->doorbell);
}

void ShmTransport::fail_broken(int32_t code, const std::string& message) {
  mark_broken(message);
  throw Error(code, message);
}

void ShmTransport::mark_broken(const std::string& message) noexcept {
  if (is_broken_) return;
  is_broken_ = true;
  try {
    broken_ = message;
  } catch (...) {
    // Keep the flag; the message is only for later calls' errors.
  }
  SegmentHeader* h = Layout::header(segments_[rank_].data());
  const size_t n = std::min(message.size(), kReasonBytes - 1);
  std::memcpy(h->reason, message.data(), n);
  h->reason[n] = '\0';
  h->aborted.store(1, std::memory_order_release);
  for (int32_t p = 0; p < world_; ++p) {
    if (p != rank_) ring(p);
  }
}

std::string ShmTransport::waiting_for(const Progress& p, const RowExchange& ex) const {
  std::ostringstream os;
  if (p.src < world_) {
    const Channel* ch = Layout::channel(segments_[p.src].data(), rank_);
    os << "waiting for rank " << p.src << " (rows received " << p.received << " of "
       << ex.recv_rows[p.src] << ", channel " << p.src << "->" << rank_ << " published "
       << ch->tail.load() << " consumed " << ch->head.load() << ")";
    return os.str();
  }
  for (int32_t d = 0; d < world_; ++d) {
    if (p.sent[d] < ex.send_rows[d]) {
      const Channel* ch = Layout::channel(segments_[rank_].data(), d);
      os << "waiting for rank " << d << " to free a slot (rows sent " << p.sent[d] << " of "
         << ex.send_rows[d] << ", channel " << rank_ << "->" << d << " published "
         << ch->tail.load() << " consumed " << ch->head.load() << ")";
      return os.str();
    }
  }
  return "waiting";
}

void ShmTransport::check_peers(const Progress& p, const RowExchange& ex) {
  for (int32_t q = 0; q < world_; ++q) {
    if (q == rank_) continue;
    const SegmentHeader* h = Layout::header(segments_[q].data());
    if (h->aborted.load(std::memory_order_acquire) != 0) {
      fail_broken(NEP_ERR_PEER, "rank " + std::to_string(rank_) + ": " + ex.what +
                                    " stopped because rank " + std::to_string(q) +
                                    " failed: " + std::string(h->reason));
    }
  }
  const int dead = peers_.first_dead();
  if (dead < 0) return;
  // A peer that exited is an error only while this rank still needs it in this exchange: rows it
  // has not published yet, or room in its ring for rows this rank still has to send.
  const int64_t remaining = ex.recv_rows[dead] - p.received_from[dead];
  const bool owes_rows = remaining > published_rows(dead, ex);
  const bool must_take_rows = p.sent[dead] < ex.send_rows[dead];
  if (!owes_rows && !must_take_rows) return;
  std::ostringstream os;
  os << "rank " << rank_ << ": peer rank " << dead << " (pid " << peers_.pid_of(dead)
     << ") exited during " << ex.what << "; this rank was " << waiting_for(p, ex);
  fail_broken(NEP_ERR_PEER, os.str());
}

int64_t ShmTransport::published_rows(int32_t src, const RowExchange& ex) const {
  uint8_t* base = segments_[src].data();
  const Channel* ch = Layout::channel(base, rank_);
  int64_t rows = 0;
  for (uint64_t i = ch->head.load(std::memory_order_acquire),
                end = ch->tail.load(std::memory_order_acquire);
       i < end; ++i) {
    SlotHeader sh;
    std::memcpy(&sh, Layout::slot(base, world_, config_, rank_, i), sizeof sh);
    if (sh.seq != exchange_seq_) break;
    const bool row_complete =
        ex.row_bytes <= config_.slot_bytes || sh.byte_offset + sh.bytes == ex.row_bytes;
    if (row_complete) rows += sh.rows;
  }
  return rows;
}

void ShmTransport::exchange_rows(const RowExchange& ex, RowProducer& producer,
                                 RowConsumer& consumer) {
  if (is_broken_) {
    fail(NEP_ERR_PEER, "rank ", rank_,
         ": the cpu-shm communicator is unusable after an earlier failure: ", broken_);
  }
  if (ex.row_bytes <= 0) fail(NEP_ERR_INTERNAL, ex.what, ": row_bytes = ", ex.row_bytes);
  const uint64_t seq = ++exchange_seq_;
  const int64_t rb = ex.row_bytes;
  const int64_t cap = config_.slot_bytes;
  const bool pieces = rb > cap;
  const int64_t rows_per_chunk = pieces ? 1 : cap / rb;
  if (pieces) {
    for (auto& s : send_stage_) s.resize(static_cast<size_t>(rb));
    recv_stage_.resize(static_cast<size_t>(rb));
  }
  Progress p;
  p.sent.assign(world_, 0);
  p.piece.assign(world_, 0);
  p.received_from.assign(world_, 0);
  // Sources may interleave only for whole rows (a row in pieces is assembled in one stage).
  const bool any_order = (ex.any_source_order || ex.source_gated) && !pieces;
  const bool gated = ex.source_gated && !ex.any_source_order;
  uint8_t* own = segments_[rank_].data();
  SegmentHeader* own_header = Layout::header(own);
  const int64_t deadline = monotonic_ms() + config_.timeout_ms;

  try {
    for (;;) {
      const uint32_t bell = own_header->doorbell.load(std::memory_order_acquire);
      bool progress = false;
      bool sending = false;
      // Publish into every destination ring that has room, starting after this rank so that
      // ranks do not all feed the same receiver first.
      for (int32_t k = 1; k <= world_; ++k) {
        const int32_t d = (rank_ + k) % world_;
        Channel* ch = Layout::channel(own, d);
        while (p.sent[d] < ex.send_rows[d]) {
          const uint64_t tail = ch->tail.load(std::memory_order_relaxed);
          if (tail - ch->head.load(std::memory_order_acquire) >=
              static_cast<uint64_t>(config_.slots))
            break;
          uint8_t* slot = Layout::slot(own, world_, config_, d, tail);
          uint8_t* payload = slot + kSlotHeaderBytes;
          SlotHeader sh{seq, p.sent[d], 0, 0, 0};
          if (!pieces) {
            sh.rows = std::min(rows_per_chunk, ex.send_rows[d] - p.sent[d]);
            producer.produce(d, p.sent[d], sh.rows, payload);
            sh.bytes = sh.rows * rb;
            p.sent[d] += sh.rows;
          } else {
            if (p.piece[d] == 0) producer.produce(d, p.sent[d], 1, send_stage_[d].data());
            sh.rows = 1;
            sh.byte_offset = p.piece[d];
            sh.bytes = std::min(cap, rb - p.piece[d]);
            std::memcpy(payload, send_stage_[d].data() + p.piece[d], static_cast<size_t>(sh.bytes));
            p.piece[d] += sh.bytes;
            if (p.piece[d] == rb) {
              p.piece[d] = 0;
              ++p.sent[d];
            }
          }
          std::memcpy(slot, &sh, sizeof sh);
          ch->tail.store(tail + 1, std::memory_order_release);
          ring(d);
          progress = true;
          if (++chunks_published_ == exit_after_chunks_) _exit(3);
        }
        sending = sending || p.sent[d] < ex.send_rows[d];
      }
      // A chunk from src must continue src's stream of this exchange where it stopped.
      auto check_chunk = [&](int32_t src, int64_t received, const SlotHeader& sh) {
        const bool valid = sh.seq == seq && sh.first_row == received && sh.rows >= 1 &&
                           received + sh.rows <= ex.recv_rows[src] &&
                           (pieces ? (sh.rows == 1 && sh.byte_offset == p.assembled &&
                                      sh.bytes > 0 && sh.byte_offset + sh.bytes <= rb)
                                   : (sh.byte_offset == 0 && sh.bytes == sh.rows * rb));
        if (valid) return;
        std::ostringstream os;
        os << "rank " << rank_ << ": " << ex.what << " (exchange " << seq << ", rows " << received
           << " of " << ex.recv_rows[src] << ") got a chunk from rank " << src << " of exchange "
           << sh.seq << " starting at row " << sh.first_row << " with " << sh.rows
           << " rows: the ranks disagree on the sequence of collective calls";
        fail_broken(NEP_ERR_PEER, os.str());
      };
      if (any_order) {
        // Every source with a chunk ready, this rank's own ring first; rows of one source stay
        // in order. Gated: a source's next chunk waits while the consumer says it is not ready
        // (never for the lowest unfinished source).
        while (p.src < world_ && p.received_from[p.src] == ex.recv_rows[p.src]) ++p.src;
        for (int32_t k = 0; k < world_; ++k) {
          const int32_t src = (rank_ + k) % world_;
          uint8_t* base = segments_[src].data();
          Channel* ch = Layout::channel(base, rank_);
          while (p.received_from[src] < ex.recv_rows[src]) {
            const uint64_t head = ch->head.load(std::memory_order_relaxed);
            if (head == ch->tail.load(std::memory_order_acquire)) break;
            const uint8_t* slot = Layout::slot(base, world_, config_, rank_, head);
            SlotHeader sh;
            std::memcpy(&sh, slot, sizeof sh);
            check_chunk(src, p.received_from[src], sh);
            if (gated && src > p.src && !consumer.ready(src, p.received_from[src], sh.rows)) break;
            consumer.consume(src, p.received_from[src], sh.rows, slot + kSlotHeaderBytes);
            p.received_from[src] += sh.rows;
            while (p.src < world_ && p.received_from[p.src] == ex.recv_rows[p.src]) ++p.src;
            ch->head.store(head + 1, std::memory_order_release);
            ring(src);
            progress = true;
          }
        }
        while (p.src < world_ && p.received_from[p.src] == ex.recv_rows[p.src]) ++p.src;
        p.received = p.src < world_ ? p.received_from[p.src] : 0;
      }
      // Consume in source-rank order.
      while (!any_order && p.src < world_) {
        if (p.received == ex.recv_rows[p.src]) {
          ++p.src;
          p.received = 0;
          continue;
        }
        uint8_t* base = segments_[p.src].data();
        Channel* ch = Layout::channel(base, rank_);
        const uint64_t head = ch->head.load(std::memory_order_relaxed);
        if (head == ch->tail.load(std::memory_order_acquire)) break;
        const uint8_t* slot = Layout::slot(base, world_, config_, rank_, head);
        SlotHeader sh;
        std::memcpy(&sh, slot, sizeof sh);
        check_chunk(p.src, p.received, sh);
        const uint8_t* payload = slot + kSlotHeaderBytes;
        if (!pieces) {
          consumer.consume(p.src, p.received, sh.rows, payload);
          p.received += sh.rows;
          p.received_from[p.src] = p.received;
        } else {
          std::memcpy(recv_stage_.data() + sh.byte_offset, payload, static_cast<size_t>(sh.bytes));
          p.assembled += sh.bytes;
          if (p.assembled == rb) {
            consumer.consume(p.src, p.received, 1, recv_stage_.data());
            p.assembled = 0;
            ++p.received;
            p.received_from[p.src] = p.received;
          }
        }
        ch->head.store(head + 1, std::memory_order_release);
        ring(p.src);
        progress = true;
      }
      if (!sending && p.src == world_) return;
      if (progress) continue;
      const int64_t now = monotonic_ms();
      check_peers(p, ex);
      if (now >= deadline) {
        std::ostringstream os;
        os << "rank " << rank_ << " timed out after " << config_.timeout_ms << " ms in " << ex.what
           << ": " << waiting_for(p, ex);
        fail_broken(NEP_ERR_TIMEOUT, os.str());
      }
      own_header->sleeping.store(1, std::memory_order_seq_cst);
      futex_wait(&own_header->doorbell, bell, std::min(config_.poll_ms, deadline - now));
      own_header->sleeping.store(0, std::memory_order_relaxed);
    }
  } catch (const std::exception& e) {
    mark_broken(e.what());
    throw;
  } catch (...) {
    mark_broken("unknown failure");
    throw;
  }
}

}  // namespace nep
