/*
 * djl-moe: expert-parallel Mixture-of-Experts for the Deep Java Library.
 */
package dev.djlmoe.recipes.data;

import java.util.Random;

/**
 * Synthetic text from a fixed random bigram model: each token is followed by one of {@code fanOut}
 * successors with fixed probabilities. The conditional entropy ({@link #conditionalEntropy()}) is
 * far below the unigram entropy, so a model that learns falls well below the unigram baseline.
 */
public final class SyntheticBigramSource implements TokenSource {

    private final int vocab;
    private final int[][] successors;
    private final double[] probs;
    private final long seed;

    /**
     * Creates a source.
     *
     * @param vocab V
     * @param fanOut successors per token
     * @param seed fixes the bigram table and the sampled text
     */
    public SyntheticBigramSource(int vocab, int fanOut, long seed) {
        if (vocab < 2 || fanOut < 1 || fanOut > vocab) {
            throw new IllegalArgumentException(
                    "vocab "
                            + vocab
                            + " and fan-out "
                            + fanOut
                            + " must satisfy 1 <= fanOut <= vocab, vocab >= 2");
        }
        this.vocab = vocab;
        this.seed = seed;
        Random r = new Random(seed);
        successors = new int[vocab][fanOut];
        for (int v = 0; v < vocab; v++) {
            for (int j = 0; j < fanOut; j++) {
                successors[v][j] = r.nextInt(vocab);
            }
        }
        probs = new double[fanOut];
        double sum = 0;
        for (int j = 0; j < fanOut; j++) {
            probs[j] = 1.0 / (j + 1);
            sum += probs[j];
        }
        for (int j = 0; j < fanOut; j++) {
            probs[j] /= sum;
        }
    }

    @Override
    public String describe() {
        return "synthetic bigram text (V="
                + vocab
                + ", "
                + successors[0].length
                + " successors per token, seed "
                + seed
                + ")";
    }

    @Override
    public String fingerprint() {
        return "synthetic-bigram:v" + vocab + ":f" + successors[0].length + ":s" + seed;
    }

    @Override
    public TokenSource heldOut() {
        SyntheticBigramSource self = this;
        return new TokenSource() {
            @Override
            public int vocabSize() {
                return vocab;
            }

            @Override
            public TokenBatch batch(long step, int batch, int seqLen) {
                // Negative steps never occur in training.
                return self.batch(-2 - step, batch, seqLen);
            }

            @Override
            public double unigramEntropy() {
                return self.unigramEntropy();
            }
        };
    }

    @Override
    public int vocabSize() {
        return vocab;
    }

    @Override
    public TokenBatch batch(long step, int batch, int seqLen) {
        long[] in = new long[batch * seqLen];
        long[] lab = new long[batch * seqLen];
        Random r = new Random(seed * 1_000_003L + step);
        for (int b = 0; b < batch; b++) {
            int tok = r.nextInt(vocab);
            for (int s = 0; s <= seqLen; s++) {
                int next = sample(tok, r);
                if (s < seqLen) {
                    in[b * seqLen + s] = tok;
                    lab[b * seqLen + s] = next;
                }
                tok = next;
            }
        }
        return new TokenBatch(in, lab, batch, seqLen);
    }

    private int sample(int tok, Random r) {
        double u = r.nextDouble();
        double acc = 0;
        for (int j = 0; j < probs.length; j++) {
            acc += probs[j];
            if (u < acc) {
                return successors[tok][j];
            }
        }
        return successors[tok][probs.length - 1];
    }

    /**
     * Returns the entropy of the next token given the current one (nats), the best loss reachable.
     *
     * @return the conditional entropy (an upper bound when successors repeat)
     */
    public double conditionalEntropy() {
        double h = 0;
        for (double p : probs) {
            h -= p * Math.log(p);
        }
        return h;
    }

    @Override
    public double unigramEntropy() {
        // Estimated from a long sample of the chain.
        TokenBatch b = batch(-1, 64, 512);
        long[] counts = new long[vocab];
        for (long t : b.labels()) {
            counts[(int) t]++;
        }
        double n = b.labels().length;
        double h = 0;
        for (long c : counts) {
            if (c > 0) {
                double p = c / n;
                h -= p * Math.log(p);
            }
        }
        return h;
    }
}
