/*
 * djl-moe: expert-parallel Mixture-of-Experts for the Deep Java Library.
 */
package dev.djlmoe.nativeep.cuda;

import dev.djlmoe.nativeep.NativeEp;
import java.nio.charset.StandardCharsets;
import java.util.ArrayList;
import java.util.Arrays;
import java.util.HexFormat;
import java.util.List;
import java.util.concurrent.TimeUnit;
import org.bytedeco.javacpp.BytePointer;
import org.bytedeco.javacpp.Loader;
import org.bytedeco.javacpp.LongPointer;
import org.bytedeco.javacpp.PointerPointer;

/**
 * Java on the GPU: W JVMs (one per GPU) run dispatch and combine through the Java API ({@link
 * CudaEpBuffer}, JavaCPP) on device memory that the plug-in allocates, and check every result
 * against a plain all-to-all computed in Java from the same seeds. The ranks find each other
 * through the project's rendezvous store (nep_store_*, served by the parent), which carries the
 * cuda-ipc blobs or the NCCL id.
 *
 * <pre>
 *   java -cp ... dev.djlmoe.nativeep.cuda.CudaEpJavaCheck --world 2 [--transport ipc|nccl] [--no-bench]
 * </pre>
 *
 * The parent starts the store and the ranks, forwards nothing (ranks print "[java rank r] ...") and
 * exits 0 only when every rank passed. Not a unit test: it needs a GPU (rank r uses GPU r mod the
 * device count, so W ranks may share one; the nccl transport needs one GPU per rank).
 */
public final class CudaEpJavaCheck {

    private static final int WIRE_FP32 = 0;
    private static final int WIRE_BF16 = 1;
    private static final int WIRE_FP8 = 2;
    private static final int WIRE_MXFP8 = 3;
    private static final int FP32 = NativeEpCuda.NEP_DTYPE_FP32;
    private static final int BF16 = NativeEpCuda.NEP_DTYPE_BF16;

    private CudaEpJavaCheck() {}

    public static void main(String[] args) throws Exception {
        int world = Integer.parseInt(opt(args, "--world", "2"));
        String rank = opt(args, "--rank", null);
        if (rank == null) {
            System.exit(parent(args, world));
        }
        int r = Integer.parseInt(rank);
        int rc;
        try {
            rc =
                    new Rank(
                                    r,
                                    world,
                                    Integer.parseInt(opt(args, "--port", "0")),
                                    opt(args, "--token", ""),
                                    opt(args, "--transport", "ipc"),
                                    !Arrays.asList(args).contains("--no-bench"))
                            .run(Arrays.asList(args).contains("--store-only"));
        } catch (Throwable t) {
            System.out.println("[java rank " + r + "] fatal: " + t);
            t.printStackTrace(System.out);
            rc = 2;
        }
        System.out.flush();
        System.exit(rc);
    }

    static String opt(String[] args, String name, String def) {
        for (int i = 0; i + 1 < args.length; i++) {
            if (args[i].equals(name)) {
                return args[i + 1];
            }
        }
        return def;
    }

    // ---- parent: store server and the rank JVMs ----

    private static int parent(String[] args, int world) throws Exception {
        long timeoutS = Long.parseLong(opt(args, "--timeout-s", "240"));
        Loader.load(
                NativeEpCuda
                        .class); // unpack the libraries once, before the ranks start; no CUDA call
        // here
        String token = Long.toHexString(System.nanoTime());
        BytePointer err = new BytePointer(2048);
        PointerPointer<NativeEp.nep_store_server> out = new PointerPointer<>(1);
        int st = NativeEp.nep_store_server_create("127.0.0.1", 0, token, out, err, 2048);
        if (st != 0) {
            System.out.println("store server: " + CudaCall.message(err));
            return 2;
        }
        NativeEp.nep_store_server server = new NativeEp.nep_store_server(out.get(0));
        int port = NativeEp.nep_store_server_port(server);
        String java = ProcessHandle.current().info().command().orElse("java");
        List<Process> procs = new ArrayList<>();
        for (int r = 0; r < world; r++) {
            List<String> cmd =
                    new ArrayList<>(
                            List.of(
                                    java,
                                    "-Xmx8g",
                                    "-cp",
                                    System.getProperty("java.class.path"),
                                    CudaEpJavaCheck.class.getName(),
                                    "--rank",
                                    String.valueOf(r),
                                    "--world",
                                    String.valueOf(world),
                                    "--port",
                                    String.valueOf(port),
                                    "--token",
                                    token));
            for (String a : args) {
                if (a.equals("--no-bench") || a.equals("--store-only")) {
                    cmd.add(a);
                }
            }
            String transport = opt(args, "--transport", null);
            if (transport != null) {
                cmd.add("--transport");
                cmd.add(transport);
            }
            ProcessBuilder pb = new ProcessBuilder(cmd).inheritIO();
            pb.environment().put("RANK", String.valueOf(r));
            pb.environment().put("LOCAL_RANK", String.valueOf(r));
            pb.environment().put("WORLD_SIZE", String.valueOf(world));
            procs.add(pb.start());
        }
        long deadline = System.nanoTime() + TimeUnit.SECONDS.toNanos(timeoutS);
        int failed = 0;
        for (int r = 0; r < world; r++) {
            Process p = procs.get(r);
            long left = Math.max(1, deadline - System.nanoTime());
            if (!p.waitFor(left, TimeUnit.NANOSECONDS)) {
                System.out.println(
                        "[java parent] rank "
                                + r
                                + " still running after "
                                + timeoutS
                                + " s: ending all ranks");
                procs.forEach(Process::destroyForcibly);
                failed = world;
                break;
            }
            if (p.exitValue() != 0) {
                System.out.println("[java parent] rank " + r + " exited with " + p.exitValue());
                failed++;
                // a failed rank makes its peers fail within their timeout; give them that long
                deadline = Math.min(deadline, System.nanoTime() + TimeUnit.SECONDS.toNanos(40));
            }
        }
        NativeEp.nep_store_server_destroy(server);
        System.out.println(
                "CudaEpJavaCheck world "
                        + world
                        + ": "
                        + (failed == 0 ? "PASS" : failed + " ranks failed -> FAIL"));
        return failed == 0 ? 0 : 1;
    }

    // ---- one rank ----

    /** Inputs of one rank, a pure function of (seed, rank). */
    static final class Inputs {
        final int tokens;
        final long[] topk;
        final float[] weights;
        final float[] x;

        Inputs(
                long seed,
                int rank,
                int tokens,
                int hidden,
                int topkN,
                int experts,
                boolean gaussian) {
            this.tokens = tokens;
            SplitMix rng = new SplitMix(seed * 1000003L + rank);
            topk = new long[tokens * topkN];
            weights = new float[tokens * topkN];
            int[] perm = new int[experts];
            for (int t = 0; t < tokens; t++) {
                boolean nowhere = rng.nextInt(20) == 0; // 5% of tokens go nowhere
                for (int e = 0; e < experts; e++) {
                    perm[e] = e;
                }
                for (int k = 0; k < topkN; k++) {
                    int expert = rng.drawInto(perm, k);
                    boolean masked = nowhere || rng.nextInt(10) == 0; // 10% of slots are -1
                    topk[t * topkN + k] = masked ? -1 : expert;
                    weights[t * topkN + k] = (rng.nextInt(1000) + 1) / 1024f;
                }
            }
            x = new float[tokens * hidden];
            for (int i = 0; i < x.length; i++) {
                // exact in bf16 (and times 1..4, and sums of those): integers in [-63, 63] / 8
                x[i] = gaussian ? (float) rng.nextGaussian() : (rng.nextInt(127) - 63) / 8f;
            }
        }
    }

    static final class SplitMix {
        private long s;

        SplitMix(long seed) {
            s = seed;
        }

        /**
         * One step of a Fisher-Yates shuffle: swaps a random one of {@code perm[k..]} into {@code
         * perm[k]}.
         *
         * @param perm the permutation being drawn from
         * @param k the position to fill
         * @return the value drawn
         */
        int drawInto(int[] perm, int k) {
            int j = k + nextInt(perm.length - k);
            int tmp = perm[k];
            perm[k] = perm[j];
            perm[j] = tmp;
            return perm[k];
        }

        long next() {
            long z = (s += 0x9E3779B97F4A7C15L);
            z = (z ^ (z >>> 30)) * 0xBF58476D1CE4E5B9L;
            z = (z ^ (z >>> 27)) * 0x94D049BB133111EBL;
            return z ^ (z >>> 31);
        }

        int nextInt(int n) {
            return (int) Long.remainderUnsigned(next(), n);
        }

        double nextGaussian() {
            double u1 = ((next() >>> 11) + 1) * 0x1.0p-53;
            double u2 = (next() >>> 11) * 0x1.0p-53;
            return Math.sqrt(-2 * Math.log(u1)) * Math.cos(2 * Math.PI * u2);
        }
    }

    static final class Rank {
        final int me;
        final int world;
        final int port;
        final String token;
        final String transport;
        final boolean bench;
        NativeEp.nep_store store;
        int dev; // GPU of this rank: me mod the device count
        int barriers;
        long checks;
        long failures;
        String cur = "";

        Rank(int me, int world, int port, String token, String transport, boolean bench) {
            this.me = me;
            this.world = world;
            this.port = port;
            this.token = token;
            this.transport = transport;
            this.bench = bench;
        }

        void log(String s) {
            System.out.println("[java rank " + me + "] " + s);
            System.out.flush();
        }

        void check(boolean ok, String what) {
            checks++;
            if (!ok) {
                failures++;
                log("FAIL " + cur + ": " + what);
            }
        }

        // -- store helpers --

        void storeCall(int st, BytePointer err, String what) {
            if (st != 0) {
                throw new IllegalStateException(what + ": " + CudaCall.message(err));
            }
        }

        void set(String key, String value) {
            byte[] b = value.getBytes(StandardCharsets.UTF_8);
            try (BytePointer err = new BytePointer(2048);
                    BytePointer v = new BytePointer(b)) {
                storeCall(
                        NativeEp.nep_store_set(store, key, v, b.length, err, 2048),
                        err,
                        "store set " + key);
            }
        }

        String waitFor(String key) {
            try (BytePointer err = new BytePointer(2048);
                    BytePointer v = new BytePointer(1 << 16);
                    LongPointer len = new LongPointer(1)) {
                storeCall(
                        NativeEp.nep_store_wait(store, key, 100_000, v, 1 << 16, len, err, 2048),
                        err,
                        "store wait " + key);
                byte[] b = new byte[(int) len.get()];
                v.get(b);
                return new String(b, StandardCharsets.UTF_8);
            }
        }

        void barrier() {
            int n = barriers++;
            set("bar/" + n + "/" + me, "1");
            for (int p = 0; p < world; p++) {
                waitFor("bar/" + n + "/" + p);
            }
        }

        byte[] allGather(String name, byte[] mine) {
            HexFormat hex = HexFormat.of();
            set(name + "/" + me, hex.formatHex(mine));
            byte[] all = new byte[mine.length * world];
            for (int p = 0; p < world; p++) {
                byte[] b = hex.parseHex(waitFor(name + "/" + p));
                System.arraycopy(b, 0, all, p * mine.length, mine.length);
            }
            return all;
        }

        int run(boolean storeOnly) {
            try (BytePointer err = new BytePointer(2048);
                    PointerPointer<NativeEp.nep_store> out = new PointerPointer<>(1)) {
                storeCall(
                        NativeEp.nep_store_connect(
                                "127.0.0.1", port, token, 120_000, out, err, 2048),
                        err,
                        "store connect");
                store = new NativeEp.nep_store(out.get(0));
            }
            if (storeOnly) { // the rendezvous alone (no GPU): all-gather a blob, meet at barriers
                byte[] blob = new byte[NativeEpCuda.NEP_CUDA_EXPORT_BYTES];
                Arrays.fill(blob, (byte) (me + 1));
                byte[] all = allGather("blob", blob);
                boolean ok = true;
                for (int p = 0; p < world; p++) {
                    ok &= all[p * blob.length] == p + 1 && all[(p + 1) * blob.length - 1] == p + 1;
                }
                barrier();
                barrier();
                log("store-only rendezvous " + (ok ? "PASS" : "FAIL"));
                NativeEp.nep_store_close(store);
                return ok ? 0 : 1;
            }
            int devices = CudaEpBuffer.deviceCount();
            log(
                    "JVM "
                            + System.getProperty("java.version")
                            + ", "
                            + devices
                            + " CUDA devices, plug-in ABI "
                            + NativeEpCuda.nep_cuda_abi_version());
            if (devices < 1) {
                log("FAIL: no CUDA device visible");
                return 1;
            }
            dev = me % devices; // ranks may share a GPU (their kernels then time-slice)
            if (transport.equals("nccl") && devices < world) {
                log(
                        "FAIL: the nccl transport needs one GPU per rank (world "
                                + world
                                + ", "
                                + devices
                                + " GPUs)");
                return 1;
            }
            try (CudaEpBuffer buf = CudaEpBuffer.create(me, world, dev, 1L << 30, 20_000)) {
                if (transport.equals("nccl")) {
                    byte[] id =
                            me == 0
                                    ? CudaEpBuffer.ncclUniqueId()
                                    : new byte[NativeEpCuda.NEP_CUDA_NCCL_ID_BYTES];
                    byte[] all = allGather("ncclid", id);
                    buf.connectNccl(Arrays.copyOf(all, NativeEpCuda.NEP_CUDA_NCCL_ID_BYTES));
                } else {
                    buf.connect(allGather("blob", buf.exportBlob()));
                }
                barrier();
                log(
                        "connected ("
                                + (buf.transport() == NativeEpCuda.NEP_CUDA_TRANSPORT_NCCL
                                        ? "nccl"
                                        : "cuda-ipc")
                                + "), device "
                                + buf.device()
                                + " with "
                                + buf.deviceSms()
                                + " SMs");
                long c0 = checks;
                long f0 = failures;
                long t0 = System.nanoTime();
                checkCase(buf);
                barrier();
                log(
                        String.format(
                                "case routing+bf16/fp8/mxfp8 dispatch+combine %s (%d checks, %d"
                                        + " failed, %.1f s)",
                                failures == f0 ? "PASS" : "FAIL",
                                checks - c0,
                                failures - f0,
                                (System.nanoTime() - t0) * 1e-9));
                if (bench) {
                    benchCase(buf);
                    barrier();
                }
                barrier();
            }
            log("done: " + checks + " checks, " + failures + " failed");
            barrier();
            NativeEp.nep_store_close(store);
            return failures == 0 ? 0 : 1;
        }

        // -- the checked case --

        void checkCase(CudaEpBuffer buf) {
            final int hidden = 1024;
            final int topkN = 8;
            final int experts = 16 * world;
            final int el = experts / world;
            final int align = 4;
            final long seed = 17;
            Inputs[] in = new Inputs[world];
            Inputs[] g = new Inputs[world];
            for (int s = 0; s < world; s++) {
                int tokens = 600 + 37 * s;
                in[s] = new Inputs(seed, s, tokens, hidden, topkN, experts, false);
                g[s] = new Inputs(seed + 1, s, tokens, hidden, topkN, experts, true);
            }
            Inputs mine = in[me];
            final int tMine = mine.tokens;
            // Oracle: which ranks get each token, the rows this rank receives, the counts.
            boolean[][][] inRank = new boolean[world][][];
            for (int s = 0; s < world; s++) {
                inRank[s] = new boolean[in[s].tokens][world];
                for (int t = 0; t < in[s].tokens; t++) {
                    for (int k = 0; k < topkN; k++) {
                        long e = in[s].topk[t * topkN + k];
                        if (e >= 0) {
                            inRank[s][t][(int) (e / el)] = true;
                        }
                    }
                }
            }
            List<int[]> rows = new ArrayList<>(); // (source rank, token)
            int[] prefix = new int[world * world];
            for (int i = 0; i < world; i++) {
                for (int j = 0; j < world; j++) {
                    int n = 0;
                    for (int t = 0; t < in[i].tokens; t++) {
                        n += inRank[i][t][j] ? 1 : 0;
                    }
                    prefix[i * world + j] = n + (i > 0 ? prefix[(i - 1) * world + j] : 0);
                }
            }
            int[] raw = new int[el];
            for (int s = 0; s < world; s++) {
                for (int t = 0; t < in[s].tokens; t++) {
                    if (inRank[s][t][me]) {
                        rows.add(new int[] {s, t});
                    }
                    for (int k = 0; k < topkN; k++) {
                        long e = in[s].topk[t * topkN + k];
                        if (e >= me * el && e < (me + 1) * el) {
                            raw[(int) (e - me * el)]++;
                        }
                    }
                }
            }
            final int rCount = rows.size();

            cur = "notify";
            try (DeviceMemory dTopk = DeviceMemory.allocate(dev, 8L * tMine * topkN);
                    DeviceMemory dW = DeviceMemory.allocate(dev, 4L * tMine * topkN);
                    DeviceMemory dX = DeviceMemory.allocate(dev, 4L * tMine * hidden);
                    DeviceMemory dG = DeviceMemory.allocate(dev, 4L * tMine * hidden)) {
                dTopk.upload(mine.topk);
                dW.upload(mine.weights);
                dX.upload(mine.x);
                dG.upload(g[me].x);
                try (CudaEpBuffer.Handle h =
                        buf.notify(dTopk.address(), tMine, topkN, experts, align, 0)) {
                    check(
                            h.numRecv() == rCount,
                            "num_recv " + h.numRecv() + ", expected " + rCount);
                    if (h.numRecv() != rCount) {
                        return;
                    }
                    check(
                            Arrays.equals(h.rankPrefixMatrix(world), prefix),
                            "rank prefix matrix "
                                    + Arrays.toString(h.rankPrefixMatrix(world))
                                    + ", expected "
                                    + Arrays.toString(prefix));
                    int[] tokensOf = new int[world];
                    for (int s = 0; s < world; s++) {
                        tokensOf[s] = in[s].tokens;
                    }
                    check(Arrays.equals(h.rankNumTokens(world), tokensOf), "rank tokens");
                    check(
                            Arrays.equals(h.recvTokensPerExpert(false), raw),
                            "recv tokens per expert (raw)");
                    int[] aligned = new int[el];
                    for (int e = 0; e < el; e++) {
                        aligned[e] = (raw[e] + align - 1) / align * align;
                    }
                    check(
                            Arrays.equals(h.recvTokensPerExpert(true), aligned),
                            "recv tokens per expert (aligned)");
                    byte[] itr = h.isTokenInRank(world);
                    boolean itrOk = itr.length == tMine * world;
                    for (int t = 0; t < tMine && itrOk; t++) {
                        for (int r = 0; r < world; r++) {
                            itrOk &= (itr[t * world + r] != 0) == inRank[me][t][r];
                        }
                    }
                    check(itrOk, "is_token_in_rank");

                    // Dispatch: fp32 x, bf16 wire, fp32 out, with expert ids and weights.
                    cur = "dispatch bf16 wire";
                    try (DeviceMemory rx =
                                    DeviceMemory.allocate(dev, 4L * Math.max(rCount, 1) * hidden);
                            DeviceMemory ri =
                                    DeviceMemory.allocate(dev, 8L * Math.max(rCount, 1) * topkN);
                            DeviceMemory rw =
                                    DeviceMemory.allocate(dev, 4L * Math.max(rCount, 1) * topkN)) {
                        rx.fill(0xff);
                        ri.fill(0x5a);
                        rw.fill(0xff);
                        buf.dispatch(
                                h,
                                dX.address(),
                                FP32,
                                hidden,
                                WIRE_BF16,
                                dTopk.address(),
                                dW.address(),
                                rx.address(),
                                FP32,
                                ri.address(),
                                rw.address(),
                                24,
                                0);
                        buf.sync(0);
                        float[] gotX = new float[rCount * hidden];
                        long[] gotIdx = new long[rCount * topkN];
                        float[] gotW = new float[rCount * topkN];
                        rx.download(gotX);
                        ri.download(gotIdx);
                        rw.download(gotW);
                        int[] src = h.recvSrcIdx();
                        int badRows = 0;
                        int badMeta = 0;
                        for (int i = 0; i < rCount; i++) {
                            int s = rows.get(i)[0];
                            int t = rows.get(i)[1];
                            if (!Arrays.equals(
                                    gotX,
                                    i * hidden,
                                    (i + 1) * hidden,
                                    in[s].x,
                                    t * hidden,
                                    (t + 1) * hidden)) {
                                badRows++;
                            }
                            boolean ok = src[i] == t;
                            for (int k = 0; k < topkN; k++) {
                                long e = in[s].topk[t * topkN + k];
                                boolean local = e >= me * el && e < (me + 1) * el;
                                ok &= gotIdx[i * topkN + k] == (local ? e - me * el : -1);
                                ok &=
                                        Float.floatToRawIntBits(gotW[i * topkN + k])
                                                == Float.floatToRawIntBits(
                                                        local ? in[s].weights[t * topkN + k] : 0f);
                            }
                            badMeta += ok ? 0 : 1;
                        }
                        check(
                                badRows == 0,
                                badRows
                                        + " of "
                                        + rCount
                                        + " recv_x rows differ from the source rows");
                        check(
                                badMeta == 0,
                                badMeta
                                        + " of "
                                        + rCount
                                        + " rows have a wrong recv_src_idx, local expert id or"
                                        + " weight");
                        // A flipped bit must be seen by the comparison above.
                        if (rCount > 0) {
                            float[] m = gotX.clone();
                            m[(rCount / 2) * hidden + 3] =
                                    Math.nextUp(m[(rCount / 2) * hidden + 3]);
                            int s = rows.get(rCount / 2)[0];
                            int t = rows.get(rCount / 2)[1];
                            check(
                                    !Arrays.equals(
                                            m,
                                            (rCount / 2) * hidden,
                                            (rCount / 2 + 1) * hidden,
                                            in[s].x,
                                            t * hidden,
                                            (t + 1) * hidden),
                                    "mutation check");
                        }

                        // Combine: y = recv_x * (me + 1) (fp32, exact in bf16), bf16 wire, fp32
                        // out, weights too.
                        cur = "combine bf16 wire";
                        float[] y = new float[rCount * hidden];
                        for (int i = 0; i < y.length; i++) {
                            y[i] = gotX[i] * (me + 1);
                        }
                        try (DeviceMemory dy =
                                        DeviceMemory.allocate(
                                                dev, 4L * Math.max(rCount, 1) * hidden);
                                DeviceMemory out =
                                        DeviceMemory.allocate(
                                                dev, 4L * Math.max(tMine, 1) * hidden);
                                DeviceMemory outW =
                                        DeviceMemory.allocate(
                                                dev, 4L * Math.max(tMine, 1) * topkN)) {
                            dy.upload(y);
                            out.fill(0xff);
                            outW.fill(0xff);
                            buf.combine(
                                    h,
                                    dy.address(),
                                    FP32,
                                    hidden,
                                    WIRE_BF16,
                                    rw.address(),
                                    out.address(),
                                    FP32,
                                    outW.address(),
                                    24,
                                    0);
                            buf.sync(0);
                            float[] gotOut = new float[tMine * hidden];
                            float[] gotOutW = new float[tMine * topkN];
                            out.download(gotOut);
                            outW.download(gotOutW);
                            int badOut = 0;
                            int badW = 0;
                            for (int t = 0; t < tMine; t++) {
                                for (int c = 0; c < hidden; c++) {
                                    float acc = 0f;
                                    for (int r = 0; r < world; r++) {
                                        if (inRank[me][t][r]) {
                                            acc += mine.x[t * hidden + c] * (r + 1);
                                        }
                                    }
                                    if (Float.floatToRawIntBits(acc)
                                            != Float.floatToRawIntBits(gotOut[t * hidden + c])) {
                                        badOut++;
                                    }
                                }
                                for (int k = 0; k < topkN; k++) {
                                    float want =
                                            mine.topk[t * topkN + k] >= 0
                                                    ? mine.weights[t * topkN + k]
                                                    : 0f;
                                    if (Float.floatToRawIntBits(want)
                                            != Float.floatToRawIntBits(gotOutW[t * topkN + k])) {
                                        badW++;
                                    }
                                }
                            }
                            check(
                                    badOut == 0,
                                    badOut
                                            + " combined values differ from the fp32 sum in rank"
                                            + " order");
                            check(
                                    badW == 0,
                                    badW
                                            + " combined weights differ from the original weights"
                                            + " (0 for -1 slots)");
                        }

                        // Cached dispatch (same handle, no expert ids) of Gaussian rows, FP8 and
                        // MXFP8 wire, fp32 out.
                        for (int wire : new int[] {WIRE_FP8, WIRE_MXFP8}) {
                            cur = "cached dispatch " + (wire == WIRE_FP8 ? "fp8" : "mxfp8");
                            rx.fill(0xff);
                            buf.dispatch(
                                    h,
                                    dG.address(),
                                    FP32,
                                    hidden,
                                    wire,
                                    0,
                                    0,
                                    rx.address(),
                                    FP32,
                                    0,
                                    0,
                                    16,
                                    0);
                            buf.sync(0);
                            float[] q = new float[rCount * hidden];
                            rx.download(q);
                            double num = 0;
                            double den = 0;
                            for (int i = 0; i < rCount; i++) {
                                int s = rows.get(i)[0];
                                int t = rows.get(i)[1];
                                for (int c = 0; c < hidden; c++) {
                                    double ref = g[s].x[t * hidden + c];
                                    double d = q[i * hidden + c] - ref;
                                    num += d * d;
                                    den += ref * ref;
                                }
                            }
                            double rel = den > 0 ? Math.sqrt(num / den) : 0;
                            double bound = wire == WIRE_FP8 ? 5e-2 : 6e-2;
                            log(
                                    String.format(
                                            "%s: relative error (float64) %.3e, bound %.0e",
                                            cur, rel, bound));
                            check(Double.isFinite(rel) && rel < bound, "relative error " + rel);
                        }
                    }
                }
            }
        }

        // -- canonical workload, host-timed from Java --

        static short bf16(float f) {
            int u = Float.floatToRawIntBits(f);
            u += 0x7fff + ((u >>> 16) & 1);
            return (short) (u >>> 16);
        }

        /**
         * Times a call and a host sync of the stream after a barrier of the ranks.
         *
         * @param buf the buffer whose stream is synced
         * @param warm untimed runs first
         * @param iters timed runs
         * @param call the call
         * @return the median time of the timed runs, in microseconds
         */
        double medianMicros(CudaEpBuffer buf, int warm, int iters, Runnable call) {
            double[] d = new double[iters];
            barrier();
            for (int i = 0; i < warm + iters; i++) {
                long t0 = System.nanoTime();
                call.run();
                buf.sync(0);
                if (i >= warm) {
                    d[i - warm] = (System.nanoTime() - t0) * 1e-3;
                }
            }
            return median(d);
        }

        static double median(double[] v) {
            double[] s = v.clone();
            Arrays.sort(s);
            return s.length % 2 == 1
                    ? s[s.length / 2]
                    : 0.5 * (s[s.length / 2 - 1] + s[s.length / 2]);
        }

        void benchCase(CudaEpBuffer buf) {
            final int tokens = 4096;
            final int hidden = 7168;
            final int topkN = 8;
            final int experts = 256;
            final int sms = 24;
            SplitMix rng = new SplitMix(4242 + me);
            long[] topk = new long[tokens * topkN];
            int[] perm = new int[experts];
            for (int t = 0; t < tokens; t++) {
                for (int e = 0; e < experts; e++) {
                    perm[e] = e;
                }
                for (int k = 0; k < topkN; k++) {
                    topk[t * topkN + k] = rng.drawInto(perm, k);
                }
            }
            short[] x = new short[tokens * hidden];
            for (int i = 0; i < x.length; i++) {
                x[i] = bf16((float) ((rng.nextInt(2001) - 1000) / 400.0));
            }
            try (DeviceMemory dTopk = DeviceMemory.allocate(dev, 8L * topk.length);
                    DeviceMemory dX = DeviceMemory.allocate(dev, 2L * x.length)) {
                dTopk.upload(topk);
                dX.upload(x);
                int iters = 30;
                int warm = 10;
                double[] notify = new double[iters];
                CudaEpBuffer.Handle h = null;
                for (int i = 0; i < warm + iters; i++) {
                    if (h != null) {
                        h.close();
                    }
                    long t0 = System.nanoTime();
                    h = buf.notify(dTopk.address(), tokens, topkN, experts, 1, 0);
                    if (i >= warm) {
                        notify[i - warm] = (System.nanoTime() - t0) * 1e-3;
                    }
                }
                long rCount = h.numRecv();
                try (DeviceMemory rx =
                                DeviceMemory.allocate(dev, 2L * Math.max(rCount, 1) * hidden);
                        DeviceMemory out = DeviceMemory.allocate(dev, 2L * tokens * hidden)) {
                    String[] names = {"fp8", "bf16"};
                    int[] wires = {WIRE_FP8, WIRE_BF16};
                    StringBuilder sb = new StringBuilder();
                    sb.append(
                            String.format(
                                    "java host-timed, %d tokens, H=%d, top-%d of %d, %d SMs, median"
                                            + " of %d after %d: notify %.1f us",
                                    tokens,
                                    hidden,
                                    topkN,
                                    experts,
                                    sms,
                                    iters,
                                    warm,
                                    median(notify)));
                    CudaEpBuffer.Handle routed = h;
                    for (int w = 0; w < wires.length; w++) {
                        int wire = wires[w];
                        double d =
                                medianMicros(
                                        buf,
                                        warm,
                                        iters,
                                        () ->
                                                buf.dispatch(
                                                        routed,
                                                        dX.address(),
                                                        BF16,
                                                        hidden,
                                                        wire,
                                                        0,
                                                        0,
                                                        rx.address(),
                                                        BF16,
                                                        0,
                                                        0,
                                                        sms,
                                                        0));
                        sb.append(String.format(", dispatch %s %.1f us", names[w], d));
                    }
                    double c =
                            medianMicros(
                                    buf,
                                    warm,
                                    iters,
                                    () ->
                                            buf.combine(
                                                    routed,
                                                    rx.address(),
                                                    BF16,
                                                    hidden,
                                                    WIRE_BF16,
                                                    0,
                                                    out.address(),
                                                    BF16,
                                                    0,
                                                    sms,
                                                    0));
                    sb.append(
                            String.format(
                                    ", combine bf16 %.1f us (each: the JNI call + a host sync; %d"
                                            + " rows received)",
                                    c, rCount));
                    log(sb.toString());
                } finally {
                    h.close();
                }
            }
        }
    }
}
