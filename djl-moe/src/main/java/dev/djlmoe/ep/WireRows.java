/*
 * djl-moe: expert-parallel Mixture-of-Experts for the Deep Java Library.
 */
package dev.djlmoe.ep;

import ai.djl.ndarray.NDArray;
import ai.djl.ndarray.types.DataType;
import ai.djl.ndarray.types.Shape;
import dev.djlmoe.core.NativeCall;
import dev.djlmoe.core.NativeMemory;
import dev.djlmoe.core.TorchMemory;
import dev.djlmoe.nativeep.NativeEp;

/**
 * Rows in their FP8 or MXFP8 wire form, as a dispatch received them ({@link
 * EpBuffer#dispatchWire}): row i of {@code rows} holds {@code hidden} e4m3 element bytes from byte
 * 0, and the row's scales from byte {@code scaleOffset} (FP8: one little-endian fp32 per 128
 * channels; MXFP8: one E8M0 byte per 32 channels), {@code rowBytes} bytes per row. The CPU engine's
 * rows are the codec's, unpadded ({@code scaleOffset = hidden}); a layout with padding (the GPU
 * transport's) says so through the two offsets. The grouped FP8 GEMMs read such rows in place:
 * {@code a = rows}, {@code sa = rows + scaleOffset}, {@code lda = ldsa = rowBytes}.
 *
 * @param rows {@code [R, rowBytes]} uint8
 * @param wire {@link WireFormat#FP8} or {@link WireFormat#MXFP8}
 * @param hidden H, the channels of a row
 * @param rowBytes bytes per row
 * @param scaleOffset where a row's scales start
 */
public record WireRows(
        NDArray rows, WireFormat wire, long hidden, long rowBytes, long scaleOffset) {

    /**
     * Checks the layout against the row array.
     *
     * @throws IllegalArgumentException naming the field, its value and the limit
     */
    public WireRows {
        if (rows == null) {
            throw new IllegalArgumentException("argument 'rows' is null");
        }
        checkWire(wire, "wire");
        if (hidden <= 0) {
            throw new IllegalArgumentException("argument 'hidden' = " + hidden + " must be > 0");
        }
        long scaleBytes = NativeEp.nep_wire_row_bytes(wire.code(), hidden) - hidden;
        if (scaleOffset < hidden) {
            throw new IllegalArgumentException(
                    "argument 'scaleOffset' = "
                            + scaleOffset
                            + " is below hidden = "
                            + hidden
                            + " (the scales follow the elements)");
        }
        if (rowBytes < scaleOffset + scaleBytes) {
            throw new IllegalArgumentException(
                    "argument 'rowBytes' = "
                            + rowBytes
                            + " cannot hold the "
                            + scaleBytes
                            + " scale bytes from scaleOffset = "
                            + scaleOffset);
        }
        if (rows.getDataType() != DataType.UINT8) {
            throw new IllegalArgumentException(
                    "argument 'rows' must be uint8, got " + rows.getDataType());
        }
        Shape s = rows.getShape();
        if (s.dimension() != 2 || s.get(1) != rowBytes) {
            throw new IllegalArgumentException(
                    "argument 'rows' must have shape [R, " + rowBytes + "], got " + s);
        }
    }

    /**
     * Returns the codec's layout of a wire: elements then scales, unpadded (the CPU engine's).
     *
     * @param rows {@code [R, nep_wire_row_bytes(wire, hidden)]} uint8
     * @param wire FP8 or MXFP8
     * @param hidden H
     * @return the rows
     */
    public static WireRows packed(NDArray rows, WireFormat wire, long hidden) {
        checkWire(wire, "wire");
        return new WireRows(rows, wire, hidden, packedRowBytes(wire, hidden), hidden);
    }

    /**
     * Returns the bytes of a codec row.
     *
     * @param wire the wire format
     * @param hidden H
     * @return {@code nep_wire_row_bytes}
     * @throws IllegalArgumentException when the wire has no such size for H
     */
    static long packedRowBytes(WireFormat wire, long hidden) {
        long b = NativeEp.nep_wire_row_bytes(wire.code(), hidden);
        if (b < 0) {
            throw new IllegalArgumentException(
                    "hidden size " + hidden + " is not supported by wire format " + wire);
        }
        return b;
    }

    /**
     * Refuses a wire format whose rows cannot be kept as they are.
     *
     * @param wire the format
     * @param name the argument's name
     * @throws IllegalArgumentException naming the argument, its value and the formats accepted
     */
    static void checkWire(WireFormat wire, String name) {
        if (wire != WireFormat.FP8 && wire != WireFormat.MXFP8) {
            throw new IllegalArgumentException(
                    "argument '"
                            + name
                            + "' = "
                            + wire
                            + " has no wire-row form: only FP8 and MXFP8 rows are kept as they"
                            + " arrive");
        }
    }

    /**
     * Returns the number of rows R.
     *
     * @return R
     */
    public long numRows() {
        return rows.getShape().get(0);
    }

    /**
     * Returns the same layout over other rows (e.g. a gather of these).
     *
     * @param other {@code [R', rowBytes]} uint8
     * @return the rows
     */
    public WireRows withRows(NDArray other) {
        return new WireRows(other, wire, hidden, rowBytes, scaleOffset);
    }

    /**
     * Whether the rows are in the codec's packed layout (scales right after the elements, no
     * padding).
     *
     * @return true for the CPU engine's layout
     */
    public boolean isPacked() {
        return scaleOffset == hidden && rowBytes == packedRowBytes(wire, hidden);
    }

    /**
     * Decodes the rows into float32: what a float dispatch on the same wire would have written, bit
     * for bit. Runs on the rows' device (CPU: the engine's codec; a GPU needs the CUDA plug-in's
     * decoder).
     *
     * @return {@code [R, hidden]} float32 on the rows' device, attached to their manager
     * @throws UnsupportedOperationException for GPU rows without a GPU decoder
     */
    public NDArray decode() {
        NDArray out =
                TorchMemory.empty(
                        rows.getManager(),
                        new Shape(numRows(), hidden),
                        DataType.FLOAT32,
                        rows.getDevice());
        if (numRows() == 0) {
            return out;
        }
        if (rows.getDevice().isGpu()) {
            CudaBackend.decodeWireRows(this, out);
            return out;
        }
        if (!isPacked()) {
            out.close();
            throw new IllegalArgumentException(
                    "CPU rows must be in the codec's packed layout (rowBytes "
                            + packedRowBytes(wire, hidden)
                            + ", scaleOffset "
                            + hidden
                            + "), got rowBytes "
                            + rowBytes
                            + ", scaleOffset "
                            + scaleOffset);
        }
        try (NativeCall call = new NativeCall()) {
            call.check(
                    NativeEp.nep_decode_rows(
                            wire.code(),
                            NativeMemory.address(rows, "rows", DataType.UINT8),
                            numRows(),
                            hidden,
                            NativeMemory.outputAddress(out, "out", DataType.FLOAT32),
                            call.err(),
                            call.cap()),
                    "decode wire rows");
        }
        return out;
    }
}
