/*
 * djl-moe: expert-parallel Mixture-of-Experts for the Deep Java Library.
 */
package dev.djlmoe.autograd;

import static org.junit.jupiter.api.Assertions.assertArrayEquals;
import static org.junit.jupiter.api.Assertions.assertEquals;

import ai.djl.engine.Engine;
import ai.djl.ndarray.NDArray;
import ai.djl.ndarray.NDManager;
import ai.djl.ndarray.types.DataType;
import ai.djl.training.GradientCollector;
import java.nio.ByteBuffer;
import java.nio.ByteOrder;
import java.util.ArrayList;
import java.util.List;
import org.junit.jupiter.api.Test;

/**
 * {@link Autograd#scalar}: a scalar in engine-owned storage, so a backward pass after garbage
 * collection still sees its value. (DJL's {@code mul(Number)} frees the scalar that autograd keeps
 * once the collector runs; multi-process runs diverged at random steps because of it.)
 */
class AutogradScalarTest {

    @Test
    void scalarKeepsItsValueThroughGarbageCollectionBeforeBackward() throws InterruptedException {
        try (NDManager m = NDManager.newBaseManager()) {
            NDArray x = m.create(new float[] {1f, -2f, 3f});
            x.setRequiresGradient(true);
            NDArray s = Autograd.scalar(x, 2.5);
            assertEquals(DataType.FLOAT32, s.getDataType());
            assertEquals(0, s.getShape().dimension());
            try (GradientCollector gc = Engine.getInstance().newGradientCollector()) {
                NDArray y = x.mul(s).sum();
                s.close(); // the handle may go: the engine keeps the storage for the backward
                // Collect, then reuse freed native memory with other bytes.
                List<ByteBuffer> junk = new ArrayList<>();
                for (int i = 0; i < 5; i++) {
                    System.gc();
                    Thread.sleep(10);
                    for (int j = 0; j < 64; j++) {
                        ByteBuffer b = ByteBuffer.allocateDirect(64).order(ByteOrder.nativeOrder());
                        while (b.hasRemaining()) {
                            b.putFloat(12345f);
                        }
                        junk.add(b);
                    }
                }
                gc.backward(y);
            }
            assertArrayEquals(new float[] {2.5f, 2.5f, 2.5f}, x.getGradient().toFloatArray());
        }
    }
}
