"""Tests of the IAM conformance checker (tests/iam/check_calls.py).

Most tests use small synthetic templates written inline, so that they do not depend on what
template.yaml grants today; the last group runs against the real template.yaml with assertions
that hold whatever grants it gains or loses.
"""

import json
import sys
import textwrap
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))

import check_calls  # noqa: E402
from check_calls import (  # noqa: E402
    MISSING_KEY_403,
    CheckError,
    Condition,
    Settings,
    UnknownIntrinsicError,
    check,
    condition_holds,
    main,
)

ROOT = Path(__file__).resolve().parents[2]
BUCKET = "deltadrop-e2e"
ACCOUNT = "123456789012"
REGION = "us-east-1"
STATE_MACHINE = f"arn:aws:states:{REGION}:{ACCOUNT}:stateMachine:deltadrop-pipeline"
OBJECT = f"arn:aws:s3:::{BUCKET}"


LANE_QUEUE = "deltadrop-upsert-lane.fifo"


def settings(**parameters):
    return Settings(
        bucket=BUCKET,
        account=ACCOUNT,
        region=REGION,
        state_machine_arn=STATE_MACHINE,
        parameters=parameters,
        queues={"UpsertLaneQueue": LANE_QUEUE},
    )


def template(policies: dict, resources: str = "") -> str:
    """A minimal SAM template: the data bucket, parameters, functions with the given Policies
    (YAML lists, any indentation) and extra resources (YAML indented by two spaces)."""
    functions = "".join(
        f"""
  {logical_id}:
    Type: AWS::Serverless::Function
    Properties:
      Handler: bootstrap
      Policies:
{textwrap.indent(textwrap.dedent(text).strip(), " " * 8)}
"""
        for logical_id, text in policies.items()
    )
    return f"""
AWSTemplateFormatVersion: "2010-09-09"
Transform: AWS::Serverless-2016-10-31
Parameters:
  TablesPrefix:
    Type: String
    Default: tables/
  ConfigKey:
    Type: String
    Default: deltadrop.toml
  SenderEmail:
    Type: String
Resources:
  DataBucket:
    Type: AWS::S3::Bucket
    Properties:
      BucketName: !Join ["-", ["data", !Select [2, !Split ["/", !Ref AWS::StackId]]]]
  PipelineStateMachine:
    Type: AWS::Serverless::StateMachine
    Properties:
      DefinitionUri: pipeline.asl.json
{functions}{resources}
"""


def call(function, action, resource, status=200, **context):
    return {
        "function": function,
        "action": action,
        "resource": resource,
        "status": status,
        "context": context,
    }


def run(template_text, *calls, **parameters):
    return check(template_text, list(calls), settings(**parameters))


def reasons(report):
    return [v.reason for v in report.violations]


READ_TABLES = """
- Statement:
    - Effect: Allow
      Action: s3:GetObject
      Resource: !Sub "${DataBucket.Arn}/${TablesPrefix}*"
"""

LIST_TABLES_ONLY = """
- Statement:
    - Effect: Allow
      Action: [s3:GetObject, s3:PutObject]
      Resource: !Sub "arn:${AWS::Partition}:s3:::${DataBucket}/${TablesPrefix}*"
    - Effect: Allow
      Action: s3:ListBucket
      Resource: !GetAtt DataBucket.Arn
      Condition:
        StringLike:
          s3:prefix: [!Sub "${TablesPrefix}*", "_deltadrop/staging/*"]
"""


# --- grants --------------------------------------------------------------------------------


def test_a_granted_call_passes():
    report = run(
        template({"UpsertFunction": READ_TABLES}),
        call("upsert", "s3:GetObject", f"{OBJECT}/tables/orders/_delta_log/0.json"),
    )
    assert report.ok, reasons(report)


def test_a_get_object_without_a_grant_fails():
    report = run(
        template({"UpsertFunction": READ_TABLES}),
        call("upsert", "s3:GetObject", f"{OBJECT}/incoming/orders/first.csv"),
    )
    assert reasons(report) == ["no statement in UpsertFunction's policies allows it"]


def test_actions_match_case_insensitively_with_wildcards():
    policy = """
    - Statement:
        - Effect: Allow
          Action: S3:get*
          Resource: "*"
    """
    report = run(
        template({"StageFunction": policy}),
        call("stage", "s3:GetObject", f"{OBJECT}/anything"),
        call("stage", "s3:PutObject", f"{OBJECT}/anything"),
    )
    assert [v.call.action for v in report.violations] == ["s3:PutObject"]


def test_resource_wildcards_span_slashes_and_question_mark_is_one_character():
    policy = """
    - Statement:
        - Effect: Allow
          Action: s3:GetObject
          Resource: !Sub "${DataBucket.Arn}/tables/*/_delta_log/0000?.json"
    """
    report = run(
        template({"StageFunction": policy}),
        call("stage", "s3:GetObject", f"{OBJECT}/tables/a/b/_delta_log/00001.json"),
        call("stage", "s3:GetObject", f"{OBJECT}/tables/a/_delta_log/000012.json"),
    )
    assert [v.call.resource for v in report.violations] == [
        f"{OBJECT}/tables/a/_delta_log/000012.json"
    ]


def test_an_explicit_deny_in_the_identity_policy_wins():
    policy = """
    - Statement:
        - Effect: Allow
          Action: s3:*
          Resource: "*"
        - Sid: NoDeletes
          Effect: Deny
          Action: s3:DeleteObject
          Resource: !Sub "${DataBucket.Arn}/tables/*"
    """
    report = run(
        template({"UpsertFunction": policy}),
        call("upsert", "s3:DeleteObject", f"{OBJECT}/tables/orders/part-0.parquet"),
    )
    assert len(report.violations) == 1
    assert "explicitly denied by UpsertFunction.Policies[0].Statement[1] (NoDeletes)" in reasons(
        report
    )[0]


def test_not_resource_allows_everything_but_the_listed_resources():
    policy = """
    - Statement:
        - Effect: Allow
          Action: s3:GetObject
          NotResource: !Sub "${DataBucket.Arn}/secret/*"
    """
    report = run(
        template({"StageFunction": policy}),
        call("stage", "s3:GetObject", f"{OBJECT}/incoming/orders/first.csv"),
        call("stage", "s3:GetObject", f"{OBJECT}/secret/key.pem"),
    )
    assert [v.call.resource for v in report.violations] == [f"{OBJECT}/secret/key.pem"]


def test_not_action_with_deny_denies_everything_else():
    policy = """
    - Statement:
        - Effect: Allow
          Action: s3:*
          Resource: "*"
        - Effect: Deny
          NotAction: [s3:GetObject]
          Resource: "*"
    """
    report = run(
        template({"StageFunction": policy}),
        call("stage", "s3:GetObject", f"{OBJECT}/a"),
        call("stage", "s3:PutObject", f"{OBJECT}/a"),
    )
    assert [v.call.action for v in report.violations] == ["s3:PutObject"]


# --- the 404 / 403 rule for missing keys ---------------------------------------------------


def test_a_missing_key_with_only_a_prefix_conditioned_list_bucket_fails():
    report = run(
        template({"UpsertFunction": LIST_TABLES_ONLY}),
        call(
            "upsert",
            "s3:GetObject",
            f"{OBJECT}/tables/orders/_delta_log/_last_checkpoint",
            status=404,
        ),
    )
    assert reasons(report) == [MISSING_KEY_403]


def test_a_missing_key_passes_once_list_bucket_is_granted_without_a_prefix():
    policy = LIST_TABLES_ONLY + """
    - Effect: Allow
      Action: s3:ListBucket
      Resource: !GetAtt DataBucket.Arn
"""
    report = run(
        template({"UpsertFunction": policy}),
        call(
            "upsert",
            "s3:GetObject",
            f"{OBJECT}/tables/orders/_delta_log/_last_checkpoint",
            status=404,
        ),
    )
    assert report.ok, reasons(report)


def test_an_existing_key_needs_no_list_bucket():
    report = run(
        template({"UpsertFunction": READ_TABLES}),
        call("upsert", "s3:GetObject", f"{OBJECT}/tables/orders/_delta_log/0.json", status=200),
    )
    assert report.ok


def test_a_bucket_policy_deny_of_list_bucket_also_makes_missing_keys_403():
    policy = READ_TABLES + """
    - Effect: Allow
      Action: s3:ListBucket
      Resource: !GetAtt DataBucket.Arn
"""
    deny_listing = """
  DataBucketPolicy:
    Type: AWS::S3::BucketPolicy
    Properties:
      Bucket: !Ref DataBucket
      PolicyDocument:
        Statement:
          - Effect: Deny
            Principal: "*"
            Action: s3:ListBucket
            Resource: !GetAtt DataBucket.Arn
"""
    report = run(
        template({"UpsertFunction": policy}, deny_listing),
        call("upsert", "s3:GetObject", f"{OBJECT}/tables/t/_delta_log/_last_checkpoint", 404),
    )
    assert reasons(report) == [MISSING_KEY_403]


# --- conditions ----------------------------------------------------------------------------


def test_list_bucket_under_a_string_like_prefix_condition():
    report = run(
        template({"StageFunction": LIST_TABLES_ONLY}),
        call("stage", "s3:ListBucket", OBJECT, **{"s3:prefix": "tables/orders/_delta_log/"}),
        call("stage", "s3:ListBucket", OBJECT, **{"s3:prefix": "_deltadrop/staging/run-1/"}),
        call("stage", "s3:ListBucket", OBJECT, **{"s3:prefix": "archive/incoming/"}),
        call("stage", "s3:ListBucket", OBJECT),  # no prefix at all: StringLike is false
    )
    denied = [v.call.context.get("s3:prefix") for v in report.violations]
    assert denied == ["archive/incoming/", None]


def test_ses_send_email_needs_the_configured_sender():
    policy = """
    - Statement:
        - Effect: Allow
          Action: ses:SendEmail
          Resource: !Sub "arn:${AWS::Partition}:ses:${AWS::Region}:${AWS::AccountId}:identity/*"
          Condition:
            StringEquals:
              ses:FromAddress: !Ref SenderEmail
    """
    identity = f"arn:aws:ses:{REGION}:{ACCOUNT}:identity/deltadrop@example.com"
    report = run(
        template({"NotifyFunction": policy}),
        call("notify", "ses:SendEmail", identity, **{"ses:FromAddress": "deltadrop@example.com"}),
        call("notify", "ses:SendEmail", identity, **{"ses:FromAddress": "mallory@example.com"}),
        call("notify", "ses:SendEmail", identity),
        SenderEmail="deltadrop@example.com",
    )
    assert [v.call.context.get("ses:FromAddress") for v in report.violations] == [
        "mallory@example.com",
        None,
    ]


def test_context_key_names_are_case_insensitive():
    policy = """
    - Statement:
        - Effect: Allow
          Action: ses:SendEmail
          Resource: "*"
          Condition:
            StringEquals:
              SES:fromaddress: a@example.com
    """
    report = run(
        template({"NotifyFunction": policy}),
        call("notify", "ses:SendEmail", "arn:aws:ses:x", **{"ses:FromAddress": "a@example.com"}),
    )
    assert report.ok


@pytest.mark.parametrize(
    "operator, present, expected",
    [
        ("StringEquals", False, False),
        ("StringNotEquals", False, True),
        ("ArnNotLike", False, True),
        ("StringEqualsIfExists", False, True),
        ("StringNotLikeIfExists", False, True),
        ("StringEqualsIfExists", True, False),
        ("StringNotEquals", True, True),
        ("Bool", True, False),
    ],
)
def test_absent_keys_and_if_exists(operator, present, expected):
    condition = Condition(operator, "k", ("x", "y"))
    context = {"k": "z"} if present else {}
    assert condition_holds(condition, context) is expected


def test_negated_operators_with_several_values_are_a_nor():
    condition = Condition("StringNotLike", "k", ("a*", "b*"))
    assert condition_holds(condition, {"k": "c"}) is True
    assert condition_holds(condition, {"k": "b1"}) is False


def test_arn_like_compares_each_arn_component():
    condition = Condition("ArnLike", "aws:principalarn", ("arn:aws:iam::*:role/Stage*",))
    role = f"arn:aws:iam::{ACCOUNT}:role/StageFunctionRole"
    assert condition_holds(condition, {"aws:principalarn": role})
    # '*' in the account component cannot swallow the next component's colon.
    narrow = Condition("ArnLike", "aws:principalarn", ("arn:aws:*:role/Stage*",))
    assert not condition_holds(narrow, {"aws:principalarn": f"arn:aws:iam::{ACCOUNT}:role/S"})


def test_unmodelled_condition_operators_are_errors():
    policy = """
    - Statement:
        - Effect: Allow
          Action: s3:GetObject
          Resource: "*"
          Condition:
            NumericLessThan:
              s3:max-keys: "10"
    """
    with pytest.raises(CheckError, match="NumericLessThan"):
        run(template({"StageFunction": policy}), call("stage", "s3:GetObject", f"{OBJECT}/a"))


# --- the bucket policy ---------------------------------------------------------------------

ONLY_FUNCTION_ROLES_WRITE = """
  DataBucketPolicy:
    Type: AWS::S3::BucketPolicy
    Properties:
      Bucket: !Ref DataBucket
      PolicyDocument:
        Version: "2012-10-17"
        Statement:
          - Sid: DenyWritesOutsideIncoming
            Effect: Deny
            Principal: "*"
            Action: s3:PutObject
            NotResource: !Sub "${DataBucket.Arn}/incoming/*"
            Condition:
              ArnNotLike:
                aws:PrincipalArn:
                  - !GetAtt StageFunctionRole.Arn
                  - !Sub "arn:${AWS::Partition}:iam::${AWS::AccountId}:role/ArchiveFunctionRole"
"""

WRITE_ANYWHERE = """
- Statement:
    - Effect: Allow
      Action: s3:PutObject
      Resource: !Sub "${DataBucket.Arn}/*"
"""


def test_a_bucket_policy_deny_with_arn_not_like_denies_a_principal_not_listed():
    report = run(
        template(
            {"UpsertFunction": WRITE_ANYWHERE, "StageFunction": READ_TABLES},
            ONLY_FUNCTION_ROLES_WRITE,
        ),
        call("upsert", "s3:PutObject", f"{OBJECT}/tables/orders/part-0.parquet"),
        call("upsert", "s3:PutObject", f"{OBJECT}/incoming/orders/dropped.csv"),
    )
    assert reasons(report) == [
        "explicitly denied by the bucket policy "
        "DataBucketPolicy.PolicyDocument.Statement[0] (DenyWritesOutsideIncoming)"
    ]


def test_a_bucket_policy_deny_with_arn_not_like_spares_the_listed_roles():
    report = run(
        template(
            {"StageFunction": WRITE_ANYWHERE, "ArchiveFunction": WRITE_ANYWHERE},
            ONLY_FUNCTION_ROLES_WRITE,
        ),
        call("stage", "s3:PutObject", f"{OBJECT}/_deltadrop/staging/run/part-0.parquet"),
        call("archive", "s3:PutObject", f"{OBJECT}/archive/incoming/orders/first.csv"),
    )
    assert report.ok, reasons(report)


def test_a_bucket_policy_on_another_bucket_does_not_apply():
    other = """
  OtherBucket:
    Type: AWS::S3::Bucket
  OtherBucketPolicy:
    Type: AWS::S3::BucketPolicy
    Properties:
      Bucket: !Ref OtherBucket
      PolicyDocument:
        Statement:
          - Effect: Deny
            Principal: "*"
            Action: s3:*
            Resource: "*"
"""
    report = run(
        template({"UpsertFunction": WRITE_ANYWHERE}, other),
        call("upsert", "s3:PutObject", f"{OBJECT}/tables/x"),
    )
    assert report.ok


# --- intrinsics and unsupported entries ----------------------------------------------------


def test_an_unknown_intrinsic_is_a_clear_error():
    policy = """
    - Statement:
        - Effect: Allow
          Action: s3:GetObject
          Resource: !ImportValue shared-bucket-arn
    """
    with pytest.raises(UnknownIntrinsicError, match=r"Fn::ImportValue.*shared-bucket-arn"):
        run(template({"StageFunction": policy}), call("stage", "s3:GetObject", f"{OBJECT}/a"))


def test_a_reference_to_an_unknown_resource_is_an_error():
    policy = """
    - Statement:
        - Effect: Allow
          Action: s3:GetObject
          Resource: !GetAtt LogsBucket.Arn
    """
    with pytest.raises(UnknownIntrinsicError, match="LogsBucket.Arn"):
        run(template({"StageFunction": policy}), call("stage", "s3:GetObject", f"{OBJECT}/a"))


def test_a_parameter_without_default_needs_a_value():
    policy = """
    - Statement:
        - Effect: Allow
          Action: ses:SendEmail
          Resource: "*"
          Condition:
            StringEquals:
              ses:FromAddress: !Ref SenderEmail
    """
    with pytest.raises(CheckError, match="--parameter SenderEmail=VALUE"):
        run(template({"NotifyFunction": policy}), call("notify", "ses:SendEmail", "arn:aws:ses:x"))


def test_sub_with_variables_and_state_machine_refs_resolve():
    policy = """
    - Statement:
        - Effect: Allow
          Action: s3:GetObject
          Resource: !Sub
            - "${Bucket}/${Prefix}*"
            - Bucket: !GetAtt DataBucket.Arn
              Prefix: !Ref TablesPrefix
        - Effect: Allow
          Action: states:StartExecution
          Resource: !Ref PipelineStateMachine
    """
    report = run(
        template({"TriggerFunction": policy}),
        call("trigger", "s3:GetObject", f"{OBJECT}/tables/orders/_delta_log/0.json"),
        call("trigger", "states:StartExecution", STATE_MACHINE),
    )
    assert report.ok, reasons(report)


def test_iam_policy_variables_are_refused_rather_than_matched_literally():
    policy = """
    - Statement:
        - Effect: Allow
          Action: s3:GetObject
          Resource: !Sub "${DataBucket.Arn}/home/${!aws:username}/*"
    """
    with pytest.raises(CheckError, match="policy variables"):
        run(template({"StageFunction": policy}), call("stage", "s3:GetObject", f"{OBJECT}/a"))


def test_sam_policy_templates_are_reported_as_unsupported_not_skipped_silently():
    policy = """
    - S3ReadPolicy:
        BucketName: !Ref DataBucket
    """ + READ_TABLES
    report = run(
        template({"StageFunction": policy}),
        call("stage", "s3:GetObject", f"{OBJECT}/incoming/a.csv"),
    )
    assert report.unsupported == [
        "StageFunction.Policies[0]: SAM policy template S3ReadPolicy (ignored)"
    ]
    assert len(report.violations) == 1  # the ignored template grants nothing here


def test_a_permissions_boundary_is_refused():
    text = template({"StageFunction": READ_TABLES}).replace(
        "      Handler: bootstrap\n",
        "      Handler: bootstrap\n      PermissionsBoundary: arn:aws:iam::123456789012:policy/b\n",
    )
    with pytest.raises(CheckError, match="PermissionsBoundary"):
        run(text, call("stage", "s3:GetObject", f"{OBJECT}/tables/a"))


def test_attached_iam_policy_resources_count_for_the_role():
    extra = """
  ListPolicy:
    Type: AWS::IAM::Policy
    Properties:
      PolicyName: list
      Roles: [!Ref UpsertFunctionRole]
      PolicyDocument:
        Statement:
          - Effect: Allow
            Action: s3:ListBucket
            Resource: !GetAtt DataBucket.Arn
"""
    report = run(
        template({"UpsertFunction": READ_TABLES}, extra),
        call("upsert", "s3:GetObject", f"{OBJECT}/tables/t/_delta_log/_last_checkpoint", 404),
    )
    assert report.ok, reasons(report)


# --- the command line ----------------------------------------------------------------------


def write(tmp_path, name, text):
    path = tmp_path / name
    path.write_text(text)
    return str(path)


def cli(tmp_path, template_text, calls, *extra):
    return main(
        [
            "--template", write(tmp_path, "template.yaml", template_text),
            "--calls", write(tmp_path, "calls.json", json.dumps(calls)),
            "--bucket", BUCKET,
            "--account", ACCOUNT,
            "--region", REGION,
            "--state-machine-arn", STATE_MACHINE,
            *extra,
        ]
    )


def test_cli_exit_codes_and_output(tmp_path, capsys):
    text = template({"UpsertFunction": LIST_TABLES_ONLY})
    good = [call("upsert", "s3:GetObject", f"{OBJECT}/tables/t/part-0.parquet")]
    assert cli(tmp_path, text, good) == 0
    assert "OK: every call is allowed" in capsys.readouterr().out

    missing = call("upsert", "s3:GetObject", f"{OBJECT}/tables/t/_delta_log/_last_checkpoint", 404)
    assert cli(tmp_path, text, good + [missing, missing]) == 1
    out = capsys.readouterr().out
    assert f"DENIED upsert s3:GetObject {missing['resource']} (x2): {MISSING_KEY_403}" in out
    assert "upsert      3 calls, 2 denied" in out
    assert "FAIL: 2 calls would be denied (1 distinct)" in out


def test_cli_reports_template_errors_with_exit_code_2(tmp_path, capsys):
    policy = "- Statement:\n    - {Effect: Allow, Action: '*', Resource: !Select [0, [a]]}"
    text = template({"StageFunction": policy})
    assert cli(tmp_path, text, [call("stage", "s3:GetObject", f"{OBJECT}/a")]) == 2
    assert "Fn::Select" in capsys.readouterr().err


# --- the real template.yaml ----------------------------------------------------------------
# Only assertions that hold whatever grants the template gains or loses: the calls below are the
# ones each function cannot work without.

REAL = (ROOT / "template.yaml").read_text()
SENDER = "deltadrop@example.com"


def run_real(*calls):
    return run(REAL, *calls, SenderEmail=SENDER)


def test_real_template_resolves_for_every_function():
    calls = [
        call(name, "s3:GetObject", f"{OBJECT}/deltadrop.toml")
        for name in check_calls.FUNCTIONS
        if name != "pipeline"
    ]
    report = run_real(*calls)  # raises if any intrinsic in the policies cannot be resolved
    assert report.ok, reasons(report)


def test_real_template_the_state_machine_sends_only_to_the_lane_and_reads_nothing():
    queue = f"arn:aws:sqs:{REGION}:{ACCOUNT}:"
    report = run_real(
        call("pipeline", "sqs:SendMessage", queue + LANE_QUEUE),
        call("pipeline", "sqs:SendMessage", queue + "other.fifo"),
        call("pipeline", "s3:GetObject", f"{OBJECT}/deltadrop.toml"),
    )
    assert [(v.call.action, v.call.resource) for v in report.violations] == [
        ("sqs:SendMessage", queue + "other.fifo"),
        ("s3:GetObject", f"{OBJECT}/deltadrop.toml"),
    ]


def test_real_template_only_the_merger_answers_callbacks():
    answers = ["states:SendTaskSuccess", "states:SendTaskFailure", "states:SendTaskHeartbeat"]
    report = run_real(
        *[call("upsert", action, "*") for action in answers],
        call("stage", "states:SendTaskSuccess", "*"),
    )
    assert [v.call.function for v in report.violations] == ["stage"]


def test_real_template_trigger_starts_executions_and_writes_nothing():
    report = run_real(
        call("trigger", "states:StartExecution", STATE_MACHINE),
        call("trigger", "s3:PutObject", f"{OBJECT}/tables/orders/part-0.parquet"),
    )
    assert [v.call.action for v in report.violations] == ["s3:PutObject"]


def test_real_template_notify_sends_only_from_the_sender():
    identity = f"arn:aws:ses:{REGION}:{ACCOUNT}:identity/{SENDER}"
    report = run_real(
        call("notify", "ses:SendEmail", identity, **{"ses:FromAddress": SENDER}),
        call("notify", "ses:SendEmail", identity, **{"ses:FromAddress": "other@example.com"}),
    )
    assert [v.call.context["ses:FromAddress"] for v in report.violations] == ["other@example.com"]


@pytest.mark.parametrize("function", ["notify", "upsert", "watch"])
def test_real_template_mail_works_with_a_configuration_set_on_the_sender(function):
    # An identity's default configuration set (or one the request names) is authorized too.
    configuration_set = f"arn:aws:ses:{REGION}:{ACCOUNT}:configuration-set/events"
    report = run_real(
        call(function, "ses:SendEmail", configuration_set, **{"ses:FromAddress": SENDER}),
        call(function, "ses:SendEmail", configuration_set, **{"ses:FromAddress": "x@example.com"}),
    )
    assert [v.call.context["ses:FromAddress"] for v in report.violations] == ["x@example.com"]


def test_real_template_archive_copies_a_tagged_upload_with_its_tags():
    report = run_real(
        call("archive", "s3:GetObjectVersionTagging", f"{OBJECT}/incoming/orders/a.csv"),
        call("archive", "s3:PutObjectTagging", f"{OBJECT}/archive/incoming/orders/run/a.csv"),
        call("archive", "s3:PutObjectTagging", f"{OBJECT}/quarantine/incoming/orders/run/a.csv"),
        call("archive", "s3:PutObjectTagging", f"{OBJECT}/tables/orders/part-0.parquet"),
    )
    assert [v.call.resource for v in report.violations] == [f"{OBJECT}/tables/orders/part-0.parquet"]


def test_real_template_stage_reads_the_incoming_file_and_lists_tables():
    report = run_real(
        call("stage", "s3:GetObject", f"{OBJECT}/incoming/orders/first.csv"),
        call("stage", "s3:ListBucket", OBJECT, **{"s3:prefix": "tables/orders/_delta_log/"}),
    )
    assert report.ok, reasons(report)


def test_real_template_bucket_policy_denies_insecure_transport():
    report = run_real(
        call(
            "stage",
            "s3:GetObject",
            f"{OBJECT}/incoming/orders/first.csv",
            **{"aws:SecureTransport": "false"},
        ),
    )
    assert len(report.violations) == 1
    assert "bucket policy" in report.violations[0].reason


CLUSTER = f"arn:aws:ecs:{REGION}:{ACCOUNT}:cluster/deltadrop"
TASK_DEFINITION = f"arn:aws:ecs:{REGION}:{ACCOUNT}:task-definition/deltadrop-container:1"


def with_container_tier(*calls):
    """The real template deployed with the container tier (its ARNs as the recording has them)."""
    tier = settings(SenderEmail=SENDER, ContainerImageUri="1.dkr.ecr/deltadrop:1", ContainerVpcId="vpc-1")
    tier.resources = {"ContainerCluster": CLUSTER}
    return check(REAL, list(calls), tier)


def test_real_template_the_pipeline_starts_only_its_task_definition_in_its_cluster():
    task_role = f"arn:aws:iam::{ACCOUNT}:role/ContainerTaskRole"
    execution_role = f"arn:aws:iam::{ACCOUNT}:role/ContainerExecutionRole"
    to_ecs = {"iam:PassedToService": "ecs-tasks.amazonaws.com"}
    allowed = with_container_tier(
        call("pipeline", "ecs:RunTask", TASK_DEFINITION, **{"ecs:cluster": CLUSTER}),
        call("pipeline", "iam:PassRole", task_role, **to_ecs),
        call("pipeline", "iam:PassRole", execution_role, **to_ecs),
    )
    assert allowed.ok, reasons(allowed)
    other = f"arn:aws:ecs:{REGION}:{ACCOUNT}:cluster/other"
    denied = with_container_tier(
        call("pipeline", "ecs:RunTask", TASK_DEFINITION, **{"ecs:cluster": other}),
        call("pipeline", "ecs:RunTask", TASK_DEFINITION.replace("container:1", "x:1"), **{"ecs:cluster": CLUSTER}),
        call("pipeline", "iam:PassRole", task_role, **{"iam:PassedToService": "lambda.amazonaws.com"}),
        call("pipeline", "iam:PassRole", f"arn:aws:iam::{ACCOUNT}:role/StageFunctionRole", **to_ecs),
    )
    assert len(denied.violations) == 4, reasons(denied)
    # Without the container tier the pipeline may start no task at all.
    assert not run_real(call("pipeline", "ecs:RunTask", TASK_DEFINITION, **{"ecs:cluster": CLUSTER})).ok


def test_real_template_the_container_task_stages_like_the_stage_function_and_answers_its_state():
    staged = f"{OBJECT}/_deltadrop/staging/orders/run-1/part-0.parquet"
    report = with_container_tier(
        call("task", "s3:GetObject", f"{OBJECT}/incoming/orders/big.csv.gz"),
        call("task", "s3:PutObject", staged),
        call("task", "s3:DeleteObject", staged),
        call("task", "states:SendTaskSuccess", "*"),
        call("task", "states:SendTaskHeartbeat", "*"),
    )
    assert report.ok, reasons(report)
    # It merges as the upsert function does, and holds then deletes a handed-over lane message.
    lane = f"arn:aws:sqs:{REGION}:{ACCOUNT}:{LANE_QUEUE}"
    merged = with_container_tier(
        call("task", "s3:PutObject", f"{OBJECT}/tables/orders/part-0.parquet"),
        call("task", "s3:GetObject", f"{OBJECT}/_deltadrop/lane/m-1.json"),
        call("task", "s3:DeleteObject", f"{OBJECT}/_deltadrop/lane/m-1.json"),
        call("task", "sqs:ChangeMessageVisibility", lane),
        call("task", "sqs:DeleteMessage", lane),
    )
    assert merged.ok, reasons(merged)
    # Nothing else: not the configuration, not another queue, not mail from another sender.
    denied = with_container_tier(
        call("task", "s3:PutObject", f"{OBJECT}/deltadrop.toml"),
        call("task", "sqs:DeleteMessage", f"arn:aws:sqs:{REGION}:{ACCOUNT}:other.fifo"),
        call("task", "ses:SendEmail", f"arn:aws:ses:{REGION}:{ACCOUNT}:identity/x", **{"ses:FromAddress": "x@example.com"}),
    )
    assert len(denied.violations) == 3, reasons(denied)


def test_real_template_the_merger_hands_over_only_to_the_tier_and_holds_only_lane_messages():
    lane = f"arn:aws:sqs:{REGION}:{ACCOUNT}:{LANE_QUEUE}"
    to_ecs = {"iam:PassedToService": "ecs-tasks.amazonaws.com"}
    allowed = with_container_tier(
        call("upsert", "ecs:RunTask", TASK_DEFINITION, **{"ecs:cluster": CLUSTER}),
        call("upsert", "iam:PassRole", f"arn:aws:iam::{ACCOUNT}:role/ContainerTaskRole", **to_ecs),
        call("upsert", "sqs:ChangeMessageVisibility", lane),
        call("upsert", "s3:PutObject", f"{OBJECT}/_deltadrop/lane/m-1.json"),
    )
    assert allowed.ok, reasons(allowed)
    # Without the tier, the merger may do none of it.
    assert len(run_real(call("upsert", "ecs:RunTask", TASK_DEFINITION, **{"ecs:cluster": CLUSTER}),
                        call("upsert", "s3:PutObject", f"{OBJECT}/_deltadrop/lane/m-1.json")).violations) == 2
