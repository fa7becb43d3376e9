/*
 * djl-moe: expert-parallel Mixture-of-Experts for the Deep Java Library.
 */
package dev.djlmoe.dist;

import ai.djl.ndarray.NDArray;
import dev.djlmoe.core.NativeCall;
import dev.djlmoe.nativeep.NativeEp;
import org.bytedeco.javacpp.PointerPointer;

/**
 * A world of one rank: every expert is local and dispatch/combine run through the native loopback
 * transport (with the same wire codecs as real transports, so numerics match a multi-rank run).
 */
public final class LocalProcessGroup implements ProcessGroup {

    private NativeEp.nep_comm comm;

    /** Creates the group and its loopback communicator. */
    public LocalProcessGroup() {
        try (NativeCall call = new NativeCall();
                PointerPointer<NativeEp.nep_comm> out = new PointerPointer<>(1)) {
            call.check(
                    NativeEp.nep_comm_create_loopback(out, call.err(), call.cap()),
                    "create loopback communicator");
            comm = new NativeEp.nep_comm(out.get(0));
        }
    }

    @Override
    public int rank() {
        return 0;
    }

    @Override
    public int worldSize() {
        return 1;
    }

    @Override
    public int localRank() {
        return 0;
    }

    @Override
    public int localWorldSize() {
        return 1;
    }

    @Override
    public NativeEp.nep_comm comm() {
        if (comm == null) {
            throw new IllegalStateException("the process group is closed");
        }
        return comm;
    }

    @Override
    public void allReduceSum(NDArray array) {
        // One rank: the sum is the array itself.
    }

    @Override
    public byte[] allGather(byte[] mine) {
        if (mine == null) {
            throw new IllegalArgumentException("argument 'mine' is null");
        }
        return mine.clone();
    }

    @Override
    public void barrier() {}

    @Override
    public void close() {
        if (comm != null) {
            NativeEp.nep_comm_destroy(comm);
            comm = null;
        }
    }
}
