#include "atls/app/assemble.hpp"

#include <array>
#include <cstdio>
#include <utility>

#include "atls/attest/tik_key.hpp"
#include "atls/tls/error.hpp"

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

  detailed_result<tls::external_key> tik() {
    if (!loaded_) {
      loaded_ = true;
      if (!device_) {
        device_ = std::make_shared<attest::tpm>(attest::tpm_options{
            .tcti = settings_.tcti,
            .ak_handle = settings_.ak_handle,
            .tik_handle = settings_.tik_handle,
        });
      }
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
    tls::server_options options{.cert_chain = in->cert.path, .private_key = std::move(*key)};
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
      .server_names = {.allow_dns = out.server.allow_dns, .allow_uris = out.server.allow_uris}};
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

}  // namespace

std::vector<config::diagnostic> build_listeners(const config::daemon_config& config,
                                                std::vector<proxy::listener_options>& out,
                                                std::shared_ptr<attest::tpm>& tpm) {
  std::vector<config::diagnostic> errors;
  tpm_identity identity(config.tpm, tpm);
  for (std::size_t i = 0; i < config.listeners.size(); ++i) {
    const auto& listener = config.listeners[i];
    auto ctx = make_context(listener, i, identity, errors);
    if (!ctx) {
      continue;
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
    });
  }
  return errors;
}

assembled assemble(const std::filesystem::path& config_file) {
  assembled result;
  auto loaded = config::load_file(config_file);
  result.errors = std::move(loaded.errors);
  if (!loaded.config) {
    return result;
  }
  result.errors = build_listeners(*loaded.config, result.listeners, result.tpm);
  result.config = std::move(loaded.config);
  return result;
}

}  // namespace atls::app
