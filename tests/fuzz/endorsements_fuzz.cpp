// libFuzzer target for the endorsement readers (atls/verify/endorsements.hpp): operator-supplied
// CoMID JSON. Each input goes to read_trust_anchor and read_reference_values, and, split at its
// first NUL byte, to read_endorsements. Seed it with tests/fuzz/seeds/endorsements/ (the two
// files of a real `atlsctl veraison endorsements`, and both joined by a NUL) and
// ../shared/vectors/comid-refval.json (tests/fuzz/run.sh does).
#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <string_view>

#include "atls/verify/endorsements.hpp"
#include "atls/verify/jose.hpp"

namespace atls::verify {
namespace {

// ../shared/vectors/ak-pub.pem: a P-256 AK for documents that carry only reference values.
const bytes& vector_ak() {
  static const bytes key = [] {
    auto der = base64_decode_lenient(
        "MFkwEwYHKoZIzj0CAQYIKoZIzj0DAQcDQgAE2lB1xtcIWePIt/Wwt+s8Ybp+5ji8"
        "t2pzGDKSOG7xTGK5gOYkcLCHz4i4L/yGzyEmBO1mZFZNuJz14X0J24+XQQ==");
    if (!der) {
      std::abort();
    }
    return *der;
  }();
  return key;
}

// A refusal is one of the reader's own codes, with a detail that says where.
void check_refusal(const failure& f) {
  if (f.code.category() != endorsements_category() || f.detail.empty()) {
    std::abort();
  }
}

// What a reader accepted, written again and read back, is what it read: the writer never
// refuses what the reader accepts, and the two agree on every field.
void check_round_trip(const machine_endorsements& m) {
  const auto docs = make_endorsements(m);
  if (!docs) {
    std::abort();
  }
  const auto back = read_endorsements(docs->trust_anchor, docs->reference_values);
  if (!back || back->class_id != m.class_id || back->instance_id != m.instance_id ||
      back->ak_spki != m.ak_spki || back->reference.values != m.reference.values) {
    std::abort();
  }
}

void run(std::string_view input) {
  if (const auto anchor = read_trust_anchor(input); anchor) {
    machine_endorsements m{.class_id = anchor->class_id,
                           .instance_id = anchor->instance_id,
                           .ak_spki = anchor->ak_spki};
    m.reference.values[0] = bytes(32, 0);
    check_round_trip(m);
  } else {
    check_refusal(anchor.error());
  }

  if (const auto values = read_reference_values(input); values) {
    machine_endorsements m{.class_id = values->class_id, .ak_spki = vector_ak()};
    m.instance_id = bytes(33, 0x11);
    m.instance_id[0] = 0x01;
    m.reference = values->values;
    check_round_trip(m);
  } else {
    check_refusal(values.error());
  }

  if (const auto nul = input.find('\0'); nul != std::string_view::npos) {
    const auto both = read_endorsements(input.substr(0, nul), input.substr(nul + 1));
    if (!both) {
      check_refusal(both.error());
    }
  }
}

}  // namespace
}  // namespace atls::verify

// The entry point's name is libFuzzer's.
extern "C" int LLVMFuzzerTestOneInput(  // NOLINT(readability-identifier-naming)
    const std::uint8_t* data, std::size_t size) {
  atls::verify::run({reinterpret_cast<const char*>(data), size});
  return 0;
}
