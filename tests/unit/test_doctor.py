"""doctor requires only what nslab itself runs; the tools for replaying `nslab plan` by hand are optional."""

import shutil

from nslab import cli
from nslab.kernel import caps


def _only(monkeypatch, present, ipip="module"):
    real = shutil.which
    monkeypatch.setattr(caps.shutil, "which", lambda name: real(name) if name in present else None)
    real_state = caps._feature_state
    monkeypatch.setattr(caps, "_feature_state",
                        lambda module, key: ipip if module == "ipip" else real_state(module, key))


def test_replay_tools_missing_is_not_a_failure(monkeypatch):
    _only(monkeypatch, {"modprobe"})
    replay = caps._check_replay_tools()
    assert replay.ok
    assert "nft" in replay.detail and "optional: for replaying `nslab plan`" in replay.detail
    assert "ipvsadm" in replay.detail and "apt-get install" in replay.detail
    assert "nft" not in caps._check_nftables().detail  # nslab programs nftables through netlink


def test_modprobe_required_only_while_ipip_waits_to_be_loaded(monkeypatch):
    _only(monkeypatch, set(), ipip="module")
    check = caps._check_modprobe()
    assert not check.ok and check.fix == "apt-get install kmod"
    for state in ("loaded", "built-in", "missing"):
        _only(monkeypatch, set(), ipip=state)
        assert caps._check_modprobe().ok


def test_exit_code_counts_required_checks_only(monkeypatch, capsys):
    ok = [caps.Check("root", True, "x"), caps.Check("replay-tools", True, "ipvsadm not found (optional: ...)")]
    monkeypatch.setattr(caps, "probe", lambda: ok)
    assert cli.main(["doctor"]) == 0
    monkeypatch.setattr(caps, "probe", lambda: ok + [caps.Check("ipvs", False, "missing", "apt-get install x")])
    assert cli.main(["doctor"]) == 3
    capsys.readouterr()


def test_a_feature_the_kernel_vm_has_is_no_failure_while_the_vm_works(monkeypatch, capsys):
    ipvs = caps.Check("ipvs", False, "IPVS missing", caps._INSIDE_VM)
    vm_ok = [caps.Check("vm-qemu", True, "x"), caps.Check("vm-kernel", True, "y")]
    monkeypatch.setattr(caps, "probe", lambda: [caps.Check("root", True, "x"), ipvs] + vm_ok)
    assert cli.main(["doctor"]) == 0
    out = capsys.readouterr().out
    assert "in-vm    ipvs: IPVS missing" in out and "run in the kernel VM: nslab vm -- nslab up FILE" in out
    vm_broken = [vm_ok[0], caps.Check("vm-kernel", False, "no kernel with IPVS", "apt-get install linux-image-amd64")]
    monkeypatch.setattr(caps, "probe", lambda: [caps.Check("root", True, "x"), ipvs] + vm_broken)
    assert cli.main(["doctor"]) == 3
    assert "MISSING  ipvs" in capsys.readouterr().out
