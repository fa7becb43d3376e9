/*
 * djl-moe: expert-parallel Mixture-of-Experts for the Deep Java Library.
 */

/**
 * Ranks and how they find each other: the torchrun environment ({@link
 * dev.djlmoe.dist.RankEnvironment}), the rendezvous key-value store served by rank 0 ({@link
 * dev.djlmoe.dist.StoreServer}, {@link dev.djlmoe.dist.RendezvousStore}) and the process group with
 * its collectives ({@link dev.djlmoe.dist.ProcessGroup}; one-rank {@link
 * dev.djlmoe.dist.LocalProcessGroup}, shared-memory {@link dev.djlmoe.dist.ShmProcessGroup}, made
 * by {@link dev.djlmoe.dist.ProcessGroups}).
 */
package dev.djlmoe.dist;
