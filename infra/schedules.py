"""What Azure accepts in a compute instance's idle shutdown and start/stop schedules, as pure functions that the
settings (infra/settings.py) and the platform constraints (infra/constraints.py) share.

- Idle shutdown: "Time is defined in ISO8601 format. Minimum is 15 min, maximum is 3 days." (REST API,
  ComputeInstanceProperties.idleTimeBeforeShutdown; the same words in pulumi_azure_native's
  ComputeInstancePropertiesArgs) and "compute instance must be inactive for a minimum of 15 mins and a maximum of
  three days" ("Create an Azure Machine Learning compute instance", Configure idle shutdown).
- Schedules: "You can create a total of four schedules per compute instance." (ibid., Schedule automatic start and
  stop). A cron trigger's expression "should follow NCronTab format" and its time zone "should follow Windows time
  zone format" (REST API, Cron). The page gives the grammar the service takes: five fields "min (0 - 59)", "hour
  (0 - 23)", "day of month (1 - 31)", "month (1 - 12)", "day of week (0 - 6) (Sunday=0)"; "The value column can
  have a * or a list of elements separated by commas. An element is either a number in the ranges shown above or
  two numbers in the range separated by a hyphen (meaning an inclusive range)."
"""

from __future__ import annotations

import re

IDLE_SHUTDOWN_MINUTES = (15, 3 * 24 * 60)
MAX_SCHEDULES = 4
# days, hours, minutes, seconds; no years, months or weeks, whose length in minutes is not fixed
_DURATION = re.compile(r"P(?:(?P<d>\d+)D)?(?:T(?=\d)(?:(?P<h>\d+)H)?(?:(?P<m>\d+)M)?(?:(?P<s>\d+)S)?)?")
CRON_FIELDS = (("minute", 0, 59), ("hour", 0, 23), ("day of month", 1, 31), ("month", 1, 12), ("day of week", 0, 6))
CRON_GRAMMAR = (
    "five fields 'minute hour day-of-month month day-of-week' (0-59, 0-23, 1-31, 1-12, 0-6 with Sunday 0), each '*' "
    "or a comma-separated list of numbers and ranges such as 1-5"
)
_ELEMENT = re.compile(r"(\d+)(?:-(\d+))?")

# The Windows time zone names an Azure ML compute instance schedule accepts: azure-ai-ml 1.35.2,
# azure/ai/ml/constants/_common.py, `class TimeZone`: "Time zones that a job or compute instance schedule
# accepts." Copied (importing azure.ai.ml costs the program 1.7 s); tests/test_infra_workstations.py holds the
# copy equal to the SDK's list.
WINDOWS_TIME_ZONES = (
    'Dateline Standard Time', 'UTC-11', 'Aleutian Standard Time', 'Hawaiian Standard Time',
    'Marquesas Standard Time', 'Alaskan Standard Time', 'UTC-09', 'Pacific Standard Time (Mexico)', 'UTC-08',
    'Pacific Standard Time', 'US Mountain Standard Time', 'Mountain Standard Time (Mexico)',
    'Mountain Standard Time', 'Central America Standard Time', 'Central Standard Time',
    'Easter Island Standard Time', 'Central Standard Time (Mexico)', 'Canada Central Standard Time',
    'SA Pacific Standard Time', 'Eastern Standard Time (Mexico)', 'Eastern Standard Time', 'Haiti Standard Time',
    'Cuba Standard Time', 'US Eastern Standard Time', 'Paraguay Standard Time', 'Atlantic Standard Time',
    'Venezuela Standard Time', 'Central Brazilian Standard Time', 'SA Western Standard Time',
    'Pacific SA Standard Time', 'Turks And Caicos Standard Time', 'Newfoundland Standard Time',
    'Tocantins Standard Time', 'E. South America Standard Time', 'SA Eastern Standard Time',
    'Argentina Standard Time', 'Greenland Standard Time', 'Montevideo Standard Time', 'Saint Pierre Standard Time',
    'Bahia Standard Time', 'UTC-02', 'Mid-Atlantic Standard Time', 'Azores Standard Time',
    'Cape Verde Standard Time', 'UTC', 'Morocco Standard Time', 'GMT Standard Time', 'Greenwich Standard Time',
    'W. Europe Standard Time', 'Central Europe Standard Time', 'Romance Standard Time',
    'Central European Standard Time', 'W. Central Africa Standard Time', 'Namibia Standard Time',
    'Jordan Standard Time', 'GTB Standard Time', 'Middle East Standard Time', 'Egypt Standard Time',
    'E. Europe Standard Time', 'Syria Standard Time', 'West Bank Standard Time', 'South Africa Standard Time',
    'FLE Standard Time', 'Turkey Standard Time', 'Israel Standard Time', 'Kaliningrad Standard Time',
    'Libya Standard Time', 'Arabic Standard Time', 'Arab Standard Time', 'Belarus Standard Time',
    'Russian Standard Time', 'E. Africa Standard Time', 'Iran Standard Time', 'Arabian Standard Time',
    'Astrakhan Standard Time', 'Azerbaijan Standard Time', 'Russia Time Zone 3', 'Mauritius Standard Time',
    'Georgian Standard Time', 'Caucasus Standard Time', 'Afghanistan Standard Time', 'West Asia Standard Time',
    'Ekaterinburg Standard Time', 'Pakistan Standard Time', 'India Standard Time', 'Sri Lanka Standard Time',
    'Nepal Standard Time', 'Central Asia Standard Time', 'Bangladesh Standard Time', 'N. Central Asia Standard Time',
    'Myanmar Standard Time', 'SE Asia Standard Time', 'Altai Standard Time', 'W. Mongolia Standard Time',
    'North Asia Standard Time', 'Tomsk Standard Time', 'China Standard Time', 'North Asia East Standard Time',
    'Singapore Standard Time', 'W. Australia Standard Time', 'Taipei Standard Time', 'Ulaanbaatar Standard Time',
    'North Korea Standard Time', 'Aus Central W. Standard Time', 'Transbaikal Standard Time', 'Tokyo Standard Time',
    'Korea Standard Time', 'Yakutsk Standard Time', 'Cen. Australia Standard Time', 'AUS Central Standard Time',
    'E. Australia Standard Time', 'AUS Eastern Standard Time', 'West Pacific Standard Time',
    'Tasmania Standard Time', 'Vladivostok Standard Time', 'Lord Howe Standard Time', 'Bougainville Standard Time',
    'Russia Time Zone 10', 'Magadan Standard Time', 'Norfolk Standard Time', 'Sakhalin Standard Time',
    'Central Pacific Standard Time', 'Russia Time Zone 11', 'New Zealand Standard Time', 'UTC+12',
    'Fiji Standard Time', 'Kamchatka Standard Time', 'Chatham Islands Standard Time', 'Tonga Standard Time',
    'Samoa Standard Time', 'Line Islands Standard Time',
)
_TIME_ZONES = frozenset(WINDOWS_TIME_ZONES)


def duration_minutes(text: str) -> float | None:
    """An ISO 8601 duration (days, hours, minutes, seconds) in minutes, or None when `text` is not one."""
    match = _DURATION.fullmatch(text) if isinstance(text, str) else None
    if match is None or not any(match.groupdict().values()):
        return None
    parts = {key: int(value or 0) for key, value in match.groupdict().items()}
    return parts["d"] * 1440 + parts["h"] * 60 + parts["m"] + parts["s"] / 60


def idle_shutdown_problem(text: str) -> str | None:
    """Why `text` is no idle shutdown time Azure accepts, or None."""
    minutes = duration_minutes(text)
    if minutes is None:
        return "expected an ISO 8601 duration such as PT30M, PT2H or P1D"
    low, high = IDLE_SHUTDOWN_MINUTES
    if not low <= minutes <= high:
        return f"that is {minutes:g} minutes; allowed: 15 minutes (PT15M) to 3 days (P3D)"
    return None


def cron_problem(expression: str) -> str | None:
    """Why `expression` is no cron expression a compute instance schedule takes, or None."""
    fields = expression.split() if isinstance(expression, str) else []
    if len(fields) != len(CRON_FIELDS):
        return f"it has {len(fields)} fields; expected {CRON_GRAMMAR}"
    for text, (what, low, high) in zip(fields, CRON_FIELDS):
        if text == "*":
            continue
        for element in text.split(","):
            match = _ELEMENT.fullmatch(element)
            if match is None:
                return f"{what} {text!r} is not '*' or a list of numbers and ranges; expected {CRON_GRAMMAR}"
            first, last = int(match[1]), int(match[2] if match[2] is not None else match[1])
            if not (low <= first <= high and low <= last <= high):
                return f"{what} {element!r} is outside {low}-{high}"
            if first > last:
                return f"{what} range {element!r} runs backwards"
    return None


def time_zone_problem(name: str) -> str | None:
    if name in _TIME_ZONES:
        return None
    return (
        "not a Windows time zone name an Azure ML schedule accepts, such as 'W. Europe Standard Time' or 'UTC' "
        "(the list: infra/schedules.py)"
    )
