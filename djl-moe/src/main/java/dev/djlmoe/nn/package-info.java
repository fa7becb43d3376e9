/**
 * DJL blocks of a DeepSeek-V3-style Mixture-of-Experts layer: the router ({@link
 * dev.djlmoe.nn.MoeRouter}), the routed experts of one expert-parallel rank ({@link
 * dev.djlmoe.nn.RoutedExperts}), the dense SwiGLU MLP used for shared experts and dense layers
 * ({@link dev.djlmoe.nn.SwiGluMlp}) and the sequence-wise balance loss ({@link
 * dev.djlmoe.nn.SequenceBalanceLoss}). All work in float32; each block has a static functional
 * form.
 */
package dev.djlmoe.nn;
