"""Tests of the alarm reachability checker (tests/iam/check_alarms.py), on small inline templates."""

import json
import sys
import textwrap
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))

from check_alarms import check, main  # noqa: E402
from check_calls import CheckError, load_template  # noqa: E402

TEMPLATE = textwrap.dedent(
    """
    Resources:
      StageFunction:
        Type: AWS::Serverless::Function
      FailedAlarm:
        Type: AWS::CloudWatch::Alarm
        Properties:
          Namespace: AWS/States
          MetricName: ExecutionsFailed
          Dimensions: [{Name: StateMachineArn, Value: !Ref Pipeline}]
          Statistic: Sum
          Threshold: 1
          ComparisonOperator: GreaterThanOrEqualToThreshold
      ErrorsAlarm:
        Type: AWS::CloudWatch::Alarm
        Properties:
          Metrics:
            - Id: errors
              Expression: SUM([stage, archive])
              ReturnData: true
            - Id: stage
              ReturnData: false
              MetricStat:
                Metric:
                  Namespace: AWS/Lambda
                  MetricName: Errors
                  Dimensions: [{Name: FunctionName, Value: !Ref StageFunction}]
            - Id: archive
              ReturnData: false
              MetricStat:
                Metric:
                  Namespace: AWS/Lambda
                  MetricName: Errors
                  Dimensions: [{Name: FunctionName, Value: !Ref ArchiveFunction}]
          Threshold: 1
          ComparisonOperator: GreaterThanOrEqualToThreshold
      AgeAlarm:
        Type: AWS::CloudWatch::Alarm
        Properties:
          Namespace: AWS/SQS
          MetricName: ApproximateAgeOfOldestMessage
          Dimensions: [{Name: QueueName, Value: !GetAtt Queue.QueueName}]
          Statistic: Maximum
          Threshold: 900
          ComparisonOperator: GreaterThanOrEqualToThreshold
    """
)
RESOURCES = {
    "Pipeline": "arn:sm",
    "StageFunction": "stage",
    "ArchiveFunction": "archive",
    "Queue.QueueName": "incoming",
}


def point(namespace, metric, dimensions, value=1, source="scenario"):
    return {
        "namespace": namespace,
        "metric": metric,
        "dimensions": dimensions,
        "value": value,
        "source": source,
    }


FAILED = point("AWS/States", "ExecutionsFailed", {"StateMachineArn": "arn:sm"})
ARCHIVE_ERROR = point("AWS/Lambda", "Errors", {"FunctionName": "archive"})


def problems(datapoints, not_reached=()):
    return check(load_template(TEMPLATE), datapoints, RESOURCES, set(not_reached))


def test_each_alarm_fires_on_one_datapoint_of_its_metric_or_of_a_summed_member():
    assert problems([FAILED, ARCHIVE_ERROR], not_reached=["AgeAlarm"]) == []


def test_a_datapoint_under_other_dimensions_or_below_the_threshold_fires_nothing():
    other_machine = point("AWS/States", "ExecutionsFailed", {"StateMachineArn": "arn:other"})
    young = point("AWS/SQS", "ApproximateAgeOfOldestMessage", {"QueueName": "incoming"}, 899)
    extra_dimension = point(
        "AWS/Lambda", "Errors", {"FunctionName": "archive", "Resource": "archive"}
    )
    found = problems([other_machine, young, extra_dimension])
    assert [p.split(":")[0] for p in found] == ["AgeAlarm", "ErrorsAlarm", "FailedAlarm"]


def test_an_alarm_named_unreachable_must_exist_and_must_not_fire():
    old = point("AWS/SQS", "ApproximateAgeOfOldestMessage", {"QueueName": "incoming"}, 900)
    found = problems([FAILED, ARCHIVE_ERROR, old], not_reached=["AgeAlarm", "GoneAlarm"])
    assert found == [
        "--not-reached GoneAlarm: no such alarm",
        "AgeAlarm fired (scenario) but is named unreachable",
    ]


def test_an_unresolved_dimension_is_an_error_not_a_silent_miss():
    with pytest.raises(CheckError, match="--resource Queue.QueueName=VALUE"):
        check(load_template(TEMPLATE), [], {"Pipeline": "arn:sm"}, set())


def test_the_command_exits_1_when_an_alarm_cannot_fire(tmp_path, capsys):
    (tmp_path / "template.yaml").write_text(TEMPLATE)
    (tmp_path / "points.json").write_text(json.dumps([FAILED]))
    args = ["--template", str(tmp_path / "template.yaml"), "--datapoints", str(tmp_path / "points.json")]
    args += [f"--resource={k}={v}" for k, v in RESOURCES.items()] + ["--not-reached", "AgeAlarm"]
    assert main(args) == 1
    assert "ALARM CANNOT FIRE: ErrorsAlarm" in capsys.readouterr().out
