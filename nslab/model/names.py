"""How a lab's kernel objects are named: the one place that knows the naming scheme."""

import os
import re
import zlib
from typing import NamedTuple

MARK_PREFIX = "nslab"
# Lab and node names become namespace names and paths (/run/nslab/<lab>, /run/netns/<lab>-<node>).
LAB_NAME = re.compile(r"^[a-z][a-z0-9]*(-[a-z0-9]+)*$")
MAX_LAB = 16
MAX_NODE = 24


def check_name(name, what: str = "lab") -> str:
    """Return name if it is a valid lab or node name, else raise UsageError: names become paths, so nothing
    else may get through."""
    from ..errors import UsageError
    limit = MAX_LAB if what == "lab" else MAX_NODE
    if not isinstance(name, str) or not LAB_NAME.fullmatch(name) or len(name) > limit:
        raise UsageError(f"{name!r} is not a valid {what} name (up to {limit} lowercase letters and digits, "
                         "'-' between them, starting with a letter)")
    return name


RUN_DIR = "/run/nslab"  # each lab's state, logs and lab-process files in RUN_DIR/<lab> (state.py)


def run_dir(lab: str) -> str:
    """Where a lab's state, logs and the files of its lab processes (keepalived's config) live."""
    return f"{RUN_DIR}/{lab}"


def fabric_ns(lab: str) -> str:
    """The namespace that holds a lab's switches (bridges) and the switch side of every veth."""
    return f"{lab}-fabric"


def node_ns(lab: str, node: str) -> str:
    return f"{lab}-{node}"


class Owner(NamedTuple):
    """Whose a namespace is, as its mark says: lab, role (a node or 'fabric') and the lab's token ('' in the
    marks of labs from before tokens, and of a plan replayed by hand)."""
    lab: str
    role: str
    token: str = ""


def mark(lab: str, role: str, token: str = "") -> str:
    """The alias set on lo of every namespace nslab creates: proof of ownership for `down`. The token, random
    per lab and recorded in its state, tells the lab's own namespaces from one someone marked by hand."""
    return f"{MARK_PREFIX}:{lab}:{role}" + (f":{token}" if token else "")


def new_token() -> str:
    return os.urandom(8).hex()  # secrets.token_hex(8), without importing hmac and hashlib


def parse_mark(text: str | None) -> Owner | None:
    """The Owner a mark names, or None if the text isn't one of ours."""
    parts = (text or "").split(":")
    if len(parts) in (3, 4) and parts[0] == MARK_PREFIX and all(parts[1:]):
        return Owner(*parts[1:])
    return None


def bridge_port(node: str, ifname: str) -> str:
    """The switch-side veth name in the fabric: node-ifname when it fits IFNAMSIZ, else a stable hash."""
    name = f"{node}-{ifname}"
    if len(name) <= 15:
        return name
    return f"{node[:6]}-{zlib.crc32(name.encode()):08x}"
