/*
 * djl-moe: expert-parallel Mixture-of-Experts for the Deep Java Library.
 */
package dev.djlmoe.ep;

import ai.djl.ndarray.NDArray;
import ai.djl.ndarray.NDManager;
import ai.djl.ndarray.index.NDIndex;
import ai.djl.ndarray.types.Shape;
import dev.djlmoe.dist.MultiRank;
import dev.djlmoe.dist.ProcessGroups;
import java.util.ArrayList;
import java.util.Arrays;
import java.util.List;
import java.util.Locale;

/**
 * One rank of the multi-process low-latency test ({@code LowLatencyMultiProcessTest}, started
 * through {@link MultiRank}). Every rank generates, from the same seeds, the inputs of <em>all</em>
 * ranks, so it knows with plain loops what each of its local experts must receive (the all-gathered
 * selections) and what combine must return; then it runs the steps through the cpu-shm low-latency
 * buffer and compares.
 *
 * <p>Rows carry an index channel: the first 128 channels (one FP8 scaling block) hold the source
 * rank, the token index in two base-8 digits and the step number mod 8, all integers in [0, 7],
 * with a 7 in channel 127 so the block's amax is 7 and the FP8 scale {@code 7 / 448 = 2^-6} is
 * exact; these channels survive bf16 and fp8 (with or without power-of-two scales) bit-exactly. The
 * other 128 channels are Gaussian data (bf16: equal to Java's round-to-nearest-even; fp8: within
 * the codec's stated bound). A row from an earlier step, or from another source, fails the check.
 *
 * <p>Per step: dispatch send; between send and receive, DJL math and a normal-mode {@link EpBuffer}
 * dispatch + combine on the same ranks; the receive; checks of counts (= all-gathered selections),
 * layout ranges, source info, every row's source and data; experts answer {@code y = (g + 1) x} for
 * global expert g; combine (bf16 wire) against {@code x · Σ_k w_k (g_k + 1)} over the unmasked
 * slots computed in float64 (DeepEP's calc_diff below 1e-5 after a bf16 dispatch, below 9e-4 after
 * an fp8 one; per element within 2^-7 of the sum of magnitudes after bf16), tokens routed nowhere
 * exactly zero, messages sent = selected slots (-1 never sent). The received arrays are filled with
 * NaN after their check, before the next step's receive, so memory the allocator hands back holds
 * poison rather than plausible rows. Then: two dispatches pending at once with a third refused, the
 * two combines pending at once; a tensor larger than max_tokens_per_rank refused by every rank with
 * the argument, value and limit named, after which the buffer still works.
 *
 * <p>Prints {@code ok <step>} per step and {@code ll-oracle: OK}; exits 1 on a mismatch, 2 on an
 * unexpected exception.
 */
public final class LowLatencyOracleRank {

    static final int H = 256;
    static final int TM = 24;
    static final int K = 4;
    static final int EXPERTS_PER_RANK = 3;
    private static final int INDEX_BLOCK = 128;

    /** One step's settings. */
    record Step(
            String name,
            long seed,
            WireFormat wire,
            boolean roundScale,
            double emptyRate,
            int hotExpert,
            int zeroRank) {}

    /** One source rank's inputs. */
    static final class RankData {
        int tokens;
        RoutingData routing;
        float[] x; // [T, H]
    }

    private final int me;
    private final int world;
    private final int numExperts;
    private final NDManager manager;
    private final LowLatencyBuffer ll;
    private final EpBuffer normal;
    private int checks;

    private LowLatencyOracleRank(
            int me, int world, NDManager manager, LowLatencyBuffer ll, EpBuffer normal) {
        this.me = me;
        this.world = world;
        this.numExperts = EXPERTS_PER_RANK * world;
        this.manager = manager;
        this.ll = ll;
        this.normal = normal;
    }

    /** Uneven token counts: rank zeroRank sends none, one rank sends exactly TM. */
    static int tokensOf(Step st, int rank, int world) {
        if (rank == st.zeroRank()) {
            return 0;
        }
        if (rank == (st.zeroRank() + 1) % world) {
            return TM;
        }
        return 1 + (int) ((st.seed() * 7 + rank * 11) % (TM - 1));
    }

    RankData data(Step st, int rank) {
        RankData d = new RankData();
        d.tokens = tokensOf(st, rank, world);
        d.routing =
                new RoutingData(
                        st.seed() * 131 + rank,
                        d.tokens,
                        K,
                        numExperts,
                        st.emptyRate(),
                        st.hotExpert());
        float[] noise = RoutingData.randomRows(st.seed() * 977 + rank, d.tokens, H, 1f);
        d.x = new float[d.tokens * H];
        for (int t = 0; t < d.tokens; t++) {
            int o = t * H;
            d.x[o] = rank;
            d.x[o + 1] = (t >> 3) & 7;
            d.x[o + 2] = t & 7;
            d.x[o + 3] = stepTag(st);
            d.x[o + INDEX_BLOCK - 1] = 7;
            System.arraycopy(noise, o + INDEX_BLOCK, d.x, o + INDEX_BLOCK, H - INDEX_BLOCK);
        }
        return d;
    }

    private static int stepTag(Step st) {
        return (int) (st.seed() & 7);
    }

    private static void fail(String what) {
        throw new EpOracleRank.Mismatch(what);
    }

    private void expect(boolean ok, String what) {
        checks++;
        if (!ok) {
            fail(what);
        }
    }

    /** A (source rank, token) pair that a local expert must receive, in arrival order. */
    record Src(int rank, int token) {}

    /** The all-gathered selections of global expert g, ordered by source rank, then token. */
    static List<Src> expected(RankData[] all, int g) {
        List<Src> out = new ArrayList<>();
        for (int r = 0; r < all.length; r++) {
            RoutingData rd = all[r].routing;
            for (int t = 0; t < rd.tokens; t++) {
                for (int k = 0; k < K; k++) {
                    if (rd.idx[t * K + k] == g) {
                        out.add(new Src(r, t));
                    }
                }
            }
        }
        return out;
    }

    private NDArray[] inputs(NDManager m, RankData d) {
        return new NDArray[] {
            m.create(d.x, new Shape(d.tokens, H)),
            m.create(d.routing.idx, new Shape(d.tokens, K)),
            m.create(d.routing.weights, new Shape(d.tokens, K))
        };
    }

    private static int selected(RankData d) {
        int n = 0;
        for (long e : d.routing.idx) {
            n += e >= 0 ? 1 : 0;
        }
        return n;
    }

    /** Checks one dispatch result on this rank against the all-gathered routing. */
    void checkDispatch(Step st, RankData[] all, LowLatencyDispatch r) {
        int el = EXPERTS_PER_RANK;
        int n = world * TM;
        expect(
                r.recvX().getShape().equals(new Shape(el, n, H)),
                st.name() + ": recv_x shape " + r.recvX().getShape());
        int[] count = r.recvCount().toIntArray();
        expect(Arrays.equals(count, r.handle().recvCount()), st.name() + ": handle counts");
        int[] src = r.handle().srcInfo();
        long[] range = r.handle().layoutRange();
        float[] rx = r.recvX().toFloatArray();
        for (int e = 0; e < el; e++) {
            int g = me * el + e;
            List<Src> want = expected(all, g);
            expect(
                    count[e] == want.size(),
                    String.format(
                            Locale.ROOT,
                            "%s: local expert %d (global %d) received %d rows, the all-gathered"
                                    + " selections are %d",
                            st.name(),
                            e,
                            g,
                            count[e],
                            want.size()));
            int begin = 0;
            for (int s = 0; s < world; s++) {
                int c = 0;
                for (Src x : want) {
                    c += x.rank() == s ? 1 : 0;
                }
                long lr = range[e * world + s];
                expect(
                        (lr >>> 32) == begin && (lr & 0xFFFFFFFFL) == c,
                        String.format(
                                Locale.ROOT,
                                "%s: layout range of expert %d from rank %d = (%d, %d), expected"
                                        + " (%d, %d)",
                                st.name(),
                                g,
                                s,
                                lr >>> 32,
                                lr & 0xFFFFFFFFL,
                                begin,
                                c));
                begin += c;
            }
            for (int i = 0; i < want.size(); i++) {
                Src w = want.get(i);
                int row = e * n + i;
                expect(
                        src[row] == w.token(),
                        String.format(
                                Locale.ROOT,
                                "%s: src_info of expert %d row %d = %d, expected token %d of rank"
                                        + " %d",
                                st.name(),
                                g,
                                i,
                                src[row],
                                w.token(),
                                w.rank()));
                int o = row * H;
                int gotRank = (int) rx[o];
                int gotToken = (int) rx[o + 1] * 8 + (int) rx[o + 2];
                boolean exact =
                        rx[o] == w.rank()
                                && rx[o + 1] == ((w.token() >> 3) & 7)
                                && rx[o + 2] == (w.token() & 7)
                                && rx[o + 3] == stepTag(st)
                                && rx[o + INDEX_BLOCK - 1] == 7;
                expect(
                        exact,
                        String.format(
                                Locale.ROOT,
                                "%s: expert %d row %d carries (rank %s, token %s, step tag %s),"
                                    + " expected (rank %d, token %d, step tag %d) exactly on %s",
                                st.name(),
                                g,
                                i,
                                rx[o],
                                gotToken,
                                rx[o + 3],
                                w.rank(),
                                w.token(),
                                stepTag(st),
                                st.wire()));
                float[] sent =
                        Arrays.copyOfRange(all[w.rank()].x, w.token() * H, (w.token() + 1) * H);
                float[] got = Arrays.copyOfRange(rx, o, o + H);
                if (st.wire() == WireFormat.BF16) {
                    for (int c = INDEX_BLOCK; c < H; c++) {
                        if (got[c] != EpOracleRank.bf16(sent[c])) {
                            fail(
                                    String.format(
                                            Locale.ROOT,
                                            "%s: expert %d row %d channel %d = %s, bf16(x) = %s",
                                            st.name(),
                                            g,
                                            i,
                                            c,
                                            got[c],
                                            EpOracleRank.bf16(sent[c])));
                        }
                    }
                } else {
                    String miss = EpOracleRank.withinWireTolerance(WireFormat.FP8, sent, got, 1, H);
                    expect(miss == null, st.name() + ": expert " + g + " row " + i + ": " + miss);
                }
                checks++;
                if (gotRank != w.rank()) {
                    fail(st.name() + ": rank channel " + gotRank);
                }
            }
            if (want.size() < n) {
                expect(
                        src[e * n + want.size()] == -1,
                        st.name() + ": src_info past the count of expert " + g + " is not -1");
            }
        }
    }

    /** Checks combine's output against x · Σ_k w_k (g_k + 1) in float64. */
    void checkCombine(Step st, RankData d, float[] out) {
        expect(out.length == d.tokens * H, st.name() + ": combine output size " + out.length);
        double num = 0;
        double den = 0;
        for (int t = 0; t < d.tokens; t++) {
            double factor = 0;
            double mag = 0;
            boolean any = false;
            for (int k = 0; k < K; k++) {
                long g = d.routing.idx[t * K + k];
                if (g >= 0) {
                    factor += (double) d.routing.weights[t * K + k] * (g + 1);
                    mag += Math.abs((double) d.routing.weights[t * K + k] * (g + 1));
                    any = true;
                }
            }
            for (int c = 0; c < H; c++) {
                double want = factor * d.x[t * H + c];
                double got = out[t * H + c];
                if (!any && got != 0.0) {
                    fail(
                            String.format(
                                    Locale.ROOT,
                                    "%s: token %d is routed nowhere but combine"
                                            + " gave %s in channel %d",
                                    st.name(),
                                    t,
                                    got,
                                    c));
                }
                if (st.wire() == WireFormat.BF16
                        && Math.abs(got - want)
                                > Math.scalb(mag * Math.abs(d.x[t * H + c]), -7) + 1e-30) {
                    fail(
                            String.format(
                                    Locale.ROOT,
                                    "%s: token %d channel %d combined %s, x * sum w (g + 1) = %s"
                                            + " (bound 2^-7 of the magnitudes)",
                                    st.name(),
                                    t,
                                    c,
                                    got,
                                    want));
                }
                double a = got + 1.0;
                double b = want + 1.0;
                num += a * b;
                den += a * a + b * b;
            }
            checks++;
        }
        double diff = den == 0 ? 0 : 1.0 - 2.0 * num / den;
        double tol = st.wire() == WireFormat.BF16 ? 1e-5 : 9e-4;
        expect(
                diff < tol,
                String.format(
                        Locale.ROOT,
                        "%s: calc_diff %.3g >= %.0g on %s dispatch",
                        st.name(),
                        diff,
                        tol,
                        st.wire()));
    }

    /** Expert answers: y[e] = (g + 1) recv_x[e] for local expert e with global id g. */
    private NDArray experts(NDManager m, NDArray recvX) {
        float[] f = new float[EXPERTS_PER_RANK];
        for (int e = 0; e < f.length; e++) {
            f[e] = me * EXPERTS_PER_RANK + e + 1;
        }
        return recvX.mul(m.create(f, new Shape(EXPERTS_PER_RANK, 1, 1)));
    }

    /** Fills with NaN what the checks have read, so a recycled allocation holds poison. */
    private static void poison(NDArray... arrays) {
        for (NDArray a : arrays) {
            if (a.size() > 0) {
                a.set(new NDIndex("..."), Float.NaN);
            }
        }
    }

    /** Normal-mode dispatch + combine with identity experts: out = x · (ranks holding t). */
    private void normalModeRound(NDManager m, Step st, RankData d, NDArray[] in) {
        DispatchResult nd = normal.dispatch(in[0], in[1], in[2], numExperts, 1, WireFormat.FP32);
        try (EpHandle h = nd.handle()) {
            float[] out = normal.combine(nd.recvX(), null, h, WireFormat.FP32).out().toFloatArray();
            for (int t = 0; t < d.tokens; t++) {
                boolean[] ranks = new boolean[world];
                int holders = 0;
                for (int k = 0; k < K; k++) {
                    long g = d.routing.idx[t * K + k];
                    if (g >= 0 && !ranks[(int) (g / EXPERTS_PER_RANK)]) {
                        ranks[(int) (g / EXPERTS_PER_RANK)] = true;
                        holders++;
                    }
                }
                for (int c = 0; c < H; c++) {
                    double want = (double) holders * d.x[t * H + c];
                    expect(
                            Math.abs(out[t * H + c] - want) <= 1e-6 * Math.abs(want),
                            st.name()
                                    + ": normal-mode combine between LL send and receive, token "
                                    + t
                                    + " channel "
                                    + c);
                }
            }
        }
    }

    void runStep(Step st) {
        RankData[] all = new RankData[world];
        for (int r = 0; r < world; r++) {
            all[r] = data(st, r);
        }
        RankData mine = all[me];
        try (NDManager m = manager.newSubManager()) {
            NDArray[] in = inputs(m, mine);
            LowLatencyHook<LowLatencyDispatch> hook =
                    ll.dispatchSend(in[0], in[1], st.wire(), st.roundScale());
            expect(
                    hook.rowsSent() == selected(mine),
                    st.name()
                            + ": dispatch sent "
                            + hook.rowsSent()
                            + " messages, "
                            + selected(mine)
                            + " slots are selected");
            // Other work between send and receive: DJL math and a normal-mode round.
            NDArray work = in[0].matMul(in[0].transpose()).sum();
            expect(Float.isFinite(work.getFloat()), st.name() + ": work between send and receive");
            normalModeRound(m, st, mine, in);
            LowLatencyDispatch r = hook.await();
            hook.close();
            try (LowLatencyHandle h = r.handle()) {
                checkDispatch(st, all, r);
                NDArray y = experts(m, r.recvX());
                LowLatencyHook<NDArray> ch = ll.combineSend(y, in[1], in[2], h, WireFormat.BF16);
                expect(
                        ch.rowsSent() == Arrays.stream(r.recvCount().toIntArray()).sum(),
                        st.name() + ": combine sent " + ch.rowsSent() + " rows");
                NDArray out = ch.await();
                ch.close();
                checkCombine(st, mine, out.toFloatArray());
                poison(r.recvX(), out, y);
            }
        }
        System.out.printf(Locale.ROOT, "ok %s%n", st.name());
    }

    /** Two dispatches pending at once (third refused), then two combines pending at once. */
    void doubleBuffer(Step a, Step b) {
        RankData[] allA = new RankData[world];
        RankData[] allB = new RankData[world];
        for (int r = 0; r < world; r++) {
            allA[r] = data(a, r);
            allB[r] = data(b, r);
        }
        try (NDManager m = manager.newSubManager()) {
            NDArray[] ia = inputs(m, allA[me]);
            NDArray[] ib = inputs(m, allB[me]);
            LowLatencyHook<LowLatencyDispatch> ha = ll.dispatchSend(ia[0], ia[1], a.wire(), false);
            LowLatencyHook<LowLatencyDispatch> hb = ll.dispatchSend(ib[0], ib[1], b.wire(), false);
            try {
                ll.dispatchSend(ia[0], ia[1], a.wire(), false);
                fail("a third pending send was accepted");
            } catch (IllegalArgumentException e) {
                expect(
                        e.getMessage()
                                .contains(
                                        "low-latency call "
                                                + ha.callIndex()
                                                + " (a dispatch) still awaits its receive"),
                        "third send: " + e.getMessage());
            }
            LowLatencyDispatch rb = hb.await();
            LowLatencyDispatch ra = ha.await();
            ha.close();
            hb.close();
            try (LowLatencyHandle h1 = ra.handle();
                    LowLatencyHandle h2 = rb.handle()) {
                checkDispatch(a, allA, ra);
                checkDispatch(b, allB, rb);
                LowLatencyHook<NDArray> ca =
                        ll.combineSend(experts(m, ra.recvX()), ia[1], ia[2], h1, WireFormat.BF16);
                LowLatencyHook<NDArray> cb =
                        ll.combineSend(experts(m, rb.recvX()), ib[1], ib[2], h2, WireFormat.BF16);
                checkCombine(b, allB[me], cb.await().toFloatArray());
                checkCombine(a, allA[me], ca.await().toFloatArray());
                ca.close();
                cb.close();
            }
        }
        System.out.printf(Locale.ROOT, "ok double-buffer%n");
    }

    /**
     * Every rank passes TM + 1 tokens: refused before anything is sent; the buffer stays usable.
     */
    void oversize() {
        try (NDManager m = manager.newSubManager()) {
            NDArray x = m.zeros(new Shape(TM + 1, H));
            NDArray idx = m.zeros(new Shape(TM + 1, K), ai.djl.ndarray.types.DataType.INT64);
            try {
                ll.dispatchSend(x, idx, WireFormat.BF16, false);
                fail("a tensor of " + (TM + 1) + " tokens was accepted");
            } catch (IllegalArgumentException e) {
                String want =
                        "argument 'x' has "
                                + (TM + 1)
                                + " rows (tokens), more than max_tokens_per_rank = "
                                + TM;
                expect(e.getMessage().contains(want), "oversize message: " + e.getMessage());
            }
        }
        System.out.printf(Locale.ROOT, "ok oversize-refused%n");
    }

    static List<Step> steps(int w) {
        int e = EXPERTS_PER_RANK * w;
        List<Step> s = new ArrayList<>();
        for (int round = 0; round < 2; round++) { // the second round reuses both buffers again
            long b = 10L * round;
            s.add(new Step("bf16-uneven-r" + round, 1 + b, WireFormat.BF16, false, 0.2, 0, w - 1));
            s.add(new Step("fp8-hot-last-r" + round, 2 + b, WireFormat.FP8, false, 0.15, e - 1, 0));
            s.add(new Step("fp8-pow2-r" + round, 3 + b, WireFormat.FP8, true, 0.3, -1, w / 2));
            s.add(new Step("bf16-masked-r" + round, 4 + b, WireFormat.BF16, false, 0.6, 1, 1 % w));
        }
        return s;
    }

    /**
     * Entry point of a rank.
     *
     * @param args unused
     */
    public static void main(String[] args) {
        EpOracleRank.runRank(
                (group, manager) -> {
                    try (EpBuffer normal = EpBuffer.create(group);
                            LowLatencyBuffer ll =
                                    LowLatencyBuffer.create(
                                            group,
                                            TM,
                                            H,
                                            EXPERTS_PER_RANK * group.worldSize(),
                                            K,
                                            WireFormat.BF16,
                                            ProcessGroups.timeoutMillis())) {
                        LowLatencyOracleRank rank =
                                new LowLatencyOracleRank(
                                        group.rank(), group.worldSize(), manager, ll, normal);
                        long t0 = System.nanoTime();
                        List<Step> steps = steps(group.worldSize());
                        for (Step st : steps) {
                            rank.runStep(st);
                        }
                        rank.doubleBuffer(
                                new Step(
                                        "pending-a",
                                        5,
                                        WireFormat.BF16,
                                        false,
                                        0.1,
                                        2,
                                        group.worldSize() - 1),
                                new Step("pending-b", 6, WireFormat.FP8, false, 0.1, -1, 0));
                        rank.oversize();
                        rank.runStep(
                                new Step("after-refusal", 7, WireFormat.BF16, false, 0.25, 0, -1));
                        group.barrier();
                        System.out.printf(
                                Locale.ROOT,
                                "ll-oracle: OK, %d checks in %.1f s%n",
                                rank.checks,
                                (System.nanoTime() - t0) / 1e9);
                    }
                });
    }
}
