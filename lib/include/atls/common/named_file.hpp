// Reading the files an operator names (the config, keys, certificates, policy material) the
// same way everywhere: a reload must not hang on them, nor read a wrong file to its end.
#pragma once

#include <cstddef>
#include <filesystem>
#include <string>

#include "atls/common/result.hpp"

namespace atls {

inline constexpr std::size_t max_named_file_size = std::size_t{1024} * 1024;

// The whole content of `path`, which must be a regular file of at most max_named_file_size
// bytes. It is opened without blocking and only then checked: a FIFO or a device in the file's
// place would otherwise block the reload, and with it the loop that runs the daemon. On
// failure, the code is the system's (std::errc::is_a_directory, file_too_large, invalid_argument
// for any other non-regular file) and the detail says what is wrong in words, without the path.
[[nodiscard]] detailed_result<std::string> read_named_file(const std::filesystem::path& path);

}  // namespace atls
