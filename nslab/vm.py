"""The kernel VM: boots a distribution kernel that has IPVS under virtme-ng (QEMU) and runs one command there."""

from __future__ import annotations

import fcntl
import glob
import hashlib
import json
import os
import re
import selectors
import shlex
import shutil
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

from nslab import interrupts
from nslab.errors import EnvironmentMissing, NslabError, UsageError

DEFAULT_MEMORY = "1G"
# Nothing is preloaded in the guest: IPVS loads itself on the first generic
# netlink request for its family (as on any host with ip_vs as a module), its
# schedulers when a service names one, and nslab loads ipip for TUN labs.
#
# What udev would load at boot for QEMU's emulated chipset, disk controller,
# watchdog, input devices and the CPU features TCG emulates, none of which a lab
# uses. Under TCG loading them is most of udev's settling (kvm alone ~3 s), so
# the guest kernel gets modprobe.blacklist=...: kmod then skips them when
# resolving an alias (what udev asks for); an explicit `modprobe NAME` still works,
# and the crypto API falls back to the generic implementations.
GUEST_BLACKLIST = (
    "kvm", "kvm_intel", "kvm_amd",  # no nested virtualisation under TCG
    "aesni_intel", "ghash_clmulni_intel", "sha1_ssse3", "sha256_ssse3", "sha512_ssse3",
    "crc32_pclmul", "crc32c_intel", "crct10dif_pclmul",  # CPU-feature crypto
    "ahci", "i2c_i801", "lpc_ich", "iTCO_wdt", "i6300esb", "qemu_fw_cfg",  # q35 chipset, watchdog, firmware
    "pcspkr", "psmouse", "serio_raw", "evdev", "button",  # input devices, PC speaker, ACPI buttons
)
QEMU = "qemu-system-x86_64"
KVM_ENV = "NSLAB_VM_KVM"
KVM_CACHE = Path("/run/nslab-vm-kvm.json")  # beside, not in, /run/nslab: that holds only labs
# Uncompressed copies of guest kernels (see boot_image), one per kernel version, ~70 MB each.
IMAGE_CACHE = Path("/var/cache/nslab")

# vng pastes every option except --exec into a host shell string unquoted
# (virtme_ng/run.py: `check_call(cmd, shell=True)`), so paths and sizes we hand
# it must contain nothing a shell would interpret. '=' is excluded too: vng
# reads --rwdir A=B as "guest path A from host path B", and ',' would split
# QEMU's -fsdev path=... option.
_SAFE_PATH = re.compile(r"/[A-Za-z0-9._/+@%:-]*", re.ASCII)
_SAFE_MEMORY = re.compile(r"[1-9][0-9]*[KMGT]?", re.ASCII)
# The command travels base64-encoded on the kernel command line, which is at
# most 2048 bytes on x86; virtme-ng's own arguments take about 800 of them.
_MAX_SCRIPT = 850

# Linux ioctl numbers from <linux/kvm.h>.
_KVM_GET_API_VERSION = 0xAE00
_KVM_CREATE_VM = 0xAE01
_KVM_API_VERSION = 12


def find_kernel(boot_dir="/boot", modules_dir="/lib/modules") -> Path | None:
    """Return the newest boot_dir/vmlinuz-VERSION whose config-VERSION has IPVS, or None.

    A kernel with IPVS as a module also needs modules_dir/VERSION (pass
    modules_dir=None to skip that check).
    """
    boot = Path(boot_dir)
    candidates = []
    for image in boot.glob("vmlinuz-*"):
        version = image.name[len("vmlinuz-"):]
        ipvs = _config_value(boot / f"config-{version}", "CONFIG_IP_VS")
        if ipvs not in ("y", "m") or not image.is_file():
            continue
        if ipvs == "m" and modules_dir is not None and not (Path(modules_dir) / version).is_dir():
            continue
        candidates.append((_version_key(version), image))
    if not candidates:
        return None
    return max(candidates)[1]


def _config_value(config: Path, key: str) -> str | None:
    """The value of KEY in a kernel config file ('y', 'm', ...), None when unset or unreadable."""
    try:
        with open(config, encoding="utf-8", errors="replace") as f:
            for line in f:
                if line.startswith(key + "="):
                    return line.split("=", 1)[1].strip()
    except OSError:
        return None
    return None


def _version_key(version: str) -> tuple:
    """Sort key so that 6.10.0 > 6.9.0 and 6.1.0-56 > 6.1.0-9 (plain string order gets both wrong)."""
    parts = re.split(r"(\d+)", version)
    return tuple((1, int(p), "") if p.isdigit() else (0, 0, p) for p in parts if p)


def kvm_usable(timeout: float = 8.0, kernel: Path | str | None = None) -> bool:
    """Whether QEMU can really boot a kernel with KVM here; never blocks longer than about timeout.

    NSLAB_VM_KVM=0/1 overrides the answer. Otherwise /dev/kvm must answer
    KVM_GET_API_VERSION and KVM_CREATE_VM, and then a real kernel must start
    under KVM: on the development machines (nested under Firecracker) every
    ioctl works and even a tiny long-mode guest runs, yet a Linux kernel hangs
    at 100% CPU before its first console line. So the last step boots the
    kernel under KVM and waits for "Linux version" on the serial console (TCG
    prints it after ~2.6 s, KVM well under 1 s). Its result is cached in
    /run/nslab-vm-kvm.json per host kernel and guest kernel, so only the first call pays.
    """
    forced = os.environ.get(KVM_ENV, "").strip()
    if forced in ("0", "1"):
        return forced == "1"
    if not _kvm_ioctls_work():
        return False
    kernel = Path(kernel) if kernel is not None else find_kernel()
    qemu = shutil.which(QEMU)
    if kernel is None or qemu is None:
        return False  # nothing to boot: the VM can't run anyway, TCG or not
    key = f"{os.uname().release} {kernel} {_mtime(kernel)}"
    cache = _read_cache()
    if key in cache:
        return bool(cache[key])
    ok = _kvm_boots(qemu, kernel, timeout)
    cache[key] = ok
    _write_cache(cache)
    return ok


def _kvm_ioctls_work() -> bool:
    try:
        fd = os.open("/dev/kvm", os.O_RDWR | os.O_CLOEXEC)
    except OSError:
        return False
    try:
        if fcntl.ioctl(fd, _KVM_GET_API_VERSION) != _KVM_API_VERSION:
            return False
        os.close(fcntl.ioctl(fd, _KVM_CREATE_VM, 0))
        return True
    except OSError:
        return False
    finally:
        os.close(fd)


def _kvm_boots(qemu: str, kernel: Path, timeout: float) -> bool:
    """Boot kernel under KVM with no disk; True once it prints its banner within timeout."""
    argv = [qemu, "-accel", "kvm", "-cpu", "host", "-m", "256", "-nodefaults", "-no-reboot",
            "-display", "none", "-serial", "stdio", "-kernel", str(kernel),
            "-append", "console=ttyS0 earlyprintk=serial,ttyS0,115200 panic=-1"]
    proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT)
    seen = b""
    deadline = time.monotonic() + timeout
    try:
        with selectors.DefaultSelector() as sel:
            sel.register(proc.stdout, selectors.EVENT_READ)
            while (left := deadline - time.monotonic()) > 0:
                if not sel.select(left):
                    break
                chunk = os.read(proc.stdout.fileno(), 4096)
                if not chunk:
                    break
                seen = (seen + chunk)[-4096:]
                if b"Linux version" in seen:
                    return True
        return False
    finally:
        proc.kill()  # a guest stuck in KVM_RUN still dies on SIGKILL (measured)
        proc.wait()
        proc.stdout.close()


def _mtime(path: Path) -> int:
    try:
        return int(path.stat().st_mtime)
    except OSError:
        return 0


def _read_cache() -> dict:
    try:
        data = json.loads(KVM_CACHE.read_text())
        return data if isinstance(data, dict) else {}
    except (OSError, ValueError):
        return {}


def _write_cache(cache: dict) -> None:
    # Best effort: without root or /run the probe simply runs again next time.
    try:
        KVM_CACHE.parent.mkdir(parents=True, exist_ok=True)
        KVM_CACHE.write_text(json.dumps(cache))
    except OSError:
        pass


def boot_image(kernel: Path | str, cache_dir: Path | str | None = None) -> Path:
    """What QEMU should boot for kernel under TCG: its uncompressed ELF vmlinux when that can be had, else kernel.

    A distribution bzImage decompresses itself in the guest (Debian's: 8 MB of
    xz to 66 MB), which under TCG takes seconds before the kernel's first line
    (3 s on an idle 2-core machine, 15 s and more on a loaded one). The ELF
    inside it has a PVH entry point (CONFIG_PVH) that QEMU boots directly, so
    the host decompresses it once (under a second of CPU) into cache_dir
    (default IMAGE_CACHE) and every later boot starts at the kernel itself.
    Falls back to kernel when it is not such a bzImage, its compression has no
    decoder in Python's standard library (zstd, lz4, lzo) or the cache is not
    writable; an empty entry remembers a kernel that has no such ELF.
    """
    kernel = Path(kernel)
    cache = Path(cache_dir if cache_dir is not None else IMAGE_CACHE)
    try:
        st = kernel.stat()
        version = re.sub(r"[^A-Za-z0-9._+-]", "_", kernel.name.removeprefix("vmlinuz-"))[:80]
        digest = hashlib.sha256(f"{kernel.resolve()}\0{st.st_size}\0{st.st_mtime_ns}".encode()).hexdigest()[:12]
        cached = cache / f"vmlinux-{version}-{digest}"
        if cached.is_file():
            return cached if cached.stat().st_size else kernel
        data = kernel.read_bytes()
        if not _is_bzimage(data):
            return kernel
        cache.mkdir(parents=True, exist_ok=True)
        if not os.access(cache, os.W_OK | os.X_OK):
            return kernel  # e.g. not root: don't unpack what can't be kept
        elf = _extract_vmlinux(data) or b""
        tmp = cache / f".{cached.name}.{os.getpid()}"
        try:
            tmp.write_bytes(elf)
            os.replace(tmp, cached)  # atomic: another nslab vm may be reading or writing the same entry
        finally:
            tmp.unlink(missing_ok=True)
        for old in cache.glob(f"vmlinux-{glob.escape(version)}-" + "[0-9a-f]" * 12):
            if old != cached:  # the same version's entry from an older build of the file
                old.unlink(missing_ok=True)
        return cached if elf else kernel
    except OSError:
        return kernel


def _is_bzimage(data: bytes) -> bool:
    """An x86 bzImage of boot protocol 2.08 or later (the first to give the payload's place)."""
    return len(data) >= 0x250 and data[0x202:0x206] == b"HdrS" and _u16(data, 0x206) >= 0x208


def _extract_vmlinux(bzimage: bytes) -> bytes | None:
    """The ELF vmlinux inside an x86 bzImage when it has a PVH entry point QEMU can boot, else None."""
    if not _is_bzimage(bzimage):
        return None
    setup_sects = bzimage[0x1F1] or 4
    start = (setup_sects + 1) * 512 + _u32(bzimage, 0x248)
    payload = bzimage[start:start + _u32(bzimage, 0x24C)]
    try:
        if payload.startswith(b"\xfd7zXZ\x00"):
            import lzma
            d = lzma.LZMADecompressor(lzma.FORMAT_XZ)
        elif payload.startswith(b"\x1f\x8b"):
            import zlib
            d = zlib.decompressobj(wbits=31)
        elif payload.startswith(b"BZh"):
            import bz2
            d = bz2.BZ2Decompressor()
        else:
            return None  # zstd, lz4, lzo, lzma: boot the bzImage
        elf = d.decompress(payload)
    except Exception:  # noqa: BLE001 - no such codec here, or its error on a damaged payload: boot the bzImage
        return None
    return elf if d.eof and _has_pvh_entry(elf) else None


def _has_pvh_entry(elf: bytes) -> bool:
    """Whether a 64-bit little-endian ELF has the Xen note XEN_ELFNOTE_PHYS32_ENTRY that QEMU's PVH boot uses."""
    if len(elf) < 64 or elf[:6] != b"\x7fELF\x02\x01":
        return False
    phoff, phentsize, phnum = _u64(elf, 0x20), _u16(elf, 0x36), _u16(elf, 0x38)
    for i in range(phnum):
        ph = phoff + i * phentsize
        if ph + 40 > len(elf) or _u32(elf, ph) != 4:  # PT_NOTE
            continue
        pos, end = _u64(elf, ph + 8), _u64(elf, ph + 8) + _u64(elf, ph + 32)
        while pos + 12 <= min(end, len(elf)):
            namesz, descsz, kind = _u32(elf, pos), _u32(elf, pos + 4), _u32(elf, pos + 8)
            name = elf[pos + 12:pos + 12 + namesz].rstrip(b"\0")
            if name == b"Xen" and kind == 18:
                return True
            pos += 12 + (namesz + 3) // 4 * 4 + (descsz + 3) // 4 * 4
    return False


def _u16(b: bytes, at: int) -> int:
    return int.from_bytes(b[at:at + 2], "little")


def _u32(b: bytes, at: int) -> int:
    return int.from_bytes(b[at:at + 4], "little")


def _u64(b: bytes, at: int) -> int:
    return int.from_bytes(b[at:at + 8], "little")


def project_dir() -> Path | None:
    """The source checkout nslab runs from (holds pyproject.toml), or None for an installed copy."""
    root = Path(__file__).resolve().parent.parent
    return root if (root / "pyproject.toml").is_file() else None


def find_vng() -> str | None:
    """vng beside the running interpreter first (the virtme-ng nslab was installed with), then PATH."""
    beside = Path(sys.executable).parent / "vng"
    if beside.is_file() and os.access(beside, os.X_OK):
        return str(beside)
    return shutil.which("vng")


def vng_path(vng: str) -> str:
    """The PATH vng runs with: its own directory first, so that the virtme-run beside it is the one
    its shell finds (even under sudo's secure_path)."""
    return os.pathsep.join([str(Path(vng).parent), os.environ.get("PATH", os.defpath)])


def vng_virtiofsd(vng: str) -> str | None:
    """The virtiofsd that vng will share the host's root through, or None when it will use 9p.

    vng takes the first of its candidates (virtme/commands/run.py,
    _get_virtiofsd_path) that answers --version, and starts it with the Rust
    daemon's options. QEMU up to 7.2 ships a C virtiofsd (on Debian 12
    /usr/lib/qemu/virtiofsd) that answers --version but rejects those options;
    vng then waits 3.1 s for it to start before it falls back to 9p. So only
    a daemon whose --help offers --shared-dir counts.
    """
    candidates = [_guest_tools_virtiofsd(), shutil.which("virtiofsd", path=vng_path(vng)), *_VIRTIOFSD_PATHS]
    for path in candidates:
        if not path or not os.path.isfile(path) or not os.access(path, os.X_OK):
            continue
        if _answers(path, "--version") is None:
            continue
        help_text = _answers(path, "--help")
        return path if help_text is not None and b"--shared-dir" in help_text else None
    return None


# Where vng looks for virtiofsd after its own guest tools and PATH, in its order.
_VIRTIOFSD_PATHS = ("/usr/libexec/virtiofsd", "/usr/lib/virtiofsd/virtiofsd", "/usr/lib/virtiofsd",
                    "/usr/lib/qemu/virtiofsd")


def _guest_tools_virtiofsd() -> str | None:
    """virtme's guest/bin/virtiofsd, vng's first choice (virtme-ng's packages don't ship one today)."""
    import importlib.util
    try:
        spec = importlib.util.find_spec("virtme")
    except (ImportError, ValueError):
        return None
    if spec is None or not spec.submodule_search_locations:
        return None
    return str(Path(list(spec.submodule_search_locations)[0]) / "guest" / "bin" / "virtiofsd")


def _answers(path: str, option: str) -> bytes | None:
    """path OPTION's output when it exits 0 within 5 s, else None."""
    try:
        done = subprocess.run([path, option], stdin=subprocess.DEVNULL, capture_output=True, timeout=5)
    except (OSError, subprocess.TimeoutExpired):
        return None
    return done.stdout + done.stderr if done.returncode == 0 else None


def find_busybox() -> str | None:
    """The busybox virtme-ng builds its initramfs around (it looks for the same names)."""
    for name in ("busybox-static", "busybox.static", "busybox"):
        if found := shutil.which(name):
            return found
    return None


def guest_script(command: list[str], path_dirs: list[str] = ()) -> str:
    """The sh script the VM runs: PATH, then exec of command with its exit status.

    Each argument is quoted with shlex.join, so the guest's sh hands command to
    exec word for word (no expansion, globbing or splitting of user strings).
    """
    if not command:
        raise UsageError("nslab vm: no command given (usage: nslab vm -- COMMAND...)")
    lines = []
    if path_dirs:
        # The guest's PATH is Debian's default, without e.g. pyenv: put the
        # interpreter that has nslab and pyroute2 first.
        lines.append("PATH=" + ":".join(shlex.quote(d) for d in path_dirs) + ':"$PATH"; export PATH')
    lines.append("exec " + shlex.join(command))
    return "\n".join(lines)


def build_argv(command: list[str], kernel=None, memory=None, kvm=None, rwdirs=None,
               cwd=None, cpus: int | None = None) -> list[str]:
    """The vng argv that boots kernel and runs command as root; this is what --dry-run shows.

    kernel: a vmlinuz path (default find_kernel()); memory: a QEMU size like
    "1G"; kvm: None probes kvm_usable(); rwdirs: host directories the guest may
    write (default: the project checkout and cwd when they are not "/");
    cwd: the guest's working directory (default: the current one).
    Under TCG the first call for a kernel unpacks it into IMAGE_CACHE (boot_image).
    Raises EnvironmentMissing when vng or a kernel is missing, UsageError for
    a value that vng can't pass on safely.
    """
    vng = find_vng()
    if vng is None:
        raise EnvironmentMissing(
            "virtme-ng (vng) is not installed\n"
            "  fix: python3 -m pip install virtme-ng (or run scripts/install.sh)")
    if kernel is None:
        kernel = find_kernel()
        if kernel is None:
            raise EnvironmentMissing(
                "no kernel with IPVS (CONFIG_IP_VS=m/y and its modules) in /boot\n"
                "  fix: apt-get install linux-image-amd64")
    kernel = Path(kernel)
    if not kernel.is_file():
        raise EnvironmentMissing(f"kernel image {kernel} does not exist\n"
                                 "  fix: pass --kernel /boot/vmlinuz-VERSION, or apt-get install linux-image-amd64")
    memory = str(memory or DEFAULT_MEMORY)
    if not _SAFE_MEMORY.fullmatch(memory):
        raise UsageError(f"nslab vm: memory {memory!r} is not a size like 512M or 2G")
    cwd = str(Path(cwd or os.getcwd()).resolve())
    if rwdirs is None:
        rwdirs = [str(d) for d in (project_dir(), cwd) if d is not None]
    dirs = []
    for d in rwdirs:
        d = str(Path(d).resolve())
        if d != "/" and d not in dirs:  # "/" would make the host's whole root writable
            dirs.append(d)
    for path in [str(kernel), cwd, *dirs]:
        if not _SAFE_PATH.fullmatch(path):
            raise UsageError(f"nslab vm: path {path!r} has characters virtme-ng can't pass through "
                             "its shell (use only letters, digits and ._/+@%:-)")
    script = guest_script(list(command), [str(Path(sys.executable).parent)])
    if len(script.encode()) > _MAX_SCRIPT:
        raise UsageError("nslab vm: the command is too long for the kernel command line; "
                         "put it in a script and run `nslab vm -- sh SCRIPT`")
    if kvm is None:
        kvm = kvm_usable(kernel=kernel)
    image = kernel if kvm else boot_image(kernel)  # under KVM the bzImage unpacks itself in a blink
    if not _SAFE_PATH.fullmatch(str(image)):
        image = kernel
    argv = [vng, "--run", str(image), "--memory", memory]
    if not kvm:
        argv.append("--disable-kvm")
    if vng_virtiofsd(vng) is None:
        argv.append("--force-9p")  # 9p is what vng ends up with anyway: skip its futile virtiofsd start
    argv += ["--append", "modprobe.blacklist=" + ",".join(GUEST_BLACKLIST)]
    if cpus is not None:
        argv += ["--cpus", str(int(cpus))]
    for d in dirs:
        argv += ["--rwdir", d]
    argv += ["--cwd", cwd]
    # --exec=VALUE, not two words, so a script starting with '-' is never an
    # option; vng shlex-quotes this one value for its host shell (the only
    # value it quotes) and base64-encodes it onto the kernel command line.
    argv.append("--exec=" + script)
    return argv


def run(command: list[str], kernel=None, memory=None, kvm=None, rwdirs=None, cwd=None,
        cpus: int | None = None, timeout: float | None = None, stdout=None, stderr=None) -> int:
    """Boot the VM, run command there as root, stream its output, return its exit status.

    stdout/stderr: binary streams to copy the VM's output to (default: this
    process's). timeout: seconds before the VM is killed (NslabError).
    Raises EnvironmentMissing (exit code 3) when qemu, busybox, vng or a
    kernel is missing, UsageError for a bad argument.
    """
    if shutil.which(QEMU) is None:
        raise EnvironmentMissing(f"{QEMU} is not installed\n  fix: apt-get install qemu-system-x86")
    if find_busybox() is None:
        raise EnvironmentMissing("busybox is not installed\n  fix: apt-get install busybox-static")
    argv = build_argv(command, kernel=kernel, memory=memory, kvm=kvm, rwdirs=rwdirs, cwd=cwd, cpus=cpus)
    env = dict(os.environ)
    env["PATH"] = vng_path(argv[0])  # vng starts `virtme-run` by name through a shell
    out = stdout if stdout is not None else _binary(sys.stdout)
    err = stderr if stderr is not None else _binary(sys.stderr)
    for stream in (sys.stdout, sys.stderr):
        stream.flush()  # what was printed before the VM's output stays before it
    # Pipes, not our own fds: QEMU reopens /proc/self/fd/1, which on a regular
    # file starts a new offset at 0 and overwrites what is already there.
    # A new session lets us end QEMU (vng's grandchild) with vng itself.
    proc = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            env=env, start_new_session=True)
    # SIGTERM and SIGHUP (`timeout`, a CI runner, a closed terminal) end the wait like Ctrl-C, so the VM, in a
    # session of its own that no signal to us reaches, is killed with us
    restore = interrupts.interrupt_on(signal.SIGTERM, signal.SIGHUP)
    pumps = [threading.Thread(target=_pump, args=(src, dst), daemon=True)
             for src, dst in ((proc.stdout, out), (proc.stderr, err))]
    for t in pumps:
        t.start()
    try:
        status = proc.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        _kill_group(proc)
        raise NslabError(f"nslab vm: the VM did not finish within {timeout:g} s and was stopped")
    except BaseException:
        _kill_group(proc)  # Ctrl-C: leave no QEMU behind
        raise
    finally:
        restore()
        for t in pumps:
            t.join(timeout=5)
    return status


def _binary(stream):
    return getattr(stream, "buffer", None) or _TextSink(stream)


class _TextSink:
    """Adapts a text-only stream (e.g. a StringIO in tests) to the binary writes _pump makes."""

    def __init__(self, stream):
        self.stream = stream

    def write(self, data: bytes):
        self.stream.write(data.decode("utf-8", errors="replace"))

    def flush(self):
        self.stream.flush()


def _pump(src, dst) -> None:
    try:
        while chunk := os.read(src.fileno(), 65536):
            dst.write(chunk)
            dst.flush()
    except (OSError, ValueError):
        pass  # our side closed (e.g. stdout went away): nothing more to copy
    finally:
        src.close()


def _kill_group(proc: subprocess.Popen) -> None:
    try:
        os.killpg(proc.pid, 9)
    except ProcessLookupError:
        pass
    proc.wait()
