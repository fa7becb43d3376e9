/*
 * djl-moe: expert-parallel Mixture-of-Experts for the Deep Java Library.
 */
package dev.djlmoe.testing;

import ai.djl.Device;
import ai.djl.engine.Engine;
import java.util.Locale;
import org.junit.jupiter.api.Assumptions;

/**
 * The device the device-aware tests run on, chosen by the system property {@value #PROPERTY}:
 * {@code cpu} (the default, what CI runs) or {@code gpu} (GPU 0, what {@code bin/gpu-java-tests}
 * passes on a GPU host). {@link dev.djlmoe.dist.MultiRank} hands the property to the JVMs it
 * spawns, so ranks train on the same kind of device as the test that started them.
 *
 * <p>Asking for the GPU where the PyTorch engine sees none is an error, not a skip: a GPU run that
 * silently fell back to the CPU would prove nothing.
 */
public final class TestDevice {

    /** The system property naming the device: {@code cpu} or {@code gpu}. */
    public static final String PROPERTY = "djlmoe.test.device";

    private TestDevice() {}

    /**
     * Returns the property's value, checked.
     *
     * @return {@code cpu} or {@code gpu}
     * @throws IllegalStateException for any other value
     */
    public static String flag() {
        String v = System.getProperty(PROPERTY, "cpu").trim().toLowerCase(Locale.ROOT);
        if (!v.equals("cpu") && !v.equals("gpu")) {
            throw new IllegalStateException(
                    "system property "
                            + PROPERTY
                            + " = '"
                            + System.getProperty(PROPERTY)
                            + "' is not cpu or gpu");
        }
        return v;
    }

    /**
     * Returns whether the tests were asked to run on the GPU.
     *
     * @return true for {@code -D}{@value #PROPERTY}{@code =gpu}
     */
    public static boolean isGpu() {
        return flag().equals("gpu");
    }

    /**
     * Returns the device of this run: the CPU, or GPU 0 (which must exist).
     *
     * @return the device
     * @throws IllegalStateException when the GPU was asked for and the engine sees none
     */
    public static Device device() {
        if (!isGpu()) {
            return Device.cpu();
        }
        int gpus = Engine.getInstance().getGpuCount();
        if (gpus < 1) {
            throw new IllegalStateException(
                    PROPERTY
                            + "=gpu but the PyTorch engine sees "
                            + gpus
                            + " GPUs (DJL's JNI must"
                            + " be built for this host's libtorch: bin/build-djl-jni)");
        }
        return Device.gpu(0);
    }

    /**
     * Returns the device a rank of this run trains on, as the recipes place ranks: the CPU, or GPU
     * {@code localRank mod count}.
     *
     * @param localRank the rank on its host
     * @return the device
     * @throws IllegalStateException when the GPU was asked for and the engine sees none
     */
    public static Device rankDevice(int localRank) {
        if (!isGpu()) {
            return Device.cpu();
        }
        device(); // refuses a host without a GPU
        return Device.gpu(localRank % Engine.getInstance().getGpuCount());
    }

    /**
     * The JVM option that passes this run's device on to a spawned JVM.
     *
     * @return {@code -Ddjlmoe.test.device=cpu|gpu}
     */
    public static String jvmOption() {
        return "-D" + PROPERTY + "=" + flag();
    }

    /**
     * Skips a test that only means something on a GPU, saying why, when the run is on the CPU.
     *
     * @param why what the test checks that needs a GPU
     */
    public static void assumeGpu(String why) {
        Assumptions.assumeTrue(
                isGpu(),
                "GPU-only (" + why + "); run with -D" + PROPERTY + "=gpu (bin/gpu-java-tests)");
    }
}
