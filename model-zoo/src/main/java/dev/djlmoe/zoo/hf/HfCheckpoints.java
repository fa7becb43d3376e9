/*
 * djl-moe: expert-parallel Mixture-of-Experts for the Deep Java Library.
 */
package dev.djlmoe.zoo.hf;

import ai.djl.ndarray.NDArray;
import ai.djl.ndarray.NDManager;
import ai.djl.ndarray.index.NDIndex;
import ai.djl.ndarray.types.DataType;
import ai.djl.ndarray.types.Shape;
import ai.djl.nn.Parameter;
import ai.djl.training.initializer.Initializer;
import dev.djlmoe.ep.EpContext;
import dev.djlmoe.zoo.hf.HfMoeForCausalLm.HfTensor;
import dev.djlmoe.zoo.io.DType;
import dev.djlmoe.zoo.io.Json;
import dev.djlmoe.zoo.io.SafetensorsCheckpoint;
import dev.djlmoe.zoo.io.SafetensorsException;
import dev.djlmoe.zoo.io.SafetensorsWriter;
import java.io.IOException;
import java.io.UncheckedIOException;
import java.nio.ByteBuffer;
import java.nio.ByteOrder;
import java.nio.FloatBuffer;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.ArrayList;
import java.util.Arrays;
import java.util.HashSet;
import java.util.IdentityHashMap;
import java.util.LinkedHashMap;
import java.util.List;
import java.util.Locale;
import java.util.Map;
import java.util.Set;
import java.util.TreeSet;
import java.util.regex.Matcher;
import java.util.regex.Pattern;

/**
 * Loads and saves Hugging Face checkpoints ({@code config.json} + safetensors) of an {@link
 * HfMoeForCausalLm}, with expert parallelism.
 *
 * <p>Loading maps every Hugging Face tensor to its parameter ({@link HfMoeForCausalLm#hfTensors()})
 * and reads it straight from the memory-mapped files into the parameter's array, widening F16, BF16
 * and FP8 (with {@code weight_scale_inv} block dequantisation) to float32. Under EP a rank reads
 * only its own experts ({@code E / W} from {@code rank * E / W}). Routed experts may be stored per
 * expert ({@code mlp.experts.{e}.gate_proj.weight}, what transformers writes) or fused ({@code
 * mlp.experts.gate_up_proj [E, 2I, H]}, {@code mlp.experts.down_proj [E, H, I]}). Missing tensors,
 * shape mismatches and (in strict mode) tensors the model does not use fail with the names, the
 * file, the expected and the found shape. Ignored without complaint: multi-token-prediction layers
 * ({@code model.layers.{i}} for {@code i >= num_hidden_layers}), {@code lm_head.weight} of a tied
 * model, {@code rotary_emb.inv_freq} buffers, and other ranks' experts.
 *
 * <p>Saving writes what transformers reads back: {@code config.json} and the tensors under their
 * Hugging Face names, every file through a temporary name and a rename. With one rank: {@code
 * model.safetensors}. With W ranks: rank r writes {@code model-0000{r+1}-of-0000W.safetensors} with
 * its experts (rank 0 adds every replicated tensor), then rank 0 writes {@code
 * model.safetensors.index.json} and {@code config.json} after a barrier.
 */
public final class HfCheckpoints {

    private static final org.slf4j.Logger LOGGER =
            org.slf4j.LoggerFactory.getLogger(HfCheckpoints.class);
    private static final long DIRECT_LIMIT = 1L << 30;
    private static final Pattern LAYER = Pattern.compile("^model\\.layers\\.(\\d+)\\.(.*)$");
    private static final Pattern EXPERT =
            Pattern.compile("^mlp\\.experts\\.(\\d+)\\.(gate_proj|up_proj|down_proj)\\.weight$");

    private HfCheckpoints() {}

    /**
     * Reads {@code config.json} and the weights of a checkpoint directory into a new model.
     *
     * @param dir the checkpoint directory
     * @param manager the manager that owns the parameters
     * @param context the EP context, or null for all experts local
     * @return the loaded model, initialised
     * @throws IOException naming the file, tensor, expected and found on any problem
     */
    public static HfMoeForCausalLm load(Path dir, NDManager manager, EpContext context)
            throws IOException {
        HfMoeForCausalLm model =
                HfMoeForCausalLm.builder()
                        .setConfig(HfMoeConfig.load(dir))
                        .optContext(context)
                        .build();
        loadWeights(model, dir, manager, true);
        return model;
    }

    /**
     * Reads the weights of a checkpoint directory into a model whose parameters are not yet
     * initialised, and initialises it.
     *
     * @param model the model, not initialised
     * @param dir the checkpoint directory
     * @param manager the manager that owns the parameters
     * @param strict whether a tensor the model does not use is an error
     * @throws IOException naming the file, tensor, expected and found on any problem
     */
    public static void loadWeights(
            HfMoeForCausalLm model, Path dir, NDManager manager, boolean strict)
            throws IOException {
        if (model.isInitialized()) {
            throw new IllegalStateException(
                    "loadWeights needs a model whose parameters are not initialised yet");
        }
        HfMoeConfig cfg = model.getConfig();
        try (SafetensorsCheckpoint ckpt = SafetensorsCheckpoint.open(dir)) {
            int[] bs = cfg.fp8BlockSize();
            ckpt.setBlockSize(bs[0], bs[1]);
            List<HfTensor> tensors = model.hfTensors();
            checkNames(model, ckpt, tensors, strict);
            Map<Parameter, List<HfTensor>> byParam = new IdentityHashMap<>();
            List<Parameter> order = new ArrayList<>();
            for (HfTensor t : tensors) {
                if (!byParam.containsKey(t.parameter())) {
                    order.add(t.parameter());
                }
                byParam.computeIfAbsent(t.parameter(), k -> new ArrayList<>()).add(t);
            }
            for (Parameter p : order) {
                p.setInitializer(new CheckpointInitializer(ckpt, byParam.get(p)));
            }
            try {
                model.initialize(manager, DataType.FLOAT32, new Shape(1, 1));
            } catch (UncheckedIOException e) {
                throw e.getCause();
            }
        }
    }

    private static void checkNames(
            HfMoeForCausalLm model,
            SafetensorsCheckpoint ckpt,
            List<HfTensor> tensors,
            boolean strict)
            throws SafetensorsException {
        HfMoeConfig cfg = model.getConfig();
        Set<String> used = new HashSet<>();
        List<String> missing = new ArrayList<>();
        for (HfTensor t : tensors) {
            if (ckpt.has(t.name())) {
                used.add(t.name());
            } else if (t.expertSlot() >= 0 && fusedName(t) != null && ckpt.has(fusedName(t))) {
                used.add(fusedName(t));
            } else {
                missing.add(t.name());
            }
        }
        if (!missing.isEmpty()) {
            throw new SafetensorsException(
                    ckpt.dir()
                            + ": missing "
                            + missing.size()
                            + " tensor(s) that the "
                            + cfg.family().modelType()
                            + " model needs: "
                            + head(missing));
        }
        List<String> extra = new ArrayList<>();
        for (String name : new TreeSet<>(ckpt.names())) {
            if (used.contains(name) || ignorable(cfg, name, used)) {
                continue;
            }
            extra.add(name);
        }
        if (!extra.isEmpty() && !strict) {
            LOGGER.warn(
                    "{}: {} tensor(s) not used by the model: {}",
                    ckpt.dir(),
                    extra.size(),
                    head(extra));
        } else if (!extra.isEmpty()) {
            throw new SafetensorsException(
                    ckpt.dir()
                            + ": "
                            + extra.size()
                            + " unexpected tensor(s) that the "
                            + cfg.family().modelType()
                            + " model does not use: "
                            + head(extra));
        }
    }

    private static boolean ignorable(HfMoeConfig cfg, String name, Set<String> used) {
        if (name.endsWith(SafetensorsCheckpoint.SCALE_SUFFIX)) {
            String base =
                    name.substring(0, name.length() - SafetensorsCheckpoint.SCALE_SUFFIX.length());
            return used.contains(base) || ignorable(cfg, base, used);
        }
        if (name.endsWith("rotary_emb.inv_freq")) {
            return true;
        }
        if ("lm_head.weight".equals(name) && cfg.tieWordEmbeddings()) {
            return true;
        }
        Matcher m = LAYER.matcher(name);
        if (m.matches()) {
            int layer = Integer.parseInt(m.group(1));
            if (layer >= cfg.numLayers()) {
                return true; // multi-token-prediction modules
            }
            Matcher e = EXPERT.matcher(m.group(2));
            if (e.matches() && cfg.isMoeLayer(layer)) {
                return Integer.parseInt(e.group(1)) < cfg.numExperts(); // another rank's expert
            }
        }
        return false;
    }

    private static String head(List<String> names) {
        int n = Math.min(names.size(), 8);
        String s = String.join(", ", names.subList(0, n));
        return names.size() > n ? s + ", ... (" + (names.size() - n) + " more)" : s;
    }

    /** The fused-expert tensor a per-expert tensor can also be read from. */
    private static String fusedName(HfTensor t) {
        int i = t.name().indexOf(".mlp.experts.");
        if (i < 0) {
            return null;
        }
        String prefix = t.name().substring(0, i) + ".mlp.experts.";
        return t.name().endsWith("down_proj.weight")
                ? prefix + "down_proj"
                : prefix + "gate_up_proj";
    }

    /** Element offset of an expert's slice inside the fused tensor. */
    private static long fusedOffset(HfTensor t, int globalExpert) {
        long rows = t.shape()[0];
        long cols = t.shape()[1];
        if (t.name().endsWith("down_proj.weight")) {
            return globalExpert * rows * cols;
        }
        long base = globalExpert * 2 * rows * cols;
        return t.name().endsWith("up_proj.weight") ? base + rows * cols : base;
    }

    private static int globalExpert(HfTensor t) {
        String s = t.name();
        int a = s.indexOf(".mlp.experts.") + ".mlp.experts.".length();
        int b = s.indexOf('.', a);
        return Integer.parseInt(s.substring(a, b));
    }

    /** Fills a parameter from the checkpoint when the block initialises it. */
    private static final class CheckpointInitializer implements Initializer {
        private final SafetensorsCheckpoint ckpt;
        private final List<HfTensor> tensors;

        CheckpointInitializer(SafetensorsCheckpoint ckpt, List<HfTensor> tensors) {
            this.ckpt = ckpt;
            this.tensors = tensors;
        }

        @Override
        public NDArray initialize(NDManager manager, Shape shape, DataType dataType) {
            try {
                return read(manager, shape);
            } catch (IOException e) {
                throw new UncheckedIOException(e);
            }
        }

        private NDArray read(NDManager manager, Shape shape) throws IOException {
            long numel = shape.size();
            boolean stacked = tensors.get(0).expertSlot() >= 0;
            long slice = stacked ? numel / shape.get(0) : numel;
            if (!stacked) {
                HfTensor t = tensors.get(0);
                ckpt.checkShape(t.name(), shape.getShape());
            } else {
                if (tensors.size() != shape.get(0)) {
                    throw new IllegalStateException(
                            "expected " + shape.get(0) + " experts for " + tensors.get(0).name());
                }
                for (HfTensor t : tensors) {
                    if (ckpt.has(t.name())) {
                        ckpt.checkShape(t.name(), t.shape());
                    } else {
                        checkFused(t, shape.get(0));
                    }
                }
            }
            if (numel * 4 <= DIRECT_LIMIT) {
                ByteBuffer bb = manager.allocateDirect((int) (numel * 4));
                bb.order(ByteOrder.nativeOrder());
                FloatBuffer fb = bb.asFloatBuffer();
                if (stacked) {
                    for (HfTensor t : tensors) {
                        fb.position((int) (t.expertSlot() * slice));
                        readExpert(t, slice, fb);
                    }
                } else {
                    ckpt.readFloats(tensors.get(0).name(), 0, numel, fb);
                }
                bb.rewind();
                return manager.create(bb, shape, DataType.FLOAT32);
            }
            // Large: fill a zero array piece by piece (rows of a plain tensor, experts of a stack).
            NDArray out = manager.zeros(shape, DataType.FLOAT32);
            if (stacked) {
                Shape one = shape.slice(1);
                for (HfTensor t : tensors) {
                    FloatBuffer fb = chunk(manager, slice);
                    readExpert(t, slice, fb);
                    try (NDArray piece = create(manager, fb, one)) {
                        out.set(new NDIndex(t.expertSlot()), piece);
                    }
                }
            } else {
                long rows = shape.get(0);
                long rowLen = numel / rows;
                long step = Math.max(1, (DIRECT_LIMIT / 4) / rowLen);
                for (long r = 0; r < rows; r += step) {
                    long n = Math.min(step, rows - r);
                    FloatBuffer fb = chunk(manager, n * rowLen);
                    ckpt.readFloats(tensors.get(0).name(), r * rowLen, n * rowLen, fb);
                    long[] dims = shape.getShape().clone();
                    dims[0] = n;
                    try (NDArray piece = create(manager, fb, new Shape(dims))) {
                        out.set(new NDIndex(r + ":" + (r + n)), piece);
                    }
                }
            }
            return out;
        }

        private static FloatBuffer chunk(NDManager manager, long count) {
            ByteBuffer bb = manager.allocateDirect(Math.toIntExact(count * 4));
            bb.order(ByteOrder.nativeOrder());
            return bb.asFloatBuffer();
        }

        private static NDArray create(NDManager manager, FloatBuffer fb, Shape shape) {
            fb.rewind();
            return manager.create(fb, shape, DataType.FLOAT32);
        }

        private void checkFused(HfTensor t, long localExperts) throws SafetensorsException {
            String fused = fusedName(t);
            long[] found = ckpt.info(fused).shape();
            long e = found.length == 3 ? found[0] : -1;
            long rows = t.name().endsWith("down_proj.weight") ? t.shape()[0] : 2 * t.shape()[0];
            if (found.length != 3
                    || found[1] != rows
                    || found[2] != t.shape()[1]
                    || e <= globalExpert(t)) {
                throw new SafetensorsException(
                        "tensor '"
                                + fused
                                + "' in "
                                + ckpt.info(fused).file()
                                + " has shape "
                                + Arrays.toString(found)
                                + ", expected [E, "
                                + rows
                                + ", "
                                + t.shape()[1]
                                + "] holding expert "
                                + globalExpert(t));
            }
        }

        private void readExpert(HfTensor t, long slice, FloatBuffer fb) throws IOException {
            if (ckpt.has(t.name())) {
                ckpt.readFloats(t.name(), 0, slice, fb);
            } else {
                ckpt.readFloats(fusedName(t), fusedOffset(t, globalExpert(t)), slice, fb);
            }
        }
    }

    /**
     * Saves a model as a Hugging Face checkpoint in float32.
     *
     * @param model the model (initialised)
     * @param dir the directory (created if needed)
     * @throws IOException if writing fails
     */
    public static void save(HfMoeForCausalLm model, Path dir) throws IOException {
        save(model, dir, DType.F32);
    }

    /**
     * Saves a model as a Hugging Face checkpoint. Under EP every rank must call this (it holds a
     * barrier); each writes its own shard.
     *
     * @param model the model (initialised)
     * @param dir the directory (created if needed)
     * @param dtype F32 or BF16
     * @throws IOException if writing fails
     */
    public static void save(HfMoeForCausalLm model, Path dir, DType dtype) throws IOException {
        if (!model.isInitialized()) {
            throw new IllegalStateException("save needs an initialised model");
        }
        Files.createDirectories(dir);
        EpContext ctx = model.getContext();
        int world = ctx == null ? 1 : ctx.group().worldSize();
        int rank = ctx == null ? 0 : ctx.group().rank();
        HfMoeConfig cfg = model.getConfig();
        List<HfTensor> tensors = model.hfTensors();
        SafetensorsWriter w = new SafetensorsWriter();
        for (HfTensor t : tensors) {
            if (t.expertSlot() < 0 && rank != 0) {
                continue; // replicated: rank 0 writes it
            }
            NDArray arr = t.parameter().getArray();
            if (t.expertSlot() < 0) {
                w.add(t.name(), dtype, arr);
            } else {
                int slot = t.expertSlot();
                w.add(
                        t.name(),
                        dtype,
                        t.shape(),
                        () -> {
                            try (NDArray s = arr.get(slot)) {
                                return s.toByteBuffer()
                                        .order(ByteOrder.nativeOrder())
                                        .asFloatBuffer();
                            }
                        });
            }
        }
        if (world == 1) {
            w.write(dir.resolve(SafetensorsCheckpoint.SINGLE_FILE));
            Files.deleteIfExists(dir.resolve(SafetensorsCheckpoint.INDEX_FILE));
            SafetensorsWriter.writeTextAtomically(dir.resolve("config.json"), cfg.toJson());
            return;
        }
        w.write(dir.resolve(shardName(rank, world)));
        ctx.group().barrier();
        if (rank == 0) {
            Map<String, Object> weightMap = new LinkedHashMap<>();
            long totalBytes = 0;
            int local = cfg.numExperts() / world;
            for (HfTensor t : tensors) {
                long[] shape =
                        t.expertSlot() >= 0
                                ? t.shape()
                                : t.parameter().getArray().getShape().getShape();
                long n = 1;
                for (long d : shape) {
                    n *= d;
                }
                if (t.expertSlot() < 0) {
                    weightMap.put(t.name(), shardName(0, world));
                    totalBytes += n * dtype.size();
                    continue;
                }
                // This tensor names one of rank 0's experts: list the same tensor of every rank.
                int g = globalExpert(t);
                for (int r = 0; r < world; r++) {
                    String name =
                            t.name()
                                    .replace(
                                            ".mlp.experts." + g + ".",
                                            ".mlp.experts." + (g + r * local) + ".");
                    weightMap.put(name, shardName(r, world));
                    totalBytes += n * dtype.size();
                }
            }
            Map<String, Object> meta = new LinkedHashMap<>();
            meta.put("total_size", totalBytes);
            Map<String, Object> index = new LinkedHashMap<>();
            index.put("metadata", meta);
            index.put("weight_map", weightMap);
            SafetensorsWriter.writeTextAtomically(dir.resolve("config.json"), cfg.toJson());
            SafetensorsWriter.writeTextAtomically(
                    dir.resolve(SafetensorsCheckpoint.INDEX_FILE), Json.write(index) + "\n");
        }
        ctx.group().barrier();
    }

    /**
     * Returns the Hugging Face shard file name of rank r of W.
     *
     * @param rank r
     * @param world W
     * @return {@code model-0000{r+1}-of-0000W.safetensors}
     */
    public static String shardName(int rank, int world) {
        return String.format(Locale.ROOT, "model-%05d-of-%05d.safetensors", rank + 1, world);
    }
}
