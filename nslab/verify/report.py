"""What verify, trace and load hand back: plain objects that print themselves (lines for people, a dict for JSON).

Pure: no kernel, no sockets; the CLI only chooses between lines() and as_dict().
"""

from dataclasses import dataclass, field


def table(rows, indent: str = "", left: int | None = None) -> list[str]:
    """rows as aligned columns; the first `left` columns (default: all) align left, the rest right."""
    rows = [tuple(str(v) for v in r) for r in rows]
    widths = [max(len(r[c]) for r in rows) for c in range(len(rows[0]))]
    left = len(widths) if left is None else left
    return [(indent + "  ".join(v.ljust(w) if i < left else v.rjust(w)
                                for i, (v, w) in enumerate(zip(r, widths)))).rstrip() for r in rows]


@dataclass
class VerifyReport:
    """The concept checks of one lab, with the traffic and captures behind them."""

    lab: str
    client: str
    target: str
    kind: str
    count: int
    traffic: dict
    frames: int
    links: int
    seconds: float
    results: list = field(default_factory=list)

    @property
    def failed(self) -> list:
        return [r for r in self.results if not r.ok]

    @property
    def ok(self) -> bool:
        return not self.failed

    def lines(self, evidence: bool = False) -> list[str]:
        out = [f"verify {self.lab}: {self.count} {self.kind} request(s) {self.client} -> {self.target}; "
               f"{self.traffic.get('ok', 0)} answered, {self.frames} frames on {self.links} links, "
               f"{self.seconds:.1f} s"]
        for r in self.results:
            out.append(f"{r.status} {r.name:<21} {r.summary}")
            out += [f"     {line}" for line in r.evidence[: (12 if not r.ok or evidence else 0)]]
        return out

    def as_dict(self) -> dict:
        return {"lab": self.lab, "client": self.client, "target": self.target, "traffic": self.traffic,
                "frames": self.frames, "seconds": round(self.seconds, 2),
                "checks": [r.as_dict() for r in self.results], "ok": self.ok}

    def __str__(self):
        return "\n".join(self.lines())


@dataclass
class Trace:
    """One request and its reply, hop by hop; the frames stay available for pcap files."""

    lab: str
    source: str
    target: str
    kind: str
    traffic: dict
    walk: object  # verify.walk.Walk
    net: object  # verify.walk.Net
    frames: list = field(default_factory=list, repr=False)

    @property
    def ok(self) -> bool:
        return not self.walk.broke

    def lines(self) -> list[str]:
        port = (self.traffic.get("client_ports") or ["?"])[0]
        out = [f"trace {self.lab}: {self.source} -> {self.target} ({self.kind}), client port {port}",
               f"{'#':>2}  {'kind':<7} {'link':<18} {'from -> to':<22} packet"]
        for h in self.walk.hops:
            f = h.frame
            out.append(f"{h.n:>2}  {h.kind:<7} {f.link:<18} {h.sender + ' -> ' + h.receiver:<22} {f.summary()}")
            out.append(f"{'':>4}{'':<8}{f.src_mac} -> {f.dst_mac}" + (f"   {h.note}" if h.note else ""))
        if self.walk.broke:
            out.append(f"BROKEN: {self.walk.broke}")
        return out

    def as_dict(self) -> dict:
        return {"lab": self.lab, "from": self.source, "target": self.target,
                "hops": [h.row() for h in self.walk.hops], "broke": self.walk.broke}

    def write_pcaps(self, directory: str) -> dict:
        from . import export
        return export.write_pcaps(self.frames, directory)

    def write_svg(self, path: str) -> None:
        from . import export
        export.write_ladder(self.walk, path, self.net)

    def __str__(self):
        return "\n".join(self.lines())


@dataclass
class LoadReport:
    """Many requests from one node: rate, latency, errors, and for a service each real server's share and
    what crossed the director, from the IPVS counters after the kernel's fold."""

    lab: str
    source: str
    target: str
    concurrency: int
    traffic: dict
    service: dict | None = None

    @property
    def ok(self) -> bool:
        t = self.traffic
        return t.get("ok") == t.get("sent") and not t.get("error")

    def lines(self) -> list[str]:
        t = self.traffic
        lat = t.get("latency_ms") or {}
        out = [f"load {self.lab}: {t.get('sent', 0)} requests {self.source} -> {self.target}, "
               f"{self.concurrency} at once: {t.get('ok', 0)} answered, {t.get('failed', 0)} failed"
               + (f" ({', '.join(f'{k} {v}' for k, v in t['errors'].items())})" if t.get("errors") else "")
               + (f" — {t.get('error')}" if t.get("error") else "")]
        if t.get("ok"):
            out.append(f"  {t['rate_per_s']:.0f} requests/s; latency ms p50 {lat.get('p50')}, p99 {lat.get('p99')}, "
                       f"max {lat.get('max')}")
        svc = self.service
        if svc:
            out.append(f"  service {svc['name']} ({svc['forward'].upper()}, {svc['scheduler']}), as the director "
                       "counted it (after the kernel's 2 s counter fold):")
            rows = [("node", "weight", "answered", "expected", "conns", "in pkts", "out pkts", "in bytes",
                     "out bytes")]
            for rs in svc["real_servers"]:
                exp = "-" if rs["expected"] is None else f"{rs['expected']:.0f}"
                rows.append((rs["node"], rs["weight"], rs["answered"], exp, rs["conns"], rs["inpkts"],
                             rs["outpkts"], rs["inbytes"], rs["outbytes"]))
            out += table(rows, indent="    ", left=1)
            bytes_in = sum(rs["inbytes"] for rs in svc["real_servers"])
            bytes_out = sum(rs["outbytes"] for rs in svc["real_servers"])
            out.append(f"  the director carried {bytes_in} bytes of requests and {bytes_out} bytes of replies"
                       + (": NAT replies come back through it" if svc["forward"] == "nat"
                          else ": replies bypass it, which is why DR/TUN scale"))
        return out

    def as_dict(self) -> dict:
        out = {"lab": self.lab, "from": self.source, "target": self.target, "traffic": self.traffic}
        if self.service:
            out["service"] = self.service
        return out

    def __str__(self):
        return "\n".join(self.lines())
