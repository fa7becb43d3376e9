/*
 * djl-moe: expert-parallel Mixture-of-Experts for the Deep Java Library.
 */
package dev.djlmoe.dist;

import java.util.Map;

/**
 * This rank's place in the job, read from the torchrun environment: {@code RANK}, {@code
 * WORLD_SIZE}, {@code LOCAL_RANK}, {@code LOCAL_WORLD_SIZE}, {@code MASTER_ADDR}, {@code
 * MASTER_PORT}, and the job token {@code DJL_MOE_JOB_TOKEN} that the store checks. Anything that
 * sets these (our {@code launch}, torchrun, SLURM scripts, Kubernetes operators) can start ranks.
 *
 * @param rank this rank
 * @param worldSize ranks in the job
 * @param localRank this rank on its host
 * @param localWorldSize ranks on this host
 * @param masterAddr the store's address
 * @param masterPort the store's port
 * @param jobToken the job's secret
 */
public record RankEnvironment(
        int rank,
        int worldSize,
        int localRank,
        int localWorldSize,
        String masterAddr,
        int masterPort,
        String jobToken) {

    /** Environment variable of the job token. */
    public static final String JOB_TOKEN = "DJL_MOE_JOB_TOKEN";

    /**
     * Reads the process environment; a process without {@code WORLD_SIZE} is a world of one.
     *
     * @return the environment
     */
    public static RankEnvironment fromSystem() {
        return from(System.getenv());
    }

    /**
     * Reads an environment map.
     *
     * @param env the variables
     * @return the environment
     * @throws IllegalArgumentException naming a missing or bad variable
     */
    public static RankEnvironment from(Map<String, String> env) {
        if (!env.containsKey("WORLD_SIZE")) {
            return new RankEnvironment(0, 1, 0, 1, "127.0.0.1", 0, "");
        }
        int world = intVar(env, "WORLD_SIZE", 1, Integer.MAX_VALUE);
        int rank = intVar(env, "RANK", 0, world - 1);
        int localWorld =
                env.containsKey("LOCAL_WORLD_SIZE")
                        ? intVar(env, "LOCAL_WORLD_SIZE", 1, world)
                        : world;
        int localRank =
                env.containsKey("LOCAL_RANK") ? intVar(env, "LOCAL_RANK", 0, localWorld - 1) : rank;
        String addr = env.getOrDefault("MASTER_ADDR", "127.0.0.1");
        int port = world > 1 ? intVar(env, "MASTER_PORT", 1, 65535) : 0;
        String token = env.getOrDefault(JOB_TOKEN, "");
        return new RankEnvironment(rank, world, localRank, localWorld, addr, port, token);
    }

    private static int intVar(Map<String, String> env, String name, int min, int max) {
        String v = env.get(name);
        if (v == null) {
            throw new IllegalArgumentException("environment variable " + name + " is not set");
        }
        int x;
        try {
            x = Integer.parseInt(v.trim());
        } catch (NumberFormatException e) {
            throw new IllegalArgumentException(
                    "environment variable " + name + " = '" + v + "' is not an integer", e);
        }
        if (x < min || x > max) {
            throw new IllegalArgumentException(
                    "environment variable "
                            + name
                            + " = "
                            + x
                            + " is outside ["
                            + min
                            + ", "
                            + max
                            + "]");
        }
        return x;
    }
}
