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
    """Many requests from one node: rate, latency, errors by kind, and for a service each real server's
    share and what crossed the director, from the IPVS counters after the kernel's fold. `traffic` is
    the load generator's result: wrk's (verify/wrk.py) for HTTP, the Python generator's otherwise."""

    lab: str
    source: str
    target: str
    concurrency: int
    traffic: dict
    service: dict | None = None
    faults: dict | None = None  # a fault during the load: verify/timeline.py's summary

    @property
    def ok(self) -> bool:
        t = self.traffic
        if self.faults is not None:  # errors are what a fault is for: ok when it ran as planned
            return bool(t.get("ok")) and not t.get("error") and not any("error" in e for e in self.faults["events"])
        return bool(t.get("ok")) and t.get("ok") == t.get("sent") and not t.get("error") and not t.get("failed")

    def _how(self) -> str:
        t = self.traffic
        if t.get("engine") != "wrk":
            return f"{self.concurrency} at once"
        mode = "kept-alive connections" if t.get("mode") == "keepalive" else "a new connection per request"
        return f"wrk, {mode}, {t.get('connections')} connections on {t.get('threads')} threads"

    def lines(self) -> list[str]:
        t = self.traffic
        lat = t.get("latency_ms") or {}
        what = (f"{t['duration_s']:g} s of requests" if t.get("duration_s") else f"{t.get('sent', 0)} requests")
        errors = {k: v for k, v in (t.get("errors") or {}).items() if v}
        out = [f"load {self.lab}: {what} {self.source} -> {self.target} ({self._how()}): "
               f"{t.get('ok', 0)} answered, {t.get('failed', 0)} failed"
               + (f" ({', '.join(f'{k} {v}' for k, v in errors.items())})" if errors else "")
               + (f" — {t.get('error')}" if t.get("error") else "")]
        if t.get("ok"):
            pcts = ", ".join(f"{k} {lat[k]}" for k in ("p50", "p90", "p99", "max") if lat.get(k) is not None)
            out.append(f"  {t['rate_per_s']:.0f} requests/s over {t.get('elapsed_s', 0):.2f} s; latency ms {pcts}")
        if t.get("engine") == "wrk":
            out.append("  errors by kind: " + ", ".join(f"{k} {v}" for k, v in (t.get("errors") or {}).items()))
        svc = self.service
        if svc:
            rows_in = svc["real_servers"]
            unused = any(rs.get("unused") is not None for rs in rows_in)
            out.append(f"  service {svc['name']} ({svc['forward'].upper()}, {svc['scheduler']}), as the director "
                       "counted it (after the kernel's 2 s counter fold):")
            rows = [("node", "weight", "answered", "expected", "conns") + (("unused",) if unused else ())
                    + ("in pkts", "out pkts", "in bytes", "out bytes")]
            for rs in rows_in:
                exp = "-" if rs["expected"] is None else f"{rs['expected']:.0f}"
                rows.append((rs["node"], rs["weight"], rs["answered"], exp, rs["conns"])
                            + ((rs.get("unused"),) if unused else ())
                            + (rs["inpkts"], rs["outpkts"], rs["inbytes"], rs["outbytes"]))
            out += table(rows, indent="    ", left=1)
            if unused and sum(rs["unused"] or 0 for rs in rows_in):
                out.append("  unused: connections wrk had opened for its next requests when it stopped (no request "
                           "went on them); conns - unused = answered")
                short = sum(rs["answered"] - (rs["conns"] - rs["unused"]) for rs in rows_in)
                if short > 0:
                    out.append(f"  {short} answered request(s) reused an entry the director still held: a client port "
                               "used again while its last connection was in FIN_WAIT is not scheduled anew "
                               "(net.ipv4.vs.conn_reuse_mode)")
            if t.get("mode") == "keepalive":
                out.append("  kept-alive: IPVS balanced the connections, not the requests")
            if self.faults is not None and t.get("mode") != "keepalive":
                out.append("  (with a fault, a refused connection counts as a connection of the real server "
                           "it was sent to, without an answer)")
            pkts_in = sum(rs["inpkts"] for rs in rows_in)
            pkts_out = sum(rs["outpkts"] for rs in rows_in)
            bytes_in = sum(rs["inbytes"] for rs in rows_in)
            bytes_out = sum(rs["outbytes"] for rs in rows_in)
            per = f", {(pkts_in + pkts_out) / t['ok']:.1f} packets per request" if t.get("ok") else ""
            out.append(f"  the director carried {pkts_in} packets ({bytes_in} bytes) in and {pkts_out} packets "
                       f"({bytes_out} bytes) out{per}"
                       + (": NAT replies come back through it" if svc["forward"] == "nat"
                          else ": replies bypass it, which is why DR/TUN scale"))
        if self.faults is not None:
            out += fault_lines(self.faults)
        return out

    def as_dict(self) -> dict:
        out = {"lab": self.lab, "from": self.source, "target": self.target, "traffic": self.traffic, "ok": self.ok}
        if self.service:
            out["service"] = self.service
        if self.faults is not None:
            out["faults"] = self.faults
        return out

    def __str__(self):
        return "\n".join(self.lines())


def fault_lines(f: dict) -> list[str]:
    """A fault during a load: the fail and heal as they happened, second by second what the client saw, and
    when the service recovered."""
    out = ["  fault during the load (times in seconds from the start of the load):"]
    for e in f["events"]:
        text = f"{e['what']} FAILED: {e['error']}" if "error" in e else e["message"].split(". `nslab heal")[0]
        out.append(f"    {e['at']:6.2f} s  {text} (took {e['took_s']:.2f} s)")
    rows = [("second", "answered", "refused", "reset", "stalled SYNs")]
    marks = {int(e["at"]): e["what"].split()[0] for e in f["events"]}
    for r in f["seconds"]:
        rows.append((f"{r['second']}" + (f" <- {marks[r['second']]}" if r["second"] in marks else ""),
                     r["answered"], r["refused"], r["reset"], r["stalled"]))
    out += table(rows, indent="    ", left=1)
    out.append("  refused: the client's SYN was answered by a RST (nothing listens there); reset: an open "
               "connection was reset; stalled: SYNs sent again because nobody answers (the client's kernel counts)")
    if f["first_error_s"] is None:
        out.append("  the client saw no failed connection")
        return out
    out.append(f"  {f['refused']} refused and {f['reset']} reset connection(s), from {f['first_error_s']:.1f} s to "
               f"{f['last_error_s']:.1f} s")
    if f.get("recovered"):
        heal = (f", {f['recovered_after_heal_s']:.1f} s after the heal" if "recovered_after_heal_s" in f else "")
        out.append(f"  recovered: the last error {f['recovered_after_fail_s']:.1f} s after the fail{heal} "
                   f"(to within {f['sample_s']:g} s); answers went on after it")
    elif f["events"] and f["events"][0]["what"].startswith("fail"):
        out.append("  not recovered: no answer came after the last error before the load ended")
    return out
