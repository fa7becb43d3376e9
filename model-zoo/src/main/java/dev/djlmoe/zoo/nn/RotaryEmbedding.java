/*
 * djl-moe: expert-parallel Mixture-of-Experts for the Deep Java Library.
 */
package dev.djlmoe.zoo.nn;

import ai.djl.Device;
import ai.djl.ndarray.NDArray;
import ai.djl.ndarray.NDList;
import ai.djl.ndarray.NDManager;
import ai.djl.ndarray.types.Shape;
import java.util.Arrays;
import java.util.Map;
import java.util.concurrent.ConcurrentHashMap;

/**
 * Rotary position embedding (RoPE) as the transformers library computes it: default, linear and
 * YaRN frequency schedules, in float32 like transformers, with the pair layout of the model.
 *
 * <p>For rotary size {@code d} and position {@code p}, frequency {@code i < d/2} turns the pair
 * {@code (x1_i, x2_i)} by the angle {@code p * inv_freq_i}: {@code (x1 cos - x2 sin, x2 cos + x1
 * sin)}, and cos and sin carry YaRN's attention factor. Pairs are {@code (x[2i], x[2i+1])} in the
 * {@link Layout#INTERLEAVED} layout (DeepSeek) and {@code (x[i], x[i + d/2])} in the {@link
 * Layout#HALF_SPLIT} layout (Llama, Qwen). The output is always in half-split order {@code [x1',
 * x2']}: queries and keys are permuted alike, so their dot products are those of either layout.
 *
 * <p>YaRN ({@code rope_type = "yarn"}): {@code inv_freq = inter * (1 - m) + extra * m} with {@code
 * extra = theta^(-2i/d)}, {@code inter = extra / factor} and {@code m = 1 - ramp(low, high)} over
 * the correction range of {@code beta_fast}, {@code beta_slow} at {@code
 * original_max_position_embeddings}; attention factor {@code mscale(factor, mscale) /
 * mscale(factor, mscale_all_dim)} (or {@code 0.1 ln(factor) + 1}), where {@code mscale(s, m) = 0.1
 * m ln(s) + 1} for {@code s > 1}.
 *
 * <p>Tables are cached per sequence length; an instance is shared by all attention layers.
 */
public final class RotaryEmbedding {

    /** Where the two elements of a rotated pair sit. */
    public enum Layout {
        /** Pairs {@code (x[2i], x[2i+1])}: DeepSeek's layout. */
        INTERLEAVED,
        /** Pairs {@code (x[i], x[i + d/2])}: Llama's and Qwen's layout. */
        HALF_SPLIT
    }

    /**
     * The RoPE settings of a model.
     *
     * @param dim the rotary size d (even)
     * @param theta the base ({@code rope_theta})
     * @param type {@code default}, {@code linear} or {@code yarn}
     * @param params the other {@code rope_parameters} / {@code rope_scaling} keys
     * @param maxPositionEmbeddings {@code max_position_embeddings}
     * @param layout the pair layout
     */
    public record Settings(
            int dim,
            double theta,
            String type,
            Map<String, Object> params,
            long maxPositionEmbeddings,
            Layout layout) {

        /**
         * Checks the settings.
         *
         * @throws IllegalArgumentException naming the key that is missing or unsupported
         */
        public void validate() {
            if (dim <= 0 || dim % 2 != 0) {
                throw new IllegalArgumentException("rotary size " + dim + " must be even and > 0");
            }
            if (!(theta > 0)) {
                throw new IllegalArgumentException("rope_theta " + theta + " must be > 0");
            }
            switch (type) {
                case "default":
                    break;
                case "linear":
                    if (number("factor", 0) <= 0) {
                        throw new IllegalArgumentException("linear RoPE needs factor > 0");
                    }
                    break;
                case "yarn":
                    if (!(params.get("original_max_position_embeddings") instanceof Number)) {
                        throw new IllegalArgumentException(
                                "yarn RoPE needs original_max_position_embeddings");
                    }
                    break;
                default:
                    throw new IllegalArgumentException(
                            "rope_type \""
                                    + type
                                    + "\" is not supported: expected default,"
                                    + " linear or yarn");
            }
            double prf = number("partial_rotary_factor", 1.0);
            if (prf != 1.0) {
                throw new IllegalArgumentException(
                        "partial_rotary_factor " + prf + " is not supported");
            }
        }

        /**
         * Returns a numeric parameter.
         *
         * @param key the key
         * @param dflt the value when absent or null
         * @return the value
         */
        public double number(String key, double dflt) {
            Object v = params.get(key);
            return v instanceof Number ? ((Number) v).doubleValue() : dflt;
        }
    }

    private final Settings settings;
    private final float[] invFreq;
    private final double attentionFactor;
    private final Map<Long, float[][]> cache = new ConcurrentHashMap<>();
    // The tables on each device for the first few lengths asked (a training run asks one): made
    // from the host once, since a copy from the host waits for the device's queued work. They live
    // as long as this embedding, in one manager per device.
    private final Map<DeviceLength, NDArray[]> onDevice = new ConcurrentHashMap<>();
    private final Map<Device, NDManager> deviceManagers = new ConcurrentHashMap<>();

    private record DeviceLength(Device device, long s) {}

    private static final int MAX_DEVICE_TABLES = 8;

    /**
     * Creates the embedding.
     *
     * @param settings the settings
     */
    public RotaryEmbedding(Settings settings) {
        settings.validate();
        this.settings = settings;
        int half = settings.dim() / 2;
        float[] base = new float[half];
        float fdim = settings.dim();
        float theta = (float) settings.theta();
        for (int i = 0; i < half; i++) {
            float e = (2f * i) / fdim;
            base[i] = (float) Math.pow(theta, e); // pos_freqs, float32 as transformers
        }
        float[] inv = new float[half];
        double af = 1.0;
        switch (settings.type()) {
            case "linear":
                {
                    float factor = (float) settings.number("factor", 1);
                    for (int i = 0; i < half; i++) {
                        inv[i] = (1f / base[i]) / factor;
                    }
                    break;
                }
            case "yarn":
                {
                    double origMax = settings.number("original_max_position_embeddings", 0);
                    Object fo = settings.params().get("factor");
                    double factor =
                            fo instanceof Number
                                    ? ((Number) fo).doubleValue()
                                    : settings.maxPositionEmbeddings() / origMax;
                    Object afo = settings.params().get("attention_factor");
                    double mscale = settings.number("mscale", 0);
                    double mscaleAll = settings.number("mscale_all_dim", 0);
                    if (afo instanceof Number) {
                        af = ((Number) afo).doubleValue();
                    } else if (mscale != 0 && mscaleAll != 0) {
                        af = yarnMscale(factor, mscale) / yarnMscale(factor, mscaleAll);
                    } else {
                        af = yarnMscale(factor, 1);
                    }
                    double betaFast = settings.number("beta_fast", 0);
                    double betaSlow = settings.number("beta_slow", 0);
                    if (betaFast == 0) {
                        betaFast = 32;
                    }
                    if (betaSlow == 0) {
                        betaSlow = 1;
                    }
                    Object tr = settings.params().get("truncate");
                    boolean truncate = !(tr instanceof Boolean) || (Boolean) tr;
                    int dim = settings.dim();
                    double low = correctionDim(betaFast, dim, settings.theta(), origMax);
                    double high = correctionDim(betaSlow, dim, settings.theta(), origMax);
                    if (truncate) {
                        low = Math.floor(low);
                        high = Math.ceil(high);
                    }
                    low = Math.max(low, 0);
                    high = Math.min(high, dim - 1);
                    if (low == high) {
                        high += 0.001;
                    }
                    float ffactor = (float) factor;
                    for (int i = 0; i < half; i++) {
                        float extra = 1f / base[i];
                        float inter = 1f / (ffactor * base[i]);
                        float ramp = (float) ((i - low) / (high - low));
                        ramp = Math.min(1f, Math.max(0f, ramp));
                        float m = 1f - ramp;
                        inv[i] = inter * (1f - m) + extra * m;
                    }
                    break;
                }
            default:
                for (int i = 0; i < half; i++) {
                    inv[i] = 1f / base[i];
                }
        }
        this.invFreq = inv;
        this.attentionFactor = af;
    }

    private static double correctionDim(double rotations, int dim, double base, double maxPos) {
        return (dim * Math.log(maxPos / (rotations * 2 * Math.PI))) / (2 * Math.log(base));
    }

    /**
     * YaRN's magnitude correction {@code 0.1 * m * ln(s) + 1} for {@code s > 1}, else 1.
     *
     * @param scale the context scale factor s
     * @param mscale the multiplier m
     * @return the correction
     */
    public static double yarnMscale(double scale, double mscale) {
        if (scale <= 1) {
            return 1.0;
        }
        return 0.1 * mscale * Math.log(scale) + 1.0;
    }

    /**
     * Returns the settings.
     *
     * @return the settings
     */
    public Settings settings() {
        return settings;
    }

    /**
     * Returns the inverse frequencies.
     *
     * @return {@code d/2} floats
     */
    public float[] invFreq() {
        return invFreq.clone();
    }

    /**
     * Returns the factor cos and sin carry (YaRN's attention factor, else 1).
     *
     * @return the factor
     */
    public double attentionFactor() {
        return attentionFactor;
    }

    /**
     * Returns cos and sin for positions {@code 0..s-1}: {@code [S, d/2]} each, float32.
     *
     * @param manager where to create them
     * @param s the sequence length
     * @return {cos, sin}
     */
    public NDArray[] cosSin(NDManager manager, long s) {
        float[][] t = cache.computeIfAbsent(s, this::tables);
        int half = invFreq.length;
        return new NDArray[] {
            manager.create(t[0], new Shape(s, half)), manager.create(t[1], new Shape(s, half))
        };
    }

    /**
     * Returns cos and sin for positions {@code 0..s-1} as {@link #cosSin}, copied on the device
     * from tables kept there (made from the host once per device and length, for the first {@value
     * #MAX_DEVICE_TABLES} pairs; later ones as {@link #cosSin}). For a full-sequence forward that
     * runs every step: no copy from the host, which on a GPU waits for the queued work.
     *
     * @param manager where the copies go (its device)
     * @param s the sequence length
     * @return {cos, sin}: {@code [S, d/2]} each, float32, attached to {@code manager}
     */
    public NDArray[] cosSinOnDevice(NDManager manager, long s) {
        DeviceLength key = new DeviceLength(manager.getDevice(), s);
        NDArray[] kept = onDevice.get(key);
        if (kept == null) {
            if (onDevice.size() >= MAX_DEVICE_TABLES) {
                return cosSin(manager, s);
            }
            kept = onDevice.computeIfAbsent(key, k -> cosSin(deviceManager(k.device()), k.s()));
        }
        NDArray cos = kept[0].duplicate();
        cos.attach(manager);
        NDArray sin = kept[1].duplicate();
        sin.attach(manager);
        return new NDArray[] {cos, sin};
    }

    private NDManager deviceManager(Device device) {
        return deviceManagers.computeIfAbsent(device, NDManager::newBaseManager);
    }

    private float[][] tables(long s) {
        int half = invFreq.length;
        float[] cos = new float[(int) (s * half)];
        float[] sin = new float[(int) (s * half)];
        for (int p = 0; p < s; p++) {
            for (int i = 0; i < half; i++) {
                float angle = (float) p * invFreq[i]; // float32 as transformers
                cos[p * half + i] = (float) ((float) Math.cos(angle) * attentionFactor);
                sin[p * half + i] = (float) ((float) Math.sin(angle) * attentionFactor);
            }
        }
        if (cache.size() > 16) {
            cache.clear();
        }
        return new float[][] {cos, sin};
    }

    /**
     * Rotates the last axis of {@code x}.
     *
     * @param x queries or keys: {@code [..., S, d]}
     * @param cos {@code [S, d/2]}
     * @param sin {@code [S, d/2]}
     * @param layout where the pairs sit in {@code x}
     * @return the rotated values in half-split order: {@code [..., S, d]}
     */
    public static NDArray apply(NDArray x, NDArray cos, NDArray sin, Layout layout) {
        Shape shape = x.getShape();
        int last = shape.dimension() - 1;
        long d = shape.get(last);
        NDArray x1;
        NDArray x2;
        if (layout == Layout.INTERLEAVED) {
            long[] dims = Arrays.copyOf(shape.getShape(), shape.dimension() + 1);
            dims[last] = d / 2;
            dims[last + 1] = 2;
            NDList pair = x.reshape(new Shape(dims)).split(2, last + 1);
            x1 = pair.get(0).squeeze(last + 1);
            x2 = pair.get(1).squeeze(last + 1);
        } else {
            NDList halves = x.split(2, last);
            x1 = halves.get(0);
            x2 = halves.get(1);
        }
        NDArray o1 = x1.mul(cos).sub(x2.mul(sin));
        NDArray o2 = x2.mul(cos).add(x1.mul(sin));
        return o1.concat(o2, last);
    }
}
