/*
 * djl-moe: expert-parallel Mixture-of-Experts for the Deep Java Library.
 */
package dev.djlmoe.core;

/** A wait expired; the message names the rank, the peer and what was waited on. */
public class EpTimeoutException extends EpException {

    private static final long serialVersionUID = 1L;

    /**
     * Creates an exception.
     *
     * @param status the native status code
     * @param message the diagnostic
     */
    public EpTimeoutException(int status, String message) {
        super(status, message);
    }
}
