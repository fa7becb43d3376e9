/*
 * djl-moe: expert-parallel Mixture-of-Experts for the Deep Java Library.
 */
package dev.djlmoe.gemm;

import ai.djl.ndarray.NDArray;
import ai.djl.ndarray.NDManager;
import ai.djl.ndarray.types.DataType;
import ai.djl.ndarray.types.Shape;
import dev.djlmoe.core.NativeCall;
import dev.djlmoe.core.TorchMemory;
import dev.djlmoe.ep.WireFormat;
import dev.djlmoe.ep.WireRows;
import dev.djlmoe.nativeep.NativeGemm;

/**
 * The routed experts' SwiGLU feed-forward {@code y = (silu(x W1^T) * (x W3^T)) W2^T} on rows
 * grouped by expert, with the native grouped FP8 GEMMs, as {@code nativeep/gemm_api.h} lays it out
 * step by step: the forward quantises x in rows, runs the fused gate/up GEMM (N = 2I), the fused
 * SwiGLU quantiser and the down GEMM; the backward quantises dy, runs the activation gradient GEMMs
 * (through the fused SwiGLU backward quantiser) and the K-grouped weight gradient GEMMs.
 *
 * <p>CPU arrays run the CPU entry points (the plain oracle, exact block partial sums); GPU arrays
 * run the CUDA plug-in's tensor-core kernels on the legacy default stream (libtorch's), with the
 * same numerics up to the tensor core's rounding inside a scale block. Inputs are read in place
 * (non-contiguous ones are copied first); outputs are DJL arrays of the inputs' device owned by
 * {@code x}'s manager. Nothing here is recorded by autograd: {@code RoutedExperts} records the
 * whole feed-forward as one entry of the staged backward's tape.
 */
public final class Fp8ExpertGemms {

    private Fp8ExpertGemms() {}

    /**
     * What the forward returns and the backward reads.
     *
     * @param y the expert outputs: [M, H] float32
     * @param x the input rows: [M, H] float32, or null when the forward read wire rows
     * @param y13 the fused gate/up output: [M, 2I] float32 (gate in the first I columns)
     * @param h {@code silu(gate) * up}: [M, I] float32
     * @param offsets the group offsets: G + 1
     * @param weights the quantised weights
     * @param xRows the input rows in their FP8 or MXFP8 wire form ([M, rowBytes] uint8), or null
     *     when the forward read float rows: the backward decodes them for the weight gradient
     */
    public record Forward(
            NDArray y,
            NDArray x,
            NDArray y13,
            NDArray h,
            long[] offsets,
            QuantizedWeights weights,
            WireRows xRows) {

        /**
         * A forward of float input rows.
         *
         * @param y the expert outputs
         * @param x the input rows
         * @param y13 the fused gate/up output
         * @param h {@code silu(gate) * up}
         * @param offsets the group offsets
         * @param weights the quantised weights
         */
        public Forward(
                NDArray y,
                NDArray x,
                NDArray y13,
                NDArray h,
                long[] offsets,
                QuantizedWeights weights) {
            this(y, x, y13, h, offsets, weights, null);
        }

        /**
         * Returns the bytes of the input rows this forward keeps for the backward: the float rows
         * ({@code 4 M H}) or the wire rows ({@code M rowBytes}).
         *
         * @return bytes
         */
        public long savedInputBytes() {
            if (xRows != null) {
                return xRows.numRows() * xRows.rowBytes();
            }
            return x.getShape().size() * 4;
        }
    }

    /**
     * Returns the native format that reads the rows of a wire format as they are.
     *
     * @param wire FP8 or MXFP8
     * @return {@link GemmFormat#FP8_BLOCK} for FP8, {@link GemmFormat#MXFP8} for MXFP8, else null
     */
    public static GemmFormat formatOf(WireFormat wire) {
        return switch (wire) {
            case FP8 -> GemmFormat.FP8_BLOCK;
            case MXFP8 -> GemmFormat.MXFP8;
            default -> null;
        };
    }

    /**
     * The gradients of the backward.
     *
     * @param dx of the input rows: [M, H]
     * @param dw13 of the stacked gate/up weights: [G, 2I, H] (gate rows, then up rows)
     * @param dw2 of the down weights: [G, H, I]
     * @param dh of h: [M, I]
     * @param dy13 of the fused gate/up output: [M, 2I]
     */
    public record Gradients(NDArray dx, NDArray dw13, NDArray dw2, NDArray dh, NDArray dy13) {}

    /**
     * Runs the forward.
     *
     * @param x the rows of all groups, grouped by expert: [M, H] float32
     * @param offsets group g owns rows [offsets[g], offsets[g + 1]): G + 1 values from 0 to M,
     *     non-decreasing (empty groups allowed)
     * @param weights the step's quantised weights, on the device of {@code x}
     * @return the output and what the backward needs
     * @throws IllegalArgumentException naming the argument on a wrong shape, type, device or offset
     */
    public static Forward forward(NDArray x, long[] offsets, QuantizedWeights weights) {
        if (weights == null) {
            throw new IllegalArgumentException("argument 'weights' must not be null");
        }
        long hidden = weights.getHiddenSize();
        long inter = weights.getIntermediateSize();
        Shape xs = x.getShape();
        if (xs.dimension() != 2) {
            throw new IllegalArgumentException(
                    "argument 'x' must have shape [M, " + hidden + "], got " + xs);
        }
        long m = xs.get(0);
        checkOffsets(offsets, weights.getGroups(), m);
        GemmArrays arrays = new GemmArrays(x.getManager(), x.getDevice());
        weights.checkDevice(arrays);
        NDArray xin = arrays.input(x, "x", new Shape(m, hidden), "'x'");
        NDArray y13 = arrays.alloc(new Shape(m, 2 * inter), DataType.FLOAT32);
        NDArray h = arrays.alloc(new Shape(m, inter), DataType.FLOAT32);
        NDArray y = arrays.alloc(new Shape(m, hidden), DataType.FLOAT32);
        if (m == 0) {
            return new Forward(y, xin, y13, h, offsets.clone(), weights);
        }
        GemmFormat format = weights.getFormat();
        int f = format.code();
        GemmKernels kernels = GemmKernels.of(arrays.device());
        NDArray[] qx = rows(arrays, format, m, hidden);
        kernels.quantizeRows(f, addr(xin), m, hidden, addr(qx[0]), addr(qx[1]));
        NDArray[] w13 = weights.w13();
        kernels.groupedM(
                f,
                2 * inter,
                hidden,
                m,
                offsets,
                addr(qx[0]),
                addr(qx[1]),
                addr(w13[0]),
                addr(w13[1]),
                addr(y13));
        close(qx);
        down(kernels, arrays, format, m, hidden, inter, offsets, weights, y13, h, y);
        return new Forward(y, xin, y13, h, offsets.clone(), weights);
    }

    /**
     * Runs the forward on rows in their wire form, as a dispatch received them ({@link
     * dev.djlmoe.ep.EpBuffer#dispatchWire}): the gate/up GEMM reads the wire's e4m3 elements and
     * scales in place (no quantisation pass; they are the bytes {@link #forward(NDArray, long[],
     * QuantizedWeights)} would make from the decoded rows), and the backward decodes them for the
     * weight gradient. The result equals that of the float forward of the decoded rows, bit for
     * bit.
     *
     * @param x the wire rows of all groups, grouped by expert: [M, rowBytes] uint8, on the FP8 wire
     *     for {@link GemmFormat#FP8_BLOCK} weights and on the MXFP8 wire for MXFP8 weights
     * @param offsets group g owns rows [offsets[g], offsets[g + 1]): G + 1 values from 0 to M
     * @param weights the step's quantised weights, on the device of {@code x}
     * @return the output and what the backward needs ({@link Forward#xRows} set, {@code x} null)
     * @throws IllegalArgumentException naming the argument on a wire that does not match the
     *     weights' format, a wrong hidden size, device or offset
     */
    public static Forward forward(WireRows x, long[] offsets, QuantizedWeights weights) {
        if (weights == null) {
            throw new IllegalArgumentException("argument 'weights' must not be null");
        }
        if (x == null) {
            throw new IllegalArgumentException("argument 'x' must not be null");
        }
        GemmFormat format = weights.getFormat();
        if (formatOf(x.wire()) != format) {
            throw new IllegalArgumentException(
                    "argument 'x' holds "
                            + x.wire()
                            + " wire rows, which the "
                            + format
                            + " GEMM cannot read as they are (FP8 rows feed FP8_BLOCK, MXFP8"
                            + " rows feed MXFP8)");
        }
        long hidden = weights.getHiddenSize();
        long inter = weights.getIntermediateSize();
        if (x.hidden() != hidden) {
            throw new IllegalArgumentException(
                    "argument 'x' has rows of hidden = "
                            + x.hidden()
                            + " channels, the weights "
                            + hidden);
        }
        long m = x.numRows();
        checkOffsets(offsets, weights.getGroups(), m);
        NDArray rows = x.rows();
        GemmArrays arrays = new GemmArrays(rows.getManager(), rows.getDevice());
        weights.checkDevice(arrays);
        if (m > 0 && !TorchMemory.isContiguous(rows, "x")) {
            rows = TorchMemory.toContiguous(rows, "x");
            x = x.withRows(rows);
        }
        NDArray y13 = arrays.alloc(new Shape(m, 2 * inter), DataType.FLOAT32);
        NDArray h = arrays.alloc(new Shape(m, inter), DataType.FLOAT32);
        NDArray y = arrays.alloc(new Shape(m, hidden), DataType.FLOAT32);
        if (m == 0) {
            return new Forward(y, null, y13, h, offsets.clone(), weights, x);
        }
        int f = format.code();
        GemmKernels kernels = GemmKernels.of(arrays.device());
        long a = addr(rows);
        NDArray[] w13 = weights.w13();
        kernels.groupedM(
                f,
                2 * inter,
                hidden,
                m,
                offsets,
                a,
                x.rowBytes(),
                a + x.scaleOffset(),
                x.rowBytes(),
                addr(w13[0]),
                addr(w13[1]),
                addr(y13));
        down(kernels, arrays, format, m, hidden, inter, offsets, weights, y13, h, y);
        return new Forward(y, null, y13, h, offsets.clone(), weights, x);
    }

    /** The SwiGLU quantiser and the down GEMM: h and y from y13. */
    private static void down(
            GemmKernels kernels,
            GemmArrays arrays,
            GemmFormat format,
            long m,
            long hidden,
            long inter,
            long[] offsets,
            QuantizedWeights weights,
            NDArray y13,
            NDArray h,
            NDArray y) {
        int f = format.code();
        NDArray[] qh = rows(arrays, format, m, inter);
        kernels.swigluQuantizeRows(f, addr(y13), m, inter, addr(h), addr(qh[0]), addr(qh[1]));
        NDArray[] w2 = weights.w2();
        kernels.groupedM(
                f,
                hidden,
                inter,
                m,
                offsets,
                addr(qh[0]),
                addr(qh[1]),
                addr(w2[0]),
                addr(w2[1]),
                addr(y));
        close(qh);
    }

    /**
     * Runs the backward of a forward whose weights were quantised with {@code forBackward}.
     *
     * @param saved the forward
     * @param dy the gradient of the output: [M, H] float32 on the forward's device
     * @return the gradients
     * @throws IllegalArgumentException naming the argument on a wrong shape, type or device, or
     *     weights quantised without their transposed copies
     */
    public static Gradients backward(Forward saved, NDArray dy) {
        QuantizedWeights weights = saved.weights();
        if (!weights.hasBackward()) {
            throw new IllegalArgumentException(
                    "argument 'saved': its weights were quantised without the transposed copies"
                            + " the backward needs (QuantizedWeights.quantize forBackward = true)");
        }
        NDArray x = saved.x();
        NDArray ref = x != null ? x : saved.xRows().rows();
        long m = ref.getShape().get(0);
        long hidden = weights.getHiddenSize();
        long inter = weights.getIntermediateSize();
        int groups = weights.getGroups();
        long[] offsets = saved.offsets();
        GemmArrays arrays = new GemmArrays(ref.getManager(), ref.getDevice());
        NDArray dyin = arrays.input(dy, "dy", new Shape(m, hidden), "the forward's 'x'");
        NDArray dh = arrays.alloc(new Shape(m, inter), DataType.FLOAT32);
        NDArray dy13 = arrays.alloc(new Shape(m, 2 * inter), DataType.FLOAT32);
        NDArray dx = arrays.alloc(new Shape(m, hidden), DataType.FLOAT32);
        NDManager manager = arrays.manager();
        if (m == 0) {
            NDArray dw13 = zeros(manager, arrays, new Shape(groups, 2 * inter, hidden));
            NDArray dw2 = zeros(manager, arrays, new Shape(groups, hidden, inter));
            return new Gradients(dx, dw13, dw2, dh, dy13);
        }
        GemmFormat format = weights.getFormat();
        int f = format.code();
        GemmKernels kernels = GemmKernels.of(arrays.device());
        // activation gradients: dh = dy W2, dy13 = dSwiGLU(y13, dh), dx = dy13 W13
        NDArray[] qdy = rows(arrays, format, m, hidden);
        kernels.quantizeRows(f, addr(dyin), m, hidden, addr(qdy[0]), addr(qdy[1]));
        NDArray[] w2t = weights.w2t();
        kernels.groupedM(
                f,
                inter,
                hidden,
                m,
                offsets,
                addr(qdy[0]),
                addr(qdy[1]),
                addr(w2t[0]),
                addr(w2t[1]),
                addr(dh));
        close(qdy);
        NDArray[] qdy13 = rows(arrays, format, m, 2 * inter);
        kernels.dswigluQuantizeRows(
                f,
                addr(saved.y13()),
                addr(dh),
                m,
                inter,
                addr(dy13),
                addr(qdy13[0]),
                addr(qdy13[1]));
        NDArray[] w13t = weights.w13t();
        kernels.groupedM(
                f,
                hidden,
                2 * inter,
                m,
                offsets,
                addr(qdy13[0]),
                addr(qdy13[1]),
                addr(w13t[0]),
                addr(w13t[1]),
                addr(dx));
        close(qdy13);
        // weight gradients: K-grouped over each group's tokens
        long mp = paddedRows(offsets);
        NDArray dw2 = arrays.alloc(new Shape(groups, hidden, inter), DataType.FLOAT32);
        weightGradient(kernels, arrays, format, offsets, mp, dyin, hidden, saved.h(), inter, dw2);
        NDArray dw13 = arrays.alloc(new Shape(groups, 2 * inter, hidden), DataType.FLOAT32);
        // Wire rows: the float rows only live while their transposed quantisation runs.
        NDArray xf = x != null ? x : saved.xRows().decode();
        weightGradient(kernels, arrays, format, offsets, mp, dy13, 2 * inter, xf, hidden, dw13);
        if (xf != x) {
            xf.close();
        }
        if (dyin != dy) {
            dyin.close();
        }
        return new Gradients(dx, dw13, dw2, dh, dy13);
    }

    /** dW [G, n, k] = per group, sum over its rows of dOut[m, :n]^T in[m, :k]. */
    private static void weightGradient(
            GemmKernels kernels,
            GemmArrays arrays,
            GemmFormat format,
            long[] offsets,
            long mp,
            NDArray dOut,
            long n,
            NDArray in,
            long k,
            NDArray dw) {
        long m = in.getShape().get(0);
        int f = format.code();
        long tileBytes = format.rowScaleBytes(mp);
        NDArray qa = arrays.bytes(n, mp);
        NDArray sa = arrays.bytes(n, tileBytes);
        kernels.quantizeRowsTGrouped(f, addr(dOut), m, n, offsets, addr(qa), addr(sa));
        NDArray qb = arrays.bytes(k, mp);
        NDArray sb = arrays.bytes(k, tileBytes);
        kernels.quantizeRowsTGrouped(f, addr(in), m, k, offsets, addr(qb), addr(sb));
        kernels.groupedK(f, n, k, offsets, addr(qa), addr(sa), addr(qb), addr(sb), addr(dw));
        close(new NDArray[] {qa, sa, qb, sb});
    }

    private static long paddedRows(long[] offsets) {
        long[] mp = new long[1];
        try (NativeCall c = new NativeCall()) {
            c.check(
                    NativeGemm.nep_gemm_padded_rows(
                            offsets.length - 1, offsets, mp, null, c.err(), c.cap()),
                    "FP8 weight-gradient padding");
        }
        return mp[0];
    }

    private static NDArray zeros(NDManager manager, GemmArrays arrays, Shape shape) {
        return manager.zeros(shape, DataType.FLOAT32, arrays.device());
    }

    private static NDArray[] rows(GemmArrays arrays, GemmFormat format, long m, long k) {
        return new NDArray[] {arrays.bytes(m, k), arrays.bytes(m, format.rowScaleBytes(k))};
    }

    private static long addr(NDArray a) {
        return GemmArrays.address(a, "buffer");
    }

    private static void close(NDArray[] arrays) {
        for (NDArray a : arrays) {
            a.close();
        }
    }

    /**
     * Checks group offsets against the weights' groups and the rows.
     *
     * @throws IllegalArgumentException naming the offset, its value and the limit
     */
    static void checkOffsets(long[] offsets, int groups, long m) {
        if (offsets == null || offsets.length != groups + 1) {
            throw new IllegalArgumentException(
                    "argument 'offsets' must hold G + 1 = "
                            + (groups + 1)
                            + " values, got "
                            + (offsets == null ? "null" : offsets.length));
        }
        if (offsets[0] != 0) {
            throw new IllegalArgumentException(
                    "argument 'offsets': offsets[0] must be 0, got " + offsets[0]);
        }
        for (int g = 0; g < groups; g++) {
            if (offsets[g + 1] < offsets[g]) {
                throw new IllegalArgumentException(
                        "argument 'offsets' must be non-decreasing: offsets["
                                + (g + 1)
                                + "] = "
                                + offsets[g + 1]
                                + " < offsets["
                                + g
                                + "] = "
                                + offsets[g]);
            }
        }
        if (offsets[groups] != m) {
            throw new IllegalArgumentException(
                    "argument 'offsets': offsets["
                            + groups
                            + "] = "
                            + offsets[groups]
                            + " must equal the rows of x, "
                            + m);
        }
    }
}
