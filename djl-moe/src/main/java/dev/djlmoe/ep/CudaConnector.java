/*
 * djl-moe: expert-parallel Mixture-of-Experts for the Deep Java Library.
 */
package dev.djlmoe.ep;

import ai.djl.Device;
import dev.djlmoe.core.EpException;
import dev.djlmoe.core.EpPeerException;
import dev.djlmoe.core.NativeCall;
import dev.djlmoe.dist.ProcessGroup;
import dev.djlmoe.nativeep.NativeEp;
import dev.djlmoe.nativeep.cuda.CudaEpBuffer;
import dev.djlmoe.nativeep.cuda.CudaEpException;
import dev.djlmoe.nativeep.cuda.CudaLowLatencyBuffer;
import dev.djlmoe.nativeep.cuda.NativeEpCuda;
import java.nio.ByteBuffer;
import java.nio.charset.StandardCharsets;
import java.util.Arrays;

/**
 * Creates and connects the CUDA buffer of an {@link EpBuffer} or a {@link LowLatencyBuffer} at its
 * first GPU call (collective).
 *
 * <p>Every rank allocates its buffer on the GPU of the call's arrays ({@link CudaEpBuffer#create}),
 * then the ranks all-gather one fixed-size record each over the process group ({@link
 * ProcessGroup#allGather}): a status and either this rank's cuda-ipc blob ({@link
 * CudaEpBuffer#exportBlob()}), or, when the job spans several hosts ({@code LOCAL_WORLD_SIZE <
 * WORLD_SIZE}), rank 0's NCCL unique id. Each rank then connects ({@link CudaEpBuffer#connect} with
 * the blobs in rank order, or {@link CudaEpBuffer#connectNccl} with rank 0's id) and a second
 * all-gather confirms that every rank did. A rank that fails at any step still takes part in both
 * exchanges with its error, so its peers fail at once with an {@link EpPeerException} naming it
 * instead of waiting out a timeout. The low-latency buffer ({@link CudaLowLatencyBuffer}) is made
 * the same way, over cuda-ipc only.
 */
final class CudaConnector {

    /** The SMs dispatch and combine use by default (capped to the device's). */
    static final int DEFAULT_NUM_SMS = 24;

    private static final int PAYLOAD_BYTES = 512;
    private static final int RECORD_BYTES = 8 + PAYLOAD_BYTES;

    private CudaConnector() {}

    /**
     * Creates and connects this rank's normal-mode CUDA buffer; collective over the group.
     *
     * @param group the ranks
     * @param device the GPU of the call's arrays
     * @param argument the argument whose device chose the GPU, for messages
     * @param bufferBytes the size of the buffer
     * @param numSms the SMs to use, or 0 for {@link #DEFAULT_NUM_SMS} capped to the device's
     * @param timeoutMillis bound of every wait of the buffer
     * @return the backend over the connected buffer
     */
    static CudaBackend connect(
            ProcessGroup group,
            Device device,
            String argument,
            long bufferBytes,
            int numSms,
            long timeoutMillis) {
        int rank = group.rank();
        int world = group.worldSize();
        boolean nccl = group.localWorldSize() < world;
        int[] sms = new int[1];
        CudaEpBuffer buffer =
                join(
                        group,
                        device,
                        argument,
                        "CUDA EP buffer",
                        new Plan<>() {
                            @Override
                            public CudaEpBuffer create() {
                                CudaEpBuffer b =
                                        CudaEpBuffer.create(
                                                rank,
                                                world,
                                                device.getDeviceId(),
                                                bufferBytes,
                                                timeoutMillis);
                                try {
                                    sms[0] = chooseSms(b, numSms, device);
                                } catch (RuntimeException e) {
                                    b.close();
                                    throw e;
                                }
                                return b;
                            }

                            @Override
                            public byte[] payload(CudaEpBuffer b) {
                                if (!nccl) {
                                    return b.exportBlob();
                                }
                                return rank == 0 ? CudaEpBuffer.ncclUniqueId() : new byte[0];
                            }

                            @Override
                            public void connect(CudaEpBuffer b, byte[][] payloads) {
                                if (nccl) {
                                    b.connectNccl(
                                            Arrays.copyOf(
                                                    payloads[0],
                                                    NativeEpCuda.NEP_CUDA_NCCL_ID_BYTES));
                                } else {
                                    b.connect(blobs(payloads));
                                }
                            }

                            @Override
                            public void close(CudaEpBuffer b) {
                                b.close();
                            }
                        });
        return new CudaBackend(group, device, buffer, sms[0]);
    }

    /**
     * Creates and connects a small CUDA buffer over NCCL whatever the hosts, for {@link
     * EpBuffer#allReduceSum} of GPU arrays (its NCCL communicator sums them on the GPUs);
     * collective over the group. Each rank needs a GPU of its own (NCCL refuses two ranks on one
     * GPU).
     *
     * @param group the ranks
     * @param device the GPU of the call's array
     * @param argument the argument whose device chose the GPU, for messages
     * @param timeoutMillis bound of every wait of the buffer
     * @return the connected buffer
     */
    static CudaEpBuffer connectNccl(
            ProcessGroup group, Device device, String argument, long timeoutMillis) {
        int rank = group.rank();
        int world = group.worldSize();
        return join(
                group,
                device,
                argument,
                "NCCL all-reduce communicator",
                new Plan<>() {
                    @Override
                    public CudaEpBuffer create() {
                        return CudaEpBuffer.create(
                                rank,
                                world,
                                device.getDeviceId(),
                                EpBuffer.MIN_CUDA_BUFFER_BYTES,
                                timeoutMillis);
                    }

                    @Override
                    public byte[] payload(CudaEpBuffer b) {
                        return rank == 0 ? CudaEpBuffer.ncclUniqueId() : new byte[0];
                    }

                    @Override
                    public void connect(CudaEpBuffer b, byte[][] payloads) {
                        b.connectNccl(
                                Arrays.copyOf(payloads[0], NativeEpCuda.NEP_CUDA_NCCL_ID_BYTES));
                    }

                    @Override
                    public void close(CudaEpBuffer b) {
                        b.close();
                    }
                });
    }

    /**
     * Creates and connects this rank's low-latency CUDA buffer (cuda-ipc: the ranks of one host);
     * collective over the group.
     *
     * @param group the ranks
     * @param device the GPU of the call's arrays
     * @param argument the argument whose device chose the GPU, for messages
     * @param maxTokensPerRank Tm
     * @param hidden H
     * @param numExperts E
     * @param maxTopk the largest K
     * @param maxWire the widest wire format
     * @param timeoutMillis bound of every device-side wait
     * @return the backend over the connected buffer
     */
    static CudaLowLatencyBackend connectLowLatency(
            ProcessGroup group,
            Device device,
            String argument,
            long maxTokensPerRank,
            long hidden,
            int numExperts,
            int maxTopk,
            WireFormat maxWire,
            long timeoutMillis) {
        int rank = group.rank();
        int world = group.worldSize();
        CudaLowLatencyBuffer buffer =
                join(
                        group,
                        device,
                        argument,
                        "CUDA low-latency buffer",
                        new Plan<>() {
                            @Override
                            public CudaLowLatencyBuffer create() {
                                if (group.localWorldSize() < world) {
                                    throw new IllegalArgumentException(
                                            "argument '"
                                                    + argument
                                                    + "' is on device "
                                                    + device
                                                    + ": the low-latency mode on GPUs joins the"
                                                    + " ranks of one host (cuda-ipc), but"
                                                    + " LOCAL_WORLD_SIZE = "
                                                    + group.localWorldSize()
                                                    + " < WORLD_SIZE = "
                                                    + world);
                                }
                                return CudaLowLatencyBuffer.create(
                                        rank,
                                        world,
                                        device.getDeviceId(),
                                        maxTokensPerRank,
                                        hidden,
                                        numExperts,
                                        maxTopk,
                                        maxWire.code(),
                                        timeoutMillis);
                            }

                            @Override
                            public byte[] payload(CudaLowLatencyBuffer b) {
                                return b.exportBlob();
                            }

                            @Override
                            public void connect(CudaLowLatencyBuffer b, byte[][] payloads) {
                                b.connect(blobs(payloads));
                            }

                            @Override
                            public void close(CudaLowLatencyBuffer b) {
                                b.close();
                            }
                        });
        return new CudaLowLatencyBackend(group, device, buffer);
    }

    /** The local steps of one kind of buffer; each may throw. */
    private interface Plan<B> {

        B create();

        byte[] payload(B buffer);

        void connect(B buffer, byte[][] payloads);

        void close(B buffer);
    }

    /** Runs a plan with its two exchanges; returns the connected buffer or throws on every rank. */
    private static <B> B join(
            ProcessGroup group, Device device, String argument, String what, Plan<B> plan) {
        int rank = group.rank();
        B buffer = null;
        RuntimeException failure = null;
        byte[] payload = new byte[0];
        try {
            checkVisible(device, argument);
            buffer = plan.create();
            payload = plan.payload(buffer);
        } catch (RuntimeException e) {
            failure = local(e, group, device, "create " + what);
        }
        try {
            byte[][] records = exchange(group, failure, payload);
            if (failure != null) {
                throw failure;
            }
            peerFailure(records, rank, device, "create " + what);
            byte[][] payloads = new byte[records.length][];
            for (int r = 0; r < records.length; r++) {
                payloads[r] = payloadOf(records[r]);
            }
            try {
                plan.connect(buffer, payloads);
            } catch (RuntimeException e) {
                failure = local(e, group, device, "connect " + what);
            }
            byte[][] confirmations = exchange(group, failure, new byte[0]);
            if (failure != null) {
                throw failure;
            }
            peerFailure(confirmations, rank, device, "connect " + what);
            return buffer;
        } catch (RuntimeException e) {
            if (buffer != null) {
                plan.close(buffer);
            }
            throw e;
        }
    }

    /** The cuda-ipc blobs of every rank, concatenated in rank order. */
    private static byte[] blobs(byte[][] payloads) {
        int n = NativeEpCuda.NEP_CUDA_EXPORT_BYTES;
        byte[] all = new byte[payloads.length * n];
        for (int r = 0; r < payloads.length; r++) {
            System.arraycopy(payloads[r], 0, all, r * n, Math.min(n, payloads[r].length));
        }
        return all;
    }

    private static void checkVisible(Device device, String argument) {
        int count;
        try {
            count = CudaEpBuffer.deviceCount();
        } catch (LinkageError e) {
            throw new IllegalStateException(
                    "argument '"
                            + argument
                            + "' is on device "
                            + device
                            + ", but the CUDA"
                            + " plug-in (libnativeep_cuda.so) cannot be loaded: "
                            + e.getMessage(),
                    e);
        }
        if (device.getDeviceId() < 0 || device.getDeviceId() >= count) {
            throw new IllegalArgumentException(
                    "argument '"
                            + argument
                            + "' is on device "
                            + device
                            + ", but the CUDA"
                            + " plug-in sees "
                            + count
                            + " GPU(s) (no driver, a build without"
                            + " CUDA, or CUDA_VISIBLE_DEVICES): pass CPU arrays to run on the"
                            + " CPU engine");
        }
    }

    private static int chooseSms(CudaEpBuffer buffer, int numSms, Device device) {
        int deviceSms = buffer.deviceSms();
        if (numSms == 0) {
            return Math.min(DEFAULT_NUM_SMS, deviceSms);
        }
        if (numSms > deviceSms) {
            throw new IllegalArgumentException(
                    "num_sms = "
                            + numSms
                            + " (EpBuffer.Builder.optNumSms) exceeds the "
                            + deviceSms
                            + " SMs of "
                            + device);
        }
        return numSms;
    }

    /** The exception this rank throws for its own failure (plug-in statuses as the CPU's). */
    private static RuntimeException local(
            RuntimeException e, ProcessGroup group, Device device, String step) {
        if (e instanceof CudaEpException) {
            CudaEpException c = (CudaEpException) e;
            RuntimeException t =
                    NativeCall.exception(
                            c.status(),
                            "rank "
                                    + group.rank()
                                    + " ("
                                    + device
                                    + "), "
                                    + step
                                    + ": "
                                    + c.getMessage());
            t.initCause(c);
            return t;
        }
        return e;
    }

    /** All-gathers one record per rank: a status, then the payload or the failure's message. */
    private static byte[][] exchange(ProcessGroup group, RuntimeException failure, byte[] payload) {
        int status = NativeEp.NEP_OK;
        byte[] body = payload;
        if (failure != null) {
            status =
                    failure instanceof EpException
                            ? ((EpException) failure).getStatus()
                            : failure instanceof IllegalArgumentException
                                    ? NativeEp.NEP_ERR_INVALID_ARGUMENT
                                    : NativeEp.NEP_ERR_INTERNAL;
            String m = String.valueOf(failure.getMessage());
            body = m.getBytes(StandardCharsets.UTF_8);
            if (status == NativeEp.NEP_OK) {
                status = NativeEp.NEP_ERR_INTERNAL;
            }
        }
        int n = Math.min(body.length, PAYLOAD_BYTES);
        ByteBuffer mine = ByteBuffer.allocate(RECORD_BYTES);
        mine.putInt(status).putInt(n).put(body, 0, n);
        byte[] all = group.allGather(mine.array());
        byte[][] records = new byte[group.worldSize()][];
        for (int r = 0; r < records.length; r++) {
            records[r] = Arrays.copyOfRange(all, r * RECORD_BYTES, (r + 1) * RECORD_BYTES);
        }
        return records;
    }

    private static byte[] payloadOf(byte[] record) {
        ByteBuffer b = ByteBuffer.wrap(record);
        b.getInt();
        int n = b.getInt();
        return Arrays.copyOfRange(record, 8, 8 + n);
    }

    /** Throws an {@link EpPeerException} naming the first other rank whose record failed. */
    private static void peerFailure(byte[][] records, int rank, Device device, String step) {
        for (int r = 0; r < records.length; r++) {
            if (r == rank) {
                continue;
            }
            int status = ByteBuffer.wrap(records[r]).getInt();
            if (status != NativeEp.NEP_OK) {
                String message = new String(payloadOf(records[r]), StandardCharsets.UTF_8);
                throw new EpPeerException(
                        NativeEp.NEP_ERR_PEER,
                        "rank "
                                + rank
                                + " ("
                                + device
                                + "), "
                                + step
                                + ": rank "
                                + r
                                + " failed (status "
                                + status
                                + "): "
                                + message);
            }
        }
    }

    /**
     * Releases a rank's GPU buffer once every rank has arrived (with several ranks no peer may
     * still write into this rank's memory); a failed barrier (a peer that died) still releases the
     * buffer and is thrown afterwards.
     *
     * @param group the ranks
     * @param release frees the buffer
     */
    static void releaseCollectively(ProcessGroup group, Runnable release) {
        RuntimeException barrier = null;
        if (group.worldSize() > 1) {
            try {
                group.barrier();
            } catch (RuntimeException e) {
                barrier = e;
            }
        }
        release.run();
        if (barrier != null) {
            throw barrier;
        }
    }
}
