// The cuda-ipc export of a rank's buffer and the host check of connect (see ipc_peers.h).
#include "ipc_peers.h"

#include <unistd.h>

namespace nep {
namespace cuda {

void ipc_fill_header(IpcBlobHeader& h, const char (&magic)[8], int32_t rank, int32_t world,
                     int32_t device, void* memory) {
  std::memcpy(h.magic, magic, sizeof(h.magic));
  h.rank = rank;
  h.world = world;
  h.device = device;
  h.pid = (int32_t)getpid();
  gethostname(h.host, sizeof(h.host) - 1);
  check_cuda(cudaIpcGetMemHandle(&h.ipc, memory), "cudaIpcGetMemHandle");
}

void ipc_check_export_out(const uint8_t* out, int64_t cap) {
  if (out == nullptr) fail(NEP_ERR_INVALID_ARGUMENT, "out is null");
  if (cap < NEP_CUDA_EXPORT_BYTES)
    fail(NEP_ERR_INVALID_ARGUMENT, "cap=", cap,
         " is below NEP_CUDA_EXPORT_BYTES=", NEP_CUDA_EXPORT_BYTES);
}

void ipc_write_blob(const void* blob, size_t size, uint8_t* out) {
  std::memset(out, 0, NEP_CUDA_EXPORT_BYTES);
  std::memcpy(out, blob, size);
}

void IpcPeers::check_same_host(int32_t p, const IpcBlobHeader& theirs, const IpcBlobHeader& mine) {
  if (std::strcmp(theirs.host, mine.host) != 0)
    fail(NEP_ERR_PEER, "rank ", p, " runs on host '", theirs.host, "', this rank on '", mine.host,
         "': cuda-ipc joins ranks of one host");
}

}  // namespace cuda
}  // namespace nep
