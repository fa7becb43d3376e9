/*
 * djl-moe: expert-parallel Mixture-of-Experts for the Deep Java Library.
 */
package dev.djlmoe.nn;

import ai.djl.ndarray.NDArray;
import ai.djl.ndarray.NDArrays;
import ai.djl.ndarray.NDList;
import ai.djl.ndarray.NDManager;
import ai.djl.ndarray.types.DataType;
import ai.djl.ndarray.types.Shape;
import ai.djl.pytorch.engine.PtNDArray;
import ai.djl.pytorch.jni.JniUtils;
import dev.djlmoe.autograd.Autograd;
import dev.djlmoe.autograd.Tape;
import dev.djlmoe.ep.WireRows;
import dev.djlmoe.gemm.Fp8ExpertGemms;
import dev.djlmoe.gemm.GemmFormat;
import dev.djlmoe.gemm.QuantizedWeights;
import java.util.function.UnaryOperator;

/**
 * The routed experts' SwiGLU feed-forward on rows sorted by expert through the native grouped FP8
 * GEMMs: one entry of the staged backward's tape (inputs: the sorted rows and the three weight
 * parameters; output: the expert outputs), whose vector-Jacobian product runs the native
 * activation- and weight-gradient GEMMs. Without a tape only the forward runs.
 */
final class NativeExpertFfn {

    private NativeExpertFfn() {}

    /**
     * Returns the format of a quantised precision.
     *
     * @param precision FP8 or MXFP8
     * @return the native format
     */
    static GemmFormat format(ExpertPrecision precision) {
        return switch (precision) {
            case FP8 -> GemmFormat.FP8_BLOCK;
            case MXFP8 -> GemmFormat.MXFP8;
            case FP32 -> throw new IllegalArgumentException("FP32 has no native FP8 format");
        };
    }

    /**
     * Runs the experts on sorted rows.
     *
     * @param sortedX rows grouped by expert: [N, H], in the graph
     * @param offsets group offsets: El + 1, from 0 to N
     * @param gateProj [El, I, H]
     * @param upProj [El, I, H]
     * @param downProj [El, H, I]
     * @param precision FP8 or MXFP8
     * @param tape the step's tape, or null (forward only)
     * @return the expert outputs [N, H]: a tape leaf with a tape, else a plain array
     */
    static NDArray apply(
            NDArray sortedX,
            long[] offsets,
            NDArray gateProj,
            NDArray upProj,
            NDArray downProj,
            ExpertPrecision precision,
            Tape tape) {
        long inter = gateProj.getShape().get(1);
        QuantizedWeights weights =
                quantizeWeights(sortedX.getManager(), gateProj, upProj, downProj, precision, tape);
        NDArray x = sortedX.stopGradient();
        Fp8ExpertGemms.Forward forward = Fp8ExpertGemms.forward(x, offsets, weights);
        if (tape != null) {
            weights.closeForward(); // the backward reads the transposed copies only
        }
        if (tape == null) {
            releaseSaved(forward);
            x.close(); // (forward.x() is x, or its contiguous copy)
            return forward.y();
        }
        NDList inputs = new NDList(sortedX, gateProj, upProj, downProj);
        return record(
                tape,
                inputs,
                forward,
                inter,
                dx -> {
                    x.close();
                    return dx;
                });
    }

    /**
     * Records the expert FFN on the tape: {@code inputs} are the rows' stand-in and the three
     * weights, the VJP runs the backward GEMMs and {@code rowsGrad} turns the gradient of the
     * sorted rows into that of {@code inputs}' first.
     *
     * @return the tape leaf of the forward's output
     */
    private static NDArray record(
            Tape tape,
            NDList inputs,
            Fp8ExpertGemms.Forward forward,
            long inter,
            UnaryOperator<NDArray> rowsGrad) {
        return tape.record(
                        inputs,
                        new NDList(forward.y()),
                        grads -> {
                            Fp8ExpertGemms.Gradients g =
                                    Fp8ExpertGemms.backward(forward, grads.get(0));
                            NDList gateUp = g.dw13().split(new long[] {inter}, 1);
                            // The two halves are views that keep the storage: the tape frees
                            // them once pushed, and with them the [G, 2I, H] gradient.
                            g.dw13().close();
                            g.dh().close();
                            g.dy13().close();
                            // The tape runs each entry's VJP once: what the forward saved for it
                            // (activations, quantised weights) is freed now, not at the step's end.
                            releaseSaved(forward);
                            NDArray dRows = rowsGrad.apply(g.dx());
                            return new NDList(dRows, gateUp.get(0), gateUp.get(1), g.dw2());
                        })
                .head();
    }

    /**
     * Runs the experts on wire rows sorted by expert, as the dispatch received them (the
     * feed-through of {@link WireFeed}): the gate/up GEMM reads their bytes in place and the
     * backward keeps them instead of float rows. With a tape, the entry's input is {@code recvX},
     * the float stand-in for the received rows in the graph, and its vector-Jacobian product turns
     * the sorted rows' gradient into theirs through the same gather backward that {@code
     * recvX.get(rowIdx)} would run, so the gradients equal those of the float path bit for bit.
     *
     * @param recvX [R, H] float32 leaf standing for the received rows (the dispatch's tape leaf),
     *     or null without a tape
     * @param rowIdx [N] int64: the received row of each sorted row; owned by this call from now on
     * @param sortedRows the wire rows gathered by {@code rowIdx}: [N, rowBytes] uint8, owned by
     *     this call from now on
     * @param offsets group offsets: El + 1, from 0 to N
     * @param gateProj [El, I, H]
     * @param upProj [El, I, H]
     * @param downProj [El, H, I]
     * @param precision FP8 (with FP8 wire rows) or MXFP8 (with MXFP8 wire rows)
     * @param tape the step's tape, or null (forward only)
     * @return the expert outputs [N, H]: a tape leaf with a tape, else a plain array
     */
    static NDArray applyWire(
            NDArray recvX,
            NDArray rowIdx,
            WireRows sortedRows,
            long[] offsets,
            NDArray gateProj,
            NDArray upProj,
            NDArray downProj,
            ExpertPrecision precision,
            Tape tape) {
        long inter = gateProj.getShape().get(1);
        QuantizedWeights weights =
                quantizeWeights(
                        sortedRows.rows().getManager(),
                        gateProj,
                        upProj,
                        downProj,
                        precision,
                        tape);
        Fp8ExpertGemms.Forward forward = Fp8ExpertGemms.forward(sortedRows, offsets, weights);
        if (tape != null) {
            weights.closeForward(); // the backward reads the transposed copies only
        }
        if (tape == null) {
            releaseSaved(forward);
            sortedRows.rows().close();
            rowIdx.close();
            return forward.y();
        }
        if (recvX == null) {
            throw new IllegalArgumentException("argument 'recvX' is null but a tape is given");
        }
        long[] rs = recvX.getShape().getShape();
        NDList inputs = new NDList(recvX, gateProj, upProj, downProj);
        return record(
                tape,
                inputs,
                forward,
                inter,
                dSorted -> {
                    sortedRows.rows().close();
                    NDArray dRecv = gatherBackward(dSorted, rowIdx, rs[0], rs[1]);
                    dSorted.close();
                    rowIdx.close();
                    return dRecv;
                });
    }

    /**
     * The gradient of {@code x [rows, hidden]} through {@code x.get(rowIdx)} for the gradient
     * {@code dSorted} of the gathered rows: autograd's own gather backward (an accumulating
     * scatter) on a fresh array, so the sums come out exactly as on the float path.
     */
    private static NDArray gatherBackward(NDArray dSorted, NDArray rowIdx, long rows, long hidden) {
        boolean was = JniUtils.isGradMode();
        JniUtils.setGradMode(true);
        try (NDManager scratch = dSorted.getManager().newSubManager()) {
            NDArray z = scratch.zeros(new Shape(rows, hidden), DataType.FLOAT32);
            z.setRequiresGradient(true);
            NDArray gathered = z.get(rowIdx);
            if (!Autograd.backward(gathered, dSorted.stopGradient())) {
                throw new IllegalStateException("the gather of the sorted rows was not recorded");
            }
            NDArray grad = JniUtils.getGradient((PtNDArray) z);
            NDArray out = grad.duplicate();
            out.attach(dSorted.getManager());
            return out;
        } finally {
            JniUtils.setGradMode(was);
        }
    }

    /** The step's weights, quantised once for the forward (and transposed for the backward). */
    private static QuantizedWeights quantizeWeights(
            NDManager manager,
            NDArray gateProj,
            NDArray upProj,
            NDArray downProj,
            ExpertPrecision precision,
            Tape tape) {
        NDList detached =
                new NDList(gateProj.stopGradient(), upProj.stopGradient(), downProj.stopGradient());
        NDArray w13 = NDArrays.concat(new NDList(detached.get(0), detached.get(1)), 1);
        QuantizedWeights weights =
                QuantizedWeights.quantize(
                        manager, format(precision), w13, detached.get(2), tape != null);
        w13.close();
        for (NDArray a : detached) {
            a.close();
        }
        return weights;
    }

    /** Closes what the forward kept for the backward: x, y13, h and the quantised weights. */
    private static void releaseSaved(Fp8ExpertGemms.Forward forward) {
        forward.y13().close();
        forward.h().close();
        if (forward.x() != null) {
            forward.x().close();
        }
        for (NDArray a : forward.weights().arrays()) {
            a.close();
        }
    }
}
