package dev.djlmoe.testing;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertTrue;

import java.io.IOException;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.ArrayList;
import java.util.List;
import org.junit.jupiter.api.Test;

/**
 * The training path of this module (blocks, tape, trainer, EP autograd, expert GEMMs) makes no
 * array from a single Java number: on a GPU each such call waits for the device (see {@link
 * HostScalarScan}).
 */
class HostScalarScanTest {

    private static final Path CLASSES = Path.of("target", "classes", "dev", "djlmoe");

    @Test
    void theScanFindsTheSamplesCalls() throws IOException {
        Path sample = Path.of("target", "test-classes", "dev", "djlmoe", "testing");
        List<String> calls = HostScalarScan.hostScalarCalls(sample);
        assertTrue(
                calls.contains("HostScalarSample -> NDArray.mul(Ljava/lang/Number;)"),
                calls.toString());
        assertTrue(calls.contains("HostScalarSample -> NDManager.create(F)"), calls.toString());
    }

    @Test
    void theTrainingPathMakesNoScalarFromTheHost() throws IOException {
        List<String> calls = new ArrayList<>();
        for (String pkg : new String[] {"nn", "autograd", "train", "ep", "gemm"}) {
            Path dir = CLASSES.resolve(pkg);
            assertTrue(Files.isDirectory(dir), dir + " is not compiled");
            calls.addAll(HostScalarScan.hostScalarCalls(dir));
        }
        assertEquals(List.of(), calls, "use Autograd.scalar (a fill on the array's device)");
    }
}
