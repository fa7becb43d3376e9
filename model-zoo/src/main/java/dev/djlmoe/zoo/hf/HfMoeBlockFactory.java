/*
 * djl-moe: expert-parallel Mixture-of-Experts for the Deep Java Library.
 */
package dev.djlmoe.zoo.hf;

import ai.djl.Model;
import ai.djl.nn.Block;
import ai.djl.nn.BlockFactory;
import java.io.IOException;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.Map;

/**
 * DJL's hook for custom architectures: builds an {@link HfMoeForCausalLm} from a Hugging Face
 * checkpoint directory's {@code config.json} and reads its safetensors weights itself.
 *
 * <pre>
 * ZooModel&lt;NDList, NDList&gt; model =
 *     Criteria.builder()
 *         .setTypes(NDList.class, NDList.class)
 *         .optModelPath(checkpointDir)
 *         .optEngine("PyTorch")
 *         .optArgument("blockFactory", "dev.djlmoe.zoo.hf.HfMoeBlockFactory")
 *         .optOption("hasParameter", "false")
 *         .build()
 *         .loadModel();
 * // predictor: NDList(ids [B, S] int64) -&gt; NDList(logits [B, S, V] float32)
 * </pre>
 *
 * <p>Arguments: {@code strict} ({@code "true"}: a tensor the model does not use is an error;
 * default {@code "false"}: it is logged). The parameters belong to the model's manager; the model
 * runs with every expert local (for expert parallelism load through {@link HfCheckpoints#load} with
 * an EP context).
 */
public class HfMoeBlockFactory implements BlockFactory {

    private static final long serialVersionUID = 1L;

    /** Creates the factory (DJL instantiates it by class name). */
    public HfMoeBlockFactory() {}

    @Override
    public Block newBlock(Model model, Path modelPath, Map<String, ?> arguments)
            throws IOException {
        Path dir = Files.isRegularFile(modelPath) ? modelPath.getParent() : modelPath;
        boolean strict =
                arguments != null && "true".equals(String.valueOf(arguments.get("strict")));
        HfMoeForCausalLm block =
                HfMoeForCausalLm.builder().setConfig(HfMoeConfig.load(dir)).build();
        HfCheckpoints.loadWeights(block, dir, model.getNDManager(), strict);
        return block;
    }
}
