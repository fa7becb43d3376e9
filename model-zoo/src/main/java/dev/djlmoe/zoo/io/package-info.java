/*
 * djl-moe: expert-parallel Mixture-of-Experts for the Deep Java Library.
 */

/**
 * Files of the model zoo, read with bounds so a hostile file fails with a named error: JSON ({@link
 * dev.djlmoe.zoo.io.Json}, {@link dev.djlmoe.zoo.io.JsonWriter}) and safetensors checkpoints
 * ({@link dev.djlmoe.zoo.io.SafetensorsFile}, {@link dev.djlmoe.zoo.io.SafetensorsCheckpoint},
 * {@link dev.djlmoe.zoo.io.SafetensorsWriter}).
 */
package dev.djlmoe.zoo.io;
