/*
 * djl-moe: expert-parallel Mixture-of-Experts for the Deep Java Library.
 */
package dev.djlmoe.ep;

import dev.djlmoe.nativeep.NativeEp;

/**
 * The CPU engine's pending low-latency send ({@code nep_ll_op}).
 *
 * @param <R> the result of the receive
 */
final class CpuLowLatencyOp<R> implements LowLatencyOp<R> {

    /** Completes the native receive of an op and builds the result. */
    @FunctionalInterface
    interface Receiver<R> {
        R receive(NativeEp.nep_ll_op op);
    }

    private NativeEp.nep_ll_op op;
    private final Receiver<R> receiver;

    CpuLowLatencyOp(NativeEp.nep_ll_op op, Receiver<R> receiver) {
        this.op = op;
        this.receiver = receiver;
    }

    @Override
    public long callIndex() {
        return NativeEp.nep_ll_op_call_index(op);
    }

    @Override
    public long rowsSent() {
        return NativeEp.nep_ll_op_rows_sent(op);
    }

    @Override
    public long bytesSent() {
        return NativeEp.nep_ll_op_bytes_sent(op);
    }

    @Override
    public boolean ready() {
        return op != null && NativeEp.nep_ll_op_ready(op) == 1;
    }

    @Override
    public R receive() {
        return receiver.receive(op);
    }

    @Override
    public void release() {
        if (op != null) {
            NativeEp.nep_ll_op_destroy(op);
            op = null;
        }
    }
}
