"""`nslab why` on the host kernel: a healthy lab's probe is answered (exit 0, the path); each broken lab of
the catalogue gets exit 1 naming its cause and node from the kernel's evidence, and fails `verify` too."""

import json

import pytest

from nslab import cli

CATALOGUE = [  # file, from, target, cause, node, fix path, words a user would search for
    ("routing-no-gateway", "host1", "host2", "no-route", "host1", "nodes.host1.gateway", "no route"),
    ("routing-router-no-route", "host1", "host2", "no-route", "r1", "nodes.r1.routes", "no route"),
    ("routing-forward-off", "host1", "host2", "ip-forward", "r1", "nodes.r1.forward", "ip_forward"),
    ("routing-netmask", "host1", "host2", "netmask", "host1", "nodes.host1.interfaces.eth0.address", "netmask"),
    ("routing-wrong-gateway", "host1", "host2", "arp", "host2", "nodes.host2.gateway", "ARP"),
    ("routing-no-route-back", "host1", "host2", "route-back", "r2", "nodes.r2.routes", "route back"),
    ("routing-strict-rp-filter", "host1", "host2", "rp-filter", "host2",
     "nodes.host2.sysctls.net.ipv4.conf.all.rp_filter", "rp_filter"),
    ("routing-reply-other-path", "host1", "host2", "reply-path", "host2", "nodes.host2.routes", "another path"),
    ("routing-nothing-listening", "host1", "192.168.2.10:80", "nothing-listening", "host2", "nodes.host2.app",
     "nothing listening"),
    ("snat-missing", "laptop", "server", "no-snat", "router", "nodes.router.nat", "SNAT"),
]


def nslab(capsys, *argv):
    code = cli.main(list(argv))
    out = capsys.readouterr()
    return code, out.out, out.err


@pytest.mark.parametrize("lab,source,target", [("routing", "host1", "host2"), ("snat", "laptop", "server")])
def test_healthy_lab_is_answered_and_shows_the_path(make_lab, capsys, lab, source, target):
    made = make_lab(lab)
    code, out, err = nslab(capsys, "why", made.name, source, target)
    assert code == 0, out + err
    assert "answered (1 of 1" in out and "cause:" not in out
    request = " -> ".join([source, "r1", "r2", "host2"] if lab == "routing" else [source, "router", "server"])
    assert f"request: {request}" in out


@pytest.mark.parametrize("rel,source,target,cause,node,fix,words", CATALOGUE, ids=[c[0] for c in CATALOGUE])
def test_broken_lab_names_its_cause_node_and_fix(make_lab, rel, source, target, cause, node, fix, words):
    lab = make_lab(f"broken/{rel}")
    found = lab.why(source, target)
    text = str(found)
    assert not found.ok, text
    assert words in text and f" at {node}" in text and f"fix: {fix}" in text and "evidence:" in text, text
    report = found.as_dict()
    assert (report["cause"]["key"], report["cause"]["node"], report["fix"]["path"]) == (cause, node, fix), text
    assert report["evidence"] and report["last_seen"]["node"]
    assert not lab.verify(count=1).ok  # every file in topologies/broken/ fails verify too


def test_cli_exit_1_and_json_for_a_broken_lab(make_lab, capsys):
    lab = make_lab("broken/routing-forward-off")
    code, out, err = nslab(capsys, "why", lab.name, "host1", "host2", "--json")
    report = json.loads(out)
    assert code == 1 and not report["ok"] and report["fix"]["text"] == "nodes.r1.forward: true", out + err
    assert "forwarding off (net.ipv4.ip_forward=0) at r1 eth0; fix: nodes.r1.forward: true" in err


def test_why_reads_the_kernel_not_the_file(make_lab):
    """The same healthy lab, broken by hand after it is up: why finds it from the kernel's state alone."""
    lab = make_lab("routing")
    lab.run("r2", ["sysctl", "-qw", "net.ipv4.ip_forward=0"], check=True)
    found = lab.why("host1", "host2")
    assert not found.ok and (found.finding.cause, found.finding.node) == ("ip-forward", "r2"), str(found)
    assert any("Ip.InAddrErrors" in line for line in found.finding.evidence), str(found)
    assert found.last_seen["node"] == "r2" and found.last_seen["iface"] == "eth0"


def test_ttl_probes_show_how_far_the_packet_got(make_lab):
    lab = make_lab("broken/routing-wrong-gateway")
    found = lab.why("host1", "host2")
    ttl = next(line for line in found.finding.evidence if line.startswith("TTL-limited SYNs"))
    assert "ttl 1: time exceeded from 192.168.1.1 (r1)" in ttl and "ttl 2: time exceeded from 10.0.12.2 (r2)" in ttl
