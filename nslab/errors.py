"""The exceptions nslab raises: one base, one subclass per kind of failure, each with its exit code."""


class NslabError(Exception):
    """Base of every error nslab reports to a user (never shown with a traceback)."""

    exit_code = 1


class TopologyError(NslabError):
    """The topology file is wrong; carries every problem found in one pass."""

    exit_code = 2

    def __init__(self, problems):
        self.problems = list(problems)
        super().__init__("\n".join(self.problems))


class UsageError(NslabError):
    """The command line or API call is wrong (unknown lab, bad target)."""

    exit_code = 2


class EnvironmentMissing(NslabError):
    """The running kernel or machine lacks something the lab needs (IPVS, root, qemu)."""

    exit_code = 3


class KernelError(NslabError):
    """A kernel operation failed while applying a plan (already rolled back)."""

    exit_code = 1


class CheckFailed(NslabError):
    """A verification check failed."""

    exit_code = 1


class StateError(NslabError):
    """nslab's own state under /run/nslab is unsafe (a symlink, someone else's) or not what nslab wrote."""

    exit_code = 3


class LabBusy(NslabError):
    """Another nslab run holds the lab's lock (its up or down is under way)."""

    exit_code = 4
