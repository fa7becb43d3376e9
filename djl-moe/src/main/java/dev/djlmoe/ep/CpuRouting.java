/*
 * djl-moe: expert-parallel Mixture-of-Experts for the Deep Java Library.
 */
package dev.djlmoe.ep;

import dev.djlmoe.nativeep.NativeEp;
import org.bytedeco.javacpp.BytePointer;
import org.bytedeco.javacpp.IntPointer;

/** The CPU engine's routing of one dispatch ({@code nep_handle}). */
final class CpuRouting implements EpRouting {

    private NativeEp.nep_handle handle;
    private final long numTokens;
    private final long numRecv;
    private final int numTopk;
    private final int numExperts;
    private final int numLocalExperts;
    private final int worldSize;

    CpuRouting(NativeEp.nep_handle handle) {
        this.handle = handle;
        numTokens = NativeEp.nep_handle_num_tokens(handle);
        numRecv = NativeEp.nep_handle_num_recv(handle);
        numTopk = NativeEp.nep_handle_num_topk(handle);
        numExperts = NativeEp.nep_handle_num_experts(handle);
        numLocalExperts = NativeEp.nep_handle_num_local_experts(handle);
        worldSize = NativeEp.nep_handle_world_size(handle);
    }

    /**
     * Returns the native handle.
     *
     * @return the open handle
     */
    NativeEp.nep_handle handle() {
        if (handle == null) {
            throw new IllegalStateException("the handle is closed");
        }
        return handle;
    }

    @Override
    public long numTokens() {
        return numTokens;
    }

    @Override
    public long numRecv() {
        return numRecv;
    }

    @Override
    public int numTopk() {
        return numTopk;
    }

    @Override
    public int numExperts() {
        return numExperts;
    }

    @Override
    public int numLocalExperts() {
        return numLocalExperts;
    }

    @Override
    public int worldSize() {
        return worldSize;
    }

    @Override
    public int[] recvTokensPerExpert(boolean aligned) {
        int[] out = new int[numLocalExperts];
        try (IntPointer p = new IntPointer(Math.max(1, numLocalExperts))) {
            NativeEp.nep_handle_recv_tokens_per_expert(handle(), aligned ? 1 : 0, p);
            p.get(out);
        }
        return out;
    }

    @Override
    public int[] rankPrefixMatrix() {
        int[] flat = new int[worldSize * worldSize];
        try (IntPointer p = new IntPointer(flat.length)) {
            NativeEp.nep_handle_rank_prefix_matrix(handle(), p);
            p.get(flat);
        }
        return flat;
    }

    @Override
    public int[] recvSrcIdx() {
        int[] out = new int[(int) numRecv];
        if (numRecv > 0) {
            try (IntPointer p = new IntPointer(numRecv)) {
                NativeEp.nep_handle_recv_src_idx(handle(), p);
                p.get(out);
            }
        }
        return out;
    }

    @Override
    public byte[] isTokenInRank() {
        long n = numTokens * worldSize;
        byte[] out = new byte[(int) n];
        if (n > 0) {
            try (BytePointer p = new BytePointer(n)) {
                NativeEp.nep_handle_is_token_in_rank(handle(), p);
                p.get(out);
            }
        }
        return out;
    }

    @Override
    public boolean isClosed() {
        return handle == null;
    }

    @Override
    public void close() {
        if (handle != null) {
            NativeEp.nep_handle_destroy(handle);
            handle = null;
        }
    }
}
