/*
 * djl-moe: expert-parallel Mixture-of-Experts for the Deep Java Library.
 */
package dev.djlmoe.ep;

import ai.djl.ndarray.NDArray;
import ai.djl.ndarray.NDManager;
import ai.djl.ndarray.types.DataType;
import ai.djl.ndarray.types.Shape;
import dev.djlmoe.dist.ProcessGroup;
import dev.djlmoe.nativeep.NativeEp;
import org.bytedeco.javacpp.PointerPointer;

/**
 * The Java face of expert-parallel dispatch and combine, with DeepEP's normal-mode semantics.
 *
 * <p>Per rank: {@code x [T, H]} float32, {@code topk_idx [T, K]} int64 with {@code -1} for an
 * empty slot, {@code topk_weights [T, K]} float32; {@code E} experts split in contiguous blocks of
 * {@code E / W} over the {@code W} ranks of the process group.
 *
 * <ul>
 *   <li>{@link #layout}: tokens per rank (a token counts once per rank), tokens per expert,
 *       token-in-rank.
 *   <li>{@link #dispatch(NDArray, NDArray, NDArray, int, int, WireFormat)}: sends each token once
 *       to every rank holding one of its experts; rows arrive ordered by source rank, then source
 *       token; top-k ids become local ids or -1 and non-local weights become zero.
 *   <li>{@link #combine}: sums, in fp32, the rows each rank sends back for a token.
 * </ul>
 *
 * <p>Every argument is checked (shape, dtype, device, index range) before native code runs; bad
 * input raises {@link IllegalArgumentException} naming the argument, the value and the limit.
 * Outputs are ordinary NDArrays allocated by the input's {@link NDManager} and written in place;
 * cached dispatch and combine also take a caller's output array to reuse ({@link
 * #dispatch(NDArray, EpHandle, WireFormat, NDArray)}, {@link #combine(NDArray, EpHandle,
 * WireFormat, NDArray)}), which spares the page faults of a fresh large output.
 * Dispatch and combine are collective: every rank of the group calls them in the same order.
 *
 * <p>Non-finite values are not looked for here: that would be one more pass over every {@code
 * [T, H]} element of every call. They travel as they are on the FP32 and BF16 wires and become NaN
 * on the FP8 and MXFP8 wires (e4m3 has no infinity) without spoiling the rest of their scaling
 * block. Training detects them where it costs nothing: {@code EpTrainer} refuses a step whose
 * global gradient norm is not finite, before the optimizer runs.
 */
public final class EpBuffer implements AutoCloseable {

    private final ProcessGroup group;
    private final EpStats stats = new EpStats();
    private boolean closed;

    private EpBuffer(ProcessGroup group) {
        this.group = group;
    }

    /**
     * Creates a buffer over a process group's communicator. The group stays owned by the caller.
     *
     * @param group the ranks of the EP job
     * @return the buffer
     */
    public static EpBuffer create(ProcessGroup group) {
        if (group == null) {
            throw new IllegalArgumentException("argument 'group' is null");
        }
        return new EpBuffer(group);
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
     * Returns this rank.
     *
     * @return the rank
     */
    public int rank() {
        return group.rank();
    }

    /**
     * Returns W.
     *
     * @return the world size
     */
    public int worldSize() {
        return group.worldSize();
    }

    /**
     * Returns the running communication totals.
     *
     * @return the statistics
     */
    public EpStats stats() {
        return stats;
    }

    /**
     * Computes where this rank's tokens go.
     *
     * @param topkIdx {@code [T, K]} int64 expert ids in {@code [-1, E)}
     * @param numExperts E, a positive multiple of the world size
     * @return tokens per rank {@code [W]}, tokens per expert {@code [E]} (int32) and token-in-rank
     *     {@code [T, W]} (boolean), allocated by the manager of {@code topkIdx}
     */
    public EpLayout layout(NDArray topkIdx, int numExperts) {
        checkOpen();
        int w = worldSize();
        checkExperts(numExperts, w);
        long[] tk = checkTopk(topkIdx, -1, numExperts);
        long t = tk[0];
        int k = (int) tk[1];
        NDManager m = topkIdx.getManager();
        NDArray perRank = m.create(new Shape(w), DataType.INT32);
        NDArray perExpert = m.create(new Shape(numExperts), DataType.INT32);
        NDArray inRank = m.create(new Shape(t, w), DataType.UINT8);
        try (NativeCall call = new NativeCall()) {
            call.check(
                    NativeEp.nep_layout(
                            NativeMemory.address(topkIdx, "topk_idx", DataType.INT64),
                            t,
                            k,
                            numExperts,
                            w,
                            NativeMemory.address(perRank, "tokens_per_rank", DataType.INT32),
                            NativeMemory.address(perExpert, "tokens_per_expert", DataType.INT32),
                            NativeMemory.address(inRank, "is_token_in_rank", DataType.UINT8),
                            call.err(),
                            call.cap()),
                    "layout");
        }
        NDArray inRankBool = inRank.toType(DataType.BOOLEAN, false);
        inRank.close();
        return new EpLayout(perRank, perExpert, inRankBool);
    }

    /**
     * Computes the layout, exchanges counts with every rank and returns the routing (the notify
     * step). Collective.
     *
     * @param topkIdx {@code [T, K]} int64 expert ids in {@code [-1, E)}, no duplicates in a row
     * @param numExperts E
     * @param expertAlignment pads each local expert's received count to a multiple of this (>= 1)
     * @return the handle, to be closed by the caller
     */
    public EpHandle notify(NDArray topkIdx, int numExperts, int expertAlignment) {
        checkOpen();
        checkExperts(numExperts, worldSize());
        if (expertAlignment < 1) {
            throw new IllegalArgumentException(
                    "argument 'expert_alignment' = " + expertAlignment + " must be >= 1");
        }
        long[] tk = checkTopk(topkIdx, -1, numExperts);
        long begin = System.nanoTime();
        try (NativeCall call = new NativeCall();
                PointerPointer<NativeEp.nep_handle> out = new PointerPointer<>(1)) {
            call.check(
                    NativeEp.nep_dispatch_notify(
                            group.comm(),
                            NativeMemory.address(topkIdx, "topk_idx", DataType.INT64),
                            tk[0],
                            (int) tk[1],
                            numExperts,
                            expertAlignment,
                            out,
                            call.err(),
                            call.cap()),
                    "dispatch notify");
            EpHandle handle = new EpHandle(this, new NativeEp.nep_handle(out.get(0)));
            stats.addDispatch(0, System.nanoTime() - begin);
            return handle;
        }
    }

    /**
     * Dispatches tokens with their routing: notify, then data. Collective.
     *
     * @param x {@code [T, H]} float32
     * @param topkIdx {@code [T, K]} int64 in {@code [-1, E)}
     * @param topkWeights {@code [T, K]} float32, or null to move no weights
     * @param numExperts E
     * @param expertAlignment per-expert padding of the received counts (>= 1)
     * @param wire the format rows travel in
     * @return the received rows, local top-k, weights, counts and the handle (owned by the
     *     caller)
     */
    public DispatchResult dispatch(
            NDArray x,
            NDArray topkIdx,
            NDArray topkWeights,
            int numExperts,
            int expertAlignment,
            WireFormat wire) {
        checkOpen();
        checkExperts(numExperts, worldSize());
        long[] xs = checkMatrix(x, "x", DataType.FLOAT32);
        long[] tk = checkTopk(topkIdx, xs[0], numExperts);
        if (topkWeights != null) {
            long[] ws = checkMatrix(topkWeights, "topk_weights", DataType.FLOAT32);
            if (ws[0] != tk[0] || ws[1] != tk[1]) {
                throw new IllegalArgumentException(
                        "argument 'topk_weights' has shape " + topkWeights.getShape()
                                + ", expected (" + tk[0] + ", " + tk[1] + ") like topk_idx");
            }
        }
        EpHandle handle = notify(topkIdx, numExperts, expertAlignment);
        try {
            return dispatchData(x, handle, topkWeights, true, wire);
        } catch (RuntimeException e) {
            handle.close();
            throw e;
        }
    }

    /**
     * Cached dispatch: moves another {@code [T, H]} tensor along the routing of an earlier
     * dispatch (how the backward of combine runs). Collective.
     *
     * @param x {@code [T, H]} float32 with T equal to the handle's
     * @param handle the routing from an earlier dispatch of this buffer
     * @param wire the format rows travel in
     * @return {@code [R, H]} float32 received rows
     */
    public NDArray dispatch(NDArray x, EpHandle handle, WireFormat wire) {
        checkOpen();
        return dispatchData(x, handle, null, false, wire).recvX();
    }

    /**
     * Cached dispatch into a caller's array: as {@link #dispatch(NDArray, EpHandle, WireFormat)},
     * but the received rows are written into {@code out}, which the caller may reuse from call to
     * call. A fresh {@code [R, H]} output is zero-filled by the kernel a page at a time on first
     * touch, which for large R costs about as much as the copy itself; a reused one does not.
     * Collective.
     *
     * @param x {@code [T, H]} float32 with T equal to the handle's
     * @param handle the routing from an earlier dispatch of this buffer
     * @param wire the format rows travel in
     * @param out {@code [R, H]} float32, contiguous, on the CPU, sharing no memory with {@code x};
     *     every element is overwritten
     * @return {@code out}
     */
    public NDArray dispatch(NDArray x, EpHandle handle, WireFormat wire, NDArray out) {
        checkOpen();
        if (handle == null) {
            throw new IllegalArgumentException("argument 'handle' is null");
        }
        handle.nativeHandle(this); // refuses a closed handle or one of another buffer
        long[] xs = checkMatrix(x, "x", DataType.FLOAT32);
        checkOutput(out, "out", handle.numRecv(), xs[1], x, "x");
        dispatchData(x, handle, null, false, wire, out);
        return out;
    }

    private DispatchResult dispatchData(
            NDArray x, EpHandle handle, NDArray topkWeights, boolean withTopk, WireFormat wire) {
        return dispatchData(x, handle, topkWeights, withTopk, wire, null);
    }

    /** Dispatch data; {@code into} (checked by the caller) or a new array receives the rows. */
    private DispatchResult dispatchData(
            NDArray x,
            EpHandle handle,
            NDArray topkWeights,
            boolean withTopk,
            WireFormat wire,
            NDArray into) {
        if (wire == null) {
            throw new IllegalArgumentException("argument 'wire' is null");
        }
        if (handle == null) {
            throw new IllegalArgumentException("argument 'handle' is null");
        }
        NativeEp.nep_handle h = handle.nativeHandle(this);
        long[] xs = checkMatrix(x, "x", DataType.FLOAT32);
        if (xs[0] != handle.numTokens()) {
            throw new IllegalArgumentException(
                    "argument 'x' has " + xs[0] + " rows but the handle routes "
                            + handle.numTokens() + " tokens");
        }
        long hidden = xs[1];
        checkHidden(hidden, wire);
        long r = handle.numRecv();
        int k = handle.numTopk();
        NDManager m = x.getManager();
        NDArray recvX = into != null ? into : m.create(new Shape(r, hidden), DataType.FLOAT32);
        NDArray recvIdx = withTopk ? m.create(new Shape(r, k), DataType.INT64) : null;
        NDArray recvW = topkWeights != null ? m.create(new Shape(r, k), DataType.FLOAT32) : null;
        long begin = System.nanoTime();
        try (NativeCall call = new NativeCall()) {
            call.check(
                    NativeEp.nep_dispatch(
                            group.comm(),
                            h,
                            NativeMemory.address(x, "x", DataType.FLOAT32),
                            hidden,
                            wire.code(),
                            topkWeights == null
                                    ? 0L
                                    : NativeMemory.address(
                                            topkWeights, "topk_weights", DataType.FLOAT32),
                            NativeMemory.address(recvX, "recv_x", DataType.FLOAT32),
                            recvIdx == null
                                    ? 0L
                                    : NativeMemory.address(
                                            recvIdx, "recv_topk_idx", DataType.INT64),
                            recvW == null
                                    ? 0L
                                    : NativeMemory.address(
                                            recvW, "recv_topk_weights", DataType.FLOAT32),
                            call.err(),
                            call.cap()),
                    "dispatch");
        }
        long rowBytes = NativeEp.nep_wire_row_bytes(wire.code(), hidden);
        long sent = rowBytes * handle.numSent();
        stats.addDispatch(sent, System.nanoTime() - begin);
        return new DispatchResult(
                recvX, recvIdx, recvW, withTopk ? handle.recvTokensPerExpert(true) : null, handle);
    }

    /**
     * Sends each received row back to its source rank and sums, in fp32, the rows of every rank
     * that received the token. Collective.
     *
     * @param y {@code [R, H]} float32, one row per received token (already weighted and summed over
     *     local experts)
     * @param yWeights {@code [R, K]} float32 to combine the same way, or null
     * @param handle the routing of the dispatch that produced the rows
     * @param wire the format rows travel in
     * @return {@code out [T, H]} and, with {@code yWeights}, {@code outWeights [T, K]}
     */
    public CombineResult combine(NDArray y, NDArray yWeights, EpHandle handle, WireFormat wire) {
        checkOpen();
        return combineData(y, yWeights, handle, wire, null);
    }

    /** Combine; {@code into} (checked by the caller) or a new array receives the sums. */
    private CombineResult combineData(
            NDArray y, NDArray yWeights, EpHandle handle, WireFormat wire, NDArray into) {
        if (wire == null) {
            throw new IllegalArgumentException("argument 'wire' is null");
        }
        if (handle == null) {
            throw new IllegalArgumentException("argument 'handle' is null");
        }
        NativeEp.nep_handle h = handle.nativeHandle(this);
        long[] ys = checkMatrix(y, "y", DataType.FLOAT32);
        if (ys[0] != handle.numRecv()) {
            throw new IllegalArgumentException(
                    "argument 'y' has " + ys[0] + " rows, expected " + handle.numRecv()
                            + " (one per received token)");
        }
        long hidden = ys[1];
        checkHidden(hidden, wire);
        int k = handle.numTopk();
        if (yWeights != null) {
            long[] ws = checkMatrix(yWeights, "y_weights", DataType.FLOAT32);
            if (ws[0] != handle.numRecv() || ws[1] != k) {
                throw new IllegalArgumentException(
                        "argument 'y_weights' has shape " + yWeights.getShape() + ", expected ("
                                + handle.numRecv() + ", " + k + ")");
            }
        }
        NDManager m = y.getManager();
        long t = handle.numTokens();
        NDArray out = into != null ? into : m.create(new Shape(t, hidden), DataType.FLOAT32);
        NDArray outW = yWeights != null ? m.create(new Shape(t, k), DataType.FLOAT32) : null;
        long begin = System.nanoTime();
        try (NativeCall call = new NativeCall()) {
            call.check(
                    NativeEp.nep_combine(
                            group.comm(),
                            h,
                            NativeMemory.address(y, "y", DataType.FLOAT32),
                            hidden,
                            wire.code(),
                            yWeights == null
                                    ? 0L
                                    : NativeMemory.address(yWeights, "y_weights", DataType.FLOAT32),
                            NativeMemory.address(out, "out", DataType.FLOAT32),
                            outW == null
                                    ? 0L
                                    : NativeMemory.address(outW, "out_weights", DataType.FLOAT32),
                            call.err(),
                            call.cap()),
                    "combine");
        }
        long rowBytes = NativeEp.nep_wire_row_bytes(wire.code(), hidden);
        stats.addCombine(rowBytes * handle.numRecv(), System.nanoTime() - begin);
        return new CombineResult(out, outW);
    }

    /**
     * Combine into a caller's array: as {@link #combine(NDArray, NDArray, EpHandle, WireFormat)}
     * without weights, but the sums are written into {@code out}, which the caller may reuse from
     * call to call (a fresh {@code [T, H]} output pays a page fault per page on first touch).
     * Collective.
     *
     * @param y {@code [R, H]} float32, one row per received token
     * @param handle the routing of the dispatch that produced the rows
     * @param wire the format rows travel in
     * @param out {@code [T, H]} float32, contiguous, on the CPU, sharing no memory with {@code y};
     *     every element is overwritten
     * @return {@code out}
     */
    public NDArray combine(NDArray y, EpHandle handle, WireFormat wire, NDArray out) {
        checkOpen();
        if (handle == null) {
            throw new IllegalArgumentException("argument 'handle' is null");
        }
        handle.nativeHandle(this); // refuses a closed handle or one of another buffer
        long[] ys = checkMatrix(y, "y", DataType.FLOAT32);
        checkOutput(out, "out", handle.numTokens(), ys[1], y, "y");
        return combineData(y, null, handle, wire, out).out();
    }

    /**
     * Checks a caller's output array: CPU, float32, shape {@code [rows, cols]}, its own contiguous
     * storage (DJL hands native code a private copy of a non-contiguous array, so rows written
     * there would be lost) and no overlap with the input.
     */
    private static void checkOutput(
            NDArray out, String name, long rows, long cols, NDArray input, String inputName) {
        long[] os = checkMatrix(out, name, DataType.FLOAT32);
        if (os[0] != rows || os[1] != cols) {
            throw new IllegalArgumentException(
                    "argument '" + name + "' has shape " + out.getShape() + ", expected (" + rows
                            + ", " + cols + ")");
        }
        if (rows * cols == 0) {
            return;
        }
        long o = NativeMemory.outputAddress(out, name, DataType.FLOAT32);
        long i = NativeMemory.address(input, inputName, DataType.FLOAT32);
        long ob = rows * cols * 4;
        long ib = input.getShape().size() * 4;
        if (i != 0 && o < i + ib && i < o + ob) {
            throw new IllegalArgumentException(
                    "argument '" + name + "' shares memory with '" + inputName
                            + "': the output must not overlap the input");
        }
    }

    private static void checkExperts(int numExperts, int worldSize) {
        if (numExperts <= 0) {
            throw new IllegalArgumentException(
                    "argument 'num_experts' = " + numExperts + " must be positive");
        }
        if (numExperts % worldSize != 0) {
            throw new IllegalArgumentException(
                    "argument 'num_experts' = " + numExperts
                            + " is not divisible by the world size " + worldSize);
        }
    }

    private static void checkHidden(long hidden, WireFormat wire) {
        if (hidden <= 0) {
            throw new IllegalArgumentException("hidden size " + hidden + " must be positive");
        }
        if (NativeEp.nep_wire_row_bytes(wire.code(), hidden) < 0) {
            throw new IllegalArgumentException(
                    "hidden size " + hidden + " is not supported by wire format " + wire
                            + " (scaling block of " + wire.blockSize() + " channels)");
        }
    }

    /** Checks a 2-D CPU array of the given dtype and returns its {rows, cols}. */
    private static long[] checkMatrix(NDArray a, String name, DataType dtype) {
        if (a == null) {
            throw new IllegalArgumentException("argument '" + name + "' is null");
        }
        NativeMemory.checkCpu(a, name);
        Shape s = a.getShape();
        if (s.dimension() != 2) {
            throw new IllegalArgumentException(
                    "argument '" + name + "' has shape " + s + ", expected 2 dimensions");
        }
        if (a.getDataType() != dtype) {
            throw new IllegalArgumentException(
                    "argument '" + name + "' has dtype " + a.getDataType() + ", expected " + dtype);
        }
        return new long[] {s.get(0), s.get(1)};
    }

    /** Checks topk_idx [T, K] int64 (T must equal expectedRows unless negative). */
    private static long[] checkTopk(NDArray topkIdx, long expectedRows, int numExperts) {
        long[] tk = checkMatrix(topkIdx, "topk_idx", DataType.INT64);
        if (expectedRows >= 0 && tk[0] != expectedRows) {
            throw new IllegalArgumentException(
                    "argument 'topk_idx' has " + tk[0] + " rows but 'x' has " + expectedRows);
        }
        if (tk[1] < 1) {
            throw new IllegalArgumentException(
                    "argument 'topk_idx' has K = " + tk[1] + " columns, expected >= 1");
        }
        if (tk[1] > numExperts) {
            throw new IllegalArgumentException(
                    "argument 'topk_idx' has K = " + tk[1] + " columns, more than num_experts = "
                            + numExperts);
        }
        return tk;
    }

    private void checkOpen() {
        if (closed) {
            throw new IllegalStateException("the EpBuffer is closed");
        }
    }

    @Override
    public void close() {
        closed = true;
    }
}
