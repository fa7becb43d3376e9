/*
 * djl-moe: expert-parallel Mixture-of-Experts for the Deep Java Library.
 */
package dev.djlmoe.recipes.data;

import ai.djl.huggingface.tokenizers.Encoding;
import ai.djl.huggingface.tokenizers.HuggingFaceTokenizer;
import dev.djlmoe.zoo.io.Json;
import dev.djlmoe.zoo.io.JsonException;
import java.io.IOException;
import java.nio.charset.StandardCharsets;
import java.nio.file.Files;
import java.nio.file.Path;
import java.security.MessageDigest;
import java.security.NoSuchAlgorithmException;
import java.util.HexFormat;
import java.util.Map;

/**
 * A Hugging Face {@code tokenizer.json} through DJL's Hugging Face tokenizers (the Rust library,
 * bundled in the jar, runs offline). The end-of-sequence token is {@code eos_token} of a {@code
 * tokenizer_config.json} next to the file, when there is one; without one, djl-moe's byte-level
 * tokenizer (a pre-training checkpoint's, also one written before it had an end token) ends texts
 * with {@link ByteTokenizer#EOS}, and any other tokenizer has no end token.
 */
public final class HfTextEncoder implements TextEncoder, AutoCloseable {

    private final HuggingFaceTokenizer tokenizer;
    private final Path file;
    private final String sha256;
    private final long eos;
    private final boolean eosImplied;

    private HfTextEncoder(
            HuggingFaceTokenizer tokenizer,
            Path file,
            String sha256,
            long eos,
            boolean eosImplied) {
        this.tokenizer = tokenizer;
        this.file = file;
        this.sha256 = sha256;
        this.eos = eos;
        this.eosImplied = eosImplied;
    }

    /**
     * Opens a tokenizer.
     *
     * @param path a {@code tokenizer.json} file or a directory holding one
     * @return the encoder
     * @throws IOException when the file cannot be read or parsed
     * @throws IllegalArgumentException when there is no tokenizer.json
     */
    public static HfTextEncoder open(Path path) throws IOException {
        Path file = Files.isDirectory(path) ? path.resolve("tokenizer.json") : path;
        if (!Files.isRegularFile(file)) {
            throw new IllegalArgumentException(
                    "no tokenizer at "
                            + file
                            + ": fine-tuning needs the checkpoint's"
                            + " tokenizer.json (or give one with --tokenizer)");
        }
        byte[] bytes = Files.readAllBytes(file);
        String sha;
        try {
            sha = HexFormat.of().formatHex(MessageDigest.getInstance("SHA-256").digest(bytes));
        } catch (NoSuchAlgorithmException e) {
            throw new IllegalStateException(e);
        }
        HuggingFaceTokenizer tok;
        try {
            tok =
                    HuggingFaceTokenizer.builder()
                            .optTokenizerPath(file)
                            .optAddSpecialTokens(false)
                            .optTruncation(false)
                            .optPadding(false)
                            .build();
        } catch (RuntimeException e) {
            throw new IOException(
                    file + ": not a Hugging Face tokenizer.json: " + e.getMessage(), e);
        }
        long eos = -1;
        Path cfg = file.resolveSibling("tokenizer_config.json");
        if (Files.isRegularFile(cfg)) {
            try {
                Map<String, Object> m =
                        Json.parseObject(
                                Files.readString(cfg, StandardCharsets.UTF_8), cfg.toString());
                Object e = m.get("eos_token");
                if (e instanceof Map<?, ?> em) {
                    e = em.get("content");
                }
                if (e instanceof String s && !s.isEmpty()) {
                    long[] ids = tok.encode(s, false, false).getIds();
                    if (ids.length != 1) {
                        tok.close();
                        throw new IllegalArgumentException(
                                cfg
                                        + ": eos_token '"
                                        + s
                                        + "' is not one token of "
                                        + file
                                        + " (it encodes to "
                                        + ids.length
                                        + " tokens)");
                    }
                    eos = ids[0];
                }
            } catch (JsonException ex) {
                tok.close();
                throw new IOException(ex.getMessage(), ex);
            }
        }
        boolean implied = false;
        if (eos < 0 && bytes.length < (1 << 20)) {
            try {
                Map<String, Object> root =
                        Json.parseObject(
                                new String(bytes, StandardCharsets.UTF_8), file.toString());
                if (ByteTokenizer.isByteLevel(root)) {
                    eos = ByteTokenizer.EOS;
                    implied = true;
                }
            } catch (JsonException ex) {
                tok.close();
                throw new IOException(ex.getMessage(), ex);
            }
        }
        return new HfTextEncoder(tok, file, sha, eos, implied);
    }

    @Override
    public long[] encode(String text) {
        if (text.isEmpty()) {
            return new long[0];
        }
        Encoding e = tokenizer.encode(text, false, false);
        return e.getIds();
    }

    @Override
    public long eosId() {
        return eos;
    }

    /**
     * Whether the end token was not named by a {@code tokenizer_config.json} but is the byte-level
     * tokenizer's own ({@link ByteTokenizer#EOS}).
     *
     * @return true when implied
     */
    public boolean eosImplied() {
        return eosImplied;
    }

    /**
     * Decodes ids to text, up to the first end-of-sequence token, without special tokens.
     *
     * @param ids the ids
     * @return the text
     */
    public String decode(long[] ids) {
        int n = 0;
        while (n < ids.length && ids[n] != eos) {
            n++;
        }
        return tokenizer.decode(java.util.Arrays.copyOf(ids, n), true);
    }

    @Override
    public String describe() {
        // An implied end token changes the data, so it is part of the fingerprint; a named one
        // is already in the tokenizer files.
        return "tokenizer "
                + file
                + " (sha256 "
                + sha256.substring(0, 16)
                + ")"
                + (eosImplied ? ", end token " + eos + " (byte-level)" : "");
    }

    /**
     * Returns the SHA-256 of the tokenizer file.
     *
     * @return lower-case hex
     */
    public String sha256() {
        return sha256;
    }

    /**
     * Returns the tokenizer file.
     *
     * @return the path of tokenizer.json
     */
    public Path file() {
        return file;
    }

    @Override
    public void close() {
        tokenizer.close();
    }
}
