/*
 * djl-moe: expert-parallel Mixture-of-Experts for the Deep Java Library.
 */
package dev.djlmoe.ep;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertThrows;
import static org.junit.jupiter.api.Assertions.assertTrue;

import dev.djlmoe.dist.LocalProcessGroup;
import java.time.Duration;
import org.junit.jupiter.api.Test;

/** The context's builder: its EP-buffer settings reach the buffer, bad ones are refused. */
class EpContextTest {

    @Test
    void bufferSettingsReachTheBuffer() {
        try (LocalProcessGroup group = new LocalProcessGroup();
                EpContext ctx =
                        EpContext.builder()
                                .setProcessGroup(group)
                                .optCudaBufferBytes(EpBuffer.MIN_CUDA_BUFFER_BYTES * 2)
                                .optNumSms(12)
                                .optTimeout(Duration.ofSeconds(7))
                                .build()) {
            assertEquals(EpBuffer.MIN_CUDA_BUFFER_BYTES * 2, ctx.buffer().cudaBufferBytes());
            assertEquals(12, ctx.buffer().numSms());
            assertEquals(Duration.ofSeconds(7), ctx.buffer().timeout());
        }
    }

    @Test
    void defaultsAreTheBuffersDefaults() {
        try (LocalProcessGroup group = new LocalProcessGroup();
                EpContext ctx = EpContext.builder().setProcessGroup(group).build()) {
            assertEquals(EpBuffer.DEFAULT_CUDA_BUFFER_BYTES, ctx.buffer().cudaBufferBytes());
            assertEquals(0, ctx.buffer().numSms()); // 0: the default, capped to the device
            assertEquals(null, ctx.buffer().timeout()); // null: the process group's default
        }
    }

    @Test
    void badBufferSettingsAreRefusedByName() {
        try (LocalProcessGroup group = new LocalProcessGroup()) {
            IllegalArgumentException e =
                    assertThrows(
                            IllegalArgumentException.class,
                            () -> EpContext.builder().setProcessGroup(group).optNumSms(0).build());
            assertTrue(e.getMessage().contains("0"), e.getMessage());
            e =
                    assertThrows(
                            IllegalArgumentException.class,
                            () ->
                                    EpContext.builder()
                                            .setProcessGroup(group)
                                            .optCudaBufferBytes(1024)
                                            .build());
            assertTrue(e.getMessage().contains("1024"), e.getMessage());
        }
    }
}
