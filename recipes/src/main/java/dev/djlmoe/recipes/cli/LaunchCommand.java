/*
 * djl-moe: expert-parallel Mixture-of-Experts for the Deep Java Library.
 */
package dev.djlmoe.recipes.cli;

import dev.djlmoe.recipes.launch.LaunchSpec;
import dev.djlmoe.recipes.launch.Launcher;
import java.io.IOException;
import java.net.InetAddress;
import java.net.ServerSocket;
import java.util.ArrayList;
import java.util.List;
import java.util.Map;
import java.util.concurrent.Callable;
import picocli.CommandLine;
import picocli.CommandLine.Command;
import picocli.CommandLine.Model.CommandSpec;
import picocli.CommandLine.Option;
import picocli.CommandLine.ParameterException;
import picocli.CommandLine.Parameters;
import picocli.CommandLine.ParseResult;

/**
 * {@code djl-moe launch}: starts the local ranks of an expert-parallel job, each running another
 * {@code djl-moe} sub-command (torchrun's environment contract).
 */
@Command(
        name = "launch",
        mixinStandardHelpOptions = true,
        description = {
            "Start the local ranks of an EP job.",
            "Each rank runs COMMAND with torchrun's environment (RANK, WORLD_SIZE, LOCAL_RANK,"
                    + " MASTER_ADDR, ...); its output is prefixed with [rank N]."
        },
        footer = {"", "Example:", "  djl-moe launch --nproc-per-node 4 pretrain --steps 200"})
public final class LaunchCommand implements Callable<Integer> {

    @Option(
            names = "--nproc-per-node",
            description = "ranks on this host (default ${DEFAULT-VALUE})")
    int nprocPerNode = 2;

    @Option(names = "--nnodes", description = "hosts in the job (default ${DEFAULT-VALUE})")
    int nnodes = 1;

    @Option(names = "--node-rank", description = "this host's index (default ${DEFAULT-VALUE})")
    int nodeRank;

    @Option(names = "--master-addr", description = "rank 0's address (default ${DEFAULT-VALUE})")
    String masterAddr = "127.0.0.1";

    @Option(
            names = "--master-port",
            description =
                    "rank 0's store port; 0 picks a free one (one host only; default"
                            + " ${DEFAULT-VALUE})")
    int masterPort;

    @Option(names = "--rank-heap", description = "-Xmx of each rank (default ${DEFAULT-VALUE})")
    String rankHeap = "3g";

    @Parameters(
            arity = "1..*",
            paramLabel = "COMMAND",
            description = "the djl-moe sub-command each rank runs, with its options")
    List<String> rankArgs = new ArrayList<>();

    @Override
    public Integer call() throws IOException, InterruptedException {
        if (nprocPerNode < 1) {
            throw new IllegalArgumentException(
                    "--nproc-per-node " + nprocPerNode + " must be >= 1");
        }
        if (nnodes < 1) {
            throw new IllegalArgumentException("--nnodes " + nnodes + " must be >= 1");
        }
        checkRanksFirst(rankArgs, nprocPerNode * nnodes);
        return launch(nprocPerNode, nnodes, nodeRank, masterAddr, masterPort, rankHeap, rankArgs);
    }

    /**
     * Parses the ranks' command line here and runs its {@link RankCountCheck}, so a command line or
     * an EP size that cannot work is refused once, before any rank starts.
     *
     * @param rankArgs the sub-command and its options
     * @param worldSize the job's ranks
     * @throws IllegalArgumentException naming what is wrong
     * @throws IOException when a file the check needs cannot be read
     */
    static void checkRanksFirst(List<String> rankArgs, int worldSize) throws IOException {
        CommandLine cli = new CommandLine(new Main());
        cli.getSubcommands().get("launch").setStopAtPositional(true);
        ParseResult parsed;
        try {
            parsed = cli.parseArgs(rankArgs.toArray(String[]::new));
        } catch (ParameterException e) {
            throw new IllegalArgumentException(
                    "the ranks' command '"
                            + String.join(" ", rankArgs)
                            + "' does not parse: "
                            + e.getMessage(),
                    e);
        }
        List<CommandLine> chain = parsed.asCommandLineList();
        Object command = chain.get(chain.size() - 1).getCommand();
        if (command instanceof RankCountCheck check) {
            check.checkRanks(worldSize);
        }
    }

    /**
     * Starts {@code nproc} local ranks of a one-host job running {@code rankArgs} and waits for
     * them ({@code --ep N} of the training commands).
     *
     * @param nproc ranks
     * @param rankArgs the sub-command and its options
     * @return the job's exit code
     * @throws IOException when a rank cannot start
     * @throws InterruptedException when interrupted
     */
    static int launchLocal(int nproc, List<String> rankArgs)
            throws IOException, InterruptedException {
        return launch(nproc, 1, 0, "127.0.0.1", 0, "3g", rankArgs);
    }

    private static int launch(
            int nproc,
            int nnodes,
            int nodeRank,
            String masterAddr,
            int masterPort,
            String rankHeap,
            List<String> rankArgs)
            throws IOException, InterruptedException {
        int port = masterPort;
        if (port == 0) {
            if (nnodes > 1) {
                throw new IllegalArgumentException(
                        "--master-port 0 (pick a free port) works on one host only; give a port for"
                                + " --nnodes "
                                + nnodes);
            }
            try (ServerSocket s = new ServerSocket(0, 1, InetAddress.getLoopbackAddress())) {
                port = s.getLocalPort();
            }
        }
        // Unpack DJL's native engine once here, so the ranks find a warm cache.
        CliLogging.startEngine();
        int threads = Math.max(1, Runtime.getRuntime().availableProcessors() / nproc);
        List<String> cmd = new ArrayList<>();
        cmd.add(ProcessHandle.current().info().command().orElse("java"));
        cmd.add("-Xmx" + rankHeap);
        cmd.add("-Dai.djl.offline=true");
        cmd.add("-Dai.djl.pytorch.num_threads=" + threads);
        cmd.add("-Dai.djl.pytorch.num_interop_threads=1");
        cmd.add("-cp");
        cmd.add(System.getProperty("java.class.path"));
        cmd.add(Main.class.getName());
        cmd.addAll(rankArgs);
        LaunchSpec spec = new LaunchSpec(nproc, nnodes, nodeRank, masterAddr, port, cmd, 30_000);
        // The ranks log as this process does (quiet unless --verbose or --log-level).
        String level = CliLogging.chosenName();
        Map<String, String> env = level == null ? Map.of() : Map.of(CliLogging.ENV, level);
        return new Launcher(spec, System.out, env).run();
    }

    /**
     * Handles {@code --ep N} of a training command: outside a launched job with N > 1, starts N
     * local ranks running the same command without {@code --ep}; inside one, checks that N is the
     * job's world size.
     *
     * @param ep the flag's value, or null when not given
     * @param spec the command (for its name and arguments)
     * @return the exit code of the launched job, or null when this process should train itself
     * @throws IOException when a rank cannot start
     * @throws InterruptedException when interrupted
     */
    static Integer relaunchForEp(Integer ep, CommandSpec spec)
            throws IOException, InterruptedException {
        if (ep == null) {
            return null;
        }
        if (ep < 1) {
            throw new IllegalArgumentException("--ep " + ep + " must be >= 1");
        }
        String world = System.getenv("WORLD_SIZE");
        if (world != null) {
            if (!world.trim().equals(Integer.toString(ep))) {
                throw new IllegalArgumentException(
                        "--ep "
                                + ep
                                + " but the launcher started WORLD_SIZE = "
                                + world.trim()
                                + " ranks: drop --ep or make them agree");
            }
            return null;
        }
        if (ep == 1) {
            return null;
        }
        if (spec.userObject() instanceof RankCountCheck check) {
            check.checkRanks(ep);
        }
        List<String> original = spec.commandLine().getParseResult().originalArgs();
        String name = spec.name();
        int at = original.indexOf(name);
        List<String> args = new ArrayList<>();
        args.add(name);
        for (int i = at + 1; i < original.size(); i++) {
            String a = original.get(i);
            if (a.equals("--ep")) {
                i++; // and its value
            } else if (!a.startsWith("--ep=")) {
                args.add(a);
            }
        }
        return launchLocal(ep, args);
    }
}
