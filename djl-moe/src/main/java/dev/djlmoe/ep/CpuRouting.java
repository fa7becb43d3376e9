/*
 * djl-moe: expert-parallel Mixture-of-Experts for the Deep Java Library.
 */
package dev.djlmoe.ep;

import dev.djlmoe.nativeep.NativeEp;
import org.bytedeco.javacpp.BytePointer;
import org.bytedeco.javacpp.IntPointer;

/** The CPU engine's routing of one dispatch ({@code nep_handle}). */
final class CpuRouting extends AbstractEpRouting<NativeEp.nep_handle> {

    CpuRouting(NativeEp.nep_handle handle) {
        super(
                handle,
                "handle",
                NativeEp::nep_handle_destroy,
                NativeEp.nep_handle_num_tokens(handle),
                NativeEp.nep_handle_num_recv(handle),
                NativeEp.nep_handle_num_topk(handle),
                NativeEp.nep_handle_num_experts(handle),
                NativeEp.nep_handle_num_local_experts(handle),
                NativeEp.nep_handle_world_size(handle));
    }

    @Override
    public int[] recvTokensPerExpert(boolean aligned) {
        int[] out = new int[numLocalExperts()];
        try (IntPointer p = new IntPointer(Math.max(1, numLocalExperts()))) {
            NativeEp.nep_handle_recv_tokens_per_expert(handle(), aligned ? 1 : 0, p);
            p.get(out);
        }
        return out;
    }

    @Override
    public int[] rankPrefixMatrix() {
        int[] flat = new int[worldSize() * worldSize()];
        try (IntPointer p = new IntPointer(flat.length)) {
            NativeEp.nep_handle_rank_prefix_matrix(handle(), p);
            p.get(flat);
        }
        return flat;
    }

    @Override
    public int[] recvSrcIdx() {
        int[] out = new int[(int) numRecv()];
        if (numRecv() > 0) {
            try (IntPointer p = new IntPointer(numRecv())) {
                NativeEp.nep_handle_recv_src_idx(handle(), p);
                p.get(out);
            }
        }
        return out;
    }

    @Override
    public byte[] isTokenInRank() {
        long n = numTokens() * worldSize();
        byte[] out = new byte[(int) n];
        if (n > 0) {
            try (BytePointer p = new BytePointer(n)) {
                NativeEp.nep_handle_is_token_in_rank(handle(), p);
                p.get(out);
            }
        }
        return out;
    }
}
