// A world of one rank: rows sent to self go through a bounded scratch buffer, so the producer /
// consumer path (encode at the sender, decode at the receiver) is the same as between processes.
#ifndef NATIVEEP_SRC_LOOPBACK_TRANSPORT_H_
#define NATIVEEP_SRC_LOOPBACK_TRANSPORT_H_

#include <cstdint>
#include <vector>

#include "transport.h"

namespace nep {

class LoopbackTransport final : public Transport {
 public:
  // chunk_bytes bounds the scratch buffer (it grows to one row if a row is larger).
  explicit LoopbackTransport(int64_t chunk_bytes = kDefaultChunkBytes);

  int32_t rank() const override { return 0; }
  int32_t world_size() const override { return 1; }
  const char* name() const override { return "loopback"; }
  void exchange_rows(const RowExchange& exchange, RowProducer& producer,
                     RowConsumer& consumer) override;

  // 256 KiB: the encoded chunk stays in L2 between encode and decode.
  static constexpr int64_t kDefaultChunkBytes = 256 * 1024;

 private:
  int64_t chunk_bytes_;
  std::vector<uint8_t> scratch_;
};

}  // namespace nep

#endif  // NATIVEEP_SRC_LOOPBACK_TRANSPORT_H_
