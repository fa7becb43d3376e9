/*
 * djl-moe: expert-parallel Mixture-of-Experts for the Deep Java Library.
 */
package dev.djlmoe.nn;

import ai.djl.Device;
import ai.djl.engine.Engine;
import ai.djl.ndarray.NDArray;
import ai.djl.ndarray.NDManager;
import ai.djl.ndarray.types.DataType;
import ai.djl.ndarray.types.Shape;
import dev.djlmoe.core.NativeCall;
import dev.djlmoe.core.NativeMemory;
import dev.djlmoe.dist.LocalProcessGroup;
import dev.djlmoe.ep.DispatchResult;
import dev.djlmoe.ep.EpBuffer;
import dev.djlmoe.ep.WireDispatch;
import dev.djlmoe.ep.WireFormat;
import dev.djlmoe.ep.WireRows;
import dev.djlmoe.gemm.Fp8ExpertGemms;
import dev.djlmoe.gemm.QuantizedWeights;
import dev.djlmoe.nativeep.NativeEp;
import dev.djlmoe.nativeep.NativeGemm;
import java.util.Locale;
import java.util.Random;
import org.junit.jupiter.api.Tag;
import org.junit.jupiter.api.Test;

/**
 * The feed-through of dispatched wire rows into the expert GEMMs ({@link WireFeed}) on the CPU: the
 * bytes a MoE layer keeps for the backward, and the forward's time with and without it.
 *
 * <p>Prints, asserts nothing. Not matched by the default Surefire patterns; run it by name:
 *
 * <pre>
 * cd djl-moe &amp;&amp; mvn -o test -Dtest=WireFeedBenchmark
 * </pre>
 *
 * System properties (defaults): {@code bench.tokens} 1024, {@code bench.topk} 6, {@code
 * bench.experts} 8, {@code bench.hidden} 2048, {@code bench.inter} 32, {@code bench.iters} 5.
 *
 * <ol>
 *   <li>Saved bytes per MoE layer at the DeepSeek-V3 16B shape (M = 24,576 rows sorted by expert, H
 *       = 2048; R = 4096 received rows at W = 1), from {@link
 *       Fp8ExpertGemms.Forward#savedInputBytes} of a float forward's and a wire forward's inputs
 *       and from the dispatch's float leaf, which the feed-through replaces by a one-element
 *       stand-in.
 *   <li>The forward of one rank (W = 1): dispatch, sort by expert and the expert FFN on the native
 *       CPU GEMMs (the oracle), float rows against wire rows, alternating in every iteration; and
 *       the part that differs alone (dispatch + sort + the gate/up GEMM's input quantisation).
 * </ol>
 */
@Tag("benchmark")
class WireFeedBenchmark {

    private static int prop(String name, int def) {
        return Integer.getInteger(name, def);
    }

    @Test
    void benchmark() {
        try (NDManager manager = NDManager.newBaseManager(Device.cpu())) {
            savedBytes(manager);
            for (ExpertPrecision p :
                    new ExpertPrecision[] {ExpertPrecision.FP8, ExpertPrecision.MXFP8}) {
                forward(manager, p);
            }
        }
    }

    /** Bytes kept for the backward of the input rows at the 16B shape. */
    private static void savedBytes(NDManager manager) {
        long m = 24_576;
        long r = 4096;
        long h = 2048;
        for (WireFormat wire : new WireFormat[] {WireFormat.FP8, WireFormat.MXFP8}) {
            try (NDManager sub = manager.newSubManager()) {
                NDArray x = sub.zeros(new Shape(m, h), DataType.FLOAT32);
                NDArray none = sub.zeros(new Shape(1), DataType.FLOAT32);
                Fp8ExpertGemms.Forward floats =
                        new Fp8ExpertGemms.Forward(none, x, none, none, new long[] {0, m}, null);
                long rowBytes = NativeEp.nep_wire_row_bytes(wire.code(), h);
                NDArray rows = sub.zeros(new Shape(m, rowBytes), DataType.UINT8);
                Fp8ExpertGemms.Forward wired =
                        new Fp8ExpertGemms.Forward(
                                none,
                                null,
                                none,
                                none,
                                new long[] {0, m},
                                null,
                                WireRows.packed(rows, wire, h));
                long leaf = r * h * 4;
                long before = floats.savedInputBytes() + leaf;
                long after = wired.savedInputBytes() + 4;
                System.out.printf(
                        Locale.ROOT,
                        "saved input bytes per MoE layer, %s wire, M=%d R=%d H=%d: before %d"
                                + " (sorted float rows %d + dispatch float leaf %d) = %.1f MiB,"
                                + " after %d (sorted wire rows %d x %d B + 4 B stand-in) = %.1f"
                                + " MiB, %.2fx less%n",
                        wire,
                        m,
                        r,
                        h,
                        before,
                        floats.savedInputBytes(),
                        leaf,
                        before / 1048576.0,
                        after,
                        m,
                        rowBytes,
                        after / 1048576.0,
                        (double) before / after);
            }
        }
    }

    private static void forward(NDManager manager, ExpertPrecision p) {
        int t = prop("bench.tokens", 1024);
        int k = prop("bench.topk", 6);
        int el = prop("bench.experts", 8);
        int h = prop("bench.hidden", 2048);
        int inter = prop("bench.inter", 32);
        int iters = prop("bench.iters", 5);
        WireFormat wire = p == ExpertPrecision.FP8 ? WireFormat.FP8 : WireFormat.MXFP8;
        Random rnd = new Random(7);
        long[] idx = new long[t * k];
        for (int i = 0; i < t; i++) {
            boolean[] used = new boolean[el];
            for (int j = 0; j < k; j++) {
                int e;
                do {
                    e = rnd.nextInt(el);
                } while (used[e] && k <= el);
                used[e] = true;
                idx[i * k + j] = e;
            }
        }
        try (LocalProcessGroup group = new LocalProcessGroup();
                EpBuffer buffer = EpBuffer.create(group);
                NDManager m = manager.newSubManager()) {
            Engine.getInstance().setRandomSeed(3);
            NDArray x = m.randomNormal(new Shape(t, h));
            NDArray topk = m.create(idx, new Shape(t, k));
            NDArray w = m.randomUniform(0.1f, 1f, new Shape(t, k));
            NDArray gate = m.randomNormal(0f, 0.02f, new Shape(el, inter, h), DataType.FLOAT32);
            NDArray up = m.randomNormal(0f, 0.02f, new Shape(el, inter, h), DataType.FLOAT32);
            NDArray down = m.randomNormal(0f, 0.02f, new Shape(el, h, inter), DataType.FLOAT32);
            long[] floatNs = new long[2];
            long[] wireNs = new long[2];
            for (int it = 0; it <= iters; it++) {
                long[] f = floatForward(m, buffer, x, topk, w, el, wire, gate, up, down, p);
                long[] g = wireForward(m, buffer, x, topk, w, el, wire, gate, up, down, p);
                if (it > 0) { // the first is warm-up
                    for (int i = 0; i < 2; i++) {
                        floatNs[i] += f[i];
                        wireNs[i] += g[i];
                    }
                }
            }
            System.out.printf(
                    Locale.ROOT,
                    "%s forward, CPU, T=%d K=%d El=%d H=%d I=%d, mean of %d: float rows %.2f ms"
                            + " (dispatch + sort + quantise %.2f ms), wire rows %.2f ms"
                            + " (dispatch + sort %.2f ms), saved %.2f ms (%.1f%%)%n",
                    p,
                    t,
                    k,
                    el,
                    h,
                    inter,
                    iters,
                    floatNs[0] / 1e6 / iters,
                    floatNs[1] / 1e6 / iters,
                    wireNs[0] / 1e6 / iters,
                    wireNs[1] / 1e6 / iters,
                    (floatNs[0] - wireNs[0]) / 1e6 / iters,
                    100.0 * (floatNs[0] - wireNs[0]) / floatNs[0]);
        }
    }

    /** {total, input part} nanoseconds of the float path. */
    private static long[] floatForward(
            NDManager manager,
            EpBuffer buffer,
            NDArray x,
            NDArray topk,
            NDArray w,
            int el,
            WireFormat wire,
            NDArray gate,
            NDArray up,
            NDArray down,
            ExpertPrecision p) {
        try (NDManager m = manager.newSubManager()) {
            long t0 = System.nanoTime();
            DispatchResult d = buffer.dispatch(x, topk, w, el, 1, wire);
            RoutedExperts.Plan plan =
                    RoutedExperts.Plan.of(
                            d.recvTopkIdx().toLongArray(),
                            (int) d.recvX().getShape().get(0),
                            (int) topk.getShape().get(1),
                            el);
            NDArray rowIdx = m.create(plan.sortedRows);
            NDArray sorted = d.recvX().get(rowIdx);
            long t1 = System.nanoTime();
            QuantizedWeights qw =
                    QuantizedWeights.quantize(
                            m, NativeExpertFfn.format(p), gate.concat(up, 1), down, false);
            long t2 = System.nanoTime();
            Fp8ExpertGemms.Forward f = Fp8ExpertGemms.forward(sorted, plan.offsets, qw);
            long t3 = System.nanoTime();
            // the input part: the GEMM path quantises the float rows again
            long quant = timeQuantise(m, sorted, p);
            f.y().close();
            d.handle().close();
            return new long[] {(t1 - t0) + (t3 - t2), (t1 - t0) + quant};
        }
    }

    /** {total, input part} nanoseconds of the wire path. */
    private static long[] wireForward(
            NDManager manager,
            EpBuffer buffer,
            NDArray x,
            NDArray topk,
            NDArray w,
            int el,
            WireFormat wire,
            NDArray gate,
            NDArray up,
            NDArray down,
            ExpertPrecision p) {
        try (NDManager m = manager.newSubManager()) {
            long t0 = System.nanoTime();
            WireDispatch d = buffer.dispatchWire(x, topk, w, el, 1, wire);
            RoutedExperts.Plan plan =
                    RoutedExperts.Plan.of(
                            d.recvTopkIdx().toLongArray(),
                            (int) d.recv().numRows(),
                            (int) topk.getShape().get(1),
                            el);
            NDArray rowIdx = m.create(plan.sortedRows);
            WireRows sorted = d.recv().withRows(d.recv().rows().get(rowIdx));
            long t1 = System.nanoTime();
            QuantizedWeights qw =
                    QuantizedWeights.quantize(
                            m, NativeExpertFfn.format(p), gate.concat(up, 1), down, false);
            long t2 = System.nanoTime();
            Fp8ExpertGemms.Forward f = Fp8ExpertGemms.forward(sorted, plan.offsets, qw);
            long t3 = System.nanoTime();
            f.y().close();
            d.handle().close();
            return new long[] {(t1 - t0) + (t3 - t2), t1 - t0};
        }
    }

    /** The float path's row quantisation of the gate/up GEMM's input, timed alone. */
    private static long timeQuantise(NDManager m, NDArray sorted, ExpertPrecision p) {
        long rows = sorted.getShape().get(0);
        long h = sorted.getShape().get(1);
        long f = NativeExpertFfn.format(p).code();
        long scaleBytes = NativeGemm.nep_gemm_row_scale_bytes((int) f, h);
        NDArray q = m.zeros(new Shape(rows, h), DataType.UINT8);
        NDArray s = m.zeros(new Shape(rows, scaleBytes), DataType.UINT8);
        long t0 = System.nanoTime();
        try (NativeCall c = new NativeCall()) {
            c.check(
                    NativeGemm.nep_gemm_quantize_rows(
                            (int) f,
                            NativeMemory.address(sorted, "x", DataType.FLOAT32),
                            rows,
                            h,
                            NativeMemory.outputAddress(q, "q", DataType.UINT8),
                            NativeMemory.outputAddress(s, "s", DataType.UINT8),
                            c.err(),
                            c.cap()),
                    "quantise");
        }
        return System.nanoTime() - t0;
    }
}
