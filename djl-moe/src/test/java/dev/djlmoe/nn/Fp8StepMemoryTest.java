/*
 * djl-moe: expert-parallel Mixture-of-Experts for the Deep Java Library.
 */
package dev.djlmoe.nn;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertTrue;

import ai.djl.engine.Engine;
import ai.djl.ndarray.NDArray;
import ai.djl.ndarray.NDList;
import ai.djl.ndarray.NDManager;
import ai.djl.ndarray.types.DataType;
import ai.djl.ndarray.types.Shape;
import ai.djl.training.GradientCollector;
import ai.djl.training.ParameterStore;
import dev.djlmoe.autograd.Tape;
import dev.djlmoe.dist.LocalProcessGroup;
import dev.djlmoe.ep.EpContext;
import java.util.List;
import org.junit.jupiter.api.AfterAll;
import org.junit.jupiter.api.BeforeAll;
import org.junit.jupiter.api.Test;

/**
 * The memory of a training step of the routed experts on the native FP8 GEMM path (the CPU oracle:
 * the same Java lifetimes as the CUDA kernels), where the H100 run of {@code bench step --precision
 * fp8} ran out of memory: nothing of a step may stay on the parameters' manager after it (the
 * tape's push of the expert weights' gradients once left a weight-sized product there per weight
 * and step, with the graph node holding the gradient), and after the backward the step's own arrays
 * hold less than the expert weights' float32 bytes (the weight gradients the entry's VJP returned
 * are freed once autograd took them, not at the step's end), and between the forward and the
 * backward only the transposed FP8 weights are kept. The shape makes the weights dominate: few
 * rows, wide experts.
 */
class Fp8StepMemoryTest {

    private static final int EXPERTS = 4;
    private static final int H = 256;
    private static final int I = 128;
    private static final int ROWS = 8;
    private static final int K = 2;

    private static NDManager manager;
    private static LocalProcessGroup group;
    private static EpContext context;

    @BeforeAll
    static void setUp() {
        manager = NDManager.newBaseManager();
        group = new LocalProcessGroup();
        context = EpContext.builder().setProcessGroup(group).build();
    }

    @AfterAll
    static void tearDown() {
        context.close();
        group.close();
        manager.close();
    }

    /** Bytes of the arrays a manager (and its sub-managers) holds, views counted in full. */
    static long liveBytes(NDManager m) {
        return liveBytes(m, null);
    }

    /** As {@link #liveBytes(NDManager)}, of one data type (null: all). */
    static long liveBytes(NDManager m, DataType type) {
        long bytes = 0;
        for (NDArray a : m.getManagedArrays()) {
            if (!a.isReleased() && (type == null || a.getDataType() == type)) {
                bytes += a.getShape().size() * a.getDataType().getNumOfBytes();
            }
        }
        return bytes;
    }

    private static int liveArrays(NDManager m) {
        List<NDArray> all = m.getManagedArrays();
        return (int) all.stream().filter(a -> !a.isReleased()).count();
    }

    @Test
    void aNativeFp8StepLeavesNothingOnTheParametersManagerAndFreesTheWeightGradients() {
        try (NDManager model = manager.newSubManager()) {
            RoutedExperts block =
                    RoutedExperts.builder()
                            .setNumExperts(EXPERTS)
                            .setHiddenSize(H)
                            .setIntermediateSize(I)
                            .optPrecision(ExpertPrecision.FP8)
                            .optGemmPath(ExpertGemmPath.NATIVE)
                            .optContext(context)
                            .build();
            Engine.getInstance().setRandomSeed(5);
            block.initialize(
                    model,
                    DataType.FLOAT32,
                    new Shape(ROWS, H),
                    new Shape(ROWS, K),
                    new Shape(ROWS, K));
            long weightBytes = 3L * EXPERTS * I * H * 4;
            int arrays0 = liveArrays(model);
            long bytes0 = liveBytes(model);
            assertEquals(weightBytes, bytes0, "the parameters' manager holds the weights");
            for (int step = 1; step <= 3; step++) {
                long afterBackward;
                try (NDManager m = model.newSubManager();
                        GradientCollector gc = Engine.getInstance().newGradientCollector();
                        Tape tape = context.beginTape()) {
                    NDArray x = m.randomNormal(new Shape(ROWS, H));
                    x.setRequiresGradient(true);
                    long[] idx = new long[ROWS * K];
                    for (int r = 0; r < ROWS; r++) {
                        idx[r * K] = r % EXPERTS;
                        idx[r * K + 1] = (r + 1) % EXPERTS;
                    }
                    NDList in =
                            new NDList(
                                    x,
                                    m.create(idx, new Shape(ROWS, K)),
                                    m.randomUniform(0.2f, 1f, new Shape(ROWS, K)));
                    NDArray y = block.forward(new ParameterStore(m, false), in, true).head();
                    assertEquals(1, tape.size(), "the native expert FFN is one tape entry");
                    // Saved for the backward: the transposed FP8 copies (1 byte a weight), not
                    // the forward GEMMs' ones too.
                    long quantised = liveBytes(m, DataType.UINT8);
                    assertTrue(
                            quantised < weightBytes / 4 * 3 / 2,
                            "step "
                                    + step
                                    + ": "
                                    + quantised
                                    + " bytes of quantised weights kept for the backward, one"
                                    + " orientation is "
                                    + weightBytes / 4);
                    tape.backward(y.mul(y).sum());
                    afterBackward = liveBytes(m);
                    NDArray grad =
                            block.getParameters()
                                    .get(RoutedExperts.DOWN_PROJ)
                                    .getArray()
                                    .getGradient();
                    grad.attach(m); // (a new handle, made on the parameter's manager)
                    float g = grad.abs().sum().getFloat();
                    assertTrue(g > 0, "step " + step + ": the down weights got a gradient");
                }
                assertTrue(
                        afterBackward < weightBytes / 2,
                        "step "
                                + step
                                + ": "
                                + afterBackward
                                + " bytes of step arrays live after the backward, the expert"
                                + " weights are "
                                + weightBytes
                                + " (their gradients must be freed once pushed)");
                assertEquals(
                        arrays0,
                        liveArrays(model),
                        "step " + step + ": arrays left on the parameters' manager");
                assertEquals(
                        bytes0,
                        liveBytes(model),
                        "step " + step + ": bytes left on the parameters' manager");
            }
        }
    }
}
