package dev.djlmoe.nn;

import ai.djl.engine.Engine;
import ai.djl.ndarray.*;
import ai.djl.ndarray.types.*;
import ai.djl.training.GradientCollector;
import org.junit.jupiter.api.Test;
import java.util.Random;

class TmpProfileBench {
    interface Body { NDArray run(); }
    static double time(NDManager m, Body b, NDArray... leaves) {
        double best = 1e9;
        for (int it = 0; it < 3; it++) {
            try (NDManager step = m.newSubManager()) {
                long t0 = System.nanoTime();
                try (GradientCollector gc = Engine.getInstance().newGradientCollector()) {
                    NDArray y = b.run();
                    gc.backward(y.sum());
                    for (NDArray l : leaves) l.getGradient().toFloatArray().clone();
                }
                best = Math.min(best, (System.nanoTime() - t0) / 1e9);
            }
        }
        return best;
    }
    @Test
    void prof() {
        int t = 4096, k = 6, el = 64, h = 1024, i = 512;
        int n = t * k;
        try (NDManager m = NDManager.newBaseManager()) {
            Random random = new Random(1);
            long[] rows = new long[n];
            for (int j = 0; j < n; j++) rows[j] = random.nextInt(t);
            long[] slot = new long[n];
            for (int j = 0; j < n; j++) slot[j] = random.nextInt(n);
            NDArray rowIdx = m.create(rows), slotIdx = m.create(slot);
            NDArray x = m.randomNormal(new Shape(t, h)); x.setRequiresGradient(true);
            NDArray ys = m.randomNormal(new Shape(n + 1, h)); ys.setRequiresGradient(true);
            NDArray w = m.randomNormal(new Shape(t, k)); w.setRequiresGradient(true);
            NDArray g = m.randomNormal(new Shape(el, i, h)); g.setRequiresGradient(true);
            System.out.printf("gather x rows fwd+bwd: %.3f%n", time(m, () -> x.get(rowIdx), x));
            System.out.printf("gather back + bmm fwd+bwd: %.3f%n", time(m, () -> w.reshape(t, 1, k).batchMatMul(ys.get(slotIdx).reshape(t, k, h)), ys, w));
            System.out.printf("gather back + mul/sum fwd+bwd: %.3f%n", time(m, () -> ys.get(slotIdx).reshape(t, k, h).mul(w.reshape(t, k, 1)).sum(new int[]{1}), ys, w));
            System.out.printf("split params + use all fwd+bwd: %.3f%n", time(m, () -> {
                NDList p = g.split(el, 0); NDArray s = null;
                for (NDArray a : p) { NDArray r = a.squeeze(0).get("0:1").sum(); s = s == null ? r : s.add(r);} return s; }, g));
            NDArray big = m.randomNormal(new Shape(n, i)); big.setRequiresGradient(true);
            System.out.printf("silu*up elementwise fwd+bwd: %.3f%n", time(m, () -> big.mul(big.getNDArrayInternal().sigmoid()).mul(big), big));
            NDArray ys2 = m.randomNormal(new Shape(n, h)); ys2.setRequiresGradient(true);
            System.out.printf("concat 64 pieces fwd+bwd: %.3f%n", time(m, () -> NDArrays.concat(ys2.split(el, 0), 0), ys2));
        }
    }
}
