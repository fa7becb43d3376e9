/*
 * djl-moe: expert-parallel Mixture-of-Experts for the Deep Java Library.
 */
package dev.djlmoe.core;

/** A peer rank failed, left, or disagreed on a collective call. */
public class EpPeerException extends EpException {

    private static final long serialVersionUID = 1L;

    /**
     * Creates an exception.
     *
     * @param status the native status code
     * @param message the diagnostic, naming the peer
     */
    public EpPeerException(int status, String message) {
        super(status, message);
    }
}
