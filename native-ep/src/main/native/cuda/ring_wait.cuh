// The rings of the cuda-ipc transport as the dispatch and combine kernels share them: the waits
// on their counters and the per-channel bookkeeping around them. A ring (s -> r, c) lives in r's
// buffer; its tail (messages s published) is written by s into r's buffer, its head (messages r
// consumed) by r into s's buffer, so each side waits on a counter in its own buffer (`local`).
// Messages are numbered from 0 over the buffer's life; message `abs` sits in slot abs % num_slots.
// Every wait is bounded (wait_geq) and returns false after a failure was reported.
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

// The block's threads count, over the tokens [t0, t1) of its channel, the tokens sent to each rank
// r (count[r]) and their smallest send position (first[r]). first and count are shared memory,
// INT_MAX and 0 before; the caller synchronises the block around the call.
__device__ __forceinline__ void count_channel_tokens(const RouteView& route, int world,
                                                     long long t0, long long t1, int* first,
                                                     int* count) {
  for (long long t = t0 + threadIdx.x; t < t1; t += kEpThreads) {
    for (int r = 0; r < world; ++r) {
      const int p = send_pos(route, world, t, r);
      if (p >= 0) {
        atomicMin(&first[r], p);
        atomicAdd(&count[r], 1);
      }
    }
  }
}

// After a batch of the token-ordered side (dispatch send, combine receive), thread r of the side
// (a peer) publishes the messages of its ring with r that the batch added: batch[r] (then
// cleared) more are done, and counter `counter` of that ring in r's buffer becomes base[r] + done.
// The caller synchronises the side's threads before the call.
__device__ __forceinline__ void publish_batch(uint8_t* const* peers, size_t counter, int world,
                                              int me, int channel, int* batch, const u64* base,
                                              u64& done) {
  const int r = threadIdx.x;
  if (r < world && r != me) {
    const int n = batch[r];
    if (n != 0) {
      batch[r] = 0;
      done += (u64)n;
      st_release_sys(counter_at(peers[r], counter, me, channel), base[r] + done);
    }
  }
}

// At the end of the token-ordered side, thread r of the side (a peer) records how far its ring
// with r got over the buffer's life: counter `counter` of that ring in this rank's buffer (local)
// becomes base[r] + count[r].
__device__ __forceinline__ void record_ring_end(uint8_t* local, size_t counter, int world, int me,
                                                int channel, const u64* base, const int* count) {
  const int r = threadIdx.x;
  if (r < world && r != me)
    st_volatile_u64(counter_at(local, counter, r, channel), base[r] + (u64)count[r]);
}

// The ring-ordered side of a kernel (dispatch receive, combine send) splits its warps into a group
// of `size` warps per peer; a warp left over, or every warp when there is no peer, has none.
struct PeerGroup {
  int index;    // in [0, world - 1)
  int peer;     // the rank it serves: the index-th rank other than this one
  int size;     // warps of each group
  int warp;     // this warp within its group
  int barrier;  // the group's named barrier (2 + index)
  int threads;  // the group's threads
};

// The group of warp `side_warp` (0-based within a side of `side_warps` warps); false for none.
__device__ __forceinline__ bool peer_group(int side_warp, int side_warps, int world, int me,
                                           PeerGroup& g) {
  const int npeers = world - 1;
  if (npeers == 0) return false;
  g.size = side_warps / npeers;
  g.index = side_warp / g.size;
  if (g.index >= npeers) return false;
  g.peer = g.index < me ? g.index : g.index + 1;
  g.warp = side_warp - g.index * g.size;
  g.barrier = 2 + g.index;
  g.threads = g.size * 32;
  return true;
}

}  // namespace cuda
}  // namespace nep

#endif  // NATIVEEP_CUDA_RING_WAIT_CUH_
