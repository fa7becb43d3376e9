/*
 * djl-moe: expert-parallel Mixture-of-Experts for the Deep Java Library.
 */
package dev.djlmoe.reliability;

import ai.djl.Device;
import ai.djl.ndarray.NDArray;
import ai.djl.ndarray.NDManager;
import ai.djl.ndarray.types.DataType;
import ai.djl.ndarray.types.Shape;
import dev.djlmoe.core.EpException;
import dev.djlmoe.core.EpPeerException;
import dev.djlmoe.dist.LocalProcessGroup;
import dev.djlmoe.dist.MultiRank;
import dev.djlmoe.dist.ProcessGroup;
import dev.djlmoe.dist.ProcessGroups;
import dev.djlmoe.dist.RankEnvironment;
import dev.djlmoe.ep.CombineResult;
import dev.djlmoe.ep.DispatchResult;
import dev.djlmoe.ep.EpBuffer;
import dev.djlmoe.ep.EpHandle;
import dev.djlmoe.ep.WireFormat;
import dev.djlmoe.testing.TestDevice;
import java.io.IOException;
import java.nio.file.Files;
import java.util.Locale;
import java.util.Random;
import java.util.concurrent.CountDownLatch;
import java.util.concurrent.TimeUnit;
import java.util.function.Consumer;

/**
 * One rank of {@link FaultInjectionTest} and {@code dist.FaultTest} (started through {@link
 * MultiRank}). Modes:
 *
 * <ul>
 *   <li>{@code join}: joins the job, checks an all-reduce and a barrier, leaves. On failure prints
 *       {@code JOIN FAILED after <ms> ms: <exception>: <message>} and exits 3. With {@code
 *       FAULT_JOIN_DELAY_MS} set, the rank sleeps that long first (a late rank).
 *   <li>{@code exit-mid-dispatch <F>}: joins, then every rank loops over large dispatches and
 *       combines; rank F halts the JVM (exit 3, no clean-up) a few milliseconds into its first
 *       large dispatch. The other ranks print {@code PEER FAILURE after <ms> ms in <op>:
 *       <exception>: <message>} and exit 0, or exit 1 if no failure was seen.
 *   <li>{@code stall F}: after a warm-up exchange every rank loops over large dispatches and
 *       combines; rank F stops its whole process with SIGSTOP a few milliseconds into the first
 *       one. The others print {@code PEER FAILURE after <ms> ms in <op>: <class>: <message>}, send
 *       SIGCONT to rank F (its pid is in the shared directory) and exit 0; the resumed rank F
 *       prints {@code RESUMED FAILURE ...} and exits 4.
 *   <li>{@code kill-allreduce F}: every rank loops over 32 MiB all-reduces; rank F is killed with
 *       SIGKILL a few milliseconds into the first. The others print the failure and exit 0.
 *   <li>{@code kill-dispatch F}: on {@link TestDevice}'s device (the CPU engine, or the CUDA
 *       backend with {@code -Ddjlmoe.test.device=gpu}), after a warm-up exchange every rank loops
 *       over large dispatches and combines; rank F kills itself with SIGKILL a few milliseconds
 *       into the first. The others print the failure, {@code CLOSE: ...} (closing the failed
 *       buffer), then prove the process still works: an engine operation on the device and a
 *       dispatch and combine through a fresh one-rank buffer on the device, printing {@code STILL
 *       USABLE: true} and exiting 0 (1 when not usable).
 *   <li>{@code mismatch}: rank 0 and rank 1 call dispatch with different hidden sizes, then with
 *       different wire formats; both must get {@link EpPeerException} naming the disagreement, then
 *       a matching dispatch must work on both (exit 0).
 * </ul>
 *
 * <p>A rank that sees no failure exits 1; an unexpected exception exits 2.
 */
public final class FaultRanks {

    private FaultRanks() {}

    /**
     * Entry point of a rank.
     *
     * @param args the mode and its arguments
     */
    public static void main(String[] args) {
        MultiRank.watchParent();
        int code;
        try {
            code = run(args);
        } catch (Throwable e) {
            e.printStackTrace(System.out);
            code = 2;
        }
        System.out.flush();
        System.exit(code);
    }

    private static void signal(String sig, long pid) throws IOException, InterruptedException {
        // The shell's built-in kill: no procps package needed.
        Process p =
                new ProcessBuilder("sh", "-c", "kill -" + sig + " " + pid)
                        .redirectErrorStream(true)
                        .start();
        p.getInputStream().readAllBytes();
        p.waitFor(10, TimeUnit.SECONDS);
    }

    private static int run(String[] args) throws Exception {
        String mode = args[0];
        if (mode.equals("join") || mode.equals("exit-mid-dispatch")) {
            return join(args);
        }
        RankEnvironment env = RankEnvironment.fromSystem();
        long me = ProcessHandle.current().pid();
        Files.writeString(MultiRank.outDir().resolve("pid-" + env.rank()), Long.toString(me));
        try (ProcessGroup group = ProcessGroups.create(env);
                NDManager m = NDManager.newBaseManager();
                EpBuffer buffer = EpBuffer.create(group)) {
            System.out.printf(
                    Locale.ROOT,
                    "joined as rank %d of %d, pid %d%n",
                    group.rank(),
                    group.worldSize(),
                    me);
            switch (mode) {
                case "stall":
                    return stall(group, buffer, m, Integer.parseInt(args[1]));
                case "kill-allreduce":
                    return killInAllReduce(group, m, Integer.parseInt(args[1]));
                case "mismatch":
                    return mismatch(group, buffer, m);
                case "kill-dispatch":
                    return killInDispatch(group, Integer.parseInt(args[1]));
                default:
                    throw new IllegalArgumentException("unknown mode " + mode);
            }
        }
    }

    private static int join(String[] args) throws InterruptedException {
        RankEnvironment env = RankEnvironment.fromSystem();
        String delay = System.getenv("FAULT_JOIN_DELAY_MS");
        if (delay != null && !delay.isEmpty()) {
            Thread.sleep(Long.parseLong(delay)); // a rank that arrives late
        }
        long t0 = System.nanoTime();
        ProcessGroup group;
        try {
            group = ProcessGroups.create(env);
        } catch (RuntimeException e) {
            System.out.printf(
                    Locale.ROOT,
                    "JOIN FAILED after %d ms: %s: %s%n",
                    (System.nanoTime() - t0) / 1_000_000,
                    e.getClass().getSimpleName(),
                    e.getMessage());
            return 3;
        }
        try (group;
                NDManager m = NDManager.newBaseManager()) {
            System.out.printf(
                    Locale.ROOT,
                    "joined as rank %d of %d after %d ms%n",
                    group.rank(),
                    group.worldSize(),
                    (System.nanoTime() - t0) / 1_000_000);
            try (NDArray v = m.create(new float[] {group.rank() + 1})) {
                group.allReduceSum(v);
                int w = group.worldSize();
                if (v.getFloat() != w * (w + 1) / 2f) {
                    System.out.println("all-reduce gave " + v.getFloat());
                    return 1;
                }
            }
            group.barrier();
            if (args.length >= 2 && args[0].equals("exit-mid-dispatch")) {
                return exitMidDispatch(group, m, Integer.parseInt(args[1]));
            }
            return 0;
        }
    }

    private static int exitMidDispatch(ProcessGroup group, NDManager m, int faulty)
            throws InterruptedException {
        int w = group.worldSize();
        int me = group.rank();
        int tokens = 1024;
        int hidden = 7168;
        int topk = 4;
        int experts = 8 * w;
        long[] idx = routing(tokens, topk, experts, 7 + me);
        CountDownLatch entering = new CountDownLatch(1);
        if (me == faulty) {
            Thread killer =
                    new Thread(
                            () -> {
                                try {
                                    entering.await();
                                    Thread.sleep(5);
                                } catch (InterruptedException e) {
                                    return;
                                }
                                System.out.println("rank " + me + ": exiting mid-dispatch");
                                System.out.flush();
                                Runtime.getRuntime().halt(3);
                            },
                            "fault-injector");
            killer.setDaemon(true);
            killer.start();
        }
        try (EpBuffer buffer = EpBuffer.create(group);
                NDArray x = m.randomNormal(new Shape(tokens, hidden));
                NDArray topk4 = m.create(idx, new Shape(tokens, topk))) {
            // A small warm-up exchange proves the job works before the fault.
            try (NDManager sm = m.newSubManager()) {
                NDArray small = sm.ones(new Shape(tokens, 8), DataType.FLOAT32);
                DispatchResult d = buffer.dispatch(small, topk4, null, experts, 1, WireFormat.FP32);
                d.handle().close();
            }
            long begin = System.nanoTime();
            String op = "dispatch";
            try {
                for (int it = 0; it < 50; it++) {
                    try (NDManager sm = m.newSubManager()) {
                        op = "dispatch " + it;
                        entering.countDown();
                        DispatchResult d =
                                buffer.dispatch(x, topk4, null, experts, 1, WireFormat.FP32);
                        try (EpHandle h = d.handle()) {
                            op = "combine " + it;
                            CombineResult c = buffer.combine(d.recvX(), null, h, WireFormat.FP32);
                            c.out().close();
                        }
                    }
                }
            } catch (EpException e) {
                report("PEER FAILURE", begin, op, e);
                // Stay a moment so every peer can read this rank's abort reason.
                TimeUnit.MILLISECONDS.sleep(500);
                return 0;
            }
            System.out.println("no failure seen: rank " + faulty + " did not stop the job");
            return 1;
        }
    }

    /** Starts a thread that sends {@code sig} to this process a few ms after {@code go}. */
    private static void selfSignalAfter(CountDownLatch go, String sig) {
        Thread t =
                new Thread(
                        () -> {
                            try {
                                go.await();
                                Thread.sleep(5);
                                System.out.println("sending SIG" + sig + " to myself");
                                System.out.flush();
                                signal(sig, ProcessHandle.current().pid());
                            } catch (InterruptedException | IOException e) {
                                // the test fails on the missing signal
                            }
                        },
                        "fault-injector");
        t.setDaemon(true);
        t.start();
    }

    private static void report(String what, long begin, String op, Exception e) {
        System.out.printf(
                Locale.ROOT,
                "%s after %d ms in %s: %s: %s%n",
                what,
                (System.nanoTime() - begin) / 1_000_000,
                op,
                e.getClass().getSimpleName(),
                e.getMessage());
        System.out.flush();
    }

    private static long[] routing(int tokens, int topk, int experts, int seed) {
        Random r = new Random(seed);
        long[] idx = new long[tokens * topk];
        for (int t = 0; t < tokens; t++) {
            for (int k = 0; k < topk; k++) {
                idx[t * topk + k] = k * (experts / topk) + r.nextInt(experts / topk);
            }
        }
        return idx;
    }

    private static int stall(ProcessGroup group, EpBuffer buffer, NDManager m, int faulty)
            throws Exception {
        int w = group.worldSize();
        int tokens = 1024;
        int hidden = 4096;
        int experts = 4 * w;
        CountDownLatch entering = new CountDownLatch(1);
        if (group.rank() == faulty) {
            selfSignalAfter(entering, "STOP");
        }
        NDArray x = m.randomNormal(new Shape(tokens, hidden));
        NDArray idx = m.create(routing(tokens, 4, experts, 7 + group.rank()), new Shape(tokens, 4));
        try (NDManager sm = m.newSubManager()) {
            buffer.dispatch(sm.ones(new Shape(tokens, 8)), idx, null, experts, 1, WireFormat.FP32)
                    .handle()
                    .close();
        }
        long begin = System.nanoTime();
        String op = "dispatch";
        try {
            for (int it = 0; it < 200; it++) {
                try (NDManager sm = m.newSubManager()) {
                    op = "dispatch " + it;
                    entering.countDown();
                    DispatchResult d = buffer.dispatch(x, idx, null, experts, 1, WireFormat.FP32);
                    try (EpHandle h = d.handle()) {
                        op = "combine " + it;
                        CombineResult c = buffer.combine(d.recvX(), null, h, WireFormat.FP32);
                        c.out().close();
                    }
                }
            }
        } catch (EpException e) {
            if (group.rank() == faulty) {
                report("RESUMED FAILURE", begin, op, e);
                return 4;
            }
            report("PEER FAILURE", begin, op, e);
            if (group.rank() == (faulty + 1) % w) {
                long pid =
                        Long.parseLong(
                                Files.readString(MultiRank.outDir().resolve("pid-" + faulty))
                                        .trim());
                System.out.println("sending SIGCONT to rank " + faulty + " (pid " + pid + ")");
                signal("CONT", pid);
            }
            TimeUnit.MILLISECONDS.sleep(300);
            return 0;
        }
        System.out.println("no failure seen");
        return 1;
    }

    private static int killInAllReduce(ProcessGroup group, NDManager m, int faulty)
            throws Exception {
        CountDownLatch entering = new CountDownLatch(1);
        if (group.rank() == faulty) {
            selfSignalAfter(entering, "KILL");
        }
        try (NDArray warm = m.ones(new Shape(16))) {
            group.allReduceSum(warm);
        }
        NDArray big = m.ones(new Shape(8 << 20));
        long begin = System.nanoTime();
        try {
            for (int it = 0; it < 100; it++) {
                entering.countDown();
                group.allReduceSum(big);
            }
        } catch (EpException e) {
            report("PEER FAILURE", begin, "all-reduce", e);
            TimeUnit.MILLISECONDS.sleep(300);
            return 0;
        }
        System.out.println("no failure seen");
        return 1;
    }

    private static int killInDispatch(ProcessGroup group, int faulty) throws Exception {
        Device device = TestDevice.rankDevice(group.localRank());
        int w = group.worldSize();
        int tokens = 1024;
        int hidden = 4096;
        int experts = 4 * w;
        CountDownLatch entering = new CountDownLatch(1);
        if (group.rank() == faulty) {
            selfSignalAfter(entering, "KILL");
        }
        long begin;
        String op = "warm-up";
        try (NDManager m = NDManager.newBaseManager(device);
                EpBuffer buffer = EpBuffer.create(group)) {
            System.out.println("arrays on " + device);
            NDArray x = m.randomNormal(new Shape(tokens, hidden));
            NDArray idx =
                    m.create(routing(tokens, 4, experts, 11 + group.rank()), new Shape(tokens, 4));
            try (NDManager sm = m.newSubManager()) {
                buffer.dispatch(
                                sm.ones(new Shape(tokens, 128)),
                                idx,
                                null,
                                experts,
                                1,
                                WireFormat.FP32)
                        .handle()
                        .close();
                buffer.synchronize();
            }
            begin = System.nanoTime();
            try {
                for (int it = 0; it < 200; it++) {
                    try (NDManager sm = m.newSubManager()) {
                        op = "dispatch " + it;
                        entering.countDown();
                        DispatchResult d =
                                buffer.dispatch(x, idx, null, experts, 1, WireFormat.FP32);
                        try (EpHandle h = d.handle()) {
                            op = "combine " + it;
                            buffer.combine(d.recvX(), null, h, WireFormat.FP32).out().close();
                        }
                        op = "synchronize " + it;
                        buffer.synchronize();
                    }
                }
                System.out.println("no failure seen");
                return 1;
            } catch (EpException e) {
                report("PEER FAILURE", begin, op, e);
            }
            try {
                buffer.close(); // collective: its barrier fails too, yet the memory is released
                System.out.println("CLOSE: ok");
            } catch (RuntimeException e) {
                System.out.println(
                        "CLOSE: " + e.getClass().getSimpleName() + ": " + e.getMessage());
            }
            boolean usable = stillUsable(m);
            System.out.println("STILL USABLE: " + usable);
            return usable ? 0 : 1;
        }
    }

    /** An engine operation and a one-rank dispatch and combine on the manager's device. */
    private static boolean stillUsable(NDManager m) {
        try (NDManager sm = m.newSubManager();
                LocalProcessGroup alone = new LocalProcessGroup();
                EpBuffer fresh =
                        EpBuffer.builder()
                                .setGroup(alone)
                                .optCudaBufferBytes(EpBuffer.MIN_CUDA_BUFFER_BYTES)
                                .build()) {
            float sum = sm.ones(new Shape(1000)).mul(2f).sum().getFloat();
            int tokens = 64;
            int hidden = 256;
            float[] xs = new float[tokens * hidden];
            for (int i = 0; i < xs.length; i++) {
                xs[i] = (i % 97) * 0.25f - 3f;
            }
            NDArray x = sm.create(xs, new Shape(tokens, hidden));
            NDArray idx = sm.create(routing(tokens, 2, 8, 5), new Shape(tokens, 2));
            DispatchResult d = fresh.dispatch(x, idx, null, 8, 1, WireFormat.FP32);
            float[] out;
            try (EpHandle h = d.handle()) {
                // One rank holds every expert: each token comes back once, unchanged.
                out = fresh.combine(d.recvX(), null, h, WireFormat.FP32).out().toFloatArray();
            }
            boolean same = java.util.Arrays.equals(xs, out);
            System.out.printf(
                    Locale.ROOT,
                    "after the failure on %s: sum %.1f (expected 2000.0),"
                            + " one-rank dispatch and combine %s%n",
                    m.getDevice(),
                    sum,
                    same ? "exact" : "WRONG");
            return sum == 2000f && same;
        } catch (RuntimeException e) {
            System.out.println("NOT USABLE: " + e);
            return false;
        }
    }

    private static int mismatch(ProcessGroup group, EpBuffer buffer, NDManager m) {
        int rank = group.rank();
        int experts = 4 * group.worldSize();
        NDArray idx = m.create(new long[] {0, 5, 1, -1, 7, 2}, new Shape(3, 2));
        int failures = 0;
        failures +=
                refusedByPeers(
                        m,
                        "hidden",
                        sm ->
                                buffer.dispatch(
                                                sm.ones(new Shape(3, rank == 0 ? 64 : 32)),
                                                idx,
                                                null,
                                                experts,
                                                1,
                                                WireFormat.FP32)
                                        .handle()
                                        .close(),
                        "passed hidden = ",
                        "all ranks must agree");
        failures +=
                refusedByPeers(
                        m,
                        "wire",
                        sm ->
                                buffer.dispatch(
                                                sm.ones(new Shape(3, 64)),
                                                idx,
                                                null,
                                                experts,
                                                1,
                                                rank == 0 ? WireFormat.BF16 : WireFormat.FP8)
                                        .handle()
                                        .close(),
                        "passed wire = ",
                        "all ranks must agree");
        // Different K (top-k columns) in the notify step.
        failures +=
                refusedByPeers(
                        m,
                        "top-k",
                        sm -> {
                            NDArray k =
                                    rank == 0
                                            ? idx
                                            : sm.create(new long[] {0, 1, 2}, new Shape(3, 1));
                            buffer.notify(k, experts, 1).close();
                        },
                        "passed num_topk = ");
        // The job goes on: a matching dispatch and combine work on every rank.
        try (NDManager sm = m.newSubManager()) {
            NDArray x = sm.ones(new Shape(3, 64));
            DispatchResult d = buffer.dispatch(x, idx, null, experts, 1, WireFormat.FP32);
            try (EpHandle h = d.handle()) {
                float[] out =
                        buffer.combine(d.recvX(), null, h, WireFormat.FP32).out().toFloatArray();
                // Every token is routed, through 1 or 2 ranks: sum of ones over those ranks.
                boolean ok = out[0] >= 1f && out[64] >= 1f && out[128] >= 1f;
                System.out.println("STILL WORKS: " + ok);
                return failures == 3 && ok ? 0 : 1;
            }
        }
    }

    /**
     * Makes a collective call on which the ranks disagree.
     *
     * @param m the manager of the call's arrays (a sub-manager is used and closed)
     * @param what the value the ranks disagree on, for the printed lines
     * @param call the call
     * @param parts what the peer failure's message must name
     * @return 1 when the call failed with an {@link EpPeerException} naming every part, else 0
     */
    private static int refusedByPeers(
            NDManager m, String what, Consumer<NDManager> call, String... parts) {
        try (NDManager sm = m.newSubManager()) {
            call.accept(sm);
            System.out.println(what + " mismatch was accepted");
            return 0;
        } catch (EpPeerException e) {
            System.out.println(what.toUpperCase(Locale.ROOT) + " MISMATCH: " + e.getMessage());
            for (String p : parts) {
                if (!e.getMessage().contains(p)) {
                    return 0;
                }
            }
            return 1;
        }
    }
}
