#include "agreement.h"

#include <cstring>
#include <optional>
#include <string>

#include "collectives.h"
#include "error.h"

namespace nep {

const char* op_name(int32_t op) {
  switch (op) {
    case kOpNotify: return "nep_dispatch_notify";
    case kOpDispatch: return "nep_dispatch";
    case kOpCombine: return "nep_combine";
    case kOpAllGather: return "all_gather";
    case kOpAllReduce: return "all_reduce";
    case kOpLlCreate: return "nep_ll_buffer_create";
    default: return "unknown operation";
  }
}

std::vector<CallHeader> agree(Transport& transport, CallHeader mine,
                              const std::function<void()>& validate) {
  std::optional<Error> local;
  try {
    validate();
  } catch (const Error& e) {
    local = e;
    mine.status = e.code();
  }
  const int32_t w = transport.world_size();
  const int32_t me = transport.rank();
  std::vector<CallHeader> all(static_cast<size_t>(w));
  // Named after the operation, so that a peer that stalls or dies here is reported as such.
  const std::string what = std::string(op_name(mine.op)) + " (call agreement)";
  all_gather_bytes(transport, &mine, sizeof(CallHeader), all.data(), what.c_str());
  if (local) throw *local;
  for (int32_t r = 0; r < w; ++r) {
    if (all[r].op != mine.op) {
      fail(NEP_ERR_PEER, "rank ", me, " called ", op_name(mine.op), " but rank ", r, " called ",
           op_name(all[r].op), " at the same point");
    }
  }
  for (int32_t r = 0; r < w; ++r) {
    if (all[r].status != NEP_OK) {
      fail(NEP_ERR_PEER, op_name(mine.op), " failed on rank ", r, " (status ", all[r].status,
           "; see that rank's error); rank ", me, " stops too");
    }
  }
  return all;
}

void require_same(const std::vector<CallHeader>& headers, int index, const char* name,
                  int32_t my_rank) {
  for (size_t r = 0; r < headers.size(); ++r) {
    if (headers[r].values[index] != headers[my_rank].values[index]) {
      fail(NEP_ERR_PEER, op_name(headers[my_rank].op), ": rank ", r, " passed ", name, " = ",
           headers[r].values[index], " but rank ", my_rank, " passed ",
           headers[my_rank].values[index], "; all ranks must agree");
    }
  }
}

}  // namespace nep
