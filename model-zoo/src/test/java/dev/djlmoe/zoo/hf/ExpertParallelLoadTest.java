/*
 * djl-moe: expert-parallel Mixture-of-Experts for the Deep Java Library.
 */
package dev.djlmoe.zoo.hf;

import static org.junit.jupiter.api.Assertions.assertArrayEquals;
import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertTrue;

import dev.djlmoe.dist.RankEnvironment;
import dev.djlmoe.zoo.io.SafetensorsCheckpoint;
import dev.djlmoe.zoo.io.SafetensorsFile;
import java.io.IOException;
import java.net.ServerSocket;
import java.nio.file.Files;
import java.nio.file.Path;
import java.nio.file.Paths;
import java.util.ArrayList;
import java.util.List;
import java.util.Map;
import java.util.TreeSet;
import java.util.UUID;
import java.util.concurrent.TimeUnit;
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

    static void runRanks(Path ckpt, Path out) throws IOException, InterruptedException {
        int port;
        try (ServerSocket s = new ServerSocket(0)) {
            port = s.getLocalPort();
        }
        String java = Paths.get(System.getProperty("java.home"), "bin", "java").toString();
        List<Process> procs = new ArrayList<>();
        String token = UUID.randomUUID().toString();
        for (int r = 0; r < WORLD; r++) {
            ProcessBuilder pb =
                    new ProcessBuilder(
                            java,
                            "-Xmx1g",
                            "-Dai.djl.offline=true",
                            "-Dai.djl.pytorch.num_threads=1",
                            "-Dai.djl.pytorch.num_interop_threads=1",
                            "-cp",
                            System.getProperty("java.class.path"),
                            EpLoadRank.class.getName(),
                            ckpt.toString(),
                            out.toString());
            Map<String, String> env = pb.environment();
            env.put("RANK", String.valueOf(r));
            env.put("WORLD_SIZE", String.valueOf(WORLD));
            env.put("LOCAL_RANK", String.valueOf(r));
            env.put("LOCAL_WORLD_SIZE", String.valueOf(WORLD));
            env.put("MASTER_ADDR", "127.0.0.1");
            env.put("MASTER_PORT", String.valueOf(port));
            env.put(RankEnvironment.JOB_TOKEN, token);
            env.put("DJL_OFFLINE", "true");
            env.put("OPT_OUT_TRACKING", "true");
            env.put("DJL_MOE_TIMEOUT_MS", "60000");
            pb.redirectErrorStream(true);
            pb.redirectOutput(out.resolve("rank-" + r + ".log").toFile());
            procs.add(pb.start());
        }
        try {
            for (int r = 0; r < WORLD; r++) {
                Process p = procs.get(r);
                boolean done = p.waitFor(150, TimeUnit.SECONDS);
                String log = Files.readString(out.resolve("rank-" + r + ".log"));
                assertTrue(done, "rank " + r + " timed out:\n" + tail(log));
                assertEquals(0, p.exitValue(), "rank " + r + " failed:\n" + tail(log));
            }
        } finally {
            for (Process p : procs) {
                p.descendants().forEach(ProcessHandle::destroyForcibly);
                p.destroyForcibly();
            }
        }
    }

    private static String tail(String log) {
        return log.length() > 6000 ? log.substring(log.length() - 6000) : log;
    }
}
