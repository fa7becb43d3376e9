/*
 * djl-moe: expert-parallel Mixture-of-Experts for the Deep Java Library.
 */
package dev.djlmoe.dist;

import dev.djlmoe.testing.TestDevice;
import java.io.IOException;
import java.io.UncheckedIOException;
import java.net.InetAddress;
import java.net.ServerSocket;
import java.nio.charset.StandardCharsets;
import java.nio.file.Files;
import java.nio.file.Path;
import java.nio.file.Paths;
import java.security.SecureRandom;
import java.time.Duration;
import java.util.ArrayList;
import java.util.Arrays;
import java.util.HashSet;
import java.util.HexFormat;
import java.util.LinkedHashMap;
import java.util.List;
import java.util.Locale;
import java.util.Map;
import java.util.Set;
import java.util.TreeSet;
import java.util.concurrent.TimeUnit;
import java.util.function.IntFunction;
import java.util.stream.Stream;

/**
 * Test harness for multi-process (multi-rank) tests: starts W child JVMs that run a main class on
 * the test classpath with the torchrun environment, as {@code launch} would, and returns their exit
 * codes and outputs.
 *
 * <p>Each rank gets {@code RANK}, {@code WORLD_SIZE}, {@code LOCAL_RANK}, {@code LOCAL_WORLD_SIZE},
 * {@code MASTER_ADDR=127.0.0.1}, {@code MASTER_PORT} (a free port), a random {@code
 * DJL_MOE_JOB_TOKEN}, {@code DJL_OFFLINE=true}, {@code OPT_OUT_TRACKING=true}, {@code
 * DJL_MOE_TIMEOUT_MS} and {@link #OUT_DIR} (a directory shared by the ranks for result files), and
 * runs with {@code -Xmx1g}, one PyTorch thread and the test JVM's {@code -Ddjlmoe.test.device}
 * ({@link TestDevice}); the rest of the environment (DJL's engine variables such as {@code
 * PYTORCH_LIBRARY_PATH} included) is inherited. Output (stdout and stderr merged) goes to {@code
 * rank-N.log} in that directory, never to the test JVM's own streams (which Surefire owns). A hard
 * timeout kills every child and its descendants; so does a shutdown hook of the test JVM, and
 * children that call {@link #watchParent()} exit when the test JVM dies.
 *
 * <p>{@code /dev/shm} is listed before and after a run: names of the native transport's segments
 * ({@code nep-*}) that appeared during the run and are still there after the children exited are
 * reported in {@link Result#shmLeftBehind()}.
 */
public final class MultiRank {

    /** Environment variable naming the directory where ranks may write result files. */
    public static final String OUT_DIR = "DJL_MOE_TEST_OUT";

    /** Environment variable telling a child to exit when the harness's pipe closes. */
    public static final String PARENT_WATCH = "DJL_MOE_TEST_PARENT_WATCH";

    private static final Path SHM = Paths.get("/dev/shm");
    private static final int TAIL_CHARS = 6000;

    private MultiRank() {}

    /**
     * Starts describing a run.
     *
     * @param mainClass the class whose {@code main} every rank runs
     * @param worldSize W
     * @return a builder
     */
    public static Builder builder(Class<?> mainClass, int worldSize) {
        return new Builder(mainClass, worldSize);
    }

    /**
     * In a child: exits the process when the harness's pipe on standard input closes (the test JVM
     * died), so a killed test run leaves no orphan ranks. A no-op outside the harness.
     */
    public static void watchParent() {
        if (!"1".equals(System.getenv(PARENT_WATCH))) {
            return;
        }
        Thread t =
                new Thread(
                        () -> {
                            try {
                                while (System.in.read() >= 0) {
                                    // the harness never writes
                                }
                            } catch (IOException e) {
                                // like EOF
                            }
                            Runtime.getRuntime().halt(143);
                        },
                        "multirank-parent-watch");
        t.setDaemon(true);
        t.start();
    }

    /**
     * In a child: the directory shared by the ranks of the run.
     *
     * @return the directory of {@link #OUT_DIR}
     */
    public static Path outDir() {
        String d = System.getenv(OUT_DIR);
        if (d == null) {
            throw new IllegalStateException(OUT_DIR + " is not set: not started by MultiRank");
        }
        return Paths.get(d);
    }

    /** Describes and starts a run. */
    public static final class Builder {
        private final Class<?> mainClass;
        private final int worldSize;
        private int localWorldSize = -1;
        private final List<String> args = new ArrayList<>();
        private final List<String> jvmArgs = new ArrayList<>();
        private final Map<String, String> env = new LinkedHashMap<>();
        private IntFunction<Map<String, String>> rankEnv = r -> Map.of();
        private final Set<Integer> omitted = new HashSet<>();
        private Duration timeout = Duration.ofMinutes(2);
        private long rankTimeoutMillis = 30_000;
        private String heap = "1g";
        private String name;

        private Builder(Class<?> mainClass, int worldSize) {
            if (worldSize < 1) {
                throw new IllegalArgumentException("world size " + worldSize + " must be >= 1");
            }
            this.mainClass = mainClass;
            this.worldSize = worldSize;
            this.name = mainClass.getSimpleName() + "-w" + worldSize;
        }

        /**
         * Sets the ranks per simulated host (default W: one host); ranks get {@code LOCAL_RANK =
         * rank % localWorldSize}.
         *
         * @param n the local world size
         * @return this builder
         */
        public Builder localWorldSize(int n) {
            this.localWorldSize = n;
            return this;
        }

        /**
         * Adds program arguments (the same for every rank).
         *
         * @param a the arguments
         * @return this builder
         */
        public Builder args(String... a) {
            args.addAll(Arrays.asList(a));
            return this;
        }

        /**
         * Adds JVM options.
         *
         * @param a the options
         * @return this builder
         */
        public Builder jvmArgs(String... a) {
            jvmArgs.addAll(Arrays.asList(a));
            return this;
        }

        /**
         * Sets an environment variable of every rank.
         *
         * @param key the name
         * @param value the value
         * @return this builder
         */
        public Builder env(String key, String value) {
            env.put(key, value);
            return this;
        }

        /**
         * Adds variables per rank (applied after the common ones).
         *
         * @param f rank to variables
         * @return this builder
         */
        public Builder rankEnv(IntFunction<Map<String, String>> f) {
            this.rankEnv = f;
            return this;
        }

        /**
         * Does not start this rank (a rank that never arrives).
         *
         * @param rank the rank
         * @return this builder
         */
        public Builder omitRank(int rank) {
            omitted.add(rank);
            return this;
        }

        /**
         * Sets the hard limit of the whole run, after which every child is killed (default 2 min).
         *
         * @param t the limit
         * @return this builder
         */
        public Builder timeout(Duration t) {
            this.timeout = t;
            return this;
        }

        /**
         * Sets {@code DJL_MOE_TIMEOUT_MS}, the ranks' own wait timeout (default 30 s).
         *
         * @param millis the timeout
         * @return this builder
         */
        public Builder rankTimeoutMillis(long millis) {
            this.rankTimeoutMillis = millis;
            return this;
        }

        /**
         * Sets {@code -Xmx} of each rank (default 1g).
         *
         * @param xmx e.g. {@code "1g"}
         * @return this builder
         */
        public Builder heap(String xmx) {
            this.heap = xmx;
            return this;
        }

        /**
         * Names the run (its output directory); default: main class and W.
         *
         * @param n the name
         * @return this builder
         */
        public Builder name(String n) {
            this.name = n;
            return this;
        }

        /**
         * Starts the ranks, waits for all of them (or the hard timeout) and collects the results.
         *
         * @return the result
         */
        public Result run() {
            try {
                return runChecked();
            } catch (IOException e) {
                throw new UncheckedIOException(e);
            } catch (InterruptedException e) {
                Thread.currentThread().interrupt();
                throw new IllegalStateException("interrupted while ranks were running", e);
            }
        }

        private Result runChecked() throws IOException, InterruptedException {
            int lws = localWorldSize < 0 ? worldSize : localWorldSize;
            Path base = Paths.get("target", "multirank");
            Files.createDirectories(base);
            Path dir = Files.createTempDirectory(base, name + "-").toAbsolutePath();
            int port = freePort();
            byte[] tok = new byte[16];
            new SecureRandom().nextBytes(tok);
            String token = HexFormat.of().formatHex(tok);
            Set<String> shmBefore = shmNames();

            List<String> cmd = new ArrayList<>();
            cmd.add(Paths.get(System.getProperty("java.home"), "bin", "java").toString());
            cmd.add("-Xmx" + heap);
            cmd.add("-XX:+UseSerialGC");
            cmd.add("-Dai.djl.offline=true");
            cmd.add("-Dai.djl.pytorch.num_threads=1");
            cmd.add("-Dai.djl.pytorch.num_interop_threads=1");
            cmd.add("-Dorg.slf4j.simpleLogger.defaultLogLevel=warn");
            if (System.getProperty(TestDevice.PROPERTY) != null) {
                cmd.add(TestDevice.jvmOption()); // ranks train where the test runs
            }
            cmd.addAll(jvmArgs);
            cmd.add("-cp");
            cmd.add(System.getProperty("java.class.path"));
            cmd.add(mainClass.getName());
            cmd.addAll(args);

            Process[] procs = new Process[worldSize];
            Thread hook = new Thread(() -> killAll(procs), "multirank-shutdown");
            Runtime.getRuntime().addShutdownHook(hook);
            long begin = System.nanoTime();
            boolean timedOut = false;
            int[] codes = new int[worldSize];
            long[] pids = new long[worldSize];
            Arrays.fill(pids, -1);
            try {
                for (int r = 0; r < worldSize; r++) {
                    if (omitted.contains(r)) {
                        continue;
                    }
                    ProcessBuilder pb = new ProcessBuilder(cmd);
                    pb.redirectErrorStream(true);
                    pb.redirectOutput(logFile(dir, r).toFile());
                    Map<String, String> e = pb.environment();
                    e.put("RANK", Integer.toString(r));
                    e.put("WORLD_SIZE", Integer.toString(worldSize));
                    e.put("LOCAL_RANK", Integer.toString(r % lws));
                    e.put("LOCAL_WORLD_SIZE", Integer.toString(lws));
                    e.put("MASTER_ADDR", "127.0.0.1");
                    e.put("MASTER_PORT", Integer.toString(port));
                    e.put(RankEnvironment.JOB_TOKEN, token);
                    e.put("DJL_OFFLINE", "true");
                    e.put("OPT_OUT_TRACKING", "true");
                    e.put("DJL_MOE_TIMEOUT_MS", Long.toString(rankTimeoutMillis));
                    e.put(OUT_DIR, dir.toString());
                    e.put(PARENT_WATCH, "1");
                    e.putAll(env);
                    e.putAll(rankEnv.apply(r));
                    procs[r] = pb.start();
                    pids[r] = procs[r].pid();
                }
                long deadline = begin + timeout.toNanos();
                for (int r = 0; r < worldSize; r++) {
                    if (procs[r] == null) {
                        codes[r] = Result.NOT_STARTED;
                        continue;
                    }
                    long left = deadline - System.nanoTime();
                    if (left <= 0 || !procs[r].waitFor(left, TimeUnit.NANOSECONDS)) {
                        timedOut = true;
                        break;
                    }
                    codes[r] = procs[r].exitValue();
                }
                if (timedOut) {
                    killAll(procs);
                    for (int r = 0; r < worldSize; r++) {
                        if (procs[r] == null) {
                            codes[r] = Result.NOT_STARTED;
                            continue;
                        }
                        procs[r].waitFor(10, TimeUnit.SECONDS);
                        codes[r] = procs[r].isAlive() ? Result.KILLED : procs[r].exitValue();
                    }
                }
            } finally {
                killAll(procs);
                try {
                    Runtime.getRuntime().removeShutdownHook(hook);
                } catch (IllegalStateException e) {
                    // shutting down
                }
            }
            long wall = (System.nanoTime() - begin) / 1_000_000;
            List<String> left = newShmNames(shmBefore);
            return new Result(name, dir, worldSize, codes, pids, timedOut, wall, left);
        }
    }

    /**
     * What a run produced.
     *
     * @param name the run's name
     * @param dir the shared output directory (logs and result files)
     * @param worldSize W
     * @param exitCodes per rank; {@link #NOT_STARTED} for an omitted rank
     * @param pids per rank, -1 when not started
     * @param timedOut whether the hard timeout killed the ranks
     * @param wallMillis wall time of the run
     * @param shmLeftBehind transport segments that appeared during the run and outlived it
     */
    public record Result(
            String name,
            Path dir,
            int worldSize,
            int[] exitCodes,
            long[] pids,
            boolean timedOut,
            long wallMillis,
            List<String> shmLeftBehind) {

        /** Exit code of an omitted rank. */
        public static final int NOT_STARTED = Integer.MIN_VALUE;

        /** Exit code of a rank that was still alive after being killed. */
        public static final int KILLED = Integer.MIN_VALUE + 1;

        /**
         * Returns a rank's output (stdout and stderr).
         *
         * @param rank the rank
         * @return the text, empty for an omitted rank
         */
        public String output(int rank) {
            Path f = logFile(dir, rank);
            try {
                return Files.exists(f) ? Files.readString(f, StandardCharsets.UTF_8) : "";
            } catch (IOException e) {
                throw new UncheckedIOException(e);
            }
        }

        /**
         * Returns a file in the shared output directory.
         *
         * @param fileName its name
         * @return the path
         */
        public Path file(String fileName) {
            return dir.resolve(fileName);
        }

        /**
         * Returns one rank's exit code.
         *
         * @param rank the rank
         * @return the code
         */
        public int exitCode(int rank) {
            return exitCodes[rank];
        }

        /**
         * Describes every rank: exit code and the tail of its output; for assertion messages.
         *
         * @return the description
         */
        public String describe() {
            StringBuilder b = new StringBuilder();
            b.append(
                    String.format(
                            Locale.ROOT,
                            "run %s (W=%d) in %d ms%s, logs in %s%n",
                            name,
                            worldSize,
                            wallMillis,
                            timedOut ? ", KILLED AT THE HARD TIMEOUT" : "",
                            dir));
            for (int r = 0; r < worldSize; r++) {
                b.append(describeRank(r));
            }
            return b.toString();
        }

        /**
         * Describes one rank: exit code and the tail of its output.
         *
         * @param rank the rank
         * @return the description
         */
        public String describeRank(int rank) {
            int c = exitCodes[rank];
            String code = c == NOT_STARTED ? "not started" : c == KILLED ? "killed" : "exit " + c;
            String out = output(rank);
            if (out.length() > TAIL_CHARS) {
                out = "..." + out.substring(out.length() - TAIL_CHARS);
            }
            return "---- rank " + rank + " (" + code + ") ----\n" + out + "\n";
        }

        /**
         * Throws an {@link AssertionError} with the failing ranks' output unless every started rank
         * exited with 0 before the hard timeout.
         */
        public void assertAllSucceeded() {
            StringBuilder bad = new StringBuilder();
            for (int r = 0; r < worldSize; r++) {
                int c = exitCodes[r];
                if (c != 0 && c != NOT_STARTED) {
                    bad.append(describeRank(r));
                }
            }
            if (timedOut || bad.length() > 0) {
                throw new AssertionError(
                        String.format(
                                Locale.ROOT,
                                "run %s (W=%d, %d ms)%s failed; logs in %s%n%s",
                                name,
                                worldSize,
                                wallMillis,
                                timedOut ? " hit the hard timeout and" : "",
                                dir,
                                bad));
            }
        }
    }

    private static Path logFile(Path dir, int rank) {
        return dir.resolve("rank-" + rank + ".log");
    }

    private static void killAll(Process[] procs) {
        for (Process p : procs) {
            if (p != null) {
                p.descendants().forEach(ProcessHandle::destroyForcibly);
                if (p.isAlive()) {
                    p.destroyForcibly();
                }
            }
        }
    }

    private static int freePort() throws IOException {
        try (ServerSocket s = new ServerSocket(0, 1, InetAddress.getLoopbackAddress())) {
            s.setReuseAddress(true);
            return s.getLocalPort();
        }
    }

    /**
     * Lists the native transport's shared-memory names ({@code nep-*}) in {@code /dev/shm}.
     *
     * @return the names
     */
    public static Set<String> shmNames() {
        Set<String> out = new TreeSet<>();
        if (!Files.isDirectory(SHM)) {
            return out;
        }
        try (Stream<Path> s = Files.list(SHM)) {
            s.map(p -> p.getFileName().toString())
                    .filter(n -> n.startsWith("nep-"))
                    .forEach(out::add);
        } catch (IOException e) {
            throw new UncheckedIOException(e);
        }
        return out;
    }

    /**
     * Returns the segments that are not in {@code before} and are still there after a grace period
     * (other processes' segments exist only during their set-up, a leak stays).
     *
     * @param before the names seen before the run
     * @return the names left behind
     */
    public static List<String> newShmNames(Set<String> before) {
        long deadline = System.nanoTime() + TimeUnit.SECONDS.toNanos(3);
        while (true) {
            Set<String> now = shmNames();
            now.removeAll(before);
            if (now.isEmpty() || System.nanoTime() > deadline) {
                return new ArrayList<>(now);
            }
            try {
                Thread.sleep(100);
            } catch (InterruptedException e) {
                Thread.currentThread().interrupt();
                return new ArrayList<>(now);
            }
        }
    }

    /**
     * Returns whether a process is still alive.
     *
     * @param pid the process id
     * @return true when it runs
     */
    public static boolean isAlive(long pid) {
        return ProcessHandle.of(pid).map(ProcessHandle::isAlive).orElse(false);
    }
}
