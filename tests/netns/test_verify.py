"""verify, trace and the sniffers on the host kernel: routing and SNAT pass, a mis-wired copy fails at its hop."""

import json
import os
import xml.etree.ElementTree as ET

import subprocess
import sys

from nslab import api, cli


def nslab(capsys, *argv):
    code = cli.main(list(argv))
    out = capsys.readouterr()
    return code, out.out, out.err


def renamed_copy(root_dir, tmp_path, rel, name):
    """A topology file under a unique lab name, so parallel runs never share a lab."""
    text = (root_dir / "topologies" / rel).read_text()
    first = next(line for line in text.splitlines() if line.startswith("name:"))
    path = tmp_path / f"{name}.yaml"
    path.write_text(text.replace(first, f"name: {name}", 1))
    return str(path)


def test_capture_ready_at_once_and_lossless(root_dir):
    out = subprocess.run([sys.executable, str(root_dir / "bench" / "capture_loss.py"), "--count", "2000", "--json"],
                         capture_output=True, text=True, timeout=120)
    m = json.loads(out.stdout)
    assert out.returncode == 0 and m["first_seen"] and m["lost"] == 0, (m, out.stderr)


def test_verify_file_passes_and_downs_what_it_upped(capsys, root_dir, tmp_path):
    name = f"vf{os.getpid() % 1000}"
    path = renamed_copy(root_dir, tmp_path, "routing.yaml", name)
    try:
        code, out, err = nslab(capsys, "verify", path)
        assert code == 0, out + err
        for check in ("path", "arp", "ip-stays-mac-changes", "tcp"):
            assert f"PASS {check}" in out
        assert name not in api.labs()
    finally:
        if name in api.labs():
            api.down(name)


def test_verify_snat_json(make_lab, capsys):
    lab = make_lab("snat")
    code, out, err = nslab(capsys, "verify", lab.name, "--json")
    assert code == 0, out + err
    report = json.loads(out)
    snat = next(c for c in report["checks"] if c["check"] == "snat")
    assert snat["ok"] and "192.168.0.10 -> 203.0.113.2" in snat["summary"]


def test_broken_gateway_fails_naming_the_hop(capsys, root_dir, tmp_path):
    name = f"vb{os.getpid() % 1000}"
    path = renamed_copy(root_dir, tmp_path, "broken/routing-wrong-gateway.yaml", name)
    with api.Lab(path):
        code, out, err = nslab(capsys, "verify", name, "--count", "1")
    assert code == 1
    line = next(ln for ln in out.splitlines() if ln.startswith("FAIL path"))
    assert "host2 got the request (hop 9, lan2:r2-eth1) but its reply never left lan2" in line
    assert "192.168.2.254" in line


def test_trace_routing_pcap_and_svg(make_lab, capsys, tmp_path):
    from scapy.utils import rdpcap
    lab = make_lab("routing")
    svg = tmp_path / "walk.svg"
    code, out, err = nslab(capsys, "trace", lab.name, "host1", "host2", "--json",
                           "--pcap", str(tmp_path / "pcap"), "--svg", str(svg))
    assert code == 0, out + err
    hops = json.loads(out)["hops"]
    packets = [h for h in hops if h["kind"] != "arp"]
    assert [(h["from"], h["to"]) for h in packets] == [
        ("host1", "r1"), ("r1", "r2"), ("r2", "host2"), ("host2", "r2"), ("r2", "r1"), ("r1", "host1")]
    assert len({h["src"] + h["dst"] for h in packets[:3]}) == 1  # the IP pair stays
    assert len({h["src_mac"] + h["dst_mac"] for h in packets[:3]}) == 3  # the MAC pair changes
    arrows = [e for e in ET.parse(svg).getroot().iter("{http://www.w3.org/2000/svg}line")
              if "packet" in e.get("class", "")]
    assert len(arrows) == len(hops)
    sent = rdpcap(str(tmp_path / "pcap" / "lan1_host1-eth0.pcap"))
    assert any(p.haslayer("ARP") and p["ARP"].op == 1 for p in sent)
    assert any(p.haslayer("TCP") and p["TCP"].flags == "S" and p["IP"].dst == "192.168.2.10" for p in sent)
    on_transit = rdpcap(str(tmp_path / "pcap" / "transit_r1-eth1.pcap"))
    assert any(p.haslayer("TCP") and p["IP"].src == "192.168.1.10" for p in on_transit)


def test_trace_text_is_a_hop_table(make_lab, capsys):
    lab = make_lab("routing")
    code, out, err = nslab(capsys, "trace", lab.name, "host1", "host2")
    assert code == 0, out + err
    assert "router r1: next hop 10.0.12.2 (r2), new MAC pair, same IP pair" in out
