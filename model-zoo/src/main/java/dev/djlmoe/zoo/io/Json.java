/*
 * djl-moe: expert-parallel Mixture-of-Experts for the Deep Java Library.
 */
package dev.djlmoe.zoo.io;

import com.fasterxml.jackson.core.JsonFactory;
import com.fasterxml.jackson.core.JsonLocation;
import com.fasterxml.jackson.core.JsonParser;
import com.fasterxml.jackson.core.JsonProcessingException;
import com.fasterxml.jackson.core.JsonToken;
import com.fasterxml.jackson.core.StreamReadConstraints;
import com.fasterxml.jackson.core.exc.StreamConstraintsException;
import com.fasterxml.jackson.core.io.JsonEOFException;
import java.io.IOException;
import java.io.UncheckedIOException;
import java.util.ArrayList;
import java.util.LinkedHashMap;
import java.util.List;
import java.util.Map;
import java.util.concurrent.ConcurrentHashMap;

/**
 * Bounded JSON reading (and writing) for safetensors headers, shard indexes and {@code
 * config.json}.
 *
 * <p>Parsing is Jackson's streaming tokenizer under {@link StreamReadConstraints}: the nesting
 * depth is bounded by the caller and number literals by {@value #MAX_NUMBER_CHARS} characters; the
 * length of the whole text is bounded by the caller (see {@link #checkHeap}), which bounds strings
 * and keys too. Duplicate object keys are refused, and every error names the source and the
 * character offset ({@code invalid JSON at offset N: what}). Values map to {@link Map} (insertion
 * ordered), {@link List}, {@link String}, {@link Long} (an integer literal that fits), {@link
 * Double} (any other number; one beyond the range of a double is refused), {@link Boolean} and
 * {@code null}.
 */
public final class Json {

    /** Default bound on nesting depth. */
    public static final int DEFAULT_MAX_DEPTH = 64;

    /** Longest number literal accepted, in characters. */
    public static final int MAX_NUMBER_CHARS = 400;

    /**
     * Heap bytes that parsing may take per byte of JSON text, at worst. Measured on 2 MiB texts
     * (bytes allocated per byte): empty objects {@code [{},{},...]} 23, empty arrays 13, integers
     * 6, doubles 18, distinct keys 13, a safetensors tensor table 13; the same or less than the
     * hand-written parser this replaced, which the bound of 32 was set for.
     */
    public static final long HEAP_BYTES_PER_TEXT_BYTE = 32;

    /** One factory per depth bound; factories are thread-safe and cheap to share. */
    private static final Map<Integer, JsonFactory> FACTORIES = new ConcurrentHashMap<>();

    private Json() {}

    /**
     * Refuses a text too large to parse in this JVM's heap: JSON has no references, so its only
     * "bomb" is size, and a valid text near a format's size limit (100 MB for a safetensors header)
     * can need more heap than the JVM has. Allows texts up to half the maximum heap divided by
     * {@link #HEAP_BYTES_PER_TEXT_BYTE} (about 16 MiB per GiB of {@code -Xmx}).
     *
     * @param textBytes the length of the text, in bytes
     * @param source what the text is, for the message
     * @throws JsonException naming the source, its size, the limit and the heap
     */
    public static void checkHeap(long textBytes, String source) throws JsonException {
        long maxHeap = Runtime.getRuntime().maxMemory();
        long limit = maxHeap / 2 / HEAP_BYTES_PER_TEXT_BYTE;
        if (textBytes > limit) {
            throw new JsonException(
                    source
                            + ": "
                            + textBytes
                            + " bytes of JSON, more than the limit of "
                            + limit
                            + " bytes that this JVM's maximum heap of "
                            + (maxHeap >> 20)
                            + " MiB (-Xmx) can parse safely (up to "
                            + HEAP_BYTES_PER_TEXT_BYTE
                            + " bytes of heap per byte)");
        }
    }

    /**
     * Parses one JSON value that must span the whole text (whitespace aside).
     *
     * @param text the JSON text
     * @param source what the text is, for error messages (a file name)
     * @param maxDepth the maximum nesting depth of arrays and objects
     * @return the value
     * @throws JsonException naming the source and offset of the first error
     */
    public static Object parse(String text, String source, int maxDepth) throws JsonException {
        try (JsonParser p = factory(maxDepth).createParser(text)) {
            try {
                JsonToken first = p.nextToken();
                if (first == null) {
                    throw error(source, p.currentLocation(), "unexpected end of input");
                }
                Object v = value(p, first, source);
                if (p.nextToken() != null) {
                    throw error(source, p.currentTokenLocation(), "unexpected trailing content");
                }
                return v;
            } catch (JsonProcessingException e) {
                JsonLocation at = e.getLocation() != null ? e.getLocation() : p.currentLocation();
                throw error(source, at, describe(e, maxDepth));
            }
        } catch (JsonException e) {
            throw e;
        } catch (IOException e) {
            // A String source performs no I/O; only closing could report one.
            throw new UncheckedIOException(e);
        }
    }

    /**
     * Parses a JSON object.
     *
     * @param text the JSON text
     * @param source what the text is, for error messages
     * @return the object
     * @throws JsonException if the text is not one JSON object
     */
    @SuppressWarnings("unchecked")
    public static Map<String, Object> parseObject(String text, String source) throws JsonException {
        Object v = parse(text, source, DEFAULT_MAX_DEPTH);
        if (!(v instanceof Map)) {
            throw new JsonException(
                    source + ": expected a JSON object at the top level, found " + typeName(v));
        }
        return (Map<String, Object>) v;
    }

    /**
     * Returns the JSON type name of a parsed value.
     *
     * @param v a parsed value
     * @return object, array, string, number, boolean or null
     */
    public static String typeName(Object v) {
        if (v == null) {
            return "null";
        } else if (v instanceof Map) {
            return "object";
        } else if (v instanceof List) {
            return "array";
        } else if (v instanceof String) {
            return "string";
        } else if (v instanceof Number) {
            return "number";
        } else if (v instanceof Boolean) {
            return "boolean";
        }
        return v.getClass().getSimpleName();
    }

    /**
     * Writes a value as indented JSON (2 spaces), keys in map order.
     *
     * @param value a tree of maps, lists, strings, numbers, booleans and nulls
     * @return the JSON text
     */
    public static String write(Object value) {
        return JsonWriter.write(value);
    }

    /**
     * Writes a value as compact JSON (no whitespace).
     *
     * @param value a tree of maps, lists, strings, numbers, booleans and nulls
     * @return the JSON text
     */
    public static String writeCompact(Object value) {
        return JsonWriter.writeCompact(value);
    }

    private static JsonFactory factory(int maxDepth) {
        return FACTORIES.computeIfAbsent(
                maxDepth,
                d ->
                        JsonFactory.builder()
                                .streamReadConstraints(
                                        StreamReadConstraints.builder()
                                                .maxNestingDepth(d)
                                                .maxNumberLength(MAX_NUMBER_CHARS)
                                                // The caller bounds the whole text.
                                                .maxStringLength(Integer.MAX_VALUE)
                                                .maxNameLength(Integer.MAX_VALUE)
                                                .build())
                                // Keys are not interned or pooled: a hostile file may hold
                                // millions of distinct ones.
                                .disable(JsonFactory.Feature.INTERN_FIELD_NAMES)
                                .disable(JsonFactory.Feature.CANONICALIZE_FIELD_NAMES)
                                .build());
    }

    /** Reads the value whose first token is {@code t}; the parser bounds the recursion depth. */
    private static Object value(JsonParser p, JsonToken t, String source) throws IOException {
        switch (t) {
            case START_OBJECT:
                Map<String, Object> map = new LinkedHashMap<>();
                while (p.nextToken() == JsonToken.FIELD_NAME) {
                    String key = p.currentName();
                    JsonLocation keyAt = p.currentTokenLocation();
                    Object v = value(p, p.nextToken(), source);
                    // Checked here rather than by STRICT_DUPLICATE_DETECTION: the map is at
                    // hand, and the error points at the second key.
                    if (map.containsKey(key)) {
                        throw error(source, keyAt, "duplicate key \"" + key + "\"");
                    }
                    map.put(key, v);
                }
                return map;
            case START_ARRAY:
                List<Object> list = new ArrayList<>();
                for (JsonToken e = p.nextToken(); e != JsonToken.END_ARRAY; e = p.nextToken()) {
                    list.add(value(p, e, source));
                }
                return list;
            case VALUE_STRING:
                return p.getText();
            case VALUE_NUMBER_INT:
                if (p.getNumberType() != JsonParser.NumberType.BIG_INTEGER) {
                    return p.getLongValue();
                }
                return finiteDouble(p, source); // magnitude beyond 64 bits
            case VALUE_NUMBER_FLOAT:
                return finiteDouble(p, source);
            case VALUE_TRUE:
                return Boolean.TRUE;
            case VALUE_FALSE:
                return Boolean.FALSE;
            case VALUE_NULL:
                return null;
            default:
                throw error(source, p.currentTokenLocation(), "unexpected token " + t);
        }
    }

    private static Double finiteDouble(JsonParser p, String source) throws IOException {
        String s = p.getText();
        double d = Double.parseDouble(s);
        if (Double.isInfinite(d)) {
            // 1e400 would become Infinity, which JSON cannot write back and no setting means.
            throw error(
                    source,
                    p.currentTokenLocation(),
                    "number "
                            + (s.length() > 40 ? s.substring(0, 40) + "..." : s)
                            + " is beyond the range of a double (about 1.8e308)");
        }
        return d;
    }

    /** Says what a tokenizer error means, in the words of this project's messages. */
    private static String describe(JsonProcessingException e, int maxDepth) {
        String msg = e.getOriginalMessage();
        if (e instanceof JsonEOFException) {
            return "unexpected end of input";
        }
        if (e instanceof StreamConstraintsException) {
            if (msg.contains("nesting depth")) {
                return "nesting deeper than " + maxDepth;
            }
            if (msg.startsWith("Number value length")) {
                return "number literal longer than " + MAX_NUMBER_CHARS + " characters";
            }
        }
        if (msg.startsWith("Illegal unquoted character")) {
            return "control character in string";
        }
        if (msg.contains("expected a hex-digit for character escape")) {
            return "bad hex digit in \\u escape";
        }
        if (msg.startsWith("Unrecognized token")) {
            // "Unrecognized token 'tru': was expecting ..." names the token.
            return "unexpected token" + msg.substring("Unrecognized token".length());
        }
        int quote = msg.indexOf('\'');
        if (msg.startsWith("Unrecognized character escape")
                && quote >= 0
                && quote + 1 < msg.length()) {
            return "bad escape '\\" + printable(msg.charAt(quote + 1)) + "'";
        }
        return msg.isEmpty()
                ? "malformed"
                : Character.toLowerCase(msg.charAt(0)) + msg.substring(1);
    }

    private static JsonException error(String source, JsonLocation at, String what) {
        return new JsonException(
                source + ": invalid JSON at offset " + at.getCharOffset() + ": " + what);
    }

    private static String printable(char c) {
        return c < 0x20 || c > 0x7e ? String.format("\\u%04x", (int) c) : String.valueOf(c);
    }
}
