"""The kernel VM without booting it: kernel discovery, the vng argv, the guest script's quoting."""

import base64
import shlex
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
def with_vng(monkeypatch):
    monkeypatch.setattr(vm, "find_vng", lambda: "/usr/bin/vng")


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


def test_guest_script_sets_path_and_loads_modules():
    script = vm.guest_script(["python3", "-V"], ["/opt/py 3/bin"])
    assert "PATH='/opt/py 3/bin':\"$PATH\"" in script
    assert "modprobe -a ip_vs ipip" in script
    assert script.endswith("exec python3 -V")


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
