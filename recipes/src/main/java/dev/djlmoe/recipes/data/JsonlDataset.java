/*
 * djl-moe: expert-parallel Mixture-of-Experts for the Deep Java Library.
 */
package dev.djlmoe.recipes.data;

import dev.djlmoe.zoo.io.Json;
import dev.djlmoe.zoo.io.JsonException;
import dev.djlmoe.zoo.nn.CausalLmLoss;
import java.io.IOException;
import java.nio.charset.Charset;
import java.nio.charset.StandardCharsets;
import java.nio.file.Files;
import java.nio.file.Path;
import java.security.MessageDigest;
import java.security.NoSuchAlgorithmException;
import java.util.ArrayList;
import java.util.HexFormat;
import java.util.List;
import java.util.Locale;
import java.util.Map;
import java.util.SplittableRandom;

/**
 * A fine-tuning dataset in JSON lines, tokenized into fixed-length training sequences.
 *
 * <p>Each non-blank line is an object of one of two kinds:
 *
 * <ul>
 *   <li>{@code {"text": "..."}}: plain text; every token is a target. Text longer than one sequence
 *       is cut into consecutive sequences.
 *   <li>{@code {"prompt": "...", "response": "..."}} ({@code "completion"} is accepted for {@code
 *       "response"}): the loss is on the response only — the labels of prompt tokens are {@link
 *       CausalLmLoss#IGNORE_INDEX}. Prompt and response are tokenized separately and joined, so the
 *       boundary is exact. An example longer than one sequence is truncated at its end.
 * </ul>
 *
 * The tokenizer's end-of-sequence token, when it has one, follows each text and response (and is a
 * target). Short sequences are padded with id 0 and ignored labels.
 */
public final class JsonlDataset {

    /** One training sequence: {@code inputs[i]} predicts {@code labels[i]}. */
    record Sequence(long[] inputs, long[] labels) {}

    private final Path file;
    private final List<Sequence> sequences;
    private final int seqLen;
    private final String fingerprint;
    private final int examples;
    private final int truncated;
    private final long targets;
    private final double unigram;
    private final String tokenizer;
    private final long eos;

    private JsonlDataset(
            Path file,
            List<Sequence> sequences,
            int seqLen,
            String fingerprint,
            int examples,
            int truncated,
            long targets,
            double unigram,
            String tokenizer,
            long eos) {
        this.file = file;
        this.sequences = sequences;
        this.seqLen = seqLen;
        this.fingerprint = fingerprint;
        this.examples = examples;
        this.truncated = truncated;
        this.targets = targets;
        this.unigram = unigram;
        this.tokenizer = tokenizer;
        this.eos = eos;
    }

    /**
     * Reads and tokenizes a dataset.
     *
     * @param file the {@code .jsonl} file
     * @param encoder the tokenizer
     * @param seqLen tokens per training sequence
     * @param vocabSize the model's vocabulary (every id must be below it)
     * @return the dataset
     * @throws IOException when the file cannot be read
     * @throws IllegalArgumentException naming the file and line of a malformed record, an id out of
     *     the vocabulary, or a dataset without targets
     */
    public static JsonlDataset load(Path file, TextEncoder encoder, int seqLen, long vocabSize)
            throws IOException {
        return load(file, encoder, seqLen, vocabSize, StandardCharsets.UTF_8);
    }

    /**
     * Reads and tokenizes a dataset in a given encoding.
     *
     * @param file the {@code .jsonl} file
     * @param encoder the tokenizer
     * @param seqLen tokens per training sequence
     * @param vocabSize the model's vocabulary (every id must be below it)
     * @param encoding the file's encoding (bytes not valid in it are refused, with the line and
     *     byte offset named)
     * @return the dataset
     * @throws IOException when the file cannot be read
     * @throws IllegalArgumentException naming the file and line of a malformed record or text, an
     *     id out of the vocabulary, or a dataset without targets
     */
    public static JsonlDataset load(
            Path file, TextEncoder encoder, int seqLen, long vocabSize, Charset encoding)
            throws IOException {
        if (!Files.isRegularFile(file)) {
            throw new IllegalArgumentException("--data " + file + ": no such file");
        }
        if (seqLen < 2) {
            throw new IllegalArgumentException("--seq-len " + seqLen + " must be >= 2");
        }
        byte[] raw = Files.readAllBytes(file);
        String text = TextDecoding.decode(raw, encoding, file.toString());
        List<Sequence> out = new ArrayList<>();
        int n = 0;
        int examples = 0;
        int truncated = 0;
        long[] counts = new long[(int) Math.min(vocabSize, Integer.MAX_VALUE)];
        long targets = 0;
        for (String line : text.split("\n", -1)) {
            n++;
            if (line.isBlank()) {
                continue;
            }
            String where = file + " line " + n;
            Map<String, Object> o;
            try {
                o = Json.parseObject(line, where);
            } catch (JsonException e) {
                throw new IllegalArgumentException(e.getMessage(), e);
            }
            Object t = o.get("text");
            Object p = o.get("prompt");
            Object r = o.containsKey("response") ? o.get("response") : o.get("completion");
            List<Long> ids = new ArrayList<>();
            List<Boolean> target = new ArrayList<>();
            boolean chat;
            if (t instanceof String s && p == null && r == null) {
                append(ids, target, encoder.encode(s), true);
                chat = false;
            } else if (p instanceof String ps && r instanceof String rs && t == null) {
                append(ids, target, encoder.encode(ps), false);
                append(ids, target, encoder.encode(rs), true);
                chat = true;
            } else {
                throw new IllegalArgumentException(
                        where
                                + ": expected {\"text\": string} or {\"prompt\": string,"
                                + " \"response\": string}, got keys "
                                + o.keySet());
            }
            if (encoder.eosId() >= 0) {
                ids.add(encoder.eosId());
                target.add(true);
            }
            for (long id : ids) {
                if (id < 0 || id >= vocabSize) {
                    throw new IllegalArgumentException(
                            where
                                    + ": the tokenizer gave id "
                                    + id
                                    + ", outside the model's"
                                    + " vocabulary [0, "
                                    + vocabSize
                                    + ")");
                }
            }
            if (ids.size() < 2) {
                continue; // nothing to predict
            }
            examples++;
            int step = chat ? Integer.MAX_VALUE : seqLen;
            for (int from = 0; from + 1 < ids.size(); from += step) {
                int to = Math.min(ids.size(), from + seqLen + 1);
                if (chat && ids.size() > seqLen + 1) {
                    truncated++;
                }
                long[] in = new long[seqLen];
                long[] lab = new long[seqLen];
                java.util.Arrays.fill(lab, CausalLmLoss.IGNORE_INDEX);
                int counted = 0;
                for (int i = from; i + 1 < to; i++) {
                    in[i - from] = ids.get(i);
                    if (target.get(i + 1)) {
                        lab[i - from] = ids.get(i + 1);
                        counts[(int) (long) ids.get(i + 1)]++;
                        counted++;
                    }
                }
                if (counted > 0) {
                    out.add(new Sequence(in, lab));
                    targets += counted;
                }
                if (chat) {
                    break;
                }
            }
        }
        if (out.isEmpty()) {
            throw new IllegalArgumentException(
                    file
                            + ": no training targets (no non-empty text or response in "
                            + examples
                            + " example(s))");
        }
        double h = 0;
        for (long c : counts) {
            if (c > 0) {
                double q = c / (double) targets;
                h -= q * Math.log(q);
            }
        }
        String fp;
        try {
            MessageDigest md = MessageDigest.getInstance("SHA-256");
            md.update(raw);
            md.update(encoder.describe().getBytes(StandardCharsets.UTF_8));
            fp = "jsonl:sha256=" + HexFormat.of().formatHex(md.digest()) + ":seq=" + seqLen;
        } catch (NoSuchAlgorithmException e) {
            throw new IllegalStateException(e);
        }
        return new JsonlDataset(
                file,
                out,
                seqLen,
                fp,
                examples,
                truncated,
                targets,
                h,
                encoder.describe(),
                encoder.eosId());
    }

    private static void append(List<Long> ids, List<Boolean> target, long[] tokens, boolean t) {
        for (long id : tokens) {
            ids.add(id);
            target.add(t);
        }
    }

    /**
     * Returns the number of training sequences.
     *
     * @return the count
     */
    public int size() {
        return sequences.size();
    }

    /**
     * Returns the number of examples that were truncated to fit one sequence.
     *
     * @return the count
     */
    public int truncated() {
        return truncated;
    }

    /**
     * Returns the inputs of sequence {@code i}.
     *
     * @param i the index
     * @return {@code seqLen} ids
     */
    public long[] inputs(int i) {
        return sequences.get(i).inputs().clone();
    }

    /**
     * Returns the labels of sequence {@code i}.
     *
     * @param i the index
     * @return {@code seqLen} ids or {@link CausalLmLoss#IGNORE_INDEX}
     */
    public long[] labels(int i) {
        return sequences.get(i).labels().clone();
    }

    /**
     * Returns the batches of a training run: each epoch visits every sequence once in an order
     * shuffled by {@code (seed, epoch)}; step {@code s} takes the global sequences {@code s * B} to
     * {@code (s + 1) * B - 1} of that endless stream.
     *
     * @param vocabSize the model's vocabulary
     * @param seed fixes the order
     * @return the source
     */
    public TokenSource source(long vocabSize, long seed) {
        return new Source(vocabSize, seed);
    }

    private final class Source implements TokenSource {
        private final long vocab;
        private final long seed;
        private long cachedEpoch = -1;
        private int[] order;

        Source(long vocab, long seed) {
            this.vocab = vocab;
            this.seed = seed;
        }

        @Override
        public int vocabSize() {
            return (int) vocab;
        }

        private synchronized int at(long j) {
            int n = sequences.size();
            long epoch = j / n;
            if (epoch != cachedEpoch) {
                order = new int[n];
                for (int i = 0; i < n; i++) {
                    order[i] = i;
                }
                SplittableRandom r = new SplittableRandom(seed * 0x9E3779B97F4A7C15L + epoch);
                for (int i = n - 1; i > 0; i--) {
                    int k = r.nextInt(i + 1);
                    int tmp = order[i];
                    order[i] = order[k];
                    order[k] = tmp;
                }
                cachedEpoch = epoch;
            }
            return order[(int) (j % n)];
        }

        @Override
        public TokenBatch batch(long step, int batch, int len) {
            if (len != seqLen) {
                throw new IllegalArgumentException(
                        "the dataset was tokenized for --seq-len " + seqLen + ", asked for " + len);
            }
            long[] in = new long[batch * len];
            long[] lab = new long[batch * len];
            for (int b = 0; b < batch; b++) {
                Sequence s = sequences.get(at(step * batch + b));
                System.arraycopy(s.inputs(), 0, in, b * len, len);
                System.arraycopy(s.labels(), 0, lab, b * len, len);
            }
            return new TokenBatch(in, lab, batch, len);
        }

        @Override
        public double unigramEntropy() {
            return unigram;
        }

        @Override
        public String describe() {
            return String.format(
                    Locale.ROOT,
                    "%s: %d examples -> %d sequences of %d tokens, %,d target tokens%s; %s; %s",
                    file,
                    examples,
                    sequences.size(),
                    seqLen,
                    targets,
                    truncated > 0 ? " (" + truncated + " truncated)" : "",
                    tokenizer,
                    eos >= 0
                            ? "end token " + eos + " after each text and response"
                            : "NO end token (the tokenizer names no eos_token in a"
                                    + " tokenizer_config.json): nothing marks where a text or"
                                    + " response ends, so the model will not learn to stop");
        }

        @Override
        public String fingerprint() {
            return fingerprint + ":seed=" + seed;
        }

        @Override
        public void checkBatch(int batch, int len) {
            if (sequences.size() < batch) {
                throw new IllegalArgumentException(
                        String.format(
                                Locale.ROOT,
                                "the data are too small for one batch: %s gives %d training"
                                    + " sequence(s) of %d tokens, one step needs --batch %d; add"
                                    + " examples or lower --batch",
                                file,
                                sequences.size(),
                                seqLen,
                                batch));
            }
        }
    }
}
