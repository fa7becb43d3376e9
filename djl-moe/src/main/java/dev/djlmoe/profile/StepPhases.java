/*
 * djl-moe: expert-parallel Mixture-of-Experts for the Deep Java Library.
 */
package dev.djlmoe.profile;

import java.util.ArrayDeque;
import java.util.ArrayList;
import java.util.Collections;
import java.util.Deque;
import java.util.LinkedHashMap;
import java.util.List;
import java.util.Map;

/**
 * The wall time of the named phases of one training step, each boundary taken after the device
 * finished its queued work: a diagnostic for {@code bench step --profile}.
 *
 * <p>The training code marks phases with {@link #enter} ({@code try (var p =
 * StepPhases.enter("router")) {...}}) and the step's top-level sequence with {@link #next}; both do
 * nothing, and wait for nothing, unless a recorder was {@link #start started} on the calling
 * thread, so ordinary steps run unsynchronised. Phases nest: a phase's path is its parents' names
 * and its own, joined with {@code /} ({@code forward/layer 1/mlp/dispatch}); the same path entered
 * again adds to its total and count.
 *
 * <p>For the staged backward ({@code Tape}), {@link #region} names the forward work done since the
 * previous call: the phases entered and left in between (the outermost of them, joined with {@code
 * " + "}), or, when none was, the innermost phase open now. Since a tape entry's backward walks
 * exactly the graph built between the previous entry and itself, the tape labels each walk with the
 * region of its entry, and the backward's phases carry the forward's names. A region of several
 * phases is one flat name: the phases joined with {@code " + "}, {@code /} written as {@code .}.
 *
 * <p>Not thread-safe: one recorder, used on the thread that started it.
 */
public final class StepPhases {

    private static volatile StepPhases active;

    private static final Scope NONE = () -> {};

    private final Thread thread;
    private final Runnable sync;
    private final Map<String, Total> totals = new LinkedHashMap<>();
    private final Deque<Open> open = new ArrayDeque<>();
    private final List<String> leftSinceMark = new ArrayList<>();
    private long markSeq;
    private long seq;
    private final long begin;
    private long end = -1;

    private StepPhases(Runnable sync) {
        this.thread = Thread.currentThread();
        this.sync = sync;
        waitForDevice();
        begin = System.nanoTime();
    }

    /** An open phase; closing it ends the phase. */
    @FunctionalInterface
    public interface Scope extends AutoCloseable {
        /** Ends the phase. */
        @Override
        void close();
    }

    /**
     * The time of one phase path.
     *
     * @param path the phase's path ({@code forward/layer 0/attention})
     * @param nanos its total wall time
     * @param count how often it was entered
     */
    public record Total(String path, long nanos, int count) {

        /**
         * @return the depth of the path: 0 for a top-level phase
         */
        public int depth() {
            int d = 0;
            for (int i = 0; i < path.length(); i++) {
                if (path.charAt(i) == '/') {
                    d++;
                }
            }
            return d;
        }

        /**
         * @return total wall time in milliseconds
         */
        public double millis() {
            return nanos / 1e6;
        }
    }

    private record Open(String path, long start, long seq) {}

    /**
     * Starts recording on this thread: waits for the device, then starts the clock.
     *
     * @param sync waits for the device's queued work (null: nothing to wait for, as on the CPU)
     * @return the recorder
     * @throws IllegalStateException when a recorder is already running
     */
    public static synchronized StepPhases start(Runnable sync) {
        if (active != null) {
            throw new IllegalStateException("StepPhases: a recorder is already running");
        }
        StepPhases p = new StepPhases(sync);
        active = p;
        return p;
    }

    /**
     * Ends every open phase, waits for the device, stops the clock and the recording.
     *
     * @return this recorder, with its figures final
     */
    public StepPhases stop() {
        if (end >= 0) {
            return this;
        }
        waitForDevice();
        long now = System.nanoTime();
        while (!open.isEmpty()) {
            leave(now);
        }
        end = now;
        synchronized (StepPhases.class) {
            if (active == this) {
                active = null;
            }
        }
        return this;
    }

    /**
     * Enters a phase nested in the current one, when a recorder runs on this thread.
     *
     * @param name the phase's name; a name with {@code /} nests under names that are not timed
     *     themselves
     * @return the scope to close at the phase's end (does nothing without a recorder)
     */
    public static Scope enter(String name) {
        StepPhases p = current();
        if (p == null) {
            return NONE;
        }
        p.waitForDevice();
        Open o = p.push(name, System.nanoTime());
        return () -> p.close(o);
    }

    /**
     * Ends the open top-level phase, with every phase nested in it, and starts the next one: the
     * trainer's sequence (forward, loss, backward, ...). Does nothing without a recorder on this
     * thread.
     *
     * @param name the next top-level phase, or null to end the sequence
     */
    public static void next(String name) {
        StepPhases p = current();
        if (p == null) {
            return;
        }
        p.waitForDevice();
        long now = System.nanoTime();
        while (!p.open.isEmpty()) {
            p.leave(now);
        }
        if (name != null) {
            p.push(name, now);
        }
    }

    /**
     * Names the forward work done since the previous call (see the class comment) and starts the
     * next region; null without a recorder on this thread.
     *
     * @return the region's name, its paths without their first (top-level) name, or null
     */
    public static String region() {
        StepPhases p = current();
        if (p == null) {
            return null;
        }
        String r;
        if (p.leftSinceMark.size() == 1) {
            r = p.leftSinceMark.get(0);
        } else if (!p.leftSinceMark.isEmpty()) {
            r = String.join(" + ", p.leftSinceMark).replace('/', '.');
        } else {
            r = p.open.isEmpty() ? "step" : stripTop(p.open.peek().path());
        }
        p.leftSinceMark.clear();
        p.markSeq = p.seq;
        return r;
    }

    /**
     * Returns the innermost open phase's path without its first (top-level) name; null without a
     * recorder on this thread.
     *
     * @return the path, or null
     */
    public static String currentPath() {
        StepPhases p = current();
        if (p == null) {
            return null;
        }
        return p.open.isEmpty() ? "step" : stripTop(p.open.peek().path());
    }

    /**
     * Whether a recorder runs on this thread (callers that build phase names skip the work when
     * not).
     *
     * @return true while recording on this thread
     */
    public static boolean recording() {
        return current() != null;
    }

    /**
     * Returns the phases in the order they were first entered (a phase before those nested in it).
     *
     * @return path totals
     */
    public List<Total> totals() {
        return Collections.unmodifiableList(new ArrayList<>(totals.values()));
    }

    /**
     * Returns the wall time from {@link #start} to {@link #stop}.
     *
     * @return nanoseconds (-1 before {@code stop})
     */
    public long wallNanos() {
        return end < 0 ? -1 : end - begin;
    }

    /**
     * Returns the wall time of the top-level phases together.
     *
     * @return nanoseconds
     */
    public long topLevelNanos() {
        long s = 0;
        for (Total t : totals.values()) {
            if (t.depth() == 0) {
                s += t.nanos();
            }
        }
        return s;
    }

    private static StepPhases current() {
        StepPhases p = active;
        return p != null && p.thread == Thread.currentThread() && p.end < 0 ? p : null;
    }

    private void waitForDevice() {
        if (sync != null) {
            sync.run();
        }
    }

    private Open push(String name, long now) {
        String path = open.isEmpty() ? name : open.peek().path() + "/" + name;
        Open o = new Open(path, now, ++seq);
        open.push(o);
        totals.putIfAbsent(path, new Total(path, 0, 0)); // ordered by first entry
        return o;
    }

    /** Ends {@code o} and the phases still open inside it; nothing if it already ended. */
    private void close(Open o) {
        if (current() != this || !open.contains(o)) {
            return; // already ended by next() or stop()
        }
        waitForDevice();
        long now = System.nanoTime();
        while (open.peek() != o) {
            leave(now);
        }
        leave(now);
    }

    private void leave(long now) {
        Open o = open.pop();
        totals.merge(
                o.path(),
                new Total(o.path(), now - o.start(), 1),
                (a, b) -> new Total(a.path(), a.nanos() + b.nanos(), a.count() + 1));
        if (o.seq() > markSeq) {
            // Entered and left since the mark: it replaces the regions nested in it.
            String s = stripTop(o.path());
            leftSinceMark.removeIf(r -> r.startsWith(s + "/"));
            leftSinceMark.add(s);
        }
    }

    private static String stripTop(String path) {
        int i = path.indexOf('/');
        return i < 0 ? path : path.substring(i + 1);
    }
}
