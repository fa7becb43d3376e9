/*
 * djl-moe: expert-parallel Mixture-of-Experts for the Deep Java Library.
 */
package dev.djlmoe.zoo.hf;

import static org.junit.jupiter.api.Assertions.assertArrayEquals;
import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertTrue;

import dev.djlmoe.dist.MultiRank;
import dev.djlmoe.zoo.io.SafetensorsCheckpoint;
import dev.djlmoe.zoo.io.SafetensorsFile;
import java.nio.file.Files;
import java.nio.file.Path;
import java.time.Duration;
import java.util.TreeSet;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.io.TempDir;

/**
 * A transformers checkpoint loaded with 2 expert-parallel ranks (2 JVMs over the shared-memory
 * process group, each reading only its own experts) gives the logits of the 1-rank load, and its
 * sharded save (one shard per rank plus an index) loads back on one rank with the same names.
 */
class ExpertParallelLoadTest {

    private static final int WORLD = 2;

    @TempDir Path tmp;

    @Test
    void twoRanksGiveTheLogitsOfOne() throws Exception {
        String name = "deepseek_v3_qlora_yarn";
        Path ckpt = Fixtures.dir(name).toAbsolutePath();
        Fixtures.Expected exp = Fixtures.expected(name);
        float[] single = HfCheckpointsTest.run(ckpt, exp.ids(), exp.idsShape());

        runRanks(ckpt, tmp);
        HfMoeConfig cfg = HfMoeConfig.load(ckpt);
        int local = cfg.numExperts() / WORLD;
        for (int r = 0; r < WORLD; r++) {
            try (SafetensorsFile f =
                    SafetensorsFile.open(tmp.resolve("rank-" + r + ".safetensors"))) {
                assertArrayEquals(
                        new float[] {local, r * local},
                        f.readFloats("local_experts"),
                        "rank "
                                + r
                                + " holds experts ["
                                + r * local
                                + ", "
                                + (r + 1) * local
                                + ")");
                double rel = Fixtures.relativeError(f.readFloats("logits"), single);
                assertTrue(rel < 1e-5, "rank " + r + ": relative error vs 1 rank " + rel);
            }
        }
        Path saved = tmp.resolve("saved");
        assertTrue(Files.isRegularFile(saved.resolve(SafetensorsCheckpoint.INDEX_FILE)));
        for (int r = 0; r < WORLD; r++) {
            assertTrue(Files.isRegularFile(saved.resolve(HfCheckpoints.shardName(r, WORLD))));
        }
        try (SafetensorsCheckpoint a = SafetensorsCheckpoint.open(ckpt);
                SafetensorsCheckpoint b = SafetensorsCheckpoint.open(saved);
                SafetensorsFile shard1 =
                        SafetensorsFile.open(saved.resolve(HfCheckpoints.shardName(1, WORLD)))) {
            assertEquals(new TreeSet<>(a.names()), new TreeSet<>(b.names()));
            for (String t : shard1.tensors().keySet()) {
                assertTrue(t.contains(".mlp.experts."), "rank 1 writes only its experts: " + t);
                int e = Integer.parseInt(t.replaceAll(".*\\.experts\\.(\\d+)\\..*", "$1"));
                assertTrue(e >= local, t);
                assertArrayEquals(a.readFloats(t), b.readFloats(t), t);
            }
        }
        float[] back = HfCheckpointsTest.run(saved, exp.ids(), exp.idsShape());
        assertArrayEquals(single, back, "the EP-sharded save loads back on one rank");
    }

    /** Runs {@link EpLoadRank} on {@value #WORLD} ranks, writing into {@code out}. */
    static void runRanks(Path ckpt, Path out) {
        MultiRank.builder(EpLoadRank.class, WORLD)
                .args(ckpt.toString(), out.toString())
                .timeout(Duration.ofSeconds(150))
                .rankTimeoutMillis(60_000)
                .name("ep-load")
                .run()
                .assertAllSucceeded();
    }
}
