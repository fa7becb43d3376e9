// Collective calls first agree: every rank all-gathers a small header with the operation, its
// local validation status and the values that must match (hidden size, wire format, ...). A rank
// whose own arguments were bad still takes part, so its peers fail at once with NEP_ERR_PEER
// naming it instead of waiting for a timeout.
#ifndef NATIVEEP_SRC_AGREEMENT_H_
#define NATIVEEP_SRC_AGREEMENT_H_

#include <cstdint>
#include <functional>
#include <vector>

#include "transport.h"

namespace nep {

struct CallHeader {
  int32_t op = 0;      // which collective (an OpCode)
  int32_t status = 0;  // NEP_OK or the local validation error
  int64_t values[6] = {0, 0, 0, 0, 0, 0};
};

enum OpCode : int32_t {
  kOpNotify = 1,
  kOpDispatch = 2,
  kOpCombine = 3,
  kOpAllGather = 4,
  kOpAllReduce = 5,
  kOpLlCreate = 6,
};

const char* op_name(int32_t op);

// Runs `validate` (which throws nep::Error on bad local arguments), all-gathers the header and
// returns every rank's header. Rethrows this rank's own validation error after the exchange;
// throws NEP_ERR_PEER if another rank called a different operation or reported an error.
std::vector<CallHeader> agree(Transport& transport, CallHeader mine,
                              const std::function<void()>& validate);

// Throws NEP_ERR_PEER if headers[i].values[index] differs between ranks; `name` names the value.
void require_same(const std::vector<CallHeader>& headers, int index, const char* name,
                  int32_t my_rank);

}  // namespace nep

#endif  // NATIVEEP_SRC_AGREEMENT_H_
