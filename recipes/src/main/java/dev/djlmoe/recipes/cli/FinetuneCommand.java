/*
 * djl-moe: expert-parallel Mixture-of-Experts for the Deep Java Library.
 */
package dev.djlmoe.recipes.cli;

import dev.djlmoe.recipes.Pretrain;
import dev.djlmoe.recipes.PretrainOptions;
import dev.djlmoe.recipes.StopSignal;
import dev.djlmoe.recipes.data.HfTextEncoder;
import dev.djlmoe.recipes.data.JsonlDataset;
import dev.djlmoe.recipes.data.TextDecoding;
import dev.djlmoe.zoo.hf.HfMoeConfig;
import java.io.IOException;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.ArrayList;
import java.util.LinkedHashMap;
import java.util.List;
import java.util.Map;
import java.util.concurrent.Callable;
import picocli.CommandLine.Command;
import picocli.CommandLine.Mixin;
import picocli.CommandLine.Model.CommandSpec;
import picocli.CommandLine.Option;
import picocli.CommandLine.Spec;

/** {@code djl-moe finetune}: fine-tunes a Hugging Face MoE checkpoint on a JSON-lines dataset. */
@Command(
        name = "finetune",
        mixinStandardHelpOptions = true,
        defaultValueProvider = FinetuneCommand.Defaults.class,
        description = {
            "Fine-tune a Hugging Face MoE checkpoint on a JSONL dataset.",
            "The checkpoint (DeepSeek-V3/V2, Qwen3-MoE: config.json, safetensors, tokenizer.json)"
                    + " trains with expert parallelism and is saved as a Hugging Face checkpoint."
                    + " Dataset lines: {\"text\": ...} (loss on every token) or {\"prompt\": ...,"
                    + " \"response\": ...} (loss on the response only); the tokenizer's end token"
                    + " follows each text and response."
        },
        footer = {
            "",
            "Example:",
            "  djl-moe finetune --model ckpt/ --data chat.jsonl --ep 2 --lr 1e-4"
        })
public final class FinetuneCommand implements Callable<Integer>, RankCountCheck {

    /** Defaults of fine-tuning. */
    public static final PretrainOptions DEFAULTS =
            PretrainOptions.builder()
                    .optSteps(100)
                    .optBatch(8)
                    .optSeqLen(128)
                    .optLearningRate(1e-4f)
                    .optWarmupSteps(10)
                    .optBiasUpdateRate(0f)
                    .optLogEvery(10)
                    .optRunDir(Path.of("runs", "finetune"))
                    .optWeightDecay(0.0f)
                    .optSeqAuxAlpha(0f)
                    .build();

    @Spec CommandSpec spec;

    @Mixin TrainingFlags flags;

    @Option(
            names = "--model",
            required = true,
            paramLabel = "DIR",
            description = "Hugging Face checkpoint directory (config.json + safetensors)")
    Path modelDir;

    @Option(
            names = "--data",
            required = true,
            paramLabel = "FILE",
            description =
                    "JSONL dataset: {\"text\": ...} or {\"prompt\": ..., \"response\": ...} per"
                            + " line")
    Path data;

    @Option(
            names = "--tokenizer",
            paramLabel = "PATH",
            description = "tokenizer.json, or a directory holding it (default: the one in --model)")
    Path tokenizer;

    @Option(
            names = "--encoding",
            paramLabel = "CHARSET",
            description =
                    "the encoding of the --data file (default UTF-8); text that is not valid in it"
                            + " is refused with the line and byte offset named")
    String encoding = "UTF-8";

    @Option(
            names = "--output",
            paramLabel = "DIR",
            description =
                    "where the fine-tuned Hugging Face checkpoint goes (default: RUN-DIR/model)")
    Path output;

    /** Picocli's defaults for this command. */
    public static final class Defaults extends TrainingFlags.Defaults {
        /** Creates the provider. */
        public Defaults() {
            super(TrainingFlags.defaultsOf(DEFAULTS));
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
        Pretrain.Job job = job(opts);
        Pretrain.Result r = Pretrain.run(job, System.out, StopSignal.install(), null);
        return PretrainCommand.exitCode(r, spec);
    }

    @Override
    public void checkRanks(int worldSize) throws IOException {
        PretrainOptions opts = flags.toOptions();
        opts.validate();
        checkModelDir();
        Pretrain.checkEpSize(opts, HfMoeConfig.load(modelDir).numExperts(), worldSize);
    }

    private void checkModelDir() {
        if (!Files.isDirectory(modelDir)) {
            throw new IllegalArgumentException("--model " + modelDir + ": no such directory");
        }
        if (!Files.isRegularFile(modelDir.resolve("config.json"))) {
            throw new IllegalArgumentException(
                    "--model " + modelDir + ": no config.json, not a Hugging Face checkpoint");
        }
    }

    /**
     * Builds the job: reads the model's configuration, tokenizes the dataset.
     *
     * @param opts the settings
     * @return the job
     * @throws IOException when a file cannot be read
     */
    Pretrain.Job job(PretrainOptions opts) throws IOException {
        checkModelDir();
        if (!Files.isRegularFile(data)) {
            throw new IllegalArgumentException("--data " + data + ": no such file");
        }
        HfMoeConfig config = HfMoeConfig.load(modelDir);
        Path tok = tokenizer != null ? tokenizer : modelDir;
        JsonlDataset ds;
        List<Path> extra = new ArrayList<>();
        try (HfTextEncoder enc = HfTextEncoder.open(tok)) {
            ds =
                    JsonlDataset.load(
                            data,
                            enc,
                            opts.seqLen(),
                            config.vocabSize(),
                            TextDecoding.charset(encoding));
            extra.add(enc.file());
            Path cfg = enc.file().resolveSibling("tokenizer_config.json");
            if (Files.isRegularFile(cfg)) {
                extra.add(cfg);
            }
        }
        Path out =
                output != null
                        ? output
                        : (opts.runDir() != null
                                ? opts.runDir().resolve("model")
                                : Path.of("finetuned"));
        Map<String, Object> facts = new LinkedHashMap<>();
        facts.put("base_model", modelDir.toAbsolutePath().toString());
        facts.put("dataset", data.toAbsolutePath().toString());
        return new Pretrain.Job(
                "finetune",
                config,
                modelDir,
                ds.source(config.vocabSize(), opts.seed()),
                opts,
                out,
                extra,
                facts);
    }
}
