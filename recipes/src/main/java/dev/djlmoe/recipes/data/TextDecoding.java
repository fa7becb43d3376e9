/*
 * djl-moe: expert-parallel Mixture-of-Experts for the Deep Java Library.
 */
package dev.djlmoe.recipes.data;

import java.nio.ByteBuffer;
import java.nio.CharBuffer;
import java.nio.charset.CharacterCodingException;
import java.nio.charset.Charset;
import java.nio.charset.CharsetDecoder;
import java.nio.charset.CoderResult;
import java.nio.charset.CodingErrorAction;
import java.nio.charset.IllegalCharsetNameException;
import java.nio.charset.StandardCharsets;
import java.nio.charset.UnsupportedCharsetException;
import java.util.Locale;

/**
 * Strict decoding of training text: bytes that are not valid in the file's encoding are refused
 * with the file, line and byte offset named, never replaced by U+FFFD without a word (a model
 * trained on replacement characters learns them).
 */
public final class TextDecoding {

    private TextDecoding() {}

    /**
     * Parses the value of {@code --encoding}.
     *
     * @param name a charset name such as {@code UTF-8}, {@code ISO-8859-1}, {@code UTF-16}
     * @return the charset
     * @throws IllegalArgumentException naming the value when Java knows no such charset
     */
    public static Charset charset(String name) {
        try {
            return Charset.forName(name.trim());
        } catch (IllegalCharsetNameException | UnsupportedCharsetException e) {
            throw new IllegalArgumentException(
                    "--encoding '"
                            + name
                            + "' is not a character"
                            + " encoding this Java runtime knows (e.g. UTF-8, ISO-8859-1, UTF-16)",
                    e);
        }
    }

    /**
     * Decodes a file's bytes, refusing malformed or unmappable input. A UTF-8 byte-order mark is
     * dropped.
     *
     * @param bytes the file's content
     * @param cs its encoding
     * @param file the file, for the message
     * @return the text
     * @throws IllegalArgumentException naming the file, the line, the byte offset and the bytes
     *     when they are not valid in {@code cs}
     */
    public static String decode(byte[] bytes, Charset cs, String file) {
        int start = 0;
        if (cs.equals(StandardCharsets.UTF_8)
                && bytes.length >= 3
                && (bytes[0] & 0xFF) == 0xEF
                && (bytes[1] & 0xFF) == 0xBB
                && (bytes[2] & 0xFF) == 0xBF) {
            start = 3;
        }
        CharsetDecoder dec =
                cs.newDecoder()
                        .onMalformedInput(CodingErrorAction.REPORT)
                        .onUnmappableCharacter(CodingErrorAction.REPORT);
        ByteBuffer in = ByteBuffer.wrap(bytes, start, bytes.length - start);
        CharBuffer out =
                CharBuffer.allocate(
                        (int)
                                Math.min(
                                        Integer.MAX_VALUE - 16,
                                        (long) (bytes.length * (double) dec.maxCharsPerByte())
                                                + 16));
        CoderResult r = dec.decode(in, out, true);
        if (!r.isError()) {
            r = dec.flush(out);
        }
        if (r.isError()) {
            throw new IllegalArgumentException(
                    malformed(bytes, in.position(), r.length(), cs, file));
        }
        if (r.isOverflow()) {
            // Cannot happen with the buffer sized by maxCharsPerByte; decode the plain way.
            try {
                return dec.reset()
                        .decode(ByteBuffer.wrap(bytes, start, bytes.length - start))
                        .toString();
            } catch (CharacterCodingException e) {
                throw new IllegalArgumentException(file + ": not valid " + cs.name(), e);
            }
        }
        out.flip();
        return out.toString();
    }

    private static String malformed(byte[] b, int at, int len, Charset cs, String file) {
        int line = 1;
        int lineStart = 0;
        for (int i = 0; i < at; i++) {
            if (b[i] == '\n') {
                line++;
                lineStart = i + 1;
            }
        }
        StringBuilder hex = new StringBuilder();
        for (int i = at; i < Math.min(b.length, at + Math.max(1, len)); i++) {
            hex.append(hex.length() == 0 ? "" : " ")
                    .append(String.format(Locale.ROOT, "0x%02X", b[i] & 0xFF));
        }
        String hint = "";
        if (cs.equals(StandardCharsets.UTF_8)) {
            boolean utf16 =
                    b.length >= 2
                            && (((b[0] & 0xFF) == 0xFF && (b[1] & 0xFF) == 0xFE)
                                    || ((b[0] & 0xFF) == 0xFE && (b[1] & 0xFF) == 0xFF));
            hint =
                    utf16
                            ? " (the file starts with a UTF-16 byte-order mark: pass --encoding"
                                    + " UTF-16)"
                            : " (a Latin-1 or Windows-1252 file? pass --encoding ISO-8859-1 or"
                                    + " windows-1252, or convert it: iconv -f latin1 -t utf-8)";
        }
        return String.format(
                Locale.ROOT,
                "%s: not valid %s text at line %d (byte offset %d in the file, %d in the line):"
                        + " %s%s",
                file,
                cs.name(),
                line,
                at,
                at - lineStart,
                hex,
                hint);
    }
}
