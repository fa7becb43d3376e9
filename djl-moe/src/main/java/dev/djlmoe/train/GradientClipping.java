/*
 * djl-moe: expert-parallel Mixture-of-Experts for the Deep Java Library.
 */
package dev.djlmoe.train;

import ai.djl.ndarray.NDArray;
import ai.djl.ndarray.NDArrays;
import ai.djl.ndarray.NDList;
import dev.djlmoe.autograd.Autograd;
import dev.djlmoe.dist.ProcessGroup;
import java.util.List;

/**
 * Global-norm gradient clipping across expert-parallel ranks (DJL's {@code clipGrad} clamps
 * elements, which is not the same).
 *
 * <p>The norm covers every parameter once: dense (replicated) gradients, identical on all ranks
 * after averaging, are counted once; expert (sharded) gradients are summed over ranks.
 */
public final class GradientClipping {

    private GradientClipping() {}

    /**
     * Computes the global L2 norm of the gradients.
     *
     * @param replicated gradients that are identical on every rank
     * @param sharded gradients of parameters that live on this rank only
     * @param group the ranks, or null for one rank
     * @return the norm
     */
    public static double globalNorm(
            List<NDArray> replicated, List<NDArray> sharded, ProcessGroup group) {
        double dense = sumOfSquares(replicated);
        double local = sumOfSquares(sharded);
        if (group != null && group.worldSize() > 1) {
            try (NDArray s =
                    replicated.isEmpty() && sharded.isEmpty()
                            ? null
                            : anyManagerScalar(replicated, sharded, local)) {
                if (s != null) {
                    group.allReduceSum(s);
                    local = s.getDouble();
                }
            }
        }
        return Math.sqrt(dense + local);
    }

    /**
     * Scales every gradient in place by {@code min(1, maxNorm / (norm + 1e-6))}.
     *
     * @param grads all gradients of this rank
     * @param norm the global norm from {@link #globalNorm}
     * @param maxNorm the threshold (> 0)
     * @return the factor applied
     */
    public static double clip(List<NDArray> grads, double norm, double maxNorm) {
        double factor = factor(norm, maxNorm);
        if (factor >= 1.0) {
            return 1.0;
        }
        for (NDArray g : grads) {
            Autograd.scaleInPlace(g, (float) factor);
        }
        return factor;
    }

    /**
     * Returns the factor {@link #clip} scales the gradients by.
     *
     * @param norm the global norm from {@link #globalNorm}
     * @param maxNorm the threshold (> 0)
     * @return {@code min(1, maxNorm / (norm + 1e-6))}
     */
    public static double factor(double norm, double maxNorm) {
        return Math.min(1.0, maxNorm / (norm + 1e-6));
    }

    private static double sumOfSquares(List<NDArray> grads) {
        if (grads.isEmpty()) {
            return 0;
        }
        // Every norm stays on the device until one read brings them all to the host: on a GPU
        // each read waits for the queued work, so one read per parameter cost one wait each.
        NDList norms = new NDList(grads.size());
        float[] values;
        try {
            for (NDArray g : grads) {
                norms.add(g.norm());
            }
            try (NDArray all = NDArrays.stack(norms)) {
                values = all.toFloatArray();
            }
        } finally {
            norms.close();
        }
        double s = 0;
        for (float f : values) {
            double v = f;
            s += v * v;
        }
        return s;
    }

    private static NDArray anyManagerScalar(
            List<NDArray> replicated, List<NDArray> sharded, double value) {
        NDArray any = !sharded.isEmpty() ? sharded.get(0) : replicated.get(0);
        return any.getManager().create(new double[] {value});
    }
}
