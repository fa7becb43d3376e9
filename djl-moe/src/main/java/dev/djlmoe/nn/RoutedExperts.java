package dev.djlmoe.nn;

import ai.djl.Device;
import ai.djl.ndarray.NDArray;
import ai.djl.ndarray.NDArrays;
import ai.djl.ndarray.NDList;
import ai.djl.ndarray.NDManager;
import ai.djl.ndarray.types.DataType;
import ai.djl.ndarray.types.Shape;
import ai.djl.nn.AbstractBlock;
import ai.djl.nn.Parameter;
import ai.djl.nn.core.Linear;
import ai.djl.training.ParameterStore;
import ai.djl.util.PairList;
import dev.djlmoe.autograd.Autograd;
import dev.djlmoe.autograd.Tape;
import dev.djlmoe.ep.EpContext;
import dev.djlmoe.ep.WireRows;

/**
 * The routed experts that live on one expert-parallel rank: {@code El} SwiGLU experts applied to
 * the rows each row picked, weighted and summed.
 *
 * <p>For every received row r:
 *
 * <pre>
 *   y[r] = sum over k with idx[r, k] &gt;= 0 of  w[r, k] * Expert_{idx[r, k]}(x[r])
 *   Expert_e(v) = down_e (silu(gate_e v) * (up_e v))
 * </pre>
 *
 * Rows with no local slot give zeros. This is the computation between DeepEP's dispatch (which
 * delivers {@code x}, local {@code topk_idx} and {@code topk_weights}) and combine (which takes
 * {@code y}).
 *
 * <p>Parameters, stacked over the local experts; slice e of each is exactly Hugging Face's {@code
 * mlp.experts.{e}.gate_proj.weight} etc.:
 *
 * <ul>
 *   <li>{@code gate_proj}: [El, I, H], initialised normal with std {@code 1/sqrt(H)}
 *   <li>{@code up_proj}: [El, I, H], initialised normal with std {@code 1/sqrt(H)}
 *   <li>{@code down_proj}: [El, H, I], initialised normal with std {@code 1/sqrt(I)}
 * </ul>
 *
 * <p>Shapes:
 *
 * <ul>
 *   <li>input {@code x}: [R, H] float32
 *   <li>input {@code topk_idx}: [R, K] int64 (int32 accepted), local expert ids in [0, El) or -1
 *   <li>input {@code topk_weights}: [R, K] float32 (the value at a -1 slot is ignored but must be
 *       finite)
 *   <li>output {@code y}: [R, H] float32
 * </ul>
 *
 * <p>How: the (row, slot) pairs are sorted by expert on the host (counting sort, stable, so rows
 * keep their order within an expert); one gather puts the rows of x in that order; each expert runs
 * on its contiguous slice (two or three matrix products); one gather brings the expert outputs back
 * to [R, K, H] (-1 slots read an appended zero row) and a batched product {@code w [R, 1, K] @ Y
 * [R, K, H]} sums them. Slicing uses {@code split} so the backward pass concatenates gradients
 * instead of adding El full-size zero tensors. Everything is ordinary DJL autograd: gradients reach
 * x, the weights and the three stacked parameters. Duplicate ids in a row are computed twice and
 * summed.
 *
 * <p>With a quantised {@link ExpertPrecision} in a training step, the gradients entering the
 * backward GEMMs are rounded through the staged backward: the block records that on the tape of the
 * {@link EpContext} it was built with ({@link Builder#optContext}), the one place every block of a
 * model reads the step's tape from.
 *
 * <p>Where the FP8 and MXFP8 GEMMs run ({@link ExpertGemmPath}): on a GPU, real FP8 tensor-core
 * GEMMs through the native grouped kernels ({@link dev.djlmoe.gemm.Fp8ExpertGemms}, the CUDA
 * plug-in); on the CPU, the DJL float32 emulation by default, and the native CPU oracle (same
 * numerics as the GPU kernels) on request ({@link Builder#optGemmPath} or the system property
 * {@value ExpertGemmPath#PROPERTY}{@code =native}). On the native path the whole expert
 * feed-forward is one entry of the staged backward's tape (inputs: the rows sorted by expert and
 * the three weight parameters; output: the expert outputs); its vector-Jacobian product runs the
 * native activation-gradient and weight-gradient GEMMs and the tape pushes the results into the
 * graph, so the weight gradients land in the parameters' gradients. Without a tape (inference) only
 * the forward runs; a forward that autograd records without a tape falls back to the emulation.
 *
 * <p>The block should be constructed using {@link RoutedExperts.Builder}.
 */
public class RoutedExperts extends AbstractBlock {

    /** Name of the stacked gate projection parameter. */
    public static final String GATE_PROJ = "gate_proj";

    /** Name of the stacked up projection parameter. */
    public static final String UP_PROJ = "up_proj";

    /** Name of the stacked down projection parameter. */
    public static final String DOWN_PROJ = "down_proj";

    private static final byte VERSION = 1;

    private final int numExperts;
    private final long hiddenSize;
    private final long intermediateSize;
    private final Parameter gateProj;
    private final Parameter upProj;
    private final Parameter downProj;
    private final ExpertPrecision precision;
    private final ExpertGemmPath gemmPath;
    private final EpContext context;

    /**
     * Creates the routed experts; use {@link #builder()}.
     *
     * @param builder the validated builder
     */
    @SuppressWarnings("this-escape")
    protected RoutedExperts(Builder builder) {
        super(VERSION);
        numExperts = builder.numExperts;
        precision = builder.precision;
        gemmPath = builder.gemmPath;
        context = builder.context;
        hiddenSize = builder.hiddenSize;
        intermediateSize = builder.intermediateSize;
        float inStd = (float) (1.0 / Math.sqrt(hiddenSize));
        float downStd = (float) (1.0 / Math.sqrt(intermediateSize));
        gateProj =
                addParameter(
                        SwiGluMlp.weight(
                                GATE_PROJ,
                                inStd,
                                new Shape(numExperts, intermediateSize, hiddenSize)));
        upProj =
                addParameter(
                        SwiGluMlp.weight(
                                UP_PROJ,
                                inStd,
                                new Shape(numExperts, intermediateSize, hiddenSize)));
        downProj =
                addParameter(
                        SwiGluMlp.weight(
                                DOWN_PROJ,
                                downStd,
                                new Shape(numExperts, hiddenSize, intermediateSize)));
    }

    /**
     * Returns the number of local experts El.
     *
     * @return the number of local experts
     */
    public int getNumExperts() {
        return numExperts;
    }

    /**
     * Returns the hidden size H.
     *
     * @return the hidden size
     */
    public long getHiddenSize() {
        return hiddenSize;
    }

    /**
     * Returns the GEMM numerics.
     *
     * @return the precision
     */
    public ExpertPrecision getPrecision() {
        return precision;
    }

    /**
     * Returns where the quantised GEMMs run.
     *
     * @return the GEMM path
     */
    public ExpertGemmPath getGemmPath() {
        return gemmPath;
    }

    /**
     * Returns the intermediate size I of each expert.
     *
     * @return I
     */
    public long getIntermediateSize() {
        return intermediateSize;
    }

    /** {@inheritDoc} */
    @Override
    protected NDList forwardInternal(
            ParameterStore parameterStore,
            NDList inputs,
            boolean training,
            PairList<String, Object> params) {
        if (inputs.size() != 3) {
            throw new IllegalArgumentException(
                    "RoutedExperts needs inputs (x, topk_idx, topk_weights), got "
                            + inputs.size()
                            + " arrays");
        }
        NDArray x = inputs.get(0);
        Tape tape = StepTape.of(context, training, "RoutedExperts");
        return routedExperts(
                x,
                inputs.get(1),
                inputs.get(2),
                parameterStore.getValue(gateProj, x.getDevice(), training),
                parameterStore.getValue(upProj, x.getDevice(), training),
                parameterStore.getValue(downProj, x.getDevice(), training),
                precision,
                gemmPath,
                tape);
    }

    /** {@inheritDoc} */
    @Override
    public Shape[] getOutputShapes(Shape[] inputs) {
        return new Shape[] {inputs[0]};
    }

    /** {@inheritDoc} */
    @Override
    protected void beforeInitialize(Shape... inputShapes) {
        super.beforeInitialize(inputShapes);
        if (inputShapes.length != 3) {
            throw new IllegalArgumentException(
                    "RoutedExperts needs input shapes (x, topk_idx, topk_weights), got "
                            + inputShapes.length);
        }
        Shape x = inputShapes[0];
        if (x.dimension() != 2 || x.get(1) != hiddenSize) {
            throw new IllegalArgumentException(
                    "RoutedExperts input x must have shape [R, " + hiddenSize + "], got " + x);
        }
    }

    /**
     * Applies the routed experts: the functional form of {@link RoutedExperts} (see the class
     * description).
     *
     * @param x received rows: [R, H] float32
     * @param topkIdx local expert ids: [R, K] int64 (int32 accepted), in [0, El) or -1
     * @param topkWeights weights: [R, K] float32
     * @param gateProj gate_proj: [El, I, H]
     * @param upProj up_proj: [El, I, H]
     * @param downProj down_proj: [El, H, I]
     * @return NDList of y: [R, H]
     * @throws IllegalArgumentException on a wrong shape, type or expert id
     */
    public static NDList routedExperts(
            NDArray x,
            NDArray topkIdx,
            NDArray topkWeights,
            NDArray gateProj,
            NDArray upProj,
            NDArray downProj) {
        return routedExperts(
                x,
                topkIdx,
                topkWeights,
                gateProj,
                upProj,
                downProj,
                ExpertPrecision.FP32,
                (Tape) null);
    }

    /**
     * Applies the routed experts with a choice of GEMM numerics.
     *
     * @param x received rows: [R, H] float32
     * @param topkIdx local expert ids: [R, K] int64 (int32 accepted), in [0, El) or -1
     * @param topkWeights weights: [R, K] float32
     * @param gateProj gate_proj: [El, I, H]
     * @param upProj up_proj: [El, I, H]
     * @param downProj down_proj: [El, H, I]
     * @param precision the GEMM numerics (a quantised one emulates its rounding in the forward
     *     pass; the rounding of the backward GEMMs' gradient inputs needs the staged backward,
     *     which only the block form records, on the tape of its {@link EpContext})
     * @return NDList of y: [R, H]
     * @throws IllegalArgumentException on a wrong shape, type or expert id
     */
    public static NDList routedExperts(
            NDArray x,
            NDArray topkIdx,
            NDArray topkWeights,
            NDArray gateProj,
            NDArray upProj,
            NDArray downProj,
            ExpertPrecision precision) {
        return routedExperts(
                x, topkIdx, topkWeights, gateProj, upProj, downProj, precision, (Tape) null);
    }

    /**
     * Applies the routed experts with a choice of GEMM numerics and of where the quantised GEMMs
     * run. Without a tape the native path computes the forward only: in a forward that autograd
     * records, the emulation runs instead so that gradients still flow.
     *
     * @param x received rows: [R, H] float32
     * @param topkIdx local expert ids: [R, K] int64 (int32 accepted), in [0, El) or -1
     * @param topkWeights weights: [R, K] float32
     * @param gateProj gate_proj: [El, I, H]
     * @param upProj up_proj: [El, I, H]
     * @param downProj down_proj: [El, H, I]
     * @param precision the GEMM numerics
     * @param gemmPath where a quantised precision's GEMMs run
     * @return NDList of y: [R, H]
     * @throws IllegalArgumentException on a wrong shape, type or expert id
     */
    public static NDList routedExperts(
            NDArray x,
            NDArray topkIdx,
            NDArray topkWeights,
            NDArray gateProj,
            NDArray upProj,
            NDArray downProj,
            ExpertPrecision precision,
            ExpertGemmPath gemmPath) {
        return routedExperts(
                x, topkIdx, topkWeights, gateProj, upProj, downProj, precision, gemmPath, null);
    }

    /**
     * Applies the routed experts with a choice of GEMM numerics, recording the rounding of the
     * backward GEMMs' gradient inputs on {@code tape} (the step's tape, which the block reads from
     * its context; null records nothing).
     */
    static NDList routedExperts(
            NDArray x,
            NDArray topkIdx,
            NDArray topkWeights,
            NDArray gateProj,
            NDArray upProj,
            NDArray downProj,
            ExpertPrecision precision,
            Tape tape) {
        return routedExperts(
                x,
                topkIdx,
                topkWeights,
                gateProj,
                upProj,
                downProj,
                precision,
                ExpertGemmPath.AUTO,
                tape);
    }

    /**
     * Applies the routed experts: the numerics, where quantised GEMMs run, and the step's tape (or
     * null).
     */
    static NDList routedExperts(
            NDArray x,
            NDArray topkIdx,
            NDArray topkWeights,
            NDArray gateProj,
            NDArray upProj,
            NDArray downProj,
            ExpertPrecision precision,
            ExpertGemmPath gemmPath,
            Tape tape) {
        if (precision == null) {
            throw new IllegalArgumentException("precision must not be null");
        }
        GemmRounding rounding = GemmRounding.of(precision); // null: plain float32 GEMMs
        Shape gs = gateProj.getShape();
        if (gs.dimension() != 3) {
            throw new IllegalArgumentException("gateProj must have shape [El, I, H], got " + gs);
        }
        int numExperts = (int) gs.get(0);
        long inter = gs.get(1);
        long hidden = gs.get(2);
        checkShape("upProj", upProj, new Shape(numExperts, inter, hidden));
        checkShape("downProj", downProj, new Shape(numExperts, hidden, inter));
        Shape xs = x.getShape();
        if (xs.dimension() != 2 || xs.get(1) != hidden) {
            throw new IllegalArgumentException("x must have shape [R, " + hidden + "], got " + xs);
        }
        checkFloat32("x", x);
        checkFloat32("topkWeights", topkWeights);
        checkFloat32("gateProj", gateProj);
        checkFloat32("upProj", upProj);
        checkFloat32("downProj", downProj);
        long rows = xs.get(0);
        int k = checkTopk(topkIdx, topkWeights, rows);

        Plan plan = Plan.of(MoeRouter.toLongs(topkIdx, "topkIdx"), (int) rows, k, numExperts);
        NDManager manager = x.getManager();
        NDList temps = new NDList();
        try {
            NDArray rowIdx = indexArray(manager, plan.sortedRows, x.getDevice()); // [N]
            temps.add(rowIdx);
            NDArray sortedX = x.get(rowIdx); // [N, H], rows grouped by expert
            if (rounding != null && useNative(gemmPath, x.getDevice(), tape)) {
                // The whole expert FFN as one native op (a tape entry when training).
                NDArray sortedY =
                        NativeExpertFfn.apply(
                                sortedX, plan.offsets, gateProj, upProj, downProj, precision, tape);
                if (tape == null) {
                    temps.add(sortedX);
                    temps.add(sortedY);
                }
                return combine(manager, sortedY, plan, topkWeights, rows, k, hidden, temps);
            }
            temps.add(sortedX);
            if (rounding != null) {
                // Quantised numerics: GEMM inputs rounded along their reduction axis (H here and
                // in the gate/up weights, I in the down weights).
                sortedX = rounding.activation(sortedX);
                gateProj = rounding.weight(gateProj);
                upProj = rounding.weight(upProj);
                downProj = rounding.weight(downProj);
                temps.add(sortedX);
            }
            NDList xPieces = sortedX.split(plan.splitPoints(), 0); // El x [c_e, H]
            temps.addAll(xPieces);

            NDList gatePieces = gateProj.split(numExperts, 0); // El x [1, I, H]
            temps.addAll(gatePieces);
            NDList upPieces = upProj.split(numExperts, 0); // El x [1, I, H]
            temps.addAll(upPieces);
            NDList downPieces = downProj.split(numExperts, 0); // El x [1, H, I]
            temps.addAll(downPieces);

            NDList outputs = new NDList(numExperts + 1);
            for (int e = 0; e < numExperts; e++) {
                if (plan.counts[e] == 0) {
                    continue;
                }
                NDArray xe = xPieces.get(e); // [c_e, H]
                NDArray g = gatePieces.get(e).squeeze(0); // [I, H]
                NDArray u = upPieces.get(e).squeeze(0); // [I, H]
                NDArray gate = Linear.linear(xe, g).singletonOrThrow(); // [c_e, I]
                NDArray up = Linear.linear(xe, u).singletonOrThrow(); // [c_e, I]
                NDArray gateIn = gate;
                NDArray upIn = up;
                if (rounding != null) {
                    // Tape leaves: the tape reads their gradients later, so they stay open.
                    gateIn = rounding.gradient(tape, gate);
                    upIn = rounding.gradient(tape, up);
                }
                NDArray sg = SwiGluMlp.silu(gateIn); // [c_e, I]
                NDArray act = sg.mul(upIn); // [c_e, I]
                if (rounding != null) {
                    NDArray rounded = rounding.activation(act);
                    act.close();
                    act = rounded;
                }
                closeAll(new NDList(g, u, sg));
                if (gateIn == gate) {
                    // (recorded on a tape, gate and up are inputs it pushes gradients into later)
                    closeAll(new NDList(gate, up));
                }
                NDArray d = downPieces.get(e).squeeze(0); // [H, I]
                NDArray ye = Linear.linear(act, d).singletonOrThrow(); // [c_e, H]
                if (rounding != null && tape != null) {
                    // ye is a tape input and its replacement a tape leaf: both stay open.
                    outputs.add(rounding.gradient(tape, ye));
                } else {
                    outputs.add(ye);
                    temps.add(ye);
                }
                act.close();
                d.close();
            }
            NDArray zeroRow =
                    manager.zeros(new Shape(1, hidden), DataType.FLOAT32, x.getDevice()); // [1, H]
            outputs.add(zeroRow);
            temps.add(zeroRow);
            NDArray sortedY = NDArrays.concat(outputs, 0); // [N + 1, H], row N is zero
            temps.add(sortedY);
            return gatherWeighted(manager, sortedY, plan, topkWeights, rows, k, hidden, temps);
        } finally {
            closeAll(temps);
        }
    }

    /** Whether a quantised precision's GEMMs run natively here. */
    static boolean useNative(ExpertGemmPath path, Device device, Tape tape) {
        if (tape == null && Autograd.isRecording()) {
            return false; // without a tape the native op would cut the gradients
        }
        return path.nativeOn(device);
    }

    /**
     * The block's forward on rows in their wire form ({@link WireFeed}): as {@link
     * #forwardInternal}, but the rows are the dispatch's wire rows and, with a tape, {@code recvX}
     * stands for them in the graph.
     *
     * @param parameterStore the parameters
     * @param rows the received rows in wire form: [R, rowBytes] uint8
     * @param recvX [R, H] float32 stand-in leaf of the dispatch (with a tape), or null
     * @param topkIdx [R, K] local expert ids
     * @param topkWeights [R, K] float32
     * @param training whether this is a training forward
     * @return y: [R, H]
     */
    NDArray forwardWire(
            ParameterStore parameterStore,
            WireRows rows,
            NDArray recvX,
            NDArray topkIdx,
            NDArray topkWeights,
            boolean training) {
        Device device = rows.rows().getDevice();
        Tape tape = StepTape.of(context, training, "RoutedExperts");
        return routedExpertsWire(
                rows,
                recvX,
                topkIdx,
                topkWeights,
                parameterStore.getValue(gateProj, device, training),
                parameterStore.getValue(upProj, device, training),
                parameterStore.getValue(downProj, device, training),
                precision,
                tape);
    }

    /**
     * The routed experts on wire rows: the rows are sorted by expert with one gather of their bytes
     * and fed to the native GEMMs as they are (see {@link NativeExpertFfn#applyWire}).
     */
    static NDArray routedExpertsWire(
            WireRows rows,
            NDArray recvX,
            NDArray topkIdx,
            NDArray topkWeights,
            NDArray gateProj,
            NDArray upProj,
            NDArray downProj,
            ExpertPrecision precision,
            Tape tape) {
        if (!WireFeed.matches(rows.wire(), precision)) {
            throw new IllegalArgumentException(
                    "wire rows of "
                            + rows.wire()
                            + " cannot feed "
                            + precision
                            + " experts (FP8 rows feed FP8, MXFP8 rows feed MXFP8)");
        }
        Shape gs = gateProj.getShape();
        int numExperts = (int) gs.get(0);
        long hidden = gs.get(2);
        if (rows.hidden() != hidden) {
            throw new IllegalArgumentException(
                    "wire rows have hidden = " + rows.hidden() + ", the experts " + hidden);
        }
        long r = rows.numRows();
        if (recvX != null) {
            checkShape("recvX", recvX, new Shape(r, hidden));
        }
        checkFloat32("topkWeights", topkWeights);
        int k = checkTopk(topkIdx, topkWeights, r);
        Plan plan = Plan.of(MoeRouter.toLongs(topkIdx, "topkIdx"), (int) r, k, numExperts);
        NDManager manager = rows.rows().getManager();
        Device device = rows.rows().getDevice();
        NDList temps = new NDList();
        try {
            NDArray rowIdx = indexArray(manager, plan.sortedRows, device); // [N]
            WireRows sorted = rows.withRows(rows.rows().get(rowIdx)); // [N, rowBytes]
            NDArray sortedY =
                    NativeExpertFfn.applyWire(
                            recvX,
                            rowIdx,
                            sorted,
                            plan.offsets,
                            gateProj,
                            upProj,
                            downProj,
                            precision,
                            tape);
            if (tape == null) {
                temps.add(sortedY);
            }
            return combine(manager, sortedY, plan, topkWeights, r, k, hidden, temps).head();
        } finally {
            closeAll(temps);
        }
    }

    /** Appends the zero row to the sorted expert outputs [N, H] and sums each row's slots. */
    private static NDList combine(
            NDManager manager,
            NDArray sortedY,
            Plan plan,
            NDArray topkWeights,
            long rows,
            int k,
            long hidden,
            NDList temps) {
        NDArray zeroRow =
                manager.zeros(new Shape(1, hidden), DataType.FLOAT32, sortedY.getDevice());
        temps.add(zeroRow);
        NDArray padded = NDArrays.concat(new NDList(sortedY, zeroRow), 0); // [N + 1, H]
        temps.add(padded);
        return gatherWeighted(manager, padded, plan, topkWeights, rows, k, hidden, temps);
    }

    /** y[r] = sum over slots of w[r, k] * sortedY[slotPos[r, k]] (row N of sortedY is zero). */
    private static NDList gatherWeighted(
            NDManager manager,
            NDArray sortedY,
            Plan plan,
            NDArray topkWeights,
            long rows,
            int k,
            long hidden,
            NDList temps) {
        NDArray slotIdx = indexArray(manager, plan.slotPos, sortedY.getDevice()); // [R * K]
        temps.add(slotIdx);
        NDArray gathered = sortedY.get(slotIdx); // [R * K, H]
        temps.add(gathered);
        NDArray perSlot = gathered.reshape(rows, k, hidden); // [R, K, H]
        temps.add(perSlot);
        NDArray w = topkWeights.reshape(rows, 1, k); // [R, 1, K]
        temps.add(w);
        NDArray weighted = w.batchMatMul(perSlot); // [R, 1, H]
        temps.add(weighted);
        return new NDList(weighted.reshape(rows, hidden)); // [R, H]
    }

    /**
     * Returns an index array that the engine owns. An array made from Java data aliases memory that
     * DJL frees when the array is closed, while autograd keeps index arrays for the backward pass:
     * the copy outlives the close of its DJL handle.
     */
    private static NDArray indexArray(NDManager manager, long[] values, Device device) {
        NDArray host = manager.create(values);
        // duplicate() clones into engine-owned storage (toDevice to the same device would not).
        NDArray owned = host.duplicate().toDevice(device, false);
        host.close();
        return owned;
    }

    private static void closeAll(NDList... lists) {
        for (NDList list : lists) {
            for (NDArray a : list) {
                a.close();
            }
        }
    }

    /**
     * Checks that {@code topkIdx} is [rows, K] and {@code topkWeights} [rows, K] too.
     *
     * @return K
     */
    private static int checkTopk(NDArray topkIdx, NDArray topkWeights, long rows) {
        Shape is = topkIdx.getShape();
        if (is.dimension() != 2 || is.get(0) != rows) {
            throw new IllegalArgumentException(
                    "topkIdx must have shape [" + rows + ", K], got " + is);
        }
        int k = (int) is.get(1);
        checkShape("topkWeights", topkWeights, new Shape(rows, k));
        return k;
    }

    private static void checkShape(String name, NDArray array, Shape expected) {
        if (!array.getShape().equals(expected)) {
            throw new IllegalArgumentException(
                    name + " must have shape " + expected + ", got " + array.getShape());
        }
    }

    private static void checkFloat32(String name, NDArray array) {
        if (array.getDataType() != DataType.FLOAT32) {
            throw new IllegalArgumentException(
                    name + " must be float32, got " + array.getDataType());
        }
    }

    /** The host-side sort of (row, slot) pairs by expert. */
    static final class Plan {

        /** Pairs per expert: El. */
        final int[] counts;

        /** Start of each expert's block in sorted order: El + 1. */
        final long[] offsets;

        /** Source row of each sorted pair: N. */
        final long[] sortedRows;

        /** Sorted position of each (row, slot), N for a -1 slot: R * K. */
        final long[] slotPos;

        private Plan(int[] counts, long[] offsets, long[] sortedRows, long[] slotPos) {
            this.counts = counts;
            this.offsets = offsets;
            this.sortedRows = sortedRows;
            this.slotPos = slotPos;
        }

        static Plan of(long[] idx, int rows, int k, int numExperts) {
            int[] counts = new int[numExperts];
            for (int i = 0; i < idx.length; i++) {
                long e = idx[i];
                if (e < -1 || e >= numExperts) {
                    throw new IllegalArgumentException(
                            "topkIdx must be in [-1, "
                                    + numExperts
                                    + "), got "
                                    + e
                                    + " at row "
                                    + i / k
                                    + ", slot "
                                    + i % k);
                }
                if (e >= 0) {
                    counts[(int) e]++;
                }
            }
            long[] offsets = new long[numExperts + 1];
            for (int e = 0; e < numExperts; e++) {
                offsets[e + 1] = offsets[e] + counts[e];
            }
            int n = (int) offsets[numExperts];
            long[] cursor = offsets.clone();
            long[] sortedRows = new long[n];
            long[] slotPos = new long[rows * k];
            for (int r = 0; r < rows; r++) {
                for (int s = 0; s < k; s++) {
                    long e = idx[r * k + s];
                    if (e < 0) {
                        slotPos[r * k + s] = n; // the appended zero row
                    } else {
                        long pos = cursor[(int) e]++;
                        sortedRows[(int) pos] = r;
                        slotPos[r * k + s] = pos;
                    }
                }
            }
            return new Plan(counts, offsets, sortedRows, slotPos);
        }

        /**
         * Returns the split points of the sorted rows: offsets[1..El-1].
         *
         * @return El - 1 split points
         */
        long[] splitPoints() {
            long[] points = new long[counts.length - 1];
            System.arraycopy(offsets, 1, points, 0, points.length);
            return points;
        }
    }

    /**
     * Creates a builder to build a {@code RoutedExperts}.
     *
     * @return a new builder
     */
    public static Builder builder() {
        return new Builder();
    }

    /** The Builder to construct a {@link RoutedExperts}. */
    public static final class Builder {

        private int numExperts;
        private long hiddenSize;
        private long intermediateSize;
        private ExpertPrecision precision = ExpertPrecision.FP32;
        private ExpertGemmPath gemmPath = ExpertGemmPath.AUTO;
        private EpContext context;

        Builder() {}

        /**
         * Sets the number of local experts El. Required.
         *
         * @param numExperts the number of local experts, at least 1
         * @return this Builder
         */
        public Builder setNumExperts(int numExperts) {
            this.numExperts = numExperts;
            return this;
        }

        /**
         * Sets the hidden size H. Required.
         *
         * @param hiddenSize the hidden size, at least 1
         * @return this Builder
         */
        public Builder setHiddenSize(long hiddenSize) {
            this.hiddenSize = hiddenSize;
            return this;
        }

        /**
         * Sets the intermediate size I of one expert ({@code moe_intermediate_size}). Required.
         *
         * @param intermediateSize the intermediate size, at least 1
         * @return this Builder
         */
        public Builder setIntermediateSize(long intermediateSize) {
            this.intermediateSize = intermediateSize;
            return this;
        }

        /**
         * Sets the GEMM numerics (default {@link ExpertPrecision#FP32}).
         *
         * @param precision the numerics
         * @return this Builder
         */
        public Builder optPrecision(ExpertPrecision precision) {
            if (precision == null) {
                throw new IllegalArgumentException("precision must not be null");
            }
            this.precision = precision;
            return this;
        }

        /**
         * Sets where the GEMMs of a quantised precision run (default {@link ExpertGemmPath#AUTO}:
         * native on a GPU, emulated on the CPU unless the system property {@value
         * ExpertGemmPath#PROPERTY} says otherwise).
         *
         * @param gemmPath the GEMM path
         * @return this Builder
         */
        public Builder optGemmPath(ExpertGemmPath gemmPath) {
            if (gemmPath == null) {
                throw new IllegalArgumentException("gemmPath must not be null");
            }
            this.gemmPath = gemmPath;
            return this;
        }

        /**
         * Sets the EP context whose training step's tape the experts record on (default: none). The
         * tape carries the rounding of the backward GEMMs' gradient inputs of a quantised {@link
         * ExpertPrecision}; {@link MoeLayer} passes its own context.
         *
         * @param context the context shared by the model's MoE layers, or null
         * @return this Builder
         */
        public Builder optContext(EpContext context) {
            this.context = context;
            return this;
        }

        /**
         * Returns the constructed {@code RoutedExperts}.
         *
         * @return the constructed {@code RoutedExperts}
         * @throws IllegalArgumentException naming the argument and its value if a size is not
         *     positive
         */
        public RoutedExperts build() {
            if (numExperts < 1) {
                throw new IllegalArgumentException("numExperts must be >= 1, got " + numExperts);
            }
            if (hiddenSize < 1) {
                throw new IllegalArgumentException("hiddenSize must be >= 1, got " + hiddenSize);
            }
            if (intermediateSize < 1) {
                throw new IllegalArgumentException(
                        "intermediateSize must be >= 1, got " + intermediateSize);
            }
            return new RoutedExperts(this);
        }
    }
}
