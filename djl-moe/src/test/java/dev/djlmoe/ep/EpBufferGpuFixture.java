/*
 * djl-moe: expert-parallel Mixture-of-Experts for the Deep Java Library.
 */
package dev.djlmoe.ep;

import org.junit.jupiter.api.AfterAll;
import org.junit.jupiter.api.BeforeAll;

/**
 * {@link CpuGpuFixture} with one {@link EpBuffer} on its group (256 MiB of CUDA buffer), built
 * after the devices are open and closed before they are; null without a GPU.
 */
abstract class EpBufferGpuFixture extends CpuGpuFixture {

    static EpBuffer buffer;

    @BeforeAll
    static void openBuffer() {
        if (group != null) {
            buffer = EpBuffer.builder().setGroup(group).optCudaBufferBytes(256L << 20).build();
        }
    }

    @AfterAll
    static void closeBuffer() {
        if (buffer != null) {
            buffer.close();
            buffer = null;
        }
    }
}
