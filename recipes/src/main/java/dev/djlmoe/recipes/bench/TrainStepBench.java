/*
 * djl-moe: expert-parallel Mixture-of-Experts for the Deep Java Library.
 */
package dev.djlmoe.recipes.bench;

import ai.djl.Device;
import ai.djl.ndarray.NDArray;
import ai.djl.ndarray.types.Shape;
import dev.djlmoe.dist.RankEnvironment;
import dev.djlmoe.nativeep.cuda.CudaDeviceInfo;
import dev.djlmoe.recipes.DeviceFlag;
import dev.djlmoe.recipes.Pretrain;
import dev.djlmoe.recipes.PretrainOptions;
import dev.djlmoe.recipes.StopSignal;
import dev.djlmoe.recipes.TrainingPrecision;
import dev.djlmoe.recipes.data.RandomTokenSource;
import dev.djlmoe.recipes.plan.TrainingPlan;
import dev.djlmoe.train.CheckpointableAdamW;
import dev.djlmoe.train.EpTrainer;
import dev.djlmoe.train.StepResult;
import dev.djlmoe.zoo.hf.HfMoeConfig;
import java.io.OutputStream;
import java.io.PrintStream;
import java.nio.file.Path;
import java.util.ArrayList;
import java.util.Arrays;
import java.util.LinkedHashMap;
import java.util.List;
import java.util.Locale;
import java.util.Map;

/**
 * The training step of the {@code pretrain} recipe on one rank, timed: the same code a user's run
 * executes ({@link Pretrain}: the model on its device, the EP training step with the tape, the
 * gradient clipping, AdamW, aux-loss-free balancing, the recipe's defaults for all of them), on
 * uniformly random tokens, warm-up steps and then timed steps.
 *
 * <p>Per timed step: the wall time from the end of the previous step to the end of this one, each
 * end taken after the device finished its queued work (a one-element copy to the host, which on a
 * GPU waits for the stream libtorch and the EP kernels run on), so it holds the whole loop
 * iteration a pre-training run makes. Model FLOPs are {@link TrainingPlan}'s: 3 forwards (forward
 * plus a backward of twice its cost) of the matrix products, per token times the step's tokens;
 * model FLOP utilisation (MFU) divides the FLOP rate by the GPU's dense peak (bf16 tensor cores,
 * the usual denominator, and TF32, what float32 products reach with TF32 allowed). Memory on a GPU
 * is {@code cudaMemGetInfo}'s total minus free after the timed steps: libtorch's caching allocator
 * keeps what it once reserved, so this is its peak reservation, plus the CUDA context, library
 * workspaces and the EP buffer, as a process's footprint on the device is usually reported; the
 * figure before the model was built is printed beside it.
 */
public final class TrainStepBench {

    /** The environment variable with which libtorch runs float32 matrix products in TF32. */
    public static final String TF32_ENV = "TORCH_ALLOW_TF32_CUBLAS_OVERRIDE";

    /** Steps after the timed ones with {@code --profile}: the phase step and the operator step. */
    public static final int PROFILE_STEPS = 2;

    private TrainStepBench() {}

    /**
     * Benchmark settings.
     *
     * @param modelName how the model was named (a preset or a file), for the report
     * @param config the model (after any layer-count override)
     * @param batch sequences per step
     * @param seqLen tokens per sequence
     * @param device {@code cpu}, {@code gpu} or {@code auto} (as {@code pretrain --device})
     * @param precision the recipe's precision
     * @param warmup untimed steps first (at least 1: the first step also builds the engine's
     *     kernels and caches)
     * @param steps timed steps
     * @param peak the GPU's peak rates, or null to look them up by the GPU's name
     * @param seed fixes the initial weights and the tokens
     */
    public record Options(
            String modelName,
            HfMoeConfig config,
            int batch,
            int seqLen,
            String device,
            TrainingPrecision precision,
            int warmup,
            int steps,
            GpuPeak peak,
            long seed) {

        /**
         * Checks the settings.
         *
         * @throws IllegalArgumentException naming the flag, its value and the limit
         */
        public void validate() {
            if (config == null || precision == null) {
                throw new IllegalArgumentException(
                        "bench step: a model and a precision are needed");
            }
            if (batch < 1) {
                throw new IllegalArgumentException("--batch " + batch + " must be >= 1");
            }
            if (seqLen < 2) {
                throw new IllegalArgumentException("--seq-len " + seqLen + " must be >= 2");
            }
            if ((long) batch * seqLen > Integer.MAX_VALUE) {
                throw new IllegalArgumentException(
                        "--batch "
                                + batch
                                + " x --seq-len "
                                + seqLen
                                + " tokens exceed "
                                + Integer.MAX_VALUE);
            }
            if (warmup < 1) {
                throw new IllegalArgumentException(
                        "--warmup "
                                + warmup
                                + " must be >= 1 (the first step also builds kernels and caches, so"
                                + " it is never timed)");
            }
            if (steps < 1) {
                throw new IllegalArgumentException("--steps " + steps + " must be >= 1");
            }
            if ((long) warmup + steps > Integer.MAX_VALUE) {
                throw new IllegalArgumentException(
                        "--warmup "
                                + warmup
                                + " + --steps "
                                + steps
                                + " exceed "
                                + Integer.MAX_VALUE);
            }
        }

        /**
         * The recipe's settings for this benchmark: {@code pretrain}'s defaults (AdamW, clipping,
         * balancing, balance loss) with this batch, precision, device and step count, and no files.
         *
         * @return the options
         */
        public PretrainOptions pretrainOptions() {
            return pretrainOptions(0);
        }

        /**
         * The recipe's settings with {@code extra} steps after the timed ones (the profile's).
         *
         * @param extra steps run after the timed ones
         * @return the options
         */
        public PretrainOptions pretrainOptions(int extra) {
            PretrainOptions d = PretrainOptions.defaults();
            return new PretrainOptions(
                    warmup + steps + extra,
                    batch,
                    seqLen,
                    d.learningRate(),
                    d.warmupSteps(),
                    d.maxGradNorm(),
                    d.biasUpdateRate(),
                    precision,
                    seed,
                    true,
                    Integer.MAX_VALUE,
                    null,
                    d.weightDecay(),
                    d.seqAuxAlpha(),
                    PretrainOptions.NO_CHECKPOINTS,
                    null,
                    0,
                    null,
                    device);
        }

        /**
         * The plan whose FLOP count the benchmark uses.
         *
         * @return the plan of one rank
         */
        public TrainingPlan plan() {
            return new TrainingPlan(config, 1, batch, seqLen, precision);
        }
    }

    /**
     * What was measured.
     *
     * @param options the settings
     * @param device the device trained on
     * @param deviceName the GPU's name, or the CPU's core count
     * @param tf32 whether float32 matrix products ran in TF32 ({@link #TF32_ENV})
     * @param fusedAdamW whether AdamW ran as one pass per parameter on the GPU
     * @param parameters parameters of the model as built (all on this one rank)
     * @param stepMillis wall time of each timed step
     * @param losses the loss of every step, warm-up included
     * @param epShare share of the timed steps' time in EP dispatch and combine
     * @param peak the GPU's peak rates, or null (CPU, or a GPU not in {@link GpuPeak}'s table)
     * @param memoryBefore device memory in use before the model was built (bytes; -1 on the CPU)
     * @param memoryAfter device memory in use after the timed steps (bytes; -1 on the CPU)
     * @param memoryTotal the device's memory (bytes; -1 on the CPU)
     * @param profile the profile of the extra steps ({@code --profile}), or null
     */
    public record Result(
            Options options,
            Device device,
            String deviceName,
            boolean tf32,
            boolean fusedAdamW,
            long parameters,
            double[] stepMillis,
            float[] losses,
            double epShare,
            GpuPeak peak,
            long memoryBefore,
            long memoryAfter,
            long memoryTotal,
            StepProfile profile) {

        /**
         * @return tokens of one step
         */
        public long tokensPerStep() {
            return (long) options.batch() * options.seqLen();
        }

        /**
         * @return mean wall time of a timed step, ms
         */
        public double meanMillis() {
            return Arrays.stream(stepMillis).average().orElse(Double.NaN);
        }

        /**
         * @return median wall time of a timed step, ms
         */
        public double medianMillis() {
            double[] c = stepMillis.clone();
            Arrays.sort(c);
            int n = c.length;
            return n % 2 == 1 ? c[n / 2] : (c[n / 2 - 1] + c[n / 2]) / 2;
        }

        /**
         * @return tokens over the timed steps' total time
         */
        public double tokensPerSecond() {
            return tokensPerStep() / (meanMillis() / 1e3);
        }

        /**
         * @return model FLOPs of one step ({@link TrainingPlan#stepFlopsPerRank()})
         */
        public double stepFlops() {
            return options.plan().stepFlopsPerRank();
        }

        /**
         * @return model FLOPs per second over the timed steps
         */
        public double flopsPerSecond() {
            return stepFlops() / (meanMillis() / 1e3);
        }

        /**
         * @return FLOP rate over the bf16 dense peak, or NaN without a peak
         */
        public double mfuBf16() {
            return peak == null ? Double.NaN : flopsPerSecond() / peak.bf16();
        }

        /**
         * @return FLOP rate over the TF32 dense peak, or NaN without a peak
         */
        public double mfuTf32() {
            return peak == null ? Double.NaN : flopsPerSecond() / peak.tf32();
        }

        /**
         * Returns the figures as JSON-ready keys and values (NaN and missing figures as null).
         *
         * @return the map
         */
        public Map<String, Object> toMap() {
            Map<String, Object> m = describe(options);
            m.put("device", device.toString());
            m.put("device_name", deviceName);
            m.put("tf32", tf32);
            m.put("fused_adamw", fusedAdamW);
            m.put("parameters", parameters);
            List<Object> ms = new ArrayList<>();
            for (double v : stepMillis) {
                ms.add(v);
            }
            m.put("step_ms", ms);
            m.put("mean_step_ms", meanMillis());
            m.put("median_step_ms", medianMillis());
            m.put("tokens_per_second", tokensPerSecond());
            m.put("model_tflops_per_second", flopsPerSecond() / 1e12);
            m.put("peak_gpu", peak == null ? null : peak.gpu());
            m.put("peak_bf16_tflops", peak == null ? null : peak.bf16() / 1e12);
            m.put("peak_tf32_tflops", peak == null ? null : peak.tf32() / 1e12);
            m.put("mfu_bf16_peak", finite(mfuBf16()));
            m.put("mfu_tf32_peak", finite(mfuTf32()));
            m.put("memory_in_use_before_bytes", memoryBefore < 0 ? null : memoryBefore);
            m.put("memory_in_use_after_bytes", memoryAfter < 0 ? null : memoryAfter);
            m.put("memory_total_bytes", memoryTotal < 0 ? null : memoryTotal);
            m.put(
                    "memory_note",
                    memoryAfter < 0
                            ? "not measured on the CPU"
                            : "cudaMemGetInfo total - free after the timed steps: libtorch's"
                                    + " caching allocator's peak reservation plus the CUDA context,"
                                    + " library workspaces and the EP buffer");
            List<Object> l = new ArrayList<>();
            for (float v : losses) {
                l.add(Float.isFinite(v) ? (Object) (double) v : null);
            }
            m.put("losses", l);
            m.put("ep_share", epShare);
            if (profile != null) {
                m.put("profile", profile.toMap());
            }
            return m;
        }
    }

    /**
     * The facts of a benchmark known before it runs (model, shape, FLOP count), as JSON-ready keys
     * and values: the start of {@link Result#toMap()}, and what a failed run reports beside its
     * error.
     *
     * @param o the settings
     * @return the map
     */
    public static Map<String, Object> describe(Options o) {
        HfMoeConfig c = o.config();
        TrainingPlan plan = o.plan();
        Map<String, Object> m = new LinkedHashMap<>();
        m.put("benchmark", "djl-moe bench step");
        m.put("model", o.modelName());
        m.put("model_type", c.family().modelType());
        m.put("layers", (long) c.numLayers());
        m.put("moe_layers", (long) c.numMoeLayers());
        m.put("parameters_config", c.numParameters());
        m.put("device_flag", o.device());
        m.put("precision", o.precision().flag());
        m.put("batch", (long) o.batch());
        m.put("seq_len", (long) o.seqLen());
        m.put("tokens_per_step", (long) o.batch() * o.seqLen());
        m.put("warmup_steps", (long) o.warmup());
        m.put("timed_steps", (long) o.steps());
        m.put("forward_flops_per_token", plan.forwardFlopsPerTokenTotal());
        m.put("step_flops", plan.stepFlopsPerRank());
        m.put(
                "flops_note",
                "TrainingPlan: matrix products only, 2 FLOPs per multiply-add, a step"
                        + " = 3 forwards (backward = 2 x forward), attention scores over the full"
                        + " sequence");
        return m;
    }

    /**
     * Runs the benchmark on this process (one rank) and prints its report.
     *
     * @param o the settings
     * @param out where the report goes
     * @param recipeLog where the recipe's own log goes (the model line, progress), or null
     * @return the figures
     * @throws IllegalArgumentException for bad settings, or when started as one of several ranks
     */
    public static Result run(Options o, PrintStream out, PrintStream recipeLog) {
        return run(o, out, recipeLog, false);
    }

    /**
     * Runs the benchmark on this process (one rank), prints its report and, when asked, a {@link
     * StepMemoryReport} of the steps after the first (bytes by category at the points of a step).
     *
     * @param o the settings
     * @param out where the report goes
     * @param recipeLog where the recipe's own log goes (the model line, progress), or null
     * @param memoryReport whether to measure and print where the step's memory is
     * @return the figures
     * @throws IllegalArgumentException for bad settings, or when started as one of several ranks
     */
    public static Result run(
            Options o, PrintStream out, PrintStream recipeLog, boolean memoryReport) {
        return run(o, out, recipeLog, memoryReport, null);
    }

    /**
     * Runs the benchmark on this process (one rank), prints its report and, when asked, a {@link
     * StepMemoryReport} and a {@link StepProfile} of two extra steps after the timed ones.
     *
     * @param o the settings
     * @param out where the report goes
     * @param recipeLog where the recipe's own log goes (the model line, progress), or null
     * @param memoryReport whether to measure and print where the step's memory is
     * @param profileDir where the profile goes ({@code --profile}), or null for none
     * @return the figures
     * @throws IllegalArgumentException for bad settings, when started as one of several ranks, or
     *     when the profile directory cannot be written to
     */
    public static Result run(
            Options o,
            PrintStream out,
            PrintStream recipeLog,
            boolean memoryReport,
            Path profileDir) {
        o.validate();
        RankEnvironment env = RankEnvironment.fromSystem();
        if (env.worldSize() != 1) {
            throw new IllegalArgumentException(
                    "bench step runs on one rank; it was started as rank "
                            + env.rank()
                            + " of "
                            + env.worldSize()
                            + " (run it without launch)");
        }
        PretrainOptions opts = o.pretrainOptions(profileDir == null ? 0 : PROFILE_STEPS);
        opts.validate();
        Device device = DeviceFlag.resolve(opts.device(), env.localRank());
        StepProfile profile =
                profileDir == null ? null : StepProfile.prepare(profileDir, device.isGpu());
        CudaDeviceInfo before = device.isGpu() ? CudaDeviceInfo.query(device.getDeviceId()) : null;
        GpuPeak peak =
                o.peak() != null ? o.peak() : before == null ? null : GpuPeak.of(before.name());
        String deviceName =
                before != null
                        ? before.name() + ", " + before.smCount() + " SMs"
                        : "CPU, " + Runtime.getRuntime().availableProcessors() + " cores";
        String tf32Env = System.getenv(TF32_ENV);
        boolean tf32 = device.isGpu() && "1".equals(tf32Env);
        boolean fusedAdamW = device.isGpu() && CheckpointableAdamW.fusedOnGpu();
        header(o, device, deviceName, tf32, fusedAdamW, out);

        int total = o.warmup() + o.steps();
        int lastTimed = total - 1;
        double[] millis = new double[o.steps()];
        float[] losses = new float[total];
        long[] ep = new long[2];
        long[] memAfter = {-1, -1};
        long[] params = {0};
        StepMemoryReport[] memory = {null};
        boolean[] timedDone = {false};
        Pretrain.StepObserver timer =
                new Pretrain.StepObserver() {
                    private NDArray probe;
                    private long last;
                    private Runnable sync;

                    @Override
                    public boolean seesGradients() {
                        return false; // the step runs as in a user's pretrain
                    }

                    @Override
                    public void stepDone(int step, EpTrainer trainer, StepResult r) {
                        if (step > lastTimed) {
                            profiled(step, trainer);
                            return;
                        }
                        if (probe == null) {
                            probe = trainer.trainer().getManager().zeros(new Shape(1));
                            // waits for the device's queued work (on the CPU nothing is queued)
                            sync = device.isGpu() ? probe::toFloatArray : null;
                            params[0] = countParameters(trainer);
                            if (memoryReport) {
                                memory[0] = new StepMemoryReport(trainer);
                                trainer.setStepProbe(memory[0]);
                            }
                        }
                        probe.toFloatArray(); // waits for the device's queued work
                        long now = System.nanoTime();
                        losses[step] = r.loss();
                        int timed = step - o.warmup();
                        if (timed >= 0) {
                            millis[timed] = (now - last) / 1e6;
                            ep[0] += r.epNanos();
                            ep[1] += r.stepNanos();
                            out.printf(
                                    Locale.ROOT,
                                    "  step %d: %.1f ms, loss %.4f%n",
                                    step + 1,
                                    millis[timed],
                                    r.loss());
                        }
                        if (step == lastTimed && device.isGpu()) {
                            CudaDeviceInfo after = CudaDeviceInfo.query(device.getDeviceId());
                            memAfter[0] = after.usedBytes();
                            memAfter[1] = after.totalBytes();
                        }
                        if (step == lastTimed) {
                            timedDone[0] = true;
                        }
                        if (step == lastTimed && profile != null) {
                            trainer.setStepProbe(null); // the memory report's work is no phase
                            last = System.nanoTime();
                            profile.startPhases(sync);
                            return;
                        }
                        last = System.nanoTime();
                    }

                    /** The end of an extra step: the phase step, then the operator step. */
                    private void profiled(int step, EpTrainer trainer) {
                        if (step == lastTimed + 1) {
                            profile.startOperators(sync);
                        } else {
                            profile.finish(sync, Arrays.stream(millis).average().orElse(0));
                        }
                    }
                };
        PrintStream log =
                recipeLog != null ? recipeLog : new PrintStream(OutputStream.nullOutputStream());
        try {
            Pretrain.run(
                    new Pretrain.Job(
                            "pretrain",
                            o.config(),
                            null,
                            new RandomTokenSource(
                                    (int) Math.min(Integer.MAX_VALUE, o.config().vocabSize()),
                                    o.seed()),
                            opts,
                            null,
                            List.of(),
                            Map.of()),
                    log,
                    StopSignal.none(),
                    timer,
                    env);
        } catch (RuntimeException e) {
            if (profile == null || !timedDone[0]) {
                throw e;
            }
            profile.failed(e); // in a profiled step: the timed steps' figures stand
        } catch (Error e) {
            if (profile != null) {
                profile.abandon();
            }
            throw e;
        }
        Result res =
                new Result(
                        o,
                        device,
                        deviceName,
                        tf32,
                        fusedAdamW,
                        params[0],
                        millis,
                        losses,
                        ep[1] == 0 ? 0 : (double) ep[0] / ep[1],
                        peak,
                        before == null ? -1 : before.usedBytes(),
                        memAfter[0],
                        before == null ? -1 : before.totalBytes(),
                        profile);
        report(res, out);
        if (memory[0] != null) {
            memory[0].print(out);
        }
        if (profile != null) {
            profile.print(out);
        }
        return res;
    }

    private static void header(
            Options o,
            Device device,
            String deviceName,
            boolean tf32,
            boolean fusedAdamW,
            PrintStream out) {
        HfMoeConfig c = o.config();
        out.printf(
                Locale.ROOT,
                "bench step: %s (%s, %d layers: %d dense + %d MoE, H=%d, %d routed experts top-%d,"
                        + " %d shared), %,d parameters%n",
                o.modelName(),
                c.family().modelType(),
                c.numLayers(),
                c.numLayers() - c.numMoeLayers(),
                c.numMoeLayers(),
                c.hiddenSize(),
                c.numExperts(),
                c.topK(),
                c.numSharedExperts(),
                c.numParameters());
        out.printf(
                Locale.ROOT,
                "  device %s: %s; precision %s; float32 matrix products %s%n",
                device,
                deviceName,
                o.precision().flag(),
                !device.isGpu()
                        ? "on the CPU"
                        : tf32
                                ? "in TF32 (" + TF32_ENV + "=1)"
                                : "in IEEE float32 (TF32 off; " + TF32_ENV + "=1 allows it)");
        out.printf(
                Locale.ROOT,
                "  %d x %d random tokens per step; the pretrain recipe's step (EP at W=1, AdamW,"
                        + " clipping, balancing); %d warm-up + %d timed steps%n",
                o.batch(),
                o.seqLen(),
                o.warmup(),
                o.steps());
        out.printf(
                Locale.ROOT,
                "  AdamW: %s%n",
                fusedAdamW
                        ? "one pass over memory per parameter on the GPU ("
                                + CheckpointableAdamW.FUSED_ENV
                                + "=0 for the engine's own update)"
                        : "the engine's adamUpdate");
    }

    private static void report(Result r, PrintStream out) {
        Options o = r.options();
        TrainingPlan plan = o.plan();
        out.printf(
                Locale.ROOT,
                "  parameters    %,d as built (%,d by the config's count)%n",
                r.parameters(),
                o.config().numParameters());
        out.printf(
                Locale.ROOT,
                "  step time     mean %.1f ms, median %.1f ms over %d steps%n",
                r.meanMillis(),
                r.medianMillis(),
                o.steps());
        out.printf(Locale.ROOT, "  tokens/s      %,.0f%n", r.tokensPerSecond());
        out.printf(
                Locale.ROOT,
                "  model FLOPs   %s per step (3 x %s forward per token x %d tokens;"
                        + " TrainingPlan)%n",
                TrainingPlan.flops(r.stepFlops()),
                TrainingPlan.flops(plan.forwardFlopsPerTokenTotal()),
                r.tokensPerStep());
        out.printf(Locale.ROOT, "  achieved      %s/s%n", TrainingPlan.flops(r.flopsPerSecond()));
        if (r.peak() != null) {
            out.printf(
                    Locale.ROOT,
                    "  MFU           %.1f%% of the dense bf16 peak (%.1f TFLOP/s, %s; the MFU"
                            + " figure); %.1f%% of the dense TF32 peak (%.1f TFLOP/s)%n",
                    100 * r.mfuBf16(),
                    r.peak().bf16() / 1e12,
                    r.peak().gpu(),
                    100 * r.mfuTf32(),
                    r.peak().tf32() / 1e12);
        } else {
            out.printf(
                    Locale.ROOT,
                    "  MFU           n/a (%s: no known peak; --peak-tflops"
                            + " BF16[,TF32] gives one)%n",
                    r.device().isGpu() ? "GPU not in the table" : "the CPU");
        }
        if (r.memoryAfter() >= 0) {
            out.printf(
                    Locale.ROOT,
                    "  GPU memory    %.2f GiB in use after the timed steps, of %.2f GiB"
                            + " (cudaMemGetInfo total - free: the caching allocator's peak"
                            + " reservation + CUDA context + workspaces + EP buffer); %.2f GiB"
                            + " before the model%n",
                    gib(r.memoryAfter()),
                    gib(r.memoryTotal()),
                    gib(r.memoryBefore()));
        }
        float first = r.losses()[0];
        float last = r.losses()[r.losses().length - 1];
        out.printf(
                Locale.ROOT,
                "  loss          %.4f -> %.4f (random tokens: ln V = %.4f)%n",
                first,
                last,
                Math.log(o.config().vocabSize()));
        out.printf(
                Locale.ROOT,
                "  EP share      %.1f%% of the timed steps in dispatch and" + " combine%n",
                100 * r.epShare());
    }

    private static double gib(long bytes) {
        return bytes / (double) (1L << 30);
    }

    private static Object finite(double v) {
        return Double.isFinite(v) ? v : null;
    }

    private static long countParameters(EpTrainer trainer) {
        long n = 0;
        for (var p : trainer.trainer().getModel().getBlock().getParameters()) {
            if (p.getValue().isInitialized()) {
                n += p.getValue().getArray().size();
            }
        }
        return n;
    }
}
