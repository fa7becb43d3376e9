package dev.djlmoe.nn;

import static dev.djlmoe.nn.NnTestSupport.assertClose;
import static dev.djlmoe.nn.NnTestSupport.gaussian;
import static dev.djlmoe.nn.NnTestSupport.sigmoid;
import static dev.djlmoe.nn.NnTestSupport.widen;
import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertThrows;
import static org.junit.jupiter.api.Assertions.assertTrue;

import ai.djl.ndarray.NDArray;
import ai.djl.ndarray.NDList;
import ai.djl.ndarray.types.DataType;
import ai.djl.ndarray.types.Shape;
import ai.djl.training.ParameterStore;
import java.util.Arrays;
import java.util.Random;
import org.junit.jupiter.api.Test;

class SwiGluMlpTest extends ManagerPerTest {

    private static final int H = 8;
    private static final int I = 12;

    /** y = down(silu(gate x) * up x), float64 loops; weights in HF [out, in] layout. */
    static double[] reference(
            double[] x, double[] g, double[] u, double[] d, int rows, int h, int i) {
        double[] y = new double[rows * h];
        for (int r = 0; r < rows; r++) {
            double[] act = new double[i];
            for (int a = 0; a < i; a++) {
                double gate = 0;
                double up = 0;
                for (int j = 0; j < h; j++) {
                    gate += g[a * h + j] * x[r * h + j];
                    up += u[a * h + j] * x[r * h + j];
                }
                act[a] = gate * sigmoid(gate) * up;
            }
            for (int j = 0; j < h; j++) {
                for (int a = 0; a < i; a++) {
                    y[r * h + j] += d[j * i + a] * act[a];
                }
            }
        }
        return y;
    }

    @Test
    void functionalFormMatchesLoops() {
        Random random = new Random(7);
        NDArray x = gaussian(manager, random, new Shape(5, H), 1.0);
        NDArray g = gaussian(manager, random, new Shape(I, H), 0.5);
        NDArray u = gaussian(manager, random, new Shape(I, H), 0.5);
        NDArray d = gaussian(manager, random, new Shape(H, I), 0.5);
        NDArray y = SwiGluMlp.swiGlu(x, g, u, d).singletonOrThrow();
        assertEquals(new Shape(5, H), y.getShape());
        assertClose(
                "swiglu",
                reference(widen(x), widen(g), widen(u), widen(d), 5, H, I),
                y.toFloatArray(),
                1e-5,
                1e-5);
    }

    @Test
    void blockHasHuggingFaceParametersAndKeepsLeadingDims() {
        SwiGluMlp mlp = SwiGluMlp.builder().setHiddenSize(H).setIntermediateSize(I).build();
        mlp.initialize(manager, DataType.FLOAT32, new Shape(2, 3, H));
        assertEquals(
                Arrays.asList(SwiGluMlp.GATE_PROJ, SwiGluMlp.UP_PROJ, SwiGluMlp.DOWN_PROJ),
                mlp.getParameters().keys());
        NDArray g = mlp.getParameters().get(SwiGluMlp.GATE_PROJ).getArray();
        NDArray u = mlp.getParameters().get(SwiGluMlp.UP_PROJ).getArray();
        NDArray d = mlp.getParameters().get(SwiGluMlp.DOWN_PROJ).getArray();
        assertEquals(new Shape(I, H), g.getShape());
        assertEquals(new Shape(I, H), u.getShape());
        assertEquals(new Shape(H, I), d.getShape());
        NDArray x = gaussian(manager, new Random(8), new Shape(2, 3, H), 1.0);
        NDList y = mlp.forward(new ParameterStore(manager, false), new NDList(x), false);
        assertEquals(new Shape(2, 3, H), y.singletonOrThrow().getShape());
        assertClose(
                "block",
                reference(widen(x), widen(g), widen(u), widen(d), 6, H, I),
                y.singletonOrThrow().toFloatArray(),
                1e-5,
                1e-5);
    }

    @Test
    void rejectsWrongSizes() {
        IllegalArgumentException e =
                assertThrows(
                        IllegalArgumentException.class,
                        () -> SwiGluMlp.builder().setHiddenSize(H).setIntermediateSize(0).build());
        assertTrue(e.getMessage().contains("intermediateSize") && e.getMessage().contains("0"));
        e =
                assertThrows(
                        IllegalArgumentException.class,
                        () -> SwiGluMlp.builder().setHiddenSize(-3).setIntermediateSize(4).build());
        assertTrue(e.getMessage().contains("hiddenSize") && e.getMessage().contains("-3"));
        e =
                assertThrows(
                        IllegalArgumentException.class,
                        () ->
                                SwiGluMlp.swiGlu(
                                        manager.ones(new Shape(2, H + 1)),
                                        manager.ones(new Shape(I, H)),
                                        manager.ones(new Shape(I, H)),
                                        manager.ones(new Shape(H, I))));
        assertTrue(e.getMessage().contains("(2, 9)"), e.getMessage());
    }
}
