/*
 * djl-moe: expert-parallel Mixture-of-Experts for the Deep Java Library.
 */
package dev.djlmoe.reliability;

import dev.djlmoe.core.EpException;
import dev.djlmoe.nativeep.NativeEp;
import java.util.ArrayList;
import java.util.List;
import java.util.Map;
import java.util.stream.Stream;
import org.junit.jupiter.api.DynamicNode;
import org.junit.jupiter.api.TestFactory;

/**
 * Hostile input to the C ABI reached through JavaCPP ({@link NativeEp}), what other callers
 * (benchmarks, bindings) can pass without the Java checks in front: {@code nep_layout}'s sizes and
 * its limits on world size, experts and tokens, {@code nep_encode_rows} and {@code
 * nep_decode_rows}, {@code nep_dispatch} and {@code nep_combine} with a null communicator or
 * handle, {@code nep_comm_create_shm} with a rank out of range and {@code nep_all_reduce_sum_f32}
 * with null data. An argument error must come back as an {@link IllegalArgumentException}, a limit
 * as an {@link EpException}, each naming the parameter, its value and the bound.
 */
class NativeAbiRefusalTest extends BadInputFixture {

    @TestFactory
    Stream<DynamicNode> nativeAbiRefusesBadInputByNameValueAndLimit() {
        return catalogue(refusals(), Map.of());
    }

    /** The refusal cases: each call must throw with the argument, value and limit. */
    private static List<Refusal> refusals() {
        List<Refusal> t = new ArrayList<>();
        String c = "C ABI";
        Class<? extends Throwable> arg = IllegalArgumentException.class;
        Class<? extends Throwable> limit = EpException.class;
        t.add(layout("E not a multiple of W", arg, 0, 8, 3, "num_experts = 8", "world_size = 3"));
        t.add(layout("W = 0", arg, 0, 8, 0, "world_size = 0", ">= 1"));
        t.add(layout("T = -1", arg, -1, 8, 1, "num_tokens = -1", ">= 0"));
        t.add(layout("topk_idx null", arg, 3, 8, 1, "topk_idx", "null"));
        t.add(
                layout(
                        "W beyond the limit",
                        limit,
                        0,
                        1 << 20,
                        1 << 20,
                        "world_size = 1048576",
                        "limit 65536"));
        t.add(
                layout(
                        "E beyond the limit",
                        limit,
                        0,
                        Integer.MAX_VALUE,
                        1,
                        "num_experts = 2147483647",
                        "limit 1048576"));
        t.add(
                layout(
                        "T beyond int32",
                        limit,
                        1L << 31,
                        8,
                        1,
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
        t.add(decode("hidden 0", 0, 0, 0, "hidden = 0", "> 0"));
        t.add(decode("rows -1", 0, -1, 8, "rows = -1", ">= 0"));
        t.add(decode("null input", 1, 2, 8, "in", "null"));
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
        return t;
    }

    /**
     * A refusal of {@code nep_layout} (named "nep_layout " + {@code name}) with no topk_idx, top-k
     * 2, no outputs and the given tokens, experts and world size.
     */
    private static Refusal layout(
            String name,
            Class<? extends Throwable> type,
            long tokens,
            int experts,
            int world,
            String... parts) {
        return new Refusal(
                "C ABI",
                "nep_layout " + name,
                type,
                () ->
                        nativeCall(
                                "layout",
                                k ->
                                        NativeEp.nep_layout(
                                                0, tokens, 2, experts, world, 0, 0, 0, k.err(),
                                                k.cap())),
                parts);
    }

    /**
     * A refusal of {@code nep_decode_rows} (named "nep_decode_rows " + {@code name}) from and to
     * null with the given wire, rows and hidden; an {@link IllegalArgumentException}.
     */
    private static Refusal decode(String name, int wire, long rows, long hidden, String... parts) {
        return iae(
                "C ABI",
                "nep_decode_rows " + name,
                () ->
                        nativeCall(
                                "decode",
                                k ->
                                        NativeEp.nep_decode_rows(
                                                wire, 0, rows, hidden, 0, k.err(), k.cap())),
                parts);
    }
}
