/*
 * djl-moe: expert-parallel Mixture-of-Experts for the Deep Java Library.
 */
package dev.djlmoe.ep;

import ai.djl.Device;
import ai.djl.ndarray.NDArray;
import ai.djl.ndarray.types.DataType;
import dev.djlmoe.core.NativeCall;
import dev.djlmoe.dist.ProcessGroup;
import dev.djlmoe.nativeep.cuda.CudaEpBuffer;
import dev.djlmoe.nativeep.cuda.CudaEpException;
import dev.djlmoe.nativeep.cuda.NativeEpCuda;
import java.util.ArrayList;
import java.util.Collections;
import java.util.IdentityHashMap;
import java.util.List;
import java.util.Set;

/**
 * The CUDA plug-in behind {@link EpBuffer}: arrays on one GPU, passed by the device addresses of
 * their storage, over a {@link CudaEpBuffer} connected through cuda-ipc (the ranks of one host) or
 * NCCL (several hosts). Made by {@link CudaConnector}.
 *
 * <p>Every call is enqueued on the legacy default stream, the one libtorch uses, so DJL's
 * operations and the EP kernels stay ordered without any host synchronisation; the notify step
 * waits for the GPU because the host must learn how many rows arrive. Dispatch and combine are
 * asynchronous: a failure on the device is reported by the next call or by {@link #synchronize()}.
 * Tensors stay float32 ({@code NEP_DTYPE_FP32}); the wire format is separate.
 */
final class CudaBackend implements EpBackend {

    /** The legacy default stream, libtorch's unless told otherwise. */
    static final long STREAM = 0L;

    private final ProcessGroup group;
    private final Device device;
    private final int numSms;
    private CudaEpBuffer buffer;
    private final Set<CudaRouting> live = Collections.newSetFromMap(new IdentityHashMap<>());

    CudaBackend(ProcessGroup group, Device device, CudaEpBuffer buffer, int numSms) {
        this.group = group;
        this.device = device;
        this.buffer = buffer;
        this.numSms = numSms;
    }

    @Override
    public Device device() {
        return device;
    }

    /**
     * Returns the SMs dispatch and combine use.
     *
     * @return the SM count
     */
    int numSms() {
        return numSms;
    }

    /**
     * Returns the transport: {@code NEP_CUDA_TRANSPORT_IPC} or {@code NEP_CUDA_TRANSPORT_NCCL}.
     *
     * @return the transport code
     */
    int transport() {
        return open().transport();
    }

    /**
     * Checks a hidden size against the plug-in's row rule before a collective call starts: a
     * multiple of 8 (16-byte rows of bf16). FP8 and MXFP8 rows may end in a partial scaling block,
     * as on the CPU engine.
     *
     * @param hidden the hidden size, positive
     * @param wire the wire format
     * @throws IllegalArgumentException naming the size and the rule
     */
    static void checkHidden(long hidden, WireFormat wire) {
        if (hidden % 8 != 0) {
            throw new IllegalArgumentException(
                    "hidden size "
                            + hidden
                            + " is not a multiple of 8, which a GPU row of the "
                            + wire
                            + " wire needs (16-byte rows of bf16)");
        }
    }

    @Override
    public void layout(
            NDArray topkIdx,
            int numExperts,
            NDArray tokensPerRank,
            NDArray tokensPerExpert,
            NDArray isTokenInRank) {
        long[] tk = topkIdx.getShape().getShape();
        CudaEpBuffer b = open();
        try (GpuArguments args = new GpuArguments(device)) {
            b.layout(
                    args.input(topkIdx, "topk_idx", DataType.INT64),
                    tk[0],
                    (int) tk[1],
                    numExperts,
                    args.output(tokensPerRank, "tokens_per_rank", DataType.INT32),
                    args.output(tokensPerExpert, "tokens_per_expert", DataType.INT32),
                    args.output(isTokenInRank, "is_token_in_rank", DataType.UINT8),
                    STREAM);
            // Layout is a diagnostic, not on the dispatch path: wait, so that a bad index is
            // reported by this call as on the CPU engine.
            b.sync(STREAM);
        } catch (CudaEpException e) {
            throw translate(e);
        }
    }

    @Override
    public EpRouting notify(NDArray topkIdx, int numExperts, int expertAlignment) {
        long[] tk = topkIdx.getShape().getShape();
        CudaEpBuffer b = open();
        try (GpuArguments args = new GpuArguments(device)) {
            CudaEpBuffer.Handle h =
                    b.notify(
                            args.input(topkIdx, "topk_idx", DataType.INT64),
                            tk[0],
                            (int) tk[1],
                            numExperts,
                            expertAlignment,
                            STREAM);
            CudaRouting routing;
            try {
                routing = new CudaRouting(this, h, group.worldSize());
            } catch (RuntimeException e) {
                h.close();
                throw e;
            }
            live.add(routing);
            return routing;
        } catch (CudaEpException e) {
            throw translate(e);
        }
    }

    @Override
    public void dispatch(
            EpRouting routing,
            NDArray x,
            WireFormat wire,
            NDArray topkIdx,
            NDArray topkWeights,
            NDArray recvX,
            NDArray recvTopkIdx,
            NDArray recvTopkWeights) {
        CudaRouting r = (CudaRouting) routing;
        CudaEpBuffer b = open();
        try (GpuArguments args = new GpuArguments(device)) {
            b.dispatch(
                    r.handle(),
                    args.input(x, "x", DataType.FLOAT32),
                    NativeEpCuda.NEP_DTYPE_FP32,
                    x.getShape().get(1),
                    wire.code(),
                    args.input(topkIdx, "topk_idx", DataType.INT64),
                    args.input(topkWeights, "topk_weights", DataType.FLOAT32),
                    args.output(recvX, "recv_x", DataType.FLOAT32),
                    NativeEpCuda.NEP_DTYPE_FP32,
                    args.output(recvTopkIdx, "recv_topk_idx", DataType.INT64),
                    args.output(recvTopkWeights, "recv_topk_weights", DataType.FLOAT32),
                    numSms,
                    STREAM);
            r.markDispatched();
        } catch (CudaEpException e) {
            throw translate(e);
        }
    }

    /** GPU rows of the wire-row dispatch: scales at roundup(H, 16), rows padded to 16 bytes. */
    @Override
    public long[] wireRowLayout(WireFormat wire, long hidden) {
        return gpuLayout(wire, hidden);
    }

    @Override
    public void dispatchWire(
            EpRouting routing,
            NDArray x,
            WireFormat wire,
            NDArray topkIdx,
            NDArray topkWeights,
            NDArray recvRows,
            NDArray recvTopkIdx,
            NDArray recvTopkWeights) {
        CudaRouting r = (CudaRouting) routing;
        CudaEpBuffer b = open();
        try (GpuArguments args = new GpuArguments(device)) {
            b.dispatchWire(
                    r.handle(),
                    args.input(x, "x", DataType.FLOAT32),
                    NativeEpCuda.NEP_DTYPE_FP32,
                    x.getShape().get(1),
                    wire.code(),
                    args.input(topkIdx, "topk_idx", DataType.INT64),
                    args.input(topkWeights, "topk_weights", DataType.FLOAT32),
                    args.output(recvRows, "recv_rows", DataType.UINT8),
                    recvRows.getShape().get(1),
                    args.output(recvTopkIdx, "recv_topk_idx", DataType.INT64),
                    args.output(recvTopkWeights, "recv_topk_weights", DataType.FLOAT32),
                    numSms,
                    STREAM);
            r.markDispatched();
        } catch (CudaEpException e) {
            throw translate(e);
        }
    }

    /**
     * Decodes GPU wire rows into float32 rows, on libtorch's stream.
     *
     * @param rows the rows, in this backend's layout ({@link #wireRowLayout})
     * @param out {@code [R, H]} float32 on the rows' GPU
     * @throws IllegalArgumentException when the rows are not in the GPU layout
     */
    static void decodeWireRows(WireRows rows, NDArray out) {
        Device device = rows.rows().getDevice();
        long[] layout = gpuLayout(rows.wire(), rows.hidden());
        if (rows.rowBytes() != layout[0] || rows.scaleOffset() != layout[1]) {
            throw new IllegalArgumentException(
                    "GPU rows must be in the GPU transport's layout (rowBytes "
                            + layout[0]
                            + ", scaleOffset "
                            + layout[1]
                            + "), got rowBytes "
                            + rows.rowBytes()
                            + ", scaleOffset "
                            + rows.scaleOffset());
        }
        checkHidden(rows.hidden(), rows.wire());
        try (GpuArguments args = new GpuArguments(device)) {
            CudaEpBuffer.decodeWireRows(
                    device.getDeviceId(),
                    rows.wire().code(),
                    args.input(rows.rows(), "rows", DataType.UINT8),
                    rows.numRows(),
                    rows.hidden(),
                    rows.rowBytes(),
                    args.output(out, "out", DataType.FLOAT32),
                    STREAM);
        } catch (CudaEpException e) {
            RuntimeException t = NativeCall.exception(e.status(), device + ": " + e.getMessage());
            t.initCause(e);
            throw t;
        }
    }

    /** The GPU transport's wire row: scales at roundup(H, 16), the row padded to 16 bytes. */
    static long[] gpuLayout(WireFormat wire, long hidden) {
        long scaleOffset = (hidden + 15) / 16 * 16;
        long scaleBytes = WireRows.packedRowBytes(wire, hidden) - hidden;
        return new long[] {(scaleOffset + scaleBytes + 15) / 16 * 16, scaleOffset};
    }

    /**
     * Whether this backend dispatches into wire rows.
     *
     * @return true: the plug-in has {@code nep_cuda_dispatch_wire}
     */
    static boolean hasWireRows() {
        return true;
    }

    @Override
    public void checkCombineWire(WireFormat wire) {
        if (wire != WireFormat.FP32 && wire != WireFormat.BF16) {
            throw new IllegalArgumentException(
                    "argument 'wire' = "
                            + wire
                            + ": combine on a GPU (CUDA plug-in) supports the"
                            + " FP32 and BF16 wires only; FP8 and MXFP8 combine run on the CPU"
                            + " engine (CPU arrays)");
        }
    }

    @Override
    public void combine(
            EpRouting routing,
            NDArray y,
            WireFormat wire,
            NDArray yWeights,
            NDArray out,
            NDArray outWeights) {
        CudaRouting r = (CudaRouting) routing;
        checkCombineWire(wire);
        if (!r.dispatched()) {
            throw new IllegalArgumentException(
                    "argument 'handle' has not been used by a dispatch yet: on a GPU, combine"
                            + " needs the source indices its first dispatch writes");
        }
        CudaEpBuffer b = open();
        try (GpuArguments args = new GpuArguments(device)) {
            b.combine(
                    r.handle(),
                    args.input(y, "y", DataType.FLOAT32),
                    NativeEpCuda.NEP_DTYPE_FP32,
                    y.getShape().get(1),
                    wire.code(),
                    args.input(yWeights, "y_weights", DataType.FLOAT32),
                    args.output(out, "out", DataType.FLOAT32),
                    NativeEpCuda.NEP_DTYPE_FP32,
                    args.output(outWeights, "out_weights", DataType.FLOAT32),
                    numSms,
                    STREAM);
        } catch (CudaEpException e) {
            throw translate(e);
        }
    }

    @Override
    public void synchronize() {
        try {
            open().sync(STREAM);
        } catch (CudaEpException e) {
            throw translate(e);
        }
    }

    /**
     * Turns a failure of the plug-in into the exception the CPU engine raises for the same status
     * ({@link NativeCall#exception}), naming this rank and its GPU.
     *
     * @param e the plug-in's exception, whose message names the operation
     * @return the exception to throw
     */
    RuntimeException translate(CudaEpException e) {
        return translate(e, group.rank(), device);
    }

    /**
     * Turns a failure of the plug-in (either mode) into the CPU engine's exception for the same
     * status, naming the rank and its GPU.
     *
     * @param e the plug-in's exception, whose message names the operation
     * @param rank the rank
     * @param device its GPU
     * @return the exception to throw
     */
    static RuntimeException translate(CudaEpException e, int rank, Device device) {
        RuntimeException t =
                NativeCall.exception(
                        e.status(), "rank " + rank + " (" + device + "), " + e.getMessage());
        t.initCause(e);
        return t;
    }

    /**
     * Drops a closed routing from the ones {@link #close()} must release.
     *
     * @param routing the routing
     */
    void forget(CudaRouting routing) {
        live.remove(routing);
    }

    private CudaEpBuffer open() {
        if (buffer == null) {
            throw new IllegalStateException("the EpBuffer's CUDA buffer is closed");
        }
        return buffer;
    }

    /**
     * Releases every routing still open (the plug-in frees a handle through its buffer), waits for
     * the other ranks (no peer may still be using this rank's memory), then the buffer. With
     * several ranks this is collective; a failed barrier (a peer that died) still releases the
     * buffer, then is thrown.
     */
    @Override
    public void close() {
        if (buffer == null) {
            return;
        }
        List<CudaRouting> open = new ArrayList<>(live);
        for (CudaRouting r : open) {
            r.close();
        }
        live.clear();
        CudaEpBuffer released = buffer;
        buffer = null;
        CudaConnector.releaseCollectively(group, released::close);
    }
}
