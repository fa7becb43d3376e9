/*
 * djl-moe: expert-parallel Mixture-of-Experts for the Deep Java Library.
 */
package dev.djlmoe.nativeep.cuda;

import java.nio.charset.StandardCharsets;
import org.bytedeco.javacpp.BytePointer;

/** The message buffer of one native call, and its status turned into an exception. */
final class CudaCall implements AutoCloseable {

    static final int CAPACITY = 2048;
    private static final int NEP_ERR_INVALID_ARGUMENT = 1;

    private final BytePointer err = new BytePointer(CAPACITY);

    CudaCall() {
        err.put(0, (byte) 0);
    }

    BytePointer err() {
        return err;
    }

    long cap() {
        return CAPACITY;
    }

    void check(int status, String operation) {
        if (status == 0) {
            return;
        }
        String message = operation + ": " + message(err);
        if (status == NEP_ERR_INVALID_ARGUMENT) {
            throw new IllegalArgumentException(message);
        }
        throw new CudaEpException(status, message);
    }

    static String message(BytePointer p) {
        int n = 0;
        while (n < CAPACITY && p.get(n) != 0) {
            n++;
        }
        byte[] b = new byte[n];
        p.get(b, 0, n);
        return new String(b, StandardCharsets.UTF_8);
    }

    @Override
    public void close() {
        err.close();
    }
}
