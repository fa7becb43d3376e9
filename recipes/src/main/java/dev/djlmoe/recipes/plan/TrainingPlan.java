/*
 * djl-moe: expert-parallel Mixture-of-Experts for the Deep Java Library.
 */
package dev.djlmoe.recipes.plan;

import dev.djlmoe.ep.WireFormat;
import dev.djlmoe.nn.ExpertPrecision;
import dev.djlmoe.recipes.TrainingPrecision;
import dev.djlmoe.zoo.hf.HfMoeConfig;
import dev.djlmoe.zoo.hf.MemoryPlan;
import java.util.LinkedHashMap;
import java.util.Locale;
import java.util.Map;
import java.util.SplittableRandom;

/**
 * What one training step of a model costs per expert-parallel rank, before renting hardware: memory
 * ({@link MemoryPlan}: parameters, gradients, AdamW state, activations, float32 as djl-moe trains),
 * FLOPs and EP traffic.
 *
 * <p><b>FLOPs</b> count multiply-adds of the matrix products as 2 FLOPs (norms, softmax,
 * activations are left out); backward costs twice the forward (no recomputation), so a step is 3
 * forwards. Per token and layer the forward is 2 times: MLA {@code H r_q + r_q N (dn + dr)} (or
 * {@code H N (dn + dr)} without q-LoRA) {@code + H (r_kv + dr) + r_kv N (dn + dv) + N dv H} for the
 * projections and {@code N S (dn + dr) + N S dv} for scores and context over the full sequence (the
 * causal mask is applied, not skipped); grouped-query attention likewise with {@code H N d + 2 H G
 * d + N d H} and {@code 2 N S d}; a dense MLP {@code 3 H I}; an MoE MLP {@code H E} (router) {@code
 * + K 3 H I_moe} (routed experts, the GEMMs mxfp8 and fp8 run in FP8) {@code + n_shared 3 H I_moe};
 * the LM head {@code H V}. Under balanced routing each rank computes {@code K T} expert rows
 * whatever W is, so the FLOPs per rank are those of its own {@code T} tokens.
 *
 * <p><b>EP traffic</b>: the token rows a rank sends to other ranks. A token goes once to every rank
 * that holds at least one of its experts; with routing spread evenly (each token's experts drawn
 * uniformly, within {@code topk_group} of {@code n_group} groups when the model limits groups) a
 * token reaches {@link #remoteRanksPerToken()} other ranks on average. Forward dispatch carries
 * each row in the precision's wire format, forward combine and both backward exchanges in fp32
 * (djl-moe's defaults). Rows only: routing indices and weights add {@code 12 K} bytes.
 *
 * @param config the model
 * @param epSize W
 * @param batch sequences per rank per step
 * @param seqLen tokens per sequence
 * @param precision the run's precision (wire format of dispatch; MXFP8 or FP8 expert GEMMs)
 */
public record TrainingPlan(
        HfMoeConfig config, int epSize, long batch, long seqLen, TrainingPrecision precision) {

    /**
     * Checks the arguments.
     *
     * @param config the model
     * @param epSize W, dividing the number of experts
     * @param batch sequences per rank
     * @param seqLen tokens per sequence
     * @param precision the precision
     */
    public TrainingPlan {
        if (epSize < 1 || config.numExperts() % epSize != 0) {
            throw new IllegalArgumentException(
                    "the model's "
                            + config.numExperts()
                            + " routed experts are not divisible by"
                            + " the EP size "
                            + epSize
                            + " (each rank holds E / W experts): use an"
                            + " EP size that divides "
                            + config.numExperts());
        }
        if (batch < 1 || seqLen < 1) {
            throw new IllegalArgumentException(
                    "--batch " + batch + " and --seq-len " + seqLen + " must be >= 1");
        }
    }

    /**
     * Returns the memory plan (float32 parameters, gradients, AdamW state, activations).
     *
     * @return the memory plan of one rank
     */
    public MemoryPlan memory() {
        return new MemoryPlan(config, epSize, batch, seqLen);
    }

    /**
     * Tokens one rank processes per step.
     *
     * @return {@code batch * seqLen}
     */
    public long tokensPerRank() {
        return batch * seqLen;
    }

    /**
     * Forward FLOPs per token, by part ({@code attention projections}, {@code attention scores},
     * {@code dense MLP}, {@code router}, {@code routed experts}, {@code shared experts}, {@code LM
     * head}).
     *
     * @return part name to FLOPs
     */
    public Map<String, Long> forwardFlopsPerToken() {
        HfMoeConfig c = config;
        long h = c.hiddenSize();
        long n = c.numHeads();
        long proj;
        long scores;
        if (c.family().isMla()) {
            long dn = c.qkNopeHeadDim();
            long dr = c.qkRopeHeadDim();
            long dv = c.vHeadDim();
            long rkv = c.kvLoraRank();
            long q =
                    c.qLoraRank() > 0
                            ? h * c.qLoraRank() + c.qLoraRank() * n * (dn + dr)
                            : h * n * (dn + dr);
            proj = q + h * (rkv + dr) + rkv * n * (dn + dv) + n * dv * h;
            scores = n * seqLen * (dn + dr) + n * seqLen * dv;
        } else {
            long d = c.headDim();
            long g = c.numKvHeads();
            proj = h * n * d + 2 * h * g * d + n * d * h;
            scores = 2 * n * seqLen * d;
        }
        long dense = 0;
        long router = 0;
        long routed = 0;
        long shared = 0;
        for (int i = 0; i < c.numLayers(); i++) {
            if (c.isMoeLayer(i)) {
                router += h * c.numExperts();
                routed += (long) c.topK() * 3 * h * c.moeIntermediateSize();
                shared += (long) c.numSharedExperts() * 3 * h * c.moeIntermediateSize();
            } else {
                dense += 3 * h * c.intermediateSize();
            }
        }
        Map<String, Long> m = new LinkedHashMap<>();
        m.put("attention projections", 2 * proj * c.numLayers());
        m.put("attention scores", 2 * scores * c.numLayers());
        m.put("dense MLP", 2 * dense);
        m.put("router", 2 * router);
        m.put("routed experts", 2 * routed);
        m.put("shared experts", 2 * shared);
        m.put("LM head", 2 * h * c.vocabSize());
        return m;
    }

    /**
     * Forward FLOPs per token, all parts.
     *
     * @return FLOPs
     */
    public long forwardFlopsPerTokenTotal() {
        long s = 0;
        for (long v : forwardFlopsPerToken().values()) {
            s += v;
        }
        return s;
    }

    /**
     * Training FLOPs of one rank's step: 3 forwards of its tokens.
     *
     * @return FLOPs
     */
    public double stepFlopsPerRank() {
        return 3.0 * forwardFlopsPerTokenTotal() * tokensPerRank();
    }

    /**
     * Training FLOPs of one step over all ranks.
     *
     * @return FLOPs
     */
    public double stepFlopsGlobal() {
        return stepFlopsPerRank() * epSize;
    }

    /**
     * Share of the step's FLOPs in the routed experts' GEMMs (what mxfp8 and fp8 run in FP8).
     *
     * @return the share in [0, 1]
     */
    public double expertFlopShare() {
        return forwardFlopsPerToken().get("routed experts") / (double) forwardFlopsPerTokenTotal();
    }

    /**
     * Average number of other ranks a token is sent to.
     *
     * @return {@code (W - 1) * P(a given rank holds at least one of the token's experts)}
     */
    public double remoteRanksPerToken() {
        int w = epSize;
        if (w == 1) {
            return 0;
        }
        int e = config.numExperts();
        int k = config.topK();
        int groups = Math.max(1, config.numGroups());
        int keep = Math.max(1, config.topkGroup());
        if (groups == 1 || keep >= groups) {
            // P(rank missed) = C(E - E/W, K) / C(E, K)
            double miss = 1;
            int local = e / w;
            for (int i = 0; i < k; i++) {
                miss *= (double) (e - local - i) / (e - i);
            }
            return (w - 1) * (1 - miss);
        }
        // Group-limited routing: estimate by sampling (fixed seed, so the plan is reproducible).
        SplittableRandom r = new SplittableRandom(1);
        int perGroup = e / groups;
        int local = e / w;
        int samples = 20_000;
        long hits = 0;
        int[] pool = new int[keep * perGroup];
        for (int s = 0; s < samples; s++) {
            int[] gs = pickDistinct(r, groups, keep);
            int at = 0;
            for (int g : gs) {
                for (int j = 0; j < perGroup; j++) {
                    pool[at++] = g * perGroup + j;
                }
            }
            boolean[] rank = new boolean[w];
            for (int x : pickDistinct(r, pool.length, Math.min(k, pool.length))) {
                rank[pool[x] / local] = true;
            }
            for (int q = 1; q < w; q++) {
                // rank 0 as the sender, by symmetry; ranks 1..W-1 are remote
                if (rank[q]) {
                    hits++;
                }
            }
        }
        return hits / (double) samples;
    }

    private static int[] pickDistinct(SplittableRandom r, int n, int k) {
        int[] a = new int[n];
        for (int i = 0; i < n; i++) {
            a[i] = i;
        }
        for (int i = 0; i < k; i++) {
            int j = i + r.nextInt(n - i);
            int t = a[i];
            a[i] = a[j];
            a[j] = t;
        }
        return java.util.Arrays.copyOf(a, k);
    }

    /**
     * Bytes of one hidden row in a wire format.
     *
     * @param wire the format
     * @param h the hidden size
     * @return {@code 4H} (fp32), {@code 2H} (bf16), {@code H + 4 ceil(H/128)} (fp8 with fp32
     *     scales), {@code H + ceil(H/32)} (mxfp8 with E8M0 scales)
     */
    public static long rowBytes(WireFormat wire, long h) {
        switch (wire) {
            case FP32:
                return 4 * h;
            case BF16:
                return 2 * h;
            case FP8:
                return h + 4 * ((h + 127) / 128);
            case MXFP8:
                return h + (h + 31) / 32;
            default:
                throw new IllegalArgumentException("unknown wire format " + wire);
        }
    }

    /**
     * EP bytes one rank sends per step, by exchange ({@code dispatch (forward)}, {@code combine
     * (forward)}, {@code backward (both)}).
     *
     * @return exchange to bytes
     */
    public Map<String, Double> epBytesPerRank() {
        double rows = tokensPerRank() * remoteRanksPerToken() * config.numMoeLayers();
        long h = config.hiddenSize();
        Map<String, Double> m = new LinkedHashMap<>();
        m.put("dispatch (forward)", rows * rowBytes(precision.wire(), h));
        m.put("combine (forward)", rows * rowBytes(WireFormat.FP32, h));
        m.put("backward (both)", 2 * rows * rowBytes(WireFormat.FP32, h));
        return m;
    }

    /**
     * A printable report.
     *
     * @param name how to call the model (the preset or file)
     * @param gpuMemoryGiB memory of the target accelerator, for the fits line (0 = no line)
     * @return the report
     */
    public String report(String name, double gpuMemoryGiB) {
        HfMoeConfig c = config;
        MemoryPlan mem = memory();
        StringBuilder sb = new StringBuilder();
        sb.append(
                String.format(
                        Locale.ROOT,
                        "plan: %s (%s, %d layers, H=%d, %d routed experts top-%d, %d shared, %,d"
                                + " parameters), EP size %d, precision %s%n",
                        name,
                        c.family().modelType(),
                        c.numLayers(),
                        c.hiddenSize(),
                        c.numExperts(),
                        c.topK(),
                        c.numSharedExperts(),
                        c.numParameters(),
                        epSize,
                        precision.flag()));
        sb.append(
                String.format(
                        Locale.ROOT,
                        "tokens per step: %d x %d = %,d per rank, %,d over %d ranks%n%n",
                        batch,
                        seqLen,
                        tokensPerRank(),
                        tokensPerRank() * epSize,
                        epSize));
        sb.append(
                String.format(
                        Locale.ROOT,
                        "%-34s %18s %10s%n",
                        "memory per rank (float32)",
                        "elements",
                        "GiB"));
        memRow(sb, "parameters", mem.parametersPerRank());
        memRow(sb, "gradients", mem.gradientsPerRank());
        memRow(sb, "optimizer (AdamW m and v)", mem.optimizerStatePerRank());
        memRow(sb, "activations (estimate)", mem.activationsPerRank());
        double total = mem.totalBytesPerRank() / (double) (1L << 30);
        sb.append(String.format(Locale.ROOT, "  %-32s %18s %10.2f%n", "total", "", total));
        if (gpuMemoryGiB > 0) {
            sb.append(
                    String.format(
                            Locale.ROOT,
                            "  %s in %.0f GiB per device%n",
                            total <= gpuMemoryGiB ? "fits" : "does NOT fit",
                            gpuMemoryGiB));
        }
        sb.append(
                String.format(
                        Locale.ROOT,
                        "%n%-34s %18s %14s %7s%n",
                        "step FLOPs (fwd + bwd = 3 x fwd)",
                        "fwd per token",
                        "per rank/step",
                        "share"));
        double tot = forwardFlopsPerTokenTotal();
        for (Map.Entry<String, Long> e : forwardFlopsPerToken().entrySet()) {
            String label = e.getKey();
            if ("routed experts".equals(label) && precision.experts() != ExpertPrecision.FP32) {
                label += " (" + precision.experts() + ")";
            }
            if ("attention scores".equals(label)) {
                label += " (S=" + seqLen + ")";
            }
            sb.append(
                    String.format(
                            Locale.ROOT,
                            "  %-32s %18s %14s %6.1f%%%n",
                            label,
                            flops(e.getValue()),
                            flops(3.0 * e.getValue() * tokensPerRank()),
                            100 * e.getValue() / tot));
        }
        sb.append(
                String.format(
                        Locale.ROOT,
                        "  %-32s %18s %14s%n",
                        "total",
                        flops(tot),
                        flops(stepFlopsPerRank())));
        sb.append(
                String.format(
                        Locale.ROOT,
                        "  all %d ranks: %s per step%n",
                        epSize,
                        flops(stepFlopsGlobal())));
        sb.append(
                String.format(
                        Locale.ROOT,
                        "%nEP traffic sent per rank per step (%d MoE layers; a token reaches %.2f"
                                + " other ranks on average)%n",
                        c.numMoeLayers(),
                        remoteRanksPerToken()));
        double sum = 0;
        for (Map.Entry<String, Double> e : epBytesPerRank().entrySet()) {
            String wire =
                    e.getKey().startsWith("dispatch")
                            ? precision.wire().name().toLowerCase(Locale.ROOT)
                            : "fp32";
            sb.append(
                    String.format(
                            Locale.ROOT,
                            "  %-32s %12.2f GB  (%s, %d B per row)%n",
                            e.getKey(),
                            e.getValue() / 1e9,
                            wire,
                            rowBytes(
                                    e.getKey().startsWith("dispatch")
                                            ? precision.wire()
                                            : WireFormat.FP32,
                                    c.hiddenSize())));
            sum += e.getValue();
        }
        sb.append(String.format(Locale.ROOT, "  %-32s %12.2f GB%n", "total", sum / 1e9));
        if (precision == TrainingPrecision.MXFP8) {
            sb.append(
                    String.format(
                            Locale.ROOT,
                            "%nmxfp8: %.1f%% of the step's FLOPs are routed-expert GEMMs; on a GPU"
                                + " they run on FP8 tensor cores through djl-moe's grouped GEMMs"
                                + " (E8M0 scales per 1x32 applied in fp32, as Hopper has no MX"
                                + " scaling), on CPU djl-moe emulates the numerics in float32;"
                                + " memory stays float32 either way.%n",
                            100 * expertFlopShare()));
        } else if (precision == TrainingPrecision.FP8) {
            sb.append(
                    String.format(
                            Locale.ROOT,
                            "%nfp8: %.1f%% of the step's FLOPs are routed-expert GEMMs, which run"
                                + " in FP8 with DeepSeek-V3's block scaling (1x128 activation"
                                + " tiles, 128x128 weight blocks, fp32 scales); on a GPU they run"
                                + " on FP8 tensor cores through djl-moe's grouped GEMMs, on CPU"
                                + " djl-moe emulates the numerics in float32; memory stays float32"
                                + " either way.%n",
                            100 * expertFlopShare()));
        }
        return sb.toString();
    }

    private static void memRow(StringBuilder sb, String what, long elements) {
        sb.append(
                String.format(
                        Locale.ROOT,
                        "  %-32s %,18d %10.2f%n",
                        what,
                        elements,
                        elements * MemoryPlan.BYTES / (double) (1L << 30)));
    }

    /**
     * Formats FLOPs with an SI prefix.
     *
     * @param f FLOPs
     * @return e.g. {@code "1.23 TFLOP"}
     */
    public static String flops(double f) {
        String[] units = {"FLOP", "kFLOP", "MFLOP", "GFLOP", "TFLOP", "PFLOP", "EFLOP"};
        int u = 0;
        while (f >= 1000 && u < units.length - 1) {
            f /= 1000;
            u++;
        }
        return String.format(Locale.ROOT, "%.2f %s", f, units[u]);
    }
}
