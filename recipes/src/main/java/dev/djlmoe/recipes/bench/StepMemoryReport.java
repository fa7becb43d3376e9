/*
 * djl-moe: expert-parallel Mixture-of-Experts for the Deep Java Library.
 */
package dev.djlmoe.recipes.bench;

import ai.djl.ndarray.BaseNDManager;
import ai.djl.ndarray.NDArray;
import ai.djl.ndarray.NDManager;
import ai.djl.nn.Parameter;
import ai.djl.pytorch.engine.PtNDArray;
import ai.djl.pytorch.jni.JniUtils;
import dev.djlmoe.core.TorchMemory;
import dev.djlmoe.train.CheckpointableAdamW;
import dev.djlmoe.train.EpTrainer;
import java.io.IOException;
import java.io.PrintStream;
import java.lang.reflect.Field;
import java.nio.charset.StandardCharsets;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.ArrayList;
import java.util.Collections;
import java.util.HashMap;
import java.util.IdentityHashMap;
import java.util.LinkedHashMap;
import java.util.List;
import java.util.Locale;
import java.util.Map;
import java.util.Set;

/**
 * Where the training step's memory is, at the points of one step ({@link EpTrainer.StepProbe}): a
 * diagnostic for {@code bench step --memory-report}, meant for the CPU, where the same Java code
 * runs as on a GPU and the process's resident memory is the engine's live memory.
 *
 * <p>At each point: the bytes of the parameters, of their gradients (libtorch's {@code .grad}, not
 * a DJL array), of AdamW's two moments, and of every other live DJL array (the NDManager tree
 * walked from the engine's system manager, views of one storage counted once by data address),
 * split by the manager that holds them; the process's resident memory (RSS) and its peak since the
 * previous point ({@code VmHWM}, reset through {@code /proc/self/clear_refs}). What the RSS holds
 * beyond the DJL arrays, less what it held so at the first point, is memory only libtorch sees: the
 * tensors autograd saved for the backward, freed temporaries kept by the allocator. Run with {@code
 * MALLOC_MMAP_THRESHOLD_=65536} so that glibc returns freed large blocks at once (the RSS then
 * follows the live bytes) and with a fixed, pre-touched Java heap.
 */
public final class StepMemoryReport implements EpTrainer.StepProbe {

    private static final Field RESOURCES = field("resources");
    private static final Field PARENT = field("parent");

    private final EpTrainer trainer;
    private final Set<NDArray> params = Collections.newSetFromMap(new IdentityHashMap<>());
    private final List<Parameter> paramList = new ArrayList<>();
    private final Map<String, List<Row>> rows = new LinkedHashMap<>();
    private long overhead = -1;
    private String currentPoint;
    private final Map<String, Long> shapes = new HashMap<>();
    private static final boolean TOP = Boolean.getBoolean("djlmoe.memoryReport.shapes");
    private int step;

    /**
     * A report on this trainer's steps; call {@link EpTrainer#setStepProbe} with it.
     *
     * @param trainer the step
     */
    public StepMemoryReport(EpTrainer trainer) {
        this.trainer = trainer;
        for (var p : trainer.trainer().getModel().getBlock().getParameters()) {
            if (p.getValue().isInitialized()) {
                paramList.add(p.getValue());
                params.add(p.getValue().getArray());
            }
        }
        resetPeak();
    }

    /** The figures at one point of one step. */
    private record Row(
            int step,
            String point,
            long params,
            long grads,
            long moments,
            Map<String, Long> others,
            long rss,
            long peak) {

        long visible() {
            long s = params + grads + moments;
            for (long v : others.values()) {
                s += v;
            }
            return s;
        }
    }

    @Override
    public void at(String point) {
        if ("start".equals(point)) {
            step++;
        }
        currentPoint = point;
        shapes.clear();
        long peak = peakRss();
        long rss = rss();
        long p = 0;
        long g = 0;
        long m = 0;
        Set<NDArray> moments = Collections.newSetFromMap(new IdentityHashMap<>());
        CheckpointableAdamW adam = trainer.optimizer();
        for (Parameter param : paramList) {
            NDArray a = param.getArray();
            long bytes = bytes(a);
            p += bytes;
            NDArray grad = JniUtils.getGradient((PtNDArray) a);
            if (grad != null) {
                g += bytes(grad);
                grad.close();
            }
            if (adam != null) {
                CheckpointableAdamW.State s = adam.exportState(param.getId());
                if (s != null) {
                    m += bytes(s.mean()) + bytes(s.variance());
                    moments.add(s.mean());
                    moments.add(s.variance());
                }
            }
        }
        Map<String, Long> others = new LinkedHashMap<>();
        Map<Long, Long> seen = new HashMap<>();
        NDManager modelManager = trainer.trainer().getModel().getNDManager();
        NDManager root = modelManager;
        while (parent(root) != null) {
            root = parent(root);
        }
        walk(root, "other", modelManager, moments, seen, others);
        Row r = new Row(step, point, p, g, m, others, rss, peak);
        if (overhead < 0) {
            overhead = rss - r.visible();
        }
        rows.computeIfAbsent(point, k -> new ArrayList<>()).add(r);
        if (TOP && "forward".equals(point)) {
            System.out.println(
                    "  step " + step + " forward: the largest live step arrays by shape");
            shapes.entrySet().stream()
                    .sorted((x, y) -> Long.compare(y.getValue(), x.getValue()))
                    .limit(25)
                    .forEach(
                            e ->
                                    System.out.printf(
                                            Locale.ROOT,
                                            "    %9.1f MiB  %s%n",
                                            mib(e.getValue()),
                                            e.getKey()));
        }
        resetPeak();
    }

    private void walk(
            NDManager manager,
            String label,
            NDManager modelManager,
            Set<NDArray> moments,
            Map<Long, Long> seen,
            Map<String, Long> others) {
        if (!(manager instanceof BaseNDManager) || !manager.isOpen()) {
            return;
        }
        Map<?, ?> res;
        try {
            res = new HashMap<>((Map<?, ?>) RESOURCES.get(manager));
        } catch (IllegalAccessException e) {
            throw new IllegalStateException(e);
        }
        for (Object o : res.values()) {
            if (o instanceof NDManager sub) {
                String l =
                        sub == modelManager
                                ? "model manager"
                                : label.equals("model manager") || label.startsWith("under model")
                                        ? "under model (step and other sub-managers)"
                                        : label;
                walk(sub, l, modelManager, moments, seen, others);
            } else if (o instanceof NDArray a) {
                if (params.contains(a) || moments.contains(a)) {
                    continue;
                }
                long b = bytes(a);
                if (b == 0) {
                    continue;
                }
                long addr;
                try {
                    addr = TorchMemory.dataAddress(a, "array", a.getDataType());
                } catch (RuntimeException e) {
                    addr = System.identityHashCode(a) | (1L << 62);
                }
                Long prev = seen.get(addr);
                if (prev != null && prev >= b) {
                    continue;
                }
                long add = prev == null ? b : b - prev;
                seen.put(addr, b);
                others.merge(label, add, Long::sum);
                if (TOP && "forward".equals(currentPoint) && !label.equals("model manager")) {
                    shapes.merge(a.getShape() + " " + a.getDataType(), add, Long::sum);
                }
            }
        }
    }

    /**
     * Prints the figures of the last step reported (MiB) and the RSS at the start of every step.
     *
     * @param out where the table goes
     */
    public void print(PrintStream out) {
        out.printf(
                Locale.ROOT,
                "memory report (MiB; the last step measured, step %d of the probed ones; RSS"
                        + " overhead at the first point %.1f MiB is taken off 'hidden')%n",
                step,
                mib(overhead));
        out.printf(
                Locale.ROOT,
                "  %-12s %9s %9s %9s %9s %9s %9s %9s %9s%n",
                "point",
                "params",
                "grads",
                "adam m+v",
                "step arr",
                "model oth",
                "hidden",
                "RSS",
                "peak<-");
        for (var e : rows.entrySet()) {
            Row r = e.getValue().get(e.getValue().size() - 1);
            long stepArrays = 0;
            long modelOther = 0;
            for (var o : r.others().entrySet()) {
                if (o.getKey().equals("model manager")) {
                    modelOther += o.getValue();
                } else {
                    stepArrays += o.getValue();
                }
            }
            out.printf(
                    Locale.ROOT,
                    "  %-12s %9.1f %9.1f %9.1f %9.1f %9.1f %9.1f %9.1f %9.1f%n",
                    r.point(),
                    mib(r.params()),
                    mib(r.grads()),
                    mib(r.moments()),
                    mib(stepArrays),
                    mib(modelOther),
                    mib(r.rss() - r.visible() - overhead),
                    mib(r.rss()),
                    mib(r.peak()));
        }
        List<Row> starts = rows.getOrDefault("start", List.of());
        StringBuilder sb = new StringBuilder("  RSS at each step's start (MiB):");
        for (Row r : starts) {
            sb.append(String.format(Locale.ROOT, " %.1f", mib(r.rss())));
        }
        out.println(sb);
        out.println(
                "  step arr: DJL arrays outside the model's manager (the step's sub-manager,"
                        + " others) and sub-managers of the model's manager; model oth: arrays"
                        + " on the model's manager that are not parameters or moments; hidden:"
                        + " RSS - DJL arrays - overhead (autograd's saved tensors, allocator"
                        + " slack); peak<-: the RSS peak since the previous point");
    }

    private static NDManager parent(NDManager m) {
        if (!(m instanceof BaseNDManager)) {
            return null;
        }
        try {
            return (NDManager) PARENT.get(m);
        } catch (IllegalAccessException e) {
            throw new IllegalStateException(e);
        }
    }

    private static long bytes(NDArray a) {
        return a.getShape().size() * a.getDataType().getNumOfBytes();
    }

    private static double mib(long b) {
        return b / (1024.0 * 1024.0);
    }

    private static long rss() {
        try {
            String[] f =
                    Files.readString(Path.of("/proc/self/statm"), StandardCharsets.US_ASCII)
                            .trim()
                            .split("\\s+");
            return Long.parseLong(f[1]) * 4096L;
        } catch (IOException | RuntimeException e) {
            return -1;
        }
    }

    private static long peakRss() {
        try {
            for (String line : Files.readAllLines(Path.of("/proc/self/status"))) {
                if (line.startsWith("VmHWM:")) {
                    return Long.parseLong(line.replaceAll("[^0-9]", "")) * 1024L;
                }
            }
        } catch (IOException | RuntimeException e) {
            return -1;
        }
        return -1;
    }

    private static void resetPeak() {
        try {
            Files.writeString(Path.of("/proc/self/clear_refs"), "5");
        } catch (IOException | RuntimeException e) {
            // not on Linux: the peak is the process's
        }
    }

    private static Field field(String name) {
        try {
            Field f = BaseNDManager.class.getDeclaredField(name);
            f.setAccessible(true);
            return f;
        } catch (NoSuchFieldException e) {
            throw new IllegalStateException(e);
        }
    }
}
