/*
 * djl-moe: expert-parallel Mixture-of-Experts for the Deep Java Library.
 */
package dev.djlmoe.nativeep.cuda;

/** A failed call of the CUDA plug-in: its status ({@code NEP_ERR_*}) and message. */
public class CudaEpException extends RuntimeException {

    private static final long serialVersionUID = 1L;

    private final int status;

    /**
     * Creates the exception.
     *
     * @param status the native status
     * @param message the message, naming the operation
     */
    public CudaEpException(int status, String message) {
        super(message);
        this.status = status;
    }

    /**
     * Returns the native status ({@code NEP_ERR_TIMEOUT = 3}, {@code NEP_ERR_PEER = 4}, ...).
     *
     * @return the status
     */
    public int status() {
        return status;
    }
}
