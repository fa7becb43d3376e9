// Small wrappers over Linux system calls used by the process transports: clocks, futexes on
// shared memory, random names, errno text.
#ifndef NATIVEEP_SRC_SYS_UTIL_H_
#define NATIVEEP_SRC_SYS_UTIL_H_

#include <atomic>
#include <cstdint>
#include <string>

namespace nep {

// Milliseconds on the monotonic clock.
int64_t monotonic_ms();

// strerror_r text for an errno value.
std::string errno_text(int err);

// Blocks while *word == expected, at most timeout_ms (process-shared futex, not a spin). Returns
// early on a wake, a change of *word, a signal or the timeout; the caller re-checks its condition.
void futex_wait(std::atomic<uint32_t>* word, uint32_t expected, int64_t timeout_ms);
// Wakes every waiter on *word (in any process mapping it).
void futex_wake_all(std::atomic<uint32_t>* word);

// `bytes` bytes from the kernel's random source (getrandom), hex-encoded; throws on failure.
std::string random_hex(int bytes);

}  // namespace nep

#endif  // NATIVEEP_SRC_SYS_UTIL_H_
