/*
 * djl-moe: expert-parallel Mixture-of-Experts for the Deep Java Library.
 */
package dev.djlmoe.zoo.hf;

import ai.djl.ndarray.NDArray;
import ai.djl.ndarray.NDManager;
import ai.djl.ndarray.types.Shape;
import dev.djlmoe.zoo.io.SafetensorsFile;
import dev.djlmoe.zoo.io.TensorInfo;
import java.io.IOException;
import java.nio.file.Path;
import java.nio.file.Paths;
import java.util.stream.Stream;

/** The transformers-written fixtures of {@code src/test/fixtures/hf} (generate_fixtures.py). */
final class Fixtures {

    static final Path ROOT = Paths.get("src/test/fixtures/hf");

    private Fixtures() {}

    /**
     * Every model fixture, for {@code @MethodSource("dev.djlmoe.zoo.hf.Fixtures#models")}.
     *
     * @return the fixtures' names
     */
    static Stream<String> models() {
        return Stream.of(
                "deepseek_v3_qlora_yarn",
                "deepseek_v3_tied",
                "deepseek_v2_lite",
                "deepseek_v2_group",
                "qwen3_moe_sharded",
                "qwen3_moe_tied_bias");
    }

    static Path dir(String name) {
        return ROOT.resolve(name);
    }

    /** Input ids and transformers' logits of a fixture. */
    record Expected(long[] ids, long[] idsShape, float[] logits, long[] logitsShape) {
        NDArray idsArray(NDManager m) {
            return m.create(ids, new Shape(idsShape));
        }
    }

    static Expected expected(String name) throws IOException {
        return expectedAt(dir(name));
    }

    static Expected expectedAt(Path dir) throws IOException {
        try (SafetensorsFile f = SafetensorsFile.open(dir.resolve("expected.safetensors"))) {
            TensorInfo ids = f.info("input_ids");
            TensorInfo logits = f.info("logits");
            return new Expected(
                    f.readLongs("input_ids"), ids.shape(), f.readFloats("logits"), logits.shape());
        }
    }

    /** max |a - b| / max |b|. */
    static double relativeError(float[] a, float[] b) {
        if (a.length != b.length) {
            throw new AssertionError("length " + a.length + " vs " + b.length);
        }
        double num = 0;
        double den = 0;
        for (int i = 0; i < a.length; i++) {
            num = Math.max(num, Math.abs((double) a[i] - b[i]));
            den = Math.max(den, Math.abs((double) b[i]));
        }
        return num / den;
    }
}
