/*
 * djl-moe: expert-parallel Mixture-of-Experts for the Deep Java Library.
 */
package dev.djlmoe.ep;

import ai.djl.Device;
import ai.djl.ndarray.NDArray;
import dev.djlmoe.core.NativeCall;

/**
 * One engine behind {@link EpBuffer}: the CPU engine ({@link CpuBackend}) or the CUDA plug-in
 * ({@link CudaBackend}), chosen by the device of a call's arrays.
 *
 * <p>{@link EpBuffer} checks every argument (shapes, dtypes, devices, handle ownership) and
 * allocates the outputs on the backend's device before it calls a backend; a backend turns the
 * arrays into native addresses, runs the native call and turns a native failure into the exception
 * of its status ({@link NativeCall#exception}). Arrays that may be null are optional.
 */
interface EpBackend extends AutoCloseable {

    /**
     * Returns the device whose arrays this backend takes.
     *
     * @return the device
     */
    Device device();

    /**
     * Writes the layout of {@code topk_idx [T, K]} into the three outputs.
     *
     * @param topkIdx {@code [T, K]} int64
     * @param numExperts E
     * @param tokensPerRank {@code [W]} int32 output
     * @param tokensPerExpert {@code [E]} int32 output
     * @param isTokenInRank {@code [T, W]} uint8 output
     */
    void layout(
            NDArray topkIdx,
            int numExperts,
            NDArray tokensPerRank,
            NDArray tokensPerExpert,
            NDArray isTokenInRank);

    /**
     * Runs the notify step (collective) and returns the routing.
     *
     * @param topkIdx {@code [T, K]} int64
     * @param numExperts E
     * @param expertAlignment padding of the per-expert counts
     * @return the routing, owned by the caller
     */
    EpRouting notify(NDArray topkIdx, int numExperts, int expertAlignment);

    /**
     * Moves rows along a routing (collective).
     *
     * @param routing a routing of this backend
     * @param x {@code [T, H]} float32
     * @param wire the wire format
     * @param topkIdx {@code [T, K]} int64 of the notify, or null (cached dispatch)
     * @param topkWeights {@code [T, K]} float32 or null
     * @param recvX {@code [R, H]} float32 output
     * @param recvTopkIdx {@code [R, K]} int64 output or null (needs {@code topkIdx})
     * @param recvTopkWeights {@code [R, K]} float32 output or null (needs {@code topkWeights})
     */
    void dispatch(
            EpRouting routing,
            NDArray x,
            WireFormat wire,
            NDArray topkIdx,
            NDArray topkWeights,
            NDArray recvX,
            NDArray recvTopkIdx,
            NDArray recvTopkWeights);

    /**
     * Returns how this backend lays out a received wire row of {@code hidden} channels.
     *
     * @param wire FP8 or MXFP8
     * @param hidden H
     * @return {@code {rowBytes, scaleOffset}}
     */
    long[] wireRowLayout(WireFormat wire, long hidden);

    /**
     * Moves rows along a routing like {@link #dispatch}, but writes each received row's wire bytes
     * unchanged (collective).
     *
     * @param routing a routing of this backend
     * @param x {@code [T, H]} float32
     * @param wire FP8 or MXFP8
     * @param topkIdx {@code [T, K]} int64 of the notify, or null (cached dispatch)
     * @param topkWeights {@code [T, K]} float32 or null
     * @param recvRows {@code [R, rowBytes]} uint8 output, laid out as {@link #wireRowLayout} says
     * @param recvTopkIdx {@code [R, K]} int64 output or null (needs {@code topkIdx})
     * @param recvTopkWeights {@code [R, K]} float32 output or null (needs {@code topkWeights})
     */
    void dispatchWire(
            EpRouting routing,
            NDArray x,
            WireFormat wire,
            NDArray topkIdx,
            NDArray topkWeights,
            NDArray recvRows,
            NDArray recvTopkIdx,
            NDArray recvTopkWeights);

    /**
     * Checks, before any output is allocated, that this backend can combine on a wire format.
     *
     * @param wire the wire format
     * @throws IllegalArgumentException naming the format and those supported
     */
    void checkCombineWire(WireFormat wire);

    /**
     * Sums received rows back at their source ranks (collective).
     *
     * @param routing a routing of this backend that a dispatch has used
     * @param y {@code [R, H]} float32
     * @param wire the wire format
     * @param yWeights {@code [R, K]} float32 or null
     * @param out {@code [T, H]} float32 output
     * @param outWeights {@code [T, K]} float32 output, or null (with {@code yWeights})
     */
    void combine(
            EpRouting routing,
            NDArray y,
            WireFormat wire,
            NDArray yWeights,
            NDArray out,
            NDArray outWeights);

    /** Waits for the backend's queued work and reports its first failure (no-op on the CPU). */
    void synchronize();

    /** Releases the backend's native resources and every routing it still holds. */
    @Override
    void close();
}
