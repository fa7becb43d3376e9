/*
 * djl-moe: expert-parallel Mixture-of-Experts for the Deep Java Library.
 */
package dev.djlmoe.reliability;

import static org.junit.jupiter.api.Assertions.assertArrayEquals;
import static org.junit.jupiter.api.Assertions.assertEquals;

import ai.djl.ndarray.NDArray;
import ai.djl.ndarray.NDManager;
import ai.djl.ndarray.types.DataType;
import ai.djl.ndarray.types.Shape;
import dev.djlmoe.ep.CombineResult;
import dev.djlmoe.ep.DispatchResult;
import dev.djlmoe.ep.EpHandle;
import dev.djlmoe.ep.LowLatencyDispatch;
import dev.djlmoe.ep.WireFormat;
import java.util.LinkedHashMap;
import java.util.List;
import java.util.Map;
import java.util.Random;
import java.util.stream.Stream;
import org.junit.jupiter.api.DynamicNode;
import org.junit.jupiter.api.TestFactory;
import org.junit.jupiter.api.function.Executable;

/**
 * The other side of the bad-input suite: edge inputs that look hostile but are legal must be
 * accepted and give the right numbers. A non-contiguous {@code x} or {@code topk_idx} is made
 * contiguous, not mis-read; a hidden size of 100 with FP8 (not a multiple of the 128-wide block)
 * and of 1 with MXFP8 and BF16 round-trip; zero tokens and an all {@code -1} routing receive
 * nothing; exactly max_tokens_per_rank tokens pass in low-latency mode.
 */
class AcceptedEdgeInputTest extends BadInputFixture {

    @TestFactory
    Stream<DynamicNode> edgeInputsAreAcceptedWithTheRightNumbers() {
        return catalogue(List.of(), acceptances());
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
}
