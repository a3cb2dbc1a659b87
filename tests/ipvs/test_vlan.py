"""VLANs (needs 802.1Q and VLAN-filtering bridges; run in the kernel VM where the host lacks them): the lab's
broadcasts stay inside their VLAN and the router on the trunk joins the two; its twin, two VLANs sharing a
subnet, fails naming both VLANs."""

import json
import subprocess

import pytest

pytestmark = pytest.mark.nslab_needs("vlan")


def test_vlan_lab_passes_verify(nslab_lab, root_dir):
    lab = nslab_lab(root_dir / "topologies" / "vlan.yaml")
    report = lab.verify()
    assert report.ok, str(report)
    vlans = next(r for r in report.results if r.name == "vlans")
    assert vlans.status == "PASS" and "only to ports of its own VLAN" in vlans.summary, str(report)
    # host1's broadcast (VLAN 10) was handed to host3 and the router, never to host2 (VLAN 20)
    asked = [e for e in vlans.evidence if e.startswith("VLAN 10:") and "tell 10.0.10.10" in e]
    assert asked and all("host2" not in e.split("handed to")[1] for e in asked), vlans.evidence
    fabric = json.loads(subprocess.run(["ip", "netns", "exec", f"{lab.name}-fabric", "bridge", "-j", "vlan", "show"],
                                       capture_output=True, text=True, check=True).stdout)
    ports = {p["ifname"]: sorted(v["vlan"] for v in p["vlans"]) for p in fabric}
    assert ports["host1-eth0"] == [10] and ports["host2-eth0"] == [20] and ports["router-eth0"] == [10, 20]


def test_twin_same_subnet_fails_naming_both_vlans(nslab_lab, root_dir):
    report = nslab_lab(root_dir / "topologies" / "broken" / "vlan-same-subnet.yaml").verify()
    failed = {r.name: r.summary for r in report.failed}
    assert "vlans" in failed, str(report)
    assert "VLAN 10" in failed["vlans"] and "VLAN 20" in failed["vlans"] and "10.0.10.20" in failed["vlans"]
