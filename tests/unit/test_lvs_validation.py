"""LVS validation: mistakes in a service are caught before anything is built, with the fix."""

import subprocess
import sys

import pytest

from nslab import model
from nslab.errors import TopologyError
from nslab.model.schema import SCHEDULERS


def load_edited(root_dir, name, old, new):
    text = (root_dir / "topologies" / f"{name}.yaml").read_text()
    assert old in text
    return text.replace(old, new, 1)


def problems(text):
    with pytest.raises(TopologyError) as e:
        model.loads(text, "x.yaml")
    return "\n".join(e.value.problems)


def test_nat_real_server_must_route_replies_through_director(root_dir):
    text = load_edited(root_dir, "nat", "      eth0: {switch: lan, address: 10.1.0.11/24}\n    gateway: 10.1.0.1",
                       "      eth0: {switch: lan, address: 10.1.0.11/24}\n    gateway: 10.1.0.12")
    msg = problems(text)
    assert "services.web.real_servers.rs1: rs1 sends replies to 10.1.0.12 (its gateway), not through the director" in msg
    assert "set nodes.rs1.gateway: 10.1.0.1" in msg


def test_dr_real_server_must_share_the_directors_switch(root_dir):
    text = load_edited(root_dir, "dr", "      eth0: {switch: lan, address: 10.0.0.12/24}",
                       "      eth0: {switch: wan, address: 192.168.1.12/24}")
    text = text.replace("rs2:\n    interfaces:\n      eth0: {switch: wan, address: 192.168.1.12/24}\n"
                        "    gateway: 10.0.0.1", "rs2:\n    interfaces:\n      eth0: {switch: wan, address: "
                        "192.168.1.12/24}\n    gateway: 192.168.1.1")
    msg = problems(text)
    assert "services.web.real_servers.rs2: DR needs rs2 on a switch shared with the director director" in msg


def test_unknown_scheduler_lists_valid_ones(root_dir):
    msg = problems(load_edited(root_dir, "dr", "scheduler: rr", "scheduler: roundrobin"))
    assert "services.web.scheduler: 'roundrobin' is not a known IPVS scheduler (one of: rr, wrr" in msg
    assert all(s in msg for s in SCHEDULERS)


def test_cli_exit_code_2_for_invalid_service(root_dir, tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text(load_edited(root_dir, "dr", "vip: 10.0.0.100:80", "vip: 10.0.0.100"))
    out = subprocess.run([sys.executable, "-m", "nslab.cli", "up", str(bad)], capture_output=True, text=True)
    assert out.returncode == 2 and "services.web.vip: '10.0.0.100' is not IP:PORT" in out.stderr


def _pairs(services: int, directors: int) -> str:
    """A lab with `services` DR services, each on a VRRP group of `directors` directors."""
    names = [f"d{k}" for k in range(directors)]
    nodes = "".join(f"  {n}: {{interfaces: {{eth0: {{switch: lan, address: 10.0.0.{k + 1}/24}}}}}}\n"
                    for k, n in enumerate(names))
    nodes += "  rs1: {interfaces: {eth0: {switch: lan, address: 10.0.0.100/24}}, app: http}\n"
    svcs = "".join(f"  w{i}: {{directors: [{', '.join(names)}], vip: '10.1.{i // 250}.{i % 250 + 1}:80', "
                   "forward: dr, real_servers: {rs1: }}\n" for i in range(services))
    return f"name: t\nswitches: [lan]\nnodes:\n{nodes}services:\n{svcs}"


def test_vrrp_ids_and_priorities_stay_within_what_keepalived_takes():
    """The 256th VRRP service got virtual_router_id 256, and a 16th director priority 0: validate said ok,
    and keepalived (VRID 1-255, priority 1-254) would refuse the config at up."""
    model.loads(_pairs(255, 2), "x.yaml")
    model.loads(_pairs(1, 15), "x.yaml")
    msg = problems(_pairs(256, 2))
    assert msg.count("VRRP numbers at most 255") == 1 and "services.w255.directors" in msg
    assert "VRRP priorities (150, then 10 less for each backup) would fall below 1" in problems(_pairs(1, 16))
