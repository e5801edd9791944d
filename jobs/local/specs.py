"""How the local target reads Azure ML CLI v2 job specs: command placeholders, a sweep's search space and
its bandit early-termination policy, as Azure ML applies them."""

from __future__ import annotations

import math
import random
import re
import shlex
import threading

from jobs.flow import FlowError

_PLACEHOLDER = re.compile(r"\$\{\{\s*(inputs|outputs|search_space)\.([A-Za-z0-9_]+)\s*\}\}")
_OPTIONAL = re.compile(r"\$\[\[(.*?)\]\]", re.S)


def render(command: str, values: dict[str, dict[str, str]]) -> str:
    """A spec's command with its `${{...}}` placeholders replaced (shell-quoted). An optional part
    `$[[...]]` is kept only when every placeholder in it has a value, as Azure ML does."""

    def optional(match: re.Match) -> str:
        inner = match.group(1)
        present = all(name in values.get(kind, {}) for kind, name in _PLACEHOLDER.findall(inner))
        return inner if present else ""

    def substitute(match: re.Match) -> str:
        kind, name = match.groups()
        if name not in values.get(kind, {}):
            raise FlowError(f"the command uses ${{{{{kind}.{name}}}}}, which the spec does not define")
        return shlex.quote(values[kind][name])

    return _PLACEHOLDER.sub(substitute, " ".join(_OPTIONAL.sub(optional, command).split()))


# Azure ML sweep distributions (CLI v2 `search_space` types); log* bounds are natural logarithms
DISTRIBUTIONS = {
    "choice": lambda rng, d: rng.choice(d["values"]),
    "randint": lambda rng, d: rng.randrange(d["upper"]),
    "uniform": lambda rng, d: rng.uniform(d["min_value"], d["max_value"]),
    "quniform": lambda rng, d: round(rng.uniform(d["min_value"], d["max_value"]) / d["q"]) * d["q"],
    "loguniform": lambda rng, d: math.exp(rng.uniform(d["min_value"], d["max_value"])),
    "qloguniform": lambda rng, d: round(math.exp(rng.uniform(d["min_value"], d["max_value"])) / d["q"]) * d["q"],
    "normal": lambda rng, d: rng.gauss(d["mu"], d["sigma"]),
    "qnormal": lambda rng, d: round(rng.gauss(d["mu"], d["sigma"]) / d["q"]) * d["q"],
    "lognormal": lambda rng, d: math.exp(rng.gauss(d["mu"], d["sigma"])),
    "qlognormal": lambda rng, d: round(math.exp(rng.gauss(d["mu"], d["sigma"])) / d["q"]) * d["q"],
}


def sample(search_space: dict, rng: random.Random, fixed: dict) -> dict:
    """One trial's parameters: each drawn from its distribution, unless fixed on the command line."""
    params = {}
    for name, distribution in search_space.items():
        kind = distribution.get("type")
        if kind not in DISTRIBUTIONS:
            raise FlowError(f"search_space.{name}: distribution type {kind!r} is not one of {', '.join(DISTRIBUTIONS)}")
        value = DISTRIBUTIONS[kind](rng, distribution)
        params[name] = fixed.get(name, value)
    unknown = set(fixed) - set(search_space)
    if unknown:
        raise FlowError(f"fixed parameter(s) {', '.join(sorted(unknown))} are not in the sweep's search_space")
    return params


class Bandit:
    """Azure ML's bandit policy: at each evaluation, a trial whose best metric so far is worse than the best
    trial's at the same interval by more than the slack (factor or amount) is stopped. Each time a trial
    logs the primary metric counts as one interval."""

    def __init__(self, policy: dict, goal: str):
        self.factor = policy.get("slack_factor")
        self.amount = policy.get("slack_amount")
        if (self.factor is None) == (self.amount is None):
            raise FlowError("early_termination: a bandit policy needs exactly one of slack_factor, slack_amount")
        self.interval = int(policy.get("evaluation_interval", 1)) or 1
        self.delay = int(policy.get("delay_evaluation", 0))
        self.minimize = goal.lower() == "minimize"
        self.best: dict[int, float] = {}  # interval -> best value any trial had reached by then
        self.lock = threading.Lock()

    def _better(self, a: float, b: float) -> float:
        return min(a, b) if self.minimize else max(a, b)

    def record(self, values: list[float]) -> None:
        """Add a trial's metric history (one value per interval) to what later trials are held against."""
        with self.lock:
            running = None
            for interval, value in enumerate(values, start=1):
                running = value if running is None else self._better(running, value)
                self.best[interval] = running if interval not in self.best else self._better(self.best[interval], running)

    def verdict(self, values: list[float]) -> str | None:
        """Why the trial with this history should stop now, or None."""
        interval = len(values)
        if interval < max(self.delay, 1) or (interval - self.delay) % self.interval:
            return None
        with self.lock:
            best = self.best.get(interval)
        if best is None:
            return None
        own = min(values) if self.minimize else max(values)
        if self.factor is not None:
            bar = best * (1 + self.factor) if self.minimize else best / (1 + self.factor)
            slack = f"slack factor {self.factor}"
        else:
            bar = best + self.amount if self.minimize else best - self.amount
            slack = f"slack amount {self.amount}"
        if (own > bar) if self.minimize else (own < bar):
            return f"best {own:,.6g} at interval {interval} is outside the {slack} of the best trial ({best:,.6g})"
        return None
