/*
 * djl-moe: expert-parallel Mixture-of-Experts for the Deep Java Library.
 */
package dev.djlmoe.testing;

import java.io.IOException;
import java.io.PrintStream;
import java.io.PrintWriter;
import java.io.StringWriter;
import java.io.UncheckedIOException;
import java.lang.reflect.Method;
import java.nio.charset.StandardCharsets;
import java.nio.file.Files;
import java.nio.file.Path;
import java.nio.file.Paths;
import java.nio.file.StandardOpenOption;
import java.util.ArrayList;
import java.util.List;
import java.util.Locale;
import java.util.Map;
import java.util.concurrent.ConcurrentHashMap;
import org.junit.platform.engine.DiscoverySelector;
import org.junit.platform.engine.TestExecutionResult;
import org.junit.platform.engine.discovery.DiscoverySelectors;
import org.junit.platform.launcher.Launcher;
import org.junit.platform.launcher.LauncherDiscoveryRequest;
import org.junit.platform.launcher.TestExecutionListener;
import org.junit.platform.launcher.TestIdentifier;
import org.junit.platform.launcher.TestPlan;
import org.junit.platform.launcher.core.LauncherDiscoveryRequestBuilder;
import org.junit.platform.launcher.core.LauncherFactory;

/**
 * Runs chosen JUnit tests outside Maven (on a GPU host there is a Java runtime and the jars, but no
 * Maven) and prints one line per test and a verdict:
 *
 * <pre>
 * java -cp ... dev.djlmoe.testing.TestLauncher [--allow-skips] [--summary FILE] SELECTOR...
 * </pre>
 *
 * <p>A selector is a class ({@code dev.djlmoe.ep.EpBufferGpuTest}) or a class and a method name
 * ({@code dev.djlmoe.reliability.FaultInjectionTest#aRankKilledMidDispatch...}; every overload and
 * every parameterised case of that name). Each finished test prints {@code PASS}, {@code FAIL} or
 * {@code SKIP}, its class, its display name and its seconds; a failed test also prints its stack
 * trace. A class whose set-up failed counts as one failure. The last line is the verdict. Exit
 * status 0 only when no test failed, at least one passed and (unless {@code --allow-skips}) none
 * was skipped: on a GPU host a skipped test means it did not find the GPU. {@code --summary FILE}
 * appends the result lines and the verdict to FILE as well. Exit status 2 for bad arguments.
 */
public final class TestLauncher {

    private TestLauncher() {}

    /**
     * Entry point.
     *
     * @param args options and selectors
     */
    public static void main(String[] args) {
        int code;
        try {
            code = run(args, System.out);
        } catch (IllegalArgumentException e) {
            System.out.println("TestLauncher: " + e.getMessage());
            code = 2;
        }
        System.out.flush();
        System.exit(code); // engine threads (DJL's, the ranks' watchers) must not keep the JVM up
    }

    /**
     * Runs the selected tests.
     *
     * @param args options and selectors
     * @param out where the result lines go
     * @return the exit status
     * @throws IllegalArgumentException for an unknown option, a missing class or method
     */
    static int run(String[] args, PrintStream out) {
        boolean allowSkips = false;
        Path summary = null;
        List<DiscoverySelector> selectors = new ArrayList<>();
        for (int i = 0; i < args.length; i++) {
            String a = args[i];
            if (a.equals("--allow-skips")) {
                allowSkips = true;
            } else if (a.equals("--summary")) {
                if (i + 1 >= args.length) {
                    throw new IllegalArgumentException("--summary needs a file");
                }
                summary = Paths.get(args[++i]);
            } else if (a.startsWith("--")) {
                throw new IllegalArgumentException("unknown option " + a);
            } else {
                selectors.addAll(selectorsOf(a));
            }
        }
        if (selectors.isEmpty()) {
            throw new IllegalArgumentException(
                    "no test selected (give classes or Class#method selectors)");
        }
        LauncherDiscoveryRequest request =
                LauncherDiscoveryRequestBuilder.request().selectors(selectors).build();
        Launcher launcher = LauncherFactory.create();
        Listener listener = new Listener(out, summary);
        launcher.execute(request, listener);
        boolean ok =
                listener.failed == 0
                        && listener.passed > 0
                        && (allowSkips || listener.skipped == 0);
        String verdict =
                String.format(
                        Locale.ROOT,
                        "java tests (%s): %d passed, %d failed, %d skipped%s -> %s",
                        TestDevice.flag(),
                        listener.passed,
                        listener.failed,
                        listener.skipped,
                        allowSkips ? " (skips allowed)" : " (a skip counts as not passed)",
                        ok ? "PASS" : "FAIL");
        listener.line(verdict);
        return ok ? 0 : 1;
    }

    /** The selectors of one argument: a class, or every method of a name in a class. */
    static List<DiscoverySelector> selectorsOf(String arg) {
        int hash = arg.indexOf('#');
        String className = hash < 0 ? arg : arg.substring(0, hash);
        Class<?> c;
        try {
            c = Class.forName(className, false, TestLauncher.class.getClassLoader());
        } catch (ClassNotFoundException e) {
            throw new IllegalArgumentException(
                    "selector '" + arg + "': no class " + className + " on the classpath");
        }
        if (hash < 0) {
            return List.of(DiscoverySelectors.selectClass(c));
        }
        String name = arg.substring(hash + 1);
        List<DiscoverySelector> out = new ArrayList<>();
        for (Class<?> k = c; k != null && k != Object.class; k = k.getSuperclass()) {
            for (Method m : k.getDeclaredMethods()) {
                if (m.getName().equals(name)) {
                    out.add(DiscoverySelectors.selectMethod(c, m));
                }
            }
        }
        if (out.isEmpty()) {
            throw new IllegalArgumentException(
                    "selector '" + arg + "': " + className + " has no method " + name);
        }
        return out;
    }

    /** Counts and prints results as they come. */
    private static final class Listener implements TestExecutionListener {
        private final PrintStream out;
        private final Path summary;
        private final Map<String, Long> started = new ConcurrentHashMap<>();
        private TestPlan plan;
        int passed;
        int failed;
        int skipped;

        Listener(PrintStream out, Path summary) {
            this.out = out;
            this.summary = summary;
        }

        @Override
        public void testPlanExecutionStarted(TestPlan testPlan) {
            plan = testPlan;
        }

        @Override
        public void executionStarted(TestIdentifier id) {
            started.put(id.getUniqueId(), System.nanoTime());
        }

        @Override
        public void executionSkipped(TestIdentifier id, String reason) {
            if (id.isTest() || isClass(id)) {
                skipped++;
                line(String.format(Locale.ROOT, "SKIP  %s: %s", name(id), reason));
            }
        }

        @Override
        public void executionFinished(TestIdentifier id, TestExecutionResult result) {
            Long t0 = started.remove(id.getUniqueId());
            double secs = t0 == null ? 0 : (System.nanoTime() - t0) / 1e9;
            TestExecutionResult.Status s = result.getStatus();
            if (id.isTest()) {
                if (s == TestExecutionResult.Status.SUCCESSFUL) {
                    passed++;
                    line(String.format(Locale.ROOT, "PASS  %s  (%.1f s)", name(id), secs));
                } else if (s == TestExecutionResult.Status.ABORTED) {
                    skipped++;
                    line(String.format(Locale.ROOT, "SKIP  %s: %s", name(id), message(result)));
                } else {
                    failed++;
                    line(
                            String.format(
                                    Locale.ROOT,
                                    "FAIL  %s  (%.1f s): %s",
                                    name(id),
                                    secs,
                                    message(result)));
                    result.getThrowable().ifPresent(this::trace);
                }
            } else if (s != TestExecutionResult.Status.SUCCESSFUL && isClass(id)) {
                // Set-up or tear-down of a class (@BeforeAll, @AfterAll) failed or was aborted.
                if (s == TestExecutionResult.Status.ABORTED) {
                    skipped++;
                    line(
                            String.format(
                                    Locale.ROOT,
                                    "SKIP  %s (class): %s",
                                    name(id),
                                    message(result)));
                } else {
                    failed++;
                    line(
                            String.format(
                                    Locale.ROOT,
                                    "FAIL  %s (class): %s",
                                    name(id),
                                    message(result)));
                    result.getThrowable().ifPresent(this::trace);
                }
            }
        }

        private static boolean isClass(TestIdentifier id) {
            return id.getSource()
                    .map(
                            src ->
                                    src
                                            instanceof
                                            org.junit.platform.engine.support.descriptor
                                                    .ClassSource)
                    .orElse(false);
        }

        private String name(TestIdentifier id) {
            String cls =
                    id.getSource()
                            .map(
                                    src ->
                                            src
                                                            instanceof
                                                            org.junit.platform.engine.support
                                                                            .descriptor.MethodSource
                                                                    ms
                                                    ? simple(ms.getClassName())
                                                    : src
                                                                    instanceof
                                                                    org.junit.platform.engine
                                                                                    .support
                                                                                    .descriptor
                                                                                    .ClassSource
                                                                            cs
                                                            ? simple(cs.getClassName())
                                                            : "")
                            .orElse("");
            String display = id.getDisplayName();
            if (plan != null && id.isTest()) {
                // A parameterised case's display name is its arguments: add the method's name.
                TestIdentifier parent = plan.getParent(id).orElse(null);
                if (parent != null && parent.isContainer() && !isClass(parent)) {
                    display = parent.getDisplayName() + " " + display;
                }
            }
            return cls.isEmpty() ? display : cls + " > " + display;
        }

        private static String simple(String className) {
            return className.substring(className.lastIndexOf('.') + 1);
        }

        private static String message(TestExecutionResult r) {
            String m = r.getThrowable().map(Throwable::toString).orElse("(no message)");
            m = m.replace('\n', ' ');
            return m.length() > 400 ? m.substring(0, 400) + "..." : m;
        }

        private void trace(Throwable t) {
            StringWriter w = new StringWriter();
            t.printStackTrace(new PrintWriter(w));
            out.println(w);
        }

        void line(String s) {
            out.println(s);
            out.flush();
            if (summary != null) {
                try {
                    Files.writeString(
                            summary,
                            s + "\n",
                            StandardCharsets.UTF_8,
                            StandardOpenOption.CREATE,
                            StandardOpenOption.APPEND);
                } catch (IOException e) {
                    throw new UncheckedIOException(e);
                }
            }
        }
    }
}
