/*
 * djl-moe: expert-parallel Mixture-of-Experts for the Deep Java Library.
 */
package dev.djlmoe.testing;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertThrows;
import static org.junit.jupiter.api.Assertions.assertTrue;

import java.io.ByteArrayOutputStream;
import java.io.IOException;
import java.io.PrintStream;
import java.nio.charset.StandardCharsets;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.List;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.io.TempDir;

/** {@link TestLauncher}: its result lines, its verdict and its exit status. */
class TestLauncherTest {

    private static final String SAMPLE = LauncherSample.class.getName();

    private record Run(int code, String out) {}

    private static Run run(String... args) {
        ByteArrayOutputStream bytes = new ByteArrayOutputStream();
        int code = TestLauncher.run(args, new PrintStream(bytes, true, StandardCharsets.UTF_8));
        return new Run(code, bytes.toString(StandardCharsets.UTF_8));
    }

    @Test
    void aFailureOrASkipMakesTheVerdictFail(@TempDir Path tmp) throws IOException {
        Path summary = tmp.resolve("summary.txt");
        Run r = run("--summary", summary.toString(), SAMPLE);
        assertEquals(1, r.code(), r.out());
        assertTrue(r.out().contains("PASS  LauncherSample > passes()"), r.out());
        assertTrue(r.out().contains("FAIL  LauncherSample > fails()"), r.out());
        assertTrue(r.out().contains("sample failure"), r.out());
        assertTrue(r.out().contains("SKIP  LauncherSample > skips(): "), r.out());
        assertTrue(r.out().contains("sample skip"), r.out());
        assertTrue(r.out().contains("positive(int) n = 2"), r.out());
        assertTrue(r.out().contains("3 passed, 1 failed, 1 skipped"), r.out());
        List<String> lines = Files.readAllLines(summary);
        assertEquals(6, lines.size(), lines.toString()); // five results and the verdict
        assertTrue(lines.get(5).endsWith("-> FAIL"), lines.toString());
    }

    @Test
    void chosenMethodsAloneRunAndSkipsMayBeAllowed() {
        Run ok = run(SAMPLE + "#passes", SAMPLE + "#positive");
        assertEquals(0, ok.code(), ok.out());
        assertTrue(ok.out().contains("3 passed, 0 failed, 0 skipped"), ok.out());
        assertTrue(ok.out().contains("-> PASS"), ok.out());

        Run skipped = run(SAMPLE + "#passes", SAMPLE + "#skips");
        assertEquals(1, skipped.code(), skipped.out());
        Run allowed = run("--allow-skips", SAMPLE + "#passes", SAMPLE + "#skips");
        assertEquals(0, allowed.code(), allowed.out());
        // Nothing passed: not a pass, even with skips allowed.
        Run none = run("--allow-skips", SAMPLE + "#skips");
        assertEquals(1, none.code(), none.out());
    }

    @Test
    void badSelectorsAreNamed() {
        IllegalArgumentException noClass =
                assertThrows(IllegalArgumentException.class, () -> run("dev.djlmoe.NoSuchTest"));
        assertTrue(noClass.getMessage().contains("dev.djlmoe.NoSuchTest"), noClass.getMessage());
        IllegalArgumentException noMethod =
                assertThrows(IllegalArgumentException.class, () -> run(SAMPLE + "#nothing"));
        assertTrue(noMethod.getMessage().contains("no method nothing"), noMethod.getMessage());
        IllegalArgumentException option =
                assertThrows(IllegalArgumentException.class, () -> run("--fast", SAMPLE));
        assertTrue(option.getMessage().contains("--fast"), option.getMessage());
        assertThrows(IllegalArgumentException.class, () -> run("--allow-skips"));
    }

    @Test
    void theDevicePropertyIsCheckedAndDefaultsToTheCpu() {
        String before = System.getProperty(TestDevice.PROPERTY);
        try {
            System.clearProperty(TestDevice.PROPERTY);
            assertEquals("cpu", TestDevice.flag());
            assertEquals("-Ddjlmoe.test.device=cpu", TestDevice.jvmOption());
            System.setProperty(TestDevice.PROPERTY, "tpu");
            IllegalStateException e = assertThrows(IllegalStateException.class, TestDevice::flag);
            assertTrue(
                    e.getMessage().contains(TestDevice.PROPERTY)
                            && e.getMessage().contains("'tpu'"),
                    e.getMessage());
        } finally {
            if (before == null) {
                System.clearProperty(TestDevice.PROPERTY);
            } else {
                System.setProperty(TestDevice.PROPERTY, before);
            }
        }
    }
}
