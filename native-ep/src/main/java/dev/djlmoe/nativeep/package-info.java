/*
 * djl-moe: expert-parallel Mixture-of-Experts for the Deep Java Library.
 */

/**
 * The JavaCPP binding of the native core's C ABI ({@code nativeep/c_api.h}): {@link
 * dev.djlmoe.nativeep.NativeEp}.
 */
package dev.djlmoe.nativeep;
