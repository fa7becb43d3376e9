/*
 * djl-moe: expert-parallel Mixture-of-Experts for the Deep Java Library.
 */
package dev.djlmoe.ep;

import dev.djlmoe.nativeep.cuda.CudaEpException;
import dev.djlmoe.nativeep.cuda.CudaLowLatencyBuffer;

/**
 * The CUDA plug-in's pending low-latency send. Its receive only enqueues kernels on the stream (the
 * host never waits), so it is always ready; the counts of what was sent stay on the device. The
 * arguments the receive still reads (a combine's routing and weights, or their contiguous copies)
 * are kept until the op is released.
 *
 * @param <R> the result of the receive
 */
final class CudaLowLatencyOp<R> implements LowLatencyOp<R> {

    /** Enqueues the plug-in's receive of an op and builds the result. */
    @FunctionalInterface
    interface Receiver<R> {
        R receive(CudaLowLatencyBuffer.Op op);
    }

    private final CudaLowLatencyBackend backend;
    private CudaLowLatencyBuffer.Op op;
    private final Receiver<R> receiver;
    private final GpuArguments kept;
    private final long callIndex;

    CudaLowLatencyOp(
            CudaLowLatencyBackend backend,
            CudaLowLatencyBuffer.Op op,
            Receiver<R> receiver,
            GpuArguments kept) {
        this.backend = backend;
        this.op = op;
        this.receiver = receiver;
        this.kept = kept;
        callIndex = op.callIndex();
    }

    @Override
    public long callIndex() {
        return callIndex;
    }

    @Override
    public long rowsSent() {
        return -1;
    }

    @Override
    public long bytesSent() {
        return -1;
    }

    @Override
    public boolean ready() {
        return op != null;
    }

    @Override
    public R receive() {
        if (op == null) {
            throw new IllegalStateException("the low-latency op is released");
        }
        try {
            return receiver.receive(op);
        } catch (CudaEpException e) {
            throw backend.translate(e);
        }
    }

    @Override
    public void release() {
        if (op != null) {
            op.close();
            op = null;
            kept.close();
            backend.forget(this);
        }
    }
}
