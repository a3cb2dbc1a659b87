"""The flow runs one way: cli -> api -> verify -> kernel -> plan -> model -> errors. No module imports
one above it, and only the kernel package imports pyroute2."""

import ast
import pathlib

PKG = pathlib.Path(__file__).resolve().parents[2] / "nslab"
# Higher number = higher layer. vm and state sit beside the kernel: they touch the machine, not netlink.
LAYERS = {"errors": 0, "record": 0, "pyhelper": 0, "interrupts": 0, "model": 1, "plan": 2, "vm": 3, "state": 3, "kernel": 3, "apps": 3, "verify": 4, "faults": 4,
          "api": 5, "cli": 6, "cli_verify": 6, "cli_faults": 6, "pytest_plugin": 6, "__main__": 7}


def layer_of(module: str) -> int:
    return LAYERS[module.split(".")[0]]


def imports(path: pathlib.Path):
    rel = path.relative_to(PKG).with_suffix("")
    package = list(rel.parts[:-1]) if rel.name != "__init__" else list(rel.parts[:-1])
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom):
            if node.level:
                base = package[: len(package) - (node.level - 1)] if node.level > 1 else package
                target = ".".join(base + ([node.module] if node.module else []))
                names = [target] if node.module else [".".join(base + [a.name]) for a in node.names]
                yield from (n for n in names if n)
            elif node.module and node.module.startswith("nslab."):
                yield node.module[len("nslab."):]
            elif node.module:
                yield "!" + node.module
        elif isinstance(node, ast.Import):
            yield from ("!" + a.name for a in node.names)


def test_imports_point_down_and_only_kernel_uses_pyroute2():
    wrong = []
    for path in PKG.rglob("*.py"):
        rel = path.relative_to(PKG).with_suffix("")
        me = rel.parts[0] if len(rel.parts) > 1 else rel.name
        if me == "__init__":
            continue
        for target in imports(path):
            if target.startswith("!"):
                if target[1:].split(".")[0] == "pyroute2" and me != "kernel":
                    wrong.append(f"{rel} imports pyroute2")
                continue
            if target and layer_of(target) > layer_of(me):
                wrong.append(f"{rel} imports {target}")
    assert wrong == []
