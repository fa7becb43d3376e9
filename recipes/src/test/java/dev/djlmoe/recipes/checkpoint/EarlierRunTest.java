/*
 * djl-moe: expert-parallel Mixture-of-Experts for the Deep Java Library.
 */
package dev.djlmoe.recipes.checkpoint;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertFalse;
import static org.junit.jupiter.api.Assertions.assertNull;
import static org.junit.jupiter.api.Assertions.assertThrows;
import static org.junit.jupiter.api.Assertions.assertTrue;

import dev.djlmoe.zoo.io.SafetensorsWriter;
import java.io.IOException;
import java.io.RandomAccessFile;
import java.nio.file.Files;
import java.nio.file.Path;
import java.nio.file.attribute.PosixFilePermission;
import java.util.ArrayList;
import java.util.List;
import java.util.Set;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.io.TempDir;

/**
 * A second run into the same directory never replaces the first run's checkpoints; a rejected
 * checkpoint is named with the reason; checkpoint files get the umask's permissions.
 */
class EarlierRunTest {

    private static Path checkpoint(Path root, long step) throws IOException {
        Path d = Files.createDirectories(root.resolve(TrainingCheckpoint.dirName(step)));
        Files.write(d.resolve("model.safetensors"), new byte[4096 + (int) step]);
        Files.writeString(d.resolve(TrainingCheckpoint.STATE_FILE), "{\"step\": " + step + "}\n");
        CheckpointManifest.write(d, step);
        Files.writeString(root.resolve(TrainingCheckpoint.LATEST), d.getFileName() + "\n");
        return d;
    }

    @Test
    void anEarlierRunsCheckpointsAreSetAsideNotOverwritten(@TempDir Path tmp) throws IOException {
        Path root = tmp.resolve("run").resolve("checkpoints");
        assertNull(TrainingCheckpoint.setAsideEarlierRun(root), "nothing there yet");
        Files.createDirectories(root);
        assertNull(TrainingCheckpoint.setAsideEarlierRun(root), "an empty directory stays");
        Path first = checkpoint(root, 300);
        byte[] firstModel = Files.readAllBytes(first.resolve("model.safetensors"));
        Path moved = TrainingCheckpoint.setAsideEarlierRun(root);
        assertEquals(tmp.resolve("run").resolve("checkpoints.1"), moved);
        assertFalse(Files.exists(root));
        assertEquals(moved.resolve("step-00000300"), TrainingCheckpoint.resolve(moved));
        // The second run writes step 300 again; a third run sets the second one aside too.
        checkpoint(root, 300);
        assertEquals(
                tmp.resolve("run").resolve("checkpoints.2"),
                TrainingCheckpoint.setAsideEarlierRun(root));
        assertTrue(
                java.util.Arrays.equals(
                        firstModel,
                        Files.readAllBytes(
                                moved.resolve("step-00000300").resolve("model.safetensors"))),
                "the first run's checkpoint is untouched");
    }

    @Test
    void aSecondPretrainRunIntoTheSameRunDirectoryKeepsTheFirstRunsCheckpoint(@TempDir Path tmp)
            throws IOException {
        Path run = tmp.resolve("run");
        String[] args = {
            "pretrain",
            "--steps",
            "2",
            "--batch",
            "2",
            "--seq-len",
            "16",
            "--run-dir",
            run.toString()
        };
        java.io.StringWriter out = new java.io.StringWriter();
        java.io.PrintWriter w = new java.io.PrintWriter(out, true);
        dev.djlmoe.recipes.cli.Main.execute(w, w, args);
        Path first = run.resolve("checkpoints").resolve("step-00000002");
        assertTrue(Files.isDirectory(first), out.toString());
        byte[] state = Files.readAllBytes(first.resolve(TrainingCheckpoint.STATE_FILE));
        String firstManifest = Files.readString(first.resolve(CheckpointManifest.FILE));
        // The second run uses another seed: its step 2 differs from the first run's.
        String[] again = java.util.Arrays.copyOf(args, args.length + 2);
        again[args.length] = "--seed";
        again[args.length + 1] = "7";
        dev.djlmoe.recipes.cli.Main.execute(w, w, again);
        Path kept = run.resolve("checkpoints.1").resolve("step-00000002");
        assertTrue(Files.isDirectory(kept), "the first run's checkpoints were not set aside");
        assertTrue(
                java.util.Arrays.equals(
                        state, Files.readAllBytes(kept.resolve(TrainingCheckpoint.STATE_FILE))));
        assertEquals(firstManifest, Files.readString(kept.resolve(CheckpointManifest.FILE)));
        assertNull(CheckpointManifest.verify(kept, true));
        assertFalse(
                firstManifest.equals(Files.readString(first.resolve(CheckpointManifest.FILE))),
                "the second run wrote its own step 2");
    }

    @Test
    void aRejectedCheckpointIsNamedWithItsReason(@TempDir Path tmp) throws IOException {
        Path root = tmp.resolve("checkpoints");
        Path only = checkpoint(root, 300);
        Path model = only.resolve("model.safetensors");
        long size = Files.size(model);
        try (RandomAccessFile raf = new RandomAccessFile(model.toFile(), "rw")) {
            raf.setLength(size - 10);
        }
        List<String> warnings = new ArrayList<>();
        IllegalArgumentException e =
                assertThrows(
                        IllegalArgumentException.class,
                        () -> TrainingCheckpoint.resolve(root, warnings));
        assertTrue(
                e.getMessage()
                        .contains(
                                "--resume "
                                        + root
                                        + ": no complete checkpoint there;"
                                        + " rejected: step-00000300 (model.safetensors has "
                                        + (size - 10)
                                        + " bytes, the manifest says "
                                        + size
                                        + ")"),
                e.getMessage());
        assertFalse(
                e.getMessage().contains("expected " + TrainingCheckpoint.STATE_FILE),
                e.getMessage());
    }

    @Test
    void checkpointFilesFollowTheUmask(@TempDir Path tmp) throws IOException {
        // Whatever the umask, the owner-only 0600 of a temporary file must not leak into a
        // checkpoint: the result has the permissions of a plain new file in the same place.
        Path plain = Files.createFile(tmp.resolve("plain"));
        Path written = tmp.resolve("config.json");
        SafetensorsWriter.writeTextAtomically(written, "{}\n");
        Set<PosixFilePermission> expected = Files.getPosixFilePermissions(plain);
        assertEquals(expected, Files.getPosixFilePermissions(written));
    }
}
