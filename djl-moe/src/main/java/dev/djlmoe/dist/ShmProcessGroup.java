/*
 * djl-moe: expert-parallel Mixture-of-Experts for the Deep Java Library.
 */
package dev.djlmoe.dist;

import ai.djl.Device;
import ai.djl.ndarray.NDArray;
import ai.djl.ndarray.types.DataType;
import dev.djlmoe.core.NativeCall;
import dev.djlmoe.core.NativeMemory;
import dev.djlmoe.nativeep.NativeEp;
import org.bytedeco.javacpp.BytePointer;
import org.bytedeco.javacpp.PointerPointer;

/**
 * The ranks of one host joined through POSIX shared memory (the {@code cpu-shm} transport). Rank 0
 * also serves the rendezvous store. Dispatch, combine and the collectives run over shared memory
 * with futex waits and timeouts; a dead peer makes the others fail within the timeout, naming it.
 */
public final class ShmProcessGroup implements ProcessGroup {

    private final RankEnvironment env;
    private StoreServer server;
    private NativeEp.nep_comm comm;

    /**
     * Joins the job described by {@code env}: rank 0 starts the store server, then every rank
     * connects and maps its peers' segments.
     *
     * @param env the torchrun environment of this rank
     * @param timeoutMillis how long any wait may take before it fails
     */
    public ShmProcessGroup(RankEnvironment env, long timeoutMillis) {
        this.env = env;
        if (env.rank() == 0) {
            server = StoreServer.start(env.masterAddr(), env.masterPort(), env.jobToken());
        }
        try (NativeCall call = new NativeCall();
                PointerPointer<NativeEp.nep_comm> out = new PointerPointer<>(1)) {
            call.check(
                    NativeEp.nep_comm_create_shm(
                            env.rank(),
                            env.worldSize(),
                            env.localRank(),
                            env.localWorldSize(),
                            env.masterAddr(),
                            env.masterPort(),
                            env.jobToken(),
                            timeoutMillis,
                            out,
                            call.err(),
                            call.cap()),
                    "rank " + env.rank() + " join");
            comm = new NativeEp.nep_comm(out.get(0));
        } catch (RuntimeException e) {
            if (server != null) {
                server.close();
            }
            throw e;
        }
    }

    @Override
    public int rank() {
        return env.rank();
    }

    @Override
    public int worldSize() {
        return env.worldSize();
    }

    @Override
    public int localRank() {
        return env.localRank();
    }

    @Override
    public int localWorldSize() {
        return env.localWorldSize();
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
        if (!Device.Type.CPU.equals(array.getDevice().getDeviceType())) {
            // A GPU array goes through the CPU: ranks of one host share memory, not a GPU
            // collective (the nccl transport's all-reduce serves ranks on GPUs of several hosts).
            try (NDArray host = array.toDevice(Device.cpu(), true)) {
                allReduceSum(host);
                host.copyTo(array);
            }
            return;
        }
        DataType t = array.getDataType();
        long n = array.size();
        try (NativeCall call = new NativeCall()) {
            if (t == DataType.FLOAT32) {
                call.check(
                        NativeEp.nep_all_reduce_sum_f32(
                                comm(),
                                NativeMemory.address(array, "array", t),
                                n,
                                call.err(),
                                call.cap()),
                        "all-reduce");
            } else if (t == DataType.FLOAT64) {
                call.check(
                        NativeEp.nep_all_reduce_sum_f64(
                                comm(),
                                NativeMemory.address(array, "array", t),
                                n,
                                call.err(),
                                call.cap()),
                        "all-reduce");
            } else {
                throw new IllegalArgumentException(
                        "argument 'array' has dtype "
                                + t
                                + "; all-reduce takes float32 or float64");
            }
        }
    }

    @Override
    public byte[] allGather(byte[] mine) {
        if (mine == null) {
            throw new IllegalArgumentException("argument 'mine' is null");
        }
        int w = worldSize();
        byte[] all = new byte[Math.multiplyExact(w, mine.length)];
        try (NativeCall call = new NativeCall();
                BytePointer in = new BytePointer(Math.max(1, mine.length));
                BytePointer out = new BytePointer(Math.max(1, all.length))) {
            in.put(mine);
            call.check(
                    NativeEp.nep_all_gather(
                            comm(),
                            in.address(),
                            mine.length,
                            out.address(),
                            call.err(),
                            call.cap()),
                    "rank " + rank() + " all-gather of " + mine.length + " bytes");
            out.get(all);
        }
        return all;
    }

    @Override
    public void barrier() {
        try (NativeCall call = new NativeCall()) {
            call.check(NativeEp.nep_barrier(comm(), call.err(), call.cap()), "barrier");
        }
    }

    @Override
    public void close() {
        if (comm != null) {
            NativeEp.nep_comm_destroy(comm);
            comm = null;
        }
        if (server != null) {
            server.close();
            server = null;
        }
    }
}
