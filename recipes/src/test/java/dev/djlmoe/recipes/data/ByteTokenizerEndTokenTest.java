/*
 * djl-moe: expert-parallel Mixture-of-Experts for the Deep Java Library.
 */
package dev.djlmoe.recipes.data;

import static org.junit.jupiter.api.Assertions.assertArrayEquals;
import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertFalse;
import static org.junit.jupiter.api.Assertions.assertTrue;

import dev.djlmoe.zoo.io.Json;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.List;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.io.TempDir;

/**
 * The byte-level tokenizer's end token: id 255 (byte 0xFF, never in UTF-8), named in the
 * checkpoint's tokenizer files, implied for tokenizer.json files written before it existed,
 * appended by fine-tuning after each response, and where decoding stops.
 */
class ByteTokenizerEndTokenTest {

    private static Path write(Path dir, String json, String config) throws Exception {
        Files.createDirectories(dir);
        Files.writeString(dir.resolve("tokenizer.json"), json);
        if (config != null) {
            Files.writeString(dir.resolve("tokenizer_config.json"), config);
        }
        return dir;
    }

    /** The tokenizer files a checkpoint gets now, in {@code tmp/new}. */
    private static Path writeNew(Path tmp) throws Exception {
        return write(
                tmp.resolve("new"),
                ByteTokenizer.huggingFaceJson(),
                ByteTokenizer.tokenizerConfigJson());
    }

    @Test
    void aNewCheckpointsTokenizerNamesItsEndToken(@TempDir Path tmp) throws Exception {
        Path dir = writeNew(tmp);
        try (HfTextEncoder enc = HfTextEncoder.open(dir)) {
            assertEquals(ByteTokenizer.EOS, enc.eosId());
            assertFalse(enc.eosImplied());
            String text = "na\u00efve caf\u00e9, \"quoted\"\n\u00ff";
            assertArrayEquals(ByteTokenizer.encode(text), enc.encode(text), "ids are bytes");
            assertArrayEquals(
                    new long[] {ByteTokenizer.EOS},
                    enc.encode(ByteTokenizer.EOS_TOKEN),
                    "the end token is one id");
            long[] ids = ByteTokenizer.encode("stop here");
            long[] withEnd = new long[ids.length + 3];
            System.arraycopy(ids, 0, withEnd, 0, ids.length);
            withEnd[ids.length] = ByteTokenizer.EOS;
            withEnd[ids.length + 1] = 'x';
            withEnd[ids.length + 2] = 'y';
            assertEquals("stop here", enc.decode(withEnd));
            assertEquals("stop here", ByteTokenizer.decode(withEnd));
        }
    }

    @Test
    void anOldCheckpointsTokenizerStillLoadsAndGetsTheEndToken(@TempDir Path tmp) throws Exception {
        // What pre-training wrote before the end token: id 255 is byte 0xFF's character.
        String old = ByteTokenizer.huggingFaceJson(List.of(), List.of());
        assertTrue(ByteTokenizer.isByteLevel(Json.parseObject(old, "old")));
        Path dir = write(tmp.resolve("old"), old, null);
        try (HfTextEncoder enc = HfTextEncoder.open(dir)) {
            assertEquals(ByteTokenizer.EOS, enc.eosId());
            assertTrue(enc.eosImplied());
            assertTrue(enc.describe().contains("end token 255"), enc.describe());
            assertArrayEquals(ByteTokenizer.encode("abc \u00e9"), enc.encode("abc \u00e9"));
        }
    }

    @Test
    void anotherTokenizerWithoutConfigHasNoEndTokenAndTheDataSaySo(@TempDir Path tmp)
            throws Exception {
        Path dir =
                write(
                        tmp.resolve("bpe"),
                        ByteTokenizer.huggingFaceJson(List.of("h e", "a n"), List.of()),
                        null);
        Path data = tmp.resolve("d.jsonl");
        Files.writeString(data, "{\"prompt\": \"hi\", \"response\": \" there\"}\n");
        try (HfTextEncoder enc = HfTextEncoder.open(dir)) {
            assertFalse(
                    ByteTokenizer.isByteLevel(
                            Json.parseObject(
                                    Files.readString(dir.resolve("tokenizer.json")), "bpe")));
            assertEquals(-1, enc.eosId());
            JsonlDataset ds = JsonlDataset.load(data, enc, 16, 300);
            String d = ds.source(300, 1).describe();
            assertTrue(d.contains("NO end token"), d);
        }
    }

    @Test
    void fineTuningAppendsTheEndTokenAsATarget(@TempDir Path tmp) throws Exception {
        Path dir = writeNew(tmp);
        Path data = tmp.resolve("d.jsonl");
        Files.writeString(data, "{\"prompt\": \"1+1=\", \"response\": \"2\"}\n");
        try (HfTextEncoder enc = HfTextEncoder.open(dir)) {
            JsonlDataset ds = JsonlDataset.load(data, enc, 16, ByteTokenizer.VOCAB);
            long[] in = ds.inputs(0);
            long[] lab = ds.labels(0);
            // "1+1=" then "2": position 4 (input '2') predicts the end token.
            assertEquals('2', in[4]);
            assertEquals(ByteTokenizer.EOS, lab[4]);
            assertEquals('2', lab[3]);
            assertTrue(ds.source(256, 1).describe().contains("end token 255 after each text"));
        }
    }
}
