/*
 * djl-moe: expert-parallel Mixture-of-Experts for the Deep Java Library.
 */
package dev.djlmoe.nativeep.cuda;

import org.bytedeco.javacpp.BytePointer;
import org.bytedeco.javacpp.IntPointer;
import org.bytedeco.javacpp.PointerPointer;

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

    private NativeEpCuda.nep_cuda_buffer buf;
    private final int rank;
    private final int world;
    private final int device;

    private CudaEpBuffer(NativeEpCuda.nep_cuda_buffer buf, int rank, int world, int device) {
        this.buf = buf;
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
        try (CudaCall call = new CudaCall();
                PointerPointer<NativeEpCuda.nep_cuda_buffer> out = new PointerPointer<>(1)) {
            call.check(
                    NativeEpCuda.nep_cuda_buffer_create(
                            rank, world, device, bytes, timeoutMillis, out, call.err(), call.cap()),
                    "create CUDA EP buffer of rank " + rank);
            return new CudaEpBuffer(
                    new NativeEpCuda.nep_cuda_buffer(out.get(0)), rank, world, device);
        }
    }

    /**
     * @return this rank's connection blob ({@link NativeEpCuda#NEP_CUDA_EXPORT_BYTES} bytes)
     */
    public byte[] exportBlob() {
        try (CudaCall call = new CudaCall();
                BytePointer out = new BytePointer(NativeEpCuda.NEP_CUDA_EXPORT_BYTES)) {
            call.check(
                    NativeEpCuda.nep_cuda_buffer_export(
                            open(),
                            out,
                            NativeEpCuda.NEP_CUDA_EXPORT_BYTES,
                            call.err(),
                            call.cap()),
                    "export");
            byte[] b = new byte[NativeEpCuda.NEP_CUDA_EXPORT_BYTES];
            out.get(b);
            return b;
        }
    }

    /**
     * Connects to every rank over CUDA IPC (ranks of one host).
     *
     * @param allBlobs the blobs of ranks 0..world-1, concatenated
     */
    public void connect(byte[] allBlobs) {
        try (CudaCall call = new CudaCall();
                BytePointer p = new BytePointer(allBlobs)) {
            call.check(
                    NativeEpCuda.nep_cuda_buffer_connect(
                            open(), p, allBlobs.length, call.err(), call.cap()),
                    "connect (cuda-ipc)");
        }
    }

    /**
     * @return a new NCCL unique id (rank 0 makes it, every rank passes it to {@link #connectNccl})
     */
    public static byte[] ncclUniqueId() {
        try (CudaCall call = new CudaCall();
                BytePointer out = new BytePointer(NativeEpCuda.NEP_CUDA_NCCL_ID_BYTES)) {
            call.check(
                    NativeEpCuda.nep_cuda_nccl_unique_id(
                            out, NativeEpCuda.NEP_CUDA_NCCL_ID_BYTES, call.err(), call.cap()),
                    "NCCL id");
            byte[] b = new byte[NativeEpCuda.NEP_CUDA_NCCL_ID_BYTES];
            out.get(b);
            return b;
        }
    }

    /**
     * Connects to every rank through NCCL (ranks on several hosts); blocks until all have joined.
     *
     * @param uniqueId rank 0's {@link #ncclUniqueId()}
     */
    public void connectNccl(byte[] uniqueId) {
        try (CudaCall call = new CudaCall();
                BytePointer p = new BytePointer(uniqueId)) {
            call.check(
                    NativeEpCuda.nep_cuda_buffer_connect_nccl(
                            open(), p, uniqueId.length, call.err(), call.cap()),
                    "connect (nccl)");
        }
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
        try (CudaCall call = new CudaCall()) {
            call.check(
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
                            call.err(),
                            call.cap()),
                    "layout");
        }
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
        try (CudaCall call = new CudaCall();
                PointerPointer<NativeEpCuda.nep_cuda_handle> out = new PointerPointer<>(1)) {
            call.check(
                    NativeEpCuda.nep_cuda_dispatch_notify(
                            open(),
                            topkIdx,
                            numTokens,
                            numTopk,
                            numExperts,
                            expertAlignment,
                            stream,
                            out,
                            call.err(),
                            call.cap()),
                    "notify");
            return new Handle(new NativeEpCuda.nep_cuda_handle(out.get(0)));
        }
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
        try (CudaCall call = new CudaCall()) {
            call.check(
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
                            call.err(),
                            call.cap()),
                    "dispatch");
        }
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
        try (CudaCall call = new CudaCall()) {
            call.check(
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
                            call.err(),
                            call.cap()),
                    "combine");
        }
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
        try (CudaCall call = new CudaCall()) {
            call.check(
                    NativeEpCuda.nep_cuda_all_reduce_sum(
                            open(), data, count, dtype, stream, call.err(), call.cap()),
                    "all-reduce");
        }
    }

    /**
     * Waits for the work queued on a stream and reports the buffer's first device-side failure.
     *
     * @param stream the stream
     */
    public void sync(long stream) {
        try (CudaCall call = new CudaCall()) {
            call.check(NativeEpCuda.nep_cuda_sync(open(), stream, call.err(), call.cap()), "sync");
        }
    }

    private NativeEpCuda.nep_cuda_buffer open() {
        if (buf == null) {
            throw new IllegalStateException("the CUDA EP buffer is closed");
        }
        return buf;
    }

    /** Releases the buffer (call after a barrier of all ranks). */
    @Override
    public void close() {
        if (buf != null) {
            NativeEpCuda.nep_cuda_buffer_destroy(buf);
            buf = null;
        }
    }

    /** The routing of one dispatch: counts on the host, indices on the device. */
    public static final class Handle implements AutoCloseable {

        private NativeEpCuda.nep_cuda_handle h;

        Handle(NativeEpCuda.nep_cuda_handle h) {
            this.h = h;
        }

        NativeEpCuda.nep_cuda_handle open() {
            if (h == null) {
                throw new IllegalStateException("the handle is closed");
            }
            return h;
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
            try (CudaCall call = new CudaCall();
                    BytePointer p = new BytePointer(Math.max(n, 1))) {
                call.check(
                        NativeEpCuda.nep_cuda_handle_copy_is_token_in_rank(
                                open(), p, call.err(), call.cap()),
                        "is_token_in_rank");
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
            try (CudaCall call = new CudaCall();
                    IntPointer p = new IntPointer(Math.max(n, 1))) {
                call.check(
                        NativeEpCuda.nep_cuda_handle_copy_recv_src_idx(
                                open(), p, call.err(), call.cap()),
                        "recv_src_idx");
                int[] v = new int[n];
                p.get(v);
                return v;
            }
        }

        @Override
        public void close() {
            if (h != null) {
                NativeEpCuda.nep_cuda_handle_destroy(h);
                h = null;
            }
        }
    }
}
