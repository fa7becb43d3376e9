/*
 * djl-moe: expert-parallel Mixture-of-Experts for the Deep Java Library.
 */
package dev.djlmoe.reliability;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertFalse;
import static org.junit.jupiter.api.Assertions.assertNotEquals;
import static org.junit.jupiter.api.Assertions.assertThrows;
import static org.junit.jupiter.api.Assertions.assertTrue;
import static org.junit.jupiter.api.Assumptions.assumeTrue;

import dev.djlmoe.core.EpException;
import dev.djlmoe.dist.MultiRank;
import dev.djlmoe.dist.RankEnvironment;
import dev.djlmoe.dist.RendezvousStore;
import dev.djlmoe.dist.ShmProcessGroup;
import dev.djlmoe.dist.StoreServer;
import dev.djlmoe.nativeep.NativeEp;
import java.io.DataInputStream;
import java.io.IOException;
import java.io.InputStream;
import java.io.OutputStream;
import java.net.InetAddress;
import java.net.InetSocketAddress;
import java.net.ServerSocket;
import java.net.Socket;
import java.nio.ByteBuffer;
import java.nio.ByteOrder;
import java.nio.charset.StandardCharsets;
import java.nio.file.Files;
import java.nio.file.Path;
import java.nio.file.Paths;
import java.nio.file.attribute.PosixFilePermissions;
import java.util.ArrayList;
import java.util.LinkedHashSet;
import java.util.List;
import java.util.Set;
import java.util.TreeSet;
import java.util.concurrent.CompletableFuture;
import java.util.concurrent.TimeUnit;
import java.util.function.BiConsumer;
import java.util.regex.Matcher;
import java.util.regex.Pattern;
import org.junit.jupiter.api.Test;

/**
 * The security properties of the EP layer, through the Java API: the rendezvous store listens only
 * on the address it is given, refuses peers without the job's token (without echoing it), bounds
 * every size on the server side too (a hostile client need not use our client), and shared-memory
 * segments are owner-only, unlinked once mapped and named unpredictably.
 */
class SecurityTest {

    private static final String TOKEN = "0123456789abcdef0123456789abcdef";

    /** The listening sockets of this host on {@code port}: hex address:port of /proc/net/tcp*. */
    private static List<String> listeners(int port) throws IOException {
        List<String> out = new ArrayList<>();
        String hexPort = String.format("%04X", port);
        forEachListener(
                (file, c) -> {
                    if (c[1].endsWith(":" + hexPort)) {
                        out.add(file + " " + c[1]);
                    }
                });
        return out;
    }

    /**
     * Passes every listening TCP socket of this host (IPv4 and IPv6) to {@code row}: the file it
     * came from and its columns ({@code sl local_address rem_address st tx:rx tr:when retrnsmt uid
     * timeout inode ...}).
     */
    private static void forEachListener(BiConsumer<String, String[]> row) throws IOException {
        for (String f : new String[] {"/proc/net/tcp", "/proc/net/tcp6"}) {
            Path p = Paths.get(f);
            if (!Files.exists(p)) {
                continue;
            }
            for (String line : Files.readAllLines(p)) {
                String[] c = line.trim().split("\\s+");
                if (c.length > 3 && c[3].equals("0A")) { // st 0A = LISTEN
                    row.accept(f, c);
                }
            }
        }
    }

    private static int freePort() throws IOException {
        try (ServerSocket s = new ServerSocket(0, 1, InetAddress.getLoopbackAddress())) {
            return s.getLocalPort();
        }
    }

    @Test
    void theStoreListensOnlyOnTheAddressItIsGiven() throws Exception {
        try (StoreServer server = StoreServer.start("127.0.0.1", 0, TOKEN)) {
            List<String> l = listeners(server.port());
            // 127.0.0.1 in /proc/net/tcp's little-endian hex; never 00000000 (every interface).
            assertEquals(
                    List.of("/proc/net/tcp 0100007F:" + String.format("%04X", server.port())), l);
        }
        // Bound to 127.0.0.2, it is not reachable at 127.0.0.1 on the same port.
        try (StoreServer server = StoreServer.start("127.0.0.2", 0, TOKEN)) {
            int port = server.port();
            assertEquals(
                    List.of("/proc/net/tcp 0200007F:" + String.format("%04X", port)),
                    listeners(port));
            EpException e =
                    assertThrows(
                            EpException.class,
                            () -> RendezvousStore.connect("127.0.0.1", port, TOKEN, 300));
            assertTrue(e.getMessage().contains("127.0.0.1:" + port), e.getMessage());
            try (RendezvousStore ok = RendezvousStore.connect("127.0.0.2", port, TOKEN, 2000)) {
                ok.set("k", "v");
                assertEquals("v", ok.get("k"));
            }
        }
    }

    @Test
    void aWrongTokenIsRefusedWithoutEchoingTheRightOne() {
        try (StoreServer server = StoreServer.start("127.0.0.1", 0, TOKEN)) {
            int port = server.port();
            for (String wrong :
                    new String[] {
                        "", "wrong", TOKEN.substring(1), TOKEN + "0", TOKEN.toUpperCase()
                    }) {
                EpException e =
                        assertThrows(
                                EpException.class,
                                () -> RendezvousStore.connect("127.0.0.1", port, wrong, 2000),
                                "token '" + wrong + "'");
                assertEquals(NativeEp.NEP_ERR_PEER, e.getStatus(), e.getMessage());
                assertTrue(e.getMessage().contains("wrong job token"), e.getMessage());
                assertFalse(e.getMessage().contains(TOKEN), "the message leaks the token");
            }
            try (RendezvousStore ok = RendezvousStore.connect("127.0.0.1", port, TOKEN, 2000)) {
                assertEquals(3, ok.add("n", 3));
            }
        }
    }

    // ---- a hostile client speaking the documented protocol (store_protocol.h) directly ----------

    private static byte[] frame(byte[] body) {
        return ByteBuffer.allocate(4 + body.length)
                .order(ByteOrder.LITTLE_ENDIAN)
                .putInt(body.length)
                .put(body)
                .array();
    }

    private static byte[] request(int op, byte[]... blobs) {
        int n = 1;
        for (byte[] b : blobs) {
            n += 4 + b.length;
        }
        ByteBuffer bb = ByteBuffer.allocate(n).order(ByteOrder.LITTLE_ENDIAN).put((byte) op);
        for (byte[] b : blobs) {
            bb.putInt(b.length).put(b);
        }
        return bb.array();
    }

    /** Reads one reply: {status, message-or-value} (message empty when none). */
    private static String[] reply(InputStream in) throws IOException {
        DataInputStream d = new DataInputStream(in);
        byte[] len = new byte[4];
        d.readFully(len);
        int n = ByteBuffer.wrap(len).order(ByteOrder.LITTLE_ENDIAN).getInt();
        assertTrue(n >= 1 && n < (2 << 20), "reply of " + n + " bytes");
        byte[] body = new byte[n];
        d.readFully(body);
        String rest = "";
        if (n >= 5) {
            int m = ByteBuffer.wrap(body, 1, 4).order(ByteOrder.LITTLE_ENDIAN).getInt();
            rest = new String(body, 5, Math.min(m, n - 5), StandardCharsets.UTF_8);
        }
        return new String[] {Integer.toString(body[0]), rest};
    }

    private static boolean closedByServer(InputStream in) throws IOException {
        try {
            return in.read() < 0;
        } catch (IOException e) {
            return true; // reset
        }
    }

    private static Socket connect(int port) throws IOException {
        Socket s = new Socket();
        s.connect(new InetSocketAddress("127.0.0.1", port), 2000);
        s.setSoTimeout(10_000);
        return s;
    }

    @Test
    void theServerBoundsEverySizeItselfAndDemandsTheTokenFirst() throws Exception {
        byte[] token = TOKEN.getBytes(StandardCharsets.UTF_8);
        try (StoreServer server = StoreServer.start("127.0.0.1", 0, TOKEN)) {
            int port = server.port();
            // A request before HELLO: AUTH, then the connection is closed.
            try (Socket s = connect(port)) {
                s.getOutputStream().write(frame(request(3, "k".getBytes())));
                String[] r = reply(s.getInputStream());
                assertEquals("4", r[0]);
                assertTrue(r[1].contains("first request must be HELLO"), r[1]);
                assertTrue(closedByServer(s.getInputStream()));
            }
            // A wrong token: AUTH, closed.
            try (Socket s = connect(port)) {
                s.getOutputStream().write(frame(request(1, "nope".getBytes())));
                String[] r = reply(s.getInputStream());
                assertEquals("4", r[0]);
                assertEquals("wrong job token", r[1]);
                assertTrue(closedByServer(s.getInputStream()));
            }
            // A frame longer than the limit: refused by its length alone, closed.
            try (Socket s = connect(port)) {
                OutputStream o = s.getOutputStream();
                o.write(frame(request(1, token)));
                assertEquals("0", reply(s.getInputStream())[0]);
                o.write(
                        ByteBuffer.allocate(4)
                                .order(ByteOrder.LITTLE_ENDIAN)
                                .putInt(Integer.MAX_VALUE)
                                .array());
                String[] r = reply(s.getInputStream());
                assertEquals("3", r[0]);
                assertTrue(r[1].contains("2147483647 bytes exceeds the limit"), r[1]);
                assertTrue(closedByServer(s.getInputStream()));
            }
            // Oversized key and value inside a legal frame; then the store's total bound.
            try (Socket s = connect(port)) {
                OutputStream o = s.getOutputStream();
                InputStream in = s.getInputStream();
                o.write(frame(request(1, token)));
                assertEquals("0", reply(in)[0]);
                o.write(frame(request(2, new byte[1025], "v".getBytes())));
                String[] r = reply(in);
                assertEquals("3", r[0]);
                assertTrue(r[1].contains("key <= 1024 bytes"), r[1]);
                o.write(frame(request(2, "k".getBytes(), new byte[(1 << 20) + 1])));
                r = reply(in);
                assertEquals("3", r[0]);
                assertTrue(r[1].contains("value <= 1 MiB"), r[1]);
                byte[] mib = new byte[1 << 20];
                int stored = 0;
                String full = null;
                for (int i = 0; i < 80 && full == null; i++) {
                    o.write(frame(request(2, ("big" + i).getBytes(), mib)));
                    r = reply(in);
                    if (r[0].equals("0")) {
                        stored++;
                    } else {
                        full = r[1];
                    }
                }
                assertTrue(
                        full != null && full.contains("store is full (limit 67108864 bytes)"),
                        "after " + stored + " MiB: " + full);
                assertEquals(63, stored);
                // The store still answers within its bound.
                o.write(frame(request(3, "big0".getBytes())));
                r = reply(in);
                assertEquals("0", r[0]);
            }
            try (RendezvousStore ok = RendezvousStore.connect("127.0.0.1", port, TOKEN, 2000)) {
                assertEquals(1, ok.add("still-serving", 1));
            }
        }
    }

    @Test
    void anEmptyTokenIsRefusedOffLoopbackNamingTheAddressAndTheVariable() throws Exception {
        for (String host : new String[] {"0.0.0.0", "10.11.12.13"}) {
            int port = freePort();
            IllegalArgumentException e =
                    assertThrows(
                            IllegalArgumentException.class,
                            () -> StoreServer.start(host, port, ""),
                            host);
            String m = e.getMessage();
            assertTrue(m.contains("refusing to listen on " + host + ":" + port), m);
            assertTrue(m.contains("not a loopback address") && m.contains("empty job token"), m);
            assertTrue(m.contains(RankEnvironment.JOB_TOKEN), m);
            assertEquals(List.of(), listeners(port), "something listens on " + port);
        }
        // A rank 0 whose environment has a non-loopback MASTER_ADDR and no token fails the same
        // way before anything listens.
        int port = freePort();
        RankEnvironment open = new RankEnvironment(0, 2, 0, 2, "0.0.0.0", port, "");
        IllegalArgumentException e =
                assertThrows(IllegalArgumentException.class, () -> new ShmProcessGroup(open, 2000));
        assertTrue(e.getMessage().contains("0.0.0.0:" + port), e.getMessage());
        assertEquals(List.of(), listeners(port));
        // On loopback no token is needed (one host, no launcher).
        try (StoreServer server = StoreServer.start("127.0.0.1", 0, "");
                RendezvousStore c = RendezvousStore.connect("127.0.0.1", server.port(), "", 2000)) {
            c.set("k", "v");
            assertEquals("v", c.get("k"));
        }
    }

    /** Local addresses of the TCP sockets this process listens on (from /proc). */
    private static Set<String> listeningSocketsOfThisProcess() throws IOException {
        Set<String> inodes = new TreeSet<>();
        try (var fds = Files.list(Paths.get("/proc/self/fd"))) {
            for (Path fd : fds.toList()) {
                try {
                    String target = Files.readSymbolicLink(fd).toString();
                    if (target.startsWith("socket:[")) {
                        inodes.add(target.substring(8, target.length() - 1));
                    }
                } catch (IOException e) {
                    // closed meanwhile
                }
            }
        }
        Set<String> out = new TreeSet<>();
        forEachListener(
                (file, c) -> {
                    if (c.length > 9 && inodes.contains(c[9])) {
                        out.add(c[1]);
                    }
                });
        return out;
    }

    /**
     * Two ranks of one job over cpu-shm in two threads of this JVM: the same native code as two
     * JVMs. Closing closes rank 1, then rank 0 (whose store rank 1 used).
     */
    private record TwoRanks(ShmProcessGroup g0, ShmProcessGroup g1) implements AutoCloseable {

        static TwoRanks start(int port) throws Exception {
            RankEnvironment e0 = new RankEnvironment(0, 2, 0, 2, "127.0.0.1", port, TOKEN);
            RankEnvironment e1 = new RankEnvironment(1, 2, 1, 2, "127.0.0.1", port, TOKEN);
            CompletableFuture<ShmProcessGroup> r1 =
                    CompletableFuture.supplyAsync(() -> new ShmProcessGroup(e1, 20_000));
            ShmProcessGroup g0 = new ShmProcessGroup(e0, 20_000);
            try {
                return new TwoRanks(g0, r1.get(30, TimeUnit.SECONDS));
            } catch (Exception | Error e) {
                g0.close();
                throw e;
            }
        }

        @Override
        public void close() {
            try {
                g1.close();
            } finally {
                g0.close();
            }
        }
    }

    @Test
    void aJobListensOnlyOnTheStorePort() throws Exception {
        assumeTrue(Files.isDirectory(Paths.get("/proc/self/fd")), "needs /proc");
        Set<String> before = listeningSocketsOfThisProcess();
        int port = freePort();
        try (TwoRanks job = TwoRanks.start(port)) {
            Set<String> during = listeningSocketsOfThisProcess();
            during.removeAll(before);
            // Rank 0's store on 127.0.0.1:port and nothing else (ranks talk through /dev/shm).
            assertEquals(Set.of("0100007F:" + String.format("%04X", port)), during);
            assertEquals(1, job.g1().rank());
        }
        Set<String> after = listeningSocketsOfThisProcess();
        after.removeAll(before);
        assertEquals(Set.of(), after, "still listening after the job closed");
    }

    /** True when the server closes s (EOF or reset) within ms; false when s stays open. */
    private static boolean closedWithin(Socket s, int ms) throws IOException {
        s.setSoTimeout(ms);
        try {
            return s.getInputStream().read() < 0;
        } catch (java.net.SocketTimeoutException e) {
            return false;
        } catch (IOException e) {
            return true; // reset
        }
    }

    @Test
    void aFloodOfIdleConnectionsIsBoundedAndARankStillGetsIn() throws Exception {
        try (StoreServer server = StoreServer.start("127.0.0.1", 0, TOKEN)) {
            int port = server.port();
            List<Socket> idle = new ArrayList<>();
            try {
                long opened = System.nanoTime();
                for (int i = 0; i < 300; i++) {
                    idle.add(connect(port));
                }
                long begin = System.nanoTime();
                try (RendezvousStore ok = RendezvousStore.connect("127.0.0.1", port, TOKEN, 5000)) {
                    assertEquals(1, ok.add("n", 1));
                }
                long ms = (System.nanoTime() - begin) / 1_000_000;
                assertTrue(ms < 3000, "a rank needed " + ms + " ms to get in");
                // The server keeps at most 64 connections that have not presented the token.
                Thread.sleep(500); // the server's closes reach this side
                List<Socket> open = new ArrayList<>();
                for (Socket s : idle) {
                    if (!closedWithin(s, 20)) {
                        open.add(s);
                    }
                }
                assertTrue(open.size() <= 64, open.size() + " idle connections still open");
                assertTrue(open.size() >= 32, "only " + open.size() + " kept: the cap is 64");
                // ... and closes those at the handshake deadline (10 s after they were accepted).
                long sinceOpen = (System.nanoTime() - opened) / 1_000_000;
                for (Socket s : open) {
                    assertTrue(
                            closedWithin(s, (int) Math.max(1, 15_000 - sinceOpen)),
                            "an idle connection outlived the handshake deadline");
                }
                long all = (System.nanoTime() - opened) / 1_000_000;
                assertTrue(all >= 9_000 && all < 16_000, "closed after " + all + " ms");
                try (RendezvousStore ok = RendezvousStore.connect("127.0.0.1", port, TOKEN, 2000)) {
                    assertEquals(2, ok.add("n", 1));
                }
            } finally {
                for (Socket s : idle) {
                    s.close();
                }
            }
        }
    }

    private static final Pattern SEGMENT =
            Pattern.compile(
                    "^(\\S+) \\S+ \\S+ \\S+ \\S+\\s+(/dev/shm/nep-[0-9a-f]{32}) \\(deleted\\)$");

    /** The mapped transport segments of this JVM: range to path, from /proc/self/maps. */
    private static List<String[]> mappedSegments() throws IOException {
        List<String[]> out = new ArrayList<>();
        for (String line : Files.readAllLines(Paths.get("/proc/self/maps"))) {
            if (!line.contains("/dev/shm/nep-")) {
                continue;
            }
            Matcher m = SEGMENT.matcher(line);
            assertTrue(
                    m.matches(), "a segment mapping that is still linked or oddly named: " + line);
            out.add(new String[] {m.group(1), m.group(2)});
        }
        return out;
    }

    @Test
    void segmentsAreOwnerOnlyUnlinkedAndUnpredictable() throws Exception {
        assumeTrue(Files.isReadable(Paths.get("/proc/self/maps")), "needs /proc");
        Set<String> before = MultiRank.shmNames();
        Set<String> names = new TreeSet<>();
        Set<String> modes = new LinkedHashSet<>();
        boolean modeChecked = false;
        for (int job = 0; job < 2; job++) {
            try (TwoRanks ranks = TwoRanks.start(freePort())) {
                List<String[]> segs = mappedSegments();
                assertTrue(segs.size() >= 2, "mapped segments: " + segs.size());
                for (String[] s : segs) {
                    names.add(s[1]);
                    Path link = Paths.get("/proc/self/map_files/" + s[0]);
                    try {
                        modes.add(
                                PosixFilePermissions.toString(Files.getPosixFilePermissions(link)));
                        modeChecked = true;
                    } catch (IOException | SecurityException ex) {
                        // map_files needs CAP_SYS_ADMIN on some kernels: the native test
                        // Reliability.SegmentsAreOwnerOnly... checks the mode there.
                    }
                }
                assertEquals(2, ranks.g0().worldSize());
                assertEquals(1, ranks.g1().rank());
            }
        }
        if (modeChecked) {
            assertEquals(Set.of("rw-------"), modes, "segment permissions");
        }
        // Every job gets fresh names: 2 jobs x 2 ranks, all distinct (128 random bits each).
        assertEquals(4, names.size(), names.toString());
        Set<String> left = new TreeSet<>(MultiRank.newShmNames(before));
        assertEquals(Set.of(), left, "segments left in /dev/shm");
        assertNotEquals(0, names.iterator().next().length());
    }
}
