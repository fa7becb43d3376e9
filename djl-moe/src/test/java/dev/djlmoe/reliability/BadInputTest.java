/*
 * djl-moe: expert-parallel Mixture-of-Experts for the Deep Java Library.
 */
package dev.djlmoe.reliability;

import static org.junit.jupiter.api.Assertions.assertArrayEquals;
import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertThrows;
import static org.junit.jupiter.api.Assertions.assertTrue;
import static org.junit.jupiter.api.Assertions.fail;

import ai.djl.ndarray.NDArray;
import ai.djl.ndarray.NDManager;
import ai.djl.ndarray.types.DataType;
import ai.djl.ndarray.types.Shape;
import dev.djlmoe.core.EpException;
import dev.djlmoe.core.NativeCall;
import dev.djlmoe.dist.LocalProcessGroup;
import dev.djlmoe.dist.ProcessGroup;
import dev.djlmoe.dist.RankEnvironment;
import dev.djlmoe.ep.CombineResult;
import dev.djlmoe.ep.DispatchResult;
import dev.djlmoe.ep.EpBuffer;
import dev.djlmoe.ep.EpContext;
import dev.djlmoe.ep.EpHandle;
import dev.djlmoe.ep.FakeGpuArray;
import dev.djlmoe.ep.LowLatencyBuffer;
import dev.djlmoe.ep.LowLatencyDispatch;
import dev.djlmoe.ep.WireFormat;
import dev.djlmoe.nativeep.NativeEp;
import dev.djlmoe.nn.ExpertPrecision;
import dev.djlmoe.nn.MoeLayer;
import dev.djlmoe.nn.MoeRouter;
import dev.djlmoe.nn.RoutedExperts;
import dev.djlmoe.nn.ScoreFunction;
import java.util.ArrayList;
import java.util.LinkedHashMap;
import java.util.List;
import java.util.Map;
import java.util.Random;
import java.util.stream.Stream;
import org.junit.jupiter.api.AfterAll;
import org.junit.jupiter.api.BeforeAll;
import org.junit.jupiter.api.DynamicNode;
import org.junit.jupiter.api.DynamicTest;
import org.junit.jupiter.api.TestFactory;
import org.junit.jupiter.api.function.Executable;

/**
 * Table-driven hostile input over every public entry of the EP layer: {@link EpBuffer} (layout,
 * notify, dispatch, cached dispatch, combine), {@link LowLatencyBuffer}, the C ABI reached through
 * JavaCPP, the builders of {@link MoeRouter}, {@link MoeLayer}, {@link RoutedExperts} and {@link
 * EpContext}, {@link WireFormat} and {@link RankEnvironment}.
 *
 * <p>Each refusal case names the exception type it must raise and the parts its message must
 * contain: the argument, the offending value and the limit it broke. Each acceptance case is an
 * edge that must work and give the right numbers (non-contiguous views, a hidden size that is not a
 * multiple of a wire block, zero tokens). The last dynamic test proves the library still works
 * after every refusal (a normal dispatch, combine and low-latency round trip) and prints how many
 * cases were tried.
 */
class BadInputTest {

    private static final int E = 8;
    private static final int H = 8;

    private static NDManager manager;
    private static LocalProcessGroup group;
    private static EpBuffer buffer;
    private static LowLatencyBuffer ll;
    private static final Map<String, Integer> TRIED = new LinkedHashMap<>();

    @BeforeAll
    static void setUp() {
        manager = NDManager.newBaseManager();
        group = new LocalProcessGroup();
        buffer = EpBuffer.create(group);
        ll = LowLatencyBuffer.create(group, 4, 64, E, 4, WireFormat.BF16, 5_000);
    }

    @AfterAll
    static void tearDown() {
        ll.close();
        buffer.close();
        group.close();
        manager.close();
    }

    /** A refusal: the call must throw {@code type} with a message containing every part. */
    private record Refusal(
            String area,
            String name,
            Class<? extends Throwable> type,
            Executable call,
            String... parts) {}

    private static Refusal iae(String area, String name, Executable call, String... parts) {
        return new Refusal(area, name, IllegalArgumentException.class, call, parts);
    }

    private static void check(Refusal c) {
        Throwable e = assertThrows(c.type(), c.call(), c.name());
        String m = e.getMessage();
        assertTrue(m != null && !m.isBlank(), c.name() + ": empty message");
        for (String p : c.parts()) {
            assertTrue(m.contains(p), c.name() + ": message '" + m + "' lacks '" + p + "'");
        }
        assertTrue(
                m.chars().allMatch(ch -> ch >= 0x20 && ch < 0x7f || ch == '\n'),
                c.name() + ": message is not plain text: " + m);
        TRIED.merge(c.area(), 1, Integer::sum);
    }

    // ---- helpers ------------------------------------------------------------------------------

    private static NDArray idx(long... v) {
        return manager.create(v, new Shape(v.length / 2, 2));
    }

    /** An NDArray that claims to live on a GPU: only its metadata works. */
    private static NDArray onGpu(Shape shape, DataType type) {
        return FakeGpuArray.of(manager, shape, type);
    }

    /** A group that says it has three ranks (the communicator underneath is a loopback one). */
    private static final class ThreeRanks implements ProcessGroup {
        private final LocalProcessGroup inner = new LocalProcessGroup();

        @Override
        public int rank() {
            return 0;
        }

        @Override
        public int worldSize() {
            return 3;
        }

        @Override
        public int localRank() {
            return 0;
        }

        @Override
        public int localWorldSize() {
            return 3;
        }

        @Override
        public NativeEp.nep_comm comm() {
            return inner.comm();
        }

        @Override
        public void allReduceSum(NDArray array) {}

        @Override
        public byte[] allGather(byte[] mine) {
            byte[] all = new byte[3 * mine.length];
            for (int r = 0; r < 3; r++) {
                System.arraycopy(mine, 0, all, r * mine.length, mine.length);
            }
            return all;
        }

        @Override
        public void barrier() {}

        @Override
        public void close() {
            inner.close();
        }
    }

    private static void nativeCall(String op, java.util.function.Function<NativeCall, Integer> f) {
        try (NativeCall c = new NativeCall()) {
            c.check(f.apply(c), op);
        }
    }

    private static MoeRouter.Builder router() {
        return MoeRouter.builder().setNumExperts(E).setTopK(2);
    }

    // ---- the table ----------------------------------------------------------------------------

    private static List<Refusal> refusals() {
        List<Refusal> t = new ArrayList<>();
        NDArray x = manager.ones(new Shape(4, H));
        NDArray ok = idx(0, 1, 2, 3, 4, 5, 6, 7);
        NDArray w = manager.ones(new Shape(4, 2));
        String ep = "EpBuffer";
        // x: dtype, rank, device, null, hidden 0
        t.add(
                iae(
                        ep,
                        "x float64",
                        () ->
                                buffer.dispatch(
                                        x.toType(DataType.FLOAT64, false),
                                        ok,
                                        null,
                                        E,
                                        1,
                                        WireFormat.FP32),
                        "'x'",
                        "float64",
                        "float32"));
        t.add(
                iae(
                        ep,
                        "x int32",
                        () ->
                                buffer.dispatch(
                                        x.toType(DataType.INT32, false),
                                        ok,
                                        null,
                                        E,
                                        1,
                                        WireFormat.FP32),
                        "'x'",
                        "int32",
                        "float32"));
        t.add(
                iae(
                        ep,
                        "x rank 3",
                        () ->
                                buffer.dispatch(
                                        manager.ones(new Shape(4, 2, 4)),
                                        ok,
                                        null,
                                        E,
                                        1,
                                        WireFormat.FP32),
                        "'x'",
                        "(4, 2, 4)",
                        "2 dimensions"));
        t.add(
                iae(
                        ep,
                        "x rank 1",
                        () ->
                                buffer.dispatch(
                                        manager.ones(new Shape(8)),
                                        ok,
                                        null,
                                        E,
                                        1,
                                        WireFormat.FP32),
                        "'x'",
                        "(8)",
                        "2 dimensions"));
        t.add(
                iae(
                        ep,
                        "x on a GPU",
                        () ->
                                buffer.dispatch(
                                        onGpu(new Shape(4, H), DataType.FLOAT32),
                                        ok,
                                        null,
                                        E,
                                        1,
                                        WireFormat.FP32),
                        "'x'",
                        "gpu(0)",
                        "CPU"));
        t.add(
                iae(
                        ep,
                        "x null",
                        () -> buffer.dispatch(null, ok, null, E, 1, WireFormat.FP32),
                        "'x'",
                        "null"));
        t.add(
                iae(
                        ep,
                        "hidden 0",
                        () ->
                                buffer.dispatch(
                                        manager.ones(new Shape(4, 0)),
                                        ok,
                                        null,
                                        E,
                                        1,
                                        WireFormat.FP32),
                        "hidden size 0",
                        "positive"));
        // topk_idx: dtype, shape, device, range, duplicates, K against E
        t.add(
                iae(
                        ep,
                        "topk_idx int32",
                        () ->
                                buffer.dispatch(
                                        x,
                                        ok.toType(DataType.INT32, false),
                                        null,
                                        E,
                                        1,
                                        WireFormat.FP32),
                        "'topk_idx'",
                        "int32",
                        "int64"));
        t.add(
                iae(
                        ep,
                        "topk_idx float32",
                        () -> buffer.layout(ok.toType(DataType.FLOAT32, false), E),
                        "'topk_idx'",
                        "float32",
                        "int64"));
        t.add(
                iae(
                        ep,
                        "topk_idx rows != x rows",
                        () ->
                                buffer.dispatch(
                                        manager.ones(new Shape(5, H)),
                                        ok,
                                        null,
                                        E,
                                        1,
                                        WireFormat.FP32),
                        "'topk_idx'",
                        "4 rows",
                        "'x' has 5"));
        t.add(
                iae(
                        ep,
                        "topk_idx rank 3",
                        () -> buffer.layout(manager.zeros(new Shape(2, 2, 2), DataType.INT64), E),
                        "'topk_idx'",
                        "(2, 2, 2)",
                        "2 dimensions"));
        t.add(
                iae(
                        ep,
                        "topk_idx on a GPU",
                        () -> buffer.layout(onGpu(new Shape(4, 2), DataType.INT64), E),
                        "'topk_idx'",
                        "gpu(0)",
                        "CPU"));
        t.add(
                iae(
                        ep,
                        "topk_idx = E",
                        () ->
                                buffer.dispatch(
                                        x,
                                        idx(0, 1, 2, 8, 4, 5, 6, 7),
                                        null,
                                        E,
                                        1,
                                        WireFormat.FP32),
                        "topk_idx[1][1] = 8",
                        "[-1, 8)"));
        t.add(
                iae(
                        ep,
                        "topk_idx = -2",
                        () -> buffer.layout(idx(0, 1, 2, 3, -2, 5, 6, 7), E),
                        "topk_idx[2][0] = -2",
                        "[-1, 8)"));
        t.add(
                iae(
                        ep,
                        "topk_idx = Long.MAX_VALUE",
                        () -> buffer.notify(idx(0, 1, 2, 3, 4, Long.MAX_VALUE, 6, 7), E, 1),
                        "= " + Long.MAX_VALUE,
                        "[-1, 8)"));
        t.add(
                iae(
                        ep,
                        "topk_idx = Long.MIN_VALUE",
                        () -> buffer.layout(idx(Long.MIN_VALUE, 1, 2, 3, 4, 5, 6, 7), E),
                        "= " + Long.MIN_VALUE,
                        "[-1, 8)"));
        t.add(
                iae(
                        ep,
                        "duplicate expert in a row",
                        () ->
                                buffer.dispatch(
                                        x,
                                        idx(0, 1, 2, 3, 5, 5, 6, 7),
                                        null,
                                        E,
                                        1,
                                        WireFormat.FP32),
                        "topk_idx[2]",
                        "expert 5 twice",
                        "at most once"));
        t.add(
                iae(
                        ep,
                        "K > E",
                        () ->
                                buffer.dispatch(
                                        x,
                                        manager.zeros(new Shape(4, 9), DataType.INT64),
                                        null,
                                        E,
                                        1,
                                        WireFormat.FP32),
                        "K = 9",
                        "num_experts = 8"));
        t.add(
                iae(
                        ep,
                        "K = 0",
                        () -> buffer.layout(manager.zeros(new Shape(4, 0), DataType.INT64), E),
                        "K = 0",
                        ">= 1"));
        t.add(
                iae(
                        ep,
                        "E = 0",
                        () -> buffer.dispatch(x, ok, null, 0, 1, WireFormat.FP32),
                        "'num_experts' = 0",
                        "positive"));
        t.add(iae(ep, "E negative", () -> buffer.layout(ok, -8), "'num_experts' = -8", "positive"));
        t.add(
                iae(
                        ep,
                        "E not divisible by W",
                        () -> {
                            try (ThreeRanks g3 = new ThreeRanks();
                                    EpBuffer b3 = EpBuffer.create(g3)) {
                                b3.layout(ok, E);
                            }
                        },
                        "'num_experts' = 8",
                        "world size 3"));
        t.add(
                iae(
                        ep,
                        "expert_alignment 0",
                        () -> buffer.dispatch(x, ok, null, E, 0, WireFormat.FP32),
                        "'expert_alignment' = 0",
                        ">= 1"));
        t.add(
                iae(
                        ep,
                        "expert_alignment negative",
                        () -> buffer.notify(ok, E, -32),
                        "'expert_alignment' = -32",
                        ">= 1"));
        // topk_weights
        t.add(
                iae(
                        ep,
                        "topk_weights wrong K",
                        () ->
                                buffer.dispatch(
                                        x,
                                        ok,
                                        manager.ones(new Shape(4, 3)),
                                        E,
                                        1,
                                        WireFormat.FP32),
                        "'topk_weights'",
                        "(4, 3)",
                        "(4, 2)"));
        t.add(
                iae(
                        ep,
                        "topk_weights float64",
                        () ->
                                buffer.dispatch(
                                        x,
                                        ok,
                                        w.toType(DataType.FLOAT64, false),
                                        E,
                                        1,
                                        WireFormat.FP32),
                        "'topk_weights'",
                        "float64",
                        "float32"));
        t.add(
                iae(
                        ep,
                        "wire null",
                        () -> buffer.dispatch(x, ok, null, E, 1, null),
                        "'wire'",
                        "null"));
        // handles: wrong size, closed, from another buffer, null
        DispatchResult r = buffer.dispatch(x, ok, w, E, 1, WireFormat.FP32);
        EpHandle h = r.handle();
        t.add(
                iae(
                        ep,
                        "cached dispatch with other T",
                        () -> buffer.dispatch(manager.ones(new Shape(2, H)), h, WireFormat.FP32),
                        "'x' has 2 rows",
                        "routes 4 tokens"));
        t.add(
                iae(
                        ep,
                        "combine y rows != R",
                        () ->
                                buffer.combine(
                                        manager.ones(new Shape(3, H)), null, h, WireFormat.FP32),
                        "'y' has 3 rows",
                        "expected 4"));
        t.add(
                iae(
                        ep,
                        "combine y float64",
                        () ->
                                buffer.combine(
                                        r.recvX().toType(DataType.FLOAT64, false),
                                        null,
                                        h,
                                        WireFormat.FP32),
                        "'y'",
                        "float64",
                        "float32"));
        t.add(
                iae(
                        ep,
                        "combine y_weights wrong K",
                        () ->
                                buffer.combine(
                                        r.recvX(),
                                        manager.ones(new Shape(4, 3)),
                                        h,
                                        WireFormat.FP32),
                        "'y_weights'",
                        "(4, 3)",
                        "(4, 2)"));
        t.add(
                iae(
                        ep,
                        "combine y on a GPU",
                        () ->
                                buffer.combine(
                                        onGpu(new Shape(4, H), DataType.FLOAT32),
                                        null,
                                        h,
                                        WireFormat.FP32),
                        "'y'",
                        "gpu(0)",
                        "CPU"));
        t.add(
                iae(
                        ep,
                        "combine handle null",
                        () -> buffer.combine(r.recvX(), null, null, WireFormat.FP32),
                        "'handle'",
                        "null"));
        t.add(
                iae(
                        ep,
                        "handle of another buffer",
                        () -> {
                            try (LocalProcessGroup g2 = new LocalProcessGroup();
                                    EpBuffer b2 = EpBuffer.create(g2)) {
                                b2.combine(r.recvX(), null, h, WireFormat.FP32);
                            }
                        },
                        "'handle'",
                        "another EpBuffer"));
        EpHandle closed = buffer.dispatch(x, ok, null, E, 1, WireFormat.FP32).handle();
        closed.close();
        t.add(
                iae(
                        ep,
                        "handle used after close",
                        () -> buffer.combine(r.recvX(), null, closed, WireFormat.FP32),
                        "'handle'",
                        "closed"));
        t.add(
                iae(
                        ep,
                        "cached dispatch after close",
                        () -> buffer.dispatch(x, closed, WireFormat.FP32),
                        "'handle'",
                        "closed"));
        t.add(
                new Refusal(
                        ep,
                        "handle getter after close",
                        IllegalStateException.class,
                        closed::recvSrcIdx,
                        "handle",
                        "closed"));
        t.add(
                new Refusal(
                        ep,
                        "buffer used after close",
                        IllegalStateException.class,
                        () -> {
                            EpBuffer b2 = EpBuffer.create(group);
                            b2.close();
                            b2.layout(ok, E);
                        },
                        "EpBuffer",
                        "closed"));
        t.add(iae(ep, "create with null group", () -> EpBuffer.create(null), "'group'", "null"));

        // ---- low-latency buffer (max_tokens_per_rank 4, hidden 64, E 8, max_topk 4, bf16)
        String lo = "LowLatencyBuffer";
        NDArray lx = manager.ones(new Shape(2, 64));
        NDArray lidx = idx(0, 1, 2, 3);
        t.add(
                iae(
                        lo,
                        "more tokens than max_tokens_per_rank",
                        () ->
                                ll.dispatchSend(
                                        manager.ones(new Shape(5, 64)),
                                        manager.zeros(new Shape(5, 2), DataType.INT64),
                                        WireFormat.BF16,
                                        false),
                        "'x' has 5 rows",
                        "max_tokens_per_rank = 4"));
        t.add(
                iae(
                        lo,
                        "hidden differs from the buffer's",
                        () ->
                                ll.dispatchSend(
                                        manager.ones(new Shape(2, 32)),
                                        lidx,
                                        WireFormat.BF16,
                                        false),
                        "'x' has 32 columns",
                        "hidden size is 64"));
        t.add(
                iae(
                        lo,
                        "K > max_topk",
                        () ->
                                ll.dispatchSend(
                                        lx,
                                        manager.zeros(new Shape(2, 5), DataType.INT64),
                                        WireFormat.BF16,
                                        false),
                        "K = 5",
                        "max_topk = 4"));
        t.add(
                iae(
                        lo,
                        "topk_idx out of range",
                        () -> ll.dispatchSend(lx, idx(0, 1, 2, 99), WireFormat.BF16, false),
                        "= 99",
                        "[-1, 8)"));
        t.add(
                iae(
                        lo,
                        "duplicate expert",
                        () -> ll.dispatchSend(lx, idx(0, 1, 3, 3), WireFormat.BF16, false),
                        "expert 3",
                        "twice"));
        t.add(
                iae(
                        lo,
                        "wire wider than max_wire",
                        () -> ll.dispatchSend(lx, lidx, WireFormat.FP32, false),
                        "'wire' = FP32",
                        "BF16"));
        t.add(
                iae(
                        lo,
                        "round_scale without FP8",
                        () -> ll.dispatchSend(lx, lidx, WireFormat.BF16, true),
                        "'round_scale'",
                        "FP8",
                        "BF16"));
        t.add(
                iae(
                        lo,
                        "x on a GPU",
                        () ->
                                ll.dispatchSend(
                                        onGpu(new Shape(2, 64), DataType.FLOAT32),
                                        lidx,
                                        WireFormat.BF16,
                                        false),
                        "'x'",
                        "gpu(0)",
                        "CPU"));
        t.add(
                iae(
                        lo,
                        "create max_tokens_per_rank 0",
                        () -> LowLatencyBuffer.create(group, 0, 64, E, 4),
                        "'max_tokens_per_rank' = 0",
                        ">= 1"));
        t.add(
                iae(
                        lo,
                        "create hidden 0",
                        () -> LowLatencyBuffer.create(group, 4, 0, E, 4),
                        "'hidden' = 0",
                        ">= 1"));
        t.add(
                iae(
                        lo,
                        "create E not a multiple of W",
                        () -> {
                            try (ThreeRanks g3 = new ThreeRanks()) {
                                LowLatencyBuffer.create(g3, 4, 64, E, 4);
                            }
                        },
                        "'num_experts' = 8",
                        "world size 3"));
        t.add(
                iae(
                        lo,
                        "create max_topk > E",
                        () -> LowLatencyBuffer.create(group, 4, 64, E, 9),
                        "'max_topk' = 9",
                        "num_experts = 8"));
        t.add(
                iae(
                        lo,
                        "create timeout 0",
                        () -> LowLatencyBuffer.create(group, 4, 64, E, 4, WireFormat.BF16, 0),
                        "'timeout_ms' = 0",
                        "> 0"));
        LowLatencyDispatch d = ll.dispatch(lx, lidx, WireFormat.BF16, false);
        NDArray lw = manager.ones(new Shape(2, 2));
        t.add(
                iae(
                        lo,
                        "combine y wrong shape",
                        () ->
                                ll.combine(
                                        manager.ones(new Shape(8, 4, 32)),
                                        lidx,
                                        lw,
                                        d.handle(),
                                        WireFormat.BF16),
                        "'y'",
                        "(8, 4, 32)",
                        "(8, 4, 64)"));
        t.add(
                iae(
                        lo,
                        "combine topk_idx other T",
                        () -> ll.combine(d.recvX(), idx(0, 1), lw, d.handle(), WireFormat.BF16),
                        "'topk_idx'",
                        "(1, 2)",
                        "(2, 2)"));
        t.add(
                iae(
                        lo,
                        "combine weights wrong shape",
                        () ->
                                ll.combine(
                                        d.recvX(),
                                        lidx,
                                        manager.ones(new Shape(2, 3)),
                                        d.handle(),
                                        WireFormat.BF16),
                        "'topk_weights'",
                        "(2, 3)",
                        "(2, 2)"));
        t.add(
                iae(
                        lo,
                        "combine handle of another buffer",
                        () -> {
                            try (LowLatencyBuffer other =
                                    LowLatencyBuffer.create(group, 4, 64, E, 4)) {
                                other.combine(d.recvX(), lidx, lw, d.handle(), WireFormat.BF16);
                            }
                        },
                        "'handle'",
                        "another LowLatencyBuffer"));
        t.add(
                new Refusal(
                        lo,
                        "buffer used after close",
                        IllegalStateException.class,
                        () -> {
                            LowLatencyBuffer b = LowLatencyBuffer.create(group, 4, 64, E, 4);
                            b.close();
                            b.dispatchSend(lx, lidx, WireFormat.BF16, false);
                        },
                        "LowLatencyBuffer",
                        "closed"));

        // ---- the C ABI through JavaCPP: what other callers (benchmarks, bindings) can pass
        String c = "C ABI";
        t.add(
                iae(
                        c,
                        "nep_layout E not a multiple of W",
                        () ->
                                nativeCall(
                                        "layout",
                                        k ->
                                                NativeEp.nep_layout(
                                                        0, 0, 2, 8, 3, 0, 0, 0, k.err(), k.cap())),
                        "num_experts = 8",
                        "world_size = 3"));
        t.add(
                iae(
                        c,
                        "nep_layout W = 0",
                        () ->
                                nativeCall(
                                        "layout",
                                        k ->
                                                NativeEp.nep_layout(
                                                        0, 0, 2, 8, 0, 0, 0, 0, k.err(), k.cap())),
                        "world_size = 0",
                        ">= 1"));
        t.add(
                iae(
                        c,
                        "nep_layout T = -1",
                        () ->
                                nativeCall(
                                        "layout",
                                        k ->
                                                NativeEp.nep_layout(
                                                        0, -1, 2, 8, 1, 0, 0, 0, k.err(), k.cap())),
                        "num_tokens = -1",
                        ">= 0"));
        t.add(
                iae(
                        c,
                        "nep_layout topk_idx null",
                        () ->
                                nativeCall(
                                        "layout",
                                        k ->
                                                NativeEp.nep_layout(
                                                        0, 3, 2, 8, 1, 0, 0, 0, k.err(), k.cap())),
                        "topk_idx",
                        "null"));
        t.add(
                new Refusal(
                        c,
                        "nep_layout W beyond the limit",
                        EpException.class,
                        () ->
                                nativeCall(
                                        "layout",
                                        k ->
                                                NativeEp.nep_layout(
                                                        0, 0, 2, 1 << 20, 1 << 20, 0, 0, 0, k.err(),
                                                        k.cap())),
                        "world_size = 1048576",
                        "limit 65536"));
        t.add(
                new Refusal(
                        c,
                        "nep_layout E beyond the limit",
                        EpException.class,
                        () ->
                                nativeCall(
                                        "layout",
                                        k ->
                                                NativeEp.nep_layout(
                                                        0,
                                                        0,
                                                        2,
                                                        Integer.MAX_VALUE,
                                                        1,
                                                        0,
                                                        0,
                                                        0,
                                                        k.err(),
                                                        k.cap())),
                        "num_experts = 2147483647",
                        "limit 1048576"));
        t.add(
                new Refusal(
                        c,
                        "nep_layout T beyond int32",
                        EpException.class,
                        () ->
                                nativeCall(
                                        "layout",
                                        k ->
                                                NativeEp.nep_layout(
                                                        0, 1L << 31, 2, 8, 1, 0, 0, 0, k.err(),
                                                        k.cap())),
                        "num_tokens = 2147483648",
                        "limit 2147483647"));
        t.add(
                iae(
                        c,
                        "nep_encode_rows wire 7",
                        () ->
                                nativeCall(
                                        "encode",
                                        k ->
                                                NativeEp.nep_encode_rows(
                                                        7, 0, 0, 8, 0, k.err(), k.cap())),
                        "wire = 7",
                        "0 fp32, 1 bf16, 2 fp8, 3 mxfp8"));
        t.add(
                iae(
                        c,
                        "nep_decode_rows hidden 0",
                        () ->
                                nativeCall(
                                        "decode",
                                        k ->
                                                NativeEp.nep_decode_rows(
                                                        0, 0, 0, 0, 0, k.err(), k.cap())),
                        "hidden = 0",
                        "> 0"));
        t.add(
                iae(
                        c,
                        "nep_decode_rows rows -1",
                        () ->
                                nativeCall(
                                        "decode",
                                        k ->
                                                NativeEp.nep_decode_rows(
                                                        0, 0, -1, 8, 0, k.err(), k.cap())),
                        "rows = -1",
                        ">= 0"));
        t.add(
                iae(
                        c,
                        "nep_decode_rows null input",
                        () ->
                                nativeCall(
                                        "decode",
                                        k ->
                                                NativeEp.nep_decode_rows(
                                                        1, 0, 2, 8, 0, k.err(), k.cap())),
                        "in",
                        "null"));
        t.add(
                iae(
                        c,
                        "nep_dispatch null comm",
                        () ->
                                nativeCall(
                                        "dispatch",
                                        k ->
                                                NativeEp.nep_dispatch(
                                                        null, null, 0, 8, 0, 0, 0, 0, 0, k.err(),
                                                        k.cap())),
                        "comm",
                        "null"));
        t.add(
                iae(
                        c,
                        "nep_dispatch null handle",
                        () ->
                                nativeCall(
                                        "dispatch",
                                        k ->
                                                NativeEp.nep_dispatch(
                                                        group.comm(),
                                                        null,
                                                        0,
                                                        8,
                                                        0,
                                                        0,
                                                        0,
                                                        0,
                                                        0,
                                                        k.err(),
                                                        k.cap())),
                        "handle",
                        "null"));
        t.add(
                iae(
                        c,
                        "nep_combine null handle, wire -1",
                        () ->
                                nativeCall(
                                        "combine",
                                        k ->
                                                NativeEp.nep_combine(
                                                        group.comm(),
                                                        null,
                                                        0,
                                                        8,
                                                        -1,
                                                        0,
                                                        0,
                                                        0,
                                                        k.err(),
                                                        k.cap())),
                        "handle",
                        "null"));
        t.add(
                iae(
                        c,
                        "nep_comm_create_shm rank 4 of 4",
                        () ->
                                nativeCall(
                                        "create shm",
                                        k -> {
                                            try (org.bytedeco.javacpp.PointerPointer<
                                                            NativeEp.nep_comm>
                                                    out =
                                                            new org.bytedeco.javacpp
                                                                    .PointerPointer<>(1)) {
                                                return NativeEp.nep_comm_create_shm(
                                                        4,
                                                        4,
                                                        4,
                                                        4,
                                                        "127.0.0.1",
                                                        1,
                                                        "t",
                                                        1000,
                                                        out,
                                                        k.err(),
                                                        k.cap());
                                            }
                                        }),
                        "rank = 4",
                        "[0, 4)"));
        t.add(
                iae(
                        c,
                        "nep_all_reduce null data",
                        () ->
                                nativeCall(
                                        "all-reduce",
                                        k ->
                                                NativeEp.nep_all_reduce_sum_f32(
                                                        group.comm(), 0, 4, k.err(), k.cap())),
                        "data",
                        "null"));

        // ---- builders of the blocks
        String b = "builders";
        t.add(
                iae(
                        b,
                        "router topK 0",
                        () -> router().setTopK(0).build(),
                        "topK",
                        "[1, numExperts=8]",
                        "got 0"));
        t.add(
                iae(
                        b,
                        "router topK > E",
                        () -> router().setTopK(9).build(),
                        "topK",
                        "[1, numExperts=8]",
                        "got 9"));
        t.add(
                iae(
                        b,
                        "router E 0",
                        () -> router().setNumExperts(0).build(),
                        "numExperts",
                        ">= 1",
                        "got 0"));
        t.add(
                iae(
                        b,
                        "router groups not dividing E",
                        () -> router().optNumGroups(3).build(),
                        "numGroups",
                        "numExperts=8",
                        "numGroups=3"));
        t.add(
                iae(
                        b,
                        "router topkGroup > groups",
                        () -> router().optNumGroups(4).optTopkGroup(5).build(),
                        "topkGroup",
                        "[1, numGroups=4]",
                        "got 5"));
        t.add(
                iae(
                        b,
                        "router topK beyond kept groups",
                        () -> router().setTopK(5).optNumGroups(4).optTopkGroup(2).build(),
                        "topK",
                        "= 4",
                        "got topK=5"));
        t.add(
                iae(
                        b,
                        "router scaling NaN",
                        () -> router().optRoutedScalingFactor(Float.NaN).build(),
                        "routedScalingFactor",
                        "NaN",
                        "finite"));
        t.add(
                iae(
                        b,
                        "router scaling Inf",
                        () -> router().optRoutedScalingFactor(Float.POSITIVE_INFINITY).build(),
                        "routedScalingFactor",
                        "Infinity",
                        "finite"));
        t.add(
                iae(
                        b,
                        "router scaling 0",
                        () -> router().optRoutedScalingFactor(0f).build(),
                        "routedScalingFactor",
                        "got 0.0",
                        "> 0"));
        t.add(
                iae(
                        b,
                        "router bias with softmax",
                        () ->
                                router().optScoreFunction(ScoreFunction.SOFTMAX)
                                        .optCorrectionBias(true)
                                        .build(),
                        "correctionBias",
                        "SIGMOID",
                        "SOFTMAX"));
        t.add(
                iae(
                        b,
                        "bias update gamma NaN",
                        () -> MoeRouter.correctionBiasDelta(new long[E], E, Float.NaN),
                        "gamma",
                        "finite",
                        "NaN"));
        t.add(
                iae(
                        b,
                        "bias update wrong length",
                        () -> MoeRouter.correctionBiasDelta(new long[7], E, 0.1f),
                        "length 8",
                        "got 7"));
        t.add(
                iae(
                        b,
                        "count tokens id out of range",
                        () -> MoeRouter.countTokensPerExpert(idx(0, 1, 2, 9), E),
                        "[-1, 8)",
                        "got 9"));
        t.add(
                iae(
                        b,
                        "moe layer hidden 0",
                        () ->
                                MoeLayer.builder()
                                        .setHiddenSize(0)
                                        .setExpertIntermediateSize(4)
                                        .setRouter(router())
                                        .build(),
                        "hidden size 0",
                        "positive"));
        t.add(
                iae(
                        b,
                        "moe layer intermediate -1",
                        () ->
                                MoeLayer.builder()
                                        .setHiddenSize(8)
                                        .setExpertIntermediateSize(-1)
                                        .setRouter(router())
                                        .build(),
                        "intermediate size -1",
                        "positive"));
        t.add(
                iae(
                        b,
                        "moe layer without router",
                        () ->
                                MoeLayer.builder()
                                        .setHiddenSize(8)
                                        .setExpertIntermediateSize(4)
                                        .build(),
                        "setRouter",
                        "required"));
        t.add(
                iae(
                        b,
                        "moe layer shared experts -1",
                        () ->
                                MoeLayer.builder()
                                        .setHiddenSize(8)
                                        .setExpertIntermediateSize(4)
                                        .setRouter(router())
                                        .optNumSharedExperts(-1)
                                        .build(),
                        "shared experts -1",
                        ">= 0"));
        t.add(
                iae(
                        b,
                        "moe layer seq aux NaN",
                        () ->
                                MoeLayer.builder()
                                        .setHiddenSize(8)
                                        .setExpertIntermediateSize(4)
                                        .setRouter(router())
                                        .optSeqAuxAlpha(Float.NaN)
                                        .build(),
                        "seq aux alpha NaN",
                        "finite"));
        t.add(
                iae(
                        b,
                        "moe layer E not divisible by EP world",
                        () -> {
                            try (ThreeRanks g3 = new ThreeRanks();
                                    EpContext ctx =
                                            EpContext.builder().setProcessGroup(g3).build()) {
                                MoeLayer.builder()
                                        .setHiddenSize(8)
                                        .setExpertIntermediateSize(4)
                                        .setRouter(router())
                                        .optContext(ctx)
                                        .build();
                            }
                        },
                        "num experts 8",
                        "EP world size 3"));
        t.add(
                iae(
                        b,
                        "routed experts E 0",
                        () ->
                                RoutedExperts.builder()
                                        .setNumExperts(0)
                                        .setHiddenSize(8)
                                        .setIntermediateSize(4)
                                        .build(),
                        "numExperts",
                        ">= 1",
                        "got 0"));
        t.add(
                iae(
                        b,
                        "routed experts hidden 0",
                        () ->
                                RoutedExperts.builder()
                                        .setNumExperts(2)
                                        .setHiddenSize(0)
                                        .setIntermediateSize(4)
                                        .build(),
                        "hiddenSize",
                        ">= 1",
                        "got 0"));
        t.add(
                iae(
                        b,
                        "routed experts intermediate 0",
                        () ->
                                RoutedExperts.builder()
                                        .setNumExperts(2)
                                        .setHiddenSize(8)
                                        .setIntermediateSize(0)
                                        .build(),
                        "intermediateSize",
                        ">= 1",
                        "got 0"));
        t.add(
                iae(
                        b,
                        "routed experts precision null",
                        () -> RoutedExperts.builder().optPrecision((ExpertPrecision) null),
                        "precision",
                        "null"));
        t.add(
                iae(
                        b,
                        "context alignment 0",
                        () ->
                                EpContext.builder()
                                        .setProcessGroup(group)
                                        .optExpertAlignment(0)
                                        .build(),
                        "alignment 0",
                        ">= 1"));
        t.add(
                iae(
                        b,
                        "context without group",
                        () -> EpContext.builder().build(),
                        "setProcessGroup",
                        "required"));
        t.add(
                iae(
                        b,
                        "context wire null",
                        () ->
                                EpContext.builder()
                                        .setProcessGroup(group)
                                        .optDispatchWire(null)
                                        .build(),
                        "wire",
                        "null"));
        t.add(
                iae(
                        b,
                        "wire format name",
                        () -> WireFormat.fromName("fp4"),
                        "'fp4'",
                        "fp32, bf16, fp8, mxfp8"));

        // ---- the torchrun environment
        String env = "environment";
        t.add(
                iae(
                        env,
                        "WORLD_SIZE 0",
                        () -> RankEnvironment.from(Map.of("WORLD_SIZE", "0")),
                        "WORLD_SIZE = 0",
                        "[1, "));
        t.add(
                iae(
                        env,
                        "WORLD_SIZE not a number",
                        () -> RankEnvironment.from(Map.of("WORLD_SIZE", "four")),
                        "WORLD_SIZE",
                        "'four'",
                        "not an integer"));
        t.add(
                iae(
                        env,
                        "RANK >= WORLD_SIZE",
                        () ->
                                RankEnvironment.from(
                                        Map.of(
                                                "WORLD_SIZE",
                                                "4",
                                                "RANK",
                                                "4",
                                                "MASTER_PORT",
                                                "29500")),
                        "RANK = 4",
                        "[0, 3]"));
        t.add(
                iae(
                        env,
                        "RANK missing",
                        () ->
                                RankEnvironment.from(
                                        Map.of("WORLD_SIZE", "4", "MASTER_PORT", "29500")),
                        "RANK",
                        "not set"));
        t.add(
                iae(
                        env,
                        "MASTER_PORT 70000",
                        () ->
                                RankEnvironment.from(
                                        Map.of(
                                                "WORLD_SIZE",
                                                "2",
                                                "RANK",
                                                "0",
                                                "MASTER_PORT",
                                                "70000")),
                        "MASTER_PORT = 70000",
                        "[1, 65535]"));
        t.add(
                iae(
                        env,
                        "LOCAL_WORLD_SIZE > WORLD_SIZE",
                        () ->
                                RankEnvironment.from(
                                        Map.of(
                                                "WORLD_SIZE",
                                                "2",
                                                "RANK",
                                                "0",
                                                "MASTER_PORT",
                                                "29500",
                                                "LOCAL_WORLD_SIZE",
                                                "3")),
                        "LOCAL_WORLD_SIZE = 3",
                        "[1, 2]"));
        return t;
    }

    /** Edge inputs that must be accepted and give the right numbers. */
    private static Map<String, Executable> acceptances() {
        Map<String, Executable> a = new LinkedHashMap<>();
        Random rnd = new Random(5);
        float[] data = new float[6 * 100];
        for (int i = 0; i < data.length; i++) {
            data[i] = (float) rnd.nextGaussian();
        }
        a.put(
                "non-contiguous x is made contiguous, not mis-read",
                () -> {
                    try (NDManager m = manager.newSubManager()) {
                        NDArray wide = m.create(data, new Shape(100, 6));
                        NDArray strided = wide.transpose(); // [6, 100], a strided view
                        NDArray dense = strided.duplicate();
                        NDArray ids =
                                m.create(
                                        new long[] {0, 3, 1, -1, 2, 7, -1, -1, 4, 5, 6, 0},
                                        new Shape(6, 2));
                        DispatchResult viaView =
                                buffer.dispatch(strided, ids, null, E, 1, WireFormat.FP32);
                        DispatchResult viaCopy =
                                buffer.dispatch(dense, ids, null, E, 1, WireFormat.FP32);
                        try (EpHandle h1 = viaView.handle();
                                EpHandle h2 = viaCopy.handle()) {
                            assertArrayEquals(
                                    viaCopy.recvX().toFloatArray(), viaView.recvX().toFloatArray());
                        }
                    }
                });
        a.put(
                "non-contiguous topk_idx is made contiguous",
                () -> {
                    try (NDManager m = manager.newSubManager()) {
                        NDArray ids =
                                m.create(new long[] {0, 1, 2, 3, 4, 5}, new Shape(2, 3))
                                        .transpose();
                        int[] perExpert = buffer.layout(ids, E).tokensPerExpert().toIntArray();
                        assertArrayEquals(new int[] {1, 1, 1, 1, 1, 1, 0, 0}, perExpert);
                    }
                });
        a.put(
                "hidden 100 with FP8 (not a multiple of 128): a shorter last block",
                () -> {
                    try (NDManager m = manager.newSubManager()) {
                        NDArray x = m.create(data, new Shape(6, 100));
                        NDArray ids =
                                m.create(
                                        new long[] {0, 1, 2, -1, 3, 4, -1, -1, 5, 6, 7, 0},
                                        new Shape(6, 2));
                        DispatchResult r = buffer.dispatch(x, ids, null, E, 1, WireFormat.FP8);
                        try (EpHandle h = r.handle()) {
                            CombineResult c = buffer.combine(r.recvX(), null, h, WireFormat.FP8);
                            float[] out = c.out().toFloatArray();
                            for (int t = 0; t < 6; t++) {
                                boolean routed = t != 3;
                                for (int ch = 0; ch < 100; ch++) {
                                    float want = routed ? data[t * 100 + ch] : 0f;
                                    assertEquals(
                                            want,
                                            out[t * 100 + ch],
                                            Math.abs(want) / 6 + 1e-3,
                                            "token " + t + " channel " + ch);
                                }
                            }
                        }
                    }
                });
        a.put(
                "hidden 1 with MXFP8 and with BF16",
                () -> {
                    try (NDManager m = manager.newSubManager()) {
                        NDArray x = m.create(new float[] {3f, -0.5f}, new Shape(2, 1));
                        NDArray ids = m.create(new long[] {0, 1, -1, 2}, new Shape(2, 2));
                        for (WireFormat wf : new WireFormat[] {WireFormat.MXFP8, WireFormat.BF16}) {
                            DispatchResult r = buffer.dispatch(x, ids, null, E, 1, wf);
                            try (EpHandle h = r.handle()) {
                                assertArrayEquals(
                                        new float[] {3f, -0.5f},
                                        r.recvX().toFloatArray(),
                                        wf.toString());
                            }
                        }
                    }
                });
        a.put(
                "zero tokens and an all -1 routing",
                () -> {
                    try (NDManager m = manager.newSubManager()) {
                        DispatchResult r =
                                buffer.dispatch(
                                        m.zeros(new Shape(0, H)),
                                        m.zeros(new Shape(0, 2), DataType.INT64),
                                        null,
                                        E,
                                        1,
                                        WireFormat.MXFP8);
                        try (EpHandle h = r.handle()) {
                            assertEquals(0, h.numRecv());
                        }
                        DispatchResult r2 =
                                buffer.dispatch(
                                        m.ones(new Shape(2, H)),
                                        m.create(new long[] {-1, -1, -1, -1}, new Shape(2, 2)),
                                        null,
                                        E,
                                        1,
                                        WireFormat.FP8);
                        try (EpHandle h = r2.handle()) {
                            assertEquals(0, h.numRecv());
                        }
                    }
                });
        a.put(
                "exactly max_tokens_per_rank tokens in low-latency mode",
                () -> {
                    try (NDManager m = manager.newSubManager()) {
                        NDArray x = m.ones(new Shape(4, 64));
                        LowLatencyDispatch d =
                                ll.dispatch(
                                        x,
                                        m.create(
                                                new long[] {0, 1, 2, 3, 4, 5, 6, 7},
                                                new Shape(4, 2)),
                                        WireFormat.BF16,
                                        false);
                        try (var h = d.handle()) {
                            assertEquals(
                                    8, java.util.Arrays.stream(d.recvCount().toIntArray()).sum());
                        }
                    }
                });
        return a;
    }

    @TestFactory
    Stream<DynamicNode> everyEntryRefusesBadInputByNameValueAndLimit() {
        List<Refusal> refusals = refusals();
        Map<String, Executable> accepted = acceptances();
        List<DynamicNode> nodes = new ArrayList<>();
        for (Refusal r : refusals) {
            nodes.add(DynamicTest.dynamicTest(r.area() + ": " + r.name(), () -> check(r)));
        }
        for (Map.Entry<String, Executable> e : accepted.entrySet()) {
            nodes.add(
                    DynamicTest.dynamicTest(
                            "accepted: " + e.getKey(),
                            () -> {
                                e.getValue().execute();
                                TRIED.merge("accepted edges", 1, Integer::sum);
                            }));
        }
        nodes.add(
                DynamicTest.dynamicTest(
                        "the library still works after every refusal",
                        () -> {
                            libraryStillWorks();
                            int total = TRIED.values().stream().mapToInt(Integer::intValue).sum();
                            System.out.println(
                                    "bad-input suite: " + total + " cases tried " + TRIED);
                            assertEquals(
                                    refusals.size() + accepted.size(),
                                    total,
                                    "every case must have run and passed: " + TRIED);
                        }));
        return nodes.stream();
    }

    private static void libraryStillWorks() {
        try (NDManager m = manager.newSubManager()) {
            NDArray x = m.create(new float[] {1, 2, 3, 4, 5, 6, 7, 8}, new Shape(2, 4));
            NDArray ids = m.create(new long[] {0, 5, 7, -1}, new Shape(2, 2));
            DispatchResult r =
                    buffer.dispatch(x, ids, m.ones(new Shape(2, 2)), E, 1, WireFormat.FP32);
            try (EpHandle h = r.handle()) {
                CombineResult c = buffer.combine(r.recvX().mul(2f), null, h, WireFormat.FP32);
                assertArrayEquals(new float[] {2, 4, 6, 8, 10, 12, 14, 16}, c.out().toFloatArray());
            }
            NDArray lx = m.ones(new Shape(2, 64));
            NDArray lidx = m.create(new long[] {1, 6, 2, -1}, new Shape(2, 2));
            LowLatencyDispatch d = ll.dispatch(lx, lidx, WireFormat.BF16, false);
            try (var h = d.handle()) {
                NDArray out =
                        ll.combine(d.recvX(), lidx, m.ones(new Shape(2, 2)), h, WireFormat.BF16);
                float[] o = out.toFloatArray();
                assertEquals(2f, o[0]);
                assertEquals(1f, o[64]);
            }
        } catch (RuntimeException e) {
            fail("the library no longer works after the refusals", e);
        }
    }
}
