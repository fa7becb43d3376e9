/*
 * djl-moe: expert-parallel Mixture-of-Experts for the Deep Java Library.
 */
package dev.djlmoe.zoo.nn;

import static org.junit.jupiter.api.Assertions.assertArrayEquals;
import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertNotSame;

import ai.djl.ndarray.NDArray;
import ai.djl.ndarray.NDManager;
import ai.djl.ndarray.types.Shape;
import dev.djlmoe.zoo.hf.HfMoeConfig;
import org.junit.jupiter.api.Test;

/**
 * The rotary tables kept on the device give the host tables' values, belong to the caller's manager
 * (closing them leaves the kept tables intact), and past the kept lengths come from the host as
 * before.
 */
class RotaryDeviceTablesTest {

    @Test
    void deviceTablesEqualTheHostTablesAndSurviveTheCallersClose() {
        RotaryEmbedding rotary = new RotaryEmbedding(HfMoeConfig.preset("tiny").rope());
        try (NDManager manager = NDManager.newBaseManager()) {
            for (int round = 0; round < 3; round++) {
                for (long s : new long[] {1, 7, 64, 7, 5, 9, 11, 13, 17, 19, 23}) {
                    try (NDManager step = manager.newSubManager()) {
                        NDArray[] host = rotary.cosSin(step, s);
                        NDArray[] kept = rotary.cosSinOnDevice(step, s);
                        for (int i = 0; i < 2; i++) {
                            assertEquals(new Shape(s, rotary.invFreq().length), kept[i].getShape());
                            assertEquals(step, kept[i].getManager());
                            assertNotSame(host[i], kept[i]);
                            assertArrayEquals(host[i].toFloatArray(), kept[i].toFloatArray());
                        }
                    } // closes the copies: the next round reads the kept tables again
                }
            }
        }
    }
}
