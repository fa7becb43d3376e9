/*
 * djl-moe: expert-parallel Mixture-of-Experts for the Deep Java Library.
 */
package dev.djlmoe.zoo.io;

import java.util.ArrayList;
import java.util.LinkedHashMap;
import java.util.List;
import java.util.Map;

/**
 * A small, bounded JSON parser and writer for safetensors headers, shard indexes and {@code
 * config.json}.
 *
 * <p>Parsing is defensive: the nesting depth and the length of the text are bounded by the caller,
 * duplicate object keys are rejected, and every error names the source and the character offset.
 * Values map to {@link Map} (insertion ordered), {@link List}, {@link String}, {@link Long} (an
 * integer literal that fits), {@link Double} (any other number), {@link Boolean} and {@code null}.
 */
public final class Json {

    /** Default bound on nesting depth. */
    public static final int DEFAULT_MAX_DEPTH = 64;

    /**
     * Heap bytes that parsing may take per byte of JSON text, at worst. Measured (issue 8): a
     * text of empty objects {@code [{},{},...]} allocates 32 bytes per byte and keeps about half;
     * numbers, arrays and keys 21 to 29; a tensor table 29.
     */
    public static final long HEAP_BYTES_PER_TEXT_BYTE = 32;

    private final String text;
    private final String source;
    private final int maxDepth;
    private int pos;

    private Json(String text, String source, int maxDepth) {
        this.text = text;
        this.source = source;
        this.maxDepth = maxDepth;
    }

    /**
     * Refuses a text too large to parse in this JVM's heap: JSON has no references, so its only
     * "bomb" is size, and a valid text near a format's size limit (100 MB for a safetensors
     * header) can need more heap than the JVM has. Allows texts up to half the maximum heap
     * divided by {@link #HEAP_BYTES_PER_TEXT_BYTE} (about 16 MiB per GiB of {@code -Xmx}).
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
                    source + ": " + textBytes + " bytes of JSON, more than the limit of " + limit
                            + " bytes that this JVM's maximum heap of " + (maxHeap >> 20)
                            + " MiB (-Xmx) can parse safely (up to "
                            + HEAP_BYTES_PER_TEXT_BYTE + " bytes of heap per byte)");
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
        Json p = new Json(text, source, maxDepth);
        p.skipWs();
        Object v = p.value(0);
        p.skipWs();
        if (p.pos != text.length()) {
            throw p.error("unexpected trailing content");
        }
        return v;
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
    public static Map<String, Object> parseObject(String text, String source)
            throws JsonException {
        Object v = parse(text, source, DEFAULT_MAX_DEPTH);
        if (!(v instanceof Map)) {
            throw new JsonException(source + ": expected a JSON object at the top level, found "
                    + typeName(v));
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

    private Object value(int depth) throws JsonException {
        if (pos >= text.length()) {
            throw error("unexpected end of input");
        }
        char c = text.charAt(pos);
        switch (c) {
            case '{':
                return object(depth + 1);
            case '[':
                return array(depth + 1);
            case '"':
                return string();
            case 't':
                literal("true");
                return Boolean.TRUE;
            case 'f':
                literal("false");
                return Boolean.FALSE;
            case 'n':
                literal("null");
                return null;
            default:
                if (c == '-' || (c >= '0' && c <= '9')) {
                    return number();
                }
                throw error("unexpected character '" + printable(c) + "'");
        }
    }

    private Map<String, Object> object(int depth) throws JsonException {
        if (depth > maxDepth) {
            throw error("nesting deeper than " + maxDepth);
        }
        pos++; // {
        Map<String, Object> map = new LinkedHashMap<>();
        skipWs();
        if (peek() == '}') {
            pos++;
            return map;
        }
        while (true) {
            skipWs();
            if (peek() != '"') {
                throw error("expected a string key");
            }
            int keyAt = pos;
            String key = string();
            skipWs();
            expect(':');
            skipWs();
            Object v = value(depth);
            if (map.containsKey(key)) {
                pos = keyAt;
                throw error("duplicate key \"" + key + "\"");
            }
            map.put(key, v);
            skipWs();
            char c = next();
            if (c == '}') {
                return map;
            }
            if (c != ',') {
                pos--;
                throw error("expected ',' or '}'");
            }
        }
    }

    private List<Object> array(int depth) throws JsonException {
        if (depth > maxDepth) {
            throw error("nesting deeper than " + maxDepth);
        }
        pos++; // [
        List<Object> list = new ArrayList<>();
        skipWs();
        if (peek() == ']') {
            pos++;
            return list;
        }
        while (true) {
            skipWs();
            list.add(value(depth));
            skipWs();
            char c = next();
            if (c == ']') {
                return list;
            }
            if (c != ',') {
                pos--;
                throw error("expected ',' or ']'");
            }
        }
    }

    private String string() throws JsonException {
        pos++; // "
        StringBuilder sb = new StringBuilder();
        while (true) {
            if (pos >= text.length()) {
                throw error("unterminated string");
            }
            char c = text.charAt(pos++);
            if (c == '"') {
                return sb.toString();
            }
            if (c == '\\') {
                if (pos >= text.length()) {
                    throw error("unterminated escape");
                }
                char e = text.charAt(pos++);
                switch (e) {
                    case '"':
                    case '\\':
                    case '/':
                        sb.append(e);
                        break;
                    case 'b':
                        sb.append('\b');
                        break;
                    case 'f':
                        sb.append('\f');
                        break;
                    case 'n':
                        sb.append('\n');
                        break;
                    case 'r':
                        sb.append('\r');
                        break;
                    case 't':
                        sb.append('\t');
                        break;
                    case 'u':
                        if (pos + 4 > text.length()) {
                            throw error("truncated \\u escape");
                        }
                        int cp = 0;
                        for (int i = 0; i < 4; i++) {
                            int d = Character.digit(text.charAt(pos++), 16);
                            if (d < 0) {
                                pos--;
                                throw error("bad hex digit in \\u escape");
                            }
                            cp = cp * 16 + d;
                        }
                        sb.append((char) cp);
                        break;
                    default:
                        pos--;
                        throw error("bad escape '\\" + printable(e) + "'");
                }
            } else if (c < 0x20) {
                pos--;
                throw error("control character in string");
            } else {
                sb.append(c);
            }
        }
    }

    private Number number() throws JsonException {
        int start = pos;
        if (peek() == '-') {
            pos++;
        }
        boolean integral = true;
        int digits = 0;
        while (pos < text.length() && Character.isDigit(text.charAt(pos))) {
            pos++;
            digits++;
        }
        if (digits == 0) {
            throw error("bad number");
        }
        if (pos < text.length() && text.charAt(pos) == '.') {
            integral = false;
            pos++;
            int frac = 0;
            while (pos < text.length() && Character.isDigit(text.charAt(pos))) {
                pos++;
                frac++;
            }
            if (frac == 0) {
                throw error("bad number: no digit after '.'");
            }
        }
        if (pos < text.length() && (text.charAt(pos) == 'e' || text.charAt(pos) == 'E')) {
            integral = false;
            pos++;
            if (pos < text.length() && (text.charAt(pos) == '+' || text.charAt(pos) == '-')) {
                pos++;
            }
            int exp = 0;
            while (pos < text.length() && Character.isDigit(text.charAt(pos))) {
                pos++;
                exp++;
            }
            if (exp == 0) {
                throw error("bad number: no digit in exponent");
            }
        }
        String s = text.substring(start, pos);
        if (s.length() > 400) {
            pos = start;
            throw error("number literal longer than 400 characters");
        }
        if (integral && digits <= 18) {
            return Long.parseLong(s);
        }
        if (integral) {
            try {
                return Long.parseLong(s);
            } catch (NumberFormatException e) {
                // falls through to double: magnitude beyond 64 bits
            }
        }
        double d = Double.parseDouble(s);
        if (Double.isInfinite(d)) {
            // 1e400 would become Infinity, which JSON cannot write back and no setting means.
            pos = start;
            throw error("number " + (s.length() > 40 ? s.substring(0, 40) + "..." : s)
                    + " is beyond the range of a double (about 1.8e308)");
        }
        return d;
    }

    private void literal(String word) throws JsonException {
        if (!text.startsWith(word, pos)) {
            throw error("unexpected token");
        }
        pos += word.length();
    }

    private void expect(char c) throws JsonException {
        if (pos >= text.length() || text.charAt(pos) != c) {
            throw error("expected '" + c + "'");
        }
        pos++;
    }

    private char peek() throws JsonException {
        if (pos >= text.length()) {
            throw error("unexpected end of input");
        }
        return text.charAt(pos);
    }

    private char next() throws JsonException {
        char c = peek();
        pos++;
        return c;
    }

    private void skipWs() {
        while (pos < text.length()) {
            char c = text.charAt(pos);
            if (c != ' ' && c != '\t' && c != '\n' && c != '\r') {
                return;
            }
            pos++;
        }
    }

    private JsonException error(String what) {
        return new JsonException(source + ": invalid JSON at offset " + pos + ": " + what);
    }

    private static String printable(char c) {
        return c < 0x20 || c > 0x7e ? String.format("\\u%04x", (int) c) : String.valueOf(c);
    }

    /**
     * Writes a value as indented JSON (2 spaces), keys in map order.
     *
     * @param value a tree of maps, lists, strings, numbers, booleans and nulls
     * @return the JSON text
     */
    public static String write(Object value) {
        StringBuilder sb = new StringBuilder();
        write(sb, value, 0, true);
        return sb.toString();
    }

    /**
     * Writes a value as compact JSON (no whitespace).
     *
     * @param value a tree of maps, lists, strings, numbers, booleans and nulls
     * @return the JSON text
     */
    public static String writeCompact(Object value) {
        StringBuilder sb = new StringBuilder();
        write(sb, value, 0, false);
        return sb.toString();
    }

    private static void write(StringBuilder sb, Object v, int indent, boolean pretty) {
        if (v == null) {
            sb.append("null");
        } else if (v instanceof String) {
            quote(sb, (String) v);
        } else if (v instanceof Boolean) {
            sb.append(v);
        } else if (v instanceof Double || v instanceof Float) {
            double d = ((Number) v).doubleValue();
            if (!Double.isFinite(d)) {
                throw new IllegalArgumentException("JSON cannot hold the number " + d);
            }
            if (d == Math.rint(d) && Math.abs(d) < 1e15) {
                // (long) -0.0 is 0: keep the sign of negative zero.
                sb.append(d == 0 && 1 / d < 0 ? "-0" : Long.toString((long) d)).append(".0");
            } else {
                sb.append(v instanceof Float ? Float.toString((Float) v) : Double.toString(d));
            }
        } else if (v instanceof Number) {
            sb.append(v);
        } else if (v instanceof Map) {
            Map<?, ?> m = (Map<?, ?>) v;
            if (m.isEmpty()) {
                sb.append("{}");
                return;
            }
            sb.append('{');
            boolean first = true;
            for (Map.Entry<?, ?> e : m.entrySet()) {
                if (!first) {
                    sb.append(',');
                }
                first = false;
                newline(sb, indent + 1, pretty);
                quote(sb, String.valueOf(e.getKey()));
                sb.append(pretty ? ": " : ":");
                write(sb, e.getValue(), indent + 1, pretty);
            }
            newline(sb, indent, pretty);
            sb.append('}');
        } else if (v instanceof List) {
            List<?> l = (List<?>) v;
            if (l.isEmpty()) {
                sb.append("[]");
                return;
            }
            sb.append('[');
            boolean first = true;
            for (Object o : l) {
                if (!first) {
                    sb.append(',');
                }
                first = false;
                newline(sb, indent + 1, pretty);
                write(sb, o, indent + 1, pretty);
            }
            newline(sb, indent, pretty);
            sb.append(']');
        } else if (v instanceof long[]) {
            List<Object> l = new ArrayList<>();
            for (long x : (long[]) v) {
                l.add(x);
            }
            write(sb, l, indent, false);
        } else {
            throw new IllegalArgumentException("cannot write " + v.getClass() + " as JSON");
        }
    }

    private static void newline(StringBuilder sb, int indent, boolean pretty) {
        if (pretty) {
            sb.append('\n');
            for (int i = 0; i < indent; i++) {
                sb.append("  ");
            }
        }
    }

    private static void quote(StringBuilder sb, String s) {
        sb.append('"');
        for (int i = 0; i < s.length(); i++) {
            char c = s.charAt(i);
            switch (c) {
                case '"':
                    sb.append("\\\"");
                    break;
                case '\\':
                    sb.append("\\\\");
                    break;
                case '\n':
                    sb.append("\\n");
                    break;
                case '\r':
                    sb.append("\\r");
                    break;
                case '\t':
                    sb.append("\\t");
                    break;
                default:
                    if (c < 0x20) {
                        sb.append(String.format("\\u%04x", (int) c));
                    } else {
                        sb.append(c);
                    }
            }
        }
        sb.append('"');
    }
}
