/*
 * djl-moe: expert-parallel Mixture-of-Experts for the Deep Java Library.
 */
package dev.djlmoe.ep;

import ai.djl.Device;
import ai.djl.ndarray.NDArray;
import ai.djl.ndarray.NDManager;
import ai.djl.ndarray.types.DataType;
import ai.djl.ndarray.types.Shape;
import dev.djlmoe.core.TorchMemory;
import dev.djlmoe.dist.ProcessGroup;
import dev.djlmoe.nativeep.cuda.CudaEpException;
import dev.djlmoe.nativeep.cuda.CudaLowLatencyBuffer;
import dev.djlmoe.nativeep.cuda.NativeEpCuda;
import java.util.ArrayList;
import java.util.Collections;
import java.util.IdentityHashMap;
import java.util.Set;

/**
 * The CUDA plug-in behind {@link LowLatencyBuffer}: arrays on one GPU, over a {@link
 * CudaLowLatencyBuffer} connected through cuda-ipc (made by {@link CudaConnector}). Sends and
 * receives are enqueued on the legacy default stream, libtorch's, with no host synchronisation;
 * tensors stay float32 ({@code NEP_DTYPE_FP32}) whatever the wire.
 */
final class CudaLowLatencyBackend {

    private final ProcessGroup group;
    private final Device device;
    private CudaLowLatencyBuffer buffer;
    private final Set<CudaLowLatencyOp<?>> pending =
            Collections.newSetFromMap(new IdentityHashMap<>());

    CudaLowLatencyBackend(ProcessGroup group, Device device, CudaLowLatencyBuffer buffer) {
        this.group = group;
        this.device = device;
        this.buffer = buffer;
    }

    /**
     * Returns the GPU of this backend.
     *
     * @return the device
     */
    Device device() {
        return device;
    }

    /**
     * Enqueues the send phase of a dispatch; the op's receive allocates the outputs on the GPU with
     * {@code x}'s manager.
     *
     * @param owner the facade, owner of the handle the receive makes
     * @param x {@code [T, H]} float32
     * @param topkIdx {@code [T, K]} int64
     * @param wire the wire format
     * @param roundScale power-of-two FP8 scales
     * @return the pending op
     */
    LowLatencyOp<LowLatencyDispatch> dispatchSend(
            LowLatencyBuffer owner,
            NDArray x,
            NDArray topkIdx,
            WireFormat wire,
            boolean roundScale) {
        CudaLowLatencyBuffer b = open();
        long tokens = x.getShape().get(0);
        int topk = (int) topkIdx.getShape().get(1);
        NDManager manager = x.getManager();
        GpuArguments args = new GpuArguments(device);
        try {
            CudaLowLatencyBuffer.Op op =
                    b.dispatchSend(
                            args.input(x, "x", DataType.FLOAT32),
                            NativeEpCuda.NEP_DTYPE_FP32,
                            tokens,
                            owner.hidden(),
                            args.input(topkIdx, "topk_idx", DataType.INT64),
                            topk,
                            wire.code(),
                            roundScale ? NativeEpCuda.NEP_CUDA_LL_ROUND_SCALE : 0,
                            CudaBackend.STREAM);
            // The send's kernels are enqueued: its inputs (and their copies) may go.
            args.close();
            return track(
                    new CudaLowLatencyOp<>(
                            this,
                            op,
                            o -> receiveDispatch(o, owner, manager, tokens, topk),
                            new GpuArguments(device)));
        } catch (CudaEpException e) {
            args.close();
            throw translate(e);
        } catch (RuntimeException e) {
            args.close();
            throw e;
        }
    }

    private LowLatencyDispatch receiveDispatch(
            CudaLowLatencyBuffer.Op op,
            LowLatencyBuffer owner,
            NDManager manager,
            long tokens,
            int topk) {
        int el = owner.numLocalExperts();
        int w = owner.worldSize();
        long rows = (long) w * owner.maxTokensPerRank();
        NDArray recvX =
                TorchMemory.empty(
                        manager, new Shape(el, rows, owner.hidden()), DataType.FLOAT32, device);
        NDArray recvCount = TorchMemory.empty(manager, new Shape(el), DataType.INT32, device);
        NDArray srcInfo = TorchMemory.empty(manager, new Shape(el, rows), DataType.INT32, device);
        NDArray range = TorchMemory.empty(manager, new Shape(el, w), DataType.INT64, device);
        CudaLowLatencyBuffer.Handle h;
        try (GpuArguments args = new GpuArguments(device)) {
            h =
                    op.dispatchRecv(
                            args.output(recvX, "recv_x", DataType.FLOAT32),
                            NativeEpCuda.NEP_DTYPE_FP32,
                            args.output(recvCount, "recv_count", DataType.INT32),
                            args.output(srcInfo, "recv_src_info", DataType.INT32),
                            args.output(range, "recv_layout_range", DataType.INT64),
                            CudaBackend.STREAM);
        } catch (RuntimeException e) {
            recvX.close();
            recvCount.close();
            srcInfo.close();
            range.close();
            throw e;
        }
        // The handle keeps its own counts: the caller may close the returned ones.
        LowLatencyRouting routing =
                new CudaLowLatencyRouting(h, recvCount.duplicate(), srcInfo, range);
        LowLatencyHandle handle =
                new LowLatencyHandle(
                        owner,
                        device,
                        tokens,
                        topk,
                        el,
                        w,
                        owner.maxTokensPerRank(),
                        owner.hidden(),
                        routing);
        return new LowLatencyDispatch(recvX, recvCount, handle);
    }

    /**
     * Enqueues the send phase of a combine; {@code topkIdx} and {@code topkWeights} are read by the
     * receive, so they (or their contiguous copies) are kept until the op is released.
     *
     * @param routing the dispatch's routing
     * @param y {@code [E/W, W * Tm, H]} float32
     * @param topkIdx {@code [T, K]} int64 as dispatched
     * @param topkWeights {@code [T, K]} float32
     * @param wire the wire format
     * @param hidden H
     * @return the pending op; its receive returns {@code out [T, H]}
     */
    LowLatencyOp<NDArray> combineSend(
            CudaLowLatencyRouting routing,
            NDArray y,
            NDArray topkIdx,
            NDArray topkWeights,
            WireFormat wire,
            long hidden) {
        CudaLowLatencyBuffer b = open();
        long tokens = topkIdx.getShape().get(0);
        NDManager manager = y.getManager();
        GpuArguments kept = new GpuArguments(device);
        try (GpuArguments args = new GpuArguments(device)) {
            CudaLowLatencyBuffer.Op op =
                    b.combineSend(
                            routing.handle(),
                            args.input(y, "y", DataType.FLOAT32),
                            NativeEpCuda.NEP_DTYPE_FP32,
                            kept.input(topkIdx, "topk_idx", DataType.INT64),
                            kept.input(topkWeights, "topk_weights", DataType.FLOAT32),
                            wire.code(),
                            CudaBackend.STREAM);
            return track(
                    new CudaLowLatencyOp<>(
                            this, op, o -> receiveCombine(o, manager, tokens, hidden), kept));
        } catch (CudaEpException e) {
            kept.close();
            throw translate(e);
        } catch (RuntimeException e) {
            kept.close();
            throw e;
        }
    }

    private NDArray receiveCombine(
            CudaLowLatencyBuffer.Op op, NDManager manager, long tokens, long hidden) {
        NDArray out =
                TorchMemory.empty(manager, new Shape(tokens, hidden), DataType.FLOAT32, device);
        try (GpuArguments args = new GpuArguments(device)) {
            op.combineRecv(
                    args.output(out, "out", DataType.FLOAT32),
                    NativeEpCuda.NEP_DTYPE_FP32,
                    CudaBackend.STREAM);
            return out;
        } catch (RuntimeException e) {
            out.close();
            throw e;
        }
    }

    /** Waits for the queued work and reports the buffer's first failure on the device. */
    void synchronize() {
        try {
            open().sync(CudaBackend.STREAM);
        } catch (CudaEpException e) {
            throw translate(e);
        }
    }

    /**
     * Turns a failure of the plug-in into the CPU engine's exception for the same status, naming
     * this rank and its GPU.
     *
     * @param e the plug-in's exception
     * @return the exception to throw
     */
    RuntimeException translate(CudaEpException e) {
        return CudaBackend.translate(e, group.rank(), device);
    }

    private <R> CudaLowLatencyOp<R> track(CudaLowLatencyOp<R> op) {
        pending.add(op);
        return op;
    }

    /**
     * Drops a released op from the ones {@link #close()} must release.
     *
     * @param op the op
     */
    void forget(CudaLowLatencyOp<?> op) {
        pending.remove(op);
    }

    private CudaLowLatencyBuffer open() {
        if (buffer == null) {
            throw new IllegalStateException("the LowLatencyBuffer's CUDA buffer is closed");
        }
        return buffer;
    }

    /**
     * Abandons the ops still pending (their receives drain the buffer's halves), waits for the
     * other ranks (collective with several ranks: no peer may still write into this rank's memory)
     * and releases the buffer; a failed barrier is thrown after the release.
     */
    void close() {
        if (buffer == null) {
            return;
        }
        for (CudaLowLatencyOp<?> op : new ArrayList<>(pending)) {
            op.release();
        }
        pending.clear();
        CudaLowLatencyBuffer released = buffer;
        buffer = null;
        CudaConnector.releaseCollectively(group, released::close);
    }
}
