package dev.djlmoe.nn;

import ai.djl.ndarray.NDManager;
import org.junit.jupiter.api.AfterEach;
import org.junit.jupiter.api.BeforeEach;

/** A test fixture: a fresh {@link NDManager} for every test, closed after it with its arrays. */
abstract class ManagerPerTest {

    /** The current test's manager. */
    NDManager manager;

    @BeforeEach
    void openManager() {
        manager = NDManager.newBaseManager();
    }

    @AfterEach
    void closeManager() {
        manager.close();
    }
}
