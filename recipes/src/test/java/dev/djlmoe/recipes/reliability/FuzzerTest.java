/*
 * djl-moe: expert-parallel Mixture-of-Experts for the Deep Java Library.
 */
package dev.djlmoe.recipes.reliability;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertFalse;
import static org.junit.jupiter.api.Assertions.assertTrue;

import java.io.ByteArrayOutputStream;
import java.io.PrintStream;
import java.nio.charset.StandardCharsets;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.List;
import java.util.Map;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.io.TempDir;

/**
 * The Java mutation fuzzer behind {@code djl-moe fuzz}: a short run over the real parsers finds
 * nothing and reaches every target; planted bugs (an unchecked exception, a hang) are found, saved
 * and reported, so a clean run means something.
 */
class FuzzerTest {

    @TempDir Path tmp;

    private static MutationFuzzer.Target planted(String name, String trigger, Runnable bug) {
        return new MutationFuzzer.Target() {
            @Override
            public String name() {
                return name;
            }

            @Override
            public List<byte[]> seeds() {
                return List.of("{\"a\": [1, 2]}".getBytes(StandardCharsets.UTF_8));
            }

            @Override
            public void run(byte[] input) throws Exception {
                if (new String(input, StandardCharsets.UTF_8).contains(trigger)) {
                    bug.run();
                }
                dev.djlmoe.zoo.io.Json.parse(new String(input, StandardCharsets.UTF_8), "t", 8);
            }

            @Override
            public boolean isCleanRefusal(Throwable t) {
                return t instanceof dev.djlmoe.zoo.io.JsonException;
            }
        };
    }

    @Test
    void theRealParsersSurviveAShortRun() throws Exception {
        ByteArrayOutputStream log = new ByteArrayOutputStream();
        MutationFuzzer.Report r =
                new MutationFuzzer(
                                FuzzTargets.all(tmp),
                                11,
                                5_000,
                                16 << 10,
                                tmp.resolve("findings"),
                                new PrintStream(log, true, StandardCharsets.UTF_8))
                        .run(4);
        String text = log.toString(StandardCharsets.UTF_8);
        assertEquals(0, r.findings(), text);
        assertFalse(r.hang(), text);
        for (Map.Entry<String, MutationFuzzer.Counts> e : r.counts().entrySet()) {
            MutationFuzzer.Counts c = e.getValue();
            assertTrue(c.inputs() >= 20, e.getKey() + ": " + c.inputs() + " inputs");
            assertTrue(c.refused() > 0, e.getKey() + ": nothing was refused");
            assertEquals(c.inputs(), c.accepted() + c.refused(), e.getKey());
        }
        assertEquals(
                List.of("safetensors", "json", "config", "index"),
                List.copyOf(r.counts().keySet()));
        System.out.println("fuzz smoke: " + r.inputs() + " inputs in " + r.millis() + " ms");
    }

    @Test
    void aPlantedUncheckedExceptionIsFoundAndSaved() throws Exception {
        ByteArrayOutputStream log = new ByteArrayOutputStream();
        MutationFuzzer.Report r =
                new MutationFuzzer(
                                List.of(
                                        planted(
                                                "planted",
                                                "-1",
                                                () -> {
                                                    throw new NullPointerException("planted bug");
                                                })),
                                3,
                                5_000,
                                4096,
                                tmp.resolve("f1"),
                                new PrintStream(log, true, StandardCharsets.UTF_8))
                        .run(3);
        String text = log.toString(StandardCharsets.UTF_8);
        assertTrue(r.findings() > 0, text);
        assertTrue(text.contains("FINDING java.lang.NullPointerException: planted bug"), text);
        Path saved = r.findingFiles().get(0);
        assertTrue(new String(Files.readAllBytes(saved), StandardCharsets.UTF_8).contains("-1"));
    }

    @Test
    void aHangEndsTheRunAndIsReported() throws Exception {
        ByteArrayOutputStream log = new ByteArrayOutputStream();
        long begin = System.nanoTime();
        MutationFuzzer.Report r =
                new MutationFuzzer(
                                List.of(
                                        planted(
                                                "sleepy",
                                                "null",
                                                () -> {
                                                    try {
                                                        Thread.sleep(60_000);
                                                    } catch (InterruptedException e) {
                                                        Thread.currentThread().interrupt();
                                                    }
                                                })),
                                5,
                                200,
                                4096,
                                tmp.resolve("f2"),
                                new PrintStream(log, true, StandardCharsets.UTF_8))
                        .run(30);
        long ms = (System.nanoTime() - begin) / 1_000_000;
        String text = log.toString(StandardCharsets.UTF_8);
        assertTrue(r.hang(), text);
        assertTrue(ms < 20_000, ms + " ms: the hang did not end the run early");
        assertTrue(text.contains("ran longer than 200 ms"), text);
    }
}
