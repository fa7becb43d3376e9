/*
 * djl-moe: expert-parallel Mixture-of-Experts for the Deep Java Library.
 */
package dev.djlmoe.ep;

/**
 * The routing of one dispatch as a backend keeps it (the native handle of the CPU engine or of the
 * CUDA plug-in), behind the public {@link EpHandle}. Counts are host values; the methods that
 * return arrays copy them out.
 */
interface EpRouting extends AutoCloseable {

    /**
     * Returns T, the tokens this rank dispatched.
     *
     * @return T
     */
    long numTokens();

    /**
     * Returns R, the rows this rank receives.
     *
     * @return R
     */
    long numRecv();

    /**
     * Returns K.
     *
     * @return K
     */
    int numTopk();

    /**
     * Returns E.
     *
     * @return E
     */
    int numExperts();

    /**
     * Returns E / W.
     *
     * @return the local expert count
     */
    int numLocalExperts();

    /**
     * Returns W.
     *
     * @return the world size
     */
    int worldSize();

    /**
     * Returns the rows received per local expert.
     *
     * @param aligned true for counts padded to the alignment of the notify
     * @return {@code [E/W]}
     */
    int[] recvTokensPerExpert(boolean aligned);

    /**
     * Returns the rank prefix matrix, row-major: {@code [i * W + j]} = rows ranks {@code 0..i} send
     * to rank {@code j}.
     *
     * @return {@code [W * W]}
     */
    int[] rankPrefixMatrix();

    /**
     * Returns the source token index of each received row.
     *
     * @return {@code [R]}
     */
    int[] recvSrcIdx();

    /**
     * Returns whether each token goes to each rank, row-major.
     *
     * @return {@code [T * W]} as 0/1
     */
    byte[] isTokenInRank();

    /**
     * Returns whether the native handle is released.
     *
     * @return true when closed
     */
    boolean isClosed();

    /** Releases the native handle (idempotent). */
    @Override
    void close();
}
