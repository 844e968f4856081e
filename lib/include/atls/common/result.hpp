// Errors as values: every expected failure in atls is a boost::system::error_code inside a
// result<T>. Each module has its own errc enum and category named "atls.<module>".
#pragma once

#include <boost/system/error_code.hpp>
#include <boost/system/result.hpp>

namespace atls {

using error_code = boost::system::error_code;

template <class T>
using result = boost::system::result<T, error_code>;

}  // namespace atls

#include <exception>
#include <string>

#include <boost/assert/source_location.hpp>
#include <boost/system/system_error.hpp>

namespace atls {

// An error code with the detail a code cannot carry: which file, OpenSSL's reason text. Used
// where an operator needs to know exactly what to fix (loading configuration material).
struct failure {
  error_code code;
  std::string detail;
};

// "message: detail", or just the message when there is no detail.
std::string to_string(const failure& f);

// What a coroutine let escape, for the log line of its co_spawn completion handler (errors are
// values here, so an escaped exception is a bug to report, not a control path): the exception's
// what(), or a note that it was not a std::exception. `e` must not be null.
[[nodiscard]] std::string describe_escaped(const std::exception_ptr& e);

// What boost::system::result<T, failure>::value() throws on an error.
[[noreturn]] void throw_exception_from_error(const failure& f, const boost::source_location& loc);

template <class T>
using detailed_result = boost::system::result<T, failure>;

}  // namespace atls
