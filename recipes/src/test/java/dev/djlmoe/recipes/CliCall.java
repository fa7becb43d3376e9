/*
 * djl-moe: expert-parallel Mixture-of-Experts for the Deep Java Library.
 */
package dev.djlmoe.recipes;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertTrue;

import dev.djlmoe.recipes.cli.Main;
import java.io.PrintWriter;
import java.io.StringWriter;
import java.util.ArrayList;
import java.util.List;
import java.util.Map;
import picocli.CommandLine;

/** The {@code djl-moe} command line called in the test's own JVM, its output captured. */
public final class CliCall {

    private CliCall() {}

    /**
     * What one call printed and returned.
     *
     * @param code the exit code
     * @param out the standard output
     * @param err the standard error
     */
    public record Run(int code, String out, String err) {

        /**
         * Counts the occurrences of a text in what was printed, standard output and error.
         *
         * @param s the text
         * @return how often it occurs
         */
        public int count(String s) {
            String all = out + err;
            int n = 0;
            for (int i = all.indexOf(s); i >= 0; i = all.indexOf(s, i + 1)) {
                n++;
            }
            return n;
        }
    }

    /**
     * Calls the command line.
     *
     * @param args the command and its options
     * @return what it printed and returned
     */
    public static Run cli(String... args) {
        StringWriter out = new StringWriter();
        StringWriter err = new StringWriter();
        int code = Main.execute(new PrintWriter(out, true), new PrintWriter(err, true), args);
        return new Run(code, out.toString(), err.toString());
    }

    /**
     * Calls the command line and asserts that it refused the input: exit code 1, and {@code
     * message} in its standard error.
     *
     * @param message a part of the expected message
     * @param args the command and its options
     * @return what it printed and returned
     */
    public static Run assertRefused(String message, String... args) {
        Run r = cli(args);
        assertEquals(1, r.code(), r.err());
        assertTrue(r.err().contains(message), r.err());
        return r;
    }

    /**
     * Every command of {@code djl-moe} as the path of names that calls it, the top level (an empty
     * path) first, each command before its sub-commands.
     *
     * @return the paths
     */
    public static List<List<String>> commandPaths() {
        List<List<String>> out = new ArrayList<>();
        collect(new CommandLine(new Main()), new ArrayList<>(), out);
        return out;
    }

    private static void collect(CommandLine c, List<String> path, List<List<String>> out) {
        out.add(path);
        for (Map.Entry<String, CommandLine> e : c.getSubcommands().entrySet()) {
            List<String> p = new ArrayList<>(path);
            p.add(e.getKey());
            collect(e.getValue(), p, out);
        }
    }
}
