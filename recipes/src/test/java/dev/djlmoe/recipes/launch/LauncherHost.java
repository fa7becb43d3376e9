/*
 * djl-moe: expert-parallel Mixture-of-Experts for the Deep Java Library.
 */
package dev.djlmoe.recipes.launch;

import dev.djlmoe.recipes.CliProcess;
import java.util.List;
import java.util.Map;

/**
 * A launcher in its own JVM for the orphan test: runs {@link Launcher} with {@code args[0]} {@link
 * LauncherProbe} ranks in mode {@code args[1]}; the test kills this process.
 */
public final class LauncherHost {

    private LauncherHost() {}

    /**
     * Entry point.
     *
     * @param args ranks, probe mode
     * @throws Exception when the launcher fails
     */
    public static void main(String[] args) throws Exception {
        System.out.println("launcher pid " + ProcessHandle.current().pid());
        System.exit(
                new Launcher(spec(Integer.parseInt(args[0]), args[1], 30_000), System.out, Map.of())
                        .run());
    }

    /**
     * A launch of probe ranks on the loopback address.
     *
     * @param ranks ranks on this host
     * @param mode the probe mode
     * @param graceMillis how long ranks get after a failure before SIGKILL
     * @return the spec
     */
    static LaunchSpec spec(int ranks, String mode, long graceMillis) {
        List<String> cmd = CliProcess.java("64m", LauncherProbe.class, "-XX:TieredStopAtLevel=1");
        cmd.add(mode);
        return new LaunchSpec(ranks, 1, 0, "127.0.0.1", 29400, cmd, graceMillis);
    }
}
