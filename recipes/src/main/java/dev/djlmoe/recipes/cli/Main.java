/*
 * djl-moe: expert-parallel Mixture-of-Experts for the Deep Java Library.
 */
package dev.djlmoe.recipes.cli;

import dev.djlmoe.recipes.launch.ParentWatch;
import picocli.CommandLine;
import picocli.CommandLine.Command;

/**
 * The {@code djl-moe} command-line tool. Without arguments it runs the embedded default: {@code
 * launch --nproc-per-node 2 pretrain}.
 */
@Command(
        name = "djl-moe",
        mixinStandardHelpOptions = true,
        version = "djl-moe 0.1.0",
        description = "Expert-parallel Mixture-of-Experts training for the JVM.",
        subcommands = {PretrainCommand.class, BenchCommand.class, LaunchCommand.class, PlotCommand.class, StudyCommand.class})
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
        CommandLine cli = new CommandLine(new Main());
        // Everything after launch's first positional argument belongs to the ranks' command.
        cli.getSubcommands().get("launch").setStopAtPositional(true);
        int code = cli.execute(args);
        System.exit(code);
    }

    @Override
    public void run() {
        new CommandLine(this).usage(System.out);
    }
}
