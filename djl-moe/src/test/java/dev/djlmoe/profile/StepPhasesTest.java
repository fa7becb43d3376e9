/*
 * djl-moe: expert-parallel Mixture-of-Experts for the Deep Java Library.
 */
package dev.djlmoe.profile;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertFalse;
import static org.junit.jupiter.api.Assertions.assertNull;
import static org.junit.jupiter.api.Assertions.assertThrows;
import static org.junit.jupiter.api.Assertions.assertTrue;

import java.util.ArrayList;
import java.util.List;
import java.util.Map;
import java.util.concurrent.atomic.AtomicInteger;
import java.util.stream.Collectors;
import org.junit.jupiter.api.Test;

/**
 * {@link StepPhases}: nothing recorded or waited for without a recorder; nested paths, totals and
 * counts; the top-level sequence; the regions the tape names its backward stretches by.
 */
class StepPhasesTest {

    @Test
    void withoutARecorderNothingIsRecordedOrWaitedFor() {
        assertFalse(StepPhases.recording());
        assertNull(StepPhases.region());
        assertNull(StepPhases.currentPath());
        try (StepPhases.Scope s = StepPhases.enter("forward")) {
            StepPhases.next("loss");
        }
    }

    @Test
    void phasesNestAddUpAndWaitAtEachBoundary() throws Exception {
        AtomicInteger waits = new AtomicInteger();
        StepPhases p = StepPhases.start(waits::incrementAndGet);
        List<String> regions = new ArrayList<>();
        try {
            assertThrows(IllegalStateException.class, () -> StepPhases.start(null));
            StepPhases.next("forward");
            try (StepPhases.Scope e = StepPhases.enter("embedding")) {
                Thread.sleep(2);
            }
            for (int i = 0; i < 2; i++) {
                try (StepPhases.Scope l = StepPhases.enter("layer " + i)) {
                    regions.add(StepPhases.region()); // the layer's input cut
                    try (StepPhases.Scope a = StepPhases.enter("attention")) {
                        Thread.sleep(1);
                    }
                    regions.add(StepPhases.region()); // the cut before the MLP
                    try (StepPhases.Scope m = StepPhases.enter("mlp")) {
                        try (StepPhases.Scope n = StepPhases.enter("norm")) {
                            Thread.sleep(1);
                        }
                        regions.add(StepPhases.region()); // the MoE input cut
                        try (StepPhases.Scope r = StepPhases.enter("router")) {
                            Thread.sleep(1);
                        }
                        try (StepPhases.Scope d = StepPhases.enter("dispatch")) {
                            regions.add(StepPhases.region()); // dispatch's record
                            assertEquals("layer " + i + "/mlp/dispatch", StepPhases.currentPath());
                        }
                        try (StepPhases.Scope x = StepPhases.enter("experts")) {
                            Thread.sleep(1);
                        }
                        try (StepPhases.Scope c = StepPhases.enter("combine")) {
                            regions.add(StepPhases.region()); // combine's record
                        }
                        try (StepPhases.Scope s = StepPhases.enter("shared experts")) {
                            Thread.sleep(1);
                        }
                    }
                }
            }
            try (StepPhases.Scope h = StepPhases.enter("head")) {
                Thread.sleep(1);
            }
            StepPhases.next("loss");
            StepPhases.next("backward");
            regions.add(StepPhases.region()); // the walk from the loss
            // A scope left open is ended by next().
            StepPhases.enter("unclosed");
            StepPhases.next("optimizer");
        } finally {
            p.stop();
        }
        assertFalse(StepPhases.recording());
        assertEquals(
                List.of(
                        "embedding",
                        "layer 0/attention",
                        "layer 0/mlp/norm",
                        "layer 0/mlp/router",
                        "layer 0/mlp/experts",
                        "layer 0/mlp/shared experts",
                        "layer 1/attention",
                        "layer 1/mlp/norm",
                        "layer 1/mlp/router",
                        "layer 1/mlp/experts",
                        "layer 1.mlp.shared experts + head + loss"),
                regions);
        Map<String, StepPhases.Total> t =
                p.totals().stream().collect(Collectors.toMap(StepPhases.Total::path, x -> x));
        assertEquals(
                List.of("forward", "forward/embedding", "forward/layer 0"),
                p.totals().stream().limit(3).map(StepPhases.Total::path).toList());
        assertEquals(1, t.get("forward/layer 1/mlp/router").count());
        assertEquals(3, t.get("forward/layer 1/mlp/router").depth());
        // Children lie inside their parents; the top level inside the step.
        for (StepPhases.Total parent : p.totals()) {
            long children = 0;
            for (StepPhases.Total c : p.totals()) {
                if (c.path().startsWith(parent.path() + "/") && c.depth() == parent.depth() + 1) {
                    children += c.nanos();
                }
            }
            assertTrue(children <= parent.nanos(), parent.path());
        }
        assertTrue(p.topLevelNanos() <= p.wallNanos());
        assertTrue(t.get("forward/embedding").nanos() >= 2_000_000L);
        assertTrue(t.containsKey("backward/unclosed"));
        // A wait at start and stop, at each enter (21), at each scope's close (20: "unclosed"
        // was ended by next()) and at each next() (4).
        assertEquals(2 + 21 + 20 + 4, waits.get());
    }
}
