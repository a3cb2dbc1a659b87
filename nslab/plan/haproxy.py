"""The haproxy configuration of a lab's proxy node (pure): an HTTP frontend on the proxy's port, round robin
over its servers, and a backend per path prefix that only one server answers."""

from ..model.resolve import ProxyFacts


def config(p: ProxyFacts) -> str:
    """haproxy.cfg text. No stats socket, no chroot, no user switch: it runs inside a lab namespace as nslab
    started it, in the foreground (-db), logging nothing."""
    servers = {node: f"{addr}:{port}" for node, addr, port in p.servers}
    lines = ["global", "    maxconn 4096", "", "defaults", "    mode http", "    timeout connect 5s",
             "    timeout client 30s", "    timeout server 30s", "",
             "frontend web", f"    bind :{p.port}"]
    for k, (prefix, node) in enumerate(p.paths):
        lines += [f"    acl path{k} path_beg {prefix}", f"    use_backend only-{node} if path{k}"]
    lines += ["    default_backend servers", "", "backend servers", "    balance roundrobin"]
    lines += [f"    server {node} {where}" for node, where in servers.items()]
    for node in dict.fromkeys(node for _, node in p.paths):
        lines += ["", f"backend only-{node}", f"    server {node} {servers[node]}"]
    return "\n".join(lines) + "\n"
