/*
 * djl-moe: expert-parallel Mixture-of-Experts for the Deep Java Library.
 */
package dev.djlmoe.dist;

import dev.djlmoe.core.NativeCall;
import dev.djlmoe.nativeep.NativeEp;
import java.nio.charset.StandardCharsets;
import org.bytedeco.javacpp.BytePointer;
import org.bytedeco.javacpp.LongPointer;
import org.bytedeco.javacpp.PointerPointer;

/**
 * A client of the job's rendezvous key-value store (served by rank 0, see {@link StoreServer}):
 * set/get/wait/add with timeouts, used for bootstrap only. Every connection presents the job token.
 */
public final class RendezvousStore implements AutoCloseable {

    private static final int MAX_VALUE = 1 << 20;

    private NativeEp.nep_store store;

    private RendezvousStore(NativeEp.nep_store store) {
        this.store = store;
    }

    /**
     * Connects to a store.
     *
     * @param host the server's address
     * @param port the server's port
     * @param jobToken the job's secret
     * @param timeoutMillis how long to keep trying to connect
     * @return the client
     */
    public static RendezvousStore connect(
            String host, int port, String jobToken, long timeoutMillis) {
        try (NativeCall call = new NativeCall();
                PointerPointer<NativeEp.nep_store> out = new PointerPointer<>(1)) {
            call.check(
                    NativeEp.nep_store_connect(
                            host, port, jobToken, timeoutMillis, out, call.err(), call.cap()),
                    "store connect " + host + ":" + port);
            return new RendezvousStore(new NativeEp.nep_store(out.get(0)));
        }
    }

    /**
     * Sets a key.
     *
     * @param key the key
     * @param value the value (UTF-8)
     */
    public void set(String key, String value) {
        byte[] b = value.getBytes(StandardCharsets.UTF_8);
        try (NativeCall call = new NativeCall();
                BytePointer v = new BytePointer(Math.max(1, b.length))) {
            v.put(b);
            call.check(
                    NativeEp.nep_store_set(open(), key, v, b.length, call.err(), call.cap()),
                    "store set " + key);
        }
    }

    /**
     * Reads a key without waiting.
     *
     * @param key the key
     * @return the value, or null when the key is not set
     */
    public String get(String key) {
        try (NativeCall call = new NativeCall();
                BytePointer v = new BytePointer(MAX_VALUE);
                LongPointer len = new LongPointer(1)) {
            call.check(
                    NativeEp.nep_store_get(open(), key, v, MAX_VALUE, len, call.err(), call.cap()),
                    "store get " + key);
            return decode(v, len.get());
        }
    }

    /**
     * Waits until a key is set.
     *
     * @param key the key
     * @param timeoutMillis the longest wait
     * @return the value
     * @throws dev.djlmoe.core.EpTimeoutException naming the key when the wait expires
     */
    public String waitFor(String key, long timeoutMillis) {
        try (NativeCall call = new NativeCall();
                BytePointer v = new BytePointer(MAX_VALUE);
                LongPointer len = new LongPointer(1)) {
            call.check(
                    NativeEp.nep_store_wait(
                            open(), key, timeoutMillis, v, MAX_VALUE, len, call.err(), call.cap()),
                    "store wait " + key);
            return decode(v, len.get());
        }
    }

    /**
     * Adds to a counter key (created at 0).
     *
     * @param key the key
     * @param delta the increment
     * @return the new value
     */
    public long add(String key, long delta) {
        try (NativeCall call = new NativeCall();
                LongPointer result = new LongPointer(1)) {
            call.check(
                    NativeEp.nep_store_add(open(), key, delta, result, call.err(), call.cap()),
                    "store add " + key);
            return result.get();
        }
    }

    private static String decode(BytePointer v, long len) {
        if (len < 0) {
            return null;
        }
        byte[] b = new byte[(int) len];
        v.get(b);
        return new String(b, StandardCharsets.UTF_8);
    }

    private NativeEp.nep_store open() {
        if (store == null) {
            throw new IllegalStateException("the store client is closed");
        }
        return store;
    }

    @Override
    public void close() {
        if (store != null) {
            NativeEp.nep_store_close(store);
            store = null;
        }
    }
}
