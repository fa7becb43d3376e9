/*
 * djl-moe: expert-parallel Mixture-of-Experts for the Deep Java Library.
 */
package dev.djlmoe.recipes.cli;

import ai.djl.engine.Engine;
import dev.djlmoe.recipes.launch.LaunchSpec;
import dev.djlmoe.recipes.launch.Launcher;
import java.io.IOException;
import java.net.InetAddress;
import java.net.ServerSocket;
import java.util.ArrayList;
import java.util.List;
import java.util.Map;
import java.util.concurrent.Callable;
import picocli.CommandLine.Command;
import picocli.CommandLine.Option;
import picocli.CommandLine.Parameters;

/**
 * {@code djl-moe launch}: starts the local ranks of an expert-parallel job, each running another
 * {@code djl-moe} sub-command (torchrun's environment contract).
 */
@Command(
        name = "launch",
        mixinStandardHelpOptions = true,
        description = {
            "Start the local ranks of an EP job, e.g.:",
            "  djl-moe launch --nproc-per-node 4 pretrain --steps 200"
        })
public final class LaunchCommand implements Callable<Integer> {

    @Option(names = "--nproc-per-node", description = "ranks on this host (default ${DEFAULT-VALUE})")
    int nprocPerNode = 2;

    @Option(names = "--nnodes", description = "hosts in the job (default ${DEFAULT-VALUE})")
    int nnodes = 1;

    @Option(names = "--node-rank", description = "this host's index (default ${DEFAULT-VALUE})")
    int nodeRank;

    @Option(names = "--master-addr", description = "rank 0's address (default ${DEFAULT-VALUE})")
    String masterAddr = "127.0.0.1";

    @Option(
            names = "--master-port",
            description = "rank 0's store port; 0 picks a free one (one host only; default ${DEFAULT-VALUE})")
    int masterPort;

    @Option(names = "--rank-heap", description = "-Xmx of each rank (default ${DEFAULT-VALUE})")
    String rankHeap = "3g";

    @Parameters(arity = "1..*", paramLabel = "COMMAND", description = "the djl-moe sub-command each rank runs, with its options")
    List<String> rankArgs = new ArrayList<>();

    @Override
    public Integer call() throws IOException, InterruptedException {
        int port = masterPort;
        if (port == 0) {
            if (nnodes > 1) {
                throw new IllegalArgumentException(
                        "--master-port 0 (pick a free port) works on one host only; give a port for"
                                + " --nnodes " + nnodes);
            }
            try (ServerSocket s = new ServerSocket(0, 1, InetAddress.getLoopbackAddress())) {
                port = s.getLocalPort();
            }
        }
        // Unpack DJL's native engine once here, so the ranks find a warm cache.
        Engine.getInstance();
        int threads = Math.max(1, Runtime.getRuntime().availableProcessors() / nprocPerNode);
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
        LaunchSpec spec =
                new LaunchSpec(nprocPerNode, nnodes, nodeRank, masterAddr, port, cmd, 30_000);
        return new Launcher(spec, System.out, Map.of()).run();
    }
}
