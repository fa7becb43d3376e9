/*
 * djl-moe: expert-parallel Mixture-of-Experts for the Deep Java Library.
 */
package dev.djlmoe.recipes.cli;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertNull;

import dev.djlmoe.core.EpPeerException;
import dev.djlmoe.core.EpTimeoutException;
import java.io.UncheckedIOException;
import java.nio.file.NoSuchFileException;
import org.junit.jupiter.api.Test;

/** How the CLI labels what went wrong: the user's error, the job's failure, or a bug. */
class MainErrorsTest {

    @Test
    void aPeerFailureIsTheJobsFailureNotAnInternalError() {
        String msg = "dispatch on rank 0: peer rank 1 exited";
        Throwable wrapped = new RuntimeException(new EpPeerException(9, msg));
        assertNull(Main.userMessage(wrapped));
        assertEquals(msg, Main.jobFailure(wrapped));
        String timeout = "all-reduce on rank 1 timed out after 2000 ms waiting for rank 0";
        assertEquals(timeout, Main.jobFailure(new EpTimeoutException(8, timeout)));
    }

    @Test
    void userErrorsAndBugsAreNotJobFailures() {
        Throwable user = new UncheckedIOException(new NoSuchFileException("/nowhere/config.json"));
        assertEquals("/nowhere/config.json: no such file", Main.userMessage(user));
        assertNull(Main.jobFailure(user));
        Throwable bug = new IllegalStateException(new NullPointerException("x"));
        assertNull(Main.userMessage(bug));
        assertNull(Main.jobFailure(bug));
    }
}
