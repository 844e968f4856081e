// Telling the service manager what the daemon is doing (sd_notify(3)): ready, reloading,
// stopping, a status line, watchdog pings. Without NOTIFY_SOCKET (not started by systemd, or a
// unit with Type=simple) every call is a no-op, so the daemon runs the same way by hand.
#pragma once

#include <string_view>

namespace atls::systemd {

// Every member may be called from any thread; none blocks beyond one datagram send. A message
// that cannot be sent is logged as a warning and otherwise ignored: telling systemd is best
// effort, and a failing notification must not stop the daemon. Newlines in status text become
// spaces, so that no text can add an assignment of its own (such as MAINPID=).
class notifier {
 public:
  // "READY=1" with "STATUS=status" and our MAINPID: the listeners are bound and serving. Also
  // the end of a reload that reloading() announced.
  void ready(std::string_view status) const;

  // "RELOADING=1" and "MONOTONIC_USEC=<CLOCK_MONOTONIC now>" in one message, as Type=notify-reload
  // requires (systemd.service(5)); ready() reports the end of the reload.
  void reloading() const;

  // "STOPPING=1": the drain has begun.
  void stopping() const;

  // "STATUS=text": a one-line state for `systemctl status`.
  void status(std::string_view text) const;

  // "WATCHDOG=1". The watchdog (systemd/watchdog.hpp) decides when; others need not call it.
  void watchdog_ping() const;

  // True when NOTIFY_SOCKET is set, i.e. when the calls above reach someone.
  [[nodiscard]] bool enabled() const;
};

}  // namespace atls::systemd
