#!/usr/bin/env bash
# The final image's user: `atlsd`, with numeric UID and GID (Kubernetes' runAsNonRoot can only
# verify a numeric USER), no home and no shell. The TPM device is not opened through this group:
# /dev/tpmrm0 belongs to the host's `tss` group, whose GID differs from host to host, and is
# granted with `--group-add` (podman, docker) or `supplementalGroups` (Kubernetes).
#
#   add-user.sh UID GID
set -euo pipefail

if [ $# -ne 2 ]; then
  echo "usage: $0 UID GID" >&2
  exit 2
fi
groupadd --system --gid "$2" atlsd
useradd --system --uid "$1" --gid "$2" --no-create-home --home-dir /nonexistent \
  --shell /usr/sbin/nologin atlsd
