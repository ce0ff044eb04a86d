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

Nothing else changes. Arguments are moto_server's.
"""

from botocore.exceptions import ClientError
from moto.core.responses import EmptyResult
from moto.server import main
from moto.stepfunctions.parser.api import HistoryEventType, LambdaFunctionFailedEventDetails
from moto.stepfunctions.parser.asl.component.common.error_name.custom_error_name import (
    CustomErrorName,
)
from moto.stepfunctions.parser.asl.component.common.error_name.failure_event import FailureEvent
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

if __name__ == "__main__":
    main()
