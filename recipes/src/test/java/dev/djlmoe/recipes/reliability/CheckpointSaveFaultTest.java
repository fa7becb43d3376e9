/*
 * djl-moe: expert-parallel Mixture-of-Experts for the Deep Java Library.
 */
package dev.djlmoe.recipes.reliability;

import static org.junit.jupiter.api.Assertions.assertArrayEquals;
import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertFalse;
import static org.junit.jupiter.api.Assertions.assertNotEquals;
import static org.junit.jupiter.api.Assertions.assertNull;
import static org.junit.jupiter.api.Assertions.assertTrue;

import dev.djlmoe.dist.MultiRank;
import dev.djlmoe.recipes.CliProcess;
import dev.djlmoe.recipes.checkpoint.CheckpointManifest;
import dev.djlmoe.recipes.checkpoint.TrainingCheckpoint;
import dev.djlmoe.recipes.metrics.MetricsFile;
import dev.djlmoe.recipes.metrics.StepRecord;
import java.io.IOException;
import java.nio.file.Files;
import java.nio.file.Path;
import java.nio.file.Paths;
import java.util.ArrayList;
import java.util.HashMap;
import java.util.List;
import java.util.Map;
import java.util.Set;
import java.util.stream.Stream;
import org.junit.jupiter.params.ParameterizedTest;
import org.junit.jupiter.params.provider.ValueSource;

/**
 * A rank killed with SIGKILL in the middle of a checkpoint save, end to end through {@code djl-moe
 * launch --nproc-per-node 2 pretrain}. The fault hook {@value FaultInjection#CHECKPOINT_KILL} makes
 * rank 1 tear its optimizer file and kill itself while the checkpoint of step {@link #KILL_STEP} is
 * being written. Then:
 *
 * <ul>
 *   <li>the launcher exits non-zero (the killed rank's 137) within a bound, and no rank outlives
 *       it;
 *   <li>no shared-memory segment, no temporary file (the JVMs' tmpdir) and no partial checkpoint
 *       directory is left; {@code latest} and the newest {@code step-*} are the previous
 *       checkpoint, which matches its manifest;
 *   <li>{@code --resume} of the checkpoint directory continues from that checkpoint and ends with
 *       the losses (every bit) and the final weight and optimizer files (every byte) of an
 *       uninterrupted run.
 * </ul>
 *
 * Before the resume, the test also plants what a killed rank 0 or a damaged disk would leave: a
 * {@code .partial} directory, and a newer {@code step-*} (named by {@code latest}) whose optimizer
 * file is torn. The resume must remove the first and skip the second, each with a log line, and
 * still continue from the last complete checkpoint.
 */
class CheckpointSaveFaultTest {

    private static final int STEPS = 6;
    private static final int EVERY = 2;
    private static final int KILL_STEP = 4;

    private record Run(int code, String out, long millis, Path tmp) {}

    private static List<String> pretrainArgs(Path runDir) {
        return List.of(
                "pretrain",
                "--steps",
                "" + STEPS,
                "--batch",
                "8",
                "--seq-len",
                "32",
                "--warmup",
                "2",
                "--checkpoint-every",
                "" + EVERY,
                "--keep-checkpoints",
                "0",
                "--log-every",
                "1",
                "--run-dir",
                runDir.toString());
    }

    private static Run launch(
            Path work, String name, List<String> rankArgs, Map<String, String> env)
            throws Exception {
        Path tmp = Files.createDirectories(work.resolve(name + "-tmpdir"));
        List<String> args =
                new ArrayList<>(List.of("launch", "--nproc-per-node", "2", "--rank-heap", "1g"));
        args.addAll(rankArgs);
        Map<String, String> jobEnv = new HashMap<>(CliProcess.tmpdirEnv(tmp));
        jobEnv.put("DJL_MOE_TIMEOUT_MS", "30000");
        jobEnv.putAll(env);
        CliProcess.Run r =
                CliProcess.run(work.resolve(name + ".log"), "256m", args, jobEnv, 240_000);
        return new Run(r.code(), r.out(), r.millis(), tmp);
    }

    private static List<String> names(Path dir) throws IOException {
        try (Stream<Path> s = Files.list(dir)) {
            return s.map(p -> p.getFileName().toString()).sorted().toList();
        }
    }

    private static List<String> files(Path dir) throws IOException {
        try (Stream<Path> s = Files.walk(dir)) {
            return s.filter(Files::isRegularFile).map(Path::toString).toList();
        }
    }

    /** The losses of every step, as bits, from a run's metrics file. */
    private static List<Long> lossBits(Path runDir) throws IOException {
        List<Long> out = new ArrayList<>();
        for (StepRecord r : MetricsFile.read(runDir.resolve("metrics.jsonl"))) {
            out.add(Double.doubleToLongBits(r.loss()));
        }
        return out;
    }

    /** Every safetensors file of two checkpoints has the same bytes. */
    private static void assertSameTensors(Path a, Path b) throws IOException {
        List<String> fa = names(a).stream().filter(n -> n.endsWith(".safetensors")).toList();
        assertFalse(fa.isEmpty(), "no safetensors in " + a);
        assertEquals(fa, names(b).stream().filter(n -> n.endsWith(".safetensors")).toList());
        for (String n : fa) {
            assertArrayEquals(
                    Files.readAllBytes(a.resolve(n)),
                    Files.readAllBytes(b.resolve(n)),
                    n + " differs between " + a + " and " + b);
        }
    }

    /** The uninterrupted run, shared by both victims. */
    private static Path fullDir;

    private static Run full;

    private static synchronized void uninterrupted(Path work) throws Exception {
        if (full == null) {
            fullDir = work.resolve("full");
            full = launch(work, "full", pretrainArgs(fullDir), Map.of());
            assertEquals(0, full.code(), full.out());
        }
    }

    @ParameterizedTest(name = "rank {0} killed")
    @ValueSource(ints = {1, 0})
    void aRankKilledDuringASaveLeavesThePreviousCheckpointAndResumeMatchesAnUninterruptedRun(
            int victim) throws Exception {
        Path work =
                Files.createTempDirectory(
                        Files.createDirectories(Paths.get("target", "checkpoint-fault")), "run-");
        Set<String> shmBefore = MultiRank.shmNames();
        uninterrupted(work);

        Path runDir = work.resolve("killed");
        Run killed =
                launch(
                        work,
                        "killed",
                        pretrainArgs(runDir),
                        Map.of(FaultInjection.CHECKPOINT_KILL, victim + ":" + KILL_STEP));
        String out = killed.out();
        assertNotEquals(0, killed.code(), out);
        assertEquals(137, killed.code(), "the killed rank's status (128 + SIGKILL)\n" + out);
        assertTrue(
                out.contains(
                        "[rank "
                                + victim
                                + "] fault injection: rank "
                                + victim
                                + " kills itself (SIGKILL) while saving the checkpoint of step "
                                + KILL_STEP),
                out);
        assertTrue(out.contains("[launch] rank " + victim + " exited with code 137"), out);
        assertFalse(out.contains("checkpoints/" + TrainingCheckpoint.dirName(KILL_STEP)), out);
        // Promptly: the uninterrupted run's time (start-up included) plus the store timeout is
        // a generous bound; a hang would run into the 240 s limit of launch().
        System.out.printf(
                "checkpoint fault: uninterrupted run %d ms, run with rank %d killed"
                        + " %d ms (exit %d)%n",
                full.millis(), victim, killed.millis(), killed.code());
        assertTrue(
                killed.millis() < full.millis() + 30_000,
                "killed run took " + killed.millis() + " ms, the full run " + full.millis());

        // Nothing left behind, and the previous checkpoint intact and current.
        assertEquals(List.of(), MultiRank.newShmNames(shmBefore), "segments left in /dev/shm");
        assertEquals(List.of(), files(killed.tmp()), "temporary files left");
        Path ckpts = runDir.resolve("checkpoints");
        Path previous = ckpts.resolve(TrainingCheckpoint.dirName(KILL_STEP - EVERY));
        assertEquals(
                List.of(TrainingCheckpoint.LATEST, TrainingCheckpoint.dirName(EVERY)),
                names(ckpts),
                "the checkpoint directory after the kill");
        assertEquals(
                TrainingCheckpoint.dirName(EVERY),
                Files.readString(ckpts.resolve(TrainingCheckpoint.LATEST)).strip());
        assertNull(CheckpointManifest.verify(previous, true));
        assertTensorsEqualAt(fullDir, runDir, KILL_STEP - EVERY);

        // Leftovers of a rank 0 killed mid-save, and a newer checkpoint damaged after its save.
        Path partial = ckpts.resolve("." + TrainingCheckpoint.dirName(KILL_STEP) + ".partial");
        Files.createDirectories(partial);
        Files.writeString(partial.resolve("model-00001-of-00002.safetensors"), "torn");
        Path damaged = ckpts.resolve(TrainingCheckpoint.dirName(KILL_STEP));
        Files.createDirectories(damaged);
        Path fullAtKill =
                fullDir.resolve("checkpoints").resolve(TrainingCheckpoint.dirName(KILL_STEP));
        for (String n : names(fullAtKill)) {
            Files.copy(fullAtKill.resolve(n), damaged.resolve(n));
        }
        String torn = TrainingCheckpoint.optimizerFile(1, 2);
        long size = Files.size(damaged.resolve(torn));
        try (var ch =
                java.nio.channels.FileChannel.open(
                        damaged.resolve(torn), java.nio.file.StandardOpenOption.WRITE)) {
            ch.truncate(size / 2);
        }
        Files.writeString(
                ckpts.resolve(TrainingCheckpoint.LATEST),
                TrainingCheckpoint.dirName(KILL_STEP) + "\n");

        // Resume the checkpoint directory in the same run directory: it continues from the
        // previous checkpoint and ends exactly where the uninterrupted run ended.
        Run resumed =
                launch(
                        work,
                        "resumed",
                        concat(pretrainArgs(runDir), List.of("--resume", ckpts.toString())),
                        Map.of());
        assertEquals(0, resumed.code(), resumed.out());
        assertTrue(
                resumed.out()
                        .contains(
                                "[rank 0] warning: removed "
                                        + partial
                                        + " (left by an interrupted checkpoint save)"),
                resumed.out());
        assertTrue(
                resumed.out()
                        .contains(
                                "[rank 0] warning: skipping "
                                        + damaged
                                        + ": not a complete checkpoint: "
                                        + torn
                                        + " has "
                                        + (size / 2)
                                        + " bytes, the manifest says "
                                        + size),
                resumed.out());
        assertFalse(Files.exists(partial), partial + " is still there");
        assertTrue(
                resumed.out()
                        .contains(
                                "resumed from "
                                        + previous
                                        + " at step "
                                        + (KILL_STEP - EVERY)
                                        + " of "
                                        + STEPS),
                resumed.out());
        assertEquals(lossBits(fullDir), lossBits(runDir), "losses of the resumed run");
        assertEquals(STEPS, lossBits(runDir).size());
        assertTensorsEqualAt(fullDir, runDir, STEPS);
        assertEquals(List.of(), MultiRank.newShmNames(shmBefore), "segments left in /dev/shm");
    }

    private static void assertTensorsEqualAt(Path a, Path b, int step) throws IOException {
        assertSameTensors(
                a.resolve("checkpoints").resolve(TrainingCheckpoint.dirName(step)),
                b.resolve("checkpoints").resolve(TrainingCheckpoint.dirName(step)));
    }

    private static List<String> concat(List<String> a, List<String> b) {
        List<String> out = new ArrayList<>(a);
        out.addAll(b);
        return out;
    }
}
