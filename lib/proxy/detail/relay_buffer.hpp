// The relay's read buffers, lent per burst of data rather than held per connection: an idle
// connection holds none, which is what lets one process keep tens of thousands of them open. A
// small per-thread free list makes taking and returning one cost no allocation in steady state.
#pragma once

#include <cstddef>
#include <memory>
#include <utility>
#include <vector>

#include <boost/asio/buffer.hpp>

namespace atls::proxy::detail {

class relay_buffer {
 public:
  explicit relay_buffer(std::size_t size) : size_(size) {}
  ~relay_buffer() { release(); }
  relay_buffer(const relay_buffer&) = delete;
  relay_buffer& operator=(const relay_buffer&) = delete;
  relay_buffer(relay_buffer&&) = delete;
  relay_buffer& operator=(relay_buffer&&) = delete;

  // The buffer, taken from this thread's free list (or allocated) on first use after release().
  boost::asio::mutable_buffer get() {
    if (!data_) {
      auto& free = free_list();
      if (!free.empty() && free.back().first == size_) {
        data_ = std::move(free.back().second);
        free.pop_back();
      } else {
        data_ = std::make_unique<char[]>(size_);
      }
    }
    return {data_.get(), size_};
  }

  [[nodiscard]] char* data() const { return data_.get(); }

  // Returns the buffer to this thread's free list, which keeps a bounded number for reuse.
  void release() noexcept {  // NOLINT(bugprone-exception-escape): see emplace_back
    if (!data_) {
      return;
    }
    auto& free = free_list();
    if (free.size() < max_free && (free.empty() || free.back().first == size_)) {
      free.emplace_back(size_, std::move(data_));  // cannot throw: capacity is reserved
    }
    data_.reset();
  }

 private:
  // Enough for the bursts of a busy thread; more is returned to malloc.
  static constexpr std::size_t max_free = 64;
  using free_list_type = std::vector<std::pair<std::size_t, std::unique_ptr<char[]>>>;
  static free_list_type& free_list() {
    thread_local free_list_type list = [] {
      free_list_type reserved;
      reserved.reserve(max_free);
      return reserved;
    }();
    return list;
  }

  std::size_t size_;
  std::unique_ptr<char[]> data_;
};

}  // namespace atls::proxy::detail
