// The waits on the rings of the cuda-ipc transport, shared by the dispatch and combine kernels. A
// ring (s -> r, c) lives in r's buffer; its tail (messages s published) is written by s into r's
// buffer, its head (messages r consumed) by r into s's buffer, so each side waits on a counter in
// its own buffer (`local`). Messages are numbered from 0 over the buffer's life; message `abs`
// sits in slot abs % num_slots. Every wait is bounded (wait_geq) and returns false after a failure
// was reported.
#ifndef NATIVEEP_CUDA_RING_WAIT_CUH_
#define NATIVEEP_CUDA_RING_WAIT_CUH_

#include "device_utils.cuh"

namespace nep {
namespace cuda {

// Sender: waits until ring (me -> peer, channel) has a free slot for message `abs`, that is until
// peer has consumed message abs - num_slots. head_seen caches the last head read.
__device__ __forceinline__ bool wait_ring_room(uint8_t* local, int peer, int channel, u64 abs,
                                               long long num_slots, const WaitCtx& w,
                                               u64& head_seen) {
  const u64 need = abs + 1 > (u64)num_slots ? abs + 1 - (u64)num_slots : 0;
  if (head_seen >= need) return true;
  return wait_geq<true>(counter_at(local, Ctrl::kHead, peer, channel), need, w, peer, kCounterHead,
                        channel, &head_seen);
}

// Receiver: waits until message `abs` of ring (peer -> me, channel) is published. tail_seen caches
// the last tail read.
__device__ __forceinline__ bool wait_ring_message(uint8_t* local, int peer, int channel, u64 abs,
                                                  const WaitCtx& w, u64& tail_seen) {
  if (tail_seen >= abs + 1) return true;
  return wait_geq<true>(counter_at(local, Ctrl::kTail, peer, channel), abs + 1, w, peer,
                        kCounterTail, channel, &tail_seen);
}

// Sender, before a call: waits until peer has consumed every message this rank sent on ring
// (me -> peer, channel) in earlier calls (the rings may sit elsewhere in this call's geometry).
__device__ __forceinline__ void wait_ring_drained(uint8_t* local, int peer, int channel,
                                                  const WaitCtx& w) {
  const u64 sent = ld_volatile_u64(counter_at(local, Ctrl::kSent, peer, channel));
  u64 seen;
  if (sent != 0)
    wait_geq<true>(counter_at(local, Ctrl::kHead, peer, channel), sent, w, peer, kCounterDrain,
                   channel, &seen);
}

}  // namespace cuda
}  // namespace nep

#endif  // NATIVEEP_CUDA_RING_WAIT_CUH_
