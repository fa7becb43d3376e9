/*
 * djl-moe: expert-parallel Mixture-of-Experts for the Deep Java Library.
 */
package dev.djlmoe.nativeep.cuda;

import dev.djlmoe.nativeep.OwnedHandle;

/**
 * One rank's low-latency (decoding) buffer on a GPU, over the CUDA plug-in ({@code cuda_api.h}
 * "Low-latency mode"): fixed receive buffers sized by {@code maxTokensPerRank}, one message per
 * (token, expert) pair, the weighted sum of combine done at the source rank, send and receive as
 * separate calls, and no host synchronisation (a whole decode step can be captured in a CUDA
 * graph).
 *
 * <p>Set-up as {@link CudaEpBuffer}: {@link #create}, exchange {@link #exportBlob()} through the
 * job's rendezvous, {@link #connect}. Then every rank issues the same sequence of sends:
 *
 * <pre>{@code
 * try (Op d = buf.dispatchSend(x, BF16, T, H, topkIdx, K, FP8, 0, stream);       // x [T, H], topk_idx [T, K]
 *         Handle h = d.dispatchRecv(recvX, BF16, recvCount, 0, 0, stream);        // recv_x [E/W, W*Tm, H]
 *         Op c = buf.combineSend(h, y, BF16, topkIdx, topkWeights, BF16, stream)) { // y [E/W, W*Tm, H]
 *     c.combineRecv(out, BF16, stream);                                            // out [T, H]
 * }
 * }</pre>
 *
 * Tensor arguments are device addresses of contiguous row-major buffers; {@code stream} is a {@code
 * cudaStream_t} as a long (0: the legacy default stream). Failures on the GPU (a wait that timed
 * out names the rank, the peer and the counter; a bad expert index) are reported by {@link
 * #sync(long)} or the next call. Invalid arguments throw {@link IllegalArgumentException}, every
 * other failure a {@link CudaEpException}. Close ops and handles before the buffer.
 */
public final class CudaLowLatencyBuffer implements AutoCloseable {

    private final OwnedHandle<NativeEpCuda.nep_cuda_ll_buffer> buf;

    private CudaLowLatencyBuffer(NativeEpCuda.nep_cuda_ll_buffer buf) {
        this.buf =
                new OwnedHandle<>(
                        buf, "low-latency buffer", NativeEpCuda::nep_cuda_ll_buffer_destroy);
    }

    /**
     * Allocates this rank's low-latency buffer on a device.
     *
     * @param rank this rank
     * @param world the number of ranks (GPUs of one host, at most 8)
     * @param device the CUDA device
     * @param maxTokensPerRank the most tokens one rank passes to one dispatch (Tm)
     * @param hidden the hidden size H
     * @param numExperts the number of experts E (a multiple of world)
     * @param maxTopk the largest top-k K of any call
     * @param maxWire the widest wire format of any call ({@code NEP_WIRE_*}; sizes the row slots)
     * @param timeoutMillis bound of every device-side wait (0 = 30 s)
     * @return the unconnected buffer
     */
    public static CudaLowLatencyBuffer create(
            int rank,
            int world,
            int device,
            long maxTokensPerRank,
            long hidden,
            int numExperts,
            int maxTopk,
            int maxWire,
            long timeoutMillis) {
        return CudaCall.create(
                "create CUDA low-latency buffer of rank " + rank,
                (out, err, cap) ->
                        NativeEpCuda.nep_cuda_ll_buffer_create(
                                rank,
                                world,
                                device,
                                maxTokensPerRank,
                                hidden,
                                numExperts,
                                maxTopk,
                                maxWire,
                                timeoutMillis,
                                out,
                                err,
                                cap),
                p -> new CudaLowLatencyBuffer(new NativeEpCuda.nep_cuda_ll_buffer(p)));
    }

    /**
     * @return this rank's connection blob ({@link NativeEpCuda#NEP_CUDA_EXPORT_BYTES} bytes)
     */
    public byte[] exportBlob() {
        return CudaCall.read(
                "export",
                NativeEpCuda.NEP_CUDA_EXPORT_BYTES,
                (out, n, err, cap) ->
                        NativeEpCuda.nep_cuda_ll_buffer_export(open(), out, n, err, cap));
    }

    /**
     * Opens every rank's buffer over CUDA IPC.
     *
     * @param allBlobs the blobs of ranks 0..world-1, concatenated
     */
    public void connect(byte[] allBlobs) {
        CudaCall.write(
                "connect",
                allBlobs,
                (p, n, err, cap) ->
                        NativeEpCuda.nep_cuda_ll_buffer_connect(open(), p, n, err, cap));
    }

    /**
     * Sets the number of SMs (blocks) the kernels use.
     *
     * @param numSms 1 to the device's SM count
     */
    public void setNumSms(int numSms) {
        CudaCall.run(
                "set num_sms",
                (err, cap) ->
                        NativeEpCuda.nep_cuda_ll_buffer_set_num_sms(open(), numSms, err, cap));
    }

    /**
     * @return Tm
     */
    public long maxTokensPerRank() {
        return NativeEpCuda.nep_cuda_ll_buffer_max_tokens_per_rank(open());
    }

    /**
     * @return E / W
     */
    public int numLocalExperts() {
        return NativeEpCuda.nep_cuda_ll_buffer_num_local_experts(open());
    }

    /**
     * @return the device memory of the shared buffer, in bytes
     */
    public long bytes() {
        return NativeEpCuda.nep_cuda_ll_buffer_bytes(open());
    }

    /**
     * Send phase of a dispatch.
     *
     * @param x {@code [T, H]} tokens of xDtype
     * @param xDtype {@link NativeEpCuda#NEP_DTYPE_BF16} or {@code _FP32}
     * @param numTokens T, at most {@link #maxTokensPerRank()}
     * @param hidden H
     * @param topkIdx {@code [T, K]} int64 experts in [-1, E), no repeats in a row
     * @param numTopk K
     * @param wire the wire format ({@code NEP_WIRE_*})
     * @param flags 0 or {@link NativeEpCuda#NEP_CUDA_LL_ROUND_SCALE}
     * @param stream the CUDA stream
     * @return the pending op (its receive is {@link Op#dispatchRecv})
     */
    public Op dispatchSend(
            long x,
            int xDtype,
            long numTokens,
            long hidden,
            long topkIdx,
            int numTopk,
            int wire,
            int flags,
            long stream) {
        return CudaCall.create(
                "low-latency dispatch send",
                (out, err, cap) ->
                        NativeEpCuda.nep_cuda_ll_dispatch_send(
                                open(), x, xDtype, numTokens, hidden, topkIdx, numTopk, wire, flags,
                                stream, out, err, cap),
                p -> new Op(new NativeEpCuda.nep_cuda_ll_op(p)));
    }

    /**
     * Send phase of a combine.
     *
     * @param h the handle of the dispatch being answered
     * @param y {@code [E/W, W*Tm, H]} expert outputs of yDtype (rows below the received counts)
     * @param yDtype {@link NativeEpCuda#NEP_DTYPE_BF16} or {@code _FP32}
     * @param topkIdx {@code [T, K]} int64, as dispatched (read by the receive)
     * @param topkWeights {@code [T, K]} float32 (read by the receive)
     * @param wire the wire format ({@code NEP_WIRE_BF16} usually)
     * @param stream the CUDA stream
     * @return the pending op (its receive is {@link Op#combineRecv})
     */
    public Op combineSend(
            Handle h, long y, int yDtype, long topkIdx, long topkWeights, int wire, long stream) {
        return CudaCall.create(
                "low-latency combine send",
                (out, err, cap) ->
                        NativeEpCuda.nep_cuda_ll_combine_send(
                                open(),
                                h.open(),
                                y,
                                yDtype,
                                topkIdx,
                                topkWeights,
                                wire,
                                stream,
                                out,
                                err,
                                cap),
                p -> new Op(new NativeEpCuda.nep_cuda_ll_op(p)));
    }

    /**
     * Waits for the work queued on a stream and reports the first device-side failure, if any.
     *
     * @param stream the CUDA stream
     */
    public void sync(long stream) {
        CudaCall.run("sync", (err, cap) -> NativeEpCuda.nep_cuda_ll_sync(open(), stream, err, cap));
    }

    private NativeEpCuda.nep_cuda_ll_buffer open() {
        return buf.get();
    }

    @Override
    public void close() {
        buf.close();
    }

    /** An issued send whose receive is pending (the hook). */
    public static final class Op implements AutoCloseable {

        private final OwnedHandle<NativeEpCuda.nep_cuda_ll_op> op;

        Op(NativeEpCuda.nep_cuda_ll_op op) {
            this.op = new OwnedHandle<>(op, "low-latency op", NativeEpCuda::nep_cuda_ll_op_destroy);
        }

        /**
         * @return the call's number (1-based, the same on every rank)
         */
        public long callIndex() {
            return NativeEpCuda.nep_cuda_ll_op_call_index(open());
        }

        /**
         * @return whether the receive is still to be issued
         */
        public boolean isPending() {
            return NativeEpCuda.nep_cuda_ll_op_is_pending(open()) != 0;
        }

        /**
         * Receive phase of a dispatch.
         *
         * @param recvX {@code [E/W, W*Tm, H]} of recvDtype, rows ordered by source rank then token
         * @param recvDtype {@link NativeEpCuda#NEP_DTYPE_BF16} or {@code _FP32}
         * @param recvCount {@code [E/W]} int32
         * @param recvSrcInfo {@code [E/W, W*Tm]} int32 source tokens, or 0
         * @param recvLayoutRange {@code [E/W, W]} int64 (begin &lt;&lt; 32 | count), or 0
         * @param stream the CUDA stream
         * @return the routing combine needs
         */
        public Handle dispatchRecv(
                long recvX,
                int recvDtype,
                long recvCount,
                long recvSrcInfo,
                long recvLayoutRange,
                long stream) {
            return CudaCall.create(
                    "low-latency dispatch receive",
                    (out, err, cap) ->
                            NativeEpCuda.nep_cuda_ll_dispatch_recv(
                                    open(),
                                    recvX,
                                    recvDtype,
                                    recvCount,
                                    recvSrcInfo,
                                    recvLayoutRange,
                                    stream,
                                    out,
                                    err,
                                    cap),
                    p -> new Handle(new NativeEpCuda.nep_cuda_ll_handle(p)));
        }

        /**
         * Receive phase of a combine: {@code out[t] = sum_k w[t][k] * y_row(t, k)} in fp32.
         *
         * @param out {@code [T, H]} of outDtype
         * @param outDtype {@link NativeEpCuda#NEP_DTYPE_BF16} or {@code _FP32}
         * @param stream the CUDA stream
         */
        public void combineRecv(long out, int outDtype, long stream) {
            CudaCall.run(
                    "low-latency combine receive",
                    (err, cap) ->
                            NativeEpCuda.nep_cuda_ll_combine_recv(
                                    open(), out, outDtype, stream, err, cap));
        }

        private NativeEpCuda.nep_cuda_ll_op open() {
            return op.get();
        }

        /** Closes the op; a pending one is abandoned (its receive is issued without outputs). */
        @Override
        public void close() {
            op.close();
        }
    }

    /** The routing of one low-latency dispatch, used by its combine. */
    public static final class Handle implements AutoCloseable {

        private final OwnedHandle<NativeEpCuda.nep_cuda_ll_handle> h;

        Handle(NativeEpCuda.nep_cuda_ll_handle h) {
            this.h =
                    new OwnedHandle<>(
                            h, "low-latency handle", NativeEpCuda::nep_cuda_ll_handle_destroy);
        }

        /**
         * @return T this rank dispatched
         */
        public long numTokens() {
            return NativeEpCuda.nep_cuda_ll_handle_num_tokens(open());
        }

        NativeEpCuda.nep_cuda_ll_handle open() {
            return h.get();
        }

        @Override
        public void close() {
            h.close();
        }
    }
}
