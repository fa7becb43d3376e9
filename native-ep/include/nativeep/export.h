// Symbol visibility for the C ABI: the core and the CUDA plug-in build with hidden visibility, so
// only functions marked NEP_EXPORT are visible to Java and to test drivers.
#ifndef NATIVEEP_EXPORT_H_
#define NATIVEEP_EXPORT_H_

#define NEP_EXPORT extern "C" __attribute__((visibility("default")))

#endif  // NATIVEEP_EXPORT_H_
