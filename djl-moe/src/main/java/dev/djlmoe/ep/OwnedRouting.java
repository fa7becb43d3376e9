/*
 * djl-moe: expert-parallel Mixture-of-Experts for the Deep Java Library.
 */
package dev.djlmoe.ep;

import dev.djlmoe.nativeep.OwnedHandle;
import java.util.function.Consumer;

/**
 * The life cycle every backend's routing shares (both modes): it owns one native handle, usable
 * until {@link #close()}, released once, refused by name afterwards.
 *
 * @param <H> the type of the native handle
 */
abstract class OwnedRouting<H> implements AutoCloseable {

    private final OwnedHandle<H> handle;

    /**
     * Takes ownership of a native handle.
     *
     * @param handle the handle
     * @param name what it is, for the message of a use after close
     * @param release frees it
     */
    OwnedRouting(H handle, String name, Consumer<? super H> release) {
        this.handle = new OwnedHandle<>(handle, name, release);
    }

    /**
     * Returns the native handle.
     *
     * @return the open handle
     * @throws IllegalStateException once closed
     */
    final H handle() {
        return handle.get();
    }

    /**
     * Returns whether the routing is released.
     *
     * @return true when closed
     */
    public final boolean isClosed() {
        return handle.isClosed();
    }

    /** Releases the handle, then what {@link #released()} frees; later calls do nothing. */
    @Override
    public final void close() {
        if (handle.close()) {
            released();
        }
    }

    /** Frees what the routing holds besides its handle (called once, after the handle). */
    void released() {}
}
