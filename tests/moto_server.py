#!/usr/bin/env python3
"""moto's server (what ./scripts/test starts), with two fixes so that it behaves as AWS documents.

SendTaskFailure takes an ``error`` and a ``cause``, and a Catch on the waiting state gets both
(https://docs.aws.amazon.com/step-functions/latest/apireference/API_SendTaskFailure.html).
moto 5.2.5's server reads only the error and drops the cause, although its executor would pass it
on: the commit lane's failure emails and error reports would lose their message. This passes the
cause through.

A Lambda task whose invocation the Lambda service refuses (throttled: HTTP 429
TooManyRequestsException) fails on AWS with the error ``Lambda.TooManyRequestsException``, which a
Retry can match (https://docs.aws.amazon.com/step-functions/latest/dg/bp-lambda-serviceexception.html);
moto names every such failure ``Exception``. This names it as AWS does.

An Amazon ECS task state (``arn:aws:states:::ecs:runTask...``) takes its parameters in PascalCase
and Step Functions maps them to the API's own names (``Cluster`` to ``cluster``), and its output is
in PascalCase (https://docs.aws.amazon.com/step-functions/latest/dg/connect-ecs.html, "Parameters
in Step Functions are expressed in PascalCase"). moto 5.2.5 skips both mappings, so every RunTask
state fails with ``States.Runtime`` (a KeyError on ``Cluster``). This maps them as AWS does, by
the ECS API's own model from botocore.

Nothing else changes. Arguments are moto_server's.
"""

from botocore.exceptions import ClientError
from botocore.session import get_session
from moto.core.responses import EmptyResult
from moto.server import main
from moto.stepfunctions.parser.api import HistoryEventType, LambdaFunctionFailedEventDetails
from moto.stepfunctions.parser.asl.component.common.error_name.custom_error_name import (
    CustomErrorName,
)
from moto.stepfunctions.parser.asl.component.common.error_name.failure_event import FailureEvent
from moto.stepfunctions.parser.asl.component.state.exec.state_task.service.state_task_service_ecs import (
    StateTaskServiceEcs,
)
from moto.stepfunctions.parser.asl.component.state.exec.state_task.state_task_lambda import (
    StateTaskLambda,
)
from moto.stepfunctions.parser.asl.eval.event.event_detail import EventDetails
from moto.stepfunctions.responses import StepFunctionResponse


def send_task_failure(self):
    self.stepfunction_backend.send_task_failure(
        self._get_param("taskToken"),
        error=self._get_param("error"),
        cause=self._get_param("cause"),
    )
    return EmptyResult()


StepFunctionResponse.send_task_failure = send_task_failure

moto_lambda_failure = StateTaskLambda._from_error


def lambda_failure(self, env, ex):
    if not isinstance(ex, ClientError):
        return moto_lambda_failure(self, env, ex)
    error = "Lambda." + ex.response["Error"]["Code"]
    return FailureEvent(
        env=env,
        error_name=CustomErrorName(error),
        event_type=HistoryEventType.LambdaFunctionFailed,
        event_details=EventDetails(
            lambdaFunctionFailedEventDetails=LambdaFunctionFailedEventDetails(
                error=error, cause=ex.response["Error"]["Message"]
            )
        ),
    )


StateTaskLambda._from_error = lambda_failure

ECS = get_session().get_service_model("ecs")


def to_api_names(value, shape):
    """Step Functions' PascalCase keys as the API's members (matched without case)."""
    if shape is None:
        return value
    if shape.type_name == "structure" and isinstance(value, dict):
        members = {name.lower(): (name, member) for name, member in shape.members.items()}
        mapped = {}
        for key, item in value.items():
            name, member = members.get(key.lower(), (key, None))
            mapped[name] = to_api_names(item, member)
        return mapped
    if shape.type_name == "list" and isinstance(value, list):
        return [to_api_names(item, shape.member) for item in value]
    return value


def to_pascal_case(value):
    if isinstance(value, dict):
        return {key[:1].upper() + key[1:]: to_pascal_case(item) for key, item in value.items()}
    if isinstance(value, list):
        return [to_pascal_case(item) for item in value]
    return value


def ecs_parameters(self, parameters, boto_service_name=None, service_action_name=None):
    action = service_action_name or self.resource.api_action
    operation = ECS.operation_model(action[:1].upper() + action[1:])
    mapped = to_api_names(parameters, operation.input_shape)
    parameters.clear()
    parameters.update(mapped)


def ecs_response(self, response, boto_service_name=None, service_action_name=None):
    if isinstance(response, dict):
        mapped = to_pascal_case(response)
        response.clear()
        response.update(mapped)


StateTaskServiceEcs._normalise_parameters = ecs_parameters
StateTaskServiceEcs._normalise_response = ecs_response

if __name__ == "__main__":
    main()
