/*
 * djl-moe: expert-parallel Mixture-of-Experts for the Deep Java Library.
 */
package dev.djlmoe.core;

import dev.djlmoe.nativeep.NativeEp;
import java.nio.charset.StandardCharsets;
import org.bytedeco.javacpp.BytePointer;

/**
 * The error buffer of one native call and the translation of its status into a Java exception.
 *
 * <p>Use one instance per call (they are cheap) and close it: {@code try (NativeCall c = new
 * NativeCall()) { c.check(NativeEp.nep_x(..., c.err(), c.cap()), "dispatch"); }}.
 */
public final class NativeCall implements AutoCloseable {

    private static final int CAPACITY = 2048;

    private final BytePointer err;

    /** Allocates the message buffer. */
    public NativeCall() {
        err = new BytePointer(CAPACITY);
        err.put(0, (byte) 0);
    }

    /**
     * Returns the buffer the native function writes its message into.
     *
     * @return the message buffer
     */
    public BytePointer err() {
        return err;
    }

    /**
     * Returns the capacity of {@link #err()} in bytes.
     *
     * @return the capacity
     */
    public long cap() {
        return CAPACITY;
    }

    /**
     * Throws the exception that matches a native status.
     *
     * @param status the status returned by the native function
     * @param operation the operation, for the message (e.g. {@code "dispatch"})
     * @throws IllegalArgumentException for {@code NEP_ERR_INVALID_ARGUMENT}
     * @throws EpException for every other failure
     */
    public void check(int status, String operation) {
        if (status == NativeEp.NEP_OK) {
            return;
        }
        String message = message();
        if (message.isEmpty()) {
            message = "native status " + status;
        }
        throw exception(status, operation + ": " + message);
    }

    /**
     * Returns the exception of a native status ({@code NEP_ERR_*}, the same codes from the CPU
     * engine and the CUDA plug-in), so that both backends fail alike.
     *
     * @param status the native status, not {@code NEP_OK}
     * @param message the message, naming the operation (and the rank where known)
     * @return {@link IllegalArgumentException} for {@code NEP_ERR_INVALID_ARGUMENT}, {@link
     *     EpTimeoutException} for {@code NEP_ERR_TIMEOUT}, {@link EpPeerException} for {@code
     *     NEP_ERR_PEER}, else an {@link EpException} with the status
     */
    public static RuntimeException exception(int status, String message) {
        switch (status) {
            case NativeEp.NEP_ERR_INVALID_ARGUMENT:
                return new IllegalArgumentException(message);
            case NativeEp.NEP_ERR_TIMEOUT:
                return new EpTimeoutException(status, message);
            case NativeEp.NEP_ERR_PEER:
                return new EpPeerException(status, message);
            default:
                return new EpException(status, message);
        }
    }

    /**
     * Returns the NUL-terminated message the native function wrote. ({@code
     * BytePointer.getString()} would decode the whole buffer, up to its limit, garbage after the
     * terminator included.)
     *
     * @return the message, empty if none
     */
    public String message() {
        byte[] b = new byte[CAPACITY];
        err.position(0).get(b);
        int n = 0;
        while (n < b.length && b[n] != 0) {
            n++;
        }
        return new String(b, 0, n, StandardCharsets.UTF_8);
    }

    @Override
    public void close() {
        err.close();
    }
}
