/*
 * djl-moe: expert-parallel Mixture-of-Experts for the Deep Java Library.
 */
package dev.djlmoe.recipes;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertTrue;

import ai.djl.Device;
import dev.djlmoe.nativeep.cuda.CudaDeviceInfo;
import dev.djlmoe.recipes.data.CorpusSource;
import dev.djlmoe.recipes.data.TextCorpus;
import dev.djlmoe.testing.TestDevice;
import dev.djlmoe.train.EpTrainer;
import dev.djlmoe.train.StepResult;
import dev.djlmoe.zoo.hf.HfMoeConfig;
import java.io.OutputStream;
import java.io.PrintStream;
import java.nio.file.Path;
import java.util.ArrayList;
import java.util.List;
import java.util.Locale;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.io.TempDir;

/**
 * GPU memory stays flat over {@link #STEPS} training steps: the pretrain recipe on the {@code tiny}
 * preset at W = 1 on the GPU (the MoE layers through the EP buffer's CUDA backend), the device's
 * used memory (cudaMemGetInfo, which counts what libtorch's caching allocator holds) sampled every
 * {@link #EVERY} steps through the CUDA plug-in ({@link CudaDeviceInfo}, as {@code bench step}
 * reports it). From the sample after {@link #WARM_UP} steps on, no sample may exceed it by more
 * than {@link #GROWTH_LIMIT}: an array kept alive per step (the smallest activation here is about
 * 256 KiB) would add hundreds of MiB over the run.
 *
 * <p>GPU-only: skipped on the CPU (a thousand steps would take minutes of CI, and the CPU has no
 * device memory to sample); run by {@code bin/gpu-java-tests}.
 */
class GpuMemoryTest {

    static final int STEPS = 1000;
    static final int WARM_UP = 100;
    static final int EVERY = 50;
    static final long GROWTH_LIMIT = 64L << 20;

    @Test
    void gpuMemoryStaysFlatOverAThousandTrainingSteps(@TempDir Path tmp) {
        TestDevice.assumeGpu("device memory sampled over 1,000 training steps");
        Device device = TestDevice.device();
        List<long[]> samples = new ArrayList<>(); // {step, used bytes}
        Pretrain.StepObserver sampler =
                new Pretrain.StepObserver() {
                    @Override
                    public void stepDone(int step, EpTrainer t, StepResult r) {
                        int done = step + 1;
                        if (done % EVERY == 0) {
                            samples.add(
                                    new long[] {
                                        done, CudaDeviceInfo.query(device.getDeviceId()).usedBytes()
                                    });
                        }
                    }
                };
        PretrainOptions o =
                PretrainOptions.defaults()
                        .withSteps(STEPS)
                        .withBatch(8, 32)
                        .withRunDir(tmp.resolve("run"))
                        .withLogEvery(STEPS)
                        .withCheckpoints(PretrainOptions.NO_CHECKPOINTS, null, 0)
                        .withDevice(TestDevice.flag());
        Pretrain.Result res =
                Pretrain.run(
                        Pretrain.Job.pretrain(
                                HfMoeConfig.preset("tiny"),
                                new CorpusSource(TextCorpus.embedded(), 0.05, 42),
                                o),
                        new PrintStream(OutputStream.nullOutputStream()),
                        StopSignal.none(),
                        sampler);
        assertEquals(STEPS, res.losses().size(), "steps run");
        assertEquals(STEPS / EVERY, samples.size(), "samples");

        long base = -1;
        long worst = Long.MIN_VALUE;
        long worstStep = -1;
        StringBuilder curve = new StringBuilder();
        for (long[] s : samples) {
            curve.append(String.format(Locale.ROOT, " %d:%.1f", s[0], s[1] / 1048576.0));
            if (s[0] == WARM_UP) {
                base = s[1];
            } else if (s[0] > WARM_UP && s[1] - base > worst) {
                worst = s[1] - base;
                worstStep = s[0];
            }
        }
        String figures =
                String.format(
                        Locale.ROOT,
                        "%s used memory (MiB) by step:%s; largest growth after step %d: %.1f MiB"
                                + " (step %d), limit %d MiB; loss %.4f -> %.4f",
                        device,
                        curve,
                        WARM_UP,
                        worst / 1048576.0,
                        worstStep,
                        GROWTH_LIMIT >> 20,
                        res.firstLoss(),
                        res.losses().get(STEPS - 1));
        System.out.println(figures);
        assertTrue(base > 0, "no sample at step " + WARM_UP + ": " + figures);
        assertTrue(worst <= GROWTH_LIMIT, figures);
        assertTrue(res.losses().get(STEPS - 1) < res.firstLoss(), "did not learn: " + figures);
    }
}
