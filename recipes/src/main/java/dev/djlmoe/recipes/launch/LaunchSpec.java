/*
 * djl-moe: expert-parallel Mixture-of-Experts for the Deep Java Library.
 */
package dev.djlmoe.recipes.launch;

import java.util.List;

/**
 * What {@link Launcher} starts on this host.
 *
 * @param nprocPerNode ranks on this host
 * @param nnodes hosts in the job
 * @param nodeRank this host's index
 * @param masterAddr address of rank 0's rendezvous store (loopback for one host)
 * @param masterPort its port
 * @param command the command each rank runs (the first element is the program)
 * @param graceMillis how long ranks get to exit after a failure before they are killed
 */
public record LaunchSpec(
        int nprocPerNode,
        int nnodes,
        int nodeRank,
        String masterAddr,
        int masterPort,
        List<String> command,
        long graceMillis) {

    /**
     * Checks the settings.
     *
     * @throws IllegalArgumentException naming the bad option, its value and the limit
     */
    public void validate() {
        if (nprocPerNode < 1) {
            throw new IllegalArgumentException(
                    "--nproc-per-node " + nprocPerNode + " must be >= 1");
        }
        if (nnodes < 1) {
            throw new IllegalArgumentException("--nnodes " + nnodes + " must be >= 1");
        }
        if (nodeRank < 0 || nodeRank >= nnodes) {
            throw new IllegalArgumentException(
                    "--node-rank " + nodeRank + " is outside [0, " + nnodes + ")");
        }
        if (masterPort < 1 || masterPort > 65535) {
            throw new IllegalArgumentException(
                    "--master-port " + masterPort + " is outside [1, 65535]");
        }
        if (masterAddr == null || masterAddr.isBlank()) {
            throw new IllegalArgumentException("--master-addr must not be empty");
        }
        if (command == null || command.isEmpty()) {
            throw new IllegalArgumentException("no command to launch");
        }
    }

    /**
     * Returns the number of ranks in the job.
     *
     * @return {@code nnodes * nprocPerNode}
     */
    public int worldSize() {
        return nnodes * nprocPerNode;
    }
}
