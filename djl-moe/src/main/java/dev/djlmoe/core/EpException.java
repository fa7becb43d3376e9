/*
 * djl-moe: expert-parallel Mixture-of-Experts for the Deep Java Library.
 */
package dev.djlmoe.core;

/** A failure of an expert-parallel operation that is not a bad argument: see the subclasses. */
public class EpException extends RuntimeException {

    private static final long serialVersionUID = 1L;

    private final int status;

    /**
     * Creates an exception.
     *
     * @param status the native status code, or 0 when the error arose in Java
     * @param message what failed, naming the rank, operation and value where known
     */
    public EpException(int status, String message) {
        super(message);
        this.status = status;
    }

    /**
     * Returns the native status code ({@code NEP_ERR_*}), or 0 when the error arose in Java.
     *
     * @return the status code
     */
    public int getStatus() {
        return status;
    }
}
