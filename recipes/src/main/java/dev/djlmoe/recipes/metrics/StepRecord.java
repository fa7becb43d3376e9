/*
 * djl-moe: expert-parallel Mixture-of-Experts for the Deep Java Library.
 */
package dev.djlmoe.recipes.metrics;

import dev.djlmoe.zoo.io.Json;
import dev.djlmoe.zoo.io.JsonException;
import java.util.Arrays;
import java.util.Locale;
import java.util.Map;

/**
 * One line of a run's metrics file.
 *
 * @param step the step, 1-based
 * @param loss the task loss (mean over ranks)
 * @param lr the learning rate used
 * @param gradNorm the global gradient norm before clipping
 * @param tokensPerSecond tokens per second over all ranks
 * @param epBytes wire bytes rank 0 sent in dispatch and combine
 * @param epMillis milliseconds rank 0 spent in dispatch and combine
 * @param loadImbalance the largest max/mean expert load over MoE layers
 * @param expertLoad per-expert selections of the first MoE layer, over all ranks
 * @param unigramBaseline the unigram baseline of the training data in nats per token, or NaN when
 *     not recorded (metrics files written before it was)
 * @param layerLoads every MoE layer's loads and the EP layout, or null when not recorded
 */
public record StepRecord(
        long step,
        double loss,
        double lr,
        double gradNorm,
        double tokensPerSecond,
        long epBytes,
        double epMillis,
        double loadImbalance,
        long[] expertLoad,
        double unigramBaseline,
        ExpertLoads layerLoads) {

    /**
     * A record without the unigram baseline and per-layer loads (as older metrics files hold).
     *
     * @param step the step, 1-based
     * @param loss the task loss
     * @param lr the learning rate
     * @param gradNorm the gradient norm before clipping
     * @param tokensPerSecond tokens per second over all ranks
     * @param epBytes EP wire bytes of rank 0
     * @param epMillis EP milliseconds of rank 0
     * @param loadImbalance the largest max/mean expert load
     * @param expertLoad the first MoE layer's loads
     */
    public StepRecord(
            long step,
            double loss,
            double lr,
            double gradNorm,
            double tokensPerSecond,
            long epBytes,
            double epMillis,
            double loadImbalance,
            long[] expertLoad) {
        this(
                step,
                loss,
                lr,
                gradNorm,
                tokensPerSecond,
                epBytes,
                epMillis,
                loadImbalance,
                expertLoad,
                Double.NaN,
                null);
    }

    /**
     * Returns the record as one line of JSON.
     *
     * @return the JSON object, no newline
     */
    public String toJson() {
        StringBuilder sb = new StringBuilder();
        sb.append(
                String.format(
                        Locale.ROOT,
                        "{\"step\":%d,\"loss\":%s,\"lr\":%s,\"grad_norm\":%s,"
                                + "\"tokens_per_s\":%s,\"ep_bytes\":%d,\"ep_ms\":%s,"
                                + "\"load_imbalance\":%s,\"expert_load\":%s",
                        step,
                        num(loss),
                        num(lr),
                        num(gradNorm),
                        num(tokensPerSecond),
                        epBytes,
                        num(epMillis),
                        num(loadImbalance),
                        Arrays.toString(expertLoad).replace(" ", "")));
        if (Double.isFinite(unigramBaseline)) {
            sb.append(",\"unigram_baseline\":").append(unigramBaseline);
        }
        if (layerLoads != null) {
            sb.append(',');
            layerLoads.appendJson(sb);
        }
        return sb.append('}').toString();
    }

    static String num(double v) {
        return Double.isFinite(v) ? Double.toString(v) : "null";
    }

    /**
     * Parses a line written by {@link #toJson()} (or by an older version, without the baseline and
     * per-layer loads).
     *
     * @param line the JSON line
     * @return the record
     * @throws IllegalArgumentException naming the missing or bad field
     */
    public static StepRecord parse(String line) {
        return fromJson(object(line));
    }

    /** Parses one metrics line into a JSON object. */
    static Map<String, Object> object(String line) {
        try {
            return Json.parseObject(line, "metrics line");
        } catch (JsonException e) {
            throw new IllegalArgumentException(e.getMessage() + ": " + line, e);
        }
    }

    /** The record of a parsed step line. */
    static StepRecord fromJson(Map<String, Object> o) {
        Object load = o.get("expert_load");
        return new StepRecord(
                (long) field(o, "step"),
                field(o, "loss"),
                field(o, "lr"),
                field(o, "grad_norm"),
                field(o, "tokens_per_s"),
                (long) field(o, "ep_bytes"),
                field(o, "ep_ms"),
                field(o, "load_imbalance"),
                load == null ? new long[0] : ExpertLoads.longs(load, "expert_load"),
                o.containsKey("unigram_baseline") ? field(o, "unigram_baseline") : Double.NaN,
                ExpertLoads.fromJson(o));
    }

    /**
     * A number field; JSON null reads as NaN.
     *
     * @throws IllegalArgumentException naming the field when it is missing or not a number
     */
    static double field(Map<String, Object> o, String name) {
        if (!o.containsKey(name)) {
            throw new IllegalArgumentException(
                    "metrics line lacks field '" + name + "': " + Json.writeCompact(o));
        }
        Object v = o.get(name);
        if (v == null) {
            return Double.NaN;
        }
        if (!(v instanceof Number n)) {
            throw new IllegalArgumentException(
                    "metrics field '" + name + "' = '" + v + "' is not a number");
        }
        return n.doubleValue();
    }
}
