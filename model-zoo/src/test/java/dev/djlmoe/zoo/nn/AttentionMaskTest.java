/*
 * djl-moe: expert-parallel Mixture-of-Experts for the Deep Java Library.
 */
package dev.djlmoe.zoo.nn;

import static org.junit.jupiter.api.Assertions.assertArrayEquals;
import static org.junit.jupiter.api.Assertions.assertEquals;

import ai.djl.ndarray.NDArray;
import ai.djl.ndarray.NDManager;
import ai.djl.ndarray.types.DataType;
import ai.djl.ndarray.types.Shape;
import org.junit.jupiter.api.Test;

/** The causal mask built by the engine holds exactly 0 and -inf where the definition says. */
class AttentionMaskTest {

    private static float[] byDefinition(int s, int window) {
        float[] m = new float[s * s];
        for (int i = 0; i < s; i++) {
            for (int j = 0; j < s; j++) {
                boolean visible = j <= i && (window <= 0 || j > i - window);
                m[i * s + j] = visible ? 0f : Float.NEGATIVE_INFINITY;
            }
        }
        return m;
    }

    @Test
    void causalAndSlidingMasksMatchTheDefinition() {
        try (NDManager manager = NDManager.newBaseManager()) {
            for (int[] c : new int[][] {{1, 0}, {7, 0}, {7, 3}, {9, 1}, {33, 8}}) {
                try (NDManager sm = manager.newSubManager()) {
                    NDArray mask = GroupedQueryAttention.mask(sm, c[0], c[1]);
                    assertEquals(new Shape(c[0], c[0]), mask.getShape());
                    assertEquals(DataType.FLOAT32, mask.getDataType());
                    assertEquals(sm.getDevice(), mask.getDevice());
                    assertArrayEquals(
                            byDefinition(c[0], c[1]),
                            mask.toFloatArray(),
                            "S=" + c[0] + ", window " + c[1]);
                    assertEquals(sm, mask.getManager()); // the temporaries are gone, not the mask
                }
            }
        }
    }
}
