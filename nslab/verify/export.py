"""What verify and trace write to files: one pcap per link, the walk as an SVG ladder, the topology as an SVG."""

import os

COLOURS = {"request": "#1f6fb2", "reply": "#c0392b", "arp": "#7f8c8d"}


def escape(text: str) -> str:
    """Text made safe inside SVG markup (&, < and >, as xml.sax.saxutils.escape; that module imports urllib's
    whole HTTP client, a fifth of `nslab graph`'s start-up)."""
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


def pcap_name(link: str) -> str:
    """A file name for a link label (no ':' so it works on any filesystem)."""
    return link.replace("=", "__").replace(":", "_") + ".pcap"


def write_pcaps(frames, directory: str) -> dict:
    """One pcap per link (Ethernet, or raw IP for tunl0) in directory; returns {link: path}."""
    from scapy.layers.inet import IP
    from scapy.layers.l2 import Ether
    from scapy.utils import wrpcap
    os.makedirs(directory, exist_ok=True)
    by_link = {}
    for f in frames:
        by_link.setdefault(f.link, []).append(f)
    out = {}
    for link, fs in by_link.items():
        pkts = []
        for f in fs:
            p = Ether(f.raw) if f.l2 else IP(f.raw)
            p.time = f.time
            pkts.append(p)
        out[link] = os.path.join(directory, pcap_name(link))
        wrpcap(out[link], pkts)
    return out


def _svg(width, height, body) -> str:
    return (f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" '
            f'viewBox="0 0 {width} {height}" font-family="monospace" font-size="12">\n'
            '<defs>' + "".join(
                f'<marker id="head-{k}" markerWidth="10" markerHeight="8" refX="9" refY="4" orient="auto">'
                f'<path d="M0,0 L10,4 L0,8 z" fill="{c}"/></marker>' for k, c in COLOURS.items()) + '</defs>\n'
            f'<rect width="{width}" height="{height}" fill="white"/>\n' + "\n".join(body) + "\n</svg>\n")


def ladder_svg(w, net=None) -> str:
    """The walk as a ladder: nodes as columns, one arrow a packet, request blue, reply red, ARP grey."""
    hops = w.hops
    cols = []

    def col(name):
        if name not in cols:
            cols.append(name)
        return cols.index(name)

    col(w.client)
    ends = []
    for h in hops:
        to = h.receiver
        if to == "broadcast" and h.frame.arp and net:
            to = (net.lab.holders(h.frame.arp["pdst"]) or ("broadcast",))[0]  # draw it to whoever was asked
        ends.append((col(h.sender), col(to)))
    cw, top, rh = 170, 60, 34
    width, height = max(2, len(cols)) * cw + 380, top + rh * (len(hops) + 1) + 20
    body = [f'<text x="10" y="20" font-size="14">{escape(f"{w.client}: request (blue), reply (red), ARP (grey)")}</text>']
    for i, name in enumerate(cols):
        x = 60 + i * cw
        body.append(f'<text x="{x}" y="{top - 12}" text-anchor="middle" font-weight="bold">{escape(name)}</text>')
        body.append(f'<line x1="{x}" y1="{top}" x2="{x}" y2="{height - 10}" stroke="#bbb" stroke-dasharray="4 3"/>')
    text_x = 60 + (len(cols) - 1) * cw + 40
    for i, (h, (a, b)) in enumerate(zip(hops, ends)):
        y = top + rh * (i + 1)
        x1, x2 = 60 + a * cw, 60 + b * cw
        if x1 == x2:
            x2 = x1 + 40  # a packet to nowhere known: a stub arrow
        c = COLOURS.get(h.kind, "#000")
        dash = ' stroke-dasharray="5 3"' if h.kind == "arp" else ""
        label = f"{h.n}. {h.frame.link}: {h.frame.summary()}"
        body.append(f'<line class="packet {h.kind}" x1="{x1}" y1="{y}" x2="{x2}" y2="{y}" stroke="{c}" '
                    f'stroke-width="2"{dash} marker-end="url(#head-{h.kind})"><title>{escape(h.note)}</title></line>')
        body.append(f'<text x="{text_x}" y="{y + 4}" fill="{c}">{escape(label)}</text>')
    if w.broke:
        body.append(f'<text x="10" y="{height - 4}" fill="#c0392b">{escape("BROKEN: " + w.broke[:160])}</text>')
    return _svg(width + 400, height, body)


def write_ladder(w, path: str, net=None) -> None:
    with open(path, "w") as f:
        f.write(ladder_svg(w, net))


def graph_svg(topo) -> str:
    """Nodes in a row on top, switches in a row below, a line per interface labelled with its
    addresses; direct links as arcs; each service as a dashed arrow from director to real servers."""
    cw = 190
    nx = {n.name: 90 + i * cw for i, n in enumerate(topo.nodes)}
    sw_gap = max(cw, (len(topo.nodes) * cw) / max(1, len(topo.switches)))
    sx = {s: 90 + sw_gap * i + sw_gap / 2 - cw / 2 for i, s in enumerate(topo.switches)}
    ny, sy = 120, 360
    width = max(len(topo.nodes) * cw, len(topo.switches) * sw_gap) + 120
    height = sy + 80 + 22 * len(topo.services)
    body = [f'<text x="10" y="20" font-size="14">{escape(topo.name + ": " + topo.description)}</text>']
    for node in topo.nodes:
        x = nx[node.name]
        # Addresses are listed inside the node's box, so labels never cross lines or each other.
        bottom = ny + 22 + 13 * len(node.interfaces)
        role = "router" if node.forward else (f"app {node.app.kind}" if node.app else "")
        body.append(f'<rect class="node" x="{x - 85}" y="{ny - 20}" width="170" height="{bottom - ny + 20}" rx="6" '
                    f'fill="#eaf2fb" stroke="#1f6fb2"/>')
        body.append(f'<text x="{x}" y="{ny - 4}" text-anchor="middle" font-weight="bold">{escape(node.name)}</text>')
        body.append(f'<text x="{x}" y="{ny + 9}" text-anchor="middle" font-size="10">{escape(role)}</text>')
        for k, iface in enumerate(node.interfaces):
            addrs = ", ".join(str(a) for a in iface.addresses) or "-"
            where = iface.switch or (":".join(iface.peer) if iface.peer else "")
            body.append(f'<text x="{x}" y="{ny + 26 + 13 * k}" text-anchor="middle" font-size="9">'
                        f'{escape(f"{iface.name} {addrs}")}{escape(f" ({where})" if where else "")}</text>')
            if iface.switch in sx:
                body.append(f'<line class="iface" x1="{x}" y1="{bottom}" x2="{sx[iface.switch]}" y2="{sy - 14}" '
                            'stroke="#555"/>')
            elif iface.peer and node.name < iface.peer[0]:
                x2 = nx[iface.peer[0]]
                body.append(f'<path class="link" d="M{x},{ny - 20} Q{(x + x2) / 2},{ny - 80} {x2},{ny - 20}" '
                            f'fill="none" stroke="#555"/>')
    for s, x in sx.items():
        body.append(f'<rect class="switch" x="{x - 55}" y="{sy - 14}" width="110" height="28" fill="#fdf2e9" '
                    f'stroke="#d35400"/><text x="{x}" y="{sy + 4}" text-anchor="middle">{escape(s)}</text>')
    for i, svc in enumerate(topo.services):
        d = nx[svc.director]
        for rs in svc.real_servers:
            if rs.node in nx:
                body.append(f'<path class="service" d="M{d},{ny - 20} Q{(d + nx[rs.node]) / 2},{ny - 90} '
                            f'{nx[rs.node]},{ny - 20}" fill="none" stroke="#c0392b" stroke-dasharray="6 3" '
                            f'marker-end="url(#head-reply)"/>')
        text = (f"service {svc.name}: VIP {svc.vip}:{svc.port}/{svc.protocol} on {svc.director}, "
                f"{svc.forward.value}, {svc.scheduler} -> " + ", ".join(f"{r.node} (w{r.weight})" for r in svc.real_servers))
        body.append(f'<text x="10" y="{sy + 50 + 22 * i}" fill="#c0392b">{escape(text)}</text>')
    return _svg(int(width), int(height), body)


def write_graph(topo, path: str) -> None:
    with open(path, "w") as f:
        f.write(graph_svg(topo))
