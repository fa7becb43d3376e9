/*
 * djl-moe: expert-parallel Mixture-of-Experts for the Deep Java Library.
 */
package dev.djlmoe.nativeep.cuda;

import dev.djlmoe.nativeep.OwnedHandle;
import org.bytedeco.javacpp.BytePointer;
import org.bytedeco.javacpp.IntPointer;

/**
 * One rank's expert-parallel buffer on a GPU (DeepEP normal mode), over the CUDA plug-in: create,
 * exchange the connection blob (cuda-ipc) or the NCCL id (nccl) through the job's rendezvous, then
 * the collective calls notify, dispatch and combine, made by every rank in the same order.
 *
 * <p>Tensor arguments are device addresses of contiguous row-major buffers (a DJL GPU tensor's data
 * pointer, or {@link DeviceMemory}); {@code stream} is a {@code cudaStream_t} as a long, 0 for the
 * legacy default stream that libtorch uses. Dispatch and combine are asynchronous: {@link
 * #sync(long)} waits and reports a failure of the GPU work (a peer that timed out names the rank,
 * peer and counter). Invalid arguments throw {@link IllegalArgumentException}; every other failure
 * a {@link CudaEpException} with the native status.
 */
public final class CudaEpBuffer implements AutoCloseable {

    private final OwnedHandle<NativeEpCuda.nep_cuda_buffer> buf;
    private final int rank;
    private final int world;
    private final int device;

    private CudaEpBuffer(NativeEpCuda.nep_cuda_buffer buf, int rank, int world, int device) {
        this.buf = new OwnedHandle<>(buf, "CUDA EP buffer", NativeEpCuda::nep_cuda_buffer_destroy);
        this.rank = rank;
        this.world = world;
        this.device = device;
    }

    /**
     * @return the number of CUDA devices this process sees (0 without a driver)
     */
    public static int deviceCount() {
        return NativeEpCuda.nep_cuda_device_count();
    }

    /**
     * Allocates this rank's buffer on a device.
     *
     * @param rank this rank
     * @param world the number of ranks
     * @param device the CUDA device
     * @param bytes buffer size (at least 64 MiB plus the control region)
     * @param timeoutMillis bound of every wait of later calls (0 = 30 s)
     * @return the unconnected buffer
     */
    public static CudaEpBuffer create(
            int rank, int world, int device, long bytes, long timeoutMillis) {
        return CudaCall.create(
                "create CUDA EP buffer of rank " + rank,
                (out, err, cap) ->
                        NativeEpCuda.nep_cuda_buffer_create(
                                rank, world, device, bytes, timeoutMillis, out, err, cap),
                p -> new CudaEpBuffer(new NativeEpCuda.nep_cuda_buffer(p), rank, world, device));
    }

    /**
     * @return this rank's connection blob ({@link NativeEpCuda#NEP_CUDA_EXPORT_BYTES} bytes)
     */
    public byte[] exportBlob() {
        return CudaCall.read(
                "export",
                NativeEpCuda.NEP_CUDA_EXPORT_BYTES,
                (out, n, err, cap) ->
                        NativeEpCuda.nep_cuda_buffer_export(open(), out, n, err, cap));
    }

    /**
     * Connects to every rank over CUDA IPC (ranks of one host).
     *
     * @param allBlobs the blobs of ranks 0..world-1, concatenated
     */
    public void connect(byte[] allBlobs) {
        CudaCall.write(
                "connect (cuda-ipc)",
                allBlobs,
                (p, n, err, cap) -> NativeEpCuda.nep_cuda_buffer_connect(open(), p, n, err, cap));
    }

    /**
     * @return a new NCCL unique id (rank 0 makes it, every rank passes it to {@link #connectNccl})
     */
    public static byte[] ncclUniqueId() {
        return CudaCall.read(
                "NCCL id",
                NativeEpCuda.NEP_CUDA_NCCL_ID_BYTES,
                NativeEpCuda::nep_cuda_nccl_unique_id);
    }

    /**
     * Connects to every rank through NCCL (ranks on several hosts); blocks until all have joined.
     *
     * @param uniqueId rank 0's {@link #ncclUniqueId()}
     */
    public void connectNccl(byte[] uniqueId) {
        CudaCall.write(
                "connect (nccl)",
                uniqueId,
                (p, n, err, cap) ->
                        NativeEpCuda.nep_cuda_buffer_connect_nccl(open(), p, n, err, cap));
    }

    /**
     * @return {@link NativeEpCuda#NEP_CUDA_TRANSPORT_IPC}, {@code _NCCL} or {@code _NONE}
     */
    public int transport() {
        return NativeEpCuda.nep_cuda_buffer_transport(open());
    }

    /**
     * @return this rank
     */
    public int rank() {
        return rank;
    }

    /**
     * @return the number of ranks
     */
    public int worldSize() {
        return world;
    }

    /**
     * @return the CUDA device
     */
    public int device() {
        return device;
    }

    /**
     * @return the device's multiprocessors (upper bound of {@code numSms})
     */
    public int deviceSms() {
        return NativeEpCuda.nep_cuda_buffer_num_device_sms(open());
    }

    /**
     * Layout of this rank's routing, without any exchange (asynchronous; a bad index or a duplicate
     * in a row is reported by the next {@link #sync(long)}); see {@code nep_cuda_layout}.
     *
     * @param topkIdx device address of topk_idx [T, K] int64
     * @param numTokens T
     * @param numTopk K
     * @param numExperts E
     * @param tokensPerRank tokens_per_rank [W] int32, or 0
     * @param tokensPerExpert tokens_per_expert [E] int32, or 0
     * @param isTokenInRank is_token_in_rank [T, W] uint8 (0/1), or 0
     * @param stream the stream
     */
    public void layout(
            long topkIdx,
            long numTokens,
            int numTopk,
            int numExperts,
            long tokensPerRank,
            long tokensPerExpert,
            long isTokenInRank,
            long stream) {
        CudaCall.run(
                "layout",
                (err, cap) ->
                        NativeEpCuda.nep_cuda_layout(
                                open(),
                                topkIdx,
                                numTokens,
                                numTopk,
                                numExperts,
                                tokensPerRank,
                                tokensPerExpert,
                                isTokenInRank,
                                stream,
                                err,
                                cap));
    }

    /**
     * Layout and count exchange (collective; waits for the GPU).
     *
     * @param topkIdx device address of topk_idx [T, K] int64
     * @param numTokens T
     * @param numTopk K
     * @param numExperts E
     * @param expertAlignment padding of the per-expert counts
     * @param stream the stream
     * @return the routing of the dispatch
     */
    public Handle notify(
            long topkIdx,
            long numTokens,
            int numTopk,
            int numExperts,
            int expertAlignment,
            long stream) {
        return CudaCall.create(
                "notify",
                (out, err, cap) ->
                        NativeEpCuda.nep_cuda_dispatch_notify(
                                open(),
                                topkIdx,
                                numTokens,
                                numTopk,
                                numExperts,
                                expertAlignment,
                                stream,
                                out,
                                err,
                                cap),
                p -> new Handle(new NativeEpCuda.nep_cuda_handle(p)));
    }

    /**
     * Dispatch (collective, asynchronous); see {@code nep_cuda_dispatch} in cuda_api.h.
     *
     * @param h the routing from {@link #notify}
     * @param x x [T, hidden]
     * @param xDtype {@link NativeEpCuda#NEP_DTYPE_FP32} or {@code _BF16}
     * @param hidden channels per row
     * @param wire {@code NEP_WIRE_*}: 0 fp32, 1 bf16, 2 fp8, 3 mxfp8
     * @param topkIdx topk_idx [T, K] int64, or 0
     * @param topkWeights topk_weights [T, K] float32, or 0
     * @param recvX recv_x [R, hidden]
     * @param recvDtype element type of recv_x
     * @param recvTopkIdx recv_topk_idx [R, K] int64 (local ids), or 0
     * @param recvTopkWeights recv_topk_weights [R, K] float32, or 0
     * @param numSms multiprocessors to use
     * @param stream the stream
     */
    public void dispatch(
            Handle h,
            long x,
            int xDtype,
            long hidden,
            int wire,
            long topkIdx,
            long topkWeights,
            long recvX,
            int recvDtype,
            long recvTopkIdx,
            long recvTopkWeights,
            int numSms,
            long stream) {
        CudaCall.run(
                "dispatch",
                (err, cap) ->
                        NativeEpCuda.nep_cuda_dispatch(
                                open(),
                                h.open(),
                                x,
                                xDtype,
                                hidden,
                                wire,
                                topkIdx,
                                topkWeights,
                                recvX,
                                recvDtype,
                                recvTopkIdx,
                                recvTopkWeights,
                                numSms,
                                stream,
                                err,
                                cap));
    }

    /**
     * Dispatch into wire rows (collective, asynchronous); see {@code nep_cuda_dispatch_wire} in
     * cuda_api.h.
     *
     * @param h the handle of the notify
     * @param x x [T, hidden]
     * @param xDtype element type of x
     * @param hidden channels per row
     * @param wire 2 fp8 or 3 mxfp8
     * @param topkIdx topk_idx [T, K] int64, or 0
     * @param topkWeights topk_weights [T, K] float32, or 0
     * @param recvRows recv_rows [R, recvRowBytes] uint8
     * @param recvRowBytes the GPU wire row size
     * @param recvTopkIdx recv_topk_idx [R, K] int64, or 0
     * @param recvTopkWeights recv_topk_weights [R, K] float32, or 0
     * @param numSms multiprocessors used
     * @param stream the CUDA stream
     */
    public void dispatchWire(
            Handle h,
            long x,
            int xDtype,
            long hidden,
            int wire,
            long topkIdx,
            long topkWeights,
            long recvRows,
            long recvRowBytes,
            long recvTopkIdx,
            long recvTopkWeights,
            int numSms,
            long stream) {
        CudaCall.run(
                "dispatch (wire rows)",
                (err, cap) ->
                        NativeEpCuda.nep_cuda_dispatch_wire(
                                open(),
                                h.open(),
                                x,
                                xDtype,
                                hidden,
                                wire,
                                topkIdx,
                                topkWeights,
                                recvRows,
                                recvRowBytes,
                                recvTopkIdx,
                                recvTopkWeights,
                                numSms,
                                stream,
                                err,
                                cap));
    }

    /**
     * Decodes wire rows of {@link #dispatchWire} into float32 rows (asynchronous); see {@code
     * nep_cuda_decode_wire_rows} in cuda_api.h.
     *
     * @param device the GPU
     * @param wire 2 fp8 or 3 mxfp8
     * @param in rows [rows, rowBytes] uint8
     * @param rows the rows
     * @param hidden channels per row
     * @param rowBytes the GPU wire row size
     * @param out out [rows, hidden] float32
     * @param stream the CUDA stream
     */
    public static void decodeWireRows(
            int device,
            int wire,
            long in,
            long rows,
            long hidden,
            long rowBytes,
            long out,
            long stream) {
        CudaCall.run(
                "decode wire rows",
                (err, cap) ->
                        NativeEpCuda.nep_cuda_decode_wire_rows(
                                device, wire, in, rows, hidden, rowBytes, out, stream, err, cap));
    }

    /**
     * Combine (collective, asynchronous); see {@code nep_cuda_combine} in cuda_api.h.
     *
     * @param h a handle a dispatch has used
     * @param y y [R, hidden]
     * @param yDtype element type of y
     * @param hidden channels per row
     * @param wire 0 fp32 or 1 bf16
     * @param yWeights y_weights [R, K] float32, or 0
     * @param out out [T, hidden]
     * @param outDtype element type of out
     * @param outWeights out_weights [T, K] float32, or 0 (with yWeights)
     * @param numSms multiprocessors to use
     * @param stream the stream
     */
    public void combine(
            Handle h,
            long y,
            int yDtype,
            long hidden,
            int wire,
            long yWeights,
            long out,
            int outDtype,
            long outWeights,
            int numSms,
            long stream) {
        CudaCall.run(
                "combine",
                (err, cap) ->
                        NativeEpCuda.nep_cuda_combine(
                                open(),
                                h.open(),
                                y,
                                yDtype,
                                hidden,
                                wire,
                                yWeights,
                                out,
                                outDtype,
                                outWeights,
                                numSms,
                                stream,
                                err,
                                cap));
    }

    /**
     * In-place sum over the ranks (nccl transport): the dense-gradient all-reduce.
     *
     * @param data device address
     * @param count elements
     * @param dtype fp32 or bf16
     * @param stream the stream
     */
    public void allReduceSum(long data, long count, int dtype, long stream) {
        CudaCall.run(
                "all-reduce",
                (err, cap) ->
                        NativeEpCuda.nep_cuda_all_reduce_sum(
                                open(), data, count, dtype, stream, err, cap));
    }

    /**
     * Waits for the work queued on a stream and reports the buffer's first device-side failure.
     *
     * @param stream the stream
     */
    public void sync(long stream) {
        CudaCall.run("sync", (err, cap) -> NativeEpCuda.nep_cuda_sync(open(), stream, err, cap));
    }

    private NativeEpCuda.nep_cuda_buffer open() {
        return buf.get();
    }

    /** Releases the buffer (call after a barrier of all ranks). */
    @Override
    public void close() {
        buf.close();
    }

    /** The routing of one dispatch: counts on the host, indices on the device. */
    public static final class Handle implements AutoCloseable {

        private final OwnedHandle<NativeEpCuda.nep_cuda_handle> h;

        Handle(NativeEpCuda.nep_cuda_handle h) {
            this.h = new OwnedHandle<>(h, "handle", NativeEpCuda::nep_cuda_handle_destroy);
        }

        NativeEpCuda.nep_cuda_handle open() {
            return h.get();
        }

        /**
         * @return T, this rank's tokens
         */
        public long numTokens() {
            return NativeEpCuda.nep_cuda_handle_num_tokens(open());
        }

        /**
         * @return R, the rows this rank receives
         */
        public long numRecv() {
            return NativeEpCuda.nep_cuda_handle_num_recv(open());
        }

        /**
         * @return K, the top-k slots per token
         */
        public int numTopk() {
            return NativeEpCuda.nep_cuda_handle_num_topk(open());
        }

        /**
         * @return E, the experts over all ranks
         */
        public int numExperts() {
            return NativeEpCuda.nep_cuda_handle_num_experts(open());
        }

        /**
         * @return E / W
         */
        public int numLocalExperts() {
            return NativeEpCuda.nep_cuda_handle_num_local_experts(open());
        }

        /**
         * @param aligned padded to the alignment given to notify
         * @return received tokens per local expert
         */
        public int[] recvTokensPerExpert(boolean aligned) {
            int n = numLocalExperts();
            try (IntPointer p = new IntPointer(Math.max(n, 1))) {
                NativeEpCuda.nep_cuda_handle_recv_tokens_per_expert(open(), aligned ? 1 : 0, p);
                int[] v = new int[n];
                p.get(v);
                return v;
            }
        }

        /**
         * @param world the number of ranks
         * @return [W * W], [i][j] = rows ranks 0..i send to rank j
         */
        public int[] rankPrefixMatrix(int world) {
            try (IntPointer p = new IntPointer((long) world * world)) {
                NativeEpCuda.nep_cuda_handle_rank_prefix_matrix(open(), p);
                int[] v = new int[world * world];
                p.get(v);
                return v;
            }
        }

        /**
         * @param world the number of ranks
         * @return tokens of each rank
         */
        public int[] rankNumTokens(int world) {
            try (IntPointer p = new IntPointer(world)) {
                NativeEpCuda.nep_cuda_handle_rank_num_tokens(open(), p);
                int[] v = new int[world];
                p.get(v);
                return v;
            }
        }

        /**
         * @param world the number of ranks
         * @return is_token_in_rank [T, W] as 0/1
         */
        public byte[] isTokenInRank(int world) {
            int n = (int) (numTokens() * world);
            try (BytePointer p = new BytePointer(Math.max(n, 1))) {
                CudaCall.run(
                        "is_token_in_rank",
                        (err, cap) ->
                                NativeEpCuda.nep_cuda_handle_copy_is_token_in_rank(
                                        open(), p, err, cap));
                byte[] v = new byte[n];
                p.get(v);
                return v;
            }
        }

        /**
         * @return the source token index of each received row (after a dispatch)
         */
        public int[] recvSrcIdx() {
            int n = (int) numRecv();
            try (IntPointer p = new IntPointer(Math.max(n, 1))) {
                CudaCall.run(
                        "recv_src_idx",
                        (err, cap) ->
                                NativeEpCuda.nep_cuda_handle_copy_recv_src_idx(
                                        open(), p, err, cap));
                int[] v = new int[n];
                p.get(v);
                return v;
            }
        }

        @Override
        public void close() {
            h.close();
        }
    }
}
