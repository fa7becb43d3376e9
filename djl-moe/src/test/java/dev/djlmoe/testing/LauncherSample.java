/*
 * djl-moe: expert-parallel Mixture-of-Experts for the Deep Java Library.
 */
package dev.djlmoe.testing;

import static org.junit.jupiter.api.Assertions.assertEquals;

import org.junit.jupiter.api.Assumptions;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.params.ParameterizedTest;
import org.junit.jupiter.params.provider.ValueSource;

/**
 * Tests that {@link TestLauncherTest} runs through {@link TestLauncher}: one passes, one fails, one
 * is skipped, a parameterised one passes twice. Not a test class of its own (Surefire's name
 * patterns leave it out).
 */
class LauncherSample {

    @Test
    void passes() {
        assertEquals(4, 2 + 2);
    }

    @Test
    void fails() {
        assertEquals(5, 2 + 2, "sample failure");
    }

    @Test
    void skips() {
        Assumptions.assumeTrue(false, "sample skip");
    }

    @ParameterizedTest(name = "n = {0}")
    @ValueSource(ints = {1, 2})
    void positive(int n) {
        assertEquals(true, n > 0);
    }
}
