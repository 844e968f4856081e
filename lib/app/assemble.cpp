#include "atls/app/assemble.hpp"

#include <array>
#include <cstdio>
#include <utility>

#include <boost/asio/io_context.hpp>

#include "atls/attest/tik_key.hpp"
#include "atls/attested/early_attestation.hpp"
#include "atls/attested/post_handshake.hpp"
#include "atls/tls/error.hpp"
#include "atls/verify/local_verifier.hpp"
#include "atls/verify/veraison_client.hpp"

namespace atls::app {

namespace {

struct config_key {
  const config::source_pos* where;
  const std::string* key;
};

config_key key_of(const config::file_ref& file) {
  return {&file.where, &file.key};
}

config_key key_of(const config::private_key_ref& ref) {
  return std::visit([](const auto& r) { return config_key{&r.where, &r.key}; }, ref);
}

// Points a TLS loading failure at the config key of the file that caused it.
config::diagnostic locate(const failure& f, std::optional<config_key> cert,
                          std::optional<config_key> key, std::optional<config_key> ca,
                          const config::listener& listener, std::size_t index) {
  std::optional<config_key> culprit;
  if (f.code == tls::errc::certificate_unusable) {
    culprit = cert;
  } else if (f.code == tls::errc::private_key_unusable ||
             f.code == tls::errc::key_does_not_match_certificate) {
    culprit = key;
  } else if (f.code == tls::errc::ca_unusable) {
    culprit = ca;
  }
  if (culprit) {
    return {*culprit->where, *culprit->key, to_string(f)};
  }
  return {listener.where, "listeners[" + std::to_string(index) + "].tls", to_string(f)};
}

std::string hex_handle(std::uint32_t handle) {
  std::array<char, 16> text{};
  (void)std::snprintf(text.data(), text.size(), "0x%08x", handle);
  return text.data();
}

// The TPM and its TLS identity key, opened and loaded once however many listeners use them.
class tpm_identity {
 public:
  tpm_identity(const config::tpm_settings& settings, std::shared_ptr<attest::tpm>& device)
      : settings_(settings), device_(device) {}

  // The TPM, opened (lazily, without I/O) on first use.
  std::shared_ptr<attest::tpm> device() {
    used_ = true;
    if (!device_) {
      device_ = std::make_shared<attest::tpm>(attest::tpm_options{
          .tcti = settings_.tcti,
          .ak_handle = settings_.ak_handle,
          .tik_handle = settings_.tik_handle,
          .queue_limit = settings_.queue_limit,
      });
    }
    return device_;
  }

  // The TPM when something since the last call used it (one listener's key or attester), else
  // null.
  std::shared_ptr<const attest::tpm> take_use() {
    return std::exchange(used_, false) ? device_ : nullptr;
  }

  [[nodiscard]] std::string describe() const { return "TPM via " + settings_.tcti; }

  detailed_result<tls::external_key> tik() {
    used_ = true;
    if (!loaded_) {
      loaded_ = true;
      (void)device();
      auto key = attest::tik_private_key(device_);
      const auto where = "TPM key " + hex_handle(settings_.tik_handle) + " via " + settings_.tcti;
      if (key) {
        tik_ = tls::external_key{std::move(*key), where};
      } else {
        error_ = failure{key.error(), where};
      }
    }
    if (error_) {
      return *error_;
    }
    return *tik_;
  }

 private:
  const config::tpm_settings& settings_;
  std::shared_ptr<attest::tpm>& device_;
  bool loaded_ = false;
  bool used_ = false;
  std::optional<tls::external_key> tik_;
  std::optional<failure> error_;
};

detailed_result<tls::private_key_source> key_source(const config::private_key_ref& ref,
                                                    tpm_identity& tpm) {
  if (const auto* file = std::get_if<config::file_ref>(&ref)) {
    return tls::private_key_source{file->path};
  }
  auto tik = tpm.tik();
  if (!tik) {
    return tik.error();
  }
  return tls::private_key_source{std::move(*tik)};
}

detailed_result<tls::context> make_context(const config::listener& listener, std::size_t index,
                                           tpm_identity& tpm,
                                           std::vector<config::diagnostic>& errors) {
  if (const auto* in = std::get_if<config::inbound_tls>(&listener.tls)) {
    auto key = key_source(in->key, tpm);
    if (!key) {
      const auto k = key_of(in->key);
      errors.push_back({*k.where, *k.key, to_string(key.error())});
      return key.error();
    }
    tls::server_options options{
        .cert_chain = in->cert.path, .private_key = std::move(*key), .alpn = in->alpn};
    options.accept_tunnels = listener.multiplex;
    std::optional<config_key> ca;
    if (in->client_auth) {
      ca = key_of(in->client_auth->ca);
      options.client_ca = in->client_auth->ca.path;
      options.client_names = {.allow_dns = in->client_auth->allow_dns,
                              .allow_uris = in->client_auth->allow_uris};
    }
    auto ctx = tls::context::make_server(options);
    if (!ctx) {
      errors.push_back(locate(ctx.error(), key_of(in->cert), key_of(in->key), ca, listener, index));
    }
    return ctx;
  }
  const auto& out = std::get<config::outbound_tls>(listener.tls);
  tls::client_options options{
      .ca = out.server.ca.path,
      .server_name = out.server_name,
      .server_names = {.allow_dns = out.server.allow_dns, .allow_uris = out.server.allow_uris},
      .alpn = listener.multiplex ? std::vector<std::string>{"h2"} : out.alpn};
  std::optional<config_key> cert;
  std::optional<config_key> key;
  if (out.cert && out.key) {
    cert = key_of(*out.cert);
    key = key_of(*out.key);
    auto source = key_source(*out.key, tpm);
    if (!source) {
      errors.push_back({*key->where, *key->key, to_string(source.error())});
      return source.error();
    }
    options.cert_chain = out.cert->path;
    options.private_key = std::move(*source);
  }
  auto ctx = tls::context::make_client(options);
  if (!ctx) {
    errors.push_back(locate(ctx.error(), cert, key, key_of(out.server.ca), listener, index));
  }
  return ctx;
}

// A PEM public key named in the config, read and parsed now; problems point at its key.
std::optional<verify::verification_key> load_public_key(const config::file_ref& file,
                                                        std::vector<config::diagnostic>& errors) {
  auto pem = config::read_named_file(file, errors);
  if (!pem) {
    return std::nullopt;
  }
  auto key = verify::parse_public_key_pem(*pem);
  if (!key) {
    errors.push_back({file.where, file.key,
                      file.path.string() + ": not a usable public key: " + key.error().message()});
    return std::nullopt;
  }
  return std::move(*key);
}

std::shared_ptr<verify::verifier> make_veraison(const config::veraison_settings& settings,
                                                const boost::asio::any_io_executor& io,
                                                std::vector<config::diagnostic>& errors) {
  verify::veraison_client_options options{
      .base_urls = settings.urls,
      .trust_discovered_key = settings.trust_discovered_key,
      .request_timeout = settings.request_timeout,
  };
  if (settings.ca) {
    options.ca_file = settings.ca->path.string();
  }
  if (settings.ear_key) {
    auto key = load_public_key(*settings.ear_key, errors);
    if (!key) {
      return nullptr;
    }
    options.ear_key = std::move(*key);
  }
  if (settings.token) {
    auto token = config::read_named_file(*settings.token, errors);
    if (!token) {
      return nullptr;
    }
    while (!token->empty() && (token->back() == '\n' || token->back() == '\r')) {
      token->pop_back();
    }
    options.bearer_token = std::move(*token);
  }
  auto client = verify::veraison_client::create(io, std::move(options));
  if (!client) {
    errors.push_back({settings.where, "veraison", client.error().message()});
    return nullptr;
  }
  return std::move(*client);
}

// The runtime settings of a listener's `attestation` block, and its TLS context prepared for
// the mode. Null (with errors recorded) when something it names cannot be used.
std::shared_ptr<const attested::settings> make_attestation(
    const config::attestation& config, const std::string& key_prefix, tls::context& ctx,
    tpm_identity& tpm, const boost::asio::any_io_executor& io,
    std::vector<config::diagnostic>& errors) {
  const auto errors_before = errors.size();
  auto out = std::make_shared<attested::settings>();
  out->mode = config.mode == config::attestation_mode::intra_handshake
                  ? attested::mode::intra_handshake
                  : attested::mode::post_handshake;
  const auto model = config.model == config::attestation_model::passport
                         ? attested::model::passport
                         : attested::model::background_check;
  out->binder.label = config.binder_label;
  out->binder.key_encoding = config.binder_key == config::binder_key_encoding::raw_public_key
                                 ? tls::binder_key_encoding::raw_public_key
                                 : tls::binder_key_encoding::spki_der;
  out->reattest_every = config.reattest_every;
  out->reattest_on_reload = config.reattest_on_reload;
  if (config.self) {
    auto attester = attest::tpm_attester::open(tpm.device(), config.self->pcrs);
    if (!attester) {
      errors.push_back({config.self->where, key_prefix + ".self",
                        tpm.describe() + ": " + attester.error().message()});
    } else {
      out->self = attested::attesting_party{.attester = std::move(*attester), .model = model};
      if (model == attested::model::passport && config.self->veraison) {
        if (auto verifier = make_veraison(*config.self->veraison, io, errors)) {
          out->self->passport =
              attested::passport::start(io, out->self->attester, std::move(verifier),
                                        {.refresh_every = config.self->refresh_every});
        }
      }
    }
  }
  if (config.peer) {
    const auto& peer = *config.peer;
    attested::relying_party rp{.required = peer.required,
                               .model = model,
                               .accept = peer.accept,
                               .pinned_keys = peer.pinned_keys,
                               .verifier_grace = peer.verifier_grace};
    if (model == attested::model::passport) {
      for (const auto& file : peer.passport_keys) {
        if (auto key = load_public_key(file, errors)) {
          rp.passport_keys.push_back(std::move(*key));
        }
      }
    } else if (peer.verifier == config::verifier_kind::local && peer.local) {
      rp.verifier = std::make_shared<verify::local_verifier>(*peer.local);
    } else if (peer.verifier == config::verifier_kind::veraison && peer.veraison) {
      rp.verifier = make_veraison(*peer.veraison, io, errors);
    }
    out->peer = std::move(rp);
  }
  if (out->mode == attested::mode::post_handshake) {
    if (auto installed = attested::install_post_handshake(ctx.native_handle(), out->code_points);
        !installed) {
      errors.push_back({config.where, key_prefix, installed.error().message()});
    }
  } else if (auto installed =
                 attested::install_early_attestation(ctx.native_handle(), out->code_points);
             !installed) {
    errors.push_back({config.where, key_prefix, installed.error().message()});
  }
  if (errors.size() != errors_before) {
    return nullptr;
  }
  return out;
}

}  // namespace

std::vector<config::diagnostic> build_listeners(const config::daemon_config& config,
                                                std::vector<proxy::listener_options>& out,
                                                std::shared_ptr<attest::tpm>& tpm,
                                                const boost::asio::any_io_executor& io) {
  std::vector<config::diagnostic> errors;
  tpm_identity identity(config.tpm, tpm);
  for (std::size_t i = 0; i < config.listeners.size(); ++i) {
    const auto& listener = config.listeners[i];
    (void)identity.take_use();
    auto ctx = make_context(listener, i, identity, errors);
    if (!ctx) {
      continue;
    }
    std::shared_ptr<const attested::settings> attestation;
    if (listener.attestation) {
      attestation = make_attestation(*listener.attestation,
                                     "listeners[" + std::to_string(i) + "].attestation", *ctx,
                                     identity, io, errors);
      if (!attestation) {
        continue;
      }
    }
    out.push_back(proxy::listener_options{
        .name = listener.name,
        .mode = listener.mode == config::listener_mode::inbound ? proxy::mode::inbound
                                                                : proxy::mode::outbound,
        .listen = listener.listen,
        .upstream = listener.upstream,
        .tls = std::move(*ctx),
        .timeouts = {.connect = listener.timeouts.connect,
                     .handshake = listener.timeouts.handshake,
                     .idle = listener.timeouts.idle},
        .max_connections = listener.max_connections,
        .buffer_size = listener.buffer_size,
        .attestation = std::move(attestation),
        .proxy_protocol = listener.proxy_protocol == config::proxy_protocol_version::v2
                              ? proxy::proxy_protocol_version::v2
                              : proxy::proxy_protocol_version::none,
        .audit = config.audit == config::audit_format::json ? attested::audit_format::json
                                                            : attested::audit_format::text,
        .handshake_tpm = identity.take_use(),
        .multiplex = listener.multiplex,
    });
  }
  return errors;
}

namespace {

// The listeners of a config that loaded, with their keys from `tpm` (opened on first use when
// null).
assembled build(config::load_result loaded, std::shared_ptr<attest::tpm> tpm,
                const boost::asio::any_io_executor& io) {
  assembled result;
  result.tpm = std::move(tpm);
  result.errors = build_listeners(*loaded.config, result.listeners, result.tpm, io);
  result.config = std::move(loaded.config);
  return result;
}

}  // namespace

assembled assemble(const std::filesystem::path& config_file,
                   const boost::asio::any_io_executor& io) {
  auto loaded = config::load_file(config_file);
  if (!loaded.config) {
    return {.errors = std::move(loaded.errors)};
  }
  return build(std::move(loaded), nullptr, io);
}

assembled reassemble(const std::filesystem::path& config_file, const config::daemon_config& running,
                     std::shared_ptr<attest::tpm> running_tpm,
                     const boost::asio::any_io_executor& io) {
  assembled result;
  auto loaded = config::load_file(config_file);
  result.errors = std::move(loaded.errors);
  if (!loaded.config) {
    return result;
  }
  const auto& next = *loaded.config;
  const auto needs_restart = [&](std::string key, const std::string& what) {
    // Filled in member by member: GCC 12 at -O3 warns (wrongly) that the designated-initializer
    // temporary's file may be used uninitialized.
    config::diagnostic restart;
    restart.where.file = config_file.string();
    restart.key = std::move(key);
    restart.message = what + " changed: that takes a restart, not a reload";
    result.errors.push_back(std::move(restart));
  };
  if (next.threads != running.threads) {
    needs_restart("threads", "the number of connection threads");
  }
  const auto& a = next.tpm;
  const auto& b = running.tpm;
  if (a.tcti != b.tcti || a.ak_handle != b.ak_handle || a.tik_handle != b.tik_handle ||
      a.queue_limit != b.queue_limit) {
    needs_restart("tpm", "the TPM");
  }
  const bool admin_same = next.admin.has_value() == running.admin.has_value() &&
                          (!next.admin || (next.admin->listen == running.admin->listen &&
                                           next.admin->probe_every == running.admin->probe_every));
  if (!admin_same) {
    needs_restart("admin", "the admin listener");
  }
  if (!result.errors.empty()) {
    return result;
  }
  return build(std::move(loaded), std::move(running_tpm), io);
}

}  // namespace atls::app
