/*
 * djl-moe: expert-parallel Mixture-of-Experts for the Deep Java Library.
 */
package dev.djlmoe.train;

import java.io.PrintStream;
import java.util.Locale;

/**
 * A one-line terminal progress bar for training: step, bar, loss, tokens per second and ETA.
 * Redraws in place on a terminal; when output is not a console (logs, CI) prints a plain line every
 * {@code plainEvery} steps instead.
 */
public final class ProgressBar {

    private static final int WIDTH = 28;

    private final PrintStream out;
    private final long total;
    private final boolean interactive;
    private final int plainEvery;
    private final long start = System.nanoTime();
    private final long stepsBefore;
    private long tokens;

    /**
     * Creates a bar.
     *
     * @param out where to print
     * @param total the number of steps
     * @param interactive redraw in place ({@code System.console() != null} for a terminal)
     * @param plainEvery steps between plain lines when not interactive
     */
    public ProgressBar(PrintStream out, long total, boolean interactive, int plainEvery) {
        this(out, total, interactive, plainEvery, 0);
    }

    /**
     * Creates a bar for a run that continues after {@code stepsBefore} finished steps (a resumed
     * run): throughput and ETA count only the steps of this process.
     *
     * @param out where to print
     * @param total the number of steps of the whole run
     * @param interactive redraw in place ({@code System.console() != null} for a terminal)
     * @param plainEvery steps between plain lines when not interactive
     * @param stepsBefore steps finished before this process started
     */
    public ProgressBar(
            PrintStream out, long total, boolean interactive, int plainEvery, long stepsBefore) {
        this.out = out;
        this.total = total;
        this.interactive = interactive;
        this.plainEvery = Math.max(1, plainEvery);
        this.stepsBefore = Math.max(0, stepsBefore);
    }

    /**
     * Reports a finished step.
     *
     * @param step the step number, 1-based
     * @param loss the step's loss
     * @param stepTokens tokens processed in the step (all ranks)
     * @param extra more text for the line, or null
     */
    public void update(long step, float loss, long stepTokens, String extra) {
        tokens += stepTokens;
        double secs = (System.nanoTime() - start) / 1e9;
        double tps = secs > 0 ? tokens / secs : 0;
        long done = step - stepsBefore;
        double eta = done > 0 ? secs / done * (total - step) : 0;
        int filled = (int) (WIDTH * step / Math.max(1, total));
        String bar = "#".repeat(filled) + "-".repeat(WIDTH - filled);
        String line =
                String.format(
                        Locale.ROOT,
                        "step %d/%d [%s] loss %.4f | %.0f tok/s | ETA %s%s",
                        step,
                        total,
                        bar,
                        loss,
                        tps,
                        formatSeconds(eta),
                        extra == null ? "" : " | " + extra);
        if (interactive) {
            out.print("\r" + line);
            if (step == total) {
                out.println();
            }
            out.flush();
        } else if (step % plainEvery == 0 || step == total || step == stepsBefore + 1) {
            out.println(line);
        }
    }

    /**
     * Formats seconds as {@code m:ss} or {@code h:mm:ss}.
     *
     * @param seconds the duration
     * @return the text
     */
    public static String formatSeconds(double seconds) {
        long s = Math.max(0, Math.round(seconds));
        if (s >= 3600) {
            return String.format(Locale.ROOT, "%d:%02d:%02d", s / 3600, s / 60 % 60, s % 60);
        }
        return String.format(Locale.ROOT, "%d:%02d", s / 60, s % 60);
    }
}
