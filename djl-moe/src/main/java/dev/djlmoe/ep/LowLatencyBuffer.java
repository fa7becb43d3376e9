/*
 * djl-moe: expert-parallel Mixture-of-Experts for the Deep Java Library.
 */
package dev.djlmoe.ep;

import ai.djl.Device;
import ai.djl.ndarray.NDArray;
import ai.djl.ndarray.NDManager;
import ai.djl.ndarray.types.DataType;
import ai.djl.ndarray.types.Shape;
import dev.djlmoe.core.EpPeerException;
import dev.djlmoe.core.EpTimeoutException;
import dev.djlmoe.core.NativeCall;
import dev.djlmoe.core.NativeMemory;
import dev.djlmoe.dist.ProcessGroup;
import dev.djlmoe.nativeep.NativeEp;
import org.bytedeco.javacpp.PointerPointer;

/**
 * Low-latency dispatch and combine for decoding, with DeepEP's low-latency semantics: fixed receive
 * buffers sized by {@code max_tokens_per_rank}, no exchange of counts before the data, one message
 * per (token, expert) pair ({@code -1} slots are never sent), the weighted sum of combine done at
 * the source rank, and send and receive as separate phases.
 *
 * <ul>
 *   <li>{@link #dispatch}: {@code x [T, H]}, {@code topk_idx [T, K]} → per local expert {@code
 *       recv_x [E/W, W * Tm, H]}, the count per local expert and a {@link LowLatencyHandle}.
 *   <li>{@link #combine}: {@code y [E/W, W * Tm, H]} (row i of expert e answers dispatch row i of
 *       e) → {@code out [T, H]}: {@code out[t]} sums {@code w[t, k] · y(t, k)} over the slots k
 *       that are not {@code -1}, in fp32.
 *   <li>{@link #dispatchSend} / {@link #combineSend} return after sending; the returned {@link
 *       LowLatencyHook} completes the receive, so other work runs in between.
 * </ul>
 *
 * <p>The buffer's memory is fixed at creation (shared memory between the ranks of a {@code cpu-shm}
 * group, plain memory for one rank), separate from the normal-mode {@link EpBuffer}'s, so both
 * modes may be used in turn. It is double buffered: at most two low-latency results may await their
 * receive at once. Every rank must issue the same sequence of low-latency sends (dispatch or
 * combine); receives may complete in any order. Arguments are checked before anything is sent (bad
 * ones raise {@link IllegalArgumentException} naming the argument, the value and the limit and
 * leave the buffer usable); a timeout or a failed peer raises {@link EpTimeoutException} or {@link
 * EpPeerException} and leaves the buffer unusable. Outputs are NDArrays of the inputs' {@link
 * NDManager}, on their device. Not thread-safe: one thread per rank.
 *
 * <p><b>Two backends, one API.</b> As with {@link EpBuffer}, the device of a call's arrays picks
 * the engine: CPU arrays run on the CPU engine (the buffer made by {@link #create}), GPU arrays on
 * the CUDA plug-in, whose low-latency buffer (same shape: {@code max_tokens_per_rank}, H, E, {@code
 * max_topk}, {@code max_wire}, timeout) is created on the GPU of the arrays at the first GPU call
 * and connected over cuda-ipc through the process group; that first call is collective (every rank
 * makes its first GPU call together), and the GPU mode joins the ranks of one host. On a GPU, sends
 * and receives are enqueued on the stream libtorch uses, with no host synchronisation: {@link
 * LowLatencyHook#await()} returns at once, a failure on the device is reported by a later call or
 * by {@link #synchronize()}, {@link LowLatencyHook#rowsSent()} and {@link
 * LowLatencyHook#bytesSent()} are -1, and a handle is valid until a later dispatch send reuses its
 * half of the buffer. Every array of one call must be on the same device, and a combine's on the
 * device of its dispatch.
 */
public final class LowLatencyBuffer implements AutoCloseable {

    /** The default bound of every wait, in milliseconds. */
    public static final long DEFAULT_TIMEOUT_MS = 30_000;

    private final ProcessGroup group;
    private NativeEp.nep_ll_buffer buf;
    private final int maxTokensPerRank;
    private final long hidden;
    private final int numExperts;
    private final int numLocalExperts;
    private final int maxTopk;
    private final WireFormat maxWire;
    private final int rank;
    private final int worldSize;
    private final long bytesPerRank;
    private final long timeoutMs;
    private CudaLowLatencyBackend cuda;

    private LowLatencyBuffer(
            ProcessGroup group, NativeEp.nep_ll_buffer buf, WireFormat maxWire, long timeoutMs) {
        this.group = group;
        this.buf = buf;
        this.maxWire = maxWire;
        this.timeoutMs = timeoutMs;
        maxTokensPerRank = Math.toIntExact(NativeEp.nep_ll_buffer_max_tokens_per_rank(buf));
        hidden = NativeEp.nep_ll_buffer_hidden(buf);
        numExperts = NativeEp.nep_ll_buffer_num_experts(buf);
        numLocalExperts = NativeEp.nep_ll_buffer_num_local_experts(buf);
        maxTopk = NativeEp.nep_ll_buffer_max_topk(buf);
        rank = NativeEp.nep_ll_buffer_rank(buf);
        worldSize = NativeEp.nep_ll_buffer_world_size(buf);
        bytesPerRank = NativeEp.nep_ll_buffer_bytes(buf);
    }

    /**
     * Creates the buffers of a process group with DeepEP's defaults (bf16 as the widest wire
     * format, {@link #DEFAULT_TIMEOUT_MS}). Collective: every rank calls it with the same values.
     *
     * @param group the ranks (owned by the caller; must stay open while creating)
     * @param maxTokensPerRank the most tokens one rank passes to one dispatch
     * @param hidden H
     * @param numExperts E, a multiple of the world size
     * @param maxTopk the largest K a call passes
     * @return the buffer
     */
    public static LowLatencyBuffer create(
            ProcessGroup group, int maxTokensPerRank, long hidden, int numExperts, int maxTopk) {
        return create(
                group,
                maxTokensPerRank,
                hidden,
                numExperts,
                maxTopk,
                WireFormat.BF16,
                DEFAULT_TIMEOUT_MS);
    }

    /**
     * Creates the buffers of a process group. Collective: every rank calls it with the same values
     * (ranks that disagree fail with {@link EpPeerException}).
     *
     * @param group the ranks (owned by the caller; must stay open while creating)
     * @param maxTokensPerRank the most tokens one rank passes to one dispatch
     * @param hidden H
     * @param numExperts E, a multiple of the world size
     * @param maxTopk the largest K a call passes
     * @param maxWire the widest wire format a call will use: row slots are sized for it
     * @param timeoutMs the bound of every wait, in milliseconds
     * @return the buffer
     */
    public static LowLatencyBuffer create(
            ProcessGroup group,
            int maxTokensPerRank,
            long hidden,
            int numExperts,
            int maxTopk,
            WireFormat maxWire,
            long timeoutMs) {
        if (group == null) {
            throw new IllegalArgumentException("argument 'group' is null");
        }
        if (maxWire == null) {
            throw new IllegalArgumentException("argument 'max_wire' is null");
        }
        if (maxTokensPerRank < 1) {
            throw new IllegalArgumentException(
                    "argument 'max_tokens_per_rank' = " + maxTokensPerRank + " must be >= 1");
        }
        if (hidden < 1) {
            throw new IllegalArgumentException("argument 'hidden' = " + hidden + " must be >= 1");
        }
        int w = group.worldSize();
        if (numExperts < 1 || numExperts % w != 0) {
            throw new IllegalArgumentException(
                    "argument 'num_experts' = "
                            + numExperts
                            + " must be a positive multiple of the world size "
                            + w);
        }
        if (maxTopk < 1 || maxTopk > numExperts) {
            throw new IllegalArgumentException(
                    "argument 'max_topk' = "
                            + maxTopk
                            + " is outside [1, num_experts = "
                            + numExperts
                            + "]");
        }
        if (timeoutMs <= 0) {
            throw new IllegalArgumentException(
                    "argument 'timeout_ms' = " + timeoutMs + " must be > 0");
        }
        try (NativeCall call = new NativeCall();
                PointerPointer<NativeEp.nep_ll_buffer> out = new PointerPointer<>(1)) {
            call.check(
                    NativeEp.nep_ll_buffer_create(
                            group.comm(),
                            maxTokensPerRank,
                            hidden,
                            numExperts,
                            maxTopk,
                            maxWire.code(),
                            timeoutMs,
                            out,
                            call.err(),
                            call.cap()),
                    "low-latency buffer create");
            return new LowLatencyBuffer(
                    group, new NativeEp.nep_ll_buffer(out.get(0)), maxWire, timeoutMs);
        }
    }

    /**
     * Returns the process group.
     *
     * @return the group
     */
    public ProcessGroup group() {
        return group;
    }

    /**
     * Returns the most tokens one rank may pass to one dispatch.
     *
     * @return max_tokens_per_rank
     */
    public int maxTokensPerRank() {
        return maxTokensPerRank;
    }

    /**
     * Returns H.
     *
     * @return the hidden size
     */
    public long hidden() {
        return hidden;
    }

    /**
     * Returns E.
     *
     * @return the number of experts
     */
    public int numExperts() {
        return numExperts;
    }

    /**
     * Returns E / W.
     *
     * @return the local experts of this rank
     */
    public int numLocalExperts() {
        return numLocalExperts;
    }

    /**
     * Returns the largest K a call may pass.
     *
     * @return max_topk
     */
    public int maxTopk() {
        return maxTopk;
    }

    /**
     * Returns the widest wire format the row slots hold.
     *
     * @return max_wire
     */
    public WireFormat maxWire() {
        return maxWire;
    }

    /**
     * Returns this rank.
     *
     * @return the rank
     */
    public int rank() {
        return rank;
    }

    /**
     * Returns W.
     *
     * @return the world size
     */
    public int worldSize() {
        return worldSize;
    }

    /**
     * Returns the buffer memory this rank holds (shared memory for more than one rank).
     *
     * @return bytes per rank
     */
    public long bytesPerRank() {
        return bytesPerRank;
    }

    /**
     * Dispatches and waits for the receive (send and {@link LowLatencyHook#await()} in one call).
     *
     * @param x {@code [T, H]} float32, {@code T <= max_tokens_per_rank}
     * @param topkIdx {@code [T, K]} int64 expert ids in {@code [-1, E)}, no expert twice in a row
     * @param wire the format rows travel in
     * @param roundScale with {@link WireFormat#FP8}: round the scales up to powers of two
     * @return the received rows, counts and handle
     */
    public LowLatencyDispatch dispatch(
            NDArray x, NDArray topkIdx, WireFormat wire, boolean roundScale) {
        try (LowLatencyHook<LowLatencyDispatch> hook = dispatchSend(x, topkIdx, wire, roundScale)) {
            return hook.await();
        }
    }

    /**
     * The send phase of a dispatch: returns once every message is written; the hook's {@link
     * LowLatencyHook#await()} receives (allocating the outputs with {@code x}'s manager).
     *
     * @param x {@code [T, H]} float32, {@code T <= max_tokens_per_rank}
     * @param topkIdx {@code [T, K]} int64 expert ids in {@code [-1, E)}, no expert twice in a row
     * @param wire the format rows travel in
     * @param roundScale with {@link WireFormat#FP8}: round the scales up to powers of two
     * @return the hook that completes the receive
     */
    public LowLatencyHook<LowLatencyDispatch> dispatchSend(
            NDArray x, NDArray topkIdx, WireFormat wire, boolean roundScale) {
        NativeEp.nep_ll_buffer b = open();
        long[] xs = EpChecks.checkMatrix(x, "x", DataType.FLOAT32);
        if (xs[0] > maxTokensPerRank) {
            throw new IllegalArgumentException(
                    "argument 'x' has "
                            + xs[0]
                            + " rows (tokens), more than max_tokens_per_rank = "
                            + maxTokensPerRank
                            + " of this LowLatencyBuffer");
        }
        if (xs[1] != hidden) {
            throw new IllegalArgumentException(
                    "argument 'x' has "
                            + xs[1]
                            + " columns, but the buffer's hidden size is "
                            + hidden);
        }
        long[] tk = EpChecks.checkMatrix(topkIdx, "topk_idx", DataType.INT64);
        checkTopk(tk, xs[0]);
        checkWire(wire);
        if (roundScale && wire != WireFormat.FP8) {
            throw new IllegalArgumentException(
                    "argument 'round_scale' (power-of-two scales) needs wire FP8, not " + wire);
        }
        Device device = x.getDevice();
        NativeMemory.checkDevice(topkIdx, "topk_idx", device, "'x'");
        if (device.isGpu()) {
            return new LowLatencyHook<>(
                    cudaFor(device, "x").dispatchSend(this, x, topkIdx, wire, roundScale));
        }
        checkCpuDevice(device, "x");
        NDManager manager = x.getManager();
        try (NativeCall call = new NativeCall();
                PointerPointer<NativeEp.nep_ll_op> out = new PointerPointer<>(1)) {
            call.check(
                    NativeEp.nep_ll_dispatch_send(
                            b,
                            NativeMemory.address(x, "x", DataType.FLOAT32),
                            xs[0],
                            hidden,
                            NativeMemory.address(topkIdx, "topk_idx", DataType.INT64),
                            (int) tk[1],
                            wire.code(),
                            roundScale ? NativeEp.NEP_LL_ROUND_SCALE : 0,
                            out,
                            call.err(),
                            call.cap()),
                    "low-latency dispatch send");
            return new LowLatencyHook<>(
                    new CpuLowLatencyOp<>(
                            new NativeEp.nep_ll_op(out.get(0)),
                            op -> receiveDispatch(op, manager)));
        }
    }

    private LowLatencyDispatch receiveDispatch(NativeEp.nep_ll_op op, NDManager manager) {
        long rows = (long) worldSize * maxTokensPerRank;
        NDArray recvX = manager.create(new Shape(numLocalExperts, rows, hidden), DataType.FLOAT32);
        NDArray recvCount = manager.create(new Shape(numLocalExperts), DataType.INT32);
        try (NativeCall call = new NativeCall();
                PointerPointer<NativeEp.nep_ll_handle> out = new PointerPointer<>(1)) {
            call.check(
                    NativeEp.nep_ll_dispatch_recv(
                            op,
                            NativeMemory.address(recvX, "recv_x", DataType.FLOAT32),
                            NativeMemory.address(recvCount, "recv_count", DataType.INT32),
                            0L,
                            0L,
                            out,
                            call.err(),
                            call.cap()),
                    "low-latency dispatch receive");
            return new LowLatencyDispatch(
                    recvX,
                    recvCount,
                    CpuLowLatencyRouting.wrap(this, new NativeEp.nep_ll_handle(out.get(0))));
        } catch (RuntimeException e) {
            recvX.close();
            recvCount.close();
            throw e;
        }
    }

    /**
     * Combines and waits for the receive (send and {@link LowLatencyHook#await()} in one call).
     *
     * @param y {@code [E/W, W * max_tokens_per_rank, H]} float32 expert outputs, row i of expert e
     *     answering dispatch row i of e (rows past the count are not read)
     * @param topkIdx {@code [T, K]} int64: the routing that was dispatched
     * @param topkWeights {@code [T, K]} float32 weights of the sum at the source
     * @param handle the dispatch's handle
     * @param wire the format rows travel back in
     * @return {@code out [T, H]} float32
     */
    public NDArray combine(
            NDArray y,
            NDArray topkIdx,
            NDArray topkWeights,
            LowLatencyHandle handle,
            WireFormat wire) {
        try (LowLatencyHook<NDArray> hook = combineSend(y, topkIdx, topkWeights, handle, wire)) {
            return hook.await();
        }
    }

    /**
     * The send phase of a combine: returns once every row is written; the hook's {@link
     * LowLatencyHook#await()} receives the weighted sum (allocated by {@code y}'s manager).
     *
     * @param y {@code [E/W, W * max_tokens_per_rank, H]} float32 expert outputs
     * @param topkIdx {@code [T, K]} int64: the routing that was dispatched
     * @param topkWeights {@code [T, K]} float32 weights of the sum at the source
     * @param handle the dispatch's handle
     * @param wire the format rows travel back in
     * @return the hook that completes the receive
     */
    public LowLatencyHook<NDArray> combineSend(
            NDArray y,
            NDArray topkIdx,
            NDArray topkWeights,
            LowLatencyHandle handle,
            WireFormat wire) {
        NativeEp.nep_ll_buffer b = open();
        if (handle == null) {
            throw new IllegalArgumentException("argument 'handle' is null");
        }
        LowLatencyRouting routing = handle.routing(this);
        if (y == null) {
            throw new IllegalArgumentException("argument 'y' is null");
        }
        Device device = handle.device();
        NativeMemory.checkDevice(y, "y", device, "'handle' (its dispatch)");
        long rows = (long) worldSize * maxTokensPerRank;
        Shape want = new Shape(numLocalExperts, rows, hidden);
        if (!y.getShape().equals(want)) {
            throw new IllegalArgumentException(
                    "argument 'y' has shape "
                            + y.getShape()
                            + ", expected "
                            + want
                            + " (local experts, world size * max_tokens_per_rank, hidden)");
        }
        long[] tk = EpChecks.checkMatrix(topkIdx, "topk_idx", DataType.INT64);
        if (tk[0] != handle.numTokens() || tk[1] != handle.numTopk()) {
            throw new IllegalArgumentException(
                    "argument 'topk_idx' has shape "
                            + topkIdx.getShape()
                            + ", but the handle's"
                            + " dispatch had ("
                            + handle.numTokens()
                            + ", "
                            + handle.numTopk()
                            + ")");
        }
        EpChecks.checkMatrix(
                topkWeights, "topk_weights", DataType.FLOAT32, tk[0], tk[1], " like topk_idx");
        checkWire(wire);
        NativeMemory.checkDevice(topkIdx, "topk_idx", device, "'handle' (its dispatch)");
        NativeMemory.checkDevice(topkWeights, "topk_weights", device, "'handle' (its dispatch)");
        if (device.isGpu()) {
            return new LowLatencyHook<>(
                    cudaFor(device, "y")
                            .combineSend(
                                    (CudaLowLatencyRouting) routing,
                                    y,
                                    topkIdx,
                                    topkWeights,
                                    wire,
                                    hidden));
        }
        NativeEp.nep_ll_handle h = ((CpuLowLatencyRouting) routing).handle();
        NDManager manager = y.getManager();
        long tokens = tk[0];
        try (NativeCall call = new NativeCall();
                PointerPointer<NativeEp.nep_ll_op> out = new PointerPointer<>(1)) {
            call.check(
                    NativeEp.nep_ll_combine_send(
                            b,
                            h,
                            NativeMemory.address(y, "y", DataType.FLOAT32),
                            hidden,
                            NativeMemory.address(topkIdx, "topk_idx", DataType.INT64),
                            NativeMemory.address(topkWeights, "topk_weights", DataType.FLOAT32),
                            tokens,
                            (int) tk[1],
                            wire.code(),
                            out,
                            call.err(),
                            call.cap()),
                    "low-latency combine send");
            return new LowLatencyHook<>(
                    new CpuLowLatencyOp<>(
                            new NativeEp.nep_ll_op(out.get(0)),
                            op -> receiveCombine(op, manager, tokens)));
        }
    }

    private NDArray receiveCombine(NativeEp.nep_ll_op op, NDManager manager, long tokens) {
        NDArray out = manager.create(new Shape(tokens, hidden), DataType.FLOAT32);
        try (NativeCall call = new NativeCall()) {
            call.check(
                    NativeEp.nep_ll_combine_recv(
                            op,
                            NativeMemory.address(out, "out", DataType.FLOAT32),
                            call.err(),
                            call.cap()),
                    "low-latency combine receive");
            return out;
        } catch (RuntimeException e) {
            out.close();
            throw e;
        }
    }

    private void checkTopk(long[] tk, long rows) {
        if (tk[0] != rows) {
            throw new IllegalArgumentException(
                    "argument 'topk_idx' has " + tk[0] + " rows but 'x' has " + rows);
        }
        if (tk[1] < 1 || tk[1] > maxTopk) {
            throw new IllegalArgumentException(
                    "argument 'topk_idx' has K = "
                            + tk[1]
                            + " columns, outside [1, max_topk = "
                            + maxTopk
                            + "] of this LowLatencyBuffer");
        }
    }

    private void checkWire(WireFormat wire) {
        if (wire == null) {
            throw new IllegalArgumentException("argument 'wire' is null");
        }
        long need = NativeEp.nep_wire_row_bytes(wire.code(), hidden);
        long have = NativeEp.nep_wire_row_bytes(maxWire.code(), hidden);
        if (need > have) {
            throw new IllegalArgumentException(
                    "argument 'wire' = "
                            + wire
                            + " needs "
                            + need
                            + " bytes per row but this"
                            + " LowLatencyBuffer was created for "
                            + maxWire
                            + " ("
                            + have
                            + " bytes per row)");
        }
    }

    private NativeEp.nep_ll_buffer open() {
        if (buf == null) {
            throw new IllegalStateException("the LowLatencyBuffer is closed");
        }
        return buf;
    }

    /**
     * Waits for the GPU work of this buffer queued so far and reports its first failure on the
     * device (a wait that timed out names the rank, the peer and the counter; a bad expert index).
     * Nothing to wait for on the CPU, whose receives complete in {@link LowLatencyHook#await()}.
     */
    public void synchronize() {
        open();
        if (cuda != null) {
            cuda.synchronize();
        }
    }

    /**
     * Returns the GPU whose CUDA low-latency buffer this buffer holds, or null before its first GPU
     * call.
     *
     * @return the device, or null
     */
    public Device cudaDevice() {
        return cuda == null ? null : cuda.device();
    }

    /** Returns the CUDA backend of a GPU, creating and connecting it at first use. */
    private CudaLowLatencyBackend cudaFor(Device device, String argument) {
        if (cuda == null) {
            cuda =
                    CudaConnector.connectLowLatency(
                            group,
                            device,
                            argument,
                            maxTokensPerRank,
                            hidden,
                            numExperts,
                            maxTopk,
                            maxWire,
                            timeoutMs);
        } else {
            EpChecks.checkSameGpu(argument, device, cuda.device(), "LowLatencyBuffer", "");
        }
        return cuda;
    }

    private static void checkCpuDevice(Device device, String argument) {
        if (!Device.Type.CPU.equals(device.getDeviceType())) {
            throw EpChecks.unsupportedDevice(argument, device, "LowLatencyBuffer");
        }
    }

    /**
     * Releases this rank's reference to the CPU buffers (hooks still pending keep them until they
     * are awaited or closed; not collective: every rank keeps its own mapping of the others'
     * memory) and, once a GPU call has made it, the CUDA buffer: its pending receives are abandoned
     * and, with several ranks, every rank waits for the others before its GPU memory is freed
     * (collective).
     */
    @Override
    public void close() {
        if (buf != null) {
            NativeEp.nep_ll_buffer_destroy(buf);
            buf = null;
        }
        if (cuda != null) {
            CudaLowLatencyBackend c = cuda;
            cuda = null;
            c.close();
        }
    }
}
