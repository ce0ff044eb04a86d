#!/usr/bin/env python3
"""Alarm reachability checker: would some scenario of the end-to-end run have fired each alarm?

moto emits no CloudWatch metrics, so an alarm on a metric name, a dimension or a resource that
nothing ever emits (a typo, the wrong queue, the wrong state machine) only shows up when it stays
silent in production. The end-to-end test records what AWS would have turned into datapoints
during its run (each function error and throttle the proxy answered, each execution that ended
FAILED or ABORTED, each embedded-metric-format line a handler printed) and this checker evaluates
every ``AWS::CloudWatch::Alarm`` of the template against them.

Rules (https://docs.aws.amazon.com/AmazonCloudWatch/latest/monitoring/AlarmThatSendsEmail.html,
https://docs.aws.amazon.com/AmazonCloudWatch/latest/monitoring/Create-alarm-on-metric-math-expression.html):
* A datapoint matches a metric when namespace, name and the full set of dimensions are equal
  (CloudWatch treats each combination of dimensions as its own metric).
* An alarm fires when one datapoint alone crosses its threshold. A period's Sum or Maximum is at
  least any one datapoint in it, and the sum of a ``SUM([...])`` expression at least any one of
  its members, so this never claims an alarm fires when it would not (it may miss one that would
  only fire on several datapoints added together; none of deltadrop's alarms needs that).
* Dimension values that are intrinsics (``!Ref Function``, ``!GetAtt Queue.QueueName``) are
  resolved with ``--resource LOGICAL_ID[.ATTRIBUTE]=VALUE``; an unknown one is an error.

``--not-reached ALARM`` names an alarm the run cannot reach (a condition that takes hours); the
caller says why. Such an alarm must exist and must not fire, so the list cannot go stale.

Exit status: 0 when every alarm fires or is named unreachable, 1 otherwise, 2 on bad input.
"""

from __future__ import annotations

import argparse
import json
import re
import sys
from pathlib import Path
from typing import Any

from check_calls import CheckError, load_template, resources_of_type

FIRING_COMPARISONS = {
    "GreaterThanOrEqualToThreshold": lambda value, threshold: value >= threshold,
    "GreaterThanThreshold": lambda value, threshold: value > threshold,
}
SUM_EXPRESSION = re.compile(r"^\s*SUM\(\s*\[([^\]]*)\]\s*\)\s*$")


def resolve(value: Any, resources: dict[str, str], where: str) -> str:
    if isinstance(value, str):
        return value
    if isinstance(value, dict) and list(value) == ["Ref"]:
        key = value["Ref"]
    elif isinstance(value, dict) and list(value) == ["Fn::GetAtt"]:
        target = value["Fn::GetAtt"]
        key = target if isinstance(target, str) else ".".join(target)
    else:
        raise CheckError(f"{where}: cannot resolve dimension value {value!r}")
    if key not in resources:
        raise CheckError(f"{where}: pass --resource {key}=VALUE")
    return resources[key]


def metric_of(metric: dict, resources: dict[str, str], where: str) -> tuple:
    dimensions = tuple(
        sorted(
            (d["Name"], resolve(d["Value"], resources, where))
            for d in metric.get("Dimensions", [])
        )
    )
    return (metric["Namespace"], metric["MetricName"], dimensions)


def watched_metrics(name: str, properties: dict, resources: dict[str, str]) -> list[tuple]:
    """The metrics whose single datapoint can fire the alarm."""
    if "MetricName" in properties:
        return [metric_of(properties, resources, name)]
    by_id = {
        m["Id"]: metric_of(m["MetricStat"]["Metric"], resources, f"{name}.{m['Id']}")
        for m in properties.get("Metrics", [])
        if "MetricStat" in m
    }
    returned = [m for m in properties.get("Metrics", []) if m.get("ReturnData", True)]
    if len(returned) != 1:
        raise CheckError(f"{name}: an alarm returns exactly one metric")
    (result,) = returned
    if "MetricStat" in result:
        return [by_id[result["Id"]]]
    match = SUM_EXPRESSION.match(result.get("Expression", ""))
    if not match:
        raise CheckError(f"{name}: unsupported expression {result.get('Expression')!r}")
    ids = [i.strip() for i in match.group(1).split(",") if i.strip()]
    return [by_id[i] for i in ids]


def datapoint_metric(point: dict) -> tuple:
    return (
        point["namespace"],
        point["metric"],
        tuple(sorted(point.get("dimensions", {}).items())),
    )


def firing_datapoint(name: str, properties: dict, resources, datapoints) -> dict | None:
    comparison = properties.get("ComparisonOperator")
    if comparison not in FIRING_COMPARISONS:
        raise CheckError(f"{name}: unsupported ComparisonOperator {comparison}")
    crosses = FIRING_COMPARISONS[comparison]
    watched = set(watched_metrics(name, properties, resources))
    threshold = float(properties["Threshold"])
    for point in datapoints:
        if datapoint_metric(point) in watched and crosses(float(point["value"]), threshold):
            return point
    return None


def check(template: dict, datapoints: list[dict], resources, not_reached: set[str]) -> list[str]:
    alarms = resources_of_type(template, "AWS::CloudWatch::Alarm")
    problems = [f"--not-reached {a}: no such alarm" for a in sorted(not_reached - set(alarms))]
    for name, alarm in sorted(alarms.items()):
        point = firing_datapoint(name, alarm["Properties"], resources, datapoints)
        if point and name in not_reached:
            problems.append(f"{name} fired ({point.get('source')}) but is named unreachable")
        elif point:
            print(f"fires: {name} <- {point['metric']} {point.get('dimensions')}: {point.get('source')}")
        elif name in not_reached:
            print(f"not reached here: {name}")
        else:
            metrics = watched_metrics(name, alarm["Properties"], resources)
            problems.append(f"{name}: no scenario emitted {metrics} at its threshold")
    return problems


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--template", required=True, type=Path)
    parser.add_argument("--datapoints", required=True, type=Path)
    parser.add_argument("--resource", action="append", default=[], metavar="ID=VALUE")
    parser.add_argument("--not-reached", action="append", default=[], metavar="ALARM")
    args = parser.parse_args(argv)
    try:
        template = load_template(args.template.read_text())
        datapoints = json.loads(args.datapoints.read_text())
        resources = dict(r.split("=", 1) for r in args.resource)
        problems = check(template, datapoints, resources, set(args.not_reached))
    except (CheckError, KeyError, ValueError) as e:
        print(f"cannot check the alarms: {e}", file=sys.stderr)
        return 2
    for problem in problems:
        print(f"ALARM CANNOT FIRE: {problem}")
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
