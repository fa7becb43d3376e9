/*
 * djl-moe: expert-parallel Mixture-of-Experts for the Deep Java Library.
 */
package dev.djlmoe.recipes.bench;

import java.util.List;
import java.util.Locale;

/**
 * Dense (no sparsity) peak matrix-multiply rates of a GPU, from its name, for model FLOP
 * utilisation (MFU): the bf16 tensor-core rate (the usual denominator of MFU) and the TF32 rate
 * (what float32 matrix products reach when TF32 is allowed). Figures from NVIDIA's data sheets at
 * boost clock; a GPU not listed has no known peak ({@link #of} returns null) and a benchmark takes
 * one from the command line instead.
 *
 * @param gpu the name matched, e.g. {@code "H100 SXM"}
 * @param bf16 dense bf16 peak, FLOP/s
 * @param tf32 dense TF32 peak, FLOP/s
 */
public record GpuPeak(String gpu, double bf16, double tf32) {

    private static final double T = 1e12;

    /** Name patterns (upper case, all must occur) and their peaks, the more specific first. */
    private static final List<Object[]> TABLE =
            List.of(
                    new Object[] {
                        new String[] {"H200", "NVL"}, new GpuPeak("H200 NVL", 835.5 * T, 417.5 * T)
                    },
                    new Object[] {
                        new String[] {"H200"}, new GpuPeak("H200 SXM", 989.4 * T, 494.7 * T)
                    },
                    new Object[] {
                        new String[] {"H100", "PCIE"},
                        new GpuPeak("H100 PCIe", 756.5 * T, 378.0 * T)
                    },
                    new Object[] {
                        new String[] {"H100", "NVL"}, new GpuPeak("H100 NVL", 835.5 * T, 417.5 * T)
                    },
                    new Object[] {
                        new String[] {"H100"}, new GpuPeak("H100 SXM", 989.4 * T, 494.7 * T)
                    },
                    new Object[] {
                        new String[] {"A100"}, new GpuPeak("A100", 312.0 * T, 156.0 * T)
                    });

    /**
     * Returns the peaks of a GPU by its CUDA device name.
     *
     * @param deviceName e.g. {@code "NVIDIA H100 80GB HBM3"} (an H100 SXM)
     * @return the peaks, or null for a GPU not in the table
     */
    public static GpuPeak of(String deviceName) {
        if (deviceName == null) {
            return null;
        }
        String n = deviceName.toUpperCase(Locale.ROOT);
        for (Object[] row : TABLE) {
            boolean all = true;
            for (String part : (String[]) row[0]) {
                all &= n.contains(part);
            }
            if (all) {
                return (GpuPeak) row[1];
            }
        }
        return null;
    }

    /**
     * Parses {@code --peak-tflops BF16[,TF32]} (TF32 defaults to half the bf16 rate, as on Hopper
     * and Ampere).
     *
     * @param flag the flag's value, e.g. {@code "989.4,494.7"}
     * @return the peaks
     * @throws IllegalArgumentException naming the value when it is not one or two positive numbers
     */
    public static GpuPeak parse(String flag) {
        String[] parts = flag.split(",");
        try {
            double bf16 = Double.parseDouble(parts[0].trim());
            double tf32 = parts.length > 1 ? Double.parseDouble(parts[1].trim()) : bf16 / 2;
            if (parts.length > 2
                    || !(bf16 > 0)
                    || !(tf32 > 0)
                    || !Double.isFinite(bf16)
                    || !Double.isFinite(tf32)) {
                throw new NumberFormatException();
            }
            return new GpuPeak("--peak-tflops", bf16 * T, tf32 * T);
        } catch (NumberFormatException e) {
            throw new IllegalArgumentException(
                    "--peak-tflops '"
                            + flag
                            + "' is not BF16[,TF32]: one or two positive numbers"
                            + " of dense TFLOP/s, e.g. 989.4,494.7");
        }
    }
}
