/*
 * djl-moe: expert-parallel Mixture-of-Experts for the Deep Java Library.
 */
package dev.djlmoe.nativeep.cuda;

import java.nio.charset.StandardCharsets;
import java.util.function.Function;
import org.bytedeco.javacpp.BytePointer;
import org.bytedeco.javacpp.Pointer;
import org.bytedeco.javacpp.PointerPointer;

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

    /** A plug-in call that returns a status and writes its message into {@code err}. */
    @FunctionalInterface
    interface Status {
        int call(BytePointer err, long errCap);
    }

    /** A plug-in call that also writes a new native object into {@code out[0]}. */
    @FunctionalInterface
    interface Creates {
        int call(PointerPointer<?> out, BytePointer err, long errCap);
    }

    /** A plug-in call that reads or fills {@code bytes} bytes at {@code data}. */
    @FunctionalInterface
    interface Bytes {
        int call(BytePointer data, long bytes, BytePointer err, long errCap);
    }

    /**
     * Runs a call and throws its failure.
     *
     * @param operation what the call does, for the message
     * @param call the call
     */
    static void run(String operation, Status call) {
        try (CudaCall c = new CudaCall()) {
            c.check(call.call(c.err(), c.cap()), operation);
        }
    }

    /**
     * Runs a call that makes a native object and wraps the object.
     *
     * @param operation what the call does, for the message
     * @param call the call
     * @param wrap wraps the new object's address
     * @return the wrapped object
     */
    static <T> T create(String operation, Creates call, Function<Pointer, T> wrap) {
        try (CudaCall c = new CudaCall();
                PointerPointer<Pointer> out = new PointerPointer<>(1)) {
            c.check(call.call(out, c.err(), c.cap()), operation);
            return wrap.apply(out.get(0));
        }
    }

    /**
     * Runs a call that fills {@code n} bytes and returns them.
     *
     * @param operation what the call does, for the message
     * @param n the bytes the call writes
     * @param call the call
     * @return the bytes
     */
    static byte[] read(String operation, int n, Bytes call) {
        try (CudaCall c = new CudaCall();
                BytePointer out = new BytePointer(n)) {
            c.check(call.call(out, n, c.err(), c.cap()), operation);
            byte[] b = new byte[n];
            out.get(b);
            return b;
        }
    }

    /**
     * Runs a call that reads the given bytes.
     *
     * @param operation what the call does, for the message
     * @param data the bytes
     * @param call the call
     */
    static void write(String operation, byte[] data, Bytes call) {
        try (CudaCall c = new CudaCall();
                BytePointer in = new BytePointer(data)) {
            c.check(call.call(in, data.length, c.err(), c.cap()), operation);
        }
    }

    static String message(BytePointer p) {
        return text(p, CAPACITY);
    }

    /**
     * Reads a NUL-terminated UTF-8 string of at most {@code max} bytes.
     *
     * @param p the bytes
     * @param max the most bytes read
     * @return the string
     */
    static String text(BytePointer p, int max) {
        int n = 0;
        while (n < max && p.get(n) != 0) {
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
