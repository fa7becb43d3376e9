/*
 * djl-moe: expert-parallel Mixture-of-Experts for the Deep Java Library.
 */
package dev.djlmoe.train;

import ai.djl.Device;
import ai.djl.ndarray.NDArray;
import ai.djl.ndarray.NDList;
import ai.djl.ndarray.NDManager;
import ai.djl.ndarray.index.NDIndex;
import ai.djl.ndarray.types.DataType;
import ai.djl.ndarray.types.Shape;
import dev.djlmoe.dist.ProcessGroup;

/**
 * One rank's share of a global batch, and the way back: the rows of the other ranks gathered into a
 * global array.
 *
 * <p>Sharding rule: every array of a global batch of {@code B} rows (axis 0) is cut into {@code W}
 * contiguous blocks, rank {@code r} taking rows {@code [floor(r B / W), floor((r + 1) B / W))}, so
 * shares differ by at most one row and the blocks in rank order are the batch. {@code B} must be at
 * least {@code W}: every rank takes part in every step's dispatch with at least one row.
 *
 * <p>Gathering places each rank's rows at its offset of a zero array of the global shape and sums
 * it over the ranks (all-reduce): adding zeros is exact, so the result is bit for bit the
 * concatenation on every rank. Float32 arrays travel as they are; other types travel as float64
 * (integers exact up to 2^53) and are converted back.
 */
final class BatchShard {

    private final int rank;
    private final int worldSize;
    private final long rows;
    private final long begin;
    private final long end;

    /**
     * Creates the share of rank {@code rank} of a batch of {@code rows} rows.
     *
     * @param rows B, rows of the global batch
     * @param rank r
     * @param worldSize W
     */
    BatchShard(long rows, int rank, int worldSize) {
        if (rows < worldSize) {
            throw new IllegalArgumentException(
                    "global batch of "
                            + rows
                            + " rows is smaller than the world size "
                            + worldSize
                            + ": every rank needs at least one row");
        }
        this.rank = rank;
        this.worldSize = worldSize;
        this.rows = rows;
        this.begin = start(rank);
        this.end = start(rank + 1);
    }

    private long start(int r) {
        return Math.floorDiv(r * rows, worldSize);
    }

    /**
     * Returns the first row of this rank's share.
     *
     * @return {@code floor(r B / W)}
     */
    long begin() {
        return begin;
    }

    /**
     * Returns one past the last row of this rank's share.
     *
     * @return {@code floor((r + 1) B / W)}
     */
    long end() {
        return end;
    }

    /**
     * Cuts this rank's rows out of every array and moves them to {@code device}.
     *
     * @param global arrays of the global batch, {@code B} rows each
     * @param device the trainer's device
     * @return this rank's rows
     */
    NDList take(NDList global, Device device) {
        NDList out = new NDList(global.size());
        for (NDArray a : global) {
            checkRows(a, "batch array");
            NDArray part = worldSize == 1 ? a : a.get(new NDIndex("{}:{}", begin, end));
            out.add(part.toDevice(device, false));
        }
        return out;
    }

    /**
     * Gathers every rank's rows into arrays of {@code B} rows (collective: every rank calls it with
     * arrays of the same count, trailing shapes and types).
     *
     * @param mine this rank's arrays, {@code end() - begin()} rows each
     * @param group the ranks, or null for one rank
     * @param manager the manager of the gathered arrays
     * @return the global arrays, identical on every rank
     */
    NDList gather(NDList mine, ProcessGroup group, NDManager manager) {
        if (group == null || group.worldSize() == 1) {
            return mine;
        }
        NDList out = new NDList(mine.size());
        for (NDArray a : mine) {
            out.add(gather(a, group, manager));
        }
        return out;
    }

    private NDArray gather(NDArray a, ProcessGroup group, NDManager manager) {
        Shape s = a.getShape();
        if (s.dimension() == 0 || s.get(0) != end - begin) {
            throw new IllegalArgumentException(
                    "rank "
                            + rank
                            + ": array of shape "
                            + s
                            + " does not have this rank's "
                            + (end - begin)
                            + " rows on axis 0");
        }
        DataType type = a.getDataType();
        DataType wire = type == DataType.FLOAT32 ? DataType.FLOAT32 : DataType.FLOAT64;
        Shape globalShape = new Shape(rows).addAll(s.slice(1));
        NDArray global = manager.zeros(globalShape, wire, a.getDevice());
        try (NDArray cast = a.toType(wire, true)) {
            global.set(new NDIndex("{}:{}", begin, end), cast);
        }
        group.allReduceSum(global);
        if (wire == type) {
            return global;
        }
        NDArray back = global.toType(type, false);
        global.close();
        return back;
    }

    private void checkRows(NDArray a, String what) {
        Shape s = a.getShape();
        if (s.dimension() == 0 || s.get(0) != rows) {
            throw new IllegalArgumentException(
                    what + " of shape " + s + " does not have the batch's " + rows + " rows");
        }
    }
}
