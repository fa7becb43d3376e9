/*
 * djl-moe: expert-parallel Mixture-of-Experts for the Deep Java Library.
 */
package dev.djlmoe.recipes.bench;

import dev.djlmoe.zoo.io.Json;
import dev.djlmoe.zoo.io.JsonException;
import java.io.IOException;
import java.nio.charset.StandardCharsets;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.ArrayDeque;
import java.util.ArrayList;
import java.util.Comparator;
import java.util.Deque;
import java.util.HashMap;
import java.util.IdentityHashMap;
import java.util.LinkedHashMap;
import java.util.List;
import java.util.Locale;
import java.util.Map;
import java.util.regex.Matcher;
import java.util.regex.Pattern;

/**
 * Time per operator name in a Chrome-trace JSON of libtorch's profiler: the summary of {@code bench
 * step --profile}'s {@code trace.json}.
 *
 * <p>What the parser assumes, and checked against the traces DJL's PyTorch engine writes ({@code
 * JniUtils.stopProfile}): the file is a JSON array of events, or an object whose {@code
 * traceEvents} holds them; an operator is a complete event ({@code "ph": "X"}) with a {@code name},
 * a start {@code ts} and a duration {@code dur} in microseconds and a thread {@code tid}. Events of
 * one thread nest by time (an operator calls others: {@code aten::linear} holds {@code aten::mm}),
 * so an operator's self time is its duration less that of the events directly inside it. An event
 * is device work, not host work, when its {@code cat} is {@code kernel}, {@code gpu_memcpy} or
 * {@code gpu_memset} (Kineto's traces), or its {@code pid} or {@code tid} names CUDA, a GPU or a
 * stream; device events are summed per name apart from the host's. DJL 0.36 writes host events only
 * (its writer is the legacy profiler's, without the CUDA times), so on a GPU an operator's time
 * here is the host's: dispatch and kernel launch, and waits for the device in the operators that
 * copy to the host. Should its writer not be valid JSON (names are not escaped), the events are
 * read line by line from its fixed layout instead.
 */
public final class OperatorProfile {

    /** Event categories of device work in Kineto's traces. */
    private static final List<String> DEVICE_CATEGORIES =
            List.of("kernel", "gpu_memcpy", "gpu_memset");

    private static final Pattern LEGACY_EVENT =
            Pattern.compile(
                    "\"name\":\\s*\"(.*)\",\\s*\\n"
                            + "\\s*\"ph\":\\s*\"X\",\\s*\\n"
                            + "\\s*\"ts\":\\s*([-+.0-9eE]+),\\s*\\n"
                            + "\\s*\"dur\":\\s*([-+.0-9eE]+),\\s*\\n"
                            + "\\s*\"tid\":\\s*([-0-9]+)");

    private final List<Op> ops;
    private final List<Op> deviceOps;
    private final int events;
    private final double hostMicros;
    private final int threads;

    /**
     * The figures of one operator (or, for device events, one kernel) name.
     *
     * @param name the name
     * @param count its events
     * @param totalMicros the sum of their durations (nested calls of the same name counted again)
     * @param selfMicros the sum of their durations less the events directly inside them
     */
    public record Op(String name, int count, double totalMicros, double selfMicros) {}

    private record Event(String name, String thread, double ts, double dur) {}

    private OperatorProfile(
            List<Op> ops, List<Op> deviceOps, int events, double hostMicros, int threads) {
        this.threads = threads;
        this.ops = ops;
        this.deviceOps = deviceOps;
        this.events = events;
        this.hostMicros = hostMicros;
    }

    /**
     * Reads a trace file.
     *
     * @param trace the Chrome-trace JSON
     * @return its summary
     * @throws IOException when the file cannot be read
     * @throws IllegalArgumentException when it holds no operator event
     */
    public static OperatorProfile read(Path trace) throws IOException {
        return parse(Files.readString(trace, StandardCharsets.UTF_8), trace.toString());
    }

    /**
     * Summarises a trace's text.
     *
     * @param text the Chrome-trace JSON
     * @param source what it is, for messages
     * @return its summary
     * @throws IllegalArgumentException when it holds no operator event
     */
    public static OperatorProfile parse(String text, String source) {
        List<Event> host = new ArrayList<>();
        List<Event> device = new ArrayList<>();
        try {
            Object root = Json.parse(text, source, 16);
            Object list = root instanceof Map<?, ?> m ? m.get("traceEvents") : root;
            if (!(list instanceof List<?> l)) {
                throw new IllegalArgumentException(
                        source + ": not a Chrome trace (no event array at the top level)");
            }
            for (Object o : l) {
                if (o instanceof Map<?, ?> e) {
                    addEvent(e, host, device);
                }
            }
        } catch (JsonException e) {
            Matcher m = LEGACY_EVENT.matcher(text);
            while (m.find()) {
                host.add(
                        new Event(
                                m.group(1),
                                m.group(4),
                                Double.parseDouble(m.group(2)),
                                Double.parseDouble(m.group(3))));
            }
            if (host.isEmpty()) {
                throw new IllegalArgumentException(
                        source
                                + ": neither JSON nor the profiler's event layout: "
                                + e.getMessage(),
                        e);
            }
        }
        if (host.isEmpty() && device.isEmpty()) {
            throw new IllegalArgumentException(
                    source + ": no operator events (\"ph\": \"X\" with a name and a duration)");
        }
        double[] outer = {0};
        List<Op> ops = summarise(host, outer);
        List<Op> dev = summarise(device, new double[1]);
        int threads = (int) host.stream().map(Event::thread).distinct().count();
        return new OperatorProfile(ops, dev, host.size() + device.size(), outer[0], threads);
    }

    private static void addEvent(Map<?, ?> e, List<Event> host, List<Event> device) {
        if (!"X".equals(e.get("ph")) || !(e.get("name") instanceof String name)) {
            return;
        }
        if (!(e.get("ts") instanceof Number ts) || !(e.get("dur") instanceof Number dur)) {
            return;
        }
        String pid = String.valueOf(e.get("pid"));
        String tid = String.valueOf(e.get("tid"));
        Event ev = new Event(name, pid + "/" + tid, ts.doubleValue(), dur.doubleValue());
        Object cat = e.get("cat");
        String where = (pid + " " + tid).toLowerCase(Locale.ROOT);
        boolean onDevice =
                (cat instanceof String c && DEVICE_CATEGORIES.contains(c.toLowerCase(Locale.ROOT)))
                        || where.contains("cuda")
                        || where.contains("gpu")
                        || where.contains("stream");
        (onDevice ? device : host).add(ev);
    }

    /**
     * Sums the events per name; {@code outer[0]} receives the time of the outermost events (those
     * inside no other of their thread).
     */
    private static List<Op> summarise(List<Event> events, double[] outer) {
        Map<String, List<Event>> byThread = new LinkedHashMap<>();
        for (Event e : events) {
            byThread.computeIfAbsent(e.thread(), k -> new ArrayList<>()).add(e);
        }
        Map<String, double[]> sums = new HashMap<>(); // count, total, self
        for (List<Event> thread : byThread.values()) {
            thread.sort(
                    Comparator.comparingDouble(Event::ts)
                            .thenComparing(Comparator.comparingDouble(Event::dur).reversed()));
            Deque<Event> stack = new ArrayDeque<>();
            Map<Event, Double> children = new IdentityHashMap<>();
            for (Event e : thread) {
                while (!stack.isEmpty() && !inside(e, stack.peek())) {
                    stack.pop();
                }
                if (stack.isEmpty()) {
                    outer[0] += e.dur();
                } else {
                    children.merge(stack.peek(), e.dur(), Double::sum);
                }
                stack.push(e);
            }
            for (Event e : thread) {
                double[] s = sums.computeIfAbsent(e.name(), k -> new double[3]);
                s[0]++;
                s[1] += e.dur();
                s[2] += Math.max(0, e.dur() - children.getOrDefault(e, 0.0));
            }
        }
        List<Op> out = new ArrayList<>();
        for (var s : sums.entrySet()) {
            double[] v = s.getValue();
            out.add(new Op(s.getKey(), (int) v[0], v[1], v[2]));
        }
        out.sort(Comparator.comparingDouble(Op::selfMicros).reversed());
        return out;
    }

    /**
     * Whether {@code e} lies inside {@code outer} (times in microseconds, rounded by the writer).
     */
    private static boolean inside(Event e, Event outer) {
        double eps = 1e-3;
        return e.ts() >= outer.ts() - eps && e.ts() + e.dur() <= outer.ts() + outer.dur() + eps;
    }

    /**
     * Returns the host's operators, the largest self time first.
     *
     * @return the operators
     */
    public List<Op> ops() {
        return ops;
    }

    /**
     * Returns the device's events per name (kernels, copies), the largest time first; empty when
     * the trace has none (DJL 0.36's writer).
     *
     * @return the device events
     */
    public List<Op> deviceOps() {
        return deviceOps;
    }

    /**
     * Whether the trace holds device events.
     *
     * @return true when {@link #deviceOps()} is not empty
     */
    public boolean hasDeviceTimes() {
        return !deviceOps.isEmpty();
    }

    /**
     * Returns the number of events read.
     *
     * @return the count
     */
    public int events() {
        return events;
    }

    /**
     * Returns the host's time inside operators: the durations of the outermost events of each
     * thread, summed over threads.
     *
     * @return microseconds
     */
    public double hostMicros() {
        return hostMicros;
    }

    /**
     * Returns the number of host threads with operator events (on a GPU the backward runs on the
     * autograd engine's thread of the device).
     *
     * @return the count
     */
    public int threads() {
        return threads;
    }

    /**
     * The table of the largest entries: the device's when the trace has device events, else the
     * host operators' by self time.
     *
     * @param n how many rows
     * @param stepMillis the wall time of the profiled step, for the shares
     * @return the table's lines
     */
    public List<String> table(int n, double stepMillis) {
        List<String> lines = new ArrayList<>();
        boolean dev = hasDeviceTimes();
        List<Op> rows = dev ? deviceOps : ops;
        lines.add(
                String.format(
                        Locale.ROOT,
                        "%-52s %7s %11s %11s %7s",
                        dev ? "device event (kernel, copy)" : "operator (host time)",
                        "calls",
                        dev ? "time ms" : "self ms",
                        "total ms",
                        "% step"));
        for (int i = 0; i < Math.min(n, rows.size()); i++) {
            Op o = rows.get(i);
            lines.add(
                    String.format(
                            Locale.ROOT,
                            "%-52s %7d %11.3f %11.3f %6.1f%%",
                            shorten(o.name(), 52),
                            o.count(),
                            o.selfMicros() / 1e3,
                            o.totalMicros() / 1e3,
                            100 * o.selfMicros() / 1e3 / stepMillis));
        }
        return lines;
    }

    /**
     * The largest entries as JSON-ready maps.
     *
     * @param n how many
     * @param stepMillis the wall time of the profiled step, for the shares
     * @return the rows
     */
    public List<Object> toList(int n, double stepMillis) {
        List<Object> out = new ArrayList<>();
        List<Op> rows = hasDeviceTimes() ? deviceOps : ops;
        for (int i = 0; i < Math.min(n, rows.size()); i++) {
            Op o = rows.get(i);
            Map<String, Object> m = new LinkedHashMap<>();
            m.put("name", o.name());
            m.put("calls", (long) o.count());
            m.put("self_ms", o.selfMicros() / 1e3);
            m.put("total_ms", o.totalMicros() / 1e3);
            m.put("share_of_step", o.selfMicros() / 1e3 / stepMillis);
            out.add(m);
        }
        return out;
    }

    private static String shorten(String s, int n) {
        return s.length() <= n ? s : s.substring(0, n - 3) + "...";
    }
}
