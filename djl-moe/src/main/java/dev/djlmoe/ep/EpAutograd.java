/*
 * djl-moe: expert-parallel Mixture-of-Experts for the Deep Java Library.
 */
package dev.djlmoe.ep;

import ai.djl.ndarray.NDArray;
import ai.djl.ndarray.NDList;
import ai.djl.ndarray.types.DataType;
import ai.djl.ndarray.types.Shape;
import dev.djlmoe.autograd.Autograd;
import dev.djlmoe.autograd.Tape;

/**
 * Dispatch and combine as differentiable operations on a {@link Tape}, using their duality: the
 * backward of dispatch is a combine of the gradients (the routing weights' gradient included) and
 * the backward of combine is a cached dispatch with the same handle.
 */
public final class EpAutograd {

    private EpAutograd() {}

    /**
     * Dispatches {@code x} and its routing; with a tape, the received rows and weights come back as
     * leaves whose gradients return through a combine.
     *
     * @param tape the tape of the training step, or null for inference
     * @param buffer the EP buffer
     * @param x {@code [T, H]} float32
     * @param topkIdx {@code [T, K]} int64
     * @param topkWeights {@code [T, K]} float32
     * @param numExperts E
     * @param expertAlignment per-expert count padding
     * @param wire forward wire format
     * @param backwardWire wire format of the gradients' combine
     * @return the dispatch result; its handle is owned by the tape when one is given, otherwise by
     *     the caller
     */
    public static DispatchResult dispatch(
            Tape tape,
            EpBuffer buffer,
            NDArray x,
            NDArray topkIdx,
            NDArray topkWeights,
            int numExperts,
            int expertAlignment,
            WireFormat wire,
            WireFormat backwardWire) {
        DispatchResult d =
                buffer.dispatch(x, topkIdx, topkWeights, numExperts, expertAlignment, wire);
        if (tape == null) {
            return d;
        }
        EpHandle handle = d.handle();
        NDList leaves =
                recordDispatch(
                        tape,
                        buffer,
                        handle,
                        x,
                        topkWeights,
                        d.recvX(),
                        d.recvTopkIdx(),
                        d.recvTopkWeights(),
                        backwardWire);
        return new DispatchResult(
                leaves.get(0), d.recvTopkIdx(), leaves.get(1), d.recvTokensPerExpert(), handle);
    }

    /**
     * A dispatch into wire rows on a tape.
     *
     * @param result the rows in wire form, the local top-k, the weights (a tape leaf with a tape),
     *     the counts and the handle
     * @param recvX with a tape, a {@code [R, H]} float32 leaf that stands for the received rows in
     *     the graph: its values are zeros held in one element of storage (a broadcast), and the
     *     gradient its consumers push into it is what the dispatch's backward combines; null
     *     without a tape
     */
    public record WireLeaves(WireDispatch result, NDArray recvX) {}

    /**
     * Dispatches {@code x} and its routing into wire rows ({@link EpBuffer#dispatchWire}); with a
     * tape, a float stand-in for the received rows and the received weights come back as leaves
     * whose gradients return through a combine, exactly as with {@link #dispatch}. The consumer of
     * the wire rows pushes the gradient of the rows into the stand-in.
     *
     * @param tape the tape of the training step, or null for inference
     * @param buffer the EP buffer
     * @param x {@code [T, H]} float32
     * @param topkIdx {@code [T, K]} int64
     * @param topkWeights {@code [T, K]} float32
     * @param numExperts E
     * @param expertAlignment per-expert count padding
     * @param wire forward wire format: FP8 or MXFP8
     * @param backwardWire wire format of the gradients' combine
     * @return the wire rows and the stand-in; the handle is owned by the tape when one is given,
     *     otherwise by the caller
     */
    public static WireLeaves dispatchWire(
            Tape tape,
            EpBuffer buffer,
            NDArray x,
            NDArray topkIdx,
            NDArray topkWeights,
            int numExperts,
            int expertAlignment,
            WireFormat wire,
            WireFormat backwardWire) {
        WireDispatch d =
                buffer.dispatchWire(x, topkIdx, topkWeights, numExperts, expertAlignment, wire);
        if (tape == null) {
            return new WireLeaves(d, null);
        }
        EpHandle handle = d.handle();
        long rows = d.recv().numRows();
        NDArray one = x.getManager().zeros(new Shape(1, 1), DataType.FLOAT32, x.getDevice());
        NDArray standIn = one.broadcast(new Shape(rows, d.recv().hidden())); // [R, H], no storage
        NDList leaves =
                recordDispatch(
                        tape,
                        buffer,
                        handle,
                        x,
                        topkWeights,
                        standIn,
                        d.recvTopkIdx(),
                        d.recvTopkWeights(),
                        backwardWire);
        standIn.close();
        one.close();
        return new WireLeaves(
                new WireDispatch(
                        d.recv(), d.recvTopkIdx(), leaves.get(1), d.recvTokensPerExpert(), handle),
                leaves.get(0));
    }

    /**
     * Records a dispatch on the tape, which keeps its handle from now on: {@code x} and {@code
     * topkWeights} in, {@code recvX} and {@code recvTopkWeights} out, and the backward a combine of
     * their gradients.
     *
     * @return the leaves of {@code recvX} and {@code recvTopkWeights}
     */
    private static NDList recordDispatch(
            Tape tape,
            EpBuffer buffer,
            EpHandle handle,
            NDArray x,
            NDArray topkWeights,
            NDArray recvX,
            NDArray recvTopkIdx,
            NDArray recvTopkWeights,
            WireFormat backwardWire) {
        tape.keepUntilClose(handle);
        NDArray localSlots =
                recvTopkIdx.gte(
                        Autograd.scalar(recvTopkIdx, 0)); // [R, K]: slots whose expert is here
        return tape.record(
                new NDList(x, topkWeights),
                new NDList(recvX, recvTopkWeights),
                grads -> {
                    // Non-local slots were zeroed by dispatch: their derivative is zero.
                    NDArray gw = grads.get(1).mul(localSlots);
                    CombineResult c = buffer.combine(grads.get(0), gw, handle, backwardWire);
                    return new NDList(c.out(), c.outWeights());
                });
    }

    /**
     * Combines {@code y} back to the source ranks; with a tape the result is a leaf whose gradient
     * returns through a cached dispatch.
     *
     * @param tape the tape of the training step, or null for inference
     * @param buffer the EP buffer
     * @param y {@code [R, H]} float32
     * @param handle the routing of the dispatch that produced the rows
     * @param wire forward wire format
     * @param backwardWire wire format of the gradients' dispatch
     * @return {@code [T, H]} float32
     */
    public static NDArray combine(
            Tape tape,
            EpBuffer buffer,
            NDArray y,
            EpHandle handle,
            WireFormat wire,
            WireFormat backwardWire) {
        NDArray out = buffer.combine(y, null, handle, wire).out();
        if (tape == null) {
            return out;
        }
        return tape.record(
                        new NDList(y),
                        new NDList(out),
                        grads -> new NDList(buffer.dispatch(grads.get(0), handle, backwardWire)))
                .singletonOrThrow();
    }
}
