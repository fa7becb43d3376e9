/*
 * djl-moe: expert-parallel Mixture-of-Experts for the Deep Java Library.
 */
package dev.djlmoe.zoo.hf;

import dev.djlmoe.zoo.io.Json;
import dev.djlmoe.zoo.io.JsonException;
import java.io.IOException;
import java.io.InputStream;
import java.io.UncheckedIOException;
import java.nio.charset.StandardCharsets;
import java.util.List;
import java.util.Locale;
import java.util.Map;

/**
 * The named configurations: {@code config.json} files kept as resources under {@code
 * dev/djlmoe/zoo/hf/presets/NAME.json}.
 */
final class ConfigPresets {

    /** The preset names, in the order messages list them. */
    static final List<String> NAMES =
            List.of(
                    "deepseek-v3-671b",
                    "deepseek-v3-16b",
                    "tiny",
                    "tiny-deepseek-v2",
                    "tiny-qwen3-moe");

    private ConfigPresets() {}

    /**
     * Reads a preset's {@code config.json}.
     *
     * @param name the name, in any case
     * @return its keys and values
     * @throws IllegalArgumentException for an unknown name, listing the known ones
     */
    static Map<String, Object> load(String name) {
        String key = name.toLowerCase(Locale.ROOT);
        if (!NAMES.contains(key)) {
            throw new IllegalArgumentException(
                    "unknown preset \""
                            + name
                            + "\": expected "
                            + String.join(", ", NAMES.subList(0, NAMES.size() - 1))
                            + " or "
                            + NAMES.get(NAMES.size() - 1));
        }
        String resource = "presets/" + key + ".json";
        try (InputStream in = ConfigPresets.class.getResourceAsStream(resource)) {
            if (in == null) {
                throw new IllegalStateException(
                        "preset "
                                + key
                                + ": resource "
                                + resource
                                + " is missing from the model-zoo jar");
            }
            return Json.parseObject(
                    new String(in.readAllBytes(), StandardCharsets.UTF_8), "preset " + key);
        } catch (JsonException e) {
            throw new IllegalStateException(e.getMessage(), e);
        } catch (IOException e) {
            throw new UncheckedIOException(e);
        }
    }
}
