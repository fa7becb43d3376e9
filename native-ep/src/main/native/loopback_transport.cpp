#include "loopback_transport.h"

#include <algorithm>

#include "error.h"

namespace nep {

LoopbackTransport::LoopbackTransport(int64_t chunk_bytes) : chunk_bytes_(chunk_bytes) {
  if (chunk_bytes < 1) fail_invalid("loopback chunk_bytes = ", chunk_bytes, " must be >= 1");
}

void LoopbackTransport::exchange_rows(const RowExchange& ex, RowProducer& producer,
                                      RowConsumer& consumer) {
  if (ex.row_bytes <= 0) fail(NEP_ERR_INTERNAL, ex.what, ": row_bytes = ", ex.row_bytes);
  const int64_t rows = ex.send_rows[0];
  if (rows != ex.recv_rows[0]) {
    fail(NEP_ERR_INTERNAL, ex.what, ": loopback sends ", rows, " rows but expects ",
         ex.recv_rows[0]);
  }
  if (rows == 0) return;
  const int64_t chunk_rows = std::max<int64_t>(1, chunk_bytes_ / ex.row_bytes);
  const size_t need = static_cast<size_t>(std::min(chunk_rows, rows) * ex.row_bytes);
  if (scratch_.size() < need) scratch_.resize(need);
  for (int64_t first = 0; first < rows; first += chunk_rows) {
    const int64_t count = std::min(chunk_rows, rows - first);
    producer.produce(0, first, count, scratch_.data());
    consumer.consume(0, first, count, scratch_.data());
  }
}

}  // namespace nep
