/*
 * djl-moe: expert-parallel Mixture-of-Experts for the Deep Java Library.
 */
package dev.djlmoe.recipes.reliability;

import java.io.IOException;
import java.io.PrintStream;
import java.io.RandomAccessFile;
import java.nio.file.Path;
import java.util.Locale;

/**
 * Deterministic fault injection for reliability tests, switched on by the environment (the launcher
 * passes its environment to every rank) and inert otherwise.
 *
 * <p>{@value #CHECKPOINT_KILL}{@code =RANK:STEP}: while saving the checkpoint of step {@code STEP},
 * rank {@code RANK} writes its model shard and its optimizer file, cuts the optimizer file to half
 * its length (a torn write) and kills itself with SIGKILL, before the barrier that precedes the
 * checkpoint's manifest: the save is interrupted in the middle, with files of the checkpoint on
 * disk and no clean-up of any kind in that process.
 */
public final class FaultInjection {

    /** Environment variable of the checkpoint-save fault: {@code RANK:STEP}. */
    public static final String CHECKPOINT_KILL = "DJL_MOE_FAULT_KILL_IN_CHECKPOINT";

    private FaultInjection() {}

    /**
     * Called by every rank during a checkpoint save, after writing its own files: kills this
     * process when {@value #CHECKPOINT_KILL} names this rank and step.
     *
     * @param rank this rank
     * @param step the step being saved
     * @param ownFile a file this rank has just written into the partial checkpoint
     */
    public static void duringCheckpointSave(int rank, long step, Path ownFile) {
        String spec = System.getenv(CHECKPOINT_KILL);
        if (spec == null || spec.isBlank()) {
            return;
        }
        String[] parts = spec.strip().split(":");
        long[] v = new long[2];
        try {
            if (parts.length != 2) {
                throw new NumberFormatException("two fields");
            }
            v[0] = Long.parseLong(parts[0]);
            v[1] = Long.parseLong(parts[1]);
        } catch (NumberFormatException e) {
            throw new IllegalArgumentException(
                    CHECKPOINT_KILL + "=" + spec + ": expected RANK:STEP, e.g. 1:4", e);
        }
        if (v[0] != rank || v[1] != step) {
            return;
        }
        try (RandomAccessFile f = new RandomAccessFile(ownFile.toFile(), "rw")) {
            f.setLength(f.length() / 2);
        } catch (IOException e) {
            // the kill below still interrupts the save
        }
        PrintStream out = System.out;
        out.printf(
                Locale.ROOT,
                "fault injection: rank %d kills itself (SIGKILL) while saving"
                        + " the checkpoint of step %d%n",
                rank,
                step);
        out.flush();
        killSelf();
    }

    /** SIGKILL to this process; does not return. */
    private static void killSelf() {
        try {
            new ProcessBuilder("sh", "-c", "kill -KILL " + ProcessHandle.current().pid())
                    .inheritIO()
                    .start()
                    .waitFor();
            Thread.sleep(60_000);
        } catch (IOException | InterruptedException e) {
            Thread.currentThread().interrupt();
        }
        Runtime.getRuntime().halt(137);
    }
}
