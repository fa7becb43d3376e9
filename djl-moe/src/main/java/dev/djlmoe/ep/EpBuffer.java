/*
 * djl-moe: expert-parallel Mixture-of-Experts for the Deep Java Library.
 */
package dev.djlmoe.ep;

import ai.djl.Device;
import ai.djl.ndarray.NDArray;
import ai.djl.ndarray.NDManager;
import ai.djl.ndarray.types.DataType;
import ai.djl.ndarray.types.Shape;
import dev.djlmoe.core.EpException;
import dev.djlmoe.core.EpPeerException;
import dev.djlmoe.core.EpTimeoutException;
import dev.djlmoe.core.NativeMemory;
import dev.djlmoe.core.TorchMemory;
import dev.djlmoe.dist.ProcessGroup;
import dev.djlmoe.dist.ProcessGroups;
import dev.djlmoe.nativeep.NativeEp;
import dev.djlmoe.nativeep.cuda.CudaEpBuffer;
import dev.djlmoe.nativeep.cuda.NativeEpCuda;
import java.time.Duration;
import java.util.function.Function;

/**
 * The Java face of expert-parallel dispatch and combine, with DeepEP's normal-mode semantics.
 *
 * <p>Per rank: {@code x [T, H]} float32, {@code topk_idx [T, K]} int64 with {@code -1} for an empty
 * slot, {@code topk_weights [T, K]} float32; {@code E} experts split in contiguous blocks of {@code
 * E / W} over the {@code W} ranks of the process group.
 *
 * <ul>
 *   <li>{@link #layout}: tokens per rank (a token counts once per rank), tokens per expert,
 *       token-in-rank.
 *   <li>{@link #dispatch(NDArray, NDArray, NDArray, int, int, WireFormat)}: sends each token once
 *       to every rank holding one of its experts; rows arrive ordered by source rank, then source
 *       token; top-k ids become local ids or -1 and non-local weights become zero.
 *   <li>{@link #combine}: sums, in fp32, the rows each rank sends back for a token.
 * </ul>
 *
 * <p><b>Two backends, one API.</b> The device of a call's arrays picks the engine, as DeepEP's one
 * {@code Buffer} picks its path: CPU arrays run on the CPU engine (loopback or cpu-shm over the
 * process group's communicator); GPU arrays run on the CUDA plug-in (cuda-ipc between the GPUs of
 * one host, NCCL when {@code LOCAL_WORLD_SIZE < WORLD_SIZE}). Every array of one call must be on
 * the same device, and a handle serves arrays on the device of the dispatch that made it. The CUDA
 * buffer is created on the GPU of the arrays at the first GPU call and connected through the
 * process group ({@link ProcessGroup#allGather}); that first call is collective whatever it is
 * (every rank makes its first GPU call together), and one buffer drives one GPU. GPU work goes on
 * the legacy default stream, the one libtorch uses, so DJL's operations and the EP kernels stay
 * ordered; dispatch and combine on a GPU are asynchronous (a failure on the device is reported by
 * the next call or by {@link #synchronize()}), while notify waits for the GPU since the host must
 * learn how many rows arrive, and {@link #layout} waits so that a bad index is reported by it. On a
 * GPU, combine takes the {@link WireFormat#FP32} and {@link WireFormat#BF16} wires only.
 *
 * <p>Every argument is checked (shape, dtype, device, index range) before native code runs; bad
 * input raises {@link IllegalArgumentException} naming the argument, the value and the limit. Both
 * backends raise the same exceptions for the same native status ({@link EpTimeoutException}, {@link
 * EpPeerException}, {@link EpException}). Inputs are read in place (a non-contiguous array is made
 * contiguous first); outputs are ordinary NDArrays allocated on the input's device, attached to the
 * input's {@link NDManager} and written in place; cached dispatch and combine also take a caller's
 * output array to reuse ({@link #dispatch(NDArray, EpHandle, WireFormat, NDArray)}, {@link
 * #combine(NDArray, EpHandle, WireFormat, NDArray)}), which spares the page faults (or allocations)
 * of a fresh large output. Dispatch and combine are collective: every rank of the group calls them
 * in the same order.
 *
 * <p>Non-finite values are not looked for here: that would be one more pass over every {@code [T,
 * H]} element of every call. They travel as they are on the FP32 and BF16 wires and become NaN on
 * the FP8 and MXFP8 wires (e4m3 has no infinity) without spoiling the rest of their scaling block.
 * Training detects them where it costs nothing: {@code EpTrainer} refuses a step whose global
 * gradient norm is not finite, before the optimizer runs.
 */
public final class EpBuffer implements AutoCloseable {

    /** Default size of the CUDA buffer, 1 GiB. */
    public static final long DEFAULT_CUDA_BUFFER_BYTES = 1L << 30;

    /** Smallest accepted CUDA buffer, 64 MiB (the plug-in's control region included). */
    public static final long MIN_CUDA_BUFFER_BYTES = 64L << 20;

    /** Default number of SMs of GPU dispatch and combine (capped to the device's count). */
    public static final int DEFAULT_NUM_SMS = CudaConnector.DEFAULT_NUM_SMS;

    /** Largest accepted SM count (one channel per SM in the plug-in). */
    public static final int MAX_NUM_SMS = 128;

    /**
     * The environment variable that sets how {@link #stats()} times GPU calls: {@code host} (the
     * default: the wall time of the calls, which on a GPU counts the work queued before a notify
     * and not the asynchronous dispatch and combine kernels) or {@code device} (the device is
     * waited for before and after each call, so the time is that of the EP work alone, at the cost
     * of the waits; for measuring the EP share of a step).
     */
    public static final String TIMING_ENV = "DJL_MOE_EP_TIMING";

    /**
     * The environment variable that picks how {@link #allReduceSum} sums GPU arrays over the ranks:
     * {@code auto} (the default: NCCL on the GPUs when every rank has a GPU of its own, else, or
     * when NCCL cannot be set up, through host memory), {@code nccl} (NCCL or an error) or {@code
     * host} (through host memory, {@link ProcessGroup#allReduceSum}).
     */
    public static final String GPU_ALL_REDUCE_ENV = "DJL_MOE_GPU_ALLREDUCE";

    /** How GPU arrays are summed over ranks ({@link #GPU_ALL_REDUCE_ENV}). */
    enum GpuAllReduce {
        AUTO,
        NCCL,
        HOST
    }

    private final ProcessGroup group;
    private final long cudaBufferBytes;
    private final int numSms;
    private final Duration timeout;
    private final boolean deviceTiming;
    private final GpuAllReduce gpuAllReduce;
    private CudaEpBuffer reducer;
    private String reducePath;
    private final EpStats stats = new EpStats();
    private final CpuBackend cpu;
    private CudaBackend cuda;
    private boolean closed;

    private EpBuffer(Builder b) {
        group = b.group;
        cudaBufferBytes = b.cudaBufferBytes;
        numSms = b.numSms == null ? 0 : b.numSms;
        timeout = b.timeout;
        deviceTiming = b.deviceTiming != null ? b.deviceTiming : deviceTiming(System.getenv());
        gpuAllReduce = gpuAllReduce(System.getenv());
        cpu = new CpuBackend(group);
    }

    /**
     * Reads {@link #TIMING_ENV} from an environment.
     *
     * @param env the environment
     * @return true for {@code device}, false when unset, empty or {@code host}
     * @throws IllegalArgumentException naming the variable and its value otherwise
     */
    static boolean deviceTiming(java.util.Map<String, String> env) {
        String v = env.get(TIMING_ENV);
        if (v == null || v.isBlank() || "host".equalsIgnoreCase(v.trim())) {
            return false;
        }
        if ("device".equalsIgnoreCase(v.trim())) {
            return true;
        }
        throw new IllegalArgumentException(
                TIMING_ENV + " = '" + v + "' is not one of host, device");
    }

    /**
     * Returns whether GPU calls are timed on the device ({@link #TIMING_ENV}).
     *
     * @return true when the device is waited for around each timed call
     */
    public boolean deviceTiming() {
        return deviceTiming;
    }

    /**
     * Reads {@link #GPU_ALL_REDUCE_ENV} from an environment.
     *
     * @param env the environment
     * @return the choice; {@code AUTO} when unset or empty
     * @throws IllegalArgumentException naming the variable and its value when it is none of auto,
     *     nccl, host
     */
    static GpuAllReduce gpuAllReduce(java.util.Map<String, String> env) {
        String v = env.get(GPU_ALL_REDUCE_ENV);
        if (v == null || v.isBlank()) {
            return GpuAllReduce.AUTO;
        }
        for (GpuAllReduce g : GpuAllReduce.values()) {
            if (g.name().equalsIgnoreCase(v.trim())) {
                return g;
            }
        }
        throw new IllegalArgumentException(
                GPU_ALL_REDUCE_ENV + " = '" + v + "' is not one of auto, nccl, host");
    }

    /**
     * Sums an array over all ranks, in place (collective; every rank passes an array of the same
     * shape, dtype and device type). A CPU array, and a GPU array of a dtype other than float32, go
     * through {@link ProcessGroup#allReduceSum} (on a GPU: a copy through host memory). A float32
     * GPU array is summed by NCCL on the GPUs, on libtorch's stream (no host wait), when {@link
     * #GPU_ALL_REDUCE_ENV} allows it: the first such call creates the NCCL communicator
     * (collective), or, with {@code auto}, settles on host memory when some rank shares its GPU or
     * NCCL cannot be set up. The NCCL sum is in the ring's order, not rank order, so it may differ
     * from the host path's in the last bits.
     *
     * @param array the array
     */
    public void allReduceSum(NDArray array) {
        checkOpen();
        if (array == null) {
            throw new IllegalArgumentException("argument 'array' is null");
        }
        Device device = array.getDevice();
        if (group.worldSize() == 1
                || !device.isGpu()
                || array.getDataType() != DataType.FLOAT32
                || !ncclReducer(device)) {
            group.allReduceSum(array);
            return;
        }
        long address = NativeMemory.gpuAddress(array, "array", DataType.FLOAT32, device);
        reducer.allReduceSum(
                address, array.size(), NativeEpCuda.NEP_DTYPE_FP32, CudaBackend.STREAM);
    }

    /**
     * Returns how GPU arrays have been summed by {@link #allReduceSum}: {@code "nccl"}, {@code
     * "host"} (with the reason, for {@code auto}), or null before the first GPU call.
     *
     * @return the path, or null
     */
    public String gpuAllReducePath() {
        return reducePath;
    }

    /** Whether GPU arrays go through NCCL; decided at the first GPU call, the same on all ranks. */
    private boolean ncclReducer(Device device) {
        if (reducePath != null) {
            if (reducer != null && reducer.device() != device.getDeviceId()) {
                throw new IllegalArgumentException(
                        "argument 'array' is on "
                                + device
                                + " but the NCCL communicator of this rank is on gpu("
                                + reducer.device()
                                + ")");
            }
            return reducer != null;
        }
        if (gpuAllReduce == GpuAllReduce.HOST) {
            reducePath = "host (" + GPU_ALL_REDUCE_ENV + "=host)";
            return false;
        }
        long millis = timeout != null ? timeout.toMillis() : ProcessGroups.timeoutMillis();
        if (gpuAllReduce == GpuAllReduce.AUTO) {
            // Every rank needs a GPU of its own; the ranks agree before any NCCL call.
            boolean own;
            try {
                own = CudaEpBuffer.deviceCount() >= group.localWorldSize();
            } catch (LinkageError e) {
                own = false;
            }
            float agree;
            try (NDManager m = NDManager.newBaseManager(Device.cpu());
                    NDArray flag = m.create(new float[] {own ? 1f : 0f})) {
                group.allReduceSum(flag);
                agree = flag.getFloat();
            }
            if (agree < group.worldSize()) {
                reducePath = "host (some rank shares its GPU)";
                return false;
            }
            try {
                reducer = CudaConnector.connectNccl(group, device, "array", millis);
            } catch (RuntimeException e) {
                // Thrown on every rank (the connector's exchanges report a failed rank to all).
                reducePath = "host (NCCL: " + e.getMessage() + ")";
                return false;
            }
        } else {
            reducer = CudaConnector.connectNccl(group, device, "array", millis);
        }
        reducePath = "nccl";
        return true;
    }

    /** Starts the clock of a timed call: with device timing, after the work queued so far. */
    private long clockStart(EpBackend backend) {
        if (deviceTiming) {
            backend.synchronize();
        }
        return System.nanoTime();
    }

    /** The time since {@code begin}: with device timing, once the call's work has finished. */
    private long clockStop(EpBackend backend, long begin) {
        if (deviceTiming) {
            backend.synchronize();
        }
        return System.nanoTime() - begin;
    }

    /**
     * Creates a buffer over a process group with the default settings. The group stays owned by the
     * caller.
     *
     * @param group the ranks of the EP job
     * @return the buffer
     */
    public static EpBuffer create(ProcessGroup group) {
        if (group == null) {
            throw new IllegalArgumentException("argument 'group' is null");
        }
        return builder().setGroup(group).build();
    }

    /**
     * Creates a builder.
     *
     * @return a new builder
     */
    public static Builder builder() {
        return new Builder();
    }

    /**
     * Returns the process group.
     *
     * @return the group
     */
    public ProcessGroup group() {
        return group;
    }

    /**
     * Returns this rank.
     *
     * @return the rank
     */
    public int rank() {
        return group.rank();
    }

    /**
     * Returns W.
     *
     * @return the world size
     */
    public int worldSize() {
        return group.worldSize();
    }

    /**
     * Returns the size of the CUDA buffer made at the first GPU call.
     *
     * @return bytes
     */
    public long cudaBufferBytes() {
        return cudaBufferBytes;
    }

    /**
     * Returns the SMs GPU dispatch and combine use as configured, or 0 when the default ({@link
     * #DEFAULT_NUM_SMS} capped to the device's count) applies.
     *
     * @return the configured SM count, or 0
     */
    public int numSms() {
        return numSms;
    }

    /**
     * Returns the bound of every wait of the CUDA buffer as configured, or null when the process
     * group's default applies ({@code DJL_MOE_TIMEOUT_MS}, else 60 s).
     *
     * @return the timeout, or null
     */
    public Duration timeout() {
        return timeout;
    }

    /**
     * Returns the GPU whose CUDA buffer this EP buffer holds, or null before its first GPU call.
     *
     * @return the device, or null
     */
    public Device cudaDevice() {
        return cuda == null ? null : cuda.device();
    }

    /**
     * Returns the running communication totals.
     *
     * @return the statistics
     */
    public EpStats stats() {
        return stats;
    }

    /**
     * Computes where this rank's tokens go. On a GPU this waits for the device (so that a bad index
     * is reported here); it does not communicate, but a first GPU call creates the CUDA buffer,
     * which is collective.
     *
     * @param topkIdx {@code [T, K]} int64 expert ids in {@code [-1, E)}
     * @param numExperts E, a positive multiple of the world size
     * @return tokens per rank {@code [W]}, tokens per expert {@code [E]} (int32) and token-in-rank
     *     {@code [T, W]} (boolean), on the device of {@code topkIdx}, attached to its manager
     */
    public EpLayout layout(NDArray topkIdx, int numExperts) {
        checkOpen();
        int w = worldSize();
        EpChecks.checkExperts(numExperts, w);
        long[] tk = EpChecks.checkTopk(topkIdx, -1, numExperts);
        Device device = topkIdx.getDevice();
        EpBackend backend = backendFor(device, "topk_idx");
        NDManager m = topkIdx.getManager();
        NDArray perRank = TorchMemory.empty(m, new Shape(w), DataType.INT32, device);
        NDArray perExpert = TorchMemory.empty(m, new Shape(numExperts), DataType.INT32, device);
        NDArray inRank = TorchMemory.empty(m, new Shape(tk[0], w), DataType.UINT8, device);
        backend.layout(topkIdx, numExperts, perRank, perExpert, inRank);
        NDArray inRankBool = inRank.toType(DataType.BOOLEAN, false);
        inRank.close();
        return new EpLayout(perRank, perExpert, inRankBool);
    }

    /**
     * Computes the layout, exchanges counts with every rank and returns the routing (the notify
     * step). Collective; waits for the GPU on a GPU.
     *
     * @param topkIdx {@code [T, K]} int64 expert ids in {@code [-1, E)}, no duplicates in a row
     * @param numExperts E
     * @param expertAlignment pads each local expert's received count to a multiple of this (>= 1)
     * @return the handle, to be closed by the caller
     */
    public EpHandle notify(NDArray topkIdx, int numExperts, int expertAlignment) {
        checkOpen();
        EpChecks.checkExperts(numExperts, worldSize());
        EpChecks.checkAlignment(expertAlignment);
        EpChecks.checkTopk(topkIdx, -1, numExperts);
        return notifyChecked(topkIdx, numExperts, expertAlignment);
    }

    private EpHandle notifyChecked(NDArray topkIdx, int numExperts, int expertAlignment) {
        Device device = topkIdx.getDevice();
        EpBackend backend = backendFor(device, "topk_idx");
        long begin = clockStart(backend);
        EpRouting routing = backend.notify(topkIdx, numExperts, expertAlignment);
        EpHandle handle = new EpHandle(this, device, routing);
        stats.addDispatch(0, clockStop(backend, begin));
        return handle;
    }

    /**
     * Dispatches tokens with their routing: notify, then data. Collective.
     *
     * @param x {@code [T, H]} float32
     * @param topkIdx {@code [T, K]} int64 in {@code [-1, E)}, on the device of {@code x}
     * @param topkWeights {@code [T, K]} float32 on the device of {@code x}, or null to move no
     *     weights
     * @param numExperts E
     * @param expertAlignment per-expert padding of the received counts (>= 1)
     * @param wire the format rows travel in
     * @return the received rows, local top-k, weights, counts and the handle (owned by the caller)
     */
    public DispatchResult dispatch(
            NDArray x,
            NDArray topkIdx,
            NDArray topkWeights,
            int numExperts,
            int expertAlignment,
            WireFormat wire) {
        checkOpen();
        long[] xs =
                EpChecks.checkDispatch(
                        worldSize(), x, topkIdx, topkWeights, numExperts, expertAlignment, false);
        EpChecks.checkWire(wire);
        EpChecks.checkHidden(xs[1], wire, x.getDevice());
        return notifyThen(
                topkIdx,
                numExperts,
                expertAlignment,
                h -> dispatchData(x, h, topkIdx, topkWeights, true, wire, null));
    }

    /** Notifies, then runs the data phase on the new handle, which a failure of it closes. */
    private <T> T notifyThen(
            NDArray topkIdx, int numExperts, int expertAlignment, Function<EpHandle, T> data) {
        EpHandle handle = notifyChecked(topkIdx, numExperts, expertAlignment);
        try {
            return data.apply(handle);
        } catch (RuntimeException e) {
            handle.close();
            throw e;
        }
    }

    /**
     * Cached dispatch: moves another {@code [T, H]} tensor along the routing of an earlier dispatch
     * (how the backward of combine runs). Collective.
     *
     * @param x {@code [T, H]} float32 with T equal to the handle's, on the handle's device
     * @param handle the routing from an earlier dispatch of this buffer
     * @param wire the format rows travel in
     * @return {@code [R, H]} float32 received rows
     */
    public NDArray dispatch(NDArray x, EpHandle handle, WireFormat wire) {
        checkOpen();
        return dispatchData(x, handle, null, null, false, wire, null).recvX();
    }

    /**
     * Cached dispatch into a caller's array: as {@link #dispatch(NDArray, EpHandle, WireFormat)},
     * but the received rows are written into {@code out}, which the caller may reuse from call to
     * call. A fresh {@code [R, H]} output is zero-filled by the kernel a page at a time on first
     * touch (CPU) or allocated (GPU); a reused one is not. Collective.
     *
     * @param x {@code [T, H]} float32 with T equal to the handle's
     * @param handle the routing from an earlier dispatch of this buffer
     * @param wire the format rows travel in
     * @param out {@code [R, H]} float32, its own contiguous storage, on the handle's device,
     *     sharing no memory with {@code x}; every element is overwritten
     * @return {@code out}
     */
    public NDArray dispatch(NDArray x, EpHandle handle, WireFormat wire, NDArray out) {
        checkOpen();
        EpChecks.routing(handle, this); // refuses a closed handle or one of another buffer
        long[] xs = EpChecks.checkMatrix(x, "x", DataType.FLOAT32);
        EpChecks.checkOutput(out, "out", handle.numRecv(), xs[1], x, "x", handle.device());
        dispatchData(x, handle, null, null, false, wire, out);
        return out;
    }

    /** Dispatch data; {@code into} (checked by the caller) or a new array receives the rows. */
    private DispatchResult dispatchData(
            NDArray x,
            EpHandle handle,
            NDArray topkIdx,
            NDArray topkWeights,
            boolean withTopk,
            WireFormat wire,
            NDArray into) {
        EpChecks.checkWire(wire);
        EpRouting routing = EpChecks.routing(handle, this);
        long hidden = EpChecks.checkRoutedX(x, handle, wire);
        Device device = handle.device();
        EpBackend backend = backendFor(device, "x");
        long r = handle.numRecv();
        int k = handle.numTopk();
        NDManager m = x.getManager();
        NDArray recvX =
                into != null
                        ? into
                        : TorchMemory.empty(m, new Shape(r, hidden), DataType.FLOAT32, device);
        NDArray recvIdx = emptyIf(withTopk, m, new Shape(r, k), DataType.INT64, device);
        NDArray recvW = emptyIf(topkWeights != null, m, new Shape(r, k), DataType.FLOAT32, device);
        long begin = clockStart(backend);
        backend.dispatch(
                routing, x, wire, withTopk ? topkIdx : null, topkWeights, recvX, recvIdx, recvW);
        addDispatchStats(backend, begin, wire, hidden, handle);
        return new DispatchResult(
                recvX, recvIdx, recvW, withTopk ? handle.recvTokensPerExpert(true) : null, handle);
    }

    /** A new uninitialised array when {@code wanted}, else null. */
    private static NDArray emptyIf(
            boolean wanted, NDManager m, Shape shape, DataType dtype, Device device) {
        return wanted ? TorchMemory.empty(m, shape, dtype, device) : null;
    }

    /** Counts a dispatch's bytes sent (its wire rows) and its time since {@code begin}. */
    private void addDispatchStats(
            EpBackend backend, long begin, WireFormat wire, long hidden, EpHandle handle) {
        long rowBytes = NativeEp.nep_wire_row_bytes(wire.code(), hidden);
        stats.addDispatch(rowBytes * handle.numSent(), clockStop(backend, begin));
    }

    /**
     * Dispatch that keeps the received rows in their wire form: as {@link #dispatch(NDArray,
     * NDArray, NDArray, int, int, WireFormat)}, but each received row's FP8 or MXFP8 bytes are
     * written unchanged instead of being widened to float32, for consumers that read the wire's
     * encoding directly (the grouped FP8 GEMMs). {@link WireRows#decode()} gives the float rows the
     * other dispatch writes, bit for bit. Notify, then data. Collective (peers may take either
     * form).
     *
     * @param x {@code [T, H]} float32
     * @param topkIdx {@code [T, K]} int64 in {@code [-1, E)}, on the device of {@code x}
     * @param topkWeights {@code [T, K]} float32 on the device of {@code x}, or null to move no
     *     weights
     * @param numExperts E
     * @param expertAlignment per-expert padding of the received counts (>= 1)
     * @param wire {@link WireFormat#FP8} or {@link WireFormat#MXFP8}
     * @return the received wire rows {@code [R, rowBytes]} uint8 with their layout, local top-k,
     *     weights, counts and the handle (owned by the caller)
     * @throws IllegalArgumentException for another wire format (before anything is sent), or a bad
     *     argument as the float dispatch
     * @throws UnsupportedOperationException where the backend of the arrays' device has no wire-row
     *     dispatch ({@link #hasWireRows})
     */
    public WireDispatch dispatchWire(
            NDArray x,
            NDArray topkIdx,
            NDArray topkWeights,
            int numExperts,
            int expertAlignment,
            WireFormat wire) {
        checkOpen();
        EpChecks.checkWire(wire);
        WireRows.checkWire(wire, "wire");
        long[] xs =
                EpChecks.checkDispatch(
                        worldSize(), x, topkIdx, topkWeights, numExperts, expertAlignment, true);
        EpChecks.checkHidden(xs[1], wire, x.getDevice());
        return notifyThen(
                topkIdx,
                numExperts,
                expertAlignment,
                h -> dispatchWireData(x, h, topkIdx, topkWeights, true, wire));
    }

    /**
     * Cached dispatch into wire rows: moves another {@code [T, H]} tensor along the routing of an
     * earlier dispatch, keeping the received rows in their wire form. Collective.
     *
     * @param x {@code [T, H]} float32 with T equal to the handle's, on the handle's device
     * @param handle the routing from an earlier dispatch of this buffer
     * @param wire {@link WireFormat#FP8} or {@link WireFormat#MXFP8}
     * @return the received rows, {@code [R, rowBytes]} uint8
     */
    public WireRows dispatchWire(NDArray x, EpHandle handle, WireFormat wire) {
        checkOpen();
        EpChecks.checkWire(wire);
        WireRows.checkWire(wire, "wire");
        EpChecks.checkHandleGiven(handle);
        EpChecks.checkWireRowsDevice(handle.device());
        return dispatchWireData(x, handle, null, null, false, wire).recv();
    }

    /**
     * Whether dispatch into wire rows ({@link #dispatchWire}) runs for arrays on a device: on the
     * CPU engine always; on a GPU when the CUDA plug-in has the entry point.
     *
     * @param device the arrays' device
     * @return true when it runs there
     */
    public static boolean hasWireRows(Device device) {
        return !device.isGpu() || CudaBackend.hasWireRows();
    }

    /** Dispatch data into new wire rows. */
    private WireDispatch dispatchWireData(
            NDArray x,
            EpHandle handle,
            NDArray topkIdx,
            NDArray topkWeights,
            boolean withTopk,
            WireFormat wire) {
        EpRouting routing = handle.routing(this);
        long hidden = EpChecks.checkRoutedX(x, handle, wire);
        Device device = handle.device();
        EpBackend backend = backendFor(device, "x");
        long[] layout = backend.wireRowLayout(wire, hidden);
        long r = handle.numRecv();
        int k = handle.numTopk();
        NDManager m = x.getManager();
        NDArray recvRows = TorchMemory.empty(m, new Shape(r, layout[0]), DataType.UINT8, device);
        NDArray recvIdx = emptyIf(withTopk, m, new Shape(r, k), DataType.INT64, device);
        NDArray recvW = emptyIf(topkWeights != null, m, new Shape(r, k), DataType.FLOAT32, device);
        long begin = clockStart(backend);
        backend.dispatchWire(
                routing, x, wire, withTopk ? topkIdx : null, topkWeights, recvRows, recvIdx, recvW);
        addDispatchStats(backend, begin, wire, hidden, handle);
        WireRows rows = new WireRows(recvRows, wire, hidden, layout[0], layout[1]);
        return new WireDispatch(
                rows, recvIdx, recvW, withTopk ? handle.recvTokensPerExpert(true) : null, handle);
    }

    /**
     * Sends each received row back to its source rank and sums, in fp32, the rows of every rank
     * that received the token. Collective.
     *
     * @param y {@code [R, H]} float32, one row per received token (already weighted and summed over
     *     local experts), on the handle's device
     * @param yWeights {@code [R, K]} float32 to combine the same way, or null
     * @param handle the routing of the dispatch that produced the rows
     * @param wire the format rows travel in (on a GPU: FP32 or BF16)
     * @return {@code out [T, H]} and, with {@code yWeights}, {@code outWeights [T, K]}
     */
    public CombineResult combine(NDArray y, NDArray yWeights, EpHandle handle, WireFormat wire) {
        checkOpen();
        return combineData(y, yWeights, handle, wire, null);
    }

    /** Combine; {@code into} (checked by the caller) or a new array receives the sums. */
    private CombineResult combineData(
            NDArray y, NDArray yWeights, EpHandle handle, WireFormat wire, NDArray into) {
        EpChecks.checkWire(wire);
        EpRouting routing = EpChecks.routing(handle, this);
        long[] ys = EpChecks.checkRoutedY(y, handle);
        Device device = handle.device();
        EpBackend backend = backendFor(device, "y");
        backend.checkCombineWire(wire);
        long hidden = ys[1];
        EpChecks.checkHidden(hidden, wire, device);
        int k = handle.numTopk();
        if (yWeights != null) {
            EpChecks.checkMatrix(yWeights, "y_weights", DataType.FLOAT32, handle.numRecv(), k, "");
            NativeMemory.checkDevice(yWeights, "y_weights", device, "'handle' (its dispatch)");
        }
        NDManager m = y.getManager();
        long t = handle.numTokens();
        NDArray out =
                into != null
                        ? into
                        : TorchMemory.empty(m, new Shape(t, hidden), DataType.FLOAT32, device);
        NDArray outW =
                yWeights != null
                        ? TorchMemory.empty(m, new Shape(t, k), DataType.FLOAT32, device)
                        : null;
        long begin = clockStart(backend);
        backend.combine(routing, y, wire, yWeights, out, outW);
        long rowBytes = NativeEp.nep_wire_row_bytes(wire.code(), hidden);
        stats.addCombine(rowBytes * handle.numRecv(), clockStop(backend, begin));
        return new CombineResult(out, outW);
    }

    /**
     * Combine into a caller's array: as {@link #combine(NDArray, NDArray, EpHandle, WireFormat)}
     * without weights, but the sums are written into {@code out}, which the caller may reuse from
     * call to call (a fresh {@code [T, H]} output pays a page fault per page on first touch).
     * Collective.
     *
     * @param y {@code [R, H]} float32, one row per received token
     * @param handle the routing of the dispatch that produced the rows
     * @param wire the format rows travel in
     * @param out {@code [T, H]} float32, its own contiguous storage, on the handle's device,
     *     sharing no memory with {@code y}; every element is overwritten
     * @return {@code out}
     */
    public NDArray combine(NDArray y, EpHandle handle, WireFormat wire, NDArray out) {
        checkOpen();
        EpChecks.routing(handle, this); // refuses a closed handle or one of another buffer
        long[] ys = EpChecks.checkMatrix(y, "y", DataType.FLOAT32);
        EpChecks.checkOutput(out, "out", handle.numTokens(), ys[1], y, "y", handle.device());
        return combineData(y, null, handle, wire, out).out();
    }

    /**
     * Waits for the GPU work of this buffer queued so far and reports its first failure on the
     * device (a wait that timed out names the rank, the peer and the counter). Nothing to wait for
     * on the CPU, where every call is synchronous.
     */
    public void synchronize() {
        checkOpen();
        if (cuda != null) {
            cuda.synchronize();
        }
    }

    /** Returns the backend of a device, creating and connecting the CUDA one at first use. */
    private EpBackend backendFor(Device device, String argument) {
        if (Device.Type.CPU.equals(device.getDeviceType())) {
            return cpu;
        }
        if (!device.isGpu()) {
            throw EpChecks.unsupportedDevice(argument, device, "EpBuffer");
        }
        if (cuda == null) {
            long millis = timeout != null ? timeout.toMillis() : ProcessGroups.timeoutMillis();
            cuda = CudaConnector.connect(group, device, argument, cudaBufferBytes, numSms, millis);
        } else {
            EpChecks.checkSameGpu(
                    argument,
                    device,
                    cuda.device(),
                    "EpBuffer",
                    "; move the arrays there or use another EpBuffer");
        }
        return cuda;
    }

    private void checkOpen() {
        if (closed) {
            throw new IllegalStateException("the EpBuffer is closed");
        }
    }

    /**
     * Closes the buffer. Once a GPU call has created the CUDA buffer this is collective with
     * several ranks (every rank waits for the others before the GPU memory that peers write into is
     * freed), and it releases the GPU handles still open.
     */
    @Override
    public void close() {
        if (closed) {
            return;
        }
        closed = true;
        cpu.close();
        if (reducer != null) {
            CudaEpBuffer r = reducer;
            reducer = null;
            CudaConnector.releaseCollectively(group, r::close);
        }
        if (cuda != null) {
            CudaBackend c = cuda;
            cuda = null;
            c.close();
        }
    }

    /** Builds an {@link EpBuffer}. */
    public static final class Builder {

        private ProcessGroup group;
        private long cudaBufferBytes = DEFAULT_CUDA_BUFFER_BYTES;
        private Integer numSms;
        private Duration timeout;
        private Boolean deviceTiming;

        Builder() {}

        /**
         * Sets the process group (required); it stays owned by the caller.
         *
         * @param group the ranks of the EP job
         * @return this builder
         */
        public Builder setGroup(ProcessGroup group) {
            this.group = group;
            return this;
        }

        /**
         * Sets the size of the CUDA buffer each rank allocates at its first GPU call (default
         * {@link #DEFAULT_CUDA_BUFFER_BYTES}); unused on the CPU.
         *
         * @param bytes at least {@link #MIN_CUDA_BUFFER_BYTES}
         * @return this builder
         */
        public Builder optCudaBufferBytes(long bytes) {
            this.cudaBufferBytes = bytes;
            return this;
        }

        /**
         * Sets the SMs GPU dispatch and combine use (default {@link #DEFAULT_NUM_SMS}, capped to
         * the device's count); a count above the device's is refused at the first GPU call.
         *
         * @param numSms in {@code [1, }{@link #MAX_NUM_SMS}{@code ]}
         * @return this builder
         */
        public Builder optNumSms(int numSms) {
            this.numSms = numSms;
            return this;
        }

        /**
         * Sets the bound of every wait of the CUDA buffer, on the device and on the host (default:
         * the process group's, {@code DJL_MOE_TIMEOUT_MS} or 60 s). The CPU engine's waits are
         * bounded by the process group's timeout.
         *
         * @param timeout a positive duration of at most {@code Long.MAX_VALUE} ms
         * @return this builder
         */
        public Builder optTimeout(Duration timeout) {
            this.timeout = timeout;
            return this;
        }

        /**
         * Sets whether GPU calls are timed on the device, waiting for it before and after each
         * dispatch, combine and notify (default: {@link #TIMING_ENV}, else false). The CPU engine's
         * calls are synchronous and timed the same either way.
         *
         * @param deviceTiming true to wait for the device around timed calls
         * @return this builder
         */
        public Builder optDeviceTiming(boolean deviceTiming) {
            this.deviceTiming = deviceTiming;
            return this;
        }

        /**
         * Checks the settings and builds the buffer. No native resource is allocated before the
         * first call.
         *
         * @return the buffer
         * @throws IllegalArgumentException naming the setting, its value and the limit
         */
        public EpBuffer build() {
            EpChecks.checkSettings(group, cudaBufferBytes, numSms, timeout);
            return new EpBuffer(this);
        }
    }
}
