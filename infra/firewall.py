"""Let this machine through a network-isolated stack's storage firewall for the post-provision stage, and close
it again. The one implementation the deploy workflow's stage job (.github/workflows/stack.yml) and the e2e run
(infra/e2e.py) both call.

    python -m infra.firewall open  --outputs outputs.json [--ip-file FILE]   # before the stage
    python -m infra.firewall close --outputs outputs.json --ip-file FILE     # after it, whatever happened

A private stack's storage account denies the internet, and the stage uploads data and code to it from the
machine it runs on, so `open` adds that machine's public IPv4 address to the account's IP network rules
(through the Azure CLI, signed in as the deployer, who is Contributor on the stack) and `close` removes it.
For a public stack (`network_isolation` is not "private") `open` does nothing and says so.

"IP network rules have no effect on requests originating from the same Azure region as the storage account"
(Azure Storage network security): a machine that happens to run in the stack's region is refused all the same;
runners inside the stack's VNet avoid this (docs/security.md, "Network: who reaches what").

`open` writes the address to --ip-file before it adds the rule, so that `close` also undoes a half-done
opening; `close` removes the rule for the address in that file, then the file: without one it does nothing,
and a second `close` changes nothing. Exit status: 0 done or nothing to do, 1 a step failed (one line names
it), 2 unusable stack outputs.
"""

from __future__ import annotations

import argparse
import functools
import ipaddress
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Callable, Mapping, Sequence

from infra import outputs as keys
# the stage's own reader of the outputs: every key it needs, or one message naming each bad one
from jobs import stack_outputs

# answers with the caller's public IPv4 address as plain text. Storage firewall rules take IPv4 addresses only
# ("Only IPv4 addresses are supported", Azure Storage network security)
PUBLIC_IP_URL = "https://api.ipify.org"
IP_TIMEOUT_S = 30
# like `curl --retry 3`: up to 3 more tries, 1 s then doubling, on a timeout, a refused connection, or HTTP
# 408, 429 or 5xx; any other answer is final
IP_RETRIES = 3
RETRIED_HTTP = {408, 429, 500, 502, 503, 504}
# firewall changes are not instant and no bound is documented: a minute, cheap next to the stage (which
# also retries an upload refused by the firewall for a while: STORAGE_FIREWALL in jobs/azure/credentials.py)
SETTLE_S = 60
AZ_TIMEOUT_S = 5 * 60
EXIT_OK, EXIT_FAILED, EXIT_INVALID = 0, 1, 2

# runs an az command line; answers its exit status and its standard error
Runner = Callable[[Sequence[str]], "tuple[int, str]"]
Report = Callable[[str], None]


class FirewallError(RuntimeError):
    """A step failed; the message is one line that names it."""


def run_az(argv: Sequence[str]) -> tuple[int, str]:
    """The Azure CLI, for real. Its standard output is `--output none`; its standard error is kept for the
    message (the Azure CLI never prints tokens there)."""
    try:
        done = subprocess.run(list(argv), capture_output=True, text=True, timeout=AZ_TIMEOUT_S, check=False)
    except FileNotFoundError:
        return 127, f"{argv[0]}: not installed"
    except subprocess.TimeoutExpired:
        return 124, f"no answer within {AZ_TIMEOUT_S} s"
    return done.returncode, done.stderr


def ipv4(text: str, otherwise: str) -> str:
    """`text` as an IPv4 address in dotted decimal, or FirewallError: `otherwise`, and the text."""
    try:
        return str(ipaddress.IPv4Address(text))
    except ValueError:
        raise FirewallError(f"{otherwise}: {text!r:.60}") from None


def public_ipv4(url: str = PUBLIC_IP_URL, sleep: Callable[[float], None] = time.sleep) -> str:
    """This machine's public IPv4 address, as `url` sees it."""
    for attempt in range(IP_RETRIES + 1):
        try:
            with urllib.request.urlopen(url, timeout=IP_TIMEOUT_S) as response:  # noqa: S310 (an https URL)
                answer = response.read(64).decode("utf-8", "replace").strip()
            break
        except urllib.error.HTTPError as error:
            why, retry = f"HTTP {error.code} {error.reason}", error.code in RETRIED_HTTP
        except OSError as error:  # URLError (refused, unresolved), timeouts
            why, retry = str(getattr(error, "reason", None) or error), True
        if not retry or attempt == IP_RETRIES:
            raise FirewallError(f"could not get this machine's public IP address from {url}: {why}")
        sleep(2**attempt)
    return ipv4(answer, f"{url} did not answer with an IPv4 address")


def rule_command(verb: str, outputs: Mapping[str, str | None], ip: str) -> list[str]:
    """`az storage account network-rule add|remove` for `ip` on the stack's storage account."""
    return ["az", "storage", "account", "network-rule", verb, "--subscription", str(outputs[keys.SUBSCRIPTION_ID]),
            "--resource-group", str(outputs[keys.RESOURCE_GROUP]), "--account-name",
            str(outputs[keys.STORAGE_ACCOUNT]), "--ip-address", ip, "--output", "none"]


def _change_rule(verb: str, outputs: Mapping[str, str | None], ip: str, runner: Runner) -> None:
    code, stderr = runner(rule_command(verb, outputs, ip))
    if code != 0:
        lines = [line.strip() for line in (stderr or "").splitlines() if line.strip()]
        detail = next((line for line in reversed(lines) if line.startswith("ERROR")), lines[-1] if lines else "")
        raise FirewallError(f"`az storage account network-rule {verb}` for {ip} on storage account "
                            f"{outputs[keys.STORAGE_ACCOUNT]} failed (exit {code}){': ' if detail else ''}{detail:.300}")


def open_firewall(outputs: Mapping[str, str | None], ip_file: Path | None, *, runner: Runner = run_az,
                  ip_url: str = PUBLIC_IP_URL, settle_s: float = SETTLE_S, sleep: Callable[[float], None] = time.sleep,
                  report: Report = print) -> None:
    isolation, account = outputs.get(keys.NETWORK_ISOLATION), outputs[keys.STORAGE_ACCOUNT]
    if isolation != "private":
        report(f"storage firewall: nothing to open ({keys.NETWORK_ISOLATION} is {isolation!r}, not 'private')")
        return
    ip = public_ipv4(ip_url, sleep)
    report(f"storage firewall: this machine's public IPv4 address is {ip} ({ip_url})")
    if ip_file is not None:
        ip_file.write_text(f"{ip}\n")
    _change_rule("add", outputs, ip, runner)
    report(f"storage firewall: storage account {account} lets {ip} in; waiting {settle_s:g} s for the rule to apply")
    if settle_s > 0:
        sleep(settle_s)


def recorded_ip(ip_file: Path) -> str | None:
    """The address `open` wrote to `ip_file`, or None when there is none (no file, or an empty one)."""
    try:
        text = ip_file.read_text().strip()
    except FileNotFoundError:
        return None
    return ipv4(text, f"{ip_file} holds no IPv4 address") if text else None


def close_firewall(outputs: Mapping[str, str | None], ip_file: Path, *, runner: Runner = run_az,
                   report: Report = print) -> None:
    ip = recorded_ip(ip_file)
    if ip is None:
        report(f"storage firewall: nothing to close (no address in {ip_file})")
        return
    _change_rule("remove", outputs, ip, runner)
    ip_file.unlink()
    report(f"storage firewall: storage account {outputs[keys.STORAGE_ACCOUNT]} no longer lets {ip} in")


def parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m infra.firewall", description=__doc__.split("\n\n")[0])
    verbs = parser.add_subparsers(dest="verb", required=True)
    opening = verbs.add_parser("open", help="let this machine's public IPv4 address in (a private stack only)")
    closing = verbs.add_parser("close", help="remove the rule for the address in --ip-file, if any")
    for verb in (opening, closing):
        verb.add_argument("--outputs", type=Path, required=True, help="`pulumi stack output --json`, saved")
    opening.add_argument("--ip-file", type=Path, help="where to write the address, for `close`")
    closing.add_argument("--ip-file", type=Path, required=True, help="the file `open` wrote")
    opening.add_argument("--settle-seconds", type=float, default=SETTLE_S,
                         help=f"how long to wait for the rule to apply (default: {SETTLE_S})")
    opening.add_argument("--ip-url", default=PUBLIC_IP_URL,
                         help=f"a service that answers with the caller's public IPv4 address (default: {PUBLIC_IP_URL})")
    return parser


def main(argv: list[str] | None = None, runner: Runner = run_az, sleep: Callable[[float], None] = time.sleep) -> int:
    args = parser().parse_args(argv)
    report = functools.partial(print, flush=True)
    try:
        if args.verb == "close" and recorded_ip(args.ip_file) is None:
            # nothing was opened (a public stack, or an opening that failed before it had an address): the
            # outputs are not even needed
            close_firewall({}, args.ip_file, runner=runner, report=report)
            return EXIT_OK
        try:
            outputs = stack_outputs.from_file(args.outputs)
        except stack_outputs.OutputsError as error:
            print(f"firewall {args.verb}: {error}", file=sys.stderr)
            return EXIT_INVALID
        if args.verb == "open":
            open_firewall(outputs, args.ip_file, runner=runner, ip_url=args.ip_url, settle_s=args.settle_seconds,
                          sleep=sleep, report=report)
        else:
            close_firewall(outputs, args.ip_file, runner=runner, report=report)
    except (FirewallError, OSError) as error:  # OSError: the --ip-file could not be read, written or removed
        print(f"firewall {args.verb}: {error}", file=sys.stderr)
        return EXIT_FAILED
    return EXIT_OK


if __name__ == "__main__":
    sys.exit(main())
