/*
 * djl-moe: expert-parallel Mixture-of-Experts for the Deep Java Library.
 */
package dev.djlmoe.zoo.hf;

import static org.junit.jupiter.api.Assertions.assertArrayEquals;
import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertTrue;

import ai.djl.Device;
import ai.djl.inference.Predictor;
import ai.djl.ndarray.NDArray;
import ai.djl.ndarray.NDList;
import ai.djl.ndarray.NDManager;
import ai.djl.ndarray.types.DataType;
import ai.djl.repository.zoo.Criteria;
import ai.djl.repository.zoo.ZooModel;
import dev.djlmoe.testing.TestDevice;
import org.junit.jupiter.params.ParameterizedTest;
import org.junit.jupiter.params.provider.MethodSource;

/**
 * Each architecture against the transformers library itself: tiny random checkpoints written by
 * transformers 5.17 ({@code save_pretrained}) and the logits transformers computed for fixed ids,
 * loaded through exactly the DJL {@code Criteria} call of the model zoo's contract, on the device
 * of {@link TestDevice} (the CPU in CI; GPU 0 with {@code -Ddjlmoe.test.device=gpu}: the same
 * bound, the weights, the input ids and the logits all on the GPU).
 */
class TransformersParityTest {

    static final double TOLERANCE = 1e-4;

    @ParameterizedTest
    @MethodSource("dev.djlmoe.zoo.hf.Fixtures#models")
    void criteriaPredictorMatchesTransformers(String name) throws Exception {
        Fixtures.Expected exp = Fixtures.expected(name);
        Device device = TestDevice.device();
        Criteria<NDList, NDList> criteria =
                Criteria.builder()
                        .setTypes(NDList.class, NDList.class)
                        .optModelPath(Fixtures.dir(name))
                        .optEngine("PyTorch")
                        .optDevice(device)
                        .optArgument("blockFactory", "dev.djlmoe.zoo.hf.HfMoeBlockFactory")
                        .optOption("hasParameter", "false")
                        .build();
        try (ZooModel<NDList, NDList> model = criteria.loadModel();
                Predictor<NDList, NDList> predictor = model.newPredictor();
                NDManager m = NDManager.newBaseManager(device)) {
            NDArray ids = exp.idsArray(m);
            NDList out = predictor.predict(new NDList(ids));
            NDArray logits = out.singletonOrThrow();
            assertEquals(device, logits.getDevice(), name + ": logits' device");
            assertEquals(
                    device,
                    model.getBlock().getParameters().valueAt(0).getArray().getDevice(),
                    name + ": weights' device");
            assertArrayEquals(exp.logitsShape(), logits.getShape().getShape(), name + " shape");
            assertTrue(logits.getDataType() == DataType.FLOAT32, "float32 logits");
            double rel = Fixtures.relativeError(logits.toFloatArray(), exp.logits());
            System.out.printf("%s on %s: relative error vs transformers %.3g%n", name, device, rel);
            assertTrue(rel <= TOLERANCE, name + ": relative error " + rel + " > " + TOLERANCE);
        }
    }
}
