/*
 * djl-moe: expert-parallel Mixture-of-Experts for the Deep Java Library.
 */
package dev.djlmoe.ep;

import ai.djl.ndarray.NDArray;
import ai.djl.ndarray.NDManager;
import ai.djl.ndarray.types.Shape;
import dev.djlmoe.core.NativeCall;
import dev.djlmoe.dist.MultiRank;
import dev.djlmoe.dist.ProcessGroup;
import dev.djlmoe.dist.ProcessGroups;
import dev.djlmoe.dist.RankEnvironment;
import dev.djlmoe.nativeep.NativeEp;
import java.util.ArrayList;
import java.util.Arrays;
import java.util.List;
import java.util.Locale;
import java.util.Random;
import java.util.function.IntFunction;
import java.util.function.IntPredicate;
import java.util.function.IntUnaryOperator;
import java.util.zip.CRC32;
import org.bytedeco.javacpp.BytePointer;
import org.bytedeco.javacpp.FloatPointer;

/**
 * One rank of the multi-process dispatch/combine test (started by {@code EpMultiRankTest} through
 * {@link MultiRank}). Every rank generates, from the same seeds, the inputs of <em>all</em> ranks
 * and computes what a plain all-to-all must deliver (the oracle below, written with loops over
 * arrays and nothing from the code under test), then runs layout, dispatch, cached dispatch and
 * combine through the cpu-shm transport and compares:
 *
 * <ul>
 *   <li>layout: tokens per rank (deduplicated), tokens per expert, token-in-rank;
 *   <li>handle: received count, the full rank prefix matrix, the source index of every row, raw and
 *       aligned per-expert counts;
 *   <li>received rows: constant-per-source channel and two token-index channels (exact in bf16)
 *       plus random data, bitwise equal to the source row after the wire's round trip (fp32:
 *       identity; bf16: round-to-nearest-even computed here in Java; fp8/mxfp8: the codec's own
 *       round trip of that row, so the transport must add nothing) and, for fp8/mxfp8, within the
 *       stated tolerance of the raw row;
 *   <li>local top-k ids, zeroed non-local weights, cached dispatch bitwise equal to a fresh one;
 *   <li>combine: each rank returns {@code y = recv_x * (rank + 1)}; the output must be, bitwise,
 *       the fp32 sum in rank order of the round-tripped rows of the ranks that got the token (zeros
 *       for a token sent nowhere), and the weights must round-trip exactly.
 * </ul>
 *
 * <p>Then the pressure check: 20 repeats of dispatch + combine must hash identically. A mutation
 * check makes sure the comparisons can fail. Exits 0 after printing {@code oracle: OK}, 1 on a
 * mismatch (with the details), 2 on an unexpected exception.
 */
public final class EpOracleRank {

    /** fp8: |decoded - x| <= |x| / 16 + scale / 512 with scale = block amax / 448 (1x128). */
    static final double FP8_REL = 1.0 / 16;

    /**
     * mxfp8: |decoded - x| <= |x| / 7 + X / 512 with X = 2^(floor(log2 amax) - 8) per 32 channels;
     * 1/7 rather than 1/16 because the OCP floor rule saturates values in (448 X, 512 X) to 448 X.
     */
    static final double MXFP8_REL = 1.0 / 7;

    private static final WireFormat[] WIRES = WireFormat.values();

    enum Routing {
        RANDOM,
        ONE_EXPERT,
        ALL_EMPTY
    }

    record Scenario(
            String name,
            long seed,
            int hidden,
            int topk,
            int expertsPerRank,
            double emptyRate,
            Routing routing,
            int alignment,
            IntUnaryOperator tokensOfRank,
            boolean bf16Exact) {}

    /** One source rank's inputs. */
    static final class RankData {
        int tokens;
        long[] idx; // [T, K]
        float[] w; // [T, K]
        float[] x; // [T, H]
        float[] x2; // [T, H], for cached dispatch
    }

    private final int me;
    private final int world;
    private final NDManager manager;
    private final EpBuffer buffer;
    private int checks;

    private EpOracleRank(int me, int world, NDManager manager, EpBuffer buffer) {
        this.me = me;
        this.world = world;
        this.manager = manager;
        this.buffer = buffer;
    }

    static List<Scenario> scenarios(int w) {
        List<Scenario> s = new ArrayList<>();
        // Uneven tokens per rank, -1 slots, random data.
        s.add(
                new Scenario(
                        "random", 11, 256, 4, 4, 0.15, Routing.RANDOM, 1, r -> 40 + 37 * r, false));
        // The last rank has no tokens; hidden not a multiple of any scaling block.
        s.add(
                new Scenario(
                        "zero-tokens",
                        12,
                        200,
                        3,
                        2,
                        0.2,
                        Routing.RANDOM,
                        4,
                        r -> r == w - 1 ? 0 : 25 + 9 * r,
                        true));
        // Every token's only expert lives on rank 1 (or 0 when W = 1): one receiver gets all.
        s.add(
                new Scenario(
                        "one-expert",
                        13,
                        128,
                        4,
                        2,
                        0.0,
                        Routing.ONE_EXPERT,
                        32,
                        r -> 30 + r,
                        true));
        // No slot is used: nothing moves, combine returns zeros.
        s.add(
                new Scenario(
                        "all-empty", 14, 64, 2, 2, 1.0, Routing.ALL_EMPTY, 1, r -> 7 + r, false));
        // Rows larger than a ring slot (fp32: 266 KB > 256 KiB): travel in pieces.
        s.add(
                new Scenario(
                        "big-rows", 15, 66560, 2, 2, 0.1, Routing.RANDOM, 32, r -> 3 + r, false));
        // Many small rows: the rings wrap many times; MXFP8-style 32-alignment.
        s.add(
                new Scenario(
                        "many-tokens",
                        16,
                        128,
                        6,
                        8,
                        0.05,
                        Routing.RANDOM,
                        32,
                        r -> 1500 - 100 * r,
                        true));
        return s;
    }

    /** Inputs of rank s, the same on every rank that generates them. */
    static RankData generate(Scenario sc, int s, int w) {
        RankData d = new RankData();
        int t = sc.tokensOfRank().applyAsInt(s);
        int k = sc.topk();
        int e = sc.expertsPerRank() * w;
        int h = sc.hidden();
        Random r = new Random(sc.seed() * 1_000_003L + s);
        d.tokens = t;
        d.idx = new long[t * k];
        d.w = new float[t * k];
        int target = (w > 1 ? 1 : 0) * sc.expertsPerRank() + 1; // a rank-1 expert
        for (int i = 0; i < t; i++) {
            boolean[] used = new boolean[e];
            for (int j = 0; j < k; j++) {
                long id;
                switch (sc.routing()) {
                    case ONE_EXPERT:
                        id = j == 0 ? Math.min(target, e - 1) : -1;
                        break;
                    case ALL_EMPTY:
                        id = -1;
                        break;
                    default:
                        if (r.nextDouble() < sc.emptyRate()) {
                            id = -1;
                        } else {
                            int c;
                            do {
                                c = r.nextInt(e);
                            } while (used[c]);
                            used[c] = true;
                            id = c;
                        }
                }
                d.idx[i * k + j] = id;
                d.w[i * k + j] = 0.125f + r.nextFloat();
            }
        }
        d.x = rows(r, s, t, h, sc.bf16Exact(), true);
        d.x2 = rows(r, s, t, h, sc.bf16Exact(), false);
        return d;
    }

    /** Channel 0 = s - 128 (per source), 1 and 2 = token index / 256 and % 256, then random. */
    private static float[] rows(Random r, int s, int t, int h, boolean bf16Exact, boolean tagged) {
        float[] x = new float[t * h];
        for (int i = 0; i < t; i++) {
            for (int c = 0; c < h; c++) {
                float v;
                if (tagged && c == 0) {
                    v = s - 128;
                } else if (tagged && c == 1) {
                    v = i / 256;
                } else if (tagged && c == 2) {
                    v = i % 256;
                } else if (bf16Exact) {
                    v = (r.nextInt(255) - 127) * (float) Math.pow(2, r.nextInt(9) - 6);
                } else {
                    v = (float) (r.nextGaussian() * (c % 7 == 0 ? 8 : 1));
                }
                x[i * h + c] = v;
            }
        }
        return x;
    }

    // ---- the oracle's pieces -------------------------------------------------------------

    /** bfloat16 round to nearest even (the reference rounding; no NaN in these data). */
    static float bf16(float f) {
        int b = Float.floatToRawIntBits(f);
        b += 0x7FFF + ((b >>> 16) & 1);
        return Float.intBitsToFloat(b & 0xFFFF0000);
    }

    /** What rows look like after travelling in a wire format. */
    static float[] roundTrip(WireFormat wire, float[] x, int rows, int h) {
        switch (wire) {
            case FP32:
                return x.clone();
            case BF16:
                {
                    float[] y = new float[x.length];
                    for (int i = 0; i < x.length; i++) {
                        y[i] = bf16(x[i]);
                    }
                    return y;
                }
            default:
                return nativeRoundTrip(wire, x, rows, h);
        }
    }

    private static float[] nativeRoundTrip(WireFormat wire, float[] x, int rows, int h) {
        if (rows == 0) {
            return new float[0];
        }
        long rb = NativeEp.nep_wire_row_bytes(wire.code(), h);
        try (FloatPointer in = new FloatPointer(x);
                BytePointer enc = new BytePointer(rb * rows);
                FloatPointer out = new FloatPointer((long) rows * h);
                NativeCall call = new NativeCall()) {
            call.check(
                    NativeEp.nep_encode_rows(
                            wire.code(),
                            in.address(),
                            rows,
                            h,
                            enc.address(),
                            call.err(),
                            call.cap()),
                    "encode");
            call.check(
                    NativeEp.nep_decode_rows(
                            wire.code(),
                            enc.address(),
                            rows,
                            h,
                            out.address(),
                            call.err(),
                            call.cap()),
                    "decode");
            float[] y = new float[rows * h];
            out.get(y);
            return y;
        }
    }

    /** Null when decoded is within the stated fp8/mxfp8 tolerance of x, else the first miss. */
    static String withinWireTolerance(
            WireFormat wire, float[] x, float[] decoded, int rows, int h) {
        int block = wire.blockSize();
        for (int i = 0; i < rows; i++) {
            for (int b0 = 0; b0 < h; b0 += block) {
                int n = Math.min(block, h - b0);
                double amax = 0;
                for (int c = 0; c < n; c++) {
                    amax = Math.max(amax, Math.abs(x[i * h + b0 + c]));
                }
                double scale;
                double rel;
                if (wire == WireFormat.FP8) {
                    scale = Math.max(amax, 448 * Math.pow(2, -126)) / 448;
                    rel = FP8_REL;
                } else {
                    int e = amax == 0 ? -127 : Math.getExponent(amax);
                    scale = Math.pow(2, Math.max(-127, Math.min(127, e - 8)));
                    rel = MXFP8_REL;
                }
                for (int c = 0; c < n; c++) {
                    int j = i * h + b0 + c;
                    double err = Math.abs((double) decoded[j] - x[j]);
                    double tol = rel * Math.abs(x[j]) + scale / 512 + 1e-30;
                    if (!(err <= tol)) {
                        return String.format(
                                Locale.ROOT,
                                "row %d channel %d: %s decoded %g from %g, error %g > tolerance %g",
                                i,
                                b0 + c,
                                wire,
                                decoded[j],
                                x[j],
                                err,
                                tol);
                    }
                }
            }
        }
        return null;
    }

    /** The oracle's view of what this rank receives and returns. */
    final class Expected {
        final Scenario sc;
        final RankData[] all;
        final int k;
        final int el;
        final int e;
        final int h;
        int[][] counts; // [src][dst] tokens (deduplicated)
        int[] recvSrcRank;
        int[] recvSrcIdx;
        int[] perExpertRaw;

        Expected(Scenario sc) {
            this.sc = sc;
            k = sc.topk();
            el = sc.expertsPerRank();
            e = el * world;
            h = sc.hidden();
            all = new RankData[world];
            for (int s = 0; s < world; s++) {
                all[s] = generate(sc, s, world);
            }
            counts = new int[world][world];
            List<int[]> recv = new ArrayList<>();
            perExpertRaw = new int[el];
            for (int s = 0; s < world; s++) {
                RankData d = all[s];
                for (int t = 0; t < d.tokens; t++) {
                    boolean[] to = destinations(d, t);
                    for (int r = 0; r < world; r++) {
                        if (to[r]) {
                            counts[s][r]++;
                        }
                    }
                    if (to[me]) {
                        recv.add(new int[] {s, t});
                        for (int j = 0; j < k; j++) {
                            long id = d.idx[t * k + j];
                            if (id >= (long) me * el && id < (long) (me + 1) * el) {
                                perExpertRaw[(int) (id - (long) me * el)]++;
                            }
                        }
                    }
                }
            }
            recvSrcRank = recv.stream().mapToInt(a -> a[0]).toArray();
            recvSrcIdx = recv.stream().mapToInt(a -> a[1]).toArray();
        }

        boolean[] destinations(RankData d, int t) {
            boolean[] to = new boolean[world];
            for (int j = 0; j < k; j++) {
                long id = d.idx[t * k + j];
                if (id >= 0) {
                    to[(int) (id / el)] = true;
                }
            }
            return to;
        }

        int numRecv() {
            return recvSrcIdx.length;
        }

        /** Rows this rank must receive, from the given per-source tensors after the wire. */
        float[] recvRows(WireFormat wire, boolean second) {
            float[][] rt = new float[world][];
            for (int s = 0; s < world; s++) {
                float[] src = second ? all[s].x2 : all[s].x;
                rt[s] = roundTrip(wire, src, all[s].tokens, h);
            }
            float[] out = new float[numRecv() * h];
            for (int i = 0; i < numRecv(); i++) {
                System.arraycopy(rt[recvSrcRank[i]], recvSrcIdx[i] * h, out, i * h, h);
            }
            return out;
        }

        /** Raw (not round-tripped) rows, for the tolerance check. */
        float[] recvRowsRaw() {
            float[] out = new float[numRecv() * h];
            for (int i = 0; i < numRecv(); i++) {
                System.arraycopy(all[recvSrcRank[i]].x, recvSrcIdx[i] * h, out, i * h, h);
            }
            return out;
        }

        long[] recvIdx() {
            long[] out = new long[numRecv() * k];
            for (int i = 0; i < numRecv(); i++) {
                RankData d = all[recvSrcRank[i]];
                for (int j = 0; j < k; j++) {
                    long id = d.idx[recvSrcIdx[i] * k + j];
                    boolean local = id >= (long) me * el && id < (long) (me + 1) * el;
                    out[i * k + j] = local ? id - (long) me * el : -1;
                }
            }
            return out;
        }

        /** The weights of the received rows' slots, 0 where the slot's expert is not local. */
        float[] recvWeights() {
            long[] localIds = recvIdx();
            float[] out = new float[localIds.length];
            for (int i = 0; i < out.length; i++) {
                int row = i / k;
                float w = all[recvSrcRank[row]].w[recvSrcIdx[row] * k + i % k];
                out[i] = localIds[i] >= 0 ? w : 0f;
            }
            return out;
        }

        /**
         * Combine at this rank when every rank r returns rt(x) * (r + 1) for each token it got: the
         * sum, in rank order, of those rows after another wire round trip.
         */
        float[] combined(WireFormat wire) {
            RankData d = all[me];
            float[] rtx = roundTrip(wire, d.x, d.tokens, h);
            float[] out = new float[d.tokens * h];
            for (int t = 0; t < d.tokens; t++) {
                boolean[] to = destinations(d, t);
                boolean first = true;
                for (int r = 0; r < world; r++) {
                    if (!to[r]) {
                        continue;
                    }
                    float[] y = new float[h];
                    for (int c = 0; c < h; c++) {
                        y[c] = rtx[t * h + c] * (float) (r + 1);
                    }
                    float[] v = roundTrip(wire, y, 1, h);
                    for (int c = 0; c < h; c++) {
                        out[t * h + c] = first ? v[c] : out[t * h + c] + v[c];
                    }
                    first = false;
                }
            }
            return out;
        }

        float[] combinedWeights() {
            RankData d = all[me];
            float[] out = new float[d.tokens * k];
            for (int i = 0; i < out.length; i++) {
                out[i] = d.idx[i] >= 0 ? d.w[i] : 0f;
            }
            return out;
        }
    }

    // ---- comparisons (return null when equal, else the first difference) -----------------

    static String bitwise(String what, float[] expected, float[] actual, int cols) {
        return firstDifference(
                what,
                expected.length,
                actual.length,
                cols,
                i -> Float.floatToRawIntBits(expected[i]) != Float.floatToRawIntBits(actual[i]),
                i -> actual[i] + ", expected " + expected[i]);
    }

    static String exact(String what, long[] expected, long[] actual, int cols) {
        return firstDifference(
                what,
                expected.length,
                actual.length,
                cols,
                i -> expected[i] != actual[i],
                i -> actual[i] + ", expected " + expected[i]);
    }

    /**
     * Describes the first element where two row-major arrays differ.
     *
     * @param what the arrays' name
     * @param expectedLength the expected number of elements
     * @param actualLength the actual number
     * @param cols the columns of a row
     * @param differs whether element i differs
     * @param values element i's actual and expected value, for the message
     * @return the description, or null when the arrays are the same
     */
    private static String firstDifference(
            String what,
            int expectedLength,
            int actualLength,
            int cols,
            IntPredicate differs,
            IntFunction<String> values) {
        if (expectedLength != actualLength) {
            return what + ": " + actualLength + " values, expected " + expectedLength;
        }
        for (int i = 0; i < expectedLength; i++) {
            if (differs.test(i)) {
                return String.format(
                        Locale.ROOT,
                        "%s: row %d column %d is %s",
                        what,
                        i / cols,
                        i % cols,
                        values.apply(i));
            }
        }
        return null;
    }

    static String exact(String what, int[] expected, int[] actual) {
        return Arrays.equals(expected, actual)
                ? null
                : what + ": " + Arrays.toString(actual) + ", expected " + Arrays.toString(expected);
    }

    private void check(String context, String failure) {
        checks++;
        if (failure != null) {
            throw new Mismatch(context + ": " + failure);
        }
    }

    static final class Mismatch extends RuntimeException {
        private static final long serialVersionUID = 1L;

        Mismatch(String m) {
            super(m);
        }
    }

    // ---- the run -----------------------------------------------------------------------------

    private void runScenario(Scenario sc, WireFormat wire) {
        Expected ex = new Expected(sc);
        RankData d = ex.all[me];
        int k = ex.k;
        int h = ex.h;
        String ctx =
                String.format(Locale.ROOT, "rank %d, scenario %s, wire %s", me, sc.name(), wire);
        try (NDManager m = manager.newSubManager()) {
            NDArray x = m.create(d.x, new Shape(d.tokens, h));
            NDArray x2 = m.create(d.x2, new Shape(d.tokens, h));
            NDArray idx = m.create(d.idx, new Shape(d.tokens, k));
            NDArray w = m.create(d.w, new Shape(d.tokens, k));

            // Layout of this rank's tokens.
            EpLayout l = buffer.layout(idx, ex.e);
            int[] perRank = new int[world];
            int[] perExpert = new int[ex.e];
            long[] inRank = new long[d.tokens * world];
            for (int t = 0; t < d.tokens; t++) {
                boolean[] to = ex.destinations(d, t);
                for (int r = 0; r < world; r++) {
                    perRank[r] += to[r] ? 1 : 0;
                    inRank[t * world + r] = to[r] ? 1 : 0;
                }
                for (int j = 0; j < k; j++) {
                    if (d.idx[t * k + j] >= 0) {
                        perExpert[(int) d.idx[t * k + j]]++;
                    }
                }
            }
            check(ctx, exact("layout tokens_per_rank", perRank, l.tokensPerRank().toIntArray()));
            check(
                    ctx,
                    exact("layout tokens_per_expert", perExpert, l.tokensPerExpert().toIntArray()));
            boolean[] ir = l.isTokenInRank().toBooleanArray();
            long[] irl = new long[ir.length];
            for (int i = 0; i < ir.length; i++) {
                irl[i] = ir[i] ? 1 : 0;
            }
            check(ctx, exact("layout is_token_in_rank", inRank, irl, world));

            DispatchResult r = buffer.dispatch(x, idx, w, ex.e, sc.alignment(), wire);
            try (EpHandle handle = r.handle()) {
                int n = ex.numRecv();
                check(
                        ctx,
                        handle.numRecv() == n
                                ? null
                                : "received " + handle.numRecv() + " rows, expected " + n);
                check(
                        ctx,
                        handle.numTokens() == d.tokens
                                ? null
                                : "handle routes "
                                        + handle.numTokens()
                                        + " tokens, expected "
                                        + d.tokens);
                int[][] prefix = handle.rankPrefixMatrix();
                for (int i = 0; i < world; i++) {
                    for (int j = 0; j < world; j++) {
                        int sum = 0;
                        for (int s = 0; s <= i; s++) {
                            sum += ex.counts[s][j];
                        }
                        check(
                                ctx,
                                prefix[i][j] == sum
                                        ? null
                                        : "rank_prefix_matrix["
                                                + i
                                                + "]["
                                                + j
                                                + "] = "
                                                + prefix[i][j]
                                                + ", expected "
                                                + sum);
                    }
                }
                check(ctx, exact("recv_src_idx", ex.recvSrcIdx, handle.recvSrcIdx()));
                boolean[][] hin = handle.isTokenInRank();
                for (int t = 0; t < d.tokens; t++) {
                    for (int q = 0; q < world; q++) {
                        check(
                                ctx,
                                hin[t][q] == (inRank[t * world + q] == 1)
                                        ? null
                                        : "handle is_token_in_rank["
                                                + t
                                                + "]["
                                                + q
                                                + "] = "
                                                + hin[t][q]);
                    }
                }
                check(
                        ctx,
                        exact(
                                "recv_tokens_per_expert (raw)",
                                ex.perExpertRaw,
                                handle.recvTokensPerExpert(false)));
                int[] aligned = new int[ex.el];
                int a = sc.alignment();
                for (int i = 0; i < ex.el; i++) {
                    aligned[i] = (ex.perExpertRaw[i] + a - 1) / a * a;
                }
                check(
                        ctx,
                        exact(
                                "recv_tokens_per_expert (aligned to " + a + ")",
                                aligned,
                                r.recvTokensPerExpert()));

                // Rows: provenance and order (tag channels) and every value after the wire.
                float[] rx = r.recvX().toFloatArray();
                float[] expRows = ex.recvRows(wire, false);
                if (wire == WireFormat.FP32 || wire == WireFormat.BF16) {
                    checkTags(ctx, rx, ex);
                }
                check(ctx, bitwise("recv_x", expRows, rx, h));
                if (wire == WireFormat.FP8 || wire == WireFormat.MXFP8) {
                    check(ctx, withinWireTolerance(wire, ex.recvRowsRaw(), rx, n, h));
                }
                if (sc.bf16Exact() && wire == WireFormat.BF16) {
                    check(
                            ctx,
                            bitwise("recv_x (bf16-exact data, lossless)", ex.recvRowsRaw(), rx, h));
                }
                check(
                        ctx,
                        exact(
                                "recv_topk_idx (local ids)",
                                ex.recvIdx(),
                                r.recvTopkIdx().toLongArray(),
                                k));
                check(
                        ctx,
                        bitwise(
                                "recv_topk_weights",
                                ex.recvWeights(),
                                r.recvTopkWeights().toFloatArray(),
                                k));

                // Mutation check: the comparisons above must notice a one-ulp change and a swap.
                if (n >= 2 && wire == WireFormat.FP32) {
                    float[] bad = rx.clone();
                    bad[h + h / 2] = Math.nextUp(bad[h + h / 2]);
                    check(
                            ctx,
                            bitwise("mutation", expRows, bad, h) != null
                                    ? null
                                    : "the bitwise comparison missed a one-ulp change");
                    float[] swapped = rx.clone();
                    System.arraycopy(rx, 0, swapped, h, h);
                    System.arraycopy(rx, h, swapped, 0, h);
                    boolean same =
                            Arrays.equals(Arrays.copyOf(rx, h), Arrays.copyOfRange(rx, h, 2 * h));
                    check(
                            ctx,
                            same || bitwise("mutation", expRows, swapped, h) != null
                                    ? null
                                    : "the comparison missed two swapped rows");
                }

                // Cached dispatch of another tensor equals a fresh dispatch of it.
                NDArray cached = buffer.dispatch(x2, handle, wire);
                DispatchResult fresh = buffer.dispatch(x2, idx, w, ex.e, sc.alignment(), wire);
                try (EpHandle h2 = fresh.handle()) {
                    float[] c = cached.toFloatArray();
                    check(
                            ctx,
                            bitwise(
                                    "cached dispatch vs fresh dispatch",
                                    fresh.recvX().toFloatArray(),
                                    c,
                                    h));
                    check(ctx, bitwise("cached dispatch vs oracle", ex.recvRows(wire, true), c, h));
                    check(
                            ctx,
                            exact("fresh dispatch recv_src_idx", ex.recvSrcIdx, h2.recvSrcIdx()));
                }

                // Combine: rows come back scaled by (rank + 1); weights round-trip.
                NDArray y = r.recvX().mul((float) (me + 1));
                CombineResult cr = buffer.combine(y, r.recvTopkWeights(), handle, wire);
                check(ctx, bitwise("combine out", ex.combined(wire), cr.out().toFloatArray(), h));
                check(
                        ctx,
                        bitwise(
                                "combine weights",
                                ex.combinedWeights(),
                                cr.outWeights().toFloatArray(),
                                k));
            }
        }
    }

    /** Channel 0 names the source rank, channels 1-2 the token: exact in fp32 and bf16. */
    private void checkTags(String ctx, float[] rx, Expected ex) {
        int h = ex.h;
        for (int i = 0; i < ex.numRecv(); i++) {
            int src = (int) rx[i * h] + 128;
            int tok = (int) rx[i * h + 1] * 256 + (int) rx[i * h + 2];
            check(
                    ctx,
                    src == ex.recvSrcRank[i] && tok == ex.recvSrcIdx[i]
                            ? null
                            : "row "
                                    + i
                                    + " carries (rank "
                                    + src
                                    + ", token "
                                    + tok
                                    + "), expected (rank "
                                    + ex.recvSrcRank[i]
                                    + ", token "
                                    + ex.recvSrcIdx[i]
                                    + ")");
        }
        // Order: by source rank, then source token.
        for (int i = 1; i < ex.numRecv(); i++) {
            int s0 = (int) rx[(i - 1) * h] + 128;
            int s1 = (int) rx[i * h] + 128;
            int t0 = (int) rx[(i - 1) * h + 1] * 256 + (int) rx[(i - 1) * h + 2];
            int t1 = (int) rx[i * h + 1] * 256 + (int) rx[i * h + 2];
            check(
                    ctx,
                    s0 < s1 || (s0 == s1 && t0 < t1)
                            ? null
                            : "rows " + (i - 1) + " and " + i + " are out of (rank, token) order");
        }
    }

    /** 20 repeats of dispatch + combine must give the same hash of every output. */
    private void pressure(WireFormat wire) {
        Scenario sc =
                new Scenario(
                        "pressure",
                        17,
                        512,
                        6,
                        8,
                        0.1,
                        Routing.RANDOM,
                        1,
                        r -> 384 + 17 * r,
                        false);
        RankData d = generate(sc, me, world);
        int e = sc.expertsPerRank() * world;
        long first = 0;
        for (int rep = 0; rep < 20; rep++) {
            try (NDManager m = manager.newSubManager()) {
                NDArray x = m.create(d.x, new Shape(d.tokens, sc.hidden()));
                NDArray idx = m.create(d.idx, new Shape(d.tokens, sc.topk()));
                NDArray w = m.create(d.w, new Shape(d.tokens, sc.topk()));
                DispatchResult r = buffer.dispatch(x, idx, w, e, 1, wire);
                try (EpHandle handle = r.handle()) {
                    NDArray y = r.recvX().mul((float) (me + 1));
                    CombineResult c = buffer.combine(y, r.recvTopkWeights(), handle, wire);
                    CRC32 crc = new CRC32();
                    crc.update(r.recvX().toByteArray());
                    crc.update(r.recvTopkIdx().toByteArray());
                    crc.update(r.recvTopkWeights().toByteArray());
                    crc.update(c.out().toByteArray());
                    crc.update(c.outWeights().toByteArray());
                    for (int v : handle.recvSrcIdx()) {
                        crc.update(v);
                    }
                    long hash = crc.getValue();
                    if (rep == 0) {
                        first = hash;
                    }
                    check(
                            "rank " + me + ", pressure " + wire + ", repeat " + rep,
                            hash == first
                                    ? null
                                    : String.format(
                                            Locale.ROOT,
                                            "hash %08x differs from %08x",
                                            hash,
                                            first));
                }
            }
        }
        System.out.printf(Locale.ROOT, "pressure %s: 20 repeats, hash %08x%n", wire, first);
    }

    /**
     * The process group's byte all-gather (the CUDA buffer's bootstrap exchange): every rank's
     * bytes, in rank order, for a few lengths including 0.
     */
    private static void checkAllGather(ProcessGroup group) {
        int w = group.worldSize();
        for (int len : new int[] {0, 1, 37, 4096}) {
            byte[] mine = new byte[len];
            for (int i = 0; i < len; i++) {
                mine[i] = (byte) (group.rank() * 31 + i);
            }
            byte[] all = group.allGather(mine);
            if (all.length != w * len) {
                throw new Mismatch("all-gather of " + len + " bytes returned " + all.length);
            }
            for (int r = 0; r < w; r++) {
                for (int i = 0; i < len; i++) {
                    if (all[r * len + i] != (byte) (r * 31 + i)) {
                        throw new Mismatch(
                                "all-gather of "
                                        + len
                                        + " bytes: rank "
                                        + r
                                        + " byte "
                                        + i
                                        + " = "
                                        + all[r * len + i]);
                    }
                }
            }
        }
        System.out.println("all-gather: OK");
    }

    /**
     * Entry point of a rank.
     *
     * @param args unused
     */
    public static void main(String[] args) {
        runRank(
                (group, manager) -> {
                    try (EpBuffer buffer = EpBuffer.create(group)) {
                        EpOracleRank rank =
                                new EpOracleRank(group.rank(), group.worldSize(), manager, buffer);
                        long t0 = System.nanoTime();
                        for (Scenario sc : scenarios(group.worldSize())) {
                            for (WireFormat wire : WIRES) {
                                rank.runScenario(sc, wire);
                            }
                            System.out.printf(Locale.ROOT, "ok %s (all wire formats)%n", sc.name());
                        }
                        rank.pressure(WireFormat.BF16);
                        rank.pressure(WireFormat.FP8);
                        checkAllGather(group);
                        group.barrier();
                        System.out.printf(
                                Locale.ROOT,
                                "oracle: OK, %d checks in %.1f s%n",
                                rank.checks,
                                (System.nanoTime() - t0) / 1e9);
                    }
                });
    }

    /** The work of one oracle rank program, given its group and manager. */
    @FunctionalInterface
    interface RankBody {
        void run(ProcessGroup group, NDManager manager) throws Exception;
    }

    /**
     * Runs a rank program: joins the group of the launching test, runs the body, and exits with 0,
     * with 1 after printing {@code MISMATCH} and the message of a {@link Mismatch}, or with 2 after
     * printing the stack trace of any other failure.
     *
     * @param body the rank's work
     */
    static void runRank(RankBody body) {
        MultiRank.watchParent();
        int code;
        RankEnvironment env = RankEnvironment.fromSystem();
        try (ProcessGroup group = ProcessGroups.create(env);
                NDManager manager = NDManager.newBaseManager()) {
            body.run(group, manager);
            code = 0;
        } catch (Mismatch e) {
            System.out.println("MISMATCH " + e.getMessage());
            code = 1;
        } catch (Throwable e) {
            e.printStackTrace(System.out);
            code = 2;
        }
        System.out.flush();
        System.exit(code);
    }
}
