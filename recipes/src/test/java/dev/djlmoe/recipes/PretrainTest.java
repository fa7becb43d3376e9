/*
 * djl-moe: expert-parallel Mixture-of-Experts for the Deep Java Library.
 */
package dev.djlmoe.recipes;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertThrows;
import static org.junit.jupiter.api.Assertions.assertTrue;

import dev.djlmoe.recipes.data.SyntheticBigramSource;
import dev.djlmoe.recipes.metrics.MetricsFile;
import dev.djlmoe.recipes.metrics.StepRecord;
import dev.djlmoe.zoo.model.MoeModelConfig;
import java.io.ByteArrayOutputStream;
import java.io.PrintStream;
import java.nio.charset.StandardCharsets;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.List;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.io.TempDir;

/** The embedded default in reduced form: the tiny model learns the synthetic text. */
class PretrainTest {

    @Test
    void embeddedDefaultLearnsBelowTheUnigramBaseline(@TempDir Path runDir) throws Exception {
        SyntheticBigramSource src = new SyntheticBigramSource(256, 4, 42);
        PretrainOptions d = PretrainOptions.defaults();
        PretrainOptions opts =
                new PretrainOptions(120, d.batch(), d.seqLen(), d.learningRate(), d.warmupSteps(),
                        d.maxGradNorm(), d.biasUpdateRate(), TrainingPrecision.BF16_WIRE, d.seed(), true, 40,
                        runDir);
        ByteArrayOutputStream buf = new ByteArrayOutputStream();
        Pretrain.Result r =
                Pretrain.run(MoeModelConfig.tiny(), src, opts,
                        new PrintStream(buf, true, StandardCharsets.UTF_8));
        String log = buf.toString(StandardCharsets.UTF_8);
        assertEquals(120, r.losses().size());
        double unigram = src.unigramEntropy();
        // Starts near log(V) = 5.55 and ends well below what token frequencies alone allow.
        assertTrue(r.firstLoss() > 5.0f, "first loss " + r.firstLoss());
        assertTrue(r.finalLoss() < unigram - 1.0,
                "final loss " + r.finalLoss() + " not 1 nat below the unigram baseline " + unigram
                        + "\n" + log);
        assertTrue(log.contains("step 120/120"), log);
        assertTrue(r.tokensPerSecond() > 0);
        List<StepRecord> recs = MetricsFile.read(runDir.resolve("metrics.jsonl"));
        assertEquals(120, recs.size());
        assertEquals(r.losses().get(119), (float) recs.get(119).loss(), 1e-6f);
        assertEquals(8, recs.get(0).expertLoad().length);
        long sel = 0;
        for (long c : recs.get(0).expertLoad()) {
            sel += c;
        }
        assertEquals((long) d.batch() * d.seqLen() * 2, sel, "every token picks top-2 experts");
        for (String png : new String[] {"loss.png", "expert-load.png"}) {
            byte[] head = Files.readAllBytes(runDir.resolve(png));
            assertTrue(head.length > 1000 && head[1] == 'P' && head[2] == 'N' && head[3] == 'G',
                    png + " is a PNG");
        }
    }

    @Test
    void badSettingsAreRefusedByName() {
        PretrainOptions d = PretrainOptions.defaults();
        IllegalArgumentException e =
                assertThrows(IllegalArgumentException.class,
                        () -> new PretrainOptions(0, 1, 8, 1e-3f, 0, 0f, 0f, TrainingPrecision.FP32, 1,
                                true, 1, null).validate());
        assertTrue(e.getMessage().contains("--steps"), e.getMessage());
        e = assertThrows(IllegalArgumentException.class,
                () -> new PretrainOptions(1, 1, 1, 1e-3f, 0, 0f, 0f, TrainingPrecision.FP32, 1, true, 1,
                        null).validate());
        assertTrue(e.getMessage().contains("--seq-len"), e.getMessage());
        e = assertThrows(IllegalArgumentException.class, () -> TrainingPrecision.parse("fp4"));
        assertTrue(e.getMessage().contains("fp4") && e.getMessage().contains("--precision"),
                e.getMessage());
        assertEquals(300, d.steps());
    }
}
