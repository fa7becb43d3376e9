/*
 * djl-moe: expert-parallel Mixture-of-Experts for the Deep Java Library.
 */
package dev.djlmoe.reliability;

import ai.djl.ndarray.NDArray;
import ai.djl.ndarray.types.DataType;
import ai.djl.ndarray.types.Shape;
import dev.djlmoe.ep.LowLatencyBuffer;
import dev.djlmoe.ep.LowLatencyDispatch;
import dev.djlmoe.ep.WireFormat;
import java.util.ArrayList;
import java.util.List;
import java.util.Map;
import java.util.stream.Stream;
import org.junit.jupiter.api.DynamicNode;
import org.junit.jupiter.api.TestFactory;

/**
 * Hostile input to {@link LowLatencyBuffer} (the fixture's: max_tokens_per_rank 4, hidden 64, E 8,
 * max_topk 4, bf16): {@code create}'s sizes and timeout, {@code dispatchSend}'s tokens, hidden
 * size, K, expert ids, wire and {@code round_scale}, {@code combine}'s shapes and a handle of
 * another buffer, and a buffer used after close. Each case names the argument, the offending value
 * and the limit it broke.
 */
class LowLatencyRefusalTest extends BadInputFixture {

    @TestFactory
    Stream<DynamicNode> lowLatencyBufferRefusesBadInputByNameValueAndLimit() {
        return catalogue(refusals(), Map.of());
    }

    /** The refusal cases: each call must throw with the argument, value and limit. */
    private static List<Refusal> refusals() {
        List<Refusal> t = new ArrayList<>();
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
        return t;
    }
}
