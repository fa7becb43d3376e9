/*
 * djl-moe: expert-parallel Mixture-of-Experts for the Deep Java Library.
 */
package dev.djlmoe.train;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertTrue;

import dev.djlmoe.dist.MultiRank;
import java.io.IOException;
import java.nio.file.Files;
import java.time.Duration;
import java.util.ArrayList;
import java.util.LinkedHashMap;
import java.util.List;
import java.util.Map;
import org.junit.jupiter.api.Test;

/**
 * {@link EpFit#fit} drives a user-style DJL model holding a {@code MoeLayer} over an {@code
 * ArrayDataset} ({@link EpFitRank}) at W = 1 and W = 2: the loss falls, every listener is called
 * once per global batch or epoch and sees whole global batches, DJL's evaluator results agree on
 * every rank, DJL's checkpoint listener writes one file per epoch, and the W = 2 curve and results
 * match W = 1 within the CPU equivalence bound of the recipes' EP equivalence test (1e-4).
 */
class EpFitTest {

    /** |x_W - x_1| at every step and in the final evaluations, as the recipes' curves. */
    static final double CURVE_TOL = 1e-4;

    private static List<String> run(int worldSize) throws IOException {
        MultiRank.Result r =
                MultiRank.builder(EpFitRank.class, worldSize)
                        .timeout(Duration.ofMinutes(3))
                        .rankTimeoutMillis(60_000)
                        .name("ep-fit-w" + worldSize)
                        .run();
        r.assertAllSucceeded();
        assertEquals(List.of(), r.shmLeftBehind(), "segments left in /dev/shm");
        List<String> first = null;
        for (int rank = 0; rank < worldSize; rank++) {
            assertTrue(r.output(rank).contains("fit: OK"), r.describeRank(rank));
            List<String> lines =
                    Files.readAllLines(r.file("fit-w" + worldSize + "-r" + rank + ".txt"));
            if (first == null) {
                first = lines;
            } else {
                // Listeners see the gathered global batch: every figure is the same on all ranks.
                assertEquals(first, lines, "rank " + rank + " against rank 0");
            }
        }
        return first;
    }

    private static List<Double> values(List<String> lines, String key) {
        List<Double> out = new ArrayList<>();
        for (String l : lines) {
            if (l.startsWith(key + " ")) {
                out.add(Double.parseDouble(l.substring(key.length() + 1)));
            }
        }
        return out;
    }

    private static Map<String, Double> results(List<String> lines) {
        Map<String, Double> out = new LinkedHashMap<>();
        for (String l : lines) {
            if (l.startsWith("result ")) {
                String[] p = l.split(" ");
                out.put(p[1], Double.parseDouble(p[2]));
            }
        }
        return out;
    }

    @Test
    void fitTrainsAtOneAndTwoRanksAlike() throws IOException {
        List<String> one = run(1);
        int batchesPerEpoch = EpFitRank.TRAIN_ROWS / EpFitRank.BATCH;
        int epochs = EpFitRank.EPOCHS;
        assertTrue(
                one.contains(
                        String.format(
                                "counts %d %d %d %d",
                                epochs,
                                epochs * batchesPerEpoch,
                                epochs * EpFitRank.VALIDATE_ROWS / EpFitRank.BATCH,
                                (long) epochs * EpFitRank.TRAIN_ROWS)),
                one.toString());
        List<Double> loss = values(one, "loss");
        assertEquals(epochs * batchesPerEpoch, loss.size());
        double firstEpoch =
                loss.subList(0, batchesPerEpoch).stream()
                        .mapToDouble(Double::doubleValue)
                        .average()
                        .orElseThrow();
        double lastEpoch =
                loss.subList(loss.size() - batchesPerEpoch, loss.size()).stream()
                        .mapToDouble(Double::doubleValue)
                        .average()
                        .orElseThrow();
        assertTrue(lastEpoch < 0.8 * firstEpoch, "loss " + firstEpoch + " -> " + lastEpoch);
        Map<String, Double> res = results(one);
        assertTrue(
                res.containsKey("train_loss") && res.containsKey("validate_Accuracy"),
                res.toString());
        for (int e = 1; e <= epochs; e++) {
            String file = String.format("file fit-%04d.params", e);
            assertTrue(one.contains(file), file + " in " + one);
        }

        List<String> two = run(2);
        List<Double> loss2 = values(two, "loss");
        assertEquals(loss.size(), loss2.size());
        for (int i = 0; i < loss.size(); i++) {
            assertTrue(
                    Math.abs(loss2.get(i) - loss.get(i)) <= CURVE_TOL,
                    "batch " + i + ": W=2 " + loss2.get(i) + ", W=1 " + loss.get(i));
        }
        Map<String, Double> res2 = results(two);
        assertEquals(res.keySet(), res2.keySet());
        res.forEach(
                (k, v) ->
                        assertTrue(
                                Math.abs(res2.get(k) - v) <= CURVE_TOL,
                                k + ": W=2 " + res2.get(k) + ", W=1 " + v));
        assertEquals(one.get(0), two.get(0), "listener counts");
    }
}
