/*
 * djl-moe: expert-parallel Mixture-of-Experts for the Deep Java Library.
 */
package dev.djlmoe.recipes.reliability;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertNotEquals;
import static org.junit.jupiter.api.Assertions.assertTrue;

import dev.djlmoe.recipes.launch.LaunchSpec;
import dev.djlmoe.recipes.launch.Launcher;
import java.io.ByteArrayOutputStream;
import java.io.PrintStream;
import java.nio.charset.StandardCharsets;
import java.util.List;
import java.util.Map;
import java.util.Set;
import java.util.TreeSet;
import java.util.regex.Matcher;
import java.util.regex.Pattern;
import org.junit.jupiter.api.Test;

/**
 * The job token of {@code djl-moe launch} (security): every rank of a job gets the same random
 * 128-bit secret through the environment ({@code DJL_MOE_JOB_TOKEN}), each job a fresh one, and a
 * token the caller sets (for a job spanning hosts) is passed on unchanged.
 */
class JobTokenTest {

    private static final Pattern LINE = Pattern.compile("\\[rank (\\d)\\] token=(\\S*)");

    /** Runs a 3-rank job whose ranks print their token; returns the tokens seen. */
    private static Set<String> tokens(Map<String, String> env) throws Exception {
        ByteArrayOutputStream buf = new ByteArrayOutputStream();
        PrintStream out = new PrintStream(buf, true, StandardCharsets.UTF_8);
        // The ranks only print (nothing listens on the port).
        LaunchSpec spec =
                new LaunchSpec(
                        3,
                        1,
                        0,
                        "127.0.0.1",
                        29999,
                        List.of("sh", "-c", "echo token=$" + Launcher.JOB_TOKEN),
                        5_000);
        assertEquals(0, new Launcher(spec, out, env).run());
        String text = buf.toString(StandardCharsets.UTF_8);
        Set<String> seen = new TreeSet<>();
        Set<String> ranks = new TreeSet<>();
        Matcher m = LINE.matcher(text);
        while (m.find()) {
            ranks.add(m.group(1));
            seen.add(m.group(2));
        }
        assertEquals(Set.of("0", "1", "2"), ranks, text);
        return seen;
    }

    @Test
    void everyRankOfAJobGetsTheSameFreshRandomToken() throws Exception {
        Set<String> a = tokens(Map.of());
        Set<String> b = tokens(Map.of());
        assertEquals(1, a.size(), "ranks of one job disagree: " + a);
        assertEquals(1, b.size(), "ranks of one job disagree: " + b);
        String ta = a.iterator().next();
        String tb = b.iterator().next();
        assertTrue(ta.matches("[0-9a-f]{32}"), "not 128 random bits in hex: '" + ta + "'");
        assertTrue(tb.matches("[0-9a-f]{32}"), tb);
        assertNotEquals(ta, tb, "two jobs got the same token");
        // A token given by the caller (the same on every host of a multi-host job) is kept.
        assertEquals(
                Set.of("given-by-the-caller"),
                tokens(Map.of(Launcher.JOB_TOKEN, "given-by-the-caller")));
    }
}
