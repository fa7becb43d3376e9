/*
 * djl-moe: expert-parallel Mixture-of-Experts for the Deep Java Library.
 */
package dev.djlmoe.recipes.data;

import dev.djlmoe.zoo.io.Json;
import dev.djlmoe.zoo.io.JsonException;
import java.io.ByteArrayOutputStream;
import java.io.IOException;
import java.io.InputStream;
import java.io.UncheckedIOException;
import java.nio.charset.Charset;
import java.nio.charset.StandardCharsets;
import java.nio.file.Files;
import java.nio.file.NoSuchFileException;
import java.nio.file.Path;
import java.security.MessageDigest;
import java.security.NoSuchAlgorithmException;
import java.util.ArrayList;
import java.util.HexFormat;
import java.util.List;
import java.util.Map;
import java.util.stream.Stream;

/**
 * Raw text for byte-level pre-training: the public-domain corpus shipped in this jar ({@link
 * #embedded()}), or text read from a file or directory ({@link #load(Path)}).
 *
 * @param name where the text came from
 * @param bytes the UTF-8 text
 */
public record TextCorpus(String name, byte[] bytes) {

    /** Classpath folder of the embedded corpus; {@code index.txt} lists its files in order. */
    public static final String RESOURCE_DIR = "/dev/djlmoe/recipes/corpus/";

    /**
     * Loads the public-domain corpus shipped with djl-moe (see {@code README.md} next to it for the
     * sources).
     *
     * @return the corpus
     */
    public static TextCorpus embedded() {
        ByteArrayOutputStream all = new ByteArrayOutputStream();
        List<String> files = new ArrayList<>();
        String index = new String(resource("index.txt"), StandardCharsets.UTF_8);
        for (String line : index.split("\n")) {
            String f = line.strip();
            if (f.isEmpty() || f.startsWith("#")) {
                continue;
            }
            files.add(f);
            all.writeBytes(resource(f));
            all.write('\n');
        }
        if (files.isEmpty()) {
            throw new IllegalStateException("the embedded corpus index lists no files");
        }
        return new TextCorpus(
                "embedded public-domain corpus (" + files.size() + " texts)", all.toByteArray());
    }

    private static byte[] resource(String name) {
        try (InputStream in = TextCorpus.class.getResourceAsStream(RESOURCE_DIR + name)) {
            if (in == null) {
                throw new IllegalStateException(
                        "resource " + RESOURCE_DIR + name + " is missing from the recipes jar");
            }
            return in.readAllBytes();
        } catch (IOException e) {
            throw new UncheckedIOException(e);
        }
    }

    /**
     * Reads text from a path: a UTF-8 text file, a JSON-lines file ({@code .jsonl}: the {@code
     * "text"} field of every line, one document per line), or a directory (every {@code .txt} and
     * {@code .jsonl} file in it, sorted by name).
     *
     * @param path the file or directory
     * @return the corpus
     * @throws IOException when it cannot be read
     * @throws IllegalArgumentException for a missing path, a directory without text files or a
     *     malformed JSON line
     */
    public static TextCorpus load(Path path) throws IOException {
        return load(path, StandardCharsets.UTF_8);
    }

    /**
     * Reads text from a path as {@link #load(Path)} does, in a given encoding; the text is kept as
     * UTF-8. Bytes that are not valid in the encoding are refused with the file, line and byte
     * offset named.
     *
     * @param path the file or directory
     * @param encoding the files' encoding
     * @return the corpus
     * @throws IOException when it cannot be read
     * @throws IllegalArgumentException for a missing path, a directory without text files, a
     *     malformed JSON line or text that is not valid in the encoding
     */
    public static TextCorpus load(Path path, Charset encoding) throws IOException {
        if (!Files.exists(path)) {
            throw new IllegalArgumentException("--data " + path + ": no such file or directory");
        }
        if (Files.isDirectory(path)) {
            List<Path> files;
            try (Stream<Path> s = Files.list(path)) {
                files =
                        s.filter(
                                        p -> {
                                            String n = p.getFileName().toString();
                                            return Files.isRegularFile(p)
                                                    && (n.endsWith(".txt") || n.endsWith(".jsonl"));
                                        })
                                .sorted()
                                .toList();
            }
            if (files.isEmpty()) {
                throw new IllegalArgumentException(
                        "--data " + path + ": the directory holds no .txt or .jsonl files");
            }
            ByteArrayOutputStream all = new ByteArrayOutputStream();
            for (Path f : files) {
                all.writeBytes(readFile(f, encoding));
                all.write('\n');
            }
            return new TextCorpus(path.toString(), all.toByteArray());
        }
        return new TextCorpus(path.toString(), readFile(path, encoding));
    }

    private static byte[] readFile(Path f, Charset encoding) throws IOException {
        try {
            byte[] raw = Files.readAllBytes(f);
            String text = TextDecoding.decode(raw, encoding, f.toString());
            if (!f.getFileName().toString().endsWith(".jsonl")) {
                // Valid UTF-8 stays byte for byte as it was (data fingerprints do not change).
                return encoding.equals(StandardCharsets.UTF_8)
                        ? raw
                        : text.getBytes(StandardCharsets.UTF_8);
            }
            StringBuilder sb = new StringBuilder();
            int n = 0;
            for (String line : text.split("\n", -1)) {
                n++;
                if (line.isBlank()) {
                    continue;
                }
                Map<String, Object> o;
                try {
                    o = Json.parseObject(line, f + " line " + n);
                } catch (JsonException e) {
                    throw new IllegalArgumentException(e.getMessage(), e);
                }
                Object t = o.get("text");
                if (!(t instanceof String)) {
                    throw new IllegalArgumentException(
                            f + " line " + n + ": expected a string field \"text\"");
                }
                sb.append((String) t).append('\n');
            }
            return sb.toString().getBytes(StandardCharsets.UTF_8);
        } catch (NoSuchFileException e) {
            throw new IllegalArgumentException("--data " + f + ": no such file", e);
        }
    }

    /**
     * Returns the SHA-256 of the text.
     *
     * @return lower-case hex
     */
    public String sha256() {
        try {
            return HexFormat.of().formatHex(MessageDigest.getInstance("SHA-256").digest(bytes));
        } catch (NoSuchAlgorithmException e) {
            throw new IllegalStateException(e);
        }
    }
}
