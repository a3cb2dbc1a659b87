"""What the running kernel and machine can do: the probes behind `nslab doctor` and the gates of `nslab up`."""

from __future__ import annotations

import gzip
import os
import shutil
from functools import lru_cache
from pathlib import Path

from nslab import vm

from ..record import record

# Every scheduler IPVS has had in mainline (net/netfilter/ipvs/ip_vs_*.c).
SCHEDULERS = ("rr", "wrr", "lc", "wlc", "fo", "ovf", "lblc", "lblcr", "dh", "sh", "mh", "sed", "nq", "twos")
_CAP_SYS_ADMIN = 21
_INSIDE_VM = "nslab vm -- nslab up FILE (boots a kernel that has it; needs the vm-* checks to pass)"


@record
class Check:
    """One probe's answer: ok, what was seen, and the command that fixes it when not ok."""

    name: str
    ok: bool
    detail: str
    fix: str = ""

    @property
    def vm_has_it(self) -> bool:
        """A kernel feature missing here that `nslab vm`'s kernel has (when the vm-* checks pass)."""
        return not self.ok and self.fix == _INSIDE_VM


def probe() -> list[Check]:
    """Every capability nslab relies on, cheapest-first; read-only, creates nothing.

    The kernel features are read from /sys/module, /proc and the kernel's
    config and module index rather than by creating a namespace, veth, bridge
    or nft table: the answers are the same, nothing can be left behind, and it
    works without root (doctor is often run first as a normal user).
    """
    return [
        _check_root(),
        _check_netns(),
        _feature_check("veth", "veth", "CONFIG_VETH", "a kernel with CONFIG_VETH (every distribution kernel has it)"),
        _feature_check("bridge", "bridge", "CONFIG_BRIDGE", "a kernel with CONFIG_BRIDGE (every distribution kernel has it)"),
        _check_nftables(),
        _check_ipvs(),
        _feature_check("ipip", "ipip", "CONFIG_NET_IPIP", _INSIDE_VM),
        _feature_check("netem", "sch_netem", "CONFIG_NET_SCH_NETEM", _INSIDE_VM),
        Check("vlan", has_vlan(), f"802.1Q VLANs and VLAN-filtering bridges in kernel {os.uname().release}: "
              + ("yes" if has_vlan() else "no"), "" if has_vlan() else _INSIDE_VM),
        _check_modprobe(),
        _check_replay_tools(),
        *_vm_checks(),
    ]


def has_ipvs() -> bool:
    """Whether IPVS is usable now or loads on demand (module present and loading allowed)."""
    return Path("/proc/net/ip_vs").exists() or _feature_state("ip_vs", "CONFIG_IP_VS") in ("loaded", "built-in", "module")


def has_vlan() -> bool:
    """Whether 802.1Q sub-interfaces and VLAN-filtering bridges are usable (8021q, and bridges built with
    CONFIG_BRIDGE_VLAN_FILTERING; a kernel whose config can't be read is given the benefit of the doubt)."""
    filtering = _config().get("CONFIG_BRIDGE_VLAN_FILTERING", "y" if not _config() else None) == "y"
    return filtering and _feature_state("8021q", "CONFIG_VLAN_8021Q") in ("loaded", "built-in", "module")


def has_ipip() -> bool:
    """Whether IP-in-IP tunnels (LVS TUN) are usable now or load on demand."""
    return _feature_state("ipip", "CONFIG_NET_IPIP") in ("loaded", "built-in", "module")


def has_netem() -> bool:
    """Whether link impairment works: netem for delay and loss, and tbf for a rate (both load on demand)."""
    return all(_feature_state(m, k) in ("loaded", "built-in", "module")
               for m, k in (("sch_netem", "CONFIG_NET_SCH_NETEM"), ("sch_tbf", "CONFIG_NET_SCH_TBF")))


# --- individual checks ----------------------------------------------------


def _check_root() -> Check:
    if os.geteuid() == 0:
        return Check("root", True, "running as root")
    return Check("root", False, f"running as uid {os.geteuid()}; labs need root", "sudo nslab ...")


def _check_netns() -> Check:
    # Creating a namespace needs CAP_SYS_ADMIN and a kernel with CONFIG_NET_NS;
    # /proc/self/ns/net exists exactly when the latter holds.
    if not Path("/proc/self/ns/net").exists():
        return Check("netns", False, "no /proc/self/ns/net: kernel without network namespaces",
                     "boot a kernel with CONFIG_NET_NS, or " + _INSIDE_VM)
    if not _has_cap(_CAP_SYS_ADMIN):
        return Check("netns", False, "network namespaces exist but CAP_SYS_ADMIN is missing",
                     "run as root; in a container: docker run --privileged")
    return Check("netns", True, "network namespaces available, CAP_SYS_ADMIN held")


def _check_nftables() -> Check:
    # nslab programs nftables through netlink: the kernel's side is what it needs, not the nft command.
    state = _feature_state("nf_tables", "CONFIG_NF_TABLES")
    nat = [m for m, key in (("nft_chain_nat", "CONFIG_NFT_NAT"), ("nft_masq", "CONFIG_NFT_MASQ"))
           if _feature_state(m, key) in ("missing", "unknown")]
    detail = f"nf_tables {state}" + (f"; missing for SNAT labs: {', '.join(nat)}" if nat else "")
    ok = state in ("loaded", "built-in", "module") and not nat
    fix = "" if ok else "a kernel with CONFIG_NF_TABLES, CONFIG_NFT_NAT, CONFIG_NFT_MASQ"
    return Check("nftables", ok, detail, fix)


def _check_modprobe() -> Check:
    # `nslab up` of an LVS TUN lab runs `modprobe ipip` when tunl0 is missing: needed only while ipip is
    # a module not yet loaded.
    found = shutil.which("modprobe")
    if found:
        return Check("modprobe", True, f"modprobe at {found} (loads ipip for LVS TUN labs)")
    if _feature_state("ipip", "CONFIG_NET_IPIP") == "module":
        return Check("modprobe", False, "modprobe not found, and LVS TUN labs need it to load the ipip module",
                     "apt-get install kmod")
    return Check("modprobe", True, "modprobe not found; optional: nslab runs it only to load a not yet loaded "
                 "ipip module (apt-get install kmod)")


# The commands `nslab plan` prints; nslab itself does all of it through netlink and /proc.
REPLAY_TOOLS = (("ip", "iproute2"), ("sysctl", "procps"), ("nft", "nftables"), ("ipvsadm", "ipvsadm"))


def _check_replay_tools() -> Check:
    """Never a failure: these only replay `nslab plan` by hand (and `nft list ruleset`, `ipvsadm -Ln` in a node)."""
    missing = [(tool, pkg) for tool, pkg in REPLAY_TOOLS if shutil.which(tool) is None]
    found = [tool for tool, _ in REPLAY_TOOLS if shutil.which(tool)]
    detail = f"{' '.join(found) or 'none'} found"
    if missing:
        detail += (f"; {' '.join(t for t, _ in missing)} not found (optional: for replaying `nslab plan`; "
                   f"apt-get install {' '.join(sorted({p for _, p in missing}))})")
    return Check("replay-tools", True, detail)


def _check_ipvs() -> Check:
    state = _feature_state("ip_vs", "CONFIG_IP_VS")
    if Path("/proc/net/ip_vs").exists() or _ipvs_genl_resolves():
        state = "loaded"
    scheds = ipvs_schedulers()
    if state in ("loaded", "built-in", "module"):
        detail = f"IPVS {state}; schedulers: {' '.join(scheds) or 'none found'}"
        return Check("ipvs", True, detail)
    return Check("ipvs", False, f"IPVS {state} in kernel {os.uname().release}", _INSIDE_VM)


def _feature_check(name: str, module: str, key: str, fix: str) -> Check:
    state = _feature_state(module, key)
    ok = state in ("loaded", "built-in", "module")
    return Check(name, ok, f"{module} {state} in kernel {os.uname().release}", "" if ok else fix)


def _vm_checks() -> list[Check]:
    checks = []
    qemu = shutil.which(vm.QEMU)
    busybox = vm.find_busybox()
    ok = qemu is not None and busybox is not None
    checks.append(Check("vm-qemu", ok, f"{vm.QEMU} at {qemu}, busybox at {busybox}",
                        "" if ok else "apt-get install qemu-system-x86 busybox-static"))
    vng = vm.find_vng()
    checks.append(Check("vm-virtme-ng", vng is not None, f"vng at {vng}" if vng else "vng not found",
                        "" if vng else "python3 -m pip install virtme-ng"))
    kernel = vm.find_kernel()
    checks.append(Check("vm-kernel", kernel is not None,
                        f"IPVS-capable kernel {kernel}" if kernel else "no kernel with IPVS and its modules in /boot",
                        "" if kernel else "apt-get install linux-image-amd64"))
    if ok and kernel:
        # Never a failure: without KVM the VM still runs, only slower.
        if vm.kvm_usable(kernel=kernel):
            checks.append(Check("vm-accel", True, "KVM works: the VM boots in a few seconds"))
        else:
            checks.append(Check("vm-accel", True, "KVM unusable here: TCG emulation, about 20 s to boot "
                                f"(set {vm.KVM_ENV}=1 to force KVM)"))
    return checks


# --- kernel facts ------------------------------------------------------------


def _feature_state(module: str, key: str) -> str:
    """'loaded', 'built-in', 'module' (file present, loading allowed), 'missing' or 'unknown'."""
    if (Path("/sys/module") / module).exists():
        return "loaded"  # loaded modules, and built-ins that have parameters
    if module in _builtin_modules() or _config().get(key) == "y":
        return "built-in"
    if module in _module_files():
        return "module" if _modules_loadable() else "missing"
    if _config():
        return "missing"  # the config does not build it in, and no module file exists
    return "missing" if _module_files() else "unknown"


def ipvs_schedulers() -> list[str]:
    """Names of the IPVS schedulers this kernel has, loaded, built in or as module files."""
    return [s for s in SCHEDULERS
            if _feature_state(f"ip_vs_{s}", f"CONFIG_IP_VS_{s.upper()}") in ("loaded", "built-in", "module")]


def _modules_dir() -> Path:
    return Path("/lib/modules") / os.uname().release


@lru_cache(maxsize=1)
def _module_files() -> frozenset[str]:
    """Module names with a file in this kernel's modules.dep (the index modprobe itself uses)."""
    try:
        text = (_modules_dir() / "modules.dep").read_text()
    except OSError:
        return frozenset()
    return frozenset(_module_name(line.split(":", 1)[0]) for line in text.splitlines() if ":" in line)


@lru_cache(maxsize=1)
def _builtin_modules() -> frozenset[str]:
    try:
        text = (_modules_dir() / "modules.builtin").read_text()
    except OSError:
        return frozenset()
    return frozenset(_module_name(line) for line in text.split())


def _module_name(path: str) -> str:
    name = path.rsplit("/", 1)[-1].split(".ko", 1)[0]
    return name.replace("-", "_")


def _modules_loadable() -> bool:
    # /proc/modules exists only with CONFIG_MODULES; modules_disabled=1 is a one-way lock.
    if not Path("/proc/modules").exists():
        return False
    try:
        return Path("/proc/sys/kernel/modules_disabled").read_text().strip() == "0"
    except OSError:
        return True


@lru_cache(maxsize=1)
def _config() -> dict[str, str]:
    """The running kernel's build config (key -> value), from /proc/config.gz or /boot; {} if neither."""
    sources = [Path("/proc/config.gz"), Path("/boot") / f"config-{os.uname().release}", _modules_dir() / "config"]
    for src in sources:
        try:
            raw = gzip.decompress(src.read_bytes()) if src.suffix == ".gz" else src.read_bytes()
        except (OSError, EOFError, gzip.BadGzipFile):
            continue
        values = {}
        for line in raw.decode("utf-8", errors="replace").splitlines():
            if line.startswith("CONFIG_") and "=" in line:
                k, v = line.split("=", 1)
                values[k] = v.strip()
        return values
    return {}


def _has_cap(bit: int) -> bool:
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("CapEff:"):
                return bool(int(line.split()[1], 16) >> bit & 1)
    except (OSError, ValueError):
        pass
    return False


def _ipvs_genl_resolves() -> bool:
    """Whether the kernel answers for the IPVS generic-netlink family (it does once ip_vs is loaded)."""
    try:
        from pyroute2 import GenericNetlinkSocket
        from pyroute2.netlink.exceptions import NetlinkError
    except ImportError:
        return False
    try:
        with GenericNetlinkSocket() as sock:
            sock.discovery("IPVS")
        return True
    except (NetlinkError, OSError):
        return False
