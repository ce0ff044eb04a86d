#!/usr/bin/env python3
"""IAM conformance checker: would real AWS have allowed the calls the functions made?

The end-to-end test runs the pipeline on an emulator (moto) that enforces no IAM at all, so a
missing or too narrow grant in template.yaml only shows up after deployment. This checker closes
that gap: it reads the SAM template and a JSON list of the AWS API calls each Lambda function made
during the end-to-end run, and evaluates every call against that function's IAM policy in the
template the way AWS documents its policy evaluation. It reports every call AWS would deny.

What it models
--------------
* Identity policies of the functions (``AWS::Serverless::Function``) and of the pipeline's state
  machine (``AWS::Serverless::StateMachine``, principal ``pipeline``: the calls of its service
  integrations, such as the Upsert state's ``sqs:SendMessage``): the inline statements
  in ``Policies`` (``- Statement: [...]``), the statements of ``AWS::IAM::ManagedPolicy`` resources
  a ``Policies`` entry refers to with ``!Ref``, and ``AWS::IAM::Policy`` /
  ``AWS::IAM::ManagedPolicy`` resources attached to the function's implicit role
  (``Roles: [!Ref <Function>Role]``).
* CloudFormation intrinsics inside those policies: ``Ref`` (parameters, pseudo parameters, the
  data bucket, the state machine, the functions' implicit roles), ``Fn::GetAtt`` (``Arn`` of the
  bucket, the state machine and the roles), ``Fn::Sub`` (both forms) and ``Fn::Join``. Anything
  else is an error that names the intrinsic: the checker never guesses.
* Statement matching: ``Action``/``NotAction`` (case-insensitive, ``*`` and ``?``),
  ``Resource``/``NotResource`` (``*`` and ``?``; ``*`` may span ``/`` and ``:``), ``Condition``
  with the String*, Arn*, Bool and Null operators and their ``...IfExists`` variants.
* The decision: an explicit Deny anywhere wins; otherwise the function's identity policy must
  explicitly Allow; the data bucket's resource policy (``AWS::S3::BucketPolicy``) is evaluated for
  explicit Denies against the function's role as principal.
* S3's answer for a missing key: GET/HEAD of a key that does not exist is a 404 only when the
  caller may also ``s3:ListBucket`` the bucket; otherwise S3 answers 403 AccessDenied. A
  ListBucket grant that needs ``s3:prefix`` does not count, because a GET/HEAD carries no prefix.

What it does not model
----------------------
* Service control policies, resource control policies, permission boundaries, session policies,
  KMS key policies, VPC endpoint policies, S3 Block Public Access and ACLs. A function with a
  ``PermissionsBoundary`` or an explicit ``Role`` is an error rather than a silent pass.
* SAM policy templates (``S3ReadPolicy``, ``LambdaInvokePolicy``...) and AWS managed policies
  named by ARN: they are reported as unsupported and ignored. Ignoring grants can only make the
  checker stricter than AWS, never more lenient.
* A bucket-policy Allow is not counted as a grant (AWS would accept it within one account): the
  checker wants each function's own policy to say everything the function does. When only the
  bucket policy allows a call, the violation says so.
* Condition operators other than the ones above (Numeric*, Date*, IpAddress, Binary,
  ForAnyValue:/ForAllValues:) and IAM policy variables (``${aws:username}``): errors, not guesses.
* The SAM-managed policies every function gets (basic execution logs, X-Ray when tracing is on).

Exit status: 0 when every call is allowed, 1 when at least one would be denied, 2 when the
template or the calls cannot be checked (unknown intrinsic, missing parameter, bad input).

AWS documentation this follows (cited again where each rule is implemented):
  https://docs.aws.amazon.com/IAM/latest/UserGuide/reference_policies_evaluation-logic.html
  https://docs.aws.amazon.com/IAM/latest/UserGuide/reference_policies_evaluation-logic_policy-eval-basics.html
  https://docs.aws.amazon.com/IAM/latest/UserGuide/reference_policies_evaluation-logic_policy-eval-denyallow.html
  https://docs.aws.amazon.com/IAM/latest/UserGuide/reference_policies_elements_action.html
  https://docs.aws.amazon.com/IAM/latest/UserGuide/reference_policies_elements_notaction.html
  https://docs.aws.amazon.com/IAM/latest/UserGuide/reference_policies_elements_resource.html
  https://docs.aws.amazon.com/IAM/latest/UserGuide/reference_policies_elements_notresource.html
  https://docs.aws.amazon.com/IAM/latest/UserGuide/reference_policies_elements_condition.html
  https://docs.aws.amazon.com/IAM/latest/UserGuide/reference_policies_elements_condition_operators.html
  https://docs.aws.amazon.com/IAM/latest/UserGuide/reference_policies_multi-value-conditions.html
  https://docs.aws.amazon.com/IAM/latest/UserGuide/reference_policies_condition-keys.html
  https://docs.aws.amazon.com/IAM/latest/UserGuide/reference_policies_elements_principal.html
  https://docs.aws.amazon.com/AmazonS3/latest/API/API_GetObject.html
  https://docs.aws.amazon.com/AmazonS3/latest/API/API_HeadObject.html
  https://docs.aws.amazon.com/ses/latest/dg/control-user-access.html
"""

from __future__ import annotations

import argparse
import functools
import json
import re
import sys
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable

from cfnlint.decode import cfn_yaml

# The principals named in calls.json and the logical ids of their resources: the functions, and
# the pipeline's state machine (whose role makes the calls of its service integrations).
FUNCTIONS = {
    "pipeline": "PipelineStateMachine",
    "trigger": "TriggerFunction",
    "stage": "StageFunction",
    "archive": "ArchiveFunction",
    "upsert": "UpsertFunction",
    "notify": "NotifyFunction",
    "maintain": "MaintainFunction",
    "watch": "WatchFunction",
    # The container tier's task (an AWS::IAM::Role of the template's own).
    "task": "ContainerTaskRole",
}

SERVERLESS_FUNCTION = "AWS::Serverless::Function"
SERVERLESS_STATE_MACHINE = "AWS::Serverless::StateMachine"
IAM_ROLE = "AWS::IAM::Role"
MISSING_KEY_403 = (
    "AWS answers 403 AccessDenied, not 404, for this missing key: grant s3:ListBucket on the "
    "bucket without an s3:prefix condition"
)


class CheckError(Exception):
    """The template or the calls cannot be checked (the checker refuses to guess)."""


class UnknownIntrinsicError(CheckError):
    """An intrinsic function (or a reference) the checker does not know how to resolve."""


# --------------------------------------------------------------------------------------------
# Settings and template loading
# --------------------------------------------------------------------------------------------


@dataclass
class Settings:
    """What the template cannot say by itself: the deployment the calls were recorded against."""

    bucket: str
    account: str
    region: str
    state_machine_arn: str | None = None
    partition: str = "aws"
    parameters: dict[str, str] = field(default_factory=dict)
    bucket_resource: str = "DataBucket"
    state_machine_resource: str = "PipelineStateMachine"
    # Queue logical ids and their names in the recording (their ARNs follow from them).
    queues: dict[str, str] = field(default_factory=dict)
    # Other resources' ARNs in the recording (an ECS cluster), by logical id.
    resources: dict[str, str] = field(default_factory=dict)
    stack_name: str = "deltadrop"

    def role_arn(self, role_name: str) -> str:
        return f"arn:{self.partition}:iam::{self.account}:role/{role_name}"

    def bucket_arn(self, bucket: str | None = None) -> str:
        return f"arn:{self.partition}:s3:::{bucket or self.bucket}"


def load_template(text: str) -> dict:
    """Parses CloudFormation YAML (short-form tags such as !Sub become {"Fn::Sub": ...})."""
    try:
        template = cfn_yaml.loads(text)
    except Exception as e:  # cfn-lint raises its own parse errors as well as yaml's
        raise CheckError(f"cannot parse the template: {e}") from e
    if not isinstance(template, dict) or not isinstance(template.get("Resources"), dict):
        raise CheckError("the template has no Resources section")
    return template


def resources_of_type(template: dict, *types: str) -> dict[str, dict]:
    return {
        name: resource
        for name, resource in template["Resources"].items()
        if isinstance(resource, dict) and resource.get("Type") in types
    }


# --------------------------------------------------------------------------------------------
# Intrinsic functions
# --------------------------------------------------------------------------------------------

SUB_VARIABLE = re.compile(r"\$\{([^}]*)\}")

# What Ref AWS::NoValue resolves to: the item is removed from its list or mapping.
NO_VALUE = object()


class Resolver:
    """Resolves the intrinsics a policy may contain to plain strings, or raises."""

    def __init__(self, template: dict, settings: Settings):
        self.template = template
        self.settings = settings

    def resolve(self, value: Any, where: str) -> Any:
        if isinstance(value, dict):
            intrinsic = self._intrinsic_name(value)
            if intrinsic is not None:
                return self._resolve_intrinsic(intrinsic, value[intrinsic], where)
            resolved = {key: self.resolve(item, where) for key, item in value.items()}
            return {key: item for key, item in resolved.items() if item is not NO_VALUE}
        if isinstance(value, list):
            resolved = [self.resolve(item, where) for item in value]
            return [item for item in resolved if item is not NO_VALUE]
        return value

    def condition(self, name: str, where: str) -> bool:
        """One of the template's Conditions, for the deployment's parameters."""
        conditions = self.template.get("Conditions") or {}
        if name not in conditions:
            raise CheckError(f"{where}: no condition {name} in the template")
        return self.holds(conditions[name], where)

    def holds(self, expression: Any, where: str) -> bool:
        if not (isinstance(expression, dict) and len(expression) == 1):
            raise UnknownIntrinsicError(f"{where}: malformed condition {expression!r}")
        ((name, argument),) = expression.items()
        if name == "Condition":
            return self.condition(argument, where)
        if name == "Fn::Equals":
            left, right = (scalar_text(self.resolve(a, where)) for a in argument)
            return left == right
        if name == "Fn::Not":
            return not self.holds(argument[0], where)
        if name == "Fn::And":
            return all(self.holds(a, where) for a in argument)
        if name == "Fn::Or":
            return any(self.holds(a, where) for a in argument)
        raise UnknownIntrinsicError(f"{where}: unsupported condition function {name}")

    @staticmethod
    def _intrinsic_name(value: dict) -> str | None:
        if len(value) != 1:
            return None
        (key,) = value
        return key if key == "Ref" or key.startswith("Fn::") else None

    def _resolve_intrinsic(self, name: str, argument: Any, where: str) -> Any:
        if name == "Ref" and argument == "AWS::NoValue":
            return NO_VALUE
        if name == "Fn::If":
            if not (isinstance(argument, list) and len(argument) == 3):
                raise UnknownIntrinsicError(f"{where}: malformed Fn::If {argument!r}")
            condition, if_true, if_false = argument
            return self.resolve(if_true if self.condition(condition, where) else if_false, where)
        if name == "Ref":
            return self.ref(argument, where)
        if name == "Fn::GetAtt":
            return self.get_att(argument, where)
        if name == "Fn::Sub":
            return self.sub(argument, where)
        if name == "Fn::Join":
            return self.join(argument, where)
        raise UnknownIntrinsicError(
            f"{where}: unsupported intrinsic {name} ({argument!r}); the checker resolves only "
            "Ref, Fn::GetAtt, Fn::Sub, Fn::Join and Fn::If"
        )

    def ref(self, name: Any, where: str) -> str:
        settings = self.settings
        pseudo = {
            "AWS::Partition": settings.partition,
            "AWS::Region": settings.region,
            "AWS::AccountId": settings.account,
            "AWS::URLSuffix": "amazonaws.com",
            "AWS::StackName": settings.stack_name,
        }
        if not isinstance(name, str):
            raise UnknownIntrinsicError(f"{where}: Ref to {name!r} is not a name")
        if name in pseudo:
            return pseudo[name]
        if name in self.template.get("Parameters", {}):
            return self.parameter(name, where)
        if name == settings.bucket_resource:
            return settings.bucket
        if name == settings.state_machine_resource:
            return self._state_machine_arn(where)
        if name in settings.resources:
            return settings.resources[name]
        if self._is_role(name):
            return name
        raise UnknownIntrinsicError(f"{where}: cannot resolve Ref {name}")

    def parameter(self, name: str, where: str) -> str:
        if name in self.settings.parameters:
            return self.settings.parameters[name]
        declared = self.template["Parameters"][name] or {}
        if "Default" not in declared:
            raise CheckError(
                f"{where}: parameter {name} has no Default; pass --parameter {name}=VALUE"
            )
        return scalar_text(declared["Default"])

    def get_att(self, argument: Any, where: str) -> str:
        if isinstance(argument, str):
            argument = argument.split(".", 1)
        if not (isinstance(argument, list) and len(argument) == 2):
            raise UnknownIntrinsicError(f"{where}: malformed Fn::GetAtt {argument!r}")
        logical_id, attribute = argument
        if attribute == "Arn":
            if logical_id in self.settings.queues:
                settings = self.settings
                name = settings.queues[logical_id]
                return f"arn:{settings.partition}:sqs:{settings.region}:{settings.account}:{name}"
            if logical_id == self.settings.bucket_resource:
                return self.settings.bucket_arn()
            if logical_id == self.settings.state_machine_resource:
                return self._state_machine_arn(where)
            if self._is_role(logical_id):
                return self.settings.role_arn(logical_id)
            if logical_id in self.settings.resources:
                return self.settings.resources[logical_id]
        if attribute == "Name" and logical_id == self.settings.state_machine_resource:
            return self._state_machine_arn(where).rsplit(":", 1)[1]
        raise UnknownIntrinsicError(f"{where}: cannot resolve Fn::GetAtt {logical_id}.{attribute}")

    def sub(self, argument: Any, where: str) -> str:
        if isinstance(argument, str):
            text, variables = argument, {}
        elif isinstance(argument, list) and len(argument) == 2 and isinstance(argument[1], dict):
            text, variables = argument[0], argument[1]
        else:
            raise UnknownIntrinsicError(f"{where}: malformed Fn::Sub {argument!r}")
        if not isinstance(text, str):
            raise UnknownIntrinsicError(f"{where}: Fn::Sub needs a string, got {text!r}")

        def replace(match: re.Match) -> str:
            name = match.group(1)
            if name.startswith("!"):  # ${!Literal} stays ${Literal}
                return "${" + name[1:] + "}"
            if name in variables:
                return scalar_text(self.resolve(variables[name], where))
            if "." in name and not name.startswith("AWS::"):
                return self.get_att(name, where)
            return self.ref(name, where)

        return SUB_VARIABLE.sub(replace, text)

    def join(self, argument: Any, where: str) -> str:
        if not (isinstance(argument, list) and len(argument) == 2):
            raise UnknownIntrinsicError(f"{where}: malformed Fn::Join {argument!r}")
        delimiter, items = argument
        items = self.resolve(items, where)
        if not isinstance(items, list):
            raise UnknownIntrinsicError(f"{where}: Fn::Join needs a list, got {items!r}")
        return delimiter.join(scalar_text(item) for item in items)

    def _state_machine_arn(self, where: str) -> str:
        if not self.settings.state_machine_arn:
            raise CheckError(
                f"{where}: the policy names the state machine; pass --state-machine-arn"
            )
        return self.settings.state_machine_arn

    def _is_role(self, logical_id: str) -> bool:
        """A declared AWS::IAM::Role, or the role SAM creates for a function (<Function>Role)."""
        if logical_id in resources_of_type(self.template, "AWS::IAM::Role"):
            return True
        function = logical_id[: -len("Role")] if logical_id.endswith("Role") else None
        return function in resources_of_type(self.template, SERVERLESS_FUNCTION)


def scalar_text(value: Any) -> str:
    """Policy values as IAM sees them: YAML booleans and numbers become their JSON text."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (int, float, str)):
        return str(value)
    raise CheckError(f"expected a string, got {value!r}")


# --------------------------------------------------------------------------------------------
# Policy statements
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Condition:
    operator: str  # as written, e.g. "StringLikeIfExists"
    key: str  # lower case: context key names are not case-sensitive
    values: tuple[str, ...]


@dataclass(frozen=True)
class Statement:
    label: str  # where it came from, for messages
    effect: str
    actions: tuple[str, ...] | None = None
    not_actions: tuple[str, ...] | None = None
    resources: tuple[str, ...] | None = None
    not_resources: tuple[str, ...] | None = None
    conditions: tuple[Condition, ...] = ()
    principal: Any = None  # resource policies only
    not_principal: Any = None


def as_tuple(value: Any) -> tuple[str, ...]:
    items = value if isinstance(value, list) else [value]
    return tuple(scalar_text(item) for item in items)


def parse_conditions(block: Any, label: str) -> tuple[Condition, ...]:
    if block is None:
        return ()
    if not isinstance(block, dict):
        raise CheckError(f"{label}: Condition must be a mapping")
    conditions = []
    for operator, keys in block.items():
        parse_operator(operator, label)  # fail early on operators the checker cannot evaluate
        if not isinstance(keys, dict):
            raise CheckError(f"{label}: {operator} must map context keys to values")
        for key, values in keys.items():
            conditions.append(Condition(operator, key.lower(), as_tuple(values)))
    return tuple(conditions)


def parse_statement(raw: Any, label: str) -> Statement:
    if not isinstance(raw, dict):
        raise CheckError(f"{label}: a statement must be a mapping")
    label = f"{label} ({raw['Sid']})" if raw.get("Sid") else label
    effect = raw.get("Effect")
    if effect not in ("Allow", "Deny"):
        raise CheckError(f"{label}: Effect must be Allow or Deny, got {effect!r}")
    if ("Action" in raw) == ("NotAction" in raw):
        raise CheckError(f"{label}: a statement needs exactly one of Action and NotAction")
    if ("Resource" in raw) == ("NotResource" in raw):
        raise CheckError(f"{label}: a statement needs exactly one of Resource and NotResource")

    def optional(key: str) -> tuple[str, ...] | None:
        return as_tuple(raw[key]) if key in raw else None

    statement = Statement(
        label=label,
        effect=effect,
        actions=optional("Action"),
        not_actions=optional("NotAction"),
        resources=optional("Resource"),
        not_resources=optional("NotResource"),
        conditions=parse_conditions(raw.get("Condition"), label),
        principal=raw.get("Principal"),
        not_principal=raw.get("NotPrincipal"),
    )
    reject_policy_variables(statement)
    return statement


def reject_policy_variables(statement: Statement) -> None:
    """IAM policy variables (${aws:username}) are not modelled: refuse rather than mismatch."""
    texts = [
        *(statement.resources or ()),
        *(statement.not_resources or ()),
        *(value for condition in statement.conditions for value in condition.values),
    ]
    for text in texts:
        if "${" in text:
            raise CheckError(f"{statement.label}: IAM policy variables are not modelled ({text})")


def parse_document(document: Any, label: str) -> list[Statement]:
    """The statements of a policy document ({"Statement": [...]}, one statement or a list)."""
    if not isinstance(document, dict) or "Statement" not in document:
        raise CheckError(f"{label}: expected a policy document with a Statement")
    raw = document["Statement"]
    raw = raw if isinstance(raw, list) else [raw]
    return [parse_statement(item, f"{label}.Statement[{i}]") for i, item in enumerate(raw)]


# --------------------------------------------------------------------------------------------
# The policies that apply to a function and to the bucket
# --------------------------------------------------------------------------------------------


@dataclass
class FunctionPolicy:
    logical_id: str
    statements: list[Statement]
    unsupported: list[str]  # policy entries the checker ignored (only ever grants)


def function_resource(template: dict, logical_id: str) -> dict:
    resource = template["Resources"].get(logical_id)
    types = (SERVERLESS_FUNCTION, SERVERLESS_STATE_MACHINE, IAM_ROLE)
    if not isinstance(resource, dict) or resource.get("Type") not in types:
        raise CheckError(f"{logical_id} is not an {' or '.join(types)} in the template")
    return resource


def reject_unmodelled_role_settings(template: dict, logical_id: str, properties: dict) -> None:
    """An explicit Role or a permissions boundary would change the answer: refuse to check."""
    # Globals.Function applies to functions only.
    is_function = template["Resources"][logical_id].get("Type") == SERVERLESS_FUNCTION
    globals_ = ((template.get("Globals") or {}).get("Function") or {}) if is_function else {}
    if "Role" in properties:
        raise CheckError(f"{logical_id} uses an explicit Role: its permissions are not in Policies")
    for source, props in (("Properties", properties), ("Globals.Function", globals_)):
        if "PermissionsBoundary" in props:
            raise CheckError(
                f"{logical_id}: PermissionsBoundary in {source} is not modelled by this checker"
            )


def policy_entries(properties: dict) -> list[Any]:
    """SAM accepts one policy (a string or a document) or a list of them."""
    policies = properties.get("Policies", [])
    return policies if isinstance(policies, list) else [policies]


def statements_of_entry(
    entry: Any, label: str, template: dict, resolver: Resolver
) -> tuple[list[Statement], str | None]:
    """The statements of one Policies entry, or why it is unsupported."""
    if isinstance(entry, dict) and "Statement" in entry:
        return parse_document(resolver.resolve(entry, label), label), None
    if isinstance(entry, dict) and list(entry) == ["Ref"]:
        managed = resources_of_type(template, "AWS::IAM::ManagedPolicy").get(entry["Ref"])
        if managed is not None:
            document = managed.get("Properties", {}).get("PolicyDocument")
            where = f"{entry['Ref']}.PolicyDocument"
            return parse_document(resolver.resolve(document, where), where), None
    if isinstance(entry, dict) and len(entry) == 1:
        (name,) = entry
        if not name.startswith("Fn::") and name != "Ref":
            return [], f"{label}: SAM policy template {name} (ignored)"
    return [], f"{label}: {entry!r} (managed policy or unresolvable entry; ignored)"


def attached_policy_resources(
    template: dict, role_name: str, resolver: Resolver
) -> Iterable[tuple[str, Any]]:
    """AWS::IAM::Policy / ManagedPolicy resources whose Roles include !Ref <role_name>, but for
    those whose Condition leaves them out of this deployment."""
    types = ("AWS::IAM::Policy", "AWS::IAM::ManagedPolicy")
    for name, resource in resources_of_type(template, *types).items():
        condition = resource.get("Condition")
        if condition is not None and not resolver.condition(condition, name):
            continue
        properties = resource.get("Properties") or {}
        roles = properties.get("Roles") or []
        if {"Ref": role_name} in roles or role_name in roles:
            yield name, properties.get("PolicyDocument")


def role_policy(template: dict, logical_id: str, properties: dict, resolver: Resolver) -> FunctionPolicy:
    """An AWS::IAM::Role's inline Policies and the template's own managed policies it attaches."""
    if "PermissionsBoundary" in properties:
        raise CheckError(f"{logical_id}: PermissionsBoundary is not modelled by this checker")
    statements: list[Statement] = []
    unsupported: list[str] = []
    for index, policy in enumerate(properties.get("Policies") or []):
        where = f"{logical_id}.Policies[{index}].PolicyDocument"
        statements.extend(parse_document(resolver.resolve(policy.get("PolicyDocument"), where), where))
    for index, entry in enumerate(properties.get("ManagedPolicyArns") or []):
        label = f"{logical_id}.ManagedPolicyArns[{index}]"
        found, problem = statements_of_entry(entry, label, template, resolver)
        statements.extend(found)
        if problem:
            unsupported.append(problem)
    for name, document in attached_policy_resources(template, logical_id, resolver):
        where = f"{name}.PolicyDocument"
        statements.extend(parse_document(resolver.resolve(document, where), where))
    return FunctionPolicy(logical_id, statements, unsupported)


def function_policy(template: dict, logical_id: str, resolver: Resolver) -> FunctionPolicy:
    resource = function_resource(template, logical_id)
    properties = resource.get("Properties") or {}
    if resource.get("Type") == IAM_ROLE:
        return role_policy(template, logical_id, properties, resolver)
    reject_unmodelled_role_settings(template, logical_id, properties)
    statements: list[Statement] = []
    unsupported: list[str] = []
    for index, entry in enumerate(policy_entries(properties)):
        label = f"{logical_id}.Policies[{index}]"
        found, problem = statements_of_entry(entry, label, template, resolver)
        statements.extend(found)
        if problem:
            unsupported.append(problem)
    for name, document in attached_policy_resources(template, f"{logical_id}Role", resolver):
        where = f"{name}.PolicyDocument"
        statements.extend(parse_document(resolver.resolve(document, where), where))
    return FunctionPolicy(logical_id, statements, unsupported)


def refers_to_bucket(bucket: Any, settings: Settings) -> bool:
    return bucket == {"Ref": settings.bucket_resource} or bucket == settings.bucket


def bucket_policy_statements(template: dict, resolver: Resolver) -> list[Statement]:
    """Statements of the AWS::S3::BucketPolicy resources attached to the data bucket."""
    statements = []
    for name, resource in resources_of_type(template, "AWS::S3::BucketPolicy").items():
        properties = resource.get("Properties") or {}
        if refers_to_bucket(properties.get("Bucket"), resolver.settings):
            where = f"{name}.PolicyDocument"
            document = resolver.resolve(properties.get("PolicyDocument"), where)
            statements.extend(parse_document(document, where))
    for statement in statements:
        if statement.principal is None and statement.not_principal is None:
            raise CheckError(f"{statement.label}: a bucket policy statement needs a Principal")
    return statements


# --------------------------------------------------------------------------------------------
# Matching: actions, resources, principals, conditions
# --------------------------------------------------------------------------------------------


@functools.lru_cache(maxsize=None)
def glob(pattern: str, ignore_case: bool = False) -> re.Pattern:
    """IAM wildcards: * is any run of characters (including '/' and ':'), ? is one character."""
    parts = [".*" if c == "*" else "." if c == "?" else re.escape(c) for c in pattern]
    return re.compile("".join(parts), re.DOTALL | (re.IGNORECASE if ignore_case else 0))


def glob_matches(pattern: str, value: str, ignore_case: bool = False) -> bool:
    return glob(pattern, ignore_case).fullmatch(value) is not None


def action_matches(pattern: str, action: str) -> bool:
    # "The prefix and the action name are case insensitive" (reference_policies_elements_action).
    return glob_matches(pattern, action, ignore_case=True)


def resource_matches(pattern: str, arn: str) -> bool:
    # Wildcards * and ? in ARNs; * at the end of a segment may extend across ':' and '/'
    # (reference_policies_elements_resource). Matching the whole ARN as one glob covers both.
    return glob_matches(pattern, arn)


def statement_covers_action(statement: Statement, action: str) -> bool:
    # NotAction matches every action except the listed ones (reference_policies_elements_notaction).
    if statement.actions is not None:
        return any(action_matches(p, action) for p in statement.actions)
    return not any(action_matches(p, action) for p in statement.not_actions or ())


def matching_resource_pattern(statement: Statement, arn: str) -> str | None:
    """The Resource entry that matches (or a NotResource description), None when none does."""
    # NotResource matches every resource except the listed ones
    # (reference_policies_elements_notresource).
    if statement.resources is not None:
        return next((p for p in statement.resources if resource_matches(p, arn)), None)
    if any(resource_matches(p, arn) for p in statement.not_resources or ()):
        return None
    return "NotResource " + ",".join(statement.not_resources or ())


def principal_spec_matches(spec: Any, principal_arn: str, account: str, for_deny: bool) -> bool:
    """Does a Principal element name the function's role? (reference_policies_elements_principal)"""
    if spec == "*":
        return True
    if not isinstance(spec, dict):
        raise CheckError(f"unsupported Principal {spec!r}")
    names = spec.get("AWS", [])
    names = names if isinstance(names, list) else [names]
    account_names = {account, f"arn:{principal_arn.split(':')[1]}:iam::{account}:root"}
    for name in names:
        if name == "*" or name == principal_arn:
            return True
        # An account principal covers every identity of the account; for an Allow it only
        # delegates to the account's own IAM policies, so it grants nothing by itself.
        if for_deny and name in account_names:
            return True
    return False  # Service, Federated and CanonicalUser principals are not the function's role


def statement_covers_principal(statement: Statement, principal_arn: str, account: str) -> bool:
    if statement.principal is None and statement.not_principal is None:
        return True  # identity policy: it applies to its own principal
    deny = statement.effect == "Deny"
    if statement.principal is not None:
        return principal_spec_matches(statement.principal, principal_arn, account, deny)
    return not principal_spec_matches(statement.not_principal, principal_arn, account, deny)


# Condition operators (reference_policies_elements_condition_operators):
#   String*: StringEquals/Like are case-sensitive, *IgnoreCase is not; Like takes * and ?.
#   ArnEquals and ArnLike behave the same: case-sensitive, each of the six colon-separated
#   components compared on its own, each may hold * and ?.
#   Bool compares "true"/"false".
NEGATED = {
    "StringNotEquals": "StringEquals",
    "StringNotEqualsIgnoreCase": "StringEqualsIgnoreCase",
    "StringNotLike": "StringLike",
    "ArnNotEquals": "ArnEquals",
    "ArnNotLike": "ArnLike",
}


def string_equals(policy: str, value: str) -> bool:
    return policy == value


def string_equals_ignore_case(policy: str, value: str) -> bool:
    return policy.lower() == value.lower()


def string_like(policy: str, value: str) -> bool:
    return glob_matches(policy, value)


def arn_like(policy: str, value: str) -> bool:
    policy_parts, value_parts = policy.split(":", 5), value.split(":", 5)
    if len(policy_parts) != 6 or len(value_parts) != 6:
        return False
    return all(glob_matches(p, v) for p, v in zip(policy_parts, value_parts))


def bool_equals(policy: str, value: str) -> bool:
    return policy.lower() == value.lower()


POSITIVE = {
    "StringEquals": string_equals,
    "StringEqualsIgnoreCase": string_equals_ignore_case,
    "StringLike": string_like,
    "ArnEquals": arn_like,
    "ArnLike": arn_like,
    "Bool": bool_equals,
}


def parse_operator(operator: str, label: str = "") -> tuple[str, bool]:
    """('StringLike', True) for 'StringLikeIfExists'; raises for operators not modelled."""
    if ":" in operator:
        raise CheckError(f"{label}: set operator {operator} is not modelled by this checker")
    base, if_exists = operator, False
    if operator.endswith("IfExists"):
        base, if_exists = operator[: -len("IfExists")], True
    if base == "Null" and not if_exists:
        return base, False
    if base not in POSITIVE and base not in NEGATED:
        raise CheckError(f"{label}: condition operator {operator} is not modelled by this checker")
    return base, if_exists


def condition_holds(condition: Condition, context: dict[str, str]) -> bool:
    base, if_exists = parse_operator(condition.operator)
    present = condition.key in context
    if base == "Null":
        wants_absent = any(v.lower() == "true" for v in condition.values)
        return wants_absent != present
    if not present:
        # "If the key ... is not present in the request context, the values do not match and the
        # condition is false"; a negated operator is then true; ...IfExists is true
        # (reference_policies_elements_condition_operators).
        return if_exists or base in NEGATED
    value = context[condition.key]
    if base in NEGATED:
        # Several values of a negated operator combine with NOR
        # (reference_policies_multi-value-conditions).
        match = POSITIVE[NEGATED[base]]
        return not any(match(policy, value) for policy in condition.values)
    # Several values of one key combine with OR.
    return any(POSITIVE[base](policy, value) for policy in condition.values)


def conditions_hold(statement: Statement, context: dict[str, str]) -> bool:
    # Several operators, and several keys under one operator, combine with AND
    # (reference_policies_multi-value-conditions).
    return all(condition_holds(c, context) for c in statement.conditions)


# --------------------------------------------------------------------------------------------
# Evaluation
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Request:
    principal_arn: str
    account: str
    action: str
    resource: str
    context: dict[str, str]  # lower-case keys


@dataclass(frozen=True)
class Outcome:
    effect: str  # "Deny", "Allow" or "None" (implicit deny)
    statement: Statement | None = None
    pattern: str | None = None  # the Resource entry the deciding statement matched


def statement_pattern(statement: Statement, request: Request) -> str | None:
    """The matched Resource entry when the statement applies to the request, else None."""
    if not statement_covers_action(statement, request.action):
        return None
    if not statement_covers_principal(statement, request.principal_arn, request.account):
        return None
    pattern = matching_resource_pattern(statement, request.resource)
    if pattern is None or not conditions_hold(statement, request.context):
        return None
    return pattern


def evaluate(statements: Iterable[Statement], request: Request) -> Outcome:
    """Explicit Deny beats Allow beats the implicit deny (policy-eval-denyallow)."""
    allow = Outcome("None")
    for statement in statements:
        pattern = statement_pattern(statement, request)
        if pattern is None:
            continue
        if statement.effect == "Deny":
            return Outcome("Deny", statement, pattern)
        if allow.effect == "None":
            allow = Outcome("Allow", statement, pattern)
    return allow


def s3_bucket_of(arn: str, partition: str) -> str | None:
    prefix = f"arn:{partition}:s3:::"
    return arn[len(prefix) :].split("/", 1)[0] if arn.startswith(prefix) else None


@dataclass
class Model:
    """Everything needed to judge calls: the settings, the functions' policies, the bucket's."""

    settings: Settings
    functions: dict[str, FunctionPolicy]
    bucket_statements: list[Statement]

    def principal_arn(self, logical_id: str) -> str:
        # SAM names the implicit role <LogicalId>Role; aws:PrincipalArn of a role session is the
        # role's ARN (reference_policies_condition-keys). A role of the template's own is itself.
        if logical_id.endswith("Role"):
            return self.settings.role_arn(logical_id)
        return self.settings.role_arn(f"{logical_id}Role")

    def base_context(self, logical_id: str) -> dict[str, str]:
        # Keys every request from the function carries. aws:SourceAccount is absent: it is only
        # set when an AWS service calls on someone's behalf (reference_policies_condition-keys).
        return {
            "aws:principalarn": self.principal_arn(logical_id),
            "aws:securetransport": "true",
        }

    def request(self, logical_id: str, action: str, resource: str, extra: dict) -> Request:
        context = self.base_context(logical_id)
        for key, value in extra.items():
            context[key.lower()] = scalar_text(value)
        principal = self.principal_arn(logical_id)
        return Request(principal, self.settings.account, action, resource, context)

    def decide(self, logical_id: str, request: Request) -> tuple[Outcome, Outcome]:
        """The identity policy's outcome and the bucket policy's (None when not the data bucket)."""
        identity = evaluate(self.functions[logical_id].statements, request)
        bucket = Outcome("None")
        if s3_bucket_of(request.resource, self.settings.partition) == self.settings.bucket:
            bucket = evaluate(self.bucket_statements, request)
        return identity, bucket

    def allowed(self, logical_id: str, request: Request) -> bool:
        identity, bucket = self.decide(logical_id, request)
        return identity.effect == "Allow" and bucket.effect != "Deny"


def build_model(template: dict, settings: Settings, logical_ids: Iterable[str]) -> Model:
    resolver = Resolver(template, settings)
    functions = {lid: function_policy(template, lid, resolver) for lid in sorted(set(logical_ids))}
    return Model(settings, functions, bucket_policy_statements(template, resolver))


# --------------------------------------------------------------------------------------------
# Checking the recorded calls
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Call:
    function: str
    action: str
    resource: str
    status: int | None
    context: dict

    @property
    def logical_id(self) -> str:
        return FUNCTIONS[self.function]


@dataclass(frozen=True)
class Verdict:
    call: Call
    reason: str | None  # None when AWS would allow the call
    pattern: str  # what the call is grouped under in the summary

    @property
    def allowed(self) -> bool:
        return self.reason is None


def parse_calls(raw: Any) -> list[Call]:
    if not isinstance(raw, list):
        raise CheckError("the calls file must hold a JSON list")
    calls = []
    for index, item in enumerate(raw):
        try:
            call = Call(
                function=item["function"],
                action=item["action"],
                resource=item["resource"],
                status=item.get("status"),
                context=item.get("context") or {},
            )
        except (KeyError, TypeError, AttributeError) as e:
            raise CheckError(f"calls[{index}]: needs function, action and resource ({e})") from e
        if call.function not in FUNCTIONS:
            raise CheckError(f"calls[{index}]: unknown function {call.function!r}")
        calls.append(call)
    return calls


def denial_reason(call: Call, identity: Outcome, bucket: Outcome) -> str | None:
    logical_id = call.logical_id
    if identity.effect == "Deny":
        return f"explicitly denied by {identity.statement.label}"
    if bucket.effect == "Deny":
        return f"explicitly denied by the bucket policy {bucket.statement.label}"
    if identity.effect == "None":
        reason = f"no statement in {logical_id}'s policies allows it"
        if bucket.effect == "Allow":
            reason += f" (only the bucket policy {bucket.statement.label} does)"
        return reason
    return None


def is_missing_object_read(call: Call) -> bool:
    return call.action.lower() == "s3:getobject" and call.status == 404


def may_list_bucket_without_prefix(model: Model, call: Call) -> bool:
    """The 404-vs-403 rule of GetObject/HeadObject (API_GetObject.html, API_HeadObject.html):
    a ListBucket grant that needs s3:prefix does not count, since a GET/HEAD carries no prefix."""
    bucket = s3_bucket_of(call.resource, model.settings.partition)
    if bucket is None:
        return False
    bucket_arn = model.settings.bucket_arn(bucket)
    request = model.request(call.logical_id, "s3:ListBucket", bucket_arn, {})
    return model.allowed(call.logical_id, request)


def summary_pattern(call: Call, identity: Outcome) -> str:
    """The granting Resource entry, or for a denied call its resource with the last part as *."""
    if identity.effect == "Allow" and identity.pattern:
        return identity.pattern
    head, slash, _ = call.resource.rpartition("/")
    return f"{head}/* (not granted)" if slash else f"{call.resource} (not granted)"


def check_call(model: Model, call: Call) -> Verdict:
    request = model.request(call.logical_id, call.action, call.resource, call.context)
    identity, bucket = model.decide(call.logical_id, request)
    reason = denial_reason(call, identity, bucket)
    if reason is None and is_missing_object_read(call):
        if not may_list_bucket_without_prefix(model, call):
            reason = MISSING_KEY_403
    return Verdict(call, reason, summary_pattern(call, identity))


@dataclass
class Report:
    verdicts: list[Verdict]
    unsupported: list[str]

    @property
    def violations(self) -> list[Verdict]:
        return [v for v in self.verdicts if not v.allowed]

    @property
    def ok(self) -> bool:
        return not self.violations


def check(template_text: str, calls: list[dict], settings: Settings) -> Report:
    """Checks the calls (as in calls.json) against the template; raises CheckError if it cannot."""
    template = load_template(template_text)
    calls = parse_calls(calls)
    model = build_model(template, settings, (c.logical_id for c in calls))
    unsupported = [u for policy in model.functions.values() for u in policy.unsupported]
    return Report([check_call(model, call) for call in calls], unsupported)


# --------------------------------------------------------------------------------------------
# Output and command line
# --------------------------------------------------------------------------------------------


def violation_lines(report: Report) -> list[str]:
    counts = Counter(
        (v.call.function, v.call.action, v.call.resource, v.reason) for v in report.violations
    )
    lines = []
    for (function, action, resource, reason), count in counts.items():
        times = f" (x{count})" if count > 1 else ""
        lines.append(f"DENIED {function} {action} {resource}{times}: {reason}")
    return lines


def summary_lines(report: Report) -> list[str]:
    per_function = Counter(v.call.function for v in report.verdicts)
    denied = Counter(v.call.function for v in report.violations)
    pairs = Counter((v.call.function, v.call.action, v.pattern) for v in report.verdicts)
    lines = [f"Checked {len(report.verdicts)} calls:"]
    for function in FUNCTIONS:
        if per_function[function]:
            lines.append(
                f"  {function:8} {per_function[function]:4} calls, {denied[function]} denied"
            )
    lines.append(f"Distinct function / action / resource-pattern pairs ({len(pairs)}):")
    for (function, action, pattern), count in sorted(pairs.items()):
        lines.append(f"  {function:8} {action:28} {pattern}  [{count}]")
    if report.ok:
        lines.append("OK: every call is allowed")
    else:
        distinct = len(violation_lines(report))
        lines.append(f"FAIL: {len(report.violations)} calls would be denied ({distinct} distinct)")
    return lines


def parse_parameters(items: list[str]) -> dict[str, str]:
    parameters = {}
    for item in items:
        name, equals, value = item.partition("=")
        if not equals:
            raise CheckError(f"--parameter {item!r}: expected NAME=VALUE")
        parameters[name] = value
    return parameters


def argument_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--template", required=True, type=Path)
    parser.add_argument("--calls", required=True, type=Path)
    parser.add_argument("--bucket", required=True, help="the data bucket's name in the recording")
    parser.add_argument("--account", required=True)
    parser.add_argument("--region", required=True)
    parser.add_argument("--state-machine-arn")
    parser.add_argument("--partition", default="aws")
    parser.add_argument(
        "--parameter", action="append", default=[], metavar="NAME=VALUE",
        help="template parameter value (overrides its Default); repeatable",
    )
    parser.add_argument("--bucket-resource", default="DataBucket")
    parser.add_argument("--state-machine-resource", default="PipelineStateMachine")
    parser.add_argument(
        "--queue", action="append", default=[], metavar="LOGICAL_ID=NAME",
        help="an SQS queue's name in the recording, for its ARN; repeatable",
    )
    parser.add_argument("--stack-name", default="deltadrop", help="AWS::StackName of the recording")
    parser.add_argument(
        "--resource", action="append", default=[], metavar="LOGICAL_ID=ARN",
        help="another resource's ARN in the recording (Ref and GetAtt Arn); repeatable",
    )
    return parser


def main(argv: list[str] | None = None) -> int:
    args = argument_parser().parse_args(argv)
    try:
        settings = Settings(
            bucket=args.bucket,
            account=args.account,
            region=args.region,
            state_machine_arn=args.state_machine_arn,
            partition=args.partition,
            parameters=parse_parameters(args.parameter),
            bucket_resource=args.bucket_resource,
            state_machine_resource=args.state_machine_resource,
            queues=parse_parameters(args.queue),
            resources=parse_parameters(args.resource),
            stack_name=args.stack_name,
        )
        calls = json.loads(args.calls.read_text())
        report = check(args.template.read_text(), calls, settings)
    except (CheckError, OSError, json.JSONDecodeError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    for line in report.unsupported:
        print(f"UNSUPPORTED {line}")
    for line in violation_lines(report):
        print(line)
    for line in summary_lines(report):
        print(line)
    return 0 if report.ok else 1


if __name__ == "__main__":
    sys.exit(main())
