/*
 * djl-moe: expert-parallel Mixture-of-Experts for the Deep Java Library.
 */
package dev.djlmoe.recipes.cli;

import dev.djlmoe.dist.RankEnvironment;
import dev.djlmoe.recipes.Pretrain;
import dev.djlmoe.recipes.PretrainOptions;
import dev.djlmoe.recipes.StopSignal;
import dev.djlmoe.recipes.data.ByteTokenizer;
import dev.djlmoe.recipes.data.CorpusSource;
import dev.djlmoe.recipes.data.SyntheticBigramSource;
import dev.djlmoe.recipes.data.TextCorpus;
import dev.djlmoe.recipes.data.TextDecoding;
import dev.djlmoe.recipes.data.TokenSource;
import dev.djlmoe.zoo.hf.HfMoeConfig;
import dev.djlmoe.zoo.io.SafetensorsWriter;
import java.io.IOException;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.ArrayList;
import java.util.LinkedHashMap;
import java.util.List;
import java.util.Locale;
import java.util.Map;
import java.util.concurrent.Callable;
import picocli.CommandLine.Command;
import picocli.CommandLine.Mixin;
import picocli.CommandLine.Model.CommandSpec;
import picocli.CommandLine.Option;
import picocli.CommandLine.Spec;

/** {@code djl-moe pretrain}: pre-trains an MoE language model (default: the embedded job). */
@Command(
        name = "pretrain",
        mixinStandardHelpOptions = true,
        defaultValueProvider = PretrainCommand.Defaults.class,
        description = {
            "Pre-train an MoE language model with expert parallelism.",
            "Default: the 'tiny' DeepSeek-V3-style preset on the public-domain corpus shipped"
                    + " with djl-moe, byte-level tokens. EP size: --ep N, or start it under"
                    + " 'launch' / torchrun."
        },
        footer = {"", "Example:", "  djl-moe pretrain --ep 2 --steps 300 --checkpoint-every 100"})
public final class PretrainCommand implements Callable<Integer>, RankCountCheck {

    /** The embedded default's settings. */
    public static final PretrainOptions DEFAULTS = PretrainOptions.defaults();

    /** Share of the corpus held out for evaluation. */
    public static final double HELD_OUT = 0.05;

    @Spec CommandSpec spec;

    @Mixin TrainingFlags flags;

    @Option(
            names = "--model",
            description =
                    "a preset (tiny, tiny-deepseek-v2, tiny-qwen3-moe, deepseek-v3-16b,"
                        + " deepseek-v3-671b), a config.json or a checkpoint directory holding one"
                        + " (default ${DEFAULT-VALUE})")
    String modelName;

    @Option(
            names = "--layers",
            paramLabel = "N",
            description =
                    "decoder layers: the model cut (or extended) to N layers, its"
                        + " first_k_dense_replace dense layers first, e.g. --model deepseek-v3-16b"
                        + " --layers 4 = 1 dense + 3 MoE (default: the model's own)")
    Integer layers;

    @Option(
            names = "--data",
            description =
                    "'embedded' (the shipped public-domain corpus), 'synthetic' (random bigram"
                        + " text), or a UTF-8 .txt file, a .jsonl file of {\"text\": ...} lines, or"
                        + " a directory of them (default ${DEFAULT-VALUE})")
    String data;

    @Option(
            names = "--encoding",
            paramLabel = "CHARSET",
            description =
                    "the encoding of the --data files, e.g. ISO-8859-1 or UTF-16 (default"
                            + " ${DEFAULT-VALUE}); text that is not valid in it is refused with the"
                            + " file, line and byte offset named")
    String encoding;

    /** Picocli's defaults for this command. */
    public static final class Defaults extends TrainingFlags.Defaults {
        /** Creates the provider. */
        public Defaults() {
            super(values());
        }

        private static Map<String, String> values() {
            Map<String, String> m = new LinkedHashMap<>(TrainingFlags.defaultsOf(DEFAULTS));
            m.put("--model", "tiny");
            m.put("--data", "embedded");
            m.put("--encoding", "UTF-8");
            return m;
        }
    }

    @Override
    public Integer call() throws IOException, InterruptedException {
        Integer launched = LaunchCommand.relaunchForEp(flags.ep, spec);
        if (launched != null) {
            return launched;
        }
        PretrainOptions opts = flags.toOptions();
        opts.validate();
        HfMoeConfig config = model(modelName, layers);
        TokenSource source = source(data, opts.seed(), TextDecoding.charset(encoding));
        List<Path> extra = new ArrayList<>();
        // Rank 0 alone copies these into checkpoints; it alone writes and removes them.
        boolean writer = RankEnvironment.fromSystem().rank() == 0;
        if (source instanceof CorpusSource && opts.runDir() != null) {
            // Checkpoints carry the byte-level tokenizer, so finetune and HF tools read them. The
            // files wait in the run directory while the run lasts: removed at its end, whether it
            // succeeded or failed, so they never outlive it beside the checkpoints.
            Path tok = opts.runDir().resolve("tokenizer.json");
            Path cfg = opts.runDir().resolve("tokenizer_config.json");
            if (writer) {
                SafetensorsWriter.writeTextAtomically(tok, ByteTokenizer.huggingFaceJson());
                SafetensorsWriter.writeTextAtomically(cfg, ByteTokenizer.tokenizerConfigJson());
            }
            extra.add(tok);
            extra.add(cfg);
        }
        Map<String, Object> facts = new LinkedHashMap<>();
        facts.put("model_source", modelName);
        facts.put("data_source", data);
        Pretrain.Job job =
                new Pretrain.Job("pretrain", config, null, source, opts, null, extra, facts);
        try {
            Pretrain.Result r = Pretrain.run(job, System.out, StopSignal.install(), null);
            return exitCode(r, spec);
        } finally {
            if (writer) {
                for (Path f : extra) {
                    Files.deleteIfExists(f);
                }
            }
        }
    }

    /**
     * The exit code of a training run: 1, with the reason on standard error (rank 0), when the loss
     * did not fall over a run of two or more steps; else 0.
     *
     * @param r the run's result
     * @param spec the command (its error stream and name)
     * @return the exit code
     */
    static int exitCode(Pretrain.Result r, CommandSpec spec) {
        if (r.stopped() || r.losses().size() < 2 || r.finalLoss() < r.firstLoss()) {
            return 0;
        }
        if (RankEnvironment.fromSystem().rank() == 0) {
            spec.commandLine()
                    .getErr()
                    .printf(
                            Locale.ROOT,
                            "%s: error: the loss did not fall (%.4f at the first step, %.4f at the"
                                + " end): the run finished, but it did not learn; try a lower --lr"
                                + " or more --steps, and check --data%n",
                            spec.qualifiedName(),
                            r.firstLoss(),
                            r.finalLoss());
            spec.commandLine().getErr().flush();
        }
        return 1;
    }

    @Override
    public void checkRanks(int worldSize) throws IOException {
        PretrainOptions opts = flags.toOptions();
        opts.validate();
        Pretrain.checkEpSize(opts, model(modelName).numExperts(), worldSize);
    }

    /**
     * Resolves {@code --model}: a preset name, a {@code config.json}, or a directory with one.
     *
     * @param name the flag's value
     * @return the configuration
     * @throws IOException when the file cannot be read
     */
    static HfMoeConfig model(String name) throws IOException {
        Path p = Path.of(name);
        if (Files.isDirectory(p) || name.endsWith(".json")) {
            Path f = Files.isDirectory(p) ? p.resolve("config.json") : p;
            if (!Files.isRegularFile(f)) {
                throw new IllegalArgumentException("--model " + name + ": no such file " + f);
            }
            return HfMoeConfig.load(f);
        }
        try {
            return HfMoeConfig.preset(name);
        } catch (IllegalArgumentException e) {
            throw new IllegalArgumentException(
                    "--model "
                            + name
                            + ": not a config.json, a directory or a preset: "
                            + e.getMessage(),
                    e);
        }
    }

    /**
     * Resolves {@code --model} and applies {@code --layers}.
     *
     * @param name the {@code --model} value
     * @param layers the {@code --layers} value, or null for the model's own count
     * @return the configuration
     * @throws IOException when the file cannot be read
     * @throws IllegalArgumentException naming {@code --layers} when the count is below 1 or leaves
     *     no MoE layer
     */
    static HfMoeConfig model(String name, Integer layers) throws IOException {
        HfMoeConfig config = model(name);
        if (layers == null) {
            return config;
        }
        try {
            return config.withNumLayers(layers);
        } catch (IllegalArgumentException e) {
            throw new IllegalArgumentException("--layers " + layers + ": " + e.getMessage(), e);
        }
    }

    /**
     * Resolves {@code --data}.
     *
     * @param data the flag's value
     * @param seed the run seed
     * @return the source
     * @throws IOException when the file cannot be read
     */
    static TokenSource source(String data, long seed) throws IOException {
        return source(data, seed, java.nio.charset.StandardCharsets.UTF_8);
    }

    /**
     * Resolves {@code --data} with the encoding of its files.
     *
     * @param data the flag's value
     * @param seed the run seed
     * @param encoding the files' encoding
     * @return the source
     * @throws IOException when the file cannot be read
     */
    static TokenSource source(String data, long seed, java.nio.charset.Charset encoding)
            throws IOException {
        if ("embedded".equals(data)) {
            return new CorpusSource(TextCorpus.embedded(), HELD_OUT, seed);
        }
        if ("synthetic".equals(data)) {
            return new SyntheticBigramSource(256, 4, seed);
        }
        return new CorpusSource(TextCorpus.load(Path.of(data), encoding), HELD_OUT, seed);
    }
}
