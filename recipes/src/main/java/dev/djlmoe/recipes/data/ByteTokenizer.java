/*
 * djl-moe: expert-parallel Mixture-of-Experts for the Deep Java Library.
 */
package dev.djlmoe.recipes.data;

import dev.djlmoe.zoo.io.Json;
import java.nio.charset.StandardCharsets;
import java.util.ArrayList;
import java.util.LinkedHashMap;
import java.util.List;
import java.util.Map;

/**
 * The byte-level tokenizer of the embedded default: token id = byte value of the UTF-8 text
 * (vocabulary 256, no merges, no special tokens), so any text encodes and nothing is unknown.
 *
 * <p>{@link #huggingFaceJson()} writes the same tokenizer as a Hugging Face {@code tokenizer.json}
 * (a byte-level BPE without merges, GPT-2's byte-to-character alphabet, id = byte), which checkpoints
 * carry so that {@code finetune} and Hugging Face tools read them with the right tokenizer.
 */
public final class ByteTokenizer {

    /** Vocabulary size. */
    public static final int VOCAB = 256;

    private ByteTokenizer() {}

    /**
     * Encodes text.
     *
     * @param text the text
     * @return the UTF-8 bytes as ids in [0, 256)
     */
    public static long[] encode(String text) {
        byte[] b = text.getBytes(StandardCharsets.UTF_8);
        long[] ids = new long[b.length];
        for (int i = 0; i < b.length; i++) {
            ids[i] = b[i] & 0xFF;
        }
        return ids;
    }

    /**
     * Decodes ids (invalid UTF-8 becomes U+FFFD).
     *
     * @param ids ids in [0, 256)
     * @return the text
     */
    public static String decode(long[] ids) {
        byte[] b = new byte[ids.length];
        for (int i = 0; i < ids.length; i++) {
            if (ids[i] < 0 || ids[i] >= VOCAB) {
                throw new IllegalArgumentException("token id " + ids[i] + " is not a byte");
            }
            b[i] = (byte) ids[i];
        }
        return new String(b, StandardCharsets.UTF_8);
    }

    /**
     * GPT-2's reversible map from bytes to printable characters (what Hugging Face's ByteLevel
     * pre-tokenizer produces).
     *
     * @return the character of each byte
     */
    public static char[] byteToChar() {
        char[] out = new char[VOCAB];
        boolean[] printable = new boolean[VOCAB];
        for (int b = '!'; b <= '~'; b++) {
            printable[b] = true;
        }
        for (int b = 0xA1; b <= 0xAC; b++) {
            printable[b] = true;
        }
        for (int b = 0xAE; b <= 0xFF; b++) {
            printable[b] = true;
        }
        int n = 0;
        for (int b = 0; b < VOCAB; b++) {
            out[b] = printable[b] ? (char) b : (char) (VOCAB + n++);
        }
        return out;
    }

    /**
     * Returns this tokenizer as a Hugging Face {@code tokenizer.json}, optionally with BPE merges
     * and added special tokens (ids from 256 on in the order given, then the merges' tokens).
     *
     * @param merges BPE merges as {@code "a b"} pairs of vocabulary strings (empty for the plain
     *     byte tokenizer)
     * @param specialTokens added special tokens (e.g. {@code "<|endoftext|>"}), or none
     * @return the JSON text
     */
    public static String huggingFaceJson(List<String> merges, List<String> specialTokens) {
        char[] map = byteToChar();
        Map<String, Object> vocab = new LinkedHashMap<>();
        for (int b = 0; b < VOCAB; b++) {
            vocab.put(String.valueOf(map[b]), (long) b);
        }
        long next = VOCAB;
        List<Object> added = new ArrayList<>();
        for (String s : specialTokens) {
            Map<String, Object> t = new LinkedHashMap<>();
            t.put("id", next);
            t.put("content", s);
            t.put("single_word", false);
            t.put("lstrip", false);
            t.put("rstrip", false);
            t.put("normalized", false);
            t.put("special", true);
            added.add(t);
            vocab.put(s, next++);
        }
        for (String m : merges) {
            String[] ab = m.split(" ");
            if (ab.length != 2 || !vocab.containsKey(ab[0]) || !vocab.containsKey(ab[1])) {
                throw new IllegalArgumentException("merge '" + m + "' is not two known tokens");
            }
            vocab.putIfAbsent(ab[0] + ab[1], next++);
        }
        Map<String, Object> pre = new LinkedHashMap<>();
        pre.put("type", "ByteLevel");
        pre.put("add_prefix_space", false);
        pre.put("trim_offsets", true);
        pre.put("use_regex", true);
        Map<String, Object> model = new LinkedHashMap<>();
        model.put("type", "BPE");
        model.put("dropout", null);
        model.put("unk_token", null);
        model.put("continuing_subword_prefix", null);
        model.put("end_of_word_suffix", null);
        model.put("fuse_unk", false);
        model.put("byte_fallback", false);
        model.put("ignore_merges", false);
        model.put("vocab", vocab);
        model.put("merges", new ArrayList<Object>(merges));
        Map<String, Object> root = new LinkedHashMap<>();
        root.put("version", "1.0");
        root.put("truncation", null);
        root.put("padding", null);
        root.put("added_tokens", added);
        root.put("normalizer", null);
        root.put("pre_tokenizer", pre);
        root.put("post_processor", null);
        root.put("decoder", new LinkedHashMap<>(pre));
        root.put("model", model);
        return Json.write(root) + "\n";
    }

    /**
     * Returns the plain byte tokenizer (id = byte) as a Hugging Face {@code tokenizer.json}.
     *
     * @return the JSON text
     */
    public static String huggingFaceJson() {
        return huggingFaceJson(List.of(), List.of());
    }
}
