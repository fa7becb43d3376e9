/*
 * djl-moe: expert-parallel Mixture-of-Experts for the Deep Java Library.
 */
package dev.djlmoe.recipes.data;

import static org.junit.jupiter.api.Assertions.assertArrayEquals;
import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertThrows;
import static org.junit.jupiter.api.Assertions.assertTrue;

import java.nio.charset.StandardCharsets;
import java.nio.file.Files;
import java.nio.file.Path;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.io.TempDir;

/**
 * Training text that is not valid in its encoding is refused with the file, line and byte offset
 * named; {@code --encoding} reads other encodings; valid UTF-8 passes byte for byte.
 */
class TextDecodingTest {

    /** "caf\u00e9 au lait\nna\u00efve\n" in Latin-1: 0xE9 at byte 3 of line 1. */
    private static final byte[] LATIN1 = {
        'c', 'a', 'f', (byte) 0xE9, ' ', 'a', 'u', '\n', 'n', 'a', (byte) 0xEF, 'v', 'e', '\n'
    };

    @Test
    void malformedUtf8IsNamedByFileLineAndOffset(@TempDir Path tmp) throws Exception {
        Path f = tmp.resolve("latin1.txt");
        Files.write(f, LATIN1);
        IllegalArgumentException e =
                assertThrows(IllegalArgumentException.class, () -> TextCorpus.load(f));
        assertTrue(
                e.getMessage()
                        .contains(
                                f
                                        + ": not valid UTF-8 text at line 1 (byte offset 3"
                                        + " in the file, 3 in the line): 0xE9"),
                e.getMessage());
        assertTrue(e.getMessage().contains("--encoding ISO-8859-1"), e.getMessage());
        // The second line's offsets, once the first is valid.
        byte[] second = LATIN1.clone();
        second[3] = 'e';
        Files.write(f, second);
        e = assertThrows(IllegalArgumentException.class, () -> TextCorpus.load(f));
        assertTrue(
                e.getMessage().contains("line 2 (byte offset 10 in the file, 2 in the line)"),
                e.getMessage());
    }

    @Test
    void utf16IsRecognisedAndReadWithItsEncoding(@TempDir Path tmp) throws Exception {
        Path f = tmp.resolve("utf16.txt");
        Files.write(f, "\uFEFFhello\n".getBytes(StandardCharsets.UTF_16LE));
        IllegalArgumentException e =
                assertThrows(IllegalArgumentException.class, () -> TextCorpus.load(f));
        assertTrue(
                e.getMessage().contains("UTF-16 byte-order mark: pass --encoding UTF-16"),
                e.getMessage());
        TextCorpus c = TextCorpus.load(f, TextDecoding.charset("UTF-16"));
        assertArrayEquals("hello\n".getBytes(StandardCharsets.UTF_8), c.bytes());
    }

    @Test
    void anExplicitEncodingTranscodesToUtf8(@TempDir Path tmp) throws Exception {
        Path f = tmp.resolve("latin1.txt");
        Files.write(f, LATIN1);
        TextCorpus c = TextCorpus.load(f, TextDecoding.charset("ISO-8859-1"));
        assertEquals("caf\u00e9 au\nna\u00efve\n", new String(c.bytes(), StandardCharsets.UTF_8));
        IllegalArgumentException e =
                assertThrows(
                        IllegalArgumentException.class, () -> TextDecoding.charset("klingon-8"));
        assertTrue(e.getMessage().contains("--encoding 'klingon-8'"), e.getMessage());
    }

    @Test
    void validUtf8PassesByteForByte(@TempDir Path tmp) throws Exception {
        byte[] text = "na\u00efve caf\u00e9 \u2014 \uD83D\uDE00\n".getBytes(StandardCharsets.UTF_8);
        Path f = tmp.resolve("ok.txt");
        Files.write(f, text);
        assertArrayEquals(text, TextCorpus.load(f).bytes());
    }

    @Test
    void jsonLinesAreCheckedToo(@TempDir Path tmp) throws Exception {
        Path f = tmp.resolve("d.jsonl");
        byte[] good = "{\"text\": \"ok\"}\n".getBytes(StandardCharsets.UTF_8);
        byte[] bad = "{\"text\": \"caf\u00e9\"}\n".getBytes(StandardCharsets.ISO_8859_1);
        byte[] both = new byte[good.length + bad.length];
        System.arraycopy(good, 0, both, 0, good.length);
        System.arraycopy(bad, 0, both, good.length, bad.length);
        Files.write(f, both);
        IllegalArgumentException e =
                assertThrows(IllegalArgumentException.class, () -> TextCorpus.load(f));
        assertTrue(e.getMessage().contains(f + ": not valid UTF-8 text at line 2"), e.getMessage());
        TextEncoder bytes =
                new TextEncoder() {
                    @Override
                    public long[] encode(String text) {
                        return ByteTokenizer.encode(text);
                    }

                    @Override
                    public String describe() {
                        return "bytes";
                    }
                };
        e = assertThrows(IllegalArgumentException.class, () -> JsonlDataset.load(f, bytes, 8, 256));
        assertTrue(e.getMessage().contains(f + ": not valid UTF-8 text at line 2"), e.getMessage());
        JsonlDataset ds = JsonlDataset.load(f, bytes, 8, 256, StandardCharsets.ISO_8859_1);
        assertEquals(2, ds.size());
    }
}
