/*
 * nativeep CUDA C ABI: the entry points of the CUDA plug-in (libnativeep_cuda.so), a library of its
 * own that the core never loads: Java loads it through JavaCPP (NativeEpCuda) when a GPU is used,
 * and the GPU test drivers and the benchmark link it.
 *
 * Conventions (as in c_api.h): every function that can fail returns an int status (NEP_OK = 0,
 * codes from c_api.h) and writes a NUL-terminated message into `err` (capacity `err_cap` bytes).
 * Nothing here aborts the process on bad input. Tensor arguments are raw device addresses of
 * contiguous row-major buffers; `stream` is a cudaStream_t as an integer (0 = the legacy default
 * stream, the one libtorch uses unless told otherwise).
 *
 * Process model: one process per GPU (a rank). Each rank creates a buffer on its device, exports a
 * small blob describing it (a CUDA IPC handle), all-gathers the blobs through whatever rendezvous
 * the caller has (the project's store, a pipe, a file) and connects. From then on the collective
 * calls (notify, dispatch, combine) must be made by every rank in the same order.
 *
 * Synchronisation: nep_cuda_dispatch_notify waits for the GPU (it must learn how many rows this
 * rank receives). Layout, dispatch and combine are asynchronous on `stream`; a failure on the GPU
 * (a wait that timed out, an index out of range) is reported by the next nep_cuda_sync or by the
 * next call on the buffer. Device-side waits never hang: after the buffer's timeout they stop and
 * report the rank, the peer, the counter and the channel they waited on. A buffer that reported
 * such an error is failed: every later call returns NEP_ERR_PEER or NEP_ERR_TIMEOUT with the
 * first message.
 */
#ifndef NATIVEEP_CUDA_API_H_
#define NATIVEEP_CUDA_API_H_

#include <stdint.h>

#include "nativeep/c_api.h"

#ifdef __cplusplus
extern "C" {
#endif

/* Element types of tensors on the device (inputs and outputs; the wire format is separate). */
#define NEP_DTYPE_FP32 0
#define NEP_DTYPE_BF16 1

/* Limits of the intranode (cuda-ipc) path. */
#define NEP_CUDA_MAX_RANKS 8
#define NEP_CUDA_MAX_CHANNELS 128       /* num_sms upper bound (one channel per SM) */
#define NEP_CUDA_MAX_LOCAL_EXPERTS 1024 /* E / W */
#define NEP_CUDA_MAX_TOPK 32
#define NEP_CUDA_EXPORT_BYTES 256 /* size of one rank's exported blob */

typedef struct nep_cuda_buffer nep_cuda_buffer; /* one rank's cuda-ipc buffer and its peers */
typedef struct nep_cuda_handle nep_cuda_handle; /* routing of one dispatch (layout + notify) */

/* ABI version of this header; bumped on any change of a signature below (2: device memory
 * helpers, the nccl transport and nep_cuda_all_reduce_sum added; 3: the low-latency mode,
 * nep_cuda_ll_*). */
int32_t nep_cuda_abi_version(void);

/* Number of CUDA devices visible to this process (0 when there is no driver); never fails. */
int32_t nep_cuda_device_count(void);

/* ---- Device memory (for callers without a CUDA runtime of their own, e.g. Java) ------------- */

/* cudaMalloc on `device`; *address receives the device address. */
int32_t nep_cuda_malloc(int32_t device, int64_t bytes, int64_t* address, char* err,
                        int64_t err_cap);
/* cudaFree of an address from nep_cuda_malloc (0 is ignored). */
int32_t nep_cuda_free(int32_t device, int64_t address, char* err, int64_t err_cap);
/* Synchronous copy of `bytes` between any two addresses (host or device, cudaMemcpyDefault). */
int32_t nep_cuda_memcpy(int32_t device, int64_t dst, int64_t src, int64_t bytes, char* err,
                        int64_t err_cap);
/* Synchronous cudaMemset of `bytes` at a device address to the byte `value`. */
int32_t nep_cuda_memset(int32_t device, int64_t address, int32_t value, int64_t bytes, char* err,
                        int64_t err_cap);

/* Facts about `device` for reports: its name (cudaDeviceProp.name, NUL-terminated, cut to
 * name_cap - 1 bytes), its memory (cudaMemGetInfo: *total_bytes, and *free_bytes, so total - free
 * is what every context and process holds on it, this one's CUDA context included) and its SM
 * count. Any output pointer may be null. Creates the device's primary context if none exists. */
int32_t nep_cuda_device_info(int32_t device, char* name, int64_t name_cap, int64_t* total_bytes,
                             int64_t* free_bytes, int32_t* sm_count, char* err, int64_t err_cap);

/* ---- Optimizer ------------------------------------------------------------------------------- */

/*
 * One AdamW step (decoupled weight decay) on four float32 device arrays of n elements, in place,
 * in one pass over memory, asynchronous on `stream`. Per element, with g = grad * grad_scale:
 *   weight   -= (weight * lr) * weight_decay
 *   mean      = beta1 * mean + (1 - beta1) * g
 *   variance  = beta2 * variance + (1 - beta2) * g * g
 *   weight   -= mean * lr_corrected / (sqrt(variance) + eps)
 * (the arithmetic of DJL's adamUpdate; lr_corrected carries the bias corrections). With zero_grad
 * != 0 the gradient is set to 0 after it is read. The four arrays must be distinct memory of
 * `device`, each holding n floats; the scalars finite, the betas in [0, 1).
 */
int32_t nep_cuda_adamw_f32(int32_t device, int64_t weight, int64_t grad, int64_t mean,
                           int64_t variance, int64_t n, float lr, float lr_corrected,
                           float weight_decay, float beta1, float beta2, float eps,
                           float grad_scale, int32_t zero_grad, int64_t stream, char* err,
                           int64_t err_cap);

/* ---- Buffer: creation, IPC exchange ---------------------------------------------------------- */

/*
 * Allocates `buffer_bytes` of device memory on `device` for rank `rank` of `world_size` and zeroes
 * it. timeout_ms bounds every device-side and host-side wait of later calls (0 = 30000).
 */
int32_t nep_cuda_buffer_create(int32_t rank, int32_t world_size, int32_t device,
                               int64_t buffer_bytes, int64_t timeout_ms, nep_cuda_buffer** out,
                               char* err, int64_t err_cap);

/* Writes this rank's blob (NEP_CUDA_EXPORT_BYTES bytes) into out; cap must be at least that. */
int32_t nep_cuda_buffer_export(const nep_cuda_buffer* buf, uint8_t* out, int64_t cap, char* err,
                               int64_t err_cap);

/*
 * Opens every peer's buffer from the all-gathered blobs: all_blobs holds world_size blobs of
 * NEP_CUDA_EXPORT_BYTES bytes, blob i from rank i. Checks that the blobs agree (world size, buffer
 * size, one blob per rank) and that this GPU can reach each peer's memory.
 */
int32_t nep_cuda_buffer_connect(nep_cuda_buffer* buf, const uint8_t* all_blobs, int64_t bytes,
                                char* err, int64_t err_cap);

/*
 * The nccl transport (ranks on different hosts): instead of nep_cuda_buffer_connect, every rank
 * calls nep_cuda_buffer_connect_nccl with the same NEP_CUDA_NCCL_ID_BYTES-byte id, made by rank 0
 * with nep_cuda_nccl_unique_id and passed to the others through the caller's rendezvous. NCCL is
 * loaded at run time with dlopen (NEP_NCCL_LIBRARY if set, else "libnccl.so.2"); without it these
 * calls fail with NEP_ERR_UNSUPPORTED and nothing else changes. In this first version every pair of
 * ranks, on one host or not, goes through NCCL (grouped send/recv of packed rows, in the wire
 * format); the semantics of notify, dispatch and combine are those of the cuda-ipc transport, and
 * num_sms is checked but not used. nep_cuda_buffer_connect_nccl blocks until every rank has joined.
 */
#define NEP_CUDA_NCCL_ID_BYTES 128
#define NEP_CUDA_TRANSPORT_NONE 0
#define NEP_CUDA_TRANSPORT_IPC 1
#define NEP_CUDA_TRANSPORT_NCCL 2

/* NCCL's version code (e.g. 22809) when libnccl can be loaded, else NEP_ERR_UNSUPPORTED. */
int32_t nep_cuda_nccl_version(int32_t* version, char* err, int64_t err_cap);
int32_t nep_cuda_nccl_unique_id(uint8_t* out, int64_t cap, char* err, int64_t err_cap);
int32_t nep_cuda_buffer_connect_nccl(nep_cuda_buffer* buf, const uint8_t* unique_id, int64_t bytes,
                                     char* err, int64_t err_cap);
/* NEP_CUDA_TRANSPORT_* of a buffer (NONE before a connect). */
int32_t nep_cuda_buffer_transport(const nep_cuda_buffer* buf);
/*
 * In-place sum over all ranks of data [count] (NEP_DTYPE_FP32 or NEP_DTYPE_BF16, device memory):
 * the dense-gradient all-reduce. Needs the nccl transport. Asynchronous on `stream`; nep_cuda_sync
 * reports a failure.
 */
int32_t nep_cuda_all_reduce_sum(nep_cuda_buffer* buf, int64_t data, int64_t count, int32_t dtype,
                                int64_t stream, char* err, int64_t err_cap);

/* Device timeout of later calls, in milliseconds (> 0). */
int32_t nep_cuda_buffer_set_timeout(nep_cuda_buffer* buf, int64_t timeout_ms, char* err,
                                    int64_t err_cap);

int32_t nep_cuda_buffer_rank(const nep_cuda_buffer* buf);
int32_t nep_cuda_buffer_world_size(const nep_cuda_buffer* buf);
int32_t nep_cuda_buffer_device(const nep_cuda_buffer* buf);
/* Number of multiprocessors of the buffer's device (the upper bound of num_sms). */
int32_t nep_cuda_buffer_num_device_sms(const nep_cuda_buffer* buf);

/*
 * Device address (as seen by this rank) of a scratch area of `peer`'s buffer and its size: the
 * ring region, which holds no state between calls. For benchmarks of raw NVLink copies only; do
 * not write into it while a dispatch or combine may be running.
 */
int32_t nep_cuda_buffer_peer_scratch(const nep_cuda_buffer* buf, int32_t peer, int64_t* address,
                                     int64_t* bytes, char* err, int64_t err_cap);

/*
 * Waits (at most the buffer's timeout) until all work queued on `stream` is done, then reports the
 * first device-side error of the buffer, if any.
 */
int32_t nep_cuda_sync(nep_cuda_buffer* buf, int64_t stream, char* err, int64_t err_cap);

/* Releases the buffer and the mappings of peers' buffers. Call after a host barrier. */
void nep_cuda_buffer_destroy(nep_cuda_buffer* buf);

/* ---- Layout ---------------------------------------------------------------------------------- */

/*
 * topk_idx [T, K] int64 in [-1, E), experts in contiguous blocks of E / W per rank. Writes
 * tokens_per_rank [W] int32 (a token counts once per rank), tokens_per_expert [E] int32 and
 * is_token_in_rank [T, W] uint8 (0/1), all device memory; any may be 0 to skip it. Asynchronous;
 * an index out of range or a duplicate in a row is reported by the next sync.
 */
int32_t nep_cuda_layout(nep_cuda_buffer* buf, int64_t topk_idx, int64_t num_tokens,
                        int32_t num_topk, int32_t num_experts, int64_t tokens_per_rank,
                        int64_t tokens_per_expert, int64_t is_token_in_rank, int64_t stream,
                        char* err, int64_t err_cap);

/* ---- Notify and the handle ------------------------------------------------------------------- */

/*
 * Computes the layout of topk_idx [T, K] on the GPU, exchanges the counts with every rank over
 * NVLink and waits for the result: the handle holds the rank prefix matrix, the number of rows
 * this rank receives (R) and the received tokens per local expert, raw and padded up to a multiple
 * of expert_alignment (>= 1). Collective; every rank passes the same num_topk and num_experts
 * (checked: a disagreement or a bad index on any rank fails the call on every rank).
 */
int32_t nep_cuda_dispatch_notify(nep_cuda_buffer* buf, int64_t topk_idx, int64_t num_tokens,
                                 int32_t num_topk, int32_t num_experts, int32_t expert_alignment,
                                 int64_t stream, nep_cuda_handle** out, char* err, int64_t err_cap);

int64_t nep_cuda_handle_num_tokens(const nep_cuda_handle* h);        /* T */
int64_t nep_cuda_handle_num_recv(const nep_cuda_handle* h);          /* R */
int32_t nep_cuda_handle_num_topk(const nep_cuda_handle* h);          /* K */
int32_t nep_cuda_handle_num_experts(const nep_cuda_handle* h);       /* E */
int32_t nep_cuda_handle_num_local_experts(const nep_cuda_handle* h); /* E / W */
/* Host copies: recv_tokens_per_expert [E/W] (aligned or raw), rank_prefix_matrix [W, W]
 * ([i][j] = rows ranks 0..i send to rank j), tokens of each rank [W]. */
void nep_cuda_handle_recv_tokens_per_expert(const nep_cuda_handle* h, int32_t aligned,
                                            int32_t* out);
void nep_cuda_handle_rank_prefix_matrix(const nep_cuda_handle* h, int32_t* out);
void nep_cuda_handle_rank_num_tokens(const nep_cuda_handle* h, int32_t* out);
/* Device copies into host memory (synchronous): is_token_in_rank [T, W] uint8, and
 * recv_src_idx [R] int32 (the source token index of each received row; valid after a dispatch). */
int32_t nep_cuda_handle_copy_is_token_in_rank(const nep_cuda_handle* h, uint8_t* out, char* err,
                                              int64_t err_cap);
int32_t nep_cuda_handle_copy_recv_src_idx(const nep_cuda_handle* h, int32_t* out, char* err,
                                          int64_t err_cap);
/* Frees the handle's device memory (stream-ordered on the stream it was created on). */
void nep_cuda_handle_destroy(nep_cuda_handle* h);

/* ---- Dispatch and combine -------------------------------------------------------------------- */

/*
 * Sends each row of x [T, hidden] (dtype x_dtype) once to every rank holding one of its experts,
 * cast to `wire` on the way (NEP_WIRE_* of c_api.h; FP8 and MXFP8 casts are fused here) and
 * widened on receipt into recv_x [R, hidden] of dtype recv_dtype, rows ordered by source rank, then
 * source token index. topk_idx [T, K] int64 and topk_weights [T, K] float32 are optional (0): when
 * given, recv_topk_idx [R, K] int64 gets local expert ids in [0, E/W) or -1 and recv_topk_weights
 * [R, K] float32 the weights with zeros where the expert is not local. The first dispatch with a
 * handle also fills its recv_src_idx; calling again with the same handle and other data is the
 * cached dispatch. num_sms: multiprocessors used (1..min(NEP_CUDA_MAX_CHANNELS, device SMs)).
 * Asynchronous, collective.
 */
int32_t nep_cuda_dispatch(nep_cuda_buffer* buf, nep_cuda_handle* h, int64_t x, int32_t x_dtype,
                          int64_t hidden, int32_t wire, int64_t topk_idx, int64_t topk_weights,
                          int64_t recv_x, int32_t recv_dtype, int64_t recv_topk_idx,
                          int64_t recv_topk_weights, int32_t num_sms, int64_t stream, char* err,
                          int64_t err_cap);

/*
 * nep_cuda_dispatch that keeps the received rows as they travelled (NEP_WIRE_FP8 or NEP_WIRE_MXFP8
 * only), for consumers that read the wire's encoding directly (the grouped FP8 GEMMs of
 * gemm_api.h): recv_rows [R, recv_row_bytes] uint8, 16-byte aligned, receives each row's e4m3
 * elements at bytes [0, hidden) and its scales from roundup(hidden, 16) (FP8: fp32 per 128
 * channels, MXFP8: E8M0 per 32), the row padded to a multiple of 16 bytes (padding bytes are left
 * as they were); recv_row_bytes must be that size. Rows land where nep_cuda_dispatch puts them
 * (by source rank, then source token); the other arguments, the ordering on `stream` and the
 * cached dispatch are as there, and every rank may pick either call. nep_cuda_decode_wire_rows
 * turns the rows into what nep_cuda_dispatch writes as float32, bit for bit. Asynchronous,
 * collective.
 */
int32_t nep_cuda_dispatch_wire(nep_cuda_buffer* buf, nep_cuda_handle* h, int64_t x, int32_t x_dtype,
                               int64_t hidden, int32_t wire, int64_t topk_idx, int64_t topk_weights,
                               int64_t recv_rows, int64_t recv_row_bytes, int64_t recv_topk_idx,
                               int64_t recv_topk_weights, int32_t num_sms, int64_t stream,
                               char* err, int64_t err_cap);

/*
 * Decodes rows [rows, row_bytes] in the layout of nep_cuda_dispatch_wire (device memory, 16-byte
 * aligned) into out [rows, hidden] float32 on `device`, asynchronously on `stream`; hidden a
 * multiple of the wire's scaling block (128 FP8, 32 MXFP8), row_bytes the layout's row size.
 */
int32_t nep_cuda_decode_wire_rows(int32_t device, int32_t wire, int64_t in, int64_t rows,
                                  int64_t hidden, int64_t row_bytes, int64_t out, int64_t stream,
                                  char* err, int64_t err_cap);

/*
 * y [R, hidden] (dtype y_dtype), one row per received token. out [T, hidden] (dtype out_dtype):
 * out[t] = sum over the ranks r that received t, in rank order, of y_r[slot(t, r)], each term cast
 * to `wire` (NEP_WIRE_BF16 or NEP_WIRE_FP32) and accumulated in fp32; tokens sent nowhere get
 * zeros. With y_weights [R, K] float32 != 0, out_weights [T, K] float32 gets the same sum.
 * Needs a handle that has been used by a dispatch. Asynchronous, collective.
 */
int32_t nep_cuda_combine(nep_cuda_buffer* buf, const nep_cuda_handle* h, int64_t y, int32_t y_dtype,
                         int64_t hidden, int32_t wire, int64_t y_weights, int64_t out,
                         int32_t out_dtype, int64_t out_weights, int32_t num_sms, int64_t stream,
                         char* err, int64_t err_cap);

/* ---- Low-latency mode (decoding) ------------------------------------------------------------- */

/*
 * The cuda-ipc low-latency (LL) mode: the CPU contract of c_api.h "Low-latency mode" on GPUs of one
 * host, without any host synchronisation. Fixed receive buffers sized by max_tokens_per_rank (Tm),
 * one message per (token, expert) pair (-1 slots are never sent), no exchange of counts before the
 * data, the weighted sum of combine done at the source rank in fp32, send and receive as separate
 * calls (the hook) so other work runs between them.
 *
 * Shapes: T tokens of a call (T <= Tm), H hidden, K top-k (K <= max_topk), El = E / W local
 * experts, N = W * Tm rows per local expert.
 *
 * Memory: every rank allocates one device buffer (nep_cuda_ll_buffer_bytes) shared through CUDA
 * IPC exactly like the normal mode (export, all-gather the blobs, connect). It is separate from the
 * normal mode's buffer, so normal and LL calls may alternate freely. It is double-buffered: call n
 * (each dispatch or combine send counts as one call, numbered from 1) uses half n % 2, so at most
 * two calls may await their receive; a third send fails with NEP_ERR_INVALID_ARGUMENT naming the
 * pending call and changes nothing. Every rank must issue the same sequence of LL sends.
 *
 * No host synchronisation: counts, routing and call numbers stay on the device; every call only
 * enqueues kernels on `stream` (send and receive of one buffer must be ordered, e.g. one stream),
 * so a whole decode step (dispatch send + receive, experts, combine send + receive) can be captured
 * in a CUDA graph and replayed; every replay is a new step. A send waits on the device only when a
 * peer has not yet received the call two before on the same half. Device-side waits end after the
 * buffer's timeout and report (rank, peer, counter); a rank that fails makes the ranks waiting for
 * it stop with NEP_ERR_PEER. Such failures, and a bad topk_idx (checked on the device: values in
 * [-1, E), no repeats in a row), are reported by nep_cuda_ll_sync or the next call, and leave the
 * buffer unusable (every rank must re-create it). Argument errors found on the host are reported
 * at once and change nothing. One thread at a time per buffer. Destroy ops and handles before
 * their buffer.
 */
typedef struct nep_cuda_ll_buffer nep_cuda_ll_buffer;
typedef struct nep_cuda_ll_op nep_cuda_ll_op;         /* an issued send awaiting its receive */
typedef struct nep_cuda_ll_handle nep_cuda_ll_handle; /* routing of one LL dispatch */

/* flags of nep_cuda_ll_dispatch_send (values as NEP_LL_* of c_api.h) */
#define NEP_CUDA_LL_ROUND_SCALE 1 /* NEP_WIRE_FP8 with scales rounded up to powers of two */
/* nep_cuda_ll_op_kind */
#define NEP_CUDA_LL_DISPATCH 1
#define NEP_CUDA_LL_COMBINE 2

/*
 * Allocates this rank's LL buffer on `device`. max_wire: the widest wire format any call will use
 * (sizes the row slots); max_topk: the largest K. timeout_ms bounds every device-side wait (0 =
 * 30000). Every rank passes the same values (checked at connect). E * ceil(Tm / 32) * 4 bytes must
 * fit in shared memory (NEP_ERR_CAPACITY otherwise).
 */
int32_t nep_cuda_ll_buffer_create(int32_t rank, int32_t world_size, int32_t device,
                                  int64_t max_tokens_per_rank, int64_t hidden, int32_t num_experts,
                                  int32_t max_topk, int32_t max_wire, int64_t timeout_ms,
                                  nep_cuda_ll_buffer** out, char* err, int64_t err_cap);
/* Writes this rank's blob (NEP_CUDA_EXPORT_BYTES bytes) into out. */
int32_t nep_cuda_ll_buffer_export(const nep_cuda_ll_buffer* buf, uint8_t* out, int64_t cap,
                                  char* err, int64_t err_cap);
/* Opens every peer's LL buffer from the all-gathered blobs (world_size x NEP_CUDA_EXPORT_BYTES). */
int32_t nep_cuda_ll_buffer_connect(nep_cuda_ll_buffer* buf, const uint8_t* all_blobs, int64_t bytes,
                                   char* err, int64_t err_cap);
/* Blocks (SMs) the LL kernels use, 1..device SMs (default: all). */
int32_t nep_cuda_ll_buffer_set_num_sms(nep_cuda_ll_buffer* buf, int32_t num_sms, char* err,
                                       int64_t err_cap);
int32_t nep_cuda_ll_buffer_set_timeout(nep_cuda_ll_buffer* buf, int64_t timeout_ms, char* err,
                                       int64_t err_cap);
int64_t nep_cuda_ll_buffer_max_tokens_per_rank(const nep_cuda_ll_buffer* buf); /* Tm; -1 for null */
int64_t nep_cuda_ll_buffer_hidden(const nep_cuda_ll_buffer* buf);
int32_t nep_cuda_ll_buffer_num_experts(const nep_cuda_ll_buffer* buf);
int32_t nep_cuda_ll_buffer_num_local_experts(const nep_cuda_ll_buffer* buf);
int32_t nep_cuda_ll_buffer_max_topk(const nep_cuda_ll_buffer* buf);
int32_t nep_cuda_ll_buffer_max_wire(const nep_cuda_ll_buffer* buf);
int32_t nep_cuda_ll_buffer_rank(const nep_cuda_ll_buffer* buf);
int32_t nep_cuda_ll_buffer_world_size(const nep_cuda_ll_buffer* buf);
int32_t nep_cuda_ll_buffer_device(const nep_cuda_ll_buffer* buf);
int32_t nep_cuda_ll_buffer_num_sms(const nep_cuda_ll_buffer* buf);
int64_t nep_cuda_ll_buffer_bytes(
    const nep_cuda_ll_buffer* buf); /* device memory of the shared buffer */
/*
 * Waits (at most the timeout) for the work queued on `stream`, then reports the first device-side
 * error of the buffer, if any.
 */
int32_t nep_cuda_ll_sync(nep_cuda_ll_buffer* buf, int64_t stream, char* err, int64_t err_cap);
/*
 * Test hook: fills this rank's data halves with 0xFF bytes (asynchronously on `stream`). Call only
 * while no peer can be writing into them (between host barriers, no send pending anywhere).
 */
int32_t nep_cuda_ll_buffer_poison(nep_cuda_ll_buffer* buf, int64_t stream, char* err,
                                  int64_t err_cap);
void nep_cuda_ll_buffer_destroy(nep_cuda_ll_buffer* buf);

/*
 * Send phase of a dispatch: x [T, H] (x_dtype NEP_DTYPE_BF16 or NEP_DTYPE_FP32), topk_idx [T, K]
 * int64 in [-1, E) without repeats in a row, cast to `wire` (NEP_WIRE_*, each rank may choose its
 * own) on the way; flags 0 or NEP_CUDA_LL_ROUND_SCALE (FP8 only). T > max_tokens_per_rank fails
 * with NEP_ERR_CAPACITY naming both. Enqueued on `stream`; *out receives the pending op.
 */
int32_t nep_cuda_ll_dispatch_send(nep_cuda_ll_buffer* buf, int64_t x, int32_t x_dtype,
                                  int64_t num_tokens, int64_t hidden, int64_t topk_idx,
                                  int32_t num_topk, int32_t wire, int32_t flags, int64_t stream,
                                  nep_cuda_ll_op** out, char* err, int64_t err_cap);
/*
 * Receive phase of a dispatch (the hook), enqueued on `stream`: waits on the device for every
 * rank's messages and writes (device memory)
 *   recv_x            [El, N, H] of recv_dtype: rows of local expert e in [0, recv_count[e])
 *                     ordered by source rank, then source token; later rows are left untouched;
 *   recv_count        [El] int32;
 *   recv_src_info     [El, N] int32 (optional, 0 to skip): the row's token index on its source
 *                     rank, -1 past recv_count;
 *   recv_layout_range [El, W] int64 (optional): (begin << 32) | count of the rows from each rank.
 * *out_handle receives the routing nep_cuda_ll_combine_send needs; it stays valid until a later
 * dispatch send reuses its half (two dispatches later when every call is a dispatch, the next
 * dispatch when dispatches and combines alternate).
 */
int32_t nep_cuda_ll_dispatch_recv(nep_cuda_ll_op* op, int64_t recv_x, int32_t recv_dtype,
                                  int64_t recv_count, int64_t recv_src_info,
                                  int64_t recv_layout_range, int64_t stream,
                                  nep_cuda_ll_handle** out_handle, char* err, int64_t err_cap);
/*
 * Send phase of a combine: y [El, N, H] (y_dtype; row i of expert e answers dispatch row i of e,
 * only rows below recv_count are read) goes back to the source ranks in `wire` (NEP_WIRE_BF16 is
 * the usual choice). topk_idx [T, K] int64 and topk_weights [T, K] float32 are this rank's routing
 * of the dispatch (topk_idx as dispatched); they are read by the receive, so keep them unchanged
 * until it has run.
 */
int32_t nep_cuda_ll_combine_send(nep_cuda_ll_buffer* buf, const nep_cuda_ll_handle* h, int64_t y,
                                 int32_t y_dtype, int64_t topk_idx, int64_t topk_weights,
                                 int32_t wire, int64_t stream, nep_cuda_ll_op** out, char* err,
                                 int64_t err_cap);
/*
 * Receive phase of a combine: out [T, H] (out_dtype), out[t] = sum over k with topk_idx[t][k] >= 0,
 * in slot order, of topk_weights[t][k] * y_row(t, k), accumulated in fp32 (no fused multiply-add);
 * zeros where no slot is set.
 */
int32_t nep_cuda_ll_combine_recv(nep_cuda_ll_op* op, int64_t out, int32_t out_dtype, int64_t stream,
                                 char* err, int64_t err_cap);

int32_t nep_cuda_ll_op_kind(const nep_cuda_ll_op* op);       /* NEP_CUDA_LL_*; -1 for null */
int32_t nep_cuda_ll_op_is_pending(const nep_cuda_ll_op* op); /* 1 until its receive is enqueued */
int64_t nep_cuda_ll_op_call_index(
    const nep_cuda_ll_op* op); /* n, 1-based, the same on every rank */
int64_t nep_cuda_ll_op_num_tokens(const nep_cuda_ll_op* op);
/*
 * Destroys op. A pending op is abandoned: its receive is enqueued without outputs on the stream of
 * its send, so the half is released for the peers.
 */
void nep_cuda_ll_op_destroy(nep_cuda_ll_op* op);

int64_t nep_cuda_ll_handle_num_tokens(const nep_cuda_ll_handle* h); /* T this rank dispatched */
int32_t nep_cuda_ll_handle_num_topk(const nep_cuda_ll_handle* h);
int64_t nep_cuda_ll_handle_call_index(const nep_cuda_ll_handle* h); /* its dispatch's call n */
void nep_cuda_ll_handle_destroy(nep_cuda_ll_handle* h);

#ifdef __cplusplus
}
#endif

#endif /* NATIVEEP_CUDA_API_H_ */
