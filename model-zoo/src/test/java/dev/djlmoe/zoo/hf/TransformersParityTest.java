/*
 * djl-moe: expert-parallel Mixture-of-Experts for the Deep Java Library.
 */
package dev.djlmoe.zoo.hf;

import static org.junit.jupiter.api.Assertions.assertArrayEquals;
import static org.junit.jupiter.api.Assertions.assertTrue;

import ai.djl.inference.Predictor;
import ai.djl.ndarray.NDArray;
import ai.djl.ndarray.NDList;
import ai.djl.ndarray.NDManager;
import ai.djl.ndarray.types.DataType;
import ai.djl.repository.zoo.Criteria;
import ai.djl.repository.zoo.ZooModel;
import org.junit.jupiter.params.ParameterizedTest;
import org.junit.jupiter.params.provider.ValueSource;

/**
 * Each architecture against the transformers library itself: tiny random checkpoints written by
 * transformers 5.17 ({@code save_pretrained}) and the logits transformers computed for fixed ids,
 * loaded through exactly the DJL {@code Criteria} call of the model zoo's contract.
 */
class TransformersParityTest {

    static final double TOLERANCE = 1e-4;

    @ParameterizedTest
    @ValueSource(
            strings = {
                "deepseek_v3_qlora_yarn",
                "deepseek_v3_tied",
                "deepseek_v2_lite",
                "deepseek_v2_group",
                "qwen3_moe_sharded",
                "qwen3_moe_tied_bias"
            })
    void criteriaPredictorMatchesTransformers(String name) throws Exception {
        Fixtures.Expected exp = Fixtures.expected(name);
        Criteria<NDList, NDList> criteria =
                Criteria.builder()
                        .setTypes(NDList.class, NDList.class)
                        .optModelPath(Fixtures.dir(name))
                        .optEngine("PyTorch")
                        .optArgument("blockFactory", "dev.djlmoe.zoo.hf.HfMoeBlockFactory")
                        .optOption("hasParameter", "false")
                        .build();
        try (ZooModel<NDList, NDList> model = criteria.loadModel();
                Predictor<NDList, NDList> predictor = model.newPredictor();
                NDManager m = NDManager.newBaseManager()) {
            NDArray ids = exp.idsArray(m);
            NDList out = predictor.predict(new NDList(ids));
            NDArray logits = out.singletonOrThrow();
            assertArrayEquals(exp.logitsShape(), logits.getShape().getShape(), name + " shape");
            assertTrue(logits.getDataType() == DataType.FLOAT32, "float32 logits");
            double rel = Fixtures.relativeError(logits.toFloatArray(), exp.logits());
            System.out.printf("%s: relative error vs transformers %.3g%n", name, rel);
            assertTrue(rel <= TOLERANCE, name + ": relative error " + rel + " > " + TOLERANCE);
        }
    }
}
