/*
 * djl-moe: expert-parallel Mixture-of-Experts for the Deep Java Library.
 */
package dev.djlmoe.recipes.data;

import java.util.Locale;
import java.util.SplittableRandom;

/**
 * Byte-level language-model batches from a text corpus ({@link ByteTokenizer}: token = byte).
 *
 * <p>The first {@code 1 - heldOutFraction} of the bytes are the training split, the rest the
 * held-out split. Step {@code s} draws each of its sequences as a window at a uniformly random
 * offset of the training split, from a generator seeded by {@code (seed, s)}: the batch of a step
 * depends on nothing else, so the data position of a run is its step and every rank can cut its
 * share out of the same global batch ({@link TokenBatch#shard}).
 */
public final class CorpusSource implements TokenSource {

    private final TextCorpus corpus;
    private final int trainEnd;
    private final int end;
    private final long seed;
    private final double heldOutFraction;
    private final double unigram;

    /**
     * Creates a source over a corpus.
     *
     * @param corpus the text
     * @param heldOutFraction share of the bytes (at the end) kept for evaluation, in [0, 0.5]
     * @param seed fixes which windows each step draws
     */
    public CorpusSource(TextCorpus corpus, double heldOutFraction, long seed) {
        if (!(heldOutFraction >= 0 && heldOutFraction <= 0.5)) {
            throw new IllegalArgumentException(
                    "held-out fraction " + heldOutFraction + " must be in [0, 0.5]");
        }
        this.corpus = corpus;
        this.seed = seed;
        this.heldOutFraction = heldOutFraction;
        this.end = corpus.bytes().length;
        this.trainEnd = (int) Math.round(end * (1 - heldOutFraction));
        this.unigram = entropy(corpus.bytes(), 0, trainEnd);
    }

    @Override
    public int vocabSize() {
        return ByteTokenizer.VOCAB;
    }

    /**
     * Returns the number of training bytes (tokens).
     *
     * @return the size of the training split
     */
    public int trainingTokens() {
        return trainEnd;
    }

    @Override
    public TokenBatch batch(long step, int batch, int seqLen) {
        return window(step, batch, seqLen, 0, trainEnd, seed);
    }

    private TokenBatch window(long step, int batch, int seqLen, int from, int to, long s) {
        int span = to - from - seqLen; // windows of seqLen + 1 bytes
        if (span < 1) {
            throw new IllegalArgumentException(
                    corpus.name()
                            + ": "
                            + (to - from)
                            + " bytes cannot hold one sequence of "
                            + (seqLen + 1)
                            + " tokens");
        }
        byte[] b = corpus.bytes();
        long[] in = new long[batch * seqLen];
        long[] lab = new long[batch * seqLen];
        SplittableRandom r = new SplittableRandom(s * 0x9E3779B97F4A7C15L + step);
        for (int i = 0; i < batch; i++) {
            int start = from + r.nextInt(span);
            for (int j = 0; j < seqLen; j++) {
                in[i * seqLen + j] = b[start + j] & 0xFF;
                lab[i * seqLen + j] = b[start + j + 1] & 0xFF;
            }
        }
        return new TokenBatch(in, lab, batch, seqLen);
    }

    @Override
    public double unigramEntropy() {
        return unigram;
    }

    @Override
    public String describe() {
        return String.format(
                Locale.ROOT,
                "%s: %,d bytes, byte-level tokens, %,d for training, %,d held out",
                corpus.name(),
                end,
                trainEnd,
                end - trainEnd);
    }

    @Override
    public String fingerprint() {
        return "bytes:sha256=" + corpus.sha256() + ":heldout=" + heldOutFraction + ":seed=" + seed;
    }

    @Override
    public void checkBatch(int batch, int seqLen) {
        long need = (long) batch * (seqLen + 1);
        if (trainEnd < need) {
            throw new IllegalArgumentException(
                    String.format(
                            Locale.ROOT,
                            "the data are too small for one batch: %s has %,d training tokens, one"
                                + " batch of %d sequences x %d tokens (+1 label) needs %,d; give"
                                + " more text or a smaller --batch / --seq-len",
                            corpus.name(),
                            trainEnd,
                            batch,
                            seqLen,
                            need));
        }
    }

    @Override
    public TokenSource heldOut() {
        if (end - trainEnd < 2) {
            return null;
        }
        CorpusSource self = this;
        return new TokenSource() {
            @Override
            public int vocabSize() {
                return ByteTokenizer.VOCAB;
            }

            @Override
            public TokenBatch batch(long step, int batch, int seqLen) {
                return self.window(step, batch, seqLen, self.trainEnd, self.end, ~self.seed);
            }

            @Override
            public double unigramEntropy() {
                return entropy(self.corpus.bytes(), self.trainEnd, self.end);
            }

            @Override
            public void checkBatch(int batch, int seqLen) {
                if (self.end - self.trainEnd <= seqLen) {
                    throw new IllegalArgumentException(
                            "the held-out split ("
                                    + (self.end - self.trainEnd)
                                    + " bytes) is shorter than one sequence");
                }
            }
        };
    }

    /** Entropy in nats of the byte frequencies of {@code b[from, to)}. */
    static double entropy(byte[] b, int from, int to) {
        long[] counts = new long[256];
        for (int i = from; i < to; i++) {
            counts[b[i] & 0xFF]++;
        }
        double n = to - from;
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
