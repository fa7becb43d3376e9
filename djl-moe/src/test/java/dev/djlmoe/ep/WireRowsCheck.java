/*
 * djl-moe: expert-parallel Mixture-of-Experts for the Deep Java Library.
 */
package dev.djlmoe.ep;

import ai.djl.ndarray.NDArray;
import ai.djl.ndarray.NDManager;
import ai.djl.ndarray.types.DataType;
import ai.djl.ndarray.types.Shape;
import dev.djlmoe.core.NativeCall;
import dev.djlmoe.dist.ProcessGroup;
import dev.djlmoe.nativeep.NativeEp;
import java.util.Arrays;
import java.util.Locale;
import org.bytedeco.javacpp.BytePointer;
import org.bytedeco.javacpp.FloatPointer;

/**
 * The wire-row dispatch of one rank against the codec and against the float dispatch: every rank
 * builds the inputs of all ranks from the same seeds (uneven tokens, the last rank empty when W >
 * 1, -1 slots, a hot expert), dispatches them as float rows and as wire rows, and checks that each
 * received wire row is byte for byte the codec's encoding ({@code nep_encode_rows}) of its source
 * row, that decoding the wire rows gives the float dispatch bit for bit, that the top-k, weights
 * and counts agree, and that a cached wire dispatch does the same for other data. Used in-process
 * for W = 1 ({@link WireRowsTest}) and as the rank program for W = 2 ({@link #main}).
 */
final class WireRowsCheck {

    private WireRowsCheck() {}

    /** Hidden sizes: whole scaling blocks, and partial last blocks on both wires. */
    static final int[] HIDDEN = {256, 200};

    /**
     * Runs every case on this rank.
     *
     * @param group the ranks
     * @param manager arrays
     * @param buffer the EP buffer
     * @return the number of rows checked
     */
    static long run(ProcessGroup group, NDManager manager, EpBuffer buffer) {
        int w = group.worldSize();
        int me = group.rank();
        int experts = 4 * w;
        long checked = 0;
        for (WireFormat wire : new WireFormat[] {WireFormat.FP8, WireFormat.MXFP8}) {
            for (int hidden : HIDDEN) {
                RoutingData[] routing = new RoutingData[w];
                float[][] xs = new float[w][];
                float[][] xs2 = new float[w][];
                for (int r = 0; r < w; r++) {
                    int tokens = w > 1 && r == w - 1 ? 0 : 40 + 37 * r;
                    routing[r] = new RoutingData(100 + r, tokens, 4, experts, 0.2, 1);
                    xs[r] = RoutingData.randomRows(200 + r, tokens, hidden, 3f);
                    xs2[r] = RoutingData.randomRows(300 + r, tokens, hidden, 0.01f);
                }
                checked += runCase(manager, buffer, me, wire, hidden, routing, xs, xs2);
                System.out.printf(Locale.ROOT, "ok %s hidden %d%n", wire, hidden);
            }
        }
        return checked;
    }

    private static long runCase(
            NDManager manager,
            EpBuffer buffer,
            int me,
            WireFormat wire,
            int hidden,
            RoutingData[] routing,
            float[][] xs,
            float[][] xs2) {
        RoutingData mine = routing[me];
        int experts = mine.experts;
        try (NDManager m = manager.newSubManager()) {
            NDArray x = m.create(xs[me], new Shape(mine.tokens, hidden));
            NDArray x2 = m.create(xs2[me], new Shape(mine.tokens, hidden));
            NDArray idx = m.create(mine.idx, new Shape(mine.tokens, mine.topk));
            NDArray wt = m.create(mine.weights, new Shape(mine.tokens, mine.topk));
            DispatchResult f = buffer.dispatch(x, idx, wt, experts, 4, wire);
            WireDispatch d = buffer.dispatchWire(x, idx, wt, experts, 4, wire);
            try (EpHandle fh = f.handle();
                    EpHandle dh = d.handle()) {
                String what = wire + " hidden " + hidden;
                require(
                        Arrays.equals(f.recvTopkIdx().toLongArray(), d.recvTopkIdx().toLongArray()),
                        what + ": recv_topk_idx differs");
                require(
                        Arrays.equals(
                                bits(f.recvTopkWeights().toFloatArray()),
                                bits(d.recvTopkWeights().toFloatArray())),
                        what + ": recv_topk_weights differ");
                require(
                        Arrays.equals(f.recvTokensPerExpert(), d.recvTokensPerExpert()),
                        what + ": recv_tokens_per_expert differ");
                WireRows rows = d.recv();
                require(rows.isPacked(), what + ": CPU rows are not packed");
                require(rows.wire() == wire && rows.hidden() == hidden, what + ": layout");
                long rowBytes = NativeEp.nep_wire_row_bytes(wire.code(), hidden);
                require(rows.rowBytes() == rowBytes, what + ": rowBytes " + rows.rowBytes());
                require(
                        rows.rows().getDataType() == DataType.UINT8
                                && rows.rows().getShape().equals(new Shape(dh.numRecv(), rowBytes)),
                        what + ": rows " + rows.rows().getShape());
                checkRows(what, rows, dh, me, routing, xs, wire, hidden);
                try (NDArray decoded = rows.decode()) {
                    require(
                            Arrays.equals(
                                    bits(decoded.toFloatArray()), bits(f.recvX().toFloatArray())),
                            what + ": decoded wire rows differ from the float dispatch");
                }
                // Cached: another tensor along the same routing.
                WireRows cached = buffer.dispatchWire(x2, dh, wire);
                checkRows(what + " (cached)", cached, dh, me, routing, xs2, wire, hidden);
                NDArray cachedFloat = buffer.dispatch(x2, fh, wire);
                try (NDArray decoded = cached.decode()) {
                    require(
                            Arrays.equals(
                                    bits(decoded.toFloatArray()), bits(cachedFloat.toFloatArray())),
                            what + ": cached decoded wire rows differ from the float dispatch");
                }
                return dh.numRecv();
            }
        }
    }

    /** Each received row must be the codec's encoding of its source row. */
    private static void checkRows(
            String what,
            WireRows rows,
            EpHandle h,
            int me,
            RoutingData[] routing,
            float[][] xs,
            WireFormat wire,
            int hidden) {
        int w = routing.length;
        int[][] prefix = h.rankPrefixMatrix();
        int[] src = h.recvSrcIdx();
        byte[] got = rows.rows().toByteArray();
        int rb = (int) rows.rowBytes();
        byte[][] encoded = new byte[w][];
        for (int s = 0; s < w; s++) {
            encoded[s] = encode(wire, xs[s], routing[s].tokens, hidden);
        }
        int row = 0;
        for (int s = 0; s < w; s++) {
            int end = prefix[s][me];
            for (; row < end; row++) {
                int t = src[row];
                byte[] expect = Arrays.copyOfRange(encoded[s], t * rb, (t + 1) * rb);
                byte[] have = Arrays.copyOfRange(got, row * rb, (row + 1) * rb);
                require(
                        Arrays.equals(expect, have),
                        what
                                + ": row "
                                + row
                                + " (rank "
                                + s
                                + " token "
                                + t
                                + ") is not the codec's encoding of its source row");
            }
        }
        require(row == got.length / Math.max(rb, 1), what + ": " + row + " rows checked");
    }

    static byte[] encode(WireFormat wire, float[] x, int rows, int hidden) {
        long rb = NativeEp.nep_wire_row_bytes(wire.code(), hidden);
        if (rows == 0) {
            return new byte[0];
        }
        try (FloatPointer in = new FloatPointer(x);
                BytePointer enc = new BytePointer(rb * rows);
                NativeCall call = new NativeCall()) {
            call.check(
                    NativeEp.nep_encode_rows(
                            wire.code(),
                            in.address(),
                            rows,
                            hidden,
                            enc.address(),
                            call.err(),
                            call.cap()),
                    "encode");
            byte[] out = new byte[(int) (rb * rows)];
            enc.get(out);
            return out;
        }
    }

    static int[] bits(float[] v) {
        int[] b = new int[v.length];
        for (int i = 0; i < v.length; i++) {
            b[i] = Float.floatToRawIntBits(v[i]);
        }
        return b;
    }

    private static void require(boolean ok, String message) {
        if (!ok) {
            throw new EpOracleRank.Mismatch(message);
        }
    }

    /**
     * Entry point of a rank of the multi-process test.
     *
     * @param args unused
     */
    public static void main(String[] args) {
        EpOracleRank.runRank(
                (group, manager) -> {
                    try (EpBuffer buffer = EpBuffer.create(group)) {
                        long rows = run(group, manager, buffer);
                        group.barrier();
                        System.out.printf(Locale.ROOT, "wire rows: OK, %d rows%n", rows);
                    }
                });
    }
}
