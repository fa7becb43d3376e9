/*
 * djl-moe: expert-parallel Mixture-of-Experts for the Deep Java Library.
 */
package dev.djlmoe.nativeep;

import java.util.Objects;
import java.util.function.Consumer;

/**
 * A native object that one Java object owns: usable until it is released, released at most once,
 * and refused by name afterwards.
 *
 * <p>Not thread-safe, as the objects that hold one are not.
 *
 * @param <T> the type of the native object (a JavaCPP pointer or a wrapper of one)
 */
public final class OwnedHandle<T> {

    private T value;
    private final String name;
    private final Consumer<? super T> release;

    /**
     * Takes ownership of a native object.
     *
     * @param value the object, not null
     * @param name what it is, for the message of a use after release ("the NAME is closed")
     * @param release frees it (called once, by the first {@link #close()})
     */
    public OwnedHandle(T value, String name, Consumer<? super T> release) {
        this.value = Objects.requireNonNull(value, "value");
        this.name = Objects.requireNonNull(name, "name");
        this.release = Objects.requireNonNull(release, "release");
    }

    /**
     * Returns the object while it is open.
     *
     * @return the object
     * @throws IllegalStateException naming the object once it has been released
     */
    public T get() {
        if (value == null) {
            throw new IllegalStateException("the " + name + " is closed");
        }
        return value;
    }

    /**
     * Returns whether the object has been released.
     *
     * @return true after {@link #close()}
     */
    public boolean isClosed() {
        return value == null;
    }

    /**
     * Releases the object; later calls do nothing.
     *
     * @return true when this call released it, false when it was already released
     */
    public boolean close() {
        if (value == null) {
            return false;
        }
        release.accept(value);
        value = null;
        return true;
    }
}
