/*
 * djl-moe: expert-parallel Mixture-of-Experts for the Deep Java Library.
 */
package dev.djlmoe.ep;

import dev.djlmoe.nativeep.cuda.CudaEpBuffer;
import dev.djlmoe.nativeep.cuda.CudaEpException;

/**
 * The CUDA plug-in's routing of one dispatch: counts on the host (known after the notify), indices
 * on the device. The source index of each received row is written by the first dispatch with the
 * routing, so {@link #recvSrcIdx()} and a combine need one to have run.
 */
final class CudaRouting extends AbstractEpRouting<CudaEpBuffer.Handle> {

    private final CudaBackend backend;
    private boolean dispatched;

    CudaRouting(CudaBackend backend, CudaEpBuffer.Handle handle, int worldSize) {
        super(
                handle,
                "handle",
                CudaEpBuffer.Handle::close,
                handle.numTokens(),
                handle.numRecv(),
                handle.numTopk(),
                handle.numExperts(),
                handle.numLocalExperts(),
                worldSize);
        this.backend = backend;
    }

    /** Records that a dispatch has used this routing (recv_src_idx is filled). */
    void markDispatched() {
        dispatched = true;
    }

    /**
     * Returns whether a dispatch has used this routing.
     *
     * @return true after the first dispatch
     */
    boolean dispatched() {
        return dispatched;
    }

    @Override
    public int[] recvTokensPerExpert(boolean aligned) {
        return handle().recvTokensPerExpert(aligned);
    }

    @Override
    public int[] rankPrefixMatrix() {
        return handle().rankPrefixMatrix(worldSize());
    }

    @Override
    public int[] recvSrcIdx() {
        CudaEpBuffer.Handle h = handle();
        if (!dispatched) {
            throw new IllegalStateException(
                    "recv_src_idx of a GPU handle is written by its first dispatch, and none has"
                            + " run with this handle yet");
        }
        try {
            return h.recvSrcIdx();
        } catch (CudaEpException e) {
            throw backend.translate(e);
        }
    }

    @Override
    public byte[] isTokenInRank() {
        CudaEpBuffer.Handle h = handle();
        try {
            return h.isTokenInRank(worldSize());
        } catch (CudaEpException e) {
            throw backend.translate(e);
        }
    }

    @Override
    void released() {
        backend.forget(this);
    }
}
