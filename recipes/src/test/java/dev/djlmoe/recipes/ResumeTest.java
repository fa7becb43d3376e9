/*
 * djl-moe: expert-parallel Mixture-of-Experts for the Deep Java Library.
 */
package dev.djlmoe.recipes;

import static org.junit.jupiter.api.Assertions.assertArrayEquals;
import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertFalse;
import static org.junit.jupiter.api.Assertions.assertNotEquals;
import static org.junit.jupiter.api.Assertions.assertThrows;
import static org.junit.jupiter.api.Assertions.assertTrue;

import dev.djlmoe.dist.MultiRank;
import dev.djlmoe.recipes.checkpoint.CheckpointManifest;
import dev.djlmoe.recipes.checkpoint.TrainingCheckpoint;
import dev.djlmoe.recipes.data.CorpusSource;
import dev.djlmoe.recipes.data.TextCorpus;
import dev.djlmoe.recipes.data.TokenSource;
import dev.djlmoe.recipes.metrics.HeldOutRecord;
import dev.djlmoe.recipes.metrics.MetricsFile;
import dev.djlmoe.recipes.metrics.StepRecord;
import dev.djlmoe.testing.TestDevice;
import dev.djlmoe.train.EpTrainer;
import dev.djlmoe.train.StepResult;
import dev.djlmoe.zoo.hf.HfMoeConfig;
import java.io.IOException;
import java.io.OutputStream;
import java.io.PrintStream;
import java.nio.file.Files;
import java.nio.file.Path;
import java.time.Duration;
import java.util.ArrayList;
import java.util.List;
import java.util.stream.Stream;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.io.TempDir;

/**
 * {@code --resume} continues bit-identically: a run interrupted after {@link #STOP} of {@link
 * #STEPS} steps and resumed from its checkpoint gives the uninterrupted run's losses (every bit)
 * and, at the end, byte-identical model and optimizer files — at W = 1 (in this JVM, the stop
 * raised as Ctrl-C would) and at W = 2 (spawned ranks through the command line).
 *
 * <p>Runs on {@link TestDevice}'s device: with {@code -Ddjlmoe.test.device=gpu} the checkpoints are
 * saved from GPU arrays, loaded back onto the GPU (the resumed model's parameters are checked to
 * live there) and the resumed run must still repeat the uninterrupted one bit for bit on that GPU.
 */
class ResumeTest {

    static final int STEPS = 6;
    static final int STOP = 3;

    private static PretrainOptions options(Path runDir) {
        return PretrainOptions.defaults()
                .withSteps(STEPS)
                .withBatch(8, 32)
                .withLearningRate(3e-3f, 2)
                .withRunDir(runDir)
                .withLogEvery(100)
                .withCheckpoints(STOP, null, 0)
                .withDevice(TestDevice.flag());
    }

    private static TokenSource data() {
        return new CorpusSource(TextCorpus.embedded(), 0.05, 42);
    }

    private static Pretrain.Result run(
            PretrainOptions o, StopSignal stop, Pretrain.StepObserver obs) {
        return Pretrain.run(
                Pretrain.Job.pretrain(HfMoeConfig.preset("tiny"), data(), o),
                new PrintStream(OutputStream.nullOutputStream()),
                stop,
                obs);
    }

    @Test
    void resumedRunEqualsUninterruptedOneAtW1(@TempDir Path tmp) throws IOException {
        Pretrain.Result full = run(options(tmp.resolve("full")), StopSignal.none(), null);
        assertEquals(STEPS, full.losses().size());

        // Interrupted: a stop request (what Ctrl-C raises) after step STOP; the run saves a
        // checkpoint at that step and returns.
        StopSignal stop = StopSignal.none();
        Pretrain.StepObserver obs =
                new Pretrain.StepObserver() {
                    @Override
                    public void stepDone(int step, EpTrainer t, StepResult r) {
                        if (step + 1 == STOP) {
                            stop.request();
                        }
                    }
                };
        PretrainOptions part = options(tmp.resolve("part")).withCheckpoints(0, null, 0);
        Pretrain.Result first = run(part, stop, obs);
        assertTrue(first.stopped());
        assertEquals(STOP, first.endStep());
        Path ckpts = tmp.resolve("part").resolve("checkpoints");
        assertEquals(
                TrainingCheckpoint.dirName(STOP),
                TrainingCheckpoint.resolve(ckpts).getFileName().toString());

        List<String> misplaced = new ArrayList<>();
        List<Integer> checked = new ArrayList<>();
        Pretrain.StepObserver where =
                new Pretrain.StepObserver() {
                    @Override
                    public void stepDone(int step, EpTrainer t, StepResult r) {
                        if (checked.isEmpty()) { // the first step after loading the checkpoint
                            checked.add(step);
                            t.trainer()
                                    .getModel()
                                    .getBlock()
                                    .getParameters()
                                    .forEach(
                                            p -> {
                                                if (!p.getValue()
                                                        .getArray()
                                                        .getDevice()
                                                        .equals(TestDevice.device())) {
                                                    misplaced.add(
                                                            p.getKey()
                                                                    + " on "
                                                                    + p.getValue()
                                                                            .getArray()
                                                                            .getDevice());
                                                }
                                            });
                        }
                    }
                };
        Pretrain.Result rest = run(part.withResume(ckpts), StopSignal.none(), where);
        assertEquals(List.of(STOP), checked, "steps whose parameters' device was checked");
        assertEquals(List.of(), misplaced, "parameters not loaded onto " + TestDevice.device());
        assertEquals(STOP, rest.startStep());
        assertEquals(STEPS, rest.endStep());

        List<Float> resumed = new ArrayList<>(first.losses());
        resumed.addAll(rest.losses());
        assertBitwiseEqual(full.losses(), resumed);
        assertSameFiles(
                tmp.resolve("full/checkpoints").resolve(TrainingCheckpoint.dirName(STEPS)),
                ckpts.resolve(TrainingCheckpoint.dirName(STEPS)));
        // The resumed run's metrics file holds every step once, with the same losses.
        List<StepRecord> a = MetricsFile.read(tmp.resolve("full/metrics.jsonl"));
        List<StepRecord> b = MetricsFile.read(tmp.resolve("part/metrics.jsonl"));
        assertEquals(STEPS, b.size());
        for (int i = 0; i < STEPS; i++) {
            assertEquals(a.get(i).loss(), b.get(i).loss(), 0.0, "metrics step " + (i + 1));
        }
        // One held-out point at the end (the stopped first part measured none), as in the full run.
        List<HeldOutRecord> heldFull =
                MetricsFile.readRun(tmp.resolve("full/metrics.jsonl")).heldOut();
        assertEquals(1, heldFull.size());
        assertEquals(STEPS, heldFull.get(0).step());
        assertEquals(heldFull, MetricsFile.readRun(tmp.resolve("part/metrics.jsonl")).heldOut());

        // The comparison can fail: a resume with other settings is refused, and a checkpoint
        // whose data position is off by one step does not reproduce the losses.
        IllegalArgumentException e =
                assertThrows(
                        IllegalArgumentException.class,
                        () ->
                                run(
                                        part.withLearningRate(1e-3f, 2).withResume(ckpts),
                                        StopSignal.none(),
                                        null));
        assertTrue(e.getMessage().contains("--lr"), e.getMessage());
        Path early = tmp.resolve("full/checkpoints").resolve(TrainingCheckpoint.dirName(STOP));
        Path off = tmp.resolve("off");
        Files.createDirectories(off);
        try (Stream<Path> s = Files.list(early)) {
            for (Path f : s.toList()) {
                Files.copy(f, off.resolve(f.getFileName().toString()));
            }
        }
        Path state = off.resolve(TrainingCheckpoint.STATE_FILE);
        String json = Files.readString(state);
        assertTrue(json.contains("\"step\": " + STOP), json);
        Files.writeString(state, json.replace("\"step\": " + STOP, "\"step\": " + (STOP - 1)));
        // A complete checkpoint whose step is off: its manifest must match the edited file (an
        // edit without it is refused as damaged, see CheckpointSaveFaultTest).
        CheckpointManifest.write(off, STOP - 1);
        Pretrain.Result shifted =
                run(options(tmp.resolve("shifted")).withResume(off), StopSignal.none(), null);
        assertEquals(STEPS - STOP + 1, shifted.losses().size());
        assertNotEquals(
                full.losses().subList(STOP - 1, STEPS),
                shifted.losses(),
                "a resume at the wrong data position must show in the losses");
    }

    @Test
    void resumedRunEqualsUninterruptedOneAtW2() throws IOException {
        MultiRank.Result full =
                MultiRank.builder(CliRank.class, 2)
                        .args(
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
                                "" + STOP,
                                "--keep-checkpoints",
                                "0",
                                "--log-every",
                                "1",
                                "--run-dir",
                                "@OUT/full",
                                "--device",
                                TestDevice.flag())
                        .timeout(Duration.ofMinutes(3))
                        .name("resume-full")
                        .run();
        full.assertAllSucceeded();
        Path out = full.file("full");
        Path early = out.resolve("checkpoints").resolve(TrainingCheckpoint.dirName(STOP));
        // Sharded per rank, Hugging Face index, optimizer shards.
        for (String f :
                new String[] {
                    "model-00001-of-00002.safetensors",
                    "model-00002-of-00002.safetensors",
                    "model.safetensors.index.json",
                    "optimizer-00001-of-00002.safetensors",
                    "optimizer-00002-of-00002.safetensors",
                    "trainer_state.json",
                    "config.json",
                    "tokenizer.json"
                }) {
            assertTrue(Files.isRegularFile(early.resolve(f)), f);
        }
        assertEquals(2, TrainingCheckpoint.readState(early).worldSize());

        MultiRank.Result resumed =
                MultiRank.builder(CliRank.class, 2)
                        .args(
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
                                "" + STOP,
                                "--keep-checkpoints",
                                "0",
                                "--log-every",
                                "1",
                                "--run-dir",
                                "@OUT/resumed",
                                "--resume",
                                early.toString(),
                                "--device",
                                TestDevice.flag())
                        .timeout(Duration.ofMinutes(3))
                        .name("resume-rest")
                        .run();
        resumed.assertAllSucceeded();
        assertTrue(resumed.output(0).contains("resumed from"), resumed.output(0));
        Path out2 = resumed.file("resumed");
        List<StepRecord> a = MetricsFile.read(out.resolve("metrics.jsonl"));
        List<StepRecord> b = MetricsFile.read(out2.resolve("metrics.jsonl"));
        assertEquals(STEPS, a.size());
        assertEquals(STEPS - STOP, b.size());
        for (int i = 0; i < STEPS - STOP; i++) {
            assertEquals(a.get(STOP + i).step(), b.get(i).step());
            assertEquals(
                    Double.doubleToLongBits(a.get(STOP + i).loss()),
                    Double.doubleToLongBits(b.get(i).loss()),
                    "loss of step " + b.get(i).step());
        }
        assertSameFiles(
                out.resolve("checkpoints").resolve(TrainingCheckpoint.dirName(STEPS)),
                out2.resolve("checkpoints").resolve(TrainingCheckpoint.dirName(STEPS)));
    }

    private static void assertBitwiseEqual(List<Float> a, List<Float> b) {
        assertEquals(a.size(), b.size(), "steps");
        for (int i = 0; i < a.size(); i++) {
            assertEquals(
                    Float.floatToIntBits(a.get(i)),
                    Float.floatToIntBits(b.get(i)),
                    "loss of step " + (i + 1) + ": " + a.get(i) + " vs " + b.get(i));
        }
    }

    /** Every weight and optimizer file of two checkpoints has the same bytes. */
    static void assertSameFiles(Path a, Path b) throws IOException {
        List<Path> files;
        try (Stream<Path> s = Files.list(a)) {
            files =
                    s.filter(p -> p.getFileName().toString().endsWith(".safetensors"))
                            .sorted()
                            .toList();
        }
        assertFalse(files.isEmpty(), "no safetensors in " + a);
        for (Path f : files) {
            Path g = b.resolve(f.getFileName().toString());
            assertTrue(Files.isRegularFile(g), g + " missing");
            assertArrayEquals(
                    Files.readAllBytes(f),
                    Files.readAllBytes(g),
                    f.getFileName() + " differs between " + a + " and " + b);
        }
    }
}
