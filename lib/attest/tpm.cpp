#include "atls/attest/tpm.hpp"

#include <chrono>
#include <condition_variable>
#include <cstring>
#include <deque>
#include <future>
#include <mutex>
#include <optional>
#include <thread>

#include <openssl/ec.h>
#include <openssl/evp.h>
#include <openssl/sha.h>
#include <tss2/tss2_esys.h>
#include <tss2/tss2_mu.h>
#include <tss2/tss2_rc.h>
#include <tss2/tss2_tctildr.h>

#include "atls/metrics/atlsd_metrics.hpp"

namespace atls::attest {

namespace {

class tpm_category_impl final : public boost::system::error_category {
 public:
  const char* name() const noexcept override { return "atls.attest.tpm"; }
  std::string message(int value) const override {
    switch (static_cast<tpm_errc>(value)) {
      case tpm_errc::connect_failed:
        return "cannot connect to the TPM";
      case tpm_errc::handle_occupied:
        return "persistent handle holds an object that is not the expected key";
      case tpm_errc::not_provisioned:
        return "TPM keys not provisioned (run: atlsctl tpm provision)";
      case tpm_errc::bad_argument:
        return "argument the TPM cannot take";
      case tpm_errc::stopped:
        return "TPM worker stopped";
    }
    return "unknown atls.attest.tpm error";
  }
};

class tss2_category_impl final : public boost::system::error_category {
 public:
  const char* name() const noexcept override { return "atls.tss2"; }
  std::string message(int value) const override {
    return Tss2_RC_Decode(static_cast<TSS2_RC>(value));
  }
};

error_code tss2_error(TSS2_RC rc) {
  return {static_cast<int>(rc), tss2_category()};
}

// A TCTI-layer failure (socket closed, device gone) leaves the ESAPI context unusable.
bool connection_lost(TSS2_RC rc) {
  return (rc & TSS2_RC_LAYER_MASK) == TSS2_TCTI_RC_LAYER || rc == TSS2_ESYS_RC_IO_ERROR ||
         rc == TSS2_ESYS_RC_BAD_SEQUENCE || rc == TSS2_ESYS_RC_TRY_AGAIN;
}

template <class T>
struct esys_deleter {
  void operator()(T* p) const { Esys_Free(p); }
};
template <class T>
using esys_ptr = std::unique_ptr<T, esys_deleter<T>>;

// TPM 2.0 Part 2 §12.2.3.2 TPMA_OBJECT bits shared by both keys: the private part never leaves
// this TPM and was generated inside it.
constexpr TPMA_OBJECT key_attributes = TPMA_OBJECT_FIXEDTPM | TPMA_OBJECT_FIXEDPARENT |
                                       TPMA_OBJECT_SENSITIVEDATAORIGIN | TPMA_OBJECT_USERWITHAUTH |
                                       TPMA_OBJECT_SIGN_ENCRYPT;

TPM2B_PUBLIC ecc_template(TPMA_OBJECT attributes) {
  TPM2B_PUBLIC t{};
  t.publicArea.type = TPM2_ALG_ECC;
  t.publicArea.nameAlg = TPM2_ALG_SHA256;
  t.publicArea.objectAttributes = attributes;
  auto& ecc = t.publicArea.parameters.eccDetail;
  ecc.symmetric.algorithm = TPM2_ALG_NULL;
  ecc.scheme.scheme = TPM2_ALG_ECDSA;
  ecc.scheme.details.ecdsa.hashAlg = TPM2_ALG_SHA256;
  ecc.curveID = TPM2_ECC_NIST_P256;
  ecc.kdf.scheme = TPM2_ALG_NULL;
  return t;
}

TPM2B_PUBLIC ak_template() {
  return ecc_template(key_attributes | TPMA_OBJECT_RESTRICTED);
}
TPM2B_PUBLIC tik_template() {
  return ecc_template(key_attributes);
}

// The parent of the TIK: the usual ECC storage primary (restricted decrypt, AES-128-CFB).
TPM2B_PUBLIC storage_template() {
  TPM2B_PUBLIC t{};
  t.publicArea.type = TPM2_ALG_ECC;
  t.publicArea.nameAlg = TPM2_ALG_SHA256;
  t.publicArea.objectAttributes = TPMA_OBJECT_FIXEDTPM | TPMA_OBJECT_FIXEDPARENT |
                                  TPMA_OBJECT_SENSITIVEDATAORIGIN | TPMA_OBJECT_USERWITHAUTH |
                                  TPMA_OBJECT_RESTRICTED | TPMA_OBJECT_DECRYPT | TPMA_OBJECT_NODA;
  auto& ecc = t.publicArea.parameters.eccDetail;
  ecc.symmetric.algorithm = TPM2_ALG_AES;
  ecc.symmetric.keyBits.aes = 128;
  ecc.symmetric.mode.aes = TPM2_ALG_CFB;
  ecc.scheme.scheme = TPM2_ALG_NULL;
  ecc.curveID = TPM2_ECC_NIST_P256;
  ecc.kdf.scheme = TPM2_ALG_NULL;
  return t;
}

// result<bool> would be ambiguous: an error_code converts to bool.
enum class key_state { reused, created };

// Whether an existing object is the key we would have created (type, curve, scheme, and the
// attributes that matter for its role).
bool matches(const TPMT_PUBLIC& have, const TPMT_PUBLIC& want) {
  const TPMA_OBJECT mask = key_attributes | TPMA_OBJECT_RESTRICTED | TPMA_OBJECT_DECRYPT;
  return have.type == want.type && have.nameAlg == want.nameAlg &&
         (have.objectAttributes & mask) == (want.objectAttributes & mask) &&
         have.parameters.eccDetail.curveID == want.parameters.eccDetail.curveID &&
         have.parameters.eccDetail.scheme.scheme == want.parameters.eccDetail.scheme.scheme;
}

// The TPM wire form of a TSS structure, through its Tss2_MU_*_Marshal function. The in-memory
// struct is always at least as large as its marshalled form.
template <class T>
bytes marshal(const T& value,
              TSS2_RC (*marshal_fn)(const T*, std::uint8_t*, std::size_t, std::size_t*)) {
  bytes out(sizeof(T));
  std::size_t offset = 0;
  if (marshal_fn(&value, out.data(), out.size(), &offset) != TSS2_RC_SUCCESS) {
    return {};
  }
  out.resize(offset);
  return out;
}

bytes marshal_public(const TPMT_PUBLIC& pub) {
  return marshal(pub, Tss2_MU_TPMT_PUBLIC_Marshal);
}

bytes marshal_signature(const TPMT_SIGNATURE& sig) {
  return marshal(sig, Tss2_MU_TPMT_SIGNATURE_Marshal);
}

// DER ECDSA-Sig-Value (SEQUENCE { r INTEGER, s INTEGER }) from the TPM's raw r and s.
result<bytes> der_signature(const TPMS_SIGNATURE_ECC& ecc) {
  ECDSA_SIG* sig = ECDSA_SIG_new();
  BIGNUM* r = BN_bin2bn(ecc.signatureR.buffer, ecc.signatureR.size, nullptr);
  BIGNUM* s = BN_bin2bn(ecc.signatureS.buffer, ecc.signatureS.size, nullptr);
  if (sig == nullptr || r == nullptr || s == nullptr || ECDSA_SIG_set0(sig, r, s) != 1) {
    ECDSA_SIG_free(sig);
    BN_free(r);
    BN_free(s);
    return tpm_errc::bad_argument;
  }
  unsigned char* der = nullptr;
  const int len = i2d_ECDSA_SIG(sig, &der);
  ECDSA_SIG_free(sig);
  if (len <= 0) {
    return tpm_errc::bad_argument;
  }
  bytes out(der, der + len);
  OPENSSL_free(der);
  return out;
}

result<TPML_PCR_SELECTION> to_tpm_selection(const pcr_selection& pcrs) {
  TPML_PCR_SELECTION out{};
  if (pcrs.hash_alg != TPM2_ALG_SHA256 || pcrs.pcrs.empty()) {
    return tpm_errc::bad_argument;
  }
  out.count = 1;
  auto& sel = out.pcrSelections[0];
  sel.hash = TPM2_ALG_SHA256;
  sel.sizeofSelect = 3;  // PCRs 0..23, the PC client platform's set
  for (const auto index : pcrs.pcrs) {
    if (index >= 24) {
      return tpm_errc::bad_argument;
    }
    sel.pcrSelect[index / 8] |= static_cast<std::uint8_t>(1u << (index % 8));
  }
  return out;
}

result<TPM2B_DATA> to_qualifying_data(std::span<const std::uint8_t> nonce) {
  TPM2B_DATA data{};
  if (nonce.size() > sizeof data.buffer) {
    return tpm_errc::bad_argument;
  }
  data.size = static_cast<UINT16>(nonce.size());
  std::memcpy(data.buffer, nonce.data(), nonce.size());
  return data;
}

}  // namespace

const boost::system::error_category& tpm_category() noexcept {
  static const tpm_category_impl instance;
  return instance;
}

const boost::system::error_category& tss2_category() noexcept {
  static const tss2_category_impl instance;
  return instance;
}

// The ESAPI connection. Lives on the worker thread only.
struct tpm::session {
  explicit session(tpm_options opts) : options(std::move(opts)) {}
  ~session() { disconnect(); }
  session(const session&) = delete;
  session& operator=(const session&) = delete;
  session(session&&) = delete;
  session& operator=(session&&) = delete;

  tpm_options options;
  TSS2_TCTI_CONTEXT* tcti = nullptr;
  ESYS_CONTEXT* esys = nullptr;
  // The persisted AK and TIK, looked up once per connection: a lookup costs four TPM commands,
  // more than the signature it serves. Forgotten after any failed command, so that a key evicted
  // or replaced behind our back is looked up afresh.
  std::optional<ESYS_TR> ak_tr;
  std::optional<ESYS_TR> tik_tr;
  // Their public parts, read with them: every piece of evidence carries both.
  std::optional<tpm_keys> public_keys;

  void forget_keys() {
    public_keys.reset();
    for (auto* tr : {&ak_tr, &tik_tr}) {
      if (tr->has_value() && esys != nullptr) {
        Esys_TR_Close(esys, &tr->value());
      }
      tr->reset();
    }
  }

  void disconnect() {
    forget_keys();
    if (esys != nullptr) {
      Esys_Finalize(&esys);
    }
    if (tcti != nullptr) {
      Tss2_TctiLdr_Finalize(&tcti);
    }
  }

  result<void> connect() {
    if (esys != nullptr) {
      return {};
    }
    if (const TSS2_RC rc = Tss2_TctiLdr_Initialize(options.tcti.c_str(), &tcti);
        rc != TSS2_RC_SUCCESS) {
      tcti = nullptr;
      return tss2_error(rc);
    }
    if (const TSS2_RC rc = Esys_Initialize(&esys, tcti, nullptr); rc != TSS2_RC_SUCCESS) {
      esys = nullptr;
      disconnect();
      return tss2_error(rc);
    }
    return {};
  }

  // Every ESAPI return code passes here: a lost connection is dropped, so that the next
  // command reconnects instead of reusing a broken context.
  error_code check(TSS2_RC rc) {
    if (rc == TSS2_RC_SUCCESS) {
      return {};
    }
    if (connection_lost(rc)) {
      disconnect();
    } else {
      forget_keys();
    }
    return tss2_error(rc);
  }

  // An ESYS_TR for a persistent handle, or nothing when the handle is empty. The handle list
  // is read first: asking ESAPI for a free handle works too, but logs an error on stderr.
  result<std::optional<ESYS_TR>> persistent(std::uint32_t handle) {
    TPMS_CAPABILITY_DATA* raw_data = nullptr;
    const TSS2_RC listed = Esys_GetCapability(esys, ESYS_TR_NONE, ESYS_TR_NONE, ESYS_TR_NONE,
                                              TPM2_CAP_HANDLES, handle, 1, nullptr, &raw_data);
    const esys_ptr<TPMS_CAPABILITY_DATA> data(raw_data);
    if (auto ec = check(listed)) {
      return ec;
    }
    const auto& handles = data->data.handles;
    if (handles.count == 0 || handles.handle[0] != handle) {
      return std::optional<ESYS_TR>();
    }
    ESYS_TR tr = ESYS_TR_NONE;
    if (auto ec = check(
            Esys_TR_FromTPMPublic(esys, handle, ESYS_TR_NONE, ESYS_TR_NONE, ESYS_TR_NONE, &tr))) {
      return ec;
    }
    return std::optional<ESYS_TR>(tr);
  }

  result<key_info> describe(ESYS_TR tr, std::uint32_t handle, const TPMT_PUBLIC& expected) {
    TPM2B_PUBLIC* raw_public = nullptr;
    TPM2B_NAME* raw_name = nullptr;
    TPM2B_NAME* raw_qualified = nullptr;
    const TSS2_RC rc = Esys_ReadPublic(esys, tr, ESYS_TR_NONE, ESYS_TR_NONE, ESYS_TR_NONE,
                                       &raw_public, &raw_name, &raw_qualified);
    const esys_ptr<TPM2B_PUBLIC> pub(raw_public);
    const esys_ptr<TPM2B_NAME> name(raw_name);
    const esys_ptr<TPM2B_NAME> qualified(raw_qualified);
    if (auto ec = check(rc)) {
      return ec;
    }
    if (!matches(pub->publicArea, expected)) {
      return tpm_errc::handle_occupied;
    }
    key_info info;
    info.handle = handle;
    info.public_area = marshal_public(pub->publicArea);
    info.name.assign(name->name, name->name + name->size);
    auto spki = spki_der(info.public_area);
    if (!spki) {
      return spki.error();
    }
    info.spki_der = std::move(*spki);
    return info;
  }

  // Makes `handle` hold `transient` persistently, then flushes the transient copy.
  result<void> persist(ESYS_TR transient, std::uint32_t handle) {
    ESYS_TR persisted = ESYS_TR_NONE;
    const TSS2_RC rc = Esys_EvictControl(esys, ESYS_TR_RH_OWNER, transient, ESYS_TR_PASSWORD,
                                         ESYS_TR_NONE, ESYS_TR_NONE, handle, &persisted);
    Esys_FlushContext(esys, transient);
    if (auto ec = check(rc)) {
      return ec;
    }
    Esys_TR_Close(esys, &persisted);
    return {};
  }

  // A freshly created key, not yet persisted. A struct, because result<ESYS_TR> would take an
  // error_code for an integer.
  struct transient_key {
    ESYS_TR tr = ESYS_TR_NONE;
  };

  // Reuses what `handle` holds, or persists the key that create() makes.
  template <class Create>
  result<key_state> ensure(std::uint32_t handle, Create create) {
    auto existing = persistent(handle);
    if (!existing) {
      return existing.error();
    }
    if (*existing) {
      // Safe to close: provision() forgot the cached ESYS_TRs, so nothing else holds this one.
      auto tr = **existing;
      Esys_TR_Close(esys, &tr);
      return key_state::reused;
    }
    auto key = create();
    if (!key) {
      return key.error();
    }
    if (auto r = persist(key->tr, handle); !r) {
      return r.error();
    }
    return key_state::created;
  }

  result<transient_key> create_ak() {
    const TPM2B_SENSITIVE_CREATE sensitive{};
    const TPM2B_PUBLIC in_public = ak_template();
    const TPM2B_DATA outside{};
    const TPML_PCR_SELECTION creation_pcrs{};
    transient_key ak;
    if (auto ec = check(Esys_CreatePrimary(
            esys, ESYS_TR_RH_ENDORSEMENT, ESYS_TR_PASSWORD, ESYS_TR_NONE, ESYS_TR_NONE, &sensitive,
            &in_public, &outside, &creation_pcrs, &ak.tr, nullptr, nullptr, nullptr, nullptr))) {
      return ec;
    }
    return ak;
  }

  result<transient_key> create_tik() {
    const TPM2B_SENSITIVE_CREATE sensitive{};
    const TPM2B_DATA outside{};
    const TPML_PCR_SELECTION creation_pcrs{};
    const TPM2B_PUBLIC parent_public = storage_template();
    ESYS_TR parent = ESYS_TR_NONE;
    if (auto ec = check(Esys_CreatePrimary(esys, ESYS_TR_RH_OWNER, ESYS_TR_PASSWORD, ESYS_TR_NONE,
                                           ESYS_TR_NONE, &sensitive, &parent_public, &outside,
                                           &creation_pcrs, &parent, nullptr, nullptr, nullptr,
                                           nullptr))) {
      return ec;
    }
    const TPM2B_PUBLIC in_public = tik_template();
    TPM2B_PRIVATE* raw_private = nullptr;
    TPM2B_PUBLIC* raw_public = nullptr;
    const TSS2_RC created = Esys_Create(esys, parent, ESYS_TR_PASSWORD, ESYS_TR_NONE, ESYS_TR_NONE,
                                        &sensitive, &in_public, &outside, &creation_pcrs,
                                        &raw_private, &raw_public, nullptr, nullptr, nullptr);
    const esys_ptr<TPM2B_PRIVATE> priv(raw_private);
    const esys_ptr<TPM2B_PUBLIC> pub(raw_public);
    transient_key tik;
    const TSS2_RC loaded = created != TSS2_RC_SUCCESS
                               ? created
                               : Esys_Load(esys, parent, ESYS_TR_PASSWORD, ESYS_TR_NONE,
                                           ESYS_TR_NONE, priv.get(), pub.get(), &tik.tr);
    // The parent is only needed to load the TIK; swtpm has three transient slots.
    Esys_FlushContext(esys, parent);
    if (auto ec = check(loaded)) {
      return ec;
    }
    return tik;
  }

  // The public parts come through with_keys, never through a lookup of their own: ESAPI hands
  // back the ESYS_TR it already holds for a persistent handle, so closing a second lookup would
  // close the cached one under certify() and quote().
  result<tpm_keys> read_keys() {
    if (auto r = connect(); !r) {
      return r.error();
    }
    if (public_keys) {
      return *public_keys;
    }
    auto keys = with_keys([this](ESYS_TR ak, ESYS_TR tik) -> result<tpm_keys> {
      auto ak_info = describe(ak, options.ak_handle, ak_template().publicArea);
      if (!ak_info) {
        return ak_info.error();
      }
      auto tik_info = describe(tik, options.tik_handle, tik_template().publicArea);
      if (!tik_info) {
        return tik_info.error();
      }
      return tpm_keys{.ak = std::move(*ak_info), .tik = std::move(*tik_info)};
    });
    if (keys) {
      public_keys = *keys;
    }
    return keys;
  }

  result<provision_report> provision() {
    if (auto r = connect(); !r) {
      return r.error();
    }
    forget_keys();  // the keys may be about to exist for the first time
    provision_report report;
    auto ak = ensure(options.ak_handle, [this] { return create_ak(); });
    if (!ak) {
      return ak.error();
    }
    auto tik = ensure(options.tik_handle, [this] { return create_tik(); });
    if (!tik) {
      return tik.error();
    }
    auto keys = read_keys();
    if (!keys) {
      return keys.error();
    }
    report.ak_created = *ak == key_state::created;
    report.tik_created = *tik == key_state::created;
    report.keys = std::move(*keys);
    return report;
  }

  // What Esys_Certify and Esys_Quote hand back, owned and checked.
  result<signed_attest> take_signed_attest(TSS2_RC rc, TPM2B_ATTEST* raw_attest,
                                           TPMT_SIGNATURE* raw_signature) {
    const esys_ptr<TPM2B_ATTEST> attest(raw_attest);
    const esys_ptr<TPMT_SIGNATURE> signature(raw_signature);
    if (auto ec = check(rc)) {
      return ec;
    }
    return signed_attest{
        .attest = bytes(attest->attestationData, attest->attestationData + attest->size),
        .signature = marshal_signature(*signature)};
  }

  // Runs op with ESYS_TRs for the persisted AK and TIK, looked up on first use.
  template <class Op>
  auto with_keys(Op op) -> decltype(op(ESYS_TR{}, ESYS_TR{})) {
    if (auto r = connect(); !r) {
      return r.error();
    }
    if (!ak_tr || !tik_tr) {
      forget_keys();
      auto ak = persistent(options.ak_handle);
      if (!ak) {
        return ak.error();
      }
      ak_tr = *ak;
      auto tik = persistent(options.tik_handle);
      if (!tik) {
        forget_keys();
        return tik.error();
      }
      tik_tr = *tik;
      if (!ak_tr || !tik_tr) {
        forget_keys();
        return tpm_errc::not_provisioned;
      }
    }
    return op(*ak_tr, *tik_tr);
  }

  result<signed_attest> certify(std::span<const std::uint8_t> nonce) {
    auto qualifying = to_qualifying_data(nonce);
    if (!qualifying) {
      return qualifying.error();
    }
    return with_keys([&](ESYS_TR ak, ESYS_TR tik) -> result<signed_attest> {
      const TPMT_SIG_SCHEME scheme{.scheme = TPM2_ALG_NULL, .details = {}};
      TPM2B_ATTEST* raw_attest = nullptr;
      TPMT_SIGNATURE* raw_signature = nullptr;
      const TSS2_RC rc =
          Esys_Certify(esys, tik, ak, ESYS_TR_PASSWORD, ESYS_TR_PASSWORD, ESYS_TR_NONE,
                       &*qualifying, &scheme, &raw_attest, &raw_signature);
      return take_signed_attest(rc, raw_attest, raw_signature);
    });
  }

  result<signed_attest> quote(std::span<const std::uint8_t> nonce, const pcr_selection& pcrs) {
    auto qualifying = to_qualifying_data(nonce);
    if (!qualifying) {
      return qualifying.error();
    }
    auto selection = to_tpm_selection(pcrs);
    if (!selection) {
      return selection.error();
    }
    return with_keys([&](ESYS_TR ak, ESYS_TR) -> result<signed_attest> {
      const TPMT_SIG_SCHEME scheme{.scheme = TPM2_ALG_NULL, .details = {}};
      TPM2B_ATTEST* raw_attest = nullptr;
      TPMT_SIGNATURE* raw_signature = nullptr;
      const TSS2_RC rc =
          Esys_Quote(esys, ak, ESYS_TR_PASSWORD, ESYS_TR_NONE, ESYS_TR_NONE, &*qualifying, &scheme,
                     &*selection, &raw_attest, &raw_signature);
      return take_signed_attest(rc, raw_attest, raw_signature);
    });
  }

  result<bytes> sign(std::span<const std::uint8_t> digest) {
    if (digest.size() != SHA256_DIGEST_LENGTH) {
      return tpm_errc::bad_argument;
    }
    return with_keys([&](ESYS_TR, ESYS_TR tik) -> result<bytes> {
      TPM2B_DIGEST in{};
      in.size = SHA256_DIGEST_LENGTH;
      std::memcpy(in.buffer, digest.data(), digest.size());
      TPMT_SIG_SCHEME scheme{};
      scheme.scheme = TPM2_ALG_ECDSA;
      scheme.details.ecdsa.hashAlg = TPM2_ALG_SHA256;
      // A NULL ticket: the key is not restricted, so the TPM needs no proof that it hashed
      // the message itself (Part 3 §20.2).
      TPMT_TK_HASHCHECK validation{};
      validation.tag = TPM2_ST_HASHCHECK;
      validation.hierarchy = TPM2_RH_NULL;
      TPMT_SIGNATURE* raw_signature = nullptr;
      const TSS2_RC rc = Esys_Sign(esys, tik, ESYS_TR_PASSWORD, ESYS_TR_NONE, ESYS_TR_NONE, &in,
                                   &scheme, &validation, &raw_signature);
      const esys_ptr<TPMT_SIGNATURE> signature(raw_signature);
      if (auto ec = check(rc)) {
        return ec;
      }
      return der_signature(signature->signature.ecdsa);
    });
  }

  result<std::map<std::uint8_t, bytes>> read_pcrs(const pcr_selection& pcrs) {
    auto selection = to_tpm_selection(pcrs);
    if (!selection) {
      return selection.error();
    }
    if (auto r = connect(); !r) {
      return r.error();
    }
    // TPM2_PCR_Read returns at most 8 digests (TPML_DIGEST) and says which PCRs it read (Part 3
    // §22.4): ask again for the rest until every selected PCR is there.
    std::map<std::uint8_t, bytes> out;
    TPML_PCR_SELECTION remaining = *selection;
    while (out.size() < pcrs.pcrs.size()) {
      UINT32 update_counter = 0;
      TPML_PCR_SELECTION* raw_read = nullptr;
      TPML_DIGEST* raw_values = nullptr;
      const TSS2_RC rc = Esys_PCR_Read(esys, ESYS_TR_NONE, ESYS_TR_NONE, ESYS_TR_NONE, &remaining,
                                       &update_counter, &raw_read, &raw_values);
      const esys_ptr<TPML_PCR_SELECTION> read(raw_read);
      const esys_ptr<TPML_DIGEST> values(raw_values);
      if (auto ec = check(rc)) {
        return ec;
      }
      const auto before = out.size();
      UINT32 next = 0;
      for (UINT32 s = 0; s < read->count; ++s) {
        const auto& sel = read->pcrSelections[s];
        for (unsigned index = 0; index < 8U * sel.sizeofSelect; ++index) {
          if ((sel.pcrSelect[index / 8] & (1U << (index % 8))) == 0) {
            continue;
          }
          if (next >= values->count || sel.hash != TPM2_ALG_SHA256 || index >= 24) {
            return tpm_errc::bad_argument;
          }
          const auto& digest = values->digests[next++];
          out.emplace(static_cast<std::uint8_t>(index),
                      bytes(digest.buffer, digest.buffer + digest.size));
          remaining.pcrSelections[0].pcrSelect[index / 8] &=
              static_cast<std::uint8_t>(~(1U << (index % 8)));
        }
      }
      // A TPM that returns none of what is left would otherwise be asked forever.
      if (out.size() == before) {
        return tpm_errc::bad_argument;
      }
    }
    return out;
  }

  result<void> extend_pcr(std::uint32_t index, std::span<const std::uint8_t> data) {
    if (index >= 24) {
      return tpm_errc::bad_argument;
    }
    if (auto r = connect(); !r) {
      return r.error();
    }
    TPML_DIGEST_VALUES digests{};
    digests.count = 1;
    digests.digests[0].hashAlg = TPM2_ALG_SHA256;
    SHA256(data.data(), data.size(), digests.digests[0].digest.sha256);
    // Not `return check(...)`: a result<void> made from any error_code, even a zero one, is an
    // error.
    if (auto ec = check(Esys_PCR_Extend(esys, ESYS_TR_PCR0 + index, ESYS_TR_PASSWORD, ESYS_TR_NONE,
                                        ESYS_TR_NONE, &digests))) {
      return ec;
    }
    return {};
  }

  result<bytes> random(std::size_t n) {
    // The TPM returns at most its largest digest size per command (Part 3 §16.1); every TPM
    // this sidecar supports has a SHA-256 bank, so 32 bytes always arrive whole.
    if (n == 0 || n > SHA256_DIGEST_LENGTH) {
      return tpm_errc::bad_argument;
    }
    if (auto r = connect(); !r) {
      return r.error();
    }
    TPM2B_DIGEST* raw_random = nullptr;
    const TSS2_RC rc = Esys_GetRandom(esys, ESYS_TR_NONE, ESYS_TR_NONE, ESYS_TR_NONE,
                                      static_cast<UINT16>(n), &raw_random);
    const esys_ptr<TPM2B_DIGEST> random_bytes(raw_random);
    if (auto ec = check(rc)) {
      return ec;
    }
    return bytes(random_bytes->buffer, random_bytes->buffer + random_bytes->size);
  }
};

// One thread, one queue, one ESAPI session: TPM commands never interleave and never run on the
// caller's thread.
struct tpm::worker {
  explicit worker(const tpm_options& options) : shared_(std::make_shared<queue>(options)) {
    thread_ = std::thread([shared = shared_] { loop(*shared); });
  }
  // A job can hold the last reference to the tpm (a signing key's binding does), so this may run
  // on the worker thread itself, where joining would deadlock: the thread is then left to finish
  // the queue on its own, and the queue lives as long as the thread that drains it.
  ~worker() {
    {
      const std::lock_guard lock(shared_->mutex);
      shared_->stopping = true;
    }
    shared_->wake.notify_one();
    if (on_worker_thread()) {
      thread_.detach();
    } else {
      thread_.join();
    }
  }
  worker(const worker&) = delete;
  worker& operator=(const worker&) = delete;
  worker(worker&&) = delete;
  worker& operator=(worker&&) = delete;

  void push(std::function<void(session&)> job) {
    {
      const std::lock_guard lock(shared_->mutex);
      shared_->jobs.push_back(std::move(job));
      ++shared_->unfinished;
    }
    shared_->wake.notify_one();
  }

  [[nodiscard]] std::size_t unfinished() const {
    const std::lock_guard lock(shared_->mutex);
    return shared_->unfinished;
  }

  [[nodiscard]] bool on_worker_thread() const {
    return std::this_thread::get_id() == thread_.get_id();
  }

  session& own_session() { return shared_->tpm_session; }

 private:
  struct queue {
    explicit queue(const tpm_options& options) : tpm_session(options) {}
    session tpm_session;
    std::mutex mutex;
    std::condition_variable wake;
    std::deque<std::function<void(session&)>> jobs;
    std::size_t unfinished = 0;  // queued or running
    bool stopping = false;
  };

  static void loop(queue& q) {
    for (;;) {
      std::function<void(session&)> job;
      {
        std::unique_lock lock(q.mutex);
        q.wake.wait(lock, [&q] { return q.stopping || !q.jobs.empty(); });
        if (q.jobs.empty()) {
          return;  // stopping, and every queued job has run
        }
        job = std::move(q.jobs.front());
        q.jobs.pop_front();
      }
      job(q.tpm_session);
      job = nullptr;  // what it holds goes before it counts as finished
      const std::lock_guard lock(q.mutex);
      --q.unfinished;
    }
  }

  std::shared_ptr<queue> shared_;
  std::thread thread_;
};

tpm::tpm(tpm_options options)
    : options_(std::move(options)), worker_(std::make_unique<worker>(options_)) {}

tpm::~tpm() = default;

std::size_t tpm::queued() const {
  return worker_->unfinished();
}

bool tpm::saturated() const {
  return queued() >= options_.queue_limit;
}

void tpm::submit(std::function<void(session&)> job) {
  worker_->push(std::move(job));
}

void tpm::post(std::function<void(tpm&)> fn) {
  submit([this, fn = std::move(fn)](session&) { fn(*this); });
}

namespace {

// atlsd_tpm_operations_total and _duration_seconds: timed on the worker, so the queue's wait
// is not part of it (a busy TPM shows as many operations, not as slow ones).
template <class Job, class Session>
auto measured(std::string_view operation, Job& job, Session& s) {
  const auto started = std::chrono::steady_clock::now();
  auto outcome = job(s);
  auto& m = metrics::process();
  m.tpm_operations.with({operation, outcome ? "ok" : "error"}).inc();
  m.tpm_operation_duration.with({operation}).observe(std::chrono::steady_clock::now() - started);
  return outcome;
}

}  // namespace

template <class T>
result<T> tpm::call(std::string_view operation, std::function<result<T>(session&)> job) {
  if (worker_->on_worker_thread()) {
    return measured(operation, job, worker_->own_session());
  }
  std::promise<result<T>> promise;
  auto future = promise.get_future();
  submit(
      [&promise, &job, operation](session& s) { promise.set_value(measured(operation, job, s)); });
  return future.get();
}

result<provision_report> tpm::provision() {
  return call<provision_report>("provision", [](session& s) { return s.provision(); });
}

result<tpm_keys> tpm::keys() {
  return call<tpm_keys>("read_keys", [](session& s) { return s.read_keys(); });
}

result<signed_attest> tpm::certify(std::span<const std::uint8_t> nonce) {
  return call<signed_attest>("certify", [nonce](session& s) { return s.certify(nonce); });
}

result<signed_attest> tpm::quote(std::span<const std::uint8_t> nonce, const pcr_selection& pcrs) {
  return call<signed_attest>("quote", [nonce, &pcrs](session& s) { return s.quote(nonce, pcrs); });
}

result<bytes> tpm::sign(std::span<const std::uint8_t> sha256_digest) {
  return call<bytes>("sign", [sha256_digest](session& s) { return s.sign(sha256_digest); });
}

result<std::map<std::uint8_t, bytes>> tpm::read_pcrs(const pcr_selection& pcrs) {
  return call<std::map<std::uint8_t, bytes>>("read_pcrs",
                                             [&pcrs](session& s) { return s.read_pcrs(pcrs); });
}

result<void> tpm::extend_pcr(std::uint32_t index, std::span<const std::uint8_t> data) {
  return call<void>("extend_pcr", [index, data](session& s) { return s.extend_pcr(index, data); });
}

result<bytes> tpm::random(std::size_t n) {
  return call<bytes>("get_random", [n](session& s) { return s.random(n); });
}

result<parsec_tpm_evidence> tpm::evidence(std::span<const std::uint8_t> nonce,
                                          const pcr_selection& pcrs) {
  return call<parsec_tpm_evidence>("evidence", [&](session& s) -> result<parsec_tpm_evidence> {
    auto keys = s.read_keys();
    if (!keys) {
      return keys.error();
    }
    auto certified = s.certify(nonce);
    if (!certified) {
      return certified.error();
    }
    auto quoted = s.quote(nonce, pcrs);
    if (!quoted) {
      return quoted.error();
    }
    parsec_tpm_evidence out;
    // kid: UEID type RAND (0x01) followed by SHA-256 of the AK's public area: stable per
    // machine, and Veraison's instance id as base64(kid).
    out.kid.resize(1 + SHA256_DIGEST_LENGTH);
    out.kid[0] = 0x01;
    SHA256(keys->ak.public_area.data(), keys->ak.public_area.size(), out.kid.data() + 1);
    out.kat_sig = std::move(certified->signature);
    out.pub_area = std::move(keys->tik.public_area);
    out.cert_info = std::move(certified->attest);
    out.pat_sig = std::move(quoted->signature);
    out.attest_info = std::move(quoted->attest);
    return out;
  });
}

}  // namespace atls::attest
