/*
 * djl-moe: expert-parallel Mixture-of-Experts for the Deep Java Library.
 */
package dev.djlmoe.recipes.launch;

import java.io.BufferedReader;
import java.io.IOException;
import java.io.InputStreamReader;
import java.io.PrintStream;
import java.nio.charset.StandardCharsets;
import java.security.SecureRandom;
import java.util.ArrayList;
import java.util.HexFormat;
import java.util.List;
import java.util.Map;
import java.util.concurrent.BlockingQueue;
import java.util.concurrent.LinkedBlockingQueue;
import java.util.concurrent.TimeUnit;

/**
 * Starts the local ranks of a job as child processes with the torchrun environment ({@code RANK},
 * {@code WORLD_SIZE}, {@code LOCAL_RANK}, {@code LOCAL_WORLD_SIZE}, {@code MASTER_ADDR}, {@code
 * MASTER_PORT}), forwards their output line by line with a {@code [rank N]} prefix, and propagates
 * the first failure: the other ranks are stopped (then killed after a grace period) and the
 * launcher returns that rank's exit code.
 *
 * <p>No orphans: a shutdown hook kills the ranks when the launcher is stopped, and each rank gets
 * {@code DJL_MOE_PARENT_WATCH=1}, telling it to exit when its standard input (a pipe from the
 * launcher) closes, which also covers a launcher killed by SIGKILL. Every rank also gets {@code
 * DJL_OFFLINE=true} and {@code OPT_OUT_TRACKING=true}, and a random job token ({@code
 * DJL_MOE_JOB_TOKEN}) that the rendezvous store checks.
 */
public final class Launcher {

    /** Environment variable telling a rank to exit when the launcher's pipe closes. */
    public static final String PARENT_WATCH = "DJL_MOE_PARENT_WATCH";

    /** libtorch's switch for transparent huge pages in its CPU allocator (set to 1 by default). */
    public static final String THP_ENV = "THP_MEM_ALLOC_ENABLE";

    /** Environment variable carrying the job's secret for the rendezvous store. */
    public static final String JOB_TOKEN = dev.djlmoe.dist.RankEnvironment.JOB_TOKEN;

    private final LaunchSpec spec;
    private final PrintStream out;
    private final Map<String, String> extraEnv;
    private final List<Process> children = new ArrayList<>();

    /**
     * Creates a launcher.
     *
     * @param spec what to start
     * @param out where rank output goes
     * @param extraEnv more environment for every rank
     */
    public Launcher(LaunchSpec spec, PrintStream out, Map<String, String> extraEnv) {
        spec.validate();
        this.spec = spec;
        this.out = out;
        this.extraEnv = extraEnv;
    }

    /**
     * Starts the ranks and waits for them.
     *
     * @return 0 when every rank succeeded, else the exit code of the first rank that failed
     * @throws IOException when a rank cannot be started
     * @throws InterruptedException when interrupted while waiting
     */
    public int run() throws IOException, InterruptedException {
        String token = newToken();
        Thread hook = new Thread(this::killAll, "djl-moe-launch-shutdown");
        Runtime.getRuntime().addShutdownHook(hook);
        List<Thread> pumps = new ArrayList<>();
        try {
            for (int local = 0; local < spec.nprocPerNode(); local++) {
                int rank = spec.nodeRank() * spec.nprocPerNode() + local;
                ProcessBuilder pb = new ProcessBuilder(spec.command());
                pb.redirectErrorStream(true);
                Map<String, String> env = pb.environment();
                env.putAll(extraEnv);
                env.put("RANK", Integer.toString(rank));
                env.put("WORLD_SIZE", Integer.toString(spec.worldSize()));
                env.put("LOCAL_RANK", Integer.toString(local));
                env.put("LOCAL_WORLD_SIZE", Integer.toString(spec.nprocPerNode()));
                env.put("GROUP_RANK", Integer.toString(spec.nodeRank()));
                env.put("MASTER_ADDR", spec.masterAddr());
                env.put("MASTER_PORT", Integer.toString(spec.masterPort()));
                env.put("DJL_OFFLINE", "true");
                env.put("OPT_OUT_TRACKING", "true");
                env.put(PARENT_WATCH, "1");
                // libtorch backs large CPU tensors with transparent huge pages: a fresh EP output
                // (hundreds of MB per dispatch) then costs 512x fewer page faults (measured with
                // bench ep: fp32 dispatch 4096 x 7168 on 2 ranks, 155-260 ms -> 90 ms).
                env.putIfAbsent(THP_ENV, "1");
                env.putIfAbsent(JOB_TOKEN, token);
                Process p = pb.start();
                synchronized (children) {
                    children.add(p);
                }
                Thread pump = new Thread(() -> pump(rank, p), "djl-moe-rank-" + rank + "-output");
                pump.setDaemon(true);
                pump.start();
                pumps.add(pump);
            }
            int code = waitForAll();
            for (Thread t : pumps) {
                t.join(2000);
            }
            return code;
        } finally {
            killAll();
            try {
                Runtime.getRuntime().removeShutdownHook(hook);
            } catch (IllegalStateException e) {
                // the JVM is already shutting down; the hook runs anyway
            }
        }
    }

    /**
     * Waits for the ranks in the order they exit (not in rank order: when a rank dies, its peers
     * fail within milliseconds, and the code to report is the first failure's).
     */
    private int waitForAll() throws InterruptedException {
        List<Process> running;
        synchronized (children) {
            running = new ArrayList<>(children);
        }
        BlockingQueue<Integer> exited = new LinkedBlockingQueue<>();
        for (int i = 0; i < running.size(); i++) {
            int index = i;
            running.get(i).onExit().thenRun(() -> exited.add(index));
        }
        for (int n = 0; n < running.size(); n++) {
            int i = exited.take();
            int code = running.get(i).exitValue();
            if (code != 0) {
                int rank = spec.nodeRank() * spec.nprocPerNode() + i;
                out.println(
                        "[launch] rank "
                                + rank
                                + " exited with code "
                                + code
                                + "; stopping the other ranks");
                killAll();
                return code;
            }
        }
        return 0;
    }

    /**
     * Stops every rank: SIGTERM first, which lets a training rank save a checkpoint and exit, then
     * SIGKILL for whatever is still alive after the grace period, and for the ranks' own children.
     * Runs after the first failure, on the way out of {@link #run()} and from the shutdown hook; an
     * interrupt cuts the grace period short and stays set for the caller.
     */
    private void killAll() {
        List<Process> list;
        synchronized (children) {
            list = new ArrayList<>(children);
        }
        for (Process p : list) {
            if (p.isAlive()) {
                // SIGTERM through the handle: Process.destroy() would also close the rank's
                // standard input (its parent watch would exit at once, before saving a
                // checkpoint) and output (its last lines would be lost).
                p.toHandle().destroy();
            }
        }
        long deadline = System.nanoTime() + TimeUnit.MILLISECONDS.toNanos(spec.graceMillis());
        for (Process p : list) {
            long left = deadline - System.nanoTime();
            try {
                if (left > 0) {
                    p.waitFor(left, TimeUnit.NANOSECONDS);
                }
            } catch (InterruptedException e) {
                Thread.currentThread().interrupt();
            }
            p.descendants().forEach(ProcessHandle::destroyForcibly);
            if (p.isAlive()) {
                p.destroyForcibly();
            }
        }
    }

    private void pump(int rank, Process p) {
        String prefix = "[rank " + rank + "] ";
        try (BufferedReader r =
                new BufferedReader(
                        new InputStreamReader(p.getInputStream(), StandardCharsets.UTF_8))) {
            String line;
            while ((line = r.readLine()) != null) {
                // A progress bar redraws with carriage returns: print each redraw as its own line.
                for (String part : line.split("\r")) {
                    if (!part.isEmpty()) {
                        synchronized (out) {
                            out.println(prefix + part);
                        }
                    }
                }
            }
        } catch (IOException e) {
            // the rank closed its output (it exited or was killed)
        }
    }

    private static String newToken() {
        byte[] b = new byte[16];
        new SecureRandom().nextBytes(b);
        return HexFormat.of().formatHex(b);
    }
}
