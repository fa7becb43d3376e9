/*
 * djl-moe: expert-parallel Mixture-of-Experts for the Deep Java Library.
 */
package dev.djlmoe.recipes.metrics;

import java.io.BufferedWriter;
import java.io.IOException;
import java.io.UncheckedIOException;
import java.nio.charset.StandardCharsets;
import java.nio.file.Files;
import java.nio.file.Path;
import java.nio.file.StandardOpenOption;
import java.util.ArrayList;
import java.util.List;

/** A run's metrics as JSON lines, one {@link StepRecord} per step, flushed as written. */
public final class MetricsFile implements AutoCloseable {

    private final BufferedWriter writer;

    /**
     * Opens a metrics file for appending (a resumed run continues the same file).
     *
     * @param path the file
     * @throws IOException when it cannot be opened
     */
    public MetricsFile(Path path) throws IOException {
        Path parent = path.toAbsolutePath().getParent();
        if (parent != null) {
            Files.createDirectories(parent);
        }
        writer =
                Files.newBufferedWriter(
                        path,
                        StandardCharsets.UTF_8,
                        StandardOpenOption.CREATE,
                        StandardOpenOption.APPEND);
    }

    /**
     * Appends a record.
     *
     * @param r the record
     */
    public void write(StepRecord r) {
        try {
            writer.write(r.toJson());
            writer.newLine();
            writer.flush();
        } catch (IOException e) {
            throw new UncheckedIOException("writing metrics failed", e);
        }
    }

    /**
     * Reads every record of a metrics file, keeping the last record of each step (a resumed run
     * may repeat steps after its checkpoint).
     *
     * @param path the file
     * @return the records in step order
     * @throws IOException when it cannot be read
     */
    public static List<StepRecord> read(Path path) throws IOException {
        java.util.TreeMap<Long, StepRecord> bySteps = new java.util.TreeMap<>();
        int n = 0;
        for (String line : Files.readAllLines(path, StandardCharsets.UTF_8)) {
            n++;
            if (line.isBlank()) {
                continue;
            }
            try {
                StepRecord r = StepRecord.parse(line);
                bySteps.put(r.step(), r);
            } catch (IllegalArgumentException e) {
                throw new IllegalArgumentException(path + " line " + n + ": " + e.getMessage(), e);
            }
        }
        return new ArrayList<>(bySteps.values());
    }

    @Override
    public void close() throws IOException {
        writer.close();
    }
}
