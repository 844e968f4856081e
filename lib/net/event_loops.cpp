#include "atls/net/event_loops.hpp"

#include <algorithm>
#include <mutex>
#include <optional>
#include <thread>

#include <boost/asio/executor_work_guard.hpp>
#include <boost/asio/io_context.hpp>

namespace atls::net {

namespace asio = boost::asio;

struct event_loops::loop {
  // Concurrency hint 1: one thread runs it, so Asio can skip internal locking.
  asio::io_context io{1};
  std::mutex guard_mutex;
  std::optional<asio::executor_work_guard<asio::io_context::executor_type>> guard{
      asio::make_work_guard(io)};
  std::thread thread;
};

event_loops::event_loops(unsigned count) {
  const unsigned n = std::max(count, 1U);
  loops_.reserve(n);
  for (unsigned i = 0; i < n; ++i) {
    auto l = std::make_unique<loop>();
    l->thread = std::thread([io = &l->io] { io->run(); });
    loops_.push_back(std::move(l));
  }
}

event_loops::~event_loops() {
  finish();
  for (auto& l : loops_) {
    l->thread.join();
  }
}

asio::any_io_executor event_loops::next() {
  const auto i = next_.fetch_add(1, std::memory_order_relaxed) % loops_.size();
  return loops_[i]->io.get_executor();
}

asio::any_io_executor event_loops::executor(std::size_t i) const {
  return loops_.at(i)->io.get_executor();
}

void event_loops::finish() {
  for (auto& l : loops_) {
    const std::lock_guard lock(l->guard_mutex);
    l->guard.reset();
  }
}

}  // namespace atls::net
