#include "atls/common/named_file.hpp"

#include <array>
#include <cerrno>
#include <system_error>

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

namespace atls {
namespace {

failure from_errno(int code) {
  return {error_code(code, boost::system::generic_category()),
          std::generic_category().message(code)};
}

// Closes on every path out; a read-only descriptor loses nothing when close fails.
class descriptor {
 public:
  explicit descriptor(int fd) noexcept : fd_(fd) {}
  descriptor(const descriptor&) = delete;
  descriptor& operator=(const descriptor&) = delete;
  descriptor(descriptor&&) = delete;
  descriptor& operator=(descriptor&&) = delete;
  ~descriptor() {
    if (fd_ >= 0) {
      (void)::close(fd_);
    }
  }
  [[nodiscard]] int get() const noexcept { return fd_; }

 private:
  int fd_;
};

}  // namespace

detailed_result<std::string> read_named_file(const std::filesystem::path& path) {
  const descriptor fd(::open(path.c_str(), O_RDONLY | O_NONBLOCK | O_CLOEXEC));
  if (fd.get() < 0) {
    return from_errno(errno);
  }
  struct stat info {};
  if (::fstat(fd.get(), &info) != 0) {
    return from_errno(errno);
  }
  if (S_ISDIR(info.st_mode)) {
    return failure{error_code(EISDIR, boost::system::generic_category()), "it is a directory"};
  }
  if (!S_ISREG(info.st_mode)) {
    return failure{error_code(EINVAL, boost::system::generic_category()), "not a regular file"};
  }
  std::string text;
  std::array<char, 4096> buffer{};
  for (;;) {
    const auto n = ::read(fd.get(), buffer.data(), buffer.size());
    if (n < 0) {
      if (errno == EINTR) {
        continue;
      }
      return from_errno(errno);
    }
    if (n == 0) {
      return text;
    }
    text.append(buffer.data(), static_cast<std::size_t>(n));
    if (text.size() > max_named_file_size) {
      return failure{error_code(EFBIG, boost::system::generic_category()),
                     "larger than 1 MiB; is this the right file?"};
    }
  }
}

}  // namespace atls
