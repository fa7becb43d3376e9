/*
 * djl-moe: expert-parallel Mixture-of-Experts for the Deep Java Library.
 */
package dev.djlmoe.ep;

import static org.junit.jupiter.api.Assertions.assertArrayEquals;
import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertFalse;
import static org.junit.jupiter.api.Assertions.assertNotSame;
import static org.junit.jupiter.api.Assertions.assertNull;
import static org.junit.jupiter.api.Assertions.assertSame;
import static org.junit.jupiter.api.Assertions.assertThrows;
import static org.junit.jupiter.api.Assertions.assertTrue;

import ai.djl.Device;
import ai.djl.engine.Engine;
import ai.djl.ndarray.NDArray;
import ai.djl.ndarray.NDManager;
import ai.djl.ndarray.types.DataType;
import ai.djl.ndarray.types.Shape;
import dev.djlmoe.core.NativeMemory;
import dev.djlmoe.core.TorchMemory;
import dev.djlmoe.dist.LocalProcessGroup;
import dev.djlmoe.nativeep.cuda.CudaEpBuffer;
import java.time.Duration;
import org.junit.jupiter.api.AfterAll;
import org.junit.jupiter.api.Assumptions;
import org.junit.jupiter.api.BeforeAll;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.function.Executable;
import org.junit.jupiter.params.ParameterizedTest;
import org.junit.jupiter.params.provider.EnumSource;

/**
 * The parts of "one buffer, two backends" that run without a GPU: the memory contract on CPU arrays
 * (non-contiguous inputs are made contiguous, never mis-read; libtorch's data address is the one
 * DJL exposes), the device checks of a call (arrays on another device are refused with both devices
 * named), the builder's validation and the process group's byte all-gather. {@code EpBufferGpuTest}
 * compares the CUDA backend with the CPU engine on a GPU host.
 */
class EpBufferBackendsTest {

    private static NDManager manager;
    private static LocalProcessGroup group;
    private static EpBuffer buffer;

    @BeforeAll
    static void setUp() {
        manager = NDManager.newBaseManager(Device.cpu());
        group = new LocalProcessGroup();
        buffer = EpBuffer.builder().setGroup(group).build();
    }

    @AfterAll
    static void tearDown() {
        buffer.close();
        group.close();
        manager.close();
    }

    /**
     * {@code values} as {@code [rows, cols]}: a transposed view of a {@code [cols, rows]} array.
     */
    private static NDArray transposedView(NDManager m, float[] values, int rows, int cols) {
        float[] t = new float[values.length];
        for (int r = 0; r < rows; r++) {
            for (int c = 0; c < cols; c++) {
                t[c * rows + r] = values[r * cols + c];
            }
        }
        return m.create(t, new Shape(cols, rows)).transpose();
    }

    private static NDArray transposedView(NDManager m, long[] values, int rows, int cols) {
        long[] t = new long[values.length];
        for (int r = 0; r < rows; r++) {
            for (int c = 0; c < cols; c++) {
                t[c * rows + r] = values[r * cols + c];
            }
        }
        return m.create(t, new Shape(cols, rows)).transpose();
    }

    @ParameterizedTest
    @EnumSource(WireFormat.class)
    void nonContiguousInputsDispatchAndCombineLikeContiguousOnes(WireFormat wire) {
        try (NDManager m = manager.newSubManager()) {
            int h = 256;
            RoutingData d = new RoutingData(31, 53, 4, 16, 0.25, 3);
            float[] x = RoutingData.randomRows(32, d.tokens, h, 1.5f);
            NDArray xs = transposedView(m, x, d.tokens, h);
            NDArray idx = transposedView(m, d.idx, d.tokens, d.topk);
            NDArray w = transposedView(m, d.weights, d.tokens, d.topk);
            assertFalse(TorchMemory.isContiguous(xs, "x"));
            assertFalse(TorchMemory.isContiguous(idx, "topk_idx"));
            DispatchResult strided = buffer.dispatch(xs, idx, w, 16, 1, wire);
            DispatchResult plain =
                    buffer.dispatch(
                            m.create(x, new Shape(d.tokens, h)),
                            m.create(d.idx, new Shape(d.tokens, d.topk)),
                            m.create(d.weights, new Shape(d.tokens, d.topk)),
                            16,
                            1,
                            wire);
            try (EpHandle hs = strided.handle();
                    EpHandle hp = plain.handle()) {
                assertArrayEquals(hp.recvSrcIdx(), hs.recvSrcIdx());
                assertArrayEquals(plain.recvX().toFloatArray(), strided.recvX().toFloatArray());
                assertArrayEquals(
                        plain.recvTopkIdx().toLongArray(), strided.recvTopkIdx().toLongArray());
                assertArrayEquals(
                        plain.recvTopkWeights().toFloatArray(),
                        strided.recvTopkWeights().toFloatArray());
                // Combine a strided y (the received rows, transposed twice) like a plain one.
                int r = (int) hp.numRecv();
                float[] y = plain.recvX().mul(0.75f).toFloatArray();
                NDArray ys = transposedView(m, y, r, h);
                WireFormat cw = wire == WireFormat.FP32 ? WireFormat.FP32 : WireFormat.BF16;
                NDArray outS = buffer.combine(ys, null, hs, cw).out();
                NDArray outP = buffer.combine(m.create(y, new Shape(r, h)), null, hp, cw).out();
                assertArrayEquals(outP.toFloatArray(), outS.toFloatArray());
                assertEquals(hp.numSent(), hs.numSent());
                assertEquals(r, hp.numSent()); // one rank: every routed token is sent once
            }
        }
    }

    @Test
    void libtorchDataAddressIsTheStorageDjlExposes() {
        try (NDManager m = manager.newSubManager()) {
            NDArray a = m.create(new float[] {1, 2, 3, 4, 5, 6}, new Shape(2, 3));
            assertTrue(TorchMemory.isContiguous(a, "a"));
            assertEquals(
                    NativeMemory.address(a, "a", DataType.FLOAT32),
                    TorchMemory.dataAddress(a, "a", DataType.FLOAT32));
            NDArray l = m.create(new long[] {7, 8, 9}, new Shape(3, 1));
            assertEquals(
                    NativeMemory.address(l, "l", DataType.INT64),
                    TorchMemory.dataAddress(l, "l", DataType.INT64));
            // A row slice is contiguous and starts inside its base's storage.
            NDArray row = a.get("1:");
            assertTrue(TorchMemory.isContiguous(row, "row"));
            assertEquals(
                    TorchMemory.dataAddress(a, "a", DataType.FLOAT32) + 12,
                    TorchMemory.dataAddress(row, "row", DataType.FLOAT32));
            // A transposed view is made contiguous: a copy with the same values, same manager.
            NDArray t = a.transpose();
            assertFalse(TorchMemory.isContiguous(t, "t"));
            NDArray c = NativeMemory.contiguous(t, "t");
            assertNotSame(t, c);
            assertTrue(TorchMemory.isContiguous(c, "c"));
            assertSame(t.getManager(), c.getManager());
            assertArrayEquals(new float[] {1, 4, 2, 5, 3, 6}, c.toFloatArray());
            assertSame(a, NativeMemory.contiguous(a, "a"));
            // Empty arrays have no address.
            NDArray empty = m.zeros(new Shape(0, 4));
            assertEquals(0L, TorchMemory.dataAddress(empty, "e", DataType.FLOAT32));
            // The dtype must be the tensor's own.
            assertThrows(
                    IllegalArgumentException.class,
                    () -> TorchMemory.dataAddress(a, "a", DataType.INT32));
            // The GPU address path refuses CPU arrays.
            assertMessage(
                    () -> NativeMemory.gpuAddress(a, "a", DataType.FLOAT32, Device.cpu()),
                    "'a'",
                    "not a GPU");
            assertMessage(
                    () -> NativeMemory.gpuAddress(a, "a", DataType.FLOAT32, Device.gpu(0)),
                    "'a'",
                    "cpu()",
                    "gpu(0)");
        }
    }

    @Test
    void arraysOnAnotherDeviceAreRefusedNamingBothDevices() {
        try (NDManager m = manager.newSubManager()) {
            int h = 8;
            NDArray x = m.ones(new Shape(4, h));
            NDArray idx = m.create(new long[] {0, 1, 2, 3, 1, 2, 3, 0}, new Shape(4, 2));
            NDArray w = m.ones(new Shape(4, 2));
            assertMessage(
                    () ->
                            buffer.dispatch(
                                    x,
                                    onGpu(new Shape(4, 2), DataType.INT64),
                                    w,
                                    4,
                                    1,
                                    WireFormat.FP32),
                    "'topk_idx'",
                    "gpu(0)",
                    "'x'",
                    "cpu()",
                    "same device");
            assertMessage(
                    () ->
                            buffer.dispatch(
                                    x,
                                    idx,
                                    onGpu(new Shape(4, 2), DataType.FLOAT32),
                                    4,
                                    1,
                                    WireFormat.FP32),
                    "'topk_weights'",
                    "gpu(0)",
                    "cpu()");
            assertMessage(
                    () ->
                            buffer.dispatch(
                                    onGpu(new Shape(4, h), DataType.FLOAT32),
                                    idx,
                                    null,
                                    4,
                                    1,
                                    WireFormat.FP32),
                    "'topk_idx'",
                    "cpu()",
                    "'x'",
                    "gpu(0)");
            DispatchResult r = buffer.dispatch(x, idx, w, 4, 1, WireFormat.FP32);
            try (EpHandle handle = r.handle()) {
                assertTrue(NativeMemory.sameDevice(Device.cpu(), handle.device()));
                assertMessage(
                        () ->
                                buffer.dispatch(
                                        onGpu(new Shape(4, h), DataType.FLOAT32),
                                        handle,
                                        WireFormat.FP32),
                        "'x'",
                        "gpu(0)",
                        "'handle'",
                        "cpu()");
                assertMessage(
                        () ->
                                buffer.dispatch(
                                        x,
                                        handle,
                                        WireFormat.FP32,
                                        onGpu(new Shape(4, h), DataType.FLOAT32)),
                        "'out'",
                        "gpu(0)",
                        "cpu()");
                assertMessage(
                        () ->
                                buffer.combine(
                                        r.recvX(),
                                        onGpu(new Shape(4, 2), DataType.FLOAT32),
                                        handle,
                                        WireFormat.FP32),
                        "'y_weights'",
                        "gpu(0)",
                        "cpu()");
                assertMessage(
                        () ->
                                buffer.combine(
                                        r.recvX(),
                                        handle,
                                        WireFormat.FP32,
                                        onGpu(new Shape(4, h), DataType.FLOAT32)),
                        "'out'",
                        "gpu(0)",
                        "cpu()");
                // Still usable after every refusal.
                CombineResult c = buffer.combine(r.recvX(), null, handle, WireFormat.FP32);
                assertArrayEquals(x.toFloatArray(), c.out().toFloatArray());
            }
            assertNull(buffer.cudaDevice(), "no GPU call reached the CUDA backend");
        }
    }

    @Test
    void gpuArraysWithoutAVisibleGpuAreRefusedByName() {
        Assumptions.assumeTrue(Engine.getInstance().getGpuCount() == 0, "DJL sees a GPU");
        Assumptions.assumeTrue(CudaEpBuffer.deviceCount() == 0, "the CUDA plug-in sees a GPU");
        try (EpBuffer b = EpBuffer.create(group)) {
            assertMessage(
                    () -> b.layout(onGpu(new Shape(4, 2), DataType.INT64), 4),
                    "'topk_idx'",
                    "gpu(0)",
                    "GPU(s)",
                    "CPU");
            assertMessage(
                    () ->
                            b.dispatch(
                                    onGpu(new Shape(4, 8), DataType.FLOAT32),
                                    onGpu(new Shape(4, 2), DataType.INT64),
                                    null,
                                    4,
                                    1,
                                    WireFormat.FP32),
                    "'topk_idx'",
                    "gpu(0)",
                    "CPU");
            assertNull(b.cudaDevice());
        }
    }

    @Test
    void builderChecksEverySetting() {
        assertMessage(() -> EpBuffer.builder().build(), "'group'", "setGroup");
        assertMessage(() -> EpBuffer.create(null), "'group'", "null");
        assertMessage(
                () -> EpBuffer.builder().setGroup(group).optCudaBufferBytes(1 << 20).build(),
                "'cudaBufferBytes' = 1048576",
                String.valueOf(EpBuffer.MIN_CUDA_BUFFER_BYTES));
        assertMessage(
                () -> EpBuffer.builder().setGroup(group).optNumSms(0).build(),
                "'numSms' = 0",
                "[1, 128]");
        assertMessage(
                () -> EpBuffer.builder().setGroup(group).optNumSms(129).build(),
                "'numSms' = 129",
                "[1, 128]");
        assertMessage(
                () -> EpBuffer.builder().setGroup(group).optTimeout(Duration.ZERO).build(),
                "'timeout'",
                "positive");
        assertMessage(
                () -> EpBuffer.builder().setGroup(group).optTimeout(Duration.ofSeconds(-1)).build(),
                "'timeout'",
                "positive");
        assertMessage(
                () -> EpBuffer.builder().setGroup(group).optTimeout(Duration.ofNanos(10)).build(),
                "'timeout'",
                "1 ms");
        assertMessage(
                () ->
                        EpBuffer.builder()
                                .setGroup(group)
                                .optTimeout(Duration.ofSeconds(Long.MAX_VALUE))
                                .build(),
                "'timeout'",
                "Long.MAX_VALUE");
        try (EpBuffer d = EpBuffer.create(group)) {
            assertEquals(EpBuffer.DEFAULT_CUDA_BUFFER_BYTES, d.cudaBufferBytes());
            assertEquals(1L << 30, d.cudaBufferBytes());
            assertEquals(0, d.numSms());
            assertNull(d.timeout());
            assertNull(d.cudaDevice());
        }
        try (EpBuffer b =
                        EpBuffer.builder()
                                .setGroup(group)
                                .optCudaBufferBytes(256L << 20)
                                .optNumSms(20)
                                .optTimeout(Duration.ofSeconds(5))
                                .build();
                NDManager m = manager.newSubManager()) {
            assertEquals(256L << 20, b.cudaBufferBytes());
            assertEquals(20, b.numSms());
            assertEquals(Duration.ofSeconds(5), b.timeout());
            // A configured buffer works on CPU arrays as any other (no GPU resource is made).
            NDArray x = m.ones(new Shape(3, 16));
            NDArray idx = m.create(new long[] {0, -1, 1, 0, -1, -1}, new Shape(3, 2));
            DispatchResult r = b.dispatch(x, idx, null, 2, 1, WireFormat.BF16);
            try (EpHandle h = r.handle()) {
                assertEquals(2, h.numRecv());
                b.synchronize();
            }
            assertNull(b.cudaDevice());
        }
    }

    @Test
    void gpuRowsNeedAMultipleOf8ChannelsAndMayEndInAPartialScalingBlock() {
        // The CUDA plug-in encodes 8 channels a lane and takes a partial last FP8 / MXFP8 block,
        // as the CPU engine does: the tiny preset's 64 channels must pass on the FP8 wire.
        for (WireFormat w : WireFormat.values()) {
            for (long hidden : new long[] {8, 64, 200, 7168}) {
                CudaBackend.checkHidden(hidden, w);
            }
            assertMessage(
                    () -> CudaBackend.checkHidden(100, w), "hidden size 100", "multiple of 8");
        }
    }

    @Test
    void localGroupAllGatherReturnsItsOwnBytes() {
        byte[] mine = {1, 2, 3, -4};
        byte[] all = group.allGather(mine);
        assertArrayEquals(mine, all);
        assertNotSame(mine, all);
        assertArrayEquals(new byte[0], group.allGather(new byte[0]));
        assertMessage(() -> group.allGather(null), "'mine'", "null");
    }

    /** An NDArray that claims to live on a GPU: only its metadata works. */
    private static NDArray onGpu(Shape shape, DataType type) {
        return FakeGpuArray.of(manager, shape, type);
    }

    private static void assertMessage(Executable call, String... parts) {
        IllegalArgumentException e = assertThrows(IllegalArgumentException.class, call);
        for (String p : parts) {
            assertTrue(e.getMessage().contains(p), "message '" + e.getMessage() + "' lacks " + p);
        }
    }
}
