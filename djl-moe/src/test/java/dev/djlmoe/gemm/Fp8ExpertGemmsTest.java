/*
 * djl-moe: expert-parallel Mixture-of-Experts for the Deep Java Library.
 */
package dev.djlmoe.gemm;

import static org.junit.jupiter.api.Assertions.assertArrayEquals;
import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertThrows;
import static org.junit.jupiter.api.Assertions.assertTrue;

import ai.djl.engine.Engine;
import ai.djl.ndarray.NDArray;
import ai.djl.ndarray.NDArrays;
import ai.djl.ndarray.NDList;
import ai.djl.ndarray.NDManager;
import ai.djl.ndarray.types.DataType;
import ai.djl.ndarray.types.Shape;
import dev.djlmoe.ep.FakeGpuArray;
import java.util.stream.Stream;
import org.junit.jupiter.api.AfterEach;
import org.junit.jupiter.api.BeforeEach;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.params.ParameterizedTest;
import org.junit.jupiter.params.provider.Arguments;
import org.junit.jupiter.params.provider.MethodSource;

/**
 * The op on the CPU (the native oracle path): every GEMM output and gradient against float64 loops
 * over the same quantised inputs (bound {@link GemmOracle#GEMM_BOUND} times the sum of |a b|: the
 * native path rounds each scale block's exact partial sum once to float32 and accumulates the
 * scaled blocks in float32), and the fused SwiGLU steps against float64 formulas on the op's own
 * float32 inputs (relative 2e-6: float32 exp and a few roundings; dgate relative to its rounding
 * scale {@code |dh u| (1 + |g|)}, as it cancels near g = -1.28).
 */
class Fp8ExpertGemmsTest {

    private NDManager manager;

    @BeforeEach
    void open() {
        manager = NDManager.newBaseManager();
    }

    @AfterEach
    void close() {
        manager.close();
    }

    static Stream<Arguments> cases() {
        Stream.Builder<Arguments> b = Stream.builder();
        for (GemmFormat f : GemmFormat.values()) {
            // ragged, an empty expert, a hot expert; H and I not multiples of the tiles
            b.add(Arguments.of(f, new int[] {0, 200, 1, 37}, 160, 96));
            b.add(Arguments.of(f, new int[] {0, 1, 0}, 64, 32)); // one token
            b.add(Arguments.of(f, new int[] {130, 129}, 40, 136)); // groups past one tile
        }
        return b.build();
    }

    static long[] offsets(int[] sizes) {
        long[] o = new long[sizes.length + 1];
        for (int g = 0; g < sizes.length; g++) {
            o[g + 1] = o[g] + sizes[g];
        }
        return o;
    }

    @ParameterizedTest
    @MethodSource("cases")
    void forwardAndEveryGradientMatchFloat64Loops(GemmFormat f, int[] sizes, int h, int in) {
        Engine.getInstance().setRandomSeed(5);
        long[] off = offsets(sizes);
        int groups = sizes.length;
        long m = off[groups];
        NDArray x = manager.randomNormal(new Shape(m, h));
        NDArray gate = manager.randomNormal(0, 0.1f, new Shape(groups, in, h), DataType.FLOAT32);
        NDArray up = manager.randomNormal(0, 0.1f, new Shape(groups, in, h), DataType.FLOAT32);
        NDArray w2 = manager.randomNormal(0, 0.1f, new Shape(groups, h, in), DataType.FLOAT32);
        NDArray dy = manager.randomNormal(new Shape(m, h));
        NDArray w13 = NDArrays.concat(new NDList(gate, up), 1);

        QuantizedWeights qw = QuantizedWeights.quantize(manager, f, w13, w2, true);
        Fp8ExpertGemms.Forward fw = Fp8ExpertGemms.forward(x, off, qw);
        Fp8ExpertGemms.Gradients g = Fp8ExpertGemms.backward(fw, dy);

        GemmOracle.checkAll(
                f, off, x, w13, w2, dy, fw.y13(), fw.h(), fw.y(), g, GemmOracle.GEMM_BOUND, 2e-6);
        assertEquals(new Shape(groups, 2 * in, h), g.dw13().getShape());
        assertEquals(new Shape(groups, h, in), g.dw2().getShape());
    }

    @Test
    void theBackwardReadsOnlyTheTransposedCopiesSoTheForwardOnesCloseEarly() {
        for (GemmFormat f : GemmFormat.values()) {
            Engine.getInstance().setRandomSeed(6);
            long[] off = {0, 40, 40, 77};
            NDArray x = manager.randomNormal(new Shape(77, 64));
            NDArray w13 = manager.randomNormal(0, 0.1f, new Shape(3, 96, 64), DataType.FLOAT32);
            NDArray w2 = manager.randomNormal(0, 0.1f, new Shape(3, 64, 48), DataType.FLOAT32);
            NDArray dy = manager.randomNormal(new Shape(77, 64));
            QuantizedWeights kept = QuantizedWeights.quantize(manager, f, w13, w2, true);
            Fp8ExpertGemms.Gradients ref =
                    Fp8ExpertGemms.backward(Fp8ExpertGemms.forward(x, off, kept), dy);
            QuantizedWeights qw = QuantizedWeights.quantize(manager, f, w13, w2, true);
            Fp8ExpertGemms.Forward fw = Fp8ExpertGemms.forward(x, off, qw);
            NDList forwardCopies = qw.arrays().subNDList(0, 4);
            qw.closeForward();
            assertTrue(forwardCopies.stream().allMatch(NDArray::isReleased), f + ": closed");
            assertEquals(false, qw.hasForward());
            assertEquals(4, qw.arrays().size(), "the transposed copies stay");
            Fp8ExpertGemms.Gradients g = Fp8ExpertGemms.backward(fw, dy);
            assertArrayEquals(ref.dx().toFloatArray(), g.dx().toFloatArray(), 0f);
            assertArrayEquals(ref.dw13().toFloatArray(), g.dw13().toFloatArray(), 0f);
            assertArrayEquals(ref.dw2().toFloatArray(), g.dw2().toFloatArray(), 0f);
            IllegalStateException e =
                    assertThrows(
                            IllegalStateException.class, () -> Fp8ExpertGemms.forward(x, off, qw));
            assertTrue(e.getMessage().contains("closeForward"), e.getMessage());
        }
    }

    @Test
    void noRowsGiveEmptyOutputsAndZeroWeightGradients() {
        for (GemmFormat f : GemmFormat.values()) {
            NDArray w13 = manager.randomNormal(new Shape(2, 16, 8));
            NDArray w2 = manager.randomNormal(new Shape(2, 8, 8));
            QuantizedWeights qw = QuantizedWeights.quantize(manager, f, w13, w2, true);
            NDArray x = manager.zeros(new Shape(0, 8));
            Fp8ExpertGemms.Forward fw = Fp8ExpertGemms.forward(x, new long[] {0, 0, 0}, qw);
            assertEquals(new Shape(0, 8), fw.y().getShape());
            Fp8ExpertGemms.Gradients g =
                    Fp8ExpertGemms.backward(fw, manager.zeros(new Shape(0, 8)));
            assertArrayEquals(new float[2 * 16 * 8], g.dw13().toFloatArray());
            assertArrayEquals(new float[2 * 8 * 8], g.dw2().toFloatArray());
        }
    }

    @Test
    void aNonContiguousInputIsReadAsItsValues() {
        NDArray w13 = manager.randomNormal(new Shape(1, 64, 32));
        NDArray w2 = manager.randomNormal(new Shape(1, 32, 32));
        QuantizedWeights qw = QuantizedWeights.quantize(manager, GemmFormat.MXFP8, w13, w2, false);
        NDArray xt = manager.randomNormal(new Shape(32, 5)).transpose(); // [5, 32], strided
        NDArray y1 = Fp8ExpertGemms.forward(xt, new long[] {0, 5}, qw).y();
        NDArray y2 = Fp8ExpertGemms.forward(xt.duplicate(), new long[] {0, 5}, qw).y();
        assertArrayEquals(y2.toFloatArray(), y1.toFloatArray(), 0f);
    }

    @Test
    void badInputsAreRefusedByName() {
        NDArray w13 = manager.randomNormal(new Shape(2, 16, 8));
        NDArray w2 = manager.randomNormal(new Shape(2, 8, 8));
        GemmFormat f = GemmFormat.FP8_BLOCK;
        QuantizedWeights qw = QuantizedWeights.quantize(manager, f, w13, w2, false);
        NDArray x = manager.randomNormal(new Shape(3, 8));
        assertMessage(
                "'offsets' must hold G + 1 = 3 values, got 2",
                () -> Fp8ExpertGemms.forward(x, new long[] {0, 3}, qw));
        assertMessage(
                "offsets[2] = 1 < offsets[1] = 2",
                () -> Fp8ExpertGemms.forward(x, new long[] {0, 2, 1}, qw));
        assertMessage(
                "offsets[2] = 2 must equal the rows of x, 3",
                () -> Fp8ExpertGemms.forward(x, new long[] {0, 1, 2}, qw));
        assertMessage(
                "offsets[0] must be 0, got 1",
                () -> Fp8ExpertGemms.forward(x, new long[] {1, 2, 3}, qw));
        assertMessage(
                "'x' must have shape (3, 8)",
                () ->
                        Fp8ExpertGemms.forward(
                                manager.zeros(new Shape(3, 9)), new long[] {0, 1, 3}, qw));
        assertMessage(
                "'x' must be float32, got int32",
                () ->
                        Fp8ExpertGemms.forward(
                                x.toType(DataType.INT32, false), new long[] {0, 1, 3}, qw));
        assertMessage(
                "'w2' must have shape (2, 8, 8), got (2, 8, 7)",
                () ->
                        QuantizedWeights.quantize(
                                manager, f, w13, manager.zeros(new Shape(2, 8, 7)), false));
        assertMessage(
                "'w13' must have shape [G, 2I, H]",
                () ->
                        QuantizedWeights.quantize(
                                manager, f, manager.zeros(new Shape(2, 15, 8)), w2, false));
        NDArray gpuW2 = FakeGpuArray.of(manager, new Shape(2, 8, 8), DataType.FLOAT32);
        assertMessage(
                "argument 'w2' is on device gpu(0) but 'w13' is on cpu()",
                () -> QuantizedWeights.quantize(manager, f, w13, gpuW2, false));
        NDArray gpuX = FakeGpuArray.of(manager, new Shape(3, 8), DataType.FLOAT32);
        assertMessage(
                "argument 'weights' is on device cpu() but 'x' is on gpu(0)",
                () -> Fp8ExpertGemms.forward(gpuX, new long[] {0, 1, 3}, qw));
        Fp8ExpertGemms.Forward fw = Fp8ExpertGemms.forward(x, new long[] {0, 1, 3}, qw);
        assertMessage("without the transposed copies", () -> Fp8ExpertGemms.backward(fw, x));
        QuantizedWeights qb = QuantizedWeights.quantize(manager, f, w13, w2, true);
        Fp8ExpertGemms.Forward fb = Fp8ExpertGemms.forward(x, new long[] {0, 1, 3}, qb);
        assertMessage(
                "'dy' must have shape (3, 8), got (2, 8)",
                () -> Fp8ExpertGemms.backward(fb, manager.zeros(new Shape(2, 8))));
    }

    private static void assertMessage(String part, org.junit.jupiter.api.function.Executable e) {
        IllegalArgumentException ex = assertThrows(IllegalArgumentException.class, e);
        assertTrue(ex.getMessage().contains(part), ex.getMessage());
    }
}
