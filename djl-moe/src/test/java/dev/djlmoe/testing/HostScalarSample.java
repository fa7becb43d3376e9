package dev.djlmoe.testing;

import ai.djl.ndarray.NDArray;
import ai.djl.ndarray.NDManager;

/** Calls the scan must find (HostScalarScanTest): never run. */
final class HostScalarSample {

    private HostScalarSample() {}

    static NDArray doubled(NDArray x) {
        return x.mul(2f);
    }

    static NDArray one(NDManager manager) {
        return manager.create(1f);
    }
}
