/*
 * djl-moe: expert-parallel Mixture-of-Experts for the Deep Java Library.
 */
package dev.djlmoe.nn;

import ai.djl.Device;
import ai.djl.ndarray.NDArray;
import ai.djl.ndarray.NDList;
import ai.djl.ndarray.types.DataType;
import ai.djl.ndarray.types.Shape;
import dev.djlmoe.autograd.Tape;
import dev.djlmoe.core.NativeCall;
import dev.djlmoe.core.NativeMemory;
import dev.djlmoe.ep.WireFormat;
import dev.djlmoe.nativeep.NativeEp;
import java.util.Locale;
import org.bytedeco.javacpp.BytePointer;

/**
 * Rounds float32 rows as a wire format would carry them: an encode and a decode with the native
 * codec that dispatch and combine use, so the emulated GEMM numerics and the wire round alike.
 */
final class WireRounding {

    private WireRounding() {}

    /**
     * Returns {@code x} encoded and decoded row by row along its last axis (no gradient).
     *
     * @param x a float32 array {@code [..., D]}
     * @param wire the format
     * @return a new array, same shape and device
     */
    static NDArray roundTrip(NDArray x, WireFormat wire) {
        if (!Device.Type.CPU.equals(x.getDevice().getDeviceType())) {
            // The codec runs on the CPU: a GPU array is rounded there and copied back (the same
            // bits as on the CPU).
            try (NDArray host = x.stopGradient().toDevice(Device.cpu(), true);
                    NDArray q = roundTrip(host, wire)) {
                return q.toDevice(x.getDevice(), true);
            }
        }
        Shape s = x.getShape();
        long d = s.dimension() == 0 ? 1 : s.get(s.dimension() - 1);
        long rows = d == 0 ? 0 : s.size() / d;
        NDArray in = x.stopGradient();
        NDArray out = x.getManager().create(s, DataType.FLOAT32);
        if (rows == 0) {
            return out;
        }
        int code = wire.code();
        long rowBytes = NativeEp.nep_wire_row_bytes(code, d);
        String name = wire.name().toLowerCase(Locale.ROOT);
        try (NativeCall call = new NativeCall();
                BytePointer buf = new BytePointer(rows * rowBytes)) {
            long src = NativeMemory.address(in, "x", DataType.FLOAT32);
            long dst = NativeMemory.address(out, "out", DataType.FLOAT32);
            call.check(
                    NativeEp.nep_encode_rows(
                            code, src, rows, d, buf.address(), call.err(), call.cap()),
                    name + " encode");
            call.check(
                    NativeEp.nep_decode_rows(
                            code, buf.address(), rows, d, dst, call.err(), call.cap()),
                    name + " decode");
        }
        return out;
    }

    /**
     * Identity in the forward pass; in the staged backward the gradient flowing back through the
     * result is rounded as {@code wire} carries rows, along its last axis.
     *
     * @param tape the step's tape; null leaves gradients unrounded
     * @param x an array in the graph
     * @param wire the format
     * @return the array to use downstream (a tape leaf, or {@code x} without a tape)
     */
    static NDArray roundGradient(Tape tape, NDArray x, WireFormat wire) {
        if (tape == null) {
            return x;
        }
        return tape.record(
                        new NDList(x),
                        new NDList(x.stopGradient()),
                        grads -> new NDList(roundTrip(grads.get(0), wire)))
                .head();
    }
}
