/*
 * djl-moe: expert-parallel Mixture-of-Experts for the Deep Java Library.
 */
package dev.djlmoe.nn;

import ai.djl.ndarray.NDArray;
import ai.djl.ndarray.NDArrays;
import ai.djl.ndarray.NDList;
import ai.djl.ndarray.NDManager;
import dev.djlmoe.autograd.Tape;
import dev.djlmoe.gemm.Fp8ExpertGemms;
import dev.djlmoe.gemm.GemmFormat;
import dev.djlmoe.gemm.QuantizedWeights;

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
        NDManager manager = sortedX.getManager();
        long inter = gateProj.getShape().get(1);
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
        NDArray x = sortedX.stopGradient();
        Fp8ExpertGemms.Forward forward = Fp8ExpertGemms.forward(x, offsets, weights);
        if (tape == null) {
            releaseSaved(forward);
            x.close(); // (forward.x() is x, or its contiguous copy)
            return forward.y();
        }
        NDList inputs = new NDList(sortedX, gateProj, upProj, downProj);
        return tape.record(
                        inputs,
                        new NDList(forward.y()),
                        grads -> {
                            Fp8ExpertGemms.Gradients g =
                                    Fp8ExpertGemms.backward(forward, grads.get(0));
                            NDList gateUp = g.dw13().split(new long[] {inter}, 1);
                            g.dh().close();
                            g.dy13().close();
                            // The tape runs each entry's VJP once: what the forward saved for it
                            // (activations, quantised weights) is freed now, not at the step's end.
                            releaseSaved(forward);
                            x.close();
                            return new NDList(g.dx(), gateUp.get(0), gateUp.get(1), g.dw2());
                        })
                .head();
    }

    /** Closes what the forward kept for the backward: x, y13, h and the quantised weights. */
    private static void releaseSaved(Fp8ExpertGemms.Forward forward) {
        forward.y13().close();
        forward.h().close();
        forward.x().close();
        for (NDArray a : forward.weights().arrays()) {
            a.close();
        }
    }
}
