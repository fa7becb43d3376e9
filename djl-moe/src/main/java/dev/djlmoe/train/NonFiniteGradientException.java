/*
 * djl-moe: expert-parallel Mixture-of-Experts for the Deep Java Library.
 */
package dev.djlmoe.train;

/**
 * A training step produced a NaN or infinite global gradient norm (a NaN or Inf in the inputs,
 * activations, weights or loss). {@link EpTrainer} raises it before the optimizer runs, so the
 * parameters keep their values, and resets the gradients, so the next step starts clean. The norm
 * is agreed over all ranks, so every rank raises it at the same step.
 */
public class NonFiniteGradientException extends IllegalStateException {

    private static final long serialVersionUID = 1L;

    private final double gradNorm;
    private final float loss;

    /**
     * Creates the exception.
     *
     * @param gradNorm the global gradient norm (NaN or infinite)
     * @param loss this rank's loss of the step
     */
    public NonFiniteGradientException(double gradNorm, float loss) {
        super(
                "global gradient norm = "
                        + gradNorm
                        + " (this rank's loss = "
                        + loss
                        + ") is not finite: a NaN or Inf in the inputs, activations or weights; the"
                        + " optimizer step was skipped (parameters unchanged) and the gradients"
                        + " reset");
        this.gradNorm = gradNorm;
        this.loss = loss;
    }

    /**
     * Returns the global gradient norm of the refused step.
     *
     * @return NaN or an infinity
     */
    public double gradNorm() {
        return gradNorm;
    }

    /**
     * Returns this rank's loss of the refused step.
     *
     * @return the loss
     */
    public float loss() {
        return loss;
    }
}
