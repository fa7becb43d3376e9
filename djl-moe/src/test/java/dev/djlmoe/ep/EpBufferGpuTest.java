/*
 * djl-moe: expert-parallel Mixture-of-Experts for the Deep Java Library.
 */
package dev.djlmoe.ep;

import static org.junit.jupiter.api.Assertions.assertArrayEquals;
import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertSame;
import static org.junit.jupiter.api.Assertions.assertThrows;
import static org.junit.jupiter.api.Assertions.assertTrue;
import static org.junit.jupiter.api.Assertions.fail;

import ai.djl.Device;
import ai.djl.engine.Engine;
import ai.djl.ndarray.NDArray;
import ai.djl.ndarray.NDManager;
import ai.djl.ndarray.types.DataType;
import ai.djl.ndarray.types.Shape;
import dev.djlmoe.core.TorchMemory;
import dev.djlmoe.nativeep.cuda.CudaEpBuffer;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.function.Executable;
import org.junit.jupiter.params.ParameterizedTest;
import org.junit.jupiter.params.provider.EnumSource;

/**
 * One {@link EpBuffer} at W = 1 with both backends: the same random inputs (uneven routing, {@code
 * -1} slots, a hot expert) go through the CPU engine as CPU arrays and through the CUDA plug-in as
 * GPU arrays, and every result must be bitwise the same (the plug-in's codecs are those of the CPU
 * engine): dispatch on the four wires, combine on FP32 and BF16, the handle's counts and indices,
 * layout, cached dispatch into reused outputs, strided GPU inputs. Then the named errors of mixed
 * devices and of a GPU index past the visible devices. Skipped without a GPU (CI is CPU-only); run
 * it on a GPU host with DJL's PyTorch engine built for it (FACTS.md, "DJL on a GPU host"): {@code
 * bin/gpu-java-tests} does, with {@code -Ddjlmoe.test.device=gpu}, under which a missing GPU is a
 * failure.
 */
class EpBufferGpuTest extends EpBufferGpuFixture {

    private static final int E = 16;
    private static final int K = 4;
    private static final int H = 512; // a multiple of 128: whole FP8 blocks on the GPU

    /** The inputs of one rank, as CPU arrays and as GPU copies. */
    private static final class Inputs {
        final RoutingData d;
        final float[] x;
        final NDArray xCpu;
        final NDArray idxCpu;
        final NDArray wCpu;
        final NDArray xGpu;
        final NDArray idxGpu;
        final NDArray wGpu;

        Inputs(NDManager cpu, NDManager gpu, long seed, int tokens) {
            d = new RoutingData(seed, tokens, K, E, 0.2, 5);
            x = RoutingData.randomRows(seed + 1, tokens, H, 2f);
            xCpu = cpu.create(x, new Shape(tokens, H));
            idxCpu = cpu.create(d.idx, new Shape(tokens, K));
            wCpu = cpu.create(d.weights, new Shape(tokens, K));
            xGpu = gpu.create(x, new Shape(tokens, H));
            idxGpu = gpu.create(d.idx, new Shape(tokens, K));
            wGpu = gpu.create(d.weights, new Shape(tokens, K));
        }
    }

    @ParameterizedTest
    @EnumSource(WireFormat.class)
    void dispatchOnTheGpuEqualsTheCpuEngine(WireFormat wire) {
        try (NDManager c = cpuManager.newSubManager();
                NDManager g = gpuManager.newSubManager()) {
            Inputs in = new Inputs(c, g, 100 + wire.ordinal(), 301);
            DispatchResult cpu = buffer.dispatch(in.xCpu, in.idxCpu, in.wCpu, E, 32, wire);
            DispatchResult gpu = buffer.dispatch(in.xGpu, in.idxGpu, in.wGpu, E, 32, wire);
            try (EpHandle hc = cpu.handle();
                    EpHandle hg = gpu.handle()) {
                assertEquals(Device.gpu(0), buffer.cudaDevice());
                assertEquals(Device.gpu(0), hg.device());
                assertTrue(gpu.recvX().getDevice().isGpu(), "recv_x on the GPU");
                assertEquals(Device.gpu(0), gpu.recvTopkIdx().getDevice());
                assertEquals(Device.gpu(0), gpu.recvTopkWeights().getDevice());
                sameHandles(hc, hg);
                sameBits(wire + " recv_x", cpu.recvX().toFloatArray(), gpu.recvX().toFloatArray());
                assertArrayEquals(cpu.recvTopkIdx().toLongArray(), gpu.recvTopkIdx().toLongArray());
                sameBits(
                        wire + " recv_topk_weights",
                        cpu.recvTopkWeights().toFloatArray(),
                        gpu.recvTopkWeights().toFloatArray());
                assertArrayEquals(cpu.recvTokensPerExpert(), gpu.recvTokensPerExpert());
            }
        }
    }

    @ParameterizedTest
    @EnumSource(
            value = WireFormat.class,
            names = {"FP32", "BF16"})
    void combineOnTheGpuEqualsTheCpuEngine(WireFormat wire) {
        try (NDManager c = cpuManager.newSubManager();
                NDManager g = gpuManager.newSubManager()) {
            Inputs in = new Inputs(c, g, 200 + wire.ordinal(), 257);
            DispatchResult cpu =
                    buffer.dispatch(in.xCpu, in.idxCpu, in.wCpu, E, 1, WireFormat.FP32);
            DispatchResult gpu =
                    buffer.dispatch(in.xGpu, in.idxGpu, in.wGpu, E, 1, WireFormat.FP32);
            try (EpHandle hc = cpu.handle();
                    EpHandle hg = gpu.handle()) {
                float[] y = cpu.recvX().mul(0.37f).add(0.5f).toFloatArray();
                long r = hc.numRecv();
                CombineResult oc =
                        buffer.combine(
                                c.create(y, new Shape(r, H)), cpu.recvTopkWeights(), hc, wire);
                // y moved to the GPU from a CPU array: outputs on the GPU, with y's manager.
                NDArray yGpu = c.create(y, new Shape(r, H)).toDevice(Device.gpu(0), false);
                CombineResult og = buffer.combine(yGpu, gpu.recvTopkWeights(), hg, wire);
                assertEquals(Device.gpu(0), og.out().getDevice());
                assertEquals(Device.gpu(0), og.outWeights().getDevice());
                assertSame(yGpu.getManager(), og.out().getManager());
                // An output for a GPU array held by a CPU manager is still made on the GPU.
                NDArray empty =
                        TorchMemory.empty(c, new Shape(2, 3), DataType.FLOAT32, Device.gpu(0));
                assertEquals(Device.gpu(0), empty.getDevice());
                assertSame(c, empty.getManager());
                sameBits(wire + " out", oc.out().toFloatArray(), og.out().toFloatArray());
                sameBits(
                        wire + " out_weights",
                        oc.outWeights().toFloatArray(),
                        og.outWeights().toFloatArray());
                buffer.synchronize();
            }
        }
    }

    @Test
    void reusedGpuOutputsAndStridedGpuInputsGetTheCpuRows() {
        try (NDManager c = cpuManager.newSubManager();
                NDManager g = gpuManager.newSubManager()) {
            Inputs in = new Inputs(c, g, 300, 190);
            DispatchResult cpu = buffer.dispatch(in.xCpu, in.idxCpu, null, E, 1, WireFormat.BF16);
            DispatchResult gpu = buffer.dispatch(in.xGpu, in.idxGpu, null, E, 1, WireFormat.BF16);
            try (EpHandle hc = cpu.handle();
                    EpHandle hg = gpu.handle()) {
                long r = hc.numRecv();
                NDArray recv = g.full(new Shape(r, H), Float.NaN); // poisoned, then reused
                NDArray out = g.full(new Shape(in.d.tokens, H), Float.NaN);
                for (int round = 0; round < 3; round++) {
                    float[] x2 = RoutingData.randomRows(310 + round, in.d.tokens, H, 1f + round);
                    NDArray expect =
                            buffer.dispatch(
                                    c.create(x2, new Shape(in.d.tokens, H)), hc, WireFormat.BF16);
                    // The GPU input is a transposed view: made contiguous first, never mis-read.
                    NDArray strided =
                            g.create(transpose(x2, in.d.tokens, H), new Shape(H, in.d.tokens))
                                    .transpose();
                    assertSame(recv, buffer.dispatch(strided, hg, WireFormat.BF16, recv));
                    sameBits(
                            "cached dispatch, round " + round,
                            expect.toFloatArray(),
                            recv.toFloatArray());
                    NDArray yc = expect.mul(0.5f);
                    NDArray cOut = buffer.combine(yc, null, hc, WireFormat.BF16).out();
                    NDArray yg = g.create(yc.toFloatArray(), new Shape(r, H));
                    assertSame(out, buffer.combine(yg, hg, WireFormat.BF16, out));
                    sameBits(
                            "reused combine, round " + round,
                            cOut.toFloatArray(),
                            out.toFloatArray());
                }
                // The reused GPU output must be the array's own contiguous storage.
                NDArray transposed = g.zeros(new Shape(H, r)).transpose();
                assertMessage(
                        () -> buffer.dispatch(in.xGpu, hg, WireFormat.BF16, transposed),
                        "'out'",
                        "not contiguous");
                // x itself as the output: a wrong shape, or (when every token is routed) an
                // overlap with the input.
                assertMessage(
                        () -> buffer.dispatch(in.xGpu, hg, WireFormat.BF16, in.xGpu), "'out'");
            }
        }
    }

    @Test
    void layoutOnTheGpuEqualsTheCpuEngine() {
        try (NDManager c = cpuManager.newSubManager();
                NDManager g = gpuManager.newSubManager()) {
            Inputs in = new Inputs(c, g, 400, 333);
            EpLayout lc = buffer.layout(in.idxCpu, E);
            EpLayout lg = buffer.layout(in.idxGpu, E);
            assertEquals(Device.gpu(0), lg.tokensPerExpert().getDevice());
            assertArrayEquals(lc.tokensPerRank().toIntArray(), lg.tokensPerRank().toIntArray());
            assertArrayEquals(lc.tokensPerExpert().toIntArray(), lg.tokensPerExpert().toIntArray());
            assertArrayEquals(
                    lc.isTokenInRank().toBooleanArray(), lg.isTokenInRank().toBooleanArray());
            // A bad index is reported by layout itself, with its place, as on the CPU.
            long[] bad = in.d.idx.clone();
            bad[7 * K + 1] = E;
            NDArray badGpu = g.create(bad, new Shape(in.d.tokens, K));
            assertMessage(() -> buffer.layout(badGpu, E), "topk_idx[7][1]", "out of range");
            // The buffer still works.
            EpLayout again = buffer.layout(in.idxGpu, E);
            assertArrayEquals(
                    lc.tokensPerExpert().toIntArray(), again.tokensPerExpert().toIntArray());
        }
    }

    @Test
    void mixedDevicesAndGpuOnlyLimitsAreNamedErrors() {
        try (NDManager c = cpuManager.newSubManager();
                NDManager g = gpuManager.newSubManager()) {
            Inputs in = new Inputs(c, g, 500, 64);
            assertMessage(
                    () -> buffer.dispatch(in.xGpu, in.idxCpu, null, E, 1, WireFormat.FP32),
                    "'topk_idx'",
                    "cpu()",
                    "'x'",
                    "gpu(0)");
            assertMessage(
                    () -> buffer.dispatch(in.xGpu, in.idxGpu, in.wCpu, E, 1, WireFormat.FP32),
                    "'topk_weights'",
                    "cpu()",
                    "gpu(0)");
            assertMessage(
                    () -> buffer.dispatch(in.xCpu, in.idxGpu, null, E, 1, WireFormat.FP32),
                    "'topk_idx'",
                    "gpu(0)",
                    "'x'",
                    "cpu()");
            DispatchResult gpu =
                    buffer.dispatch(in.xGpu, in.idxGpu, in.wGpu, E, 1, WireFormat.FP32);
            DispatchResult cpu =
                    buffer.dispatch(in.xCpu, in.idxCpu, in.wCpu, E, 1, WireFormat.FP32);
            try (EpHandle hg = gpu.handle();
                    EpHandle hc = cpu.handle()) {
                assertMessage(
                        () -> buffer.dispatch(in.xCpu, hg, WireFormat.FP32),
                        "'x'",
                        "cpu()",
                        "'handle'",
                        "gpu(0)");
                assertMessage(
                        () -> buffer.dispatch(in.xGpu, hc, WireFormat.FP32),
                        "'x'",
                        "gpu(0)",
                        "'handle'",
                        "cpu()");
                assertMessage(
                        () -> buffer.combine(cpu.recvX(), null, hg, WireFormat.FP32),
                        "'y'",
                        "cpu()",
                        "gpu(0)");
                assertMessage(
                        () ->
                                buffer.combine(
                                        gpu.recvX(), cpu.recvTopkWeights(), hg, WireFormat.FP32),
                        "'y_weights'",
                        "cpu()",
                        "gpu(0)");
                assertMessage(
                        () ->
                                buffer.dispatch(
                                        in.xGpu,
                                        hg,
                                        WireFormat.FP32,
                                        c.zeros(new Shape(hg.numRecv(), H))),
                        "'out'",
                        "cpu()",
                        "gpu(0)");
                for (WireFormat w : new WireFormat[] {WireFormat.FP8, WireFormat.MXFP8}) {
                    assertMessage(
                            () -> buffer.combine(gpu.recvX(), null, hg, w),
                            "'wire' = " + w,
                            "FP32",
                            "BF16");
                }
                // On a GPU a row needs a multiple of 8 channels (16-byte bf16 rows); a partial
                // last FP8 block is fine, as on the CPU.
                NDArray x100 = g.ones(new Shape(in.d.tokens, 100));
                assertMessage(
                        () -> buffer.dispatch(x100, hg, WireFormat.FP8),
                        "hidden size 100",
                        "multiple of 8",
                        "FP8");
                // Everything still works after the refusals.
                CombineResult ok = buffer.combine(gpu.recvX(), null, hg, WireFormat.FP32);
                sameBits(
                        "combine after refusals",
                        buffer.combine(cpu.recvX(), null, hc, WireFormat.FP32).out().toFloatArray(),
                        ok.out().toFloatArray());
            }
            if (Engine.getInstance().getGpuCount() > 1 && CudaEpBuffer.deviceCount() > 1) {
                try (NDManager g1 = NDManager.newBaseManager(Device.gpu(1))) {
                    Inputs other = new Inputs(c, g1, 501, 64);
                    assertMessage(
                            () ->
                                    buffer.dispatch(
                                            other.xGpu, other.idxGpu, null, E, 1, WireFormat.FP32),
                            "'topk_idx'",
                            "gpu(1)",
                            "gpu(0)");
                    assertMessage(
                            () ->
                                    buffer.dispatch(
                                            in.xGpu, other.idxGpu, null, E, 1, WireFormat.FP32),
                            "'topk_idx'",
                            "gpu(1)",
                            "'x'",
                            "gpu(0)");
                }
            }
        }
    }

    @Test
    void aGpuIndexPastTheVisibleDevicesIsANamedError() {
        int n = CudaEpBuffer.deviceCount();
        RuntimeException e =
                assertThrows(
                        RuntimeException.class,
                        () ->
                                CudaEpBuffer.create(0, 1, n, EpBuffer.MIN_CUDA_BUFFER_BYTES, 1000)
                                        .close());
        for (String p : new String[] {"device=" + n, "[0, " + n + ")"}) {
            assertTrue(e.getMessage().contains(p), "message '" + e.getMessage() + "' lacks " + p);
        }
        // The buffer of this class still works.
        try (NDManager g = gpuManager.newSubManager()) {
            NDArray idx = g.create(new long[] {0, 5, 9, -1}, new Shape(2, 2));
            assertEquals(2, buffer.layout(idx, E).tokensPerRank().toIntArray()[0]);
        }
    }

    private static void sameHandles(EpHandle cpu, EpHandle gpu) {
        assertEquals(cpu.numTokens(), gpu.numTokens());
        assertEquals(cpu.numRecv(), gpu.numRecv());
        assertEquals(cpu.numTopk(), gpu.numTopk());
        assertEquals(cpu.numExperts(), gpu.numExperts());
        assertEquals(cpu.numLocalExperts(), gpu.numLocalExperts());
        assertEquals(cpu.worldSize(), gpu.worldSize());
        assertEquals(cpu.numSent(), gpu.numSent());
        assertArrayEquals(cpu.recvTokensPerExpert(false), gpu.recvTokensPerExpert(false));
        assertArrayEquals(cpu.recvTokensPerExpert(true), gpu.recvTokensPerExpert(true));
        assertArrayEquals(cpu.rankPrefixMatrix(), gpu.rankPrefixMatrix());
        assertArrayEquals(cpu.recvSrcIdx(), gpu.recvSrcIdx());
        boolean[][] a = cpu.isTokenInRank();
        boolean[][] b = gpu.isTokenInRank();
        assertEquals(a.length, b.length);
        for (int t = 0; t < a.length; t++) {
            assertArrayEquals(a[t], b[t], "is_token_in_rank of token " + t);
        }
    }

    /** Bitwise equality, reporting how many values differ and the first of them. */
    private static void sameBits(String what, float[] expected, float[] actual) {
        assertEquals(expected.length, actual.length, what + ": length");
        int bad = 0;
        int first = -1;
        for (int i = 0; i < expected.length; i++) {
            if (Float.floatToRawIntBits(expected[i]) != Float.floatToRawIntBits(actual[i])) {
                bad++;
                if (first < 0) {
                    first = i;
                }
            }
        }
        if (bad > 0) {
            fail(
                    what
                            + ": "
                            + bad
                            + " of "
                            + expected.length
                            + " values differ; the first at "
                            + first
                            + ": CPU "
                            + expected[first]
                            + ", GPU "
                            + actual[first]);
        }
    }

    private static float[] transpose(float[] v, int rows, int cols) {
        float[] t = new float[v.length];
        for (int r = 0; r < rows; r++) {
            for (int c = 0; c < cols; c++) {
                t[c * rows + r] = v[r * cols + c];
            }
        }
        return t;
    }

    private static void assertMessage(Executable call, String... parts) {
        IllegalArgumentException e = assertThrows(IllegalArgumentException.class, call);
        for (String p : parts) {
            assertTrue(e.getMessage().contains(p), "message '" + e.getMessage() + "' lacks " + p);
        }
    }
}
