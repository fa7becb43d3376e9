/*
 * djl-moe: expert-parallel Mixture-of-Experts for the Deep Java Library.
 */
package dev.djlmoe.recipes;

import ai.djl.Device;
import ai.djl.Model;
import ai.djl.ndarray.NDArray;
import ai.djl.ndarray.NDList;
import ai.djl.ndarray.NDManager;
import ai.djl.ndarray.types.Shape;
import ai.djl.nn.Parameter;
import ai.djl.training.DefaultTrainingConfig;
import ai.djl.training.Trainer;
import ai.djl.training.optimizer.Optimizer;
import ai.djl.training.tracker.Tracker;
import ai.djl.util.Pair;
import dev.djlmoe.dist.MultiRank;
import dev.djlmoe.dist.ProcessGroup;
import dev.djlmoe.dist.ProcessGroups;
import dev.djlmoe.dist.RankEnvironment;
import dev.djlmoe.ep.EpContext;
import dev.djlmoe.ep.WireFormat;
import dev.djlmoe.recipes.data.SyntheticBigramSource;
import dev.djlmoe.recipes.data.TokenBatch;
import dev.djlmoe.testing.TestDevice;
import dev.djlmoe.train.EpTrainer;
import dev.djlmoe.train.ParameterInit;
import dev.djlmoe.train.StepResult;
import dev.djlmoe.zoo.hf.HfMoeConfig;
import dev.djlmoe.zoo.hf.HfMoeForCausalLm;
import dev.djlmoe.zoo.nn.CausalLmLoss;
import java.io.BufferedOutputStream;
import java.io.DataOutputStream;
import java.io.IOException;
import java.nio.ByteBuffer;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.List;
import java.util.Locale;
import java.util.Set;
import java.util.zip.CRC32;

/**
 * One rank of the EP-equivalence and determinism tests (started by {@code EpEquivalenceTest}
 * through {@link MultiRank}). Modes:
 *
 * <ul>
 *   <li>{@code curve <steps> <batch> <seqLen>}: the pretrain recipe ({@link Pretrain#run}) on the
 *       {@link HfMoeForCausalLm} of the {@code tiny} preset (a 4-layer DeepSeek-V3 with MLA,
 *       group-limited sigmoid routing and a shared expert) and synthetic text, the global batch
 *       split over the ranks. Writes {@code grads-rank<r>.bin} (loss and every averaged gradient of
 *       step 1, with the parameter names and whether each is a routed-expert shard), {@code
 *       losses-rank<r>.txt} (the loss of every step) and {@code replicated-rank<r>.txt} (hashes of
 *       everything that must agree across ranks: the dense parameters and router biases, and the
 *       averaged dense gradients, at the last step).
 *   <li>{@code repeat <reps> <batch> <seqLen>}: the same training step (same parameters, same
 *       batch; the optimizer's learning rate is 0) run {@code reps} times with bf16 dispatch;
 *       prints {@code repeat: <reps> identical, hash <h>} or exits 1. The second half of the
 *       repeats runs under GC pressure (a full GC every 5 ms).
 * </ul>
 *
 * <p>Both modes train on {@link TestDevice}'s device (the CPU, or the rank's GPU with {@code
 * -Ddjlmoe.test.device=gpu}, which {@link MultiRank} passes on; ranks share GPU 0 when there is
 * one) and write it to {@code device-rank<r>.txt} (the device of the first gradient), so the test
 * can tell that no rank fell back to another device.
 *
 * <p>Diagnostics: with {@code EQ_TRACE=1} a curve run appends, per step and parameter, the sum of
 * squares of the averaged gradient to {@code trace-rank<r>.txt}; with {@code EQ_NOEP=1} it runs the
 * MoE layers without the EP buffer (plain autograd, one rank).
 */
public final class EquivalenceRank {

    private EquivalenceRank() {}

    /**
     * Entry point of a rank.
     *
     * @param args the mode and its arguments
     */
    public static void main(String[] args) {
        MultiRank.watchParent();
        int code;
        try {
            code = args[0].equals("repeat") ? repeat(args) : curve(args);
        } catch (Throwable e) {
            e.printStackTrace(System.out);
            code = 2;
        }
        System.out.flush();
        System.exit(code);
    }

    private static int curve(String[] args) throws IOException {
        int steps = Integer.parseInt(args[1]);
        int batch = Integer.parseInt(args[2]);
        int seqLen = Integer.parseInt(args[3]);
        RankEnvironment env = RankEnvironment.fromSystem();
        int rank = env.rank();
        Path dir = MultiRank.outDir();
        PretrainOptions d = PretrainOptions.defaults();
        PretrainOptions opts =
                new PretrainOptions(
                                steps,
                                batch,
                                seqLen,
                                d.learningRate(),
                                Math.min(10, steps),
                                d.maxGradNorm(),
                                d.biasUpdateRate(),
                                TrainingPrecision.FP32,
                                d.seed(),
                                System.getenv().getOrDefault("EQ_NOEP", "").isEmpty(),
                                Math.max(1, steps / 4),
                                null)
                        .withDevice(TestDevice.flag());
        Pretrain.StepObserver observer =
                new Pretrain.StepObserver() {
                    private float lastLoss;

                    @Override
                    public void gradients(int step, EpTrainer trainer, List<NDArray> grads) {
                        if (!System.getenv().getOrDefault("EQ_TRACE", "").isEmpty()) {
                            StringBuilder t = new StringBuilder();
                            List<String> nm = trainer.parameterNames();
                            for (int i = 0; i < grads.size(); i++) {
                                float[] v = grads.get(i).toFloatArray();
                                double ss = 0;
                                boolean finite = true;
                                for (float f : v) {
                                    ss += (double) f * f;
                                    finite &= Float.isFinite(f);
                                }
                                t.append(step)
                                        .append(' ')
                                        .append(nm.get(i))
                                        .append(' ')
                                        .append(ss)
                                        .append(finite ? "" : " NONFINITE")
                                        .append('\n');
                            }
                            try {
                                Files.writeString(
                                        dir.resolve("trace-rank" + rank + ".txt"),
                                        t.toString(),
                                        java.nio.file.StandardOpenOption.CREATE,
                                        java.nio.file.StandardOpenOption.APPEND);
                            } catch (IOException e) {
                                throw new java.io.UncheckedIOException(e);
                            }
                        }
                        try {
                            if (step == 0) {
                                writeGradients(
                                        dir.resolve("grads-rank" + rank + ".bin"), trainer, grads);
                                writeDevice(dir, rank, grads.get(0));
                            }
                            if (step == steps - 1) {
                                writeReplicated(
                                        dir.resolve("replicated-rank" + rank + ".txt"),
                                        trainer,
                                        grads);
                            }
                        } catch (IOException e) {
                            throw new java.io.UncheckedIOException(e);
                        }
                    }

                    private final StringBuilder loads = new StringBuilder();

                    @Override
                    public void stepDone(int step, EpTrainer trainer, StepResult r) {
                        lastLoss = r.loss();
                        loads.append(
                                String.format(
                                        Locale.ROOT,
                                        "%.9g %.9g %s%n",
                                        r.loss(),
                                        r.gradNorm(),
                                        java.util.Arrays.toString(r.expertLoad())));
                        if (step == steps - 1) {
                            try {
                                Files.writeString(
                                        dir.resolve("loads-rank" + rank + ".txt"),
                                        loads.toString());
                            } catch (IOException e) {
                                throw new java.io.UncheckedIOException(e);
                            }
                        }
                        if (step == 0) {
                            try {
                                Files.writeString(
                                        dir.resolve("loss1-rank" + rank + ".txt"),
                                        Float.toString(lastLoss));
                            } catch (IOException e) {
                                throw new java.io.UncheckedIOException(e);
                            }
                        }
                    }
                };
        Pretrain.Result res =
                Pretrain.run(
                        HfMoeConfig.preset("tiny"),
                        new SyntheticBigramSource(256, 4, d.seed()),
                        opts,
                        System.out,
                        StopSignal.none(),
                        observer);
        StringBuilder b = new StringBuilder();
        for (float l : res.losses()) {
            b.append(Float.toString(l)).append('\n');
        }
        Files.writeString(dir.resolve("losses-rank" + rank + ".txt"), b.toString());
        System.out.printf(
                Locale.ROOT,
                "curve: %d steps, loss %.5f -> %.5f%n",
                steps,
                res.firstLoss(),
                res.losses().get(res.losses().size() - 1));
        return 0;
    }

    /** The device this rank trained on, as the device of one of its gradients. */
    private static void writeDevice(Path dir, int rank, NDArray grad) throws IOException {
        writeDevice(dir, rank, grad.getDevice().toString());
    }

    private static void writeDevice(Path dir, int rank, String device) {
        try {
            Files.writeString(dir.resolve("device-rank" + rank + ".txt"), device);
        } catch (IOException e) {
            throw new java.io.UncheckedIOException(e);
        }
    }

    /** Name, expert flag, shape and values of every gradient, plus the step's loss. */
    private static void writeGradients(Path file, EpTrainer trainer, List<NDArray> grads)
            throws IOException {
        List<String> names = trainer.parameterNames();
        Set<String> experts = trainer.expertParameterNames();
        if (names.size() != grads.size()) {
            throw new IllegalStateException(
                    names.size() + " names for " + grads.size() + " gradients");
        }
        try (DataOutputStream out =
                new DataOutputStream(new BufferedOutputStream(Files.newOutputStream(file)))) {
            out.writeInt(grads.size());
            for (int i = 0; i < grads.size(); i++) {
                NDArray g = grads.get(i);
                out.writeUTF(names.get(i));
                out.writeBoolean(experts.contains(names.get(i)));
                long[] shape = g.getShape().getShape();
                out.writeInt(shape.length);
                for (long s : shape) {
                    out.writeLong(s);
                }
                float[] v = g.toFloatArray();
                out.writeInt(v.length);
                for (float f : v) {
                    out.writeFloat(f);
                }
            }
        }
    }

    /** Hashes of the state every rank must hold identically. */
    private static void writeReplicated(Path file, EpTrainer trainer, List<NDArray> grads)
            throws IOException {
        Set<String> experts = trainer.expertParameterNames();
        CRC32 params = new CRC32();
        int n = 0;
        for (Pair<String, Parameter> p : trainer.trainer().getModel().getBlock().getParameters()) {
            if (experts.contains(p.getKey()) || !p.getValue().isInitialized()) {
                continue;
            }
            params.update(p.getKey().getBytes(java.nio.charset.StandardCharsets.UTF_8));
            params.update(p.getValue().getArray().toByteArray());
            n++;
        }
        CRC32 dense = new CRC32();
        List<String> names = trainer.parameterNames();
        for (int i = 0; i < grads.size(); i++) {
            if (!experts.contains(names.get(i))) {
                dense.update(grads.get(i).toByteArray());
            }
        }
        Files.writeString(
                file,
                String.format(
                        Locale.ROOT,
                        "replicated parameters (%d, router biases included) %08x%n"
                                + "averaged dense gradients %08x%n",
                        n,
                        params.getValue(),
                        dense.getValue()));
    }

    private static int repeat(String[] args) {
        int reps = Integer.parseInt(args[1]);
        int batch = Integer.parseInt(args[2]);
        int seqLen = Integer.parseInt(args[3]);
        HfMoeConfig config = HfMoeConfig.preset("tiny");
        SyntheticBigramSource source = new SyntheticBigramSource(256, 4, 42);
        RankEnvironment env = RankEnvironment.fromSystem();
        try (ProcessGroup group = ProcessGroups.create(env);
                EpContext ctx =
                        EpContext.builder()
                                .setProcessGroup(group)
                                .optDispatchWire(WireFormat.BF16)
                                .optCombineWire(WireFormat.BF16)
                                .build();
                Model model = Model.newInstance("moe-lm", TestDevice.device(), "PyTorch")) {
            model.setBlock(
                    HfMoeForCausalLm.builder()
                            .setConfig(config)
                            .optContext(ctx)
                            .optSeqAuxAlpha(PretrainOptions.SEQ_AUX_ALPHA)
                            .build());
            DefaultTrainingConfig tc =
                    new DefaultTrainingConfig(new CausalLmLoss())
                            .optOptimizer(
                                    Optimizer.sgd()
                                            .setLearningRateTracker(Tracker.fixed(0f))
                                            .build())
                            .optDevices(new Device[] {TestDevice.device()});
            try (Trainer trainer = model.newTrainer(tc)) {
                int w = group.worldSize();
                trainer.initialize(new Shape(batch / w, seqLen));
                ParameterInit.reinitialize(model.getBlock(), 42);
                EpTrainer ep =
                        EpTrainer.builder()
                                .setTrainer(trainer)
                                .optContext(ctx)
                                .optMaxGradNorm(1f)
                                .build();
                TokenBatch b = source.batch(0, batch, seqLen).shard(group.rank(), w);
                long first = 0;
                StringBuilder device = new StringBuilder();
                Thread gc = null;
                for (int rep = 0; rep < reps; rep++) {
                    if (rep == reps / 2) {
                        // The second half runs under GC pressure: memory that DJL lets the garbage
                        // collector free while autograd still uses it (see Autograd.scalar) turns
                        // into changed bits here.
                        gc = gcPressure(5);
                    }
                    CRC32 crc = new CRC32();
                    try (NDManager sm = trainer.getManager().newSubManager()) {
                        Shape shape = new Shape(b.batch(), b.seqLen());
                        NDList data = new NDList(sm.create(b.inputs(), shape));
                        NDList labels = new NDList(sm.create(b.labels(), shape));
                        StepResult r =
                                ep.stepWithGradientHook(
                                        data,
                                        labels,
                                        grads -> {
                                            grads.forEach(g -> crc.update(g.toByteArray()));
                                            if (device.isEmpty()) {
                                                device.append(grads.get(0).getDevice());
                                            }
                                        });
                        crc.update(
                                ByteBuffer.allocate(8)
                                        .putFloat(r.loss())
                                        .putFloat(r.gradNorm())
                                        .array());
                    }
                    long h = crc.getValue();
                    if (rep == 0) {
                        first = h;
                    } else if (h != first) {
                        System.out.printf(
                                Locale.ROOT,
                                "repeat %d: hash %08x differs from the first step's %08x%n",
                                rep,
                                h,
                                first);
                        return 1;
                    }
                }
                if (gc != null) {
                    gc.interrupt();
                }
                writeDevice(MultiRank.outDir(), group.rank(), device.toString());
                System.out.printf(
                        Locale.ROOT,
                        "repeat: %d identical (the last %d under GC pressure), hash %08x%n",
                        reps,
                        reps - reps / 2,
                        first);
                return 0;
            }
        }
    }

    /** Starts a daemon thread that asks for a full GC every {@code millis} ms. */
    static Thread gcPressure(long millis) {
        Thread t =
                new Thread(
                        () -> {
                            while (!Thread.currentThread().isInterrupted()) {
                                System.gc();
                                try {
                                    Thread.sleep(millis);
                                } catch (InterruptedException e) {
                                    return;
                                }
                            }
                        },
                        "gc-pressure");
        t.setDaemon(true);
        t.start();
        return t;
    }
}
