/*
 * djl-moe: expert-parallel Mixture-of-Experts for the Deep Java Library.
 */
package dev.djlmoe.recipes.cli;

import dev.djlmoe.core.EpPeerException;
import dev.djlmoe.core.EpTimeoutException;
import dev.djlmoe.recipes.launch.ParentWatch;
import dev.djlmoe.train.NonFiniteGradientException;
import java.io.PrintWriter;
import java.io.UncheckedIOException;
import java.nio.file.AccessDeniedException;
import java.nio.file.NoSuchFileException;
import picocli.CommandLine;
import picocli.CommandLine.Command;
import picocli.CommandLine.Option;
import picocli.CommandLine.ParameterException;
import picocli.CommandLine.ParseResult;
import picocli.CommandLine.RunLast;
import picocli.CommandLine.ScopeType;
import picocli.CommandLine.UnmatchedArgumentException;

/**
 * The {@code djl-moe} command-line tool. Without arguments it runs the embedded default: {@code
 * launch --nproc-per-node 2 pretrain}.
 *
 * <p>Exit codes: 0 success, 1 an error in the run (the message names what is wrong), 2 a bad
 * command line.
 */
@Command(
        name = "djl-moe",
        mixinStandardHelpOptions = true,
        version = "djl-moe 0.1.0",
        description = "Expert-parallel Mixture-of-Experts training for the JVM.",
        subcommands = {
            PretrainCommand.class,
            FinetuneCommand.class,
            DecodeCommand.class,
            PlanCommand.class,
            BenchCommand.class,
            LaunchCommand.class,
            PlotCommand.class,
            StudyCommand.class,
            FuzzCommand.class,
            SoakCommand.class
        })
public final class Main implements Runnable {

    /** Commands that never start DJL's engine in this process. */
    private static final java.util.Set<String> WITHOUT_ENGINE =
            java.util.Set.of("plan", "plot", "fuzz", "launch");

    @Option(
            names = "--verbose",
            scope = ScopeType.INHERIT,
            description =
                    "show the start-up and library log lines that are hidden by default"
                            + " (DJL's engine, libtorch warnings); same as --log-level info")
    boolean verbose;

    @Option(
            names = "--log-level",
            paramLabel = "LEVEL",
            scope = ScopeType.INHERIT,
            description =
                    "log level of the libraries: error, warn, info, debug, trace (default:"
                            + " quiet; the environment variable "
                            + CliLogging.ENV
                            + " sets it too)")
    String logLevel;

    /**
     * Entry point.
     *
     * @param args the command line
     */
    public static void main(String[] args) {
        ParentWatch.startIfLaunched();
        if (args.length == 0) {
            // The embedded default: the tiny model pre-trained with 2 EP ranks on this host.
            args = new String[] {"launch", "--nproc-per-node", "2", "pretrain"};
        }
        int code =
                execute(new PrintWriter(System.out, true), new PrintWriter(System.err, true), args);
        System.exit(code);
    }

    /**
     * Runs a command line without exiting the JVM (tests, embedding).
     *
     * @param out standard output of picocli (help, version)
     * @param err where errors go
     * @param args the command line
     * @return the exit code
     */
    public static int execute(PrintWriter out, PrintWriter err, String... args) {
        CommandLine cli = new CommandLine(new Main());
        cli.setOut(out);
        cli.setErr(err);
        // Everything after launch's first positional argument belongs to the ranks' command.
        cli.getSubcommands().get("launch").setStopAtPositional(true);
        cli.setParameterExceptionHandler(Main::badCommandLine);
        cli.setExecutionStrategy(Main::runQuietly);
        cli.setExecutionExceptionHandler(
                (e, cmd, parsed) -> {
                    String what = cmd.getCommandSpec().qualifiedName();
                    String msg = userMessage(e);
                    String failure = msg == null ? jobFailure(e) : null;
                    if (msg != null) {
                        cmd.getErr().println(what + ": error: " + msg);
                    } else if (failure != null) {
                        cmd.getErr().println(what + ": failed: " + failure);
                    } else {
                        cmd.getErr().println(what + ": internal error: " + e);
                        e.printStackTrace(cmd.getErr());
                    }
                    cmd.getErr().flush();
                    return 1;
                });
        return cli.execute(args);
    }

    private static int badCommandLine(ParameterException e, String[] args) {
        CommandLine cmd = e.getCommandLine();
        PrintWriter err = cmd.getErr();
        String what = cmd.getCommandSpec().qualifiedName();
        err.println(what + ": error: " + e.getMessage());
        UnmatchedArgumentException.printSuggestions(e, err);
        err.println("Try '" + what + " --help' for the options.");
        err.flush();
        return 2;
    }

    /**
     * Runs the parsed command after setting the log level (before any logger exists) and, for
     * commands that use it, starting DJL's engine with libtorch's warnings at that level.
     */
    private static int runQuietly(ParseResult parsed) {
        String flag = null;
        boolean loud = false;
        String top = null;
        for (ParseResult p = parsed; p != null; p = p.subcommand()) {
            if (p.hasMatchedOption("--log-level")) {
                flag = p.matchedOptionValue("--log-level", (String) null);
            }
            loud |= p.hasMatchedOption("--verbose");
            if (top == null && p != parsed) {
                top = p.commandSpec().name();
            }
        }
        CommandLine cmd = parsed.commandSpec().commandLine();
        try {
            CliLogging.configure(CliLogging.resolve(flag, loud, System.getenv(CliLogging.ENV)));
        } catch (IllegalArgumentException e) {
            throw new ParameterException(cmd, e.getMessage(), e);
        }
        boolean help = false;
        for (ParseResult p = parsed; p != null; p = p.subcommand()) {
            help |= p.isUsageHelpRequested() || p.isVersionHelpRequested();
        }
        if (top != null && !help && !WITHOUT_ENGINE.contains(top)) {
            CommandLine last =
                    parsed.asCommandLineList().get(parsed.asCommandLineList().size() - 1);
            try {
                CliLogging.startEngine();
            } catch (RuntimeException | LinkageError e) {
                throw new CommandLine.ExecutionException(
                        last, "DJL's PyTorch engine did not" + " start: " + e.getMessage(), e);
            }
        }
        return new RunLast().execute(parsed);
    }

    /** The message of an error the user can fix, or null for an internal error. */
    static String userMessage(Throwable e) {
        for (Throwable t = e; t != null; t = t.getCause()) {
            if (t instanceof IllegalArgumentException) {
                return t.getMessage();
            }
            if (t instanceof NoSuchFileException) {
                return t.getMessage() + ": no such file";
            }
            if (t instanceof AccessDeniedException) {
                return t.getMessage() + ": permission denied";
            }
            if (t instanceof java.io.IOException) {
                return t.getMessage();
            }
            if (!(t instanceof UncheckedIOException)
                    && !(t instanceof RuntimeException && t.getClass() == RuntimeException.class)) {
                break;
            }
        }
        return null;
    }

    /**
     * The message of a failure of the job rather than of this program (a peer rank that died or
     * failed, a wait that timed out), or null: such failures name the rank and operation themselves
     * and need no stack trace.
     */
    static String jobFailure(Throwable e) {
        for (Throwable t = e; t != null; t = t.getCause()) {
            if (t instanceof EpPeerException
                    || t instanceof EpTimeoutException
                    || t instanceof NonFiniteGradientException) {
                return t.getMessage();
            }
        }
        return null;
    }

    @Override
    public void run() {
        new CommandLine(this).usage(System.out);
    }
}
