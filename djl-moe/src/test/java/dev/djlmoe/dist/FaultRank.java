/*
 * djl-moe: expert-parallel Mixture-of-Experts for the Deep Java Library.
 */
package dev.djlmoe.dist;

import ai.djl.ndarray.NDArray;
import ai.djl.ndarray.NDManager;
import ai.djl.ndarray.types.DataType;
import ai.djl.ndarray.types.Shape;
import dev.djlmoe.ep.CombineResult;
import dev.djlmoe.ep.DispatchResult;
import dev.djlmoe.ep.EpBuffer;
import dev.djlmoe.ep.EpException;
import dev.djlmoe.ep.EpHandle;
import dev.djlmoe.ep.WireFormat;
import java.util.Locale;
import java.util.Random;
import java.util.concurrent.CountDownLatch;
import java.util.concurrent.TimeUnit;

/**
 * One rank of the fault tests (started through {@link MultiRank}). Modes:
 *
 * <ul>
 *   <li>{@code join}: joins the job, checks an all-reduce and a barrier, leaves. On failure
 *       prints {@code JOIN FAILED after <ms> ms: <exception>: <message>} and exits 3. With {@code
 *       FAULT_JOIN_DELAY_MS} set, the rank sleeps that long first (a late rank).
 *   <li>{@code exit-mid-dispatch <F>}: joins, then every rank loops over large dispatches and
 *       combines; rank F halts the JVM (exit 3, no clean-up) a few milliseconds into its first
 *       large dispatch. The other ranks print {@code PEER FAILURE after <ms> ms in <op>:
 *       <exception>: <message>} and exit 0, or exit 1 if no failure was seen.
 * </ul>
 */
public final class FaultRank {

    private FaultRank() {}

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

    private static int run(String[] args) throws InterruptedException {
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
            System.out.printf(Locale.ROOT, "JOIN FAILED after %d ms: %s: %s%n",
                    (System.nanoTime() - t0) / 1_000_000, e.getClass().getSimpleName(),
                    e.getMessage());
            return 3;
        }
        try (group;
                NDManager m = NDManager.newBaseManager()) {
            System.out.printf(Locale.ROOT, "joined as rank %d of %d after %d ms%n", group.rank(),
                    group.worldSize(), (System.nanoTime() - t0) / 1_000_000);
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
        Random r = new Random(7 + me);
        long[] idx = new long[tokens * topk];
        for (int t = 0; t < tokens; t++) {
            for (int k = 0; k < topk; k++) {
                idx[t * topk + k] = (k * (experts / topk) + r.nextInt(experts / topk));
            }
        }
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
                System.out.printf(Locale.ROOT, "PEER FAILURE after %d ms in %s: %s: %s%n",
                        (System.nanoTime() - begin) / 1_000_000, op,
                        e.getClass().getSimpleName(), e.getMessage());
                System.out.flush();
                // Stay a moment so every peer can read this rank's abort reason.
                TimeUnit.MILLISECONDS.sleep(500);
                return 0;
            }
            System.out.println("no failure seen: rank " + faulty + " did not stop the job");
            return 1;
        }
    }
}
