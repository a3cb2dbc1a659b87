#!/bin/sh
# Installs everything nslab needs on Debian 12 (the one install step shared by
# README, CI, Vagrantfile and Containerfile): idempotent, non-interactive, any cwd.
#
# Usage (as root): scripts/install.sh
#
# Debian packages:
#   iproute2 iputils-ping nftables procps  the lab's tools (tests use `ip -j`, ping)
#   ipvsadm                                 to replay/inspect what `nslab plan` prints
#   wrk                                     HTTP load inside a lab node (`nslab load`)
#   keepalived                              health checks and VRRP for services with
#                                           `health:` or `directors:` (a lab process)
#   haproxy                                 the L7 proxy of the L4-vs-L7 lab, run inside a node
#   qemu-system-x86 linux-image-amd64       the kernel VM (`nslab vm`): a kernel with
#   busybox-static kmod                     IPVS/ipip modules; virtme-ng builds its
#                                           initramfs from busybox, modprobe is kmod
#   (no virtiofsd: Debian 12 has no package of the Rust daemon virtme-ng uses, and
#   QEMU 7.2's own C one can't serve it, so `nslab vm` shares the root over 9p)
# then nslab itself, editable, with the extras `test` (pytest) and `vm` (virtme-ng).
set -eu

REPO=$(cd "$(dirname "$0")/.." && pwd)
export DEBIAN_FRONTEND=noninteractive

say() { printf 'install: %s\n' "$*"; }

if [ "$(id -u)" -ne 0 ]; then
    say "run as root (sudo $0)" >&2
    exit 1
fi

PACKAGES="iproute2 iputils-ping nftables procps ipvsadm wrk keepalived haproxy kmod qemu-system-x86 linux-image-amd64 busybox-static file binutils"
if ! python3 -m pip --version >/dev/null 2>&1; then
    PACKAGES="$PACKAGES python3-pip"
fi

missing=""
for pkg in $PACKAGES; do
    # dpkg -s also succeeds for removed-but-configured packages; ask for the status itself.
    if [ "$(dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null)" != "install ok installed" ]; then
        missing="$missing $pkg"
    fi
done

if [ -n "$missing" ]; then
    say "apt-get update"
    apt-get update -qq
    say "apt-get install$missing"
    # shellcheck disable=SC2086 # word splitting of the package list is intended
    apt-get install -y -qq --no-install-recommends $missing >/dev/null
else
    say "Debian packages already installed"
fi

# Debian's python3 is marked externally managed (PEP 668) and pip refuses to
# install into it; in the throwaway VM/container/CI machines this script is
# for, installing nslab system-wide (so `sudo nslab` finds it) is the point.
if python3 -c 'import sys, sysconfig, os; sys.exit(not os.path.exists(os.path.join(sysconfig.get_path("stdlib"), "EXTERNALLY-MANAGED")))'; then
    export PIP_BREAK_SYSTEM_PACKAGES=1
fi

say "python3 -m pip install -e $REPO[test,vm] (with $(command -v python3))"
python3 -m pip install -q --disable-pip-version-check --root-user-action=ignore -e "$REPO[test,vm]"

# pyenv only sees new console scripts after a rehash (pip run as `python3 -m pip` doesn't trigger one).
if command -v pyenv >/dev/null 2>&1; then
    pyenv rehash
fi
say "done: $(command -v nslab || echo 'python3 -m nslab') doctor tells what this kernel can run"
