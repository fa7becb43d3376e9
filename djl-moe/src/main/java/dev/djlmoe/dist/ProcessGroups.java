/*
 * djl-moe: expert-parallel Mixture-of-Experts for the Deep Java Library.
 */
package dev.djlmoe.dist;

/** Creates the process group that the environment describes. */
public final class ProcessGroups {

    /** Default timeout of every wait, overridable with {@code DJL_MOE_TIMEOUT_MS}. */
    public static final long DEFAULT_TIMEOUT_MILLIS = 60_000;

    private ProcessGroups() {}

    /**
     * Returns a {@link LocalProcessGroup} for a world of one, else joins the job through shared
     * memory ({@link ShmProcessGroup}).
     *
     * @param env this rank's environment
     * @return the group
     */
    public static ProcessGroup create(RankEnvironment env) {
        if (env.worldSize() == 1) {
            return new LocalProcessGroup();
        }
        return new ShmProcessGroup(env, timeoutMillis());
    }

    /**
     * Returns the wait timeout: {@code DJL_MOE_TIMEOUT_MS} or {@link #DEFAULT_TIMEOUT_MILLIS}.
     *
     * @return milliseconds
     */
    public static long timeoutMillis() {
        String v = System.getenv("DJL_MOE_TIMEOUT_MS");
        if (v == null || v.isBlank()) {
            return DEFAULT_TIMEOUT_MILLIS;
        }
        try {
            long t = Long.parseLong(v.trim());
            if (t <= 0) {
                throw new IllegalArgumentException("DJL_MOE_TIMEOUT_MS = " + t + " must be > 0");
            }
            return t;
        } catch (NumberFormatException e) {
            throw new IllegalArgumentException(
                    "DJL_MOE_TIMEOUT_MS = '" + v + "' is not a number", e);
        }
    }
}
