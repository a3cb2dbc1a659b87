"""keepalived.conf written from the resolved lab, and the plan around it: keepalived owns the IPVS table of a
health-checked or paired service (and a pair's VIP); keepalived's own parser accepts every config."""

import pathlib
import re
import shutil
import socket
import subprocess

import pytest

from nslab import model
from nslab.plan import keepalived, planner
from nslab.plan.actions import AddAddress, IpvsDest, IpvsService, StartApp, StartKeepalived

ROOT = pathlib.Path(__file__).resolve().parents[2]


def resolved(name):
    return model.resolve(model.load(str(ROOT / "topologies" / name)))


def variant(name, old, new):
    text = (ROOT / "topologies" / name).read_text()
    assert old in text
    return model.resolve(model.loads(text.replace(old, new), name))


def blocks(conf, keyword):
    """The text of each top-level `keyword ... { ... }` block."""
    return re.findall(rf"^{keyword} .*?^}}", conf, re.S | re.M)


def test_health_checked_director_gets_a_virtual_server_and_no_vrrp():
    conf = keepalived.config(resolved("dr-health.yaml"), "director")
    assert blocks(conf, "vrrp_instance") == []
    [vs] = blocks(conf, "virtual_server")
    assert vs.startswith("virtual_server 10.0.0.100 80 {")
    for line in ("delay_loop 1", "lb_algo wrr", "lvs_method DR", "protocol TCP", "sorry_server 10.0.0.20 80"):
        assert f"    {line}\n" in vs
    assert re.findall(r"real_server (\S+) 80", vs) == ["10.0.0.11", "10.0.0.12", "10.0.0.13"]
    assert vs.count("HTTP_GET {") == 3 and vs.count("path /\n") == 3 and vs.count("status_code 200") == 3
    # retries: 1 -> out after 2 failures; retried and re-checked every interval, not keepalived's 3 s default
    assert len(re.findall(r"^ +retry 1$", vs, re.M)) == 3 and vs.count("delay_before_retry 1\n") == 3
    assert "inhibit_on_failure" not in vs
    assert '"/usr/bin/touch /run/nslab/dr-health/keepalived/director.web.rs2.down"' in vs


def test_on_failure_weight0_and_a_tcp_check():
    rlab = variant("dr-health.yaml", "health: {check: http, path: /, interval: 1, timeout: 1, retries: 1}\n"
                   "    on_failure: remove", "health: {check: tcp, interval: 3, timeout: 2, retries: 0}\n"
                   "    on_failure: weight0")
    [vs] = blocks(keepalived.config(rlab, "director"), "virtual_server")
    assert "    inhibit_on_failure\n" in vs and "HTTP_GET" not in vs and vs.count("TCP_CHECK {") == 3
    assert "delay_loop 3\n" in vs and vs.count("connect_timeout 2\n") == 3 and len(re.findall(r"^ +retry 0$", vs, re.M)) == 3


def test_pair_master_and_backup_share_one_virtual_router_and_the_vip():
    rlab = resolved("dr-ha.yaml")
    d1, d2 = (keepalived.config(rlab, d) for d in ("d1", "d2"))
    [v1], [v2] = blocks(d1, "vrrp_instance"), blocks(d2, "vrrp_instance")
    assert "state MASTER" in v1 and "priority 150" in v1
    assert "state BACKUP" in v2 and "priority 140" in v2
    for v in (v1, v2):
        assert "virtual_router_id 1\n" in v and "interface eth0\n" in v and "10.0.0.100/32 dev eth0" in v
    # both directors program the same table and check the same servers (each notifies its own files)
    assert [vs.replace("/d1.", "/d2.").replace("d1 balances", "d2 balances") for vs in blocks(d1, "virtual_server")] \
        == blocks(d2, "virtual_server")
    assert keepalived.directors(rlab) == ["d1", "d2"]


def test_keepalived_owns_the_ipvs_table_and_a_pairs_vip():
    rlab = resolved("dr-ha.yaml")
    actions = planner.plan(rlab)
    assert not [a for a in actions if isinstance(a, (IpvsService, IpvsDest))]
    vips = [a for a in actions if isinstance(a, AddAddress) and a.cidr == "10.0.0.100/32"]
    assert sorted(a.ns for a in vips) == ["dr-ha-rs1", "dr-ha-rs2"]  # on the real servers' lo, never a director
    starts = [a for a in actions if isinstance(a, StartKeepalived)]
    assert [a.ns for a in starts] == ["dr-ha-d1", "dr-ha-d2"]
    assert actions.index(starts[0]) > max(i for i, a in enumerate(actions) if isinstance(a, StartApp))
    assert all(a.conf.startswith("/run/nslab/dr-ha/") and all(p.startswith("/run/nslab/dr-ha/") for p in a.pids)
               for a in starts)
    assert "--dont-fork" in starts[0].keepalived_argv() and "--no-syslog" in starts[0].keepalived_argv()


def test_one_director_keeps_its_vip_and_a_dr_sorry_server_holds_it_too():
    actions = planner.plan(resolved("dr-health.yaml"))
    vips = {a.ns: a.dev for a in actions if isinstance(a, AddAddress) and a.cidr == "10.0.0.100/32"}
    assert vips == {"dr-health-director": "eth0", "dr-health-rs1": "lo", "dr-health-rs2": "lo",
                    "dr-health-rs3": "lo", "dr-health-sorry": "lo"}
    sorry_app = next(a for a in actions if isinstance(a, StartApp) and a.node == "sorry")
    assert sorry_app.port == 80


def test_plan_prints_the_config_with_its_reason():
    rlab = resolved("dr-ha.yaml")
    start = next(a for a in planner.plan(rlab) if isinstance(a, StartKeepalived) and a.node == "d2")
    mkdir, heredoc, run = start.commands()
    assert heredoc.startswith("cat > /run/nslab/dr-ha/keepalived-d2.conf <<'EOF'\n") and heredoc.endswith("\nEOF")
    assert start.config in heredoc and run.startswith("ip netns exec dr-ha-d2 keepalived ") and run.endswith(" &")
    assert "VRRP backup of 10.0.0.100" in start.reason


def _exists_here(ifname: str) -> bool:
    try:
        socket.if_nametoindex(ifname)  # asks this network namespace (/sys may show another one's)
        return True
    except OSError:
        return False


@pytest.mark.skipif(not shutil.which("keepalived"), reason="keepalived is not installed (scripts/install.sh)")
@pytest.mark.parametrize("lab,director", [("dr-health.yaml", "director"), ("dr-ha.yaml", "d1"),
                                          ("dr-ha.yaml", "d2")])
def test_keepalived_accepts_the_config(tmp_path, lab, director):
    path = tmp_path / "keepalived.conf"
    path.write_text(keepalived.config(resolved(lab), director))
    out = subprocess.run(["keepalived", "--config-test", "--use-file", str(path)], capture_output=True, text=True)
    # keepalived also checks that a VRRP interface exists in the namespace it runs in: the director's eth0
    # is in the lab, not here (a container with --network none has no eth0 at all). Only that is excused.
    problems = [line for line in (out.stdout + out.stderr).splitlines() if "WARNING" in line or "ERROR" in line]
    absent = [p for p in problems if (m := re.search(r"interface (\S+) for .+ doesn't exist", p))
              and not _exists_here(m.group(1))]
    assert problems == absent, out.stdout + out.stderr
    assert out.returncode == (5 if absent else 0), out.stdout + out.stderr


def test_health_check_judgement():
    from nslab.verify.concepts import check_health
    svc = resolved("dr-health.yaml").service("web")
    ev = {"node": "rs1", "bound": 4, "waited": 20, "out_after": 2.1, "back_after": 1.3,
          "failed": {"by_server": {"rs2": 5, "rs3": 5}, "failed": 0}, "healed": {"by_server": {"rs1": 3, "rs2": 4}}}
    assert check_health(svc, ev).status == "PASS"
    assert check_health(svc, {**ev, "failed": {"by_server": {"rs1": 1, "rs2": 9}}}).status == "FAIL"
    assert check_health(svc, {**ev, "out_after": None}).status == "FAIL"
    assert check_health(svc, {**ev, "healed": {"by_server": {"rs2": 7}}}).status == "FAIL"
    nothing = check_health(svc, {**ev, "failed": {"by_server": {}, "failed": 10}})
    assert nothing.status == "SKIP" and "nothing answered" in nothing.summary
    assert check_health(svc, {"skip": "rs1 is failed already"}).status == "SKIP"
