// The cuda-ipc exchange of both modes (normal and low-latency): each rank exports a blob naming
// its buffer (a CUDA IPC handle, who made it, on which host), the caller all-gathers the blobs, and
// each rank opens every peer's buffer from them. A mode adds its own fields to the blob (after the
// header) and checks them on connect; everything else is done here, once.
#ifndef NATIVEEP_CUDA_IPC_PEERS_H_
#define NATIVEEP_CUDA_IPC_PEERS_H_

#include <cuda_runtime.h>

#include <cstdint>
#include <cstring>
#include <string>
#include <vector>

#include "ep_common.cuh"
#include "host_utils.h"
#include "nativeep/cuda_api.h"

namespace nep {
namespace cuda {

// First bytes of every exported blob.
struct IpcBlobHeader {
  char magic[8];  // which mode (and export format) wrote the blob
  int32_t rank, world, device, pid;
  char host[64];
  cudaIpcMemHandle_t ipc;
};

// Fills the header of this rank's blob: magic, identity, host name and the IPC handle of `memory`
// (on `device`, which must be current).
void ipc_fill_header(IpcBlobHeader& h, const char (&magic)[8], int32_t rank, int32_t world,
                     int32_t device, void* memory);

// Checks the caller's output of an export: out not null, cap >= NEP_CUDA_EXPORT_BYTES.
void ipc_check_export_out(const uint8_t* out, int64_t cap);

// Writes `size` bytes of blob into out, zero-padded to NEP_CUDA_EXPORT_BYTES.
void ipc_write_blob(const void* blob, size_t size, uint8_t* out);

// Every rank's buffer as mapped in this process: this rank's own, and the peers' once connected.
class IpcPeers {
 public:
  IpcPeers(uint8_t* own, int32_t rank) { bases_[rank] = own; }
  IpcPeers(IpcPeers&&) = default;
  IpcPeers& operator=(IpcPeers&&) = default;

  // Opens every peer's buffer from all_blobs (world blobs of NEP_CUDA_EXPORT_BYTES, blob p from
  // rank p) on `device`. Per blob, in this order: kind(p, blob) checks the magic (the mode's
  // message), then the rank order and world size are checked, then same(p, blob) checks the
  // mode's fields against this rank's, then the host. `owner` names the peer's buffer in the
  // message of a failed open ("" or e.g. "'s low-latency buffer"). Changes nothing on failure.
  template <class Blob, class Kind, class Same>
  void connect(const uint8_t* all_blobs, int64_t bytes, int32_t world, int32_t me, int32_t device,
               const char* owner, Kind&& kind, Same&& same) {
    static_assert(sizeof(Blob) <= NEP_CUDA_EXPORT_BYTES, "export blob too large");
    if (all_blobs == nullptr) fail(NEP_ERR_INVALID_ARGUMENT, "all_blobs is null");
    const int64_t want = (int64_t)world * NEP_CUDA_EXPORT_BYTES;
    if (bytes != want)
      fail(NEP_ERR_INVALID_ARGUMENT, "bytes=", bytes,
           " but world_size x NEP_CUDA_EXPORT_BYTES = ", want);
    DeviceGuard guard(device);
    Blob mine;
    std::memcpy(&mine, all_blobs + (size_t)me * NEP_CUDA_EXPORT_BYTES, sizeof(mine));
    mine.id.host[sizeof(mine.id.host) - 1] = '\0';
    std::vector<IpcMapping> maps;
    uint8_t* bases[kMaxRanks] = {};
    bases[me] = bases_[me];
    for (int p = 0; p < world; ++p) {
      Blob b;
      std::memcpy(&b, all_blobs + (size_t)p * NEP_CUDA_EXPORT_BYTES, sizeof(b));
      b.id.host[sizeof(b.id.host) - 1] = '\0';
      kind(p, b);
      if (b.id.rank != p)
        fail(NEP_ERR_PEER, "blob ", p, " comes from rank ", b.id.rank,
             " (blobs must be ordered by rank)");
      if (b.id.world != world)
        fail(NEP_ERR_PEER, "rank ", p, " has world_size=", b.id.world, ", this rank ", world);
      same(p, b);
      check_same_host(p, b.id, mine.id);
      if (p == me) continue;
      const std::string what = cat("cudaIpcOpenMemHandle of rank ", p, owner, " (device ",
                                   b.id.device, ", pid ", b.id.pid, ")");
      maps.emplace_back(b.id.ipc, what.c_str());
      bases[p] = static_cast<uint8_t*>(maps.back().get());
    }
    maps_ = std::move(maps);
    for (int p = 0; p < kMaxRanks; ++p) bases_[p] = bases[p];
  }

  uint8_t* base(int32_t rank) const { return bases_[rank]; }
  // Copies every rank's base (null past the world size) into out.
  void copy_bases(uint8_t* out[kMaxRanks]) const {
    for (int i = 0; i < kMaxRanks; ++i) out[i] = bases_[i];
  }

 private:
  static void check_same_host(int32_t p, const IpcBlobHeader& theirs, const IpcBlobHeader& mine);

  std::vector<IpcMapping> maps_;
  uint8_t* bases_[kMaxRanks] = {};
};

}  // namespace cuda
}  // namespace nep

#endif  // NATIVEEP_CUDA_IPC_PEERS_H_
