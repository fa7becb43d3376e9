/*
 * djl-moe: expert-parallel Mixture-of-Experts for the Deep Java Library.
 */
package dev.djlmoe.dist;

import java.util.concurrent.TimeUnit;

/** A child for {@link MultiRankTest}: prints its environment, then exits or hangs. */
public final class MultiRankProbe {

    private MultiRankProbe() {}

    /**
     * Entry point.
     *
     * @param args {@code exit} (exit code = 10 * rank) or {@code hang}
     * @throws InterruptedException never in practice
     */
    public static void main(String[] args) throws InterruptedException {
        MultiRank.watchParent();
        StringBuilder b = new StringBuilder("env");
        for (String k :
                new String[] {
                    "RANK",
                    "WORLD_SIZE",
                    "LOCAL_RANK",
                    "LOCAL_WORLD_SIZE",
                    "MASTER_ADDR",
                    "DJL_OFFLINE",
                    "OPT_OUT_TRACKING",
                    "DJL_MOE_TIMEOUT_MS"
                }) {
            b.append(' ').append(k).append('=').append(System.getenv(k));
        }
        b.append(" port=").append(System.getenv("MASTER_PORT") != null);
        b.append(" token=").append(System.getenv(RankEnvironment.JOB_TOKEN) != null);
        b.append(" threads=").append(System.getProperty("ai.djl.pytorch.num_threads"));
        System.out.println(b);
        System.out.flush();
        if (args.length > 0 && args[0].equals("hang")) {
            TimeUnit.HOURS.sleep(1);
        }
        System.exit(10 * Integer.parseInt(System.getenv("RANK")));
    }
}
