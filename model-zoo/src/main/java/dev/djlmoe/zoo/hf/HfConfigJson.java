/*
 * djl-moe: expert-parallel Mixture-of-Experts for the Deep Java Library.
 */
package dev.djlmoe.zoo.hf;

import dev.djlmoe.zoo.io.Json;
import dev.djlmoe.zoo.io.JsonException;
import java.io.IOException;
import java.nio.charset.StandardCharsets;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.LinkedHashMap;
import java.util.List;
import java.util.Map;

/**
 * The {@code config.json} file of an {@link HfMoeConfig}: read with a size bound, written back with
 * the keys it was read with.
 */
final class HfConfigJson {

    private HfConfigJson() {}

    /**
     * Reads {@code config.json} from a checkpoint directory (or the file itself).
     *
     * @param path the directory or the file
     * @return the configuration; messages name the file
     * @throws IOException if the file is missing, larger than {@link HfMoeConfig#MAX_CONFIG_BYTES}
     *     or not valid JSON
     * @throws IllegalArgumentException naming the key if a setting is missing or unsupported
     */
    static HfMoeConfig load(Path path) throws IOException {
        Path file = Files.isDirectory(path) ? path.resolve("config.json") : path;
        if (!Files.isRegularFile(file)) {
            throw new IOException(file + ": no config.json");
        }
        long size = Files.size(file);
        if (size > HfMoeConfig.MAX_CONFIG_BYTES) {
            throw new IOException(
                    file
                            + ": "
                            + size
                            + " bytes, larger than the "
                            + HfMoeConfig.MAX_CONFIG_BYTES
                            + " accepted for config.json");
        }
        return parse(Files.readString(file, StandardCharsets.UTF_8), file.toString());
    }

    /**
     * Parses the text of a {@code config.json}.
     *
     * @param json the text
     * @param source where it came from, for messages
     * @return the configuration
     * @throws JsonException if the text is not a JSON object
     * @throws IllegalArgumentException naming the key if a setting is missing or unsupported
     */
    static HfMoeConfig parse(String json, String source) throws JsonException {
        return HfMoeConfig.of(Json.parseObject(json, source), source);
    }

    /**
     * Returns the content to save: the keys read, in their order, plus {@code architectures} and
     * {@code torch_dtype} when the file had none.
     *
     * @param raw the keys the configuration was read from
     * @param family its family
     * @return the keys and values
     */
    static Map<String, Object> toMap(Map<String, Object> raw, HfMoeConfig.Family family) {
        Map<String, Object> m = new LinkedHashMap<>(raw);
        m.putIfAbsent("architectures", List.of(family.architecture()));
        m.putIfAbsent("torch_dtype", "float32");
        return m;
    }

    /**
     * Writes the content of {@link #toMap} as indented JSON with a final newline.
     *
     * @param map the keys and values
     * @return the text
     */
    static String write(Map<String, Object> map) {
        return Json.write(map) + "\n";
    }
}
