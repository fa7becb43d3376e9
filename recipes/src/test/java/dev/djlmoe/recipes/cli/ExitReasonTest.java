/*
 * djl-moe: expert-parallel Mixture-of-Experts for the Deep Java Library.
 */
package dev.djlmoe.recipes.cli;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertTrue;

import dev.djlmoe.recipes.Pretrain;
import java.io.PrintWriter;
import java.io.StringWriter;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.List;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.io.TempDir;
import picocli.CommandLine;

/**
 * Every non-zero exit says why: a training run whose loss did not fall exits 1 with the losses on
 * standard error; a run too short to judge exits 0; data that are not UTF-8 stop the run before it
 * starts, naming the file, and leave no tokenizer.json behind.
 */
class ExitReasonTest {

    private static Pretrain.Result result(List<Float> losses, float fin) {
        return new Pretrain.Result(
                losses,
                losses.isEmpty() ? Float.NaN : losses.get(0),
                fin,
                0,
                0,
                0,
                losses.size(),
                false,
                3.1,
                Double.NaN,
                null);
    }

    @Test
    void aLossThatDidNotFallIsSaid() {
        StringWriter err = new StringWriter();
        CommandLine cli = new CommandLine(new Main());
        cli.setErr(new PrintWriter(err, true));
        CommandLine.Model.CommandSpec spec = cli.getSubcommands().get("pretrain").getCommandSpec();
        assertEquals(0, PretrainCommand.exitCode(result(List.of(5.9f), 5.9f), spec));
        assertEquals(0, PretrainCommand.exitCode(result(List.of(5.9f, 5.8f), 5.8f), spec));
        assertEquals("", err.toString(), "nothing to say when the exit code is 0");
        assertEquals(1, PretrainCommand.exitCode(result(List.of(5.9f, 6.1f), 6.1f), spec));
        assertTrue(
                err.toString()
                        .startsWith(
                                "djl-moe pretrain: error: the loss did not fall"
                                        + " (5.9000 at the first step, 6.1000 at the end)"),
                err.toString());
    }

    @Test
    void latin1DataStopBeforeTrainingAndLeaveNothing(@TempDir Path tmp) throws Exception {
        Path f = tmp.resolve("latin1.txt");
        byte[] line =
                "caf\u00e9 au lait, na\u00efve r\u00e9sum\u00e9\n"
                        .getBytes(java.nio.charset.StandardCharsets.ISO_8859_1);
        byte[] all = new byte[line.length * 400];
        for (int i = 0; i < 400; i++) {
            System.arraycopy(line, 0, all, i * line.length, line.length);
        }
        Files.write(f, all);
        Path run = tmp.resolve("run");
        StringWriter out = new StringWriter();
        StringWriter err = new StringWriter();
        int code =
                Main.execute(
                        new PrintWriter(out, true),
                        new PrintWriter(err, true),
                        "pretrain",
                        "--data",
                        f.toString(),
                        "--steps",
                        "1",
                        "--run-dir",
                        run.toString());
        assertEquals(1, code, out + "\n" + err);
        assertTrue(
                err.toString().contains(f + ": not valid UTF-8 text at line 1 (byte offset 3"),
                err.toString());
        assertTrue(
                !Files.exists(run.resolve("tokenizer.json")), "a failed run left tokenizer.json");
    }
}
