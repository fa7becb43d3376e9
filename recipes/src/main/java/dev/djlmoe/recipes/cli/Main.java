/*
 * djl-moe: expert-parallel Mixture-of-Experts for the Deep Java Library.
 */
package dev.djlmoe.recipes.cli;

import dev.djlmoe.ep.EpPeerException;
import dev.djlmoe.ep.EpTimeoutException;
import dev.djlmoe.recipes.launch.ParentWatch;
import dev.djlmoe.train.NonFiniteGradientException;
import java.io.PrintWriter;
import java.io.UncheckedIOException;
import java.nio.file.AccessDeniedException;
import java.nio.file.NoSuchFileException;
import picocli.CommandLine;
import picocli.CommandLine.Command;
import picocli.CommandLine.ParameterException;
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
        int code = execute(new PrintWriter(System.out, true), new PrintWriter(System.err, true),
                args);
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
        cli.setExecutionExceptionHandler(
                (e, cmd, parsed) -> {
                    String what = cmd.getCommandName();
                    String msg = userMessage(e);
                    String failure = msg == null ? jobFailure(e) : null;
                    if (msg != null) {
                        cmd.getErr().println("djl-moe " + what + ": error: " + msg);
                    } else if (failure != null) {
                        cmd.getErr().println("djl-moe " + what + ": failed: " + failure);
                    } else {
                        cmd.getErr().println("djl-moe " + what + ": internal error: " + e);
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
        err.println("djl-moe " + cmd.getCommandName() + ": error: " + e.getMessage());
        UnmatchedArgumentException.printSuggestions(e, err);
        err.println("Try 'djl-moe " + (cmd.getParent() == null ? "" : cmd.getCommandName() + " ")
                + "--help' for the options.");
        err.flush();
        return 2;
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
            if (!(t instanceof UncheckedIOException) && !(t instanceof RuntimeException
                    && t.getClass() == RuntimeException.class)) {
                break;
            }
        }
        return null;
    }

    /**
     * The message of a failure of the job rather than of this program (a peer rank that died or
     * failed, a wait that timed out), or null: such failures name the rank and operation
     * themselves and need no stack trace.
     */
    static String jobFailure(Throwable e) {
        for (Throwable t = e; t != null; t = t.getCause()) {
            if (t instanceof EpPeerException || t instanceof EpTimeoutException
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
