/*
 * djl-moe: expert-parallel Mixture-of-Experts for the Deep Java Library.
 */
package dev.djlmoe.recipes.bench;

import ai.djl.pytorch.jni.JniUtils;
import dev.djlmoe.profile.StepPhases;
import dev.djlmoe.zoo.io.SafetensorsWriter;
import java.io.IOException;
import java.io.PrintStream;
import java.io.UncheckedIOException;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.ArrayList;
import java.util.LinkedHashMap;
import java.util.List;
import java.util.Locale;
import java.util.Map;
import java.util.regex.Pattern;

/**
 * The profile of {@code bench step --profile DIR}: two extra steps after the timed ones, whose
 * figures are not among the timed steps'.
 *
 * <ol>
 *   <li>The phase step: {@link StepPhases} records the wall time of the step's phases (the
 *       trainer's forward, loss, staged backward, gradients, optimizer, balancing; per decoder
 *       layer its attention and MLP; per MoE layer its router, dispatch, experts, combine and
 *       shared experts; the backward's stretches named after the forward regions they
 *       differentiate), the device waited for at every boundary, so each phase holds its own device
 *       work. The waits slow the step a little; the timed steps have none.
 *   <li>The operator step: libtorch's profiler ({@link JniUtils#startProfile}) records every torch
 *       operator of the step into {@code DIR/trace.json} (a Chrome trace), summarised per operator
 *       by {@link OperatorProfile} into {@code DIR/ops.txt}. No phase waits in this step, so the
 *       operators' times are not those of the waits.
 * </ol>
 *
 * <p>{@code DIR/phases.txt} lists every phase. Our native kernels (EP dispatch and combine, the FP8
 * GEMMs, the one-pass AdamW) are not torch operators: the trace does not see them, the phases do.
 */
public final class StepProfile {

    /** The trace's file name in the profile directory. */
    public static final String TRACE = "trace.json";

    /** The operator table's file name. */
    public static final String OPS = "ops.txt";

    /** The phase table's file name. */
    public static final String PHASES = "phases.txt";

    /** Operators in {@code ops.txt} and the JSON. */
    public static final int TOP_OPS = 25;

    /** Operators printed. */
    public static final int PRINTED_OPS = 10;

    private static final Pattern LAYER = Pattern.compile("layer \\d+[/.]");
    private static final Pattern LAYER_END = Pattern.compile("layer \\d+$");

    private final Path dir;
    private final boolean gpu;
    private StepPhases phases;
    private long opStart;
    private boolean profiling;
    private double opStepMillis = Double.NaN;
    private OperatorProfile ops;
    private double timedMeanMillis = Double.NaN;
    private String error;

    private StepProfile(Path dir, boolean gpu) {
        this.dir = dir;
        this.gpu = gpu;
    }

    /**
     * Creates the directory if need be and checks that files can be written in it, before any
     * training.
     *
     * @param dir the profile directory
     * @param gpu whether the step runs on a GPU
     * @return the profile, to be filled by the two extra steps
     * @throws IllegalArgumentException naming the directory and why it cannot be written to
     */
    public static StepProfile prepare(Path dir, boolean gpu) {
        try {
            Files.createDirectories(dir);
            Path probe = Files.createTempFile(dir, ".write-check", ".tmp");
            Files.delete(probe);
        } catch (IOException | SecurityException e) {
            throw new IllegalArgumentException(
                    "--profile "
                            + dir
                            + ": cannot write the profile there ("
                            + e.getClass().getSimpleName()
                            + ": "
                            + e.getMessage()
                            + ")",
                    e);
        }
        return new StepProfile(dir, gpu);
    }

    /**
     * Starts the phase step: call at the end of the last timed step.
     *
     * @param sync waits for the device (null on the CPU)
     */
    public void startPhases(Runnable sync) {
        phases = StepPhases.start(sync);
    }

    /**
     * Ends the phase step and starts the operator step (the profiler on).
     *
     * @param sync waits for the device (null on the CPU)
     */
    public void startOperators(Runnable sync) {
        phases.stop();
        // The legacy profiler's CUDA mode records CUDA events that DJL's trace writer never reads
        // (it writes host times only): CPU mode, without their cost.
        JniUtils.startProfile(false, true, false);
        profiling = true;
        if (sync != null) {
            sync.run();
        }
        opStart = System.nanoTime();
    }

    /**
     * Ends the operator step: writes the trace and reads it back.
     *
     * @param sync waits for the device (null on the CPU)
     * @param timedMean the timed steps' mean wall time, ms, printed beside the profiled steps'
     */
    public void finish(Runnable sync, double timedMean) {
        if (sync != null) {
            sync.run();
        }
        opStepMillis = (System.nanoTime() - opStart) / 1e6;
        Path trace = dir.resolve(TRACE);
        profiling = false;
        JniUtils.stopProfile(trace.toString());
        timedMeanMillis = timedMean;
        try {
            ops = OperatorProfile.read(trace);
            SafetensorsWriter.writeTextAtomically(
                    dir.resolve(PHASES), String.join("\n", phaseLines(false)) + "\n");
            SafetensorsWriter.writeTextAtomically(
                    dir.resolve(OPS), String.join("\n", opsLines(TOP_OPS)) + "\n");
        } catch (IOException e) {
            throw new UncheckedIOException("--profile " + dir + ": " + e.getMessage(), e);
        }
    }

    /** Stops the recorders if a step failed between {@link #startPhases} and {@link #finish}. */
    public void abandon() {
        if (phases != null) {
            phases.stop();
        }
        if (profiling) {
            profiling = false;
            try {
                JniUtils.stopProfile(dir.resolve(TRACE).toString());
            } catch (RuntimeException e) {
                // the profiler was not running
            }
        }
    }

    /**
     * Records that a profiled step failed: the recorders are stopped, the report and the JSON give
     * the error instead of figures, and the timed steps' figures stand.
     *
     * @param e the failure
     */
    public void failed(Throwable e) {
        abandon();
        String m = e.getClass().getSimpleName() + ": " + e.getMessage();
        int nl = m.indexOf('\n');
        error = nl < 0 ? m : m.substring(0, nl);
    }

    /**
     * Returns why the profile failed.
     *
     * @return the error's first line, or null when the profile was made
     */
    public String error() {
        return error;
    }

    /**
     * Returns the phase step's wall time.
     *
     * @return ms
     */
    public double phaseStepMillis() {
        return phases.wallNanos() / 1e6;
    }

    /**
     * Returns the operator step's wall time.
     *
     * @return ms
     */
    public double operatorStepMillis() {
        return opStepMillis;
    }

    /**
     * Returns the phases of the phase step.
     *
     * @return the phase totals, in the order first entered
     */
    public List<StepPhases.Total> phases() {
        return phases.totals();
    }

    /**
     * Returns the operator summary of the operator step.
     *
     * @return the summary
     */
    public OperatorProfile operators() {
        return ops;
    }

    /**
     * Returns the directory.
     *
     * @return the profile directory
     */
    public Path dir() {
        return dir;
    }

    /**
     * Returns the time of the phase step outside the trainer's top-level phases: the recipe's loop
     * (the next batch, the schedule, the progress) around the trainer's step.
     *
     * @return ms
     */
    public double outsideMillis() {
        return (phases.wallNanos() - phases.topLevelNanos()) / 1e6;
    }

    /**
     * Prints the short report: the phases with the layers summed, and the top operators.
     *
     * @param out where it goes
     */
    public void print(PrintStream out) {
        if (error != null) {
            out.println("profile: failed (the timed steps' figures stand): " + error);
            return;
        }
        for (String l : phaseLines(true)) {
            out.println(l);
        }
        for (String l : opsLines(PRINTED_OPS)) {
            out.println(l);
        }
        out.println("  profile dir   " + dir + " (" + TRACE + ", " + PHASES + ", " + OPS + ")");
    }

    /** The phase table: every path ({@code summed} false) or the layers summed. */
    private List<String> phaseLines(boolean summed) {
        double wall = phaseStepMillis();
        List<String> lines = new ArrayList<>();
        lines.add(
                String.format(
                        Locale.ROOT,
                        "profile: phases of one extra step, the device waited for at each boundary:"
                                + " %.1f ms (timed steps' mean %.1f ms)%s",
                        wall,
                        timedMeanMillis,
                        summed ? "; the layers summed" : ""));
        lines.add(
                String.format(
                        Locale.ROOT, "  %-58s %10s %7s %6s", "phase", "ms", "% step", "calls"));
        for (Row r : summed ? summedRows() : rows()) {
            lines.add(
                    String.format(
                            Locale.ROOT,
                            "  %-58s %10.2f %6.1f%% %6d",
                            shorten("  ".repeat(r.depth) + r.name, 58),
                            r.nanos / 1e6,
                            100 * r.nanos / 1e6 / wall,
                            r.count));
        }
        lines.add(
                String.format(
                        Locale.ROOT,
                        "  %-58s %10.2f %6.1f%%",
                        "outside the trainer's step (batch, schedule, loop)",
                        outsideMillis(),
                        100 * outsideMillis() / wall));
        lines.add(
                "  forward rows nest (a layer holds attention and mlp; an MoE mlp holds norm,"
                    + " router, dispatch, experts, combine, shared experts); backward rows are the"
                    + " staged backward's stretches, each named after the forward region it"
                    + " differentiates (dispatch, combine: their VJP, the exchange the other way;"
                    + " router, experts, ...: the autograd walk through them; the first: the walk"
                    + " from the loss) and do not nest");
        return lines;
    }

    private List<String> opsLines(int n) {
        List<String> lines = new ArrayList<>();
        lines.add(
                String.format(
                        Locale.ROOT,
                        "profile: torch operators of a second extra step under libtorch's profiler:"
                                + " %.1f ms; %d events; host time inside operators %.1f ms (%.1f%%"
                                + " of that step; outermost operators, summed over %d thread%s)",
                        opStepMillis,
                        ops.events(),
                        ops.hostMicros() / 1e3,
                        100 * ops.hostMicros() / 1e3 / opStepMillis,
                        ops.threads(),
                        ops.threads() == 1 ? "" : "s"));
        for (String l : ops.table(n, opStepMillis)) {
            lines.add("  " + l);
        }
        lines.add(
                "  "
                        + (ops.hasDeviceTimes()
                                ? "device times from the trace's device events"
                                : gpu
                                        ? "host times only (DJL's trace has no device times): an"
                                                + " operator's time is its dispatch and launch, or"
                                                + " its wait for the device in copies to the host;"
                                                + " the phases hold the device time"
                                        : "CPU times (self: less the operators called inside)")
                        + "; our native kernels (EP dispatch and combine, FP8 GEMMs, one-pass"
                        + " AdamW) are not torch operators: only the phases see them");
        return lines;
    }

    /**
     * The figures as JSON-ready keys and values.
     *
     * @return the map
     */
    public Map<String, Object> toMap() {
        Map<String, Object> m = new LinkedHashMap<>();
        m.put("dir", dir.toString());
        if (error != null) {
            m.put("error", error);
            return m;
        }
        m.put("phase_step_ms", phaseStepMillis());
        m.put("outside_trainer_ms", outsideMillis());
        List<Object> ph = new ArrayList<>();
        for (Row r : rows()) {
            Map<String, Object> p = new LinkedHashMap<>();
            p.put("path", r.path);
            p.put("ms", r.nanos / 1e6);
            p.put("share_of_step", r.nanos / 1e6 / phaseStepMillis());
            p.put("calls", (long) r.count);
            ph.add(p);
        }
        m.put("phases", ph);
        m.put("operator_step_ms", opStepMillis);
        m.put("trace", dir.resolve(TRACE).toString());
        m.put("trace_events", (long) ops.events());
        m.put("trace_device_times", ops.hasDeviceTimes());
        m.put("host_ms_in_operators", ops.hostMicros() / 1e3);
        m.put("host_threads", (long) ops.threads());
        m.put("ops", ops.toList(TOP_OPS, opStepMillis));
        m.put(
                "note",
                "phases: one step with the device waited for at each phase boundary; ops: another"
                        + " step under libtorch's profiler, "
                        + (ops.hasDeviceTimes() ? "device times" : "host times (self ms)")
                        + "; our native kernels are not torch operators");
        return m;
    }

    private record Row(String path, String name, int depth, long nanos, int count) {}

    private List<Row> rows() {
        List<Row> out = new ArrayList<>();
        for (StepPhases.Total t : phases.totals()) {
            int depth = t.depth();
            String name = depth == 0 ? t.path() : t.path().substring(t.path().indexOf('/') + 1);
            out.add(new Row(t.path(), name, Math.min(depth, 1), t.nanos(), t.count()));
        }
        return out;
    }

    /** The phases with {@code layer N} taken out of their paths, the same rest summed. */
    private List<Row> summedRows() {
        Map<String, long[]> sums = new LinkedHashMap<>();
        for (StepPhases.Total t : phases.totals()) {
            String p = LAYER.matcher(t.path()).replaceAll("");
            if (LAYER_END.matcher(p).find()) {
                if (p.startsWith("forward/")) {
                    continue; // a layer's forward: its attention and mlp are listed
                }
                // A backward stretch named after a layer only: its residual tail.
                p = LAYER_END.matcher(p).replaceAll("layer residual");
            }
            long[] s = sums.computeIfAbsent(p, k -> new long[2]);
            s[0] += t.nanos();
            s[1] += t.count();
        }
        List<Row> out = new ArrayList<>();
        for (var e : sums.entrySet()) {
            String p = e.getKey();
            int slash = p.indexOf('/');
            out.add(
                    new Row(
                            p,
                            slash < 0 ? p : p.substring(slash + 1),
                            slash < 0 ? 0 : 1,
                            e.getValue()[0],
                            (int) e.getValue()[1]));
        }
        return out;
    }

    private static String shorten(String s, int n) {
        return s.length() <= n ? s : s.substring(0, n - 3) + "...";
    }
}
