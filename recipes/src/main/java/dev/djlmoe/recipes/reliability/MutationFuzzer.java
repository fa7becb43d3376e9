/*
 * djl-moe: expert-parallel Mixture-of-Experts for the Deep Java Library.
 */
package dev.djlmoe.recipes.reliability;

import java.io.IOException;
import java.io.PrintStream;
import java.nio.charset.StandardCharsets;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.ArrayList;
import java.util.LinkedHashMap;
import java.util.List;
import java.util.Locale;
import java.util.Map;
import java.util.Random;
import java.util.concurrent.ExecutionException;
import java.util.concurrent.ExecutorService;
import java.util.concurrent.Executors;
import java.util.concurrent.Future;
import java.util.concurrent.TimeUnit;
import java.util.concurrent.TimeoutException;

/**
 * A seeded, time-bounded mutation fuzzer for parsers of untrusted files.
 *
 * <p>Each round picks a target (round robin), a seed or an earlier input that reached a new
 * outcome, and applies one to four mutations: bit flips, interesting bytes, dictionary tokens (JSON
 * syntax, field names, dtypes, boundary numbers), deletions, duplications, splices with another
 * seed, deep nesting, and truncation or extension. The target runs on a worker thread with a
 * per-input time limit. A <em>clean</em> outcome is a normal return or an exception the target
 * declares as its refusal (e.g. {@code SafetensorsException}); anything else (a {@link
 * RuntimeException} of another type, {@link OutOfMemoryError}, {@link StackOverflowError}, a
 * time-out) is a <em>finding</em>: its input is saved and counted. A hang ends the run, since a
 * stuck thread cannot be stopped safely.
 */
public final class MutationFuzzer {

    /** Something a fuzzer can feed bytes to. */
    public interface Target {
        /**
         * Returns the target's short name.
         *
         * @return the name
         */
        String name();

        /**
         * Returns the well-formed inputs mutation starts from.
         *
         * @return the seeds
         */
        List<byte[]> seeds();

        /**
         * Runs the code under test on one input.
         *
         * @param input the bytes
         * @throws Exception whatever the code under test throws
         */
        void run(byte[] input) throws Exception;

        /**
         * Tells whether a throwable is the target's documented refusal of bad input.
         *
         * @param t what {@link #run} threw
         * @return true for a clean refusal
         */
        boolean isCleanRefusal(Throwable t);
    }

    /** Per-target counts of one run. */
    public static final class Counts {
        long inputs;
        long accepted;
        long refused;
        long findings;
        long nanos;
        long slowestNanos;

        /**
         * Returns the inputs tried.
         *
         * @return the count
         */
        public long inputs() {
            return inputs;
        }

        /**
         * Returns the inputs that parsed.
         *
         * @return the count
         */
        public long accepted() {
            return accepted;
        }

        /**
         * Returns the inputs refused cleanly.
         *
         * @return the count
         */
        public long refused() {
            return refused;
        }

        /**
         * Returns the time spent running the target, in nanoseconds.
         *
         * @return the total
         */
        public long nanos() {
            return nanos;
        }

        /**
         * Returns the longest time one input took, in nanoseconds.
         *
         * @return the maximum
         */
        public long slowestNanos() {
            return slowestNanos;
        }

        /**
         * Returns the inputs that failed uncleanly.
         *
         * @return the count
         */
        public long findings() {
            return findings;
        }
    }

    /**
     * The outcome of a run.
     *
     * @param counts per target
     * @param millis wall time
     * @param hang whether the run ended on an input that exceeded the time limit
     * @param findingFiles saved inputs of the findings
     */
    public record Report(
            Map<String, Counts> counts, long millis, boolean hang, List<Path> findingFiles) {

        /**
         * Returns the inputs tried over all targets.
         *
         * @return the total
         */
        public long inputs() {
            return counts.values().stream().mapToLong(c -> c.inputs).sum();
        }

        /**
         * Returns the findings over all targets.
         *
         * @return the total
         */
        public long findings() {
            return counts.values().stream().mapToLong(c -> c.findings).sum() + (hang ? 1 : 0);
        }
    }

    private static final String[] TOKENS = {
        "{",
        "}",
        "[",
        "]",
        "\"",
        ":",
        ",",
        "\\",
        "\\u0000",
        "\\ud800",
        "null",
        "true",
        "false",
        "\"dtype\"",
        "\"shape\"",
        "\"data_offsets\"",
        "\"__metadata__\"",
        "\"F32\"",
        "\"F16\"",
        "\"BF16\"",
        "\"F64\"",
        "\"I64\"",
        "\"I32\"",
        "\"U8\"",
        "\"BOOL\"",
        "\"F8_E4M3\"",
        "\"F8_E5M2\"",
        "\"F7\"",
        "0",
        "-0",
        "-1",
        "1",
        "2",
        "7",
        "8",
        "255",
        "256",
        "65536",
        "2147483647",
        "2147483648",
        "4294967296",
        "9223372036854775807",
        "9223372036854775808",
        "-9223372036854775808",
        "18446744073709551616",
        "1e400",
        "-1e400",
        "1.5",
        "1e-400",
        "0.0",
        "[0,0]",
        "[]",
        "{}",
        "[[[[[[[[[[[[",
        "]]]]]]]]]]]]",
        "\"model_type\"",
        "\"deepseek_v3\"",
        "\"qwen3_moe\"",
        "\"hidden_size\"",
        "\"n_routed_experts\"",
        "\"num_experts_per_tok\"",
        "\"rope_parameters\"",
        "\"weight_map\"",
        "\"../x\"",
        "\"/etc/passwd\""
    };

    private final List<Target> targets;
    private final long seed;
    private final long timeoutMillis;
    private final int maxInputBytes;
    private final Path findingsDir;
    private final PrintStream log;

    /**
     * Creates a fuzzer.
     *
     * @param targets what to fuzz
     * @param seed the random seed (a run is reproducible given the same seed and time budget)
     * @param timeoutMillis the longest one input may run
     * @param maxInputBytes the largest input produced
     * @param findingsDir where inputs of findings are saved
     * @param log where progress goes
     */
    public MutationFuzzer(
            List<Target> targets,
            long seed,
            long timeoutMillis,
            int maxInputBytes,
            Path findingsDir,
            PrintStream log) {
        if (targets.isEmpty()) {
            throw new IllegalArgumentException("no fuzz targets");
        }
        if (timeoutMillis < 1 || maxInputBytes < 16) {
            throw new IllegalArgumentException(
                    "timeout "
                            + timeoutMillis
                            + " ms must be >= 1"
                            + " and max input "
                            + maxInputBytes
                            + " bytes >= 16");
        }
        this.targets = targets;
        this.seed = seed;
        this.timeoutMillis = timeoutMillis;
        this.maxInputBytes = maxInputBytes;
        this.findingsDir = findingsDir;
        this.log = log;
    }

    /**
     * Fuzzes for a bounded time.
     *
     * @param seconds the time budget
     * @return the counts
     * @throws IOException if a finding cannot be saved
     */
    public Report run(double seconds) throws IOException {
        Random rnd = new Random(seed);
        Map<String, Counts> counts = new LinkedHashMap<>();
        Map<String, List<byte[]>> pool = new LinkedHashMap<>();
        Map<String, java.util.Set<String>> outcomes = new LinkedHashMap<>();
        for (Target t : targets) {
            counts.put(t.name(), new Counts());
            pool.put(t.name(), new ArrayList<>(t.seeds()));
            outcomes.put(t.name(), new java.util.HashSet<>());
        }
        List<Path> saved = new ArrayList<>();
        ExecutorService worker = newWorker();
        long begin = System.nanoTime();
        long end = begin + (long) (seconds * 1e9);
        long nextReport = begin + 5_000_000_000L;
        boolean hang = false;
        try {
            for (long round = 0; System.nanoTime() < end; round++) {
                Target t = targets.get((int) (round % targets.size()));
                List<byte[]> p = pool.get(t.name());
                byte[] input = mutate(rnd, p.get(rnd.nextInt(p.size())), p);
                Counts c = counts.get(t.name());
                c.inputs++;
                long t0 = System.nanoTime();
                Future<?> f =
                        worker.submit(
                                () -> {
                                    t.run(input);
                                    return null;
                                });
                String outcome;
                Throwable bad = null;
                try {
                    f.get(timeoutMillis, TimeUnit.MILLISECONDS);
                    c.accepted++;
                    outcome = "ok";
                } catch (ExecutionException e) {
                    Throwable cause = e.getCause();
                    if (t.isCleanRefusal(cause)) {
                        c.refused++;
                        outcome =
                                cause.getClass().getSimpleName() + ":" + shape(cause.getMessage());
                    } else {
                        bad = cause;
                        outcome = "finding";
                    }
                } catch (TimeoutException e) {
                    f.cancel(true);
                    hang = true;
                    c.findings++;
                    saved.add(save(t, input, "hang", "no result after " + timeoutMillis + " ms"));
                    log.printf(
                            Locale.ROOT,
                            "fuzz: %s: an input ran longer than %d ms (saved %s);" + " stopping%n",
                            t.name(),
                            timeoutMillis,
                            saved.get(saved.size() - 1));
                    break;
                } catch (InterruptedException e) {
                    Thread.currentThread().interrupt();
                    break;
                }
                long took = System.nanoTime() - t0;
                c.nanos += took;
                c.slowestNanos = Math.max(c.slowestNanos, took);
                if (bad != null) {
                    c.findings++;
                    Path file = save(t, input, bad.getClass().getSimpleName(), stack(bad));
                    saved.add(file);
                    log.printf(
                            Locale.ROOT,
                            "fuzz: %s: FINDING %s: %s (input saved to %s)%n",
                            t.name(),
                            bad.getClass().getName(),
                            bad.getMessage(),
                            file);
                    if (bad instanceof VirtualMachineError) {
                        worker.shutdownNow();
                        worker = newWorker();
                    }
                }
                // Keep inputs that reached an outcome not seen before: a crude coverage signal.
                if (outcomes.get(t.name()).add(outcome) && p.size() < 4096) {
                    p.add(input);
                }
                long now = System.nanoTime();
                if (now > nextReport) {
                    nextReport = now + 5_000_000_000L;
                    log.printf(
                            Locale.ROOT,
                            "fuzz: %.0f s, %d inputs%n",
                            (now - begin) / 1e9,
                            counts.values().stream().mapToLong(x -> x.inputs).sum());
                }
            }
        } finally {
            worker.shutdownNow();
        }
        return new Report(counts, (System.nanoTime() - begin) / 1_000_000, hang, saved);
    }

    private static ExecutorService newWorker() {
        return Executors.newSingleThreadExecutor(
                r -> {
                    // A small stack is plenty for bounded-depth parsers; deep recursion becomes a
                    // finding.
                    Thread th = new Thread(null, r, "fuzz-worker", 1 << 20);
                    th.setDaemon(true);
                    return th;
                });
    }

    /**
     * The message with digits and quoted text erased: outcomes that differ only in values merge.
     */
    private static String shape(String message) {
        if (message == null) {
            return "";
        }
        String m =
                message.replaceAll("\\d+", "#")
                        .replaceAll("'[^']*'", "''")
                        .replaceAll("\"[^\"]*\"", "\"\"");
        int colon = m.indexOf(": ");
        return colon >= 0 && m.startsWith("/") ? m.substring(colon + 2) : m;
    }

    private static String stack(Throwable t) {
        StringBuilder b = new StringBuilder(t.toString()).append('\n');
        for (StackTraceElement e : t.getStackTrace()) {
            b.append("  at ").append(e).append('\n');
        }
        return b.toString();
    }

    private Path save(Target t, byte[] input, String kind, String detail) throws IOException {
        Files.createDirectories(findingsDir);
        String base =
                t.name() + "-" + kind + "-" + Integer.toHexString(java.util.Arrays.hashCode(input));
        Path file = findingsDir.resolve(base + ".bin");
        Files.write(file, input);
        // getBytes replaces what UTF-8 cannot hold (a lone surrogate in a message).
        Files.write(findingsDir.resolve(base + ".txt"), detail.getBytes(StandardCharsets.UTF_8));
        return file;
    }

    // ---- mutations ----------------------------------------------------------------------------

    private byte[] mutate(Random r, byte[] base, List<byte[]> pool) {
        byte[] b = base.clone();
        int n = 1 + r.nextInt(4);
        for (int i = 0; i < n; i++) {
            b = mutateOnce(r, b, pool);
            if (b.length > maxInputBytes) {
                b = java.util.Arrays.copyOf(b, maxInputBytes);
            }
        }
        return b;
    }

    private static byte[] insert(byte[] b, int at, byte[] what) {
        byte[] out = new byte[b.length + what.length];
        System.arraycopy(b, 0, out, 0, at);
        System.arraycopy(what, 0, out, at, what.length);
        System.arraycopy(b, at, out, at + what.length, b.length - at);
        return out;
    }

    private static byte[] delete(byte[] b, int from, int to) {
        byte[] out = new byte[b.length - (to - from)];
        System.arraycopy(b, 0, out, 0, from);
        System.arraycopy(b, to, out, from, b.length - to);
        return out;
    }

    private byte[] mutateOnce(Random r, byte[] b, List<byte[]> pool) {
        int len = b.length;
        int at = len == 0 ? 0 : r.nextInt(len + 1);
        switch (r.nextInt(11)) {
            case 0: // bit flip
                if (len > 0) {
                    int i = r.nextInt(len);
                    b[i] ^= (byte) (1 << r.nextInt(8));
                }
                return b;
            case 1:
                { // an interesting byte
                    byte[] bytes = {
                        '{',
                        '}',
                        '[',
                        ']',
                        '"',
                        ':',
                        ',',
                        '\\',
                        '-',
                        '0',
                        '9',
                        'e',
                        '.',
                        0,
                        (byte) 0x80,
                        (byte) 0xff,
                        (byte) 0xc0,
                        ' ',
                        '\n'
                    };
                    if (len > 0) {
                        b[r.nextInt(len)] = bytes[r.nextInt(bytes.length)];
                    }
                    return b;
                }
            case 2: // a dictionary token inserted
            case 3:
                return insert(
                        b, at, TOKENS[r.nextInt(TOKENS.length)].getBytes(StandardCharsets.UTF_8));
            case 4:
                { // a dictionary token replaces a run of digits or a word
                    if (len == 0) {
                        return b;
                    }
                    int i = r.nextInt(len);
                    int j = i;
                    while (j < len
                            && (Character.isLetterOrDigit(b[j]) || b[j] == '-' || b[j] == '.')) {
                        j++;
                    }
                    byte[] tok = TOKENS[r.nextInt(TOKENS.length)].getBytes(StandardCharsets.UTF_8);
                    return insert(delete(b, i, Math.max(i, j)), i, tok);
                }
            case 5:
                { // delete a range
                    if (len == 0) {
                        return b;
                    }
                    int from = r.nextInt(len);
                    int to = Math.min(len, from + 1 + r.nextInt(Math.min(64, len - from)));
                    return delete(b, from, to);
                }
            case 6:
                { // duplicate a range
                    if (len == 0) {
                        return b;
                    }
                    int from = r.nextInt(len);
                    int to = Math.min(len, from + 1 + r.nextInt(256));
                    return insert(b, at, java.util.Arrays.copyOfRange(b, from, to));
                }
            case 7:
                { // splice with another input
                    byte[] other = pool.get(r.nextInt(pool.size()));
                    if (other.length == 0) {
                        return b;
                    }
                    int from = r.nextInt(other.length);
                    int to = Math.min(other.length, from + 1 + r.nextInt(512));
                    return insert(b, at, java.util.Arrays.copyOfRange(other, from, to));
                }
            case 8:
                { // deep nesting
                    int depth = 1 + r.nextInt(r.nextBoolean() ? 16 : 4096);
                    byte[] open = new byte[depth];
                    java.util.Arrays.fill(open, r.nextBoolean() ? (byte) '[' : (byte) '{');
                    return insert(b, at, open);
                }
            case 9: // truncate
                return java.util.Arrays.copyOf(b, len == 0 ? 0 : r.nextInt(len));
            default:
                { // overwrite 8 bytes with a little-endian boundary value (length fields)
                    long[] vals = {
                        0,
                        1,
                        2,
                        -1,
                        Long.MIN_VALUE,
                        Long.MAX_VALUE,
                        1L << 31,
                        1L << 32,
                        100L << 20,
                        (100L << 20) + 1,
                        len - 8L,
                        len - 7L,
                        len,
                        r.nextInt(1 << 16)
                    };
                    long v = vals[r.nextInt(vals.length)];
                    int i = r.nextInt(4) == 0 || len < 8 ? 0 : r.nextInt(len - 7);
                    if (len < 8) {
                        b = java.util.Arrays.copyOf(b, 8);
                    }
                    for (int k = 0; k < 8; k++) {
                        b[i + k] = (byte) (v >>> (8 * k));
                    }
                    return b;
                }
        }
    }
}
