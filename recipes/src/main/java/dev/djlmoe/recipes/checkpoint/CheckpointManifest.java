/*
 * djl-moe: expert-parallel Mixture-of-Experts for the Deep Java Library.
 */
package dev.djlmoe.recipes.checkpoint;

import dev.djlmoe.zoo.io.Json;
import dev.djlmoe.zoo.io.JsonException;
import dev.djlmoe.zoo.io.SafetensorsWriter;
import java.io.IOException;
import java.io.InputStream;
import java.nio.channels.FileChannel;
import java.nio.charset.StandardCharsets;
import java.nio.file.Files;
import java.nio.file.NoSuchFileException;
import java.nio.file.Path;
import java.nio.file.StandardOpenOption;
import java.security.MessageDigest;
import java.security.NoSuchAlgorithmException;
import java.util.HexFormat;
import java.util.LinkedHashMap;
import java.util.List;
import java.util.Map;
import java.util.stream.Stream;

/**
 * The manifest of a training checkpoint, {@value #FILE}: the size and SHA-256 of every other file
 * in it, written last by {@link TrainingCheckpoint#save}. A checkpoint is complete when its
 * manifest exists and every file it lists has that size and hash; a save interrupted at any point
 * (a rank killed, a full disk) leaves either no manifest or a directory that is not yet renamed to
 * {@code step-*}, so it is never taken for complete.
 *
 * <pre>
 * {"format": "djl-moe-checkpoint-manifest", "version": 1, "step": 4,
 *  "files": {"config.json": {"bytes": 812, "sha256": "9f..."}, ...}}
 * </pre>
 */
public final class CheckpointManifest {

    /** The manifest's file name inside a checkpoint. */
    public static final String FILE = "checkpoint-manifest.json";

    /** Format tag of the manifest. */
    public static final String FORMAT = "djl-moe-checkpoint-manifest";

    private CheckpointManifest() {}

    /** The regular files of a checkpoint that the manifest covers (sorted, by name). */
    private static List<Path> contentFiles(Path dir) throws IOException {
        try (Stream<Path> s = Files.list(dir)) {
            return s.filter(Files::isRegularFile)
                    .filter(
                            p -> {
                                String n = p.getFileName().toString();
                                return !n.equals(FILE) && !n.startsWith(".");
                            })
                    .sorted()
                    .toList();
        }
    }

    /**
     * Writes the manifest of every file now in {@code dir} (through a temporary file, flushed).
     *
     * @param dir the checkpoint being saved
     * @param step its step
     * @throws IOException when a file cannot be read or the manifest written
     */
    public static void write(Path dir, long step) throws IOException {
        Map<String, Object> files = new LinkedHashMap<>();
        for (Path f : contentFiles(dir)) {
            Map<String, Object> e = new LinkedHashMap<>();
            e.put("bytes", Files.size(f));
            e.put("sha256", sha256(f));
            files.put(f.getFileName().toString(), e);
        }
        Map<String, Object> m = new LinkedHashMap<>();
        m.put("format", FORMAT);
        m.put("version", 1L);
        m.put("step", step);
        m.put("files", files);
        SafetensorsWriter.writeTextAtomically(dir.resolve(FILE), Json.write(m) + "\n");
    }

    /**
     * Checks a checkpoint against its manifest.
     *
     * @param dir the checkpoint
     * @param hashes also compare SHA-256 (else sizes only)
     * @return null when complete, else what is wrong (naming the file, the value and the expected
     *     one)
     * @throws IOException when a file cannot be read
     */
    @SuppressWarnings("unchecked")
    public static String verify(Path dir, boolean hashes) throws IOException {
        Path mf = dir.resolve(FILE);
        if (!Files.isRegularFile(mf)) {
            return "no " + FILE + " (the save did not finish)";
        }
        Map<String, Object> files;
        try {
            Map<String, Object> m =
                    Json.parseObject(Files.readString(mf, StandardCharsets.UTF_8), mf.toString());
            if (!FORMAT.equals(m.get("format"))) {
                return mf + " has format " + m.get("format") + ", expected " + FORMAT;
            }
            files = (Map<String, Object>) m.get("files");
            if (files == null || files.isEmpty()) {
                return mf + " lists no files";
            }
        } catch (JsonException | ClassCastException e) {
            return mf + " is malformed: " + e.getMessage();
        }
        for (var e : files.entrySet()) {
            Path f = dir.resolve(e.getKey());
            if (!f.normalize().getParent().equals(dir.normalize())) {
                return mf + " names a file outside the checkpoint: " + e.getKey();
            }
            Map<String, Object> want;
            long bytes;
            try {
                want = (Map<String, Object>) e.getValue();
                bytes = ((Number) want.get("bytes")).longValue();
            } catch (ClassCastException | NullPointerException ex) {
                return mf + ": malformed entry for " + e.getKey();
            }
            if (!Files.isRegularFile(f)) {
                return e.getKey() + " is missing";
            }
            long size = Files.size(f);
            if (size != bytes) {
                return e.getKey() + " has " + size + " bytes, the manifest says " + bytes;
            }
            if (hashes) {
                String h = sha256(f);
                if (!h.equals(want.get("sha256"))) {
                    return e.getKey()
                            + " has SHA-256 "
                            + h
                            + ", the manifest says "
                            + want.get("sha256");
                }
            }
        }
        return null;
    }

    /**
     * Flushes every regular file in {@code dir} to the storage device (fsync); a file that
     * disappears meanwhile (another rank's temporary file) is skipped.
     *
     * @param dir the directory
     * @throws IOException when a flush fails
     */
    public static void syncFiles(Path dir) throws IOException {
        List<Path> all;
        try (Stream<Path> s = Files.list(dir)) {
            all = s.filter(Files::isRegularFile).toList();
        }
        for (Path f : all) {
            try (FileChannel ch = FileChannel.open(f, StandardOpenOption.READ)) {
                ch.force(true);
            } catch (NoSuchFileException e) {
                // renamed or removed by its writer meanwhile
            }
        }
    }

    /**
     * Flushes a directory's entries (its renames and new names) to the storage device, where the
     * file system allows it.
     *
     * @param dir the directory
     */
    public static void syncDirectory(Path dir) {
        try (FileChannel ch = FileChannel.open(dir, StandardOpenOption.READ)) {
            ch.force(true);
        } catch (IOException e) {
            // Some file systems cannot open or flush a directory; the renames stay atomic.
        }
    }

    private static String sha256(Path f) throws IOException {
        MessageDigest md;
        try {
            md = MessageDigest.getInstance("SHA-256");
        } catch (NoSuchAlgorithmException e) {
            throw new IllegalStateException("SHA-256 is missing from this JVM", e);
        }
        byte[] buf = new byte[1 << 20];
        try (InputStream in = Files.newInputStream(f)) {
            for (int n; (n = in.read(buf)) > 0; ) {
                md.update(buf, 0, n);
            }
        }
        return HexFormat.of().formatHex(md.digest());
    }
}
