/*
 * djl-moe: expert-parallel Mixture-of-Experts for the Deep Java Library.
 */
package dev.djlmoe.ep;

import ai.djl.Device;
import ai.djl.ndarray.NDArray;
import ai.djl.ndarray.types.DataType;
import dev.djlmoe.core.NativeCall;
import dev.djlmoe.core.NativeMemory;
import dev.djlmoe.dist.ProcessGroup;
import dev.djlmoe.nativeep.NativeEp;
import org.bytedeco.javacpp.PointerPointer;

/**
 * The CPU engine behind {@link EpBuffer}: CPU arrays, read and written in place through {@link
 * NativeMemory#address}, over the process group's communicator (loopback or cpu-shm).
 */
final class CpuBackend implements EpBackend {

    private final ProcessGroup group;

    CpuBackend(ProcessGroup group) {
        this.group = group;
    }

    @Override
    public Device device() {
        return Device.cpu();
    }

    @Override
    public void layout(
            NDArray topkIdx,
            int numExperts,
            NDArray tokensPerRank,
            NDArray tokensPerExpert,
            NDArray isTokenInRank) {
        long[] tk = topkIdx.getShape().getShape();
        try (NativeCall call = new NativeCall()) {
            call.check(
                    NativeEp.nep_layout(
                            NativeMemory.address(topkIdx, "topk_idx", DataType.INT64),
                            tk[0],
                            (int) tk[1],
                            numExperts,
                            group.worldSize(),
                            NativeMemory.address(tokensPerRank, "tokens_per_rank", DataType.INT32),
                            NativeMemory.address(
                                    tokensPerExpert, "tokens_per_expert", DataType.INT32),
                            NativeMemory.address(isTokenInRank, "is_token_in_rank", DataType.UINT8),
                            call.err(),
                            call.cap()),
                    "layout");
        }
    }

    @Override
    public EpRouting notify(NDArray topkIdx, int numExperts, int expertAlignment) {
        long[] tk = topkIdx.getShape().getShape();
        try (NativeCall call = new NativeCall();
                PointerPointer<NativeEp.nep_handle> out = new PointerPointer<>(1)) {
            call.check(
                    NativeEp.nep_dispatch_notify(
                            group.comm(),
                            NativeMemory.address(topkIdx, "topk_idx", DataType.INT64),
                            tk[0],
                            (int) tk[1],
                            numExperts,
                            expertAlignment,
                            out,
                            call.err(),
                            call.cap()),
                    "dispatch notify");
            return new CpuRouting(new NativeEp.nep_handle(out.get(0)));
        }
    }

    @Override
    public void dispatch(
            EpRouting routing,
            NDArray x,
            WireFormat wire,
            NDArray topkIdx,
            NDArray topkWeights,
            NDArray recvX,
            NDArray recvTopkIdx,
            NDArray recvTopkWeights) {
        // The CPU engine's handle holds the routing; topk_idx is not read again.
        NativeEp.nep_handle h = ((CpuRouting) routing).handle();
        try (NativeCall call = new NativeCall()) {
            call.check(
                    NativeEp.nep_dispatch(
                            group.comm(),
                            h,
                            NativeMemory.address(x, "x", DataType.FLOAT32),
                            x.getShape().get(1),
                            wire.code(),
                            addressOrZero(topkWeights, "topk_weights", DataType.FLOAT32),
                            NativeMemory.address(recvX, "recv_x", DataType.FLOAT32),
                            addressOrZero(recvTopkIdx, "recv_topk_idx", DataType.INT64),
                            addressOrZero(recvTopkWeights, "recv_topk_weights", DataType.FLOAT32),
                            call.err(),
                            call.cap()),
                    "dispatch");
        }
    }

    @Override
    public long[] wireRowLayout(WireFormat wire, long hidden) {
        return new long[] {WireRows.packedRowBytes(wire, hidden), hidden};
    }

    @Override
    public void dispatchWire(
            EpRouting routing,
            NDArray x,
            WireFormat wire,
            NDArray topkIdx,
            NDArray topkWeights,
            NDArray recvRows,
            NDArray recvTopkIdx,
            NDArray recvTopkWeights) {
        NativeEp.nep_handle h = ((CpuRouting) routing).handle();
        try (NativeCall call = new NativeCall()) {
            call.check(
                    NativeEp.nep_dispatch_wire(
                            group.comm(),
                            h,
                            NativeMemory.address(x, "x", DataType.FLOAT32),
                            x.getShape().get(1),
                            wire.code(),
                            addressOrZero(topkWeights, "topk_weights", DataType.FLOAT32),
                            NativeMemory.address(recvRows, "recv_rows", DataType.UINT8),
                            recvRows.getShape().get(1),
                            addressOrZero(recvTopkIdx, "recv_topk_idx", DataType.INT64),
                            addressOrZero(recvTopkWeights, "recv_topk_weights", DataType.FLOAT32),
                            call.err(),
                            call.cap()),
                    "dispatch (wire rows)");
        }
    }

    @Override
    public void checkCombineWire(WireFormat wire) {
        // Every wire format combines on the CPU engine.
    }

    @Override
    public void combine(
            EpRouting routing,
            NDArray y,
            WireFormat wire,
            NDArray yWeights,
            NDArray out,
            NDArray outWeights) {
        NativeEp.nep_handle h = ((CpuRouting) routing).handle();
        try (NativeCall call = new NativeCall()) {
            call.check(
                    NativeEp.nep_combine(
                            group.comm(),
                            h,
                            NativeMemory.address(y, "y", DataType.FLOAT32),
                            y.getShape().get(1),
                            wire.code(),
                            addressOrZero(yWeights, "y_weights", DataType.FLOAT32),
                            NativeMemory.address(out, "out", DataType.FLOAT32),
                            addressOrZero(outWeights, "out_weights", DataType.FLOAT32),
                            call.err(),
                            call.cap()),
                    "combine");
        }
    }

    /** The address of an optional array: 0 (the C ABI's "none") for null. */
    private static long addressOrZero(NDArray array, String name, DataType dtype) {
        return array == null ? 0L : NativeMemory.address(array, name, dtype);
    }

    @Override
    public void synchronize() {
        // CPU calls are synchronous.
    }

    @Override
    public void close() {
        // The communicator belongs to the process group; routings are closed by their handles.
    }
}
