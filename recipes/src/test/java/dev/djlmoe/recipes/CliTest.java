/*
 * djl-moe: expert-parallel Mixture-of-Experts for the Deep Java Library.
 */
package dev.djlmoe.recipes;

import static dev.djlmoe.recipes.CliCall.assertRefused;
import static dev.djlmoe.recipes.CliCall.cli;
import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertThrows;
import static org.junit.jupiter.api.Assertions.assertTrue;

import dev.djlmoe.dist.RankEnvironment;
import dev.djlmoe.recipes.CliCall.Run;
import dev.djlmoe.recipes.data.ByteTokenizer;
import dev.djlmoe.recipes.data.CorpusSource;
import dev.djlmoe.recipes.data.TextCorpus;
import dev.djlmoe.zoo.hf.HfMoeConfig;
import java.io.OutputStream;
import java.io.PrintStream;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.ArrayList;
import java.util.List;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.io.TempDir;

/**
 * The command line: {@code --help} on every command, and one test per kind of user error (bad flag,
 * bad value, missing file, a dataset too small for one batch, experts that do not divide over the
 * ranks), each giving a message that names the problem and a non-zero exit code.
 */
class CliTest {

    @Test
    void everyCommandHasHelp() {
        List<List<String>> all = CliCall.commandPaths();
        List<String> names = new ArrayList<>();
        for (List<String> path : all) {
            List<String> args = new ArrayList<>(path);
            args.add("--help");
            Run r = cli(args.toArray(String[]::new));
            assertEquals(0, r.code(), path + ": " + r.err());
            assertTrue(r.out().contains("Usage: djl-moe"), path + ": " + r.out());
            assertTrue(r.out().contains("-h, --help"), path + ": " + r.out());
            names.add(String.join(" ", path));
        }
        for (String c :
                new String[] {
                    "pretrain",
                    "finetune",
                    "plan",
                    "bench",
                    "bench layer",
                    "bench ep",
                    "launch",
                    "plot",
                    "study"
                }) {
            assertTrue(names.contains(c), "no command '" + c + "' in " + names);
        }
        Run pre = cli("pretrain", "--help");
        for (String flag :
                new String[] {
                    "--checkpoint-every", "--resume", "--ep", "--data", "--model", "--precision"
                }) {
            assertTrue(pre.out().contains(flag), flag + " in\n" + pre.out());
        }
        assertTrue(pre.out().contains("(default 300)"), pre.out());
        assertTrue(cli("finetune", "--help").out().contains("(default 1.0E-4)"));
    }

    @Test
    void unknownFlagIsRefusedWithASuggestion() {
        Run r = cli("pretrain", "--stepz", "5");
        assertEquals(2, r.code());
        assertTrue(r.err().contains("Unknown options: '--stepz'"), r.err());
        assertTrue(r.err().contains("Possible solutions: --steps"), r.err());
        assertTrue(r.err().contains("--steps"), "suggests --steps: " + r.err());
        assertTrue(r.err().contains("Try 'djl-moe pretrain --help'"), r.err());
    }

    @Test
    void badValuesAreRefusedByName() {
        Run r = cli("pretrain", "--steps", "many");
        assertEquals(2, r.code());
        assertTrue(r.err().contains("'--steps'") && r.err().contains("many"), r.err());
        assertRefused("--precision 'fp4' is not one of", "pretrain", "--precision", "fp4");
        assertRefused("--batch 0 must be >= 1", "pretrain", "--batch", "0");
        r = assertRefused("--model deepseek-v4", "pretrain", "--model", "deepseek-v4");
        assertTrue(r.err().contains("preset"), r.err());
        r = cli("finetune", "--data", "x.jsonl");
        assertEquals(2, r.code());
        assertTrue(r.err().contains("Missing required option: '--model=DIR'"), r.err());
    }

    @Test
    void missingFilesAreNamed(@TempDir Path tmp) {
        Path nowhere = tmp.resolve("nowhere");
        Path text = nowhere.resolve("text.txt");
        assertRefused(
                "--data " + text + ": no such file or directory",
                "pretrain",
                "--data",
                text.toString());
        assertRefused(
                "--resume " + nowhere + ": no such directory",
                "pretrain",
                "--resume",
                nowhere.toString(),
                "--run-dir",
                tmp.toString());
        assertRefused(
                "--model " + nowhere + ": no such directory",
                "finetune",
                "--model",
                nowhere.toString(),
                "--data",
                "d.jsonl");
        assertRefused("does not exist", "plot", nowhere.resolve("metrics.jsonl").toString());
    }

    @Test
    void datasetTooSmallForOneBatch(@TempDir Path tmp) throws Exception {
        Path text = tmp.resolve("short.txt");
        Files.writeString(
                text, "It was the best of times, it was the worst of times.\n".repeat(10));
        Run r =
                assertRefused(
                        "too small for one batch",
                        "pretrain",
                        "--data",
                        text.toString(),
                        "--run-dir",
                        tmp.toString());
        assertTrue(r.err().contains("16 sequences x 64 tokens"), r.err());

        // Fine-tuning: 3 examples cannot fill a batch of 8 sequences.
        Path model = tmp.resolve("model");
        Files.createDirectories(model);
        Files.writeString(model.resolve("config.json"), HfMoeConfig.preset("tiny").toJson());
        Files.writeString(model.resolve("tokenizer.json"), ByteTokenizer.huggingFaceJson());
        Path data = tmp.resolve("three.jsonl");
        Files.writeString(
                data,
                "{\"prompt\": \"1+1=\", \"response\": \"2\"}\n"
                        + "{\"prompt\": \"2+2=\", \"response\": \"4\"}\n{\"text\": \"three\"}\n");
        r =
                cli(
                        "finetune",
                        "--model",
                        model.toString(),
                        "--data",
                        data.toString(),
                        "--batch",
                        "8",
                        "--run-dir",
                        tmp.resolve("ft").toString());
        assertEquals(1, r.code());
        assertTrue(
                r.err().contains("too small for one batch") && r.err().contains("gives 3"),
                r.err());
        // A malformed line is named by file and line.
        Files.writeString(data, "{\"prompt\": \"1+1=\", \"response\": \"2\"}\n{\"question\": 1}\n");
        assertRefused(
                data + " line 2",
                "finetune",
                "--model",
                model.toString(),
                "--data",
                data.toString());
    }

    @Test
    void expertsMustDivideOverTheRanks() {
        assertRefused(
                "8 routed experts are not divisible by the EP size 3",
                "plan",
                "--model",
                "tiny",
                "--ep",
                "3");
        // The training loop checks before any rank joins a process group: W = 3, rank 0.
        Pretrain.Job job =
                Pretrain.Job.pretrain(
                        HfMoeConfig.preset("tiny"),
                        new CorpusSource(TextCorpus.embedded(), 0.05, 1),
                        PretrainOptions.defaults().withBatch(12, 64).withRunDir(null));
        IllegalArgumentException e =
                assertThrows(
                        IllegalArgumentException.class,
                        () ->
                                Pretrain.run(
                                        job,
                                        new PrintStream(OutputStream.nullOutputStream()),
                                        StopSignal.none(),
                                        null,
                                        new RankEnvironment(0, 3, 0, 3, "127.0.0.1", 1, "")));
        assertTrue(
                e.getMessage().contains("8 routed experts are not divisible by the EP size 3"),
                e.getMessage());
        e = assertThrows(IllegalArgumentException.class, () -> Pretrain.checkJob(job, 8 * 5));
        assertTrue(e.getMessage().contains("EP size 40"), e.getMessage());
        Pretrain.Job odd =
                Pretrain.Job.pretrain(
                        HfMoeConfig.preset("tiny"),
                        new CorpusSource(TextCorpus.embedded(), 0.05, 1),
                        PretrainOptions.defaults().withBatch(5, 64));
        e = assertThrows(IllegalArgumentException.class, () -> Pretrain.checkJob(odd, 2));
        assertTrue(
                e.getMessage().contains("--batch 5 is not divisible by the EP size 2"),
                e.getMessage());
        e =
                assertThrows(
                        IllegalArgumentException.class,
                        () ->
                                Pretrain.Job.pretrain(
                                        null,
                                        new CorpusSource(TextCorpus.embedded(), 0.05, 1),
                                        PretrainOptions.defaults()));
        assertTrue(e.getMessage().contains("config=null"), e.getMessage());
    }
}
