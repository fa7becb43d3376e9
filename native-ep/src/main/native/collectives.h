// Collectives built on Transport::exchange_rows, so every transport gets them: all-gather of
// bytes and a deterministic all-reduce (sum) of float32 / float64 vectors.
#ifndef NATIVEEP_SRC_COLLECTIVES_H_
#define NATIVEEP_SRC_COLLECTIVES_H_

#include <cstdint>

#include "transport.h"

namespace nep {

// out [W * bytes] receives every rank's `bytes` bytes in rank order. No agreement round: the
// caller guarantees equal `bytes` on all ranks (used for agreement headers themselves).
void all_gather_bytes(Transport& transport, const void* in, int64_t bytes, void* out,
                      const char* what);

// Checked all-gather: agrees on the byte count first (NEP_ERR_PEER on mismatch).
void all_gather(Transport& transport, const void* in, int64_t bytes, void* out);

// In-place sum over ranks of data [count]. Reduce-scatter then all-gather: element i is summed
// by exactly one rank in rank order 0, 1, ..., W-1, so every rank gets bit-identical results and
// repeated calls give the same bits. Agrees on count and dtype first.
void all_reduce_sum(Transport& transport, float* data, int64_t count);
void all_reduce_sum(Transport& transport, double* data, int64_t count);

}  // namespace nep

#endif  // NATIVEEP_SRC_COLLECTIVES_H_
