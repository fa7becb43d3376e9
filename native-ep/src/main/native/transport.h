// Transport: how the ranks of one communicator move bytes. Dispatch, combine and the collectives
// are written once against this interface; each transport (loopback for a world of one, cpu-shm
// between processes of one host, ...) implements the single exchange primitive below.
//
// The primitive is a variable-sized all-to-all of fixed-size rows that never needs the whole
// payload in memory at once: the transport asks a RowProducer to write rows for a destination
// straight into its (bounded) send buffer, and hands received rows to a RowConsumer straight from
// its receive buffer, a chunk at a time. A transport picks the chunk size; producers and consumers
// handle any chunk size >= 1 row.
#ifndef NATIVEEP_SRC_TRANSPORT_H_
#define NATIVEEP_SRC_TRANSPORT_H_

#include <cstddef>
#include <cstdint>
#include <utility>

namespace nep {

class RowProducer {
 public:
  virtual ~RowProducer() = default;
  // Writes rows [first, first + count) of the stream to rank `dest` into buf
  // (count * row_bytes bytes).
  virtual void produce(int32_t dest, int64_t first, int64_t count, uint8_t* buf) = 0;
};

class RowConsumer {
 public:
  virtual ~RowConsumer() = default;
  // Takes rows [first, first + count) of the stream from rank `src` from buf.
  virtual void consume(int32_t src, int64_t first, int64_t count, const uint8_t* buf) = 0;
  // Only for an exchange marked source_gated: whether rows [first, first + count) of src may be
  // consumed now, before every lower source has finished. Must be true when every source below
  // src has finished (the transport never asks then).
  virtual bool ready(int32_t /*src*/, int64_t /*first*/, int64_t /*count*/) { return true; }
};

struct RowExchange {
  int64_t row_bytes = 0;               // > 0
  const int64_t* send_rows = nullptr;  // [W] rows this rank sends to each rank (itself included)
  const int64_t* recv_rows = nullptr;  // [W] rows this rank receives from each rank
  const char* what = "exchange";       // names the operation in timeout and peer errors
  // True when the consumer's writes do not depend on the order of sources (dispatch: every row
  // has its own place): the transport may then hand over rows of any source as soon as they
  // arrive, instead of finishing source s before s + 1 (see exchange_rows).
  bool any_source_order = false;
  // True when the consumer orders sources itself through RowConsumer::ready (combine: a row of
  // token t from source s may be added once every lower source holding t has delivered t): the
  // transport may then hand over a chunk of any source whose rows are ready, instead of
  // finishing source s before s + 1. The lowest unfinished source is always ready, so this never
  // waits where the strict order would not.
  bool source_gated = false;
};

class Transport {
 public:
  virtual ~Transport() = default;
  virtual int32_t rank() const = 0;
  virtual int32_t world_size() const = 0;
  virtual const char* name() const = 0;

  // Collective: every rank calls it with matching counts (send_rows of rank i to j equals
  // recv_rows of rank j from i). Ordering contract, which combine's deterministic fp32 sums rely
  // on: consume() sees the rows of each source in increasing row order, and all rows of source s
  // before any row of source s + 1 (unless exchange.any_source_order: then sources may
  // interleave, each still in increasing row order). produce() is called in increasing row
  // order per destination.
  // Errors (timeout, dead peer) throw nep::Error naming the rank, the peer and `what`.
  virtual void exchange_rows(const RowExchange& exchange, RowProducer& producer,
                             RowConsumer& consumer) = 0;
};

// Adapters so callers can pass lambdas: make_producer([&](int32_t dest, int64_t first,
// int64_t count, uint8_t* buf) {...}) and make_consumer likewise.
template <class Fn>
class FnProducer final : public RowProducer {
 public:
  explicit FnProducer(Fn fn) : fn_(std::move(fn)) {}
  void produce(int32_t dest, int64_t first, int64_t count, uint8_t* buf) override {
    fn_(dest, first, count, buf);
  }

 private:
  Fn fn_;
};

template <class Fn>
class FnConsumer final : public RowConsumer {
 public:
  explicit FnConsumer(Fn fn) : fn_(std::move(fn)) {}
  void consume(int32_t src, int64_t first, int64_t count, const uint8_t* buf) override {
    fn_(src, first, count, buf);
  }

 private:
  Fn fn_;
};

// A consumer with a ready() predicate, for exchanges marked source_gated.
template <class Fn, class Ready>
class GatedFnConsumer final : public RowConsumer {
 public:
  GatedFnConsumer(Fn fn, Ready ready) : fn_(std::move(fn)), ready_(std::move(ready)) {}
  void consume(int32_t src, int64_t first, int64_t count, const uint8_t* buf) override {
    fn_(src, first, count, buf);
  }
  bool ready(int32_t src, int64_t first, int64_t count) override {
    return ready_(src, first, count);
  }

 private:
  Fn fn_;
  Ready ready_;
};

template <class Fn>
FnProducer<Fn> make_producer(Fn fn) {
  return FnProducer<Fn>(std::move(fn));
}

template <class Fn>
FnConsumer<Fn> make_consumer(Fn fn) {
  return FnConsumer<Fn>(std::move(fn));
}

template <class Fn, class Ready>
GatedFnConsumer<Fn, Ready> make_gated_consumer(Fn fn, Ready ready) {
  return GatedFnConsumer<Fn, Ready>(std::move(fn), std::move(ready));
}

}  // namespace nep

#endif  // NATIVEEP_SRC_TRANSPORT_H_
