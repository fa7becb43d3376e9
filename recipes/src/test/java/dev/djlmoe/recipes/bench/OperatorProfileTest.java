/*
 * djl-moe: expert-parallel Mixture-of-Experts for the Deep Java Library.
 */
package dev.djlmoe.recipes.bench;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertFalse;
import static org.junit.jupiter.api.Assertions.assertThrows;
import static org.junit.jupiter.api.Assertions.assertTrue;

import java.util.Map;
import java.util.stream.Collectors;
import org.junit.jupiter.api.Test;

/**
 * {@link OperatorProfile} on hand-written traces: self times of nested operators per thread, the
 * device events of a Kineto trace apart from the host's, DJL's layout read without JSON when a name
 * breaks it, and a file without operators refused.
 */
class OperatorProfileTest {

    private static Map<String, OperatorProfile.Op> byName(Iterable<OperatorProfile.Op> ops) {
        return java.util.stream.StreamSupport.stream(ops.spliterator(), false)
                .collect(Collectors.toMap(OperatorProfile.Op::name, o -> o));
    }

    @Test
    void nestedOperatorsGetSelfTimes() {
        // linear [0, 100) holds mm [10, 70) and add [75, 95); mm holds empty [12, 14); a second
        // thread runs mm [0, 30) on its own.
        String trace =
                "[\n"
                        + ev("aten::linear", 0, 100, 1)
                        + ",\n"
                        + ev("aten::mm", 10, 60, 1)
                        + ",\n"
                        + ev("aten::empty", 12, 2, 1)
                        + ",\n"
                        + ev("aten::add", 75, 20, 1)
                        + ",\n"
                        + ev("aten::mm", 0, 30, 2)
                        + "\n]\n";
        OperatorProfile p = OperatorProfile.parse(trace, "t");
        Map<String, OperatorProfile.Op> ops = byName(p.ops());
        assertEquals(20, ops.get("aten::linear").selfMicros(), 1e-9);
        assertEquals(100, ops.get("aten::linear").totalMicros(), 1e-9);
        assertEquals(2, ops.get("aten::mm").count());
        assertEquals(90, ops.get("aten::mm").totalMicros(), 1e-9);
        assertEquals(58 + 30, ops.get("aten::mm").selfMicros(), 1e-9);
        assertEquals("aten::mm", p.ops().get(0).name()); // largest self time first
        assertEquals(130, p.hostMicros(), 1e-9); // linear + the other thread's mm
        assertFalse(p.hasDeviceTimes());
        assertEquals(5, p.events());
    }

    @Test
    void deviceEventsOfAKinetoTraceAreSummedApart() {
        String trace =
                "{\"traceEvents\": [{\"ph\": \"X\", \"cat\": \"cpu_op\", \"name\": \"aten::mm\","
                    + " \"pid\": 1, \"tid\": 1, \"ts\": 0, \"dur\": 10},{\"ph\": \"X\", \"cat\":"
                    + " \"kernel\", \"name\": \"sm90_gemm\", \"pid\": 0, \"tid\": 7, \"ts\": 5,"
                    + " \"dur\": 40},{\"ph\": \"X\", \"cat\": \"kernel\", \"name\": \"sm90_gemm\","
                    + " \"pid\": 0, \"tid\": 7, \"ts\": 50, \"dur\": 40},{\"ph\": \"X\", \"name\":"
                    + " \"memcpy\", \"pid\": \"CUDA functions\", \"tid\": \"stream 7\", \"ts\": 95,"
                    + " \"dur\": 5},{\"ph\": \"i\", \"name\": \"marker\", \"ts\": 1}]}";
        OperatorProfile p = OperatorProfile.parse(trace, "t");
        assertTrue(p.hasDeviceTimes());
        assertEquals(1, p.ops().size());
        Map<String, OperatorProfile.Op> dev = byName(p.deviceOps());
        assertEquals(80, dev.get("sm90_gemm").selfMicros(), 1e-9);
        assertEquals(2, dev.get("sm90_gemm").count());
        assertEquals(5, dev.get("memcpy").totalMicros(), 1e-9);
        assertTrue(p.table(5, 1.0).get(0).startsWith("device event"));
    }

    @Test
    void djlLayoutIsReadWhenANameBreaksTheJson() {
        String trace =
                "[\n" + ev("record \"x\"", 0, 50, 1) + ",\n" + ev("aten::mm", 10, 20, 1) + "\n]\n";
        Map<String, OperatorProfile.Op> ops = byName(OperatorProfile.parse(trace, "t").ops());
        assertEquals(30, ops.get("record \"x\"").selfMicros(), 1e-9);
        assertEquals(20, ops.get("aten::mm").selfMicros(), 1e-9);
    }

    @Test
    void aTraceWithoutOperatorsIsRefused() {
        IllegalArgumentException e =
                assertThrows(
                        IllegalArgumentException.class,
                        () -> OperatorProfile.parse("[]", "empty.json"));
        assertTrue(e.getMessage().startsWith("empty.json: no operator events"), e.getMessage());
        assertThrows(
                IllegalArgumentException.class, () -> OperatorProfile.parse("{\"a\": 1}", "x"));
    }

    /** One event in the layout of DJL's trace writer. */
    private static String ev(String name, double ts, double dur, int tid) {
        return String.format(
                java.util.Locale.ROOT,
                "{\n  \"name\": \"%s\",\n  \"ph\": \"X\",\n  \"ts\": %f,\n  \"dur\": %f,\n"
                        + "  \"tid\": %d,\n  \"pid\": \"CPU Functions\",\n  \"shape\": [[]],\n"
                        + "  \"cpu mem\": \"0 b\",\n  \"args\": {}\n}",
                name,
                ts,
                dur,
                tid);
    }
}
