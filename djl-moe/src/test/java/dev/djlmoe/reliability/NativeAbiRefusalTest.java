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
        return t;
    }
}
