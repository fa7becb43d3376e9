/*
 * djl-moe: expert-parallel Mixture-of-Experts for the Deep Java Library.
 */
package dev.djlmoe.recipes;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertFalse;
import static org.junit.jupiter.api.Assertions.assertTrue;

import dev.djlmoe.recipes.bench.OperatorProfile;
import dev.djlmoe.recipes.bench.StepProfile;
import dev.djlmoe.zoo.io.Json;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.ArrayList;
import java.util.HashMap;
import java.util.List;
import java.util.Map;
import java.util.Set;
import java.util.stream.Collectors;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.io.TempDir;

/**
 * {@code bench step --profile} on the CPU with the tiny model (1 dense + 3 MoE layers): the trace,
 * the operator table and the phases are written, the phases cover the step, nest, and name every
 * layer's forward and backward; an unwritable directory is refused before any training.
 */
class BenchStepProfileTest {

    /**
     * The top-level phases (the trainer's step) cover at least this share of the phase step's wall
     * time; the rest is the recipe's loop around the trainer (the next batch, the schedule).
     */
    static final double COVERED = 0.75;

    /** {@code bench step} of the tiny model on the CPU, one warm-up and one timed step. */
    private static String[] tinyStep(String profileDir, String... more) {
        List<String> args =
                new ArrayList<>(
                        List.of(
                                "bench",
                                "step",
                                "--model",
                                "tiny",
                                "--layers",
                                "0",
                                "--batch",
                                "2",
                                "--seq-len",
                                "16",
                                "--device",
                                "cpu",
                                "--warmup",
                                "1",
                                "--steps",
                                "1",
                                "--profile",
                                profileDir));
        args.addAll(List.of(more));
        return args.toArray(new String[0]);
    }

    @Test
    void profileOfTheTinyModelOnTheCpu(@TempDir Path tmp) throws Exception {
        Path dir = tmp.resolve("profile");
        Path json = tmp.resolve("step.json");
        BenchStepTest.Printed p =
                BenchStepTest.cli(tinyStep(dir.toString(), "--json", json.toString()));
        assertEquals(0, p.run().code(), p.run().err() + p.stdout());

        // The trace is libtorch's and the operator table is read from it.
        Path trace = dir.resolve(StepProfile.TRACE);
        assertTrue(Files.size(trace) > 1000, "trace " + Files.size(trace));
        OperatorProfile ops = OperatorProfile.read(trace);
        assertTrue(ops.ops().size() > 10, "operators " + ops.ops().size());
        assertTrue(ops.ops().stream().anyMatch(o -> o.name().equals("aten::mm")), "aten::mm");
        assertFalse(ops.hasDeviceTimes()); // the CPU: host events only
        String opsTxt = Files.readString(dir.resolve(StepProfile.OPS));
        assertTrue(opsTxt.contains("aten::"), opsTxt);
        assertTrue(opsTxt.contains("not torch operators"), opsTxt);
        assertTrue(
                Files.readString(dir.resolve(StepProfile.PHASES)).contains("layer 3/mlp/experts"));

        Map<String, Object> m = Json.parseObject(Files.readString(json), json.toString());
        Map<?, ?> prof = (Map<?, ?>) m.get("profile");
        double opStep = ((Number) prof.get("operator_step_ms")).doubleValue();
        List<?> top = (List<?>) prof.get("ops");
        assertEquals(StepProfile.TOP_OPS, top.size());
        double previous = Double.MAX_VALUE;
        for (Object o : top) {
            Map<?, ?> op = (Map<?, ?>) o;
            double self = ((Number) op.get("self_ms")).doubleValue();
            double total = ((Number) op.get("total_ms")).doubleValue();
            assertTrue(total > 0 && self >= 0 && self <= total + 1e-9, op.toString());
            assertTrue(self <= previous, "sorted by self time: " + op);
            assertTrue(((Number) op.get("calls")).longValue() >= 1, op.toString());
            previous = self;
        }
        // Outermost operators of one thread cannot take longer than the step they ran in.
        double host = ((Number) prof.get("host_ms_in_operators")).doubleValue();
        assertTrue(host > 0 && host <= opStep * 1.01, host + " ms in operators of " + opStep);

        // The phases: the trainer's sequence covers the step, children lie inside parents.
        double wall = ((Number) prof.get("phase_step_ms")).doubleValue();
        Map<String, Double> ms = new HashMap<>();
        Map<String, Long> calls = new HashMap<>();
        for (Object o : (List<?>) prof.get("phases")) {
            Map<?, ?> ph = (Map<?, ?>) o;
            ms.put((String) ph.get("path"), ((Number) ph.get("ms")).doubleValue());
            calls.put((String) ph.get("path"), ((Number) ph.get("calls")).longValue());
        }
        Set<String> topLevel =
                ms.keySet().stream().filter(k -> !k.contains("/")).collect(Collectors.toSet());
        assertEquals(
                Set.of(
                        "forward",
                        "loss",
                        "backward",
                        "release graph",
                        "gradients",
                        "optimizer",
                        "balancing"),
                topLevel);
        double sum = topLevel.stream().mapToDouble(ms::get).sum();
        assertTrue(
                sum <= wall + 1e-6 && sum >= COVERED * wall,
                "top-level phases " + sum + " ms of a " + wall + " ms step");
        assertEquals(wall - sum, ((Number) prof.get("outside_trainer_ms")).doubleValue(), 1e-6);
        for (String parent : ms.keySet()) {
            if (parent.startsWith("forward")) {
                double children =
                        ms.entrySet().stream()
                                .filter(
                                        e ->
                                                e.getKey().startsWith(parent + "/")
                                                        && e.getKey()
                                                                        .indexOf(
                                                                                '/',
                                                                                parent.length() + 1)
                                                                < 0)
                                .mapToDouble(Map.Entry::getValue)
                                .sum();
                assertTrue(children <= ms.get(parent) + 1e-6, parent);
            }
        }
        for (int layer = 0; layer < 4; layer++) {
            assertTrue(ms.containsKey("forward/layer " + layer + "/attention"), ms.toString());
            assertTrue(ms.containsKey("backward/layer " + layer + "/attention"), ms.toString());
        }
        assertTrue(ms.containsKey("backward/layer 0/mlp")); // the dense layer's MLP
        for (int layer = 1; layer < 4; layer++) {
            for (String part :
                    List.of("norm", "router", "dispatch", "experts", "combine", "shared experts")) {
                String f = "forward/layer " + layer + "/mlp/" + part;
                assertEquals(1L, calls.get(f), f);
                // dispatch, combine: their VJP; the rest: the walk through their graph (the last
                // layer's shared experts are in the walk from the loss)
                String b = "backward/layer " + layer + "/mlp/" + part;
                assertEquals(layer < 3 || !part.equals("shared experts"), ms.containsKey(b), b);
            }
        }
        assertTrue(ms.containsKey("backward/embedding"));
        assertTrue(ms.containsKey("backward/layer 3.mlp.shared experts + head + loss"));

        String out = p.stdout();
        assertTrue(out.contains("the layers summed"), out);
        assertTrue(out.contains("mlp/dispatch"), out);
        assertTrue(out.contains("operator (host time)"), out);
        List<String> lines = out.lines().toList();
        int header = 0;
        while (!lines.get(header).contains("operator (host time)")) {
            header++;
        }
        String row = " +\\S.* +\\d+ +[0-9.]+ +[0-9.]+ +[0-9.]+%";
        for (int i = 1; i <= StepProfile.PRINTED_OPS; i++) {
            assertTrue(lines.get(header + i).matches(row), lines.get(header + i));
        }
        assertFalse(lines.get(header + StepProfile.PRINTED_OPS + 1).matches(row), out);
    }

    @Test
    void anUnwritableDirectoryIsRefusedBeforeTraining(@TempDir Path tmp) throws Exception {
        Path file = Files.writeString(tmp.resolve("a-file"), "x");
        Path dir = file.resolve("profile");
        BenchStepTest.Printed p = BenchStepTest.cli(tinyStep(dir.toString()));
        assertEquals(1, p.run().code(), p.run().err());
        assertTrue(
                p.run().err().contains("--profile " + dir + ": cannot write the profile there"),
                p.run().err());
        assertFalse(p.stdout().contains("step 2:"), p.stdout());
    }
}
