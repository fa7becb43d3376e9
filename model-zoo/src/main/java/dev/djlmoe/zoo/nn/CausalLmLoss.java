/*
 * djl-moe: expert-parallel Mixture-of-Experts for the Deep Java Library.
 */
package dev.djlmoe.zoo.nn;

import ai.djl.ndarray.NDArray;
import ai.djl.ndarray.NDList;
import ai.djl.ndarray.types.DataType;
import ai.djl.training.loss.Loss;
import dev.djlmoe.autograd.Autograd;

/**
 * Next-token cross-entropy: mean over positions whose label is not {@link #IGNORE_INDEX} of {@code
 * -log softmax(logits)[label]}.
 *
 * <p>Predictions {@code logits [B, S, V]} float32; labels {@code [B, S]} int64 in {@code [0, V)} or
 * {@code -100} (not counted, e.g. prompt tokens in fine-tuning).
 */
public final class CausalLmLoss extends Loss {

    /** Label value that is not counted. */
    public static final long IGNORE_INDEX = -100;

    /** Creates the loss, named {@code "CausalLmLoss"}. */
    public CausalLmLoss() {
        super("CausalLmLoss");
    }

    @Override
    public NDArray evaluate(NDList labels, NDList predictions) {
        return crossEntropy(predictions.head(), labels.head());
    }

    /**
     * Computes the loss.
     *
     * @param logits {@code [B, S, V]}
     * @param labels {@code [B, S]} int64
     * @return a scalar
     */
    public static NDArray crossEntropy(NDArray logits, NDArray labels) {
        long v = logits.getShape().get(logits.getShape().dimension() - 1);
        NDArray flatLogits = logits.reshape(-1, v); // [N, V]
        NDArray flatLabels = labels.reshape(-1, 1).toType(DataType.INT64, false); // [N, 1]
        NDArray valid = flatLabels.neq(Autograd.scalar(flatLabels, IGNORE_INDEX)); // [N, 1]
        NDArray safeLabels = flatLabels.mul(valid.toType(DataType.INT64, false));
        NDArray logProbs = flatLogits.logSoftmax(-1); // [N, V]
        // The view's handle would keep the logits' storage alive until the step's arrays close
        // even where the caller frees them (autograd keeps only the log-softmax's output).
        flatLogits.close();
        NDArray logp = logProbs.gather(safeLabels, 1); // [N, 1]
        logProbs.close(); // autograd holds its own reference for the backward
        NDArray validF = valid.toType(DataType.FLOAT32, false);
        NDArray sum = validF.sum();
        NDArray count = sum.maximum(Autograd.scalar(sum, 1));
        return logp.mul(validF).sum().neg().div(count);
    }
}
