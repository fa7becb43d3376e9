/*
 * djl-moe: expert-parallel Mixture-of-Experts for the Deep Java Library.
 */
package dev.djlmoe.recipes.decode;

import ai.djl.ndarray.NDArray;
import ai.djl.ndarray.NDManager;
import ai.djl.ndarray.types.Shape;
import ai.djl.training.ParameterStore;
import dev.djlmoe.nn.LowLatencyMoe;
import dev.djlmoe.zoo.hf.HfMoeForCausalLm;
import dev.djlmoe.zoo.nn.KvCache;

/**
 * Greedy generation with a KV cache on one rank: one prefill of the right-padded prompts (the MoE
 * layers in their normal mode: local experts, or the normal-mode EP buffer with expert parallelism;
 * or low-latency mode when the prefill's tokens fit the buffer), then one token per sequence per
 * decode step through {@link HfMoeForCausalLm#forwardCached} (the MoE layers in low-latency mode
 * when a {@link LowLatencyMoe} is given). Collective with EP: every rank runs the same number of
 * steps.
 */
public final class GreedyDecoder {

    /**
     * What one rank generated and how long it took.
     *
     * @param tokens {@code [B][newTokens]} the generated ids per prompt
     * @param margins {@code [B][newTokens]} the chosen logit minus the runner-up's: how far each
     *     greedy choice was from a tie (a run on other hardware may flip a choice only near 0)
     * @param prefillNanos the prefill forward
     * @param decodeNanos the decode steps (all of them)
     * @param decodeSteps the decode forwards ({@code newTokens - 1}: the first token comes from the
     *     prefill)
     */
    public record Result(
            long[][] tokens,
            float[][] margins,
            long prefillNanos,
            long decodeNanos,
            int decodeSteps) {}

    private GreedyDecoder() {}

    /**
     * Generates {@code newTokens} greedy tokens after each prompt.
     *
     * @param model the model (initialised)
     * @param manager where the cache and the step arrays live
     * @param prompts {@code [B][len_b]} token ids, each prompt at least one token; B may be 0 only
     *     without expert parallelism
     * @param newTokens tokens to generate per prompt (>= 1)
     * @param lowLatency the low-latency MoE exchange of the decode steps, or null for the normal
     *     forward (its timers restart at the first decode step)
     * @param lowLatencyPrefill whether the prefill uses {@code lowLatency} too (it needs {@code B ·
     *     longest prompt <= max_tokens_per_rank}); else it runs the normal forward
     * @return the tokens and timings
     */
    public static Result generate(
            HfMoeForCausalLm model,
            NDManager manager,
            long[][] prompts,
            int newTokens,
            LowLatencyMoe lowLatency,
            boolean lowLatencyPrefill) {
        if (newTokens < 1) {
            throw new IllegalArgumentException("new tokens " + newTokens + " must be >= 1");
        }
        int b = prompts.length;
        int maxPrompt = 0;
        for (int q = 0; q < b; q++) {
            if (prompts[q].length == 0) {
                throw new IllegalArgumentException("prompt " + q + " has no tokens");
            }
            maxPrompt = Math.max(maxPrompt, prompts[q].length);
        }
        long[][] out = new long[b][newTokens];
        float[][] margins = new float[b][newTokens];
        try (KvCache cache = model.newCache(manager, b, maxPrompt + newTokens)) {
            long[] padded = new long[b * maxPrompt];
            for (int q = 0; q < b; q++) {
                System.arraycopy(prompts[q], 0, padded, q * maxPrompt, prompts[q].length);
            }
            long t0 = System.nanoTime();
            try (NDManager s = manager.newSubManager()) {
                ParameterStore ps = new ParameterStore(s, false);
                NDArray logits =
                        model.forwardCached(
                                ps,
                                s.create(padded, new Shape(b, maxPrompt)),
                                cache,
                                new long[b],
                                lowLatencyPrefill ? lowLatency : null); // [B, P, V]
                int v = (int) logits.getShape().get(2);
                float[] all = logits.toFloatArray();
                for (int q = 0; q < b; q++) {
                    long from = ((long) q * maxPrompt + prompts[q].length - 1) * v;
                    out[q][0] = argMax(all, from, v);
                    margins[q][0] = margin(all, from, v, (int) out[q][0]);
                }
            }
            long prefill = System.nanoTime() - t0;
            if (lowLatency != null) {
                lowLatency.resetTimers();
            }
            long t1 = System.nanoTime();
            for (int step = 1; step < newTokens; step++) {
                try (NDManager s = manager.newSubManager()) {
                    ParameterStore ps = new ParameterStore(s, false);
                    long[] ids = new long[b];
                    long[] start = new long[b];
                    for (int q = 0; q < b; q++) {
                        ids[q] = out[q][step - 1];
                        start[q] = prompts[q].length + step - 1L;
                    }
                    NDArray logits =
                            model.forwardCached(
                                    ps,
                                    s.create(ids, new Shape(b, 1)),
                                    cache,
                                    start,
                                    lowLatency); // [B, 1, V]
                    int v = (int) logits.getShape().get(2);
                    float[] all = logits.toFloatArray();
                    for (int q = 0; q < b; q++) {
                        out[q][step] = argMax(all, (long) q * v, v);
                        margins[q][step] = margin(all, (long) q * v, v, (int) out[q][step]);
                    }
                }
            }
            return new Result(out, margins, prefill, System.nanoTime() - t1, newTokens - 1);
        }
    }

    /** The index of the largest of {@code a[from .. from + n)}, the lowest on ties. */
    static int argMax(float[] a, long from, int n) {
        int best = 0;
        for (int i = 1; i < n; i++) {
            if (a[(int) (from + i)] > a[(int) (from + best)]) {
                best = i;
            }
        }
        return best;
    }

    /** {@code a[from + best]} minus the largest other entry of {@code a[from .. from + n)}. */
    static float margin(float[] a, long from, int n, int best) {
        float second = Float.NEGATIVE_INFINITY;
        for (int i = 0; i < n; i++) {
            if (i != best) {
                second = Math.max(second, a[(int) (from + i)]);
            }
        }
        return a[(int) (from + best)] - second;
    }
}
