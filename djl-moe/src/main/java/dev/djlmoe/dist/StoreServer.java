/*
 * djl-moe: expert-parallel Mixture-of-Experts for the Deep Java Library.
 */
package dev.djlmoe.dist;

import dev.djlmoe.core.NativeCall;
import dev.djlmoe.nativeep.NativeEp;
import org.bytedeco.javacpp.PointerPointer;

/**
 * The rendezvous key-value store, served by rank 0 for the whole job on the address it is given
 * (loopback for one host). It accepts only peers that present the job token and bounds message
 * sizes. It refuses to start on an address other than loopback with an empty token, and bounds
 * handshakes: a peer must present the token within 10 s of connecting, and at most 64 peers may be
 * waiting to do so (the oldest is closed first), so idle connections cannot crowd out ranks.
 */
public final class StoreServer implements AutoCloseable {

    private NativeEp.nep_store_server server;

    private StoreServer(NativeEp.nep_store_server server) {
        this.server = server;
    }

    /**
     * Starts serving.
     *
     * @param host the address to bind
     * @param port the port, 0 to pick a free one
     * @param jobToken the job's secret ({@code DJL_MOE_JOB_TOKEN}); may be empty only on loopback
     * @return the server
     * @throws IllegalArgumentException naming the address when {@code host} is not loopback and
     *     {@code jobToken} is empty
     */
    public static StoreServer start(String host, int port, String jobToken) {
        try (NativeCall call = new NativeCall();
                PointerPointer<NativeEp.nep_store_server> out = new PointerPointer<>(1)) {
            call.check(
                    NativeEp.nep_store_server_create(
                            host, port, jobToken, out, call.err(), call.cap()),
                    "store server " + host + ":" + port);
            return new StoreServer(new NativeEp.nep_store_server(out.get(0)));
        }
    }

    /**
     * Returns the bound port.
     *
     * @return the port
     */
    public int port() {
        if (server == null) {
            throw new IllegalStateException("the store server is closed");
        }
        return NativeEp.nep_store_server_port(server);
    }

    @Override
    public void close() {
        if (server != null) {
            NativeEp.nep_store_server_destroy(server);
            server = null;
        }
    }
}
