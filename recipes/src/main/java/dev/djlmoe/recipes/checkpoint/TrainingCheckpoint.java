/*
 * djl-moe: expert-parallel Mixture-of-Experts for the Deep Java Library.
 */
package dev.djlmoe.recipes.checkpoint;

import ai.djl.ndarray.NDArray;
import ai.djl.ndarray.NDManager;
import ai.djl.ndarray.types.Shape;
import ai.djl.nn.Parameter;
import dev.djlmoe.dist.ProcessGroup;
import dev.djlmoe.recipes.reliability.FaultInjection;
import dev.djlmoe.train.CheckpointableAdamW;
import dev.djlmoe.zoo.hf.HfCheckpoints;
import dev.djlmoe.zoo.hf.HfMoeForCausalLm;
import dev.djlmoe.zoo.hf.HfMoeForCausalLm.HfTensor;
import dev.djlmoe.zoo.io.DType;
import dev.djlmoe.zoo.io.Json;
import dev.djlmoe.zoo.io.JsonException;
import dev.djlmoe.zoo.io.SafetensorsFile;
import dev.djlmoe.zoo.io.SafetensorsWriter;
import dev.djlmoe.zoo.io.TensorInfo;
import java.io.IOException;
import java.io.UncheckedIOException;
import java.nio.ByteOrder;
import java.nio.FloatBuffer;
import java.nio.charset.StandardCharsets;
import java.nio.file.AtomicMoveNotSupportedException;
import java.nio.file.Files;
import java.nio.file.NoSuchFileException;
import java.nio.file.Path;
import java.nio.file.StandardCopyOption;
import java.util.ArrayList;
import java.util.Comparator;
import java.util.IdentityHashMap;
import java.util.LinkedHashMap;
import java.util.List;
import java.util.Locale;
import java.util.Map;
import java.util.regex.Pattern;
import java.util.stream.Stream;

/**
 * Training checkpoints: everything a run needs to continue bit-identically.
 *
 * <p>A checkpoint is a directory {@code step-NNNNNNNN} under the checkpoint directory:
 *
 * <ul>
 *   <li>the model as a Hugging Face checkpoint ({@link HfCheckpoints#save}: {@code config.json},
 *       {@code model.safetensors} or one shard per rank plus {@code model.safetensors.index.json}),
 *       float32, so the training state is exact and transformers or {@code finetune} read it;
 *   <li>{@code optimizer-0000{r+1}-of-0000W.safetensors}: AdamW's moments of every tensor rank r
 *       holds, by Hugging Face tensor name ({@code <name>.exp_avg}, {@code <name>.exp_avg_sq}; a
 *       routed expert's moments per expert, like its weights), with the update counts in the
 *       metadata. Names are global, so a run may even resume at another EP size;
 *   <li>{@code trainer_state.json}: the step, the settings that decide the numbers, the data
 *       position and fingerprint, the random state, the EP size;
 *   <li>extra files the run asks for (the tokenizer).
 * </ul>
 *
 * All ranks write into {@code .step-NNNNNNNN.partial} and flush their files to disk; after a
 * barrier rank 0 writes {@link CheckpointManifest#FILE} last (every file's size and SHA-256),
 * flushes the directory, renames it to its final name and points {@code latest} at it (both renames
 * are atomic on one file system), then removes the oldest checkpoints beyond the number to keep. An
 * interrupted save leaves only a {@code .partial} directory, never a damaged checkpoint: every
 * surviving rank removes it when the save fails or its process is stopped, and {@link
 * #removeLeftovers} removes what a job killed as a whole left. {@link #resolve(Path, List)} takes
 * only checkpoints whose files match their manifest, falling back to the newest complete one.
 */
public final class TrainingCheckpoint {

    /** File with the step and settings. */
    public static final String STATE_FILE = "trainer_state.json";

    /** File in the checkpoint directory naming the newest checkpoint. */
    public static final String LATEST = "latest";

    /** Format tag of {@link #STATE_FILE}. */
    public static final String FORMAT = "djl-moe-training-checkpoint";

    private static final Pattern STEP_DIR = Pattern.compile("step-\\d{8}");
    private static final Pattern LEFTOVER =
            Pattern.compile("\\.step-\\d{8}\\.(partial|old)|\\." + LATEST + "\\..*\\.tmp");
    private static final String EXP_AVG = ".exp_avg";
    private static final String EXP_AVG_SQ = ".exp_avg_sq";

    private TrainingCheckpoint() {}

    /**
     * Returns the directory name of a step's checkpoint.
     *
     * @param step completed optimizer steps
     * @return {@code step-NNNNNNNN}
     */
    public static String dirName(long step) {
        return String.format(Locale.ROOT, "step-%08d", step);
    }

    /** The folder of a run directory that holds its checkpoints. */
    public static final String RUN_CHECKPOINTS = "checkpoints";

    /**
     * Returns the name of rank r's optimizer file.
     *
     * @param rank r
     * @param world W
     * @return {@code optimizer-0000{r+1}-of-0000W.safetensors}
     */
    public static String optimizerFile(int rank, int world) {
        return String.format(Locale.ROOT, "optimizer-%05d-of-%05d.safetensors", rank + 1, world);
    }

    /**
     * Resolves a {@code --resume} argument: a checkpoint (it holds {@link #STATE_FILE}) or a
     * checkpoint directory (its {@link #LATEST}, else its newest {@code step-*}).
     *
     * @param path the argument
     * @return the checkpoint
     * @throws IllegalArgumentException when there is no complete checkpoint there
     * @throws IOException when the directory cannot be read
     */
    public static Path resolve(Path path) throws IOException {
        return resolve(path, new ArrayList<>());
    }

    /**
     * Resolves a {@code --resume} argument: a checkpoint (it holds {@link #STATE_FILE}; its files
     * must match its manifest) or a checkpoint directory (the checkpoint its {@link #LATEST} names,
     * else the newest {@code step-*}; one whose files do not match its manifest is skipped with a
     * warning, and the newest complete one before it is taken). Leftovers of interrupted saves
     * ({@code .step-*.partial}) are never candidates.
     *
     * @param path the argument
     * @param warnings receives a line for every checkpoint skipped or not verifiable
     * @return the checkpoint
     * @throws IllegalArgumentException when there is no complete checkpoint there
     * @throws IOException when the directory cannot be read
     */
    public static Path resolve(Path path, List<String> warnings) throws IOException {
        return resolve(path, warnings, "--resume");
    }

    /**
     * Resolves a checkpoint argument like {@link #resolve(Path, List)}; a run directory (one that
     * holds {@value #RUN_CHECKPOINTS}/) stands for its checkpoint directory. Errors name {@code
     * flag}.
     *
     * @param path the argument
     * @param warnings receives a line for every checkpoint skipped or not verifiable
     * @param flag the option that named the path, for the error messages
     * @return the checkpoint
     * @throws IllegalArgumentException when there is no complete checkpoint there
     * @throws IOException when the directory cannot be read
     */
    public static Path resolve(Path path, List<String> warnings, String flag) throws IOException {
        if (!Files.isDirectory(path)) {
            throw new IllegalArgumentException(flag + " " + path + ": no such directory");
        }
        Path run = path.resolve(RUN_CHECKPOINTS);
        if (!Files.isRegularFile(path.resolve(STATE_FILE))
                && stepDirs(path).isEmpty()
                && !Files.exists(path.resolve(LATEST))
                && Files.isDirectory(run)) {
            path = run; // a run directory: its checkpoints
        }
        if (Files.isRegularFile(path.resolve(STATE_FILE))) {
            String problem = CheckpointManifest.verify(path, true);
            if (problem == null) {
                return path;
            }
            if (!Files.exists(path.resolve(CheckpointManifest.FILE))) {
                // Written before checkpoints had manifests (their renames were atomic already).
                warnings.add(
                        path
                                + " has no "
                                + CheckpointManifest.FILE
                                + ": its files cannot be verified");
                return path;
            }
            throw new IllegalArgumentException(
                    flag + " " + path + ": not a complete checkpoint: " + problem);
        }
        List<Path> steps = new ArrayList<>(stepDirs(path));
        Path latest = path.resolve(LATEST);
        if (Files.isRegularFile(latest)) {
            String name = Files.readString(latest, StandardCharsets.UTF_8).strip();
            Path p = path.resolve(name);
            if (!STEP_DIR.matcher(name).matches() || !Files.isRegularFile(p.resolve(STATE_FILE))) {
                warnings.add(
                        path
                                + ": '"
                                + LATEST
                                + "' names "
                                + name
                                + ", which is not a"
                                + " complete checkpoint; taking the newest complete one");
            } else {
                // The one 'latest' names first, then the others newest first.
                steps.remove(p);
                steps.add(p);
            }
        }
        List<String> rejected = new ArrayList<>();
        for (int i = steps.size() - 1; i >= 0; i--) {
            Path p = steps.get(i);
            String problem = CheckpointManifest.verify(p, true);
            if (problem == null) {
                return p;
            }
            if (!Files.exists(p.resolve(CheckpointManifest.FILE))) {
                warnings.add(
                        p
                                + " has no "
                                + CheckpointManifest.FILE
                                + ": its files cannot be verified");
                return p;
            }
            warnings.add("skipping " + p + ": not a complete checkpoint: " + problem);
            rejected.add(p.getFileName() + " (" + problem + ")");
        }
        if (!rejected.isEmpty()) {
            throw new IllegalArgumentException(
                    flag
                            + " "
                            + path
                            + ": no complete checkpoint there; rejected: "
                            + String.join("; ", rejected));
        }
        throw new IllegalArgumentException(
                flag
                        + " "
                        + path
                        + ": no complete checkpoint there (expected "
                        + STATE_FILE
                        + " in a checkpoint, or '"
                        + LATEST
                        + "' / step-* directories in a"
                        + " checkpoint directory)");
    }

    /**
     * Removes what interrupted saves left in a checkpoint directory ({@code .step-*.partial},
     * {@code .step-*.old} and temporary files of {@link #LATEST}). Only one process of a job may
     * call this (rank 0), before the job saves anything.
     *
     * @param root the checkpoint directory (nothing happens when it does not exist)
     * @return a line for every leftover removed
     * @throws IOException when one cannot be removed
     */
    public static List<String> removeLeftovers(Path root) throws IOException {
        List<String> removed = new ArrayList<>();
        if (!Files.isDirectory(root)) {
            return removed;
        }
        List<Path> found;
        try (Stream<Path> s = Files.list(root)) {
            found =
                    s.filter(p -> LEFTOVER.matcher(p.getFileName().toString()).matches())
                            .sorted()
                            .toList();
        }
        for (Path p : found) {
            deleteTree(p);
            removed.add("removed " + p + " (left by an interrupted checkpoint save)");
        }
        return removed;
    }

    /**
     * Sets aside the checkpoints of an earlier run before a fresh run (one that does not resume)
     * writes into the same checkpoint directory: the directory is renamed to the first free {@code
     * NAME.1}, {@code NAME.2}, ..., so the fresh run's {@code step-N} never replaces the earlier
     * run's and {@code --resume} of the new name continues the earlier run. Only one process of a
     * job may call this (rank 0), before the job saves anything.
     *
     * @param root the checkpoint directory
     * @return where the earlier run's checkpoints now are, or null when there were none
     * @throws IOException when the directory cannot be renamed
     */
    public static Path setAsideEarlierRun(Path root) throws IOException {
        if (!Files.isDirectory(root)) {
            return null;
        }
        boolean any;
        try (Stream<Path> s = Files.list(root)) {
            any = s.anyMatch(p -> STEP_DIR.matcher(p.getFileName().toString()).matches());
        }
        if (!any) {
            return null;
        }
        Path abs = root.toAbsolutePath().normalize();
        for (int n = 1; n < 10_000; n++) {
            Path to = abs.resolveSibling(abs.getFileName() + "." + n);
            if (!Files.exists(to)) {
                move(abs, to);
                return root.isAbsolute() ? to : root.resolveSibling(to.getFileName());
            }
        }
        throw new IllegalArgumentException(
                root
                        + ": "
                        + root.getFileName()
                        + ".1 to .9999 all"
                        + " exist already; remove old runs or pass another --run-dir");
    }

    private static List<Path> stepDirs(Path root) throws IOException {
        try (Stream<Path> s = Files.list(root)) {
            return s.filter(
                            p ->
                                    STEP_DIR.matcher(p.getFileName().toString()).matches()
                                            && Files.isRegularFile(p.resolve(STATE_FILE)))
                    .sorted(Comparator.comparing(p -> p.getFileName().toString()))
                    .toList();
        }
    }

    /**
     * The content of {@link #STATE_FILE}.
     *
     * @param step completed optimizer steps
     * @param worldSize the EP size that wrote the checkpoint
     * @param command {@code pretrain} or {@code finetune}
     * @param settings the settings that decide the numbers, by flag name
     * @param data data position and fingerprint
     * @param rng the random state
     * @param extra anything else the command keeps (model source, tokenizer)
     */
    public record State(
            long step,
            int worldSize,
            String command,
            Map<String, Object> settings,
            Map<String, Object> data,
            Map<String, Object> rng,
            Map<String, Object> extra) {

        /**
         * Returns the JSON text.
         *
         * @return the state as JSON
         */
        public String toJson() {
            Map<String, Object> m = new LinkedHashMap<>();
            m.put("format", FORMAT);
            m.put("version", 1L);
            m.put("step", step);
            m.put("world_size", (long) worldSize);
            m.put("command", command);
            m.put("settings", settings);
            m.put("data", data);
            m.put("rng", rng);
            m.put("extra", extra);
            return Json.write(m) + "\n";
        }

        /**
         * Parses the JSON text.
         *
         * @param json the text
         * @param source where it came from (for errors)
         * @return the state
         * @throws IllegalArgumentException when it is not a checkpoint state
         */
        @SuppressWarnings("unchecked")
        public static State parse(String json, String source) {
            try {
                Map<String, Object> m = Json.parseObject(json, source);
                if (!FORMAT.equals(m.get("format"))) {
                    throw new IllegalArgumentException(
                            source
                                    + ": not a djl-moe training checkpoint (format "
                                    + m.get("format")
                                    + ")");
                }
                return new State(
                        ((Number) m.get("step")).longValue(),
                        ((Number) m.get("world_size")).intValue(),
                        (String) m.get("command"),
                        (Map<String, Object>) m.get("settings"),
                        (Map<String, Object>) m.get("data"),
                        (Map<String, Object>) m.get("rng"),
                        (Map<String, Object>) m.getOrDefault("extra", Map.of()));
            } catch (JsonException | ClassCastException | NullPointerException e) {
                throw new IllegalArgumentException(source + ": malformed: " + e.getMessage(), e);
            }
        }
    }

    /**
     * Reads a checkpoint's state.
     *
     * @param checkpoint the checkpoint directory
     * @return the state
     * @throws IOException when it cannot be read
     */
    public static State readState(Path checkpoint) throws IOException {
        Path f = checkpoint.resolve(STATE_FILE);
        try {
            return State.parse(Files.readString(f, StandardCharsets.UTF_8), f.toString());
        } catch (NoSuchFileException e) {
            throw new IllegalArgumentException(f + ": missing: not a checkpoint", e);
        }
    }

    /**
     * Writes a checkpoint. Every rank calls this at the same step.
     *
     * @param root the checkpoint directory
     * @param state the state (rank 0's is written)
     * @param model the model
     * @param optimizer the optimizer
     * @param group the ranks (barriers)
     * @param extraFiles files copied into the checkpoint by rank 0 (e.g. tokenizer.json)
     * @param keep newest checkpoints to keep (0 = all)
     * @return the checkpoint written
     * @throws IOException when writing fails
     */
    public static Path save(
            Path root,
            State state,
            HfMoeForCausalLm model,
            CheckpointableAdamW optimizer,
            ProcessGroup group,
            List<Path> extraFiles,
            int keep)
            throws IOException {
        int rank = group.rank();
        int world = group.worldSize();
        String name = dirName(state.step());
        Path fin = root.resolve(name);
        Path partial = root.resolve("." + name + ".partial");
        // Every rank that survives a failed save, or is stopped meanwhile (the launcher stops the
        // other ranks when one dies), removes the partial directory: nothing half-written stays
        // behind, whichever rank died.
        Thread cleanup = new Thread(() -> removeQuietly(partial), "djl-moe-checkpoint-cleanup");
        boolean done = false;
        Runtime.getRuntime().addShutdownHook(cleanup);
        try {
            if (rank == 0) {
                Files.createDirectories(root);
                deleteTree(partial);
                Files.createDirectories(partial);
            }
            group.barrier();
            HfCheckpoints.save(model, partial, DType.F32); // barriers inside under EP
            Path optimizerFile = partial.resolve(optimizerFile(rank, world));
            writeOptimizer(optimizerFile, model, optimizer, rank);
            FaultInjection.duringCheckpointSave(rank, state.step(), optimizerFile);
            if (rank == 0) {
                for (Path f : extraFiles) {
                    Files.copy(
                            f,
                            partial.resolve(f.getFileName().toString()),
                            StandardCopyOption.REPLACE_EXISTING);
                }
                SafetensorsWriter.writeTextAtomically(partial.resolve(STATE_FILE), state.toJson());
            }
            CheckpointManifest.syncFiles(partial);
            group.barrier();
            if (rank == 0) {
                // Last file of the checkpoint: its presence, with matching files, is what makes
                // the checkpoint complete.
                CheckpointManifest.write(partial, state.step());
                CheckpointManifest.syncDirectory(partial);
                if (Files.exists(fin)) {
                    // The same step saved again (a resumed run that stops where it started).
                    Path old = root.resolve("." + name + ".old");
                    deleteTree(old);
                    move(fin, old);
                    move(partial, fin);
                    deleteTree(old);
                } else {
                    move(partial, fin);
                }
                CheckpointManifest.syncDirectory(root);
                SafetensorsWriter.writeTextAtomically(root.resolve(LATEST), name + "\n");
                CheckpointManifest.syncDirectory(root);
                if (keep > 0) {
                    List<Path> all = stepDirs(root);
                    for (int i = 0; i < all.size() - keep; i++) {
                        if (!all.get(i).equals(fin)) {
                            deleteTree(all.get(i));
                        }
                    }
                }
            }
            group.barrier();
            done = true;
            return fin;
        } finally {
            if (!done) {
                removeQuietly(partial);
            }
            try {
                Runtime.getRuntime().removeShutdownHook(cleanup);
            } catch (IllegalStateException e) {
                // the JVM is shutting down: the hook runs
            }
        }
    }

    /** Deletes a directory tree, retrying while another thread still adds files to it. */
    private static void removeQuietly(Path dir) {
        for (int attempt = 0; attempt < 5 && Files.exists(dir); attempt++) {
            try {
                deleteTree(dir);
            } catch (IOException | UncheckedIOException e) {
                try {
                    Thread.sleep(20);
                } catch (InterruptedException ie) {
                    Thread.currentThread().interrupt();
                    return;
                }
            }
        }
    }

    private static void move(Path from, Path to) throws IOException {
        try {
            Files.move(from, to, StandardCopyOption.ATOMIC_MOVE);
        } catch (AtomicMoveNotSupportedException e) {
            Files.move(from, to);
        }
    }

    private static void deleteTree(Path p) throws IOException {
        if (!Files.exists(p)) {
            return;
        }
        try (Stream<Path> s = Files.walk(p)) {
            for (Path q : s.sorted(Comparator.reverseOrder()).toList()) {
                Files.deleteIfExists(q);
            }
        }
    }

    /** Tensors of this rank with their parameter, trainable ones only. */
    private static List<HfTensor> trainableTensors(HfMoeForCausalLm model, int rank) {
        List<HfTensor> out = new ArrayList<>();
        for (HfTensor t : model.hfTensors()) {
            if (!t.parameter().requiresGradient()) {
                continue; // e.g. the routers' correction biases (not trained by gradient)
            }
            if (t.expertSlot() < 0 && rank != 0) {
                continue; // replicated: rank 0 writes it
            }
            out.add(t);
        }
        return out;
    }

    private static void writeOptimizer(
            Path file, HfMoeForCausalLm model, CheckpointableAdamW optimizer, int rank)
            throws IOException {
        checkNamed(model);
        SafetensorsWriter w = new SafetensorsWriter();
        Map<String, Object> counts = new LinkedHashMap<>();
        for (HfTensor t : trainableTensors(model, rank)) {
            CheckpointableAdamW.State s = optimizer.exportState(t.parameter().getId());
            if (s == null) {
                continue; // not updated yet
            }
            counts.put(t.name(), (long) s.count());
            add(w, t, t.name() + EXP_AVG, s.mean());
            add(w, t, t.name() + EXP_AVG_SQ, s.variance());
        }
        w.metadata("djl_moe_counts", Json.writeCompact(counts));
        w.write(file);
    }

    private static void add(SafetensorsWriter w, HfTensor t, String name, NDArray a) {
        if (t.expertSlot() < 0) {
            w.add(name, DType.F32, a);
            return;
        }
        int slot = t.expertSlot();
        w.add(
                name,
                DType.F32,
                t.shape(),
                () -> {
                    try (NDArray s = a.get(slot)) {
                        return s.toByteBuffer().order(ByteOrder.nativeOrder()).asFloatBuffer();
                    }
                });
    }

    /** Every trainable parameter must have a Hugging Face name, or its state would be lost. */
    private static void checkNamed(HfMoeForCausalLm model) {
        Map<Parameter, Boolean> named = new IdentityHashMap<>();
        for (HfTensor t : model.hfTensors()) {
            named.put(t.parameter(), true);
        }
        for (var p : model.getParameters()) {
            if (p.getValue().requiresGradient() && !named.containsKey(p.getValue())) {
                throw new IllegalStateException(
                        "parameter "
                                + p.getKey()
                                + " has no Hugging Face name: its optimizer"
                                + " state cannot be checkpointed");
            }
        }
    }

    /**
     * Restores AdamW's state from a checkpoint's optimizer files (whatever EP size wrote them).
     *
     * @param checkpoint the checkpoint
     * @param model the model (initialised, this rank's experts)
     * @param optimizer the optimizer to fill
     * @param rank this rank (which tensors it holds)
     * @return the number of parameters whose state was restored
     * @throws IOException when a file cannot be read or a tensor is missing
     */
    public static int loadOptimizer(
            Path checkpoint, HfMoeForCausalLm model, CheckpointableAdamW optimizer, int rank)
            throws IOException {
        List<SafetensorsFile> files = new ArrayList<>();
        try (Stream<Path> s = Files.list(checkpoint)) {
            for (Path p :
                    s.filter(
                                    p ->
                                            p.getFileName().toString().startsWith("optimizer-")
                                                    && p.getFileName()
                                                            .toString()
                                                            .endsWith(".safetensors"))
                            .sorted()
                            .toList()) {
                files.add(SafetensorsFile.open(p));
            }
        }
        try {
            Map<String, SafetensorsFile> where = new LinkedHashMap<>();
            Map<String, Long> counts = new LinkedHashMap<>();
            for (SafetensorsFile f : files) {
                for (String n : f.tensors().keySet()) {
                    where.put(n, f);
                }
                String c = f.metadata().get("djl_moe_counts");
                if (c != null) {
                    try {
                        for (var e : Json.parseObject(c, f.path().toString()).entrySet()) {
                            counts.put(e.getKey(), ((Number) e.getValue()).longValue());
                        }
                    } catch (JsonException e) {
                        throw new IOException(e.getMessage(), e);
                    }
                }
            }
            // Group this rank's tensors by parameter (a routed-expert stack has one per expert).
            Map<Parameter, List<HfTensor>> byParam = new IdentityHashMap<>();
            List<Parameter> order = new ArrayList<>();
            for (HfTensor t : model.hfTensors()) {
                if (!t.parameter().requiresGradient()) {
                    continue;
                }
                if (!byParam.containsKey(t.parameter())) {
                    order.add(t.parameter());
                }
                byParam.computeIfAbsent(t.parameter(), k -> new ArrayList<>()).add(t);
            }
            int restored = 0;
            for (Parameter p : order) {
                List<HfTensor> ts = byParam.get(p);
                int present = 0;
                for (HfTensor t : ts) {
                    if (where.containsKey(t.name() + EXP_AVG)) {
                        present++;
                    }
                }
                if (present == 0) {
                    continue; // saved before the first update
                }
                if (present != ts.size()) {
                    throw new IOException(
                            checkpoint
                                    + ": optimizer state of "
                                    + ts.get(0).name()
                                    + " is incomplete ("
                                    + present
                                    + " of "
                                    + ts.size()
                                    + " tensors)");
                }
                NDArray w = p.getArray();
                long count = -1;
                for (HfTensor t : ts) {
                    Long c = counts.get(t.name());
                    if (c == null || (count >= 0 && c != count)) {
                        throw new IOException(
                                checkpoint + ": no or inconsistent update count for " + t.name());
                    }
                    count = c;
                }
                NDManager m = w.getManager();
                try (NDArray mean = read(m, w.getShape(), ts, EXP_AVG, where);
                        NDArray var = read(m, w.getShape(), ts, EXP_AVG_SQ, where)) {
                    optimizer.importState(
                            p.getId(),
                            w,
                            new CheckpointableAdamW.State(mean, var, Math.toIntExact(count)));
                }
                restored++;
            }
            return restored;
        } finally {
            for (SafetensorsFile f : files) {
                f.close();
            }
        }
    }

    private static NDArray read(
            NDManager m,
            Shape shape,
            List<HfTensor> ts,
            String suffix,
            Map<String, SafetensorsFile> where)
            throws IOException {
        long numel = shape.size();
        float[] all = new float[Math.toIntExact(numel)];
        boolean stacked = ts.get(0).expertSlot() >= 0;
        long slice = stacked ? numel / shape.get(0) : numel;
        for (HfTensor t : ts) {
            String name = t.name() + suffix;
            SafetensorsFile f = where.get(name);
            TensorInfo info = f.info(name);
            long n = 1;
            for (long d : info.shape()) {
                n *= d;
            }
            if (n != slice) {
                throw new IOException(
                        f.path()
                                + ": "
                                + name
                                + " has "
                                + n
                                + " elements, the"
                                + " parameter needs "
                                + slice);
            }
            FloatBuffer fb =
                    FloatBuffer.wrap(all, (int) (Math.max(0, t.expertSlot()) * slice), (int) slice)
                            .slice();
            f.readFloats(info, 0, slice, fb);
        }
        return m.create(all, shape);
    }
}
