/*
 * djl-moe: expert-parallel Mixture-of-Experts for the Deep Java Library.
 */
package dev.djlmoe.recipes;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertTrue;

import ai.djl.ndarray.NDManager;
import ai.djl.ndarray.types.DataType;
import ai.djl.ndarray.types.Shape;
import dev.djlmoe.dist.MultiRank;
import dev.djlmoe.train.ParameterInit;
import dev.djlmoe.zoo.hf.HfCheckpoints;
import dev.djlmoe.zoo.hf.HfMoeConfig;
import dev.djlmoe.zoo.hf.HfMoeForCausalLm;
import java.io.IOException;
import java.nio.file.Files;
import java.nio.file.Path;
import java.time.Duration;
import java.util.ArrayList;
import java.util.Arrays;
import java.util.List;
import java.util.Map;
import java.util.concurrent.ConcurrentHashMap;
import java.util.regex.Matcher;
import java.util.regex.Pattern;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.io.TempDir;
import org.junit.jupiter.params.ParameterizedTest;
import org.junit.jupiter.params.provider.ValueSource;

/**
 * {@code djl-moe decode} in spawned JVMs: greedy generation with W = 2 EP ranks and low-latency MoE
 * decode steps (fp32 wires) equals, token for token, the W = 1 run with every expert local and the
 * plain MoE forward; three prompts, so the ranks hold 2 and 1 sequences of different lengths. MLA
 * ({@code tiny}) and GQA ({@code tiny-qwen3-moe}) presets with seeded random weights, the prefill
 * in low-latency mode too, and a Hugging Face checkpoint written from the same weights; user errors
 * named.
 */
class DecodeTest {

    private static final String NEW_TOKENS = "6";
    private static final List<String> PROMPTS = List.of("The ", "Once upon a time", "Call me");
    private static final Pattern TOKENS = Pattern.compile("\"tokens\": \\[([0-9,]*)\\]");
    private static final Pattern MARGINS = Pattern.compile("\"margins\": \\[([-0-9.eE+,]*)\\]");

    /** Logit margins under this are near-ties: other float32 summation orders may flip them. */
    private static final double TIE = 1e-3;

    /** Same model, other exchange: the logits agree to float32 rounding of 1e-5 or so. */
    private static final double MARGIN_TOLERANCE = 1e-3;

    private static final Map<String, Greedy> REFERENCE = new ConcurrentHashMap<>();

    private static MultiRank.Result decode(int w, String... args) {
        List<String> a =
                new ArrayList<>(
                        List.of(
                                "decode",
                                "--new-tokens",
                                NEW_TOKENS,
                                "--output",
                                "@OUT/tokens.jsonl"));
        for (String p : PROMPTS) {
            a.add("--prompt");
            a.add(p);
        }
        a.addAll(List.of(args));
        MultiRank.Result r =
                MultiRank.builder(CliRank.class, w)
                        .args(a.toArray(new String[0]))
                        .timeout(Duration.ofMinutes(3))
                        .rankTimeoutMillis(60_000)
                        .heap("768m")
                        .run();
        r.assertAllSucceeded();
        return r;
    }

    /** One run's greedy tokens and margins per prompt. */
    private record Greedy(List<long[]> tokens, List<double[]> margins) {}

    private static Greedy tokens(MultiRank.Result r) {
        try {
            List<long[]> tokens = new ArrayList<>();
            List<double[]> margins = new ArrayList<>();
            for (String line : Files.readAllLines(r.file("tokens.jsonl"))) {
                Matcher m = TOKENS.matcher(line);
                assertTrue(m.find(), line);
                long[] t =
                        Arrays.stream(m.group(1).split(",")).mapToLong(Long::parseLong).toArray();
                Matcher g = MARGINS.matcher(line);
                assertTrue(g.find(), line);
                double[] d =
                        Arrays.stream(g.group(1).split(","))
                                .mapToDouble(Double::parseDouble)
                                .toArray();
                assertEquals(Integer.parseInt(NEW_TOKENS), t.length, line);
                assertEquals(t.length, d.length, line);
                for (double x : d) {
                    assertTrue(x >= 0, "a greedy choice's margin is never negative: " + line);
                }
                tokens.add(t);
                margins.add(d);
            }
            assertEquals(PROMPTS.size(), tokens.size(), r.describe());
            return new Greedy(tokens, margins);
        } catch (IOException e) {
            throw new java.io.UncheckedIOException(e);
        }
    }

    /**
     * The same greedy choices as the reference, token for token, with the same margins (within
     * {@link #MARGIN_TOLERANCE}); a sequence is compared only up to its first near-tie in the
     * reference (margin under {@link #TIE}), where float32 rounding of another summation order may
     * pick the other token, and at least two thirds of all tokens must be compared.
     */
    private static void assertSameGreedy(Greedy reference, Greedy other, String what) {
        int compared = 0;
        int total = 0;
        for (int q = 0; q < reference.tokens().size(); q++) {
            long[] a = reference.tokens().get(q);
            long[] b = other.tokens().get(q);
            total += a.length;
            for (int i = 0; i < a.length; i++) {
                double m = reference.margins().get(q)[i];
                if (m < TIE) {
                    break; // a near-tie: the two runs may part here, legitimately
                }
                assertEquals(
                        a[i],
                        b[i],
                        what
                                + ": prompt "
                                + q
                                + " token "
                                + i
                                + " (reference"
                                + " margin "
                                + m
                                + ")\nreference "
                                + Arrays.toString(a)
                                + "\nother     "
                                + Arrays.toString(b));
                assertEquals(
                        m,
                        other.margins().get(q)[i],
                        MARGIN_TOLERANCE,
                        what + ": prompt " + q + " token " + i + " margin");
                compared++;
            }
        }
        assertTrue(
                3 * compared >= 2 * total,
                what
                        + ": only "
                        + compared
                        + " of "
                        + total
                        + " tokens were away from near-ties; the comparison says too little");
    }

    /** W = 1, experts local, plain MoE forward in the decode steps. */
    private static Greedy reference(String preset) {
        return REFERENCE.computeIfAbsent(
                preset,
                p -> {
                    MultiRank.Result r = decode(1, "--model", p, "--exchange", "normal");
                    assertTrue(r.output(0).contains("RANDOM weights"), r.describe());
                    return tokens(r);
                });
    }

    @ParameterizedTest(name = "{0}")
    @ValueSource(strings = {"tiny", "tiny-qwen3-moe"})
    void twoEpRanksWithLowLatencyDecodeEqualOneRank(String preset) {
        Greedy one = reference(preset);
        MultiRank.Result two =
                decode(2, "--model", preset, "--dispatch-wire", "fp32", "--combine-wire", "fp32");
        String out = two.output(0);
        assertTrue(out.contains("decode steps: low-latency dispatch FP32 / combine FP32"), out);
        assertTrue(out.contains("low-latency dispatch + combine:"), out);
        assertTrue(out.contains("tokens/s over all ranks"), out);
        assertSameGreedy(one, tokens(two), "W = 2 low-latency greedy tokens vs W = 1\n" + out);
    }

    @Test
    void lowLatencyPrefillToo() {
        MultiRank.Result two =
                decode(
                        2,
                        "--model",
                        "tiny",
                        "--prefill",
                        "ll",
                        "--dispatch-wire",
                        "fp32",
                        "--combine-wire",
                        "fp32");
        // Rank 0 holds "The " and "Once upon a time": 2 x 16 tokens; rank 1 "Call me": 7.
        assertTrue(
                two.output(0).contains("prefill: low-latency (max_tokens_per_rank 32)"),
                two.output(0));
        assertSameGreedy(reference("tiny"), tokens(two), two.output(0));
    }

    @Test
    void aCheckpointDecodesLikeTheSameWeightsFromTheSeed(@TempDir Path tmp) throws IOException {
        Path dir = tmp.resolve("tiny-ckpt");
        try (NDManager m = NDManager.newBaseManager()) {
            HfMoeForCausalLm model =
                    HfMoeForCausalLm.builder().setConfig(HfMoeConfig.preset("tiny")).build();
            model.initialize(m, DataType.FLOAT32, new Shape(1, 1));
            ParameterInit.reinitialize(model, 42);
            HfCheckpoints.save(model, dir);
        }
        MultiRank.Result two =
                decode(
                        2,
                        "--model",
                        dir.toString(),
                        "--dispatch-wire",
                        "fp32",
                        "--combine-wire",
                        "fp32");
        assertTrue(two.output(0).contains("model: " + dir), two.output(0));
        assertSameGreedy(reference("tiny"), tokens(two), two.output(0));
    }

    @Test
    void userErrorsAreNamed() {
        CliCall.assertRefused("prompt 0 (\"\") encodes to no tokens", "decode", "--prompt", "");
        CliCall.assertRefused("--new-tokens 0 must be >= 1", "decode", "--new-tokens", "0");
        CliCall.assertRefused(
                "--exchange fast: expected ll or normal", "decode", "--exchange", "fast");
        CliCall.assertRefused(
                "--prefill ll needs --exchange ll",
                "decode",
                "--prefill",
                "ll",
                "--exchange",
                "normal");
        CliCall.assertRefused(
                "wire format 'fp4' is not one of", "decode", "--dispatch-wire", "fp4");
        CliCall.assertRefused(
                "exceed max_position_embeddings = 512", "decode", "--new-tokens", "600");
        CliCall.assertRefused("--device tpu is not cpu, gpu or auto", "decode", "--device", "tpu");
        if (ai.djl.engine.Engine.getInstance().getGpuCount() == 0) {
            CliCall.assertRefused(
                    "--device gpu: the PyTorch engine sees no GPU", "decode", "--device", "gpu");
        }
    }
}
