package dev.djlmoe.zoo.nn;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertTrue;

import dev.djlmoe.testing.HostScalarScan;
import java.io.IOException;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.List;
import org.junit.jupiter.api.Test;

/**
 * The model's blocks (attention, norms, embeddings, the loss) make no array from a single Java
 * number, which on a GPU would wait for the device at every use ({@link HostScalarScan}).
 */
class HostScalarFreeBlocksTest {

    @Test
    void theBlocksMakeNoScalarFromTheHost() throws IOException {
        Path dir = Path.of("target", "classes", "dev", "djlmoe", "zoo", "nn");
        assertTrue(Files.isDirectory(dir), dir + " is not compiled");
        assertEquals(
                List.of(),
                HostScalarScan.hostScalarCalls(dir),
                "use Autograd.scalar (a fill on the array's device)");
    }
}
