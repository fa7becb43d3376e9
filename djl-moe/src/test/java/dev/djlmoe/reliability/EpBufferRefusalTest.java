/*
 * djl-moe: expert-parallel Mixture-of-Experts for the Deep Java Library.
 */
package dev.djlmoe.reliability;

import ai.djl.ndarray.NDArray;
import ai.djl.ndarray.types.DataType;
import ai.djl.ndarray.types.Shape;
import dev.djlmoe.dist.LocalProcessGroup;
import dev.djlmoe.ep.DispatchResult;
import dev.djlmoe.ep.EpBuffer;
import dev.djlmoe.ep.EpHandle;
import dev.djlmoe.ep.WireFormat;
import java.util.ArrayList;
import java.util.List;
import java.util.Map;
import java.util.stream.Stream;
import org.junit.jupiter.api.DynamicNode;
import org.junit.jupiter.api.TestFactory;

/**
 * Hostile input to {@link EpBuffer}: layout, notify, dispatch, cached dispatch and combine, the
 * handles they pass ({@link EpHandle}: of another buffer, used after close, null) and the buffer's
 * own life cycle. Each case names the exception type and the parts its message must contain: the
 * argument ({@code 'x'}, {@code 'topk_idx'}, {@code 'topk_weights'}, {@code 'num_experts'}, {@code
 * 'expert_alignment'}, {@code 'wire'}, {@code 'y'}, {@code 'y_weights'}, {@code 'handle'}, {@code
 * 'group'}), the offending value (dtype, shape, device, null, an index out of range, a duplicate
 * expert) and the limit it broke.
 */
class EpBufferRefusalTest extends BadInputFixture {

    @TestFactory
    Stream<DynamicNode> epBufferRefusesBadInputByNameValueAndLimit() {
        return catalogue(refusals(), Map.of());
    }

    /** The refusal cases: each call must throw with the argument, value and limit. */
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
        return t;
    }
}
