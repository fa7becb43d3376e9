/*
 * djl-moe: expert-parallel Mixture-of-Experts for the Deep Java Library.
 */
package dev.djlmoe.zoo.io;

import java.io.IOException;

/** A JSON text that could not be parsed; the message names the source and the offset. */
public class JsonException extends IOException {

    private static final long serialVersionUID = 1L;

    /**
     * Creates the exception.
     *
     * @param message what went wrong, where
     */
    public JsonException(String message) {
        super(message);
    }
}
