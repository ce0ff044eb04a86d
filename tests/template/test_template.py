# Run: .venv/bin/python -m pytest tests/template -q
"""template.yaml, held to what real AWS does where the emulator (moto) cannot tell.

The template is loaded with cfn-lint's own YAML loader, so `!Sub`, `!GetAtt`... parse as
CloudFormation intrinsics. A small evaluator below resolves the few intrinsics the policies use
and evaluates IAM statements (Action/Resource/NotResource globs and the condition operators the
template uses) well enough to ask "would this principal be allowed / denied this call?".

What each group of tests guards (AWS documentation in template.yaml next to each resource):
* S3 answers 403, not 404, for a missing key unless the caller may s3:ListBucket the bucket
  without an s3:prefix condition.
* CloudWatch alarms cannot publish to a topic encrypted with alias/aws/sns.
* A Step Functions state's TimeoutSeconds counts from scheduling: the function timeout must be
  well below it.
* Producers must not rewrite the configuration, the tables or the archive (bucket policy).
* Housekeeping: lifecycle rules, retention, queue visibility, the bucket ARN in the queue policy,
  parameter patterns, the partition, and per-crate builds (only upsert links DataFusion).
"""

from __future__ import annotations

import json
import re
import tomllib
from fnmatch import fnmatchcase
from pathlib import Path
from typing import Any

import pytest
from cfnlint.decode import decode

ROOT = Path(__file__).resolve().parents[2]
TEMPLATE_PATH = ROOT / "template.yaml"

FUNCTIONS = [
    "TriggerFunction",
    "StageFunction",
    "ArchiveFunction",
    "UpsertFunction",
    "NotifyFunction",
    "MaintainFunction",
    "WatchFunction",
]
# The functions that write objects: the bucket policy lets exactly their roles write outside
# the incoming prefix (all of them: the watch writes what it emailed under _deltadrop/watch/).
WRITERS = FUNCTIONS
STAGING = "_deltadrop/staging/"

# A made-up deployment to resolve intrinsics against.
ACCOUNT = "123456789012"
REGION = "eu-west-1"
PARTITION = "aws"
STACK_UUID = "51af3dc0-da77-11e4-872e-1234567db123"
STACK_ID = f"arn:{PARTITION}:cloudformation:{REGION}:{ACCOUNT}:stack/deltadrop/{STACK_UUID}"
BUCKET = "the-data-bucket"
PRODUCER = f"arn:{PARTITION}:iam::{ACCOUNT}:role/orders-producer"
ADMIN = f"arn:{PARTITION}:iam::{ACCOUNT}:role/platform-admin"


def load_template() -> dict:
    template, matches = decode(str(TEMPLATE_PATH))
    assert not matches, f"template.yaml does not parse: {matches}"
    return template


T = load_template()
RESOURCES = T["Resources"]
PARAMETERS = T["Parameters"]


def props(logical_id: str) -> dict:
    return RESOURCES[logical_id].get("Properties") or {}


def function_setting(logical_id: str, name: str) -> Any:
    """A function property, falling back to Globals.Function as SAM does."""
    value = props(logical_id).get(name)
    if value is None:
        value = ((T.get("Globals") or {}).get("Function") or {}).get(name)
    return value


def role_arn(function: str) -> str:
    return f"arn:{PARTITION}:iam::{ACCOUNT}:role/deltadrop-{function}Role-ABC123"


# ------------------------------------------------------------------------------------------
# Resolving intrinsics
# ------------------------------------------------------------------------------------------


NO_VALUE = object()


class Resolver:
    def __init__(self, parameters: dict[str, str] | None = None):
        self.parameters = parameters or {}

    def param(self, name: str) -> Any:
        declared = PARAMETERS[name]
        value = self.parameters.get(name, declared.get("Default"))
        assert value is not None, f"parameter {name} needs a value"
        value = str(value)
        # CloudFormation turns a CommaDelimitedList into a list ("" becomes [""]).
        return value.split(",") if declared["Type"] == "CommaDelimitedList" else value

    def ref(self, name: str) -> Any:
        pseudo = {
            "AWS::Partition": PARTITION,
            "AWS::AccountId": ACCOUNT,
            "AWS::Region": REGION,
            "AWS::StackId": STACK_ID,
            "AWS::StackName": "deltadrop",
        }
        if name in pseudo:
            return pseudo[name]
        if name in PARAMETERS:
            return self.param(name)
        if name == "DataBucket":
            return BUCKET
        if name in RESOURCES:
            return f"{name}-physical-id"
        raise AssertionError(f"cannot resolve Ref {name}")

    def get_att(self, logical_id: str, attribute: str) -> str:
        assert attribute == "Arn", f"unexpected GetAtt {logical_id}.{attribute}"
        if logical_id == "DataBucket":
            return f"arn:{PARTITION}:s3:::{BUCKET}"
        if logical_id.endswith("Role") and logical_id[: -len("Role")] in FUNCTIONS:
            return role_arn(logical_id[: -len("Role")])
        if RESOURCES.get(logical_id, {}).get("Type") == "AWS::IAM::Role":
            return f"arn:{PARTITION}:iam::{ACCOUNT}:role/deltadrop-{logical_id}-ABC123"
        if logical_id in FUNCTIONS:
            return f"arn:{PARTITION}:lambda:{REGION}:{ACCOUNT}:function:{logical_id}"
        raise AssertionError(f"cannot resolve GetAtt {logical_id}.{attribute}")

    def condition(self, name: str) -> bool:
        """A condition of the template's Conditions, for these parameters."""
        return self.holds(T["Conditions"][name])

    def holds(self, expression: Any) -> bool:
        (key, arg), = expression.items()
        if key == "Condition":
            return self.condition(arg)
        if key == "Fn::Equals":
            left, right = (self.resolve(a) for a in arg)
            return str(left) == str(right)
        if key == "Fn::Not":
            return not self.holds(arg[0])
        if key == "Fn::And":
            return all(self.holds(a) for a in arg)
        if key == "Fn::Or":
            return any(self.holds(a) for a in arg)
        raise AssertionError(f"the test resolver does not know condition {key}")

    def resolve(self, value: Any) -> Any:
        if isinstance(value, list):
            # AWS::NoValue removes the item (an Fn::If that chose it).
            return [r for r in (self.resolve(v) for v in value) if r is not NO_VALUE]
        if not isinstance(value, dict):
            return value
        if len(value) == 1:
            (key, arg), = value.items()
            if key == "Ref" and arg == "AWS::NoValue":
                return NO_VALUE
            if key == "Fn::If":
                name, if_true, if_false = arg
                return self.resolve(if_true if self.condition(name) else if_false)
            if key == "Ref":
                return self.ref(arg)
            if key == "Fn::GetAtt":
                logical_id, attribute = arg.split(".", 1) if isinstance(arg, str) else arg
                return self.get_att(logical_id, attribute)
            if key == "Fn::Sub":
                return self.sub(arg)
            if key == "Fn::Select":
                index, items = arg
                return self.resolve(items)[int(index)]
            if key == "Fn::Split":
                delimiter, text = arg
                return self.resolve(text).split(delimiter)
            if key == "Fn::Join":
                delimiter, items = arg
                return delimiter.join(self.resolve(items))
            if key.startswith("Fn::"):
                raise AssertionError(f"the test resolver does not know {key}")
        return {k: self.resolve(v) for k, v in value.items()}

    def sub(self, arg: Any) -> str:
        text, variables = (arg, {}) if isinstance(arg, str) else (arg[0], arg[1])

        def replace(match: re.Match) -> str:
            name = match.group(1)
            if name in variables:
                return str(self.resolve(variables[name]))
            if "." in name and not name.startswith("AWS::"):
                return self.get_att(*name.split(".", 1))
            return str(self.ref(name))

        return re.sub(r"\$\{([^}!]+)\}", replace, text)


def as_list(value: Any) -> list:
    return value if isinstance(value, list) else [value]


# ------------------------------------------------------------------------------------------
# Evaluating IAM statements
# ------------------------------------------------------------------------------------------


def glob(pattern: str, value: str, ignore_case: bool = False) -> bool:
    """IAM wildcards: * any run of characters (across '/' and ':'), ? one character."""
    if ignore_case:
        pattern, value = pattern.lower(), value.lower()
    return fnmatchcase(value, pattern.replace("[", "[[]"))


def arn_like(pattern: str, value: str) -> bool:
    p, v = pattern.split(":", 5), value.split(":", 5)
    return len(p) == 6 and len(v) == 6 and all(glob(a, b) for a, b in zip(p, v))


POSITIVE = {
    "StringEquals": lambda p, v: p == v,
    "StringLike": glob,
    "ArnEquals": arn_like,
    "ArnLike": arn_like,
    "Bool": lambda p, v: p.lower() == v.lower(),
}
NEGATED = {"StringNotEquals": "StringEquals", "StringNotLike": "StringLike",
           "ArnNotEquals": "ArnEquals", "ArnNotLike": "ArnLike"}


def condition_holds(condition: dict | None, context: dict[str, str]) -> bool:
    for operator, keys in (condition or {}).items():
        for key, values in keys.items():
            values = [str(v) for v in as_list(values)]
            value = context.get(key.lower())
            if operator in NEGATED:
                if value is not None and any(POSITIVE[NEGATED[operator]](p, value) for p in values):
                    return False
            elif operator == "Null":
                # "true": the key is absent from the request; "false": it is there.
                if (value is None) != (values == ["true"]):
                    return False
            elif operator in POSITIVE:
                if value is None or not any(POSITIVE[operator](p, value) for p in values):
                    return False
            else:
                raise AssertionError(f"the test evaluator does not know {operator}")
    return True


def applies(statement: dict, action: str, resource: str, context: dict[str, str]) -> bool:
    if not any(glob(a, action, ignore_case=True) for a in as_list(statement["Action"])):
        return False
    if "Resource" in statement:
        if not any(glob(r, resource) for r in as_list(statement["Resource"])):
            return False
    elif any(glob(r, resource) for r in as_list(statement["NotResource"])):
        return False
    return condition_holds(statement.get("Condition"), context)


def function_statements(function: str, resolver: Resolver | None = None) -> list[dict]:
    resolver = resolver or Resolver({"SenderEmail": "sender@example.com"})
    statements = []
    for entry in as_list(props(function).get("Policies", [])):
        if isinstance(entry, dict) and "Statement" in entry:
            statements += as_list(resolver.resolve(entry)["Statement"])
        # A managed policy of the template's own (StagePolicy, shared with the container tier).
        if isinstance(entry, dict) and list(entry) == ["Ref"] and entry["Ref"] in RESOURCES:
            document = RESOURCES[entry["Ref"]]["Properties"]["PolicyDocument"]
            statements += as_list(resolver.resolve(document)["Statement"])
    return statements


def function_allows(function: str, action: str, key: str | None = None, context=None) -> bool:
    resource = f"arn:{PARTITION}:s3:::{BUCKET}" + (f"/{key}" if key is not None else "")
    context = {k.lower(): v for k, v in (context or {}).items()}
    statements = function_statements(function)
    if any(s["Effect"] == "Deny" and applies(s, action, resource, context) for s in statements):
        return False
    return any(s["Effect"] == "Allow" and applies(s, action, resource, context) for s in statements)


def bucket_policy_statements(resolver: Resolver) -> list[dict]:
    (policy,) = [r for r in RESOURCES.values() if r["Type"] == "AWS::S3::BucketPolicy"]
    assert policy["Properties"]["Bucket"] == {"Ref": "DataBucket"}
    return as_list(resolver.resolve(policy["Properties"]["PolicyDocument"])["Statement"])


def bucket_policy_denies(principal: str, action: str, key: str, parameters=None, context=None) -> bool:
    resolver = Resolver(parameters)
    resource = f"arn:{PARTITION}:s3:::{BUCKET}/{key}"
    context = {"aws:principalarn": principal, "aws:securetransport": "true",
               **{k.lower(): v for k, v in (context or {}).items()}}
    return any(
        s["Effect"] == "Deny" and s.get("Principal") == "*" and applies(s, action, resource, context)
        for s in bucket_policy_statements(resolver)
    )


# ------------------------------------------------------------------------------------------
# 1. S3: 403 instead of 404 without an unconditioned ListBucket
# ------------------------------------------------------------------------------------------


@pytest.mark.parametrize("function", FUNCTIONS)
def test_every_reading_function_may_list_the_bucket_without_a_condition(function):
    statements = function_statements(function)
    assert any("s3:getobject" in [a.lower() for a in as_list(s["Action"])] for s in statements), (
        f"{function} reads the configuration, so it needs s3:GetObject"
    )
    bucket_arn = f"arn:{PARTITION}:s3:::{BUCKET}"
    unconditioned = [
        s for s in statements
        if s["Effect"] == "Allow"
        and "s3:listbucket" in [a.lower() for a in as_list(s["Action"])]
        and bucket_arn in as_list(s.get("Resource", []))
        and not s.get("Condition")
    ]
    assert unconditioned, (
        f"{function} reads objects but has no s3:ListBucket on the bucket without a condition: "
        "S3 would answer 403 instead of 404 for a missing key"
    )
    # A GET/HEAD carries no s3:prefix, so the evaluator (like S3) sees no prefix in the context.
    assert function_allows(function, "s3:ListBucket")


@pytest.mark.parametrize(
    ("function", "action", "key"),
    [
        # archive: the move (copy + delete), the existence checks, the error report, the staging drop
        ("ArchiveFunction", "s3:GetObject", "deltadrop.toml"),
        ("ArchiveFunction", "s3:GetObject", "incoming/orders/a.csv"),
        ("ArchiveFunction", "s3:GetObject", "archive/incoming/orders/a.csv"),
        ("ArchiveFunction", "s3:GetObject", "quarantine/incoming/orders/a.csv"),
        ("ArchiveFunction", "s3:GetObject", f"{STAGING}run-1/_delta_log/_last_checkpoint"),
        ("ArchiveFunction", "s3:PutObject", "archive/incoming/orders/a.csv"),
        ("ArchiveFunction", "s3:PutObject", "quarantine/incoming/orders/a.csv"),
        ("ArchiveFunction", "s3:PutObject", "quarantine/incoming/orders/a.csv.error.json"),
        ("ArchiveFunction", "s3:AbortMultipartUpload", "archive/incoming/orders/big.csv"),
        ("ArchiveFunction", "s3:DeleteObject", "incoming/orders/a.csv"),
        ("ArchiveFunction", "s3:DeleteObject", "archive/incoming/orders/a.csv"),
        ("ArchiveFunction", "s3:DeleteObject", f"{STAGING}run-1/part-0.parquet"),
        # a copy takes a tagged upload's tags along (CopyObject's tagging directive is COPY)
        ("ArchiveFunction", "s3:GetObjectTagging", "incoming/orders/a.csv"),
        ("ArchiveFunction", "s3:GetObjectVersionTagging", "incoming/orders/a.csv"),
        ("ArchiveFunction", "s3:PutObjectTagging", "archive/incoming/orders/a.csv"),
        ("ArchiveFunction", "s3:PutObjectTagging", "quarantine/incoming/orders/a.csv"),
        # stage: reads the file and the target table, writes the staging table
        ("StageFunction", "s3:GetObject", "incoming/orders/a.csv"),
        ("StageFunction", "s3:GetObject", "tables/orders/_delta_log/_last_checkpoint"),
        ("StageFunction", "s3:PutObject", f"{STAGING}run-1/_delta_log/00000000000000000000.json"),
        ("StageFunction", "s3:DeleteObject", f"{STAGING}run-1/part-0.parquet"),
        # upsert: commits to the table, reads and drops the staging table
        ("UpsertFunction", "s3:PutObject", "tables/orders/_delta_log/00000000000000000001.json"),
        ("UpsertFunction", "s3:GetObject", f"{STAGING}run-1/part-0.parquet"),
        ("UpsertFunction", "s3:DeleteObject", f"{STAGING}run-1/part-0.parquet"),
        ("TriggerFunction", "s3:GetObject", "deltadrop.toml"),
        ("NotifyFunction", "s3:GetObject", "deltadrop.toml"),
    ],
)
def test_functions_may_make_the_calls_their_steps_make(function, action, key):
    assert function_allows(function, action, key), f"{function} may not {action} {key}"


@pytest.mark.parametrize(
    ("function", "action", "key"),
    [
        ("ArchiveFunction", "s3:PutObject", "incoming/orders/a.csv"),  # would start a new run
        ("ArchiveFunction", "s3:PutObject", "tables/orders/part-0.parquet"),
        ("ArchiveFunction", "s3:PutObject", "deltadrop.toml"),
        ("ArchiveFunction", "s3:PutObjectTagging", "incoming/orders/a.csv"),
        ("ArchiveFunction", "s3:PutObjectTagging", "tables/orders/part-0.parquet"),
        ("StageFunction", "s3:PutObject", "tables/orders/part-0.parquet"),
        ("StageFunction", "s3:DeleteObject", "incoming/orders/a.csv"),
        ("UpsertFunction", "s3:PutObject", "incoming/orders/a.csv"),
        ("TriggerFunction", "s3:PutObject", "incoming/orders/a.csv"),
        ("NotifyFunction", "s3:GetObject", "tables/orders/part-0.parquet"),
        ("NotifyFunction", "s3:PutObject", "deltadrop.toml"),
    ],
)
def test_functions_get_nothing_their_steps_do_not_need(function, action, key):
    assert not function_allows(function, action, key), f"{function} should not {action} {key}"


# ------------------------------------------------------------------------------------------
# 2. Alarms must be able to publish
# ------------------------------------------------------------------------------------------


def referenced_resource(value: Any) -> str | None:
    if isinstance(value, dict) and "Ref" in value:
        return value["Ref"]
    if isinstance(value, dict) and "Fn::GetAtt" in value:
        arg = value["Fn::GetAtt"]
        return (arg.split(".")[0] if isinstance(arg, str) else arg[0])
    return None


def all_strings(node: Any):
    if isinstance(node, dict):
        for key, value in node.items():
            yield str(key)
            yield from all_strings(value)
    elif isinstance(node, list):
        for item in node:
            yield from all_strings(item)
    elif isinstance(node, str):
        yield node


def alarm_topics() -> set[str]:
    topics = set()
    for resource in RESOURCES.values():
        if resource["Type"] == "AWS::CloudWatch::Alarm":
            for action in resource["Properties"].get("AlarmActions", []):
                topics.add(referenced_resource(action))
    return topics


def test_alarms_exist_and_all_notify_the_alarm_topic():
    alarms = {n: r for n, r in RESOURCES.items() if r["Type"] == "AWS::CloudWatch::Alarm"}
    assert alarm_topics() == {"AlarmTopic"}
    for name, alarm in alarms.items():
        assert alarm["Properties"].get("AlarmActions"), f"{name} notifies nobody"
    metrics = set()
    for alarm in alarms.values():
        p = alarm["Properties"]
        if "MetricName" in p:
            metrics.add((p["Namespace"], p["MetricName"]))
        for m in p.get("Metrics", []):
            if "MetricStat" in m:
                metric = m["MetricStat"]["Metric"]
                metrics.add((metric["Namespace"], metric["MetricName"]))
    for expected in [
        ("AWS/States", "ExecutionsFailed"),
        ("AWS/States", "ExecutionsTimedOut"),
        ("AWS/States", "ExecutionsAborted"),
        ("AWS/Lambda", "Errors"),
        ("AWS/Lambda", "Throttles"),
        ("AWS/SQS", "ApproximateAgeOfOldestMessage"),
    ]:
        assert expected in metrics, f"no alarm on {expected}"
    notify_errors = [
        a for a in alarms.values()
        if a["Properties"].get("MetricName") == "Errors"
        and {"Name": "FunctionName", "Value": {"Ref": "NotifyFunction"}} in a["Properties"].get("Dimensions", [])
    ]
    assert notify_errors and "emails could not be sent" in notify_errors[0]["Properties"]["AlarmDescription"]


def alarmed_metrics() -> list[tuple[str, str, dict]]:
    """(namespace, metric name, dimensions) of every metric some alarm watches."""
    watched = []
    for resource in RESOURCES.values():
        if resource["Type"] != "AWS::CloudWatch::Alarm":
            continue
        p = resource["Properties"]
        if "MetricName" in p:
            watched.append((p["Namespace"], p["MetricName"], p.get("Dimensions", [])))
        for m in p.get("Metrics", []):
            if "MetricStat" in m:
                metric = m["MetricStat"]["Metric"]
                watched.append((metric["Namespace"], metric["MetricName"], metric.get("Dimensions", [])))
    return watched


@pytest.mark.parametrize("function", FUNCTIONS)
def test_every_function_errors_metric_is_alarmed(function):
    # Scheduled functions (maintain, watch) are invoked asynchronously by EventBridge Scheduler:
    # nothing else reports their failures.
    dimension = {"Name": "FunctionName", "Value": {"Ref": function}}
    assert any(
        (ns, name) == ("AWS/Lambda", "Errors") and dimension in dims
        for ns, name, dims in alarmed_metrics()
    ), f"no alarm on the Errors of {function}"


def test_a_silent_watch_breaches_the_stale_files_alarm():
    alarm = props("StaleFilesAlarm")
    assert alarm["MetricName"] == "StaleFiles"
    assert alarm["TreatMissingData"] == "breaching"
    schedule = props("WatchFunction")["Events"]["Every15Minutes"]["Properties"]["ScheduleExpression"]
    assert schedule == "rate(15 minutes)"
    # A period of two runs: one late run still leaves a datapoint.
    assert alarm["Period"] >= 2 * 15 * 60


def test_the_timed_out_executions_alarm_can_fire():
    # Without a top-level TimeoutSeconds an execution never times out (every task timeout is
    # caught), so ExecutionsTimedOut stays 0. The limit is above the longest legitimate run: four
    # lane attempts at their full timeout and the lane's waits, plus every other task at its
    # timeout for each attempt (a throttled attempt costs its retry delay, not a timeout).
    asl = json.loads((ROOT / "infra/statemachine/pipeline.asl.json").read_text())
    states = asl["States"]

    def longest(state):
        timeout, total = state["TimeoutSeconds"], state["TimeoutSeconds"]
        for retrier in state.get("Retry", []):
            # Throttling, and a container task that did not start, fail before any work.
            if {"Lambda.TooManyRequestsException", "AmazonECS.Unknown"} & set(retrier["ErrorEquals"]):
                total += retrier["MaxAttempts"] * retrier["MaxDelaySeconds"]
            else:
                total += retrier.get("MaxAttempts", 3) * timeout
        return total

    tasks = sum(longest(st) for name, st in states.items() if st["Type"] == "Task" and name != "Upsert")
    lane = 4 * states["Upsert"]["TimeoutSeconds"] + 40 * states["WaitForEarlierFile"]["Seconds"]
    # A Distributed Map runs its children MaxConcurrency at a time: the most chunks a file is cut
    # into (MAX_CHUNKS in crates/deltadrop/src/route.rs) take that many waves of its longest child.
    source = (ROOT / "crates/deltadrop/src/route.rs").read_text()
    max_chunks = int(re.search(r"pub const MAX_CHUNKS: u64 = (\d+);", source).group(1))
    maps = 0
    for state in states.values():
        if state["Type"] == "Map":
            children = state["ItemProcessor"]["States"].values()
            waves = -(-max_chunks // state["MaxConcurrency"])
            maps += waves * max(longest(st) for st in children if st["Type"] == "Task")
    assert maps > 0
    assert asl["TimeoutSeconds"] >= lane + tasks + maps
    alarm = props("TimedOutExecutionsAlarm")
    assert alarm["MetricName"] == "ExecutionsTimedOut"
    assert alarm["Dimensions"] == [{"Name": "StateMachineArn", "Value": {"Ref": "PipelineStateMachine"}}]


def test_throttling_is_retried_longer_than_other_lambda_errors_and_longest_on_the_failure_path():
    # AWS: retry Lambda service exceptions, and give throttling (Lambda.TooManyRequestsException)
    # a longer backoff; Lambda.ClientExecutionTimeoutException is one of them
    # (https://docs.aws.amazon.com/step-functions/latest/dg/bp-lambda-serviceexception.html).
    states = json.loads((ROOT / "infra/statemachine/pipeline.asl.json").read_text())["States"]
    budgets = {}
    for name, state in states.items():
        if state["Type"] != "Task" or not state["Resource"].endswith("FunctionArn}"):
            continue
        first = state["Retry"][0]
        assert first["ErrorEquals"] == ["Lambda.TooManyRequestsException", "Lambda.ClientExecutionTimeoutException"], name
        assert first["JitterStrategy"] == "FULL" and first["BackoffRate"] >= 2
        for later in state["Retry"][1:]:
            assert "Lambda.TooManyRequestsException" not in later["ErrorEquals"], name
        budgets[name] = first["MaxAttempts"] * first["MaxDelaySeconds"]
        assert first["MaxAttempts"] >= 12, name
    for failure_path in ["Quarantine", "NotifyFailure"]:
        assert budgets[failure_path] > max(budgets["Stage"], budgets["Archive"])


def test_failures_of_the_maintenance_state_machine_are_alarmed():
    dimension = {"Name": "StateMachineArn", "Value": {"Ref": "MaintenanceStateMachine"}}
    assert any(
        (ns, name) == ("AWS/States", "ExecutionsFailed") and dimension in dims
        for ns, name, dims in alarmed_metrics()
    )


def test_the_failed_executions_text_does_not_promise_quarantine_for_every_failure():
    text = props("FailedExecutionsAlarm")["AlarmDescription"]
    assert "UploadReplaced" in text and "quarantine itself failed" in text


def test_alarm_topic_uses_a_customer_managed_key_cloudwatch_may_use():
    for topic in alarm_topics():
        key_id = referenced_resource(props(topic).get("KmsMasterKeyId"))
        assert key_id in RESOURCES, f"{topic} must be encrypted with a key from this template"
        key = RESOURCES[key_id]
        assert key["Type"] == "AWS::KMS::Key"
        assert key["Properties"].get("EnableKeyRotation") is True
        statements = as_list(Resolver().resolve(key["Properties"]["KeyPolicy"])["Statement"])
        account_admin = [
            s for s in statements
            if s["Effect"] == "Allow"
            and s.get("Principal", {}).get("AWS") == f"arn:{PARTITION}:iam::{ACCOUNT}:root"
            and "kms:*" in as_list(s["Action"])
        ]
        assert account_admin, "the account must administer the key (or it becomes unmanageable)"
        cloudwatch = [
            s for s in statements
            if s["Effect"] == "Allow"
            and "cloudwatch.amazonaws.com" in as_list(s.get("Principal", {}).get("Service", []))
        ]
        assert cloudwatch, "the key policy must let cloudwatch.amazonaws.com use the key"
        for action in ["kms:Decrypt", "kms:GenerateDataKey", "kms:GenerateDataKeyWithoutPlaintext"]:
            assert any(applies(s, action, "*", {}) for s in cloudwatch), f"CloudWatch needs {action}"


def test_no_topic_uses_the_aws_managed_sns_key():
    assert not any("alias/aws/sns" in s for s in all_strings(T))
    for name, resource in RESOURCES.items():
        if resource["Type"] == "AWS::SNS::Topic":
            assert props(name).get("KmsMasterKeyId"), f"{name} is not encrypted"


def test_topic_policy_lets_this_accounts_alarms_publish():
    policies = [r for r in RESOURCES.values() if r["Type"] == "AWS::SNS::TopicPolicy"]
    assert any({"Ref": "AlarmTopic"} in p["Properties"]["Topics"] for p in policies)
    resolver = Resolver()
    statements = [
        s for p in policies if {"Ref": "AlarmTopic"} in p["Properties"]["Topics"]
        for s in as_list(resolver.resolve(p["Properties"]["PolicyDocument"])["Statement"])
    ]
    topic = resolver.ref("AlarmTopic")
    alarm = f"arn:{PARTITION}:cloudwatch:{REGION}:{ACCOUNT}:alarm:deltadrop-FailedExecutionsAlarm-X"
    ours = {"aws:sourceaccount": ACCOUNT, "aws:sourcearn": alarm}
    theirs = {"aws:sourceaccount": "210987654321", "aws:sourcearn": alarm.replace(ACCOUNT, "210987654321")}
    cloudwatch = [
        s for s in statements
        if s["Effect"] == "Allow" and s.get("Principal", {}).get("Service") == "cloudwatch.amazonaws.com"
    ]
    assert any(applies(s, "sns:Publish", topic, ours) for s in cloudwatch)
    assert not any(applies(s, "sns:Publish", topic, theirs) for s in cloudwatch)
    assert all("aws:SourceAccount" in s.get("Condition", {}).get("StringEquals", {}) for s in cloudwatch)


# ------------------------------------------------------------------------------------------
# 3. Function timeouts below their states' timeouts
# ------------------------------------------------------------------------------------------


STATE_MACHINES = [
    logical_id for logical_id, r in RESOURCES.items() if r["Type"] == "AWS::Serverless::StateMachine"
]


def lambda_states() -> list[tuple[str, str, dict]]:
    """(state name, function logical id, state) for every state of every state machine that
    invokes a function."""
    found = []
    for machine in STATE_MACHINES:
        found.extend(machine_lambda_states(machine))
    return found


def machine_lambda_states(machine: str) -> list[tuple[str, str, dict]]:
    substitutions = props(machine)["DefinitionSubstitutions"]
    by_placeholder = {}
    for name, value in substitutions.items():
        target = referenced_resource(value)
        if target in FUNCTIONS:
            by_placeholder["${" + name + "}"] = target
    asl_path = ROOT / props(machine)["DefinitionUri"]
    definition = json.loads(asl_path.read_text())
    found = []

    def walk(states: dict):
        for name, state in states.items():
            resource = state.get("Resource", "")
            function_name = (state.get("Parameters") or {}).get("FunctionName", "")
            for placeholder, function in by_placeholder.items():
                if placeholder in (resource, function_name):
                    found.append((name, function, state))
            for branch in state.get("Branches", []):
                walk(branch["States"])
            if "Iterator" in state or "ItemProcessor" in state:
                walk((state.get("ItemProcessor") or state["Iterator"])["States"])

    walk(definition["States"])
    return found


def test_every_function_the_state_machines_invoke_is_found():
    assert sorted(STATE_MACHINES) == ["MaintenanceStateMachine", "PipelineStateMachine"]
    functions = {function for _, function, _ in machine_lambda_states("PipelineStateMachine")}
    # The upsert function is the commit lane's merger: the Upsert state reaches it through a
    # queue; only CheckApplied invokes it, after the lane gave up.
    assert functions == {"StageFunction", "ArchiveFunction", "UpsertFunction", "NotifyFunction"}
    invoking_upsert = [n for n, f, _ in machine_lambda_states("PipelineStateMachine") if f == "UpsertFunction"]
    assert invoking_upsert == ["CheckApplied"]
    functions = {function for _, function, _ in machine_lambda_states("MaintenanceStateMachine")}
    assert functions == {"MaintainFunction"}


@pytest.mark.parametrize("state_name", [name for name, _, _ in lambda_states()])
def test_state_timeout_leaves_a_minute_over_the_function_timeout(state_name):
    (function, state), = [(f, s) for n, f, s in lambda_states() if n == state_name]
    timeout = int(function_setting(function, "Timeout"))
    assert "TimeoutSeconds" in state, f"{state_name} has no TimeoutSeconds"
    assert state["TimeoutSeconds"] >= timeout + 60, (
        f"{state_name}: TimeoutSeconds {state['TimeoutSeconds']} must be >= {function} Timeout "
        f"{timeout} + 60 (a state's timeout counts from scheduling)"
    )


@pytest.mark.parametrize(
    ("function", "expected"),
    [("TriggerFunction", 30), ("StageFunction", 840), ("ArchiveFunction", 840),
     ("UpsertFunction", 840), ("NotifyFunction", 30), ("MaintainFunction", 840),
     ("WatchFunction", 120)],
)
def test_function_timeouts(function, expected):
    assert int(function_setting(function, "Timeout")) == expected
    assert int(T["Globals"]["Function"]["Timeout"]) <= 60, "a forgotten Timeout must not default to 15 minutes"


# ------------------------------------------------------------------------------------------
# 4. Producers may write only under the incoming prefix
# ------------------------------------------------------------------------------------------

WRITE_ACTIONS = ["s3:PutObject", "s3:DeleteObject", "s3:DeleteObjectVersion", "s3:PutObjectAcl"]
OUTSIDE = ["deltadrop.toml", "tables/orders/_delta_log/00000000000000000002.json",
           "tables/orders/part-0.parquet", "archive/incoming/orders/a.csv",
           "quarantine/incoming/orders/a.csv", f"{STAGING}run-1/part-0.parquet"]


@pytest.mark.parametrize("action", WRITE_ACTIONS)
@pytest.mark.parametrize("key", OUTSIDE)
def test_producers_cannot_write_outside_incoming(action, key):
    assert bucket_policy_denies(PRODUCER, action, key)
    # An administrator who is not listed is a producer like any other.
    assert bucket_policy_denies(ADMIN, action, key)


@pytest.mark.parametrize("action", WRITE_ACTIONS)
def test_producers_can_still_write_incoming(action):
    assert not bucket_policy_denies(PRODUCER, action, "incoming/orders/a.csv")
    assert not bucket_policy_denies(
        PRODUCER, action, "data/in/orders/a.csv", {"IncomingPrefix": "data/in/"}
    )


@pytest.mark.parametrize("function", WRITERS)
@pytest.mark.parametrize("key", OUTSIDE)
def test_pipeline_roles_are_not_denied(function, key):
    for action in ["s3:PutObject", "s3:DeleteObject"]:
        assert not bucket_policy_denies(role_arn(function), action, key)


def test_listed_administrators_may_write_everything():
    admins = {"AdministratorArns": f"{ADMIN},arn:{PARTITION}:iam::{ACCOUNT}:role/aws-reserved/sso.amazonaws.com/*/AWSReservedSSO_Admin_*"}
    sso = f"arn:{PARTITION}:iam::{ACCOUNT}:role/aws-reserved/sso.amazonaws.com/eu-west-1/AWSReservedSSO_Admin_0123abcd"
    for key in OUTSIDE:
        for action in WRITE_ACTIONS:
            assert not bucket_policy_denies(ADMIN, action, key, admins)
            assert not bucket_policy_denies(sso, action, key, admins)
            assert bucket_policy_denies(PRODUCER, action, key, admins)


def test_administrator_arns_default_is_empty_and_still_denies_producers():
    declared = PARAMETERS["AdministratorArns"]
    assert declared["Type"] == "CommaDelimitedList"
    assert declared.get("Default") == ""
    assert "docs/security.md" in declared["Description"]
    assert bucket_policy_denies(PRODUCER, "s3:PutObject", "deltadrop.toml")


@pytest.mark.parametrize(
    ("headers", "denied"),
    [
        ({}, False),  # the bucket's default, SSE-S3
        ({"s3:x-amz-server-side-encryption": "AES256"}, False),
        ({"s3:x-amz-server-side-encryption": "aws:kms"}, False),  # the AWS managed aws/s3 key
        ({"s3:x-amz-server-side-encryption": "aws:kms",
          "s3:x-amz-server-side-encryption-aws-kms-key-id": "arn:aws:kms:eu-west-1:1:key/k"}, True),
        ({"s3:x-amz-server-side-encryption": "aws:kms:dsse",
          "s3:x-amz-server-side-encryption-aws-kms-key-id": "alias/producer"}, True),
        ({"s3:x-amz-server-side-encryption-customer-algorithm": "AES256"}, True),  # SSE-C
    ],
)
def test_uploads_the_functions_could_not_read_are_refused_at_put(headers, denied):
    # No function role may use a producer's KMS key, and SSE-C needs the key on every request:
    # such a file would be stuck in incoming/. The producer gets a 403 instead.
    assert bucket_policy_denies(PRODUCER, "s3:PutObject", "incoming/orders/a.csv", context=headers) is denied


def test_deny_statement_names_exactly_the_function_roles():
    (policy,) = [r for r in RESOURCES.values() if r["Type"] == "AWS::S3::BucketPolicy"]
    deny = [s for s in policy["Properties"]["PolicyDocument"]["Statement"] if "NotResource" in s]
    assert len(deny) == 1
    (statement,) = deny
    assert statement["Effect"] == "Deny" and statement["Principal"] == "*"
    assert statement["NotResource"] == {"Fn::Sub": "${DataBucket.Arn}/${IncomingPrefix}*"}
    for action in WRITE_ACTIONS:
        assert action in statement["Action"]
    roles = statement["Condition"]["ArnNotEquals"]["aws:PrincipalArn"]
    # The container tier's task writes as the Stage function does, where it is deployed.
    container = {"Fn::If": ["HasContainerTier", {"Fn::GetAtt": ["ContainerTaskRole", "Arn"]}, {"Ref": "AWS::NoValue"}]}
    assert sorted(roles, key=str) == sorted(
        [{"Fn::GetAtt": [f"{f}Role", "Arn"]} for f in WRITERS] + [container], key=str
    )
    assert statement["Condition"]["StringNotLike"]["aws:PrincipalArn"] == {"Ref": "AdministratorArns"}
    # Object writes only: bucket-level actions (the policy itself) stay with IAM, so an
    # administrator can never be locked out of fixing this policy.
    assert not any(a.startswith("s3:PutBucket") or a == "s3:*" for a in statement["Action"])


# ------------------------------------------------------------------------------------------
# 5. Housekeeping
# ------------------------------------------------------------------------------------------


def lifecycle_rules() -> list:
    return props("DataBucket")["LifecycleConfiguration"]["Rules"]


def plain_rules() -> dict[str, dict]:
    return {r["Id"]: r for r in lifecycle_rules() if "Id" in r}


def conditional_rule(prefix: str) -> tuple[str, dict]:
    for rule in lifecycle_rules():
        if "Fn::If" in rule:
            condition, then, otherwise = rule["Fn::If"]
            if then.get("Prefix") == prefix:
                assert otherwise == {"Ref": "AWS::NoValue"}
                return condition, then
    raise AssertionError(f"no conditional lifecycle rule for {prefix}")


def test_staging_leftovers_expire():
    rule = next(r for r in plain_rules().values() if r.get("Prefix") == STAGING)
    assert rule["Status"] == "Enabled"
    assert rule["ExpirationInDays"] == {"Ref": "StagingExpirationDays"}
    assert int(PARAMETERS["StagingExpirationDays"]["Default"]) == 7
    assert int(PARAMETERS["StagingExpirationDays"]["MinValue"]) >= 1


def test_incomplete_multipart_uploads_are_aborted_after_a_week():
    rules = [r for r in plain_rules().values() if "AbortIncompleteMultipartUpload" in r]
    assert rules and rules[0]["Status"] == "Enabled" and "Prefix" not in rules[0]
    assert rules[0]["AbortIncompleteMultipartUpload"]["DaysAfterInitiation"] == 7


def test_bucket_is_versioned_and_old_versions_expire():
    assert props("DataBucket")["VersioningConfiguration"]["Status"] == "Enabled"
    rules = [r for r in plain_rules().values() if "NoncurrentVersionExpiration" in r]
    assert rules and rules[0]["Status"] == "Enabled"
    assert rules[0]["NoncurrentVersionExpiration"]["NoncurrentDays"] == {"Ref": "NoncurrentVersionDays"}
    assert int(PARAMETERS["NoncurrentVersionDays"]["Default"]) == 30


@pytest.mark.parametrize(
    ("prefix", "days"),
    [("_deltadrop/", 1), ({"Ref": "TablesPrefix"}, {"Ref": "TableNoncurrentVersionDays"})],
)
def test_work_files_and_table_files_keep_old_versions_briefly(prefix, days):
    # Staging tables, and the files VACUUM and compaction delete, would otherwise be kept
    # NoncurrentVersionDays (30) more; S3 honours the shorter of two overlapping expirations.
    (rule,) = [r for r in plain_rules().values() if r.get("Prefix") == prefix and "NoncurrentVersionExpiration" in r]
    assert rule["Status"] == "Enabled"
    assert rule["NoncurrentVersionExpiration"]["NoncurrentDays"] == days
    assert rule["ExpiredObjectDeleteMarker"] is True
    if isinstance(days, dict):
        assert 1 <= int(PARAMETERS[days["Ref"]]["Default"]) < int(PARAMETERS["NoncurrentVersionDays"]["Default"])
    assert STAGING.startswith("_deltadrop/")
    assert PARAMETERS["TablesPrefix"]["Default"] == "tables/"


@pytest.mark.parametrize(("prefix", "parameter"), [("archive/", "ArchiveRetentionDays"),
                                                   ("quarantine/", "QuarantineRetentionDays")])
def test_archive_and_quarantine_expire_only_when_asked(prefix, parameter):
    condition, rule = conditional_rule(prefix)
    assert rule["ExpirationInDays"] == {"Ref": parameter}
    assert int(PARAMETERS[parameter]["Default"]) == 0
    # The condition is "parameter is not 0".
    assert T["Conditions"][condition] == {"Fn::Not": [{"Fn::Equals": [{"Ref": parameter}, "0"]}]}


def test_data_bucket_survives_stack_deletion_and_replacement():
    assert RESOURCES["DataBucket"]["DeletionPolicy"] == "Retain"
    assert RESOURCES["DataBucket"]["UpdateReplacePolicy"] == "Retain"


def test_queue_visibility_is_six_times_the_trigger_timeout():
    events = props("TriggerFunction")["Events"]
    queues = [referenced_resource(e["Properties"]["Queue"]) for e in events.values() if e["Type"] == "SQS"]
    assert queues == ["IncomingQueue"]
    visibility = int(props("IncomingQueue")["VisibilityTimeout"])
    assert visibility >= 6 * int(function_setting("TriggerFunction", "Timeout"))


def statements_of(logical_id: str) -> list[dict]:
    """The policy statements of a function or state machine, inline or in a managed policy of
    the template's own, intrinsics unresolved."""
    statements = []
    for entry in as_list(props(logical_id).get("Policies", [])):
        if isinstance(entry, dict) and list(entry) == ["Ref"] and entry["Ref"] in RESOURCES:
            entry = props(entry["Ref"])["PolicyDocument"]
        if isinstance(entry, dict) and "Statement" in entry:
            statements += as_list(entry["Statement"])
    return statements


def pipeline_state(name: str) -> dict:
    asl_path = ROOT / props("PipelineStateMachine")["DefinitionUri"]
    return json.loads(asl_path.read_text())["States"][name]


def test_the_upsert_state_hands_files_to_the_lane_queue_its_merger_consumes():
    substitutions = props("PipelineStateMachine")["DefinitionSubstitutions"]
    upsert = pipeline_state("Upsert")
    placeholder = upsert["Parameters"]["QueueUrl"]
    assert placeholder == "${UpsertLaneQueueUrl}"
    assert substitutions["UpsertLaneQueueUrl"] == {"Ref": "UpsertLaneQueue"}
    assert upsert["Resource"] == "${SendToLaneAndWait}"
    assert substitutions["SendToLaneAndWait"] == {
        "Fn::Sub": "arn:${AWS::Partition}:states:::sqs:sendMessage.waitForTaskToken"}
    # Callbacks (waitForTaskToken) exist in standard workflows only.
    assert props("PipelineStateMachine").get("Type", "STANDARD") == "STANDARD"
    lane = props("UpsertLaneQueue")
    assert lane["FifoQueue"] is True and lane["ContentBasedDeduplication"] is False
    dead_letters = referenced_resource(lane["RedrivePolicy"]["deadLetterTargetArn"])
    # A FIFO queue's dead-letter queue must be FIFO too.
    assert props(dead_letters)["FifoQueue"] is True
    events = props("UpsertFunction")["Events"]
    (event,) = [e for e in events.values() if e["Type"] == "SQS"]
    assert referenced_resource(event["Properties"]["Queue"]) == "UpsertLaneQueue"
    assert event["Properties"]["BatchSize"] <= 10, "a FIFO event source takes at most 10"
    assert event["Properties"]["FunctionResponseTypes"] == ["ReportBatchItemFailures"]
    timeout = int(function_setting("UpsertFunction", "Timeout"))
    assert int(lane["VisibilityTimeout"]) >= 6 * timeout
    # A merge never outlives the state's heartbeat window (the merger heartbeats every minute).
    assert upsert["HeartbeatSeconds"] > timeout + 60
    sends = [st for st in statements_of("PipelineStateMachine") if "sqs:SendMessage" in as_list(st["Action"])]
    assert [referenced_resource(st["Resource"]) for st in sends] == ["UpsertLaneQueue"]
    answers = [st for st in statements_of("UpsertFunction") if "states:SendTaskSuccess" in as_list(st["Action"])]
    assert len(answers) == 1
    assert set(as_list(answers[0]["Action"])) == {
        "states:SendTaskSuccess", "states:SendTaskFailure", "states:SendTaskHeartbeat"}


def test_queue_policy_names_the_data_bucket_itself():
    name = props("DataBucket")["BucketName"]
    (statement,) = props("IncomingQueuePolicy")["PolicyDocument"]["Statement"]
    source_arn = [v for op in statement["Condition"].values() for k, v in op.items() if k == "aws:SourceArn"]
    assert len(source_arn) == 1
    (source_arn,) = source_arn
    # The same expression as the bucket's name, prefixed with the S3 ARN prefix.
    assert source_arn == {"Fn::Sub": ["arn:${AWS::Partition}:s3:::" + name["Fn::Sub"][0], name["Fn::Sub"][1]]}
    resolved_name = Resolver().resolve(name)
    assert Resolver().resolve(source_arn) == f"arn:{PARTITION}:s3:::{resolved_name}"
    assert "*" not in Resolver().resolve(source_arn)
    assert statement["Condition"]["StringEquals"]["aws:SourceAccount"] == {"Ref": "AWS::AccountId"}


def test_bucket_name_is_a_valid_deterministic_name():
    name = Resolver().resolve(props("DataBucket")["BucketName"])
    assert name == f"deltadrop-{ACCOUNT}-{STACK_UUID}"
    assert len(name) <= 63 and re.fullmatch(r"[a-z0-9][a-z0-9-]*[a-z0-9]", name)


@pytest.mark.parametrize("parameter", ["IncomingPrefix", "TablesPrefix"])
@pytest.mark.parametrize(
    ("value", "accepted"),
    [("", False), ("/", False), ("incoming", False), ("incoming/", True), ("data/in/", True),
     ("/incoming/", False), ("a//b/", False), ("*/", False), ("in?/", False), ("in coming/", False),
     ("dt=2024/", True), ("tables/", True)],
)
def test_prefix_patterns(parameter, value, accepted):
    declared = PARAMETERS[parameter]
    assert declared.get("ConstraintDescription")
    # CloudFormation matches AllowedPattern against the whole value.
    assert (re.fullmatch(declared["AllowedPattern"], value) is not None) == accepted
    assert re.fullmatch(declared["AllowedPattern"], declared["Default"])


def test_no_hard_coded_partition():
    offenders = [s for s in all_strings(T) if "arn:aws:" in s]
    assert not offenders, f"use ${{AWS::Partition}}: {offenders}"


# ------------------------------------------------------------------------------------------
# 7. Each function builds from its own crate (only upsert links DataFusion)
# ------------------------------------------------------------------------------------------


def cargo_toml(directory: Path) -> dict:
    return tomllib.loads((directory / "Cargo.toml").read_text())


def binaries(manifest: dict) -> list[str]:
    bins = [b["name"] for b in manifest.get("bin", [])]
    return bins or [manifest["package"]["name"]]  # cargo's default bin is the package name


def crate_dir(function: str) -> Path:
    code_uri = function_setting(function, "CodeUri")
    assert isinstance(code_uri, str), f"{function}: CodeUri must be a local directory"
    return (ROOT / code_uri).resolve()


@pytest.mark.parametrize("function", FUNCTIONS)
def test_function_builds_its_own_crate_and_binary(function):
    metadata = RESOURCES[function]["Metadata"]
    assert metadata["BuildMethod"] == "rust-cargolambda"
    binary = metadata["BuildProperties"]["Binary"]
    directory = crate_dir(function)
    assert directory != ROOT, f"{function} builds from the workspace root: features unify across crates"
    manifest = cargo_toml(directory)
    assert "package" in manifest, f"{directory} is not a crate"
    # Exactly one bin, named Binary: the builder copies target/lambda/<Binary>/bootstrap.
    assert binaries(manifest) == [binary], f"{directory} builds {binaries(manifest)}, not {binary}"
    members = tomllib.loads((ROOT / "Cargo.toml").read_text())["workspace"]["members"]
    assert directory.relative_to(ROOT).as_posix() in members


def test_functions_build_distinct_crates():
    assert len({crate_dir(f) for f in FUNCTIONS}) == len(FUNCTIONS)


def enables_feature(dependency: Any, feature: str, defaults: list[str]) -> bool:
    if not isinstance(dependency, dict):  # `dep = "version"` keeps the default features
        return feature in defaults
    uses_defaults = dependency.get("default-features", dependency.get("default_features", True))
    return feature in dependency.get("features", []) or (uses_defaults and feature in defaults)


def test_only_the_upsert_and_maintain_crates_enable_merge():
    aws = cargo_toml(ROOT / "crates/deltadrop-aws")
    aws_defaults = aws.get("features", {}).get("default", [])
    # deltadrop-aws must not pull deltadrop's own default `merge` in behind its feature's back.
    core = cargo_toml(ROOT / "crates/deltadrop")
    assert not enables_feature(
        aws["dependencies"]["deltadrop"], "merge", core.get("features", {}).get("default", [])
    ), "deltadrop-aws enables deltadrop/merge unconditionally: every function would link DataFusion"
    lambda_crates = sorted((ROOT / "crates").glob("lambda-*/Cargo.toml"))
    assert len(lambda_crates) == len(FUNCTIONS)
    enabling = []
    for path in lambda_crates:
        manifest = tomllib.loads(path.read_text())
        dependency = manifest["dependencies"]["deltadrop-aws"]
        if enables_feature(dependency, "merge", aws_defaults):
            enabling.append(manifest["package"]["name"])
    assert enabling == ["lambda-maintain", "lambda-upsert"], f"crates enabling deltadrop-aws/merge: {enabling}"


def test_deployed_packages_build_with_whole_program_lto():
    # cargo-lambda 1.9 passes `--config profile.release.lto="thin"` unless the workspace's release
    # profile sets `lto` itself, and `--config` outranks CARGO_PROFILE_RELEASE_LTO: the profile is
    # the only place to ask for fat LTO, which keeps the upsert under 80 MB (87 MB with thin).
    profiles = cargo_toml(ROOT)["profile"]
    assert profiles["release"].get("lto") == "fat", "the upsert's package would grow past 80 MB"
    # The profiling build measures what ./scripts/bench measures (release without LTO).
    assert profiles["profiling"].get("lto") is False
    bench = (ROOT / "scripts/bench").read_text()
    assert "CARGO_PROFILE_RELEASE_LTO=false cargo build --release" in bench
    assert re.search(r"^cargo build --release", bench, re.M) is None, "a bench build bypasses release_build"


# 8. The dashboard reads the metrics the functions emit (crates/deltadrop-aws/src/metrics.rs)


def emitted_dimensions() -> dict[str, str]:
    """Each emitted metric and the dimension set it is kept under, as SEARCH writes it."""
    source = (ROOT / "crates/deltadrop-aws/src/metrics.rs").read_text()
    table = source.split("pub const METRICS", 1)[1].split("];", 1)[0]
    sets = {"FEED": "Feed", "FEED_AND_STEP": "Feed,Step", "FEED_AND_EXPECTATION": "Feed,Expectation"}
    return {name: sets[dims] for name, dims in re.findall(r'\("(\w+)", "\w+", (\w+)\)', table)}


def emitted_metrics() -> set[str]:
    return set(emitted_dimensions())


def test_each_metric_is_kept_under_the_dimensions_the_dashboard_reads_it_by():
    # Every metric under every dimension set is billed (~$0.30 a month each): none is kept twice.
    (dashboard,) = [r for r in RESOURCES.values() if r["Type"] == "AWS::CloudWatch::Dashboard"]
    read = {metric: dims for dims, metric in re.findall(r"SEARCH\('\{deltadrop,([\w,]+)\} MetricName=\\?\"(\w+)", dashboard["Properties"]["DashboardBody"]["Fn::Sub"])}
    assert read == emitted_dimensions()
    for alarm in [r["Properties"] for r in RESOURCES.values() if r["Type"] == "AWS::CloudWatch::Alarm"]:
        if alarm.get("Namespace") == "deltadrop":
            dims = ",".join(d["Name"] for d in alarm["Dimensions"])
            assert emitted_dimensions()[alarm["MetricName"]] == dims


def test_the_dashboard_shows_every_emitted_metric_and_only_those():
    (dashboard,) = [r for r in RESOURCES.values() if r["Type"] == "AWS::CloudWatch::Dashboard"]
    body = json.loads(dashboard["Properties"]["DashboardBody"]["Fn::Sub"])
    shown = set()
    for widget in body["widgets"]:
        for metric in widget["properties"]["metrics"]:
            for entry in metric:
                if isinstance(entry, dict) and "expression" in entry:
                    assert "{deltadrop," in entry["expression"], entry
                    shown.update(re.findall(r'MetricName="(\w+)"', entry["expression"]))
    emitted = emitted_metrics()
    assert len(emitted) >= 10
    assert shown == emitted, f"on the dashboard but not emitted: {shown - emitted}; emitted but not shown: {emitted - shown}"
    titles = [w["properties"]["title"] for w in body["widgets"]]
    assert any("Executions" in t for t in titles) and any("dead letters" in t for t in titles)


def test_the_queue_alarms_watch_the_queues_messages_end_in():
    # The end-to-end run drives SQS itself (no event source mapping, no redrive), and a
    # notification takes 15 minutes to age: these alarms are checked here instead of by a
    # scenario (tests/aws/end_to_end.rs, every_alarm_fires_in_some_scenario).
    (trigger_event,) = [e for e in props("TriggerFunction")["Events"].values() if e["Type"] == "SQS"]
    incoming = referenced_resource(trigger_event["Properties"]["Queue"])
    lane = "UpsertLaneQueue"
    for alarm, queue, metric in [
        ("IncomingQueueAgeAlarm", incoming, "ApproximateAgeOfOldestMessage"),
        ("DeadLettersAlarm", referenced_resource(props(incoming)["RedrivePolicy"]["deadLetterTargetArn"]),
         "ApproximateNumberOfMessagesVisible"),
        ("LaneDeadLettersAlarm", referenced_resource(props(lane)["RedrivePolicy"]["deadLetterTargetArn"]),
         "ApproximateNumberOfMessagesVisible"),
    ]:
        p = props(alarm)
        assert (p["Namespace"], p["MetricName"]) == ("AWS/SQS", metric), alarm
        assert p["Dimensions"] == [{"Name": "QueueName", "Value": {"Fn::GetAtt": [queue, "QueueName"]}}], alarm
        assert p["ComparisonOperator"] == "GreaterThanOrEqualToThreshold", alarm
    assert props("DeadLettersAlarm")["Threshold"] == 1 and props("LaneDeadLettersAlarm")["Threshold"] == 1
    # An alarm fires on the period's Maximum only if a message can stay that long.
    assert props("IncomingQueueAgeAlarm")["Threshold"] < props(incoming).get("MessageRetentionPeriod", 345600)


def test_the_pipeline_role_may_run_its_distributed_maps_children():
    # moto runs a Distributed Map's children in-process and records no call for them, so this is
    # checked here against AWS's page: the state machine's role needs states:StartExecution on the
    # state machine, and states:DescribeExecution on its executions
    # (https://docs.aws.amazon.com/step-functions/latest/dg/iam-policies-eg-dist-map.html); a
    # child's ARN is execution:<machine>/<map run label>:<id>.
    asl = json.loads((ROOT / "infra/statemachine/pipeline.asl.json").read_text())
    assert any(
        s["Type"] == "Map" and s["ItemProcessor"]["ProcessorConfig"]["Mode"] == "DISTRIBUTED"
        for s in asl["States"].values()
    )
    policy = props("PipelineDistributedMapPolicy")
    assert policy["Roles"] == [{"Ref": "PipelineStateMachineRole"}]
    statements = policy["PolicyDocument"]["Statement"]
    start = [s for s in statements if s["Action"] == "states:StartExecution"]
    assert [s["Resource"] for s in start] == [{"Ref": "PipelineStateMachine"}]
    describe = [s for s in statements if "states:DescribeExecution" in s["Action"]]
    assert len(describe) == 1
    resources = [r["Fn::Sub"] for r in describe[0]["Resource"]]
    execution = "arn:${AWS::Partition}:states:${AWS::Region}:${AWS::AccountId}:execution:${PipelineStateMachine.Name}"
    assert sorted(resources) == sorted([execution + ":*", execution + "/*"])
    # The machine's own Policies cannot name it: a circular dependency cfn-lint does not catch.
    own = json.dumps(props("PipelineStateMachine").get("Policies", []))
    assert "PipelineStateMachine\"" not in own and "PipelineStateMachine.Arn" not in own


def test_the_container_tier_runs_the_image_binary_under_the_name_the_state_machine_overrides():
    asl = json.loads((ROOT / "infra/statemachine/pipeline.asl.json").read_text())
    state = asl["States"]["StageInContainer"]
    (override,) = state["Parameters"]["Overrides"]["ContainerOverrides"]
    definition = props("ContainerTaskDefinition")
    (container,) = definition["ContainerDefinitions"]
    assert container["Name"] == override["Name"]
    assert definition["RequiresCompatibilities"] == ["FARGATE"] and definition["NetworkMode"] == "awsvpc"
    # The task knows its memory (its MERGE's pool is half of it): the definition's own, and the
    # size the state overrides it with.
    environment = {v["Name"]: v["Value"] for v in container["Environment"]}
    assert environment["DELTADROP_TASK_MEMORY_MB"] == definition["Memory"]
    told = {v["Name"]: v.get("Value.$") for v in override["Environment"]}
    assert told["DELTADROP_TASK_MEMORY_MB"] == state["Parameters"]["Overrides"]["Memory.$"]
    assert state["Parameters"]["LaunchType"] == "FARGATE"
    # The image's entrypoint is the binary crates/deltadrop-aws declares, built for the task's CPU.
    cargo = tomllib.loads((ROOT / "crates/deltadrop-aws/Cargo.toml").read_text())
    (binary,) = [b for b in cargo["bin"] if b["name"] == "deltadrop-task"]
    dockerfile = (ROOT / "infra/container/Dockerfile").read_text()
    assert f"--bin {binary['name']}" in dockerfile
    assert f'ENTRYPOINT ["/usr/local/bin/{binary["name"]}"]' in dockerfile
    assert definition["RuntimePlatform"]["CpuArchitecture"] == "ARM64"
    assert "--platform linux/arm64" in dockerfile
    # Only a deployment with an image gets the tier, and the trigger knows which it is.
    for name in ["ContainerCluster", "ContainerTaskDefinition", "ContainerTaskRole", "ContainerRunPolicy", "UpsertHandoffPolicy"]:
        assert RESOURCES[name]["Condition"] == "HasContainerTier", name
    trigger = props("TriggerFunction")["Environment"]["Variables"]["DELTADROP_CONTAINER_TIER"]
    assert trigger == {"Fn::If": ["HasContainerTier", "deployed", "absent"]}
    # The task's role is the stage's and the upsert's policies, plus holding a handed-over
    # MERGE's lane message: nothing else.
    task_role = props("ContainerTaskRole")
    assert task_role["ManagedPolicyArns"] == [{"Ref": "StagePolicy"}, {"Ref": "UpsertPolicy"}]
    assert props("StageFunction")["Policies"] == [{"Ref": "StagePolicy"}]
    assert props("UpsertFunction")["Policies"] == [{"Ref": "UpsertPolicy"}]
    (hold,) = task_role["Policies"]
    actions = sorted(a for s in hold["PolicyDocument"]["Statement"] for a in s["Action"])
    assert actions == ["s3:DeleteObject", "s3:GetObject", "sqs:ChangeMessageVisibility", "sqs:DeleteMessage"]
    # Both who start tasks may start only the tier's: the state machine and the merger.
    roles = props("ContainerRunPolicy")["Roles"]
    assert roles == [{"Ref": "PipelineStateMachineRole"}, {"Ref": "UpsertFunctionRole"}]
