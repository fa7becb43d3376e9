/*
 * djl-moe: expert-parallel Mixture-of-Experts for the Deep Java Library.
 */
package dev.djlmoe.ep;

import ai.djl.Device;
import ai.djl.engine.Engine;
import ai.djl.ndarray.NDManager;
import dev.djlmoe.dist.LocalProcessGroup;
import dev.djlmoe.nativeep.cuda.CudaEpBuffer;
import dev.djlmoe.testing.TestDevice;
import org.junit.jupiter.api.AfterAll;
import org.junit.jupiter.api.Assumptions;
import org.junit.jupiter.api.BeforeAll;
import org.junit.jupiter.api.BeforeEach;

/**
 * The fixture of the tests that run one buffer at W = 1 on both backends: a CPU and a GPU manager
 * and a loopback group, made before the subclass's own {@code @BeforeAll} (which builds its buffer
 * on {@link #group}) and closed after its {@code @AfterAll}. Without a GPU nothing is made and
 * every test is skipped (reported one by one); under {@code -Ddjlmoe.test.device=gpu} a missing GPU
 * is a failure instead.
 */
abstract class CpuGpuFixture {

    static NDManager cpuManager;
    static NDManager gpuManager;
    static LocalProcessGroup group;

    @BeforeAll
    static void openDevices() {
        if (TestDevice.isGpu()) {
            TestDevice.device(); // a GPU run on a host without one fails here instead of skipping
        }
        if (Engine.getInstance().getGpuCount() == 0 || CudaEpBuffer.deviceCount() == 0) {
            return;
        }
        cpuManager = NDManager.newBaseManager(Device.cpu());
        gpuManager = NDManager.newBaseManager(Device.gpu(0));
        group = new LocalProcessGroup();
    }

    @BeforeEach
    void needsAGpu() {
        Assumptions.assumeTrue(
                group != null,
                "no GPU: DJL sees "
                        + Engine.getInstance().getGpuCount()
                        + ", the CUDA plug-in "
                        + CudaEpBuffer.deviceCount());
    }

    @AfterAll
    static void closeDevices() {
        if (group != null) {
            group.close();
            group = null;
        }
        if (gpuManager != null) {
            gpuManager.close();
            gpuManager = null;
        }
        if (cpuManager != null) {
            cpuManager.close();
            cpuManager = null;
        }
    }
}
