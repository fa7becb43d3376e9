/*
 * djl-moe: expert-parallel Mixture-of-Experts for the Deep Java Library.
 */
package dev.djlmoe.recipes.checkpoint;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertFalse;
import static org.junit.jupiter.api.Assertions.assertNull;
import static org.junit.jupiter.api.Assertions.assertThrows;
import static org.junit.jupiter.api.Assertions.assertTrue;

import java.io.IOException;
import java.io.RandomAccessFile;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.ArrayList;
import java.util.List;
import java.util.Random;
import java.util.stream.Stream;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.io.TempDir;

/**
 * Checkpoint completeness without training: the manifest catches a missing, truncated or altered
 * file; {@link TrainingCheckpoint#resolve(Path, List)} skips incomplete checkpoints (with a warning
 * naming the file and both sizes) and never takes a {@code .partial} directory; {@link
 * TrainingCheckpoint#removeLeftovers} removes exactly the leftovers of interrupted saves.
 */
class CheckpointManifestTest {

    /** A checkpoint-shaped directory with random file contents and a manifest. */
    private static Path fakeCheckpoint(Path root, long step, boolean manifest) throws IOException {
        Path d = Files.createDirectories(root.resolve(TrainingCheckpoint.dirName(step)));
        Random r = new Random(step);
        for (String n :
                new String[] {
                    "model-00001-of-00002.safetensors",
                    "model-00002-of-00002.safetensors",
                    "optimizer-00001-of-00002.safetensors",
                    "config.json"
                }) {
            byte[] b = new byte[1000 + r.nextInt(5000)];
            r.nextBytes(b);
            Files.write(d.resolve(n), b);
        }
        Files.writeString(d.resolve(TrainingCheckpoint.STATE_FILE), "{\"step\": " + step + "}\n");
        if (manifest) {
            CheckpointManifest.write(d, step);
        }
        return d;
    }

    @Test
    void theManifestCatchesMissingTruncatedAndAlteredFiles(@TempDir Path tmp) throws IOException {
        Path c = fakeCheckpoint(tmp, 2, true);
        assertNull(CheckpointManifest.verify(c, true));
        String manifest = Files.readString(c.resolve(CheckpointManifest.FILE));
        assertTrue(manifest.contains("\"optimizer-00001-of-00002.safetensors\""), manifest);
        assertTrue(manifest.contains("\"" + TrainingCheckpoint.STATE_FILE + "\""), manifest);

        Path f = c.resolve("model-00002-of-00002.safetensors");
        long size = Files.size(f);
        byte[] orig = Files.readAllBytes(f);
        try (RandomAccessFile raf = new RandomAccessFile(f.toFile(), "rw")) {
            raf.setLength(size - 1);
        }
        assertEquals(
                "model-00002-of-00002.safetensors has "
                        + (size - 1)
                        + " bytes, the manifest says "
                        + size,
                CheckpointManifest.verify(c, false));
        // Same size, one byte flipped: only the hash sees it.
        orig[17] ^= 1;
        Files.write(f, orig);
        assertNull(CheckpointManifest.verify(c, false));
        String v = CheckpointManifest.verify(c, true);
        assertTrue(v != null && v.startsWith("model-00002-of-00002.safetensors has SHA-256"), v);
        orig[17] ^= 1;
        Files.write(f, orig);
        assertNull(CheckpointManifest.verify(c, true));
        Files.delete(c.resolve("config.json"));
        assertEquals("config.json is missing", CheckpointManifest.verify(c, true));
        Files.delete(c.resolve(CheckpointManifest.FILE));
        assertTrue(CheckpointManifest.verify(c, true).startsWith("no " + CheckpointManifest.FILE));
    }

    @Test
    void resolveSkipsIncompleteCheckpointsAndNeverTakesAPartialOne(@TempDir Path root)
            throws IOException {
        fakeCheckpoint(root, 2, true);
        Path four = fakeCheckpoint(root, 4, true);
        // An interrupted save of step 6: a partial directory with every file but no manifest.
        Path partial = root.resolve(".step-00000006.partial");
        Files.move(fakeCheckpoint(root, 6, false), partial);
        Files.writeString(root.resolve(TrainingCheckpoint.LATEST), "step-00000004\n");
        List<String> warnings = new ArrayList<>();
        assertEquals(four, TrainingCheckpoint.resolve(root, warnings));
        assertEquals(List.of(), warnings);

        // Step 4 torn after its save: the newest complete one (step 2) is taken, with a warning.
        Path opt = four.resolve("optimizer-00001-of-00002.safetensors");
        long size = Files.size(opt);
        try (RandomAccessFile raf = new RandomAccessFile(opt.toFile(), "rw")) {
            raf.setLength(size / 2);
        }
        assertEquals(root.resolve("step-00000002"), TrainingCheckpoint.resolve(root, warnings));
        assertEquals(
                List.of(
                        "skipping "
                                + four
                                + ": not a complete checkpoint:"
                                + " optimizer-00001-of-00002.safetensors has "
                                + (size / 2)
                                + " bytes, the manifest says "
                                + size),
                warnings);
        // Named directly, the torn checkpoint is refused naming the file.
        IllegalArgumentException e =
                assertThrows(
                        IllegalArgumentException.class,
                        () -> TrainingCheckpoint.resolve(four, new ArrayList<>()));
        assertTrue(
                e.getMessage().contains("not a complete checkpoint: optimizer-00001"),
                e.getMessage());
        // 'latest' naming something that is not there falls back too.
        Files.writeString(root.resolve(TrainingCheckpoint.LATEST), "step-00000008\n");
        warnings.clear();
        assertEquals(root.resolve("step-00000002"), TrainingCheckpoint.resolve(root, warnings));
        assertTrue(warnings.get(0).contains("'latest' names step-00000008"), warnings.toString());
        // Only partial leftovers: no checkpoint at all.
        Path only = Files.createDirectories(root.resolve("only"));
        Files.move(partial, only.resolve(".step-00000006.partial"));
        e =
                assertThrows(
                        IllegalArgumentException.class,
                        () -> TrainingCheckpoint.resolve(only, new ArrayList<>()));
        assertTrue(e.getMessage().contains("no complete checkpoint there"), e.getMessage());
    }

    @Test
    void aRunDirectoryStandsForItsCheckpointsAndErrorsNameTheFlag(@TempDir Path run)
            throws IOException {
        Path dir = Files.createDirectories(run.resolve(TrainingCheckpoint.RUN_CHECKPOINTS));
        Path two = fakeCheckpoint(dir, 2, true);
        assertEquals(two, TrainingCheckpoint.resolve(run, new ArrayList<>(), "--model"));
        Files.delete(two.resolve(TrainingCheckpoint.STATE_FILE));
        IllegalArgumentException e =
                assertThrows(
                        IllegalArgumentException.class,
                        () -> TrainingCheckpoint.resolve(run, new ArrayList<>(), "--model"));
        assertTrue(
                e.getMessage().startsWith("--model " + dir + ": no complete checkpoint there"),
                e.getMessage());
        e =
                assertThrows(
                        IllegalArgumentException.class,
                        () ->
                                TrainingCheckpoint.resolve(
                                        run.resolve("nowhere"), new ArrayList<>()));
        assertTrue(e.getMessage().startsWith("--resume "), e.getMessage());
    }

    @Test
    void removeLeftoversRemovesOnlyWhatInterruptedSavesLeave(@TempDir Path root)
            throws IOException {
        Path keep = fakeCheckpoint(root, 2, true);
        Files.move(fakeCheckpoint(root, 4, false), root.resolve(".step-00000004.partial"));
        Files.move(fakeCheckpoint(root, 6, false), root.resolve(".step-00000006.old"));
        Files.writeString(root.resolve(".latest.123456.tmp"), "step-0000");
        Files.writeString(root.resolve(TrainingCheckpoint.LATEST), "step-00000002\n");
        Files.writeString(root.resolve("notes.txt"), "mine");
        List<String> removed = TrainingCheckpoint.removeLeftovers(root);
        assertEquals(
                List.of(
                        "removed "
                                + root.resolve(".latest.123456.tmp")
                                + " (left by an interrupted checkpoint save)",
                        "removed "
                                + root.resolve(".step-00000004.partial")
                                + " (left by an interrupted checkpoint save)",
                        "removed "
                                + root.resolve(".step-00000006.old")
                                + " (left by an interrupted checkpoint save)"),
                removed);
        try (Stream<Path> s = Files.list(root)) {
            assertEquals(
                    List.of("latest", "notes.txt", "step-00000002"),
                    s.map(p -> p.getFileName().toString()).sorted().toList());
        }
        assertNull(CheckpointManifest.verify(keep, true));
        assertEquals(List.of(), TrainingCheckpoint.removeLeftovers(root));
        assertEquals(List.of(), TrainingCheckpoint.removeLeftovers(root.resolve("absent")));
        assertFalse(Files.exists(root.resolve("absent")));
    }
}
