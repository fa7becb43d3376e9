/*
 * djl-moe: expert-parallel Mixture-of-Experts for the Deep Java Library.
 */

/**
 * The staged backward that lets native operations take part in DJL's autograd: a {@link
 * dev.djlmoe.autograd.Tape} records each operation that cuts the graph with its vector-Jacobian
 * product ({@link dev.djlmoe.autograd.Vjp}) and replays them in reverse after {@code
 * backward(loss)}; {@link dev.djlmoe.autograd.Autograd} pushes gradients into libtorch's graph.
 */
package dev.djlmoe.autograd;
