#include "shm_segment.h"

#include <fcntl.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <utility>

#include "error.h"
#include "sys_util.h"

namespace nep {
namespace {

// Closes a file descriptor on scope exit.
struct FdCloser {
  int fd;
  ~FdCloser() {
    if (fd >= 0) close(fd);
  }
};

uint8_t* map_fd(int fd, size_t bytes, const std::string& name) {
  void* p = mmap(nullptr, bytes, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
  if (p == MAP_FAILED) {
    fail(NEP_ERR_INTERNAL, "mmap of shared memory ", name, " (", bytes,
         " bytes) failed: ", errno_text(errno));
  }
  return static_cast<uint8_t*>(p);
}

}  // namespace

ShmSegment ShmSegment::create(size_t bytes) {
  ShmSegment s;
  int fd = -1;
  for (int attempt = 0; attempt < 8 && fd < 0; ++attempt) {
    s.name_ = "/nep-" + random_hex(16);
    fd = shm_open(s.name_.c_str(), O_CREAT | O_EXCL | O_RDWR | O_CLOEXEC, S_IRUSR | S_IWUSR);
    if (fd < 0 && errno != EEXIST) {
      fail(NEP_ERR_INTERNAL, "shm_open(", s.name_, ") failed: ", errno_text(errno));
    }
  }
  if (fd < 0) fail(NEP_ERR_INTERNAL, "shm_open: no free random name after 8 attempts");
  FdCloser closer{fd};
  s.owner_linked_ = true;  // from here on the destructor unlinks the name
  if (ftruncate(fd, static_cast<off_t>(bytes)) != 0) {
    const int e = errno;
    // EFBIG (the file-size limit, RLIMIT_FSIZE) and ENOSPC (a full tmpfs) mean: no room.
    fail(e == EFBIG || e == ENOSPC ? NEP_ERR_CAPACITY : NEP_ERR_INTERNAL,
         "cannot size shared memory segment ", s.name_, " in /dev/shm to ", bytes,
         " bytes: ", errno_text(e));
  }
  const int rc = posix_fallocate(fd, 0, static_cast<off_t>(bytes));
  if (rc != 0) {
    fail(NEP_ERR_CAPACITY, "cannot reserve ", bytes, " bytes of shared memory in /dev/shm for ",
         s.name_, ": ", errno_text(rc));
  }
  s.data_ = map_fd(fd, bytes, s.name_);
  s.size_ = bytes;
  return s;
}

ShmSegment ShmSegment::open(const std::string& name, size_t bytes) {
  ShmSegment s;
  s.name_ = name;
  const int fd = shm_open(name.c_str(), O_RDWR | O_CLOEXEC, 0);
  if (fd < 0)
    fail(NEP_ERR_PEER, "shm_open(", name, ") of a peer's segment failed: ", errno_text(errno));
  FdCloser closer{fd};
  struct stat st{};
  if (fstat(fd, &st) != 0)
    fail(NEP_ERR_INTERNAL, "fstat of ", name, " failed: ", errno_text(errno));
  if (static_cast<size_t>(st.st_size) != bytes) {
    fail(NEP_ERR_PEER, "peer segment ", name, " has ", st.st_size, " bytes, expected ", bytes,
         " (ranks disagree on the transport configuration)");
  }
  s.data_ = map_fd(fd, bytes, name);
  s.size_ = bytes;
  return s;
}

ShmSegment::~ShmSegment() {
  unlink_name();
  if (data_ != nullptr) munmap(data_, size_);
}

ShmSegment::ShmSegment(ShmSegment&& o) noexcept
    : data_(std::exchange(o.data_, nullptr)),
      size_(std::exchange(o.size_, 0)),
      name_(std::move(o.name_)),
      owner_linked_(std::exchange(o.owner_linked_, false)) {}

ShmSegment& ShmSegment::operator=(ShmSegment&& o) noexcept {
  if (this != &o) {
    unlink_name();
    if (data_ != nullptr) munmap(data_, size_);
    data_ = std::exchange(o.data_, nullptr);
    size_ = std::exchange(o.size_, 0);
    name_ = std::move(o.name_);
    owner_linked_ = std::exchange(o.owner_linked_, false);
  }
  return *this;
}

void ShmSegment::unlink_name() {
  if (!owner_linked_) return;
  owner_linked_ = false;
  unlink_by_name(name_);
}

void ShmSegment::unlink_by_name(const std::string& name) { shm_unlink(name.c_str()); }

}  // namespace nep
