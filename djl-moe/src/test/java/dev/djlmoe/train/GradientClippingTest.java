/*
 * djl-moe: expert-parallel Mixture-of-Experts for the Deep Java Library.
 */
package dev.djlmoe.train;

import static org.junit.jupiter.api.Assertions.assertArrayEquals;
import static org.junit.jupiter.api.Assertions.assertEquals;

import ai.djl.ndarray.NDArray;
import ai.djl.ndarray.NDManager;
import dev.djlmoe.dist.LocalProcessGroup;
import java.util.List;
import org.junit.jupiter.api.Test;

/** Global-norm clipping: the norm covers every gradient once and scaling keeps directions. */
class GradientClippingTest {

    @Test
    void normCoversReplicatedAndShardedGradients() {
        try (NDManager m = NDManager.newBaseManager();
                LocalProcessGroup g = new LocalProcessGroup()) {
            NDArray a = m.create(new float[] {3f, 0f});
            NDArray b = m.create(new float[] {0f, 4f, 12f});
            double norm = GradientClipping.globalNorm(List.of(a), List.of(b), g);
            assertEquals(13.0, norm, 1e-5);
            double f = GradientClipping.clip(List.of(a, b), norm, 6.5);
            assertEquals(0.5, f, 1e-6);
            assertArrayEquals(new float[] {1.5f, 0f}, a.toFloatArray(), 1e-5f);
            assertArrayEquals(new float[] {0f, 2f, 6f}, b.toFloatArray(), 1e-5f);
            // Below the threshold nothing changes.
            float[] before = a.toFloatArray();
            assertEquals(1.0, GradientClipping.clip(List.of(a, b), 6.5, 10), 0);
            assertArrayEquals(before, a.toFloatArray(), 0f);
        }
    }
}
