/*
 * djl-moe: expert-parallel Mixture-of-Experts for the Deep Java Library.
 */
package dev.djlmoe.recipes.train;

import ai.djl.Device;
import ai.djl.Model;
import ai.djl.engine.Engine;
import ai.djl.ndarray.types.Shape;
import ai.djl.training.DefaultTrainingConfig;
import ai.djl.training.Trainer;
import ai.djl.training.listener.TrainingListener;
import ai.djl.training.tracker.CosineTracker;
import ai.djl.training.tracker.Tracker;
import ai.djl.training.tracker.WarmUpTracker;
import dev.djlmoe.dist.ProcessGroup;
import dev.djlmoe.dist.ProcessGroups;
import dev.djlmoe.dist.RankEnvironment;
import dev.djlmoe.ep.EpContext;
import dev.djlmoe.recipes.DeviceFlag;
import dev.djlmoe.recipes.Pretrain;
import dev.djlmoe.recipes.PretrainOptions;
import dev.djlmoe.recipes.checkpoint.TrainingCheckpoint;
import dev.djlmoe.train.CheckpointableAdamW;
import dev.djlmoe.train.EpTrainer;
import dev.djlmoe.train.ParameterInit;
import dev.djlmoe.zoo.hf.HfCheckpoints;
import dev.djlmoe.zoo.hf.HfMoeForCausalLm;
import dev.djlmoe.zoo.nn.CausalLmLoss;
import java.io.IOException;
import java.util.ArrayList;
import java.util.List;

/**
 * What a run trains with on this rank, opened in order and closed in reverse: the process group,
 * the EP context, the model (fresh from the seed, a Hugging Face checkpoint to fine-tune, or the
 * resumed checkpoint), AdamW with warm-up and cosine decay, the DJL trainer (holding the job's own
 * {@link TrainingListener}s, which it tells of the training's begin and end as DJL does) and the EP
 * training step over it.
 */
public final class TrainingSession implements AutoCloseable {

    private final List<AutoCloseable> opened = new ArrayList<>();
    private ProcessGroup group;
    private HfMoeForCausalLm model;
    private Model djlModel;
    private Tracker learningRate;
    private CheckpointableAdamW optimizer;
    private Trainer trainer;
    private EpTrainer ep;
    private long start;

    private TrainingSession() {}

    /**
     * Opens the session of a job on this rank (collective: every rank opens it alike).
     *
     * @param job the job
     * @param plan where the run starts
     * @param env this rank's place in the job
     * @return the session, to be closed after the run
     * @throws IOException when a checkpoint cannot be read
     */
    public static TrainingSession open(Pretrain.Job job, ResumePlan plan, RankEnvironment env)
            throws IOException {
        TrainingSession s = new TrainingSession();
        try {
            s.build(job, plan, env);
            return s;
        } catch (IOException | RuntimeException | Error e) {
            try {
                s.close();
            } catch (RuntimeException suppressed) {
                e.addSuppressed(suppressed);
            }
            throw e;
        }
    }

    private void build(Pretrain.Job job, ResumePlan plan, RankEnvironment env) throws IOException {
        PretrainOptions opts = job.opts();
        Engine.getInstance().setRandomSeed((int) opts.seed());
        Device device = DeviceFlag.resolve(opts.device(), env.localRank());
        group = keep(ProcessGroups.create(env));
        EpContext ctx =
                opts.useEp()
                        ? keep(
                                EpContext.builder()
                                        .setProcessGroup(group)
                                        .optDispatchWire(opts.precision().wire())
                                        .optExpertAlignment(opts.precision().expertAlignment())
                                        .build())
                        : null;
        djlModel = keep(Model.newInstance("moe-lm", device, "PyTorch"));
        model =
                HfMoeForCausalLm.builder()
                        .setConfig(job.config())
                        .optContext(ctx)
                        .optSeqAuxAlpha(opts.seqAuxAlpha())
                        .optExpertPrecision(opts.precision().experts())
                        .build();
        djlModel.setBlock(model);
        if (plan.from() != null) {
            HfCheckpoints.loadWeights(model, plan.from(), djlModel.getNDManager(), true);
        } else if (job.initFrom() != null) {
            HfCheckpoints.loadWeights(model, job.initFrom(), djlModel.getNDManager(), false);
        }
        learningRate = schedule(opts);
        optimizer =
                CheckpointableAdamW.builder()
                        .optLearningRateTracker(learningRate)
                        .optWeightDecays(opts.weightDecay())
                        .build();
        DefaultTrainingConfig tc =
                new DefaultTrainingConfig(new CausalLmLoss())
                        .optOptimizer(optimizer)
                        .optDevices(new Device[] {device});
        if (!job.listeners().isEmpty()) {
            tc.addTrainingListeners(job.listeners().toArray(new TrainingListener[0]));
        }
        trainer = keep(djlModel.newTrainer(tc));
        trainer.initialize(new Shape(opts.batch() / group.worldSize(), opts.seqLen()));
        if (plan.from() == null && job.initFrom() == null) {
            ParameterInit.reinitialize(model, opts.seed());
        }
        if (plan.from() != null) {
            int restored =
                    TrainingCheckpoint.loadOptimizer(plan.from(), model, optimizer, group.rank());
            start = plan.state().step();
            if (start > 0 && restored == 0) {
                throw new IllegalArgumentException(
                        "--resume "
                                + plan.from()
                                + ": the checkpoint of step "
                                + start
                                + " holds no optimizer state (optimizer-*.safetensors)");
            }
        }
        ep =
                EpTrainer.builder()
                        .setTrainer(trainer)
                        .optContext(ctx)
                        .optOptimizer(optimizer)
                        .optMaxGradNorm(opts.maxGradNorm())
                        .optBiasUpdateRate(opts.biasUpdateRate())
                        .build();
    }

    private <T extends AutoCloseable> T keep(T resource) {
        opened.add(resource);
        return resource;
    }

    /**
     * Warm-up from a hundredth of the peak, then cosine decay to a tenth of it at the last step.
     */
    private static Tracker schedule(PretrainOptions opts) {
        return WarmUpTracker.builder()
                .optWarmUpSteps(opts.warmupSteps())
                .optWarmUpBeginValue(opts.learningRate() / 100f)
                .setMainTracker(
                        CosineTracker.builder()
                                .setBaseValue(opts.learningRate())
                                .optFinalValue(opts.learningRate() / 10f)
                                .setMaxUpdates(Math.max(1, opts.steps()))
                                .build())
                .build();
    }

    /**
     * Returns the process group.
     *
     * @return the group
     */
    public ProcessGroup group() {
        return group;
    }

    /**
     * Returns the model being trained.
     *
     * @return the model block
     */
    public HfMoeForCausalLm model() {
        return model;
    }

    /**
     * Returns the learning-rate schedule (by optimizer update).
     *
     * @return the tracker
     */
    public Tracker learningRate() {
        return learningRate;
    }

    /**
     * Returns the optimizer.
     *
     * @return AdamW
     */
    public CheckpointableAdamW optimizer() {
        return optimizer;
    }

    /**
     * Returns the DJL trainer.
     *
     * @return the trainer
     */
    public Trainer trainer() {
        return trainer;
    }

    /**
     * Returns the EP training step.
     *
     * @return the step
     */
    public EpTrainer ep() {
        return ep;
    }

    /**
     * Returns the steps done before this process started.
     *
     * @return 0, or the resumed checkpoint's step
     */
    public long start() {
        return start;
    }

    /**
     * Returns the parameters this rank holds (its experts and every dense parameter).
     *
     * @return the number of parameter values
     */
    public long parametersPerRank() {
        long n = 0;
        for (var p : model.getParameters()) {
            if (p.getValue().isInitialized()) {
                n += p.getValue().getArray().size();
            }
        }
        return n;
    }

    /**
     * Closes the trainer (its listeners see the training's end), the model, the EP context and the
     * process group, in that order.
     */
    @Override
    public void close() {
        RuntimeException first = null;
        for (int i = opened.size() - 1; i >= 0; i--) {
            try {
                opened.get(i).close();
            } catch (Exception e) {
                RuntimeException r =
                        e instanceof RuntimeException re ? re : new IllegalStateException(e);
                if (first == null) {
                    first = r;
                } else {
                    first.addSuppressed(r);
                }
            }
        }
        opened.clear();
        if (first != null) {
            throw first;
        }
    }
}
