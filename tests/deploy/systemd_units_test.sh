#!/usr/bin/env bash
# The systemd units as `cmake --install` puts them, checked with systemd's own tools in a scratch
# root, without a running systemd (this may be a container, where PID 1 is something else).
#
# usage: systemd_units_test.sh verify|security|socket BUILD_DIR PREFIX
#   verify    systemd-analyze verify passes on atlsd.service and atlsd.socket, with and without
#             the privileged-port drop-in, and says nothing at all (verify exits 0 on unknown
#             keys and bad values, which it only prints)
#   security  systemd-analyze security --offline rates atlsd.service "OK" or better, with and
#             without the drop-in
#   socket    atlsd.socket's FileDescriptorName= is the name that the socket-activated example
#             config listens on (listen: systemd:NAME), and the socket unit hands it to
#             atlsd.service
#
# The scratch root holds the install (DESTDIR) plus what verify needs to resolve the units'
# dependencies and commands inside --root: this machine's systemd units (sysinit.target,
# network-online.target ...) and /bin/kill (ExecReload=). Every tool missing is a failure.
set -euo pipefail
mode=$1 build=$2 prefix=$3

for tool in systemd-analyze cmake; do
  command -v "$tool" >/dev/null || { echo "FAIL: $tool is missing (deploy/setup.sh installs it)"; exit 1; }
done

root=$(mktemp -d)
trap 'rm -rf "$root"' EXIT

# systemd's units first: the install below then wins if this machine has an atlsd.service.
mkdir -p "$root/usr/lib/systemd/system" "$root/bin" "$root/etc/systemd/system"
cp -a /usr/lib/systemd/system/. "$root/usr/lib/systemd/system/"
cp /bin/kill "$root/bin/kill"
DESTDIR=$root cmake --install "$build" >/dev/null

unitdir=${prefix%/}/lib/systemd/system
service=$unitdir/atlsd.service
socket=$unitdir/atlsd.socket
sysconfdir=$(sed -n 's|^ExecStart=[^ ]* --config \(.*\)/atlsd/atlsd.yaml$|\1|p' "$root$service")
[ -n "$sysconfdir" ] || { echo "FAIL: no ExecStart= with --config …/atlsd/atlsd.yaml in $service"; exit 1; }

# The privileged-port drop-in from the docs, where `systemctl edit` would put it.
docdir=$(sed -n 's|^Documentation=file://\(.*\)/config-reference.md$|\1|p' "$root$service")
dropin=$root$docdir/examples/atlsd.service.d/privileged-port.conf
[ -f "$dropin" ] || { echo "FAIL: the drop-in example is not installed at $docdir/examples"; exit 1; }
with_dropin() {
  mkdir -p "$root/etc/systemd/system/atlsd.service.d"
  cp "$dropin" "$root/etc/systemd/system/atlsd.service.d/"
}

analyze() {
  systemd-analyze --no-pager --root="$root" "$@"
}

fail=0
case $mode in
verify)
  for variant in plain drop-in; do
    [ $variant = drop-in ] && with_dropin
    # --man=no: Documentation= is a file, not a man page. --generators=no: the generators
    # would look at this machine's fstab and kernel command line, not at the units.
    if ! out=$(analyze verify --man=no --generators=no --recursive-errors=no "$service" "$socket" 2>&1) ||
      [ -n "$out" ]; then
      echo "FAIL: systemd-analyze verify ($variant):"
      echo "$out"
      fail=1
    else
      echo "verify ($variant): clean"
    fi
  done
  ;;
security)
  for variant in plain drop-in; do
    [ $variant = drop-in ] && with_dropin
    out=$(analyze security --offline=true "$service" 2>&1) || true
    # "→ Overall exposure level for atlsd.service: 1.4 OK 🙂"; the levels, best first, are SAFE,
    # OK, MEDIUM, EXPOSED, UNSAFE.
    line=$(grep 'Overall exposure level' <<<"$out" || true)
    level=$(sed -n 's/.*Overall exposure level for [^:]*: [0-9.]* \([A-Z]*\).*/\1/p' <<<"$line")
    echo "security ($variant): $line"
    case $level in
    SAFE | OK) ;;
    *)
      echo "FAIL: atlsd.service ($variant) is rated '${level:-nothing}', not OK or better:"
      echo "$out" | grep -v '✓' || true
      fail=1
      ;;
    esac
  done
  ;;
socket)
  if ! out=$(analyze verify --man=no --generators=no --recursive-errors=no "$socket" 2>&1) ||
    [ -n "$out" ]; then
    echo "FAIL: systemd-analyze verify atlsd.socket:"
    echo "$out"
    fail=1
  fi
  config=$root$sysconfdir/atlsd/atlsd.socket-activated.example.yaml
  [ -f "$config" ] || { echo "FAIL: no socket-activated example config at $sysconfdir/atlsd"; exit 1; }
  fdname=$(sed -n 's/^FileDescriptorName=//p' "$root$socket")
  # The names the config takes from systemd; comments after the value are YAML comments.
  wanted=$(sed -n 's/^ *listen: *systemd:\([^ #]*\).*/\1/p' "$config")
  echo "atlsd.socket passes '$fdname'; the example config listens on: ${wanted:-nothing}"
  if [ -z "$fdname" ] || [ "$wanted" != "$fdname" ]; then
    echo "FAIL: the config's systemd: listener and the socket's FileDescriptorName= differ"
    fail=1
  fi
  # Which service gets the socket: Service= if given, else the socket's own name.
  target=$(sed -n 's/^Service=//p' "$root$socket")
  if [ "${target:-atlsd.service}" != atlsd.service ]; then
    echo "FAIL: atlsd.socket activates '${target}', not atlsd.service"
    fail=1
  fi
  ;;
*)
  echo "usage: systemd_units_test.sh verify|security|socket BUILD_DIR PREFIX"
  exit 2
  ;;
esac
exit $fail
