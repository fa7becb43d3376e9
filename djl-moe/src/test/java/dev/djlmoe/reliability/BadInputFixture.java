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
import dev.djlmoe.core.NativeCall;
import dev.djlmoe.dist.LocalProcessGroup;
import dev.djlmoe.dist.ProcessGroup;
import dev.djlmoe.ep.CombineResult;
import dev.djlmoe.ep.DispatchResult;
import dev.djlmoe.ep.EpBuffer;
import dev.djlmoe.ep.EpHandle;
import dev.djlmoe.ep.FakeGpuArray;
import dev.djlmoe.ep.LowLatencyBuffer;
import dev.djlmoe.ep.LowLatencyDispatch;
import dev.djlmoe.ep.WireFormat;
import dev.djlmoe.nativeep.NativeEp;
import java.util.ArrayList;
import java.util.LinkedHashMap;
import java.util.List;
import java.util.Map;
import java.util.stream.Stream;
import org.junit.jupiter.api.AfterAll;
import org.junit.jupiter.api.BeforeAll;
import org.junit.jupiter.api.DynamicNode;
import org.junit.jupiter.api.DynamicTest;
import org.junit.jupiter.api.function.Executable;

/**
 * The fixture and harness of the bad-input suite: hostile input to every public entry of the EP
 * layer must be refused with a clear exception naming the argument, the offending value and the
 * limit it broke. Each catalogue ({@link EpBufferRefusalTest}, {@link LowLatencyRefusalTest},
 * {@link NativeAbiRefusalTest}, {@link BuilderRefusalTest}, {@link RankEnvironmentRefusalTest},
 * {@link AcceptedEdgeInputTest}) extends this class and turns its table into dynamic tests with
 * {@link #catalogue}.
 *
 * <p>Before each catalogue class this opens a manager, a loopback group, an {@link EpBuffer} and a
 * {@link LowLatencyBuffer} (max_tokens_per_rank 4, hidden 64, E 8, max_topk 4, bf16, 5 s timeout),
 * all at W = 1 on the CPU and cheap to make, and closes them after it. A {@link Refusal} must throw
 * its exception type with a plain-text message containing every part; {@link #check} asserts that.
 * The last dynamic test of every catalogue proves the library still works after its refusals (a
 * normal dispatch, combine and low-latency round trip) and that every case of it ran.
 */
abstract class BadInputFixture {

    static final int E = 8;
    static final int H = 8;

    static NDManager manager;
    static LocalProcessGroup group;
    static EpBuffer buffer;
    static LowLatencyBuffer ll;
    private static final Map<String, Integer> TRIED = new LinkedHashMap<>();

    @BeforeAll
    static void setUp() {
        TRIED.clear();
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
    record Refusal(
            String area,
            String name,
            Class<? extends Throwable> type,
            Executable call,
            String... parts) {}

    static Refusal iae(String area, String name, Executable call, String... parts) {
        return new Refusal(area, name, IllegalArgumentException.class, call, parts);
    }

    static void check(Refusal c) {
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

    /**
     * The dynamic tests of one catalogue: a test per refusal ({@code "area: name"}), a test per
     * accepted edge ({@code "accepted: name"}), and last the library still works and every case
     * ran.
     */
    static Stream<DynamicNode> catalogue(List<Refusal> refusals, Map<String, Executable> accepted) {
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

    // ---- helpers ------------------------------------------------------------------------------

    static NDArray idx(long... v) {
        return manager.create(v, new Shape(v.length / 2, 2));
    }

    /** An NDArray that claims to live on a GPU: only its metadata works. */
    static NDArray onGpu(Shape shape, DataType type) {
        return FakeGpuArray.of(manager, shape, type);
    }

    /** A group that says it has three ranks (the communicator underneath is a loopback one). */
    static final class ThreeRanks implements ProcessGroup {
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

    static void nativeCall(String op, java.util.function.Function<NativeCall, Integer> f) {
        try (NativeCall c = new NativeCall()) {
            c.check(f.apply(c), op);
        }
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
