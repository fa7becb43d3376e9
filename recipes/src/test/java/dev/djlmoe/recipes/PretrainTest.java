/*
 * djl-moe: expert-parallel Mixture-of-Experts for the Deep Java Library.
 */
package dev.djlmoe.recipes;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertThrows;
import static org.junit.jupiter.api.Assertions.assertTrue;

import dev.djlmoe.recipes.checkpoint.TrainingCheckpoint;
import dev.djlmoe.recipes.data.ByteTokenizer;
import dev.djlmoe.recipes.data.CorpusSource;
import dev.djlmoe.recipes.data.TextCorpus;
import dev.djlmoe.recipes.data.TokenBatch;
import dev.djlmoe.recipes.metrics.ExpertLoads;
import dev.djlmoe.recipes.metrics.HeldOutRecord;
import dev.djlmoe.recipes.metrics.MetricsFile;
import dev.djlmoe.recipes.metrics.StepRecord;
import dev.djlmoe.zoo.hf.HfMoeConfig;
import java.io.ByteArrayOutputStream;
import java.io.PrintStream;
import java.nio.charset.StandardCharsets;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.List;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.io.TempDir;

/**
 * The embedded default in reduced form: the {@code tiny} DeepSeek-V3 preset learns the shipped
 * public-domain corpus (byte-level tokens) well below the unigram baseline, on training and
 * held-out text, and writes its metrics, plots and final checkpoint.
 */
class PretrainTest {

    static final int STEPS = 100;

    @Test
    void embeddedCorpusIsLargePublicDomainAscii() {
        TextCorpus c = TextCorpus.embedded();
        assertTrue(c.bytes().length > 200_000, "corpus of " + c.bytes().length + " bytes");
        CorpusSource src = new CorpusSource(c, 0.05, 42);
        // English bytes: the unigram entropy is near 3 nats, far below log(256) = 5.55.
        assertTrue(
                src.unigramEntropy() > 2.8 && src.unigramEntropy() < 3.4,
                "unigram " + src.unigramEntropy());
        // A step's batch depends only on the step, and its windows are next-byte pairs.
        TokenBatch a = src.batch(7, 4, 16);
        TokenBatch b = src.batch(7, 4, 16);
        assertTrue(java.util.Arrays.equals(a.inputs(), b.inputs()));
        for (int i = 0; i < 15; i++) {
            assertEquals(a.labels()[i], a.inputs()[i + 1]);
        }
        assertTrue(!java.util.Arrays.equals(a.inputs(), src.batch(8, 4, 16).inputs()));
        assertEquals(
                "Hello, Wonderland!",
                ByteTokenizer.decode(ByteTokenizer.encode("Hello, Wonderland!")));
    }

    @Test
    void embeddedDefaultLearnsWellBelowTheUnigramBaseline(@TempDir Path runDir) throws Exception {
        CorpusSource src = new CorpusSource(TextCorpus.embedded(), 0.05, 42);
        PretrainOptions opts =
                PretrainOptions.defaults()
                        .withSteps(STEPS)
                        .withRunDir(runDir)
                        .withLogEvery(50)
                        .withPrecision(TrainingPrecision.BF16_WIRE);
        ByteArrayOutputStream buf = new ByteArrayOutputStream();
        Pretrain.Result r =
                Pretrain.run(
                        Pretrain.Job.pretrain(HfMoeConfig.preset("tiny"), src, opts),
                        new PrintStream(buf, true, StandardCharsets.UTF_8),
                        StopSignal.none(),
                        null);
        String log = buf.toString(StandardCharsets.UTF_8);
        assertEquals(STEPS, r.losses().size());
        double unigram = src.unigramEntropy();
        // Starts near log(256) = 5.55 and ends well below what byte frequencies alone allow.
        assertTrue(r.firstLoss() > 5.0f, "first loss " + r.firstLoss());
        assertTrue(
                r.finalLoss() < unigram - 0.5,
                "final loss "
                        + r.finalLoss()
                        + " not 0.5 nat below the unigram baseline "
                        + unigram
                        + "\n"
                        + log);
        assertTrue(
                r.heldOutLoss() < src.heldOut().unigramEntropy() - 0.4,
                "held-out loss " + r.heldOutLoss() + "\n" + log);
        assertTrue(log.contains("unigram baseline"), log);
        assertTrue(log.contains("held-out loss"), log);
        assertTrue(log.contains("step " + STEPS + "/" + STEPS), log);
        List<StepRecord> recs = MetricsFile.read(runDir.resolve("metrics.jsonl"));
        assertEquals(STEPS, recs.size());
        assertEquals(r.losses().get(STEPS - 1), (float) recs.get(STEPS - 1).loss(), 0f);
        assertEquals(8, recs.get(0).expertLoad().length);
        long sel = 0;
        for (long c : recs.get(0).expertLoad()) {
            sel += c;
        }
        assertEquals((long) opts.batch() * opts.seqLen() * 2, sel, "every token picks top-2");
        // Every MoE layer's loads with the model's layer numbers, the baseline, the held-out point.
        HfMoeConfig tiny = HfMoeConfig.preset("tiny");
        ExpertLoads last = recs.get(STEPS - 1).layerLoads();
        assertEquals(1, last.epSize());
        assertEquals(tiny.firstKDenseReplace(), last.layers()[0]);
        assertEquals(tiny.numLayers() - tiny.firstKDenseReplace(), last.loads().length);
        for (long[] row : last.loads()) {
            assertEquals(
                    (long) opts.batch() * opts.seqLen() * 2,
                    java.util.Arrays.stream(row).sum(),
                    "selections of a layer");
        }
        assertEquals(unigram, recs.get(STEPS - 1).unigramBaseline(), 1e-12);
        List<HeldOutRecord> held = MetricsFile.readRun(runDir.resolve("metrics.jsonl")).heldOut();
        assertEquals(1, held.size());
        assertEquals(STEPS, held.get(0).step());
        assertEquals(r.heldOutLoss(), held.get(0).loss(), 1e-12);
        for (String png : new String[] {"loss.png", "expert-load.png"}) {
            byte[] head = Files.readAllBytes(runDir.resolve(png));
            assertTrue(
                    head.length > 1000 && head[1] == 'P' && head[2] == 'N' && head[3] == 'G',
                    png + " is a PNG");
        }
        // The checkpoint at exit: a Hugging Face checkpoint plus the training state.
        Path ck = TrainingCheckpoint.resolve(runDir.resolve("checkpoints"));
        assertEquals(TrainingCheckpoint.dirName(STEPS), ck.getFileName().toString());
        assertEquals(ck, r.checkpoint());
        for (String f :
                new String[] {
                    "config.json",
                    "model.safetensors",
                    "optimizer-00001-of-00001.safetensors",
                    "trainer_state.json"
                }) {
            assertTrue(Files.isRegularFile(ck.resolve(f)), f);
        }
        TrainingCheckpoint.State st = TrainingCheckpoint.readState(ck);
        assertEquals(STEPS, st.step());
        assertEquals(src.fingerprint(), st.data().get("fingerprint"));
        assertEquals((long) STEPS, st.data().get("next_step"));
    }

    @Test
    void badSettingsAreRefusedByName() {
        IllegalArgumentException e =
                assertThrows(
                        IllegalArgumentException.class,
                        () ->
                                new PretrainOptions(
                                                0,
                                                1,
                                                8,
                                                1e-3f,
                                                0,
                                                0f,
                                                0f,
                                                TrainingPrecision.FP32,
                                                1,
                                                true,
                                                1,
                                                null)
                                        .validate());
        assertTrue(e.getMessage().contains("--steps"), e.getMessage());
        e =
                assertThrows(
                        IllegalArgumentException.class,
                        () ->
                                new PretrainOptions(
                                                1,
                                                1,
                                                1,
                                                1e-3f,
                                                0,
                                                0f,
                                                0f,
                                                TrainingPrecision.FP32,
                                                1,
                                                true,
                                                1,
                                                null)
                                        .validate());
        assertTrue(e.getMessage().contains("--seq-len"), e.getMessage());
        e =
                assertThrows(
                        IllegalArgumentException.class,
                        () -> PretrainOptions.defaults().withCheckpoints(-7, null, 0).validate());
        assertTrue(e.getMessage().contains("--checkpoint-every -7"), e.getMessage());
        e = assertThrows(IllegalArgumentException.class, () -> TrainingPrecision.parse("fp4"));
        assertTrue(
                e.getMessage().contains("fp4") && e.getMessage().contains("--precision"),
                e.getMessage());
        assertEquals(300, PretrainOptions.defaults().steps());
    }
}
