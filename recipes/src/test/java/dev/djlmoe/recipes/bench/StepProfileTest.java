/*
 * djl-moe: expert-parallel Mixture-of-Experts for the Deep Java Library.
 */
package dev.djlmoe.recipes.bench;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertFalse;
import static org.junit.jupiter.api.Assertions.assertThrows;
import static org.junit.jupiter.api.Assertions.assertTrue;

import dev.djlmoe.profile.StepPhases;
import java.io.ByteArrayOutputStream;
import java.io.PrintStream;
import java.nio.charset.StandardCharsets;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.Map;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.io.TempDir;

/**
 * {@link StepProfile} without training: the directory is created and checked, and a profiled step
 * that failed leaves its error (first line) in the report and the JSON, the recorder stopped.
 */
class StepProfileTest {

    @Test
    void aFailedProfiledStepReportsItsErrorAndStopsRecording(@TempDir Path tmp) {
        Path dir = tmp.resolve("a/b");
        StepProfile p = StepProfile.prepare(dir, false);
        assertTrue(Files.isDirectory(dir));
        p.startPhases(null);
        assertTrue(StepPhases.recording());
        p.failed(new IllegalStateException("boom\nlibtorch's long trace"));
        assertFalse(StepPhases.recording());
        assertEquals("IllegalStateException: boom", p.error());
        ByteArrayOutputStream b = new ByteArrayOutputStream();
        p.print(new PrintStream(b, true, StandardCharsets.UTF_8));
        assertEquals(
                "profile: failed (the timed steps' figures stand): IllegalStateException: boom",
                b.toString(StandardCharsets.UTF_8).trim());
        Map<String, Object> m = p.toMap();
        assertEquals("IllegalStateException: boom", m.get("error"));
        assertFalse(m.containsKey("phases"));
        // The recorder is free for the next profile.
        StepPhases.start(null).stop();
    }

    @Test
    void aPathUnderAFileIsRefused(@TempDir Path tmp) throws Exception {
        Path file = Files.writeString(tmp.resolve("f"), "x");
        IllegalArgumentException e =
                assertThrows(
                        IllegalArgumentException.class,
                        () -> StepProfile.prepare(file.resolve("p"), false));
        assertTrue(
                e.getMessage().startsWith("--profile " + file.resolve("p") + ": cannot write"),
                e.getMessage());
    }
}
