/*
 * djl-moe: expert-parallel Mixture-of-Experts for the Deep Java Library.
 */
package dev.djlmoe.recipes.launch;

import java.io.IOException;
import java.io.InputStream;

/**
 * In a rank started by {@link Launcher}: exits the process when the launcher's pipe on standard
 * input closes, so a launcher that dies (even by SIGKILL) leaves no orphan ranks.
 */
public final class ParentWatch {

    private ParentWatch() {}

    /** Starts the watch when the launcher asked for it ({@code DJL_MOE_PARENT_WATCH=1}). */
    public static void startIfLaunched() {
        if (!"1".equals(System.getenv(Launcher.PARENT_WATCH))) {
            return;
        }
        Thread t =
                new Thread(
                        () -> {
                            InputStream in = System.in;
                            try {
                                while (in.read() >= 0) {
                                    // the launcher never writes; keep reading until EOF
                                }
                            } catch (IOException e) {
                                // treat a broken pipe like EOF
                            }
                            System.err.println(
                                    "djl-moe: the launcher is gone (its pipe closed); exiting");
                            Runtime.getRuntime().halt(143);
                        },
                        "djl-moe-parent-watch");
        t.setDaemon(true);
        t.start();
    }
}
