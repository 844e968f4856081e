#include "ecdsa_recover.hpp"

#include <array>
#include <memory>
#include <string_view>

#include <openssl/bn.h>
#include <openssl/core_names.h>
#include <openssl/ec.h>
#include <openssl/err.h>
#include <openssl/evp.h>
#include <openssl/obj_mac.h>
#include <openssl/params.h>
#include <openssl/x509.h>

#include "atls/common/openssl_error_scope.hpp"
#include "atls/common/openssl_ptr.hpp"

namespace atls::verify::detail {

namespace {

error_code out_of_memory() {
  return make_error_code(boost::system::errc::not_enough_memory);
}

constexpr std::size_t p256_size = 32;
constexpr std::size_t uncompressed_size = 1 + 2 * p256_size;

// A DER SPKI of the named-curve P-256 key with this uncompressed point (SEC 1 §2.3.3).
result<bytes> spki_of_point(const std::array<std::uint8_t, uncompressed_size>& point) {
  std::array<char, sizeof SN_X9_62_prime256v1> group_name{SN_X9_62_prime256v1};
  std::array<std::uint8_t, uncompressed_size> octets = point;
  std::array<OSSL_PARAM, 3> params{
      OSSL_PARAM_construct_utf8_string(OSSL_PKEY_PARAM_GROUP_NAME, group_name.data(), 0),
      OSSL_PARAM_construct_octet_string(OSSL_PKEY_PARAM_PUB_KEY, octets.data(), octets.size()),
      OSSL_PARAM_construct_end()};
  const pkey_ctx_ptr ctx(EVP_PKEY_CTX_new_from_name(nullptr, "EC", nullptr));
  if (!ctx || EVP_PKEY_fromdata_init(ctx.get()) != 1) {
    return out_of_memory();
  }
  EVP_PKEY* raw = nullptr;
  // The point came out of EC_POINT_mul on the curve, so the import can only fail to allocate.
  if (EVP_PKEY_fromdata(ctx.get(), &raw, EVP_PKEY_PUBLIC_KEY, params.data()) != 1) {
    return out_of_memory();
  }
  const pkey_ptr key(raw);
  const int size = i2d_PUBKEY(key.get(), nullptr);
  if (size <= 0) {
    return out_of_memory();
  }
  bytes der(static_cast<std::size_t>(size));
  unsigned char* cursor = der.data();
  if (i2d_PUBKEY(key.get(), &cursor) != size) {
    return out_of_memory();
  }
  return der;
}

pkey_ptr parse_spki(std::span<const std::uint8_t> der) {
  const unsigned char* cursor = der.data();
  pkey_ptr key(d2i_PUBKEY(nullptr, &cursor, static_cast<long>(der.size())));
  if (!key || cursor != der.data() + der.size()) {
    return nullptr;
  }
  return key;
}

}  // namespace

result<std::vector<bytes>> recover_p256_public_keys(std::span<const std::uint8_t> digest,
                                                    std::span<const std::uint8_t> r,
                                                    std::span<const std::uint8_t> s) {
  const openssl_error_scope errors;
  std::vector<bytes> out;
  // A TPM2B_ECC_PARAMETER holds at most 66 bytes; anything longer cannot be below n anyway, and
  // the bound keeps a huge input from reaching BN_bin2bn.
  constexpr std::size_t max_component = 66;
  if (r.size() > max_component || s.size() > max_component || digest.empty()) {
    return out;
  }
  const ec_group_ptr group(EC_GROUP_new_by_curve_name(NID_X9_62_prime256v1));
  const bn_ctx_ptr ctx(BN_CTX_new());
  const bn_ptr p(BN_new());
  const bn_ptr r_bn(BN_bin2bn(r.data(), static_cast<int>(r.size()), nullptr));
  const bn_ptr s_bn(BN_bin2bn(s.data(), static_cast<int>(s.size()), nullptr));
  // SEC 1 §4.1.3 step 5: e is the leftmost bit length of n (256) bits of the hash.
  const auto e_octets = digest.first(std::min(digest.size(), p256_size));
  const bn_ptr e(BN_bin2bn(e_octets.data(), static_cast<int>(e_octets.size()), nullptr));
  const bn_ptr u1(BN_new());
  const bn_ptr u2(BN_new());
  const bn_ptr x(BN_new());
  if (!group || !ctx || !p || !r_bn || !s_bn || !e || !u1 || !u2 || !x ||
      EC_GROUP_get_curve(group.get(), p.get(), nullptr, nullptr, ctx.get()) != 1) {
    return out_of_memory();
  }
  const BIGNUM* n = EC_GROUP_get0_order(group.get());

  // §4.1.6 step 1: r and s must be in [1, n-1], as for verification (§4.1.4 step 1).
  if (BN_is_zero(r_bn.get()) == 1 || BN_is_zero(s_bn.get()) == 1 || BN_cmp(r_bn.get(), n) >= 0 ||
      BN_cmp(s_bn.get(), n) >= 0) {
    return out;
  }
  // Q = r^-1 (sR - eG) = u1 G + u2 R with u1 = -e r^-1 and u2 = s r^-1 (mod n), so that one
  // EC_POINT_mul computes it.
  const bn_ptr r_inverse(BN_mod_inverse(nullptr, r_bn.get(), n, ctx.get()));
  if (!r_inverse || BN_mod_mul(u1.get(), e.get(), r_inverse.get(), n, ctx.get()) != 1 ||
      (BN_is_zero(u1.get()) == 0 && BN_sub(u1.get(), n, u1.get()) != 1) ||
      BN_mod_mul(u2.get(), s_bn.get(), r_inverse.get(), n, ctx.get()) != 1) {
    return out_of_memory();
  }

  // Step 1.1: x = r + j n for j = 0, 1 while x < p (for P-256, n < p < 2n, so j = 1 only for
  // the few r below p - n).
  for (int j = 0; j < 2; ++j) {
    if (BN_copy(x.get(), r_bn.get()) == nullptr || (j == 1 && BN_add(x.get(), x.get(), n) != 1)) {
      return out_of_memory();
    }
    if (BN_cmp(x.get(), p.get()) >= 0) {
      break;
    }
    for (int y_bit = 0; y_bit < 2; ++y_bit) {
      const ec_point_ptr big_r(EC_POINT_new(group.get()));
      const ec_point_ptr q(EC_POINT_new(group.get()));
      if (!big_r || !q) {
        return out_of_memory();
      }
      // Steps 1.2-1.3: R from its compressed encoding. An x with no point on the curve fails
      // here (about half of all x); P-256 has cofactor 1, so every point R is in the group of
      // order n and step 1.4's nR = O holds.
      if (EC_POINT_set_compressed_coordinates(group.get(), big_r.get(), x.get(), y_bit,
                                              ctx.get()) != 1) {
        break;
      }
      // Steps 1.5-1.6.1.
      if (EC_POINT_mul(group.get(), q.get(), u1.get(), big_r.get(), u2.get(), ctx.get()) != 1) {
        return out_of_memory();
      }
      if (EC_POINT_is_at_infinity(group.get(), q.get()) == 1) {
        continue;
      }
      std::array<std::uint8_t, uncompressed_size> point{};
      if (EC_POINT_point2oct(group.get(), q.get(), POINT_CONVERSION_UNCOMPRESSED, point.data(),
                             point.size(), ctx.get()) != point.size()) {
        return out_of_memory();
      }
      auto spki = spki_of_point(point);
      if (!spki) {
        return spki.error();
      }
      out.push_back(std::move(*spki));
    }
  }
  return out;
}

bool same_public_key(std::span<const std::uint8_t> a, std::span<const std::uint8_t> b) {
  const openssl_error_scope errors;
  const auto key_a = parse_spki(a);
  const auto key_b = parse_spki(b);
  return key_a && key_b && EVP_PKEY_eq(key_a.get(), key_b.get()) == 1;
}

bool is_p256_spki(std::span<const std::uint8_t> der) {
  const openssl_error_scope errors;
  const auto key = parse_spki(der);
  if (!key || EVP_PKEY_is_a(key.get(), "EC") != 1) {
    return false;
  }
  std::array<char, 64> group{};
  std::size_t group_size = 0;
  return EVP_PKEY_get_utf8_string_param(key.get(), OSSL_PKEY_PARAM_GROUP_NAME, group.data(),
                                        group.size(), &group_size) == 1 &&
         std::string_view(group.data(), group_size) == SN_X9_62_prime256v1;
}

}  // namespace atls::verify::detail
