/*
 * djl-moe: expert-parallel Mixture-of-Experts for the Deep Java Library.
 */
package dev.djlmoe.ep;

import java.util.function.Consumer;

/**
 * The counts every backend's routing knows on the host once the notify has run, and its native
 * handle.
 *
 * @param <H> the type of the native handle
 */
abstract class AbstractEpRouting<H> extends OwnedRouting<H> implements EpRouting {

    private final long numTokens;
    private final long numRecv;
    private final int numTopk;
    private final int numExperts;
    private final int numLocalExperts;
    private final int worldSize;

    AbstractEpRouting(
            H handle,
            String name,
            Consumer<? super H> release,
            long numTokens,
            long numRecv,
            int numTopk,
            int numExperts,
            int numLocalExperts,
            int worldSize) {
        super(handle, name, release);
        this.numTokens = numTokens;
        this.numRecv = numRecv;
        this.numTopk = numTopk;
        this.numExperts = numExperts;
        this.numLocalExperts = numLocalExperts;
        this.worldSize = worldSize;
    }

    @Override
    public long numTokens() {
        return numTokens;
    }

    @Override
    public long numRecv() {
        return numRecv;
    }

    @Override
    public int numTopk() {
        return numTopk;
    }

    @Override
    public int numExperts() {
        return numExperts;
    }

    @Override
    public int numLocalExperts() {
        return numLocalExperts;
    }

    @Override
    public int worldSize() {
        return worldSize;
    }
}
