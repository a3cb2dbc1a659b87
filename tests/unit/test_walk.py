"""The packet walk and concept checks on synthetic frames: routing, SNAT and LVS NAT/DR/TUN without root or IPVS."""

import pytest

from nslab import model
from nslab.model.schema import Forward
from nslab.verify import concepts, export, frames as framing, walk

scapy = pytest.importorskip("scapy")
from scapy.layers.inet import IP, TCP  # noqa: E402
from scapy.layers.l2 import ARP, Ether  # noqa: E402

BC = "ff:ff:ff:ff:ff:ff"

LVS = """
name: lvs
switches: [wan, lan]
nodes:
  client:
    interfaces: {eth0: {switch: wan, address: 192.168.1.10/24}}
    gateway: 192.168.1.1
  router:
    forward: true
    interfaces:
      eth0: {switch: wan, address: 192.168.1.1/24}
      eth1: {switch: lan, address: 10.0.0.1/24}
  director:
    interfaces: {eth0: {switch: lan, address: 10.0.0.2/24}}
    gateway: 10.0.0.1
  rs1:
    interfaces: {eth0: {switch: lan, address: 10.0.0.11/24}}
    gateway: GW
    app: http
  rs2:
    interfaces: {eth0: {switch: lan, address: 10.0.0.12/24}}
    gateway: GW
    app: http
services:
  web:
    director: director
    vip: 10.0.0.100:80
    scheduler: SCHED
    forward: FWD
    real_servers: {rs1: {weight: 2}, rs2: {weight: 1}}
"""

MAC = {"client": "02:00:00:00:00:01", "router-wan": "02:00:00:00:00:02", "router": "02:00:00:00:00:03",
       "director": "02:00:00:00:00:04", "rs1": "02:00:00:00:00:05", "rs2": "02:00:00:00:00:06"}
CIP, VIP, DIP, RIP1 = "192.168.1.10", "10.0.0.100", "10.0.0.2", "10.0.0.11"
ISN, SSN = 1000, 5000


def lvs(fwd, sched="rr"):
    gw = "10.0.0.2" if fwd == "nat" else "10.0.0.1"
    topo = model.loads(LVS.replace("GW", gw).replace("FWD", fwd).replace("SCHED", sched))
    macs = {m: k.split("-")[0] for k, m in MAC.items()}
    return topo, walk.Net(model.resolve(topo), macs)


class Wire:
    """Builds frames as the capture would decode them, one tick apart."""

    def __init__(self):
        self.frames, self.t = [], 0.0

    def send(self, sender, link, src, dst, pkt):
        self.t += 0.001
        f = framing.parse(bytes(Ether(src=MAC[src], dst=dst if ":" in dst else MAC[dst]) / pkt),
                          link, sender, "from", self.t, sender=sender, segment=link.split(":")[0])
        self.frames.append(f)
        return f

    def arp(self, sender, link, src, ip_src, ip_dst, reply_to=None):
        if reply_to:
            return self.send(sender, link, src, reply_to, ARP(op=2, hwsrc=MAC[src], psrc=ip_src,
                                                              hwdst=MAC[reply_to], pdst=ip_dst))
        return self.send(sender, link, src, BC, ARP(op=1, hwsrc=MAC[src], psrc=ip_src, pdst=ip_dst))


def syn(src, dst):
    return IP(src=src, dst=dst) / TCP(sport=40000, dport=80, flags="S", seq=ISN)


def synack(src, dst):
    return IP(src=src, dst=dst) / TCP(sport=80, dport=40000, flags="SA", seq=SSN, ack=ISN + 1)


def lvs_frames(fwd, liar=False):
    w = Wire()
    w.arp("client", "wan:client-eth0", "client", CIP, "192.168.1.1")
    w.arp("router", "wan:router-eth0", "router-wan", "192.168.1.1", CIP, reply_to="client")
    w.send("client", "wan:client-eth0", "client", "router-wan", syn(CIP, VIP))
    w.arp("router", "lan:router-eth1", "router", "10.0.0.1", VIP)
    answer = "rs1" if liar else "director"
    w.arp(answer, f"lan:{answer}-eth0", answer, VIP, "10.0.0.1", reply_to="router")
    w.send("router", "lan:router-eth1", "router", answer, syn(CIP, VIP))
    if liar:
        w.send("rs1", "lan:rs1-eth0", "rs1", "router", synack(VIP, CIP))
        w.send("router", "wan:router-eth0", "router-wan", "client", synack(VIP, CIP))
        return w.frames
    w.arp("director", "lan:director-eth0", "director", DIP, RIP1)
    w.arp("rs1", "lan:rs1-eth0", "rs1", RIP1, DIP, reply_to="director")
    if fwd == "nat":
        w.send("director", "lan:director-eth0", "director", "rs1", syn(CIP, RIP1))
        w.send("rs1", "lan:rs1-eth0", "rs1", "director", synack(RIP1, CIP))
        w.send("director", "lan:director-eth0", "director", "router", synack(VIP, CIP))
    else:
        pkt = syn(CIP, VIP) if fwd == "dr" else IP(src=DIP, dst=RIP1, proto=4) / syn(CIP, VIP)
        w.send("director", "lan:director-eth0", "director", "rs1", pkt)
        w.send("rs1", "lan:rs1-eth0", "rs1", "router", synack(VIP, CIP))
    w.send("router", "wan:router-eth0", "router-wan", "client", synack(VIP, CIP))
    return w.frames


def run(fwd, frames=None, sched="rr"):
    topo, net = lvs(fwd, sched)
    frames = frames if frames is not None else lvs_frames(fwd)
    w = walk.walk(frames, net, "client")
    ctx = concepts.Context(net, frames, w, None, net.lab.services[0])
    return w, {r.name: r for r in concepts.run_checks(ctx)}


def test_parse_ipip_keeps_outer_and_inner():
    f = framing.parse(bytes(Ether() / IP(src=DIP, dst=RIP1, proto=4) / syn(CIP, VIP)))
    assert (f.ip.proto, f.ip.src, f.ip.dst) == ("ipip", DIP, RIP1)
    assert (f.ip.inner.src, f.ip.inner.dst, f.ip.inner.flags, f.ip.inner.seq) == (CIP, VIP, "S", ISN)


def test_parse_bare_ip_from_tunl0():
    f = framing.parse(bytes(syn(CIP, VIP)), l2=False)
    assert f.src_mac is None and f.ip.dst == VIP and f.ip.sport == 40000


@pytest.mark.parametrize("fwd", ["nat", "dr", "tun"])
def test_lvs_walk_passes(fwd):
    w, res = run(fwd)
    assert w.broke is None and w.server == "rs1"
    assert res[f"lvs-{fwd}"].ok, res[f"lvs-{fwd}"].summary
    assert res["arp"].ok, res["arp"].summary


def test_dr_walk_explains_mac_rewrite():
    w, _ = run("dr")
    notes = [h.note for h in w.request]
    assert "rewrote the destination MAC only" in notes[2] and "DR" in notes[2]
    assert all(h.sender != "director" and h.receiver != "director" for h in w.reply)


def test_nat_walk_explains_both_rewrites():
    w, _ = run("nat")
    assert "VIP 10.0.0.100 -> RIP 10.0.0.11 — NAT" in w.request[2].note
    assert any("RIP 10.0.0.11 -> VIP 10.0.0.100" in h.note for h in w.reply)


def test_tun_walk_shows_outer_and_inner():
    w, _ = run("tun")
    assert "outer 10.0.0.2 -> 10.0.0.11 (proto 4) around inner 192.168.1.10 -> 10.0.0.100 — TUN" in w.request[2].note


def test_dr_checked_as_nat_fails_with_reason():
    w, res = run("nat", frames=lvs_frames("dr"))
    assert not res["lvs-nat"].ok and "did not rewrite the destination" in res["lvs-nat"].summary


def test_tun_frames_checked_as_dr_fail():
    _, res = run("dr", frames=lvs_frames("tun"))
    assert not res["lvs-dr"].ok


def test_rs_answering_arp_for_vip_is_named():
    _, res = run("dr", frames=lvs_frames("dr", liar=True))
    r = res["lvs-dr"]
    assert not r.ok
    assert r.summary.startswith("rs1 answered ARP for the VIP 10.0.0.100")
    assert "requests bypass the director" in r.summary


def test_scheduler_shares():
    svc = lvs("dr", "rr")[1].lab.services[0]
    assert concepts.check_scheduler(svc, {"rs1": 30, "rs2": 30}).ok
    assert concepts.check_scheduler(svc, {"rs1": 31, "rs2": 29}).ok
    assert not concepts.check_scheduler(svc, {"rs1": 40, "rs2": 20}).ok
    wrr = lvs("dr", "wrr")[1].lab.services[0]  # weights 2:1
    assert concepts.check_scheduler(wrr, {"rs1": 40, "rs2": 20}).ok
    assert concepts.check_scheduler(wrr, {"rs1": 42, "rs2": 18}).ok
    bad = concepts.check_scheduler(wrr, {"rs1": 30, "rs2": 30})
    assert not bad.ok and "expected 40.0" in bad.summary


@pytest.mark.parametrize("sched", ["lc", "wlc", "sh", "sed", "nq", "lblc", "lblcr", "dh", "mh", "fo", "ovf", "twos"])
def test_scheduler_that_compares_nothing_says_skip(sched):
    svc = lvs("dr", sched)[1].lab.services[0]
    r = concepts.check_scheduler(svc, {"rs1": 40, "rs2": 20})
    assert r.skipped and r.status == "SKIP" and "would need" in r.summary


def test_persistence_makes_the_share_a_skip():
    topo = model.loads(LVS.replace("GW", "10.0.0.1").replace("FWD", "dr").replace("SCHED", "rr")
                       .replace("    scheduler: rr", "    scheduler: rr\n    persistence: 60"))
    r = concepts.check_scheduler(model.resolve(topo).services[0], {"rs1": 60})
    assert r.status == "SKIP" and "persistence 60 s" in r.summary


def routing_frames(reply=True):
    """host1 -> r1 -> r2 -> host2 and back, with the addresses of topologies/routing.yaml."""
    MAC.update({"host1": "02:00:00:00:01:01", "r1a": "02:00:00:00:01:02", "r1b": "02:00:00:00:01:03",
                "r2a": "02:00:00:00:01:04", "r2b": "02:00:00:00:01:05", "host2": "02:00:00:00:01:06"})
    w, h1, h2 = Wire(), "192.168.1.10", "192.168.2.10"
    w.arp("host1", "lan1:host1-eth0", "host1", h1, "192.168.1.1")
    w.arp("r1", "lan1:r1-eth0", "r1a", "192.168.1.1", h1, reply_to="host1")
    w.send("host1", "lan1:host1-eth0", "host1", "r1a", syn(h1, h2))
    w.arp("r1", "transit:r1-eth1", "r1b", "10.0.12.1", "10.0.12.2")
    w.arp("r2", "transit:r2-eth0", "r2a", "10.0.12.2", "10.0.12.1", reply_to="r1b")
    w.send("r1", "transit:r1-eth1", "r1b", "r2a", syn(h1, h2))
    w.arp("r2", "lan2:r2-eth1", "r2b", "192.168.2.1", h2)
    w.arp("host2", "lan2:host2-eth0", "host2", h2, "192.168.2.1", reply_to="r2b")
    w.send("r2", "lan2:r2-eth1", "r2b", "host2", syn(h1, h2))
    if reply:
        w.send("host2", "lan2:host2-eth0", "host2", "r2b", synack(h2, h1))
        w.send("r2", "transit:r2-eth0", "r2a", "r1b", synack(h2, h1))
        w.send("r1", "lan1:r1-eth0", "r1a", "host1", synack(h2, h1))
    else:  # host2's gateway is wrong: it asks for an address nobody has
        for _ in range(3):
            w.arp("host2", "lan2:host2-eth0", "host2", h2, "192.168.2.254")
    return w.frames


def routing_net():
    import pathlib
    topo = model.load(str(pathlib.Path(__file__).resolve().parents[2] / "topologies" / "routing.yaml"))
    macs = {MAC["host1"]: "host1", MAC["r1a"]: "r1", MAC["r1b"]: "r1", MAC["r2a"]: "r2", MAC["r2b"]: "r2",
            MAC["host2"]: "host2"}
    return walk.Net(model.resolve(topo), macs)


def test_routing_walk_and_checks():
    frames = routing_frames()
    net = routing_net()
    w = walk.walk(frames, net, "host1")
    assert [h.sender for h in w.request] == ["host1", "r1", "r2"]
    assert [h.sender for h in w.reply] == ["host2", "r2", "r1"]
    assert "next hop 10.0.12.2" in w.request[1].note and "same IP pair" in w.request[1].note
    res = {r.name: r for r in concepts.run_checks(concepts.Context(net, frames, w))}
    assert res["path"].ok and res["arp"].ok and res["ip-stays-mac-changes"].ok


def test_broken_gateway_names_the_hop():
    frames = routing_frames(reply=False)
    w = walk.walk(frames, routing_net(), "host1")
    assert w.broke.startswith("host2 got the request (hop 9, lan2:r2-eth1) but its reply never left lan2")
    assert "who-has 192.168.2.254 3 time(s)" in w.broke


def test_svg_has_one_arrow_per_packet():
    import xml.etree.ElementTree as ET
    w = walk.walk(routing_frames(), routing_net(), "host1")
    root = ET.fromstring(export.ladder_svg(w, routing_net()))
    arrows = [e for e in root.iter("{http://www.w3.org/2000/svg}line") if "packet" in e.get("class", "")]
    assert len(arrows) == len(w.hops) == 12


def test_graph_svg_parses():
    import xml.etree.ElementTree as ET
    topo, _ = lvs("dr")
    root = ET.fromstring(export.graph_svg(topo))
    assert len([e for e in root.iter() if e.get("class") == "node"]) == 5
    assert topo.services[0].forward is Forward.DR
