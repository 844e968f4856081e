#include "atls/verify/veraison_client.hpp"

#include <algorithm>
#include <cstdint>
#include <deque>
#include <list>
#include <optional>
#include <random>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include <boost/asio/as_tuple.hpp>
#include <boost/asio/bind_cancellation_slot.hpp>
#include <boost/asio/cancellation_signal.hpp>
#include <boost/asio/co_spawn.hpp>
#include <boost/asio/ip/tcp.hpp>
#include <boost/asio/post.hpp>
#include <boost/asio/ssl.hpp>
#include <boost/asio/steady_timer.hpp>
#include <boost/asio/strand.hpp>
#include <boost/asio/use_awaitable.hpp>
#include <boost/beast/core/flat_buffer.hpp>
#include <boost/beast/core/tcp_stream.hpp>
#include <boost/beast/http.hpp>
#include <openssl/crypto.h>
#include <openssl/evp.h>
#include <openssl/ssl.h>
#include <openssl/x509v3.h>
#include <spdlog/spdlog.h>

#include "atls/attest/evidence.hpp"
#include "atls/common/log_quote.hpp"
#include "atls/common/named_file.hpp"
#include "atls/metrics/atlsd_metrics.hpp"
#include "atls/net/async_event.hpp"
#include "atls/verify/ear.hpp"
#include "atls/verify/error.hpp"

#include "detail/veraison_answers.hpp"

namespace atls::verify {

namespace asio = boost::asio;
namespace beast = boost::beast;
namespace http = beast::http;
namespace ssl = asio::ssl;
using tcp = asio::ip::tcp;

// The verifier's answers are read by detail/veraison_answers (fuzzed apart from the network).
using detail::api_root;
using detail::base_url;
using detail::discovery_media_type;
using detail::http_answer;
using detail::max_body_size;
using detail::parse_base_url;
using detail::parse_discovery;
using detail::parse_session;
using detail::problem_detail;
using detail::session_media_type;
using detail::session_target;

namespace {

constexpr auto use_tuple = asio::as_tuple(asio::use_awaitable);

// challenge() sessions waiting for their appraise(); more means nobody is coming back for them.
constexpr std::size_t max_pending_sessions = 1024;

bool is_ip_literal(const std::string& host) {
  error_code ec;
  (void)asio::ip::make_address(host, ec);
  return !ec;
}

// Go's base64.URLEncoding (padded): what Veraison's newSession decodes the nonce parameter
// with. The '=' padding is percent-encoded for the query string.
std::string nonce_query_value(std::span<const std::uint8_t> nonce) {
  std::string text = base64url_encode(nonce);
  for (auto padding = (4 - text.size() % 4) % 4; padding > 0; --padding) {
    text += "%3D";
  }
  return text;
}

bool same_bytes(std::span<const std::uint8_t> a, std::span<const std::uint8_t> b) {
  return a.size() == b.size() && CRYPTO_memcmp(a.data(), b.data(), a.size()) == 0;
}

// An answer other than the one expected: logged with its problem detail, and classed so that
// only the verifier's own failures (5xx) are retried.
error_code unexpected_answer(std::string_view url, std::string_view step,
                             const http_answer& answer) {
  spdlog::error("verifier {}: {} answered {}: {}", url, step, answer.status,
                problem_detail(answer));
  if (answer.status >= 500) {
    return verify_errc::verifier_unavailable;
  }
  return answer.status >= 400 ? verify_errc::verifier_rejected : verify_errc::bad_response;
}

// What appraise() learns from Parsec TPM evidence before sending it anywhere.
struct evidence_binding {
  bytes attested_key;  // DER SPKI of the certified key
};

// Veraison's parsec-tpm scheme does not compare extraData with the session nonce
// (veraison/services#447), so the relying party checks the challenge in both TPMS_ATTEST
// structures itself. Veraison checks the AK's signatures over exactly these bytes, so an EAR
// that affirms them also vouches for this extraData.
result<evidence_binding> check_parsec_binding(std::span<const std::uint8_t> evidence,
                                              std::span<const std::uint8_t> nonce) {
  auto decoded = attest::decode(evidence);
  if (!decoded) {
    return decoded.error();
  }
  auto certify = attest::parse_attest(decoded->cert_info);
  if (!certify) {
    return certify.error();
  }
  auto quote = attest::parse_attest(decoded->attest_info);
  if (!quote) {
    return quote.error();
  }
  if (!same_bytes(certify->extra_data, nonce) || !same_bytes(quote->extra_data, nonce)) {
    return verify_errc::nonce_mismatch;
  }
  auto spki = attest::spki_der(decoded->pub_area);
  if (!spki) {
    return spki.error();
  }
  return evidence_binding{.attested_key = std::move(*spki)};
}

class connection {
 public:
  using tls_stream = ssl::stream<beast::tcp_stream>;

  connection(const asio::any_io_executor& executor, ssl::context* tls) {
    if (tls != nullptr) {
      tls_.emplace(executor, *tls);
    } else {
      plain_.emplace(executor);
    }
  }

  beast::tcp_stream& tcp() { return tls_ ? tls_->next_layer() : *plain_; }
  tls_stream* tls() { return tls_ ? &*tls_ : nullptr; }

  // Calls `function` with whichever stream this connection is.
  template <class Function>
  auto visit(Function& function) {
    if (tls_) {
      return function(*tls_);
    }
    return function(*plain_);
  }

  beast::flat_buffer buffer;
  std::chrono::steady_clock::time_point idle_since;

 private:
  std::optional<beast::tcp_stream> plain_;
  std::optional<tls_stream> tls_;
};

}  // namespace

class veraison_client::impl : public std::enable_shared_from_this<impl> {
 public:
  impl(const asio::any_io_executor& executor, veraison_client_options options,
       std::vector<base_url> urls, std::optional<ssl::context> tls)
      : strand_(asio::make_strand(executor)),
        options_(std::move(options)),
        urls_(std::move(urls)),
        tls_(std::move(tls)),
        pools_(urls_.size()),
        discovered_keys_(urls_.size()),
        name_("veraison " + urls_.front().text),
        random_(std::random_device{}()) {}

  [[nodiscard]] const asio::strand<asio::any_io_executor>& strand() const { return strand_; }
  [[nodiscard]] const std::string& name() const { return name_; }

  asio::awaitable<result<attestation_result>> appraise(bytes evidence, std::string media_type,
                                                       bytes nonce);
  asio::awaitable<result<bytes>> challenge(std::size_t size);
  asio::awaitable<void> prepare(bytes nonce);
  asio::awaitable<result<veraison_client::discovery>> discover();
  // Cancels the background work and refuses more: the client is gone, and a verifier that hangs
  // must not hold the daemon's io_context (and so its exit) for the request timeouts. On the
  // strand.
  void stop_background();
  // Starts prepare() in the background. On the strand.
  void start_prepare(bytes nonce);

 private:
  struct pending_session {
    bytes nonce;
    std::size_t url = 0;
    std::string path;
    std::chrono::steady_clock::time_point expires;
  };

  // One attempt of a whole exchange against urls_[url].
  asio::awaitable<result<attestation_result>> appraise_once(std::size_t url, const bytes& evidence,
                                                            const std::string& media_type,
                                                            const bytes& nonce,
                                                            std::optional<std::string> session);
  asio::awaitable<result<std::string>> submit(std::size_t url, const std::string& session,
                                              const bytes& evidence, const std::string& media_type);
  asio::awaitable<result<std::string>> open_session(std::size_t url, const std::string& query,
                                                    bytes* nonce_out);
  // Opens a session for exactly `nonce`. A verifier that echoes another nonce would appraise
  // against a nonce this relying party did not choose, so that session is refused.
  asio::awaitable<result<std::string>> open_session_with(std::size_t url, const bytes& nonce);
  asio::awaitable<void> delete_session(std::size_t url, const std::string& session);
  // Deletes the session in the background, off the appraisal's path. On the strand.
  void forget_session(std::size_t url, std::string session);
  // Runs `work` (a coroutine lambda) on the strand in the background, until it completes or the
  // client is destroyed (stop_background). On the strand.
  template <class Work>
  void spawn_background(Work work, std::string_view what);
  // Keeps a session for the appraise() that brings its nonce. On the strand.
  void keep_pending(pending_session session);
  [[nodiscard]] bool preparing(std::span<const std::uint8_t> nonce) const;
  asio::awaitable<result<verification_key>> ear_key(std::size_t url);
  asio::awaitable<result<veraison_client::discovery>> fetch_discovery(std::size_t url);

  asio::awaitable<result<http_answer>> exchange(std::size_t url, http::verb verb,
                                                std::string target, std::string_view accept,
                                                std::string_view content_type,
                                                std::span<const std::uint8_t> body);
  asio::awaitable<result<std::unique_ptr<connection>>> connect(std::size_t url);
  std::unique_ptr<connection> take_idle(std::size_t url);
  void give_back(std::size_t url, std::unique_ptr<connection> conn);

  // Runs `attempt(url)` with retries and fail-over: verifier_unavailable is retried on the
  // next URL, with back-off once every URL has failed in a round.
  template <class T, class Attempt>
  asio::awaitable<result<T>> with_retries(Attempt attempt);

  std::optional<pending_session> take_pending(std::span<const std::uint8_t> nonce);

  asio::strand<asio::any_io_executor> strand_;
  veraison_client_options options_;
  std::vector<base_url> urls_;
  std::optional<ssl::context> tls_;
  std::vector<std::deque<std::unique_ptr<connection>>> pools_;
  std::vector<std::optional<verification_key>> discovered_keys_;
  std::deque<pending_session> pending_;
  // Nonces whose session prepare() is still opening; session_prepared wakes when one is done.
  std::vector<bytes> preparing_;
  net::async_event session_prepared_{strand_};
  std::list<asio::cancellation_signal> background_;  // one per running background task
  bool stopped_ = false;
  std::size_t preferred_ = 0;  // the URL that last answered
  std::string name_;
  std::minstd_rand random_;
};

template <class T, class Attempt>
asio::awaitable<result<T>> veraison_client::impl::with_retries(Attempt attempt) {
  auto backoff = options_.initial_backoff;
  const auto attempts = std::max(1U, options_.max_attempts);
  std::optional<result<T>> last;
  for (unsigned n = 0; n < attempts; ++n) {
    const auto url = (preferred_ + n) % urls_.size();
    if (n != 0 && n % urls_.size() == 0) {
      // Every URL failed this round: wait before going round again. Jitter spreads the retries
      // of many sidecars that lost the same verifier at the same moment.
      std::uniform_int_distribution<std::int64_t> jitter(backoff.count() / 2, backoff.count());
      asio::steady_timer timer(strand_, std::chrono::milliseconds(jitter(random_)));
      (void)co_await timer.async_wait(use_tuple);
      backoff = std::min(backoff * 2, options_.max_backoff);
    }
    auto pending = attempt(url);
    last.emplace(co_await std::move(pending));
    if (last->has_value()) {
      preferred_ = url;
      co_return std::move(*last);
    }
    if (last->error() != verify_errc::verifier_unavailable) {
      co_return std::move(*last);
    }
    spdlog::warn("verifier {}: attempt {}/{} failed: {}", urls_[url].text, n + 1, attempts,
                 last->error().message());
  }
  co_return std::move(*last);
}

asio::awaitable<result<attestation_result>> veraison_client::impl::appraise(bytes evidence,
                                                                            std::string media_type,
                                                                            bytes nonce) {
  if (nonce.size() < min_nonce_size || nonce.size() > max_nonce_size) {
    co_return make_error_code(std::errc::invalid_argument);
  }
  // Check what can be checked before the network: evidence for another nonce would come back
  // "affirming" from a real Veraison (veraison/services#447).
  std::optional<evidence_binding> binding;
  if (media_type == attest::parsec_tpm_media_type) {
    auto checked = check_parsec_binding(evidence, nonce);
    if (!checked) {
      co_return checked.error();
    }
    binding = std::move(*checked);
  }

  bool waiting = preparing(nonce);
  while (waiting) {
    const bool woken = co_await session_prepared_.wait();
    waiting = woken && preparing(nonce);
  }
  auto reserved = take_pending(nonce);
  auto attempt = [&](std::size_t url) {
    std::optional<std::string> session;
    // A session opened by challenge() lives on one server; after it, new sessions carry the
    // same nonce to whichever server answers.
    if (reserved && reserved->url == url) {
      session = std::move(reserved->path);
      reserved.reset();
    }
    return appraise_once(url, evidence, media_type, nonce, std::move(session));
  };
  auto attempts = with_retries<attestation_result>(attempt);
  auto outcome = co_await std::move(attempts);
  if (reserved) {
    forget_session(reserved->url, std::move(reserved->path));
  }
  if (!outcome) {
    co_return outcome.error();
  }

  if (outcome->nonce && !same_bytes(*outcome->nonce, nonce)) {
    co_return verify_errc::nonce_mismatch;
  }
  if (binding) {
    if (outcome->attested_key && *outcome->attested_key != binding->attested_key) {
      co_return verify_errc::attested_key_mismatch;
    }
  } else if (!outcome->nonce) {
    // Evidence this client cannot look into is bound only by the EAR's own nonce.
    co_return verify_errc::nonce_mismatch;
  }
  if (!outcome->nonce) {
    outcome->nonce = nonce;
  }
  co_return outcome;
}

asio::awaitable<result<attestation_result>> veraison_client::impl::appraise_once(
    std::size_t url, const bytes& evidence, const std::string& media_type, const bytes& nonce,
    std::optional<std::string> session) {
  auto key_lookup = ear_key(url);
  auto key = co_await std::move(key_lookup);
  if (!key) {
    co_return key.error();
  }
  if (!session) {
    auto opening = open_session_with(url, nonce);
    auto opened = co_await std::move(opening);
    if (!opened) {
      co_return opened.error();
    }
    session = std::move(*opened);
  }
  auto submission = submit(url, *session, evidence, media_type);
  auto token = co_await std::move(submission);
  forget_session(url, std::move(*session));
  if (!token) {
    co_return token.error();
  }
  auto verified = verify_ear(*token, *key);
  if (!verified) {
    spdlog::error("verifier {}: EAR refused: {}", urls_[url].text, verified.error().message());
    co_return verified.error();
  }
  co_return verified;
}

asio::awaitable<result<std::string>> veraison_client::impl::open_session(std::size_t url,
                                                                         const std::string& query,
                                                                         bytes* nonce_out) {
  const std::string target = urls_[url].prefix + std::string(api_root) + "newSession?" + query;
  auto request = exchange(url, http::verb::post, target, session_media_type, {}, {});
  auto answer = co_await std::move(request);
  if (!answer) {
    co_return answer.error();
  }
  if (answer->status != 201) {
    co_return unexpected_answer(urls_[url].text, "newSession", *answer);
  }
  auto session = parse_session(*answer);
  if (!session || session->status != "waiting" || answer->location.empty()) {
    spdlog::error("verifier {}: newSession answer is not a waiting session with a Location",
                  urls_[url].text);
    co_return verify_errc::bad_response;
  }
  auto path = session_target(urls_[url], answer->location);
  if (path.empty()) {
    spdlog::error("verifier {}: session Location {} is not a path on this verifier",
                  urls_[url].text, quote_for_log(answer->location));
    co_return verify_errc::bad_response;
  }
  *nonce_out = std::move(session->nonce);
  co_return path;
}

asio::awaitable<result<std::string>> veraison_client::impl::open_session_with(std::size_t url,
                                                                              const bytes& nonce) {
  bytes minted;
  const auto query = "nonce=" + nonce_query_value(nonce);
  auto opening = open_session(url, query, &minted);
  auto opened = co_await std::move(opening);
  if (!opened) {
    co_return opened.error();
  }
  if (!same_bytes(minted, nonce)) {
    forget_session(url, std::move(*opened));
    spdlog::error("verifier {}: session nonce differs from the requested one", urls_[url].text);
    co_return verify_errc::bad_response;
  }
  co_return std::move(*opened);
}

asio::awaitable<result<std::string>> veraison_client::impl::submit(std::size_t url,
                                                                   const std::string& session,
                                                                   const bytes& evidence,
                                                                   const std::string& media_type) {
  auto request = exchange(url, http::verb::post, session, session_media_type, media_type, evidence);
  auto answer = co_await std::move(request);
  if (!answer) {
    co_return answer.error();
  }
  const auto deadline = std::chrono::steady_clock::now() + options_.max_processing_time;
  while (true) {
    if (answer->status != 200 && answer->status != 202) {
      co_return unexpected_answer(urls_[url].text, "evidence", *answer);
    }
    auto state = parse_session(*answer);
    if (!state) {
      co_return state.error();
    }
    if (state->status == "complete") {
      if (!state->ear) {
        co_return verify_errc::bad_response;
      }
      co_return std::move(*state->ear);
    }
    if (state->status == "failed") {
      co_return verify_errc::session_failed;
    }
    if (state->status != "processing" || std::chrono::steady_clock::now() >= deadline) {
      // The status is the verifier's text: quoted, like its problem details.
      spdlog::error("verifier {}: session {} is {}", urls_[url].text, session,
                    quote_for_log(state->status));
      co_return state->status == "processing" ? verify_errc::verifier_unavailable
                                              : verify_errc::bad_response;
    }
    asio::steady_timer timer(strand_, options_.poll_interval);
    (void)co_await timer.async_wait(use_tuple);
    auto poll = exchange(url, http::verb::get, session, session_media_type, {}, {});
    auto polled = co_await std::move(poll);
    if (!polled) {
      co_return polled.error();
    }
    answer = std::move(polled);
  }
}

asio::awaitable<void> veraison_client::impl::delete_session(std::size_t url,
                                                            const std::string& session) {
  // Best effort: a session left behind expires on its own.
  auto request = exchange(url, http::verb::delete_, session, "*/*", {}, {});
  auto answer = co_await std::move(request);
  if (!answer) {
    spdlog::debug("verifier {}: deleting session failed: {}", urls_[url].text,
                  answer.error().message());
  } else if (answer->status != 204 && answer->status != 200) {
    spdlog::debug("verifier {}: deleting session answered {}", urls_[url].text, answer->status);
  }
}

asio::awaitable<result<bytes>> veraison_client::impl::challenge(std::size_t size) {
  if (size < min_nonce_size || size > max_nonce_size) {
    co_return make_error_code(std::errc::invalid_argument);
  }
  auto attempt = [&](std::size_t url) -> asio::awaitable<result<bytes>> {
    bytes nonce;
    const auto query = "nonceSize=" + std::to_string(size);
    auto opening = open_session(url, query, &nonce);
    auto opened = co_await std::move(opening);
    if (!opened) {
      co_return opened.error();
    }
    if (nonce.size() != size) {
      auto deleted = delete_session(url, *opened);
      co_await std::move(deleted);
      co_return verify_errc::bad_response;
    }
    keep_pending({.nonce = nonce, .url = url, .path = std::move(*opened), .expires = {}});
    co_return nonce;
  };
  auto attempts = with_retries<bytes>(attempt);
  co_return co_await std::move(attempts);
}

void veraison_client::impl::keep_pending(pending_session session) {
  const auto now = std::chrono::steady_clock::now();
  while (!pending_.empty() &&
         (pending_.size() >= max_pending_sessions || pending_.front().expires < now)) {
    pending_.pop_front();
  }
  // Kept no longer than Veraison's own default session lifetime (2m30s).
  session.expires = now + std::chrono::seconds(150);
  pending_.push_back(std::move(session));
}

bool veraison_client::impl::preparing(std::span<const std::uint8_t> nonce) const {
  return std::ranges::any_of(preparing_,
                             [&](const bytes& candidate) { return same_bytes(candidate, nonce); });
}

asio::awaitable<void> veraison_client::impl::prepare(bytes nonce) {
  if (nonce.size() < min_nonce_size || nonce.size() > max_nonce_size ||
      preparing_.size() >= max_pending_sessions) {
    co_return;
  }
  preparing_.push_back(nonce);
  struct opened_session {
    std::size_t url = 0;
    std::string path;
  };
  auto attempt = [&](std::size_t url) -> asio::awaitable<result<opened_session>> {
    auto opening = open_session_with(url, nonce);
    auto opened = co_await std::move(opening);
    if (!opened) {
      co_return opened.error();
    }
    co_return opened_session{.url = url, .path = std::move(*opened)};
  };
  auto attempts = with_retries<opened_session>(attempt);
  auto outcome = co_await std::move(attempts);
  if (outcome) {
    keep_pending(
        {.nonce = nonce, .url = outcome->url, .path = std::move(outcome->path), .expires = {}});
  } else {
    spdlog::debug("verifier {}: no session prepared ahead: {}", name_, outcome.error().message());
  }
  std::erase_if(preparing_, [&](const bytes& candidate) { return same_bytes(candidate, nonce); });
  session_prepared_.notify_all();
}

void veraison_client::impl::forget_session(std::size_t url, std::string session) {
  auto work = [self = shared_from_this(), url, session = std::move(session)]() {
    return self->delete_session(url, session);
  };
  spawn_background(std::move(work), "deleting a session");
}

void veraison_client::impl::start_prepare(bytes nonce) {
  auto work = [self = shared_from_this(), nonce = std::move(nonce)]() mutable {
    return self->prepare(std::move(nonce));
  };
  spawn_background(std::move(work), "preparing a session");
}

template <class Work>
void veraison_client::impl::spawn_background(Work work, std::string_view what) {
  if (stopped_) {
    return;
  }
  auto signal = background_.emplace(background_.end());
  asio::co_spawn(strand_, std::move(work),
                 asio::bind_cancellation_slot(
                     signal->slot(), [self = shared_from_this(), signal,
                                      what = std::string(what)](const std::exception_ptr& e) {
                       // After stop_background() the work ends with operation_aborted: expected.
                       if (e && !self->stopped_) {
                         spdlog::error("verifier {}: {} failed: {}", self->name_, what,
                                       describe_escaped(e));
                       }
                       self->background_.erase(signal);
                     }));
}

void veraison_client::impl::stop_background() {
  stopped_ = true;
  for (auto& signal : background_) {
    signal.emit(asio::cancellation_type::terminal);
  }
}

std::optional<veraison_client::impl::pending_session> veraison_client::impl::take_pending(
    std::span<const std::uint8_t> nonce) {
  const auto now = std::chrono::steady_clock::now();
  for (auto it = pending_.begin(); it != pending_.end(); ++it) {
    if (it->expires >= now && same_bytes(it->nonce, nonce)) {
      auto found = std::move(*it);
      pending_.erase(it);
      return found;
    }
  }
  return std::nullopt;
}

asio::awaitable<result<verification_key>> veraison_client::impl::ear_key(std::size_t url) {
  if (options_.ear_key) {
    co_return *options_.ear_key;
  }
  if (discovered_keys_[url]) {
    co_return *discovered_keys_[url];
  }
  auto fetch = fetch_discovery(url);
  auto found = co_await std::move(fetch);
  if (!found) {
    co_return found.error();
  }
  auto key = parse_jwk(found->ear_key_jwk);
  if (!key) {
    spdlog::error("verifier {}: the discovered EAR key is unusable: {}", urls_[url].text,
                  key.error().message());
    co_return verify_errc::no_verification_key;
  }
  spdlog::warn(
      "verifier {}: trusting the EAR key it publishes ({}), as configured; pin the key in "
      "production",
      urls_[url].text, to_string(key->algorithm));
  discovered_keys_[url] = *key;
  co_return *key;
}

asio::awaitable<result<veraison_client::discovery>> veraison_client::impl::discover() {
  auto attempt = [&](std::size_t url) { return fetch_discovery(url); };
  auto attempts = with_retries<veraison_client::discovery>(attempt);
  co_return co_await std::move(attempts);
}

asio::awaitable<result<veraison_client::discovery>> veraison_client::impl::fetch_discovery(
    std::size_t url) {
  const std::string target = urls_[url].prefix + "/.well-known/veraison/verification";
  auto request = exchange(url, http::verb::get, target, discovery_media_type, {}, {});
  auto answer = co_await std::move(request);
  if (!answer) {
    co_return answer.error();
  }
  if (answer->status != 200) {
    co_return unexpected_answer(urls_[url].text, "discovery", *answer);
  }
  auto parsed = parse_discovery(*answer);
  if (!parsed) {
    co_return parsed.error();
  }
  veraison_client::discovery out{.service_state = std::move(parsed->service_state),
                                 .media_types = std::move(parsed->media_types),
                                 .version = std::move(parsed->version),
                                 .ear_key_jwk = std::move(parsed->ear_key_jwk)};
  if (options_.ear_key && !out.ear_key_jwk.empty()) {
    if (auto published = parse_jwk(out.ear_key_jwk)) {
      out.ear_key_matches_pinned =
          EVP_PKEY_eq(published->key.get(), options_.ear_key->key.get()) == 1;
    }
  }
  co_return out;
}

std::unique_ptr<connection> veraison_client::impl::take_idle(std::size_t url) {
  auto& pool = pools_[url];
  const auto now = std::chrono::steady_clock::now();
  while (!pool.empty()) {
    auto conn = std::move(pool.back());
    pool.pop_back();
    if (now - conn->idle_since < options_.idle_timeout) {
      return conn;
    }
  }
  return nullptr;
}

void veraison_client::impl::give_back(std::size_t url, std::unique_ptr<connection> conn) {
  auto& pool = pools_[url];
  if (pool.size() >= options_.max_idle_connections) {
    return;
  }
  conn->idle_since = std::chrono::steady_clock::now();
  pool.push_back(std::move(conn));
}

asio::awaitable<result<std::unique_ptr<connection>>> veraison_client::impl::connect(
    std::size_t url) {
  const auto& base = urls_[url];
  auto conn = std::make_unique<connection>(strand_, tls_ ? &*tls_ : nullptr);
  tcp::resolver resolver(strand_);
  auto [resolve_error, endpoints] =
      co_await resolver.async_resolve(base.host, base.port, use_tuple);
  if (resolve_error) {
    spdlog::warn("verifier {}: cannot resolve {}: {}", base.text, base.host,
                 resolve_error.message());
    co_return verify_errc::verifier_unavailable;
  }
  conn->tcp().expires_after(options_.connect_timeout);
  auto [connect_error, peer] = co_await conn->tcp().async_connect(endpoints, use_tuple);
  if (connect_error) {
    spdlog::warn("verifier {}: connect failed: {}", base.text, connect_error.message());
    co_return verify_errc::verifier_unavailable;
  }
  if (auto* tls = conn->tls()) {
    SSL* handle = tls->native_handle();
    if (is_ip_literal(base.host)) {
      X509_VERIFY_PARAM_set1_ip_asc(SSL_get0_param(handle), base.host.c_str());
    } else {
      (void)SSL_set_tlsext_host_name(handle, base.host.c_str());
      (void)SSL_set1_host(handle, base.host.c_str());
    }
    auto [handshake_error] = co_await tls->async_handshake(ssl::stream_base::client, use_tuple);
    if (handshake_error) {
      // A certificate that does not verify is a configuration problem, but another URL may be
      // configured correctly: fail over like any network error, and say why.
      spdlog::warn("verifier {}: TLS handshake failed: {}", base.text, handshake_error.message());
      co_return verify_errc::verifier_unavailable;
    }
  }
  co_return conn;
}

namespace {

// The metrics label for a request: which call of the API, never the session id in the path
// (one series per session would grow without bound).
std::string_view endpoint_of(http::verb verb, std::string_view target) {
  if (target.find("/.well-known/") != std::string_view::npos) {
    return "discovery";
  }
  if (target.find("/newSession") != std::string_view::npos) {
    return "new_session";
  }
  switch (verb) {
    case http::verb::post:
      return "evidence";
    case http::verb::delete_:
      return "delete_session";
    default:
      return "session";
  }
}

// atlsd_verifier_requests_total{verifier, endpoint, status} and the request duration.
void count_request(std::string_view verifier, http::verb verb, std::string_view target,
                   const std::string& status, std::chrono::steady_clock::time_point started) {
  auto& m = metrics::process();
  m.verifier_requests.with({verifier, endpoint_of(verb, target), status}).inc();
  m.verifier_request_duration.with({verifier}).observe(std::chrono::steady_clock::now() - started);
}

}  // namespace

asio::awaitable<result<http_answer>> veraison_client::impl::exchange(
    std::size_t url, http::verb verb, std::string target, std::string_view accept,
    std::string_view content_type, std::span<const std::uint8_t> body) {
  const auto& base = urls_[url];
  const auto started = std::chrono::steady_clock::now();
  http::request<http::vector_body<std::uint8_t>> request{verb, target, 11};
  request.set(http::field::host, base.host_header);
  request.set(http::field::user_agent, "atlsd");
  request.set(http::field::accept, accept);
  if (!content_type.empty()) {
    request.set(http::field::content_type, content_type);
  }
  if (options_.bearer_token) {
    request.set(http::field::authorization, "Bearer " + *options_.bearer_token);
  }
  request.body().assign(body.begin(), body.end());
  request.keep_alive(true);
  request.prepare_payload();

  // A pooled connection may have been closed by the server while idle; that shows as an error
  // on the first write or read, and the request is then sent once more on a new connection.
  for (int round = 0; round < 2; ++round) {
    auto conn = round == 0 ? take_idle(url) : nullptr;
    const bool reused = conn != nullptr;
    if (!conn) {
      auto connecting = connect(url);
      auto fresh = co_await std::move(connecting);
      if (!fresh) {
        count_request(base.text, verb, target, "error", started);
        co_return fresh.error();
      }
      conn = std::move(*fresh);
    }
    conn->tcp().expires_after(options_.request_timeout);
    auto write = [&](auto& stream) { return http::async_write(stream, request, use_tuple); };
    auto writing = conn->visit(write);
    auto [write_error, written] = co_await std::move(writing);
    http::response_parser<http::string_body> parser;
    parser.body_limit(max_body_size);
    error_code read_error = write_error;
    if (!write_error) {
      auto read = [&](auto& stream) {
        return http::async_read(stream, conn->buffer, parser, use_tuple);
      };
      auto reading = conn->visit(read);
      auto [error, bytes_read] = co_await std::move(reading);
      read_error = error;
    }
    if (read_error) {
      if (reused && read_error != beast::error::timeout) {
        continue;
      }
      spdlog::warn("verifier {}: {} {} failed: {}", base.text, std::string(http::to_string(verb)),
                   target, read_error.message());
      count_request(base.text, verb, target, "error", started);
      co_return verify_errc::verifier_unavailable;
    }
    auto response = parser.release();
    count_request(base.text, verb, target, std::to_string(response.result_int()), started);
    http_answer answer{
        .status = response.result_int(),
        .content_type = std::string(response[http::field::content_type]),
        .location = std::string(response[http::field::location]),
        .body = std::move(response.body()),
    };
    if (response.keep_alive()) {
      conn->tcp().expires_never();
      give_back(url, std::move(conn));
    }
    co_return answer;
  }
  co_return verify_errc::verifier_unavailable;
}

result<std::shared_ptr<veraison_client>> veraison_client::create(
    const asio::any_io_executor& executor, veraison_client_options options) {
  if (options.base_urls.empty()) {
    return make_error_code(std::errc::invalid_argument);
  }
  if (!options.ear_key && !options.trust_discovered_key) {
    return verify_errc::no_verification_key;
  }
  std::vector<base_url> urls;
  bool any_tls = false;
  for (const auto& text : options.base_urls) {
    auto parsed = parse_base_url(text);
    if (!parsed) {
      return parsed.error();
    }
    any_tls = any_tls || parsed->tls;
    urls.push_back(std::move(*parsed));
  }
  std::optional<ssl::context> tls;
  if (any_tls) {
    tls.emplace(ssl::context::tls_client);
    (void)SSL_CTX_set_min_proto_version(tls->native_handle(), TLS1_2_VERSION);
    tls->set_verify_mode(ssl::verify_peer);
    error_code ec;
    if (options.ca_file.empty()) {
      tls->set_default_verify_paths(ec);
    } else if (const auto pem = read_named_file(options.ca_file)) {
      // Read like every file the config names (no FIFO, no unbounded size); every certificate
      // in it is added.
      tls->add_certificate_authority(asio::buffer(*pem), ec);
    } else {
      ec = pem.error().code;
    }
    if (ec) {
      return make_error_code(std::errc::invalid_argument);
    }
  }
  if (!options.ear_key) {
    spdlog::warn(
        "verifier {}: no EAR key configured; the key will be taken from the verifier's "
        "discovery document. Every stock Veraison deployment signs with the same published test "
        "key: do not rely on this outside tests and demos",
        options.base_urls.front());
  }
  auto state =
      std::make_shared<impl>(executor, std::move(options), std::move(urls), std::move(tls));
  return std::shared_ptr<veraison_client>(new veraison_client(std::move(state)));
}

veraison_client::veraison_client(std::shared_ptr<impl> state) : impl_(std::move(state)) {}

veraison_client::~veraison_client() {
  try {
    asio::post(impl_->strand(), [state = impl_] { state->stop_background(); });
  } catch (...) {
    // Posting failed (out of memory): the background work then ends by its own timeouts.
  }
}

std::string_view veraison_client::name() const noexcept {
  return impl_->name();
}

asio::awaitable<result<attestation_result>> veraison_client::appraise(bytes evidence,
                                                                      std::string media_type,
                                                                      bytes expected_nonce) {
  // The work runs on the client's strand, which owns the connection pool; the impl stays alive
  // until it completes even if the client is destroyed meanwhile.
  auto work = [state = impl_, evidence = std::move(evidence), media_type = std::move(media_type),
               nonce = std::move(expected_nonce)]() mutable {
    return state->appraise(std::move(evidence), std::move(media_type), std::move(nonce));
  };
  auto pending = asio::co_spawn(impl_->strand(), std::move(work), asio::use_awaitable);
  co_return co_await std::move(pending);
}

asio::awaitable<result<bytes>> veraison_client::challenge(std::size_t size) {
  auto work = [state = impl_, size] { return state->challenge(size); };
  auto pending = asio::co_spawn(impl_->strand(), std::move(work), asio::use_awaitable);
  co_return co_await std::move(pending);
}

void veraison_client::prepare(const bytes& expected_nonce) {
  asio::post(impl_->strand(), [state = impl_, nonce = expected_nonce]() mutable {
    state->start_prepare(std::move(nonce));
  });
}

asio::awaitable<result<veraison_client::discovery>> veraison_client::discover() {
  auto work = [state = impl_] { return state->discover(); };
  auto pending = asio::co_spawn(impl_->strand(), std::move(work), asio::use_awaitable);
  co_return co_await std::move(pending);
}

asio::awaitable<result<void>> veraison_client::probe() {
  auto discovering = discover();
  auto found = co_await std::move(discovering);
  if (!found) {
    co_return found.error();
  }
  // Veraison's well-known document says READY while it serves (its api/verification package).
  if (found->service_state != "READY") {
    co_return make_error_code(verify_errc::verifier_unavailable);
  }
  co_return result<void>{};
}

}  // namespace atls::verify
