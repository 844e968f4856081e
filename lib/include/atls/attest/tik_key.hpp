// The TLS identity key (TIK) as an OpenSSL EVP_PKEY whose one private operation, ECDSA signing,
// runs inside the TPM. Hashing, verification and everything else stay in software: loading a TPM
// provider into the TLS library context would send the transcript hash and the peer's signature
// checks to the TPM as well (shared/design/FACTS.md).
//
// How a handshake waits for the TPM without blocking its thread: the TLS stream runs the
// handshake as an OpenSSL ASYNC job (SSL_MODE_ASYNC) with a wait-context callback. Signing queues
// the TPM command and pauses the job, so SSL_do_handshake returns SSL_ERROR_WANT_ASYNC; the TPM
// worker calls the callback once the signature is there, and the stream resumes the handshake on
// the thread that started it. Outside such a job (the command line signing a CSR), signing waits
// for the TPM.
#pragma once

#include <memory>

#include "atls/attest/tpm.hpp"
#include "atls/common/result.hpp"

using EVP_PKEY = struct evp_pkey_st;

namespace atls::attest {

// The TIK's public key, with signing bound to device, which the key keeps alive. Fails like
// tpm::keys(): tpm_errc::not_provisioned, or the TPM could not be reached.
[[nodiscard]] result<std::shared_ptr<EVP_PKEY>> tik_private_key(std::shared_ptr<tpm> device);

}  // namespace atls::attest
