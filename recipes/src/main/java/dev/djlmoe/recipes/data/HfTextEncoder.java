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
 * tokenizer_config.json} next to the file, when there is one.
 */
public final class HfTextEncoder implements TextEncoder, AutoCloseable {

    private final HuggingFaceTokenizer tokenizer;
    private final Path file;
    private final String sha256;
    private final long eos;

    private HfTextEncoder(HuggingFaceTokenizer tokenizer, Path file, String sha256, long eos) {
        this.tokenizer = tokenizer;
        this.file = file;
        this.sha256 = sha256;
        this.eos = eos;
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
                    "no tokenizer at " + file + ": fine-tuning needs the checkpoint's"
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
            tok = HuggingFaceTokenizer.builder()
                    .optTokenizerPath(file)
                    .optAddSpecialTokens(false)
                    .optTruncation(false)
                    .optPadding(false)
                    .build();
        } catch (RuntimeException e) {
            throw new IOException(file + ": not a Hugging Face tokenizer.json: " + e.getMessage(), e);
        }
        long eos = -1;
        Path cfg = file.resolveSibling("tokenizer_config.json");
        if (Files.isRegularFile(cfg)) {
            try {
                Map<String, Object> m =
                        Json.parseObject(Files.readString(cfg, StandardCharsets.UTF_8), cfg.toString());
                Object e = m.get("eos_token");
                if (e instanceof Map<?, ?> em) {
                    e = em.get("content");
                }
                if (e instanceof String s && !s.isEmpty()) {
                    long[] ids = tok.encode(s, false, false).getIds();
                    if (ids.length != 1) {
                        tok.close();
                        throw new IllegalArgumentException(
                                cfg + ": eos_token '" + s + "' is not one token of " + file
                                        + " (it encodes to " + ids.length + " tokens)");
                    }
                    eos = ids[0];
                }
            } catch (JsonException ex) {
                tok.close();
                throw new IOException(ex.getMessage(), ex);
            }
        }
        return new HfTextEncoder(tok, file, sha, eos);
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

    @Override
    public String describe() {
        return "tokenizer " + file + " (sha256 " + sha256.substring(0, 16) + ")";
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
