// cpu-shm: the transport between the ranks of one host. Each rank owns one POSIX shared-memory
// segment that every rank maps; it holds the rank's doorbell (a futex word), its abort flag and,
// for every destination d, a ring of `slots` chunks of `slot_bytes` that carries the rows this
// rank sends to d. A sender encodes rows straight into a free slot of its ring; the receiver
// decodes them straight out of it, in source-rank order (the Transport ordering contract), and
// hands the slot back; for an exchange marked any_source_order (dispatch) it takes chunks from
// every source as they arrive, so no rank waits on one peer while another's ring is full; for
// one marked source_gated (combine) likewise, but a chunk of a higher source only when the
// consumer says its rows are ready. Rows larger than a slot travel in pieces through a staging
// row (always in source-rank order).
//
// Memory per rank: segment_bytes(W, config) = 4 KiB + W * 128 B + W * slots * (64 B + slot_bytes),
// i.e. with the defaults (4 slots of 256 KiB) about W MiB per rank and W^2 MiB in /dev/shm in all;
// the token count is unlimited (rows stream through the rings).
//
// Waiting: a rank with nothing to do sleeps on its doorbell futex, which peers ring after each
// chunk they publish or free (the wake-up system call only while the rank is marked sleeping),
// in slices of `poll_ms`; between slices it checks the deadline
// (`timeout_ms` per exchange), peers' abort flags and whether a peer it still needs has exited
// (pidfd). A failure marks this rank's segment aborted so peers stop at once; the communicator is
// unusable afterwards.
//
// Set-up (collective, through the rendezvous store): create the segment under a random name with
// owner-only permissions, publish its name, map every peer's, agree that all are mapped, then
// unlink every name, so nothing is left in /dev/shm even if a process is killed later.
#ifndef NATIVEEP_SRC_SHM_TRANSPORT_H_
#define NATIVEEP_SRC_SHM_TRANSPORT_H_

#include <cstdint>
#include <string>
#include <vector>

#include "peer_watch.h"
#include "shm_segment.h"
#include "store_client.h"
#include "transport.h"

namespace nep {

struct ShmConfig {
  int32_t slots = 4;                // chunks in flight per (sender, receiver) pair, >= 1
  int64_t slot_bytes = 256 * 1024;  // payload of one chunk, >= 64
  int64_t timeout_ms = 30000;       // per exchange and per set-up wait
  int64_t poll_ms = 20;             // longest sleep between liveness checks
};

class ShmTransport final : public Transport {
 public:
  // Collective over `world` ranks that all run on this host. store is used during set-up only.
  ShmTransport(StoreClient& store, int32_t rank, int32_t world, const ShmConfig& config);
  ~ShmTransport() override;
  ShmTransport(const ShmTransport&) = delete;
  ShmTransport& operator=(const ShmTransport&) = delete;

  int32_t rank() const override { return rank_; }
  int32_t world_size() const override { return world_; }
  const char* name() const override { return "cpu-shm"; }
  void exchange_rows(const RowExchange& exchange, RowProducer& producer,
                     RowConsumer& consumer) override;

  static int64_t segment_bytes(int32_t world, const ShmConfig& config);
  // Names of every rank's segment (already unlinked once the constructor returns).
  const std::vector<std::string>& segment_names() const { return names_; }
  // Test hook: the process exits (_exit(3)) right after publishing `chunks` more chunks.
  void set_exit_after_chunks(int64_t chunks) { exit_after_chunks_ = chunks_published_ + chunks; }

  struct Layout;

 private:
  struct Progress;
  [[noreturn]] void fail_broken(int32_t code, const std::string& message);
  // Records the failure and raises this rank's abort flag so peers stop waiting for it.
  void mark_broken(const std::string& message) noexcept;
  // Rows of the current exchange that rank src has published to this rank and not yet consumed.
  int64_t published_rows(int32_t src, const RowExchange& ex) const;
  void check_peers(const Progress& p, const RowExchange& ex);
  std::string waiting_for(const Progress& p, const RowExchange& ex) const;
  void ring(int32_t peer);

  int32_t rank_;
  int32_t world_;
  ShmConfig config_;
  std::vector<ShmSegment> segments_;  // [W]; segments_[rank_] is this rank's own
  std::vector<std::string> names_;
  PeerWatch peers_;
  uint64_t exchange_seq_ = 0;
  int64_t chunks_published_ = 0;
  int64_t exit_after_chunks_ = -1;
  bool is_broken_ = false;                        // set after a failure
  std::string broken_;                            // its message
  std::vector<std::vector<uint8_t>> send_stage_;  // per destination, for rows larger than a slot
  std::vector<uint8_t> recv_stage_;
};

}  // namespace nep

#endif  // NATIVEEP_SRC_SHM_TRANSPORT_H_
