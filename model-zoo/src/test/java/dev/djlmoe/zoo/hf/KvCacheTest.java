/*
 * djl-moe: expert-parallel Mixture-of-Experts for the Deep Java Library.
 */
package dev.djlmoe.zoo.hf;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertThrows;
import static org.junit.jupiter.api.Assertions.assertTrue;

import ai.djl.engine.Engine;
import ai.djl.ndarray.NDArray;
import ai.djl.ndarray.NDList;
import ai.djl.ndarray.NDManager;
import ai.djl.ndarray.types.DataType;
import ai.djl.ndarray.types.Shape;
import ai.djl.training.ParameterStore;
import ai.djl.training.initializer.NormalInitializer;
import dev.djlmoe.dist.LocalProcessGroup;
import dev.djlmoe.ep.LowLatencyBuffer;
import dev.djlmoe.ep.WireFormat;
import dev.djlmoe.nn.LowLatencyMoe;
import dev.djlmoe.zoo.nn.KvCache;
import java.util.Arrays;
import java.util.Map;
import java.util.Random;
import org.junit.jupiter.params.ParameterizedTest;
import org.junit.jupiter.params.provider.CsvSource;

/**
 * The KV-cached incremental forward of {@link HfMoeForCausalLm} (MLA with and without a query
 * latent, GQA with q/k norm, GQA with a sliding window) against the full-recompute forward: three
 * right-padded prompts of different lengths (5, 2, 7 tokens; padding with random tokens) are
 * prefilled together, then four tokens per sequence are fed one step at a time; every logit row the
 * incremental path produces must equal, within {@link #TOL} (float32), the last row of the full
 * forward of that sequence alone. With {@code ll} the MoE layers of the decode steps go through
 * {@link HfMoeForCausalLm#forwardCached}'s low-latency path (one rank, fp32 wires), which must
 * agree with the same reference.
 */
class KvCacheTest {

    /** Per logit, float32: |incremental - full| <= TOL * (1 + |full|) (measured: below 5e-7). */
    static final double TOL = 1e-5;

    private static final int[] PROMPT = {5, 2, 7};
    private static final int STEPS = 4;

    private static HfMoeConfig config(String preset) {
        if (preset.equals("qwen3-window")) {
            return HfMoeConfig.preset("tiny-qwen3-moe")
                    .with(Map.of("use_sliding_window", true, "sliding_window", 4L));
        }
        return HfMoeConfig.preset(preset);
    }

    private static float[] fullLastRow(HfMoeForCausalLm model, NDManager m, long[] ids) {
        try (NDManager s = m.newSubManager()) {
            ParameterStore ps = new ParameterStore(s, false);
            NDArray logits =
                    model.forward(ps, new NDList(s.create(ids, new Shape(1, ids.length))), false)
                            .head();
            long v = logits.getShape().get(2);
            return logits.reshape(ids.length, v).get(ids.length - 1).toFloatArray();
        }
    }

    private static double check(float[] got, float[] want, String what) {
        assertEquals(want.length, got.length, what);
        double worst = 0;
        for (int i = 0; i < got.length; i++) {
            double err = Math.abs((double) got[i] - want[i]) / (1 + Math.abs(want[i]));
            worst = Math.max(worst, err);
        }
        assertTrue(worst <= TOL, what + ": relative error " + worst + " > " + TOL);
        return worst;
    }

    @ParameterizedTest(name = "{0}, low-latency MoE = {1}")
    @CsvSource({
        "tiny, false",
        "tiny, true",
        "tiny-deepseek-v2, false",
        "tiny-qwen3-moe, false",
        "tiny-qwen3-moe, true",
        "qwen3-window, false"
    })
    void incrementalLogitsEqualTheFullForward(String preset, boolean ll) {
        HfMoeConfig cfg = config(preset);
        int vocab = (int) cfg.vocabSize();
        int b = PROMPT.length;
        int maxPrompt = Arrays.stream(PROMPT).max().getAsInt();
        Random r = new Random(41);
        long[][] seq = new long[b][];
        for (int q = 0; q < b; q++) {
            seq[q] = new long[PROMPT[q] + STEPS];
            for (int i = 0; i < seq[q].length; i++) {
                seq[q][i] = r.nextInt(vocab);
            }
        }
        try (NDManager m = NDManager.newBaseManager();
                LocalProcessGroup group = new LocalProcessGroup();
                LowLatencyBuffer buf =
                        ll
                                ? LowLatencyBuffer.create(
                                        group,
                                        b,
                                        cfg.hiddenSize(),
                                        cfg.numExperts(),
                                        cfg.topK(),
                                        WireFormat.FP32,
                                        10_000)
                                : null) {
            Engine.getInstance().setRandomSeed(5);
            HfMoeForCausalLm model = HfMoeForCausalLm.builder().setConfig(cfg).build();
            model.setInitializer(new NormalInitializer(0.2f), p -> true);
            model.initialize(m, DataType.FLOAT32, new Shape(1, 1));
            LowLatencyMoe moe =
                    ll ? new LowLatencyMoe(buf, WireFormat.FP32, WireFormat.FP32, false) : null;
            double worst = 0;
            try (KvCache cache = model.newCache(m, b, maxPrompt + STEPS + 3);
                    NDManager s = m.newSubManager()) {
                ParameterStore ps = new ParameterStore(s, false);
                long[] padded = new long[b * maxPrompt];
                for (int q = 0; q < b; q++) {
                    for (int i = 0; i < maxPrompt; i++) {
                        padded[q * maxPrompt + i] =
                                i < PROMPT[q] ? seq[q][i] : r.nextInt(vocab); // junk padding
                    }
                }
                float[] pre =
                        model.forwardCached(
                                        ps,
                                        s.create(padded, new Shape(b, maxPrompt)),
                                        cache,
                                        new long[b],
                                        null)
                                .toFloatArray();
                for (int q = 0; q < b; q++) {
                    for (int i = 0; i < PROMPT[q]; i++) {
                        float[] got =
                                Arrays.copyOfRange(
                                        pre,
                                        (q * maxPrompt + i) * vocab,
                                        (q * maxPrompt + i + 1) * vocab);
                        worst =
                                Math.max(
                                        worst,
                                        check(
                                                got,
                                                fullLastRow(model, m, Arrays.copyOf(seq[q], i + 1)),
                                                preset + " prefill seq " + q + " pos " + i));
                    }
                }
                for (int step = 0; step < STEPS; step++) {
                    long[] ids = new long[b];
                    long[] start = new long[b];
                    for (int q = 0; q < b; q++) {
                        start[q] = PROMPT[q] + step;
                        ids[q] = seq[q][PROMPT[q] + step];
                    }
                    NDArray logits =
                            model.forwardCached(
                                    ps, s.create(ids, new Shape(b, 1)), cache, start, moe);
                    assertEquals(new Shape(b, 1, vocab), logits.getShape());
                    float[] all = logits.toFloatArray();
                    for (int q = 0; q < b; q++) {
                        worst =
                                Math.max(
                                        worst,
                                        check(
                                                Arrays.copyOfRange(all, q * vocab, (q + 1) * vocab),
                                                fullLastRow(
                                                        model,
                                                        m,
                                                        Arrays.copyOf(seq[q], (int) start[q] + 1)),
                                                preset + " step " + step + " seq " + q));
                    }
                }
                if (ll) {
                    assertEquals(
                            (long) STEPS * cfg.numMoeLayers(),
                            moe.calls(),
                            "every decode step's MoE layers went through the low-latency path");
                }
                // Positions past the capacity are refused, naming the sequence and the capacity.
                IllegalArgumentException e =
                        assertThrows(
                                IllegalArgumentException.class,
                                () ->
                                        model.forwardCached(
                                                ps,
                                                s.create(new long[b], new Shape(b, 1)),
                                                cache,
                                                new long[] {0, cache.capacity(), 0},
                                                null));
                assertTrue(
                        e.getMessage().contains("sequence 1 writes positions " + cache.capacity()),
                        e.getMessage());
            }
            System.out.printf(
                    "KvCacheTest %s ll=%s: worst relative logit error %.2e%n", preset, ll, worst);
        }
    }
}
