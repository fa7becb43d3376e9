/*
 * djl-moe: expert-parallel Mixture-of-Experts for the Deep Java Library.
 */
package dev.djlmoe.nn;

import ai.djl.Device;
import java.util.Locale;

/**
 * Where the GEMMs of a quantised {@link ExpertPrecision} (FP8, MXFP8) run.
 *
 * <ul>
 *   <li>{@link #NATIVE}: the native grouped FP8 GEMMs ({@link dev.djlmoe.gemm.Fp8ExpertGemms}):
 *       real FP8 tensor-core GEMMs on a GPU, the plain C++ oracle with the same numerics on the
 *       CPU.
 *   <li>{@link #EMULATED}: the DJL float32 emulation of the same rounding ({@link
 *       Fp8BlockNumerics}, {@link Mxfp8Numerics}), on any device.
 *   <li>{@link #AUTO} (default): native on a GPU, emulated on the CPU, unless the system property
 *       {@value #PROPERTY} says {@code native} or {@code emulated}.
 * </ul>
 *
 * <p>The native path needs the staged backward to train: in a forward that autograd records without
 * a tape (the functional form without one) the emulation runs instead.
 */
public enum ExpertGemmPath {
    /** Native on a GPU, emulated on the CPU, unless {@value #PROPERTY} overrides. */
    AUTO,
    /** The native grouped FP8 GEMMs. */
    NATIVE,
    /** The DJL float32 emulation. */
    EMULATED;

    /**
     * The system property that decides {@link #AUTO}: {@code native}, {@code emulated} or {@code
     * auto}.
     */
    public static final String PROPERTY = "djlmoe.expert.gemms";

    /**
     * Returns whether this choice runs the native GEMMs for arrays on a device.
     *
     * @param device the arrays' device
     * @return true for the native path
     * @throws IllegalArgumentException when {@value #PROPERTY} has another value
     */
    boolean nativeOn(Device device) {
        return switch (this) {
            case NATIVE -> true;
            case EMULATED -> false;
            case AUTO -> {
                String v = System.getProperty(PROPERTY, "auto").trim().toLowerCase(Locale.ROOT);
                yield switch (v) {
                    case "native" -> true;
                    case "emulated" -> false;
                    case "auto" -> device.isGpu();
                    default ->
                            throw new IllegalArgumentException(
                                    "system property "
                                            + PROPERTY
                                            + " = '"
                                            + v
                                            + "' is not native, emulated or auto");
                };
            }
        };
    }
}
