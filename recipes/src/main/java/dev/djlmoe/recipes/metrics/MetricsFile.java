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
import java.util.Map;
import java.util.TreeMap;

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
        writeLine(r.toJson());
    }

    /**
     * Appends a held-out evaluation.
     *
     * @param r the evaluation
     */
    public void write(HeldOutRecord r) {
        writeLine(r.toJson());
    }

    private void writeLine(String json) {
        try {
            writer.write(json);
            writer.newLine();
            writer.flush();
        } catch (IOException e) {
            throw new UncheckedIOException("writing metrics failed", e);
        }
    }

    /**
     * Reads every step record of a metrics file, keeping the last record of each step (a resumed
     * run may repeat steps after its checkpoint); held-out lines are left out.
     *
     * @param path the file
     * @return the records in step order
     * @throws IOException when it cannot be read
     */
    public static List<StepRecord> read(Path path) throws IOException {
        return readRun(path).steps();
    }

    /**
     * Reads a metrics file: its step records and held-out evaluations, each in step order and the
     * last of each step kept.
     *
     * @param path the file
     * @return the run's metrics
     * @throws IOException when it cannot be read
     * @throws IllegalArgumentException naming the file and line of a record that does not parse
     */
    public static RunMetrics readRun(Path path) throws IOException {
        TreeMap<Long, StepRecord> steps = new TreeMap<>();
        TreeMap<Long, HeldOutRecord> heldOut = new TreeMap<>();
        int n = 0;
        for (String line : Files.readAllLines(path, StandardCharsets.UTF_8)) {
            n++;
            if (line.isBlank()) {
                continue;
            }
            try {
                Map<String, Object> o = StepRecord.object(line);
                if (HeldOutRecord.isHeldOut(o)) {
                    HeldOutRecord h = HeldOutRecord.fromJson(o);
                    heldOut.put(h.step(), h);
                } else {
                    StepRecord r = StepRecord.fromJson(o);
                    steps.put(r.step(), r);
                }
            } catch (IllegalArgumentException e) {
                throw new IllegalArgumentException(path + " line " + n + ": " + e.getMessage(), e);
            }
        }
        return new RunMetrics(new ArrayList<>(steps.values()), new ArrayList<>(heldOut.values()));
    }

    @Override
    public void close() throws IOException {
        writer.close();
    }
}
