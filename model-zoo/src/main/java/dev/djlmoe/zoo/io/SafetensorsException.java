/*
 * djl-moe: expert-parallel Mixture-of-Experts for the Deep Java Library.
 */
package dev.djlmoe.zoo.io;

import java.io.IOException;

/**
 * A safetensors file or checkpoint that cannot be used as asked: truncated, a bad header, a missing
 * or unexpected tensor, a shape or dtype that does not match. The message names the file, the
 * tensor, what was expected and what was found.
 */
public class SafetensorsException extends IOException {

    private static final long serialVersionUID = 1L;

    /**
     * Creates the exception.
     *
     * @param message file, tensor, expected and found
     */
    public SafetensorsException(String message) {
        super(message);
    }

    /**
     * Creates the exception with a cause.
     *
     * @param message file, tensor, expected and found
     * @param cause the underlying error
     */
    public SafetensorsException(String message, Throwable cause) {
        super(message, cause);
    }
}
