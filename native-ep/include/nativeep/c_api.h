/*
 * nativeep C ABI: the one surface that Java (through JavaCPP), native test drivers and benchmark
 * programs call. Every function that can fail returns an int status (NEP_OK = 0) and writes a
 * NUL-terminated message into the caller's buffer `err` of capacity `err_cap` bytes. Nothing here
 * aborts the process on bad input.
 *
 * Tensor arguments are raw addresses of contiguous row-major buffers. Shapes use:
 *   T  tokens on this rank, H hidden size, K top-k slots, E experts (global), W world size,
 *   El = E / W local experts, R tokens received by this rank.
 */
#ifndef NATIVEEP_C_API_H_
#define NATIVEEP_C_API_H_

#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

/* Status codes. */
#define NEP_OK 0
#define NEP_ERR_INVALID_ARGUMENT 1 /* a shape, index, dtype or range check failed */
#define NEP_ERR_CAPACITY 2         /* a size exceeds a buffer or a documented limit */
#define NEP_ERR_TIMEOUT 3          /* a wait expired; the message names rank, peer and counter */
#define NEP_ERR_PEER 4             /* a peer failed, left or disagreed on a collective call */
#define NEP_ERR_UNSUPPORTED 5      /* the feature is not built in or not available here */
#define NEP_ERR_INTERNAL 6         /* a system call or an invariant failed */

/* Wire formats: how rows travel between ranks. Tensors stay float32 on both ends. */
#define NEP_WIRE_FP32 0  /* 4 bytes per channel */
#define NEP_WIRE_BF16 1  /* 2 bytes per channel, round to nearest even */
#define NEP_WIRE_FP8 2   /* e4m3 + one fp32 scale per 128 channels, scale = amax / 448 */
#define NEP_WIRE_MXFP8 3 /* e4m3 + one E8M0 scale per 32 channels (OCP MX v1.0) */

/* Opaque objects. */
typedef struct nep_comm nep_comm; /* a rank's view of the group and its transport */
typedef struct nep_handle
    nep_handle; /* routing of one dispatch, reused by combine and cached dispatch */

/* ABI version; bumped on any change of a signature below. */
int32_t nep_abi_version(void);

/* ---- Wire codecs ----------------------------------------------------------------------------- */

/* Bytes one row of `hidden` channels takes on the wire; -1 if wire or hidden is invalid. */
int64_t nep_wire_row_bytes(int32_t wire, int64_t hidden);

/* Encodes x [rows, hidden] float32 into out [rows, nep_wire_row_bytes(wire, hidden)] bytes. */
int32_t nep_encode_rows(int32_t wire, int64_t x, int64_t rows, int64_t hidden, int64_t out,
                        char* err, int64_t err_cap);

/* Decodes in [rows, row_bytes] into out [rows, hidden] float32. */
int32_t nep_decode_rows(int32_t wire, int64_t in, int64_t rows, int64_t hidden, int64_t out,
                        char* err, int64_t err_cap);

/* ---- Layout ---------------------------------------------------------------------------------- */

/*
 * topk_idx [T, K] int64 in [-1, E); experts split in contiguous blocks of E / W.
 * Writes tokens_per_rank [W] int32 (a token counts once per rank), tokens_per_expert [E] int32 and
 * is_token_in_rank [T, W] uint8 (0/1). Any output address may be 0 to skip it.
 */
int32_t nep_layout(int64_t topk_idx, int64_t num_tokens, int32_t num_topk, int32_t num_experts,
                   int32_t world_size, int64_t tokens_per_rank, int64_t tokens_per_expert,
                   int64_t is_token_in_rank, char* err, int64_t err_cap);

/* ---- Communicators --------------------------------------------------------------------------- */

/* A world of one rank: dispatch and combine run through the loopback transport. */
int32_t nep_comm_create_loopback(nep_comm** out, char* err, int64_t err_cap);
int32_t nep_comm_rank(const nep_comm* comm);
int32_t nep_comm_world_size(const nep_comm* comm);
void nep_comm_destroy(nep_comm* comm);

/* ---- Dispatch and combine (DeepEP normal-mode semantics) ------------------------------------- */

/*
 * Notify step: computes the layout of topk_idx [T, K], exchanges counts with every rank and
 * returns a handle holding the prefix matrix, the send lists and the received source indices.
 * expert_alignment >= 1 pads each local expert's received count up to a multiple of it.
 * Collective: every rank of comm calls it with the same num_topk and num_experts.
 */
int32_t nep_dispatch_notify(nep_comm* comm, int64_t topk_idx, int64_t num_tokens, int32_t num_topk,
                            int32_t num_experts, int32_t expert_alignment, nep_handle** out,
                            char* err, int64_t err_cap);

int64_t nep_handle_num_tokens(const nep_handle* h);        /* T */
int64_t nep_handle_num_recv(const nep_handle* h);          /* R */
int32_t nep_handle_num_topk(const nep_handle* h);          /* K */
int32_t nep_handle_num_experts(const nep_handle* h);       /* E */
int32_t nep_handle_num_local_experts(const nep_handle* h); /* El */
int32_t nep_handle_world_size(const nep_handle* h);        /* W */
/* Copies recv_tokens_per_expert [El] int32, aligned (padded) or raw. */
void nep_handle_recv_tokens_per_expert(const nep_handle* h, int32_t aligned, int32_t* out);
/* rank_prefix_matrix [W, W] int32: [i][j] = tokens sent by ranks 0..i to rank j. */
void nep_handle_rank_prefix_matrix(const nep_handle* h, int32_t* out);
/* recv_src_idx [R] int32: index of each received row's token on its source rank. */
void nep_handle_recv_src_idx(const nep_handle* h, int32_t* out);
/* is_token_in_rank [T, W] uint8 of this rank's tokens. */
void nep_handle_is_token_in_rank(const nep_handle* h, uint8_t* out);
void nep_handle_destroy(nep_handle* h);

/*
 * Moves x [T, hidden] float32 to the ranks holding its experts; recv_x [R, hidden] receives rows
 * ordered by source rank, then source token index. With recv_topk_idx != 0 writes the received
 * top-k as local expert ids in [0, El) or -1 ([R, K] int64). With topk_weights != 0 (and
 * recv_topk_weights != 0) moves the weights [T, K] float32, zeroing slots of non-local experts.
 * Cached dispatch: call again with the same handle and another x.
 * Collective.
 */
int32_t nep_dispatch(nep_comm* comm, const nep_handle* h, int64_t x, int64_t hidden, int32_t wire,
                     int64_t topk_weights, int64_t recv_x, int64_t recv_topk_idx,
                     int64_t recv_topk_weights, char* err, int64_t err_cap);

/*
 * nep_dispatch that keeps the received rows in their wire form, for consumers that read the wire's
 * encoding directly (the grouped FP8 GEMMs of gemm_api.h take NEP_WIRE_FP8 and NEP_WIRE_MXFP8 rows
 * as they are): recv_rows [R, recv_row_bytes] uint8 receives each row's wire bytes unchanged (the
 * codec's layout: hidden e4m3 elements, then the scales, unpadded), ordered as recv_x would be.
 * wire must be NEP_WIRE_FP8 or NEP_WIRE_MXFP8 and recv_row_bytes must equal
 * nep_wire_row_bytes(wire, hidden); NEP_ERR_INVALID_ARGUMENT names the value otherwise, on every
 * rank (the check is part of the call's agreement). Every other argument, and the choice between
 * this and nep_dispatch, is per rank: peers may decode the same rows into float32. nep_decode_rows
 * turns the rows into what nep_dispatch would have written, bit for bit. Collective.
 */
int32_t nep_dispatch_wire(nep_comm* comm, const nep_handle* h, int64_t x, int64_t hidden,
                          int32_t wire, int64_t topk_weights, int64_t recv_rows,
                          int64_t recv_row_bytes, int64_t recv_topk_idx, int64_t recv_topk_weights,
                          char* err, int64_t err_cap);

/*
 * y [R, hidden] float32, one row per received token (already weighted and summed over local
 * experts). out [T, hidden] float32: out[t] = sum over ranks r that received t of y_r[slot(t, r)],
 * accumulated in fp32 in rank order. With y_weights [R, K] != 0, out_weights [T, K] gets the same
 * sum (how the gradient of the routing weights returns). Tokens sent nowhere get zeros.
 * Collective.
 */
int32_t nep_combine(nep_comm* comm, const nep_handle* h, int64_t y, int64_t hidden, int32_t wire,
                    int64_t y_weights, int64_t out, int64_t out_weights, char* err,
                    int64_t err_cap);

/* ---- Rendezvous store ------------------------------------------------------------------------ */

/*
 * A small key-value store over TCP for bootstrap: rank 0 (or the launcher) serves it on
 * MASTER_ADDR:MASTER_PORT for the whole job; every rank, rank 0 included, connects as a client.
 * Clients present the job token on connect. The wire protocol is documented in
 * native-ep/src/main/native/store_protocol.h so other clients (Java) can speak it directly.
 * Limits: keys up to 1024 bytes, values up to 1 MiB.
 */
typedef struct nep_store_server nep_store_server;
typedef struct nep_store nep_store;

/* Serves on host:port; port 0 picks a free port (read it with nep_store_server_port). */
int32_t nep_store_server_create(const char* host, int32_t port, const char* job_token,
                                nep_store_server** out, char* err, int64_t err_cap);
int32_t nep_store_server_port(const nep_store_server* server); /* -1 for null */
void nep_store_server_destroy(nep_store_server* server);

/* Connects, retrying until timeout_ms while the server is not up; timeout_ms also bounds each
 * later request. One request at a time per client. */
int32_t nep_store_connect(const char* host, int32_t port, const char* job_token, int64_t timeout_ms,
                          nep_store** out, char* err, int64_t err_cap);
int32_t nep_store_set(nep_store* store, const char* key, const char* value, int64_t value_len,
                      char* err, int64_t err_cap);
/* Copies the value into value[0, cap) and its size into *value_len; *value_len = -1 when the key
 * does not exist. NEP_ERR_CAPACITY when the value is larger than cap (*value_len says how large).
 */
int32_t nep_store_get(nep_store* store, const char* key, char* value, int64_t cap,
                      int64_t* value_len, char* err, int64_t err_cap);
/* Like get, but blocks until the key exists; NEP_ERR_TIMEOUT after timeout_ms names the key. */
int32_t nep_store_wait(nep_store* store, const char* key, int64_t timeout_ms, char* value,
                       int64_t cap, int64_t* value_len, char* err, int64_t err_cap);
/* Adds delta to the integer at key (a missing key counts as 0) and returns the new value. */
int32_t nep_store_add(nep_store* store, const char* key, int64_t delta, int64_t* result, char* err,
                      int64_t err_cap);
void nep_store_close(nep_store* store);

/* ---- Multi-process communicators and collectives --------------------------------------------- */

/*
 * cpu-shm communicator between the processes of one host (collective over all ranks). Rendezvous
 * through the store at store_host:store_port (which must be served, see above). Needs
 * local_world_size == world_size and local_rank == rank; otherwise NEP_ERR_UNSUPPORTED names the
 * missing cross-host transport. timeout_ms bounds every wait (set-up and each collective); a peer
 * that dies makes the others fail with NEP_ERR_PEER within it. Uses about world_size MiB of
 * /dev/shm per rank; the segments are unlinked before this returns. Like every communicator it
 * is used by one thread at a time, and all ranks create their communicators in the same order.
 */
int32_t nep_comm_create_shm(int32_t rank, int32_t world_size, int32_t local_rank,
                            int32_t local_world_size, const char* store_host, int32_t store_port,
                            const char* job_token, int64_t timeout_ms, nep_comm** out, char* err,
                            int64_t err_cap);

/* In-place sum over ranks of data [count]; deterministic (the same bits on every rank and run). */
int32_t nep_all_reduce_sum_f32(nep_comm* comm, int64_t data, int64_t count, char* err,
                               int64_t err_cap);
int32_t nep_all_reduce_sum_f64(nep_comm* comm, int64_t data, int64_t count, char* err,
                               int64_t err_cap);
/* out [world_size * bytes] receives every rank's `bytes` bytes of in, in rank order. */
int32_t nep_all_gather(nep_comm* comm, int64_t in, int64_t bytes, int64_t out, char* err,
                       int64_t err_cap);
int32_t nep_barrier(nep_comm* comm, char* err, int64_t err_cap);

/* ---- Low-latency mode (decoding) ------------------------------------------------------------- */

/*
 * DeepEP's low-latency (LL) semantics for a few tokens per rank: fixed receive buffers sized by
 * max_tokens_per_rank, no exchange of counts before the data (no host-side layout step), one
 * message per (token, expert) pair (no per-rank deduplication; -1 slots are never sent), the
 * weighted sum of combine done at the source rank, and send and receive as separate calls so other
 * work runs between them.
 *
 * Shapes: T tokens of this call (T <= max_tokens_per_rank = Tm), H hidden, K top-k (K <= max_topk),
 * El = E / W local experts, N = W * Tm rows per local expert.
 *
 * A low-latency buffer belongs to the ranks of one communicator. Its memory (about
 * nep_ll_buffer_bytes per rank; /dev/shm shared memory for W > 1, anonymous memory for W = 1) is
 * fixed at creation, is separate from the communicator's normal-mode memory (so normal and
 * low-latency calls may alternate freely) and is double-buffered: call n (each dispatch or combine
 * send counts as one call) uses buffer n % 2, so at most two calls may await their receive; a
 * third send fails with NEP_ERR_INVALID_ARGUMENT naming the pending call, and changes nothing.
 * Every rank must issue the same sequence of low-latency sends (dispatch or combine); the receives
 * may come in any order. A send waits only when a peer has not yet completed its receive of the
 * call two before on that buffer. Every wait is bounded by timeout_ms and its error names the rank,
 * the peer and the counter; a peer that exits or fails makes the others fail with NEP_ERR_PEER.
 * Argument errors are reported before anything is sent and leave the buffer usable; any later
 * failure (timeout, peer) leaves it unusable. One thread at a time per buffer. A buffer, its ops
 * and handles may outlive the communicator it was created from.
 */
typedef struct nep_ll_buffer nep_ll_buffer; /* fixed buffers of one group of ranks */
typedef struct nep_ll_op nep_ll_op;         /* an issued send whose receive is pending (the hook) */
typedef struct nep_ll_handle nep_ll_handle; /* routing of one LL dispatch, used by LL combine */

/* flags of nep_ll_dispatch_send */
#define NEP_LL_ROUND_SCALE 1 /* NEP_WIRE_FP8 with scales rounded up to powers of two */

/* nep_ll_op_kind */
#define NEP_LL_DISPATCH 1
#define NEP_LL_COMBINE 2

/*
 * Collective over comm's ranks (all on this host). max_wire is the widest wire format any call
 * will use (row slots are sized for it; a wider call fails with NEP_ERR_CAPACITY); max_topk the
 * largest K. Every rank passes the same values (NEP_ERR_PEER otherwise).
 */
int32_t nep_ll_buffer_create(nep_comm* comm, int64_t max_tokens_per_rank, int64_t hidden,
                             int32_t num_experts, int32_t max_topk, int32_t max_wire,
                             int64_t timeout_ms, nep_ll_buffer** out, char* err, int64_t err_cap);
int64_t nep_ll_buffer_max_tokens_per_rank(const nep_ll_buffer* buf); /* Tm; -1 for null */
int64_t nep_ll_buffer_hidden(const nep_ll_buffer* buf);              /* H */
int32_t nep_ll_buffer_num_experts(const nep_ll_buffer* buf);         /* E */
int32_t nep_ll_buffer_num_local_experts(const nep_ll_buffer* buf);   /* El */
int32_t nep_ll_buffer_max_topk(const nep_ll_buffer* buf);
int32_t nep_ll_buffer_max_wire(const nep_ll_buffer* buf);
int32_t nep_ll_buffer_rank(const nep_ll_buffer* buf);
int32_t nep_ll_buffer_world_size(const nep_ll_buffer* buf);
int64_t nep_ll_buffer_bytes(const nep_ll_buffer* buf); /* memory per rank */
/* Releases this reference; pending ops keep the memory alive until they are destroyed. */
void nep_ll_buffer_destroy(nep_ll_buffer* buf);

/*
 * Send phase of a dispatch: x [T, H] float32, topk_idx [T, K] int64 in [-1, E) without duplicates
 * in a row. T > max_tokens_per_rank fails with NEP_ERR_CAPACITY naming both. wire: NEP_WIRE_*
 * (each rank may choose its own; receivers decode what each sender chose); flags: 0 or
 * NEP_LL_ROUND_SCALE. Returns once every message is written; *out receives the pending op.
 */
int32_t nep_ll_dispatch_send(nep_ll_buffer* buf, int64_t x, int64_t num_tokens, int64_t hidden,
                             int64_t topk_idx, int32_t num_topk, int32_t wire, int32_t flags,
                             nep_ll_op** out, char* err, int64_t err_cap);

/*
 * Receive phase of a dispatch (the hook): waits for every rank's messages and writes
 *   recv_x            [El, N, H] float32: rows of local expert e in [0, recv_count[e]) ordered by
 *                     source rank, then source token; later rows are left untouched;
 *   recv_count        [El] int32;
 *   recv_src_info     [El, N] int32 (optional, 0 to skip): the row's token index on its source
 *                     rank, -1 past recv_count;
 *   recv_layout_range [El, W] int64 (optional): (begin << 32) | count of the rows from each rank.
 * *out_handle receives the routing that nep_ll_combine_send needs (destroy it when done).
 * Argument errors leave the op pending; after success the op is complete (destroy it).
 */
int32_t nep_ll_dispatch_recv(nep_ll_op* op, int64_t recv_x, int64_t recv_count,
                             int64_t recv_src_info, int64_t recv_layout_range,
                             nep_ll_handle** out_handle, char* err, int64_t err_cap);

/*
 * Send phase of a combine: y [El, N, H] float32 (row i of expert e answers dispatch row i of e;
 * only rows below recv_count are read), sent back to the source ranks. topk_idx [T, K] must equal
 * the dispatched one (NEP_ERR_INVALID_ARGUMENT names the first difference); topk_weights [T, K]
 * float32 weight the sum at the source. wire: NEP_WIRE_* (bf16 is DeepEP's choice).
 */
int32_t nep_ll_combine_send(nep_ll_buffer* buf, const nep_ll_handle* h, int64_t y, int64_t hidden,
                            int64_t topk_idx, int64_t topk_weights, int64_t num_tokens,
                            int32_t num_topk, int32_t wire, nep_ll_op** out, char* err,
                            int64_t err_cap);

/*
 * Receive phase of a combine: out [T, H] float32, out[t] = sum over k with topk_idx[t][k] >= 0, in
 * slot order, of topk_weights[t][k] * y_row(t, k) accumulated in fp32; zeros where no slot is set.
 */
int32_t nep_ll_combine_recv(nep_ll_op* op, int64_t out, char* err, int64_t err_cap);

/* Whether the receive of op would complete without waiting: 1 yes, 0 no (or not pending). */
int32_t nep_ll_op_ready(nep_ll_op* op);
int32_t nep_ll_op_kind(const nep_ll_op* op);       /* NEP_LL_DISPATCH / NEP_LL_COMBINE; -1 null */
int32_t nep_ll_op_is_pending(const nep_ll_op* op); /* 1 until its receive completed or failed */
int64_t nep_ll_op_call_index(const nep_ll_op* op); /* n: the call's number, 1-based */
int64_t nep_ll_op_rows_sent(const nep_ll_op* op);  /* messages (dispatch) / rows (combine) sent */
int64_t nep_ll_op_bytes_sent(const nep_ll_op* op); /* their bytes on the wire, headers included */
/* Destroys op; a pending op is abandoned (its buffer is released unread). */
void nep_ll_op_destroy(nep_ll_op* op);

int64_t nep_ll_handle_num_tokens(const nep_ll_handle* h); /* T this rank dispatched */
int32_t nep_ll_handle_num_topk(const nep_ll_handle* h);
int32_t nep_ll_handle_num_local_experts(const nep_ll_handle* h);
int32_t nep_ll_handle_world_size(const nep_ll_handle* h);
int64_t nep_ll_handle_max_tokens_per_rank(const nep_ll_handle* h);
int64_t nep_ll_handle_hidden(const nep_ll_handle* h);
/* Copies recv_count [El], src_info [El, N] and layout_range [El, W] (as nep_ll_dispatch_recv). */
void nep_ll_handle_recv_count(const nep_ll_handle* h, int32_t* out);
void nep_ll_handle_src_info(const nep_ll_handle* h, int32_t* out);
void nep_ll_handle_layout_range(const nep_ll_handle* h, int64_t* out);
void nep_ll_handle_destroy(nep_ll_handle* h);

/* ---- libtorch tensors (DJL's PyTorch engine) ------------------------------------------------ */

/* Element types of nep_torch_data_address. */
#define NEP_TORCH_FLOAT32 0
#define NEP_TORCH_FLOAT16 1
#define NEP_TORCH_INT64 2
#define NEP_TORCH_INT32 3
#define NEP_TORCH_UINT8 4
#define NEP_TORCH_BOOL 5
#define NEP_TORCH_FLOAT64 6

/*
 * The data address of a libtorch tensor, in CPU or GPU memory, given the address of its at::Tensor
 * object (a DJL PtNDArray's handle): no copy; for a GPU tensor the device address. element_type
 * must be the tensor's (libtorch refuses another, and the call reports it). libtorch must already
 * be loaded in the process (NEP_ERR_UNSUPPORTED otherwise). The caller checks contiguity.
 */
int32_t nep_torch_data_address(int64_t tensor, int32_t element_type, int64_t* address, char* err,
                               int64_t err_cap);

/*
 * Sets libtorch's C++ log threshold in this process (c10's FLAGS_caffe2_log_level: 0 info,
 * 1 warning, 2 error, 3 fatal); messages below it, such as one-time deprecation warnings, are not
 * printed. *previous (may be null) receives the threshold before the call. level outside [0, 3]
 * is refused; libtorch's libc10 must already be loaded (NEP_ERR_UNSUPPORTED otherwise).
 */
int32_t nep_torch_set_log_level(int32_t level, int32_t* previous, char* err, int64_t err_cap);

#ifdef __cplusplus
}
#endif

#endif /* NATIVEEP_C_API_H_ */
