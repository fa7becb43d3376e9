/*
 * djl-moe: expert-parallel Mixture-of-Experts for the Deep Java Library.
 */
package dev.djlmoe.dist;

import ai.djl.ndarray.NDArray;
import dev.djlmoe.nativeep.NativeEp;

/**
 * The ranks of one expert-parallel job as seen by this rank (one rank = one process = one device).
 *
 * <p>Implementations own a native communicator ({@link #comm()}) over which the EP buffer runs
 * dispatch and combine, and provide the collectives that training needs. Every collective must be
 * called by all ranks in the same order.
 */
public interface ProcessGroup extends AutoCloseable {

    /**
     * Returns this rank's index in {@code [0, worldSize())}.
     *
     * @return the rank
     */
    int rank();

    /**
     * Returns the number of ranks.
     *
     * @return the world size
     */
    int worldSize();

    /**
     * Returns this rank's index among the ranks of its host.
     *
     * @return the local rank
     */
    int localRank();

    /**
     * Returns the number of ranks on this rank's host.
     *
     * @return the local world size
     */
    int localWorldSize();

    /**
     * Returns the native communicator that dispatch and combine run over.
     *
     * @return the communicator, owned by this group
     */
    NativeEp.nep_comm comm();

    /**
     * Sums a float32 or float64 array over all ranks, in place, in rank order (deterministic); a
     * GPU array is summed through host memory.
     *
     * @param array the array, the same shape on every rank
     */
    void allReduceSum(NDArray array);

    /**
     * Gathers the same number of bytes from every rank, in rank order (collective). Meant for small
     * bootstrap exchanges, such as the connection blobs of the CUDA EP buffer.
     *
     * @param mine this rank's bytes, of the same length on every rank
     * @return {@code worldSize() * mine.length} bytes, rank r's at offset {@code r * mine.length}
     * @throws IllegalArgumentException when {@code mine} is null or the ranks disagree on its
     *     length
     */
    byte[] allGather(byte[] mine);

    /** Blocks until every rank has arrived. */
    void barrier();

    /** Releases the communicator. */
    @Override
    void close();
}
