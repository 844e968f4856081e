#include "atls/app/assemble.hpp"

#include <utility>

#include "atls/tls/error.hpp"

namespace atls::app {

namespace {

config::diagnostic at(const config::file_ref& file, const failure& f) {
  return {file.where, file.key, to_string(f)};
}

// Points a TLS loading failure at the config key of the file that caused it.
config::diagnostic locate(const failure& f, const config::file_ref* cert,
                          const config::file_ref* key, const config::file_ref* ca,
                          const config::listener& listener, std::size_t index) {
  const config::file_ref* file = nullptr;
  if (f.code == tls::errc::certificate_unusable) {
    file = cert;
  } else if (f.code == tls::errc::private_key_unusable ||
             f.code == tls::errc::key_does_not_match_certificate) {
    file = key;
  } else if (f.code == tls::errc::ca_unusable) {
    file = ca;
  }
  if (file != nullptr) {
    return at(*file, f);
  }
  return {listener.where, "listeners[" + std::to_string(index) + "].tls", to_string(f)};
}

detailed_result<tls::context> make_context(const config::listener& listener, std::size_t index,
                                           std::vector<config::diagnostic>& errors) {
  if (const auto* in = std::get_if<config::inbound_tls>(&listener.tls)) {
    tls::server_options options{.cert_chain = in->cert.path, .private_key = in->key.path};
    const config::file_ref* ca = nullptr;
    if (in->client_auth) {
      ca = &in->client_auth->ca;
      options.client_ca = ca->path;
      options.client_names = {.allow_dns = in->client_auth->allow_dns,
                              .allow_uris = in->client_auth->allow_uris};
    }
    auto ctx = tls::context::make_server(options);
    if (!ctx) {
      errors.push_back(locate(ctx.error(), &in->cert, &in->key, ca, listener, index));
    }
    return ctx;
  }
  const auto& out = std::get<config::outbound_tls>(listener.tls);
  tls::client_options options{
      .ca = out.server.ca.path,
      .server_name = out.server_name,
      .server_names = {.allow_dns = out.server.allow_dns, .allow_uris = out.server.allow_uris}};
  if (out.cert && out.key) {
    options.cert_chain = out.cert->path;
    options.private_key = out.key->path;
  }
  auto ctx = tls::context::make_client(options);
  if (!ctx) {
    errors.push_back(locate(ctx.error(), out.cert ? &*out.cert : nullptr,
                            out.key ? &*out.key : nullptr, &out.server.ca, listener, index));
  }
  return ctx;
}

}  // namespace

std::vector<config::diagnostic> build_listeners(const config::daemon_config& config,
                                                std::vector<proxy::listener_options>& out) {
  std::vector<config::diagnostic> errors;
  for (std::size_t i = 0; i < config.listeners.size(); ++i) {
    const auto& listener = config.listeners[i];
    auto ctx = make_context(listener, i, errors);
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
  result.errors = build_listeners(*loaded.config, result.listeners);
  result.config = std::move(loaded.config);
  return result;
}

}  // namespace atls::app
