/*
 * djl-moe: expert-parallel Mixture-of-Experts for the Deep Java Library.
 */
package dev.djlmoe.recipes.launch;

import java.util.concurrent.TimeUnit;

/**
 * A rank for the launcher tests (no DJL, starts fast). Prints {@code rank R pid P} to stdout and
 * {@code rank R to stderr} to stderr, then by mode:
 *
 * <ul>
 *   <li>{@code echo}: a progress line redrawn with carriage returns, then exits 0;
 *   <li>{@code sleep}: sleeps for a minute (a rank that would outlive the launcher);
 *   <li>{@code cascade}: at {@code PROBE_T0} (epoch ms) rank 1 exits 7; 500 ms later rank 0 exits 9
 *       (as a peer that fails because rank 1 died would); the others sleep.
 * </ul>
 */
public final class LauncherProbe {

    private LauncherProbe() {}

    /**
     * Entry point.
     *
     * @param args the mode
     * @throws InterruptedException never in practice
     */
    public static void main(String[] args) throws InterruptedException {
        ParentWatch.startIfLaunched();
        int rank = Integer.parseInt(System.getenv("RANK"));
        System.out.println("rank " + rank + " pid " + ProcessHandle.current().pid());
        System.out.flush();
        System.err.println("rank " + rank + " to stderr");
        System.err.flush();
        switch (args[0]) {
            case "echo":
                System.out.print("step 1/2\rstep 2/2\n");
                System.out.println(
                        "env WORLD_SIZE="
                                + System.getenv("WORLD_SIZE")
                                + " LOCAL_RANK="
                                + System.getenv("LOCAL_RANK")
                                + " DJL_OFFLINE="
                                + System.getenv("DJL_OFFLINE")
                                + " OPT_OUT_TRACKING="
                                + System.getenv("OPT_OUT_TRACKING"));
                System.exit(0);
                break;
            case "cascade":
                long t0 = Long.parseLong(System.getenv("PROBE_T0"));
                if (rank == 1) {
                    sleepUntil(t0);
                    System.exit(7);
                } else if (rank == 0) {
                    sleepUntil(t0 + 500);
                    System.exit(9);
                }
                TimeUnit.MINUTES.sleep(1);
                break;
            default:
                TimeUnit.MINUTES.sleep(1);
        }
        System.exit(0);
    }

    private static void sleepUntil(long epochMillis) throws InterruptedException {
        long left = epochMillis - System.currentTimeMillis();
        if (left > 0) {
            Thread.sleep(left);
        }
    }
}
