/*
 * djl-moe: expert-parallel Mixture-of-Experts for the Deep Java Library.
 */
package dev.djlmoe.recipes;

import static org.junit.jupiter.api.Assertions.assertTrue;

import dev.djlmoe.dist.MultiRank;
import dev.djlmoe.recipes.cli.Main;
import java.io.IOException;
import java.nio.charset.StandardCharsets;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.ArrayList;
import java.util.List;
import java.util.Map;
import java.util.concurrent.TimeUnit;
import java.util.regex.Matcher;
import java.util.regex.Pattern;

/**
 * Child JVMs on this test run's class path, for tests that need processes of their own: a launcher
 * and its ranks, a process killed on purpose, logging that is set up once per process.
 */
public final class CliProcess {

    private CliProcess() {}

    /** A finished {@link #run}: its exit code, its output (standard error included), its time. */
    public record Run(int code, String out, long millis) {}

    /**
     * The command line of a JVM that runs {@code mainClass}: {@code java -Xmx<heap> <jvmOptions>
     * -cp <this class path> <mainClass>}.
     *
     * @param heap the -Xmx value, e.g. {@code "256m"}
     * @param mainClass the class whose {@code main} runs
     * @param jvmOptions more JVM options
     * @return a mutable list, for the program's arguments to follow
     */
    public static List<String> java(String heap, Class<?> mainClass, String... jvmOptions) {
        List<String> cmd = new ArrayList<>();
        cmd.add(ProcessHandle.current().info().command().orElse("java"));
        cmd.add("-Xmx" + heap);
        cmd.addAll(List.of(jvmOptions));
        cmd.add("-cp");
        cmd.add(System.getProperty("java.class.path"));
        cmd.add(mainClass.getName());
        return cmd;
    }

    /**
     * The command line of {@code djl-moe args} in a JVM of its own (DJL offline).
     *
     * @param heap the -Xmx value
     * @param args the command and its options
     * @return a mutable list
     */
    public static List<String> cli(String heap, List<String> args) {
        List<String> cmd = java(heap, Main.class, "-Dai.djl.offline=true");
        cmd.addAll(args);
        return cmd;
    }

    /**
     * The environment that sends the temporary files of every JVM of a job (the launcher and its
     * ranks) to one directory, so a test can check that none is left.
     *
     * @param tmp the directory
     * @return {@code JAVA_TOOL_OPTIONS} and {@code TMPDIR}
     */
    public static Map<String, String> tmpdirEnv(Path tmp) {
        return Map.of(
                "JAVA_TOOL_OPTIONS",
                "-Djava.io.tmpdir=" + tmp.toAbsolutePath(),
                "TMPDIR",
                tmp.toAbsolutePath().toString());
    }

    /**
     * Runs {@code djl-moe args} in a child JVM with {@code DJL_OFFLINE} and {@code
     * OPT_OUT_TRACKING} set, its output going to {@code log}, and fails the test when it does not
     * finish in time. The process and every process it started are killed on the way out.
     *
     * @param log where the output goes
     * @param heap the -Xmx value
     * @param args the command and its options
     * @param env more environment
     * @param timeoutMillis how long it may take
     * @return the finished run
     * @throws IOException when the process cannot start or its log cannot be read
     * @throws InterruptedException when interrupted while waiting
     */
    public static Run run(
            Path log, String heap, List<String> args, Map<String, String> env, long timeoutMillis)
            throws IOException, InterruptedException {
        ProcessBuilder pb = new ProcessBuilder(cli(heap, args));
        pb.environment().put("DJL_OFFLINE", "true");
        pb.environment().put("OPT_OUT_TRACKING", "true");
        pb.environment().putAll(env);
        pb.redirectErrorStream(true);
        pb.redirectOutput(log.toFile());
        long begin = System.nanoTime();
        Process p = pb.start();
        try {
            assertTrue(
                    p.waitFor(timeoutMillis, TimeUnit.MILLISECONDS),
                    "'djl-moe "
                            + String.join(" ", args)
                            + "' did not finish in "
                            + timeoutMillis
                            + " ms\n"
                            + read(log));
        } finally {
            p.descendants().forEach(ProcessHandle::destroyForcibly);
            p.destroyForcibly();
        }
        long millis = (System.nanoTime() - begin) / 1_000_000;
        return new Run(p.exitValue(), read(log), millis);
    }

    /**
     * The process ids a job printed: group 2 of every match of {@code line} in {@code out}.
     *
     * @param line a pattern whose second group is a pid
     * @param out the job's output
     * @return the pids, in the order printed
     */
    public static List<Long> pids(Pattern line, String out) {
        List<Long> pids = new ArrayList<>();
        Matcher m = line.matcher(out);
        while (m.find()) {
            pids.add(Long.parseLong(m.group(2)));
        }
        return pids;
    }

    /**
     * Waits until none of the processes is alive.
     *
     * @param pids the process ids
     * @param millis how long to wait at the most
     * @return whether they all died in time
     * @throws InterruptedException when interrupted while waiting
     */
    public static boolean allDead(List<Long> pids, long millis) throws InterruptedException {
        long deadline = System.nanoTime() + TimeUnit.MILLISECONDS.toNanos(millis);
        while (System.nanoTime() < deadline) {
            if (pids.stream().noneMatch(MultiRank::isAlive)) {
                return true;
            }
            Thread.sleep(50);
        }
        return pids.stream().noneMatch(MultiRank::isAlive);
    }

    private static String read(Path p) throws IOException {
        return Files.readString(p, StandardCharsets.UTF_8);
    }
}
