/*
 * djl-moe: expert-parallel Mixture-of-Experts for the Deep Java Library.
 */
package dev.djlmoe.zoo.hf;

import dev.djlmoe.zoo.io.Json;
import java.util.List;
import java.util.Map;

/**
 * Typed access to the keys of a {@code config.json}, with errors that name the file, the key, what
 * it must be and what it is.
 */
final class ConfigKeys {
    private final Map<String, Object> raw;
    private final String source;

    /**
     * Reads from a parsed {@code config.json}.
     *
     * @param raw the keys and values
     * @param source where they came from, for messages
     */
    ConfigKeys(Map<String, Object> raw, String source) {
        this.raw = raw;
        this.source = source;
    }

    /**
     * Returns where the keys came from.
     *
     * @return the source named in messages
     */
    String source() {
        return source;
    }

    /**
     * Returns a key's raw value.
     *
     * @param key the key
     * @return its value, null when absent or null
     */
    Object get(String key) {
        return raw.get(key);
    }

    /**
     * An error about this file.
     *
     * @param what what is wrong
     * @return the exception, its message prefixed with the source
     */
    IllegalArgumentException fail(String what) {
        return new IllegalArgumentException(source + ": " + what);
    }

    boolean has(String key) {
        return raw.containsKey(key);
    }

    boolean isNull(String key) {
        return raw.get(key) == null;
    }

    private IllegalArgumentException bad(String key, String expected) {
        Object v = raw.get(key);
        return new IllegalArgumentException(
                source
                        + ": "
                        + key
                        + " must be "
                        + expected
                        + ", found "
                        + (raw.containsKey(key) ? Json.typeName(v) + " " + v : "nothing"));
    }

    String str(String key, String dflt) {
        Object v = raw.get(key);
        if (v == null) {
            if (dflt == null) {
                throw bad(key, "a string");
            }
            return dflt;
        }
        if (!(v instanceof String)) {
            throw bad(key, "a string");
        }
        return (String) v;
    }

    long posLong(String key) {
        Object v = raw.get(key);
        if (!(v instanceof Long) || (Long) v <= 0) {
            throw bad(key, "a positive integer");
        }
        return (Long) v;
    }

    int posInt(String key) {
        long v = posLong(key);
        if (v > Integer.MAX_VALUE) {
            throw bad(key, "a positive 32-bit integer");
        }
        return (int) v;
    }

    int posInt(String key, int dflt) {
        return raw.get(key) == null ? dflt : posInt(key);
    }

    int nonNegInt(String key) {
        Object v = raw.get(key);
        if (!(v instanceof Long) || (Long) v < 0 || (Long) v > Integer.MAX_VALUE) {
            throw bad(key, "a non-negative integer");
        }
        return ((Long) v).intValue();
    }

    int nonNegInt(String key, int dflt) {
        return raw.get(key) == null ? dflt : nonNegInt(key);
    }

    double num(String key, double dflt) {
        Object v = raw.get(key);
        if (v == null) {
            return dflt;
        }
        if (!(v instanceof Number) || !Double.isFinite(((Number) v).doubleValue())) {
            throw bad(key, "a finite number");
        }
        return ((Number) v).doubleValue();
    }

    boolean bool(String key, boolean dflt) {
        Object v = raw.get(key);
        if (v == null) {
            return dflt;
        }
        if (!(v instanceof Boolean)) {
            throw bad(key, "true or false");
        }
        return (Boolean) v;
    }

    List<?> list(String key) {
        Object v = raw.get(key);
        if (!(v instanceof List)) {
            throw bad(key, "an array");
        }
        return (List<?>) v;
    }

    @SuppressWarnings("unchecked")
    Map<String, Object> map(String key) {
        Object v = raw.get(key);
        if (!(v instanceof Map)) {
            throw bad(key, "an object");
        }
        return (Map<String, Object>) v;
    }
}
