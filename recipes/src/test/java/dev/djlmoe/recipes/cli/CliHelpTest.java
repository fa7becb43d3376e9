/*
 * djl-moe: expert-parallel Mixture-of-Experts for the Deep Java Library.
 */
package dev.djlmoe.recipes.cli;

import static dev.djlmoe.recipes.CliCall.cli;
import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertFalse;
import static org.junit.jupiter.api.Assertions.assertTrue;

import dev.djlmoe.recipes.CliCall;
import dev.djlmoe.recipes.CliCall.Run;
import java.util.ArrayList;
import java.util.List;
import org.junit.jupiter.api.Test;

/**
 * What a new user reads first: the help of every command (whole sentences in the command list,
 * lines that fit 80 columns, examples on one line) and the first line of an error.
 */
class CliHelpTest {

    @Test
    void theCommandListShowsWholeSentences() {
        Run r = cli("--help");
        assertEquals(0, r.code(), r.err());
        String list = r.out().substring(r.out().indexOf("Commands:"));
        for (String line : list.split("\n")) {
            if (line.startsWith("  ") && !line.startsWith("   ")) {
                // "  name  Summary." on one line, ending a sentence, not cut mid-way.
                assertTrue(line.strip().endsWith("."), "cut summary: '" + line + "'");
            } else {
                assertFalse(line.startsWith("   "), "a summary wraps: '" + line + "'\n" + list);
            }
        }
    }

    @Test
    void everyHelpFitsEightyColumnsAndKeepsItsExampleOnOneLine() {
        for (List<String> path : CliCall.commandPaths()) {
            List<String> args = new ArrayList<>(path);
            args.add("--help");
            Run r = cli(args.toArray(String[]::new));
            assertEquals(0, r.code(), path + ": " + r.err());
            String[] lines = r.out().split("\n");
            for (String line : lines) {
                assertTrue(line.length() <= 80, path + ": " + line.length() + " columns: " + line);
            }
            for (int i = 0; i < lines.length; i++) {
                if (lines[i].equals("Example:")) {
                    assertTrue(
                            i + 1 < lines.length && lines[i + 1].startsWith("  djl-moe "),
                            path + ": the example is not one line: " + r.out());
                    assertTrue(
                            i + 2 == lines.length || lines[i + 2].isBlank(),
                            path + ": the example continues: " + r.out());
                }
            }
        }
        String decode = cli("decode", "--help").out();
        assertTrue(
                decode.contains("\nExample:\n  djl-moe decode --ep 2 --model runs/pretrain"),
                decode);
    }

    @Test
    void theBenchmarksShareTheirShapeFlagsButNotTheirDefaults() {
        String ep = cli("bench", "ep", "--help").out();
        assertTrue(ep.contains("H (default 7168)"), ep);
        assertTrue(ep.contains("--experts=<experts>"), ep);
        assertTrue(ep.contains("E (default 256)"), ep);
        String layer = cli("bench", "layer", "--help").out();
        assertTrue(layer.contains("H (default 1024)"), layer);
        assertTrue(layer.contains("E (default 64)"), layer);
    }

    @Test
    void errorsNameTheProgramOnce() {
        Run r = cli("--bogus");
        assertEquals(2, r.code());
        assertTrue(r.err().startsWith("djl-moe: error: Unknown option: '--bogus'"), r.err());
        assertTrue(r.err().contains("Try 'djl-moe --help'"), r.err());
        r = cli("bench", "layer", "--tokens", "0");
        assertEquals(1, r.code());
        assertTrue(r.err().startsWith("djl-moe bench layer: error: need --tokens"), r.err());
        r = cli("bench", "ep", "--topk", "9", "--experts", "8");
        assertEquals(1, r.code());
        assertTrue(
                r.err().contains("need --tokens, --hidden, --topk, --iters >= 1 and --experts >="),
                r.err());
        assertTrue(r.err().contains("--topk 9, --iters 5, --experts 8"), r.err());
        r = cli("bench", "layer", "--width", "0");
        assertEquals(1, r.code());
        assertTrue(r.err().contains("--width 0 must be >= 1"), r.err());
        r = cli("bench", "ep", "--bogus");
        assertEquals(2, r.code());
        assertTrue(r.err().startsWith("djl-moe bench ep: error: Unknown option"), r.err());
        assertTrue(r.err().contains("Try 'djl-moe bench ep --help'"), r.err());
        for (Run x : List.of(cli("--bogus"), cli("plot", "--bogus"))) {
            assertFalse(x.err().contains("djl-moe djl-moe"), x.err());
        }
    }

    @Test
    void anUnknownLogLevelIsRefusedByName() {
        Run r = cli("plan", "--log-level", "loud");
        assertEquals(2, r.code());
        assertTrue(
                r.err()
                        .contains(
                                "--log-level 'loud' is not one of error, warn, info, debug,"
                                        + " trace"),
                r.err());
        assertTrue(cli("plan", "--model", "tiny", "--ep", "2", "--log-level", "warn").code() == 0);
    }
}
