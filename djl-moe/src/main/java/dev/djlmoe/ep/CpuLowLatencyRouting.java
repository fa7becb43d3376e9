/*
 * djl-moe: expert-parallel Mixture-of-Experts for the Deep Java Library.
 */
package dev.djlmoe.ep;

import ai.djl.Device;
import dev.djlmoe.nativeep.NativeEp;
import org.bytedeco.javacpp.IntPointer;
import org.bytedeco.javacpp.LongPointer;

/** The CPU engine's routing of one low-latency dispatch ({@code nep_ll_handle}). */
final class CpuLowLatencyRouting extends OwnedRouting<NativeEp.nep_ll_handle>
        implements LowLatencyRouting {

    private final int numLocalExperts;
    private final int worldSize;
    private final long maxTokensPerRank;

    CpuLowLatencyRouting(NativeEp.nep_ll_handle handle) {
        super(handle, "low-latency handle", NativeEp::nep_ll_handle_destroy);
        numLocalExperts = NativeEp.nep_ll_handle_num_local_experts(handle);
        worldSize = NativeEp.nep_ll_handle_world_size(handle);
        maxTokensPerRank = NativeEp.nep_ll_handle_max_tokens_per_rank(handle);
    }

    /**
     * Wraps a native handle into the public one, with the native handle's shape.
     *
     * @param owner the buffer whose dispatch made it
     * @param handle the native handle
     * @return the handle
     */
    static LowLatencyHandle wrap(LowLatencyBuffer owner, NativeEp.nep_ll_handle handle) {
        return new LowLatencyHandle(
                owner,
                Device.cpu(),
                NativeEp.nep_ll_handle_num_tokens(handle),
                NativeEp.nep_ll_handle_num_topk(handle),
                NativeEp.nep_ll_handle_num_local_experts(handle),
                NativeEp.nep_ll_handle_world_size(handle),
                NativeEp.nep_ll_handle_max_tokens_per_rank(handle),
                NativeEp.nep_ll_handle_hidden(handle),
                new CpuLowLatencyRouting(handle));
    }

    @Override
    public int[] recvCount() {
        int[] out = new int[numLocalExperts];
        try (IntPointer p = new IntPointer(Math.max(1, numLocalExperts))) {
            NativeEp.nep_ll_handle_recv_count(handle(), p);
            p.get(out);
        }
        return out;
    }

    @Override
    public int[] srcInfo() {
        long n = (long) numLocalExperts * worldSize * maxTokensPerRank;
        int[] out = new int[Math.toIntExact(n)];
        try (IntPointer p = new IntPointer(Math.max(1, n))) {
            NativeEp.nep_ll_handle_src_info(handle(), p);
            p.get(out);
        }
        return out;
    }

    @Override
    public long[] layoutRange() {
        long[] out = new long[numLocalExperts * worldSize];
        try (LongPointer p = new LongPointer(Math.max(1, out.length))) {
            NativeEp.nep_ll_handle_layout_range(handle(), p);
            p.get(out);
        }
        return out;
    }
}
