/*
 * djl-moe: expert-parallel Mixture-of-Experts for the Deep Java Library.
 */
package dev.djlmoe.ep;

import ai.djl.ndarray.NDArray;
import dev.djlmoe.nativeep.cuda.CudaLowLatencyBuffer;

/**
 * The CUDA plug-in's routing of one low-latency dispatch: the plug-in's handle, and the counts,
 * source tokens and per-rank ranges its receive wrote into device arrays (copied to the host on
 * request). The plug-in's handle is valid until a later dispatch send reuses its half of the buffer
 * (two dispatches later when every call is a dispatch); a combine with a stale handle is refused
 * with the calls named.
 */
final class CudaLowLatencyRouting extends OwnedRouting<CudaLowLatencyBuffer.Handle>
        implements LowLatencyRouting {

    private final NDArray recvCount;
    private final NDArray srcInfo;
    private final NDArray layoutRange;

    /**
     * Wraps the plug-in's handle and the arrays its receive wrote (owned by this routing).
     *
     * @param handle the plug-in's handle
     * @param recvCount {@code [E/W]} int32 on the GPU
     * @param srcInfo {@code [E/W, W * Tm]} int32 on the GPU
     * @param layoutRange {@code [E/W, W]} int64 on the GPU
     */
    CudaLowLatencyRouting(
            CudaLowLatencyBuffer.Handle handle,
            NDArray recvCount,
            NDArray srcInfo,
            NDArray layoutRange) {
        super(handle, "low-latency handle", CudaLowLatencyBuffer.Handle::close);
        this.recvCount = recvCount;
        this.srcInfo = srcInfo;
        this.layoutRange = layoutRange;
    }

    @Override
    public int[] recvCount() {
        handle();
        return recvCount.toIntArray();
    }

    @Override
    public int[] srcInfo() {
        handle();
        return srcInfo.toIntArray();
    }

    @Override
    public long[] layoutRange() {
        handle();
        return layoutRange.toLongArray();
    }

    @Override
    void released() {
        recvCount.close();
        srcInfo.close();
        layoutRange.close();
    }
}
