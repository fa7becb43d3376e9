/*
 * djl-moe: expert-parallel Mixture-of-Experts for the Deep Java Library.
 */
package dev.djlmoe.ep;

import java.util.Random;

/** Random routing for EP tests: uneven rows, -1 slots, a hot expert, no duplicates in a row. */
final class RoutingData {

    final int tokens;
    final int topk;
    final int experts;
    final long[] idx; // [T, K]
    final float[] weights; // [T, K]

    RoutingData(long seed, int tokens, int topk, int experts, double emptySlotRate, int hotExpert) {
        this.tokens = tokens;
        this.topk = topk;
        this.experts = experts;
        Random r = new Random(seed);
        idx = new long[tokens * topk];
        weights = new float[tokens * topk];
        for (int t = 0; t < tokens; t++) {
            boolean[] used = new boolean[experts];
            for (int k = 0; k < topk; k++) {
                long e;
                if (r.nextDouble() < emptySlotRate) {
                    e = -1;
                } else if (hotExpert >= 0 && k == 0 && !used[hotExpert]) {
                    e = hotExpert;
                } else {
                    int c;
                    do {
                        c = r.nextInt(experts);
                    } while (used[c]);
                    e = c;
                }
                if (e >= 0) {
                    used[(int) e] = true;
                }
                idx[t * topk + k] = e;
                weights[t * topk + k] = 0.25f + r.nextFloat();
            }
        }
    }

    static float[] randomRows(long seed, int rows, int hidden, float scale) {
        Random r = new Random(seed);
        float[] x = new float[rows * hidden];
        for (int i = 0; i < x.length; i++) {
            x[i] = (float) (r.nextGaussian() * scale);
        }
        return x;
    }

    /** Rows whose values are exact in bf16: small integers times powers of two. */
    static float[] bf16ExactRows(long seed, int rows, int hidden) {
        Random r = new Random(seed);
        float[] x = new float[rows * hidden];
        for (int i = 0; i < x.length; i++) {
            x[i] = (r.nextInt(255) - 127) * (float) Math.pow(2, r.nextInt(8) - 4);
        }
        return x;
    }

    /** Tokens with at least one valid slot, in order: the rows a one-rank dispatch receives. */
    int[] receivedTokens() {
        int n = 0;
        int[] tmp = new int[tokens];
        for (int t = 0; t < tokens; t++) {
            for (int k = 0; k < topk; k++) {
                if (idx[t * topk + k] >= 0) {
                    tmp[n++] = t;
                    break;
                }
            }
        }
        return java.util.Arrays.copyOf(tmp, n);
    }

    int[] tokensPerExpert() {
        int[] c = new int[experts];
        for (long e : idx) {
            if (e >= 0) {
                c[(int) e]++;
            }
        }
        return c;
    }
}
