/*
 * djl-moe: expert-parallel Mixture-of-Experts for the Deep Java Library.
 */
package dev.djlmoe.recipes.metrics;

import java.util.Locale;

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
        long[] expertLoad) {

    /**
     * Returns the record as one line of JSON.
     *
     * @return the JSON object, no newline
     */
    public String toJson() {
        StringBuilder load = new StringBuilder("[");
        for (int i = 0; i < expertLoad.length; i++) {
            if (i > 0) {
                load.append(',');
            }
            load.append(expertLoad[i]);
        }
        load.append(']');
        return String.format(
                Locale.ROOT,
                "{\"step\":%d,\"loss\":%s,\"lr\":%s,\"grad_norm\":%s,\"tokens_per_s\":%s,"
                        + "\"ep_bytes\":%d,\"ep_ms\":%s,\"load_imbalance\":%s,\"expert_load\":%s}",
                step,
                num(loss),
                num(lr),
                num(gradNorm),
                num(tokensPerSecond),
                epBytes,
                num(epMillis),
                num(loadImbalance),
                load);
    }

    private static String num(double v) {
        return Double.isFinite(v) ? Double.toString(v) : "null";
    }

    /**
     * Parses a line written by {@link #toJson()}.
     *
     * @param line the JSON line
     * @return the record
     * @throws IllegalArgumentException naming the missing or bad field
     */
    public static StepRecord parse(String line) {
        return new StepRecord(
                (long) field(line, "step"),
                field(line, "loss"),
                field(line, "lr"),
                field(line, "grad_norm"),
                field(line, "tokens_per_s"),
                (long) field(line, "ep_bytes"),
                field(line, "ep_ms"),
                field(line, "load_imbalance"),
                loads(line));
    }

    private static double field(String line, String name) {
        String key = "\"" + name + "\":";
        int i = line.indexOf(key);
        if (i < 0) {
            throw new IllegalArgumentException("metrics line lacks field '" + name + "': " + line);
        }
        int from = i + key.length();
        int to = from;
        while (to < line.length() && ",}".indexOf(line.charAt(to)) < 0) {
            to++;
        }
        String v = line.substring(from, to).trim();
        if (v.equals("null")) {
            return Double.NaN;
        }
        try {
            return Double.parseDouble(v);
        } catch (NumberFormatException e) {
            throw new IllegalArgumentException(
                    "metrics field '" + name + "' = '" + v + "' is not a number", e);
        }
    }

    private static long[] loads(String line) {
        String key = "\"expert_load\":[";
        int i = line.indexOf(key);
        if (i < 0) {
            return new long[0];
        }
        int from = i + key.length();
        int to = line.indexOf(']', from);
        String body = line.substring(from, to).trim();
        if (body.isEmpty()) {
            return new long[0];
        }
        String[] parts = body.split(",");
        long[] out = new long[parts.length];
        for (int k = 0; k < parts.length; k++) {
            out[k] = Long.parseLong(parts[k].trim());
        }
        return out;
    }
}
