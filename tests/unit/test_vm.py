"""The kernel VM without booting it: kernel discovery, the vng argv, the guest script's quoting."""

import base64
import bz2
import gzip
import lzma
import os
import shlex
import struct
import subprocess
from pathlib import Path

import pytest

from nslab import vm
from nslab.errors import EnvironmentMissing, UsageError


def make_kernel(boot, modules, version, ipvs):
    (boot / f"vmlinuz-{version}").write_bytes(b"\0fake kernel")
    lines = ["CONFIG_NET_NS=y", f"CONFIG_IP_VS={ipvs}" if ipvs else "# CONFIG_IP_VS is not set"]
    (boot / f"config-{version}").write_text("\n".join(lines) + "\n")
    (modules / version).mkdir()


@pytest.fixture
def boot(tmp_path):
    (tmp_path / "boot").mkdir()
    (tmp_path / "modules").mkdir()
    return tmp_path / "boot", tmp_path / "modules"


def test_find_kernel_picks_newest_with_ipvs(boot):
    b, m = boot
    make_kernel(b, m, "6.1.0-9-amd64", "m")
    make_kernel(b, m, "6.1.0-56-amd64", "m")  # newer than -9, though "5" < "9" as text
    make_kernel(b, m, "6.10.0-1-amd64", None)  # newest, but without IPVS
    assert vm.find_kernel(b, m) == b / "vmlinuz-6.1.0-56-amd64"


def test_find_kernel_sorts_by_version_not_text(boot):
    b, m = boot
    make_kernel(b, m, "6.9.0-1-amd64", "y")
    make_kernel(b, m, "6.10.0-1-amd64", "m")
    assert vm.find_kernel(b, m) == b / "vmlinuz-6.10.0-1-amd64"


def test_find_kernel_needs_modules_for_a_modular_ipvs(boot):
    b, m = boot
    make_kernel(b, m, "6.1.0-1-amd64", "m")
    make_kernel(b, m, "6.1.0-2-amd64", "m")
    (m / "6.1.0-2-amd64").rmdir()  # modules purged: modprobe ip_vs would fail
    assert vm.find_kernel(b, m) == b / "vmlinuz-6.1.0-1-amd64"
    assert vm.find_kernel(b, None) == b / "vmlinuz-6.1.0-2-amd64"


def test_find_kernel_none(boot):
    b, m = boot
    make_kernel(b, m, "6.1.0-1-amd64", None)
    assert vm.find_kernel(b, m) is None
    assert vm.find_kernel(b / "absent", m) is None


@pytest.fixture
def fake_kernel(tmp_path):
    kernel = tmp_path / "vmlinuz-6.1.0-1-amd64"
    kernel.write_bytes(b"\0")
    return kernel


@pytest.fixture
def with_vng(monkeypatch, tmp_path):
    monkeypatch.setattr(vm, "find_vng", lambda: "/usr/bin/vng")
    monkeypatch.setattr(vm, "vng_virtiofsd", lambda vng: None)  # as on Debian 12: 9p
    monkeypatch.setattr(vm, "IMAGE_CACHE", tmp_path / "image-cache")


def option(argv, name):
    return argv[argv.index(name) + 1]


def exec_script(argv):
    (script,) = [a[len("--exec="):] for a in argv if a.startswith("--exec=")]
    return script


def test_build_argv_options(with_vng, fake_kernel, tmp_path):
    argv = vm.build_argv(["true"], kernel=fake_kernel, memory="2G", kvm=False, rwdirs=[tmp_path], cwd=tmp_path)
    assert argv[0] == "/usr/bin/vng"
    assert option(argv, "--run") == str(fake_kernel)
    assert option(argv, "--memory") == "2G"
    assert "--disable-kvm" in argv
    assert option(argv, "--rwdir") == str(tmp_path)
    assert option(argv, "--cwd") == str(tmp_path)


def test_build_argv_kvm_and_defaults(with_vng, fake_kernel, tmp_path):
    argv = vm.build_argv(["true"], kernel=fake_kernel, kvm=True, cwd=tmp_path)
    assert "--disable-kvm" not in argv
    assert option(argv, "--memory") == vm.DEFAULT_MEMORY
    rwdirs = [argv[i + 1] for i, a in enumerate(argv) if a == "--rwdir"]
    assert str(tmp_path) in rwdirs  # cwd is writable by default (so is the checkout)


def test_build_argv_never_makes_host_root_writable(with_vng, fake_kernel):
    argv = vm.build_argv(["true"], kernel=fake_kernel, kvm=False, rwdirs=["/"], cwd="/")
    assert "--rwdir" not in argv


def test_command_survives_spaces_quotes_and_shell_syntax(with_vng, fake_kernel, tmp_path):
    command = ["printf", "<%s>\\n", "a b", "it's", '"dq"', "$HOME", "`id`", "x;y", "*", "-x", ""]
    argv = vm.build_argv(command, kernel=fake_kernel, kvm=False, cwd=tmp_path)
    script = exec_script(argv)
    assert script.splitlines()[-1] == "exec " + shlex.join(command)
    # The guest's sh must see exactly our words: run the same script's last line here.
    out = subprocess.run(["sh", "-c", script.splitlines()[-1]], capture_output=True, text=True, check=True).stdout
    assert out == "".join(f"<{a}>\n" for a in command[2:])


def test_vng_shell_quoting_round_trips(with_vng, fake_kernel, tmp_path):
    # vng quotes the --exec value for its host shell with shlex.quote, then
    # base64-encodes it: emulate that hop and check nothing was interpreted.
    argv = vm.build_argv(["echo", "$(touch /nope)", "'"], kernel=fake_kernel, kvm=False, cwd=tmp_path)
    script = exec_script(argv)
    hop = subprocess.run(["sh", "-c", "printf %s " + shlex.quote(script)], capture_output=True, text=True).stdout
    assert hop == script
    assert base64.b64decode(base64.b64encode(script.encode())).decode() == script


def test_guest_script_sets_path_and_preloads_nothing():
    # ip_vs loads itself on the first IPVS netlink request, nslab loads ipip for TUN labs.
    script = vm.guest_script(["python3", "-V"], ["/opt/py 3/bin"])
    assert "PATH='/opt/py 3/bin':\"$PATH\"" in script
    assert "modprobe" not in script
    assert script.endswith("exec python3 -V")


def test_boot_blacklists_only_modules_no_lab_uses(with_vng, fake_kernel, tmp_path):
    argv = vm.build_argv(["true"], kernel=fake_kernel, kvm=False, cwd=tmp_path)
    (append,) = [argv[i + 1] for i, a in enumerate(argv) if a == "--append"]
    key, _, value = append.partition("=")
    assert key == "modprobe.blacklist"
    blacklisted = set(value.split(","))
    assert {"kvm", "kvm_amd", "kvm_intel", "ahci", "psmouse"} <= blacklisted
    lab_modules = {"ip_vs", "ip_vs_rr", "ipip", "tunnel4", "ip_tunnel", "nf_conntrack", "nf_nat", "nf_tables",
                   "veth", "bridge", "br_netfilter", "libcrc32c", "crc32c_generic", "9p", "virtio_console"}
    assert not blacklisted & lab_modules
    assert all(vm._SAFE_PATH.fullmatch("/" + m) for m in blacklisted)  # nothing vng's shell would interpret


def test_9p_forced_unless_vng_has_a_virtiofsd_it_can_start(with_vng, fake_kernel, tmp_path, monkeypatch):
    assert "--force-9p" in vm.build_argv(["true"], kernel=fake_kernel, kvm=False, cwd=tmp_path)
    monkeypatch.setattr(vm, "vng_virtiofsd", lambda vng: "/usr/libexec/virtiofsd")
    assert "--force-9p" not in vm.build_argv(["true"], kernel=fake_kernel, kvm=False, cwd=tmp_path)


def fake_daemon(path, help_text):
    path.write_text(f"#!/bin/sh\ncase $1 in --version) echo 'virtiofsd 1';; --help) echo '{help_text}';; "
                    "*) exit 1;; esac\n")
    path.chmod(0o755)
    return str(path)


def test_vng_virtiofsd_takes_vngs_first_choice_and_only_the_rust_daemon(tmp_path, monkeypatch):
    monkeypatch.setattr(vm, "_guest_tools_virtiofsd", lambda: str(tmp_path / "absent"))
    monkeypatch.setenv("PATH", str(tmp_path / "nothing-here"))
    qemu_c = fake_daemon(tmp_path / "qemu-virtiofsd", "-o source=PATH  --socket-path=PATH")
    rust = fake_daemon(tmp_path / "rust-virtiofsd", "--shared-dir <SHARED_DIR>  --socket-path <SOCKET>")
    broken = tmp_path / "broken-virtiofsd"
    broken.write_text("#!/bin/sh\nexit 1\n")
    broken.chmod(0o755)
    vng = str(tmp_path / "vng")
    monkeypatch.setattr(vm, "_VIRTIOFSD_PATHS", (str(broken), rust, qemu_c))
    assert vm.vng_virtiofsd(vng) == rust  # vng skips one that fails --version
    # vng would pick QEMU's C daemon first, fail to start it and fall back to 9p.
    monkeypatch.setattr(vm, "_VIRTIOFSD_PATHS", (qemu_c, rust))
    assert vm.vng_virtiofsd(vng) is None
    monkeypatch.setattr(vm, "_VIRTIOFSD_PATHS", ())
    assert vm.vng_virtiofsd(vng) is None
    (tmp_path / "bin").mkdir()
    fake_daemon(tmp_path / "bin" / "virtiofsd", "--shared-dir")
    monkeypatch.setenv("PATH", str(tmp_path / "bin"))  # vng's own PATH comes before the fixed places
    monkeypatch.setattr(vm, "_VIRTIOFSD_PATHS", (qemu_c,))
    assert vm.vng_virtiofsd(vng) == str(tmp_path / "bin" / "virtiofsd")


def test_guest_path_is_this_interpreter(with_vng, fake_kernel, tmp_path):
    import sys

    script = exec_script(vm.build_argv(["true"], kernel=fake_kernel, kvm=False, cwd=tmp_path))
    assert shlex.quote(str(Path(sys.executable).parent)) in script


@pytest.mark.parametrize("memory", ["1G; rm -rf /", "$(id)", "lots", "0"])
def test_memory_rejected_when_unsafe(with_vng, fake_kernel, tmp_path, memory):
    with pytest.raises(UsageError):
        vm.build_argv(["true"], kernel=fake_kernel, memory=memory, kvm=False, cwd=tmp_path)


def test_paths_rejected_when_vng_would_hand_them_to_a_shell(with_vng, fake_kernel, tmp_path):
    bad = tmp_path / "a b;c"
    bad.mkdir()
    with pytest.raises(UsageError):
        vm.build_argv(["true"], kernel=fake_kernel, kvm=False, cwd=bad)


def test_empty_and_overlong_commands(with_vng, fake_kernel, tmp_path):
    with pytest.raises(UsageError):
        vm.build_argv([], kernel=fake_kernel, kvm=False, cwd=tmp_path)
    with pytest.raises(UsageError):
        vm.build_argv(["echo", "x" * 5000], kernel=fake_kernel, kvm=False, cwd=tmp_path)


def test_missing_vng_and_kernel(monkeypatch, fake_kernel, tmp_path):
    monkeypatch.setattr(vm, "find_vng", lambda: None)
    with pytest.raises(EnvironmentMissing) as e:
        vm.build_argv(["true"], kernel=fake_kernel, kvm=False)
    assert e.value.exit_code == 3 and "pip install virtme-ng" in str(e.value)
    monkeypatch.setattr(vm, "find_vng", lambda: "/usr/bin/vng")
    monkeypatch.setattr(vm, "find_kernel", lambda: None)
    with pytest.raises(EnvironmentMissing) as e:
        vm.build_argv(["true"], kvm=False, cwd=tmp_path)
    assert "linux-image-amd64" in str(e.value)


def test_run_without_qemu(monkeypatch):
    monkeypatch.setattr(vm.shutil, "which", lambda name: None)
    with pytest.raises(EnvironmentMissing) as e:
        vm.run(["true"])
    assert "qemu-system-x86" in str(e.value)


def test_kvm_override(monkeypatch):
    monkeypatch.setenv(vm.KVM_ENV, "0")
    assert vm.kvm_usable() is False
    monkeypatch.setenv(vm.KVM_ENV, "1")
    assert vm.kvm_usable() is True


def test_kvm_without_dev_kvm(monkeypatch):
    monkeypatch.delenv(vm.KVM_ENV, raising=False)
    monkeypatch.setattr(vm, "_kvm_ioctls_work", lambda: False)
    assert vm.kvm_usable() is False


def pvh_elf(note_type=18):
    """A minimal 64-bit ELF whose one PT_NOTE holds a Xen note (type 18: the PVH entry point)."""
    note = struct.pack("<III", 4, 4, note_type) + b"Xen\0" + b"\0\0\0\x01"
    header = b"\x7fELF\x02\x01\x01" + bytes(9) + struct.pack("<HHIQQQIHHHHHH", 2, 0x3E, 1, 0, 64, 0, 0, 64, 56, 1,
                                                                 0, 0, 0)
    phdr = struct.pack("<IIQQQQQQ", 4, 4, 120, 0, 0, len(note), len(note), 4)
    return header + phdr + note


def bzimage(payload, setup_sects=1, protocol=0x20F):
    """A bzImage shell: boot sector and setup (setup_sects + 1 sectors), then the compressed payload."""
    head = bytearray((setup_sects + 1) * 512)
    head[0x1F1] = setup_sects
    head[0x202:0x206] = b"HdrS"
    head[0x206:0x208] = protocol.to_bytes(2, "little")
    head[0x248:0x24C] = (16).to_bytes(4, "little")  # payload_offset, from the end of setup
    head[0x24C:0x250] = len(payload).to_bytes(4, "little")
    return bytes(head) + b"D" * 16 + payload + b"\0\0\0\0"  # decompressor code, payload, its size


def xz(data):
    return lzma.compress(data, format=lzma.FORMAT_XZ, check=lzma.CHECK_CRC32)


@pytest.mark.parametrize("compress", [xz, gzip.compress, bz2.compress])
def test_boot_image_unpacks_the_pvh_kernel_once(tmp_path, compress):
    kernel = tmp_path / "vmlinuz-6.1.0-9-amd64"
    kernel.write_bytes(bzimage(compress(pvh_elf())))
    cache = tmp_path / "cache"
    image = vm.boot_image(kernel, cache)
    assert image.parent == cache and image.name.startswith("vmlinux-6.1.0-9-amd64-")
    assert image.read_bytes() == pvh_elf()
    assert vm._SAFE_PATH.fullmatch(str(image))
    with pytest.MonkeyPatch.context() as m:
        m.setattr(vm, "_extract_vmlinux", lambda data: pytest.fail("unpacked again"))
        assert vm.boot_image(kernel, cache) == image
    assert [p.name for p in cache.iterdir()] == [image.name]  # no temporary file left


def test_boot_image_replaces_the_entry_of_a_rewritten_kernel(tmp_path):
    kernel = tmp_path / "vmlinuz-6.1.0-9-amd64"
    kernel.write_bytes(bzimage(xz(pvh_elf())))
    other = tmp_path / "vmlinuz-6.1.0-10-amd64"
    other.write_bytes(bzimage(xz(pvh_elf())))
    cache = tmp_path / "cache"
    first, kept = vm.boot_image(kernel, cache), vm.boot_image(other, cache)
    os.utime(kernel, ns=(0, 10**18))  # the package rewrote the file
    second = vm.boot_image(kernel, cache)
    assert second != first and second.is_file() and not first.exists()
    assert kept.is_file()  # another version's image stays


@pytest.mark.parametrize("content", [
    b"\0fake kernel",  # not a bzImage
    bzimage(xz(pvh_elf()), protocol=0x207),  # boot protocol without payload fields
    bzimage(xz(pvh_elf(note_type=17))),  # an ELF without the PVH entry note
    bzimage(xz(b"not an ELF at all" * 10)),
    bzimage(xz(pvh_elf())[:-40]),  # truncated xz stream
    bzimage(b"\x28\xb5\x2f\xfd" + bytes(64)),  # zstd: no decoder in the standard library
])
def test_boot_image_falls_back_to_the_kernel(tmp_path, content, monkeypatch):
    kernel = tmp_path / "vmlinuz-x"
    kernel.write_bytes(content)
    cache = tmp_path / "cache"
    assert vm.boot_image(kernel, cache) == kernel
    assert not any(p.stat().st_size for p in cache.glob("*"))
    monkeypatch.setattr(vm, "_extract_vmlinux", lambda data: pytest.fail("unpacked again"))
    assert vm.boot_image(kernel, cache) == kernel  # remembered (or not a bzImage at all: nothing to unpack)


def test_boot_image_falls_back_when_the_cache_is_not_writable(tmp_path, monkeypatch):
    kernel = tmp_path / "vmlinuz-x"
    kernel.write_bytes(bzimage(xz(pvh_elf())))
    (tmp_path / "file").write_text("")
    assert vm.boot_image(kernel, tmp_path / "file" / "cache") == kernel
    assert vm.boot_image(tmp_path / "absent", tmp_path / "cache") == tmp_path / "absent"
    (tmp_path / "ro").mkdir()
    monkeypatch.setattr(vm.os, "access", lambda path, mode: False)  # as for a non-root user (root passes chmod)
    monkeypatch.setattr(vm, "_extract_vmlinux", lambda data: pytest.fail("unpacked what can't be kept"))
    assert vm.boot_image(kernel, tmp_path / "ro") == kernel


def test_argv_boots_the_unpacked_kernel_under_tcg_only(with_vng, tmp_path):
    kernel = tmp_path / "vmlinuz-6.1.0-9-amd64"
    kernel.write_bytes(bzimage(xz(pvh_elf())))
    tcg = vm.build_argv(["true"], kernel=kernel, kvm=False, cwd=tmp_path)
    assert option(tcg, "--run") == str(vm.boot_image(kernel, vm.IMAGE_CACHE))
    assert option(tcg, "--run").startswith(str(tmp_path / "image-cache"))
    kvm = vm.build_argv(["true"], kernel=kernel, kvm=True, cwd=tmp_path)
    assert option(kvm, "--run") == str(kernel)
