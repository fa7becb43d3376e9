/*
 * djl-moe: expert-parallel Mixture-of-Experts for the Deep Java Library.
 */
package dev.djlmoe.nativeep.cuda;

/**
 * AdamW in one pass over GPU memory ({@code nep_cuda_adamw_f32}): weight, gradient and the two
 * moments of one parameter, float32 device arrays of the same length, updated in place on a stream,
 * with the gradient scaled first (a clipping factor) and optionally zeroed after it is read. The
 * arithmetic is that of DJL's {@code adamUpdate}: decoupled weight decay {@code w -= (w lr) wd},
 * then {@code m = b1 m + (1 - b1) g}, {@code v = b2 v + (1 - b2) g^2}, {@code w -= m lr_c /
 * (sqrt(v) + eps)}.
 */
public final class CudaAdamW {

    private CudaAdamW() {}

    /**
     * The hyper-parameters of one update.
     *
     * @param lr the learning rate (scales the weight decay)
     * @param lrCorrected the learning rate with the bias corrections {@code sqrt(1 - b2^t) / (1 -
     *     b1^t)}
     * @param weightDecay the decoupled weight decay
     * @param beta1 the first-moment decay, in [0, 1)
     * @param beta2 the second-moment decay, in [0, 1)
     * @param eps added to the denominator
     * @param gradScale the factor applied to the gradient first (1 = none)
     */
    public record Step(
            float lr,
            float lrCorrected,
            float weightDecay,
            float beta1,
            float beta2,
            float eps,
            float gradScale) {}

    /**
     * Updates one parameter (asynchronous on the stream: later work on the stream sees the result).
     *
     * @param device the GPU of the four arrays
     * @param weight device address of the weight
     * @param grad device address of the gradient
     * @param mean device address of the first moment
     * @param variance device address of the second moment
     * @param n elements of each array
     * @param step the hyper-parameters
     * @param zeroGrad whether to set the gradient to 0 after reading it
     * @param stream the CUDA stream (0 = the legacy default stream, libtorch's)
     * @throws IllegalArgumentException naming the argument when an address is not GPU memory of the
     *     device holding n floats, the arrays overlap, or a hyper-parameter is out of range
     * @throws CudaEpException when the plug-in has no CUDA or the launch fails
     */
    public static void update(
            int device,
            long weight,
            long grad,
            long mean,
            long variance,
            long n,
            Step step,
            boolean zeroGrad,
            long stream) {
        CudaCall.run(
                "AdamW on GPU " + device,
                (err, cap) ->
                        NativeEpCuda.nep_cuda_adamw_f32(
                                device,
                                weight,
                                grad,
                                mean,
                                variance,
                                n,
                                step.lr(),
                                step.lrCorrected(),
                                step.weightDecay(),
                                step.beta1(),
                                step.beta2(),
                                step.eps(),
                                step.gradScale(),
                                zeroGrad ? 1 : 0,
                                stream,
                                err,
                                cap));
    }
}
