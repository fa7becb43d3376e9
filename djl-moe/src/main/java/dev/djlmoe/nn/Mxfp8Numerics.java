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
import org.bytedeco.javacpp.BytePointer;

/**
 * Emulated MXFP8 rounding for float32 tensors, using the native MXFP8 codec (the same one the
 * dispatch wire uses): blocks of 32 along the last axis share one E8M0 scale, elements are e4m3
 * (saturating at 448).
 */
public final class Mxfp8Numerics {

    private Mxfp8Numerics() {}

    /**
     * Returns {@code x} rounded to MXFP8 along its last axis (no gradient).
     *
     * @param x a float32 array {@code [..., D]}
     * @return a new array, same shape
     */
    public static NDArray roundTrip(NDArray x) {
        if (!Device.Type.CPU.equals(x.getDevice().getDeviceType())) {
            // The codec runs on the CPU: a GPU array is rounded there and copied back (the same
            // bits as on the CPU; the GPU GEMMs with real MXFP8 are a separate piece of work).
            try (NDArray host = x.stopGradient().toDevice(Device.cpu(), true);
                    NDArray q = roundTrip(host)) {
                return q.toDevice(x.getDevice(), true);
            }
        }
        Shape s = x.getShape();
        long d = s.get(s.dimension() - 1);
        long rows = d == 0 ? 0 : s.size() / d;
        NDArray in = x.stopGradient();
        NDArray out = x.getManager().create(s, DataType.FLOAT32);
        if (rows == 0) {
            return out;
        }
        int wire = WireFormat.MXFP8.code();
        long rowBytes = NativeEp.nep_wire_row_bytes(wire, d);
        try (NativeCall call = new NativeCall();
                BytePointer buf = new BytePointer(rows * rowBytes)) {
            long src = NativeMemory.address(in, "x", DataType.FLOAT32);
            long dst = NativeMemory.address(out, "out", DataType.FLOAT32);
            call.check(
                    NativeEp.nep_encode_rows(
                            wire, src, rows, d, buf.address(), call.err(), call.cap()),
                    "mxfp8 encode");
            call.check(
                    NativeEp.nep_decode_rows(
                            wire, buf.address(), rows, d, dst, call.err(), call.cap()),
                    "mxfp8 decode");
        }
        return out;
    }

    /**
     * Fake-quantises with a straight-through gradient: the value is MXFP8-rounded, the gradient
     * passes unchanged ({@code x + stopGradient(q(x) - x)}).
     *
     * @param x a float32 array in the graph, {@code [..., D]}
     * @return the rounded array, in the graph
     */
    public static NDArray fakeQuantize(NDArray x) {
        NDArray q = roundTrip(x);
        return x.add(q.sub(x.stopGradient()));
    }

    /**
     * Identity in the forward pass; in the staged backward the gradient flowing back through the
     * result is MXFP8-rounded along its last axis (the input of the backward GEMMs).
     *
     * @param tape the step's tape; null leaves gradients unrounded
     * @param x an array in the graph
     * @return the array to use downstream
     */
    public static NDArray quantizeGradient(Tape tape, NDArray x) {
        if (tape == null) {
            return x;
        }
        return tape.record(
                        new NDList(x),
                        new NDList(x.stopGradient()),
                        grads -> new NDList(roundTrip(grads.get(0))))
                .head();
    }
}
