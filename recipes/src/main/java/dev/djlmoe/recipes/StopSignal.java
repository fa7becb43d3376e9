/*
 * djl-moe: expert-parallel Mixture-of-Experts for the Deep Java Library.
 */
package dev.djlmoe.recipes;

import java.util.concurrent.atomic.AtomicInteger;
import java.util.concurrent.atomic.AtomicReference;
import sun.misc.Signal;

/**
 * Turns SIGINT (Ctrl-C) and SIGTERM into a request that the training loop sees between steps, so a
 * run can save a checkpoint and exit cleanly instead of dying mid-step. The same signal a second
 * time exits at once (status 130). A different signal after the first (Ctrl-C reaches a rank from
 * the terminal, then SIGTERM from {@code launch}, which stops its ranks that way) is the same
 * request.
 */
public final class StopSignal {

    private final AtomicInteger signals = new AtomicInteger();
    private final AtomicReference<String> first = new AtomicReference<>();

    private StopSignal() {}

    /**
     * Installs the handlers for SIGINT and SIGTERM.
     *
     * @return the signal to poll
     */
    public static StopSignal install() {
        StopSignal s = new StopSignal();
        for (String name : new String[] {"INT", "TERM"}) {
            try {
                Signal.handle(new Signal(name), sig -> s.onSignal(sig.getName()));
            } catch (IllegalArgumentException e) {
                // the signal is reserved on this platform: keep the JVM's default behaviour
            }
        }
        return s;
    }

    /**
     * Returns a signal that is never raised (for runs inside tests).
     *
     * @return a quiet signal
     */
    public static StopSignal none() {
        return new StopSignal();
    }

    private void onSignal(String name) {
        String before = first.compareAndExchange(null, name);
        if (before != null && before.equals(name)) {
            System.err.println("djl-moe: second SIG" + name + ", exiting without saving");
            Runtime.getRuntime().halt(130);
        }
        if (signals.incrementAndGet() == 1) {
            System.err.println(
                    "djl-moe: SIG"
                            + name
                            + " received, stopping after this step"
                            + " (a checkpoint is written); send it again to exit at once");
        }
    }

    /**
     * Returns whether a stop was requested.
     *
     * @return true after the first signal
     */
    public boolean requested() {
        return signals.get() > 0;
    }

    /** Requests a stop as a signal would (for tests). */
    public void request() {
        signals.compareAndSet(0, 1);
    }
}
