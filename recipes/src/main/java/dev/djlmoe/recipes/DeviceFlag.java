/*
 * djl-moe: expert-parallel Mixture-of-Experts for the Deep Java Library.
 */
package dev.djlmoe.recipes;

import ai.djl.Device;
import ai.djl.engine.Engine;

/**
 * The {@code --device cpu|gpu|auto} flag of the commands that run a model ({@code pretrain}, {@code
 * finetune}, {@code decode}, {@code bench}): which device a rank uses.
 *
 * <p>Rank {@code r} of a host uses GPU {@code LOCAL_RANK mod (GPUs the engine sees)}, so ranks may
 * share a GPU. {@code auto} is the GPU when the engine sees one, else the CPU.
 */
public final class DeviceFlag {

    /** The flag's default: the GPU when the engine sees one. */
    public static final String AUTO = "auto";

    private DeviceFlag() {}

    /**
     * Resolves the flag for one rank.
     *
     * @param flag {@code cpu}, {@code gpu} or {@code auto} ({@code null} means {@code auto})
     * @param localRank the rank's index on its host ({@code LOCAL_RANK})
     * @return the device the rank uses
     * @throws IllegalArgumentException for another value, or {@code gpu} where the engine sees no
     *     GPU
     */
    public static Device resolve(String flag, int localRank) {
        String f = check(flag);
        if (localRank < 0) {
            throw new IllegalArgumentException("localRank " + localRank + " is negative");
        }
        switch (f) {
            case "cpu":
                return Device.cpu();
            case "gpu":
                {
                    int gpus = Engine.getInstance().getGpuCount();
                    if (gpus == 0) {
                        throw new IllegalArgumentException(
                                "--device gpu: the PyTorch engine sees no GPU (it needs a CUDA"
                                        + " libtorch: see bin/build-djl-jni and the README's GPU"
                                        + " section)");
                    }
                    return Device.gpu(localRank % gpus);
                }
            default:
                { // AUTO
                    int gpus = Engine.getInstance().getGpuCount();
                    return gpus > 0 ? Device.gpu(localRank % gpus) : Device.cpu();
                }
        }
    }

    /**
     * Checks the flag's value without asking the engine about devices.
     *
     * @param flag {@code cpu}, {@code gpu} or {@code auto} ({@code null} means {@code auto})
     * @return the value, {@code auto} for {@code null}
     * @throws IllegalArgumentException for another value
     */
    public static String check(String flag) {
        String f = flag == null ? AUTO : flag;
        if (!"cpu".equals(f) && !"gpu".equals(f) && !AUTO.equals(f)) {
            throw new IllegalArgumentException("--device " + f + " is not cpu, gpu or auto");
        }
        return f;
    }
}
