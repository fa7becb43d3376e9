/*
 * djl-moe: expert-parallel Mixture-of-Experts for the Deep Java Library.
 */
package dev.djlmoe.recipes.train;

import ai.djl.training.Trainer;
import ai.djl.training.listener.TrainingListenerAdapter;
import dev.djlmoe.zoo.hf.HfCheckpoints;
import java.io.IOException;
import java.io.UncheckedIOException;
import java.nio.file.Files;
import java.nio.file.Path;
import java.nio.file.StandardCopyOption;

/**
 * Saves the trained model as a Hugging Face checkpoint (with the job's extra files, the tokenizer)
 * when a run finishes all its steps; a stopped run exports nothing. A DJL training listener that
 * uses {@code onTrainingEnd} only (collective: every rank writes its experts).
 */
public final class ModelExportListener extends TrainingListenerAdapter {

    private final TrainingRun run;
    private final Path output;

    /**
     * Creates the listener of a run.
     *
     * @param run the run
     * @param output the checkpoint directory to write
     */
    public ModelExportListener(TrainingRun run, Path output) {
        this.run = run;
        this.output = output;
    }

    @Override
    public void onTrainingEnd(Trainer trainer) {
        if (run.stopped()) {
            return;
        }
        try {
            HfCheckpoints.save(run.session().model(), output);
            if (run.lead()) {
                for (Path f : run.job().extraFiles()) {
                    Files.copy(
                            f,
                            output.resolve(f.getFileName().toString()),
                            StandardCopyOption.REPLACE_EXISTING);
                }
            }
        } catch (IOException e) {
            throw new UncheckedIOException(e);
        }
        run.session().group().barrier();
        run.log().println("model: " + output + " (Hugging Face checkpoint)");
    }
}
