#include <boost/throw_exception.hpp>

#include "atls/common/result.hpp"

namespace atls {

std::string to_string(const failure& f) {
  if (f.detail.empty()) {
    return f.code.message();
  }
  return f.code.message() + ": " + f.detail;
}

std::string describe_escaped(const std::exception_ptr& e) {
  try {
    std::rethrow_exception(e);
  } catch (const std::exception& ex) {
    return ex.what();
  } catch (...) {
    return "an exception not derived from std::exception";
  }
}

void throw_exception_from_error(const failure& f, const boost::source_location& loc) {
  boost::throw_exception(boost::system::system_error(f.code, f.detail), loc);
}

}  // namespace atls
