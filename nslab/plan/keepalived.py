"""keepalived.conf for each director of a lab's health-checked or VRRP-paired services, written from the
resolved lab (pure), and the names of the files keepalived's notify commands touch (what `status` reads)."""

from ..model import names
from ..model.resolve import ResolvedLab, ServiceFacts
from ..model.schema import Forward

TOUCH = "/usr/bin/touch"  # notify commands: keepalived runs them itself, no shell
RS_STATES = ("up", "down")
VRRP_STATES = ("master", "backup", "fault")
ADVERT_INT = 1  # seconds between VRRP advertisements (keepalived's default)


def directors(rlab: ResolvedLab) -> list[str]:
    """The nodes that run keepalived, in the topology's order: every director of a keepalived service."""
    wanted = {d for s in rlab.services if s.keepalived for d in s.directors}
    return [n.name for n in rlab.topology.nodes if n.name in wanted]


def notify_dir(lab: str) -> str:
    return f"{names.run_dir(lab)}/keepalived"


def conf_path(lab: str, director: str) -> str:
    return f"{names.run_dir(lab)}/keepalived-{director}.conf"


PROCESSES = ("parent", "vrrp", "checkers")


def pid_path(lab: str, director: str, process: str) -> str:
    """keepalived's pid file of one of its PROCESSES."""
    return f"{names.run_dir(lab)}/keepalived-{director}.{process}.pid"


def rs_file(lab: str, director: str, service: str, node: str, state: str) -> str:
    """Touched by the director's checker when a real server goes up or down: its mtime is the 'since'."""
    return f"{notify_dir(lab)}/{director}.{service}.{node}.{state}"


def vrrp_file(lab: str, director: str, service: str, state: str) -> str:
    """Touched by the director's VRRP process when it becomes master, backup or faulty."""
    return f"{notify_dir(lab)}/{director}.{service}.{state}"


def config(rlab: ResolvedLab, director: str) -> str:
    """keepalived.conf of one director: a vrrp_instance per paired service (the VIP moves with it) and a
    virtual_server per service it directs (keepalived programs its IPVS table from it). Comments say why."""
    lines = [f"# keepalived.conf of director {director}, lab {rlab.name}: written by nslab from the topology.",
             "global_defs {",
             f"    router_id {rlab.name}-{director}",
             "    # the notify commands (touch, on files in the lab's state dir) run as root, not a script user;",
             "    # keepalived refuses a root script any non-root user could change (/usr/bin/touch: none can)",
             "    script_user root",
             "    enable_script_security",
             "}"]
    for svc in rlab.services:
        if svc.keepalived and director in svc.directors:
            if svc.vrrp:
                lines += _vrrp_instance(rlab, svc, director)
            lines += _virtual_server(rlab, svc, director)
    return "\n".join(lines) + "\n"


def _vrrp_instance(rlab, svc: ServiceFacts, director):
    me = next(v for v in svc.vrrp if v.director == director)
    master = me.director == svc.vrrp[0].director
    others = ", ".join(v.director for v in svc.vrrp if v.director != director)
    return ["",
            f"# service '{svc.name}': {director} is the VRRP {'master' if master else 'backup'} of {svc.vip} "
            f"(priority {me.priority}; peers: {others}); the master holds the VIP and sends an advert every "
            f"{ADVERT_INT} s, a backup takes the VIP after 3 missed adverts",
            f"vrrp_instance {svc.name} {{",
            f"    state {'MASTER' if master else 'BACKUP'}",
            f"    interface {me.interface}",
            f"    virtual_router_id {me.router_id}",
            f"    priority {me.priority}",
            f"    advert_int {ADVERT_INT}",
            "    virtual_ipaddress {",
            f"        {svc.vip}/32 dev {me.interface}",
            "    }",
            *(f'    notify_{state} "{TOUCH} {vrrp_file(rlab.name, director, svc.name, state)}"'
              for state in VRRP_STATES),
            "}"]


def _virtual_server(rlab, svc: ServiceFacts, director):
    h = svc.health
    method = {Forward.NAT: "NAT", Forward.DR: "DR", Forward.TUN: "TUN"}[svc.method]
    out = ["",
           f"# service '{svc.name}': {director} balances {svc.vip}:{svc.port} with {svc.scheduler} by {method}"
           + (f"; each real server is checked every {h.interval} s ({h.check}), out after {h.retries + 1} failed "
              f"checks in a row, back after one that passes" if h else "; no health checks: keepalived only "
              "programs the table"),
           f"virtual_server {svc.vip} {svc.port} {{",
           f"    delay_loop {h.interval if h else 60}",
           f"    lb_algo {svc.scheduler}",
           f"    lvs_method {method}",
           f"    protocol {svc.protocol.upper()}"]
    if svc.persistence:
        out.append(f"    persistence_timeout {svc.persistence}")
    if svc.on_failure == "weight0":
        out.append("    # on_failure: weight0 keeps a failed real server in the table with weight 0")
        out.append("    inhibit_on_failure")
    if svc.sorry:
        out.append("    # while every real server is down, IPVS sends the requests here")
        out.append(f"    sorry_server {svc.sorry.address} {svc.sorry.port}")
    for rs in svc.real_servers:
        out += [f"    real_server {rs.address} {rs.port} {{",
                f"        weight {rs.weight}"]
        if h:
            out += _checker(h)
            out += [f'        notify_{state} "{TOUCH} {rs_file(rlab.name, director, svc.name, rs.node, state)}"'
                    for state in RS_STATES]
        out.append("    }")
    out.append("}")
    return out


def _checker(h):
    # A failed server is retried, and a dead one checked again, every max(delay_before_retry, delay_loop):
    # keepalived's own delay_before_retry for HTTP_GET is 3 s whatever the interval, so set it to the interval.
    body = [f"            connect_timeout {h.timeout}",
            f"            retry {h.retries}",
            f"            delay_before_retry {h.interval}",
            "            warmup 0"]
    if h.check == "http":
        # Without fast_recovery, HTTP_GET puts a recovered server back only after a second passing check one
        # delay_loop after the first (it re-checks every URL once the failed one passes).
        return ["        HTTP_GET {",
                "            url {",
                f"                path {h.path}",
                "                status_code 200",
                "            }", *body, "            fast_recovery", "        }"]
    return ["        TCP_CHECK {", *body, "        }"]
