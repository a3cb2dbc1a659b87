"""Fuzzing through `up` on the host kernel: the validate fuzzer's mutated topologies (tests/unit/
test_fuzz_validate.py, seeded with the host-capable shipped and golden files), and valid host-capable seeds
with one value changed or one address moved (so that many reach the kernel), handed to `nslab up`. Every
example exits 2 with problems that name the file and a YAML path, or comes up as a lab (0) that `down`
removes; never a traceback, never a kernel step that fails (validate must have refused it); and after a
refusal nothing of the lab exists. A crasher found here becomes a golden error file (tests/golden/errors).

Examples: NSLAB_FUZZ_UP_EXAMPLES if set; else 300 under CI=true and 60 otherwise. Derandomized."""

import contextlib
import copy
import importlib.util
import io
import ipaddress
import os
import pathlib

from hypothesis import assume, event, given, settings
from hypothesis import strategies as st

from nslab import cli, model, state
from nslab.errors import TopologyError
from nslab.kernel import netns
from nslab.pytest_plugin import needs_of

_path = pathlib.Path(__file__).resolve().parents[1] / "unit" / "test_fuzz_validate.py"
_spec = importlib.util.spec_from_file_location("nslab_fuzz_validate", _path)
fuzz = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(fuzz)


def _valid(data) -> bool:
    try:
        model.loads(fuzz.yaml.safe_dump(data), "seed")
        return True
    except TopologyError:
        return False


def _host_capable(data) -> bool:
    try:
        return not needs_of(model.loads(fuzz.yaml.safe_dump(data), "seed"))
    except TopologyError:
        return not (isinstance(data, dict) and data.get("services"))


# The same strategies, drawing from the seeds this kernel can run (LVS ones would only ever exit 3 here).
fuzz.PARSED = [(text, data) for text, data in fuzz.PARSED if data is None or _host_capable(data)]

VALID = [data for _, data in fuzz.PARSED if data is not None and _valid(data)]


@st.composite
def one_value_changed(draw):
    """A valid host-capable seed with one scalar replaced: mostly still valid in shape, so most examples reach
    the kernel, where a value validation let through would make a step fail."""
    data = copy.deepcopy(fuzz.pick(draw, VALID))
    leaves = [(c, k) for c, k in fuzz._slots(data) if not isinstance(c[k], (dict, list))]
    container, key = fuzz.pick(draw, leaves)
    container[key] = draw(fuzz.SCALARS)
    return fuzz.yaml.dump(data, Dumper=fuzz.DUMPER, sort_keys=False, allow_unicode=True)


def _address_slots(data) -> list:
    """(container, key) of every string in the tree that is an IPv4 address, with or without a prefix
    length: interface addresses, gateways, routes' via and to."""
    out = []
    for container, key in fuzz._slots(data):
        value = container[key]
        if isinstance(value, str) and value[:1].isdigit():
            with contextlib.suppress(ValueError):
                ipaddress.IPv4Interface(value)
                out.append((container, key))
    return out


WITH_ADDRESSES = [data for data in VALID if _address_slots(data)]
MOVES = ("elsewhere in the lab", "elsewhere on its network", "anywhere", "another prefix length")


@st.composite
def one_address_moved(draw):
    """A valid host-capable seed with one IPv4 address moved (an interface's, a gateway, a route's via or
    to): to another address of the same lab, elsewhere on its own network, anywhere, or under another
    prefix length. Mostly still valid in shape, and often a next hop that is no longer on any of its node's
    subnets, or a subnet that no longer holds the node's next hop: cases validate must refuse before `up`
    reaches the kernel, where the route would fail (one value of SCALARS is seldom an address at all)."""
    data = copy.deepcopy(fuzz.pick(draw, WITH_ADDRESSES))
    slots = _address_slots(data)
    container, key = fuzz.pick(draw, slots)
    old = ipaddress.IPv4Interface(container[key])
    ip, prefix = old.ip, old.network.prefixlen
    how = fuzz.pick(draw, MOVES)
    event(f"address moved {how}")
    if how == MOVES[0]:
        ip = fuzz.pick(draw, sorted({ipaddress.IPv4Interface(c[k]).ip for c, k in slots}))
    elif how == MOVES[1]:
        ip = old.network.network_address + draw(st.integers(0, old.network.num_addresses - 1))
    elif how == MOVES[2]:
        ip = draw(st.ip_addresses(v=4))
    else:
        prefix = draw(st.integers(0, 32))
    container[key] = f"{ip}/{prefix}" if "/" in container[key] else str(ip)
    return fuzz.yaml.dump(data, Dumper=fuzz.DUMPER, sort_keys=False, allow_unicode=True)


_CI = os.environ.get("CI", "").lower() in ("1", "true", "yes")
EXAMPLES = int(os.environ.get("NSLAB_FUZZ_UP_EXAMPLES") or (300 if _CI else 60))
LAB = f"crashfz{os.getpid() % 1000}"


def _left() -> list[str]:
    return [n for n in netns.list_names() if n.startswith(LAB + "-")] + (
        [state.lab_dir(LAB)] if os.path.lexists(state.lab_dir(LAB)) else [])


def _nslab(*argv) -> tuple[int, str]:
    err = io.StringIO()
    with contextlib.redirect_stderr(err), contextlib.redirect_stdout(io.StringIO()):
        code = cli.main(list(argv))  # an exception nslab does not turn into a message fails the test here
    return code, err.getvalue()


@settings(fuzz.FUZZ, max_examples=EXAMPLES)
@given(st.one_of(fuzz.topologies(), one_value_changed(), one_address_moved()))
def test_up_of_a_fuzzed_topology_comes_up_or_refuses_it_cleanly(tmp_path_factory, text):
    path = tmp_path_factory.getbasetemp() / "fuzz" / "lab.yaml"
    path.parent.mkdir(exist_ok=True)
    path.write_bytes(text.encode("utf-8", "surrogatepass"))
    try:
        topo, problems = model.load(str(path)), None
    except TopologyError as e:
        topo, problems = None, e.problems
    # start-up commands would run fuzzed argv as root on this machine (the namespace isolates only the network)
    assume(topo is None or not any(node.exec for node in topo.nodes))
    code, err = _nslab("up", "-q", "--name", LAB, str(path))
    event(f"up exited {code}")  # --hypothesis-show-statistics: how many came up
    try:
        if code == 2:
            assert problems is not None, f"validate took it, up refused it: {err}"
            assert err == "nslab: " + "\n".join(problems) + "\n", err  # every problem, as validate found them
            fuzz.check_problems([p.replace(str(path), fuzz.FILE, 1) for p in problems], text)
        elif code == 3:  # the kernel lacks what it needs (a mutation added a service): refused before anything
            assert topo is not None and needs_of(topo), err
        else:
            assert code == 0, f"validate took it, up failed (exit {code}): {err}\n--- the file:\n{text}"
            assert len([n for n in netns.list_names() if n.startswith(LAB + "-")]) == len(topo.nodes) + 1
    finally:
        if code == 0 or _left():
            down_code, down_err = _nslab("down", LAB)
            assert down_code == 0, down_err
    assert _left() == [], f"exit {code} left {_left()}: {err}"
