/*
 * djl-moe: expert-parallel Mixture-of-Experts for the Deep Java Library.
 */
package dev.djlmoe.recipes.decode;

import ai.djl.Device;
import ai.djl.engine.Engine;
import ai.djl.ndarray.NDArray;
import ai.djl.ndarray.NDManager;
import ai.djl.ndarray.types.DataType;
import ai.djl.ndarray.types.Shape;
import dev.djlmoe.dist.ProcessGroup;
import dev.djlmoe.dist.ProcessGroups;
import dev.djlmoe.dist.RankEnvironment;
import dev.djlmoe.ep.EpContext;
import dev.djlmoe.ep.LowLatencyBuffer;
import dev.djlmoe.ep.WireFormat;
import dev.djlmoe.nativeep.NativeEp;
import dev.djlmoe.nn.LowLatencyMoe;
import dev.djlmoe.recipes.DeviceFlag;
import dev.djlmoe.recipes.Pretrain;
import dev.djlmoe.recipes.checkpoint.TrainingCheckpoint;
import dev.djlmoe.recipes.data.ByteTokenizer;
import dev.djlmoe.recipes.data.HfTextEncoder;
import dev.djlmoe.train.ParameterInit;
import dev.djlmoe.zoo.hf.HfCheckpoints;
import dev.djlmoe.zoo.hf.HfMoeConfig;
import dev.djlmoe.zoo.hf.HfMoeForCausalLm;
import dev.djlmoe.zoo.io.SafetensorsWriter;
import java.io.IOException;
import java.io.PrintStream;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.ArrayList;
import java.util.List;
import java.util.Locale;

/**
 * {@code djl-moe decode} on one rank: loads a model (a Hugging Face checkpoint directory, a
 * training run's checkpoint, or a preset with seeded random weights), gives each rank a contiguous
 * block of the prompts, generates greedy tokens ({@link GreedyDecoder}) with the routed experts
 * sharded over the ranks, and on rank 0 prints every sequence, the decode throughput and the share
 * of decode time spent in low-latency dispatch and combine.
 *
 * <p>Prefill runs the MoE layers in normal mode (with W &gt; 1 the normal-mode EP buffer); the
 * decode steps use the low-latency buffer ({@link Exchange#LL}) or normal mode ({@link
 * Exchange#NORMAL}: local experts for W = 1, the normal-mode EP buffer otherwise).
 */
public final class DecodeRun {

    /** How the decode steps' MoE layers exchange tokens. */
    public enum Exchange {
        /** Low-latency dispatch and combine ({@code LowLatencyBuffer}). */
        LL,
        /** The MoE layer's normal forward. */
        NORMAL
    }

    /**
     * The settings of a run.
     *
     * @param model a checkpoint directory (with {@code config.json}), a run's checkpoint directory
     *     (its newest checkpoint is used) or a preset name (random weights)
     * @param prompts the prompts, as text
     * @param newTokens tokens to generate per prompt
     * @param exchange the decode steps' MoE exchange
     * @param lowLatencyPrefill with {@link Exchange#LL}: the prefill uses it too (the buffer is
     *     then sized for every rank's padded prompt block)
     * @param dispatchWire the low-latency dispatch wire
     * @param combineWire the low-latency combine wire
     * @param seed the seed of random weights
     * @param output a JSON Lines file rank 0 writes (one line per prompt), or null
     * @param device {@code cpu}, {@code gpu} or {@code auto} (see {@link DeviceFlag}); the model,
     *     the KV cache and the low-latency buffer's arrays live there
     */
    public record Options(
            String model,
            List<String> prompts,
            int newTokens,
            Exchange exchange,
            boolean lowLatencyPrefill,
            WireFormat dispatchWire,
            WireFormat combineWire,
            long seed,
            Path output,
            String device) {

        /** The settings without a device choice: {@code auto}. */
        public Options(
                String model,
                List<String> prompts,
                int newTokens,
                Exchange exchange,
                boolean lowLatencyPrefill,
                WireFormat dispatchWire,
                WireFormat combineWire,
                long seed,
                Path output) {
            this(
                    model,
                    prompts,
                    newTokens,
                    exchange,
                    lowLatencyPrefill,
                    dispatchWire,
                    combineWire,
                    seed,
                    output,
                    DeviceFlag.AUTO);
        }
    }

    /**
     * What rank 0 reports.
     *
     * @param tokens {@code [P][newTokens]} every prompt's generated ids (all ranks' prompts)
     * @param tokensPerSecond generated tokens of the decode steps per second, all ranks together
     * @param llShare the share of the decode time in low-latency dispatch and combine (the slowest
     *     rank's), 0 without it
     */
    public record Summary(
            long[][] tokens, float[][] margins, double tokensPerSecond, double llShare) {}

    private DecodeRun() {}

    /**
     * Runs this rank's part.
     *
     * @param o the settings
     * @param env this rank's environment
     * @param out where rank 0 reports
     * @return the summary (complete on every rank)
     * @throws IOException when the checkpoint cannot be read
     */
    public static Summary run(Options o, RankEnvironment env, PrintStream out) throws IOException {
        if (o.newTokens() < 1) {
            throw new IllegalArgumentException("--new-tokens " + o.newTokens() + " must be >= 1");
        }
        int world = env.worldSize();
        int p = o.prompts().size();
        Path dir = checkpointDir(o.model());
        HfMoeConfig cfg = config(o.model(), dir);
        checkRanks(cfg, p, world);
        Tokens encoded = encode(o.prompts(), dir, cfg);
        long[][] all = encoded.prompts();
        int longest = 0;
        for (long[] a : all) {
            longest = Math.max(longest, a.length);
        }
        long maxPos = cfg.rope().maxPositionEmbeddings();
        if (longest + o.newTokens() > maxPos) {
            throw new IllegalArgumentException(
                    "the longest prompt ("
                            + longest
                            + " tokens) plus"
                            + " --new-tokens "
                            + o.newTokens()
                            + " exceed max_position_embeddings = "
                            + maxPos);
        }
        int rank = env.rank();
        int first = rank * (p / world) + Math.min(rank, p % world);
        int mine = p / world + (rank < p % world ? 1 : 0);
        int maxPerRank = (p + world - 1) / world;
        boolean llPrefill = o.lowLatencyPrefill() && o.exchange() == Exchange.LL;
        int capacity = maxPerRank;
        if (llPrefill) { // every rank's B_r * (longest prompt of rank r), known to all ranks
            for (int r = 0; r < world; r++) {
                int f = r * (p / world) + Math.min(r, p % world);
                int n = p / world + (r < p % world ? 1 : 0);
                int longestOfRank = 0;
                for (int q = f; q < f + n; q++) {
                    longestOfRank = Math.max(longestOfRank, all[q].length);
                }
                capacity = Math.max(capacity, n * longestOfRank);
            }
        }
        long[][] local = new long[mine][];
        System.arraycopy(all, first, local, 0, mine);
        boolean lead = rank == 0;
        Device device = DeviceFlag.resolve(o.device(), env.localRank());
        Engine.getInstance().setRandomSeed((int) o.seed());
        try (ProcessGroup group = ProcessGroups.create(env);
                EpContext ctx =
                        world > 1 ? EpContext.builder().setProcessGroup(group).build() : null;
                NDManager manager = NDManager.newBaseManager(device);
                LowLatencyBuffer buf =
                        o.exchange() == Exchange.LL
                                ? LowLatencyBuffer.create(
                                        group,
                                        capacity,
                                        cfg.hiddenSize(),
                                        cfg.numExperts(),
                                        cfg.topK(),
                                        wider(o, cfg.hiddenSize()),
                                        ProcessGroups.timeoutMillis())
                                : null) {
            HfMoeForCausalLm model;
            if (dir != null) {
                model = HfCheckpoints.load(dir, manager, ctx);
                if (lead) {
                    out.println("model: " + dir + " (" + cfg.family() + ")");
                }
            } else {
                model = HfMoeForCausalLm.builder().setConfig(cfg).optContext(ctx).build();
                model.initialize(manager, DataType.FLOAT32, new Shape(1, 1));
                ParameterInit.reinitialize(model, o.seed());
                if (lead) {
                    out.println(
                            "model: preset "
                                    + o.model()
                                    + " with RANDOM weights (seed "
                                    + o.seed()
                                    + "; no checkpoint given): the tokens are not meaningful");
                }
            }
            LowLatencyMoe ll =
                    buf == null
                            ? null
                            : new LowLatencyMoe(buf, o.dispatchWire(), o.combineWire(), false);
            if (lead) {
                out.printf(
                        Locale.ROOT,
                        "decode: %d prompt(s) on %d EP rank(s) (%d per rank at most, rank 0 on %s),"
                                + " %d new tokens each; prefill: %s; decode steps: %s%n",
                        p,
                        world,
                        maxPerRank,
                        device,
                        o.newTokens(),
                        llPrefill
                                ? "low-latency (max_tokens_per_rank " + capacity + ")"
                                : "normal mode",
                        ll == null
                                ? (world > 1 ? "normal-mode EP buffer" : "local experts")
                                : "low-latency dispatch "
                                        + o.dispatchWire()
                                        + " / combine "
                                        + o.combineWire());
            }
            GreedyDecoder.Result r =
                    GreedyDecoder.generate(model, manager, local, o.newTokens(), ll, llPrefill);
            // Gather: tokens of every prompt, and per rank (decode time, LL time).
            // Layout: [P * N] tokens, [P * N] margins, then [W] x (decode time, LL time).
            int pn = p * o.newTokens();
            double[] sums = new double[2 * pn + 2 * world];
            for (int q = 0; q < mine; q++) {
                for (int i = 0; i < o.newTokens(); i++) {
                    sums[(first + q) * o.newTokens() + i] = r.tokens()[q][i];
                    sums[pn + (first + q) * o.newTokens() + i] = r.margins()[q][i];
                }
            }
            int at = 2 * pn;
            sums[at + 2 * rank] = r.decodeNanos();
            sums[at + 2 * rank + 1] = ll == null ? 0 : ll.dispatchNanos() + ll.combineNanos();
            try (NDArray a = manager.create(sums)) {
                group.allReduceSum(a);
                sums = a.toDoubleArray();
            }
            long[][] tokens = new long[p][o.newTokens()];
            float[][] margins = new float[p][o.newTokens()];
            for (int q = 0; q < p; q++) {
                for (int i = 0; i < o.newTokens(); i++) {
                    tokens[q][i] = (long) sums[q * o.newTokens() + i];
                    margins[q][i] = (float) sums[pn + q * o.newTokens() + i];
                }
            }
            double slowest = 0;
            double llShare = 0;
            for (int w = 0; w < world; w++) {
                slowest = Math.max(slowest, sums[at + 2 * w]);
                if (sums[at + 2 * w] > 0) {
                    llShare = Math.max(llShare, sums[at + 2 * w + 1] / sums[at + 2 * w]);
                }
            }
            double tps = slowest > 0 ? (double) p * r.decodeSteps() / (slowest / 1e9) : 0;
            Summary s = new Summary(tokens, margins, tps, llShare);
            if (lead) {
                report(o, encoded, s, r, ll, out);
            }
            return s;
        }
    }

    private static void report(
            Options o,
            Tokens tokens,
            Summary s,
            GreedyDecoder.Result r,
            LowLatencyMoe ll,
            PrintStream out)
            throws IOException {
        List<String> lines = new ArrayList<>();
        for (int q = 0; q < tokens.prompts().length; q++) {
            // A sequence ends at the end token: the text stops there, the printed ids show it;
            // the JSON keeps every generated id and margin (ranks decode the same number of
            // steps) and says where the end token came.
            long[] gen = s.tokens()[q];
            int n = endOf(gen, tokens.eos());
            boolean ended = n < gen.length;
            StringBuilder shown = new StringBuilder();
            StringBuilder ids = new StringBuilder();
            StringBuilder gaps = new StringBuilder();
            for (int i = 0; i < gen.length; i++) {
                String sep = i == 0 ? "" : ",";
                if (i <= n) {
                    shown.append(sep).append(gen[i]);
                }
                ids.append(sep).append(gen[i]);
                gaps.append(sep).append(String.format(Locale.ROOT, "%.6g", s.margins()[q][i]));
            }
            String text = tokens.text(java.util.Arrays.copyOf(gen, n));
            out.printf(
                    Locale.ROOT,
                    "[%d] %s -> %s%s [%s]%n",
                    q,
                    quote(o.prompts().get(q)),
                    quote(text),
                    ended ? " <end>" : "",
                    shown);
            lines.add(
                    "{\"prompt\": "
                            + quote(o.prompts().get(q))
                            + ", \"text\": "
                            + quote(text)
                            + ", \"end_at\": "
                            + (ended ? n : -1)
                            + ", \"tokens\": ["
                            + ids
                            + "], \"margins\": ["
                            + gaps
                            + "]}");
        }
        out.printf(
                Locale.ROOT,
                "prefill (rank 0): %.1f ms; decode: %d step(s), %.1f tokens/s over"
                        + " all ranks%n",
                r.prefillNanos() / 1e6,
                r.decodeSteps(),
                s.tokensPerSecond());
        if (ll != null) {
            out.printf(
                    Locale.ROOT,
                    "low-latency dispatch + combine: %.1f%% of decode time (slowest rank; rank 0:"
                            + " dispatch %.1f us, combine %.1f us per MoE layer call, %d calls)%n",
                    100 * s.llShare(),
                    ll.calls() == 0 ? 0 : ll.dispatchNanos() / 1e3 / ll.calls(),
                    ll.calls() == 0 ? 0 : ll.combineNanos() / 1e3 / ll.calls(),
                    ll.calls());
        }
        if (o.output() != null) {
            SafetensorsWriter.writeTextAtomically(o.output(), String.join("\n", lines) + "\n");
        }
    }

    /** The wider of the two wire formats (in bytes per row): the buffer's row slots fit it. */
    private static WireFormat wider(Options o, long hidden) {
        long d = NativeEp.nep_wire_row_bytes(o.dispatchWire().code(), hidden);
        long c = NativeEp.nep_wire_row_bytes(o.combineWire().code(), hidden);
        return d >= c ? o.dispatchWire() : o.combineWire();
    }

    /** The index of the first end token in {@code ids}, or its length when there is none. */
    static int endOf(long[] ids, long eos) {
        for (int i = 0; i < ids.length; i++) {
            if (ids[i] == eos) {
                return i;
            }
        }
        return ids.length;
    }

    /**
     * Checks, before any process group forms (also in the launcher), that a model and a batch of
     * prompts can be decoded on {@code worldSize} ranks.
     *
     * @param model the {@code --model} value
     * @param prompts the number of prompts
     * @param worldSize the EP size
     * @throws IllegalArgumentException naming the setting, its value and the limit
     * @throws IOException when the checkpoint's config.json cannot be read
     */
    public static void checkRanks(String model, int prompts, int worldSize) throws IOException {
        checkRanks(config(model, checkpointDir(model)), prompts, worldSize);
    }

    private static void checkRanks(HfMoeConfig cfg, int prompts, int worldSize) {
        Pretrain.checkDivides(
                "the model's " + cfg.numExperts() + " routed experts",
                cfg.numExperts(),
                worldSize,
                "each rank holds E / W experts");
        if (prompts < worldSize) {
            throw new IllegalArgumentException(
                    prompts
                            + " prompt(s) for "
                            + worldSize
                            + " EP ranks: every rank decodes at least one; pass at least "
                            + worldSize
                            + " --prompt");
        }
    }

    /** The model's configuration: the checkpoint's, or the preset's. */
    private static HfMoeConfig config(String model, Path dir) throws IOException {
        if (dir != null) {
            return HfMoeConfig.load(dir);
        }
        try {
            return HfMoeConfig.preset(model);
        } catch (IllegalArgumentException e) {
            throw new IllegalArgumentException(
                    "--model "
                            + model
                            + ": not a checkpoint directory,"
                            + " a run directory or a preset: "
                            + e.getMessage(),
                    e);
        }
    }

    /** The checkpoint directory named by --model, or null for a preset. */
    static Path checkpointDir(String model) throws IOException {
        Path p = Path.of(model);
        if (!Files.isDirectory(p)) {
            if (Files.exists(p)) {
                throw new IllegalArgumentException(
                        "--model "
                                + model
                                + ": a file, not a checkpoint directory (give the directory that"
                                + " holds config.json)");
            }
            if (model.contains("/") || model.contains(java.io.File.separator)) {
                throw new IllegalArgumentException(
                        "--model "
                                + model
                                + ": no such directory (a checkpoint directory, a run directory, or"
                                + " a preset name such as tiny)");
            }
            return null;
        }
        if (Files.isRegularFile(p.resolve("config.json"))) {
            return p;
        }
        return TrainingCheckpoint.resolve(p, new ArrayList<>(), "--model");
    }

    /**
     * The prompts as ids, the end token (-1 for none) and the tokenizer that turns ids back into
     * text (null: the byte-level tokenizer).
     */
    private record Tokens(long[][] prompts, long eos, Path tokenizer) {

        /** The text of generated ids (up to the end token). */
        String text(long[] ids) throws IOException {
            if (tokenizer == null) {
                return ByteTokenizer.decode(ids);
            }
            try (HfTextEncoder enc = HfTextEncoder.open(tokenizer)) {
                return enc.decode(ids);
            }
        }
    }

    private static Tokens encode(List<String> prompts, Path dir, HfMoeConfig cfg)
            throws IOException {
        long[][] out = new long[prompts.size()][];
        Path tok = dir == null ? null : dir.resolve("tokenizer.json");
        long eos;
        if (tok != null && Files.isRegularFile(tok)) {
            try (HfTextEncoder enc = HfTextEncoder.open(tok)) {
                for (int q = 0; q < out.length; q++) {
                    out[q] = enc.encode(prompts.get(q));
                }
                eos = enc.eosId();
            }
        } else {
            tok = null;
            eos = ByteTokenizer.EOS;
            if (cfg.vocabSize() < ByteTokenizer.VOCAB) {
                throw new IllegalArgumentException(
                        "the model has no tokenizer.json and its"
                                + " vocabulary ("
                                + cfg.vocabSize()
                                + ") is smaller than the byte"
                                + " tokenizer's "
                                + ByteTokenizer.VOCAB);
            }
            for (int q = 0; q < out.length; q++) {
                out[q] = ByteTokenizer.encode(prompts.get(q));
            }
        }
        for (int q = 0; q < out.length; q++) {
            if (out[q].length == 0) {
                throw new IllegalArgumentException(
                        "prompt " + q + " (" + quote(prompts.get(q)) + ") encodes to no tokens");
            }
        }
        return new Tokens(out, eos, tok);
    }

    /** A JSON string literal. */
    static String quote(String s) {
        StringBuilder b = new StringBuilder("\"");
        for (char c : s.toCharArray()) {
            switch (c) {
                case '"' -> b.append("\\\"");
                case '\\' -> b.append("\\\\");
                case '\n' -> b.append("\\n");
                case '\r' -> b.append("\\r");
                case '\t' -> b.append("\\t");
                default -> {
                    if (c < 0x20) {
                        b.append(String.format(Locale.ROOT, "\\u%04x", (int) c));
                    } else {
                        b.append(c);
                    }
                }
            }
        }
        return b.append('"').toString();
    }
}
