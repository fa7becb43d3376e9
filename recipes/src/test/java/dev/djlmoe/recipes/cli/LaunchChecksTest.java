/*
 * djl-moe: expert-parallel Mixture-of-Experts for the Deep Java Library.
 */
package dev.djlmoe.recipes.cli;

import static dev.djlmoe.recipes.CliCall.cli;
import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertFalse;
import static org.junit.jupiter.api.Assertions.assertTrue;

import dev.djlmoe.recipes.CliCall.Run;
import java.nio.file.Files;
import java.nio.file.Path;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.io.TempDir;

/**
 * An EP size that cannot work is refused by the launcher, once, before any rank starts ({@code --ep
 * N} and {@code launch}), with the sizes that would work; {@code decode --model} with a path that
 * does not exist says so.
 */
class LaunchChecksTest {

    private static void refusedBeforeAnyRank(Run r, String message) {
        assertEquals(1, r.code(), r.out() + r.err());
        assertEquals(1, r.count(message), "once, in the launcher: " + r.out() + r.err());
        assertFalse((r.out() + r.err()).contains("[rank"), "a rank started: " + r.out() + r.err());
    }

    @Test
    void pretrainFinetuneAndLaunchRefuseExpertsThatDoNotDivide(@TempDir Path tmp) throws Exception {
        String experts =
                "the model's 8 routed experts are not divisible by the EP size 3 (each rank holds E"
                        + " / W experts): use an EP size that divides 8 (1, 2, 4 or 8)";
        refusedBeforeAnyRank(cli("pretrain", "--ep", "3"), experts);
        refusedBeforeAnyRank(cli("launch", "--nproc-per-node", "3", "pretrain"), experts);
        refusedBeforeAnyRank(cli("launch", "--nproc-per-node", "3", "decode"), experts);
        refusedBeforeAnyRank(
                cli("pretrain", "--ep", "2", "--batch", "5"),
                "--batch 5 is not divisible by the EP size 2");
        Path model = tmp.resolve("model");
        Files.createDirectories(model);
        Files.writeString(
                model.resolve("config.json"),
                dev.djlmoe.zoo.hf.HfMoeConfig.preset("tiny").toJson());
        refusedBeforeAnyRank(
                cli(
                        "finetune",
                        "--model",
                        model.toString(),
                        "--data",
                        "x.jsonl",
                        "--ep",
                        "3",
                        "--batch",
                        "6"),
                experts);
        // The ranks' command line is parsed once too.
        refusedBeforeAnyRank(
                cli("launch", "--nproc-per-node", "2", "pretrain", "--stepz", "3"),
                "does not parse: Unknown options: '--stepz'");
    }

    @Test
    void decodeAndBenchNameTheirOwnLimits() {
        refusedBeforeAnyRank(
                cli("decode", "--ep", "3"),
                "the model's 8 routed experts are not divisible by the EP size 3");
        refusedBeforeAnyRank(
                cli("decode", "--ep", "2", "--prompt", "only one"),
                "1 prompt(s) for 2 EP ranks: every rank decodes at least one; pass at least 2"
                        + " --prompt");
        Run r = cli("bench", "--ep", "3", "--quick");
        refusedBeforeAnyRank(
                r,
                "the EP benchmark's 16 experts (--quick) are not divisible by the" + " EP size 3");
        assertFalse(r.err().contains("--experts"), "bench has no --experts: " + r.err());
    }

    @Test
    void decodeNamesAMissingModelDirectory() {
        Run r = cli("decode", "--model", "/nonexistent/dir");
        assertEquals(1, r.code());
        assertTrue(r.err().contains("--model /nonexistent/dir: no such directory"), r.err());
        assertFalse(r.err().contains("unknown preset"), r.err());
        r = cli("decode", "--model", "tiny-mistral");
        assertEquals(1, r.code());
        assertTrue(
                r.err()
                        .contains(
                                "--model tiny-mistral: not a checkpoint directory, a run"
                                        + " directory or a preset"),
                r.err());
    }
}
