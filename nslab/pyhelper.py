"""How nslab starts its own Python helpers inside a lab (the built-in apps, the traffic generator).

They run as `python3 -S -m MODULE`, nslab found through PYTHONPATH: -S skips the site module (site-packages
.pth files, an editable install's import hook), which the helpers never need, as they use only the standard
library and nslab. In the emulated kernel VM every Python start takes seconds, and site was a large part of it.
"""

import os
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))  # the directory that holds nslab/


def argv(module: str, *args: str) -> list[str]:
    """The command that runs `python3 -m module args` as a helper (see env())."""
    return [sys.executable, "-S", "-m", module, *args]


def env() -> dict:
    """This process's environment, with nslab's directory first on PYTHONPATH (a helper has no site)."""
    out = dict(os.environ)
    path = out.get("PYTHONPATH")
    out["PYTHONPATH"] = ROOT + (os.pathsep + path if path else "")
    return out
